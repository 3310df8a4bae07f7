#!/usr/bin/env python3
"""Benchmark reports, product export and import on a large database, against the REAL server.

For each backend it builds a database of ``--products`` products and ``--movements`` ledger
movements over ``--days`` days with ``service.datagen`` (timed), checks it with
``storekeeper stock verify``'s check, closes a stock checkpoint at every month start of the
history (``--checkpoints``, timed; ``none`` for the ledger alone), starts
``scripts/serve-production.sh`` (alembic upgrade + gunicorn, ``--workers`` uvicorn workers,
default 1 so that the peak RSS below is the one of the process that served), creates an
admin with ``storekeeper users create``, logs in, and times, ``--repeat`` times each (median
and max):

* GET /api/v1/products/export: CSV and JSON, with the bytes received (first, on the fresh
  worker, so that its RSS before is the baseline);
* GET /api/v1/reports/valuation: group_by category and location, now and ``as_of`` the
  middle of the history, and by category ``as_of`` 10 days ago;
* GET /api/v1/reports/movements: group_by day, product, location and kind over the whole
  history, as JSON and as CSV (``Accept: text/csv``); by product the JSON is a page (the
  first, and the 51st or the last), and the default period (30 days) too;
* POST /api/v1/products/import/csv: the exported CSV back as a file upload (``dry_run=true``,
  then for real), and a CSV of as many new SKUs as the catalog has products (dry run, then
  for real: every repetition adds its own SKUs).

For every request it also records the serving worker's peak RSS (``VmHWM`` of
``/proc/<pid>/status``, reset before each request through ``/proc/<pid>/clear_refs`` when
allowed, so it is the peak of that request) next to its RSS before. An endpoint that answers
404 or 405 is reported as missing, not as a failure of the script.

Output: a markdown table per backend on stdout and ``artifacts/bench-reports-<time>.json``
(and ``.md``) with everything, including the generation phases.

    .venv/bin/python scripts/bench_reports.py --backend sqlite
    .venv/bin/python scripts/bench_reports.py --backend postgresql --reuse
    .venv/bin/python scripts/bench_reports.py --backend both --small   # well under a minute

Databases: without ``--reuse`` a throwaway one (SQLite in a temporary folder; PostgreSQL
``storekeeper_bench_<random>`` created and dropped through ``--postgres-admin-url``, default
``$STOREKEEPER_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``).
With ``--reuse`` the generated database is kept (``artifacts/bench-db/*.db``, or the
PostgreSQL database ``storekeeper_bench_<products>_<movements>_<seed>``) and reused by the
next run with the same sizes; each run works on a copy, since imports write.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

# connexion warns about starlette's test client when imported (via service.domain.ledger): noise.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from tests.live_server import LiveServer, live_server, venv_bin  # noqa: E402

POSTGRES_ENV = "STOREKEEPER_TEST_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ARTIFACTS = ROOT / "artifacts"
MISSING = {404, 405}
REQUEST_TIMEOUT = 900.0


# --- databases ------------------------------------------------------------------------------


@dataclass
class Generated:
    seconds: float | None  # None: reused
    phases: dict[str, float] = field(default_factory=dict)
    documents: int = 0
    movements: int = 0
    levels: int = 0
    low_stock_products: int = 0
    foreign_keys: str = ""
    verify_seconds: float = 0.0
    verify: str = ""
    first_movement_at: str = ""
    last_movement_at: str = ""
    # Closed on the served copy before the server starts (--checkpoints): at, seconds, pairs.
    checkpoints: list[dict] = field(default_factory=list)


def log(backend: str, message: str) -> None:
    print(f"[{backend}] {message}", file=sys.stderr, flush=True)


def _admin_engine(admin_url: str):
    return create_engine(admin_url, isolation_level="AUTOCOMMIT")


def _database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _create_database(admin_url: str, name: str, template: str | None = None) -> None:
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            clause = f' TEMPLATE "{template}"' if template else ""
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    finally:
        engine.dispose()


def _drop_database(admin_url: str, name: str) -> None:
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def _postgres_exists(admin_url: str, name: str) -> bool:
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            return bool(
                connection.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                ).scalar()
            )
    finally:
        engine.dispose()


def _has_dataset(url: str, products: int, movements: int) -> bool:
    """A complete earlier build: migrated, with exactly these many products and movements."""
    from service.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT (SELECT COUNT(*) FROM products), (SELECT COUNT(*) FROM stock_movements)"
                )
            ).one()
        return tuple(found) == (products, movements)
    except Exception:
        return False
    finally:
        engine.dispose()


def build(url: str, args: argparse.Namespace, backend: str) -> Generated:
    """Migrate, generate (timed) and verify."""
    from service import migrate
    from service.cli.stock import verify_database
    from service.datagen import GenerationSpec, generate
    from service.db import make_engine

    migrate.upgrade(url)
    spec = GenerationSpec(
        products=args.products,
        movements=args.movements,
        locations=args.locations,
        days=args.days,
        seed=args.seed,
    )
    log(backend, f"generating {args.products} products, {args.movements} movements ...")
    result = generate(url, spec, progress=lambda message: log(backend, message))
    log(backend, f"generated in {result.seconds:.1f} s {_rounded(result.phases)}")
    generated = Generated(
        seconds=round(result.seconds, 2),
        phases=_rounded(result.phases),
        documents=sum(result.documents.values()),
        movements=result.movements,
        levels=result.levels,
        low_stock_products=result.low_stock_products,
        foreign_keys=result.foreign_keys,
        first_movement_at=result.first_movement_at.isoformat() if result.first_movement_at else "",
        last_movement_at=result.last_movement_at.isoformat() if result.last_movement_at else "",
    )
    began = time.perf_counter()
    engine = make_engine(url)
    try:
        report = verify_database(engine)
    finally:
        engine.dispose()
    generated.verify_seconds = round(time.perf_counter() - began, 2)
    generated.verify = (
        f"{'ok' if report.ok else 'FAILED'}: {report.levels} levels, {report.movements} "
        f"movements, {len(report.drift)} drift rows, {len(report.negative)} negative"
    )
    log(backend, f"stock verify {generated.verify} ({generated.verify_seconds} s)")
    return generated


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 2) for key, value in values.items()}


@contextlib.contextmanager
def database(backend: str, args: argparse.Namespace) -> Iterator[tuple[str, Generated]]:
    """The database to serve: built (throwaway), or a copy of a kept build (--reuse)."""
    tag = f"{args.products}_{args.movements}_{args.seed}"
    if backend == "sqlite":
        if not args.reuse:
            with tempfile.TemporaryDirectory(prefix="storekeeper-bench-") as folder:
                url = f"sqlite:///{folder}/bench.db"
                yield url, build(url, args, backend)
            return
        kept = ARTIFACTS / "bench-db" / f"bench-{tag}.db"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept_url = f"sqlite:///{kept}"
        if kept.exists() and _has_dataset(kept_url, args.products, args.movements):
            generated = Generated(seconds=None, verify="(reused)")
            log(backend, f"reusing {kept}")
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{kept}{suffix}").unlink(missing_ok=True)
            generated = build(kept_url, args, backend)
        _checkpoint(kept)
        with tempfile.TemporaryDirectory(prefix="storekeeper-bench-") as folder:
            copy = Path(folder) / "bench.db"
            shutil.copyfile(kept, copy)
            yield f"sqlite:///{copy}", generated
        return

    admin_url = args.postgres_admin_url
    if not args.reuse:
        name = f"storekeeper_bench_{uuid.uuid4().hex[:12]}"
        _create_database(admin_url, name)
        try:
            url = _database_url(admin_url, name)
            yield url, build(url, args, backend)
        finally:
            _drop_database(admin_url, name)
        return
    kept = f"storekeeper_bench_{tag}"
    kept_url = _database_url(admin_url, kept)
    if _postgres_exists(admin_url, kept) and _has_dataset(kept_url, args.products, args.movements):
        generated = Generated(seconds=None, verify="(reused)")
        log(backend, f"reusing database {kept}")
    else:
        _drop_database(admin_url, kept)
        _create_database(admin_url, kept)
        generated = build(kept_url, args, backend)
    copy = f"storekeeper_bench_run_{uuid.uuid4().hex[:8]}"
    _create_database(admin_url, copy, template=kept)  # a file copy: seconds, not minutes
    try:
        yield _database_url(admin_url, copy), generated
    finally:
        _drop_database(admin_url, copy)


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the database file, so that a plain file copy is complete."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def _period_starts(first: datetime, last: datetime, every: str) -> list[datetime]:
    """UTC month (or ISO week) starts after ``first`` and at least an hour before ``last``."""
    moments = []
    if every == "monthly":
        moment = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        while True:
            year, month = divmod(moment.month, 12)
            moment = moment.replace(year=moment.year + year, month=month + 1)
            if moment > last - timedelta(hours=1):
                return moments
            moments.append(moment)
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    moment = day - timedelta(days=day.weekday())
    while True:
        moment += timedelta(days=7)
        if moment > last - timedelta(hours=1):
            return moments
        moments.append(moment)


def close_checkpoints(url: str, every: str, backend: str, generated: Generated) -> None:
    """Close a checkpoint at every period start of the history, oldest first, as
    ``storekeeper stock checkpoint --at`` would (each one from the one before it)."""
    from sqlalchemy import func, select

    from service.db import Database
    from service.domain import checkpoints
    from service.models import StockMovement

    if every == "none":
        return
    database = Database(url)
    try:
        with database.transaction(write=False) as session:
            first, last = session.execute(
                select(func.min(StockMovement.created_at), func.max(StockMovement.created_at))
            ).one()
        if first is None:
            return
        moments = _period_starts(first, min(last, datetime.now(UTC)), every)
        log(backend, f"closing {len(moments)} {every} checkpoints ...")
        for moment in moments:
            began = time.perf_counter()
            with database.transaction() as session:
                closed = checkpoints.close(session, moment)
            seconds = round(time.perf_counter() - began, 2)
            generated.checkpoints.append(
                {"at": moment.isoformat(), "seconds": seconds, "pairs": closed.pairs}
            )
        spent = [c["seconds"] for c in generated.checkpoints]
        log(
            backend,
            f"closed {len(spent)} checkpoints in {sum(spent):.1f} s "
            f"(each {min(spent, default=0)}-{max(spent, default=0)} s)",
        )
    finally:
        database.dispose()


# --- the server's worker --------------------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return []
    return [int(pid) for pid in children]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    accept: str = "application/json"
    body: bytes | None = None
    content_type: str | None = None
    # A body per repetition (new SKUs each time), instead of ``body``.
    bodies: list[bytes] | None = None


@dataclass
class Result:
    case: str
    request: str
    status: str = ""
    runs: list[float] = field(default_factory=list)
    median_s: float | None = None
    max_s: float | None = None
    bytes: int = 0
    rss_before_mib: float | None = None
    peak_rss_mib: float | None = None
    peak_reset: bool = False
    note: str = ""


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def measure(
    client: httpx.Client, case: Case, repeat: int, worker: int | None
) -> tuple[Result, bytes]:
    query = "&".join(f"{k}={v}" for k, v in case.params.items())
    result = Result(
        case=case.name,
        request=f"{case.method} {case.path}" + (f"?{query}" if query else ""),
    )
    last_body = b""
    statuses = []
    peaks, befores = [], []
    for index in range(repeat):
        headers = {"Accept": case.accept}
        if case.content_type:
            headers["Content-Type"] = case.content_type
        body = case.bodies[index % len(case.bodies)] if case.bodies else case.body
        if worker is not None:
            result.peak_reset = reset_peak(worker)
            befores.append(memory(worker).get("VmRSS"))
        chunks = []
        began = time.perf_counter()
        try:
            with client.stream(
                case.method,
                case.path,
                params=case.params,
                headers=headers,
                content=body,
                timeout=REQUEST_TIMEOUT,
            ) as response:
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                status = response.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        elapsed = time.perf_counter() - began
        if worker is not None:
            peaks.append(memory(worker).get("VmHWM"))
        statuses.append(status)
        if status in MISSING:
            result.status = f"missing ({status})"
            return result, b""
        last_body = b"".join(chunks)
        result.runs.append(round(elapsed, 3))
        result.bytes = len(last_body)
        if status != 200:
            result.note = last_body[:300].decode("utf-8", "replace")
    result.status = ",".join(sorted({str(s) for s in statuses}))
    result.median_s = round(statistics.median(result.runs), 3)
    result.max_s = round(max(result.runs), 3)
    befores = [b for b in befores if b is not None]
    peaks = [p for p in peaks if p is not None]
    result.rss_before_mib = _mib(befores[0]) if befores else None  # before the first run
    result.peak_rss_mib = _mib(max(peaks)) if peaks else None
    return result, last_body


def login(server: LiveServer) -> dict[str, str]:
    """A new admin through the CLI, then a token through POST /api/v1/auth/login."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    password = f"bench-{uuid.uuid4().hex}"
    env = {**os.environ, "DATABASE_URL": server.database_url}
    subprocess.run(
        [
            str(venv_bin() / "storekeeper"),
            "users",
            "create",
            "--email",
            email,
            "--name",
            "Bench admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        input=f"{password}\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    response = httpx.post(
        f"{server.base_url}/api/v1/auth/login",
        json={"email": email, "password": password},
        timeout=60,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def new_skus_csv(rows: int, prefix: str) -> bytes:
    lines = ["sku,name,category_path,unit_of_measure,reorder_point,reorder_quantity"]
    lines += [
        f"{prefix}-{i:06d},Bench import item {i},Tools/Hand tools,each,{i % 20},{(i % 20) * 3}"
        for i in range(1, rows + 1)
    ]
    return upload(("\r\n".join(lines) + "\r\n").encode())


IMPORT_CSV = "/api/v1/products/import/csv"
UPLOAD_BOUNDARY = "bench-reports-boundary"
UPLOAD_TYPE = f"multipart/form-data; boundary={UPLOAD_BOUNDARY}"


def upload(csv: bytes) -> bytes:
    """The CSV import's form (``UPLOAD_TYPE``): one part, ``file``, holding ``csv``."""
    head = (
        f"--{UPLOAD_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="products.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    )
    return head.encode() + csv + f"\r\n--{UPLOAD_BOUNDARY}--\r\n".encode()


def run_cases(
    server: LiveServer, args: argparse.Namespace, generated: Generated, backend: str
) -> list[Result]:
    headers = login(server)
    workers = worker_pids(server.process.pid)
    worker = workers[0] if len(workers) == 1 else None
    if worker is None:
        log(backend, f"{len(workers)} workers: peak RSS is not attributed to a request")
    now = datetime.now(UTC)
    start = now - timedelta(days=args.days + 2)
    middle = now - timedelta(days=args.days / 2)
    whole = {"from": _iso(start), "to": _iso(now + timedelta(hours=1))}
    cases = [
        Case(
            "valuation by category, now",
            "GET",
            "/api/v1/reports/valuation",
            {"group_by": "category"},
        ),
        Case(
            "valuation by location, now",
            "GET",
            "/api/v1/reports/valuation",
            {"group_by": "location"},
        ),
        Case(
            "valuation by category, as_of middle",
            "GET",
            "/api/v1/reports/valuation",
            {"group_by": "category", "as_of": _iso(middle)},
        ),
        Case(
            "valuation by location, as_of middle",
            "GET",
            "/api/v1/reports/valuation",
            {"group_by": "location", "as_of": _iso(middle)},
        ),
    ]
    for group in ("day", "product", "location", "kind"):
        for accept, label in (("application/json", "JSON"), ("text/csv", "CSV")):
            cases.append(
                Case(
                    f"movements by {group}, whole history, {label}",
                    "GET",
                    "/api/v1/reports/movements",
                    {"group_by": group, **whole},
                    accept=accept,
                )
            )
    cases += [
        Case(
            "valuation by category, as_of 10 days ago",
            "GET",
            "/api/v1/reports/valuation",
            {"group_by": "category", "as_of": _iso(now - timedelta(days=10))},
        ),
        Case(
            "movements by product, last 30 days (default), JSON",
            "GET",
            "/api/v1/reports/movements",
            {"group_by": "product"},
        ),
    ]
    results: list[Result] = []
    with httpx.Client(base_url=server.base_url, headers=headers) as client:
        # The JSON summary by product comes in pages: time a page deep in the SKU order too.
        first = client.get(
            "/api/v1/reports/movements",
            params={"group_by": "product", **whole},
            timeout=REQUEST_TIMEOUT,
        )
        cursor = first.json().get("next_cursor") if first.status_code == 200 else None
        page_no = 2
        while cursor and page_no < 51:
            following = client.get(
                "/api/v1/reports/movements",
                params={"group_by": "product", "cursor": cursor, **whole},
                timeout=REQUEST_TIMEOUT,
            ).json()
            if not following.get("next_cursor"):
                break
            cursor, page_no = following["next_cursor"], page_no + 1
        if cursor:
            cases.append(
                Case(
                    f"movements by product, whole history, JSON page {page_no}",
                    "GET",
                    "/api/v1/reports/movements",
                    {"group_by": "product", "cursor": cursor, **whole},
                )
            )
        # The exports first, on the fresh worker: Python keeps memory it freed, so a later
        # baseline would include the reports' peaks and hide what the export needs.
        export_csv, exported = _run(
            client,
            Case("export CSV", "GET", "/api/v1/products/export", accept="text/csv"),
            args.repeat,
            worker,
            backend,
        )
        results.append(export_csv)
        results.append(
            _run(
                client,
                Case("export JSON", "GET", "/api/v1/products/export"),
                args.repeat,
                worker,
                backend,
            )[0]
        )
        for case in cases:
            results.append(_run(client, case, args.repeat, worker, backend)[0])
        if exported and export_csv.status == "200":
            for dry_run in ("true", "false"):
                results.append(
                    _run(
                        client,
                        Case(
                            f"import the exported CSV, dry_run={dry_run}",
                            "POST",
                            IMPORT_CSV,
                            {"dry_run": dry_run},
                            body=upload(exported),
                            content_type=UPLOAD_TYPE,
                        ),
                        args.repeat,
                        worker,
                        backend,
                    )[0]
                )
        else:
            results.append(
                Result("import the exported CSV", f"POST {IMPORT_CSV}", "skipped (no export)")
            )
        rows = args.products
        run_id = uuid.uuid4().hex[:6].upper()
        dry = new_skus_csv(rows, f"NEW-{run_id}-D")
        results.append(
            _run(
                client,
                Case(
                    f"import {rows} new SKUs, dry_run=true",
                    "POST",
                    IMPORT_CSV,
                    {"dry_run": "true"},
                    body=dry,
                    content_type=UPLOAD_TYPE,
                ),
                args.repeat,
                worker,
                backend,
            )[0]
        )
        results.append(
            _run(
                client,
                Case(
                    f"import {rows} new SKUs",
                    "POST",
                    IMPORT_CSV,
                    content_type=UPLOAD_TYPE,
                    bodies=[new_skus_csv(rows, f"NEW-{run_id}-{i}") for i in range(args.repeat)],
                ),
                args.repeat,
                worker,
                backend,
            )[0]
        )
    return results


def _run(
    client: httpx.Client, case: Case, repeat: int, worker: int | None, backend: str
) -> tuple[Result, bytes]:
    log(backend, f"{case.name} ...")
    result, body = measure(client, case, repeat, worker)
    log(
        backend,
        f"  {result.status}: median {result.median_s} s, max {result.max_s} s, "
        f"{result.bytes} bytes, peak RSS {result.peak_rss_mib} MiB"
        + (f" -- {result.note[:200]}" if result.note else ""),
    )
    return result, body


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- output ---------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _checkpoint_line(generated: Generated) -> str:
    if not generated.checkpoints:
        return "No checkpoints."
    spent = [c["seconds"] for c in generated.checkpoints]
    pairs = generated.checkpoints[-1]["pairs"]
    return (
        f"{len(spent)} checkpoints closed in {sum(spent):.1f} s (each {min(spent)}-"
        f"{max(spent)} s, the last holding {pairs:,} pairs)."
    )


def markdown(
    backend: str, args: argparse.Namespace, generated: Generated, results: list[Result]
) -> str:
    phases = ", ".join(f"{name} {seconds} s" for name, seconds in generated.phases.items())
    made = (
        "reused an earlier build"
        if generated.seconds is None
        else f"generated in {generated.seconds:.1f} s ({phases}; foreign keys "
        f"{generated.foreign_keys})"
    )
    lines = [
        f"### {backend}: {args.products:,} products, {args.movements:,} movements, "
        f"{args.locations} locations, {args.days} days",
        "",
        f"Database {made}; stock verify {generated.verify}"
        + (f" in {generated.verify_seconds} s" if generated.verify_seconds else "")
        + f". {_checkpoint_line(generated)}"
        + f" Each request {args.repeat}x, gunicorn workers={args.workers}.",
        "",
        "| case | status | median s | max s | bytes | RSS before MiB | peak RSS MiB |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.status} | {_seconds(r.median_s)} | {_seconds(r.max_s)} | "
            f"{r.bytes:,} | {'' if r.rss_before_mib is None else r.rss_before_mib} | "
            f"{'' if r.peak_rss_mib is None else r.peak_rss_mib} |"
        )
    return "\n".join(lines)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--movements", type=int, default=1_000_000)
    parser.add_argument("--locations", type=int, default=8)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--small", action="store_true", help="2,000 products and 20,000 movements (a quick run)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per request")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (default 1)")
    parser.add_argument("--reuse", action="store_true", help="keep the build and reuse it")
    parser.add_argument(
        "--checkpoints",
        choices=("monthly", "weekly", "none"),
        default="monthly",
        help="stock checkpoints to close over the history before serving (default monthly)",
    )
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES,
        help=f"admin URL for the PostgreSQL databases (default: ${POSTGRES_ENV}, else "
        f"{DEFAULT_POSTGRES})",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs")
    args = parser.parse_args(argv)
    if args.small:
        args.products, args.movements = 2_000, 20_000
        args.days = min(args.days, 120)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def bench(backend: str, args: argparse.Namespace) -> tuple[Generated, list[Result]]:
    log_path = Path(
        tempfile.mkstemp(prefix=f"storekeeper-bench-reports-{backend}-", suffix=".log")[1]
    )
    env = {
        "LOG_LEVEL": "WARNING",
        "STOREKEEPER_VALIDATE_RESPONSES": "false",
        "RATE_LIMIT_ENABLED": "false",
    }
    try:
        with database(backend, args) as (url, generated):
            close_checkpoints(url, args.checkpoints, backend, generated)
            with live_server(
                url, workers=args.workers, env=env, log_path=log_path, ready_timeout=180
            ) as server:
                log(backend, f"server {server.base_url} ready")
                results = run_cases(server, args, generated, backend)
    finally:
        if args.keep_logs:
            log(backend, f"server log: {log_path}")
        else:
            log_path.unlink(missing_ok=True)
    return generated, results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    runs, tables = [], []
    for backend in backends:
        generated, results = bench(backend, args)
        runs.append(
            {
                "backend": backend,
                "generated": asdict(generated),
                "results": [asdict(r) for r in results],
            }
        )
        tables.append(markdown(backend, args, generated, results))
        print(tables[-1], flush=True)
        print(flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or ARTIFACTS / f"bench-reports-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": datetime.now(UTC).isoformat(),
        "commit": _git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "parameters": {
            key: getattr(args, key)
            for key in (
                "products",
                "movements",
                "locations",
                "days",
                "seed",
                "repeat",
                "workers",
                "checkpoints",
            )
        },
        "runs": runs,
    }
    output.write_text(json.dumps(document, indent=2) + "\n")
    output.with_suffix(".md").write_text("\n\n".join(tables) + "\n")
    print(f"wrote {output} and {output.with_suffix('.md')}", file=sys.stderr)
    failed = any(
        r["status"] not in ("200",) and not r["status"].startswith(("missing", "skipped"))
        for run in runs
        for r in run["results"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
