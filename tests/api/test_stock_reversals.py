"""POST /api/v1/stock/movements/{id}/reversal: compensating movements, never edits."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.domain.ledger import recompute_levels
from service.models import StockDocument
from tests.helpers import assert_problem, create_location, create_product, walk_pages

STOCK = "/api/v1/stock"


# --- helpers ------------------------------------------------------------------------------


def created(response) -> dict:
    assert response.status_code == 201, response.text
    document = response.json()
    assert response.headers["location"] == f"{STOCK}/documents/{document['id']}"
    return document


def receive(client, location: dict, product: dict, quantity: int, cost: str, **fields) -> dict:
    """Receive one line; return its movement."""
    body = {
        "location_id": location["id"],
        "lines": [{"product_id": product["id"], "quantity": quantity, "unit_cost": cost}],
        **fields,
    }
    return created(client.post(f"{STOCK}/receipts", json=body))["movements"][0]


def ship(client, location: dict, product: dict, quantity: int) -> dict:
    body = {
        "location_id": location["id"],
        "lines": [{"product_id": product["id"], "quantity": quantity}],
    }
    return created(client.post(f"{STOCK}/shipments", json=body))["movements"][0]


def transfer(client, source: dict, target: dict, product: dict, quantity: int) -> list[dict]:
    body = {
        "from_location_id": source["id"],
        "to_location_id": target["id"],
        "lines": [{"product_id": product["id"], "quantity": quantity}],
    }
    return created(client.post(f"{STOCK}/transfers", json=body))["movements"]


def reverse(client, movement: dict, body: dict | None = None):
    url = f"{STOCK}/movements/{movement['id']}/reversal"
    return client.post(url) if body is None else client.post(url, json=body)


def on_hand(client, product: dict) -> dict[int, int]:
    response = client.get(f"/api/v1/products/{product['id']}/stock")
    assert response.status_code == 200, response.text
    return {row["location_id"]: row["on_hand"] for row in response.json()["locations"]}


def average_cost(client, product: dict) -> str:
    response = client.get(f"/api/v1/products/{product['id']}")
    assert response.status_code == 200, response.text
    return response.json()["average_cost"]


def ledger(client) -> list[dict]:
    return walk_pages(client, f"{STOCK}/movements", limit=200)


def levels(client) -> list[dict]:
    return walk_pages(client, f"{STOCK}/levels", limit=200)


def snapshot(client, database) -> tuple:
    with Session(database.engine) as session:
        documents = session.scalar(select(func.count()).select_from(StockDocument))
    return levels(client), ledger(client), documents


def assert_no_drift(database) -> None:
    with Session(database.engine) as session:
        assert recompute_levels(session) == []


@pytest.fixture()
def stock(client):
    return {
        "a": create_location(client, "WH1-A01"),
        "b": create_location(client, "WH1-B01"),
        "hammer": create_product(client, "HAM-16OZ"),
    }


# --- what a reversal writes ---------------------------------------------------------------


def test_reversing_a_receipt_writes_a_compensating_movement(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receipt = receive(client, a, hammer, 10, "5.00", reference="PO-1")

    document = created(reverse(client, receipt))

    assert document["kind"] == "reversal"
    assert document["location_id"] is None
    assert document["to_location_id"] is None
    assert document["reference"] == "PO-1"  # the reversed movement's, by default
    [movement] = document["movements"]
    assert movement["kind"] == "reversal"
    assert movement["reversal_of"] == receipt["id"]
    assert (movement["product_id"], movement["location_id"]) == (hammer["id"], a["id"])
    assert (movement["quantity"], movement["balance_after"]) == (-10, 0)
    assert movement["unit_cost"] == "5.0000"
    assert movement["reference"] == "PO-1"
    # The original is untouched: the ledger only grows.
    assert client.get(f"{STOCK}/movements/{receipt['id']}").json() == receipt
    assert [m["id"] for m in ledger(client)] == [movement["id"], receipt["id"]]
    assert on_hand(client, hammer) == {a["id"]: 0}
    assert client.get(f"{STOCK}/documents/{document['id']}").json() == document
    assert_no_drift(database)


def test_reversal_takes_its_own_reference_and_note(client, stock):
    receipt = receive(client, stock["a"], stock["hammer"], 10, "5.00", reference="PO-1")

    document = created(
        reverse(client, receipt, {"reference": "PO-2", "note": "Received against the wrong PO"})
    )

    assert (document["reference"], document["note"]) == ("PO-2", "Received against the wrong PO")
    [movement] = document["movements"]
    assert (movement["reference"], movement["note"]) == ("PO-2", "Received against the wrong PO")


def test_reversal_body_is_validated(client, stock):
    receipt = receive(client, stock["a"], stock["hammer"], 10, "5.00")

    problem = assert_problem(reverse(client, receipt, {"reason": "oops"}), 400)

    assert [e["pointer"] for e in problem["errors"]] == ["/reason"]
    assert len(ledger(client)) == 1


def test_reversing_a_shipment_puts_the_stock_back_without_touching_the_cost(
    client, database, stock
):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, hammer, 10, "5.00")
    shipment = ship(client, a, hammer, 4)

    [movement] = created(reverse(client, shipment))["movements"]

    assert (movement["quantity"], movement["balance_after"]) == (4, 10)
    assert movement["unit_cost"] is None
    assert movement["reversal_of"] == shipment["id"]
    assert average_cost(client, hammer) == "5.000000"
    assert on_hand(client, hammer) == {a["id"]: 10}
    assert_no_drift(database)


def test_reversing_an_adjustment(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, hammer, 10, "5.00")
    body = {
        "location_id": a["id"],
        "lines": [{"product_id": hammer["id"], "reason": "count", "counted_quantity": 7}],
    }
    [adjustment] = created(client.post(f"{STOCK}/adjustments", json=body))["movements"]

    [movement] = created(reverse(client, adjustment))["movements"]

    assert (movement["quantity"], movement["balance_after"]) == (3, 10)
    assert movement["reversal_of"] == adjustment["id"]
    assert_no_drift(database)


@pytest.mark.parametrize("leg", [0, 1], ids=["out-leg", "in-leg"])
def test_reversing_either_leg_of_a_transfer_reverses_both(client, database, stock, leg):
    a, b, hammer = stock["a"], stock["b"], stock["hammer"]
    receive(client, a, hammer, 10, "5.00")
    out_leg, in_leg = transfer(client, a, b, hammer, 4)

    document = created(reverse(client, [out_leg, in_leg][leg]))

    assert sorted(
        (m["reversal_of"], m["location_id"], m["quantity"], m["balance_after"])
        for m in document["movements"]
    ) == [(out_leg["id"], a["id"], 4, 10), (in_leg["id"], b["id"], -4, 0)]
    assert {m["kind"] for m in document["movements"]} == {"reversal"}
    assert {m["unit_cost"] for m in document["movements"]} == {None}
    assert on_hand(client, hammer) == {a["id"]: 10, b["id"]: 0}
    assert average_cost(client, hammer) == "5.000000"

    # Neither leg can be reversed again.
    for movement in (out_leg, in_leg):
        problem = assert_problem(reverse(client, movement), 409, "already-reversed")
        assert problem["reversed_movement_ids"] == [out_leg["id"], in_leg["id"]]
    assert_no_drift(database)


# --- moving-average cost ------------------------------------------------------------------


def test_reversing_a_receipt_backs_its_cost_out_of_the_average(client, database, stock):
    a, b, hammer = stock["a"], stock["b"], stock["hammer"]
    first = receive(client, a, hammer, 10, "5.00")
    receive(client, b, hammer, 10, "7.00")
    assert average_cost(client, hammer) == "6.000000"
    ship(client, b, hammer, 3)  # 17 on hand at 6.00

    created(reverse(client, first))

    # (17 * 6 - 10 * 5) / 7 = 7.428571...
    assert average_cost(client, hammer) == "7.428571"
    assert on_hand(client, hammer) == {a["id"]: 0, b["id"]: 7}
    assert_no_drift(database)


def test_reversing_a_receipt_then_receiving_again(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, hammer, 10, "4.00")
    mistake = receive(client, a, hammer, 10, "8.00")
    assert average_cost(client, hammer) == "6.000000"

    created(reverse(client, mistake))
    assert average_cost(client, hammer) == "4.000000"
    receive(client, a, hammer, 10, "6.00")

    assert average_cost(client, hammer) == "5.000000"
    assert_no_drift(database)


# --- refusals -----------------------------------------------------------------------------


def test_a_movement_is_reversed_at_most_once(client, database, stock):
    receipt = receive(client, stock["a"], stock["hammer"], 10, "5.00")
    reversal = created(reverse(client, receipt))["movements"][0]
    before = snapshot(client, database)

    problem = assert_problem(reverse(client, receipt), 409, "already-reversed")

    assert problem["reversed_movement_ids"] == [receipt["id"]]
    assert str(receipt["id"]) in problem["detail"]
    assert snapshot(client, database) == before
    assert reversal["reversal_of"] == receipt["id"]


def test_a_reversal_cannot_be_reversed(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, hammer, 10, "5.00")
    shipment = ship(client, a, hammer, 4)
    reversal = created(reverse(client, shipment))["movements"][0]
    before = snapshot(client, database)

    assert_problem(reverse(client, reversal), 409, "not-reversible")

    assert snapshot(client, database) == before


def test_a_reversal_that_would_go_negative_is_refused_and_writes_nothing(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receipt = receive(client, a, hammer, 10, "5.00")
    ship(client, a, hammer, 8)
    before = snapshot(client, database)
    cost_before = average_cost(client, hammer)

    problem = assert_problem(reverse(client, receipt), 409, "insufficient-stock")

    assert problem["shortages"] == [
        {
            "line": 0,
            "product_id": hammer["id"],
            "location_id": a["id"],
            "requested": 10,
            "available": 2,
        }
    ]
    assert snapshot(client, database) == before
    assert average_cost(client, hammer) == cost_before
    # Once the stock is back, the same reversal goes through.
    receive(client, a, hammer, 8, "5.00")
    created(reverse(client, receipt))
    assert_no_drift(database)


def test_a_transfer_reversal_short_at_the_destination_is_refused(client, database, stock):
    a, b, hammer = stock["a"], stock["b"], stock["hammer"]
    receive(client, a, hammer, 10, "5.00")
    out_leg, _in_leg = transfer(client, a, b, hammer, 4)
    ship(client, b, hammer, 3)
    before = snapshot(client, database)

    problem = assert_problem(reverse(client, out_leg), 409, "insufficient-stock")

    assert [(s["location_id"], s["requested"], s["available"]) for s in problem["shortages"]] == [
        (b["id"], 4, 1)
    ]
    assert snapshot(client, database) == before
    assert_no_drift(database)


def test_a_reversal_that_would_exceed_the_on_hand_limit_is_refused(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, hammer, 10, "5.00")
    shipment = ship(client, a, hammer, 5)
    receive(client, a, hammer, 1_000_000_000, "5.00")
    receive(client, a, hammer, 999_999_995, "5.00")  # exactly the limit, 2,000,000,000
    before = snapshot(client, database)

    problem = assert_problem(reverse(client, shipment), 422)

    assert "2000000000" in problem["errors"][0]["detail"]
    assert snapshot(client, database) == before


def test_reversing_an_unknown_movement_is_404(client, database, stock):
    receive(client, stock["a"], stock["hammer"], 10, "5.00")
    before = snapshot(client, database)

    assert_problem(reverse(client, {"id": 999}), 404, "not-found")

    assert snapshot(client, database) == before
