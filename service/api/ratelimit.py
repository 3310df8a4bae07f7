"""Rate limits, applied from outside the handlers: the resolver wraps each limited operation.

Policies (each a list of ``limits`` items, e.g. ``"10/minute"`` or ``"10/minute;50/hour"``):

- ``login``, ``requestPasswordReset``: per client address **and** per e-mail address
  (casefolded, stored only as a SHA-256 digest); both must pass. An attempt refused by one
  budget is not charged to the other, so a blocked address cannot burn a victim's budget.
- ``confirmPasswordReset``: per client address (its body carries a reset token, no e-mail;
  the token itself is unguessable).
- every other write (POST/PUT/PATCH/DELETE under ``/api/v1``, logout included): per
  credential (``Principal.scope_key``), per client address when there is none.
- reads are never limited.

Every attempt counts, successful or not: the limit is on tries, which is what slows a
password guesser. A request refused with 429 is not counted.

The client address is ``request.remote_addr``; with ``TRUST_PROXY_HEADERS`` on it is the
right-most ``X-Forwarded-For`` entry instead, i.e. the address the one trusted proxy in front
of the service saw (the entries to its left are whatever the client chose to send).

Storage: ``memory://`` per process by default (each process then has its own budgets), Redis
when ``REDIS_URL`` is set (one budget shared by every process and host). If Redis fails (down,
unreachable, timing out after 0.5 s) the limiter **fails open to per-process limits**: it logs
a warning, enforces the same limits in this process's memory, and tries Redis again after
``REDIS_RETRY_SECONDS``. Failing closed would turn an outage of an auxiliary cache into an
outage of every login and every write; failing fully open would drop all protection while
Redis is down. Per-process budgets are a bounded degradation (at most one budget per process).

Answers: a refused request is a 429 problem ``rate-limited`` with ``Retry-After`` (whole
seconds, at least 1), ``RateLimit-Limit``, ``RateLimit-Remaining: 0`` and ``RateLimit-Reset``.
Allowed requests carry the same ``RateLimit-*`` headers for the budget closest to exhaustion,
on success and on problems the handler raises.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import flask

from connexion.lifecycle import ConnexionResponse
from connexion.resolver import Resolution, Resolver
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter, RateLimiter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from werkzeug.wrappers import Response

from service.api.security import current_principal
from service.models.auth import email_key
from service.problems import Problem, RateLimitedProblem

if TYPE_CHECKING:
    from service.config import Settings

logger = logging.getLogger("storekeeper.ratelimit")

EXTENSION_KEY = "storekeeper.rate_limits"
API_PREFIX = "/api/v1/"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_PREFIX = "storekeeper"
# A slow Redis must not stall requests: give up quickly and use per-process limits.
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRY_SECONDS = 5.0
REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://", "valkey://", "valkeys://")
STORAGE_ERRORS = (RedisError, StorageError)


@dataclass(frozen=True)
class Policy:
    name: str  # the key namespace
    what: str  # for the problem detail: "Too many <what>"
    limits: tuple[RateLimitItem, ...]
    by_email: str | None = None  # JSON field holding the e-mail address
    by_email_form: str | None = None  # form field holding it
    by_credential: bool = False


@dataclass(frozen=True)
class Check:
    item: RateLimitItem
    identifiers: tuple[str, ...]


def parse_limits(setting: str, value: str) -> tuple[RateLimitItem, ...]:
    """``"10/minute;50/hour"`` → limit items; a bad value stops the app at start."""
    try:
        items = tuple(parse_many(value))
    except ValueError as exc:
        raise ValueError(f"{setting}={value!r} is not a rate limit such as '10/minute'") from exc
    if not items:
        raise ValueError(f"{setting} is empty")
    return items


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


class RateLimits:
    """The limiter of one app: policies, storage, and the 429 it answers."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.trust_proxy_headers = settings.trust_proxy_headers
        login = parse_limits("LOGIN_RATE_LIMIT", settings.login_rate_limit)
        reset = parse_limits("PASSWORD_RESET_RATE_LIMIT", settings.password_reset_rate_limit)
        write = parse_limits("WRITE_RATE_LIMIT", settings.write_rate_limit)
        self.auth_policies = {
            "login": Policy(
                "login", "login attempts", login, by_email="email", by_email_form="username"
            ),
            "requestPasswordReset": Policy(
                "password-reset", "password reset requests", reset, by_email="email"
            ),
            "confirmPasswordReset": Policy(
                "password-reset-confirm", "password reset confirmations", reset
            ),
        }
        self.write_policy = Policy("write", "writes", write, by_credential=True)

        # Moving window: exactly N hits in any window of the period. A fixed window lets a
        # client spend N at the end of one window and N more at the start of the next (2N
        # password guesses in a few seconds), and counts refused hits too, so a client that
        # keeps retrying never gets its budget back. Cost: one timestamp per counted hit per
        # key, never more than the limit's amount (600 for the default write limit).
        url = settings.redis_url or "memory://"
        self.shared = url != "memory://"
        self.storage = _storage(url)
        self.limiter: RateLimiter = MovingWindowRateLimiter(self.storage)
        self.fallback: RateLimiter | None = (
            MovingWindowRateLimiter(MemoryStorage()) if self.shared else None
        )
        self._redis_retry_at = 0.0  # monotonic time until which Redis is skipped

    # -- which operations ------------------------------------------------------------------

    def policy_for(self, method: str, path: str, operation_id: str | None) -> Policy | None:
        if not self.enabled:
            return None
        if operation_id in self.auth_policies:
            return self.auth_policies[operation_id]
        if method.upper() in WRITE_METHODS and path.startswith(API_PREFIX):
            return self.write_policy
        return None

    def wrap(self, function: Callable, policy: Policy) -> Callable:
        @functools.wraps(function)
        def limited(*args: Any, **kwargs: Any) -> Any:
            headers = self.enforce(policy)
            try:
                result = function(*args, **kwargs)
            except Problem as exc:
                exc.headers = {**headers, **(exc.headers or {})}
                raise
            return with_headers(result, headers)

        return limited

    # -- who is asking ---------------------------------------------------------------------

    def client_address(self) -> str:
        request = flask.request
        if self.trust_proxy_headers:
            forwarded = [
                part.strip()
                for header in request.headers.getlist("X-Forwarded-For")
                for part in header.split(",")
                if part.strip()
            ]
            if forwarded:
                return forwarded[-1]
        return request.remote_addr or "unknown"

    @staticmethod
    def email(policy: Policy) -> str | None:
        """The e-mail in the body, read from Flask's caches (the handler can still read it)."""
        request = flask.request
        value = None
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            value = request.form.get(policy.by_email_form) if policy.by_email_form else None
        else:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                value = body.get(policy.by_email)
        if not isinstance(value, str) or not value.strip():
            return None
        return email_key(value)

    def checks(self, policy: Policy) -> list[Check]:
        keys: list[tuple[str, ...]] = []
        if policy.by_credential:
            principal = current_principal()
            if principal is not None:
                keys.append(("credential", principal.scope_key))
            else:
                keys.append(("address", self.client_address()))
        else:
            keys.append(("address", self.client_address()))
            if policy.by_email:
                email = self.email(policy)
                if email is not None:
                    keys.append(("email", _digest(email)))
        return [
            Check(item, (KEY_PREFIX, policy.name, *key)) for key in keys for item in policy.limits
        ]

    # -- counting --------------------------------------------------------------------------

    def enforce(self, policy: Policy) -> dict[str, str]:
        """Count this request or raise the 429; the RateLimit-* headers for the answer."""
        checks = self.checks(policy)
        limiter = self._current_limiter()
        try:
            return self._enforce(limiter, policy, checks)
        except STORAGE_ERRORS as exc:
            if limiter is not self.limiter or self.fallback is None:
                raise
            self._redis_failed(exc)
            return self._enforce(self.fallback, policy, checks)

    def _enforce(self, limiter: RateLimiter, policy: Policy, checks: list[Check]) -> dict[str, str]:
        refused = None
        if len(checks) > 1:
            # Test every budget first: a request refused by one is charged to none.
            refused = next((c for c in checks if not limiter.test(c.item, *c.identifiers)), None)
        if refused is None:
            refused = next((c for c in checks if not limiter.hit(c.item, *c.identifiers)), None)
        now = time.time()
        if refused is not None:
            stats = limiter.get_window_stats(refused.item, *refused.identifiers)
            wait = max(1, math.ceil(stats.reset_time - now))
            raise RateLimitedProblem(policy.what, wait, refused.item.amount)
        # Report the budget closest to exhaustion (the one that will refuse first).
        reports = []
        for check in checks:
            stats = limiter.get_window_stats(check.item, *check.identifiers)
            reset = max(0, math.ceil(stats.reset_time - now))
            reports.append((max(0, stats.remaining), -reset, check.item.amount))
        remaining, reset, amount = min(reports)
        return {
            "RateLimit-Limit": str(amount),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(-reset),
        }

    def _current_limiter(self) -> RateLimiter:
        if self.fallback is not None and time.monotonic() < self._redis_retry_at:
            return self.fallback
        return self.limiter

    def _redis_failed(self, exc: Exception) -> None:
        self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        logger.warning(
            "rate limit storage unavailable (%s: %s); enforcing per-process limits for %.0f s",
            type(exc).__name__,
            exc,
            REDIS_RETRY_SECONDS,
        )

    def close(self) -> None:
        connection = getattr(self.storage, "storage", None)
        if self.shared and hasattr(connection, "close"):
            connection.close()


def _storage(url: str) -> Storage:
    if url.startswith(REDIS_SCHEMES):
        return storage_from_string(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            # The fallback is the retry: no back-off sleeps inside a request.
            retry=Retry(NoBackoff(), 0),
        )
    return storage_from_string(url)


def with_headers(result: Any, headers: dict[str, str]) -> Any:
    """A handler result (tuple, body, flask or connexion response) plus ``headers``.

    Headers the handler set itself win.
    """
    if isinstance(result, Response):
        for name, value in headers.items():
            result.headers.setdefault(name, value)
        return result
    if isinstance(result, ConnexionResponse):
        result.headers = {**headers, **(result.headers or {})}
        return result
    if not isinstance(result, tuple):
        return result, _merged(None, headers)
    if len(result) == 3:
        body, status, own = result
        return body, status, _merged(own, headers)
    if len(result) == 2:
        body, second = result
        if isinstance(second, int):
            return body, second, _merged(None, headers)
        return body, _merged(second, headers)
    if len(result) == 1:
        return result[0], _merged(None, headers)
    return result


def _merged(own: Any, headers: dict[str, str]) -> Any:
    if own is None:
        return dict(headers)
    if isinstance(own, dict):
        return {**headers, **own}
    if isinstance(own, list):  # [(name, value), ...]
        present = {name.lower() for name, _ in own}
        return own + [(k, v) for k, v in headers.items() if k.lower() not in present]
    for name, value in headers.items():  # werkzeug Headers and the like
        if name not in own:
            own[name] = value
    return own


class RateLimitingResolver(Resolver):
    """connexion's Resolver, with each limited operation's handler wrapped by ``limits``."""

    def __init__(self, limits: RateLimits, function_resolver: Callable) -> None:
        super().__init__(function_resolver=function_resolver)
        self.limits = limits

    def resolve(self, operation) -> Resolution:
        resolution = super().resolve(operation)
        policy = self.limits.policy_for(operation.method, operation.path, operation.operation_id)
        if policy is None:
            return resolution
        return Resolution(self.limits.wrap(resolution.function, policy), resolution.operation_id)
