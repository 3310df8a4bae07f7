"""Every problem the service answers on purpose, as plain exceptions (RFC 9457 shape).

A :class:`Problem` carries what a problem document needs (status, type, title, detail,
extension members, extra headers) and nothing of the web framework: the domain, persistence
and command-line layers raise and catch these without importing HTTP code. The API layer
(``service.api.problem_handlers``) renders them as ``application/problem+json``; the CLI prints
their ``detail`` and ``errors``.

``errors[]`` entries name the offending input: :func:`pointer_error` for a body field (a JSON
pointer), :func:`parameter_error` for a query, path or header parameter, :func:`row_error`
for a line of an imported file. Lists of entries are capped at :data:`MAX_LISTED_ERRORS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

PROBLEM_BASE = "https://storekeeper.dev/problems/"
# errors[] never grows past this many entries; ``error_count`` tells how many there were.
MAX_LISTED_ERRORS = 100


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


def status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """A problem raised on purpose; the API renders it as problem+json."""

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
        super().__init__(detail)
        self.status = status
        self.type = problem_type(slug)
        self.title = title or status_title(status)
        self.detail = detail
        self.headers = headers
        ext = dict(extensions)
        if errors is not None:
            ext["errors"] = errors
        self.ext = ext or None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list((self.ext or {}).get("errors") or [])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.type!r}, {self.detail!r})"


def pointer_error(pointer: str, detail: str) -> dict[str, str]:
    """One ``errors[]`` entry about a body field, addressed with a JSON pointer."""
    return {"pointer": pointer, "detail": detail}


def parameter_error(name: str, location: str, detail: str) -> dict[str, str]:
    """One ``errors[]`` entry about a query, path or header parameter."""
    return {"parameter": name, "in": location, "detail": detail}


def row_error(
    line: int, field_name: str | None, detail: str, pointer: str | None = None
) -> dict[str, Any]:
    """One ``errors[]`` entry about a row of an imported file (1-based ``line``)."""
    entry: dict[str, Any] = {"line": line}
    if field_name is not None:
        entry["field"] = field_name
    if pointer is not None:
        entry["pointer"] = pointer
    entry["detail"] = detail
    return entry


def capped(errors: list[dict[str, Any]], *, exact: bool = True) -> dict[str, Any]:
    """``errors`` (at most :data:`MAX_LISTED_ERRORS`) and their full ``error_count``.

    A check that stopped looking after many errors passes ``exact=False``: ``error_count`` is
    then how many it found, at least, and ``error_count_exact`` is false.
    """
    members: dict[str, Any] = {"errors": errors[:MAX_LISTED_ERRORS], "error_count": len(errors)}
    if not exact:
        members["error_count_exact"] = False
    return members


# --- 4xx --------------------------------------------------------------------------------


class BadRequestProblem(Problem):
    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(400, "validation-error", detail, title="Invalid request", errors=errors)


class BodyErrorsProblem(Problem):
    """400: a body that breaks the contract, every problem named (the list capped).

    ``exact=False``: the check stopped after ``len(errors)`` problems; there may be more.
    """

    def __init__(self, errors: list[dict[str, Any]], *, exact: bool = True) -> None:
        found = f"{len(errors)} error(s)" if exact else f"at least {len(errors)} errors"
        super().__init__(
            400,
            "validation-error",
            f"The request body is invalid: {found}; see errors[].",
            title="Invalid request",
            **capped(errors, exact=exact),
        )


class ParameterErrorsProblem(Problem):
    """400: query, path or header parameters that break the contract (the list capped)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(
            400,
            "validation-error",
            f"The request parameters are invalid: {len(errors)} error(s); see errors[].",
            title="Invalid request",
            **capped(errors),
        )


class JSONTooDeepProblem(Problem):
    """400: a JSON body whose arrays and objects nest deeper than the service parses."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(
            400,
            "validation-error",
            f"The JSON body nests arrays and objects more than {max_depth} levels deep; no "
            "request of this API needs more than a few.",
            title="Invalid request",
            errors=[pointer_error("", f"Nested more than {max_depth} levels deep.")],
            max_depth=max_depth,
        )


class ImportInputProblem(Problem):
    """400: an import body that is not a table of rows at all."""

    def __init__(
        self, detail: str, *, slug: str = "validation-error", errors: list | None = None
    ) -> None:
        # A header row of 100,000 unknown columns is 100,000 errors: capped too.
        listed = capped(errors) if errors is not None and len(errors) > MAX_LISTED_ERRORS else {}
        super().__init__(
            400,
            slug,
            detail,
            title="Invalid request",
            errors=listed.pop("errors", errors),
            **listed,
        )


class ImportRowsProblem(Problem):
    """422: imported rows that cannot be applied; nothing was written."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        rows = len({entry.get("line") for entry in errors})
        super().__init__(
            422,
            "invalid-import-rows",
            f"{len(errors)} problem(s) in {rows} row(s); nothing was imported. See errors[].",
            title="Unprocessable request",
            **capped(errors),
        )
        # Every entry, for the command line (which lists them all).
        self.all_errors = errors


# One answer for every reason a login fails, so it reveals nothing about which e-mails exist.
INVALID_CREDENTIALS_DETAIL = "The e-mail address or password is wrong."


class InvalidCredentialsProblem(Problem):
    def __init__(self) -> None:
        super().__init__(
            401, "invalid-credentials", INVALID_CREDENTIALS_DETAIL, title="Invalid credentials"
        )


UNSUPPORTED_GRANT_DETAIL = "Only the password grant is supported (grant_type=password)."


class OAuthError(Problem):
    """400 of the OAuth2 token endpoint, answered as RFC 6749 §5.2 JSON, not problem+json.

    ``error`` is the RFC's code (``invalid_request``, ``invalid_grant``, ...); ``detail``
    becomes ``error_description``. See ``service.api.problem_handlers``.
    """

    def __init__(self, error: str, description: str) -> None:
        super().__init__(400, f"oauth-{error.replace('_', '-')}", description, title="OAuth error")
        self.error = error


class ForbiddenProblem(Problem):
    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(403, slug, detail)


class NotFoundProblem(Problem):
    def __init__(self, resource: str, identifier: Any) -> None:
        super().__init__(
            404, "not-found", f"{resource} {identifier} does not exist.", title="Not found"
        )


class NotAcceptableProblem(Problem):
    def __init__(self, accept: str, offered: tuple[str, ...]) -> None:
        super().__init__(
            406,
            "not-acceptable",
            f"This operation answers with {' or '.join(offered)}; the Accept header "
            f"({accept[:100]}) allows neither.",
            title="Not acceptable",
        )


class ConflictProblem(Problem):
    def __init__(self, slug: str, detail: str, **extensions: Any) -> None:
        super().__init__(409, slug, detail, title="Conflict", **extensions)


class InsufficientStockProblem(ConflictProblem):
    """409: a document would take stock below zero; each short line named, nothing written."""

    def __init__(self, shortages: list[dict[str, Any]], changes: Sequence[Any]) -> None:
        pointers = {change.line_no: change.pointer for change in changes}
        described = "; ".join(
            f"line {s['line']}: product {s['product_id']} at location {s['location_id']} "
            f"needs {s['requested']}, {s['available']} available"
            for s in shortages
        )
        super().__init__(
            "insufficient-stock",
            f"Not enough stock, nothing was written. {described}.",
            shortages=shortages,
            errors=[
                pointer_error(pointers[s["line"]], f"Only {s['available']} available.")
                for s in shortages
            ],
        )


class ConcurrentChangeProblem(ConflictProblem):
    def __init__(self, detail: str) -> None:
        super().__init__("concurrent-modification", detail)


class IdempotencyKeyInUseProblem(ConflictProblem):
    def __init__(self, key: str) -> None:
        super().__init__(
            "idempotency-key-in-use",
            f"A request with Idempotency-Key {key!r} is still being processed; retry shortly.",
        )


class PreconditionFailedProblem(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(412, "precondition-failed", detail, title="Precondition failed")


class PayloadTooLargeProblem(Problem):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            "payload-too-large",
            f"The body is larger than {max_bytes} bytes, the most this operation accepts.",
            title="Payload too large",
            max_bytes=max_bytes,
        )


class UnsupportedMediaTypeProblem(Problem):
    """415: a body without a Content-Type, or of a type the operation does not take."""

    def __init__(
        self,
        media_type: str | None,
        accepted: tuple[str, ...],
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        got = (
            "the request names no Content-Type"
            if media_type is None
            else f"not {media_type[:100]!r}"
        )
        super().__init__(
            415,
            "unsupported-media-type",
            f"This operation takes a body of type {' or '.join(accepted)}; {got}.",
            title="Unsupported Media Type",
            headers=headers,
            media_types=list(accepted),
        )


class UnsupportedCharsetProblem(Problem):
    def __init__(self, charset: str, what: str = "CSV is") -> None:
        super().__init__(
            415,
            "unsupported-charset",
            f"{what} read as UTF-8 only; the Content-Type names charset {charset[:40]!r}.",
            title="Unsupported Media Type",
        )


class UnprocessableProblem(Problem):
    """The request matches the contract but its values cannot be applied."""

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(
            422, "unprocessable-entity", detail, title="Unprocessable request", errors=errors
        )


class WeakPasswordProblem(Problem):
    """422: a password the account rules refuse, each reason at ``pointer``."""

    def __init__(self, reasons: list[str], pointer: str = "/password") -> None:
        super().__init__(
            422,
            "weak-password",
            "The password is too weak: " + "; ".join(reasons) + ".",
            title="Weak password",
            errors=[pointer_error(pointer, f"The password {reason}.") for reason in reasons],
        )


class InvalidResetTokenProblem(Problem):
    def __init__(self) -> None:
        super().__init__(
            422,
            "invalid-reset-token",
            "The reset token is unknown, expired or already used; request a new one.",
            title="Invalid reset token",
            errors=[pointer_error("/token", "Unknown, expired or already used.")],
        )


class IdempotencyKeyReusedProblem(Problem):
    def __init__(self, key: str) -> None:
        super().__init__(
            422,
            "idempotency-key-reused",
            f"Idempotency-Key {key!r} was already used with a different request; use a new "
            "key for a new operation.",
            title="Idempotency key reused",
        )


class RateLimitedProblem(Problem):
    def __init__(self, what: str, wait: int, limit: int) -> None:
        super().__init__(
            429,
            "rate-limited",
            f"Too many {what}; retry in {wait} seconds.",
            title="Too many requests",
            headers={
                "Retry-After": str(wait),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(wait),
            },
        )


class HeaderTooLargeProblem(Problem):
    def __init__(self, name: str | None, max_bytes: int) -> None:
        what = f"The {name} header is" if name else "The request headers are"
        super().__init__(
            431,
            "request-header-fields-too-large",
            f"{what} larger than {max_bytes} bytes, the most this service accepts.",
            title="Request header fields too large",
            max_bytes=max_bytes,
        )


# --- 5xx --------------------------------------------------------------------------------


class ServiceUnavailableProblem(Problem):
    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        super().__init__(
            503, "service-unavailable", detail, title="Service unavailable", headers=headers
        )
