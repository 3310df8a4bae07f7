"""The product import: upsert by SKU, every row checked, all or nothing.

``POST /api/v1/products/import`` takes a JSON array, ``POST /api/v1/products/import/csv`` a CSV
file upload (``multipart/form-data``, one ``file`` part); the rows and answers are the same.
The upload's hostile forms are in tests/api/test_hostile_input.py.
"""

from __future__ import annotations

import json

import pytest
from connexion.json_schema import Draft4RequestValidator
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.transaction import EXTENSION_KEY
from service.api.validators import quick_check
from service.app import create_app
from service.config import Settings
from service.domain import product_io
from service.problems import MAX_LISTED_ERRORS, ConcurrentChangeProblem
from tests.conftest import bearer_for, wipe
from tests.helpers import (
    IMPORT_CSV,
    assert_problem,
    create_category,
    create_product,
    csv_upload,
    multipart,
    upload_csv,
)

IMPORT = "/api/v1/products/import"
EXPORT = "/api/v1/products/export"
PRODUCTS = "/api/v1/products"
JSON_TYPE = {"Content-Type": "application/json"}


def post_csv(client, text: str | bytes, **params):
    return upload_csv(client, text, **params)


def post_json(client, rows, **params):
    return client.post(IMPORT, content=json.dumps(rows).encode(), headers=JSON_TYPE, params=params)


def imported(response, **expected) -> dict:
    assert response.status_code == 200, response.text
    counts = response.json()
    assert {k: counts[k] for k in expected} == expected, counts
    return counts


def all_products(client) -> dict[str, dict]:
    response = client.get(PRODUCTS, params={"limit": 200, "sort": "sku"})
    assert response.status_code == 200, response.text
    return {p["sku"]: p for p in response.json()["items"]}


def errors_of(response, status: int = 422) -> list[dict]:
    problem = assert_problem(response, status)
    return problem["errors"]


def error_at(errors: list[dict], line: int, field: str | None = None) -> dict:
    for entry in errors:
        if entry.get("line") == line and entry.get("field") == field:
            return entry
    raise AssertionError(f"no error at line {line} field {field}: {errors}")


# --- counts and values ---------------------------------------------------------------------


def test_csv_creates_updates_and_counts_unchanged_rows(client):
    tools = create_category(client, "Tools")
    hammer = create_product(client, "HAM-16OZ", name="Claw hammer", reorder_point=5)
    create_product(client, "SAW-1", name="Bow saw")

    response = post_csv(
        client,
        "sku,name,reorder_point,category_id\r\n"
        f"HAM-16OZ,Claw hammer,20,{tools['id']}\r\n"  # changes reorder point and category
        "SAW-1,Bow saw,0,\r\n"  # exactly as stored
        f"NEW-1,Brand new,3,{tools['id']}\r\n",
    )

    imported(response, dry_run=False, rows=3, created=1, updated=1, unchanged=1)
    products = all_products(client)
    assert products["HAM-16OZ"]["reorder_point"] == 20
    assert products["HAM-16OZ"]["category_id"] == tools["id"]
    assert products["HAM-16OZ"]["id"] == hammer["id"]
    assert products["NEW-1"]["name"] == "Brand new"
    assert products["NEW-1"]["unit_of_measure"] == "each"  # default


def test_unchanged_rows_keep_version_and_changed_rows_get_a_new_etag(client):
    hammer = create_product(client, "HAM-16OZ", name="Claw hammer")
    saw = create_product(client, "SAW-1", name="Bow saw")
    tags = {p["id"]: client.get(f"{PRODUCTS}/{p['id']}").headers["etag"] for p in (hammer, saw)}

    imported(
        post_csv(client, "sku,name\nHAM-16OZ,Claw hammer 16 oz\nSAW-1,Bow saw\n"),
        created=0,
        updated=1,
        unchanged=1,
    )

    after_hammer = client.get(f"{PRODUCTS}/{hammer['id']}")
    after_saw = client.get(f"{PRODUCTS}/{saw['id']}")
    assert after_hammer.headers["etag"] != tags[hammer["id"]]
    assert after_hammer.json()["updated_at"] > hammer["updated_at"]
    assert after_saw.headers["etag"] == tags[saw["id"]]
    assert after_saw.json()["updated_at"] == saw["updated_at"]
    # The old ETag is stale now: a conditional update with it is refused.
    stale = client.patch(
        f"{PRODUCTS}/{hammer['id']}",
        json={"reorder_point": 1},
        headers={"If-Match": tags[hammer["id"]]},
    )
    assert stale.status_code == 412


def test_sku_matches_regardless_of_case_and_takes_the_files_spelling(client):
    hammer = create_product(client, "HAM-16OZ", name="Claw hammer")

    imported(post_csv(client, "sku\nham-16oz\n"), created=0, updated=1)

    assert client.get(f"{PRODUCTS}/{hammer['id']}").json()["sku"] == "ham-16oz"


def test_missing_columns_leave_fields_on_update_and_take_defaults_on_create(client):
    tools = create_category(client, "Tools")
    hammer = create_product(
        client,
        "HAM-16OZ",
        name="Claw hammer",
        description="Fibreglass",
        category_id=tools["id"],
        unit_of_measure="box",
        reorder_point=7,
        reorder_quantity=9,
    )

    imported(post_csv(client, "sku,is_active,name\nHAM-16OZ,no,Claw hammer\nNEW-1,yes,New\n"))

    products = all_products(client)
    after = products["HAM-16OZ"]
    for name in ("description", "category_id", "unit_of_measure", "reorder_point"):
        assert after[name] == hammer[name], name
    assert after["is_active"] is False
    new = products["NEW-1"]
    assert (new["description"], new["category_id"], new["unit_of_measure"]) == (None, None, "each")
    assert (new["reorder_point"], new["reorder_quantity"], new["is_active"]) == (0, 0, True)


def test_empty_cells_clear_description_and_category(client):
    tools = create_category(client, "Tools")
    create_product(client, "HAM-16OZ", description="Fibreglass", category_id=tools["id"])

    imported(post_csv(client, "sku,description,category_id\nHAM-16OZ,,\n"), updated=1)

    after = all_products(client)["HAM-16OZ"]
    assert after["description"] is None
    assert after["category_id"] is None


def test_json_nulls_clear_and_missing_keys_leave_fields(client):
    tools = create_category(client, "Tools")
    create_product(
        client, "HAM-16OZ", description="Fibreglass", category_id=tools["id"], reorder_point=4
    )

    imported(post_json(client, [{"sku": "HAM-16OZ", "description": None}]), updated=1)

    after = all_products(client)["HAM-16OZ"]
    assert after["description"] is None
    assert after["category_id"] == tools["id"]
    assert after["reorder_point"] == 4


def test_csv_booleans_and_integers_are_converted(client):
    rows = "sku,name,is_active,reorder_point,reorder_quantity\n"
    rows += "A-1,a,TRUE,+3, 4 \nA-2,b,1,0,0\nA-3,c,Yes,1,1\n"
    rows += "A-4,d,false,2,2\nA-5,e,0,0,0\nA-6,f,NO,0,0\n"

    imported(post_csv(client, rows), created=6)

    active = {sku: p["is_active"] for sku, p in all_products(client).items()}
    assert active == {
        "A-1": True,
        "A-2": True,
        "A-3": True,
        "A-4": False,
        "A-5": False,
        "A-6": False,
    }
    assert all_products(client)["A-1"]["reorder_quantity"] == 4


def test_dry_run_counts_everything_and_writes_nothing(client):
    create_product(client, "HAM-16OZ", name="Claw hammer")
    before = all_products(client)

    counts = imported(
        post_csv(client, "sku,name\nHAM-16OZ,Renamed\nNEW-1,New\n", dry_run="true"),
        dry_run=True,
        rows=2,
        created=1,
        updated=1,
        unchanged=0,
    )

    assert counts["dry_run"] is True
    assert all_products(client) == before


def test_dry_run_reports_the_same_errors(client):
    errors = errors_of(post_csv(client, "sku,name\nNEW-1,\n", dry_run="true"))
    assert error_at(errors, 2, "name")


def test_ignored_export_columns_are_accepted(client):
    response = post_csv(
        client,
        "id,sku,name,average_cost,created_at,updated_at\n"
        "999,NEW-1,New,12.500000,not a date,whatever\n",
    )

    imported(response, created=1)
    product = all_products(client)["NEW-1"]
    assert product["id"] != 999
    assert product["average_cost"] == "0.000000"


def test_bom_and_crlf_and_quoted_cells_are_read(client):
    body = '\ufeffsku,name,description\r\nQ-1,"Hammer, claw","He said ""hi""\r\non two lines"\r\n'

    imported(post_csv(client, body), created=1)

    product = all_products(client)["Q-1"]
    assert product["name"] == "Hammer, claw"
    assert product["description"] == 'He said "hi"\r\non two lines'


def test_header_names_ignore_case_and_surrounding_spaces(client):
    imported(post_csv(client, " SKU , Name \nH-1,Hammer\n"), created=1)


def test_header_only_imports_nothing(client):
    assert imported(post_csv(client, "sku,name\r\n"), rows=0, created=0)


# --- categories ------------------------------------------------------------------------------


def test_category_by_path_and_by_id(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])

    imported(
        post_csv(client, "sku,name,category_path\nP-1,By path,tools/HAND TOOLS\nP-2,Top,Tools\n"),
        created=2,
    )
    imported(post_json(client, [{"sku": "P-3", "name": "By id", "category_id": hand["id"]}]))
    both = {"category_id": hand["id"], "category_path": "Tools/Hand tools"}
    imported(post_json(client, [{"sku": "P-4", "name": "Both", **both}]))

    products = all_products(client)
    assert products["P-1"]["category_id"] == hand["id"]
    assert products["P-2"]["category_id"] == tools["id"]
    assert products["P-3"]["category_id"] == hand["id"]
    assert products["P-4"]["category_id"] == hand["id"]


def test_category_errors_name_the_line_and_field(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])

    errors = errors_of(
        post_csv(
            client,
            "sku,name,category_path,category_id\n"
            "C-1,Unknown path,Tools/Power tools,\n"
            "C-2,Unknown id,,999\n"
            f"C-3,Disagree,Tools,{hand['id']}\n"
            f"C-4,Id without path,,{hand['id']}\n"
            f"C-5,Fine,Tools/Hand tools,{hand['id']}\n",
        )
    )

    assert "Power tools" in error_at(errors, 2, "category_path")["detail"]
    assert "999" in error_at(errors, 3, "category_id")["detail"]
    assert error_at(errors, 4, "category_path")
    assert error_at(errors, 5, "category_path")
    assert {e["line"] for e in errors} == {2, 3, 4, 5}
    assert "C-5" not in all_products(client)


def test_an_ambiguous_path_needs_the_id(client):
    top = create_category(client, "A/B")
    parent = create_category(client, "A")
    child = create_category(client, "B", parent_id=parent["id"])

    errors = errors_of(post_csv(client, "sku,name,category_path\nX-1,x,A/B\n"))
    assert "use category_id" in error_at(errors, 2, "category_path")["detail"]

    imported(
        post_csv(client, f"sku,name,category_path,category_id\nX-1,x,A/B,{child['id']}\n"),
        created=1,
    )
    assert all_products(client)["X-1"]["category_id"] == child["id"]
    assert top["id"] != child["id"]


# --- row errors ------------------------------------------------------------------------------


def test_each_kind_of_csv_row_error_names_line_and_field(client):
    create_product(client, "OLD-1", name="Old")
    body = (
        "sku,name,reorder_point,is_active,unit_of_measure,description\n"  # line 1
        "GOOD-1,Good,1,true,each,fine\n"  # 2
        "BAD SKU,Bad sku,1,true,each,\n"  # 3: pattern
        "N-1,Negative,-4,true,each,\n"  # 4: minimum
        "N-2,Not a number,four,true,each,\n"  # 5: integer
        "N-3,Bad bool,1,maybe,each,\n"  # 6: boolean
        "N-4,,1,true,each,\n"  # 7: empty required
        "N-5,Empty uom,1,true,,\n"  # 8: empty non-nullable
        '"N-6",Two lines,1,true,each,"a description\non two lines"\n'  # 9-10: one record
        "N-7,Ragged,1\n"  # 11: cell count
        "good-1,Duplicate,1,true,each,\n"  # 12: same SKU as line 2
        "N-8,Long," + "9" * 30 + ",true,each,\n"  # 13: too long a number
    )

    errors = errors_of(post_csv(client, body))

    assert "does not match" in error_at(errors, 3, "sku")["detail"]
    assert "minimum" in error_at(errors, 4, "reorder_point")["detail"]
    assert "whole number" in error_at(errors, 5, "reorder_point")["detail"]
    assert "boolean" in error_at(errors, 6, "is_active")["detail"]
    assert "empty" in error_at(errors, 7, "name")["detail"]
    assert "empty" in error_at(errors, 8, "unit_of_measure")["detail"]
    assert "header has 6" in error_at(errors, 11)["detail"]
    assert "line 2" in error_at(errors, 12, "sku")["detail"]
    assert "out of range" in error_at(errors, 13, "reorder_point")["detail"]
    lines = [e["line"] for e in errors]
    assert lines == sorted(lines)
    assert 9 not in lines and 10 not in lines  # the two-line record is fine
    assert all("pointer" not in e for e in errors)
    assert set(all_products(client)) == {"OLD-1"}  # nothing written


def test_a_new_sku_needs_a_name(client):
    create_product(client, "OLD-1", name="Old")

    errors = errors_of(post_csv(client, "sku,reorder_point\nOLD-1,3\nNEW-1,3\n"))

    assert errors == [
        {"line": 3, "field": "name", "detail": "SKU 'NEW-1' is new: a name is required."}
    ]


def test_one_bad_row_among_good_ones_writes_nothing(client):
    create_product(client, "KEEP-1", name="Keep", reorder_point=1)
    rows = ["sku,name,reorder_point"] + [f"G-{i},Good {i},{i}" for i in range(50)]
    rows.insert(26, "G-BAD,Bad,-1")
    rows.append("KEEP-1,Keep,99")

    problem = assert_problem(post_csv(client, "\n".join(rows) + "\n"), 422, "invalid-import-rows")

    assert problem["error_count"] == 1
    assert problem["errors"] == [
        {"line": 27, "field": "reorder_point", "detail": "-1 is less than the minimum of 0"}
    ]
    products = all_products(client)
    assert set(products) == {"KEEP-1"}
    assert products["KEEP-1"]["reorder_point"] == 1


def test_error_list_is_capped_with_the_total_count(client):
    rows = ["sku,name,reorder_point"] + [f"E-{i},Bad,-1" for i in range(1205)]

    problem = assert_problem(post_csv(client, "\n".join(rows)), 422)

    assert problem["error_count"] == 1205
    assert len(problem["errors"]) == MAX_LISTED_ERRORS
    assert problem["errors"][0]["line"] == 2


def test_json_row_errors_carry_a_pointer_too(client):
    errors = errors_of(
        post_json(client, [{"sku": "J-1", "name": "One"}, {"sku": "j-1", "name": "Again"}])
    )
    assert errors == [
        {
            "line": 2,
            "field": "sku",
            "pointer": "/1/sku",
            "detail": "SKU 'j-1' already appears on line 1 (SKUs are unique regardless of case).",
        }
    ]


def test_json_shape_errors_are_400_with_line_and_field(client):
    problem = assert_problem(
        post_json(
            client,
            [
                {"sku": "J-1", "name": "Fine"},
                {"sku": "J 2", "colour": "red"},
                {"name": "No sku", "reorder_point": "3"},
                "not an object",
            ],
        ),
        400,
    )

    errors = problem["errors"]
    assert error_at(errors, 2, "sku")["pointer"] == "/1/sku"
    assert error_at(errors, 2, "colour")["detail"] == "Unknown field."
    assert error_at(errors, 3, "sku")["detail"] == "This field is required."
    assert error_at(errors, 3, "reorder_point")["pointer"] == "/2/reorder_point"
    assert error_at(errors, 4, None)["pointer"] == "/3"
    assert problem["error_count"] == len(errors)


def test_json_shape_errors_are_ordered_by_row_number(client):
    rows = [{"sku": f"J-{i}", "name": "x", "reorder_point": -1} for i in range(12)]
    errors = assert_problem(post_json(client, rows), 400)["errors"]
    assert [e["line"] for e in errors] == list(range(1, 13))


def test_a_json_body_that_is_not_an_array_is_400(client):
    problem = assert_problem(client.post(IMPORT, json={"sku": "X"}), 400)
    assert problem["errors"][0]["pointer"] == ""
    assert "line" not in problem["errors"][0]


# --- malformed input: clear 4xx, never 500 ---------------------------------------------------


def test_invalid_utf8_is_400_invalid_encoding_naming_the_line(client):
    body = b"sku,name\nOK-1,Fine\nBAD-1,Caf\xe9\n"

    problem = assert_problem(post_csv(client, body), 400, "invalid-encoding")

    assert problem["errors"][0]["line"] == 3
    assert all_products(client) == {}


def test_invalid_utf8_in_json_is_400(client):
    assert_problem(client.post(IMPORT, content=b'[{"sku": "\xff"}]', headers=JSON_TYPE), 400)


@pytest.mark.parametrize("body", [b"", b"   \r\n", b"\xef\xbb\xbf", b"\n\n"])
def test_an_empty_body_is_400(client, body):
    assert_problem(post_csv(client, body), 400)


def test_a_file_without_a_header_row_is_400(client):
    problem = assert_problem(post_csv(client, "HAM-16OZ,Claw hammer\n"), 400)

    assert error_at(problem["errors"], 1, "sku")
    assert error_at(problem["errors"], 1, "ham-16oz")["detail"] == "Unknown column."


def test_unknown_and_repeated_columns_are_400(client):
    problem = assert_problem(post_csv(client, "sku,name,colour,name,\nA,b,c,d,e\n"), 400)

    assert error_at(problem["errors"], 1, "colour")["detail"] == "Unknown column."
    assert "more than once" in error_at(problem["errors"], 1, "name")["detail"]
    assert "Column 5" in error_at(problem["errors"], 1, None)["detail"]


def test_broken_quoting_is_400_naming_the_line(client):
    problem = assert_problem(post_csv(client, 'sku,name\nA-1,"unterminated\n'), 400)
    assert problem["errors"][0]["line"] >= 2


def test_nul_characters_are_row_errors_not_server_errors(client):
    errors = errors_of(post_csv(client, "sku,name,description\nA-1,x,nul\x00here\n"))
    assert error_at(errors, 2, "description")


def test_a_file_part_with_a_charset_other_than_utf8_is_415(client):
    body, headers = multipart(
        (
            "file",
            b"sku,name\nA,b\n",
            {"filename": "a.csv", "Content-Type": "text/csv; charset=latin-1"},
        )
    )
    problem = assert_problem(client.post(IMPORT_CSV, content=body, headers=headers), 415)
    assert problem["type"].endswith("/unsupported-charset")
    assert "'file'" in problem["detail"]
    assert all_products(client) == {}


@pytest.mark.parametrize("charset", ["utf-8", "UTF8", "us-ascii"])
def test_a_file_part_may_name_utf8_or_ascii(client, charset):
    body, headers = multipart(
        (
            "file",
            b"sku,name\nCS-1,x\n",
            {"filename": "a.csv", "Content-Type": f"text/csv; charset={charset}"},
        )
    )
    imported(client.post(IMPORT_CSV, content=body, headers=headers), created=1)


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("products.csv", "text/csv"),
        ("products.csv", "application/octet-stream"),  # what curl -F file=@products.csv sends
        ("blob", None),  # a browser's FormData with a Blob
        ("", "application/octet-stream"),
        (None, None),  # openapi-python-client's File without file_name: no filename at all
        (None, "text/csv"),
    ],
)
def test_the_file_part_is_read_whatever_its_filename_and_type(client, filename, content_type):
    body, headers = csv_upload(
        'sku,name,description\nU-1,Caf\u00e9,"quoted, with\r\na line break"\n',
        filename=filename,
        content_type=content_type,
    )

    imported(client.post(IMPORT_CSV, content=body, headers=headers), created=1)

    product = all_products(client)["U-1"]
    assert (product["name"], product["description"]) == (
        "Caf\u00e9",
        "quoted, with\r\na line break",
    )


def test_an_unsupported_media_type_is_415(client):
    response = client.post(IMPORT_CSV, content=b"sku", headers={"Content-Type": "text/plain"})
    assert_problem(response, 415)
    assert response.headers["accept-post"] == "multipart/form-data"


@pytest.mark.parametrize(("path", "media_type"), [(IMPORT, "text/csv"), (IMPORT_CSV, "text/csv")])
def test_csv_as_a_raw_body_is_415_on_both_imports(client, path, media_type):
    """The JSON import took text/csv before the upload existed; neither takes it now."""
    response = client.post(path, content=b"sku,name\nA,b\n", headers={"Content-Type": media_type})
    problem = assert_problem(response, 415, "unsupported-media-type")
    assert problem["media_types"] == (
        ["application/json"] if path == IMPORT else ["multipart/form-data"]
    )
    assert all_products(client) == {}


def test_a_json_array_sent_as_the_file_is_a_csv_error(client):
    problem = assert_problem(upload_csv(client, json.dumps([{"sku": "J-1"}])), 400)
    assert problem["errors"][0]["line"] == 1
    assert all_products(client) == {}


def test_import_statement_count_does_not_grow_with_rows(client, count_queries):
    """Bulk reads and writes: the same statements for 10 rows as for 400."""
    create_category(client, "Tools")

    def statements(prefix: str, rows: int) -> int:
        for i in range(rows):
            create_product(client, f"{prefix}-OLD-{i}", name="old")
        body = "sku,name,category_path\n" + "".join(
            f"{prefix}-OLD-{i},renamed,Tools\n{prefix}-NEW-{i},new,Tools\n" for i in range(rows)
        )
        with count_queries() as counter:
            imported(post_csv(client, body), created=rows, updated=rows)
        return counter.count

    small, large = statements("S", 10), statements("L", 200)
    assert small == large, (small, large)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["text/csv", "application/json"])
def test_an_export_imports_back_unchanged(client, accept):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    create_product(
        client,
        "HAM-16OZ",
        name="=SUM(A1:A2)",
        description='Comma, "quote"\nand a second line',
        category_id=hand["id"],
        reorder_point=3,
    )
    create_product(client, "SAW-1", name="'-Saw", unit_of_measure="box", is_active=False)
    create_product(client, "PLAIN-1", name="@home", description="+1 or -1")
    before = all_products(client)

    exported = client.get(EXPORT, headers={"Accept": accept})
    assert exported.status_code == 200

    if accept == "text/csv":
        response = upload_csv(client, exported.content)
    else:
        response = client.post(IMPORT, content=exported.content, headers={"Content-Type": accept})

    imported(response, rows=3, created=0, updated=0, unchanged=3)
    assert all_products(client) == before


# --- size limit ------------------------------------------------------------------------------

SMALL_LIMIT = 1024


@pytest.fixture(scope="module")
def small_limit_app(database_url):
    application = create_app(
        Settings(database_url=database_url, validate_responses=True, import_max_bytes=SMALL_LIMIT)
    )
    yield application
    application.app.extensions[EXTENSION_KEY].dispose()


@pytest.fixture()
def limited_client(small_limit_app):
    database = small_limit_app.app.extensions[EXTENSION_KEY]
    wipe(database.engine)
    with small_limit_app.test_client(headers=bearer_for(database, "manager")) as test_client:
        yield test_client


def rows_of_size(size: int) -> bytes:
    body = b"sku,name\n"
    i = 0
    while len(body) < size:
        body += f"S-{i:05d},Product {i}\n".encode()
        i += 1
    return body


def upload_of_size(size: int) -> tuple[bytes, dict[str, str], bytes]:
    """A CSV upload whose whole body, multipart framing included, is ``size`` bytes or a few
    more; with its Content-Type header and the file it holds."""
    overhead = len(csv_upload(b"")[0])
    csv = rows_of_size(size - overhead)
    body, headers = csv_upload(csv)
    return body, headers, csv


def test_a_body_over_the_limit_by_content_length_is_413(limited_client):
    body = rows_of_size(SMALL_LIMIT + 1)

    problem = assert_problem(post_csv(limited_client, body), 413, "payload-too-large")

    assert problem["max_bytes"] == SMALL_LIMIT
    assert all_products(limited_client) == {}


def test_the_multipart_framing_counts_towards_the_limit(limited_client):
    """The file alone is within the limit; with its part headers and boundaries it is not."""
    body, headers, csv = upload_of_size(SMALL_LIMIT + 1)
    assert len(csv) < SMALL_LIMIT < len(body)

    response = limited_client.post(IMPORT_CSV, content=body, headers=headers)

    assert_problem(response, 413, "payload-too-large")
    assert all_products(limited_client) == {}


def test_a_chunked_body_over_the_limit_is_413(limited_client):
    body, headers, _csv = upload_of_size(SMALL_LIMIT * 3)
    chunks = (body[i : i + 100] for i in range(0, len(body), 100))

    response = limited_client.post(IMPORT_CSV, content=chunks, headers=headers)

    assert_problem(response, 413, "payload-too-large")
    assert all_products(limited_client) == {}


def test_a_chunked_body_within_the_limit_is_imported(limited_client):
    body, headers, csv = upload_of_size(SMALL_LIMIT - 100)
    assert len(body) <= SMALL_LIMIT
    chunks = (body[i : i + 100] for i in range(0, len(body), 100))

    counts = imported(limited_client.post(IMPORT_CSV, content=chunks, headers=headers))

    assert counts["created"] == csv.count(b"\n") - 1


def test_a_json_body_over_the_limit_is_413_too(limited_client):
    rows = [{"sku": f"J-{i}", "name": "x" * 50} for i in range(40)]
    assert_problem(post_json(limited_client, rows), 413)


def test_the_limit_applies_only_to_the_import(limited_client):
    response = limited_client.post(
        PRODUCTS, json={"sku": "BIG-1", "name": "x", "description": "d" * 1900}
    )
    assert response.status_code == 201, response.text


def test_credentials_are_checked_before_the_size(small_limit_app):
    with small_limit_app.test_client() as anonymous:
        response = post_csv(anonymous, rows_of_size(SMALL_LIMIT * 2))
    assert response.status_code == 401


# --- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("clerk", 403), ("manager", 200)])
def test_import_needs_the_manager_role(anonymous_client, auth_headers, role, status):
    csv = upload_csv(anonymous_client, "sku,name\nR-1,Role\n", headers=auth_headers(role))
    assert csv.status_code == status, csv.text
    rows = anonymous_client.post(
        IMPORT, json=[{"sku": "R-2", "name": "Role"}], headers=auth_headers(role)
    )
    assert rows.status_code == status, rows.text


def test_import_without_credentials_is_401(anonymous_client):
    assert_problem(upload_csv(anonymous_client, "sku,name\nR-1,Role\n"), 401)
    assert_problem(anonymous_client.post(IMPORT, json=[{"sku": "R-1", "name": "Role"}]), 401)


# --- the quick row check agrees with the validator -------------------------------------------

ROW_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=70),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._/-]{0,70}\Z"),
    st.sampled_from(["", " x", "x ", "each", "Tools/Hand tools", "\x00", "a" * 201, "é"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ROW_KEYS = st.sampled_from(
    [*product_io.row_schema().fields, "colour", "SKU"]  # two unknown keys
)


VALID_ROW = st.fixed_dictionaries(
    {"sku": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._/-]{0,20}\Z")},
    optional={
        "name": st.sampled_from(["Hammer", "x", "a" * 200, "Claw hammer 16 oz"]),
        "description": st.one_of(st.none(), st.text(max_size=30).filter(lambda t: "\x00" not in t)),
        "category_id": st.one_of(st.none(), st.integers(1, 2**31 - 1)),
        "category_path": st.sampled_from([None, "Tools", "Tools/Hand tools"]),
        "unit_of_measure": st.sampled_from(["each", "box", "kg_2"]),
        "reorder_point": st.integers(0, 10**9),
        "reorder_quantity": st.integers(0, 10**9),
        "is_active": st.booleans(),
        "id": st.one_of(st.none(), st.integers()),
        "average_cost": st.sampled_from([None, "7.250000"]),
    },
)
# Mostly valid rows with one or two keys dropped, added or changed: the cases near the edge.
ROWS = st.builds(
    lambda base, extra, drop: {**{k: v for k, v in base.items() if k not in drop}, **extra},
    VALID_ROW,
    st.dictionaries(ROW_KEYS, ROW_VALUES, max_size=2),
    st.sets(ROW_KEYS, max_size=2),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(rows=st.lists(st.one_of(ROWS, VALID_ROW), max_size=3))
def test_the_quick_row_check_says_what_the_validator_says(rows):
    schema = product_io.row_schema()
    array = {"type": "array", "items": schema.schema}
    quick = quick_check(array)
    assert quick is not None
    for row in rows:
        assert schema.quick(row) == (not list(schema.validator.iter_errors(row))), row
    assert quick(rows) == (not list(Draft4RequestValidator(array).iter_errors(rows)))


def test_a_product_changed_after_planning_is_a_conflict_not_a_lost_update(client, database):
    hammer = create_product(client, "HAM-16OZ", name="Claw hammer")
    parsed = product_io.parse_csv(b"sku,name\nHAM-16OZ,From the import\nNEW-1,New\n")
    with database.transaction(write=False) as session:
        plan = product_io.plan_import(session, parsed.rows)
    # Someone else renames the product between the import's read and its write.
    changed = client.patch(f"{PRODUCTS}/{hammer['id']}", json={"name": "Changed meanwhile"})
    assert changed.status_code == 200

    with pytest.raises(ConcurrentChangeProblem), database.transaction() as session:
        product_io.apply_plan(session, plan)

    products = all_products(client)
    assert products["HAM-16OZ"]["name"] == "Changed meanwhile"
    assert "NEW-1" not in products  # rolled back with the failed update
