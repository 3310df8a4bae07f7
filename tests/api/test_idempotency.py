"""Idempotency-Key on stock-writing POSTs: a retry never writes a second document."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.api import idempotency
from service.api.idempotency import advisory_lock_id
from service.domain import ledger
from service.domain.ledger import recompute_levels
from service.formats import utcnow
from service.models import IdempotencyRecord, StockDocument
from tests.helpers import assert_problem, create_location, create_product, walk_pages

STOCK = "/api/v1/stock"
KEY = "6f1c2a43-5b0e-4a59-9d3e-0c1d2e3f4a5b"


# --- helpers ------------------------------------------------------------------------------


def post(client, path: str, body: dict | None, key: str | None = KEY):
    headers = {"Idempotency-Key": key} if key else {}
    if body is None:
        return client.post(f"{STOCK}/{path}", headers=headers)
    return client.post(f"{STOCK}/{path}", json=body, headers=headers)


def receipt_body(stock: dict, quantity: int = 10) -> dict:
    return {
        "location_id": stock["a"]["id"],
        "reference": "PO-1",
        "lines": [{"product_id": stock["hammer"]["id"], "quantity": quantity, "unit_cost": "5.00"}],
    }


def shipment_body(stock: dict, quantity: int = 4) -> dict:
    return {
        "location_id": stock["a"]["id"],
        "lines": [{"product_id": stock["hammer"]["id"], "quantity": quantity}],
    }


def document_count(database) -> int:
    with Session(database.engine) as session:
        return session.scalar(select(func.count()).select_from(StockDocument))


def key_rows(database) -> list[tuple[str, int]]:
    """(key, stored status) of every row: a row exists only for a completed response."""
    with Session(database.engine) as session:
        return [
            (record.key, record.response_status)
            for record in session.scalars(select(IdempotencyRecord).order_by(IdempotencyRecord.id))
        ]


def set_key(database, key: str = KEY, **values) -> None:
    with database.engine.begin() as connection:
        connection.execute(
            update(IdempotencyRecord).where(IdempotencyRecord.key == key).values(**values)
        )


def snapshot(client, database) -> tuple:
    return (
        walk_pages(client, f"{STOCK}/levels", limit=200),
        walk_pages(client, f"{STOCK}/movements", limit=200),
        document_count(database),
    )


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


def seed(client, stock) -> dict:
    """Ten hammers at a, received without a key; return the receipt's movement."""
    response = post(client, "receipts", receipt_body(stock), key=None)
    assert response.status_code == 201, response.text
    return response.json()["movements"][0]


# --- replay -------------------------------------------------------------------------------


OPERATIONS = {
    "receipt": lambda stock, movement: ("receipts", receipt_body(stock, 3)),
    "shipment": lambda stock, movement: ("shipments", shipment_body(stock)),
    "transfer": lambda stock, movement: (
        "transfers",
        {
            "from_location_id": stock["a"]["id"],
            "to_location_id": stock["b"]["id"],
            "lines": [{"product_id": stock["hammer"]["id"], "quantity": 2}],
        },
    ),
    "adjustment": lambda stock, movement: (
        "adjustments",
        {
            "location_id": stock["a"]["id"],
            "lines": [
                {"product_id": stock["hammer"]["id"], "reason": "loss", "quantity_delta": -1}
            ],
        },
    ),
    "reversal": lambda stock, movement: (f"movements/{movement['id']}/reversal", None),
    "reversal-with-body": lambda stock, movement: (
        f"movements/{movement['id']}/reversal",
        {"note": "Wrong PO"},
    ),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_retry_with_the_same_key_and_body_replays_the_first_response(
    client, database, stock, operation
):
    movement = seed(client, stock)
    path, body = OPERATIONS[operation](stock, movement)

    first = post(client, path, body)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    after_first = snapshot(client, database)

    retry = post(client, path, body)

    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["content-type"] == "application/json"
    assert retry.json() == first.json()
    assert snapshot(client, database) == after_first
    assert key_rows(database) == [(KEY, 201)]
    assert_no_drift(database)


def test_the_same_body_in_another_key_order_or_spacing_is_replayed(client, database, stock):
    body = receipt_body(stock)
    first = post(client, "receipts", body)
    assert first.status_code == 201, first.text

    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    retry = client.post(
        f"{STOCK}/receipts",
        content=reordered,
        headers={"Idempotency-Key": KEY, "Content-Type": "application/json"},
    )

    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert document_count(database) == 1


def test_without_a_key_every_post_writes_a_document(client, database, stock):
    for _ in range(2):
        assert post(client, "receipts", receipt_body(stock), key=None).status_code == 201

    assert document_count(database) == 2
    assert key_rows(database) == []


def test_keys_are_independent(client, database, stock):
    first = post(client, "receipts", receipt_body(stock), key="key-1")
    second = post(client, "receipts", receipt_body(stock), key="key-2")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert document_count(database) == 2


# --- misuse -------------------------------------------------------------------------------


def test_the_same_key_with_a_different_body_is_422(client, database, stock):
    assert post(client, "receipts", receipt_body(stock, 10)).status_code == 201
    before = snapshot(client, database)

    problem = assert_problem(
        post(client, "receipts", receipt_body(stock, 11)), 422, "idempotency-key-reused"
    )

    assert KEY in problem["detail"]
    assert snapshot(client, database) == before
    assert key_rows(database) == [(KEY, 201)]


def test_the_same_key_on_another_operation_is_422(client, database, stock):
    seed(client, stock)
    assert post(client, "receipts", receipt_body(stock)).status_code == 201
    before = snapshot(client, database)

    assert_problem(post(client, "shipments", shipment_body(stock)), 422, "idempotency-key-reused")

    assert snapshot(client, database) == before


class HeldInTheLedger:
    """Make the next ``ledger.post`` wait (inside its request's transaction) until released."""

    def __init__(self, monkeypatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        original = ledger.post

        def post_when_released(*args, **kwargs):
            self.entered.set()
            assert self.release.wait(timeout=30)
            return original(*args, **kwargs)

        monkeypatch.setattr(ledger, "post", post_when_released)

    def first_request(self, client, path: str, body: dict) -> tuple[threading.Thread, list]:
        answers: list = []
        thread = threading.Thread(
            target=lambda: answers.append(post(client, path, body)), daemon=True
        )
        thread.start()
        assert self.entered.wait(timeout=30), "the first request never reached the ledger"
        return thread, answers


def test_a_retry_while_the_first_request_still_runs(client, database, stock, backend, monkeypatch):
    """PostgreSQL refuses it at once (409); SQLite queues it behind the writer, then replays."""
    held = HeldInTheLedger(monkeypatch)
    first, answers = held.first_request(client, "receipts", receipt_body(stock))
    try:
        # The running request holds its key in its transaction: nothing is committed yet.
        assert key_rows(database) == []
        if backend == "postgresql":
            began = time.monotonic()
            for body in (receipt_body(stock), receipt_body(stock, 11)):
                assert_problem(post(client, "receipts", body), 409, "idempotency-key-in-use")
            assert time.monotonic() - began < 2  # refused at once, not after a wait
            assert document_count(database) == 0
            held.release.set()
            first.join(timeout=30)
            retry = post(client, "receipts", receipt_body(stock))
        else:
            threading.Timer(0.3, held.release.set).start()
            retry = post(client, "receipts", receipt_body(stock))  # waits for the writer
            first.join(timeout=30)
    finally:
        held.release.set()
        first.join(timeout=30)

    [original] = answers
    assert original.status_code == 201, original.text
    assert "idempotent-replayed" not in original.headers
    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == original.json()
    assert document_count(database) == 1
    assert key_rows(database) == [(KEY, 201)]


@contextmanager
def key_held_elsewhere(client, database, key: str = KEY) -> Iterator[None]:
    """PostgreSQL: another transaction holds the key, as a request with it would."""
    scope = f"user:{client.get('/api/v1/users/me').json()['id']}"
    with database.engine.connect() as other:
        lock = func.pg_try_advisory_xact_lock(advisory_lock_id(scope, key))
        assert other.scalar(select(lock))
        yield
        other.rollback()


def test_a_completed_key_replays_even_while_another_request_holds_it(
    client, database, stock, backend
):
    """Concurrent replays of a finished request are all replays, none a 409 (PostgreSQL)."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one write at a time: no request holds a key beside another")
    first = post(client, "receipts", receipt_body(stock))
    assert first.status_code == 201, first.text

    with key_held_elsewhere(client, database):
        replay = post(client, "receipts", receipt_body(stock))
        other_body = post(client, "receipts", receipt_body(stock, 11))

    assert replay.status_code == 201, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    assert_problem(other_body, 422, "idempotency-key-reused")
    assert document_count(database) == 1


def test_a_request_that_dies_midway_leaves_its_key_free(client, database, stock, monkeypatch):
    """Whatever ends a request before its commit ends its hold on the key with it.

    (A killed worker process: tests/e2e/test_stock_concurrency.py.)
    """
    original = ledger.post

    def post_then_die(*args, **kwargs):
        original(*args, **kwargs)  # the document is written in the transaction, then...
        raise RuntimeError("the worker died")

    monkeypatch.setattr(ledger, "post", post_then_die)
    died = post(client, "receipts", receipt_body(stock))
    assert died.status_code == 500
    assert (document_count(database), key_rows(database)) == (0, [])
    monkeypatch.setattr(ledger, "post", original)

    began = time.monotonic()
    retry = post(client, "receipts", receipt_body(stock))

    assert retry.status_code == 201, retry.text
    assert time.monotonic() - began < 2
    assert "idempotent-replayed" not in retry.headers
    assert document_count(database) == 1
    assert key_rows(database) == [(KEY, 201)]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "café".encode()])
def test_a_malformed_key_is_400(client, database, stock, key: str | bytes):
    response = client.post(
        f"{STOCK}/receipts", json=receipt_body(stock), headers={"Idempotency-Key": key}
    )

    problem = assert_problem(response, 400)
    assert [e.get("parameter") for e in problem["errors"]] == ["Idempotency-Key"]
    assert document_count(database) == 0


# --- failures are not remembered ----------------------------------------------------------


def test_after_a_refused_request_the_same_key_can_be_retried(client, database, stock):
    before = snapshot(client, database)

    refused = post(client, "shipments", shipment_body(stock))
    assert_problem(refused, 409, "insufficient-stock")
    assert snapshot(client, database) == before
    assert key_rows(database) == []  # the claim was released

    seed(client, stock)
    retried = post(client, "shipments", shipment_body(stock))
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers

    replayed = post(client, "shipments", shipment_body(stock))
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == retried.json()
    assert document_count(database) == 2  # the seed and one shipment
    assert_no_drift(database)


def test_after_a_422_the_same_key_may_carry_a_corrected_body(client, database, stock):
    wrong = receipt_body(stock)
    wrong["lines"][0]["product_id"] = 999

    assert_problem(post(client, "receipts", wrong), 422)
    assert key_rows(database) == []

    response = post(client, "receipts", receipt_body(stock))
    assert response.status_code == 201, response.text
    assert document_count(database) == 1


def test_a_request_refused_by_validation_does_not_claim_its_key(client, database, stock):
    invalid = receipt_body(stock)
    invalid["lines"][0]["quantity"] = 0

    assert_problem(post(client, "receipts", invalid), 400)
    assert key_rows(database) == []

    assert post(client, "receipts", receipt_body(stock)).status_code == 201


def test_a_reversal_retried_with_its_key_is_replayed_not_refused(client, database, stock):
    movement = seed(client, stock)
    path = f"movements/{movement['id']}/reversal"
    first = post(client, path, None)
    assert first.status_code == 201, first.text

    retry = post(client, path, None)
    again_without_key = post(client, path, None, key="another-key")

    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert_problem(again_without_key, 409, "already-reversed")
    assert key_rows(database) == [(KEY, 201)]


# --- expiry -------------------------------------------------------------------------------


def test_a_key_older_than_24_hours_is_treated_as_new(client, database, stock):
    first = post(client, "receipts", receipt_body(stock))
    assert first.status_code == 201, first.text
    set_key(database, expires_at=utcnow() - timedelta(seconds=1))

    retry = post(client, "receipts", receipt_body(stock))

    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["id"] != first.json()["id"]
    assert document_count(database) == 2
    # The fresh claim replays from now on, for another 24 hours.
    with Session(database.engine) as session:
        record = session.scalar(select(IdempotencyRecord))
        assert record.response_status == 201
        assert record.expires_at - utcnow() > timedelta(hours=23)
    replay = post(client, "receipts", receipt_body(stock))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == retry.json()


def test_an_expired_key_may_carry_a_different_body(client, database, stock):
    assert post(client, "receipts", receipt_body(stock, 10)).status_code == 201
    set_key(database, expires_at=utcnow() - timedelta(seconds=1))

    response = post(client, "receipts", receipt_body(stock, 11))

    assert response.status_code == 201, response.text
    assert document_count(database) == 2


def test_expired_keys_are_purged_as_new_ones_arrive(client, database, stock):
    """Every PURGE_EVERY-th stored response (by id; ids restart with each test) purges."""
    assert post(client, "receipts", receipt_body(stock), key="old").status_code == 201
    assert post(client, "receipts", receipt_body(stock), key="recent").status_code == 201
    set_key(database, key="old", expires_at=utcnow() - timedelta(seconds=1))

    fresh = [f"new-{n}" for n in range(3, idempotency.PURGE_EVERY + 1)]
    for key in fresh[:-1]:
        assert post(client, "receipts", receipt_body(stock), key=key).status_code == 201
    assert [k for k, _ in key_rows(database)][:2] == ["old", "recent"]  # not yet
    assert post(client, "receipts", receipt_body(stock), key=fresh[-1]).status_code == 201

    assert key_rows(database) == [("recent", 201)] + [(key, 201) for key in fresh]
