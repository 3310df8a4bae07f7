"""alembic owns the schema: it builds, tears down and rebuilds, and matches the models."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from service import migrate
from service.db import make_engine
from service.migrate import include_object_for
from service.models import Base, Location, Product, StockDocument, StockMovement


def _drift(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": include_object_for(connection.dialect.name),
                },
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url):
    expected = {table.name for table in Base.metadata.sorted_tables}

    migrate.upgrade(empty_database_url)
    assert _tables(empty_database_url) == expected

    migrate.downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) == set()

    migrate.upgrade(empty_database_url)
    assert _tables(empty_database_url) == expected


def test_models_and_migrations_do_not_drift(empty_database_url):
    migrate.upgrade(empty_database_url)
    assert _drift(empty_database_url) == []


def test_drift_guard_notices_a_missing_migration(empty_database_url):
    """The guard itself can fail: a database one revision short shows differences."""
    migrate.upgrade(empty_database_url)
    migrate.downgrade(empty_database_url, "base")
    assert _drift(empty_database_url) != []


# --- 0007: 64-bit ledger ids ------------------------------------------------------------------

LEDGER_ID_COLUMNS = [
    ("stock_documents", "id"),
    ("stock_movements", "id"),
    ("stock_movements", "document_id"),
    ("stock_movements", "reversal_of"),
]
INT32_MAX = 2**31 - 1


def _ledger_id_types(url: str) -> dict[str, str]:
    """Each ledger id column's type, and on PostgreSQL each id sequence's type and maximum."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            found = {}
            for table, column in LEDGER_ID_COLUMNS:
                types = {c["name"]: c["type"] for c in inspector.get_columns(table)}
                found[f"{table}.{column}"] = str(types[column].compile(connection.dialect))
            if connection.dialect.name == "postgresql":
                for table in ("stock_documents", "stock_movements"):
                    found[f"{table} sequence"] = "{} {}".format(
                        *connection.execute(
                            text(
                                "SELECT data_type, max_value FROM pg_sequences "
                                "WHERE sequencename = :name"
                            ),
                            {"name": f"{table}_id_seq"},
                        ).one()
                    )
            return found
    finally:
        engine.dispose()


def _revision(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()


def test_0007_widens_ledger_ids_and_narrows_them_back(empty_database_url, backend):
    migrate.upgrade(empty_database_url, "0006")
    narrow = _ledger_id_types(empty_database_url)
    migrate.upgrade(empty_database_url, "0007")
    wide = _ledger_id_types(empty_database_url)
    migrate.downgrade(empty_database_url, "0006")
    assert _ledger_id_types(empty_database_url) == narrow

    if backend == "postgresql":
        assert set(narrow.values()) == {"INTEGER", f"integer {INT32_MAX}"}
        assert set(wide.values()) == {"BIGINT", f"bigint {2**63 - 1}"}
    else:  # SQLite's INTEGER is 64-bit already: nothing to change
        assert wide == narrow
        assert set(wide.values()) == {"INTEGER"}


def _insert_big_document(engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            StockDocument.__table__.insert().values(id=INT32_MAX + 1, kind="receipt")
        )


def _insert_big_movement(engine) -> None:
    """A document under 2^31 whose movement's own id is beyond it."""
    with engine.begin() as connection:
        location = connection.execute(
            Location.__table__.insert().values(code="W", code_key="w", name="W")
        ).inserted_primary_key[0]
        product = connection.execute(
            Product.__table__.insert().values(sku="S", sku_key="s", name="S")
        ).inserted_primary_key[0]
        document = connection.execute(
            StockDocument.__table__.insert().values(kind="receipt", location_id=location)
        ).inserted_primary_key[0]
        connection.execute(
            StockMovement.__table__.insert().values(
                id=INT32_MAX + 5,
                document_id=document,
                line_no=0,
                kind="receipt",
                product_id=product,
                location_id=location,
                quantity=1,
                balance_after=1,
                average_cost_after=Decimal("1"),
            )
        )


def _advance_document_sequence(engine) -> None:
    """No row beyond 2^31-1, but the next document would get such an id."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('stock_documents', 'id'), :v)"),
                {"v": INT32_MAX + 1},
            )
        else:
            connection.execute(text("DELETE FROM sqlite_sequence WHERE name = 'stock_documents'"))
            connection.execute(
                text("INSERT INTO sqlite_sequence (name, seq) VALUES ('stock_documents', :v)"),
                {"v": INT32_MAX + 1},
            )


@pytest.mark.parametrize(
    ("make_wide", "named"),
    [
        (_insert_big_document, f"stock_documents.id = {INT32_MAX + 1}"),
        (_insert_big_movement, f"stock_movements.id = {INT32_MAX + 5}"),
        (_advance_document_sequence, f"the stock_documents id sequence at {INT32_MAX + 1}"),
    ],
    ids=["document-id", "movement-id", "sequence"],
)
def test_0007_downgrade_refuses_while_an_id_is_beyond_int32(empty_database_url, make_wide, named):
    migrate.upgrade(empty_database_url, "0007")
    wide = _ledger_id_types(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        make_wide(engine)
    finally:
        engine.dispose()

    with pytest.raises(RuntimeError, match="Refusing to downgrade below 0007") as refused:
        migrate.downgrade(empty_database_url, "0006")

    assert named in str(refused.value)
    assert _revision(empty_database_url) == "0007"
    assert _ledger_id_types(empty_database_url) == wide
