#!/usr/bin/env python3
"""HTTP benchmark: the production server against a plain-Flask floor on the same database.

Issue 13, deliverable 1. On one database made by ``service.datagen`` (default 100,000 products
and 1,000,000 movements on PostgreSQL) this starts, side by side on free ports,

- the **service**: ``scripts/serve-production.sh`` (alembic upgrade + gunicorn with uvicorn
  workers on the connexion app), rate limits off (we measure the stack, not the limiter);
- the **floor**: ``scripts/bench_floor.py``, plain Flask under gunicorn gthread running the
  same SQL and answering the same JSON (see its docstring for what it leaves out),

and for each scenario and (workers, clients) level runs the same wrk load against one, then
the other (a short warm-up first, each time), and prints

    scenario, workers, clients, service req/s p50 p99, floor req/s p50 p99, ratio

``ratio`` = service req/s / floor req/s. ``errors`` counts wrk's socket errors plus answers
>= 400 (a healthy run has none). ``gen cpu`` is the CPU wrk itself used, as a share of one
core: it shows the load generator is not the bottleneck. Afterwards ``storekeeper stock
verify`` must pass on the database (every level equals its ledger sum), for writes of both.

    .venv/bin/python scripts/bench_http.py                         # PostgreSQL, 100k / 1M
    .venv/bin/python scripts/bench_http.py --quick --backend sqlite
    .venv/bin/python scripts/bench_http.py --database-url URL      # reuse a generated database
    .venv/bin/python scripts/bench_http.py --keep-database --json results.json

A benchmark, not a timed test: the load generator runs on the same machine and competes with
the servers for CPU; compare the two columns of one run, not numbers across machines.
Needs ``wrk`` on PATH (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from tests.live_server import admin_headers, free_port, live_server, venv_bin  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_ENV = "STOREKEEPER_TEST_POSTGRES_URL"
TOP_UP = 1_000_000  # units received for the transfer pool before any transfer runs
# Products the 5-line transfers draw from (topped up at two locations): large enough that
# concurrent transfers seldom wait for each other's row locks.
TRANSFER_POOL = 1000
MAX_LINES = 500  # the spec's maxItems of a document's lines
RECEIPT_POOL = 2000  # products the receipts draw from

SCENARIOS = {
    # name: (method, path, body kind)
    "products-50": ("GET", "/api/v1/products?limit=50", None),
    "products-200": ("GET", "/api/v1/products?limit=200", None),
    "receipt-1-line": ("POST", "/api/v1/stock/receipts", "receipt"),
    "transfer-5-lines": ("POST", "/api/v1/stock/transfers", "transfer"),
    "receipt-idempotent": ("POST", "/api/v1/stock/receipts", "receipt-key"),
    "stock-levels-50": ("GET", "/api/v1/stock/levels?limit=50", None),
    "valuation-report": ("GET", "/api/v1/reports/valuation?group_by=category", None),
}


@dataclass
class Measure:
    requests: int
    seconds: float
    req_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    generator_cpu: float  # wrk's CPU seconds / wall seconds (1.0 = one core)


@dataclass
class Row:
    scenario: str
    workers: int
    clients: int
    service: Measure
    floor: Measure

    @property
    def ratio(self) -> float:
        return self.service.req_per_s / self.floor.req_per_s if self.floor.req_per_s else 0.0


# --- the database ----------------------------------------------------------------------------


@contextlib.contextmanager
def database(args) -> Iterator[tuple[str, bool]]:
    """(url, generated here). A new one unless --database-url; dropped unless --keep-database."""
    if args.database_url:
        yield args.database_url, False
        return
    if args.backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="storekeeper-bench-http-")
        try:
            yield f"sqlite:///{folder}/bench.db", True
        finally:
            if args.keep_database:
                print(f"kept: sqlite:///{folder}/bench.db")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        return
    admin_url = args.postgres_admin_url
    name = f"storekeeper_bench_http_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url, True
    finally:
        if args.keep_database:
            print(f"kept: {url}")
        else:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def storekeeper(database_url: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [str(venv_bin() / "storekeeper"), *argv], env=env, capture_output=True, text=True
    )


def generate(database_url: str, products: int, movements: int) -> float:
    from service import datagen

    began = time.perf_counter()
    done = storekeeper(database_url, "db", "upgrade")
    if done.returncode:
        raise SystemExit(f"db upgrade failed:\n{done.stdout}{done.stderr}")
    spec = datagen.GenerationSpec(products=products, movements=movements)
    result = datagen.generate(database_url, spec, progress=lambda m: print(f"  datagen: {m}"))
    print(
        f"  datagen: {result.products} products, {result.movements} movements, "
        f"{result.levels} levels in {result.seconds:.0f} s"
    )
    return time.perf_counter() - began


def pools(database_url: str, seed: int) -> tuple[list[int], list[int], list[int]]:
    """(receipt products, transfer products, active locations) drawn from the database."""
    from service.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            products = list(
                connection.execute(
                    text("SELECT id FROM products WHERE is_active ORDER BY id")
                ).scalars()
            )
            locations = list(
                connection.execute(
                    text("SELECT id FROM locations WHERE is_active ORDER BY id")
                ).scalars()
            )
    finally:
        engine.dispose()
    if len(locations) < 2 or len(products) < 10:
        raise SystemExit("the database needs at least 2 active locations and 10 products")
    rng = random.Random(seed)
    receipt = rng.sample(products, min(RECEIPT_POOL, len(products)))
    transfer = rng.sample(products, min(TRANSFER_POOL, len(products)))
    return receipt, transfer, locations


def top_up(base_url: str, headers: dict, products: list[int], locations: list[int]) -> None:
    """Receive ample stock of the transfer pool at both transfer locations, via the service."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
        for location_id in locations[:2]:
            for start in range(0, len(products), MAX_LINES):
                lines = [
                    {"product_id": p, "quantity": TOP_UP, "unit_cost": "1.0000"}
                    for p in products[start : start + MAX_LINES]
                ]
                answer = client.post(
                    "/api/v1/stock/receipts", json={"location_id": location_id, "lines": lines}
                )
                if answer.status_code != 201:
                    raise SystemExit(f"top-up failed: {answer.status_code} {answer.text[:500]}")


# --- the floor server ------------------------------------------------------------------------


@contextlib.contextmanager
def floor_server(database_url: str, workers: int, log_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                str(venv_bin() / "gunicorn"),
                "scripts.bench_floor:create_app()",
                "--chdir",
                str(ROOT),
                "-k",
                "gthread",
                "--threads",
                "10",
                "--workers",
                str(workers),
                "--bind",
                f"127.0.0.1:{port}",
                "--access-logfile",
                "-",  # like serve-production.sh: one access line per request
                "--graceful-timeout",
                "20",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the floor exited; log:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the floor did not start; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- wrk -------------------------------------------------------------------------------------


def lua_list(values: list[int]) -> str:
    return "{" + ",".join(str(v) for v in values) + "}"


def lua_script(
    scenario: str, token: str, receipt: list[int], transfer: list[int], locations: list[int]
) -> str:
    method, path, kind = SCENARIOS[scenario]
    run = uuid.uuid4().hex[:12]  # Idempotency-Keys unique across runs and servers
    seed = random.randrange(1, 2**31)
    return f"""
local RUN_SEED = {seed}
local receipt_products = {lua_list(receipt)}
local transfer_products = {lua_list(transfer)}
local locations = {lua_list(locations)}
local kind = "{kind or ""}"
local counter = 0
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end

function init(args)
  math.randomseed(RUN_SEED + (tid or 0) * 7919)
end

local function headers(extra)
  local h = {{["Authorization"] = "Bearer {token}", ["Content-Type"] = "application/json"}}
  if extra then h["Idempotency-Key"] = extra end
  return h
end

local function receipt_body()
  return string.format(
    '{{"location_id":%d,"lines":[{{"product_id":%d,"quantity":%d,"unit_cost":"%d.%02d00"}}]}}',
    locations[math.random(#locations)], receipt_products[math.random(#receipt_products)],
    math.random(1, 5), math.random(1, 9), math.random(0, 99))
end

local function transfer_body()
  local picked, lines = {{}}, {{}}
  while #lines < 5 do
    local p = transfer_products[math.random(#transfer_products)]
    if not picked[p] then
      picked[p] = true
      lines[#lines + 1] = string.format('{{"product_id":%d,"quantity":1}}', p)
    end
  end
  local a, b = locations[1], locations[2]
  if math.random(2) == 2 then a, b = b, a end
  return string.format('{{"from_location_id":%d,"to_location_id":%d,"lines":[%s]}}',
    a, b, table.concat(lines, ","))
end

function request()
  counter = counter + 1
  if kind == "receipt" then
    return wrk.format("POST", "{path}", headers(nil), receipt_body())
  elseif kind == "receipt-key" then
    local key = string.format("bench-{run}-%d-%d", tid or 0, counter)
    return wrk.format("POST", "{path}", headers(key), receipt_body())
  elseif kind == "transfer" then
    return wrk.format("POST", "{path}", headers(nil), transfer_body())
  end
  return wrk.format("{method}", "{path}", headers(nil), nil)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(base_url: str, script: Path, clients: int, seconds: float) -> Measure:
    threads = max(1, min(2, clients))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            base_url,
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRKJSON ")]
    if done.returncode or not lines:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(lines[-1][len("WRKJSON ") :])
    duration = data["duration_us"] / 1e6
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measure(
        requests=data["requests"],
        seconds=round(duration, 2),
        req_per_s=round(data["requests"] / duration, 1) if duration else 0.0,
        p50_ms=round(data["p50_us"] / 1000, 1),
        p99_ms=round(data["p99_us"] / 1000, 1),
        errors=data["errors"],
        generator_cpu=round(cpu / wall, 3),
    )


# --- the run ---------------------------------------------------------------------------------


def parse_levels(value: str) -> list[tuple[int, int]]:
    """'1x8,2x16' -> [(1, 8), (2, 16)]: (server worker processes, concurrent clients)."""
    levels = []
    for part in value.split(","):
        workers, clients = part.lower().split("x")
        levels.append((int(workers), int(clients)))
    return levels


def versions(database_url: str) -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("connexion", "flask", "sqlalchemy", "gunicorn", "uvicorn", "psycopg"):
        with contextlib.suppress(Exception):
            found[package] = version(package)
    with contextlib.suppress(Exception):
        found["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0]
    if database_url.startswith("postgresql"):
        engine = create_engine(database_url)
        with engine.connect() as connection:
            found["postgresql"] = connection.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    else:
        import sqlite3

        found["sqlite"] = sqlite3.sqlite_version
    found["cpus"] = str(os.cpu_count())
    return found


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'scenario':<19} {'w':>2} {'c':>3} | {'svc req/s':>9} {'p50':>7} {'p99':>7} | "
        f"{'floor req/s':>11} {'p50':>7} {'p99':>7} | {'ratio':>6} | {'errors':>7} | gen cpu"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        s, f = r.service, r.floor
        print(
            f"{r.scenario:<19} {r.workers:>2} {r.clients:>3} | {s.req_per_s:>9.1f} "
            f"{s.p50_ms:>7.1f} {s.p99_ms:>7.1f} | {f.req_per_s:>11.1f} {f.p50_ms:>7.1f} "
            f"{f.p99_ms:>7.1f} | {r.ratio:>5.0%} | {s.errors:>3}/{f.errors:<3} | "
            f"{s.generator_cpu:.2f}/{f.generator_cpu:.2f}"
        )
    print("(p50/p99 in ms; ratio = service req/s / floor req/s; errors and gen cpu: svc/floor)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(POSTGRES_ENV, DEFAULT_ADMIN_URL),
        help=f"a PostgreSQL URL allowed to CREATE DATABASE (default: ${POSTGRES_ENV}, else "
        "%(default)s)",
    )
    parser.add_argument("--database-url", help="reuse this (generated) database; kept")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small data, short runs")
    parser.add_argument("--products", type=int)
    parser.add_argument("--movements", type=int)
    parser.add_argument("--duration", type=float, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per measurement")
    parser.add_argument("--levels", help="workers x clients, e.g. 1x8,2x16")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    products = args.products or (2_000 if args.quick else 100_000)
    movements = (
        args.movements if args.movements is not None else (20_000 if args.quick else 1_000_000)
    )
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    levels = parse_levels(args.levels or ("2x8" if args.quick else "1x8,2x16"))
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")

    started = time.perf_counter()
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="storekeeper-bench-http-lua-"))
    with database(args) as (database_url, fresh):
        shown = make_url(database_url).render_as_string(hide_password=True)
        print(f"database: {shown}")
        generation_s = 0.0
        if fresh:
            print(f"generating {products} products / {movements} movements ...")
            generation_s = generate(database_url, products, movements)
        env_facts = versions(database_url)
        token = admin_headers(database_url)["Authorization"].removeprefix("Bearer ")
        headers = {"Authorization": f"Bearer {token}"}
        receipt, transfer, locations = pools(database_url, args.seed)
        topped_up = False
        errors_seen = False
        for workers, clients in levels:
            service_log = workdir / f"service-{workers}.log"
            floor_log = workdir / f"floor-{workers}.log"
            with (
                live_server(
                    database_url,
                    workers=workers,
                    env={"RATE_LIMIT_ENABLED": "false"},
                    log_path=service_log,
                ) as service,
                floor_server(database_url, workers, floor_log) as floor_url,
            ):
                if not topped_up and "transfer-5-lines" in scenarios:
                    top_up(service.base_url, headers, transfer, locations)
                    topped_up = True
                for scenario in scenarios:
                    script = workdir / f"{scenario}.lua"
                    measured = {}
                    for name, url in (("service", service.base_url), ("floor", floor_url)):
                        for seconds in (warmup, duration):
                            if seconds <= 0:
                                continue
                            # A fresh script per wrk run: new Idempotency-Keys and seeds.
                            script.write_text(
                                lua_script(scenario, token, receipt, transfer, locations)
                            )
                            measured[name] = wrk(url, script, clients, seconds)
                        if measured[name].errors:
                            errors_seen = True
                    row = Row(scenario, workers, clients, measured["service"], measured["floor"])
                    rows.append(row)
                    print(
                        f"  {scenario} {workers}x{clients}: service {row.service.req_per_s} "
                        f"req/s, floor {row.floor.req_per_s} req/s ({row.ratio:.0%})",
                        flush=True,
                    )
        verified = storekeeper(database_url, "stock", "verify")
        print(verified.stdout.strip())
    if errors_seen:  # keep the servers' access logs: they name the failing statuses
        print(f"errors were answered: server logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    total_s = time.perf_counter() - started
    print()
    print_table(rows)
    engine = (
        f"postgresql {env_facts['postgresql']}"
        if "postgresql" in env_facts
        else f"sqlite {env_facts.get('sqlite', '')}"
    )
    print(
        f"\nbackend {engine}, "
        f"{products} products / {movements} movements (generated in {generation_s:.0f} s), "
        f"{duration:g} s per measurement after {warmup:g} s warm-up; run took {total_s:.0f} s; "
        f"stock verify exit {verified.returncode}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "backend": args.backend if not args.database_url else shown,
                    "products": products,
                    "movements": movements,
                    "generated": fresh,
                    "generation_seconds": round(generation_s, 1),
                    "duration": duration,
                    "warmup": warmup,
                    "environment": env_facts,
                    "run_seconds": round(total_s, 1),
                    "verify_exit": verified.returncode,
                    "rows": [{**asdict(r), "ratio": round(r.ratio, 3)} for r in rows],
                },
                indent=2,
            )
        )
    return 0 if verified.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
