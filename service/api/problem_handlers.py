"""Rendering problems as RFC 9457 ``application/problem+json``: the app's error handlers.

Every error the service answers has ``type``, ``title``, ``status``, ``detail`` and
``request_id``; validation problems add ``errors[]`` (see :mod:`service.problems`). Our own
:class:`~service.problems.Problem`, connexion's ``ProblemException`` (its security and
validation layers), Starlette's routing errors and anything unexpected all end here.

One exception: the OAuth2 token endpoint (:data:`OAUTH_TOKEN_OPERATION`) answers its 400s
as RFC 6749 §5.2 ``{"error", "error_description"}`` JSON, which OAuth2 clients expect. Its
handler raises :class:`~service.problems.OAuthError`; any other 400 met on the way (request
validation: a missing or malformed parameter, an undecodable body) becomes
``invalid_request`` here (:func:`_oauth_error`). Its 413, 415, 429 and 5xx stay problems.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from service import db_faults
from service.api.http_facts import REQUEST_ID_HEADER, allowed_methods, operation_name
from service.formats import JSON
from service.problems import (
    UNSUPPORTED_GRANT_DETAIL,
    OAuthError,
    Problem,
    ServiceUnavailableProblem,
    problem_type,
    status_title,
)

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


# --- the OAuth2 token endpoint's errors (RFC 6749 §5.2) ---------------------------------------

OAUTH_TOKEN_OPERATION = "issueToken"
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (printable ASCII but the
# double quote and the backslash).
_NOT_OAUTH_TEXT = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")
MAX_OAUTH_DESCRIPTION = 500
_OAUTH_LISTED_ERRORS = 3


def _oauth_text(text: str) -> str:
    text = _NOT_OAUTH_TEXT.sub("?", text.replace('"', "'").replace("\\", "/"))
    if len(text) > MAX_OAUTH_DESCRIPTION:
        text = text[: MAX_OAUTH_DESCRIPTION - 3] + "..."
    return text


def _oauth_error(exc: Problem | ProblemException) -> OAuthError:
    """The RFC 6749 error for a 400 of the token endpoint: the handler's own; for a form
    that failed validation but names one grant type other than ``password``,
    ``unsupported_grant_type`` (its other parameters depend on the grant: a
    ``client_credentials`` request has no ``username``); else ``invalid_request`` naming what
    request validation found (its ``errors[]``)."""
    if isinstance(exc, OAuthError):
        return exc
    # Set by the form validator (service.api.validators.ProblemFormDataValidator).
    fields = getattr(exc, "form_fields", None) or []
    grants = [value for name, value in fields if name == "grant_type"]
    if len(grants) == 1 and grants[0] not in ("", "password"):
        return OAuthError("unsupported_grant_type", UNSUPPORTED_GRANT_DETAIL)
    entries = (exc.ext or {}).get("errors") or []
    named = []
    for entry in entries[:_OAUTH_LISTED_ERRORS]:
        where = entry.get("parameter") or str(entry.get("pointer", "")).lstrip("/") or "body"
        named.append(f"{where}: {entry.get('detail', 'invalid')}")
    if len(entries) > _OAUTH_LISTED_ERRORS:
        named.append(f"and {len(entries) - _OAUTH_LISTED_ERRORS} more")
    if not named:
        return OAuthError("invalid_request", str(exc.detail or "The request is invalid."))
    return OAuthError("invalid_request", f"The request is invalid: {'; '.join(named)}")


def _render_oauth_error(error: OAuthError, headers: dict[str, str] | None) -> ConnexionResponse:
    body = {"error": error.error, "error_description": _oauth_text(error.detail)}
    return ConnexionResponse(
        status_code=400,
        mimetype=JSON,
        content_type=JSON,
        body=json.dumps(body, separators=(",", ":")),
        # RateLimit-* from the limiter; RFC 6749 §5.1 (and §5.2 by reference): never cached.
        headers={**(headers or {}), "Cache-Control": "no-store", "Pragma": "no-cache"},
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
    if isinstance(exc, OAuthError) or (
        exc.status == 400 and operation_name(request.scope) == OAUTH_TOKEN_OPERATION
    ):
        return _render_oauth_error(_oauth_error(exc), exc.headers)
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
