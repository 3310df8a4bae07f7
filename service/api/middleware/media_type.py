"""Refuse a request body whose media type or charset the operation does not take (415).

The spec's ``requestBody.content`` names the media types each operation accepts; they are read
once, at startup (:func:`body_contracts`). For a routed operation with a request body this
ASGI middleware, before connexion's validation reads the body:

- refuses a non-empty body without ``Content-Type`` (connexion would guess JSON, and Flask
  then refuses to parse it: a 500), and a ``Content-Type`` the operation does not list, with a
  415 ``unsupported-media-type`` problem naming the accepted types (``media_types``, and an
  ``Accept-Post`` / ``Accept-Patch`` header, RFC 9110 §15.5.16, RFC 5789);
- refuses a ``charset`` other than UTF-8 (``utf-8`` or ``utf8``, any case) or its subset
  ``us-ascii`` with a 415 ``unsupported-charset`` problem; no charset means UTF-8. This is the
  one rule for every text body, JSON, form and CSV alike (:func:`charset_accepted`).

An empty body without ``Content-Type`` passes: an operation whose body is optional (a reversal
without a note) works without one, and a required one gets connexion's "body is required".
Operations without a request body are left alone. The body size limit
(:mod:`.body_limit`) runs first, so a chunked body arrives here with a ``Content-Length``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.http_facts import HTTP_METHODS, operation_name
from service.problems import UnsupportedCharsetProblem, UnsupportedMediaTypeProblem
from service.spec import inline_refs

# What a body may declare as its charset; an absent one means UTF-8.
ACCEPTED_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})


def charset_accepted(charset: str | None) -> bool:
    return charset is None or charset.strip().strip('"').lower() in ACCEPTED_CHARSETS


@dataclass(frozen=True)
class BodyContract:
    """What the spec says an operation's request body may be."""

    media_types: tuple[str, ...]

    def accepts(self, media_type: str) -> bool:
        media_type = media_type.lower()
        for accepted in self.media_types:
            kind, _, subtype = accepted.lower().partition("/")
            if accepted.lower() == media_type or (
                subtype == "*" and (kind == "*" or media_type.startswith(f"{kind}/"))
            ):
                return True
        return False


def body_contracts(document: Mapping[str, Any]) -> dict[str, BodyContract]:
    """operationId → its request body's media types, for every operation that has a body."""
    contracts: dict[str, BodyContract] = {}
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in HTTP_METHODS or "requestBody" not in operation:
                continue
            body = inline_refs(operation["requestBody"], document)
            contracts[operation["operationId"]] = BodyContract(tuple(body.get("content", {})))
    return contracts


def split_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``"application/json; charset=UTF-8"`` → ``("application/json", {"charset": "UTF-8"})``."""
    media_type, *params = value.split(";")
    parameters: dict[str, str] = {}
    for param in params:
        name, sep, param_value = param.partition("=")
        if sep:
            parameters[name.strip().lower()] = param_value.strip().strip('"')
    return media_type.strip().lower(), parameters


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is None:
        return _header(scope, b"transfer-encoding") is not None
    return length.strip() not in ("", "0")


class MediaTypeMiddleware:
    def __init__(self, app: ASGIApp, *, contracts: Mapping[str, BodyContract]) -> None:
        self.app = app
        self.contracts = dict(contracts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            contract = self.contracts.get(operation_name(scope) or "")
            if contract is not None:
                scope = _checked(scope, contract)
        await self.app(scope, receive, send)


def _checked(scope: Scope, contract: BodyContract) -> Scope:
    """``scope`` if its body is acceptable (its charset spelled ``utf-8``), else a 415."""
    content_type = _header(scope, b"content-type")
    if content_type is None or not content_type.strip():
        if _has_body(scope):
            raise UnsupportedMediaTypeProblem(
                None, contract.media_types, headers=_accept_header(scope, contract)
            )
        return scope
    media_type, parameters = split_content_type(content_type)
    if not contract.accepts(media_type):
        raise UnsupportedMediaTypeProblem(
            media_type, contract.media_types, headers=_accept_header(scope, contract)
        )
    charset = parameters.get("charset")
    if charset is None:
        return scope
    if not charset_accepted(charset):
        raise UnsupportedCharsetProblem(charset, what="The body is")
    # One spelling for the decoders further in (connexion, Flask, the CSV import).
    parameters["charset"] = "utf-8"
    canonical = "; ".join([media_type, *(f"{k}={_quoted(v)}" for k, v in parameters.items())])
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    headers.append((b"content-type", canonical.encode("latin-1")))
    return {**scope, "headers": headers}


def _quoted(value: str) -> str:
    return value if value and all(c.isalnum() or c in "-._" for c in value) else f'"{value}"'


def _accept_header(scope: Scope, contract: BodyContract) -> dict[str, str] | None:
    name = {"POST": "Accept-Post", "PATCH": "Accept-Patch"}.get(scope.get("method", ""))
    return {name: ", ".join(contract.media_types)} if name else None
