"""Rendering problems as RFC 9457 ``application/problem+json``: the app's error handlers.

Every error the service answers has ``type``, ``title``, ``status``, ``detail`` and
``request_id``; validation problems add ``errors[]`` (see :mod:`service.problems`). Our own
:class:`~service.problems.Problem`, connexion's ``ProblemException`` (its security and
validation layers), Starlette's routing errors and anything unexpected all end here.
"""

from __future__ import annotations

import logging
from typing import Any

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from service import db_faults
from service.api.http_facts import REQUEST_ID_HEADER, allowed_methods
from service.problems import Problem, ServiceUnavailableProblem, problem_type, status_title

logger = logging.getLogger("storekeeper.errors")


def _request_id(request: ConnexionRequest) -> str | None:
    return request.headers.get(REQUEST_ID_HEADER)


def _render(
    request: ConnexionRequest,
    *,
    status: int,
    title: str | None,
    detail: str | None,
    type_: str | None,
    headers: dict[str, str] | None = None,
    ext: dict[str, Any] | None = None,
) -> ConnexionResponse:
    body_ext = dict(ext or {})
    request_id = _request_id(request)
    if request_id:
        body_ext["request_id"] = request_id
    return problem(
        status=status,
        title=title or status_title(status),
        detail=detail or title or status_title(status),
        type=type_ or "about:blank",
        headers=headers,
        ext=body_ext,
    )


def _challenge(headers: dict[str, str] | None, status: int) -> dict[str, str] | None:
    """Every 401 names the scheme to authenticate with (RFC 9110 §11.6.1)."""
    if status != 401:
        return headers
    return {**(headers or {}), "WWW-Authenticate": 'Bearer realm="storekeeper"'}


def handle_problem(request: ConnexionRequest, exc: Problem | ProblemException) -> ConnexionResponse:
    level = logging.INFO if exc.status < 500 else logging.ERROR
    logger.log(
        level,
        "problem %s %s: %s",
        exc.status,
        exc.type or "about:blank",
        exc.detail,
        extra={"request_id": _request_id(request)},
    )
    return _render(
        request,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        type_=exc.type,
        headers=_challenge(exc.headers, exc.status),
        ext=exc.ext,
    )


def handle_http_exception(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
    """Routing errors from the middleware stack (unknown path, wrong method, ...)."""
    detail = exc.detail if exc.detail and exc.detail != status_title(exc.status_code) else None
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        detail = "No resource exists at this path."
    if exc.status_code == 405:
        # The router answers per method; the spec knows every method of the path.
        allowed = allowed_methods(request.url.path)
        if allowed:
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["Allow"] = ", ".join(allowed)
        detail = "This method is not allowed on this resource." + (
            f" Allowed: {', '.join(allowed)}." if allowed else ""
        )
    return _render(
        request,
        status=exc.status_code,
        title=status_title(exc.status_code),
        detail=detail,
        type_=None,
        headers=headers or None,
    )


def handle_unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Anything unplanned: log the traceback, tell the client only the request id."""
    request_id = _request_id(request)
    logger.error(
        "unhandled error while serving request %s",
        request_id,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    return _render(
        request,
        status=500,
        title="Internal server error",
        detail="The server could not complete the request. Quote the request id when "
        "reporting this.",
        type_=problem_type("internal-error"),
    )


def handle_database_error(request: ConnexionRequest, exc: SQLAlchemyError) -> ConnexionResponse:
    """A database that cannot be reached, does not answer in time or is busy: 503 with
    ``Retry-After``, wherever it was met (the token lookup, login, any handler). The driver's
    message goes to the log only. Any other database error is a program's: the 500 above."""
    outage = db_faults.classify(exc)
    if outage is None:
        return handle_unexpected(request, exc)
    request_id = _request_id(request)
    logger.warning(
        "database %s while serving request %s: %s",
        outage.reason,
        request_id,
        db_faults.describe(exc),
        extra={"request_id": request_id},
    )
    problem = ServiceUnavailableProblem(outage.detail, retry_after=outage.retry_after)
    return handle_problem(request, problem)
