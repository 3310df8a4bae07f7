"""What the ``storekeeper`` commands share: exit codes, the database option, and the checks
that open a database or exit 2 with a message saying why it cannot be used.

:func:`open_database` checks that an SQLite file exists and that the tables a command needs
are there, and turns any database error inside its block into a message and exit 2;
:func:`transaction` does the same around one transaction. :func:`render_table` lays out
the aligned text tables the commands print.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import click
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import Database

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and says no: refused, drift found, invalid rows
EXIT_UNUSABLE = 2  # bad arguments, or a file or database that cannot be used at all

READ_FAILURE = "cannot read the database: {kind}: {error}"


def redacted(url: str) -> str:
    """``url`` with its password hidden, fit to print."""
    return make_url(url).render_as_string(hide_password=True)


def default_database_url() -> str:
    # Given DATABASE_URL, no Settings: it reads (and may refuse) every other variable too.
    return os.environ.get("DATABASE_URL") or Settings.from_env().database_url


def database_url_option(help: str):
    """The ``--database-url`` option: DATABASE_URL, else the local SQLite file."""
    return click.option(
        "--database-url",
        default=default_database_url,
        show_default="DATABASE_URL or the local SQLite file",
        help=help,
    )


def fail(message: str, code: int = EXIT_UNUSABLE, cause: BaseException | None = None) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code) from cause


def require_sqlite_file(url: str) -> None:
    """Exit 2 if ``url`` names an SQLite file that does not exist (connecting would create it)."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path not in (None, "", ":memory:") and not os.path.exists(path):
            fail(f"SQLite database {path} does not exist")


@contextmanager
def open_database(
    url: str, *, required_tables: Sequence[str] = (), failure: str = READ_FAILURE
) -> Iterator[Database]:
    """The database at ``url``, disposed on exit; exit 2 if it cannot be used.

    Exits 2 when an SQLite file or one of ``required_tables`` is missing (not migrated),
    and on any database error in the block, printing ``failure`` formatted with the error's
    ``kind`` (class name), the ``error`` itself and the redacted ``url``.
    """
    require_sqlite_file(url)
    database = Database(url)
    try:
        missing = [t for t in required_tables if not inspect(database.engine).has_table(t)]
        if missing:
            tables = "table" if len(required_tables) == 1 else "table(s)"
            fail(
                f"the database has no {', '.join(missing)} {tables}; "
                "run 'storekeeper db upgrade' first"
            )
        yield database
    except SQLAlchemyError as exc:
        kind = exc.__class__.__name__
        fail(failure.format(kind=kind, error=exc, url=redacted(url)), cause=exc)
    finally:
        database.dispose()


@contextmanager
def transaction(url: str, *, write: bool = True, failure: str = READ_FAILURE) -> Iterator[Session]:
    """One transaction on the database at ``url`` (see :func:`open_database` for exit 2)."""
    with open_database(url, failure=failure) as database, database.transaction(write=write) as s:
        yield s


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right_aligned: Collection[str] = (),
    footer: Sequence[Sequence[str]] = (),
    empty: str | None = None,
) -> str:
    """``headers`` over a rule, then ``rows`` (or the line ``empty`` when there are none),
    then any ``footer`` rows under a second rule.

    Columns are as wide as their widest cell (footer included) and two spaces apart; the
    columns named in ``right_aligned`` are right-aligned, the others left-aligned.
    """
    right = [header in right_aligned for header in headers]
    widths = [
        max([len(header), *(len(row[i]) for row in [*rows, *footer])])
        for i, header in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(cells, widths, right, strict=True)
        ).rstrip()

    rule = line(["-" * width for width in widths])
    body = [line(row) for row in rows]
    if not rows and empty is not None:
        body = [empty]
    lines = [line(headers), rule, *body]
    if footer:
        lines += [rule, *(line(row) for row in footer)]
    return "\n".join(lines)
