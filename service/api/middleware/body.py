"""Reading a request body inside an ASGI middleware and handing the same messages on."""

from __future__ import annotations

from starlette.types import Message, Receive

from service.problems import PayloadTooLargeProblem


async def read_body(receive: Receive, limit: int | None = None) -> list[Message]:
    """Every message of the request body; 413 as soon as it passes ``limit`` bytes."""
    messages: list[Message] = []
    received = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages  # the client went away: let the app see it
        received += len(message.get("body", b""))
        if limit is not None and received > limit:
            raise PayloadTooLargeProblem(limit)
        if not message.get("more_body", False):
            return messages


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then reads on."""
    pending = iter(messages)

    async def replayed() -> Message:
        for message in pending:
            return message
        return await receive()

    return replayed
