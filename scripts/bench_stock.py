#!/usr/bin/env python3
"""Benchmark stock document writes against the REAL production server.

For each backend (SQLite, and PostgreSQL when an admin URL is given) this starts
``scripts/serve-production.sh`` (alembic upgrade + gunicorn with uvicorn workers) on a
throwaway database, seeds products and locations with ample stock, then for each client
count (default 1, 8, 32) posts a fixed number of documents (receipts, shipments and transfers
of 1-3 lines) from that many concurrent client threads, and prints one table:

    backend, clients, requests, writes/s, p50 ms, p99 ms, errors

``writes/s`` counts 201 answers per second of wall time; ``errors`` is every other answer
(any 4xx/5xx, or no answer). Afterwards ``storekeeper stock verify``'s check runs on the
database, and the throwaway database is removed.

    .venv/bin/python scripts/bench_stock.py                  # 400 requests per level
    .venv/bin/python scripts/bench_stock.py --quick          # a short smoke run
    .venv/bin/python scripts/bench_stock.py --duration 10    # 10 s per level instead
    .venv/bin/python scripts/bench_stock.py --backends sqlite --clients 1,4,16

PostgreSQL: --postgres-admin-url, else STOREKEEPER_TEST_POSTGRES_URL (e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres); without either it is skipped.
The clients run in this process (threads), on the same machine as the server: on a small
machine they compete with the server for CPU, so read the numbers as relative.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

# connexion warns about starlette's test client when imported (via service.cli.stock): noise.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from tests.live_server import LiveServer, live_server  # noqa: E402

POSTGRES_ENV = "STOREKEEPER_TEST_POSTGRES_URL"
STOCK_PER_CELL = 1_000_000  # ample: shipments and transfers never run short


@dataclass
class Row:
    backend: str
    clients: int
    requests: int
    seconds: float
    writes_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)


# --- databases ------------------------------------------------------------------------------


@contextmanager
def throwaway_database(backend: str, admin_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="storekeeper-bench-") as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    assert admin_url is not None
    name = f"storekeeper_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- workload -------------------------------------------------------------------------------


def _post(client: httpx.Client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    if response.status_code != 201:
        raise SystemExit(f"seeding failed: POST {path} -> {response.status_code} {response.text}")
    return response.json()


def seed(server: LiveServer, products: int, locations: int) -> tuple[list[int], list[int]]:
    with httpx.Client(base_url=server.base_url, timeout=60.0, headers=server.headers) as client:
        location_ids = [
            _post(client, "/api/v1/locations", {"code": f"BENCH-L{i}", "name": f"Bench {i}"})["id"]
            for i in range(locations)
        ]
        product_ids = [
            _post(client, "/api/v1/products", {"sku": f"BENCH-P{i}", "name": f"Bench {i}"})["id"]
            for i in range(products)
        ]
        for location_id in location_ids:
            lines = [
                {"product_id": p, "quantity": STOCK_PER_CELL, "unit_cost": "1.0000"}
                for p in product_ids
            ]
            _post(client, "/api/v1/stock/receipts", {"location_id": location_id, "lines": lines})
    return product_ids, location_ids


class Workload:
    def __init__(self, products: list[int], locations: list[int]) -> None:
        self.products = products
        self.locations = locations

    def request(self, rng: random.Random) -> tuple[str, dict]:
        kind = rng.choices(("receipt", "shipment", "transfer"), weights=(40, 30, 30))[0]
        lines = [
            {"product_id": p, "quantity": rng.randint(1, 5)}
            for p in rng.sample(self.products, rng.randint(1, 3))
        ]
        if kind == "receipt":
            for line in lines:
                line["unit_cost"] = f"{rng.randint(100, 999) / 100:.4f}"
            return "/api/v1/stock/receipts", {
                "location_id": rng.choice(self.locations),
                "lines": lines,
            }
        if kind == "shipment":
            return "/api/v1/stock/shipments", {
                "location_id": rng.choice(self.locations),
                "lines": lines,
            }
        source, target = rng.sample(self.locations, 2)
        return "/api/v1/stock/transfers", {
            "from_location_id": source,
            "to_location_id": target,
            "lines": lines,
        }


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def run_level(
    server: LiveServer,
    workload: Workload,
    backend: str,
    clients: int,
    requests: int | None,
    duration: float | None,
    seed_value: int,
) -> Row:
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    start = threading.Barrier(clients + 1)
    deadline: list[float] = []

    def take() -> bool:
        nonlocal issued
        if duration is not None:
            return time.monotonic() < deadline[0]
        with lock:
            if issued >= (requests or 0):
                return False
            issued += 1
            return True

    def client(index: int) -> None:
        rng = random.Random(f"{seed_value}-{clients}-{index}")
        with httpx.Client(base_url=server.base_url, timeout=60.0, headers=server.headers) as http:
            http.get("/health")  # connected before the clock starts
            start.wait(timeout=120)
            while take():
                path, body = workload.request(rng)
                began = time.perf_counter()
                try:
                    status = str(http.post(path, json=body).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
                    outcomes[status] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    if duration is not None:
        deadline.append(time.monotonic() + duration)
    start.wait(timeout=120)
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    latencies.sort()
    done = sum(outcomes.values())
    errors = {status: n for status, n in outcomes.items() if status != "201"}
    return Row(
        backend=backend,
        clients=clients,
        requests=done,
        seconds=round(seconds, 3),
        writes_per_s=round(outcomes["201"] / seconds, 1) if seconds else 0.0,
        p50_ms=round(percentile(latencies, 0.50) * 1000, 1),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 1),
        errors=sum(errors.values()),
        error_kinds=errors,
    )


def verify(database_url: str) -> str:
    from service.cli.stock import verify_database
    from service.db import make_engine

    engine = make_engine(database_url)
    try:
        report = verify_database(engine)
    finally:
        engine.dispose()
    state = "ok" if report.ok else "FAILED"
    return (
        f"verify {state}: {report.levels} levels, {report.movements} movements, "
        f"{report.documents} documents, {len(report.drift)} drift rows, "
        f"{len(report.negative)} negative"
    )


# --- output ---------------------------------------------------------------------------------

HEADERS = ("backend", "clients", "requests", "writes/s", "p50 ms", "p99 ms", "errors")


def table(rows: list[Row]) -> str:
    cells = [
        [
            r.backend,
            str(r.clients),
            str(r.requests),
            f"{r.writes_per_s:.1f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            str(r.errors)
            + (
                " (" + ", ".join(f"{k}: {v}" for k, v in sorted(r.error_kinds.items())) + ")"
                if r.error_kinds
                else ""
            ),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]

    def line(values) -> str:
        return (
            "| "
            + " | ".join(
                v.ljust(w) if i in (0, 6) else v.rjust(w)
                for i, (v, w) in enumerate(zip(values, widths, strict=True))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join("-" * (w + 1) + (":" if i not in (0, 6) else "-") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(HEADERS), rule, *(line(c) for c in cells)])


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(POSTGRES_ENV),
        help=f"admin URL to create/drop a throwaway database (default: ${POSTGRES_ENV})",
    )
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma-separated")
    parser.add_argument("--requests", type=int, default=400, help="requests per level")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per level (instead of --requests)"
    )
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY (default 2)")
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--locations", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per backend")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--quick", action="store_true", help="short run: 60 requests per level")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = 60
        args.warmup = 5
        if args.duration is not None:
            args.duration = min(args.duration, 2.0)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.locations < 2:
        parser.error("--locations must be at least 2 (transfers)")
    if args.products < 3:
        parser.error("--products must be at least 3")
    return args


def bench_backend(backend: str, args: argparse.Namespace) -> tuple[list[Row], str]:
    rows: list[Row] = []
    with throwaway_database(backend, args.postgres_admin_url) as url:
        log_path = Path(tempfile.mkstemp(prefix=f"storekeeper-bench-{backend}-", suffix=".log")[1])
        # Measures the ledger, not the limiter: one token writes far past WRITE_RATE_LIMIT.
        env = {
            "LOG_LEVEL": "WARNING",
            "STOREKEEPER_VALIDATE_RESPONSES": "false",
            "RATE_LIMIT_ENABLED": "false",
        }
        try:
            with live_server(url, workers=args.workers, env=env, log_path=log_path) as server:
                print(f"[{backend}] server {server.base_url} ready; seeding", file=sys.stderr)
                products, locations = seed(server, args.products, args.locations)
                workload = Workload(products, locations)
                if args.warmup:
                    run_level(server, workload, backend, 2, args.warmup, None, args.seed)
                for clients in args.clients:
                    row = run_level(
                        server, workload, backend, clients, args.requests, args.duration, args.seed
                    )
                    print(
                        f"[{backend}] {clients:>3} clients: {row.requests} requests, "
                        f"{row.writes_per_s} writes/s, p50 {row.p50_ms} ms, p99 {row.p99_ms} ms, "
                        f"errors {row.errors} {row.error_kinds or ''}",
                        file=sys.stderr,
                    )
                    rows.append(row)
            summary = verify(url)
        finally:
            if args.keep_logs:
                print(f"[{backend}] server log: {log_path}", file=sys.stderr)
            else:
                log_path.unlink(missing_ok=True)
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Row] = []
    notes: list[str] = []
    failed = False
    for backend in args.backends:
        if backend == "postgresql" and not args.postgres_admin_url:
            notes.append(f"postgresql: skipped (no --postgres-admin-url or ${POSTGRES_ENV})")
            continue
        backend_rows, summary = bench_backend(backend, args)
        rows += backend_rows
        notes.append(f"{backend}: {summary}")
        failed |= not summary.startswith("verify ok")
    load = (
        f"{args.duration:g} s per level" if args.duration else f"{args.requests} requests per level"
    )
    print(
        f"Storekeeper stock write benchmark: {load}, gunicorn workers={args.workers}, "
        f"{args.products} products x {args.locations} locations, mix receipt 40% / shipment 30% / "
        f"transfer 30% (1-3 lines); {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print(table(rows) if rows else "(no rows)")
    print()
    for note in notes:
        print(note)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
