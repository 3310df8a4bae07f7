"""``storekeeper report ...``: the managers' reports, straight from the database.

The same functions as ``GET /api/v1/reports/*`` (service/domain/reports.py) compute the rows, so
the command and the API always agree. Output is an aligned table (default), CSV (exactly
the API's ``text/csv``) or JSON (exactly the API's JSON body). Each report reads one
consistent snapshot (REPEATABLE READ, read-only, on PostgreSQL; one read transaction on
SQLite). Exit codes: 0 printed, 2 bad arguments or a database that cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from sqlalchemy.orm import Session

from service.cli.common import database_url_option, open_database, render_table
from service.db import snapshot_engine
from service.domain import reports
from service.formats import InvalidTimestamp, parse_timestamp

REQUIRED_TABLES = ("stock_levels", "stock_movements", "products", "locations", "categories")
NUMERIC_COLUMNS = {
    "products",
    "quantity",
    "value",
    "quantity_in",
    "quantity_out",
    "net",
    "movements",
}


def _timestamp(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except InvalidTimestamp as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


def _run(database_url: str, compute: Callable[[Session], reports.Report]) -> reports.Report:
    with (
        open_database(database_url, required_tables=REQUIRED_TABLES) as database,
        Session(snapshot_engine(database.engine)) as session,
        session.begin(),
    ):
        return compute(session)


def render(report: reports.Report) -> str:
    """A title, the rows under aligned column headers, and the totals."""
    header = report.header
    if report.kind == "valuation":
        title = f"Stock valuation by {header['group_by']} as of {header['as_of']}"
    else:
        title = (
            f"Stock movements by {header['group_by']} from {header['from']} "
            f"to {header['to']} (exclusive)"
        )
    columns = list(report.columns)
    cell = lambda value: "" if value is None else str(value)  # noqa: E731
    rows = [[cell(row[c]) for c in columns] for row in report.rows]
    totals: dict[str, Any] = {"key": reports.TOTAL_KEY, "label": "", "name": "", **report.totals}
    table = render_table(
        columns,
        rows,
        right_aligned=NUMERIC_COLUMNS,
        footer=[[cell(totals[c]) for c in columns]],
        empty="(no rows)",
    )
    return f"{title}\n\n{table}"


def _emit(report: reports.Report, output_format: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    elif output_format == "csv":
        click.echo(reports.to_csv(report), nl=False)
    else:
        click.echo(render(report))


DATABASE_OPTION = database_url_option("Database to read.")
FORMAT_OPTION = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="An aligned table, or the API's CSV or JSON.",
)


@click.group()
def report() -> None:
    """Managers' reports: stock valuation and movement summary."""


@report.command()
@DATABASE_OPTION
@click.option(
    "--group-by",
    type=click.Choice(reports.VALUATION_GROUPS),
    default="category",
    show_default=True,
)
@click.option("--as-of", help="Value the stock as it was then (RFC 3339); default now.")
@FORMAT_OPTION
def valuation(database_url: str, group_by: str, as_of: str | None, output_format: str) -> None:
    """On-hand x moving-average cost per category or location, with totals."""
    moment = _timestamp(as_of, "--as-of")
    _emit(_run(database_url, lambda s: reports.valuation(s, group_by, moment)), output_format)


@report.command()
@DATABASE_OPTION
@click.option(
    "--group-by",
    type=click.Choice(reports.MOVEMENT_GROUPS),
    default="day",
    show_default=True,
)
@click.option("--from", "start", help="Start, inclusive (RFC 3339); default 30 days before --to.")
@click.option("--to", "end", help="End, exclusive (RFC 3339); default now.")
@click.option("--product-id", type=click.IntRange(min=1), help="Only this product.")
@click.option("--location-id", type=click.IntRange(min=1), help="Only this location.")
@click.option("--kind", type=click.Choice(reports.MOVEMENT_KINDS), help="Only this kind.")
@FORMAT_OPTION
def movements(
    database_url: str,
    group_by: str,
    start: str | None,
    end: str | None,
    product_id: int | None,
    location_id: int | None,
    kind: str | None,
    output_format: str,
) -> None:
    """Units in, out and net per UTC day, product, location or kind over [from, to)."""
    period_start, period_end = reports.movement_period(
        _timestamp(start, "--from"), _timestamp(end, "--to")
    )
    if period_start >= period_end:
        raise click.BadParameter("must be earlier than --to", param_hint="--from")
    report_ = _run(
        database_url,
        lambda s: reports.movement_summary(
            s,
            group_by,
            period_start,
            period_end,
            product_id=product_id,
            location_id=location_id,
            kind=kind,
        ),
    )
    _emit(report_, output_format)
