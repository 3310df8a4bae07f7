"""Who is calling: connexion's bearer-token hook, recent credentials, the caller's principal.

connexion's security layer runs in the ASGI middleware, before Flask, and decides 401 and 403
there. It reaches the app's database and :class:`RecentCredentials` through the ASGI scope
(put there by :class:`SecurityScopeMiddleware`).

A credential this process has not resolved lately is looked up with
:func:`service.domain.accounts.authenticate_key` in a worker thread while the security layer
waits. One it resolved in the last :data:`RECENT_CREDENTIAL_S` seconds is answered from
memory, without leaving the event loop (that thread hop was the largest single cost of a
short read), and marked unconfirmed. The request then looks it up again in the database
before its handler acts (:func:`confirm_credential`): as the first statement of its unit of
work, on the handler's connection (``transaction.unit_of_work``), or in a short read of its
own for operations without one (``transaction.credential_confirmed``, on the primary), and
is refused (401, or 403 for a role that no longer suffices) if it no longer holds. So every
request is still checked against the database: revocation, expiry, deactivation and role
changes take effect on the next request, and memory only ever lets a request through (a
credential whose remembered role falls short is looked up afresh). What a stale entry can
change is only the order of refusals: a credential revoked within the last minute may have
its request answered for its input (400, 413, 415, 429) before the 401 that would otherwise
come first.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import replace
from typing import Any

import cachetools
from connexion.exceptions import OAuthResponseProblem, OAuthScopeProblem
from sqlalchemy import update
from starlette.concurrency import run_in_threadpool

from service.db import Database, session
from service.domain.accounts import Principal, authenticate_key, credential_key, scopes_for
from service.formats import utcnow
from service.models import ApiKey

logger = logging.getLogger("storekeeper.security")

SCOPE_DATABASE = "storekeeper.database"
SCOPE_CREDENTIALS = "storekeeper.credentials"
CREDENTIALS_KEY = "storekeeper.credentials"  # in the Flask app's extensions
# How long a resolved credential may decide 401/403 from memory (each request still confirms
# it in its own transaction), and how many are kept per process.
RECENT_CREDENTIAL_S = 60.0
RECENT_CREDENTIALS_MAX = 10_000
# token_info keys of ours (connexion passes the dict through to the request's context).
_UNCONFIRMED = "storekeeper_unconfirmed"  # the credential key, until confirmed
_REQUIRED = "storekeeper_required_scopes"
# What connexion answers for an unknown credential (its OAuthResponseProblem).
INVALID_CREDENTIAL_DETAIL = "Provided token is not valid"


class RecentCredentials:
    """Principals this process resolved lately, by :func:`credential_key` (never a secret).

    Bounded in size and age; shared by the event loop and the handler threads."""

    def __init__(self, ttl_s: float = RECENT_CREDENTIAL_S, size: int = RECENT_CREDENTIALS_MAX):
        self._entries: cachetools.TTLCache[str, Principal] = cachetools.TTLCache(size, ttl_s)
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            self._entries[key] = replace(principal, touch=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


def _touch(credential_id: int) -> None:
    stmt = update(ApiKey).where(ApiKey.id == credential_id).values(last_used_at=utcnow())
    session().execute(stmt)


def record_use(database: Database, principal: Principal | None) -> None:
    """Write an API key's ``last_used_at`` when it is due (at most once a minute per key), in
    a short write transaction of its own: the lookups stay read-only."""
    if principal is None or not principal.touch:
        return
    try:
        database.run(lambda: _touch(principal.credential_id), write=True)
    except Exception as exc:  # bookkeeping: never the reason a request fails
        reason = type(exc).__name__
        logger.warning(
            "could not record the use of API key %s: %s", principal.credential_id, reason
        )


def _lookup(database: Database, key: str) -> Principal | None:
    principal = database.run(lambda: authenticate_key(session(), key), write=False)
    record_use(database, principal)
    return principal


def _token_info(principal: Principal, required_scopes, unconfirmed: str | None) -> dict[str, Any]:
    info = principal.token_info()
    info[_REQUIRED] = list(required_scopes or ())
    if unconfirmed is not None:
        info[_UNCONFIRMED] = unconfirmed
    return info


async def token_info(token: str, request, required_scopes=None) -> dict[str, Any] | None:
    """connexion's x-tokenInfoFunc: resolve a bearer secret (see the module docstring)."""
    key = credential_key(token)
    if key is None:
        return None
    credentials: RecentCredentials = request.scope[SCOPE_CREDENTIALS]
    recent = credentials.get(key)
    # From memory only what it would let through: a refusal (403) is always decided on what
    # the database says now, so a role raised meanwhile takes effect at once.
    if recent is not None and set(required_scopes or ()) <= set(scopes_for(recent.role)):
        return _token_info(recent, required_scopes, unconfirmed=key)
    principal = await run_in_threadpool(_lookup, request.scope[SCOPE_DATABASE], key)
    if principal is None:
        return None
    credentials.put(key, principal)
    return _token_info(principal, required_scopes, unconfirmed=None)


class SecurityScopeMiddleware:
    """Puts the app's Database and RecentCredentials into the ASGI scope, where the security
    layer reaches them."""

    def __init__(self, app, database: Database, credentials: RecentCredentials) -> None:
        self.app = app
        self.extras = {SCOPE_DATABASE: database, SCOPE_CREDENTIALS: credentials}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, **self.extras}
        await self.app(scope, receive, send)


def _request_token_info() -> dict[str, Any] | None:
    """The token_info of the operation being handled; None on a public one, and outside an
    operation (a handler called directly)."""
    from connexion.context import context

    try:
        return context.get("token_info")
    except RuntimeError:  # "Working outside of operation context"
        return None


def current_principal() -> Principal | None:
    """The authenticated caller of the request being handled (None on public operations)."""
    info = _request_token_info()
    return Principal.from_token_info(info) if info else None


def recent_credentials() -> RecentCredentials:
    """The RecentCredentials of the Flask application handling the current request."""
    from flask import current_app

    return current_app.extensions[CREDENTIALS_KEY]


def confirm_credential() -> Principal | None:
    """Confirm, in the current transaction, a credential the security layer answered from
    memory: refuse the request (401, 403) if it no longer holds, else make the request's
    principal the one just read. Returns that principal (for :func:`record_use`), or None
    when there was nothing to confirm."""
    info = _request_token_info()
    if not info or _UNCONFIRMED not in info:
        return None
    key = info[_UNCONFIRMED]
    credentials = recent_credentials()
    principal = authenticate_key(session(), key)
    if principal is None:
        credentials.forget(key)
        raise OAuthResponseProblem(detail=INVALID_CREDENTIAL_DETAIL)
    credentials.put(key, principal)
    info.update(principal.token_info())
    required = set(info[_REQUIRED])
    if not required <= set(info["scope"]):
        raise OAuthScopeProblem(required_scopes=sorted(required), token_scopes=info["scope"])
    del info[_UNCONFIRMED]
    return principal


# connexion inspects the signature of the token-info function on every request (to see which
# keyword arguments it takes); a precomputed one spares it parsing the function each time.
token_info.__signature__ = inspect.signature(token_info)  # type: ignore[attr-defined]
