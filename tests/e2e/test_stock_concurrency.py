"""The stock ledger under real concurrency: the production server, several processes, one database.

A module fixture starts ``scripts/serve-production.sh`` (alembic upgrade + gunicorn with two
uvicorn worker processes) on a throwaway database of each backend. Client threads then post
random receipts, shipments, transfers and reversals against scarce stock, so that many of them
are refused with 409, and the database is checked directly afterwards: no negative level,
every level equal to its ledger sum, transfers conserving stock, every 201 in the ledger
exactly as answered, nothing written by a refused request, and no 5xx at all.
"""

from __future__ import annotations

import random
import re
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
