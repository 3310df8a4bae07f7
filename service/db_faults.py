"""A database that is down or frozen: bounded waits, and which errors mean "unavailable".

Time bounds on PostgreSQL (:func:`libpq_params` and :func:`bound_answers`, applied by
:func:`service.db.make_engine` when it is given :class:`DatabaseTimeouts`):

- **connecting** gives up after ``connect_s`` (libpq ``connect_timeout``; libpq and psycopg
  never wait less than 2 s). It covers the whole handshake, so a server that accepts the TCP
  connection but never answers (frozen) is given up on too;
- **a statement** is cancelled by the server after ``statement_ms`` (``statement_timeout``,
  sent as a startup option; 0 sends none);
- **an answer**: a server that took a statement but stops answering (frozen process, dead host)
  cannot cancel anything, so the client gives up itself. psycopg runs every exchange with the
  server through ``Connection.wait``; the connection class of :func:`bound_answers` gives
  that wait a deadline, ``statement_ms`` + ``connect_s`` while a session uses the connection,
  ``connect_s`` for a new connection's first queries. On expiry the
  connection is closed (its protocol state is unknown), so SQLAlchemy counts it as a
  disconnect and the pool drops it;
- **TCP**: keepalives (first probe after ``connect_s`` idle, then every second) and
  ``tcp_user_timeout`` (2 x ``connect_s``) drop a connection whose peer stopped acknowledging
  (a network partition, a host that is gone), idle pooled ones included;
- **the pool**: a checkout waits at most ``pool_s`` for a free connection.

A request that meets one of these answers 503 (:func:`classify`, used by the API's error
handler). Arriving while the server is down, it waits at most ``pool_s`` + ``connect_s`` (a
pooled connection that fails at once, then a new one that cannot be made, see
:meth:`service.db.Database.run`); while it is frozen, at most ``pool_s`` + ``statement_ms``
+ ``connect_s`` (its first statement is not answered, and is not retried).
Parameters the ``DATABASE_URL`` sets itself (``?connect_timeout=...``, ``options``) win.
SQLite has its busy timeout (``SQLITE_BUSY_TIMEOUT_MS``) and none of this.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

logger = logging.getLogger("storekeeper.db")

# Drivers built on libpq, which take its connection parameters.
LIBPQ_DRIVERS = ("psycopg", "psycopg2")
# Seconds a client should wait before retrying when the database is unavailable.
UNAVAILABLE_RETRY_AFTER = 5
BUSY_RETRY_AFTER = 1

# PostgreSQL SQLSTATEs meaning "the server cannot serve you now" rather than "your SQL is
# wrong": connection exceptions (class 08), insufficient resources (53: disk full, out of
# memory, too many connections), operator intervention (57P: shutdown, crash, starting up,
# database dropped, idle session timeout) and system errors (58: I/O).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "58")
_QUERY_CANCELED = "57014"  # statement_timeout (the server cancelled the statement)
_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout
# SQLite says so in words (sqlite3 has no codes on its exceptions before Python 3.11).
_SQLITE_UNAVAILABLE = ("unable to open database file", "disk i/o error")
_LOCK_TIMEOUT_WORDS = ("database is locked", "lock timeout")


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long the service waits on PostgreSQL; see the module docstring."""

    connect_s: int = 5
    statement_ms: int = 15000
    pool_s: float = 5.0

    @property
    def answer_s(self) -> float | None:
        """The client's deadline for a server answer while a session uses the connection."""
        if self.statement_ms <= 0:
            return None  # no statement bound, so no way to tell slow from frozen
        return self.statement_ms / 1000 + self.connect_s

    @property
    def ping_s(self) -> float:
        """The deadline of a new connection's first queries (the dialect's setup)."""
        return float(max(self.connect_s, 2))


# --- connection parameters ------------------------------------------------------------------


def libpq_params(url: URL, timeouts: DatabaseTimeouts) -> dict[str, Any]:
    """``connect_args`` for a libpq driver: the timeouts the URL does not set itself."""
    if url.get_driver_name() not in LIBPQ_DRIVERS:
        return {}
    query = url.query
    connect_s = max(math.ceil(timeouts.connect_s), 1)
    defaults: dict[str, Any] = {
        "connect_timeout": str(connect_s),
        "keepalives": "1",
        "keepalives_idle": str(connect_s),
        "keepalives_interval": "1",
        "keepalives_count": "3",
        "tcp_user_timeout": str(2 * connect_s * 1000),
    }
    params = {name: value for name, value in defaults.items() if name not in query}
    if timeouts.statement_ms > 0:
        options = f"-c statement_timeout={int(timeouts.statement_ms)}"
        given = query.get("options")
        if isinstance(given, tuple):
            given = " ".join(given)
        # The URL's own options come last: a -c given twice takes its last value.
        params["options"] = f"{options} {given}" if given else options
    return params


# --- a deadline on every answer (psycopg 3) -------------------------------------------------


@functools.cache
def _bounded_class() -> type | None:
    """psycopg's Connection with a deadline on ``wait``; None if this psycopg cannot."""
    try:
        import psycopg
        import psycopg.errors
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    wait_timeout = getattr(psycopg.errors, "_WaitTimeout", None)
    parameters = inspect.signature(psycopg.Connection.wait).parameters
    if wait_timeout is None or "timeout" not in parameters:  # pragma: no cover - old psycopg
        logger.warning(
            "psycopg %s cannot bound its waits: a frozen database server is not given up on",
            psycopg.__version__,
        )
        return None

    class BoundedConnection(psycopg.Connection):
        """A psycopg connection that gives up on a server that does not answer in time."""

        answer_s: float | None = None

        def wait(self, gen, interval=0.1, timeout=None):  # type: ignore[override]
            if timeout is not None or self.answer_s is None:
                # psycopg's own bounded waits (cancellation) handle their expiry themselves.
                return super().wait(gen, interval=interval, timeout=timeout)
            bound = self.answer_s
            try:
                return super().wait(gen, interval=interval, timeout=bound)
            except wait_timeout:
                # Mid-exchange, the protocol state is unknown: close, so that SQLAlchemy sees
                # a disconnect and the pool drops this connection.
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database server did not answer within {bound:g} s"
                ) from None

    return BoundedConnection


def _set_deadline(dbapi_connection: Any, seconds: float | None) -> None:
    if dbapi_connection is not None and hasattr(dbapi_connection, "answer_s"):
        dbapi_connection.answer_s = seconds


def bound_answers(engine: Engine, timeouts: DatabaseTimeouts) -> None:
    """Give every server answer on ``engine``'s psycopg connections a client-side deadline."""
    if engine.dialect.driver != "psycopg":
        return
    connection_class = _bounded_class()
    if connection_class is None:
        return

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams):  # pragma: no cover - driver hook
        connection = connection_class.connect(*cargs, **cparams)
        connection.answer_s = timeouts.ping_s
        return connection

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, _record, _proxy):  # pragma: no cover - driver hook
        # After the new connection's first queries: statements may run up to their timeout.
        _set_deadline(dbapi_connection, timeouts.answer_s)


# --- which errors mean "the database is unavailable" ----------------------------------------


@dataclass(frozen=True)
class Outage:
    """Why the database could not serve a request, as the client may be told."""

    reason: str  # "unreachable", "timeout" or "busy"
    detail: str
    retry_after: int


UNREACHABLE = Outage(
    "unreachable",
    "The database cannot be reached; retry the request shortly.",
    UNAVAILABLE_RETRY_AFTER,
)
TIMED_OUT = Outage(
    "timeout",
    "The database did not answer in time; retry the request shortly.",
    UNAVAILABLE_RETRY_AFTER,
)
BUSY = Outage("busy", "The database is busy; retry the request shortly.", BUSY_RETRY_AFTER)


def _sqlstate(orig: BaseException | None) -> str | None:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _is_sqlite(orig: BaseException | None) -> bool:
    return type(orig).__module__.startswith("sqlite3")


def classify(exc: BaseException) -> Outage | None:
    """The outage behind a database error, or None for an error of the program (a 500)."""
    if isinstance(exc, PoolTimeoutError):
        return TIMED_OUT  # every connection of the pool is busy (or stuck on the server)
    if isinstance(exc, DisconnectionError):
        return UNREACHABLE
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    text = str(orig).lower()
    if any(words in text for words in _LOCK_TIMEOUT_WORDS) or _sqlstate(orig) == (
        _LOCK_NOT_AVAILABLE
    ):
        return BUSY
    if exc.connection_invalidated:
        # Our own deadline (BoundedConnection) closes the connection, too.
        return TIMED_OUT if "did not answer" in text else UNREACHABLE
    if isinstance(exc, InterfaceError) and not _is_sqlite(orig):
        # psycopg: "the connection is closed" (sqlite3's are about binding parameters).
        return UNREACHABLE if "closed" in text or "lost" in text else None
    if not isinstance(exc, OperationalError):
        return None
    sqlstate = _sqlstate(orig)
    if sqlstate == _QUERY_CANCELED:
        return TIMED_OUT
    if sqlstate is not None:
        return UNREACHABLE if sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES) else None
    if _is_sqlite(orig):
        return UNREACHABLE if any(words in text for words in _SQLITE_UNAVAILABLE) else None
    # A libpq driver's OperationalError without a SQLSTATE comes from the client side: no
    # connection could be made, it broke, or the server did not answer in time.
    return TIMED_OUT if "timeout" in text or "did not answer" in text else UNREACHABLE


def is_dropped_connection(exc: BaseException) -> bool:
    """A connection that broke under a statement (the server closed it, restarted, failed
    over), as opposed to a server that is slow or frozen (our own deadline) or refuses."""
    return (
        isinstance(exc, DBAPIError) and exc.connection_invalidated and classify(exc) is UNREACHABLE
    )


_RECOVERY_CONFLICT = "40001"  # a standby cancelled a query that replay had to overrun


def replica_fallback(exc: BaseException) -> bool:
    """Whether a read that failed on the read replica should run on the primary instead.

    Yes when the replica cannot be reached (refused, dropped, no connection within the
    connect timeout) or cancelled the query for a replay conflict; no for a statement that
    ran into its timeout or a replica that stopped answering mid-statement (running it again
    on the primary would double the time the request is allowed), nor for program errors.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if _sqlstate(exc.orig) == _RECOVERY_CONFLICT:
        return True
    outage = classify(exc)
    if outage is UNREACHABLE:
        return True
    text = str(exc.orig).lower()
    return outage is TIMED_OUT and "did not answer" not in text and _sqlstate(exc.orig) is None


def describe(exc: SQLAlchemyError) -> str:
    """The driver's message for the log: no SQL statement, no parameters."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return f"{type(exc).__name__}: {exc}"
    message = " ".join(str(orig).split())
    return f"{type(orig).__module__}.{type(orig).__name__}: {message[:500]}"
