"""/api/v1/stock receipts, shipments, transfers and adjustments: one document, all lines or none."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from service.domain.ledger import recompute_levels
from service.models import StockDocument, StockLevel, StockMovement
from tests.helpers import assert_problem, create_location, create_product, walk_pages

STOCK = "/api/v1/stock"
DOCUMENT_FIELDS = {
    "id",
    "kind",
    "reference",
    "note",
    "location_id",
    "to_location_id",
    "created_at",
    "created_by_user_id",
    "created_by_api_key_id",
    "movements",
}
MOVEMENT_FIELDS = {
    "id",
    "document_id",
    "kind",
    "product_id",
    "location_id",
    "quantity",
    "balance_after",
    "unit_cost",
    "reason",
    "note",
    "reference",
    "reversal_of",
    "created_at",
    "created_by_user_id",
    "created_by_api_key_id",
}


# --- helpers ------------------------------------------------------------------------------


def post_document(client, kind: str, body: dict):
    return client.post(f"{STOCK}/{kind}", json=body)


def created(response) -> dict:
    assert response.status_code == 201, response.text
    document = response.json()
    assert response.headers["location"] == f"{STOCK}/documents/{document['id']}"
    return document


def receive(client, location: dict, *lines: tuple[dict, int, str], **fields) -> dict:
    body = {
        "location_id": location["id"],
        "lines": [
            {"product_id": product["id"], "quantity": quantity, "unit_cost": cost}
            for product, quantity, cost in lines
        ],
        **fields,
    }
    return created(post_document(client, "receipts", body))


def quantity_lines(*lines: tuple[dict, int]) -> list[dict]:
    return [{"product_id": product["id"], "quantity": quantity} for product, quantity in lines]


def levels(client) -> dict[tuple[int, int], int]:
    return {
        (level["product_id"], level["location_id"]): level["on_hand"]
        for level in walk_pages(client, f"{STOCK}/levels", limit=200)
    }


def ledger(client) -> list[dict]:
    return walk_pages(client, f"{STOCK}/movements", limit=200)


def average_cost(client, product: dict) -> str:
    response = client.get(f"/api/v1/products/{product['id']}")
    assert response.status_code == 200, response.text
    return response.json()["average_cost"]


def shortage(line: int, product: dict, location: dict, requested: int, available: int) -> dict:
    return {
        "line": line,
        "product_id": product["id"],
        "location_id": location["id"],
        "requested": requested,
        "available": available,
    }


def document_count(database) -> int:
    with Session(database.engine) as session:
        return session.scalar(select(func.count()).select_from(StockDocument))


def assert_no_drift(database) -> None:
    with Session(database.engine) as session:
        assert recompute_levels(session) == []


def snapshot(client, database) -> tuple:
    """Everything a refused document must leave untouched."""
    return levels(client), ledger(client), document_count(database)


@pytest.fixture()
def stock(client):
    """Two locations and three products, nothing on hand yet."""
    return {
        "a": create_location(client, "WH1-A01"),
        "b": create_location(client, "WH1-B01"),
        "hammer": create_product(client, "HAM-16OZ"),
        "nails": create_product(client, "NAIL-50MM"),
        "saw": create_product(client, "SAW-22IN"),
    }


# --- receipts -----------------------------------------------------------------------------


def test_receipt_writes_one_document_with_a_movement_and_balance_per_line(client, database, stock):
    a, hammer, nails = stock["a"], stock["hammer"], stock["nails"]
    body = {
        "location_id": a["id"],
        "reference": "PO-2026-0042",
        "note": "Pallet arrived shrink-wrapped",
        "lines": [
            {"product_id": hammer["id"], "quantity": 40, "unit_cost": "7.25"},
            {"product_id": nails["id"], "quantity": 10, "unit_cost": "0.1200"},
            {"product_id": hammer["id"], "quantity": 2, "unit_cost": "7.25"},
        ],
    }

    document = created(post_document(client, "receipts", body))

    assert set(document) == DOCUMENT_FIELDS
    assert document["kind"] == "receipt"
    assert document["reference"] == "PO-2026-0042"
    assert document["note"] == "Pallet arrived shrink-wrapped"
    assert document["location_id"] == a["id"]
    assert document["to_location_id"] is None
    movements = document["movements"]
    assert [set(m) for m in movements] == [MOVEMENT_FIELDS] * 3
    me = client.get("/api/v1/users/me").json()
    assert (document["created_by_user_id"], document["created_by_api_key_id"]) == (me["id"], None)
    assert {(m["created_by_user_id"], m["created_by_api_key_id"]) for m in movements} == {
        (me["id"], None)
    }
    assert [
        (m["kind"], m["product_id"], m["location_id"], m["quantity"], m["balance_after"])
        for m in movements
    ] == [
        ("receipt", hammer["id"], a["id"], 40, 40),
        ("receipt", nails["id"], a["id"], 10, 10),
        ("receipt", hammer["id"], a["id"], 2, 42),  # the running balance within the document
    ]
    assert [m["unit_cost"] for m in movements] == ["7.2500", "0.1200", "7.2500"]
    for movement in movements:
        assert movement["document_id"] == document["id"]
        assert movement["reference"] == "PO-2026-0042"
        assert movement["reason"] is None
        assert movement["reversal_of"] is None
        assert movement["created_at"] == document["created_at"]
    assert levels(client) == {(hammer["id"], a["id"]): 42, (nails["id"], a["id"]): 10}

    again = receive(client, a, (hammer, 8, "7.25"))
    assert again["movements"][0]["balance_after"] == 50
    assert again["reference"] is None
    assert again["movements"][0]["reference"] is None
    assert_no_drift(database)


def test_document_and_movement_can_be_read_back(client, stock):
    document = receive(client, stock["a"], (stock["hammer"], 3, "1.00"), reference="PO-1")

    response = client.get(f"{STOCK}/documents/{document['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == document

    movement = document["movements"][0]
    response = client.get(f"{STOCK}/movements/{movement['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == movement


@pytest.mark.parametrize("path", ["documents", "movements"])
def test_unknown_document_or_movement_is_404(client, stock, path):
    receive(client, stock["a"], (stock["hammer"], 3, "1.00"))

    problem = assert_problem(client.get(f"{STOCK}/{path}/999"), 404, "not-found")
    assert "999" in problem["detail"]


def test_receipts_update_the_moving_average_cost_and_nothing_else_does(client, database, stock):
    a, b, hammer = stock["a"], stock["b"], stock["hammer"]
    assert average_cost(client, hammer) == "0.000000"

    receive(client, a, (hammer, 10, "5.00"))
    assert average_cost(client, hammer) == "5.000000"
    receive(client, b, (hammer, 10, "7.00"))  # the average is per product, across locations
    assert average_cost(client, hammer) == "6.000000"

    created(
        post_document(
            client, "shipments", {"location_id": a["id"], "lines": quantity_lines((hammer, 4))}
        )
    )
    created(
        post_document(
            client,
            "transfers",
            {
                "from_location_id": a["id"],
                "to_location_id": b["id"],
                "lines": quantity_lines((hammer, 3)),
            },
        )
    )
    created(
        post_document(
            client,
            "adjustments",
            {
                "location_id": b["id"],
                "lines": [{"product_id": hammer["id"], "reason": "found", "quantity_delta": 1}],
            },
        )
    )
    assert average_cost(client, hammer) == "6.000000"

    # 17 on hand at 6.00 plus 3 at 10.00: (102 + 30) / 20 = 6.6
    receive(client, a, (hammer, 3, "10.00"))
    assert average_cost(client, hammer) == "6.600000"
    assert_no_drift(database)


def test_lines_of_one_receipt_update_the_average_in_order(client, stock):
    hammer = stock["hammer"]

    receive(client, stock["a"], (hammer, 10, "5.00"), (hammer, 10, "7.00"), (hammer, 1, "0"))

    # (10*5 + 10*7 + 1*0) / 21 = 5.714285714... -> 6 places
    assert average_cost(client, hammer) == "5.714286"


def test_receipt_up_to_the_on_hand_limit_is_accepted_and_beyond_it_refused(client, database, stock):
    a, hammer, nails = stock["a"], stock["hammer"], stock["nails"]
    receive(client, a, (hammer, 1_000_000_000, "1"), (hammer, 1_000_000_000, "1"))
    before = snapshot(client, database)

    response = post_document(
        client,
        "receipts",
        {
            "location_id": a["id"],
            "lines": [
                {"product_id": nails["id"], "quantity": 5, "unit_cost": "1"},
                {"product_id": hammer["id"], "quantity": 1, "unit_cost": "1"},
            ],
        },
    )

    problem = assert_problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/lines/1/quantity"]
    assert snapshot(client, database) == before
    assert levels(client)[(hammer["id"], a["id"])] == 2_000_000_000
    assert_no_drift(database)


def test_unit_cost_keeps_every_digit_the_contract_allows(client, stock):
    """Costs are exact on every backend (SQLite would round NUMERIC through a float)."""
    hammer = stock["hammer"]

    document = receive(client, stock["a"], (hammer, 1, "987654321098.0003"))

    assert document["movements"][0]["unit_cost"] == "987654321098.0003"
    assert average_cost(client, hammer) == "987654321098.000300"


@pytest.mark.parametrize(
    ("kind", "line", "pointer"),
    [
        ("transfers", {"quantity": 1}, "/lines/0/quantity"),
        ("adjustments", {"reason": "found", "quantity_delta": 1}, "/lines/0/quantity_delta"),
    ],
)
def test_no_document_pushes_on_hand_over_the_limit(client, database, stock, kind, line, pointer):
    a, b, hammer = stock["a"], stock["b"], stock["hammer"]
    receive(client, a, (hammer, 5, "1"))
    # b, where the transfer arrives and the adjustment applies, holds exactly the limit.
    receive(client, b, (hammer, 1_000_000_000, "1"), (hammer, 1_000_000_000, "1"))
    before = snapshot(client, database)
    lines = [{"product_id": hammer["id"], **line}]
    body = (
        {"from_location_id": a["id"], "to_location_id": b["id"], "lines": lines}
        if kind == "transfers"
        else {"location_id": b["id"], "lines": lines}
    )

    problem = assert_problem(post_document(client, kind, body), 422)

    assert [e["pointer"] for e in problem["errors"]] == [pointer]
    assert snapshot(client, database) == before


@pytest.mark.parametrize(
    ("line", "pointer"),
    [
        ({"quantity": 0, "unit_cost": "1.00"}, "/lines/0/quantity"),
        ({"quantity": -1, "unit_cost": "1.00"}, "/lines/0/quantity"),
        ({"quantity": 1}, "/lines/0/unit_cost"),
        ({"quantity": 1, "unit_cost": "1.00001"}, "/lines/0/unit_cost"),
        ({"quantity": 1, "unit_cost": "-1.00"}, "/lines/0/unit_cost"),
    ],
)
def test_invalid_receipt_line_is_400_with_a_pointer(client, database, stock, line, pointer):
    body = {
        "location_id": stock["a"]["id"],
        "lines": [{"product_id": stock["hammer"]["id"], **line}],
    }

    problem = assert_problem(post_document(client, "receipts", body), 400)

    assert pointer in [e["pointer"] for e in problem["errors"]]
    assert document_count(database) == 0


# --- line limits --------------------------------------------------------------------------


def document_body(kind: str, stock: dict, lines: list[dict]) -> dict:
    if kind == "transfers":
        return {
            "from_location_id": stock["a"]["id"],
            "to_location_id": stock["b"]["id"],
            "lines": lines,
        }
    return {"location_id": stock["a"]["id"], "lines": lines}


def line_of(kind: str, product: dict) -> dict:
    if kind == "receipts":
        return {"product_id": product["id"], "quantity": 1, "unit_cost": "1.00"}
    if kind == "adjustments":
        return {"product_id": product["id"], "reason": "found", "quantity_delta": 1}
    return {"product_id": product["id"], "quantity": 1}


@pytest.mark.parametrize("kind", ["receipts", "shipments", "transfers", "adjustments"])
@pytest.mark.parametrize("count", [0, 501])
def test_a_document_has_1_to_500_lines(client, database, stock, kind, count):
    lines = [line_of(kind, stock["hammer"])] * count

    problem = assert_problem(post_document(client, kind, document_body(kind, stock, lines)), 400)

    assert "/lines" in [e["pointer"] for e in problem["errors"]]
    assert document_count(database) == 0


def test_a_document_of_500_lines_is_accepted(client, database, stock):
    hammer = stock["hammer"]
    lines = [line_of("receipts", hammer)] * 500

    document = created(post_document(client, "receipts", document_body("receipts", stock, lines)))

    assert len(document["movements"]) == 500
    assert document["movements"][-1]["balance_after"] == 500
    assert levels(client) == {(hammer["id"], stock["a"]["id"]): 500}
    assert_no_drift(database)


# --- shipments ----------------------------------------------------------------------------


def test_shipment_takes_stock_out(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, (hammer, 10, "5.00"))

    document = created(
        post_document(
            client,
            "shipments",
            {"location_id": a["id"], "reference": "SO-7", "lines": quantity_lines((hammer, 4))},
        )
    )

    assert document["kind"] == "shipment"
    [movement] = document["movements"]
    assert movement["kind"] == "shipment"
    assert (movement["quantity"], movement["balance_after"]) == (-4, 6)
    assert movement["unit_cost"] is None
    assert movement["reference"] == "SO-7"
    assert levels(client) == {(hammer["id"], a["id"]): 6}

    # Down to exactly zero is fine.
    body = {"location_id": a["id"], "lines": quantity_lines((hammer, 6))}
    assert created(post_document(client, "shipments", body))["movements"][0]["balance_after"] == 0
    assert_no_drift(database)


def test_short_shipment_names_every_short_line_and_writes_nothing(client, database, stock):
    a, b = stock["a"], stock["b"]
    hammer, nails, saw = stock["hammer"], stock["nails"], stock["saw"]
    receive(client, a, (hammer, 10, "5.00"), (nails, 2, "0.10"))
    receive(client, b, (saw, 5, "20.00"))  # stock elsewhere does not count
    before = snapshot(client, database)

    response = post_document(
        client,
        "shipments",
        {
            "location_id": a["id"],
            "lines": quantity_lines((hammer, 6), (nails, 3), (saw, 1), (hammer, 6)),
        },
    )

    problem = assert_problem(response, 409, "insufficient-stock")
    assert problem["shortages"] == [
        shortage(1, nails, a, requested=3, available=2),
        shortage(2, saw, a, requested=1, available=0),
        shortage(3, hammer, a, requested=6, available=4),  # only what line 0 left
    ]
    assert [e["pointer"] for e in problem["errors"]] == [
        "/lines/1/quantity",
        "/lines/2/quantity",
        "/lines/3/quantity",
    ]
    # No document, no movement, no level (not even an empty one for the saw at a).
    assert snapshot(client, database) == before
    assert_no_drift(database)


# --- transfers ----------------------------------------------------------------------------


def test_transfer_writes_a_pair_of_movements_per_line(client, database, stock):
    a, b, hammer, nails = stock["a"], stock["b"], stock["hammer"], stock["nails"]
    receive(client, a, (hammer, 10, "5.00"), (nails, 100, "0.10"))
    receive(client, b, (nails, 1, "0.10"))

    document = created(
        post_document(
            client,
            "transfers",
            {
                "from_location_id": a["id"],
                "to_location_id": b["id"],
                "reference": "TR-9",
                "lines": quantity_lines((hammer, 4), (nails, 30)),
            },
        )
    )

    assert document["kind"] == "transfer"
    assert (document["location_id"], document["to_location_id"]) == (a["id"], b["id"])
    assert [
        (m["kind"], m["product_id"], m["location_id"], m["quantity"], m["balance_after"])
        for m in document["movements"]
    ] == [
        ("transfer_out", hammer["id"], a["id"], -4, 6),
        ("transfer_in", hammer["id"], b["id"], 4, 4),
        ("transfer_out", nails["id"], a["id"], -30, 70),
        ("transfer_in", nails["id"], b["id"], 30, 31),
    ]
    assert {m["reference"] for m in document["movements"]} == {"TR-9"}
    assert levels(client) == {
        (hammer["id"], a["id"]): 6,
        (hammer["id"], b["id"]): 4,
        (nails["id"], a["id"]): 70,
        (nails["id"], b["id"]): 31,
    }
    assert average_cost(client, hammer) == "5.000000"
    assert_no_drift(database)


def test_short_transfer_is_refused_and_writes_nothing(client, database, stock):
    a, b, hammer, nails = stock["a"], stock["b"], stock["hammer"], stock["nails"]
    receive(client, a, (hammer, 10, "5.00"), (nails, 1, "0.10"))
    before = snapshot(client, database)

    response = post_document(
        client,
        "transfers",
        {
            "from_location_id": a["id"],
            "to_location_id": b["id"],
            "lines": quantity_lines((hammer, 10), (nails, 2)),
        },
    )

    problem = assert_problem(response, 409, "insufficient-stock")
    assert problem["shortages"] == [shortage(1, nails, a, requested=2, available=1)]
    assert [e["pointer"] for e in problem["errors"]] == ["/lines/1/quantity"]
    assert snapshot(client, database) == before
    assert_no_drift(database)


def test_transfer_to_the_same_location_is_422(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, (hammer, 10, "5.00"))
    before = snapshot(client, database)

    response = post_document(
        client,
        "transfers",
        {
            "from_location_id": a["id"],
            "to_location_id": a["id"],
            "lines": quantity_lines((hammer, 1)),
        },
    )

    problem = assert_problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/to_location_id"]
    assert snapshot(client, database) == before


# --- adjustments --------------------------------------------------------------------------


def delta(product: dict, reason: str, quantity: int, **fields) -> dict:
    return {"product_id": product["id"], "reason": reason, "quantity_delta": quantity, **fields}


def count(product: dict, counted: int) -> dict:
    return {"product_id": product["id"], "reason": "count", "counted_quantity": counted}


def test_adjustment_by_delta_or_by_count(client, database, stock):
    a, hammer, nails, saw = stock["a"], stock["hammer"], stock["nails"], stock["saw"]
    receive(client, a, (hammer, 10, "5.00"), (nails, 3, "0.10"), (saw, 4, "20.00"))

    document = created(
        post_document(
            client,
            "adjustments",
            {
                "location_id": a["id"],
                "reference": "COUNT-2026-11",
                "note": "Monthly count",
                "lines": [
                    delta(hammer, "damage", -2, note="Water damage"),
                    count(nails, 7),
                    count(saw, 4),
                    count(hammer, 5),
                    delta(nails, "loss", -1),
                    delta(saw, "found", 2),
                    delta(saw, "other", 0),
                ],
            },
        )
    )

    assert document["kind"] == "adjustment"
    assert document["note"] == "Monthly count"
    assert [
        (m["product_id"], m["reason"], m["quantity"], m["balance_after"])
        for m in document["movements"]
    ] == [
        (hammer["id"], "damage", -2, 8),
        (nails["id"], "count", 4, 7),  # counted 7 with 3 on hand
        (saw["id"], "count", 0, 4),  # a count equal to on-hand still leaves a movement
        (hammer["id"], "count", -3, 5),  # counted against the balance the earlier line left
        (nails["id"], "loss", -1, 6),
        (saw["id"], "found", 2, 6),
        (saw["id"], "other", 0, 6),
    ]
    assert [m["note"] for m in document["movements"]][:2] == ["Water damage", None]
    assert {m["kind"] for m in document["movements"]} == {"adjustment"}
    assert levels(client) == {
        (hammer["id"], a["id"]): 5,
        (nails["id"], a["id"]): 6,
        (saw["id"], a["id"]): 6,
    }
    assert_no_drift(database)


def test_count_of_a_product_never_held_there_creates_its_level(client, database, stock):
    a, hammer = stock["a"], stock["hammer"]

    document = created(
        post_document(
            client,
            "adjustments",
            {
                "location_id": a["id"],
                "lines": [{"product_id": hammer["id"], "reason": "found", "counted_quantity": 3}],
            },
        )
    )

    assert document["movements"][0]["quantity"] == 3
    assert levels(client) == {(hammer["id"], a["id"]): 3}
    assert_no_drift(database)


def test_adjustment_below_zero_is_refused_and_writes_nothing(client, database, stock):
    a, hammer, nails = stock["a"], stock["hammer"], stock["nails"]
    receive(client, a, (hammer, 10, "5.00"))
    before = snapshot(client, database)

    response = post_document(
        client,
        "adjustments",
        {
            "location_id": a["id"],
            "lines": [
                {"product_id": nails["id"], "reason": "found", "counted_quantity": 4},
                {"product_id": hammer["id"], "reason": "loss", "quantity_delta": -11},
            ],
        },
    )

    problem = assert_problem(response, 409, "insufficient-stock")
    assert problem["shortages"] == [shortage(1, hammer, a, requested=11, available=10)]
    assert [e["pointer"] for e in problem["errors"]] == ["/lines/1/quantity_delta"]
    assert snapshot(client, database) == before
    assert_no_drift(database)


def test_lines_after_a_short_line_are_judged_without_it(client, database, stock):
    """Found by the contract fuzzer: a short line once left a negative running balance, and a
    later incoming line of the same product was reported short with a negative `requested`."""
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, (hammer, 10, "5.00"))
    before = snapshot(client, database)

    response = post_document(
        client,
        "adjustments",
        {
            "location_id": a["id"],
            "lines": [
                delta(hammer, "damage", -999_999_999),
                delta(hammer, "found", 1610),
                delta(hammer, "loss", -10_611),
                count(hammer, 3),
            ],
        },
    )

    problem = assert_problem(response, 409, "insufficient-stock")
    assert problem["shortages"] == [
        shortage(0, hammer, a, requested=999_999_999, available=10),
        shortage(2, hammer, a, requested=10_611, available=1620),
    ]
    assert [e["pointer"] for e in problem["errors"]] == [
        "/lines/0/quantity_delta",
        "/lines/2/quantity_delta",
    ]
    assert snapshot(client, database) == before
    assert_no_drift(database)


@pytest.mark.parametrize(
    "fields",
    [
        {"quantity_delta": 1, "counted_quantity": 1},
        {},
        {"counted_quantity": -1},
    ],
    ids=["both", "neither", "negative-count"],
)
def test_adjustment_line_needs_exactly_one_of_delta_and_count(client, database, stock, fields):
    line = {"product_id": stock["hammer"]["id"], "reason": "count", **fields}

    response = post_document(
        client, "adjustments", {"location_id": stock["a"]["id"], "lines": [line]}
    )

    problem = assert_problem(response, 400)
    assert all(e["pointer"].startswith("/lines/0") for e in problem["errors"]), problem
    assert document_count(database) == 0


def test_adjustment_reason_must_be_a_known_code(client, stock):
    line = {"product_id": stock["hammer"]["id"], "reason": "theft", "quantity_delta": -1}

    response = post_document(
        client, "adjustments", {"location_id": stock["a"]["id"], "lines": [line]}
    )

    problem = assert_problem(response, 400)
    assert "/lines/0/reason" in [e["pointer"] for e in problem["errors"]]


# --- references to products and locations ------------------------------------------------


def test_unknown_location_is_422_with_a_pointer(client, database, stock):
    hammer = stock["hammer"]
    receive(client, stock["a"], (hammer, 5, "1.00"))
    before = snapshot(client, database)
    a, line = stock["a"]["id"], line_of("transfers", hammer)
    cases = [
        (kind, {"location_id": 999, "lines": [line_of(kind, hammer)]}, "/location_id")
        for kind in ("receipts", "shipments", "adjustments")
    ] + [
        (
            "transfers",
            {"from_location_id": 999, "to_location_id": a, "lines": [line]},
            "/from_location_id",
        ),
        (
            "transfers",
            {"from_location_id": a, "to_location_id": 999, "lines": [line]},
            "/to_location_id",
        ),
    ]

    for kind, body, pointer in cases:
        problem = assert_problem(post_document(client, kind, body), 422)
        assert [e["pointer"] for e in problem["errors"]] == [pointer], (kind, problem)

    assert snapshot(client, database) == before


@pytest.mark.parametrize("kind", ["receipts", "shipments", "transfers", "adjustments"])
def test_unknown_and_archived_products_are_422_naming_each_line(client, database, stock, kind):
    hammer, nails = stock["hammer"], stock["nails"]
    receive(client, stock["a"], (hammer, 5, "1.00"), (nails, 5, "1.00"))
    archived = client.patch(f"/api/v1/products/{nails['id']}", json={"is_active": False})
    assert archived.status_code == 200, archived.text
    before = snapshot(client, database)
    lines = [
        line_of(kind, {"id": 999}),
        line_of(kind, hammer),
        line_of(kind, nails),
    ]

    problem = assert_problem(post_document(client, kind, document_body(kind, stock, lines)), 422)

    assert [e["pointer"] for e in problem["errors"]] == [
        "/lines/0/product_id",
        "/lines/2/product_id",
    ]
    assert "archived" in problem["errors"][1]["detail"]
    assert snapshot(client, database) == before


@pytest.mark.parametrize(
    ("kind", "pointer"),
    [
        ("receipts", "/location_id"),
        ("shipments", "/location_id"),
        ("adjustments", "/location_id"),
        ("transfers", "/from_location_id"),
    ],
)
def test_archived_location_is_422(client, database, stock, kind, pointer):
    a, hammer = stock["a"], stock["hammer"]
    receive(client, a, (hammer, 5, "1.00"))
    archived = client.patch(f"/api/v1/locations/{a['id']}", json={"is_active": False})
    assert archived.status_code == 200, archived.text
    before = snapshot(client, database)

    response = post_document(client, kind, document_body(kind, stock, [line_of(kind, hammer)]))

    problem = assert_problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == [pointer]
    assert "archived" in problem["detail"]
    assert snapshot(client, database) == before


def test_transfer_into_an_archived_location_is_422(client, database, stock):
    a, b, hammer = stock["a"], stock["b"], stock["hammer"]
    receive(client, a, (hammer, 5, "1.00"))
    archived = client.patch(f"/api/v1/locations/{b['id']}", json={"is_active": False})
    assert archived.status_code == 200, archived.text
    before = snapshot(client, database)

    response = post_document(
        client, "transfers", document_body("transfers", stock, quantity_lines((hammer, 1)))
    )

    problem = assert_problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/to_location_id"]
    assert snapshot(client, database) == before


# --- the append-only ledger ---------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE stock_movements SET quantity = quantity + 1 WHERE id = :id",
        "UPDATE stock_movements SET note = 'edited' WHERE id = :id",
        "DELETE FROM stock_movements WHERE id = :id",
    ],
    ids=["update-quantity", "update-note", "delete"],
)
def test_the_database_refuses_to_change_or_delete_a_movement(client, database, stock, statement):
    document = receive(client, stock["a"], (stock["hammer"], 5, "1.00"))
    movement = document["movements"][0]

    with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as connection:
        connection.execute(text(statement), {"id": movement["id"]})

    assert client.get(f"{STOCK}/movements/{movement['id']}").json() == movement
    with Session(database.engine) as session:
        assert session.scalar(select(func.count()).select_from(StockMovement)) == 1
        assert session.scalar(select(StockLevel.on_hand)) == 5
