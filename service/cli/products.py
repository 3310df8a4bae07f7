"""``storekeeper import products`` and ``storekeeper export products``: files in, files out.

The same code as ``POST /api/v1/products/import`` (and ``/import/csv``) and
``GET /api/v1/products/export`` (service/domain/product_io.py), against the database named by
``DATABASE_URL``:

- ``import products FILE [--format csv|json] [--dry-run]`` checks every row (progress bar),
  then writes them all in one transaction (progress bar) or nothing. It prints the counts and
  exits 0, or prints each problem by line and field and exits 1. Exit 2: the file or the
  database cannot be used at all.
- ``export products [--format csv|json] [--output FILE]`` writes the catalog (or the products
  the filters select) from one snapshot to FILE or standard output, streamed.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.cli.common import EXIT_FAILED, default_database_url, fail, open_database
from service.db import Database
from service.domain import product_io
from service.domain.catalog import ProductFilter
from service.problems import MAX_LISTED_ERRORS, ImportRowsProblem, Problem

MAX_PRINTED_ERRORS = MAX_LISTED_ERRORS


def _database() -> AbstractContextManager[Database]:
    """The database named by DATABASE_URL, with a products table, or exit 2."""
    return open_database(
        default_database_url(),
        required_tables=("products",),
        failure="cannot reach the database: {kind}: {error}",
    )


def _describe(entry: dict[str, Any]) -> str:
    where = f"line {entry['line']}" if "line" in entry else "body"
    if entry.get("field"):
        where += f", {entry['field']}"
    return f"  {where}: {entry['detail']}"


def _report_problem(detail: str, entries: list[dict[str, Any]]) -> None:
    click.echo(f"error: {detail}", err=True)
    for entry in entries[:MAX_PRINTED_ERRORS]:
        click.echo(_describe(entry), err=True)
    if len(entries) > MAX_PRINTED_ERRORS:
        click.echo(f"  ... and {len(entries) - MAX_PRINTED_ERRORS} more", err=True)


def _format_of(path: str, given: str | None) -> str:
    if given:
        return given
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in product_io.FORMATS:
        return suffix
    fail(f"cannot tell the format of {path!r} from its name; pass --format")


@click.group("import")
def import_group() -> None:
    """Load data from files (all rows or none)."""


@import_group.command("products")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(product_io.FORMATS)),
    help="csv or json (default: the file name's extension).",
)
@click.option("--dry-run", is_flag=True, help="Check and count every row; write nothing.")
def import_products(file: str, fmt: str | None, dry_run: bool) -> None:
    """Create and update products from FILE (CSV or JSON; '-' reads standard input)."""
    fmt = _format_of(file, fmt) if file != "-" else (fmt or "csv")
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", cause=exc)
    with _database() as database:
        try:
            if fmt == "csv":
                # An estimate (a quoted cell may span lines); the bar is completed at the end.
                source: Any = data
                length = max(1, data.count(b"\n"))
                parse = product_io.parse_csv
            else:
                source = product_io.load_json(data)
                length = max(1, len(source) if isinstance(source, list) else 1)
                parse = product_io.parse_json
            with click.progressbar(length=length, label="Checking rows", file=sys.stderr) as bar:
                parsed = parse(source, progress=bar.update)
                bar.update(max(0, bar.length - bar.pos))
            with database.transaction(write=not dry_run) as session:
                plan = product_io.plan_import(session, parsed.rows, errors=parsed.errors)
                if not dry_run and (plan.creates or plan.updates):
                    with click.progressbar(
                        length=len(plan.creates) + len(plan.updates),
                        label="Writing products",
                        file=sys.stderr,
                    ) as bar:
                        product_io.apply_plan(session, plan, progress=bar.update)
        except ImportRowsProblem as problem:
            rows = len({entry.get("line") for entry in problem.all_errors})
            _report_problem(
                f"{len(problem.all_errors)} problem(s) in {rows} row(s); nothing was imported:",
                problem.all_errors,
            )
            raise SystemExit(EXIT_FAILED) from problem
        except Problem as problem:
            _report_problem(str(problem.detail), (problem.ext or {}).get("errors", []))
            raise SystemExit(EXIT_FAILED) from problem
        except IntegrityError as exc:
            fail(
                "another writer created one of these SKUs meanwhile; run the import again",
                EXIT_FAILED,
                exc,
            )
        except SQLAlchemyError as exc:
            fail(f"the database failed: {exc.__class__.__name__}: {exc}", cause=exc)
    counts = plan.counts(dry_run)
    click.echo(
        f"rows: {counts['rows']}, created: {counts['created']}, updated: {counts['updated']}, "
        f"unchanged: {counts['unchanged']}"
        + ("  (dry run: nothing was written)" if dry_run else "")
    )


@click.group("export")
def export_group() -> None:
    """Write data to files."""


@export_group.command("products")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(product_io.FORMATS)),
    default="csv",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    default="-",
    help="File to write (default: standard output).",
)
@click.option("--category-id", type=click.IntRange(min=1), help="Only this category.")
@click.option(
    "--include-descendants", is_flag=True, help="With --category-id, also its subcategories."
)
@click.option(
    "--active/--archived", "is_active", default=None, help="Only active or only archived."
)
def export_products(
    fmt: str,
    output: str,
    category_id: int | None,
    include_descendants: bool,
    is_active: bool | None,
) -> None:
    """Write every product (ordered by id) as CSV or JSON, from one snapshot."""
    filters = ProductFilter(category_id, include_descendants, is_active)
    media_type = product_io.FORMATS[fmt]
    written = 0

    def count(rows: int) -> None:
        nonlocal written
        written += rows

    with _database() as database:
        try:
            stream = (
                sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
            )
            try:
                for chunk in product_io.export_stream(
                    database.engine, media_type, filters, progress=count
                ):
                    stream.write(chunk)
                stream.flush()
            finally:
                if stream is not sys.stdout.buffer:
                    stream.close()
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}", cause=exc)
        except SQLAlchemyError as exc:
            fail(f"the database failed: {exc.__class__.__name__}: {exc}", cause=exc)
    if output != "-":
        click.echo(f"wrote {written} product(s) to {output}", err=True)
