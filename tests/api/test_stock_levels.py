"""Stock levels, a product's stock, the movement ledger list and low-stock alerts."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.domain.ledger import recompute_levels
from tests.helpers import assert_problem, create_location, create_product, walk_pages

STOCK = "/api/v1/stock"
LEVELS = f"{STOCK}/levels"
MOVEMENTS = f"{STOCK}/movements"
ALERTS = f"{STOCK}/low-stock"


# --- helpers ------------------------------------------------------------------------------


def post(client, kind: str, body: dict) -> dict:
    response = client.post(f"{STOCK}/{kind}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def receive(client, location: dict, *lines: tuple[dict, int], reference: str | None = None):
    body = {
        "location_id": location["id"],
        "lines": [
            {"product_id": product["id"], "quantity": quantity, "unit_cost": "1.00"}
            for product, quantity in lines
        ],
        **({"reference": reference} if reference else {}),
    }
    return post(client, "receipts", body)


def ship(client, location: dict, *lines: tuple[dict, int], reference: str | None = None):
    body = {
        "location_id": location["id"],
        "lines": [{"product_id": p["id"], "quantity": q} for p, q in lines],
        **({"reference": reference} if reference else {}),
    }
    return post(client, "shipments", body)


def transfer(client, source: dict, target: dict, product: dict, quantity: int) -> dict:
    body = {
        "from_location_id": source["id"],
        "to_location_id": target["id"],
        "lines": [{"product_id": product["id"], "quantity": quantity}],
    }
    return post(client, "transfers", body)


def keys(items: list[dict]) -> list[tuple[int, int, int]]:
    return [(i["product_id"], i["location_id"], i["on_hand"]) for i in items]


def page(client, path: str, **params) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def assert_no_drift(database) -> None:
    with Session(database.engine) as session:
        assert recompute_levels(session) == []


@pytest.fixture()
def world(client):
    """Three locations, three products and a little history.

    On hand afterwards: hammer a=7 b=3 c=0, nails a=50, saw b=2 (documents in this order:
    receipt PO-1, receipt PO-2, shipment SO-1, transfer, shipment SO-2).
    """
    a, b, c = (create_location(client, code) for code in ("WH1-A01", "WH1-B01", "WH1-C01"))
    hammer = create_product(client, "HAM-16OZ", reorder_point=5)
    nails = create_product(client, "NAIL-50MM", reorder_point=50)
    saw = create_product(client, "SAW-22IN", reorder_point=0)
    # Levels are created out of location order on purpose (c, then b, then a).
    receive(client, c, (hammer, 4), reference="PO-1")
    receive(client, b, (saw, 2), (hammer, 3), reference="PO-2")
    receive(client, a, (nails, 50), (hammer, 11), reference="PO-2")
    ship(client, a, (hammer, 2), reference="SO-1")
    transfer(client, c, a, hammer, 4)
    ship(client, a, (hammer, 6), reference="SO-2")
    return {"a": a, "b": b, "c": c, "hammer": hammer, "nails": nails, "saw": saw}


# --- levels -------------------------------------------------------------------------------


def test_levels_are_listed_by_product_then_location(client, database, world):
    a, b, c = world["a"], world["b"], world["c"]
    hammer, nails, saw = world["hammer"], world["nails"], world["saw"]

    body = page(client, LEVELS)

    assert set(body) == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    assert {frozenset(item) for item in body["items"]} == {
        frozenset({"product_id", "location_id", "on_hand", "updated_at"})
    }
    assert keys(body["items"]) == [
        (hammer["id"], a["id"], 7),
        (hammer["id"], b["id"], 3),
        (hammer["id"], c["id"], 0),
        (nails["id"], a["id"], 50),
        (saw["id"], b["id"], 2),
    ]
    assert_no_drift(database)


def test_levels_paginate_in_the_same_order(client, world):
    everything = page(client, LEVELS)["items"]

    low = page(client, LEVELS, below_reorder_point="true")["items"]

    for limit in (1, 2, 3):
        assert walk_pages(client, LEVELS, limit=limit) == everything
        assert walk_pages(client, LEVELS, limit=limit, below_reorder_point="true") == low


def test_levels_filter_by_product_and_location(client, world):
    a, b, hammer = world["a"], world["b"], world["hammer"]

    by_product = keys(page(client, LEVELS, product_id=hammer["id"])["items"])
    by_location = keys(page(client, LEVELS, location_id=b["id"])["items"])
    both = keys(page(client, LEVELS, product_id=hammer["id"], location_id=a["id"])["items"])

    assert [(p, loc) for p, loc, _ in by_product] == [(hammer["id"], world[x]["id"]) for x in "abc"]
    assert by_location == [(hammer["id"], b["id"], 3), (world["saw"]["id"], b["id"], 2)]
    assert both == [(hammer["id"], a["id"], 7)]
    assert page(client, LEVELS, product_id=999)["items"] == []


def test_below_reorder_point_means_at_or_below_the_products_reorder_point(client, world):
    a, b, c = world["a"], world["b"], world["c"]
    hammer, nails, saw = world["hammer"], world["nails"], world["saw"]

    low = keys(page(client, LEVELS, below_reorder_point="true")["items"])
    fine = keys(page(client, LEVELS, below_reorder_point="false")["items"])

    # hammer (reorder point 5): 3 at b and 0 at c; nails (50): exactly 50 at a.
    assert low == [
        (hammer["id"], b["id"], 3),
        (hammer["id"], c["id"], 0),
        (nails["id"], a["id"], 50),
    ]
    assert fine == [(hammer["id"], a["id"], 7), (saw["id"], b["id"], 2)]


def test_levels_equal_the_sum_of_the_ledger(client, database, world):
    sums: Counter = Counter()
    for movement in walk_pages(client, MOVEMENTS, limit=200):
        sums[(movement["product_id"], movement["location_id"])] += movement["quantity"]

    levels = {(p, loc): on_hand for p, loc, on_hand in keys(page(client, LEVELS)["items"])}

    assert levels == dict(sums)
    assert_no_drift(database)


def test_recompute_levels_reports_drift(client, database, world):
    """The checker the other tests rely on does notice a level that disagrees with its ledger."""
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE stock_levels SET on_hand = on_hand + 1 WHERE product_id = :p"),
            {"p": world["nails"]["id"]},
        )

    with Session(database.engine) as session:
        drift = recompute_levels(session)
    nails, a = world["nails"]["id"], world["a"]["id"]
    assert drift == [{"product_id": nails, "location_id": a, "level": 51, "ledger": 50}]


# --- a product's stock --------------------------------------------------------------------


def test_product_stock_lists_every_location_and_the_total(client, world):
    a, b, c, hammer = world["a"], world["b"], world["c"], world["hammer"]

    body = page(client, f"/api/v1/products/{hammer['id']}/stock")

    assert body == {
        "product_id": hammer["id"],
        "total_on_hand": 10,
        "locations": [
            {"location_id": a["id"], "on_hand": 7},
            {"location_id": b["id"], "on_hand": 3},
            {"location_id": c["id"], "on_hand": 0},
        ],
    }


def test_product_stock_of_a_product_without_stock_is_empty(client, world):
    product = create_product(client, "NEW-1")

    body = page(client, f"/api/v1/products/{product['id']}/stock")

    assert body == {"product_id": product["id"], "total_on_hand": 0, "locations": []}


def test_product_stock_of_an_unknown_product_is_404(client, world):
    assert_problem(client.get("/api/v1/products/999/stock"), 404, "not-found")


# --- the movement list --------------------------------------------------------------------


def test_movements_are_listed_newest_first(client, world):
    movements = walk_pages(client, MOVEMENTS, limit=200)

    # 1 + 2 + 2 receipt lines, 1 shipment, 2 transfer legs, 1 shipment
    assert len(movements) == 9
    assert [m["id"] for m in movements] == sorted((m["id"] for m in movements), reverse=True)
    assert [m["created_at"] for m in movements] == sorted(
        (m["created_at"] for m in movements), reverse=True
    )
    assert [m["kind"] for m in movements] == [
        "shipment",
        "transfer_in",
        "transfer_out",
        "shipment",
        "receipt",
        "receipt",
        "receipt",
        "receipt",
        "receipt",
    ]
    for limit in (1, 2, 4):
        assert walk_pages(client, MOVEMENTS, limit=limit) == movements


def test_movement_pages_are_stable_while_new_movements_arrive(client, world):
    first = page(client, MOVEMENTS, limit=4)
    receive(client, world["a"], (world["saw"], 1))  # newer than anything already listed

    rest = walk_pages(client, MOVEMENTS, limit=4, cursor=first["next_cursor"])

    assert len(first["items"]) + len(rest) == 9
    assert len({m["id"] for m in first["items"] + rest}) == 9


def test_movements_filter_by_product_location_kind_and_reference(client, world):
    a, c, hammer = world["a"], world["c"], world["hammer"]

    def listed(**params) -> list[tuple]:
        return [
            (m["kind"], m["product_id"], m["location_id"], m["quantity"])
            for m in walk_pages(client, MOVEMENTS, limit=200, **params)
        ]

    assert listed(location_id=c["id"]) == [
        ("transfer_out", hammer["id"], c["id"], -4),
        ("receipt", hammer["id"], c["id"], 4),
    ]
    assert [q for *_, q in listed(product_id=hammer["id"], location_id=a["id"])] == [-6, 4, -2, 11]
    assert listed(kind="shipment") == [
        ("shipment", hammer["id"], a["id"], -6),
        ("shipment", hammer["id"], a["id"], -2),
    ]
    assert listed(product_id=world["nails"]["id"]) == [
        ("receipt", world["nails"]["id"], a["id"], 50)
    ]
    assert Counter(m[1] for m in listed(reference="PO-2")) == {
        hammer["id"]: 2,
        world["nails"]["id"]: 1,
        world["saw"]["id"]: 1,
    }
    assert listed(reference="po-2") == []  # exact reference
    assert listed(kind="adjustment") == []


def test_movements_filter_by_creation_time(client, world):
    movements = walk_pages(client, MOVEMENTS, limit=200)
    # The shipment SO-1 is the 4th newest; its document's movements share one timestamp.
    pivot = movements[3]
    assert pivot["reference"] == "SO-1"
    at = pivot["created_at"]

    after = walk_pages(client, MOVEMENTS, limit=200, created_after=at)
    before = walk_pages(client, MOVEMENTS, limit=200, created_before=at)
    window = walk_pages(
        client,
        MOVEMENTS,
        limit=2,
        created_after=at,
        created_before=movements[0]["created_at"],
    )

    assert after == movements[:4]  # inclusive
    assert before == movements[4:]  # exclusive
    assert window == movements[1:4]
    assert walk_pages(client, MOVEMENTS, created_after=at.replace("+00:00", "Z")) == after


@pytest.mark.parametrize("name", ["created_after", "created_before"])
def test_movements_reject_a_malformed_time(client, name):
    problem = assert_problem(client.get(MOVEMENTS, params={name: "yesterday"}), 400)

    assert [e.get("parameter") for e in problem["errors"]] == [name]


# --- low-stock alerts ---------------------------------------------------------------------


def test_low_stock_alerts(client, world):
    a, b = world["a"], world["b"]
    hammer, nails = world["hammer"], world["nails"]  # total 10 > 5; exactly 50 at 50
    short = create_product(client, "SHORT", reorder_point=100, reorder_quantity=5)
    never = create_product(client, "NEVER", reorder_point=10)  # no level at all
    plenty = create_product(client, "PLENTY", reorder_point=10, reorder_quantity=40)
    split = create_product(client, "SPLIT", reorder_point=10, reorder_quantity=40)
    archived = create_product(client, "ARCHIVED", reorder_point=10, is_active=False)
    receive(client, a, (short, 20), (plenty, 11), (split, 4))
    receive(client, b, (short, 10), (split, 2))

    alerts = walk_pages(client, ALERTS, limit=2)

    assert [
        (x["product_id"], x["total_on_hand"], x["suggested_reorder_quantity"]) for x in alerts
    ] == [
        (nails["id"], 50, 0),  # exactly at its reorder point; reorder_quantity 0
        (short["id"], 30, 70),  # the shortfall (100 - 30) beats reorder_quantity 5
        (never["id"], 0, 10),  # never received anywhere
        (split["id"], 6, 40),  # 4 + 2 across locations; reorder_quantity 40 beats 4
    ]
    assert alerts[1] == {
        "product_id": short["id"],
        "sku": "SHORT",
        "name": short["name"],
        "total_on_hand": 30,
        "reorder_point": 100,
        "reorder_quantity": 5,
        "suggested_reorder_quantity": 70,
    }
    listed = {alert["product_id"] for alert in alerts}
    assert not listed & {hammer["id"], plenty["id"], archived["id"], world["saw"]["id"]}


def test_low_stock_alerts_follow_stock_changes(client, world):
    a, hammer = world["a"], world["hammer"]
    assert hammer["id"] not in {x["product_id"] for x in walk_pages(client, ALERTS)}

    ship(client, a, (hammer, 5))  # total 10 -> 5, the reorder point

    [alert] = [x for x in walk_pages(client, ALERTS) if x["product_id"] == hammer["id"]]
    assert (alert["total_on_hand"], alert["suggested_reorder_quantity"]) == (5, 0)
