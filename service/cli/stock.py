"""``storekeeper stock ...``: checks on the stock ledger of a database.

``storekeeper stock verify`` recomputes every stock level from the append-only ledger
(:func:`service.domain.ledger.recompute_levels`) and checks that no level is negative. It prints a
summary and exits 0 when the levels and the ledger agree, 1 when they do not, 2 when the
database cannot be checked at all (unreachable, not migrated).

It reads in one snapshot (REPEATABLE READ, read-only on PostgreSQL; one read transaction on
SQLite, which WAL keeps consistent), so it can run against a live database without seeing a
document half-way between its movements and its levels.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_UNUSABLE = 2
REQUIRED_TABLES = ("stock_levels", "stock_movements", "stock_documents", "products", "locations")


@dataclass
class VerifyReport:
    levels: int = 0
    movements: int = 0
    documents: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)
    negative: list[dict[str, Any]] = field(default_factory=list)
    skus: dict[int, str] = field(default_factory=dict)
    codes: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.drift and not self.negative


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _default_database_url() -> str:
    from service.config import Settings

    return Settings.from_env().database_url


def _snapshot_engine(engine: Engine) -> Engine:
    """An engine whose transactions read one consistent snapshot."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    # SQLite (service.db): a deferred BEGIN; in WAL mode the first read fixes the snapshot.
    return engine


def verify_database(engine: Engine) -> VerifyReport:
    """Recompute every level from the ledger, in one read-only snapshot."""
    from service.domain.ledger import recompute_levels
    from service.models import Location, Product, StockDocument, StockLevel, StockMovement

    report = VerifyReport()
    with Session(_snapshot_engine(engine)) as session, session.begin():
        report.levels = session.scalar(select(func.count()).select_from(StockLevel)) or 0
        report.movements = session.scalar(select(func.count()).select_from(StockMovement)) or 0
        report.documents = session.scalar(select(func.count()).select_from(StockDocument)) or 0
        report.drift = recompute_levels(session)
        report.negative = [
            {
                "product_id": level.product_id,
                "location_id": level.location_id,
                "level": level.on_hand,
            }
            for level in session.scalars(
                select(StockLevel)
                .where(StockLevel.on_hand < 0)
                .order_by(StockLevel.product_id, StockLevel.location_id)
            )
        ]
        rows = report.drift + report.negative
        product_ids = {row["product_id"] for row in rows}
        location_ids = {row["location_id"] for row in rows}
        if product_ids:
            report.skus = dict(
                session.execute(
                    select(Product.id, Product.sku).where(Product.id.in_(product_ids))
                ).all()
            )
        if location_ids:
            report.codes = dict(
                session.execute(
                    select(Location.id, Location.code).where(Location.id.in_(location_ids))
                ).all()
            )
    report.drift.sort(key=lambda row: (row["product_id"], row["location_id"]))
    return report


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = [h not in ("sku", "location") for h in headers]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join(
        [line(headers), line(["-" * width for width in widths]), *(line(r) for r in rows)]
    )


def render(report: VerifyReport) -> str:
    summary = [
        ("levels checked", report.levels),
        ("movements", report.movements),
        ("documents", report.documents),
        ("drift rows", len(report.drift)),
        ("negative levels", len(report.negative)),
    ]
    out = [f"{label + ':':<17}{value}" for label, value in summary]
    if report.drift:
        rows = []
        for row in report.drift:
            level, ledger_sum = row["level"], row["ledger"]
            difference = (level or 0) - ledger_sum
            rows.append(
                [
                    str(row["product_id"]),
                    report.skus.get(row["product_id"], "?"),
                    str(row["location_id"]),
                    report.codes.get(row["location_id"], "?"),
                    "missing" if level is None else str(level),
                    str(ledger_sum),
                    f"{difference:+d}",
                ]
            )
        out += [
            "",
            "drift (level differs from the sum of its movements, or is negative):",
            _table(
                ["product_id", "sku", "location_id", "location", "level", "ledger", "diff"],
                rows,
            ),
        ]
    if report.negative:
        rows = [
            [
                str(row["product_id"]),
                report.skus.get(row["product_id"], "?"),
                str(row["location_id"]),
                report.codes.get(row["location_id"], "?"),
                str(row["level"]),
            ]
            for row in report.negative
        ]
        out += [
            "",
            "negative levels:",
            _table(["product_id", "sku", "location_id", "location", "level"], rows),
        ]
    out += ["", "OK: every level equals its ledger sum" if report.ok else "FAILED: see above"]
    return "\n".join(out)


@click.group()
def stock() -> None:
    """Stock ledger maintenance."""


@stock.command()
@click.option(
    "--database-url",
    default=lambda: os.environ.get("DATABASE_URL") or _default_database_url(),
    show_default="DATABASE_URL or the local SQLite file",
    help="Database to check.",
)
def verify(database_url: str) -> None:
    """Recompute every stock level from the ledger; exit 1 on drift or a negative level.

    Exit codes: 0 levels and ledger agree, 1 drift or a negative level, 2 the database
    could not be checked (unreachable or not migrated).
    """
    with warnings.catch_warnings():
        # connexion (imported through the ledger's problem types) warns about starlette's
        # test client on import: noise for a command-line user.
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from service.db import make_engine
        from service.domain.ledger import recompute_levels  # noqa: F401  (imported once, quietly)

    click.echo(f"{'database:':<17}{_redacted(database_url)}")
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        if path not in (None, "", ":memory:") and not os.path.exists(path):
            click.echo(f"error: SQLite database {path} does not exist", err=True)
            raise SystemExit(EXIT_UNUSABLE)
    engine = make_engine(database_url)
    try:
        missing = [t for t in REQUIRED_TABLES if not inspect(engine).has_table(t)]
        if missing:
            click.echo(
                f"error: the database has no {', '.join(missing)} table(s); "
                "run 'storekeeper db upgrade' first",
                err=True,
            )
            raise SystemExit(EXIT_UNUSABLE)
        report = verify_database(engine)
    except SQLAlchemyError as exc:
        click.echo(f"error: cannot read the database: {exc.__class__.__name__}: {exc}", err=True)
        raise SystemExit(EXIT_UNUSABLE) from exc
    finally:
        engine.dispose()
    click.echo(render(report))
    raise SystemExit(EXIT_OK if report.ok else EXIT_DRIFT)
