"""Handler return values with an explicit media type.

Operations declare both ``application/json`` (success) and ``application/problem+json``
(errors), so connexion needs to be told which one a handler's return value is.
"""

from __future__ import annotations

from typing import Any

from flask import Response

JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None):
    return body, status, {"Content-Type": JSON, **(headers or {})}


def empty_response(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    """204 and 304 carry no body, so they carry no Content-Type either."""
    response = Response(status=status, headers=headers)
    del response.headers["Content-Type"]
    return response
