"""Request body size limits, enforced before the body is read (413 problem+json).

connexion's body validators and Flask read a whole body into memory, so a limit has to act
in front of them. This ASGI middleware runs after routing and security (a caller without the
right credential still gets its 401/403) and before request validation:

- with a ``Content-Length`` above the limit the request is refused at once, without reading
  a byte of the body (a client sending ``Expect: 100-continue`` never uploads it);
- without one (``Transfer-Encoding: chunked``) the body is read and counted as it arrives and
  refused as soon as it passes the limit, so at most the limit is ever held in memory; a body
  within the limit is then handed on with the ``Content-Length`` it turned out to have
  (connexion's validators and Flask under a2wsgi read no body without one).

The server itself frames the body by ``Content-Length``, so a declared length cannot be
exceeded. Every request has a limit: ``default`` (``STOREKEEPER_MAX_BODY_BYTES``, 1 MiB),
unless ``limits`` names its operation (``operationId``), e.g. the product import's
``STOREKEEPER_IMPORT_MAX_BYTES``. A request connexion did not route (flasgger's pages, an
unknown path) gets the default too.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.http_facts import operation_name
from service.api.middleware.body import body_of, read_body, replay
from service.problems import PayloadTooLargeProblem


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we run
    return None


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope.get("headers", []))


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, default: int | None = None, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = default
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = (
            self.limits.get(operation_name(scope) or "", self.default)
            if scope["type"] == "http"
            else None
        )
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None or not _has_header(scope, b"transfer-encoding"):
            # HTTP/1.1 frames a body by one of the two; without either there is none.
            if declared is not None and declared > limit:
                raise PayloadTooLargeProblem(limit)
            await self.app(scope, receive, send)
            return
        messages = await read_body(receive, limit)
        length = len(body_of(messages))
        headers = [
            (name, value)
            for name, value in scope.get("headers", [])
            if name not in (b"content-length", b"transfer-encoding")
        ]
        headers.append((b"content-length", str(length).encode("latin-1")))
        await self.app({**scope, "headers": headers}, replay(messages, receive), send)
