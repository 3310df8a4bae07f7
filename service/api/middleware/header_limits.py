"""Refuse oversized request headers (431) before anything reads them.

The servers in front (uvicorn, gunicorn's uvicorn worker) accept header blocks far larger than
any client of this API sends, and every layer behind copies them (routing, security, Flask's
environ, the access log). A single header over :data:`MAX_HEADER_BYTES` or a whole block over
:data:`MAX_HEADERS_BYTES` answers 431 ``request-header-fields-too-large``, naming the header
but never echoing it. The limits leave room for every header the spec defines (the longest,
``Idempotency-Key``, ``If-Match``, is at most a few hundred bytes) and for common proxies' own.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.problems import HeaderTooLargeProblem

MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS_BYTES = 32 * 1024


class HeaderLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            total = 0
            for name, value in scope.get("headers", []):
                size = len(name) + len(value)
                total += size
                if size > MAX_HEADER_BYTES:
                    raise HeaderTooLargeProblem(name.decode("latin-1")[:64], MAX_HEADER_BYTES)
            if total > MAX_HEADERS_BYTES:
                raise HeaderTooLargeProblem(None, MAX_HEADERS_BYTES)
        await self.app(scope, receive, send)
