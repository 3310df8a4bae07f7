"""The stock ledger under real concurrency: the production server, several processes, one database.

A module fixture starts ``scripts/serve-production.sh`` (alembic upgrade + gunicorn with two
uvicorn worker processes) on a throwaway database of each backend. Client threads then post
random receipts, shipments, transfers and reversals against scarce stock, so that many of them
are refused with 409, and the database is checked directly afterwards: no negative level,
every level equal to its ledger sum, transfers conserving stock, every 201 in the ledger
exactly as answered, nothing written by a refused request, and no 5xx at all.

The Idempotency-Key tests hold a key with a request that really runs: a duplicate meanwhile is
refused (PostgreSQL) or queued and replayed (SQLite), and when the worker serving it is killed
(SIGKILL) the key dies with it, so the retry writes the one document at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.cli import main
from service.db import make_engine
from service.domain.ledger import recompute_levels
from service.models import StockDocument, StockLevel, StockMovement
from tests.conftest import throwaway_database
from tests.live_server import LiveServer, live_server

CLIENTS = 8
RUN_SECONDS = 5.0
MAX_REQUESTS_PER_CLIENT = 600  # bounds each loop even on a very fast machine
PRODUCTS = LOCATIONS = 3
SEED_QUANTITY = 4  # per (product, location): scarce, so shipments and transfers often fail
# 409 problem types a write may legitimately answer in this run.
EXPECTED_CONFLICTS = {"insufficient-stock", "already-reversed", "not-reversible"}


@pytest.fixture(scope="module")
def live(backend, tmp_path_factory) -> Iterator[LiveServer]:
    with throwaway_database(backend, tmp_path_factory) as url:
        log_path = tmp_path_factory.mktemp("live") / f"server-{backend}.log"
        # Correctness under load, not the limiter (tests/api/test_ratelimit.py covers that).
        env = {
            "STOREKEEPER_VALIDATE_RESPONSES": "true",
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_ENABLED": "false",
        }
        with live_server(url, workers=2, env=env, log_path=log_path) as server:
            yield server


@pytest.fixture(scope="module")
def engine(live) -> Iterator[Engine]:
    engine = make_engine(live.database_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def api(live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.base_url, timeout=30.0, headers=live.headers) as client:
        yield client


# --- helpers -----------------------------------------------------------------------------


@dataclass
class Outcome:
    client: int
    operation: str
    path: str
    body: dict[str, Any]
    status: int | None  # None: no HTTP answer at all (connection error, timeout)
    payload: Any
    headers: dict[str, str]
    seconds: float

    @property
    def problem_type(self) -> str | None:
        if isinstance(self.payload, dict) and isinstance(self.payload.get("type"), str):
            return self.payload["type"].rsplit("/", 1)[-1]
        return None

    def describe(self) -> str:
        return f"{self.operation} {self.path} {self.body} -> {self.status} {self.payload}"


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()


def _catalog(api: httpx.Client, tag: str) -> tuple[list[int], list[int]]:
    locations = [
        _created(api.post("/api/v1/locations", json={"code": f"{tag}-L{i}", "name": f"L{i}"}))["id"]
        for i in range(LOCATIONS)
    ]
    products = [
        _created(api.post("/api/v1/products", json={"sku": f"{tag}-P{i}", "name": f"P{i}"}))["id"]
        for i in range(PRODUCTS)
    ]
    return products, locations


def _server_problems(live: LiveServer, since: int) -> list[str]:
    """Tracebacks and errors the server logged since byte offset ``since``."""
    text_ = live.log_text()[since:]
    markers = ("Traceback", " ERROR ", " CRITICAL ", "[ERROR]", "[CRITICAL]")
    return [line for line in text_.splitlines() if any(m in line for m in markers)]


def _worker_pids(live: LiveServer) -> set[str]:
    return set(re.findall(r"Booting worker with pid: (\d+)", live.log_text()))


def _log_offset(live: LiveServer) -> int:
    return len(live.log_text())


def _documents(engine: Engine) -> set[int]:
    with Session(engine) as session:
        return set(session.scalars(select(StockDocument.id)))


def _verify_exit_code(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["stock", "verify", "--database-url", url])
    return result.exit_code, result.output


# --- the random workload ------------------------------------------------------------------


class Workload:
    def __init__(self, products: list[int], locations: list[int], tag: str) -> None:
        self.products = products
        self.locations = locations
        self.tag = tag
        self.lock = threading.Lock()
        # Each client reverses movements it created itself (of any kind, reversals included,
        # on purpose), so two clients never reverse one movement at the same moment: that
        # race has its own test below.
        self.movement_ids: dict[int, list[int]] = defaultdict(list)
        self.outcomes: list[Outcome] = []

    def _lines(self, rng: random.Random, *, cost: bool) -> list[dict[str, Any]]:
        lines = []
        # Products with replacement: a document may name one product twice.
        for product_id in rng.choices(self.products, k=rng.choice((1, 1, 2, 3))):
            line: dict[str, Any] = {"product_id": product_id, "quantity": rng.randint(1, 3)}
            if cost:
                line["unit_cost"] = f"{rng.randint(1, 2000) / 100:.4f}"
            lines.append(line)
        return lines

    def next_request(self, rng: random.Random, client: int, n: int) -> tuple[str, str, dict]:
        reference = f"{self.tag}-{client}-{n}"
        operation = rng.choices(
            ("receipt", "shipment", "transfer", "reversal"), weights=(25, 35, 30, 10)
        )[0]
        if operation == "reversal":
            own = self.movement_ids[client]
            if own:
                candidate = rng.choice(own)
                path = f"/api/v1/stock/movements/{candidate}/reversal"
                return operation, path, {"reference": reference}
            operation = "receipt"
        if operation == "receipt":
            body = {
                "location_id": rng.choice(self.locations),
                "reference": reference,
                "lines": self._lines(rng, cost=True),
            }
            return operation, "/api/v1/stock/receipts", body
        if operation == "shipment":
            body = {
                "location_id": rng.choice(self.locations),
                "reference": reference,
                "lines": self._lines(rng, cost=False),
            }
            return operation, "/api/v1/stock/shipments", body
        source, target = rng.sample(self.locations, 2)
        body = {
            "from_location_id": source,
            "to_location_id": target,
            "reference": reference,
            "lines": self._lines(rng, cost=False),
        }
        return operation, "/api/v1/stock/transfers", body

    def run_client(
        self,
        base_url: str,
        headers: dict[str, str],
        client: int,
        start: threading.Barrier,
        end: list[float],
    ):
        rng = random.Random(f"{self.tag}-{client}")
        with httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as http:
            http.get("/health")  # connect before the start line
            start.wait(timeout=60)
            for n in range(MAX_REQUESTS_PER_CLIENT):
                if time.monotonic() >= end[0]:
                    break
                operation, path, body = self.next_request(rng, client, n)
                began = time.perf_counter()
                try:
                    response = http.post(path, json=body)
                except httpx.HTTPError as exc:
                    outcome = Outcome(client, operation, path, body, None, repr(exc), {}, 0.0)
                else:
                    try:
                        payload = response.json()
                    except ValueError:
                        payload = response.text
                    outcome = Outcome(
                        client,
                        operation,
                        path,
                        body,
                        response.status_code,
                        payload,
                        dict(response.headers),
                        time.perf_counter() - began,
                    )
                with self.lock:
                    self.outcomes.append(outcome)
                if outcome.status == 201:
                    self.movement_ids[client] += [m["id"] for m in outcome.payload["movements"]]

    def run(self, base_url: str, headers: dict[str, str], seconds: float) -> float:
        """Every client connected, then all start together and stop after ``seconds``."""
        start = threading.Barrier(CLIENTS + 1)
        end: list[float] = []  # set just before the start line; clients read it after
        threads = [
            threading.Thread(
                target=self.run_client,
                args=(base_url, headers, client, start, end),
                daemon=True,
            )
            for client in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        end.append(time.monotonic() + seconds)
        began = time.monotonic()
        start.wait(timeout=60)
        for thread in threads:
            thread.join(timeout=seconds + 60)
            assert not thread.is_alive(), "a client thread did not finish"
        return time.monotonic() - began


# --- the tests ----------------------------------------------------------------------------


def test_concurrent_documents_on_scarce_stock_keep_the_ledger_exact(live, engine, api, backend):
    tag = f"C{uuid.uuid4().hex[:6]}"
    products, locations = _catalog(api, tag)
    for location_id in locations:
        _created(
            api.post(
                "/api/v1/stock/receipts",
                json={
                    "location_id": location_id,
                    "reference": f"{tag}-seed",
                    "lines": [
                        {"product_id": p, "quantity": SEED_QUANTITY, "unit_cost": "1.0000"}
                        for p in products
                    ],
                },
            )
        )
    documents_before = _documents(engine)
    log_offset = _log_offset(live)

    workload = Workload(products, locations, tag)
    elapsed = workload.run(live.base_url, live.headers, RUN_SECONDS)
    outcomes = workload.outcomes

    statuses = Counter(o.status for o in outcomes)
    conflicts = Counter(o.problem_type for o in outcomes if o.status == 409)
    created = [o for o in outcomes if o.status == 201]
    latencies = sorted(o.seconds for o in outcomes)
    print(
        f"\n[{backend}] {len(outcomes)} requests by {CLIENTS} clients in {elapsed:.1f} s "
        f"(latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms): "
        f"statuses {dict(statuses)}, 409 types {dict(conflicts)}, "
        f"by operation {dict(Counter((o.operation, o.status) for o in outcomes))}"
    )

    # -- every answer: no 5xx (a 503 "database busy" included), no transport failure --------
    broken = [o for o in outcomes if o.status is None or o.status >= 500]
    assert not broken, (
        f"{len(broken)} requests failed, e.g. {[o.describe() for o in broken[:5]]}\n"
        f"server log:\n{live.log_tail(60)}"
    )
    assert set(statuses) <= {201, 409}, [
        o.describe() for o in outcomes if o.status not in (201, 409)
    ]
    assert set(conflicts) <= EXPECTED_CONFLICTS, [
        o.describe()
        for o in outcomes
        if o.status == 409 and o.problem_type not in EXPECTED_CONFLICTS
    ]
    assert not _server_problems(live, log_offset), live.log_tail(80)
    # Several server processes shared the database.
    assert len(_worker_pids(live)) >= 2, live.log_tail(40)
    # The load was real (a few hundred requests here; far fewer would mean a stalled server)
    # and scarce: enough answers of both kinds to mean something.
    assert len(outcomes) >= 60, statuses
    assert statuses[201] >= 20 and conflicts["insufficient-stock"] >= 5, statuses
    for outcome in outcomes:
        if outcome.problem_type == "insufficient-stock":
            for shortage in outcome.payload["shortages"]:
                assert 0 <= shortage["available"] < shortage["requested"], outcome.describe()

    url = live.database_url
    with Session(engine) as session:
        # -- no negative level or balance --------------------------------------------------
        negative = session.scalar(select(func.count()).where(StockLevel.on_hand < 0))
        assert negative == 0
        negative_balances = session.scalar(
            select(func.count()).where(StockMovement.balance_after < 0)
        )
        assert negative_balances == 0

        # -- every level equals its ledger sum ---------------------------------------------
        assert recompute_levels(session) == []

        # -- each (product, location)'s balances chain: balance_after is the running sum ---
        running: dict[tuple[int, int], int] = defaultdict(int)
        for movement in session.scalars(
            select(StockMovement)
            .where(StockMovement.product_id.in_(products))
            .order_by(StockMovement.id)
        ):
            key = (movement.product_id, movement.location_id)
            running[key] += movement.quantity
            assert movement.balance_after == running[key], (
                f"movement {movement.id}: balance_after {movement.balance_after}, "
                f"running sum {running[key]}"
            )
        levels = {
            (level.product_id, level.location_id): level.on_hand
            for level in session.scalars(
                select(StockLevel).where(StockLevel.product_id.in_(products))
            )
        }
        assert {k: v for k, v in levels.items() if v} == {k: v for k, v in running.items() if v}

        # -- transfers conserve stock -------------------------------------------------------
        transfer_kinds = ("transfer_out", "transfer_in")
        transfer_total = session.scalar(
            select(func.coalesce(func.sum(StockMovement.quantity), 0)).where(
                StockMovement.kind.in_(transfer_kinds)
            )
        )
        assert transfer_total == 0
        unbalanced = session.execute(
            select(StockMovement.document_id, func.sum(StockMovement.quantity))
            .where(StockMovement.kind.in_(transfer_kinds))
            .group_by(StockMovement.document_id)
            .having(func.sum(StockMovement.quantity) != 0)
        ).all()
        assert unbalanced == []
        legs = session.execute(
            select(
                StockMovement.document_id,
                StockMovement.line_no,
                func.count(),
                func.sum(StockMovement.quantity),
            )
            .where(StockMovement.kind.in_(transfer_kinds))
            .group_by(StockMovement.document_id, StockMovement.line_no)
        ).all()
        assert all(count == 2 and total == 0 for _doc, _line, count, total in legs), legs
        # A reversal of a transfer leg reverses both legs: it nets to zero as well.
        reversed_transfers = session.execute(
            text(
                "SELECT r.document_id, SUM(r.quantity) FROM stock_movements r "
                "JOIN stock_movements o ON o.id = r.reversal_of "
                "WHERE o.kind IN ('transfer_out', 'transfer_in') "
                "GROUP BY r.document_id HAVING SUM(r.quantity) <> 0"
            )
        ).all()
        assert reversed_transfers == []

        # -- every 201 is in the ledger, exactly as answered --------------------------------
        returned_ids = [o.payload["id"] for o in created]
        assert len(returned_ids) == len(set(returned_ids)), "a document id was answered twice"
        for outcome in created:
            document = session.get(StockDocument, outcome.payload["id"])
            assert document is not None, outcome.describe()
            assert document.kind == outcome.payload["kind"] == outcome.operation
            stored = sorted(
                (
                    m.id,
                    m.kind,
                    m.product_id,
                    m.location_id,
                    m.quantity,
                    m.balance_after,
                    m.reversal_of,
                    m.reference,
                )
                for m in document.movements
            )
            answered = sorted(
                (
                    m["id"],
                    m["kind"],
                    m["product_id"],
                    m["location_id"],
                    m["quantity"],
                    m["balance_after"],
                    m["reversal_of"],
                    m["reference"],
                )
                for m in outcome.payload["movements"]
            )
            assert stored == answered, outcome.describe()
            lines = outcome.body.get("lines")
            if lines is not None:  # one movement per line, two per transfer line
                per_line = 2 if outcome.operation == "transfer" else 1
                assert len(stored) == per_line * len(lines), outcome.describe()

        # -- and nothing else: no refused request left a document behind --------------------
        new_documents = _documents(engine) - documents_before
        assert new_documents == set(returned_ids), (
            f"{len(new_documents)} new documents in the database, {len(returned_ids)} answered "
            f"201; unexplained: {sorted(new_documents - set(returned_ids))[:20]}"
        )
        new_movements = (
            session.scalar(select(func.count()).where(StockMovement.document_id.in_(new_documents)))
            if new_documents
            else 0
        )
        assert new_movements == sum(len(o.payload["movements"]) for o in created)

    # -- the CLI agrees -------------------------------------------------------------------
    exit_code, output = _verify_exit_code(url)
    assert exit_code == 0, output


def _fire_together(
    base_url: str, headers: dict[str, str], requests: list[tuple[str, dict]]
) -> list[Any]:
    """POST every (path, body) from its own thread, all released at once; the answers."""
    start = threading.Barrier(len(requests))
    answers: list[Any] = []
    lock = threading.Lock()

    def fire(path: str, body: dict) -> None:
        with httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as http:
            http.get("/health")  # connect before the start line
            start.wait(timeout=30)
            try:
                answer: Any = http.post(path, json=body)
            except httpx.HTTPError as exc:
                answer = exc
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=fire, args=request, daemon=True) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    return answers


def test_concurrent_reversals_of_one_movement_write_one_reversal(live, engine, api):
    tag = f"R{uuid.uuid4().hex[:6]}"
    products, locations = _catalog(api, tag)
    product, here, there = products[0], locations[0], locations[1]
    log_offset = _log_offset(live)
    misreported: list[str] = []
    for round_no in range(6):
        receipt = _created(
            api.post(
                "/api/v1/stock/receipts",
                json={
                    "location_id": here,
                    "lines": [{"product_id": product, "quantity": 5, "unit_cost": "3.0000"}],
                },
            )
        )
        document = receipt
        if round_no % 2:  # a transfer: its two legs, either of which reverses both
            transfer = {"from_location_id": here, "to_location_id": there}
            transfer["lines"] = [{"product_id": product, "quantity": 2}]
            document = _created(api.post("/api/v1/stock/transfers", json=transfer))
        legs = [m["id"] for m in document["movements"]]
        reference = f"{tag}-{round_no}"
        answers = _fire_together(
            live.base_url,
            live.headers,
            [
                (
                    f"/api/v1/stock/movements/{legs[i % len(legs)]}/reversal",
                    {"reference": reference},
                )
                for i in range(CLIENTS)
            ],
        )
        failures = [a for a in answers if not isinstance(a, httpx.Response)]
        assert not failures, failures
        assert all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
        created = [a.json() for a in answers if a.status_code == 201]
        assert len(created) == 1, [a.text for a in answers]
        misreported += [
            a.text
            for a in answers
            if a.status_code == 409 and not a.json()["type"].endswith("/already-reversed")
        ]
        with Session(engine) as session:
            reversals = session.scalars(
                select(StockMovement).where(StockMovement.reversal_of.in_(legs))
            ).all()
            assert sorted(m.reversal_of for m in reversals) == sorted(legs)
            assert {m.document_id for m in reversals} == {created[0]["id"]}
            documents = session.scalars(
                select(StockDocument.id).where(StockDocument.reference == reference)
            ).all()
            assert documents == [created[0]["id"]]
    with Session(engine) as session:
        assert recompute_levels(session) == []
    assert not _server_problems(live, log_offset), live.log_tail(80)
    # Every loser is told the truth. (Without a lock before the "already reversed" check,
    # PostgreSQL losers got 409 'conflict' or 'insufficient-stock' here.)
    assert not misreported, misreported


def test_one_idempotency_key_from_8_threads_writes_one_document(live, engine, api):
    tag = f"I{uuid.uuid4().hex[:6]}"
    products, locations = _catalog(api, tag)
    log_offset = _log_offset(live)
    replays = in_use = 0
    for round_no in range(6):
        key = f"{tag}-{round_no}-{uuid.uuid4()}"
        reference = f"{tag}-round-{round_no}"
        body = {
            "location_id": locations[round_no % LOCATIONS],
            "reference": reference,
            "lines": [
                {"product_id": products[0], "quantity": 5, "unit_cost": "2.5000"},
                {"product_id": products[1], "quantity": 1, "unit_cost": "0.1000"},
            ],
        }
        start = threading.Barrier(CLIENTS)
        answers: list[httpx.Response | Exception] = []
        lock = threading.Lock()

        def fire(start=start, key=key, body=body, answers=answers, lock=lock):
            with httpx.Client(base_url=live.base_url, timeout=30.0, headers=live.headers) as http:
                http.get("/health")
                start.wait(timeout=30)
                try:
                    answer: httpx.Response | Exception = http.post(
                        "/api/v1/stock/receipts", json=body, headers={"Idempotency-Key": key}
                    )
                except httpx.HTTPError as exc:
                    answer = exc
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=fire, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive()

        assert len(answers) == CLIENTS
        failures = [a for a in answers if not isinstance(a, httpx.Response)]
        assert not failures, failures
        ok = [a for a in answers if a.status_code == 201]
        refused = [a for a in answers if a.status_code != 201]
        for answer in refused:
            assert answer.status_code == 409, answer.text
            assert answer.json()["type"].endswith("/idempotency-key-in-use"), answer.text
        assert ok, "no request with the key succeeded"
        bodies = [a.json() for a in ok]
        assert all(b == bodies[0] for b in bodies), bodies
        originals = [a for a in ok if a.headers.get("idempotent-replayed") != "true"]
        assert len(originals) == 1, [dict(a.headers) for a in ok]
        assert all(a.headers["location"] == originals[0].headers["location"] for a in ok)
        replays += len(ok) - 1
        in_use += len(refused)

        # A later retry replays the same answer; a different body with the key is refused.
        again = api.post("/api/v1/stock/receipts", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 201 and again.json() == bodies[0]
        assert again.headers["idempotent-replayed"] == "true"
        changed = {**body, "note": "different"}
        reused = api.post("/api/v1/stock/receipts", json=changed, headers={"Idempotency-Key": key})
        assert reused.status_code == 422, reused.text
        assert reused.json()["type"].endswith("/idempotency-key-reused")

        with Session(engine) as session:
            documents = session.scalars(
                select(StockDocument).where(StockDocument.reference == reference)
            ).all()
            assert [d.id for d in documents] == [bodies[0]["id"]]
            assert sorted(m.id for m in documents[0].movements) == sorted(
                m["id"] for m in bodies[0]["movements"]
            )
    print(f"\nidempotency: {replays} concurrent replays, {in_use} in-use refusals over 6 rounds")
    assert not _server_problems(live, log_offset), live.log_tail(80)
    with Session(engine) as session:
        on_hand = session.scalar(
            select(func.sum(StockLevel.on_hand)).where(StockLevel.product_id == products[0])
        )
        assert on_hand == 6 * 5  # six keys, six receipts of 5: not one more


# --- an Idempotency-Key held by a request that is still running, or whose worker died ------


# Rows of the pad table the slowing trigger cross-joins: a movement insert then takes a good
# fraction of a second however fast the machine, so the kill lands inside the transaction.
SQLITE_PAD_ROWS = 6000


def _raw_post(live: LiveServer, path: str, body: dict, key: str) -> socket.socket:
    """Send a POST on a socket of our own (its port names the worker serving it); no answer."""
    url = httpx.URL(live.base_url)
    payload = json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {url.host}:{url.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        f"Idempotency-Key: {key}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in live.headers.items()),
    ]
    sock = socket.create_connection((url.host, url.port), timeout=30)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    return sock


def _raw_answer(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    body = answer.read()
    sock.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, json.loads(body)


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def _worker_serving(live: LiveServer, sock: socket.socket, timeout: float = 10.0) -> int:
    """The gunicorn worker holding the server end of ``sock``: /proc/net/tcp, then fds.

    Until a worker accepts the connection, its server end has no inode: wait for that.
    """
    client_port, server_port = sock.getsockname()[1], sock.getpeername()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as rows:
                for row in list(rows)[1:]:
                    fields = row.split()
                    local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                    if (local, remote) == (server_port, client_port) and fields[9] != "0":
                        inodes.add(f"socket:[{fields[9]}]")
        for pid in _children(live.process.pid) if inodes else ():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                            return pid
        time.sleep(0.005)
    raise AssertionError(f"no worker of {live.process.pid} serves port {client_port}")


def _backend_waiting_for_a_lock(engine: Engine, timeout: float = 10.0) -> int:
    """The PostgreSQL backend of the request that now waits for our row lock."""
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            pids = connection.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            ).all()
            connection.rollback()
            if pids:
                return pids[0]
            time.sleep(0.005)
    raise AssertionError("the request never waited for the product's row lock")


def _stored_keys(engine: Engine, key: str) -> int:
    """Committed idempotency rows of ``key`` (a running request must have none)."""
    with engine.connect() as connection:
        return connection.scalar(
            text("SELECT count(*) FROM idempotency_keys WHERE key = :key"), {"key": key}
        )


def _backend_gone(engine: Engine, backend_pid: int, timeout: float = 10.0) -> float:
    """Wait until the backend has ended (rolled back); return how long that took."""
    began = time.monotonic()
    with engine.connect() as connection:
        while time.monotonic() - began < timeout:
            alive = connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": backend_pid},
            )
            connection.rollback()
            if not alive:
                return time.monotonic() - began
            time.sleep(0.002)
    raise AssertionError(f"backend {backend_pid} outlived its client")


@contextlib.contextmanager
def _slow_sqlite_movement_inserts(path: str) -> Iterator[None]:
    """Make every movement insert slow (a trigger cross-joining a pad table), then undo it."""
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        connection.execute("CREATE TABLE test_slow_pad (x INTEGER)")
        connection.executemany(
            "INSERT INTO test_slow_pad VALUES (?)", [(i,) for i in range(SQLITE_PAD_ROWS)]
        )
        connection.execute(
            "CREATE TRIGGER test_slow_movement BEFORE INSERT ON stock_movements BEGIN "
            "SELECT count(*) FROM test_slow_pad AS a, test_slow_pad AS b; END"
        )
        yield
    finally:
        connection.execute("DROP TRIGGER IF EXISTS test_slow_movement")
        connection.execute("DROP TABLE IF EXISTS test_slow_pad")
        connection.close()


def _sqlite_writer_busy(path: str) -> bool:
    """Whether some connection holds SQLite's write lock (probed without waiting)."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc) or "busy" in str(exc), exc
        return True
    finally:
        probe.close()


def _wait_for_a_long_sqlite_write(path: str, hold: float = 0.15, timeout: float = 10.0) -> None:
    """Wait until one write transaction has held SQLite's write lock for ``hold`` seconds.

    Every probe in that span must find it busy: a short write (say, a claim of its own)
    before the document's transaction does not count.
    """
    deadline = time.monotonic() + timeout
    busy_since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if not _sqlite_writer_busy(path):
            busy_since = None
        elif busy_since is None:
            busy_since = now
        elif now - busy_since >= hold:
            return
        time.sleep(0.001)
    raise AssertionError("no write transaction of the request lasted long enough to kill")


def _documents_with(engine: Engine, reference: str) -> list[int]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(StockDocument.id)
                .where(StockDocument.reference == reference)
                .order_by(StockDocument.id)
            )
        )


def _receipt(product_ids: list[int], location_id: int, reference: str, lines: int = 1) -> dict:
    return {
        "location_id": location_id,
        "reference": reference,
        "lines": [
            {"product_id": product_ids[i % len(product_ids)], "quantity": 1, "unit_cost": "1.0000"}
            for i in range(lines)
        ],
    }


@contextlib.contextmanager
def _product_row_locked(engine: Engine, product_id: int) -> Iterator[None]:
    """Hold the product's row lock (as a long transaction would): receipts of it wait."""
    with engine.connect() as connection:
        connection.execute(
            text("SELECT id FROM products WHERE id = :id FOR UPDATE"), {"id": product_id}
        )
        try:
            yield
        finally:
            connection.rollback()


def test_a_duplicate_while_the_first_request_runs(live, engine, api, backend):
    """PostgreSQL refuses it at once with 409; SQLite queues it behind the writer and replays."""
    tag = f"D{uuid.uuid4().hex[:6]}"
    products, locations = _catalog(api, tag)
    key, reference = f"{tag}-{uuid.uuid4()}", f"{tag}-first"
    body = _receipt(products, locations[0], reference)
    path = "/api/v1/stock/receipts"
    if backend == "postgresql":
        with _product_row_locked(engine, products[0]):
            first = _raw_post(live, path, body, key)
            _backend_waiting_for_a_lock(engine)
            began = time.monotonic()
            duplicates = [
                api.post(path, json=b, headers={"Idempotency-Key": key})
                for b in (body, {**body, "note": "another body"})
            ]
            refused_in = (time.monotonic() - began) / len(duplicates)
            # Held by the running request's transaction: nothing committed meanwhile.
            assert _documents_with(engine, reference) == []
            assert _stored_keys(engine, key) == 0
        for duplicate in duplicates:
            assert duplicate.status_code == 409, duplicate.text
            assert duplicate.json()["type"].endswith("/idempotency-key-in-use")
        assert refused_in < 1.0, refused_in
        print(f"\n[postgresql] a duplicate of a running request: 409 in {refused_in * 1000:.0f} ms")
        answers = [_raw_answer(first)]
        later = api.post(path, json=body, headers={"Idempotency-Key": key})
        answers.append((later.status_code, dict(later.headers), later.json()))
    else:
        sqlite_path = make_url(live.database_url).database
        holder = sqlite3.connect(sqlite_path, timeout=5, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a writer mid-transaction: both requests queue
        try:
            first = _raw_post(live, path, body, key)
            second = _raw_post(live, path, body, key)
            time.sleep(0.3)
            # Both wait for the writer: neither holds the key yet, neither is refused.
            assert _stored_keys(engine, key) == 0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Whichever gets the writer first writes the document; the other then replays it.
        answers = [_raw_answer(first), _raw_answer(second)]
    assert [status for status, _headers, _body in answers] == [201, 201], answers
    originals = [body for _status, headers, body in answers if "idempotent-replayed" not in headers]
    replays = [body for _status, headers, body in answers if headers.get("idempotent-replayed")]
    assert len(originals) == len(replays) == 1, answers
    assert replays == originals
    assert _documents_with(engine, reference) == [originals[0]["id"]]


def test_a_retry_after_the_worker_died_mid_request_goes_through_at_once(live, engine, api, backend):
    """SIGKILL the worker serving a keyed receipt mid-transaction: the key dies with it.

    PostgreSQL: the test holds the product's row lock, so the receipt waits inside its
    transaction, holding the key (a duplicate meanwhile is refused). SQLite: a trigger makes
    the movement insert slow, and the receipt is killed while its write transaction holds the
    database's write lock.
    """
    tag = f"K{uuid.uuid4().hex[:6]}"
    products, locations = _catalog(api, tag)
    key, reference = f"{tag}-{uuid.uuid4()}", f"{tag}-killed"
    path = "/api/v1/stock/receipts"
    log_offset = _log_offset(live)
    if backend == "postgresql":
        body = _receipt(products, locations[0], reference)
        with _product_row_locked(engine, products[0]):
            doomed = _raw_post(live, path, body, key)
            backend_pid = _backend_waiting_for_a_lock(engine)
            # The running request holds the key: the same retry now is refused...
            refused = api.post(path, json=body, headers={"Idempotency-Key": key})
            assert refused.status_code == 409, refused.text
            assert refused.json()["type"].endswith("/idempotency-key-in-use")
            assert _stored_keys(engine, key) == 0  # ...by its transaction, not by a row
            worker = _worker_serving(live, doomed)
            os.kill(worker, signal.SIGKILL)
            killed_at = time.monotonic()
            assert doomed.recv(1) == b""  # no answer: the worker is gone
        # Our row lock is released: the dead worker's backend finds its client gone and rolls
        # back (with the key's lock). With lock_timeout, statement_timeout or
        # client_connection_check_interval it would not even wait for us.
        orphan_seconds = _backend_gone(engine, backend_pid)
    else:
        body = _receipt(products, locations[0], reference)
        database_path = make_url(live.database_url).database
        with _slow_sqlite_movement_inserts(database_path):
            doomed = _raw_post(live, path, body, key)
            worker = _worker_serving(live, doomed)
            _wait_for_a_long_sqlite_write(database_path)
            assert _stored_keys(engine, key) == 0  # the key is held by that transaction alone
            os.kill(worker, signal.SIGKILL)
            killed_at = time.monotonic()
            answer = doomed.recv(1)
            assert answer == b"", "the receipt finished before the kill: make it slower"
        orphan_seconds = 0.0
    doomed.close()
    assert _documents_with(engine, reference) == []  # the killed request wrote nothing

    # A new connection: a kept-alive one of `api` may have been served by the killed worker.
    with httpx.Client(base_url=live.base_url, timeout=30.0, headers=live.headers) as fresh:
        sent = time.monotonic()
        retry = fresh.post(path, json=body, headers={"Idempotency-Key": key})
        answered = time.monotonic()
        assert retry.status_code == 201, retry.text
        assert "idempotent-replayed" not in retry.headers
        assert _documents_with(engine, reference) == [retry.json()["id"]]
        replay_sent = time.monotonic()
        replay = fresh.post(path, json=body, headers={"Idempotency-Key": key})
        replay_seconds = time.monotonic() - replay_sent
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == retry.json()
    assert _documents_with(engine, reference) == [retry.json()["id"]]
    # No wait for a stale claim (minutes) nor for any timeout (seconds): just the work.
    assert answered - sent < 10.0
    orphan = (
        f"its database session ended {orphan_seconds * 1000:.0f} ms after our row lock; "
        if backend == "postgresql"
        else ""
    )
    print(
        f"\n[{backend}] worker {worker} killed mid-request; {orphan}the retry answered 201 in "
        f"{(answered - sent) * 1000:.0f} ms ({(answered - killed_at) * 1000:.0f} ms after the "
        f"kill; a replay takes {replay_seconds * 1000:.0f} ms)"
    )
    # The only trouble the server reports is the worker we killed (and its replacement).
    problems = [
        line
        for line in _server_problems(live, log_offset)
        if f"pid:{worker}" not in line and "SIGKILL" not in line
    ]
    assert not problems, live.log_tail(80)
    with Session(engine) as session:
        assert recompute_levels(session) == []
