"""Pooled connections are not pinged before use: one the server dropped is replaced, and the
request runs again on a new connection (service.db.Database.run), reads and writes alike.

PostgreSQL only (SQLite has no server to drop a connection): every backend of the app's pool
is terminated with ``pg_terminate_backend`` between requests, as a server restart or a
failover would; the next requests still answer 200/201, the write exactly once. A failure at
COMMIT (outcome unknown) and a server that does not answer are not retried.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from service.db import Database
from service.models import StockDocument
from tests.helpers import create_location, create_product


@pytest.fixture()
def pg_client(backend, client):
    if backend != "postgresql":
        pytest.skip("SQLite has no server that could drop a connection")
    return client


def _drop_pool_connections(database_url: str) -> int:
    """Terminate every other backend on the database: the app's pooled connections die."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        engine.dispose()


def _documents(database: Database) -> int:
    with database.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(StockDocument))


def test_reads_and_writes_survive_the_server_dropping_pooled_connections(
    pg_client, database, database_url
):
    location = create_location(pg_client, "WH1-A01")
    product = create_product(pg_client, sku="DROP-1")
    assert pg_client.get("/api/v1/products").status_code == 200

    assert _drop_pool_connections(database_url) >= 1
    response = pg_client.get("/api/v1/products")
    assert response.status_code == 200, response.text
    assert [item["sku"] for item in response.json()["items"]] == ["DROP-1"]

    before = _documents(database)
    assert _drop_pool_connections(database_url) >= 1
    receipt = pg_client.post(
        "/api/v1/stock/receipts",
        json={
            "location_id": location["id"],
            "lines": [{"product_id": product["id"], "quantity": 3, "unit_cost": "2"}],
        },
    )
    assert receipt.status_code == 201, receipt.text
    assert _documents(database) == before + 1  # once, not twice
    stock = pg_client.get(f"/api/v1/products/{product['id']}/stock").json()
    assert stock["total_on_hand"] == 3


def _dropped(statement: str = "SELECT 1") -> OperationalError:
    error = OperationalError(statement, {}, Exception("server closed the connection unexpectedly"))
    error.connection_invalidated = True
    return error


def test_run_retries_a_dropped_connection_once(backend, database):
    calls = []

    def work():
        calls.append(1)
        if len(calls) == 1:
            raise _dropped()
        return "done"

    assert database.run(work, write=False) == "done"
    assert len(calls) == 2

    def always_dropped():
        calls.append(1)
        raise _dropped()

    calls.clear()
    with pytest.raises(OperationalError):
        database.run(always_dropped, write=False)
    assert len(calls) == 2  # one retry, never more


def test_run_does_not_retry_a_failed_commit_or_an_unanswered_statement(
    backend, database, monkeypatch
):
    from sqlalchemy.orm import Session

    calls = []
    original_commit = Session.commit

    def commit_fails(self):
        raise _dropped("COMMIT")

    monkeypatch.setattr(Session, "commit", commit_fails)
    with pytest.raises(OperationalError):
        database.run(lambda: calls.append(1), write=True)
    assert len(calls) == 1, "a commit whose outcome is unknown must not run again"
    monkeypatch.setattr(Session, "commit", original_commit)

    frozen = OperationalError("SELECT 1", {}, Exception("the database server did not answer"))
    frozen.connection_invalidated = True

    def unanswered():
        calls.append(1)
        raise frozen

    calls.clear()
    with pytest.raises(OperationalError):
        database.run(unanswered, write=False)
    assert len(calls) == 1, "a server that does not answer is not waited for twice"
