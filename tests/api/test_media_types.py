"""Every request body: a media type the operation takes (415), a UTF-8 charset (415), a size
limit (413), all decided before the body is parsed (issue 11).

The operations and their media types come from the spec's ``requestBody.content``.
"""

from __future__ import annotations

import re
import time

import anyio
import pytest

from service import spec
from service.api.middleware.body_limit import BodyLimitMiddleware
from service.api.middleware.media_type import body_contracts, charset_accepted
from service.config import Settings
from service.problems import PayloadTooLargeProblem
from tests.helpers import IMPORT_CSV, assert_problem, create_location, create_product, multipart

DEFAULT_LIMIT = Settings().max_body_bytes
METHODS = ("get", "put", "post", "delete", "patch")


def _operations() -> list[tuple[str, str, str, dict]]:
    found = []
    for template, item in spec.paths().items():
        for method, operation in item.items():
            if method in METHODS:
                path = re.sub(r"\{[^}/]+\}", "1", template)
                found.append((operation["operationId"], method.upper(), path, operation))
    return found


OPERATIONS = _operations()
WITH_BODY = [
    pytest.param(method, path, tuple(op["requestBody"]["content"]), id=operation_id)
    for operation_id, method, path, op in OPERATIONS
    if "requestBody" in op
]
MEDIA_TYPES = [
    pytest.param(method, path, media_type, id=f"{param.id} {media_type}")
    for param in WITH_BODY
    for method, path, media_types in [param.values]
    for media_type in media_types
]


def test_every_operation_with_a_body_is_covered():
    # 18, + issueToken (the login split), + importProductsCsv, + createWebhook, updateWebhook,
    # rotateWebhookSecret
    assert len(WITH_BODY) == 23
    assert set(body_contracts(spec.document())) == {p.id for p in WITH_BODY}


def _small_body(media_type: str) -> bytes:
    return b"a=b" if media_type.endswith("urlencoded") else b"{}"


def _assert_quick_and_short(response, started: float, marker: bytes | None = None) -> None:
    assert time.perf_counter() - started < 1.0
    assert len(response.content) < 2048
    if marker is not None:
        assert marker not in response.content


# --- 415: no or the wrong media type ------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "media_types"), WITH_BODY)
def test_a_body_without_content_type_is_415(client, method, path, media_types):
    started = time.perf_counter()
    response = client.request(method, path, content=b'{"name": "x"}')

    problem = assert_problem(response, 415, "unsupported-media-type")
    assert problem["media_types"] == list(media_types)
    assert "no Content-Type" in problem["detail"]
    accept = response.headers[f"accept-{method.lower()}"]
    assert accept.split(", ") == list(media_types)
    _assert_quick_and_short(response, started)


@pytest.mark.parametrize(("method", "path", "media_types"), WITH_BODY)
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "image/*", "json"])
def test_a_body_of_another_media_type_is_415(client, method, path, media_types, content_type):
    response = client.request(method, path, content=b"{}", headers={"Content-Type": content_type})

    problem = assert_problem(response, 415, "unsupported-media-type")
    assert problem["media_types"] == list(media_types)


@pytest.mark.parametrize(("method", "path", "media_types"), WITH_BODY)
def test_an_empty_body_without_content_type_is_not_a_media_type_problem(
    client, method, path, media_types
):
    response = client.request(method, path)

    assert response.status_code < 500, response.text
    if not path.endswith("/import"):  # the import's handler refuses a body of no type itself
        assert response.status_code != 415, response.text


def test_a_media_type_problem_comes_after_the_credential_check(anonymous_client):
    response = anonymous_client.post("/api/v1/categories", content=b'{"name": "x"}')

    assert_problem(response, 401)


# --- 415: charsets ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "media_type"), MEDIA_TYPES)
@pytest.mark.parametrize("charset", ["bogus", "latin-1", "utf-16", '"utf-7"'])
def test_a_charset_other_than_utf8_is_415(client, method, path, media_type, charset):
    response = client.request(
        method,
        path,
        content=_small_body(media_type),
        headers={"Content-Type": f"{media_type}; charset={charset}"},
    )

    problem = assert_problem(response, 415, "unsupported-charset")
    assert charset.strip('"') in problem["detail"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=utf8",
        "application/json; charset=US-ASCII",
        'application/json; charset="utf-8"',
        "Application/JSON; Charset=UTF-8",
    ],
)
def test_utf8_and_ascii_json_is_accepted(client, content_type):
    response = client.post(
        "/api/v1/categories",
        content=b'{"name": "Werkzeug"}',
        headers={"Content-Type": content_type},
    )

    assert response.status_code == 201, response.text


@pytest.mark.parametrize("charset", ["utf-8", "UTF8", "us-ascii"])
def test_utf8_forms_and_csv_are_accepted(client, charset):
    login = client.post(
        "/api/v1/auth/token",
        content=b"grant_type=password&username=nobody%40example.com&password=wrong",
        headers={"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"},
    )
    # Read and checked: the credentials are wrong (RFC 6749 invalid_grant), the charset fine.
    assert login.status_code == 400, login.text
    assert login.json()["error"] == "invalid_grant"

    # The CSV upload: a charset on the form's Content-Type and on the file part's.
    body, headers = multipart(
        (
            "file",
            b"sku,name\nCS-1,Charset\n",
            {"filename": "p.csv", "Content-Type": f"text/csv; charset={charset}"},
        )
    )
    imported = client.post(
        IMPORT_CSV,
        content=body,
        headers={"Content-Type": f"{headers['Content-Type']}; charset={charset}"},
    )
    assert imported.status_code == 200, imported.text


@pytest.mark.parametrize(
    ("charset", "accepted"),
    [
        (None, True),
        ("utf-8", True),
        ("UTF-8", True),
        ("utf8", True),
        ("US-ASCII", True),
        ('"utf-8"', True),
        ("latin-1", False),
        ("utf-16", False),
        ("", False),
    ],
)
def test_the_charset_rule(charset, accepted):
    assert charset_accepted(charset) is accepted


# --- optional bodies keep working without one ---------------------------------------------


def test_a_reversal_without_body_or_content_type_works(client):
    location = create_location(client)
    product = create_product(client)
    receipt = client.post(
        "/api/v1/stock/receipts",
        json={
            "location_id": location["id"],
            "lines": [{"product_id": product["id"], "quantity": 3, "unit_cost": "1.00"}],
        },
    )
    assert receipt.status_code == 201, receipt.text
    movement = receipt.json()["movements"][0]

    response = client.post(f"/api/v1/stock/movements/{movement['id']}/reversal")

    assert response.status_code == 201, response.text


def test_logout_without_body_or_content_type_works(anonymous_client, auth_headers):
    response = anonymous_client.post("/api/v1/auth/logout", headers=auth_headers("viewer"))

    assert response.status_code == 204


# --- 413: every request has a size limit --------------------------------------------------

MARKER = b"ECHO-ME-NOT-"


def _oversized(size: int = DEFAULT_LIMIT + 1) -> bytes:
    body = b'{"name": "' + MARKER * (size // len(MARKER) + 1)
    return body[: size - 2] + b'"}'


def _chunks(body: bytes, size: int = 64 * 1024):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _limit_of(path: str) -> int:
    imports = ("/api/v1/products/import", IMPORT_CSV)
    return Settings().import_max_bytes if path in imports else DEFAULT_LIMIT


@pytest.mark.parametrize(("method", "path", "media_types"), WITH_BODY)
def test_a_body_over_the_limit_by_content_length_is_413(client, method, path, media_types):
    limit = _limit_of(path)
    started = time.perf_counter()
    response = client.request(
        method, path, content=_oversized(limit + 1), headers={"Content-Type": media_types[-1]}
    )

    problem = assert_problem(response, 413, "payload-too-large")
    assert problem["max_bytes"] == limit
    _assert_quick_and_short(response, started, MARKER)


@pytest.mark.parametrize(("method", "path", "media_types"), WITH_BODY)
def test_a_chunked_body_over_the_limit_is_413(client, method, path, media_types):
    limit = _limit_of(path)
    started = time.perf_counter()
    response = client.request(
        method,
        path,
        content=_chunks(_oversized(limit + 1)),
        headers={"Content-Type": media_types[-1]},
    )

    problem = assert_problem(response, 413, "payload-too-large")
    assert problem["max_bytes"] == limit
    _assert_quick_and_short(response, started, MARKER)


def test_a_body_within_the_limit_is_read_chunked_too(client):
    body = b'{"name": "Chunked", "description": "' + b"d" * 2000 + b'"}'

    response = client.post(
        "/api/v1/categories",
        content=_chunks(body, 100),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 201, response.text


def test_a_body_exactly_at_the_limit_is_not_413(client):
    response = client.post(
        "/api/v1/categories",
        content=_oversized(DEFAULT_LIMIT),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400, response.text  # the name is too long: read, parsed
    assert MARKER * 10 not in response.content


def test_the_imports_keep_their_larger_limit(client):
    body, headers = multipart(("file", b"sku,name\n" + b"\n" * (DEFAULT_LIMIT + 10), {}))

    response = client.post(IMPORT_CSV, content=body, headers=headers)

    assert response.status_code == 200, response.text
    rows = b'[{"sku": "BIG-1", "name": "x"}' + b" " * (DEFAULT_LIMIT + 10) + b"]"
    response = client.post(
        "/api/v1/products/import", content=rows, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param(method, path, id=operation_id)
        for operation_id, method, path, op in OPERATIONS
        if "requestBody" not in op
    ],
)
def test_operations_without_a_body_have_the_limit_too(client, method, path):
    response = client.request(
        method, path, content=_oversized(), headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 413, "payload-too-large")
    assert MARKER not in response.content


def test_an_unrouted_path_has_the_limit_too(client):
    response = client.post("/apidocs/", content=_oversized())

    assert_problem(response, 413, "payload-too-large")


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit():
    """The middleware stops reading at the first chunk past the limit."""
    chunk, limit = b"x" * 10, 100
    reads = 0

    async def receive():
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": chunk, "more_body": True}  # never ends

    async def app(scope, receive, send):
        raise AssertionError("an oversized body reached the app")

    middleware = BodyLimitMiddleware(app, default=limit)
    scope = {"type": "http", "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}

    async def call():
        await middleware(scope, receive, None)

    with pytest.raises(PayloadTooLargeProblem):
        anyio.run(call)
    assert reads == limit // len(chunk) + 1
