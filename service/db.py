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

A **read replica** (PostgreSQL streaming replication, ``DATABASE_REPLICA_URL``) serves the
reads that may be a little behind (reports, the product export: :meth:`Database.run_on_replica`
and :meth:`Database.stream_on_replica`), never a write nor a read that must see the writes
before it. It is used while it answers and its replay is within ``max_lag_s``; otherwise the
primary answers. A replica found unreachable is rested for ``rest_s`` (no connection attempt
meanwhile), so a dead one costs one failed connection per rest period per process, not one
per request.

Lag, measured on the replica in one statement (:data:`REPLICA_LAG_SQL`): 0 when everything it
has received is replayed (an idle primary sends nothing, so the time since the last replayed
transaction says nothing about lag), else the seconds since the last replayed transaction
committed on the primary. A standby whose WAL receiver lost the primary cannot know what it
misses and reads as current: watch replication itself (``pg_stat_replication`` on the
primary) for that.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from service.db_faults import (
    DatabaseTimeouts,
    bound_answers,
    classify,
    is_dropped_connection,
    libpq_params,
    replica_fallback,
)
from service.problems import ServiceUnavailableProblem

if TYPE_CHECKING:
    from service.config import Settings

T = TypeVar("T")
logger = logging.getLogger("storekeeper.db")

POOL_RECYCLE_S = 3600
# Where a read was answered from (the X-Data-Source response header).
DataSource = Literal["primary", "replica"]
PRIMARY: DataSource = "primary"
REPLICA: DataSource = "replica"
DEFAULT_REPLICA_MAX_LAG_S = 30.0
DEFAULT_REPLICA_REST_S = 30.0
# Seconds the replica's replay is behind the primary: see the module docstring.
REPLICA_LAG_SQL = text(
    "SELECT CASE"
    " WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),"
    " 'Infinity'::float8) END"
)

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


class Replica:
    """A streaming replica of the primary: its engine, its lag bound and its rest period."""

    def __init__(
        self,
        url: str,
        *,
        timeouts: DatabaseTimeouts | None,
        max_lag_s: float = DEFAULT_REPLICA_MAX_LAG_S,
        rest_s: float = DEFAULT_REPLICA_REST_S,
    ) -> None:
        self.engine = make_engine(url, timeouts=timeouts)
        if self.engine.dialect.name != "postgresql":
            self.engine.dispose()
            raise ValueError("DATABASE_REPLICA_URL must be a PostgreSQL URL")

        @event.listens_for(self.engine, "checkout")
        def _read_only(dbapi_connection, _record, _proxy):  # pragma: no cover - driver hook
            # A standby refuses BEGIN READ WRITE, which psycopg sends once SQLAlchemy has
            # reset a connection's read-only characteristic to False (after a snapshot).
            if getattr(dbapi_connection, "read_only", None) is not True:
                dbapi_connection.read_only = True

        # Reads here are reports and exports: one snapshot each (see Database.run_on_replica).
        self.sessionmaker = sessionmaker(snapshot_engine(self.engine), expire_on_commit=False)
        self.max_lag_s = max_lag_s
        self.rest_s = rest_s
        self._resting_until = 0.0
        self._lock = threading.Lock()

    def resting(self) -> bool:
        return time.monotonic() < self._resting_until

    def rest(self, exc: BaseException) -> None:
        """Leave the replica alone for ``rest_s``: it failed with ``exc``."""
        with self._lock:
            first = not self.resting()
            self._resting_until = time.monotonic() + self.rest_s
        if first:
            logger.warning(
                "read replica unavailable, reading from the primary for %.0f s: %s",
                self.rest_s,
                type(exc).__name__,
            )

    def failed(self, exc: DBAPIError | PoolTimeoutError) -> None:
        """A read on the replica failed with ``exc``: rest it if it is unavailable; return
        to read on the primary instead, or raise ``exc`` when that must not happen
        (:func:`service.db_faults.replica_fallback`: a program error, or a statement that
        already used up its time)."""
        if classify(exc) is not None:
            self.rest(exc)
        if isinstance(exc, PoolTimeoutError) or replica_fallback(exc):
            return
        raise exc

    def lag_s(self) -> float:
        """How far behind the primary the replica's replay is, in seconds (once more on a
        new connection if the pooled one was dropped, e.g. by a replica restart)."""
        for attempt in (1, 2):
            try:
                with self.engine.connect() as connection:
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                    return float(connection.execute(REPLICA_LAG_SQL).scalar_one())
            except DBAPIError as exc:
                if attempt == 2 or not is_dropped_connection(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def current(self) -> bool:
        """Whether reads may go to the replica now: not resting, reachable, within the lag."""
        if self.resting():
            return False
        try:
            lag = self.lag_s()
        except (DBAPIError, PoolTimeoutError) as exc:
            self.failed(exc)
            return False
        if lag > self.max_lag_s:
            logger.info(
                "read replica %.1f s behind (limit %g s): reading from the primary",
                lag,
                self.max_lag_s,
            )
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()


class Database:
    """The engine and session factory of one application instance."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_busy_timeout_ms: int = 5000,
        timeouts: DatabaseTimeouts | None = None,
        replica_url: str | None = None,
        replica_max_lag_s: float = DEFAULT_REPLICA_MAX_LAG_S,
        replica_rest_s: float = DEFAULT_REPLICA_REST_S,
    ) -> None:
        self.engine = make_engine(
            url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, timeouts=timeouts
        )
        self.replica: Replica | None = None
        if replica_url:
            if self.engine.dialect.name != "postgresql":
                self.engine.dispose()
                raise ValueError(
                    "DATABASE_REPLICA_URL is set, but DATABASE_URL is not PostgreSQL: "
                    "only a PostgreSQL primary has read replicas (unset DATABASE_REPLICA_URL)"
                )
            self.replica = Replica(
                replica_url, timeouts=timeouts, max_lag_s=replica_max_lag_s, rest_s=replica_rest_s
            )
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessionmaker = self.sessionmaker
        self._snapshot_sessionmaker = sessionmaker(
            snapshot_engine(self.engine), expire_on_commit=False
        )
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

    @classmethod
    def from_settings(cls, settings: Settings, *, replica: bool = True) -> Database:
        """The database ``settings`` describe, with its time bounds (and its replica, unless
        ``replica`` is false: the worker only writes)."""
        return cls(
            settings.database_url,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            timeouts=DatabaseTimeouts(
                connect_s=settings.database_connect_timeout_s,
                statement_ms=settings.database_statement_timeout_ms,
                pool_s=settings.database_pool_timeout_s,
            ),
            replica_url=settings.database_replica_url if replica else None,
            replica_max_lag_s=settings.database_replica_max_lag_s,
            replica_rest_s=settings.database_replica_rest_s,
        )

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

    def run_on_replica(self, work: Callable[[], T]) -> tuple[T, DataSource]:
        """``work()`` reading on the replica when it is current (:meth:`Replica.current`), else
        on the primary; with where it ran.

        Only for reads that may be behind the primary's latest writes. Either way ``work``
        reads one snapshot in a read-only transaction (:func:`snapshot_engine`): its
        statements agree with each other, and settings it makes with ``SET LOCAL`` hold for
        the statements after them (in autocommit they would end with their own statement).
        A connection found dropped is retried once. Unreachable (or in a recovery conflict),
        the replica is rested and the work runs on the primary; a statement that timed out
        there is raised (a 503: running it again would double the request's time bound), and
        a replica that timed out is rested too, so the requests after it read from the
        primary.
        """
        replica = self.replica
        if replica is not None and replica.current():
            try:
                return self._run_with(replica.sessionmaker, work), REPLICA
            except (DBAPIError, PoolTimeoutError) as exc:
                replica.failed(exc)
        return self._run_with(self._snapshot_sessionmaker, work), PRIMARY

    def stream_on_replica(
        self, stream: Callable[[Engine], Iterator[T]]
    ) -> tuple[T, Iterator[T], DataSource]:
        """``stream(engine)`` started on the replica when it is current, else on the primary:
        its first item (so a failure to connect is still an error, not a cut body), the rest,
        and where it runs. A replica failing before the first item falls back like
        :meth:`run_on_replica`."""
        replica = self.replica
        if replica is not None and replica.current():
            items = stream(replica.engine)
            try:
                return next(items), items, REPLICA
            except (DBAPIError, PoolTimeoutError) as exc:
                items.close()
                replica.failed(exc)
        items = stream(self.engine)
        return next(items), items, PRIMARY

    def _run_with(self, maker: sessionmaker, work: Callable[[], T]) -> T:
        """:meth:`run` for a read on another session factory (a snapshot's, the replica's)."""
        try:
            with self._transaction(write=False, maker=maker):
                return work()
        except DBAPIError as exc:
            if not is_dropped_connection(exc):
                raise
            logger.info("database connection was dropped; retrying on a new one")
        with self._transaction(write=False, maker=maker):
            return work()

    @contextlib.contextmanager
    def _transaction(self, *, write: bool, maker: sessionmaker | None = None) -> Iterator[Session]:
        intent = _write_intent.set(write)
        current = _current_session.set(None)
        if maker is None:
            maker = self.sessionmaker if write else self._read_sessionmaker
        session = maker()
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
        if self.replica is not None:
            self.replica.dispose()


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
