"""GET /api/v1/products/export: CSV or JSON by Accept, streamed from one snapshot."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from service.domain import product_io
from service.formats import escape_formula, unescape_formula
from service.models import Product
from tests.helpers import asgi_scope, assert_problem, create_category, create_product

EXPORT = "/api/v1/products/export"
PRODUCTS = "/api/v1/products"
HEADER = [
    "id",
    "sku",
    "name",
    "description",
    "category_id",
    "category_path",
    "unit_of_measure",
    "reorder_point",
    "reorder_quantity",
    "is_active",
    "average_cost",
    "created_at",
    "updated_at",
]


def export_csv(client, **params) -> list[dict[str, str]]:
    response = client.get(EXPORT, params=params, headers={"Accept": "text/csv"})
    assert response.status_code == 200, response.text
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    assert rows[0] == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]


def export_json(client, **params) -> list[dict]:
    response = client.get(EXPORT, params=params, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def bulk_products(database, count: int, start: int = 0) -> None:
    """Products written straight to the database, fast."""
    now = datetime.now(UTC)
    rows = [
        {
            "sku": f"BULK-{i:06d}",
            "sku_key": f"bulk-{i:06d}",
            "name": f"Bulk product {i}",
            "unit_of_measure": "each",
            "reorder_point": 0,
            "reorder_quantity": 0,
            "is_active": True,
            "average_cost": 0,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        for i in range(start, start + count)
    ]
    with database.engine.begin() as connection:
        connection.execute(insert(Product.__table__), rows)


# --- content ---------------------------------------------------------------------------------


def test_csv_export_has_every_column_in_order_with_category_paths(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    saw = create_product(client, "SAW-1", name="Bow saw", unit_of_measure="box", is_active=False)
    hammer = create_product(
        client,
        "HAM-16OZ",
        name="Claw hammer, 16 oz",
        description='Fibreglass "pro"',
        category_id=hand["id"],
        reorder_point=10,
        reorder_quantity=40,
    )

    rows = export_csv(client)

    assert [row["id"] for row in rows] == [str(saw["id"]), str(hammer["id"])]  # by id
    assert rows[1] == {
        "id": str(hammer["id"]),
        "sku": "HAM-16OZ",
        "name": "Claw hammer, 16 oz",
        "description": 'Fibreglass "pro"',
        "category_id": str(hand["id"]),
        "category_path": "Tools/Hand tools",
        "unit_of_measure": "each",
        "reorder_point": "10",
        "reorder_quantity": "40",
        "is_active": "true",
        "average_cost": "0.000000",
        "created_at": hammer["created_at"],
        "updated_at": hammer["updated_at"],
    }
    assert rows[0]["description"] == rows[0]["category_id"] == rows[0]["category_path"] == ""
    assert rows[0]["is_active"] == "false"


def test_csv_export_headers_name_a_dated_attachment(client):
    response = client.get(EXPORT, headers={"Accept": "text/csv"})

    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    today = datetime.now(UTC).date().isoformat()
    assert response.headers["content-disposition"] == (
        f'attachment; filename="products-{today}.csv"'
    )
    assert response.headers["vary"] == "Accept"
    assert response.content.startswith(b"id,sku,name,")
    assert response.content.endswith(b"\r\n")


def test_json_export_is_one_array_of_products_with_their_paths(client):
    tools = create_category(client, "Tools")
    hammer = create_product(client, "HAM-16OZ", name="Claw hammer", category_id=tools["id"])
    plain = create_product(client, "SAW-1", name="Bow saw")

    response = client.get(EXPORT)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].endswith('.json"')
    items = response.json()
    assert list(items[0]) == HEADER
    assert items == [
        {**hammer, "category_path": "Tools"},
        {**plain, "category_path": None},
    ]


def test_empty_catalog_exports_a_header_or_an_empty_array(client):
    assert export_csv(client) == []
    assert export_json(client) == []


def test_text_that_a_spreadsheet_would_run_is_escaped_in_csv_only(client):
    for i, name in enumerate(["=1+1", "+44 cable", "-5 V", "@sum", "'=quoted", "plain"]):
        create_product(client, f"F-{i}", name=name, description="\tindented")

    csv_names = [row["name"] for row in export_csv(client)]
    json_names = [item["name"] for item in export_json(client)]

    assert csv_names == ["'=1+1", "'+44 cable", "'-5 V", "'@sum", "''=quoted", "plain"]
    assert json_names == ["=1+1", "+44 cable", "-5 V", "@sum", "'=quoted", "plain"]
    assert {row["description"] for row in export_csv(client)} == {"'\tindented"}


def test_formula_escaping_round_trips():
    for text in ["=x", "'=x", "''=x", "'x", "x", "'", "-", "", "a=b", "\r", "'\t"]:
        assert unescape_formula(escape_formula(text)) == text


# --- filters and negotiation -----------------------------------------------------------------


def test_filters_mean_what_they_mean_in_the_list(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    create_product(client, "TOP-1", category_id=tools["id"])
    create_product(client, "HAND-1", category_id=hand["id"])
    create_product(client, "HAND-2", category_id=hand["id"], is_active=False)
    create_product(client, "NONE-1")

    def exported(**params) -> list[str]:
        return [row["sku"] for row in export_csv(client, **params)]

    def listed(**params) -> list[str]:
        return [
            p["sku"] for p in client.get(PRODUCTS, params={"limit": 200, **params}).json()["items"]
        ]

    cases = [
        {"category_id": tools["id"]},
        {"category_id": tools["id"], "include_descendants": "true"},
        {"is_active": "false"},
        {"category_id": tools["id"], "include_descendants": "true", "is_active": "true"},
        {"category_id": 999},
    ]
    for params in cases:
        assert sorted(exported(**params)) == sorted(listed(**params)), params
    assert exported(category_id=tools["id"], include_descendants="true") == [
        "TOP-1",
        "HAND-1",
        "HAND-2",
    ]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("application/xml;q=1, text/csv;q=0.5", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
    ],
)
def test_accept_chooses_the_format(client, accept, media_type):
    headers = {"Accept": accept} if accept else {}
    response = client.get(EXPORT, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type


@pytest.mark.parametrize("accept", ["application/xml", "text/html", "image/*"])
def test_an_accept_allowing_neither_format_is_406(client, accept):
    problem = assert_problem(client.get(EXPORT, headers={"Accept": accept}), 406, "not-acceptable")
    assert accept in problem["detail"]


def test_invalid_filter_values_are_400(client):
    assert_problem(client.get(EXPORT, params={"category_id": "x"}), 400)
    assert_problem(client.get(EXPORT, params={"colour": "red"}), 400)


@pytest.mark.parametrize("role", ["viewer", "clerk", "manager"])
def test_every_role_may_export(anonymous_client, auth_headers, role):
    response = anonymous_client.get(EXPORT, headers=auth_headers(role))
    assert response.status_code == 200


def test_export_without_credentials_is_401(anonymous_client):
    assert_problem(anonymous_client.get(EXPORT), 401)


# --- streaming -------------------------------------------------------------------------------


def asgi_get(app, headers: dict[str, str], *, on_body=None, disconnect_after: int | None = None):
    """GET the export through the ASGI app itself and record every message it sends.

    The test client would hand over the finished body; this shows how it was sent.
    ``disconnect_after``: the client goes away after that many body messages.
    """
    messages: list[dict] = []

    async def run() -> None:
        gone = asyncio.Event()
        requested = False

        async def receive() -> dict:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            messages.append(message)
            if message["type"] != "http.response.body":
                return
            bodies = sum(1 for m in messages if m["type"] == "http.response.body")
            if on_body is not None:
                on_body(bodies)
            if not message.get("more_body", False) or bodies == disconnect_after:
                gone.set()

        await app(asgi_scope("GET", EXPORT, headers), receive, send)

    asyncio.run(run())
    return messages


def body_chunks(messages: list[dict]) -> list[bytes]:
    return [m["body"] for m in messages if m["type"] == "http.response.body" and m["body"]]


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(product_io, "EXPORT_CHUNK_ROWS", 25)


def test_the_body_is_sent_in_chunks_from_one_snapshot(
    client, app, database, auth_headers, small_chunks
):
    bulk_products(database, 500)
    headers = {"Accept": "text/csv", **auth_headers("viewer")}
    late = {}

    def write_meanwhile(bodies: int) -> None:
        # After the first chunk has gone out, a product is added and one is renamed: the
        # export already runs on its snapshot and shows neither change.
        if bodies == 1:
            with database.engine.begin() as connection:
                connection.execute(
                    insert(Product.__table__),
                    [{**_row("LATE-1"), "version": 1}],
                )
                connection.exec_driver_sql(
                    "UPDATE products SET name = 'Renamed' WHERE sku = 'BULK-000499'"
                )
            late["done"] = True

    messages = asgi_get(app, headers, on_body=write_meanwhile)

    assert messages[0]["type"] == "http.response.start"
    assert messages[0]["status"] == 200
    chunks = body_chunks(messages)
    assert len(chunks) >= 500 // 25  # one per 25 rows, plus the header
    assert late["done"]
    text = b"".join(chunks).decode()
    assert "LATE-1" not in text
    assert "Renamed" not in text
    assert text.count("\r\n") == 501
    # The snapshot is gone with the request: a new export sees the changes.
    assert "LATE-1" in client.get(EXPORT, headers={"Accept": "text/csv"}).text


def _row(sku: str) -> dict:
    now = datetime.now(UTC)
    return {
        "sku": sku,
        "sku_key": sku.casefold(),
        "name": sku,
        "unit_of_measure": "each",
        "reorder_point": 0,
        "reorder_quantity": 0,
        "is_active": True,
        "average_cost": 0,
        "created_at": now,
        "updated_at": now,
    }


def test_a_client_that_goes_away_stops_the_export_and_frees_its_connection(
    client, app, database, auth_headers, small_chunks
):
    bulk_products(database, 2000)
    headers = {"Accept": "text/csv", **auth_headers("viewer")}

    messages = asgi_get(app, headers, disconnect_after=2)

    sent = b"".join(body_chunks(messages)).count(b"\r\n") - 1
    assert 0 < sent < 1000, sent  # stopped long before the 2000 rows
    assert database.engine.pool.checkedout() == 0


def test_the_export_reads_with_two_statements_whatever_its_size(
    client, database, count_queries, small_chunks
):
    create_category(client, "Tools")

    def statements(total: int) -> list[str]:
        with count_queries() as counter:
            response = client.get(EXPORT, headers={"Accept": "text/csv"})
        assert response.status_code == 200
        assert response.text.count("\r\n") == total + 1
        return counter.statements

    bulk_products(database, 10)
    small = statements(10)
    bulk_products(database, 590, start=10)
    large = statements(600)  # 24 chunks of 25 rows
    assert len(small) == len(large), (small, large)
    # The credential lookup, the categories, the products (one cursor for every chunk).
    assert sum("FROM products" in statement for statement in large) == 1, large


def test_json_export_of_many_products_is_valid_json(client, database, small_chunks):
    bulk_products(database, 260)

    items = export_json(client)

    assert len(items) == 260
    assert [item["sku"] for item in items] == [f"BULK-{i:06d}" for i in range(260)]
    assert json.loads(json.dumps(items)) == items
