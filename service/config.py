"""Settings read from the environment, once, at application start.

Rate limits (service/api/ratelimit.py; a limit is a ``limits`` string such as ``10/minute``,
``5/15minutes``, or several joined by ``;`` that must all pass, e.g. ``10/minute;50/hour``):

- ``RATE_LIMIT_ENABLED`` (default ``true``): apply the limits below. A ``Settings`` built in
  code (tests, scripts) has them off unless it passes ``rate_limit_enabled=True``: every
  deployment reads the environment, and the shared test app must not trip the per-address
  login budget, since every test client has the same address.
- ``LOGIN_RATE_LIMIT`` (default ``10/minute``): login attempts per client address and,
  separately, per e-mail address.
- ``PASSWORD_RESET_RATE_LIMIT`` (default ``5/15minutes``): reset requests per client address
  and per e-mail address; reset confirmations per client address.
- ``WRITE_RATE_LIMIT`` (default ``600/minute``): POST/PUT/PATCH/DELETE under ``/api/v1`` per
  credential (access token or API key), per client address when anonymous.
- ``REDIS_URL`` (default unset): ``redis://host:6379/0`` shares the budgets between every
  process; unset, each process counts in its own memory. If Redis fails, the service logs a
  warning and falls back to per-process limits until it answers again (fail open).
- ``TRUST_PROXY_HEADERS`` (default ``false``): take the client address from the right-most
  ``X-Forwarded-For`` entry (set by the proxy in front) instead of the peer address. Turn it
  on only behind a proxy that sets the header, or clients can pick their own address.

Request bodies (service/api/middleware/body_limit.py):

- ``STOREKEEPER_MAX_BODY_BYTES`` (default ``1048576``, 1 MiB): the largest body any request
  may carry, unless its operation has a limit of its own (the product import, below). A
  larger one is refused with 413 before it is read or parsed.

Database time bounds (PostgreSQL; service/db_faults.py). A database that cannot be reached
or does not answer within them gives a 503 ``service-unavailable`` problem with
``Retry-After``, never a 500 or a hang; the pool drops dead connections, so the service
recovers by itself when the database is back:

- ``DATABASE_CONNECT_TIMEOUT`` (default ``5`` seconds; libpq waits at least 2): opening a
  connection, the whole handshake included (a frozen server is given up on, too). It also
  sets the TCP keepalives (first probe after that many idle seconds, then every second) and
  ``tcp_user_timeout`` (twice as long), and is the slack a running statement is given beyond
  its statement timeout before the client gives up on a server that stopped answering.
- ``DATABASE_STATEMENT_TIMEOUT_MS`` (default ``15000``): the server cancels a statement that
  runs longer (``statement_timeout``). On a 100,000-product, 1,000,000-movement database the
  slowest legitimate statements (a report is one) took up to ~4 s on a busy 2-CPU machine,
  and every case of scripts/bench_reports.py (imports of 100,000 rows included) passes with
  the default. ``0`` sends none (e.g. behind a pooler that refuses startup options); the
  client then cannot tell a slow statement from a frozen server and waits.
- ``DATABASE_POOL_TIMEOUT`` (default ``5`` seconds): how long a request waits for a free
  connection of its process's pool (10 + 10 overflow) before it is a 503.

A request arriving while the server is down is answered within pool + connect timeout (a
pooled connection that fails at once, then a new one that cannot be made; a stopped server
refuses at once); while it is frozen, within pool + statement + connect timeout (defaults:
25 s): pooled connections are not pinged before use, so the first statement is the one that
goes unanswered. Parameters in ``DATABASE_URL`` itself
(``?connect_timeout=...``, ``options=-c statement_timeout=...``) take precedence.

Read replica (PostgreSQL streaming replication; service/db.py):

- ``DATABASE_REPLICA_URL`` (default unset): a hot standby of ``DATABASE_URL``. The valuation
  and movement reports and the product export read from it (their ``X-Data-Source`` header
  says ``replica`` or ``primary``); writes and every other read stay on the primary. It has
  the primary's time bounds and pool size. Unreachable, it is left alone for
  ``DATABASE_REPLICA_REST`` seconds (default ``30``) and the primary answers meanwhile. With
  an SQLite ``DATABASE_URL`` it is a startup error.
- ``DATABASE_REPLICA_MAX_LAG`` (default ``30`` seconds): a replica whose replay is further
  behind than this is passed over for the primary (how lag is measured: service/db.py).

Product import (service/domain/product_io.py, service/api/middleware/body_limit.py):

- ``STOREKEEPER_IMPORT_MAX_BYTES`` (default ``33554432``, 32 MiB): the largest body
  ``POST /api/v1/products/import`` (JSON) and ``POST /api/v1/products/import/csv`` (the file
  upload, multipart framing included) accept. A larger one is refused with 413 before it is
  read (by its Content-Length, or by counting a chunked body as it arrives). The import
  holds the whole body and its parsed rows in memory, so this bounds its memory too.

Events and webhooks (service/domain/events.py, service/domain/delivery.py):

- ``EVENT_RETENTION_DAYS`` (default ``30``): events older than this leave the feed (the worker
  deletes them, with the finished deliveries of that age). A reader or an endpoint further
  behind resumes at the oldest event kept.
- ``WEBHOOK_ALLOW_PRIVATE_TARGETS`` (default ``false``): let webhooks target loopback,
  private and link-local addresses. **Unsafe**: for tests and local development only
  (service/domain/webhook_targets.py).
- ``WEBHOOK_TIMEOUT`` (default ``10`` seconds): one attempt's time to connect and answer.
- ``WEBHOOK_RETRY_BASE`` (default ``10`` s), ``WEBHOOK_RETRY_MAX_DELAY`` (default ``43200``,
  12 h), ``WEBHOOK_RETRY_HORIZON`` (default ``259200``, 3 days): a failed attempt is retried
  after base * 2^(attempts-1), at most the maximum, with ±20 % jitter (longer if the receiver
  sent ``Retry-After``); an endpoint whose oldest undelivered event has failed for the horizon
  is disabled, with the reason, and resumes with that event when re-enabled.
- ``WEBHOOK_LEASE`` (default ``60`` s): how long a worker holds a delivery it is sending; a
  worker that dies mid-delivery leaves it to another once the lease runs out.
- ``WORKER_POLL_INTERVAL`` (default ``0.5`` s): how often an idle worker looks for work.
- ``STOREKEEPER_SECRET_KEY``: the key(s) webhook secrets are encrypted with (see
  service/domain/secrets.py); unset, a key file under ``var/`` is used.

Mail (service/domain/outbox.py):

- ``STOREKEEPER_LOG_MAIL_BODIES`` (default ``false``; development only): also log the body of
  every message put in the outbox. Bodies carry secrets (a password-reset link and its
  token), so by default the log names a message by id, recipient and subject only. Read each
  time a message is queued (:func:`log_mail_bodies`), by the API and the CLI alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "var" / "storekeeper.db"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_positive_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be a positive number of bytes, not {value!r}")
    return number


def _env_int(name: str, default: int, *, minimum: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    number = int(value)
    if number < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, not {value!r}")
    return number


def _env_seconds(name: str, default: float, unit: str = "seconds") -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{name} must be a positive number of {unit}, not {value!r}")
    return number


@dataclass(frozen=True)
class WebhookSettings:
    """Event retention and webhook delivery: see the module docstring."""

    allow_private_targets: bool = False
    timeout_s: float = 10.0
    retry_base_s: float = 10.0
    retry_max_delay_s: float = 12 * 3600.0
    retry_horizon_s: float = 3 * 24 * 3600.0
    lease_s: float = 60.0
    poll_interval_s: float = 0.5
    event_retention_days: float = 30.0

    @classmethod
    def from_env(cls) -> WebhookSettings:
        return cls(
            allow_private_targets=_env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False),
            timeout_s=_env_seconds("WEBHOOK_TIMEOUT", cls.timeout_s),
            retry_base_s=_env_seconds("WEBHOOK_RETRY_BASE", cls.retry_base_s),
            retry_max_delay_s=_env_seconds("WEBHOOK_RETRY_MAX_DELAY", cls.retry_max_delay_s),
            retry_horizon_s=_env_seconds("WEBHOOK_RETRY_HORIZON", cls.retry_horizon_s),
            lease_s=_env_seconds("WEBHOOK_LEASE", cls.lease_s),
            poll_interval_s=_env_seconds("WORKER_POLL_INTERVAL", cls.poll_interval_s),
            event_retention_days=_env_seconds(
                "EVENT_RETENTION_DAYS", cls.event_retention_days, unit="days"
            ),
        )


def default_database_url() -> str:
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=default_database_url)
    spec_path: Path = PROJECT_ROOT / "openapi" / "openapi.yaml"
    # Response validation costs time per request; tests and CI switch it on.
    validate_responses: bool = False
    log_level: str = "INFO"
    # SQLite waits this long for a competing writer before giving up.
    sqlite_busy_timeout_ms: int = 5000
    # Rate limits: see the module docstring. Off unless asked in code, on by default in the
    # environment (from_env).
    rate_limit_enabled: bool = False
    login_rate_limit: str = "10/minute"
    password_reset_rate_limit: str = "5/15minutes"
    write_rate_limit: str = "600/minute"
    redis_url: str | None = None
    trust_proxy_headers: bool = False
    # The largest body of any request, in bytes (413 above it), but for the import's own.
    max_body_bytes: int = 1024 * 1024
    # The largest product import body, in bytes (413 above it).
    import_max_bytes: int = 32 * 1024 * 1024
    # PostgreSQL time bounds: see the module docstring (service/db_faults.py applies them).
    database_connect_timeout_s: int = 5
    database_statement_timeout_ms: int = 15000
    database_pool_timeout_s: int = 5
    # The read replica: see the module docstring.
    database_replica_url: str | None = None
    database_replica_max_lag_s: float = 30.0
    database_replica_rest_s: float = 30.0
    # Events and webhooks: see the module docstring.
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DATABASE_URL") or default_database_url(),
            spec_path=Path(os.environ.get("STOREKEEPER_SPEC_PATH") or cls.spec_path),
            validate_responses=_env_bool("STOREKEEPER_VALIDATE_RESPONSES", False),
            log_level=os.environ.get("LOG_LEVEL", "INFO").upper(),
            sqlite_busy_timeout_ms=int(os.environ.get("SQLITE_BUSY_TIMEOUT_MS", "5000")),
            rate_limit_enabled=_env_bool("RATE_LIMIT_ENABLED", True),
            login_rate_limit=os.environ.get("LOGIN_RATE_LIMIT") or cls.login_rate_limit,
            password_reset_rate_limit=os.environ.get("PASSWORD_RESET_RATE_LIMIT")
            or cls.password_reset_rate_limit,
            write_rate_limit=os.environ.get("WRITE_RATE_LIMIT") or cls.write_rate_limit,
            redis_url=os.environ.get("REDIS_URL") or None,
            trust_proxy_headers=_env_bool("TRUST_PROXY_HEADERS", False),
            max_body_bytes=_env_positive_int("STOREKEEPER_MAX_BODY_BYTES", cls.max_body_bytes),
            import_max_bytes=_env_positive_int(
                "STOREKEEPER_IMPORT_MAX_BYTES", cls.import_max_bytes
            ),
            database_connect_timeout_s=_env_int(
                "DATABASE_CONNECT_TIMEOUT", cls.database_connect_timeout_s, minimum=1
            ),
            database_statement_timeout_ms=_env_int(
                "DATABASE_STATEMENT_TIMEOUT_MS", cls.database_statement_timeout_ms, minimum=0
            ),
            database_pool_timeout_s=_env_int(
                "DATABASE_POOL_TIMEOUT", cls.database_pool_timeout_s, minimum=1
            ),
            database_replica_url=os.environ.get("DATABASE_REPLICA_URL") or None,
            database_replica_max_lag_s=_env_seconds(
                "DATABASE_REPLICA_MAX_LAG", cls.database_replica_max_lag_s
            ),
            database_replica_rest_s=_env_seconds(
                "DATABASE_REPLICA_REST", cls.database_replica_rest_s
            ),
            webhooks=WebhookSettings.from_env(),
        )


LOG_MAIL_BODIES_ENV = "STOREKEEPER_LOG_MAIL_BODIES"


def log_mail_bodies() -> bool:
    """Whether ``STOREKEEPER_LOG_MAIL_BODIES`` asks for mail bodies in the log (see above)."""
    return _env_bool(LOG_MAIL_BODIES_ENV, False)
