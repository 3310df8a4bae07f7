"""Engine, sessions and the one-transaction-per-request rule.

Every operation handler runs inside :func:`unit_of_work`: it gets a session from
:func:`session`, and the transaction commits when the handler returns or rolls back
when anything raises, so no request ever leaves a partial write behind.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from service.errors import (
    ConflictProblem,
    PreconditionFailedProblem,
    ServiceUnavailableProblem,
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "storekeeper_session", default=None
)
# Read by the SQLite "begin" hook: write transactions take the write lock up front
# (BEGIN IMMEDIATE) so two writers never deadlock upgrading a shared lock.
_write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "storekeeper_write_intent", default=False
)
EXTENSION_KEY = "storekeeper.database"
# Callbacks that must write in the request's own transaction, after the handler returned and
# before the commit (e.g. storing an idempotent response atomically with what it describes).
_before_commit: contextvars.ContextVar[tuple[Callable[[Session, Any], None], ...]] = (
    contextvars.ContextVar("storekeeper_before_commit", default=())
)


@contextlib.contextmanager
def before_commit(callback: Callable[[Session, Any], None]) -> Iterator[None]:
    """Run ``callback(session, handler_result)`` inside the next unit of work, pre-commit."""
    token = _before_commit.set((*_before_commit.get(), callback))
    try:
        yield
    finally:
        _before_commit.reset(token)


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = 5000) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": sqlite_busy_timeout_ms / 1000}, future=True
        )
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


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


class Database:
    """The engine and session factory of one application instance."""

    def __init__(self, url: str, *, sqlite_busy_timeout_ms: int = 5000) -> None:
        self.engine = make_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
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
        """A session whose transaction commits on success and rolls back on any error."""
        with self._writer_turn(write), self._transaction(write=write) as session:
            yield session

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session]:
        intent = _write_intent.set(write)
        current = _current_session.set(None)
        session = self.sessionmaker()
        try:
            _current_session.set(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            _current_session.reset(current)
            _write_intent.reset(intent)

    def dispose(self) -> None:
        self.engine.dispose()


def get_database() -> Database:
    """The database of the Flask application handling the current request."""
    from flask import current_app

    return current_app.extensions[EXTENSION_KEY]


def session() -> Session:
    """The session of the request being handled."""
    current = _current_session.get()
    if current is None:
        raise RuntimeError("no unit of work is active")
    return current


def unit_of_work(handler: F) -> F:
    """Run an operation handler in one transaction; map database conflicts to problems."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flask import request

        write = request.method not in {"GET", "HEAD", "OPTIONS"}
        try:
            with get_database().transaction(write=write) as session:
                result = handler(*args, **kwargs)
                for callback in _before_commit.get():
                    callback(session, result)
                return result
        except StaleDataError as exc:
            # Another request updated the row between our read and our write.
            if request.headers.get("If-Match"):
                raise PreconditionFailedProblem(
                    "The resource changed while this request ran; fetch it and retry."
                ) from exc
            raise ConflictProblem(
                "concurrent-modification",
                "The resource changed while this request ran; fetch it and retry.",
            ) from exc
        except IntegrityError as exc:
            # A constraint caught a race that the handler's own checks could not see.
            raise ConflictProblem(
                "conflict",
                "The request conflicts with the current state of a resource; "
                "reload it and try again.",
            ) from exc
        except OperationalError as exc:
            if _is_lock_timeout(exc):
                raise ServiceUnavailableProblem(
                    "The database is busy; retry the request shortly.", retry_after=1
                ) from exc
            raise

    return wrapper  # type: ignore[return-value]


def _is_lock_timeout(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "lock timeout" in text


def find_clash(key_column, key: Any, row: Any) -> int | None:
    """The id of another row whose unique ``key_column`` equals ``key`` (None if free).

    Runs without autoflush, so the pending change to ``row`` is checked before it reaches
    the database's unique constraint (which still catches races: IntegrityError → 409).
    """
    model = key_column.class_
    current = session()
    with current.no_autoflush:
        return current.scalar(select(model.id).where(key_column == key, model.id != (row.id or 0)))


def get_or_404(model: type[T], identifier: int, resource: str) -> T:
    """Load a row by primary key or answer 404 naming the resource."""
    from service.errors import NotFoundProblem

    found = session().get(model, identifier)
    if found is None:
        raise NotFoundProblem(resource, identifier)
    return found
