"""X-Request-ID: accepted from the client (when sane) or generated, echoed, and logged.

The middleware sits outside every other layer, so even routing and validation problems
carry the id. It also writes the id into the request headers, which is how the error
handlers and Flask views further in see it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.http_facts import REQUEST_ID_HEADER

access_log = logging.getLogger("storekeeper.access")

_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
# Client ids are echoed into logs and headers: accept only short, printable tokens.
_ACCEPTABLE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = [(k, v) for k, v in scope["headers"] if k != _HEADER]
        supplied = next((v for k, v in scope["headers"] if k == _HEADER), None)
        request_id = (
            supplied.decode("latin-1")
            if supplied and _ACCEPTABLE.match(supplied)
            else uuid.uuid4().hex
        )
        headers.append((_HEADER, request_id.encode("latin-1")))
        # One `extensions` dict for every layer. The scopes further in are shallow copies of
        # this one (connexion's routing copies it), so what routing records there, the
        # operationId, reaches the error handlers too; uvicorn sends no `extensions` at all.
        scope = {**scope, "headers": headers, "extensions": scope.get("extensions") or {}}
        started = time.perf_counter()
        status_holder: dict[str, int] = {}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                out = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                out.append((_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": out}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %s %.1fms request_id=%s",
                scope.get("method"),
                scope.get("path"),
                status_holder.get("status", 500),
                (time.perf_counter() - started) * 1000,
                request_id,
                extra={"request_id": request_id},
            )
