"""An unreachable or frozen database: 503 problems within bounded time, then recovery.

In-process (fast): an app whose database is a closed port answers 503 ``service-unavailable``
with ``Retry-After`` on an authenticated operation (the token lookup), on login and on
``/health/ready``; a statement over the statement timeout is a 503 too; a genuine programming
error stays a 500 with its request id; and no driver text reaches the client.

Live (the real thing): the test starts a PostgreSQL cluster of its own (``initdb``/``pg_ctl``
from /usr/lib/postgresql/*/bin, run as the ``postgres`` OS user when the tests run as root) on
a free port, and the production server (``scripts/serve-production.sh``: gunicorn with two
uvicorn workers) on it with small time bounds. Client threads post receipts and shipments and
read lists while the database is

1. stopped (``pg_ctl stop -m immediate``), then started again;
2. frozen (SIGSTOP to the postmaster and every backend), then thawed (SIGCONT).

Every answer while it is down must be a 503 problem with ``Retry-After`` within the bound the
settings promise, none a 500 or a transport failure; after it is back, every client succeeds
again without restarting the app; ``storekeeper stock verify`` exits 0 and every document has
its movements. The figures (requests, 503s, max latency, recovery time) are printed and
written to ``artifacts/database-outage.json``. Locally the live tests are skipped when the
PostgreSQL binaries are missing; with CI=true they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service import db_faults
from service.app import create_app
from service.config import Settings
from service.db_faults import DatabaseTimeouts, libpq_params
from tests.helpers import assert_problem
from tests.live_server import LiveServer, live_server, venv_bin
from tests.pg_cluster import PgCluster, postgres_bin_or_skip

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "artifacts" / "database-outage.json"
PRODUCTS = "/api/v1/products"
LEAKS = ("psycopg", "SELECT", "Traceback", "sqlalchemy", "OperationalError", "127.0.0.1")

# The live server's time bounds (seconds): small, so that the test is quick.
CONNECT_S = 2
STATEMENT_S = 2.0
POOL_S = 2
SERVER_ENV = {
    "DATABASE_CONNECT_TIMEOUT": str(CONNECT_S),
    "DATABASE_STATEMENT_TIMEOUT_MS": str(int(STATEMENT_S * 1000)),
    "DATABASE_POOL_TIMEOUT": str(POOL_S),
    "STOREKEEPER_VALIDATE_RESPONSES": "true",
    "RATE_LIMIT_ENABLED": "false",
    "LOG_LEVEL": "WARNING",
}
# The promise of service/db_faults.py: a request arriving during the outage waits at most
# pool + 2 x connect; one whose statement was running when the server froze, pool +
# statement + connect. Plus slack for HTTP and scheduling on a busy CI machine.
OUTAGE_BOUND_S = POOL_S + max(2 * CONNECT_S, STATEMENT_S + CONNECT_S) + 1.5
CLIENTS = 6
PACE_S = 0.05  # between one client's requests: a stopped server refuses in microseconds
WARMUP_S = 1.5
OUTAGE_S = 10.0  # longer than twice the bound: every client has requests inside it
RECOVERY_LIMIT_S = 15.0
SETTLE_S = 1.5
# Figures of every scenario of this run, written to ARTIFACT after each.
FIGURES: dict[str, Any] = {}


# --- in-process: a closed port, a statement timeout, a programming error ---------------------


CLOSED_PORT_URL = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"


@pytest.fixture(scope="module")
def unreachable_app():
    app = create_app(Settings(database_url=CLOSED_PORT_URL, validate_responses=True))
    yield app
    app.app.extensions["storekeeper.database"].dispose()


def _assert_unavailable(response, retry_after: str = "5") -> dict:
    problem = assert_problem(response, 503, "service-unavailable")
    assert problem["type"] == "https://storekeeper.dev/problems/service-unavailable"
    assert response.headers["retry-after"] == retry_after
    for leak in (*LEAKS, "port 1", "refused"):
        assert leak not in response.text
    return problem


def test_unreachable_database_is_503_on_an_authenticated_operation(unreachable_app):
    # A well-formed access token, so that the lookup really goes to the database.
    headers = {"Authorization": "Bearer sk_at_" + "x" * 40, "X-Request-ID": "outage-1"}
    with unreachable_app.test_client() as client:
        began = time.monotonic()
        response = client.get(PRODUCTS, headers=headers)
        elapsed = time.monotonic() - began
        problem = _assert_unavailable(response)
        assert problem["request_id"] == "outage-1"
        assert elapsed < 5, "a refused connection must not wait"
        # A write and an API key take the same path.
        api_key = {"Authorization": "Bearer sk_live_" + "y" * 40}
        _assert_unavailable(client.post("/api/v1/locations", json={"code": "A"}, headers=api_key))


def test_unreachable_database_is_503_on_login(unreachable_app):
    with unreachable_app.test_client() as client:
        response = client.post(
            "/api/v1/auth/login", json={"email": "someone@example.com", "password": "secret"}
        )
        _assert_unavailable(response)
        # The OAuth2 token endpoint too: a 503 problem, not an RFC 6749 error.
        form = {"grant_type": "password", "username": "someone@example.com", "password": "x"}
        _assert_unavailable(client.post("/api/v1/auth/token", data=form))


def test_unreachable_database_is_503_on_readiness(unreachable_app):
    with unreachable_app.test_client() as client:
        _assert_unavailable(client.get("/health/ready"))
        assert client.get("/health").status_code == 200


def test_unopenable_sqlite_file_is_503_on_an_authenticated_operation(tmp_path):
    url = f"sqlite:///{tmp_path}/missing/dir/db.sqlite"
    app = create_app(Settings(database_url=url, validate_responses=True))
    with app.test_client() as client:
        response = client.get(PRODUCTS, headers={"Authorization": "Bearer sk_at_" + "x" * 40})
        _assert_unavailable(response)
        assert "missing" not in response.text


@contextlib.contextmanager
def _listing_runs(engine, statement: str) -> Iterator[None]:
    """The product list's query becomes ``statement``: a real error from the real driver."""

    def rewrite(_conn, _cursor, sql, parameters, _context, _executemany):
        if "FROM products" in sql and not sql.lstrip().upper().startswith("SELECT COUNT"):
            return statement, type(parameters)()
        return sql, parameters

    event.listen(engine, "before_cursor_execute", rewrite, retval=True)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", rewrite)


def test_a_programming_error_in_sql_stays_a_500_with_request_id(client, database):
    with _listing_runs(database.engine, "SELECT * FROM no_such_table"):
        response = client.get(PRODUCTS, headers={"X-Request-ID": "bug-1"})
    problem = assert_problem(response, 500, "internal-error")
    assert problem["request_id"] == "bug-1"
    assert "retry-after" not in response.headers
    assert "no_such_table" not in response.text


def test_a_statement_over_the_statement_timeout_is_503(backend, database_url, auth_headers):
    if backend != "postgresql":
        pytest.skip("statement_timeout is PostgreSQL's")
    settings = Settings(database_url=database_url, database_statement_timeout_ms=300)
    app = create_app(settings)
    engine = app.app.extensions["storekeeper.database"].engine
    try:
        with (
            _listing_runs(engine, "SELECT pg_sleep(5)"),
            app.test_client(headers=auth_headers("viewer")) as client,
        ):
            began = time.monotonic()
            response = client.get(PRODUCTS)
            elapsed = time.monotonic() - began
        problem = _assert_unavailable(response)
        assert "in time" in problem["detail"]
        assert elapsed < 3, f"the statement ran {elapsed:.1f} s past its 0.3 s timeout"
        assert "pg_sleep" not in response.text
    finally:
        engine.dispose()


# --- in-process: the pieces -----------------------------------------------------------------


class _DriverError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OperationalError("SELECT 1", {}, _DriverError("connection refused")), "unreachable"),
        (OperationalError("x", {}, _DriverError("connection timeout expired")), "timeout"),
        (
            OperationalError(
                "x", {}, _DriverError("did not answer within 4 s"), connection_invalidated=True
            ),
            "timeout",
        ),
        (
            OperationalError("x", {}, _DriverError("server closed"), connection_invalidated=True),
            "unreachable",
        ),
        (OperationalError("x", {}, _DriverError("terminating", "57P01")), "unreachable"),
        (OperationalError("x", {}, _DriverError("too many clients", "53300")), "unreachable"),
        (OperationalError("x", {}, _DriverError("statement timeout", "57014")), "timeout"),
        (OperationalError("x", {}, _DriverError("due to lock timeout", "55P03")), "busy"),
        (OperationalError("x", {}, _DriverError("deadlock detected", "40P01")), None),
        (ProgrammingError("x", {}, _DriverError("no such table", "42P01")), None),
        (IntegrityError("x", {}, _DriverError("duplicate key", "23505")), None),
        (PoolTimeoutError("QueuePool limit reached"), "timeout"),
        (ValueError("not a database error"), None),
    ],
)
def test_classify(error, reason):
    outage = db_faults.classify(error)
    assert (outage.reason if outage else None) == reason


def test_classify_sqlite_words():
    import sqlite3

    unopenable = OperationalError("x", {}, sqlite3.OperationalError("unable to open database file"))
    assert db_faults.classify(unopenable).reason == "unreachable"
    missing = OperationalError("x", {}, sqlite3.OperationalError("no such table: nothing"))
    assert db_faults.classify(missing) is None
    locked = OperationalError("x", {}, sqlite3.OperationalError("database is locked"))
    assert db_faults.classify(locked).retry_after == 1


def test_libpq_params_leave_what_the_url_sets_alone():
    timeouts = DatabaseTimeouts(connect_s=3, statement_ms=1500, pool_s=2)
    url = make_url("postgresql+psycopg://u@h/d?connect_timeout=9&options=-c%20work_mem%3D8MB")
    params = libpq_params(url, timeouts)
    assert "connect_timeout" not in params  # the URL's own 9 s stays
    assert params["options"] == "-c statement_timeout=1500 -c work_mem=8MB"
    assert params["tcp_user_timeout"] == "6000"
    assert params["keepalives"] == "1"
    plain = libpq_params(make_url("postgresql+psycopg://u@h/d"), timeouts)
    assert plain["connect_timeout"] == "3"
    off = libpq_params(make_url("postgresql+psycopg://u@h/d"), DatabaseTimeouts(statement_ms=0))
    assert "options" not in off
    assert libpq_params(make_url("sqlite:///x.db"), timeouts) == {}


def test_settings_read_the_time_bounds_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("DATABASE_STATEMENT_TIMEOUT_MS", "0")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "7")
    settings = Settings.from_env()
    assert settings.database_connect_timeout_s == 3
    assert settings.database_statement_timeout_ms == 0
    assert settings.database_pool_timeout_s == 7
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "0")
    with pytest.raises(ValueError, match="DATABASE_POOL_TIMEOUT"):
        Settings.from_env()


# --- live: a PostgreSQL cluster of our own ---------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    pg = PgCluster(postgres_bin_or_skip())
    try:
        pg.init()
        pg.start()
        admin = create_engine(pg.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text('CREATE DATABASE "storekeeper"'))
        admin.dispose()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="module")
def live(cluster, tmp_path_factory) -> Iterator[LiveServer]:
    log_path = tmp_path_factory.mktemp("outage") / "server.log"
    with live_server(cluster.url("storekeeper"), workers=2, env=SERVER_ENV, log_path=log_path) as s:
        yield s


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def catalog(live) -> dict[str, list[int]]:
    with httpx.Client(base_url=live.base_url, headers=live.headers, timeout=30) as api:
        tag = uuid.uuid4().hex[:6]
        locations = [
            _created(api.post("/api/v1/locations", json={"code": f"{tag}-L{i}", "name": "L"}))["id"]
            for i in range(2)
        ]
        products = [
            _created(api.post(PRODUCTS, json={"sku": f"{tag}-P{i}", "name": f"P{i}"}))["id"]
            for i in range(3)
        ]
        for location_id in locations:
            lines = [{"product_id": p, "quantity": 50, "unit_cost": "2.0000"} for p in products]
            body = {"location_id": location_id, "reference": "seed", "lines": lines}
            _created(api.post("/api/v1/stock/receipts", json=body))
    return {"products": products, "locations": locations}


# --- live: the load ---------------------------------------------------------------------------


@dataclass
class Answer:
    client: int
    operation: str
    began: float
    ended: float
    status: int | None  # None: no HTTP answer (connection error, client timeout)
    media_type: str
    retry_after: str | None
    payload: Any

    @property
    def seconds(self) -> float:
        return self.ended - self.began

    @property
    def problem_type(self) -> str | None:
        if isinstance(self.payload, dict) and isinstance(self.payload.get("type"), str):
            return self.payload["type"]
        return None

    @property
    def succeeded(self) -> bool:
        if self.status in (200, 201):
            return True
        # A shipment may find too little stock: an answer of a working service.
        return self.status == 409 and str(self.problem_type).endswith("/insufficient-stock")

    def describe(self) -> str:
        return (
            f"client {self.client} {self.operation} -> {self.status} in {self.seconds:.2f} s "
            f"({self.media_type}, Retry-After {self.retry_after}): {str(self.payload)[:300]}"
        )


class Load:
    """CLIENTS threads writing documents and reading lists until stopped."""

    OPERATIONS = ("receipt", "shipment", "levels", "products", "movements", "ready")
    WEIGHTS = (30, 30, 12, 12, 8, 8)

    def __init__(self, live: LiveServer, catalog: dict[str, list[int]], tag: str) -> None:
        self.live = live
        self.catalog = catalog
        self.tag = tag
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not finish"

    def _request(self, rng: random.Random, client: int, n: int) -> tuple[str, str, str, Any]:
        operation = rng.choices(self.OPERATIONS, weights=self.WEIGHTS)[0]
        location = rng.choice(self.catalog["locations"])
        product = rng.choice(self.catalog["products"])
        reference = f"{self.tag}-{client}-{n}"
        if operation == "receipt":
            line = {"product_id": product, "quantity": rng.randint(1, 3), "unit_cost": "1.5000"}
            body = {"location_id": location, "reference": reference, "lines": [line]}
            return operation, "POST", "/api/v1/stock/receipts", body
        if operation == "shipment":
            lines = [{"product_id": product, "quantity": rng.randint(1, 3)}]
            if rng.random() < 0.5:  # two lines: all or nothing
                other = rng.choice(self.catalog["products"])
                lines.append({"product_id": other, "quantity": 1})
            body = {"location_id": location, "reference": reference, "lines": lines}
            return operation, "POST", "/api/v1/stock/shipments", body
        path = {
            "levels": "/api/v1/stock/levels",
            "products": PRODUCTS,
            "movements": "/api/v1/stock/movements",
            "ready": "/health/ready",
        }[operation]
        return operation, "GET", path, None

    def _client(self, client: int) -> None:
        rng = random.Random(f"{self.tag}-{client}")
        with httpx.Client(
            base_url=self.live.base_url, headers=self.live.headers, timeout=30
        ) as api:
            n = 0
            while not self.done.is_set():
                operation, method, path, body = self._request(rng, client, n)
                began = time.monotonic()
                try:
                    response = api.request(method, path, json=body)
                except httpx.HTTPError as exc:
                    answer = Answer(
                        client, operation, began, time.monotonic(), None, "", None, repr(exc)
                    )
                else:
                    try:
                        payload = response.json()
                    except ValueError:
                        payload = response.text
                    answer = Answer(
                        client,
                        operation,
                        began,
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("content-type", ""),
                        response.headers.get("retry-after"),
                        payload,
                    )
                with self.lock:
                    self.answers.append(answer)
                n += 1
                self.done.wait(PACE_S)

    def snapshot(self) -> list[Answer]:
        with self.lock:
            return list(self.answers)

    def recovered_at(self, since: float) -> float | None:
        """When the last client had its first success begun after ``since``, if all have."""
        firsts: dict[int, float] = {}
        for answer in self.snapshot():
            if answer.began >= since and answer.succeeded:
                firsts[answer.client] = min(firsts.get(answer.client, answer.ended), answer.ended)
        return max(firsts.values()) if len(firsts) == CLIENTS else None


# --- live: one scenario -----------------------------------------------------------------------


def _verify_exit(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("VENV", None)
    return subprocess.run(
        [str(venv_bin() / "storekeeper"), "stock", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _write_figures() -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def _run_outage(
    name: str,
    live: LiveServer,
    cluster: PgCluster,
    catalog: dict[str, list[int]],
    break_database: Callable[[], None],
    repair_database: Callable[[], None],
) -> None:
    with httpx.Client(base_url=live.base_url, timeout=30) as probe:
        assert probe.get("/health/ready").status_code == 200, "the database is not up to begin"
    log_offset = len(live.log_text())
    tag = f"{name[:4]}{uuid.uuid4().hex[:6]}"
    repaired = True
    try:
        with Load(live, catalog, tag) as load:
            time.sleep(WARMUP_S)
            breaking = time.monotonic()
            repaired = False
            break_database()
            broken = time.monotonic()
            time.sleep(OUTAGE_S)
            repairing = time.monotonic()
            repair_database()
            repaired = True
            back = time.monotonic()
            recovered = None
            while recovered is None and time.monotonic() < back + RECOVERY_LIMIT_S:
                time.sleep(0.05)
                recovered = load.recovered_at(back)
            time.sleep(SETTLE_S)
    finally:
        if not repaired:
            repair_database()
    answers = load.snapshot()

    # The windows: entirely inside the outage; touching it; entirely before; after recovery.
    inside = [a for a in answers if a.began >= broken and a.ended <= repairing]
    touching = [a for a in answers if a.ended >= breaking and a.began <= back]
    before = [a for a in answers if a.ended < breaking]
    after = [a for a in answers if recovered is not None and a.began >= recovered]
    statuses = Counter(a.status for a in answers)
    unavailable = [a for a in answers if a.status == 503]
    outage_latencies = sorted(a.seconds for a in touching) or [0.0]
    figures = {
        "requests_sent": len(answers),
        "clients": CLIENTS,
        "statuses": {str(status): count for status, count in sorted(statuses.items(), key=str)},
        "answered_503": len(unavailable),
        "answered_500": statuses.get(500, 0),
        "requests_during_outage": len(touching),
        "requests_entirely_inside_outage": len(inside),
        "outage_seconds": round(repairing - broken, 2),
        "max_latency_during_outage_s": round(outage_latencies[-1], 3),
        "median_latency_during_outage_s": round(statistics.median(outage_latencies), 3),
        "latency_bound_s": OUTAGE_BOUND_S,
        "recovery_s": round(recovered - back, 3) if recovered is not None else None,
        "database_repair_s": round(back - repairing, 3),
        "server_settings": {k: v for k, v in SERVER_ENV.items() if k.startswith("DATABASE_")},
    }
    FIGURES[name] = figures
    _write_figures()
    print(f"\n[database outage: {name}] {json.dumps(figures, sort_keys=True)}")

    assert recovered is not None, (
        f"not every client succeeded within {RECOVERY_LIMIT_S} s of the database coming back"
    )
    failures = [a.describe() for a in answers if a.status is None or a.status == 500]
    assert not failures, "\n".join(failures[:20])
    odd = [a.describe() for a in answers if not a.succeeded and a.status != 503]
    assert not odd, "\n".join(odd[:20])
    assert all(a.succeeded for a in before), [a.describe() for a in before if not a.succeeded]
    assert len(inside) >= CLIENTS // 2, "too few requests inside the outage to judge it"
    wrong = [
        a.describe()
        for a in inside
        if not (
            a.status == 503
            and a.media_type.startswith("application/problem+json")
            and a.problem_type == "https://storekeeper.dev/problems/service-unavailable"
            and a.retry_after is not None
            and a.retry_after.isdigit()
            and int(a.retry_after) >= 1
        )
    ]
    assert not wrong, "\n".join(wrong[:20])
    for answer in unavailable:
        assert not any(leak in str(answer.payload) for leak in LEAKS), answer.describe()
    slow = [a.describe() for a in touching if a.seconds > OUTAGE_BOUND_S]
    assert not slow, f"answers slower than {OUTAGE_BOUND_S} s:\n" + "\n".join(slow[:20])
    assert after, "no request after recovery"
    late = [a.describe() for a in after if not a.succeeded]
    assert not late, "after recovery:\n" + "\n".join(late[:20])
    assert live.alive(), "the server died"

    # Nothing half-written: levels agree with the ledger, every document has its movements,
    # and every 201 is in the database as answered.
    verify = _verify_exit(live.database_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    engine = create_engine(live.database_url)
    try:
        with engine.connect() as connection:
            empty = connection.execute(
                text(
                    "SELECT d.id FROM stock_documents d WHERE NOT EXISTS "
                    "(SELECT 1 FROM stock_movements m WHERE m.document_id = d.id)"
                )
            ).all()
            assert not empty, f"documents without movements: {empty}"
            for answer in answers:
                if answer.status != 201:
                    continue
                count = connection.execute(
                    text("SELECT count(*) FROM stock_movements WHERE document_id = :id"),
                    {"id": answer.payload["id"]},
                ).scalar_one()
                assert count == len(answer.payload["movements"]), answer.describe()
    finally:
        engine.dispose()
    # The server logged each outage answer as a warning, never an unhandled error.
    log = live.log_text()[log_offset:]
    assert "unhandled error" not in log, log[-3000:]


def test_a_stopped_database_gives_503s_then_recovers(live, cluster, catalog):
    _run_outage("stopped", live, cluster, catalog, cluster.stop, cluster.start)


def test_a_frozen_database_gives_503s_within_the_timeouts_then_recovers(live, cluster, catalog):
    _run_outage("frozen", live, cluster, catalog, cluster.freeze, cluster.thaw)
