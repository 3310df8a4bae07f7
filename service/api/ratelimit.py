"""Rate limits, applied before the request body is even validated (an ASGI middleware).

Policies (each a list of ``limits`` items, e.g. ``"10/minute"`` or ``"10/minute;50/hour"``):

- ``login`` and ``issueToken`` (one budget for both), ``requestPasswordReset``: per client
  address **and** per e-mail address (casefolded, stored only as a SHA-256 digest); both
  must pass. An attempt refused by one budget is not charged to the other, so a blocked
  address cannot burn a victim's budget.
- ``confirmPasswordReset``: per client address (its body carries a reset token, no e-mail;
  the token itself is unguessable).
- every other write (POST/PUT/PATCH/DELETE under ``/api/v1``, logout included): per
  credential (``Principal.scope_key``), per client address when there is none.
- reads are never limited.

Every attempt counts, successful or not: the limit is on tries, which is what slows a
password guesser. A request refused with 429 is not counted.

Where: :class:`RateLimitMiddleware` counts in the ASGI stack, after routing and security (the
credential is known; a 401/403 is not counted) and after the body's size and media type
checks (413/415), but **before request validation**: a flood of invalid bodies gets 429s
once its budget is spent, not a validation each. For login and the password reset request
it reads the (size-limited) body to find the e-mail, then hands the same bytes on. The
resolver still wraps each limited handler (:meth:`RateLimits.wrap`), as a fallback that
counts a request which reached the handler without passing the middleware; one that did is
not counted twice.

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
on success and on every problem answered after the count (validation's and the handler's).
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
from urllib.parse import parse_qsl

import flask
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionResponse
from connexion.resolver import Resolution, Resolver
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter, RateLimiter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from werkzeug.wrappers import Response

from service.api.http_facts import operation_name
from service.api.middleware.body import body_of, read_body, replay
from service.api.security import current_principal
from service.domain.accounts import Principal
from service.formats import FORM, MULTIPART, loads_json
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
# Put in the ASGI scope by the middleware once it has counted a request: the RateLimit-*
# headers of its answer (the handler wrapper then does not count it again).
SCOPE_KEY = "storekeeper.rate_limit_headers"
FORM_TYPES = (FORM, MULTIPART)


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


@dataclass(frozen=True)
class Caller:
    """Who is asking, as the budgets key it: read from the ASGI scope by the middleware."""

    address: str
    credential: str | None = None  # Principal.scope_key, when authenticated
    email: str | None = None  # email_key() of the body's e-mail, for by_email policies


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
        # One budget for both ways of logging in (JSON and the OAuth2 token endpoint's form):
        # a password guesser gains nothing by alternating between them.
        login_policy = Policy(
            "login", "login attempts", login, by_email="email", by_email_form="username"
        )
        self.auth_policies = {
            "login": login_policy,
            "issueToken": login_policy,
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
        """The handler, counting the requests that reached it without the middleware."""

        @functools.wraps(function)
        def limited(*args: Any, **kwargs: Any) -> Any:
            scope = flask.request.environ.get("asgi.scope") or {}
            if SCOPE_KEY in scope:  # counted by RateLimitMiddleware, which adds the headers
                return function(*args, **kwargs)
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
            forwarded = _right_most(request.headers.getlist("X-Forwarded-For"))
            if forwarded:
                return forwarded
        return request.remote_addr or "unknown"

    def scope_address(self, scope: Scope) -> str:
        """:meth:`client_address`, from the ASGI scope."""
        if self.trust_proxy_headers:
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
            forwarded = _right_most(values)
            if forwarded:
                return forwarded
        client = scope.get("client")
        return (client[0] if client else None) or "unknown"

    @staticmethod
    def email(policy: Policy) -> str | None:
        """The e-mail in the body, read from Flask's caches (the handler can still read it)."""
        request = flask.request
        value = None
        if request.mimetype in FORM_TYPES:
            value = request.form.get(policy.by_email_form) if policy.by_email_form else None
        else:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                value = body.get(policy.by_email)
        if not isinstance(value, str) or not value.strip():
            return None
        return email_key(value)

    def caller(self, policy: Policy) -> Caller:
        """:class:`Caller` of the Flask request being handled."""
        principal = current_principal() if policy.by_credential else None
        return Caller(
            self.client_address(),
            principal.scope_key if principal is not None else None,
            self.email(policy) if policy.by_email else None,
        )

    def checks(self, policy: Policy, caller: Caller | None = None) -> list[Check]:
        caller = caller or self.caller(policy)
        keys: list[tuple[str, ...]] = []
        if policy.by_credential:
            if caller.credential is not None:
                keys.append(("credential", caller.credential))
            else:
                keys.append(("address", caller.address))
        else:
            keys.append(("address", caller.address))
            if policy.by_email and caller.email is not None:
                keys.append(("email", _digest(caller.email)))
        return [
            Check(item, (KEY_PREFIX, policy.name, *key)) for key in keys for item in policy.limits
        ]

    # -- counting --------------------------------------------------------------------------

    def enforce(self, policy: Policy, caller: Caller | None = None) -> dict[str, str]:
        """Count this request or raise the 429; the RateLimit-* headers for the answer."""
        checks = self.checks(policy, caller)
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


def _right_most(values: list[str]) -> str | None:
    """The right-most entry of X-Forwarded-For header(s): what the trusted proxy saw."""
    parts = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return parts[-1] if parts else None


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


# --- the middleware ---------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _body_email(scope: Scope, body: bytes, policy: Policy) -> str | None:
    """The e-mail of a login or reset body, as Flask would read it (form field or JSON key);
    None for anything unreadable (validation, further in, says why)."""
    media_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    value: Any = None
    try:
        text = body.decode("utf-8", "replace")
        if media_type in FORM_TYPES:
            if policy.by_email_form and media_type == FORM:
                fields = parse_qsl(text, keep_blank_values=True, max_num_fields=100)
                value = next((v for k, v in fields if k == policy.by_email_form), None)
        elif media_type == "application/json" or media_type.endswith("+json"):
            document = loads_json(text)  # nesting bounded: never a RecursionError
            if isinstance(document, dict):
                value = document.get(policy.by_email)
    except ValueError:
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    return email_key(value)


def _credential(scope: Scope) -> str | None:
    """The caller's budget key, from what connexion's security layer put in the scope."""
    context = scope.get("extensions", {}).get("connexion_context", {})
    info = context.get("token_info")
    if not info:
        return None
    return Principal.from_token_info(info).scope_key


class RateLimitMiddleware:
    """Counts login, password reset and every write before the body is validated.

    Placed after security (BEFORE_VALIDATION, added after the body size and media type
    middleware, which therefore run first and bound the body it may read). A refused request
    is a 429 problem; an allowed one carries the RateLimit-* headers on its answer, also when
    that answer is a problem raised further in (validation's, the handler's).
    """

    def __init__(self, app: ASGIApp, *, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only operations of the spec (as the resolver's wrapping was): an unknown path or
        # method is a 404/405 further in, and costs no budget.
        operation = operation_name(scope) if scope["type"] == "http" else None
        policy = (
            self.limits.policy_for(scope["method"], scope["path"], operation)
            if operation is not None
            else None
        )
        if policy is None:
            await self.app(scope, receive, send)
            return
        email = None
        if policy.by_email:
            messages = await read_body(receive)
            body = body_of(messages)
            receive = replay(messages, receive)
            email = _body_email(scope, body, policy)
        caller = Caller(self.limits.scope_address(scope), _credential(scope), email)
        if self.limits.shared:  # Redis: network I/O, off the event loop
            headers = await run_in_threadpool(self.limits.enforce, policy, caller)
        else:
            headers = self.limits.enforce(policy, caller)
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in raw if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app({**scope, SCOPE_KEY: headers}, receive, send_with_headers)
        except (Problem, ProblemException) as exc:
            # Rendered further out, by the error handlers: the problem carries the headers
            # (its own win).
            exc.headers = {**headers, **(exc.headers or {})}
            raise


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
