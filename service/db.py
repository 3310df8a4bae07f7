"""Engine, sessions and transactions: the database of one application instance.

:meth:`Database.transaction` opens a session whose transaction commits when the block ends
and rolls back when anything raises; inside it, :func:`session` returns that session (the
API's ``unit_of_work`` and the CLI commands both run their work this way).
:meth:`Database.run` does the same for a function, and runs it once more on a fresh
connection when the pooled one turns out to be dead before anything was committed.

Round trips a request does not pay for:

- **no pre-ping**: a pooled connection is not tested on every checkout. A connection the
  server dropped while it sat in the pool (a restart, a failover, an idle timeout) fails on
  its first statement; SQLAlchemy then invalidates the whole pool and :meth:`Database.run`
  retries on a new connection. ``pool_recycle`` replaces connections older than an hour, and
  libpq's TCP keepalives (:mod:`service.db_faults`) notice dead peers of idle ones;
- **no BEGIN/COMMIT for reads on PostgreSQL**: a read-only transaction (``write=False``)
  runs in autocommit. Under READ COMMITTED every statement takes its own snapshot anyway, so
  a read of several statements sees exactly what it would inside BEGIN ... COMMIT; what needs
  one snapshot across statements (reports, exports) uses :func:`snapshot_engine`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.db_faults import DatabaseTimeouts, bound_answers, is_dropped_connection, libpq_params
from service.problems import ServiceUnavailableProblem

T = TypeVar("T")
logger = logging.getLogger("storekeeper.db")

POOL_RECYCLE_S = 3600

_current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "storekeeper_session", default=None
)
# Read by the SQLite "begin" hook: write transactions take the write lock up front
# (BEGIN IMMEDIATE) so two writers never deadlock upgrading a shared lock.
_write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "storekeeper_write_intent", default=False
)


def make_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 5000, timeouts: DatabaseTimeouts | None = None
) -> Engine:
    """The engine for ``url``. ``timeouts`` bounds every wait on PostgreSQL (connect,
    statement, server answer, pool checkout; see :mod:`service.db_faults`); without them the
    driver's and SQLAlchemy's defaults apply (the CLI and migrations)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": sqlite_busy_timeout_ms / 1000},
            # Bound values (reset tokens, password hashes) never reach a log or an error text.
            hide_parameters=True,
        )
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    if timeouts is None:
        return create_engine(
            url, pool_recycle=POOL_RECYCLE_S, pool_size=10, max_overflow=10, hide_parameters=True
        )
    engine = create_engine(
        url,
        pool_recycle=POOL_RECYCLE_S,
        pool_size=10,
        max_overflow=10,
        pool_timeout=timeouts.pool_s,
        hide_parameters=True,
        connect_args=libpq_params(make_url(url), timeouts),
    )
    bound_answers(engine, timeouts)
    return engine


def _sqlite_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - driver hook
        # Take transaction control away from pysqlite so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # SQLite's own lower() folds only ASCII; case-insensitive search must match
        # PostgreSQL's for every name (and the str.lower() applied to the search term).
        dbapi_connection.create_function("lower", 1, _sqlite_lower, deterministic=True)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # pragma: no cover - driver hook
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


# Marks a DBAPIError raised by COMMIT: whether the transaction took effect is unknown.
_AT_COMMIT = "storekeeper_at_commit"


class Database:
    """The engine and session factory of one application instance."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_busy_timeout_ms: int = 5000,
        timeouts: DatabaseTimeouts | None = None,
    ) -> None:
        self.engine = make_engine(
            url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, timeouts=timeouts
        )
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessionmaker = self.sessionmaker
        if self.engine.dialect.name == "postgresql":
            self._read_sessionmaker = sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )
        # SQLite admits one writer at a time and its busy handler polls on a timer, so threads
        # of one process racing for the lock starve each other (seconds at p99). Queue them
        # here instead; other processes still meet at BEGIN IMMEDIATE and the busy timeout.
        self._sqlite_writer = threading.Lock() if self.engine.dialect.name == "sqlite" else None
        self._writer_wait_s = sqlite_busy_timeout_ms / 1000

    @contextlib.contextmanager
    def _writer_turn(self, write: bool) -> Iterator[None]:
        if not write or self._sqlite_writer is None:
            yield
            return
        if not self._sqlite_writer.acquire(timeout=self._writer_wait_s):
            raise ServiceUnavailableProblem(
                "The database is busy; retry the request shortly.", retry_after=1
            )
        try:
            yield
        finally:
            self._sqlite_writer.release()

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error.

        ``write=False`` promises the block only reads (on PostgreSQL it runs in autocommit).
        """
        with self._writer_turn(write), self._transaction(write=write) as session:
            yield session

    def run(self, work: Callable[[], T], *, write: bool = True) -> T:
        """``work()`` inside :meth:`transaction`; once more if the connection was found dead.

        Only a connection that failed before the commit was sent is retried: the server rolled
        its transaction back, so nothing of the first attempt remains. A failed commit (its
        outcome unknown) and a server that does not answer (a frozen one: waiting again would
        double the bound on the answer) are raised.
        """
        try:
            with self.transaction(write=write):
                return work()
        except DBAPIError as exc:
            if getattr(exc, _AT_COMMIT, False) or not is_dropped_connection(exc):
                raise
            logger.info("database connection was dropped; retrying on a new one")
        with self.transaction(write=write):
            return work()

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session]:
        intent = _write_intent.set(write)
        current = _current_session.set(None)
        session = (self.sessionmaker if write else self._read_sessionmaker)()
        try:
            _current_session.set(session)
            yield session
            try:
                session.commit()
            except DBAPIError as exc:
                setattr(exc, _AT_COMMIT, True)
                raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            _current_session.reset(current)
            _write_intent.reset(intent)

    def dispose(self) -> None:
        self.engine.dispose()


def session() -> Session:
    """The session of the request being handled."""
    current = _current_session.get()
    if current is None:
        raise RuntimeError("no unit of work is active")
    return current


def is_lock_timeout(exc: OperationalError) -> bool:
    """A writer that waited too long for a lock (SQLite busy, PostgreSQL lock_timeout)."""
    text = str(exc.orig).lower()
    return "database is locked" in text or "lock timeout" in text


def snapshot_engine(engine: Engine) -> Engine:
    """``engine`` with every transaction reading one consistent snapshot, read-only.

    PostgreSQL: REPEATABLE READ, read-only. SQLite: ``engine`` itself; its BEGIN is deferred
    (the "begin" hook above, without write intent) and in WAL mode the first read fixes the
    snapshot.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return engine


def where_equal(stmt: Any, *filters: tuple[Any, Any]) -> Any:
    """``stmt`` narrowed by ``column == value`` for each (column, value) whose value is given."""
    for column, value in filters:
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt
