"""Conditional requests: ETag on single resources, If-None-Match → 304, If-Match → 412.

The ETag is the row's id and version; the version is bumped by every UPDATE and checked
by it too (SQLAlchemy's version counter), so even two writers that both passed the
If-Match check cannot both win.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import request

from service.api.responses import empty_response, json_response
from service.problems import PreconditionFailedProblem


class Versioned(Protocol):
    id: int
    version: int


def etag_of(resource: Versioned) -> str:
    return f'"{resource.id}-{resource.version}"'


def _tags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def not_modified(resource: Versioned) -> tuple[str, int, dict[str, str]] | None:
    """The 304 answer when the client's If-None-Match already names this version."""
    header = request.headers.get("If-None-Match")
    if not header:
        return None
    tags = _tags(header)
    if "*" in tags or etag_of(resource) in tags:
        return empty_response(304, {"ETag": etag_of(resource)})
    return None


def require_match(resource: Versioned) -> None:
    """Refuse a write whose If-Match names another version of the resource."""
    header = request.headers.get("If-Match")
    if not header:
        return
    tags = [t.strip() for t in header.split(",") if t.strip()]
    if "*" in tags or etag_of(resource) in tags:
        return
    raise PreconditionFailedProblem(
        f"The resource has changed (current ETag {etag_of(resource)}); "
        "fetch it again and retry with the new ETag."
    )


def resource_response(
    body: dict[str, Any], resource: Versioned, status: int = 200, location: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    headers = {"ETag": etag_of(resource)}
    if location:
        headers["Location"] = location
    return json_response(body, status, headers)
