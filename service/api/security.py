"""Who is calling: connexion's bearer-token hook and the current request's principal.

connexion's security layer runs in the ASGI middleware, before Flask: it reaches the app's
database through the ASGI scope (put there by :class:`DatabaseScopeMiddleware`) and resolves
the secret with :func:`service.domain.accounts.authenticate` in a thread.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from starlette.concurrency import run_in_threadpool

from service.db import session
from service.domain.accounts import Principal, authenticate
from service.formats import utcnow
from service.models import ApiKey

SCOPE_DATABASE = "storekeeper.database"


def _touch(credential_id: int) -> None:
    stmt = update(ApiKey).where(ApiKey.id == credential_id).values(last_used_at=utcnow())
    session().execute(stmt)


def _lookup(database, secret: str) -> dict[str, Any] | None:
    principal = database.run(lambda: authenticate(session(), secret), write=False)
    if principal is None:
        return None
    if principal.touch:
        # Its own short write transaction (at most once a minute per key): the lookup itself
        # stays read-only.
        database.run(lambda: _touch(principal.credential_id), write=True)
    return principal.token_info()


async def token_info(token: str, request) -> dict[str, Any] | None:
    """connexion's x-tokenInfoFunc: resolve a bearer secret against this app's database."""
    database = request.scope[SCOPE_DATABASE]
    return await run_in_threadpool(_lookup, database, token)


class DatabaseScopeMiddleware:
    """Puts the app's Database into the ASGI scope, where the security layer can reach it."""

    def __init__(self, app, database) -> None:
        self.app = app
        self.database = database

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, SCOPE_DATABASE: self.database}
        await self.app(scope, receive, send)


def current_principal() -> Principal | None:
    """The authenticated caller of the request being handled (None on public operations)."""
    from connexion.context import context

    info = context.get("token_info")
    return Principal.from_token_info(info) if info else None
