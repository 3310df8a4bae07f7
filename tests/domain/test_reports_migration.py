"""Migration 0004: average_cost_after is backfilled exactly as the ledger writes it.

The ledger posts a history (receipts at several costs, lines of one product in one receipt,
a transfer, shipments, an adjustment before any receipt, a receipt reversal); then the
database goes back to 0003 (the column is dropped) and up again (the column is replayed
from the movements). Every movement must get back the value the ledger wrote, and the
append-only guard must be in force at every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError

from service import migrate
from service.db import Database
from service.domain import ledger
from service.models import Location, Product, StockMovement


@pytest.fixture()
def database(empty_database_url) -> Iterator[Database]:
    migrate.upgrade(empty_database_url)
    database = Database(empty_database_url)
    yield database
    database.dispose()


def change(kind: str, product: int, location: int, quantity: int, cost: str | None = None):
    return ledger.Change(
        line_no=0,
        kind=kind,
        product_id=product,
        location_id=location,
        quantity=quantity,
        unit_cost=Decimal(cost) if cost is not None else None,
    )


def post(database: Database, kind: str, *changes: ledger.Change) -> list[int]:
    for index, line in enumerate(changes):
        line.line_no = index
    with database.transaction() as session:
        document = ledger.post(session, ledger.Posting(kind, list(changes)))
        return [movement.id for movement in document.movements]


def reverse(database: Database, movement_id: int) -> None:
    with database.transaction() as session:
        ledger.post(session, ledger.reversal_posting(session, movement_id, None, None))


def _ledger_history(database: Database) -> None:
    with database.transaction() as session:
        a, b = Location(code="A", name="A"), Location(code="B", name="B")
        bolt, nut, washer = (Product(sku=s, name=s) for s in ("BOLT", "NUT", "WASHER"))
        session.add_all([a, b, bolt, nut, washer])
        session.flush()
        a, b, bolt, nut, washer = a.id, b.id, bolt.id, nut.id, washer.id

    post(database, "adjustment", change("adjustment", bolt, a, 5))  # before any cost: 0
    post(database, "receipt", change("receipt", bolt, a, 10, "3.3333"))
    second = post(
        database,
        "receipt",
        change("receipt", bolt, b, 7, "1.0001"),
        change("receipt", bolt, a, 2, "999999999999.9999"),
        change("receipt", nut, a, 1_000_000_000, "0.0001"),
    )
    post(
        database, "transfer", change("transfer_out", bolt, a, -4), change("transfer_in", bolt, b, 4)
    )
    post(database, "shipment", change("shipment", bolt, b, -11))
    reverse(database, second[1])  # the expensive bolts go back
    post(database, "receipt", change("receipt", washer, b, 3, "0.5"))
    post(database, "shipment", change("shipment", washer, b, -3))  # nothing left: keeps 0.5
    post(database, "receipt", change("receipt", washer, b, 1, "2"))


def _recorded(database: Database) -> dict[int, Decimal]:
    with database.transaction(write=False) as session:
        return dict(
            session.execute(select(StockMovement.id, StockMovement.average_cost_after)).all()
        )


def _assert_append_only(database: Database) -> None:
    for statement in ("UPDATE stock_movements SET note = 'edited'", "DELETE FROM stock_movements"):
        with pytest.raises(DBAPIError), database.engine.begin() as connection:
            connection.execute(text(statement))


def test_backfill_matches_what_the_ledger_writes(database, empty_database_url):
    _ledger_history(database)
    written = _recorded(database)
    assert len(written) == 12
    assert set(written.values()) >= {Decimal("0.000000"), Decimal("0.500000"), Decimal("2.000000")}
    _assert_append_only(database)

    migrate.downgrade(empty_database_url, "0003")
    columns = {c["name"] for c in inspect(database.engine).get_columns("stock_movements")}
    assert "average_cost_after" not in columns
    _assert_append_only(database)

    migrate.upgrade(empty_database_url)
    assert _recorded(database) == written
    column = next(
        c
        for c in inspect(database.engine).get_columns("stock_movements")
        if c["name"] == "average_cost_after"
    )
    assert column["nullable"] is False
    _assert_append_only(database)

    # And the ledger keeps posting on the migrated database.
    with database.transaction(write=False) as session:
        location, product = (
            session.scalars(select(Location.id)).first(),
            session.scalar(select(Product.id).where(Product.sku == "NUT")),
        )
    post(database, "receipt", change("receipt", product, location, 1_000_000_000, "0.0003"))
    assert max(_recorded(database).items())[1] == Decimal("0.000200")


def _enabled_guards(database: Database) -> set[str]:
    """The append-only triggers in force (an empty table cannot show them by refusing)."""
    with database.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            query = (
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'stock_movements'::regclass "
                "AND NOT tgisinternal AND tgenabled <> 'D'"
            )
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        return set(connection.scalars(text(query)))


def test_backfill_on_an_empty_ledger(empty_database_url):
    migrate.upgrade(empty_database_url, "0003")
    database = Database(empty_database_url)
    try:
        guards = _enabled_guards(database)
        assert guards
        migrate.upgrade(empty_database_url)
        assert _recorded(database) == {}
        assert _enabled_guards(database) == guards
        migrate.downgrade(empty_database_url, "0003")
        assert _enabled_guards(database) == guards
    finally:
        database.dispose()
