"""``storekeeper stock ...``: checks on the stock ledger of a database, and its checkpoints.

``storekeeper stock verify`` recomputes every stock level from the append-only ledger
(:func:`service.domain.ledger.recompute_levels`), checks that no level is negative and that
every checkpoint equals the ledger summed up to its moment
(:func:`service.domain.checkpoints.verify`). It prints a summary and exits 0 when the levels,
the checkpoints and the ledger agree, 1 when they do not, 2 when the database cannot be
checked at all (unreachable, not migrated).

``storekeeper stock checkpoint [--at MOMENT | --every month|week]`` closes the checkpoint at a
past moment (default: the start of the current UTC month or ISO week) through
:func:`service.domain.checkpoints.close`.

It reads in one snapshot (REPEATABLE READ, read-only on PostgreSQL; one read transaction on
SQLite, which WAL keeps consistent), so it can run against a live database without seeing a
document half-way between its movements and its levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    database_url_option,
    open_database,
    redacted,
    render_table,
)
from service.db import snapshot_engine
from service.formats import InvalidTimestamp, format_timestamp, parse_timestamp

REQUIRED_TABLES = (
    "stock_levels",
    "stock_movements",
    "stock_documents",
    "products",
    "locations",
    "stock_checkpoints",
    "stock_checkpoint_balances",
)
NUMERIC_COLUMNS = {"product_id", "location_id", "level", "ledger", "diff"}


@dataclass
class VerifyReport:
    levels: int = 0
    movements: int = 0
    documents: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)
    negative: list[dict[str, Any]] = field(default_factory=list)
    skus: dict[int, str] = field(default_factory=dict)
    codes: dict[int, str] = field(default_factory=dict)
    checkpoints: list[Any] = field(default_factory=list)

    @property
    def bad_checkpoints(self) -> list[Any]:
        return [check for check in self.checkpoints if not check.ok]

    @property
    def ok(self) -> bool:
        return not self.drift and not self.negative and not self.bad_checkpoints


def verify_database(engine: Engine) -> VerifyReport:
    """Recompute every level from the ledger, in one read-only snapshot."""
    from service.domain import checkpoints
    from service.domain.ledger import recompute_levels
    from service.models import Location, Product, StockDocument, StockLevel, StockMovement

    report = VerifyReport()
    with Session(snapshot_engine(engine)) as session, session.begin():
        report.levels = session.scalar(select(func.count()).select_from(StockLevel)) or 0
        report.movements = session.scalar(select(func.count()).select_from(StockMovement)) or 0
        report.documents = session.scalar(select(func.count()).select_from(StockDocument)) or 0
        report.drift = recompute_levels(session)
        report.checkpoints = checkpoints.verify(session)
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


def _first_row(rows: list[tuple]) -> str:
    """The first of a checkpoint's differing rows, space-separated (``-`` for none)."""
    return " ".join(map(str, rows[0])) if rows else "-"


def render(report: VerifyReport) -> str:
    summary = [
        ("levels checked", report.levels),
        ("movements", report.movements),
        ("documents", report.documents),
        ("drift rows", len(report.drift)),
        ("negative levels", len(report.negative)),
        ("checkpoints", len(report.checkpoints)),
        ("bad checkpoints", len(report.bad_checkpoints)),
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
            render_table(
                ["product_id", "sku", "location_id", "location", "level", "ledger", "diff"],
                rows,
                right_aligned=NUMERIC_COLUMNS,
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
            render_table(
                ["product_id", "sku", "location_id", "location", "level"],
                rows,
                right_aligned=NUMERIC_COLUMNS,
            ),
        ]
    if report.bad_checkpoints:
        rows = [
            [
                str(check.id),
                format_timestamp(check.at),
                "ok" if check.header_ok else "wrong",
                _first_row(check.only_in_checkpoint),
                _first_row(check.only_in_ledger),
            ]
            for check in report.bad_checkpoints
        ]
        out += [
            "",
            "checkpoints that differ from the ledger summed to their moment "
            "(rows: product_id location_id on_hand average_cost in millionths):",
            render_table(
                ["id", "at", "header", "only in checkpoint", "only in ledger"],
                rows,
                right_aligned={"id"},
            ),
        ]
    ok_line = "OK: every level and checkpoint equals its ledger sum"
    out += ["", ok_line if report.ok else "FAILED: see above"]
    return "\n".join(out)


@click.group()
def stock() -> None:
    """Stock ledger maintenance."""


@stock.command()
@database_url_option("Database to check.")
def verify(database_url: str) -> None:
    """Recompute every stock level and checkpoint from the ledger; exit 1 on any difference.

    Exit codes: 0 levels, checkpoints and ledger agree, 1 drift, a negative level or a
    checkpoint that differs, 2 the database could not be checked (unreachable or not
    migrated).
    """
    click.echo(f"{'database:':<17}{redacted(database_url)}")
    with open_database(database_url, required_tables=REQUIRED_TABLES) as database:
        report = verify_database(database.engine)
    click.echo(render(report))
    raise SystemExit(EXIT_OK if report.ok else EXIT_FAILED)


@stock.command()
@database_url_option("Database to close the checkpoint in.")
@click.option(
    "--at",
    "at_text",
    help=(
        "The moment to close (RFC 3339; no offset means UTC): every movement at or before it "
        "is in the checkpoint. Default: the start of the current --every period. Must be at "
        "least 10 minutes in the past."
    ),
)
@click.option(
    "--every",
    type=click.Choice(["month", "week"]),
    default="month",
    show_default=True,
    help=(
        "Without --at: close the start of the current UTC month, or of the ISO week (Monday "
        "00:00 UTC). Weekly checkpoints keep past valuations of a large ledger fast (the "
        "README's benchmarks); each costs one row per (product, location) held."
    ),
)
def checkpoint(database_url: str, at_text: str | None, every: str) -> None:
    """Close a stock checkpoint: the ledger summed at a past moment, for past valuations.

    Idempotent: closing a moment again reports the existing checkpoint, so it can run daily
    from cron, e.g. at 00:30 UTC (not within 10 minutes of midnight, which is refused as too
    recent): each month (or week) is closed once.

    Exit codes: 0 closed (or closed already), 1 refused (the moment is too recent, or a
    transaction that began before it is still open), 2 bad arguments or the database could
    not be used.
    """
    from service.domain import checkpoints

    if at_text is None:
        at = checkpoints.start_of_period(every)
    else:
        try:
            at = parse_timestamp(at_text)
        except InvalidTimestamp as exc:
            raise click.BadParameter(str(exc), param_hint="--at") from exc
    click.echo(f"{'database:':<17}{redacted(database_url)}")
    with (
        open_database(database_url, required_tables=REQUIRED_TABLES) as database,
        database.transaction(write=True) as session,
    ):
        try:
            closed = checkpoints.close(session, at)
        except checkpoints.CheckpointRefused as exc:
            click.echo(f"refused: {exc}", err=True)
            raise SystemExit(EXIT_FAILED) from None
    state = "closed" if closed.created else "closed already"
    click.echo(f"{'checkpoint:':<17}{closed.id} at {format_timestamp(closed.at)} ({state})")
    click.echo(f"{'pairs held:':<17}{closed.pairs}")
    click.echo(f"{'units:':<17}{closed.quantity}")
    raise SystemExit(EXIT_OK)
