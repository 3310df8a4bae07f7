"""Reports and the product export read from a real streaming replica; the rest stays primary.

The test builds the replica itself: a private primary cluster (``tests/pg_cluster.py``,
``wal_level=replica``), ``pg_basebackup -R`` into a second data directory, a second
``pg_ctl`` on another port. To show which server answered, it pauses the replica's replay
(``pg_wal_replay_pause()``): the reports and the export then miss what was written since,
while stock levels, lists and token lookups (the primary) see it; ``X-Data-Source`` says
the same. Then: the lag guard passes a replica that is too far behind over, a stopped
replica falls back to the primary and is left alone for its rest period, and the production
server (gunicorn) reads its reports from the replica too. Skipped locally without the
PostgreSQL server binaries, a failure with CI=true.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, text

from service import migrate
from service.api.transaction import EXTENSION_KEY
from service.app import create_app
from service.config import Settings
from service.db import Database
from tests.conftest import bearer_for
from tests.live_server import live_server
from tests.pg_cluster import PgCluster, postgres_bin_or_skip

VALUATION = "/api/v1/reports/valuation"
MOVEMENTS = "/api/v1/reports/movements"
EXPORT = "/api/v1/products/export"
SOURCE = "x-data-source"


@dataclass
class Pair:
    primary: PgCluster
    replica: PgCluster

    @property
    def primary_url(self) -> str:
        return self.primary.url("storekeeper")

    @property
    def replica_url(self) -> str:
        return self.replica.url("storekeeper")

    def sql(self, url: str, statement: str, **params):
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                return connection.execute(text(statement), params).scalar()
        finally:
            engine.dispose()

    def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the replica has replayed everything the primary wrote so far."""
        lsn = self.sql(self.primary_url, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        while not self.sql(
            self.replica_url,
            "SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)",
            lsn=lsn,
        ):
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.1)

    def pause(self) -> None:
        self.caught_up()
        self.sql(self.replica_url, "SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.sql(self.replica_url, "SELECT pg_wal_replay_resume()")
        self.caught_up()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    bin_dir = postgres_bin_or_skip()
    primary = PgCluster(bin_dir)
    replica: PgCluster | None = None
    try:
        primary.init()
        primary.start()
        admin = create_engine(primary.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text('CREATE DATABASE "storekeeper"'))
        admin.dispose()
        migrate.upgrade(primary.url("storekeeper"))
        replica = primary.replica()
        replica.start()
        found = Pair(primary, replica)
        assert found.sql(found.replica_url, "SELECT pg_is_in_recovery()") is True
        found.caught_up()
        yield found
    finally:
        if replica is not None:
            replica.destroy()
        primary.destroy()


@contextlib.contextmanager
def replica_client(pair: Pair, **settings) -> Iterator[tuple[object, Database]]:
    """An admin's test client of an app reading reports from ``pair``'s replica."""
    app = create_app(
        Settings(
            database_url=pair.primary_url,
            database_replica_url=pair.replica_url,
            validate_responses=True,
            database_connect_timeout_s=2,
            **settings,
        )
    )
    database = app.app.extensions[EXTENSION_KEY]
    try:
        with app.test_client(headers=bearer_for(database, "admin")) as client:
            yield client, database
    finally:
        database.dispose()


def _created(response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def _stock(client) -> tuple[int, int]:
    """A new location and product with 10 received, through the API (the primary)."""
    tag = uuid.uuid4().hex[:8]
    location = _created(client.post("/api/v1/locations", json={"code": f"L-{tag}", "name": "L"}))
    product = _created(client.post("/api/v1/products", json={"sku": f"P-{tag}", "name": "P"}))
    _receive(client, location["id"], product["id"], 10)
    return location["id"], product["id"]


def _receive(client, location_id: int, product_id: int, quantity: int) -> None:
    line = {"product_id": product_id, "quantity": quantity, "unit_cost": "1.0000"}
    body = {"location_id": location_id, "reference": "r", "lines": [line]}
    _created(client.post("/api/v1/stock/receipts", json=body))


def _valued(client, location_id: int) -> tuple[int, str]:
    """The valuation report's quantity at the location, and where it was read."""
    response = client.get(VALUATION, params={"group_by": "location"})
    assert response.status_code == 200, response.text
    rows = [r for r in response.json()["rows"] if r["key"] == str(location_id)]
    return (rows[0]["quantity"] if rows else 0), response.headers[SOURCE]


def _moved(client, location_id: int) -> tuple[int, str]:
    response = client.get(MOVEMENTS, params={"location_id": location_id, "group_by": "kind"})
    assert response.status_code == 200, response.text
    return response.json()["totals"]["net"], response.headers[SOURCE]


def _on_hand(client, location_id: int) -> int:
    response = client.get("/api/v1/stock/levels", params={"location_id": location_id})
    assert response.status_code == 200, response.text
    assert SOURCE not in response.headers
    return sum(level["on_hand"] for level in response.json()["items"])


def _exported_skus(client) -> tuple[set[str], str]:
    response = client.get(EXPORT)
    assert response.status_code == 200, response.text
    return {row["sku"] for row in response.json()}, response.headers[SOURCE]


# --- in-process: the app's test client on the pair ------------------------------------------


def test_reports_and_export_read_the_replica_while_the_rest_reads_the_primary(pair):
    with replica_client(pair, database_replica_max_lag_s=3600) as (client, database):
        location_id, product_id = _stock(client)
        pair.caught_up()
        assert _valued(client, location_id) == (10, "replica")
        assert _moved(client, location_id) == (10, "replica")

        pair.pause()
        try:
            # Written on the primary while the replica replays nothing.
            _receive(client, location_id, product_id, 5)
            late = _created(client.post("/api/v1/products", json={"sku": "LATE-1", "name": "Late"}))
            # Reads that must see their writes: the primary.
            assert _on_hand(client, location_id) == 15
            assert client.get(f"/api/v1/products/{late['id']}").status_code == 200
            # A token issued now is looked up on the primary, so it works at once.
            fresh = bearer_for(database, "manager")
            # The reports and the export: the replica, which has not replayed them.
            assert _valued(client, location_id) == (10, "replica")
            response = client.get(VALUATION, headers=fresh)
            assert response.status_code == 200
            assert response.headers[SOURCE] == "replica"
            assert _moved(client, location_id) == (10, "replica")
            skus, source = _exported_skus(client)
            assert source == "replica"
            assert "LATE-1" not in skus
            # CSV answers say where they came from too.
            csv = client.get(VALUATION, headers={"Accept": "text/csv"})
            assert csv.headers[SOURCE] == "replica"
            # The app really holds connections on the replica.
            assert pair.sql(
                pair.replica_url,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'storekeeper'"
                " AND pid <> pg_backend_pid()",
            )
        finally:
            pair.resume()
        assert _valued(client, location_id) == (15, "replica")
        skus, source = _exported_skus(client)
        assert ("LATE-1" in skus, source) == (True, "replica")


def test_a_replica_further_behind_than_the_limit_is_passed_over(pair):
    with replica_client(pair, database_replica_max_lag_s=1) as (client, _database):
        location_id, product_id = _stock(client)
        pair.caught_up()
        # Caught up (received = replayed): no lag, however idle the primary was.
        time.sleep(1.5)
        assert _valued(client, location_id) == (10, "replica")
        pair.pause()
        try:
            _receive(client, location_id, product_id, 5)
            time.sleep(1.5)
            assert _valued(client, location_id) == (15, "primary")
            assert _moved(client, location_id) == (15, "primary")
            assert _exported_skus(client)[1] == "primary"
        finally:
            pair.resume()
        assert _valued(client, location_id) == (15, "replica")


def test_a_stopped_replica_falls_back_to_the_primary_and_rests(pair):
    rest_s = 3.0
    with replica_client(pair, database_replica_rest_s=rest_s) as (client, database):
        assert database.replica is not None
        # Every visit to the replica starts with its lag probe (a connection): count them.
        attempts: list[float] = []
        probe = database.replica.lag_s

        def counted_probe() -> float:
            attempts.append(time.monotonic())
            return probe()

        database.replica.lag_s = counted_probe
        location_id, _product_id = _stock(client)
        pair.caught_up()
        assert _valued(client, location_id) == (10, "replica")
        pair.replica.stop()
        try:
            began = time.monotonic()
            assert _valued(client, location_id) == (10, "primary")
            assert time.monotonic() - began < 2, "a stopped replica refuses at once"
            failed_at = time.monotonic()
            tried = len(attempts)
            # Resting: no connection attempt, every answer from the primary.
            for _ in range(3):
                assert _valued(client, location_id) == (10, "primary")
                assert _moved(client, location_id) == (10, "primary")
                assert _exported_skus(client)[1] == "primary"
            assert time.monotonic() - failed_at < rest_s
            assert len(attempts) == tried
        finally:
            pair.replica.start()
        pair.caught_up()
        time.sleep(max(0.0, rest_s - (time.monotonic() - failed_at)) + 0.2)
        assert _valued(client, location_id) == (10, "replica")
        assert len(attempts) > tried  # rested over: a new connection to the replica


def test_an_unreachable_replica_url_falls_back_at_once(pair):
    settings = Settings(
        database_url=pair.primary_url,
        database_replica_url="postgresql+psycopg://nobody@127.0.0.1:1/nothing",
        validate_responses=True,
    )
    app = create_app(settings)
    database = app.app.extensions[EXTENSION_KEY]
    try:
        with app.test_client(headers=bearer_for(database, "admin")) as client:
            location_id, _ = _stock(client)
            assert _valued(client, location_id) == (10, "primary")
            assert _exported_skus(client)[1] == "primary"
    finally:
        database.dispose()


# --- live: the production server with DATABASE_REPLICA_URL -----------------------------------


def test_the_production_server_reads_reports_from_the_replica(pair, tmp_path):
    env = {
        "DATABASE_REPLICA_URL": pair.replica_url,
        "DATABASE_REPLICA_MAX_LAG": "3600",
        "STOREKEEPER_VALIDATE_RESPONSES": "true",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    log_path = tmp_path / "server.log"
    with (
        live_server(pair.primary_url, workers=1, env=env, log_path=log_path) as live,
        httpx.Client(base_url=live.base_url, headers=live.headers, timeout=30) as api,
    ):
        location_id, product_id = _stock(api)
        pair.caught_up()
        assert _valued(api, location_id) == (10, "replica")
        pair.pause()
        try:
            _receive(api, location_id, product_id, 5)
            assert _on_hand(api, location_id) == 15
            assert _valued(api, location_id) == (10, "replica")
            assert _exported_skus(api)[1] == "replica"
        finally:
            pair.resume()
        assert _valued(api, location_id) == (15, "replica")


# --- configuration ----------------------------------------------------------------------------


def test_a_replica_with_an_sqlite_primary_is_a_startup_error(tmp_path):
    with pytest.raises(ValueError, match="DATABASE_REPLICA_URL"):
        Database(
            f"sqlite:///{tmp_path}/db.sqlite",
            replica_url="postgresql+psycopg://postgres@127.0.0.1:1/x",
        )


def test_settings_read_the_replica_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_REPLICA_URL", "postgresql+psycopg://r@replica/db")
    monkeypatch.setenv("DATABASE_REPLICA_MAX_LAG", "2.5")
    monkeypatch.setenv("DATABASE_REPLICA_REST", "10")
    settings = Settings.from_env()
    assert settings.database_replica_url == "postgresql+psycopg://r@replica/db"
    assert settings.database_replica_max_lag_s == 2.5
    assert settings.database_replica_rest_s == 10
    monkeypatch.setenv("DATABASE_REPLICA_MAX_LAG", "0")
    with pytest.raises(ValueError, match="DATABASE_REPLICA_MAX_LAG"):
        Settings.from_env()
    monkeypatch.delenv("DATABASE_REPLICA_URL")
    monkeypatch.delenv("DATABASE_REPLICA_MAX_LAG")
    assert Settings.from_env().database_replica_url is None
