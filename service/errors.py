"""RFC 9457 problem documents: the exceptions handlers raise and the handlers that render them.

Every error the service answers is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and ``request_id``; validation problems add ``errors[]`` where each
entry names the offending field with a JSON pointer (body) or a parameter name.
"""

from __future__ import annotations

import logging
from typing import Any

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem
from starlette.exceptions import HTTPException

from service.http_facts import REQUEST_ID_HEADER, allowed_methods, status_title

logger = logging.getLogger("storekeeper.errors")

PROBLEM_BASE = "https://storekeeper.dev/problems/"


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


class ApiProblem(ProblemException):
    """A problem the service raises on purpose; rendered as problem+json."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        ext = dict(extensions)
        if errors is not None:
            ext["errors"] = errors
        super().__init__(
            status=status,
            title=title or status_title(status),
            detail=detail,
            type=problem_type(slug),
            headers=headers,
            ext=ext or None,
        )


class BadRequestProblem(ApiProblem):
    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(400, "validation-error", detail, title="Invalid request", errors=errors)


class NotFoundProblem(ApiProblem):
    def __init__(self, resource: str, identifier: Any) -> None:
        super().__init__(
            404, "not-found", f"{resource} {identifier} does not exist.", title="Not found"
        )


class ConflictProblem(ApiProblem):
    def __init__(self, slug: str, detail: str, **extensions: Any) -> None:
        super().__init__(409, slug, detail, title="Conflict", **extensions)


class UnprocessableProblem(ApiProblem):
    """The request matches the contract but its values cannot be applied."""

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(
            422, "unprocessable-entity", detail, title="Unprocessable request", errors=errors
        )


class NotAcceptableProblem(ApiProblem):
    def __init__(self, accept: str, offered: tuple[str, ...]) -> None:
        super().__init__(
            406,
            "not-acceptable",
            f"This operation answers with {' or '.join(offered)}; the Accept header "
            f"({accept[:100]}) allows neither.",
            title="Not acceptable",
        )


class PreconditionFailedProblem(ApiProblem):
    def __init__(self, detail: str) -> None:
        super().__init__(412, "precondition-failed", detail, title="Precondition failed")


class ServiceUnavailableProblem(ApiProblem):
    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        super().__init__(
            503, "service-unavailable", detail, title="Service unavailable", headers=headers
        )


def pointer_error(pointer: str, detail: str) -> dict[str, str]:
    """One ``errors[]`` entry about a body field, addressed with a JSON pointer."""
    return {"pointer": pointer, "detail": detail}


def parameter_error(name: str, location: str, detail: str) -> dict[str, str]:
    """One ``errors[]`` entry about a query, path or header parameter."""
    return {"parameter": name, "in": location, "detail": detail}


# --- rendering -------------------------------------------------------------------------


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


def handle_problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
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
