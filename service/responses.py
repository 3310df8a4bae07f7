"""Handler return values with an explicit media type.

Operations declare both ``application/json`` (success) and ``application/problem+json``
(errors), so connexion needs to be told which one a handler's return value is.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from service.errors import NotAcceptableProblem

JSON = "application/json"
CSV = "text/csv"
# Bodies that carry a secret (access tokens, new API keys): no cache may keep them.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
# CSV output prefixes such text with one apostrophe, also when apostrophes already precede the
# formula character, and CSV input removes exactly one: the two are exact inverses.
_FORMULA = re.compile(r"^'*[=+\-@\t\r]")
_ESCAPED_FORMULA = re.compile(r"^'+[=+\-@\t\r]")


def escape_formula(text: str) -> str:
    return "'" + text if _FORMULA.match(text) else text


def unescape_formula(text: str) -> str:
    return text[1:] if _ESCAPED_FORMULA.match(text) else text


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
