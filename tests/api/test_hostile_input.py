"""Issue 11: hostile input gets a small 4xx problem (or a correct 2xx) and writes nothing.

Each mechanism is tested where it is shared: JSON nesting (``service.formats.loads_json``, the
API's validators and the import), NUL characters (the validators and the import's rows), the
capped and bounded ``errors[]``, the import's own row checks whatever media type path the
body took, every ``date-time`` parameter and field, and rate limits counted before the body
is validated. Every test runs on SQLite and on PostgreSQL (which cannot store NUL in text);
after each hostile request every table holds the rows it held before.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import flask
import pytest
from sqlalchemy import func, select

from service import spec
from service.api import ratelimit
from service.api.handlers import products as product_handlers
from service.api.multipart_form import InvalidPartEncodingProblem, read_form
from service.api.ratelimit import EXTENSION_KEY as RATE_LIMITS_KEY
from service.api.ratelimit import RateLimits
from service.api.transaction import EXTENSION_KEY
from service.api.validators import MAX_COUNTED_ERRORS, ProblemJSONBodyValidator
from service.app import create_app
from service.config import Settings
from service.domain import product_io
from service.formats import (
    MAX_JSON_DEPTH,
    InvalidTimestamp,
    JSONTooDeep,
    json_depth_exceeds,
    loads_json,
    parse_timestamp,
)
from service.models import Base
from service.problems import (
    MAX_LISTED_ERRORS,
    ImportRowsProblem,
    JSONTooDeepProblem,
    Problem,
    RateLimitedProblem,
    UnsupportedMediaTypeProblem,
)
from service.schema_check import EXCERPT_CHARS, NUL_DETAIL, NUL_KEY_DETAIL
from tests.conftest import bearer_for, wipe
from tests.helpers import (
    IMPORT_CSV,
    JSON,
    assert_problem,
    create_location,
    create_product,
    csv_upload,
    multipart,
    upload_csv,
)

CATEGORIES = "/api/v1/categories"
PRODUCTS = "/api/v1/products"
IMPORT = "/api/v1/products/import"
RECEIPTS = "/api/v1/stock/receipts"
MOVEMENTS = "/api/v1/stock/movements"
VALUATION = "/api/v1/reports/valuation"
SUMMARY = "/api/v1/reports/movements"
API_KEYS = "/api/v1/api-keys"
LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
MAX_ANSWER_BYTES = 100_000
_METHODS = ("post", "put", "patch", "delete")


def _json_body_operations() -> list[tuple[str, str, str]]:
    """(method, path with every parameter 1, operationId) of each operation taking JSON."""
    document = spec.document()
    found = []
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if method not in _METHODS or "requestBody" not in operation:
                continue
            body = spec.inline_refs(operation["requestBody"], document)
            if "application/json" in body.get("content", {}):
                path = "/".join(
                    "1" if part.startswith("{") else part for part in template.split("/")
                )
                found.append((method.upper(), path, operation["operationId"]))
    return found


JSON_BODY_OPERATIONS = _json_body_operations()


def row_counts(database) -> dict[str, int]:
    with database.engine.connect() as connection:
        return {
            table.name: connection.scalar(select(func.count()).select_from(table))
            for table in Base.metadata.sorted_tables
        }


@contextmanager
def writes_nothing(database) -> Iterator[None]:
    before = row_counts(database)
    yield
    assert row_counts(database) == before


def assert_small(response) -> None:
    assert len(response.content) < MAX_ANSWER_BYTES, len(response.content)


# --- JSON nesting -----------------------------------------------------------------------------

DEEP_ARRAYS = b"[" * 1000 + b"]" * 1000  # 2 KB: Python's json fails with RecursionError
DEEP_OBJECTS = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_UNCLOSED = b'{"rows":' + b"[" * 100_000


def test_the_spec_has_json_body_operations_to_test():
    operations = {operation for _m, _p, operation in JSON_BODY_OPERATIONS}
    assert {"login", "requestPasswordReset", "importProducts", "createReceipt"} <= operations
    assert len(operations) >= 15


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    JSON_BODY_OPERATIONS,
    ids=[operation for _m, _p, operation in JSON_BODY_OPERATIONS],
)
def test_deep_json_is_a_400_on_every_json_body_operation(client, database, method, path, operation):
    # The Idempotency-Key puts the stock writes on their idempotent path too.
    headers = {**JSON, "Idempotency-Key": f"deep-{operation}"}
    with writes_nothing(database):
        for body in (DEEP_ARRAYS, DEEP_OBJECTS, DEEP_UNCLOSED):
            response = client.request(method, path, content=body, headers=headers)
            problem = assert_problem(response, 400, "validation-error")
            assert problem["max_depth"] == MAX_JSON_DEPTH
            assert problem["errors"] == [
                {"pointer": "", "detail": f"Nested more than {MAX_JSON_DEPTH} levels deep."}
            ]


def test_nesting_up_to_the_limit_is_read_and_one_more_level_is_not():
    assert loads_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(JSONTooDeep):
        loads_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    # Brackets in strings are text, whatever the escapes around them.
    text = json.dumps({"a": "[" * 500 + '\\"]{', "b": ["\\", "[[[", {"c": '"'}]})
    assert loads_json(text) == json.loads(text)
    # A staircase ([[],[[],[[],...) never opens many brackets in a row; it is still too deep.
    stairs = "[[]," * 50 + "1" + "]" * 50
    assert json_depth_exceeds(stairs)
    # The legitimate bodies nest 3 levels (a stock document's lines).
    receipt = {"location_id": 1, "lines": [{"product_id": 1, "quantity": 1, "unit_cost": "1"}]}
    assert not json_depth_exceeds(json.dumps(receipt), 3)


def test_the_prescan_is_linear_on_large_bodies():
    rows = [
        {"sku": f"S-{i}", "name": f"P [{i}] {{x}}", "description": '"\\[['} for i in range(50_000)
    ]
    text = json.dumps(rows)
    started = time.perf_counter()
    assert not json_depth_exceeds(text)
    trees = "[" + ",".join(["[" * 31 + "]" * 31] * 20_000) + "]"
    assert not json_depth_exceeds(trees)
    assert json_depth_exceeds("[" + trees + "]")
    assert time.perf_counter() - started < 5


def test_the_import_and_the_cli_share_the_nesting_limit():
    with pytest.raises(JSONTooDeepProblem):
        product_io.load_json(DEEP_ARRAYS)
    with pytest.raises(JSONTooDeepProblem):
        product_io.parse_json(DEEP_OBJECTS)


# --- NUL characters ---------------------------------------------------------------------------


def assert_not_echoed(response) -> None:
    assert "\\u0000" not in response.text and "\x00" not in response.text


def test_nul_in_json_strings_and_keys_is_a_400_naming_each_place(client, database):
    location = create_location(client)
    product = create_product(client)
    line = {"product_id": product["id"], "quantity": 1, "unit_cost": "1\u0000"}
    cases = [
        (CATEGORIES, {"name": "Too\u0000ls"}, [{"pointer": "/name", "detail": NUL_DETAIL}]),
        (CATEGORIES, {"na\u0000me": "Tools"}, [{"pointer": "", "detail": NUL_KEY_DETAIL}]),
        (
            RECEIPTS,
            {"location_id": location["id"], "reference": "PO\u00001", "lines": [line]},
            [
                {"pointer": "/lines/0/unit_cost", "detail": NUL_DETAIL},
                {"pointer": "/reference", "detail": NUL_DETAIL},
            ],
        ),
        (
            IMPORT,
            [{"sku": "A-1", "name": "ok"}, {"sku": "A-2", "name": "x\u0000"}],
            [{"line": 2, "field": "name", "pointer": "/1/name", "detail": NUL_DETAIL}],
        ),
        (
            LOGIN,
            {"email": "a\u0000@example.com", "password": "x"},
            [{"pointer": "/email", "detail": NUL_DETAIL}],
        ),
    ]
    with writes_nothing(database):
        for path, body, errors in cases:
            response = client.post(path, content=json.dumps(body), headers=JSON)
            problem = assert_problem(response, 400, "validation-error")
            assert problem["errors"] == errors, path
            assert problem["error_count"] == len(errors)
            assert_not_echoed(response)


def test_nul_in_a_form_field_is_a_400(anonymous_client, database):
    form = {"grant_type": "password", "username": "ada\x00@example.com", "password": "x\x00"}
    with writes_nothing(database):
        response = anonymous_client.post(TOKEN, data=form)
    # The OAuth2 token endpoint: an RFC 6749 invalid_request naming both fields.
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid_request",
        "error_description": f"The request is invalid: password: {NUL_DETAIL}; "
        f"username: {NUL_DETAIL}",
    }
    assert_not_echoed(response)


def test_nul_in_query_parameters_is_a_400(client, database):
    with writes_nothing(database):
        response = client.get(PRODUCTS, params={"q": "ham\x00mer"})
        problem = assert_problem(response, 400)
        assert problem["errors"] == [{"parameter": "q", "in": "query", "detail": NUL_DETAIL}]
        assert_not_echoed(response)
        response = client.get(MOVEMENTS, params={"created_after": "2026-01-01T00:00:00Z\x00"})
        assert assert_problem(response, 400)["errors"][0]["parameter"] == "created_after"
        # An unknown parameter is named without its NUL.
        response = client.get(CATEGORIES, params={"na\x00me": "x"})
        problem = assert_problem(response, 400)
        assert problem["errors"][0]["detail"] == "Unknown query parameter."
        assert_not_echoed(response)
        response = client.delete(f"{CATEGORIES}/1%00")
        assert response.status_code in (400, 404)
        # Bytes that are not UTF-8 are not silently read as U+FFFD either.
        response = client.get(f"{PRODUCTS}?q=%FF%FE")
        problem = assert_problem(response, 400)
        assert problem["errors"] == [
            {"parameter": "q", "in": "query", "detail": "Not valid UTF-8 once percent-decoded."}
        ]


def test_a_deeply_nested_cursor_is_a_400(client):
    # The one other JSON the service parses from a client: bounded by the cursor's maxLength.
    for opening in (b"[", b'{"s":'):
        nested = base64.urlsafe_b64encode(opening * 800).rstrip(b"=").decode()[:1024]
        response = client.get(PRODUCTS, params={"cursor": nested})
        assert assert_problem(response, 400)["errors"][0]["parameter"] == "cursor"


def test_nul_in_a_header_parameter_is_a_400(client, database):
    location = create_location(client)
    headers = {**JSON, "Idempotency-Key": "key\x00one"}
    body = {"location_id": location["id"], "lines": [{"product_id": 1, "quantity": 1}]}
    with writes_nothing(database):
        try:
            response = client.post(RECEIPTS, json=body, headers=headers)
        except Exception as exc:  # pragma: no cover - an HTTP client may refuse to send it
            pytest.skip(f"the test client refuses a NUL in a header: {exc}")
    assert response.status_code == 400, response.text
    assert_not_echoed(response)


def test_nul_in_csv_cells_and_headers_is_refused(client, database):
    with writes_nothing(database):
        response = upload_csv(client, "sku,name\nA-1,Good\nA-2,Bad\x00name\n")
        problem = assert_problem(response, 422, "invalid-import-rows")
        assert problem["errors"] == [{"line": 3, "field": "name", "detail": NUL_DETAIL}]
        assert_not_echoed(response)
        response = upload_csv(client, "sku,na\x00me\nA-1,Good\n")
        problem = assert_problem(response, 400)
        assert problem["errors"] == [{"line": 1, "detail": f"Column 2: {NUL_DETAIL}"}]
        assert_not_echoed(response)


def test_the_import_checks_nul_in_rows_it_parses_itself():
    parsed = product_io.parse_json(b'[{"sku": "A-1", "name": "x\\u0000y"}, {"s\\u0000": 1}]')
    assert parsed.rows == []
    assert parsed.errors == [
        {"line": 1, "field": "name", "pointer": "/0/name", "detail": NUL_DETAIL},
        {"line": 2, "pointer": "/1", "detail": NUL_KEY_DETAIL},
    ]


# --- errors[]: capped, bounded, no echo -------------------------------------------------------


def empty_lines(location_id: int, count: int) -> bytes:
    return b'{"location_id":%d,"lines":[' % location_id + b",".join([b"{}"] * count) + b"]}"


def test_a_body_just_under_the_size_limit_full_of_broken_lines_is_answered_small_and_fast(
    client, database
):
    location = create_location(client)
    body = empty_lines(location["id"], 340_000)
    assert 1024 * 1024 > len(body) > 1_000_000
    with writes_nothing(database):
        started = time.perf_counter()
        response = client.post(RECEIPTS, content=body, headers=JSON)
        elapsed = time.perf_counter() - started
    problem = assert_problem(response, 400, "validation-error")
    assert_small(response)
    # More lines than maxItems (500) is one error; the 340,000 entries are not examined.
    assert problem["error_count"] == 1
    [error] = problem["errors"]
    assert error["pointer"] == "/lines"
    assert error["detail"].endswith("is too long")
    assert len(error["detail"]) < 100
    assert elapsed < 15


def test_the_issue_body_of_1_4_mb_is_answered_small_and_fast(database_url):
    """The request of issue 11 (46.6 s, +3.86 GB, an 81.8 MB answer), on a 2 MiB body limit."""
    app = create_app(Settings(database_url=database_url, max_body_bytes=2 * 1024 * 1024))
    try:
        database = app.app.extensions[EXTENSION_KEY]
        wipe(database.engine)
        body = empty_lines(1, 466_000)
        assert 1_350_000 < len(body) < 1_450_000
        with (
            app.test_client(headers=bearer_for(database, "clerk")) as client,
            writes_nothing(database),
        ):
            started = time.perf_counter()
            response = client.post(RECEIPTS, content=body, headers=JSON)
            elapsed = time.perf_counter() - started
        problem = assert_problem(response, 400, "validation-error")
        assert_small(response)
        assert problem["error_count"] == 1
        assert elapsed < 15
    finally:
        database.dispose()


def test_many_broken_lines_are_counted_exactly_and_the_first_ones_listed(client, database):
    location = create_location(client)
    with writes_nothing(database):
        response = client.post(RECEIPTS, content=empty_lines(location["id"], 300), headers=JSON)
    problem = assert_problem(response, 400, "validation-error")
    assert_small(response)
    assert problem["error_count"] == 900  # product_id, quantity, unit_cost of each line
    assert "error_count_exact" not in problem
    errors = problem["errors"]
    assert len(errors) == MAX_LISTED_ERRORS
    assert [e["pointer"] for e in errors[:4]] == [
        "/lines/0/product_id",
        "/lines/0/quantity",
        "/lines/0/unit_cost",
        "/lines/1/product_id",
    ]
    assert errors[-1]["pointer"] == "/lines/33/product_id"  # document order: 10 after 9


def test_the_search_for_errors_stops_far_past_the_cap(client, database):
    # The import's array has no maxItems: 300,000 rows without a sku.
    body = b"[" + b",".join([b"{}"] * 300_000) + b"]"
    with writes_nothing(database):
        started = time.perf_counter()
        response = client.post(IMPORT, content=body, headers=JSON)
        elapsed = time.perf_counter() - started
    problem = assert_problem(response, 400, "validation-error")
    assert_small(response)
    assert problem["error_count"] == MAX_COUNTED_ERRORS
    assert problem["error_count_exact"] is False
    assert problem["detail"].startswith(
        f"The request body is invalid: at least {MAX_COUNTED_ERRORS}"
    )
    assert len(problem["errors"]) == MAX_LISTED_ERRORS
    assert problem["errors"][0] == {
        "line": 1,
        "field": "sku",
        "pointer": "/0/sku",
        "detail": "This field is required.",
    }
    assert elapsed < 15


def test_import_row_errors_are_capped_and_the_cli_still_gets_them_all(client, database):
    rows = ["sku,name,reorder_point"] + [f"E-{i},Bad,-1" for i in range(250)]
    with writes_nothing(database):
        response = upload_csv(client, "\n".join(rows))
    problem = assert_problem(response, 422, "invalid-import-rows")
    assert problem["error_count"] == 250
    assert len(problem["errors"]) == MAX_LISTED_ERRORS
    parsed = product_io.parse_csv("\n".join(rows).encode())
    assert len(parsed.errors) == 250
    assert len(ImportRowsProblem(parsed.errors).all_errors) == 250


def test_a_csv_header_of_many_unknown_columns_is_capped(client, database):
    header = ",".join(["sku", *(f"c{i}" for i in range(20_000))])
    with writes_nothing(database):
        response = upload_csv(client, f"{header}\nA-1\n")
    problem = assert_problem(response, 400)
    assert problem["error_count"] == 20_000
    assert len(problem["errors"]) == MAX_LISTED_ERRORS
    assert_small(response)


def test_details_quote_only_an_excerpt_of_a_long_value(client, database):
    long = "x" * 5000
    with writes_nothing(database):
        response = client.post(
            PRODUCTS, json={"sku": "LONG-1", "name": "Long", "description": long}
        )
        problem = assert_problem(response, 400)
        [error] = problem["errors"]
        assert error["pointer"] == "/description"
        assert error["detail"].endswith("(5000 characters) is too long")
        assert len(error["detail"]) < 3 * EXCERPT_CHARS
        assert "x" * (EXCERPT_CHARS + 1) not in response.text

        # An unknown field named by 5,000 characters: not in the pointer either.
        response = client.post(PRODUCTS, json={"sku": "LONG-2", "name": "Long", long: 1})
        [error] = assert_problem(response, 400)["errors"]
        assert error["pointer"] == ""
        assert error["detail"].startswith("Unknown field 'xxx")
        assert "x" * (EXCERPT_CHARS + 1) not in response.text
        many = {f"{'k' * EXCERPT_CHARS}{i}": 1 for i in range(5000)}
        response = client.post(PRODUCTS, json={"sku": "LONG-4", "name": "Long", **many})
        [error] = assert_problem(response, 400)["errors"]
        assert error["detail"].startswith("5000 unknown fields with long names, the first 'kkk")
        assert_small(response)

        # A wrong type on a big value quotes an excerpt of it.
        response = client.post(PRODUCTS, json={"sku": "LONG-3", "name": [long] * 50})
        [error] = assert_problem(response, 400)["errors"]
        assert error["pointer"] == "/name"
        assert len(error["detail"]) < 4 * EXCERPT_CHARS
        assert_small(response)

        # Parameters too.
        response = client.get(PRODUCTS, params={"q": long})
        [error] = assert_problem(response, 400)["errors"]
        assert error["parameter"] == "q"
        assert len(error["detail"]) < 4 * EXCERPT_CHARS
        response = client.get(PRODUCTS, params={long: "1"})
        [error] = assert_problem(response, 400)["errors"]
        assert len(error["parameter"]) < 2 * EXCERPT_CHARS
        assert "x" * (EXCERPT_CHARS + 1) not in response.text

        # CSV cells.
        response = upload_csv(client, f"sku,reorder_point\nA-1,{long}\n")
        [error] = assert_problem(response, 422)["errors"]
        assert len(error["detail"]) < 3 * EXCERPT_CHARS


def test_a_flood_of_query_parameters_is_capped(client):
    query = "&".join(f"p{i}=1" for i in range(1500))
    response = client.get(f"{CATEGORIES}?{query}")
    problem = assert_problem(response, 400)
    assert problem["error_count"] == 1500
    assert len(problem["errors"]) == MAX_LISTED_ERRORS
    assert_small(response)


# --- the import: every row checked, whatever the media type path ------------------------------

# The rows issue 11 found stored through a body without Content-Type.
BAD_ROWS = [
    {"sku": "BAD-1", "name": "Long", "description": "d" * 5000},
    {"sku": "BAD-2", "name": "Unit", "unit_of_measure": "BAD UNIT!"},
    {"sku": "BAD-3", "name": "  untrimmed  "},
    {"sku": "BAD-4", "name": "nul\u0000"},
]
BAD_CSV = (
    "sku,name,description,unit_of_measure\n"
    f"BAD-1,Long,{'d' * 5000},each\n"
    "BAD-2,Unit,,BAD UNIT!\n"
    "BAD-3,  untrimmed  ,,each\n"
    "BAD-4,nul\x00,,each\n"
)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "application/vnd.api+json",
        "text/csv",
        "text/csv; charset=latin-1",
        "application/json; charset=utf-16",
        "multipart/form-data; boundary=x",
    ],
)
@pytest.mark.parametrize("payload", ["csv", "json"])
def test_an_import_without_a_known_media_type_writes_nothing(
    client, database, content_type, payload
):
    body = BAD_CSV.encode() if payload == "csv" else json.dumps(BAD_ROWS).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    with writes_nothing(database):
        response = client.post(IMPORT, content=body, headers=headers)
    assert_problem(response, 415)
    assert client.get(PRODUCTS).json()["items"] == []


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/csv",
        "text/plain",
        "application/json",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "multipart/mixed; boundary=x",
        "multipart/form-data; boundary=x; charset=latin-1",
    ],
)
def test_a_csv_upload_without_its_media_type_writes_nothing(client, database, content_type):
    body, _ = csv_upload(BAD_CSV)
    headers = {} if content_type is None else {"Content-Type": content_type}
    with writes_nothing(database):
        response = client.post(IMPORT_CSV, content=body, headers=headers)
    assert_problem(response, 415)


@pytest.mark.parametrize(
    ("send", "status", "lines"),
    [
        (lambda c: upload_csv(c, BAD_CSV), 422, {2, 3, 4, 5}),
        (lambda c: c.post(IMPORT, json=BAD_ROWS), 400, {4}),  # a NUL is refused first
        (lambda c: c.post(IMPORT, json=BAD_ROWS[:3]), 400, {1, 2, 3}),
    ],
    ids=["csv", "json-nul", "json"],
)
def test_an_import_with_bad_rows_writes_nothing(client, database, send, status, lines):
    with writes_nothing(database):
        response = send(client)
    problem = assert_problem(response, status)
    assert {e["line"] for e in problem["errors"]} == lines
    assert "d" * (EXCERPT_CHARS + 1) not in response.text


def test_the_import_handler_checks_every_row_whatever_path_the_body_took(app, client, database):
    """Called as connexion calls it, but with neither the middleware nor the validator first."""
    flask_app = app.app
    with writes_nothing(database):
        with (
            flask_app.test_request_context(
                IMPORT, method="POST", data=json.dumps(BAD_ROWS), content_type="application/json"
            ),
            pytest.raises(ImportRowsProblem) as caught,
        ):
            product_handlers.import_products(body=BAD_ROWS)
        fields = {(e["line"], e.get("field")) for e in caught.value.all_errors}
        assert fields == {(1, "description"), (2, "unit_of_measure"), (3, "name"), (4, "name")}
        for content_type in (None, "text/plain", "text/csv"):
            with (
                flask_app.test_request_context(
                    IMPORT, method="POST", data=BAD_CSV.encode(), content_type=content_type
                ),
                pytest.raises(UnsupportedMediaTypeProblem),
            ):
                product_handlers.import_products(body=BAD_CSV.encode())
            with (
                flask_app.test_request_context(
                    IMPORT_CSV, method="POST", data=BAD_CSV.encode(), content_type=content_type
                ),
                pytest.raises(UnsupportedMediaTypeProblem),
            ):
                product_handlers.import_products_csv()
        body, headers = csv_upload(BAD_CSV)
        with (
            flask_app.test_request_context(
                IMPORT_CSV, method="POST", data=body, content_type=headers["Content-Type"]
            ),
            pytest.raises(ImportRowsProblem) as caught,
        ):
            product_handlers.import_products_csv()
        assert {e["line"] for e in caught.value.all_errors} == {2, 3, 4, 5}
        # Two file parts, or none: refused by the handler too.
        for parts in ([FILE_PART, FILE_PART], [("note", b"x", {})]):
            body, headers = multipart(*parts)
            with (
                flask_app.test_request_context(
                    IMPORT_CSV, method="POST", data=body, content_type=headers["Content-Type"]
                ),
                pytest.raises(Problem) as refused,
            ):
                product_handlers.import_products_csv()
            assert refused.value.status == 400


# --- the CSV import's file upload (multipart/form-data) ------------------------------------

GOOD_CSV = b"sku,name\nMP-1,Multipart\n"
FILE_PART = ("file", GOOD_CSV, {"filename": "products.csv", "Content-Type": "text/csv"})
BOUNDARY_TYPE = {"Content-Type": "multipart/form-data; boundary=xyz"}


def _raw(body: bytes, content_type: str = "multipart/form-data; boundary=xyz"):
    return body, {"Content-Type": content_type}


def _part(headers: bytes, content: bytes = b"sku\nMP-1\n") -> bytes:
    return b"--xyz\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"


DISPOSITION = b'Content-Disposition: form-data; name="file"; filename="p.csv"'

# (id, the body and its headers, status, problem type, a pointer errors[] must name)
HOSTILE_UPLOADS = [
    ("no-parts", multipart(), 400, "validation-error", "/file"),
    ("only-an-unknown-part", multipart(("note", b"x", {})), 400, "validation-error", "/note"),
    ("empty-file", multipart(("file", b"", {"filename": "p.csv"})), 400, "validation-error", None),
    ("empty-file-no-filename", multipart(("file", b"", {})), 400, "validation-error", None),
    ("blank-file", multipart(("file", b"\r\n\r\n", {"filename": "p.csv"})), 400, None, None),
    ("two-file-parts", multipart(FILE_PART, FILE_PART), 400, "validation-error", "/file"),
    (
        "file-and-unknown-text-part",
        multipart(FILE_PART, ("colour", b"red", {})),
        400,
        "validation-error",
        "/colour",
    ),
    (
        "file-and-unknown-file-part",
        multipart(FILE_PART, ("attachment", b"\x89PNG", {"filename": "x.png"})),
        400,
        "validation-error",
        "/attachment",
    ),
    (
        "file-and-dry-run-as-a-part",  # dry_run is a query parameter, not a part
        multipart(FILE_PART, ("dry_run", b"true", {})),
        400,
        "validation-error",
        "/dry_run",
    ),
    (
        "not-utf8-file",
        multipart(("file", b"sku,name\nMP-1,Caf\xe9\n", {"filename": "p.csv"})),
        400,
        "invalid-encoding",
        None,
    ),
    (
        "not-utf8-file-without-filename",
        multipart(("file", b"sku,name\nMP-1,Caf\xe9\n", {})),
        400,
        "invalid-encoding",
        "/file",
    ),
    (
        "utf16-file",
        multipart(("file", "sku,name\nMP-1,x\n".encode("utf-16"), {"filename": "p.csv"})),
        400,
        "invalid-encoding",
        None,
    ),
    (
        "utf16-file-without-filename",
        multipart(("file", "sku,name\nMP-1,x\n".encode("utf-16"), {})),
        400,
        "invalid-encoding",
        "/file",
    ),
    (
        "part-charset-latin1",
        multipart(
            ("file", GOOD_CSV, {"filename": "p.csv", "Content-Type": "text/csv; charset=latin-1"})
        ),
        415,
        "unsupported-charset",
        None,
    ),
    ("no-boundary", _raw(multipart(FILE_PART)[0], "multipart/form-data"), 400, None, ""),
    (
        "empty-boundary",
        _raw(multipart(FILE_PART)[0], 'multipart/form-data; boundary=""'),
        400,
        None,
        "",
    ),
    ("wrong-boundary", _raw(multipart(FILE_PART)[0]), 400, None, ""),
    ("boundary-too-long", multipart(FILE_PART, boundary="b" * 300), 400, None, ""),
    ("no-closing-boundary", _raw(_part(DISPOSITION)), 400, None, ""),
    ("truncated-in-headers", _raw(b"--xyz\r\nContent-Disposition: form-da"), 400, None, ""),
    ("not-multipart-at-all", _raw(GOOD_CSV), 400, None, ""),
    (
        "no-content-disposition",
        _raw(_part(b"Content-Type: text/csv") + b"--xyz--\r\n"),
        400,
        None,
        "",
    ),
    (
        "disposition-without-name",
        _raw(_part(b'Content-Disposition: form-data; filename="p.csv"') + b"--xyz--\r\n"),
        400,
        None,
        "",
    ),
    (
        "disposition-not-form-data",
        _raw(_part(b'Content-Disposition: attachment; name="file"') + b"--xyz--\r\n"),
        400,
        None,
        "",
    ),
    (
        "too-many-part-headers",
        _raw(_part(DISPOSITION + b"".join(b"\r\nX-%d: y" % i for i in range(50))) + b"--xyz--\r\n"),
        400,
        None,
        "",
    ),
    (
        "huge-part-header",
        _raw(_part(DISPOSITION + b"\r\nX-Pad: " + b"p" * 200_000) + b"--xyz--\r\n"),
        400,
        None,
        "",
    ),
    (
        "thousands-of-parts",
        multipart(*[(f"f{i}", b"v", {}) for i in range(5000)]),
        400,
        None,
        "",
    ),
    (
        "thousands-of-file-parts",
        multipart(*[FILE_PART] * 5000),
        400,
        None,
        "",
    ),
    ("nul-in-part-name", multipart(FILE_PART, ("fi\x00le", b"x", {})), 400, "validation-error", ""),
    (
        "huge-part-name",
        multipart(FILE_PART, ("n" * 100_000, b"x", {})),
        400,
        "validation-error",
        "",
    ),
    (
        "huge-unknown-part",
        multipart(FILE_PART, ("pad", b"p" * 3_000_000, {})),
        400,
        "validation-error",
        "/pad",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "slug", "pointer"),
    [
        pytest.param(body, headers, status, slug, pointer, id=name)
        for name, (body, headers), status, slug, pointer in HOSTILE_UPLOADS
    ],
)
def test_a_hostile_upload_is_a_small_problem_and_writes_nothing(
    client, database, body, headers, status, slug, pointer
):
    started = time.perf_counter()
    with writes_nothing(database):
        response = client.post(IMPORT_CSV, content=body, headers=headers)
    problem = assert_problem(response, status, slug)
    assert time.perf_counter() - started < 2
    assert_small(response)
    assert_not_echoed(response)
    assert "Traceback" not in response.text
    assert b"n" * 100 not in response.content and b"p" * 100 not in response.content
    if pointer is not None:
        assert pointer in [e.get("pointer") for e in problem.get("errors", [])], problem
    assert client.get(PRODUCTS).json()["items"] == []


def test_a_missing_or_repeated_file_part_is_named(client):
    missing = assert_problem(
        client.post(IMPORT_CSV, content=multipart(("note", b"x", {}))[0], headers=multipart()[1]),
        400,
    )
    assert missing["errors"] == [
        {"pointer": "/note", "detail": "Unknown part; the form takes: file."},
        {"pointer": "/file", "detail": "This part is required."},
    ]
    body, headers = multipart(FILE_PART, FILE_PART)
    twice = assert_problem(client.post(IMPORT_CSV, content=body, headers=headers), 400)
    assert twice["errors"] == [
        {"pointer": "/file", "detail": "Send this part once; the form has 2."}
    ]


def test_an_empty_upload_body_is_400(client, database):
    with writes_nothing(database):
        response = client.post(IMPORT_CSV, content=b"", headers=BOUNDARY_TYPE)
    assert_problem(response, 400, "validation-error")


def test_a_file_part_not_in_utf8_names_the_byte_and_the_line(client):
    body, headers = multipart(("file", b"sku,name\nMP-1,ok\nMP-2,Caf\xe9\n", {}))
    problem = assert_problem(client.post(IMPORT_CSV, content=body, headers=headers), 400)
    assert "byte 25 (line 3)" in problem["detail"]
    body, headers = multipart(("file", b"sku,name\nMP-1,ok\nMP-2,Caf\xe9\n", {"filename": "a"}))
    problem = assert_problem(client.post(IMPORT_CSV, content=body, headers=headers), 400)
    assert "byte 25 (line 3)" in problem["detail"]


@pytest.mark.parametrize("filename", [None, "products.csv"])
def test_an_upload_sent_in_tiny_chunks_is_read_whole(client, filename):
    """Multi-byte characters and the boundary split across chunks, with or without filename."""
    content = "sku,name\n" + "".join(f"MP-{i},Caf\u00e9 \u20ac {i}\n" for i in range(40))
    body, headers = csv_upload(content, filename=filename)
    chunks = (body[i : i + 7] for i in range(0, len(body), 7))

    response = client.post(IMPORT_CSV, content=chunks, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["created"] == 40
    names = {
        p["sku"]: p["name"] for p in client.get(PRODUCTS, params={"limit": 200}).json()["items"]
    }
    assert names["MP-7"] == "Caf\u00e9 \u20ac 7"


def test_the_form_reader_reports_the_first_bad_byte_across_chunks():
    file_part = {"file": {"type": "string", "format": "binary"}}
    content = b"sku\n" + "\u20ac".encode() * 10 + b"\nA\xe2\x82" + b"X"
    body, headers = multipart(("file", content, {}))

    async def tiny():
        for i in range(len(body)):
            yield body[i : i + 1]

    with pytest.raises(InvalidPartEncodingProblem) as caught:
        asyncio.run(read_form(headers["Content-Type"], tiny(), file_part))
    # "sku\n" (4) + 10 euro signs (30) + "\nA" (2): the broken character starts at byte 36.
    assert "byte 36 (line 3)" in caught.value.detail
    good = b"sku\n" + "\u20ac".encode() * 10
    body, headers = multipart(("file", good, {}))

    async def tiny_good():
        for i in range(len(body)):
            yield body[i : i + 1]

    form = asyncio.run(read_form(headers["Content-Type"], tiny_good(), file_part))
    assert [(p.name, p.filename, p.size) for p in form.parts] == [("file", None, len(good))]


# --- timestamps -------------------------------------------------------------------------------

ODD_TIMESTAMPS = [
    "0000-01-01T00:00:00Z",
    "0000-12-31T23:59:59+23:59",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999-23:59",
    "9999-12-31T23:59:60Z",
    "2016-12-31T23:59:60Z",
    "2026-01-01T00:00:00+23:59",
    "2026-01-01T00:00:00-23:59",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01T00:00:00+23:60",
    "2026-02-30T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:00.123456789123456789Z",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "10000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "garbage",
    " ",
]
TIMESTAMP_PARAMETERS = [
    (MOVEMENTS, "created_after"),
    (MOVEMENTS, "created_before"),
    (VALUATION, "as_of"),
    (SUMMARY, "from"),
    (SUMMARY, "to"),
]


def parsed_or_none(value: str) -> datetime | None:
    try:
        return parse_timestamp(value)
    except InvalidTimestamp:
        return None


@pytest.fixture()
def one_movement(client) -> datetime:
    location = create_location(client)
    product = create_product(client)
    line = {"product_id": product["id"], "quantity": 2, "unit_cost": "1.50"}
    response = client.post(RECEIPTS, json={"location_id": location["id"], "lines": [line]})
    assert response.status_code == 201, response.text
    [movement] = client.get(MOVEMENTS).json()["items"]
    return datetime.fromisoformat(movement["created_at"])


@pytest.mark.parametrize(("path", "name"), TIMESTAMP_PARAMETERS)
def test_every_date_time_parameter_answers_4xx_or_a_correct_200(
    client, database, one_movement, path, name
):
    for value in ODD_TIMESTAMPS:
        with writes_nothing(database):
            response = client.get(path, params={name: value})
        instant = parsed_or_none(value)
        assert response.status_code < 500, (value, response.text)
        if instant is None:
            problem = assert_problem(response, 400)
            assert problem["errors"][0]["parameter"] == name, value
            continue
        if path == SUMMARY and response.status_code != 200:
            # An empty period (from not before to; the other end defaults) is refused as such.
            problem = assert_problem(response, 400)
            assert problem["detail"].startswith("The period is empty"), value
            continue
        assert response.status_code == 200, (value, response.text)
        answer = response.json()
        if name == "created_after":
            assert len(answer["items"]) == (1 if one_movement >= instant else 0), value
        elif name == "created_before":
            assert len(answer["items"]) == (1 if one_movement < instant else 0), value
        elif name == "as_of":
            expected = min(instant, datetime.now(UTC))
            assert abs(datetime.fromisoformat(answer["as_of"]) - expected) < timedelta(minutes=5)
        else:
            assert answer["totals"]["movements"] in (0, 1), value


def test_api_key_expiry_answers_4xx_or_a_correct_201(client, database):
    for value in ODD_TIMESTAMPS:
        before = row_counts(database)
        response = client.post(
            API_KEYS, json={"name": "odd expiry", "role": "viewer", "expires_at": value}
        )
        assert response.status_code < 500, (value, response.text)
        instant = parsed_or_none(value)
        if response.status_code == 201:
            assert instant is not None
            created = datetime.fromisoformat(response.json()["expires_at"])
            assert created == instant, value
            continue
        assert response.status_code in (400, 422), (value, response.text)
        if instant is None:
            assert assert_problem(response, 400)["errors"][0]["pointer"] == "/expires_at"
        assert row_counts(database) == before
    # Far and odd values are answered too, a correct one is taken.
    soon = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    leap = soon.strftime("%Y-%m-%dT23:59:60+23:59")
    response = client.post(API_KEYS, json={"name": "leap", "role": "viewer", "expires_at": leap})
    assert response.status_code == 201, response.text
    assert datetime.fromisoformat(response.json()["expires_at"]) == parse_timestamp(leap)


# --- rate limits before validation ------------------------------------------------------------


@pytest.fixture()
def limited_app(database_url):
    built = []

    def make(**settings):
        options = {"rate_limit_enabled": True, "validate_responses": True, **settings}
        application = create_app(Settings(database_url=database_url, **options))
        built.append(application)
        wipe(application.app.extensions[EXTENSION_KEY].engine)
        return application

    yield make
    for application in built:
        application.app.extensions[RATE_LIMITS_KEY].close()
        application.app.extensions[EXTENSION_KEY].dispose()


@pytest.fixture()
def count_validations(monkeypatch):
    calls = []
    original = ProblemJSONBodyValidator._parse

    async def counted(self, stream, scope):
        calls.append(1)
        return await original(self, stream, scope)

    monkeypatch.setattr(ProblemJSONBodyValidator, "_parse", counted)
    return calls


def test_over_the_write_limit_an_invalid_body_is_a_429_not_a_400(limited_app, count_validations):
    app = limited_app(write_rate_limit="3/minute")
    database = app.app.extensions[EXTENSION_KEY]
    headers = {**bearer_for(database, "manager"), **JSON}
    with app.test_client() as client, writes_nothing(database):
        for body in (b'{"nom": "x"}', DEEP_ARRAYS, empty_lines(1, 1000)):
            response = client.post(CATEGORIES, content=body, headers=headers)
            assert_problem(response, 400)
            assert "ratelimit-remaining" in response.headers
        assert len(count_validations) == 3
        for body in (b'{"nom": "x"}', DEEP_ARRAYS, empty_lines(1, 300_000), b'{"name": "ok"}'):
            response = client.post(CATEGORIES, content=body, headers=headers)
            problem = assert_problem(response, 429, "rate-limited")
            assert problem["detail"].startswith("Too many writes")
        assert len(count_validations) == 3  # refused before any validation


def test_over_the_login_limit_an_invalid_body_is_a_429_not_a_400(limited_app, count_validations):
    app = limited_app(login_rate_limit="2/minute")
    database = app.app.extensions[EXTENSION_KEY]
    with app.test_client() as client, writes_nothing(database):
        for body in (b'{"email": "a@example.com"}', DEEP_OBJECTS):
            assert_problem(client.post(LOGIN, content=body, headers=JSON), 400)
        for body in (DEEP_OBJECTS, b'{"email": "a@example.com", "password": "guess"}'):
            assert_problem(client.post(LOGIN, content=body, headers=JSON), 429, "rate-limited")
        assert len(count_validations) == 2


def test_the_handler_wrapper_counts_only_what_the_middleware_did_not(monkeypatch):
    limits = RateLimits(Settings(rate_limit_enabled=True, write_rate_limit="1/minute"))
    monkeypatch.setattr(ratelimit, "current_principal", lambda: None)
    handler = limits.wrap(lambda: ({"ok": True}, 201), limits.write_policy)
    flask_app = flask.Flask(__name__)
    counted = {"asgi.scope": {ratelimit.SCOPE_KEY: {"RateLimit-Limit": "1"}}}
    with flask_app.test_request_context("/api/v1/x", method="POST", environ_base=counted):
        for _ in range(3):  # counted by the middleware already: not again
            assert handler() == ({"ok": True}, 201)
    with flask_app.test_request_context("/api/v1/x", method="POST"):
        _body, status, headers = handler()
        assert (status, headers["RateLimit-Remaining"]) == (201, "0")
        with pytest.raises(RateLimitedProblem):
            handler()
