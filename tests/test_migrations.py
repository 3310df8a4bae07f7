"""alembic owns the schema: it builds, tears down and rebuilds, and matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service import migrate
from service.db import make_engine
from service.migrate import include_object_for
from service.models import Base


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
