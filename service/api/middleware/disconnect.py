"""Tell a streamed download's producer that its client went away.

A streamed body is produced by a generator that a2wsgi iterates in a worker thread; when the
client disconnects, the ASGI server silently drops what is sent, so the generator would read
the rest of the catalog for nobody. For the operations named here this middleware owns the
request's ``receive`` channel: it hands the request body on as usual, keeps listening for
``http.disconnect`` and sets a ``threading.Event`` that it puts into the ASGI scope (the WSGI
environ's ``asgi.scope``) under :data:`SCOPE_KEY`. The generator checks it between chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.http_facts import operation_name

SCOPE_KEY = "storekeeper.client_disconnected"


def disconnected_event(scope: Scope | None) -> threading.Event | None:
    """The request's "client went away" event, if the middleware watches this operation."""
    return (scope or {}).get(SCOPE_KEY)


class DisconnectWatchMiddleware:
    def __init__(self, app: ASGIApp, *, operations: Collection[str]) -> None:
        self.app = app
        self.operations = frozenset(operations)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or operation_name(scope) not in self.operations:
            await self.app(scope, receive, send)
            return
        gone = threading.Event()
        inbox: asyncio.Queue[Message] = asyncio.Queue()

        async def listen() -> None:
            while True:
                message = await receive()
                await inbox.put(message)
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        listener = asyncio.create_task(listen())
        try:
            await self.app({**scope, SCOPE_KEY: gone}, inbox.get, send)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
