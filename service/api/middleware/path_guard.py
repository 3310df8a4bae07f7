"""Refuse request paths that are not spelled exactly as a route, before anything routes them.

connexion routes a request by its exact path; whatever it does not route falls through to the
Flask app underneath (where flasgger's docs live). Flask is more forgiving than the router: it
strips leading slashes and merges inner ones, so ``//api/v1/users`` reached the users view
directly, outside connexion's routing, security and validation. Starlette's router answered
``/api/v1/users/`` with a redirect built from the (caller-controlled) Host header.

Nothing ambiguous gets that far: this ASGI middleware answers a 404 problem (the same as any
unknown path) for a path with an empty segment (``//`` anywhere), a ``.`` or ``..`` segment,
or a trailing slash. The only paths that end in ``/`` on purpose are the Flask routes named in
``slash_routes`` (flasgger's ``/apidocs/``); their slash-less spelling gets a 308 with a
*relative* ``Location`` (never one built from Host).

It sits just inside connexion's exception middleware (see ``service.app._middleware_stack``),
so its problems are rendered like every other and carry the request id. Behind it, the Flask
app stops merging slashes (``url_map.merge_slashes = False``; ``strict_slashes`` stays on, so
a slash-less rule never matches a trailing slash) and :func:`refuse_unrouted_views` lets an
operation's view run only for the request connexion routed to that operation.
"""

from __future__ import annotations

from collections.abc import Collection

from connexion.apps.flask import FlaskOperation
from flask import Flask, abort, request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.http_facts import ROUTING_CONTEXT


def is_canonical(path: str, slash_routes: Collection[str] = ()) -> bool:
    """Whether ``path`` is spelled the one way a route can match it."""
    if path in slash_routes or path == "/":
        return True
    if not path.startswith("/") or path.endswith("/"):
        return False
    return all(segment not in ("", ".", "..") for segment in path[1:].split("/"))


class PathGuardMiddleware:
    def __init__(self, app: ASGIApp, *, slash_routes: Collection[str] = ()) -> None:
        self.app = app
        self.slash_routes = frozenset(slash_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            if f"{path}/" in self.slash_routes:
                query = scope.get("query_string", b"").decode("latin-1")
                location = f"{path}/" + (f"?{query}" if query else "")
                raise HTTPException(308, headers={"Location": location})
            if not is_canonical(path, self.slash_routes):
                raise HTTPException(404)
        await self.app(scope, receive, send)


def refuse_unrouted_views(flask_app: Flask) -> None:
    """Second line of defence: an operation's Flask view runs only when connexion routed it.

    connexion registers every operation as a Flask route too, and Flask dispatches any path it
    matches. Before a view of an operation runs, the request's ASGI scope must name that same
    operation as the one connexion routed (and so secured and validated); anything else is a
    404, whatever path spelling or router difference got it there.
    """

    @flask_app.before_request
    def _only_routed_operations() -> None:
        view = flask_app.view_functions.get(request.endpoint or "")
        if not isinstance(view, FlaskOperation):
            return  # flasgger's pages and static files: not operations
        scope = request.environ.get("asgi.scope") or {}
        routed = scope.get("extensions", {}).get(ROUTING_CONTEXT, {}).get("operation_id")
        if routed != view.operation_id:
            abort(404)
