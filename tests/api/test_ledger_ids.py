"""Stock document and movement ids beyond 2^31-1 (64-bit, the spec's LedgerId), end to end.

The id sequences are moved past the 32-bit range first (PostgreSQL: setval; SQLite: its
AUTOINCREMENT counter in sqlite_sequence), then documents are posted, read, reversed and
listed through the API with response validation on.
"""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import text

from tests.helpers import assert_problem, create_location, create_product, walk_pages

STOCK = "/api/v1/stock"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Distinct values, so a document id in a movement's place (or the reverse) shows.
LAST_DOCUMENT_ID = INT32_MAX + 1_000
LAST_MOVEMENT_ID = 2**33 + 7


def move_id_sequences(engine, documents: int, movements: int) -> None:
    """The next stock document gets ``documents + 1``, the next movement ``movements + 1``."""
    with engine.begin() as connection:
        for table, last in (("stock_documents", documents), ("stock_movements", movements)):
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT setval(pg_get_serial_sequence(:table, 'id'), :last)"),
                    {"table": table, "last": last},
                )
            else:
                connection.execute(
                    text("DELETE FROM sqlite_sequence WHERE name = :table"), {"table": table}
                )
                connection.execute(
                    text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :last)"),
                    {"table": table, "last": last},
                )


@pytest.fixture()
def wide(client, database):
    """The admin client, with the ledger's id sequences beyond 32 bits."""
    move_id_sequences(database.engine, LAST_DOCUMENT_ID, LAST_MOVEMENT_ID)
    return client


def created(response) -> dict:
    assert response.status_code == 201, response.text
    document = response.json()
    assert response.headers["location"] == f"{STOCK}/documents/{document['id']}"
    return document


def cursor_with(sort: str, values: list) -> str:
    raw = json.dumps({"s": sort, "k": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def test_documents_and_movements_beyond_int32_round_trip(wide):
    product = create_product(wide, "WIDE-1")
    source, target = create_location(wide, "WIDE-A"), create_location(wide, "WIDE-B")
    receipt_body = {
        "location_id": source["id"],
        "reference": "PO-WIDE",
        "lines": [{"product_id": product["id"], "quantity": 10, "unit_cost": "2.5000"}],
    }
    key = {"Idempotency-Key": "wide-ids-receipt"}

    response = wide.post(f"{STOCK}/receipts", json=receipt_body, headers=key)
    receipt = created(response)
    assert receipt["id"] == LAST_DOCUMENT_ID + 1
    [received] = receipt["movements"]
    assert received["id"] == LAST_MOVEMENT_ID + 1
    assert received["document_id"] == receipt["id"]
    # Exact in the JSON text itself, not only after parsing.
    assert f'"id":{LAST_MOVEMENT_ID + 1}' in response.text.replace(" ", "")

    replay = wide.post(f"{STOCK}/receipts", json=receipt_body, headers=key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert created(replay) == receipt

    transfer = created(
        wide.post(
            f"{STOCK}/transfers",
            json={
                "from_location_id": source["id"],
                "to_location_id": target["id"],
                "lines": [{"product_id": product["id"], "quantity": 4}],
            },
        )
    )
    assert transfer["id"] == LAST_DOCUMENT_ID + 2
    out_leg, in_leg = transfer["movements"]
    assert [out_leg["id"], in_leg["id"]] == [LAST_MOVEMENT_ID + 2, LAST_MOVEMENT_ID + 3]
    assert {out_leg["document_id"], in_leg["document_id"]} == {transfer["id"]}

    for document in (receipt, transfer):
        response = wide.get(f"{STOCK}/documents/{document['id']}")
        assert response.status_code == 200, response.text
        assert response.json() == document
    for movement in (received, out_leg, in_leg):
        response = wide.get(f"{STOCK}/movements/{movement['id']}")
        assert response.status_code == 200, response.text
        assert response.json() == movement

    reversal = created(wide.post(f"{STOCK}/movements/{out_leg['id']}/reversal"))
    assert reversal["id"] == LAST_DOCUMENT_ID + 3
    assert [m["id"] for m in reversal["movements"]] == [LAST_MOVEMENT_ID + 4, LAST_MOVEMENT_ID + 5]
    assert [m["reversal_of"] for m in reversal["movements"]] == [out_leg["id"], in_leg["id"]]
    assert {m["document_id"] for m in reversal["movements"]} == {reversal["id"]}
    again = wide.post(f"{STOCK}/movements/{in_leg['id']}/reversal")
    problem = assert_problem(again, 409, "already-reversed")
    assert problem["reversed_movement_ids"] == [out_leg["id"], in_leg["id"]]

    # Newest first, two a page: every cursor after the first page ends on a wide id.
    first = wide.get(f"{STOCK}/movements", params={"limit": 2})
    assert first.status_code == 200, first.text
    assert [m["id"] for m in first.json()["items"]] == [
        LAST_MOVEMENT_ID + 5,
        LAST_MOVEMENT_ID + 4,
    ]
    assert 'rel="next"' in first.headers["link"]
    listed = walk_pages(wide, f"{STOCK}/movements", limit=2)
    assert [m["id"] for m in listed] == [LAST_MOVEMENT_ID + n for n in (5, 4, 3, 2, 1)]
    assert listed[-1] == received
    by_product = walk_pages(wide, f"{STOCK}/movements", limit=1, product_id=product["id"])
    assert by_product == listed

    stock = wide.get(f"/api/v1/products/{product['id']}/stock").json()
    assert stock["total_on_hand"] == 10
    assert {row["location_id"]: row["on_hand"] for row in stock["locations"]} == {
        source["id"]: 10,
        target["id"]: 0,
    }


def test_a_wide_id_that_does_not_exist_is_a_404_and_beyond_int64_a_400(wide):
    for path in (f"{STOCK}/documents/{INT32_MAX + 1}", f"{STOCK}/movements/{INT64_MAX}"):
        assert_problem(wide.get(path), 404)
    assert_problem(wide.post(f"{STOCK}/movements/{INT64_MAX}/reversal"), 404)
    for path in (f"{STOCK}/documents/{INT64_MAX + 1}", f"{STOCK}/movements/{INT64_MAX + 1}"):
        problem = assert_problem(wide.get(path), 400, "validation-error")
        assert problem["errors"][0]["in"] == "path"
    # Other resources keep 32-bit ids.
    problem = assert_problem(wide.get(f"/api/v1/products/{INT32_MAX + 1}"), 400)
    assert problem["errors"][0]["parameter"] == "product_id"


@pytest.mark.parametrize("movement_id", [INT32_MAX + 1, INT64_MAX])
def test_a_movement_cursor_takes_any_64_bit_id(wide, movement_id):
    cursor = cursor_with("-created_at", ["2999-01-01T00:00:00.000000+00:00", movement_id])
    response = wide.get(f"{STOCK}/movements", params={"cursor": cursor})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "sort", "values"),
    [
        (f"{STOCK}/movements", "-created_at", ["2999-01-01T00:00:00.000000+00:00", INT64_MAX + 1]),
        (f"{STOCK}/movements", "-created_at", ["2999-01-01T00:00:00.000000+00:00", 0]),
        # Product and location ids in a levels cursor stay 32-bit.
        (f"{STOCK}/levels", "product_id", [INT32_MAX + 1, 1]),
    ],
    ids=["movement-beyond-int64", "movement-zero", "level-product-beyond-int32"],
)
def test_a_cursor_id_out_of_its_range_is_a_400(wide, path, sort, values):
    problem = assert_problem(wide.get(path, params={"cursor": cursor_with(sort, values)}), 400)
    assert problem["errors"][0]["parameter"] == "cursor"
