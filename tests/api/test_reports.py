"""Reports: stock valuation (now and as of a past moment) and the movement summary.

Every movement is posted at a fixed time (the ledger's clock is patched), so each value
below is worked out by hand from the receipts, shipments, transfers and reversals.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event, text

from service.db import session as current_session
from service.domain import checkpoints, ledger, reports
from tests.helpers import assert_problem, create_category, create_location, create_product

STOCK = "/api/v1/stock"
VALUATION = "/api/v1/reports/valuation"
MOVEMENTS = "/api/v1/reports/movements"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


T_RECEIVE_HAM = at("2026-11-02T09:00:00")
T_RECEIVE_HAM_AGAIN = at("2026-11-02T10:00:00")
T_TRANSFER = at("2026-11-02T23:59:59.999999")
T_SHIP = at("2026-11-03T00:00:00")
T_RECEIVE_SAW = at("2026-11-03T08:00:00")
T_RECEIVE_MISC = at("2026-11-03T09:00:00")
T_RECEIVE_DRILL = at("2026-11-04T09:00:00")
T_SHIP_DRILL = at("2026-11-04T10:00:00")
T_REVERSE = at("2026-11-05T12:00:00")


def iso(moment: datetime) -> str:
    return moment.isoformat()


class Clock:
    """The ledger's clock: every document posted is stamped with ``now``."""

    def __init__(self, monkeypatch) -> None:
        self.now = T_RECEIVE_HAM
        monkeypatch.setattr(ledger, "utcnow", lambda: self.now)


@pytest.fixture()
def clock(monkeypatch) -> Clock:
    return Clock(monkeypatch)


def post(client, kind: str, body: dict) -> dict:
    response = client.post(f"{STOCK}/{kind}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def receive(client, location, product, quantity: int, cost: str) -> dict:
    line = {"product_id": product["id"], "quantity": quantity, "unit_cost": cost}
    return post(client, "receipts", {"location_id": location["id"], "lines": [line]})


def ship(client, location, product, quantity: int) -> dict:
    line = {"product_id": product["id"], "quantity": quantity}
    return post(client, "shipments", {"location_id": location["id"], "lines": [line]})


def transfer(client, source, target, product, quantity: int) -> dict:
    body = {
        "from_location_id": source["id"],
        "to_location_id": target["id"],
        "lines": [{"product_id": product["id"], "quantity": quantity}],
    }
    return post(client, "transfers", body)


@pytest.fixture()
def store(client, clock) -> dict:
    """Two locations, four products in a small category tree, and a week of movements.

    HAM: +10 @ 5.00 and +10 @ 8.00 at WH1 (average 6.5), 4 moved to SHOP, 3 shipped from
    SHOP, then the 8.00 receipt reversed: 7 left (WH1 6, SHOP 1) at
    (6.5 * 17 - 8 * 10) / 7 = 4.357143. SAW: 3 @ 12.3333 at SHOP. MISC (no category):
    7 @ 0.0001 at WH1. DRILL: 2 @ 100 received and shipped again (nothing left).
    """
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    wh1 = create_location(client, "WH1", "Main warehouse")
    shop = create_location(client, "SHOP", "Shop floor")
    ham = create_product(client, "HAM-16OZ", "Claw hammer", category_id=hand["id"])
    saw = create_product(client, "SAW-22", "Hand saw", category_id=hand["id"])
    drill = create_product(client, "DRL-18V", "Cordless drill", category_id=tools["id"])
    misc = create_product(client, "MISC-1", "Odds and ends")

    clock.now = T_RECEIVE_HAM
    receive(client, wh1, ham, 10, "5.00")
    clock.now = T_RECEIVE_HAM_AGAIN
    second = receive(client, wh1, ham, 10, "8.00")
    clock.now = T_TRANSFER
    transfer(client, wh1, shop, ham, 4)
    clock.now = T_SHIP
    ship(client, shop, ham, 3)
    clock.now = T_RECEIVE_SAW
    receive(client, shop, saw, 3, "12.3333")
    clock.now = T_RECEIVE_MISC
    receive(client, wh1, misc, 7, "0.0001")
    clock.now = T_RECEIVE_DRILL
    receive(client, wh1, drill, 2, "100")
    clock.now = T_SHIP_DRILL
    ship(client, wh1, drill, 2)
    clock.now = T_REVERSE
    reversal = client.post(f"{STOCK}/movements/{second['movements'][0]['id']}/reversal")
    assert reversal.status_code == 201, reversal.text
    return {
        "tools": tools,
        "hand": hand,
        "wh1": wh1,
        "shop": shop,
        "ham": ham,
        "saw": saw,
        "drill": drill,
        "misc": misc,
    }


def get_json(client, path: str, **params) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def compact(report: dict) -> list[tuple]:
    """Rows as tuples of their values, in order."""
    return [tuple(row.values()) for row in report["rows"]]


# --- valuation ---------------------------------------------------------------------------------


def test_valuation_by_category_now(client, store):
    report = get_json(client, VALUATION)
    hand = str(store["hand"]["id"])
    assert report["group_by"] == "category"
    assert compact(report) == [
        ("none", "(uncategorised)", None, 1, 7, "0.000700"),
        # HAM 7 * 4.357143 = 30.500001, SAW 3 * 12.3333 = 36.9999
        (hand, "Tools/Hand tools", "Hand tools", 2, 10, "67.499901"),
    ]
    assert report["totals"] == {"products": 3, "quantity": 17, "value": "67.500601"}
    # "Now": the moment the report was computed.
    as_of = datetime.fromisoformat(report["as_of"])
    assert abs(as_of - datetime.now(UTC)) < timedelta(minutes=1)


def test_valuation_by_location_counts_a_product_at_two_locations_once_in_totals(client, store):
    report = get_json(client, VALUATION, group_by="location")
    assert compact(report) == [
        # HAM 1 * 4.357143 + SAW 3 * 12.3333
        (str(store["shop"]["id"]), "SHOP", "Shop floor", 2, 4, "41.357043"),
        # HAM 6 * 4.357143 + MISC 7 * 0.0001
        (str(store["wh1"]["id"]), "WH1", "Main warehouse", 2, 13, "26.143558"),
    ]
    assert report["totals"] == {"products": 3, "quantity": 17, "value": "67.500601"}


@pytest.mark.parametrize(
    ("as_of", "by_category", "totals"),
    [
        # Before the first movement: nothing.
        (T_RECEIVE_HAM - timedelta(microseconds=1), [], (0, 0, "0.000000")),
        # as_of is inclusive: the first receipt alone, at its cost.
        (T_RECEIVE_HAM, [("Tools/Hand tools", 1, 10, "50.000000")], (1, 10, "50.000000")),
        # After the second receipt: 20 at 6.5.
        (T_TRANSFER - timedelta(seconds=1), [("Tools/Hand tools", 1, 20, "130.000000")], None),
        # A transfer moves stock, not value; the shipment takes 3 at the average.
        (T_SHIP, [("Tools/Hand tools", 1, 17, "110.500000")], None),
        # The drill is valued while it is there ...
        (
            T_RECEIVE_DRILL,
            [
                ("(uncategorised)", 1, 7, "0.000700"),
                ("Tools", 1, 2, "200.000000"),
                ("Tools/Hand tools", 2, 20, "147.499900"),
            ],
            (4, 29, "347.500600"),
        ),
        # ... and its group disappears once it is gone.
        (
            T_REVERSE - timedelta(microseconds=1),
            [("(uncategorised)", 1, 7, "0.000700"), ("Tools/Hand tools", 2, 20, "147.499900")],
            None,
        ),
        # The reversal backs the 8.00 receipt out of the average.
        (
            T_REVERSE,
            [("(uncategorised)", 1, 7, "0.000700"), ("Tools/Hand tools", 2, 10, "67.499901")],
            (3, 17, "67.500601"),
        ),
    ],
)
def test_valuation_as_of_replays_the_ledger(client, store, as_of, by_category, totals):
    report = get_json(client, VALUATION, as_of=iso(as_of))
    assert datetime.fromisoformat(report["as_of"]) == as_of
    assert [(r["label"], r["products"], r["quantity"], r["value"]) for r in report["rows"]] == (
        by_category
    )
    if totals is not None:
        assert (
            report["totals"]["products"],
            report["totals"]["quantity"],
            report["totals"]["value"],
        ) == totals


def test_valuation_as_of_by_location_follows_the_transfer(client, store):
    report = get_json(client, VALUATION, group_by="location", as_of=iso(T_TRANSFER))
    assert [(r["label"], r["quantity"], r["value"]) for r in report["rows"]] == [
        ("SHOP", 4, "26.000000"),
        ("WH1", 16, "104.000000"),
    ]


def test_valuation_as_of_in_the_future_is_now(client, store):
    now = get_json(client, VALUATION)
    future = get_json(client, VALUATION, as_of="2999-01-01T00:00:00Z")
    assert future["rows"] == now["rows"]
    assert future["totals"] == now["totals"]
    assert datetime.fromisoformat(future["as_of"]) < at("2999-01-01T00:00:00")


def test_valuation_as_of_now_equals_the_current_levels(client, store):
    """The ledger replay and the live levels agree (both code paths, one answer)."""
    for group_by in ("category", "location"):
        now = get_json(client, VALUATION, group_by=group_by)
        replayed = get_json(client, VALUATION, group_by=group_by, as_of=iso(T_REVERSE))
        assert replayed["rows"] == now["rows"]
        assert replayed["totals"] == now["totals"]


@pytest.mark.parametrize("group_by", ["category", "location"])
def test_forward_and_backward_replays_agree_at_every_moment(
    client, store, database, monkeypatch, group_by
):
    """The two ways to replay (sum up to as_of, or levels minus what came after) agree."""
    moments = [
        T_RECEIVE_HAM,
        T_RECEIVE_HAM_AGAIN,
        T_TRANSFER,
        T_SHIP,
        T_RECEIVE_SAW,
        T_RECEIVE_MISC,
        T_RECEIVE_DRILL,
        T_SHIP_DRILL,
        T_REVERSE,
    ]
    moments = sorted(moments + [m - timedelta(microseconds=1) for m in moments])
    for moment in moments:
        answers = {}
        for direction in ("forward", "backward"):
            replay = reports.Replay(direction)
            monkeypatch.setattr(reports, "plan_replay", lambda _s, _a, r=replay: r)
            with database.transaction(write=False) as session:
                report = reports.valuation(session, group_by, moment)
            answers[direction] = (report.rows, report.totals)
        assert answers["forward"] == answers["backward"], moment
    monkeypatch.undo()
    now = get_json(client, VALUATION, group_by=group_by)  # the last answers are T_REVERSE's
    assert answers["forward"] == (now["rows"], now["totals"])


ALL_MOMENTS = sorted(
    {
        moment + delta
        for moment in (
            T_RECEIVE_HAM,
            T_RECEIVE_HAM_AGAIN,
            T_TRANSFER,
            T_SHIP,
            T_RECEIVE_SAW,
            T_RECEIVE_MISC,
            T_RECEIVE_DRILL,
            T_SHIP_DRILL,
            T_REVERSE,
        )
        for delta in (timedelta(microseconds=-1), timedelta(0), timedelta(microseconds=1))
    }
    | {T_RECEIVE_HAM - timedelta(days=1), T_REVERSE + timedelta(days=1)}
)


def _valuations(client) -> dict:
    """Every valuation report (JSON and CSV) at every moment of the store's history."""
    answers = {}
    for moment in ALL_MOMENTS:
        for group_by in ("category", "location"):
            params = {"group_by": group_by, "as_of": iso(moment)}
            answers[(moment, group_by, "json")] = get_json(client, VALUATION, **params)
            csv_response = client.get(VALUATION, params=params, headers={"Accept": "text/csv"})
            assert csv_response.status_code == 200, csv_response.text
            answers[(moment, group_by, "csv")] = csv_response.text
    return answers


def close_checkpoint(database, moment: datetime) -> checkpoints.Closed:
    with database.transaction() as session:
        return checkpoints.close(session, moment)


def test_checkpoints_change_no_valuation(client, store, database):
    """The same report, JSON and CSV, with and without checkpoints: at a checkpoint's moment
    exactly, a microsecond either side, between two checkpoints, before the first and after
    the last; the moments hit movements stamped exactly on a checkpoint."""
    without = _valuations(client)
    for moment in (T_RECEIVE_HAM_AGAIN, T_SHIP, T_RECEIVE_DRILL - timedelta(minutes=30)):
        closed = close_checkpoint(database, moment)
        assert closed.created
    with database.transaction(write=False) as session:
        assert reports.plan_replay(session, T_SHIP + timedelta(minutes=1)).direction == (
            "checkpoint"
        )
    assert _valuations(client) == without
    report = checkpoints_verified(database)
    assert [check.ok for check in report] == [True, True, True]


def test_every_replay_agrees_with_a_checkpoint_at_every_moment(
    client, store, database, monkeypatch
):
    """Forced to replay from each checkpoint, every moment after it gives the forward answer."""
    moments = [T_RECEIVE_HAM, T_TRANSFER, T_SHIP, T_RECEIVE_MISC, T_REVERSE]
    closed = [close_checkpoint(database, moment) for moment in moments]
    for checkpoint in closed:
        for moment in (m for m in ALL_MOMENTS if m >= checkpoint.at):
            for group_by in ("category", "location"):
                answers = []
                for replay in (
                    reports.Replay("forward"),
                    reports.Replay("checkpoint", checkpoint.id, checkpoint.at),
                ):
                    monkeypatch.setattr(reports, "plan_replay", lambda _s, _a, r=replay: r)
                    with database.transaction(write=False) as session:
                        report = reports.valuation(session, group_by, moment)
                    answers.append((report.rows, report.totals))
                assert answers[0] == answers[1], (checkpoint.at, moment, group_by)


def checkpoints_verified(database) -> list:
    with database.transaction(write=False) as session:
        return checkpoints.verify(session)


def test_a_checkpoint_holds_what_the_ledger_held_then(client, store, database):
    closed = close_checkpoint(database, T_SHIP)
    # HAM: WH1 16 @ 6.5, SHOP 4 - 3 shipped at T_SHIP (inclusive) = 1.
    assert (closed.pairs, closed.quantity) == (2, 17)
    again = close_checkpoint(database, T_SHIP)
    assert (again.id, again.created) == (closed.id, False)
    assert [check.ok for check in checkpoints_verified(database)] == [True]


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(minutes=5), -timedelta(days=1)])
def test_a_checkpoint_is_refused_for_a_recent_or_future_moment(database, ago):
    with database.transaction() as session, pytest.raises(checkpoints.CheckpointRefused):
        checkpoints.close(session, datetime.now(UTC) - ago)


def test_valuation_as_of_uses_the_products_last_cost_even_from_an_emptied_location(client, clock):
    """The average after the last movement counts, wherever it happened."""
    a, b = create_location(client, "A"), create_location(client, "B")
    product = create_product(client, "BOLT")
    clock.now = at("2026-11-02T09:00:00")
    receive(client, a, product, 10, "10")
    clock.now = at("2026-11-02T10:00:00")
    receive(client, b, product, 10, "20")  # average 15
    clock.now = at("2026-11-02T11:00:00")
    ship(client, b, product, 10)  # B is empty; the average stays 15
    report = get_json(
        client, VALUATION, group_by="location", as_of="2026-11-02T12:00:00+01:00"
    )  # 11:00 UTC
    assert [(r["label"], r["quantity"], r["value"]) for r in report["rows"]] == [
        ("A", 10, "150.000000")
    ]


def test_valuation_of_a_deeper_category_tree_uses_each_products_own_category(client, clock):
    root = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=root["id"])
    saws = create_category(client, "Saws", parent_id=hand["id"])
    location = create_location(client, "WH1")
    receive(client, location, create_product(client, "S1", category_id=saws["id"]), 2, "1.5")
    receive(client, location, create_product(client, "T1", category_id=root["id"]), 1, "4")
    report = get_json(client, VALUATION)
    assert [(r["key"], r["label"], r["name"], r["value"]) for r in report["rows"]] == [
        (str(root["id"]), "Tools", "Tools", "4.000000"),
        (str(saws["id"]), "Tools/Hand tools/Saws", "Saws", "3.000000"),
    ]


def test_empty_database_reports_nothing(client):
    for group_by in ("category", "location"):
        for params in ({}, {"as_of": "2026-01-01T00:00:00Z"}):
            report = get_json(client, VALUATION, group_by=group_by, **params)
            assert report["rows"] == []
            assert report["totals"] == {"products": 0, "quantity": 0, "value": "0.000000"}
    for group_by in ("day", "product", "location", "kind"):
        report = get_json(client, MOVEMENTS, group_by=group_by)
        assert report["rows"] == []
        assert report["totals"] == {"quantity_in": 0, "quantity_out": 0, "net": 0, "movements": 0}


MAX_COST = "999999999999.9999"


@pytest.mark.parametrize("as_of", [None, "2999-01-01T00:00:00Z", "2026-11-02T12:00:00Z"])
def test_extreme_values_are_exact_and_never_500(client, clock, as_of):
    """2·10^9 units at ~10^12 each, many times over: far beyond 64-bit products and sums."""
    category = create_category(client, "Bullion")
    locations = [create_location(client, f"VAULT-{i}") for i in range(3)]
    products = [create_product(client, f"GOLD-{i}", category_id=category["id"]) for i in range(4)]
    clock.now = at("2026-11-02T09:00:00")
    for location in locations:
        for product in products:
            body = {
                "location_id": location["id"],
                "lines": [
                    {"product_id": product["id"], "quantity": 1_000_000_000, "unit_cost": MAX_COST}
                ]
                * 2,
            }
            post(client, "receipts", body)
    params = {} if as_of is None else {"as_of": as_of}
    report = get_json(client, VALUATION, **params)
    units = 2_000_000_000 * len(locations) * len(products)
    expected = Decimal(units) * Decimal(MAX_COST)
    assert report["rows"][0]["quantity"] == units
    assert Decimal(report["rows"][0]["value"]) == expected
    assert report["rows"][0]["value"] == f"{expected:.6f}"
    assert report["totals"]["value"] == f"{expected:.6f}"

    by_location = get_json(client, VALUATION, group_by="location", **params)
    per_location = Decimal(2_000_000_000 * len(products)) * Decimal(MAX_COST)
    assert [r["value"] for r in by_location["rows"]] == [f"{per_location:.6f}"] * 3
    assert by_location["totals"]["value"] == f"{expected:.6f}"
    assert by_location["totals"]["products"] == len(products)

    summary = get_json(client, MOVEMENTS, group_by="kind", **{"from": "2026-11-01T00:00:00Z"})
    assert summary["rows"][0]["quantity_in"] == units


# --- movement summary ------------------------------------------------------------------------

WEEK = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-08T00:00:00Z"}


def test_movement_summary_by_utc_day(client, store):
    report = get_json(client, MOVEMENTS, **WEEK)
    assert report["group_by"] == "day"
    assert datetime.fromisoformat(report["from"]) == at("2026-11-01T00:00:00")
    assert datetime.fromisoformat(report["to"]) == at("2026-11-08T00:00:00")
    assert [(r["key"], r["label"], r["name"]) for r in report["rows"]] == [
        (day, day, None) for day in ("2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05")
    ]
    assert [tuple(r.values())[3:] for r in report["rows"]] == [
        # two receipts; the transfer at 23:59:59.999999 is still the 2nd (both legs)
        (24, 4, 20, 4),
        # shipment at midnight, SAW, MISC
        (10, 3, 7, 3),
        (2, 2, 0, 2),
        (0, 10, -10, 1),
    ]
    assert report["totals"] == {"quantity_in": 36, "quantity_out": 19, "net": 17, "movements": 10}


def test_movement_summary_by_kind_counts_both_transfer_legs(client, store):
    report = get_json(client, MOVEMENTS, group_by="kind", **WEEK)
    assert compact(report) == [
        ("receipt", "receipt", None, 32, 0, 32, 5),
        ("reversal", "reversal", None, 0, 10, -10, 1),
        ("shipment", "shipment", None, 0, 5, -5, 2),
        ("transfer_in", "transfer_in", None, 4, 0, 4, 1),
        ("transfer_out", "transfer_out", None, 0, 4, -4, 1),
    ]


def test_movement_summary_by_product_and_location(client, store):
    by_product = get_json(client, MOVEMENTS, group_by="product", **WEEK)
    assert compact(by_product) == [
        (str(store["drill"]["id"]), "DRL-18V", "Cordless drill", 2, 2, 0, 2),
        (str(store["ham"]["id"]), "HAM-16OZ", "Claw hammer", 24, 17, 7, 6),
        (str(store["misc"]["id"]), "MISC-1", "Odds and ends", 7, 0, 7, 1),
        (str(store["saw"]["id"]), "SAW-22", "Hand saw", 3, 0, 3, 1),
    ]
    by_location = get_json(client, MOVEMENTS, group_by="location", **WEEK)
    assert compact(by_location) == [
        (str(store["shop"]["id"]), "SHOP", "Shop floor", 7, 3, 4, 3),
        (str(store["wh1"]["id"]), "WH1", "Main warehouse", 29, 16, 13, 7),
    ]


def test_movement_summary_filters(client, store):
    ham, shop = store["ham"]["id"], store["shop"]["id"]
    only_ham = get_json(client, MOVEMENTS, group_by="kind", product_id=ham, **WEEK)
    assert [(r["key"], r["movements"]) for r in only_ham["rows"]] == [
        ("receipt", 2),
        ("reversal", 1),
        ("shipment", 1),
        ("transfer_in", 1),
        ("transfer_out", 1),
    ]
    ham_at_shop = get_json(
        client, MOVEMENTS, group_by="kind", product_id=ham, location_id=shop, **WEEK
    )
    assert compact(ham_at_shop) == [
        ("shipment", "shipment", None, 0, 3, -3, 1),
        ("transfer_in", "transfer_in", None, 4, 0, 4, 1),
    ]
    receipts = get_json(client, MOVEMENTS, group_by="location", kind="receipt", **WEEK)
    assert [(r["label"], r["quantity_in"], r["movements"]) for r in receipts["rows"]] == [
        ("SHOP", 3, 1),
        ("WH1", 29, 4),
    ]
    nothing = get_json(client, MOVEMENTS, product_id=2_147_483_647, **WEEK)
    assert nothing["rows"] == []


def _pages(client, **params) -> tuple[list[dict], list[dict]]:
    """Every page of the by-product summary, following next_cursor; checks the page's
    Link header and that its totals sum its rows."""
    pages, cursor = [], None
    while True:
        query = {"group_by": "product", **params, **({"cursor": cursor} if cursor else {})}
        response = client.get(MOVEMENTS, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        assert len(page["rows"]) <= params.get("limit", 1000)
        for column in ("quantity_in", "quantity_out", "net", "movements"):
            assert page["totals"][column] == sum(row[column] for row in page["rows"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert "link" not in response.headers
            return pages, [row for page in pages for row in page["rows"]]
        assert response.headers["link"].endswith('>; rel="next"')
        assert f"cursor={cursor}" in response.headers["link"]


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(
    "filters",
    [{}, {"kind": "receipt"}, {"location": "shop"}, {"product": "ham"}],
    ids=["all", "receipts", "at-shop", "ham"],
)
def test_the_summary_by_product_pages_through_the_whole_summary(client, store, limit, filters):
    """Pages of any size, under any filter, give the whole summary's rows in its order
    (the CSV's rows), each row once; the last page says so."""
    params = {**WEEK}
    if "kind" in filters:
        params["kind"] = filters["kind"]
    if "location" in filters:
        params["location_id"] = store[filters["location"]]["id"]
    if "product" in filters:
        params["product_id"] = store[filters["product"]]["id"]
    whole = client.get(
        MOVEMENTS, params={"group_by": "product", **params}, headers={"Accept": "text/csv"}
    )
    assert whole.status_code == 200, whole.text
    expected = parse_csv(whole)  # the header, the rows, then the period's totals
    assert len(expected) > 2, "the filter selects something"
    pages, rows = _pages(client, limit=limit, **params)
    columns = ["key", "label", "name", "quantity_in", "quantity_out", "net", "movements"]
    sums = ("quantity_in", "quantity_out", "net", "movements")
    totals = {column: sum(page["totals"][column] for page in pages) for column in sums}
    assert as_csv_rows({"rows": rows, "totals": totals}, columns) == expected
    # A full last page says it is the last: no empty page after it.
    assert len(pages) == -(-len(rows) // limit)


def test_the_first_page_by_product_is_the_default_answer(client, store):
    page = get_json(client, MOVEMENTS, group_by="product", **WEEK)
    assert page["next_cursor"] is None
    assert [row["label"] for row in page["rows"]] == ["DRL-18V", "HAM-16OZ", "MISC-1", "SAW-22"]
    assert page["totals"] == {"quantity_in": 36, "quantity_out": 19, "net": 17, "movements": 10}
    # The other groupings are whole: next_cursor is there, and null.
    assert get_json(client, MOVEMENTS, group_by="kind", **WEEK)["next_cursor"] is None


def test_a_later_product_never_shifts_the_pages(client, store, clock):
    """A product created (and moved) between two pages sorts where its SKU says: before the
    cursor it is not served, after it is; no row is served twice."""
    first = get_json(client, MOVEMENTS, group_by="product", limit=2, **WEEK)
    assert [row["label"] for row in first["rows"]] == ["DRL-18V", "HAM-16OZ"]
    early = create_product(client, "AAA-1", "Sorts first")
    late = create_product(client, "ZZZ-1", "Sorts last")
    clock.now = T_REVERSE + timedelta(minutes=1)
    receive(client, store["wh1"], early, 1, "1")
    receive(client, store["wh1"], late, 1, "1")
    rest = get_json(
        client, MOVEMENTS, group_by="product", limit=10, cursor=first["next_cursor"], **WEEK
    )
    assert [row["label"] for row in rest["rows"]] == ["MISC-1", "SAW-22", "ZZZ-1"]


def test_a_page_by_product_reads_only_its_products_movements(client, clock, database):
    """The page statement walks the products in SKU order and stops at the page's end: on
    PostgreSQL it reads (EXPLAIN ANALYZE) only the movements of the page's products and the
    two after them; on SQLite its plan sorts nothing (no temporary B-tree) so it can stop."""
    clock.now = at("2026-11-02T09:00:00")
    _populate(client, clock, "PG", 30, 1, 2)  # 30 products, 2 receipts each
    seen: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, *_args):
        if "stock_movements" in statement:
            seen.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        page = get_json(
            client,
            MOVEMENTS,
            group_by="product",
            limit=3,
            **{"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
        )
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    assert [row["movements"] for row in page["rows"]] == [2, 2, 2]
    (statement, parameters), *_ = seen
    with database.engine.connect() as connection:
        raw = connection.connection.dbapi_connection.cursor()
        if database.engine.dialect.name == "postgresql":
            raw.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
            plan = raw.fetchone()[0][0]["Plan"]
            read = sum(
                node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
                for node in _plan_nodes(plan)
                if node.get("Relation Name") == "stock_movements"
            )
            # The page's 3 products, the look-ahead one, and one more that the incremental
            # sort on (sku_key, id) reads to close its group: 10 of the 60 movements.
            assert read <= 2 * (3 + 2), json.dumps(plan, indent=1)
        else:
            raw.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            details = [row[-1] for row in raw.fetchall()]
            assert not any("TEMP B-TREE" in detail for detail in details), details
            assert any("stock_movements" in d and "INDEX" in d for d in details), details


def _plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"group_by": "day"}, {}),
        ({"group_by": "kind"}, {}),
        ({"group_by": "product"}, {"Accept": "text/csv"}),
    ],
)
def test_a_cursor_outside_the_json_summary_by_product_is_400(client, store, params, headers):
    first = get_json(client, MOVEMENTS, group_by="product", limit=1, **WEEK)
    response = client.get(
        MOVEMENTS, params={**params, **WEEK, "cursor": first["next_cursor"]}, headers=headers
    )
    assert_problem(response, 400)
    assert response.json()["errors"][0]["parameter"] == "cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        "bm90LWpzb24",  # not JSON
        "eyJzIjoic2t1IiwiayI6WyJoYW0tMTZveiIsMV19",  # the product list's sort=sku cursor
        "eyJzIjoibW92ZW1lbnRzLWJ5LXByb2R1Y3QiLCJrIjpbMSwxXX0",  # a number for the SKU
        "eyJzIjoibW92ZW1lbnRzLWJ5LXByb2R1Y3QiLCJrIjpbImEiLDBdfQ",  # id 0
    ],
)
def test_a_foreign_or_malformed_cursor_is_400(client, store, cursor):
    response = client.get(MOVEMENTS, params={"group_by": "product", "cursor": cursor, **WEEK})
    assert_problem(response, 400)
    assert response.json()["errors"][0]["parameter"] == "cursor"


def test_movement_summary_period_is_half_open(client, store):
    """`from` inclusive, `to` exclusive, compared to the microsecond."""
    report = get_json(
        client, MOVEMENTS, group_by="kind", **{"from": iso(T_TRANSFER), "to": iso(T_SHIP)}
    )
    assert [r["key"] for r in report["rows"]] == ["transfer_in", "transfer_out"]
    just_after = iso(T_TRANSFER + timedelta(microseconds=1))
    report = get_json(
        client, MOVEMENTS, group_by="kind", **{"from": just_after, "to": iso(T_RECEIVE_SAW)}
    )
    assert [r["key"] for r in report["rows"]] == ["shipment"]


def test_movement_summary_defaults_to_the_last_30_days(client, store, clock):
    report = get_json(client, MOVEMENTS)
    start, end = datetime.fromisoformat(report["from"]), datetime.fromisoformat(report["to"])
    assert end - start == timedelta(days=30)
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=1)
    only_to = get_json(client, MOVEMENTS, to="2026-11-04T00:00:00Z")
    assert datetime.fromisoformat(only_to["from"]) == at("2026-10-05T00:00:00")
    assert [r["key"] for r in only_to["rows"]] == ["2026-11-02", "2026-11-03"]


@pytest.mark.parametrize(
    "period",
    [
        {"from": "2026-11-08T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"from": "2026-11-01T01:00:00+01:00", "to": "2026-11-01T00:00:00Z"},
        {"from": "2999-01-01T00:00:00Z"},
    ],
)
def test_an_empty_period_is_400_naming_from(client, period):
    problem = assert_problem(client.get(MOVEMENTS, params=period), 400, "validation-error")
    assert [(e["parameter"], e["in"]) for e in problem["errors"]] == [("from", "query")]


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        (VALUATION, {"as_of": "yesterday"}, "as_of"),
        (VALUATION, {"group_by": "product"}, "group_by"),
        (MOVEMENTS, {"from": "2026-13-01T00:00:00Z"}, "from"),
        (MOVEMENTS, {"to": "2026-11-01"}, "to"),
        (MOVEMENTS, {"group_by": "week"}, "group_by"),
        (MOVEMENTS, {"kind": "theft"}, "kind"),
        (MOVEMENTS, {"product_id": 0}, "product_id"),
    ],
)
def test_invalid_parameters_are_400(client, path, params, parameter):
    problem = assert_problem(client.get(path, params=params), 400)
    assert parameter in str(problem), problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0001-01-01T00:30:00+01:00", datetime.min.replace(tzinfo=UTC)),
        ("2025-12-31T23:59:60Z", at("2026-01-01T00:00:00")),
        ("2026-11-02t09:15:00.123456789z", at("2026-11-02T09:15:00.123456")),
        ("2026-11-02T09:15:00", at("2026-11-02T09:15:00")),
    ],
)
def test_edge_timestamps_are_understood(client, value, expected):
    report = get_json(client, VALUATION, as_of=value)
    assert datetime.fromisoformat(report["as_of"]) == expected


def test_far_timestamps_never_500(client, store):
    for params in (
        {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999-23:59"},
        {"to": "0001-01-02T00:00:00+23:59"},
    ):
        response = client.get(MOVEMENTS, params=params)
        assert response.status_code in (200, 400), response.text
    everything = get_json(
        client, MOVEMENTS, **{"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"}
    )
    assert everything["totals"]["movements"] == 10


# --- CSV and content negotiation ---------------------------------------------------------------


def parse_csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def as_csv_rows(report: dict, columns: list[str]) -> list[list[str]]:
    """What the CSV should hold: the JSON rows as text, then the totals row."""
    cell = lambda v: "" if v is None else str(v)  # noqa: E731
    rows = [[cell(row[c]) for c in columns] for row in report["rows"]]
    totals = {"key": "total", "label": "", "name": "", **report["totals"]}
    return [columns, *rows, [cell(totals[c]) for c in columns]]


@pytest.mark.parametrize(
    ("path", "params", "columns"),
    [
        (VALUATION, {}, ["key", "label", "name", "products", "quantity", "value"]),
        (
            VALUATION,
            {"group_by": "location", "as_of": iso(T_RECEIVE_DRILL)},
            ["key", "label", "name", "products", "quantity", "value"],
        ),
        *[
            (
                MOVEMENTS,
                {"group_by": group_by, **WEEK},
                ["key", "label", "name", "quantity_in", "quantity_out", "net", "movements"],
            )
            for group_by in ("day", "product", "location", "kind")
        ],
    ],
)
def test_csv_parses_back_to_the_json_rows(client, store, path, params, columns):
    report = get_json(client, path, **params)
    response = client.get(path, params=params, headers={"Accept": "text/csv"})
    assert parse_csv(response) == as_csv_rows(report, columns)
    assert response.text.endswith("\r\n")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert disposition.endswith('.csv"')
    assert response.headers["vary"] == "Accept"


def test_csv_file_names_name_the_report_and_period(client, store):
    valuation = client.get(VALUATION, params={"as_of": iso(T_SHIP)}, headers={"Accept": "text/csv"})
    assert valuation.headers["content-disposition"] == (
        'attachment; filename="valuation-by-category-20261103T000000Z.csv"'
    )
    movements = client.get(
        MOVEMENTS, params={"group_by": "kind", **WEEK}, headers={"Accept": "text/csv"}
    )
    assert movements.headers["content-disposition"] == (
        'attachment; filename="movements-by-kind-20261101T000000Z-20261108T000000Z.csv"'
    )


def test_csv_text_cells_never_start_a_spreadsheet_formula(client, clock):
    category = create_category(client, "=HYPERLINK(1)")
    location = create_location(client, "WH1", "@risk store")
    receive(client, location, create_product(client, "F1", category_id=category["id"]), 1, "1")
    rows = parse_csv(client.get(VALUATION, headers={"Accept": "text/csv"}))
    assert rows[1][1:3] == ["'=HYPERLINK(1)", "'=HYPERLINK(1)"]
    rows = parse_csv(
        client.get(VALUATION, params={"group_by": "location"}, headers={"Accept": "text/csv"})
    )
    assert rows[1][1:3] == ["WH1", "'@risk store"]
    # Numbers stay numbers, negative ones included. (The period is given: the default one,
    # the 30 days before now, leaves the clock's fixed moment behind as the calendar moves.)
    period = {"group_by": "kind", "from": iso(T_RECEIVE_HAM)}
    rows = parse_csv(client.get(MOVEMENTS, params=period, headers={"Accept": "text/csv"}))
    assert rows[-1] == ["total", "", "", "1", "0", "1", "1"]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("text/html, */*;q=0.1", "application/json"),
    ],
)
def test_accept_picks_json_or_csv(client, accept, media_type):
    headers = {} if accept is None else {"Accept": accept}
    for path in (VALUATION, MOVEMENTS):
        response = client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(media_type)


@pytest.mark.parametrize(
    "accept", ["application/xml", "text/csv;q=0, application/json;q=0", "image/png"]
)
def test_an_accept_allowing_neither_is_406(client, accept):
    for path in (VALUATION, MOVEMENTS):
        response = client.get(path, headers={"Accept": accept})
        problem = assert_problem(response, 406, "not-acceptable")
        assert "text/csv" in problem["detail"]


# --- who may read them -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "clerk"])
def test_roles_below_manager_are_refused(anonymous_client, auth_headers, role):
    for path in (VALUATION, MOVEMENTS):
        response = anonymous_client.get(path, headers=auth_headers(role))
        assert_problem(response, 403)


@pytest.mark.parametrize("role", ["manager", "admin"])
def test_managers_and_admins_may_read_reports(anonymous_client, auth_headers, role):
    for path in (VALUATION, MOVEMENTS):
        response = anonymous_client.get(path, headers=auth_headers(role))
        assert response.status_code == 200, response.text


def test_no_credential_is_401(anonymous_client):
    for path in (VALUATION, MOVEMENTS):
        assert_problem(anonymous_client.get(path), 401)


# --- cost ----------------------------------------------------------------------------------------


def _populate(client, clock, prefix: str, products: int, categories: int, locations: int):
    category_ids = [create_category(client, f"{prefix} {i}")["id"] for i in range(categories)]
    location_ids = [create_location(client, f"{prefix}-{i}")["id"] for i in range(locations)]
    for i in range(products):
        product = create_product(client, f"{prefix}-{i}", category_id=category_ids[i % categories])
        for location_id in location_ids:
            receive(client, {"id": location_id}, product, 5, "2.5")
        clock.now += timedelta(hours=7)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (VALUATION, {"group_by": "category"}),
        (VALUATION, {"group_by": "location"}),
        (VALUATION, {"group_by": "category", "as_of": "2026-11-30T00:00:00Z"}),
        (MOVEMENTS, {"group_by": "day", **WEEK}),
        (MOVEMENTS, {"group_by": "product", **WEEK}),
        (MOVEMENTS, {"group_by": "location", **WEEK}),
    ],
)
def test_statement_count_does_not_grow_with_the_data(client, clock, count_queries, path, params):
    clock.now = at("2026-11-02T09:00:00")
    counts, rows = [], []
    for prefix, size in (("A", (1, 1, 1)), ("B", (12, 4, 3))):
        _populate(client, clock, prefix, *size)
        with count_queries() as counter:
            response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        counts.append(counter.count)
        rows.append(len(response.json()["rows"]))
    assert rows[0] < rows[1]
    assert counts[0] == counts[1], counts


def test_a_report_reads_one_snapshot_with_its_settings(database):
    """The report's PostgreSQL settings (``SET LOCAL``) hold for its query: reports read in
    a read-only snapshot transaction, where autocommit would drop them after one statement.
    Later reads on the same pool are back to the server's defaults."""

    def settings() -> tuple[str, ...]:
        reports.prepare(current_session())
        return tuple(
            current_session()
            .execute(
                text(
                    "SELECT current_setting('work_mem'), current_setting('jit'),"
                    " current_setting('transaction_isolation'),"
                    " current_setting('transaction_read_only')"
                )
            )
            .one()
        )

    if database.engine.dialect.name != "postgresql":
        assert database.run_on_replica(lambda: reports.prepare(current_session()))[0] == "sqlite"
        return
    (work_mem, jit, isolation, read_only), source = database.run_on_replica(settings)
    assert source == "primary"
    expected = reports.POSTGRESQL_REPORT_SETTINGS
    assert (work_mem, jit) == (expected["work_mem"], expected["jit"])
    assert (isolation, read_only) == ("repeatable read", "on")
    after = database.run(
        lambda: current_session().execute(text("SELECT current_setting('work_mem')")).scalar_one(),
        write=False,
    )
    assert after != expected["work_mem"]
