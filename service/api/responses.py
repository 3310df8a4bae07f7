"""Handler return values with an explicit media type.

Operations declare both ``application/json`` (success) and ``application/problem+json``
(errors), so connexion needs to be told which one a handler's return value is.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from service.formats import CSV, JSON
from service.problems import NotAcceptableProblem

# Bodies that carry a secret (access tokens, new API keys): no cache may keep them.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def negotiate(accept: str | None, offered: tuple[str, ...] = (JSON, CSV)) -> str:
    """The first of ``offered`` unless Accept prefers another; 406 when it allows none."""
    accept = (accept or "").strip()
    if not accept:
        return offered[0]
    chosen = parse_accept_header(accept, MIMEAccept).best_match(offered)
    if chosen is None:
        raise NotAcceptableProblem(accept, offered)
    return chosen


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None):
    return body, status, {"Content-Type": JSON, **(headers or {})}


def empty_response(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    """204 and 304 carry no body, so they carry no Content-Type either."""
    response = Response(status=status, headers=headers)
    del response.headers["Content-Type"]
    return response
