"""A path spelled in any way but the route's own reaches no handler: it is a 404 problem.

Flask strips leading slashes and merged inner ones, and used to dispatch ``//api/v1/users``
straight to the view, outside connexion's routing, security and validation (issue 11).
Every path and method of the spec is tried here with a ``//`` prefix, an inner ``//`` and a
trailing ``/``, without credentials, while every operation's handler counts its calls.
"""

from __future__ import annotations

import functools
import json
import re

import anyio
import pytest
from connexion.apps.flask import FlaskOperation
from starlette.exceptions import HTTPException

from service import spec
from service.api.middleware.path_guard import is_canonical
from tests.helpers import asgi_scope, assert_problem

METHODS = ("get", "put", "post", "delete", "patch")
BASE = "http://testserver"  # a URL, so that a leading "//" is not read as a host


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}/]+\}", "1", template)


def _spellings(path: str) -> list[tuple[str, str]]:
    """Non-canonical spellings of ``path``: leading ``//``, inner ``//``, trailing ``/``."""
    spellings = [("leading", f"/{path}"), ("trailing", f"{path}/")]
    last = path.rfind("/")
    if last > 0:
        spellings.append(("inner", f"{path[:last]}/{path[last:]}"))
    return spellings


CASES = [
    pytest.param(method.upper(), spelled, id=f"{method.upper()} {template} {kind}")
    for template, item in spec.paths().items()
    for method in item
    if method in METHODS
    for kind, spelled in _spellings(_concrete(template))
]


@pytest.fixture()
def handler_calls(app, monkeypatch) -> list[str]:
    """Every operation handler's calls, by operationId (the handlers themselves still run)."""
    calls: list[str] = []
    for view in app.app.view_functions.values():
        if not isinstance(view, FlaskOperation):
            continue

        def counting(fn, operation_id):
            @functools.wraps(fn)
            def counted(*args, **kwargs):
                calls.append(operation_id)
                return fn(*args, **kwargs)

            return counted

        operation_id = view.operation_id.rpartition(".")[2]
        monkeypatch.setattr(view, "_fn", counting(view._fn, operation_id))
    return calls


@pytest.fixture()
def anonymous(app):
    return app.test_client()


def test_the_spec_yields_every_spelling():
    # 34 paths, 45 operations; single-segment paths (/health) have no inner slash.
    assert len(CASES) >= 3 * 45 - 2


@pytest.mark.parametrize(("method", "path"), CASES)
def test_a_misspelled_path_is_a_404_problem_and_reaches_no_handler(
    anonymous, handler_calls, method, path
):
    response = anonymous.request(
        method, BASE + path, content=b"{}", headers={"Content-Type": "application/json"}
    )

    problem = assert_problem(response, 404)
    assert problem["detail"] == "No resource exists at this path."
    assert "location" not in response.headers
    assert handler_calls == []


def test_the_handler_counter_sees_a_routed_call(client, handler_calls):
    """The control: the counter does count what connexion routes."""
    assert client.get("/api/v1/users/me").status_code == 200
    assert handler_calls == ["getCurrentUser"]


@pytest.mark.parametrize(
    "path",
    [
        "//api/v1/users/me",
        "/api/v1//users/me",
        "/api/v1/users/me/",
        "/api/v1/users/%2Fme",
        "/api/v1/users/me%2F",
        "///health",
        "//health/ready",
    ],
)
def test_with_a_credential_too(client, handler_calls, path):
    assert_problem(client.get(BASE + path), 404)
    assert handler_calls == []


@pytest.mark.parametrize("path", ["/api/v1/./users/me", "/api/v1/users/../users/me"])
def test_dot_segments_sent_verbatim_are_404(app, auth_headers, handler_calls, path):
    # httpx removes dot segments from a URL before sending it; a raw client need not.
    status, headers, body = asgi_get(app, path, auth_headers("admin"))

    assert status == 404
    assert headers[b"content-type"].startswith(b"application/problem+json")
    assert json.loads(body)["request_id"] == headers[b"x-request-id"].decode()
    assert handler_calls == []


def asgi_get(app, path: str, headers: dict[str, str]) -> tuple[int, dict[bytes, bytes], bytes]:
    """GET ``path`` exactly as given, straight through the ASGI app."""
    scope = asgi_scope("GET", path, headers)
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_the_request_id_is_echoed_on_the_404(anonymous):
    response = anonymous.get(BASE + "//api/v1/users", headers={"X-Request-ID": "guard-1"})

    assert assert_problem(response, 404)["request_id"] == "guard-1"


def test_flask_alone_refuses_an_operation_connexion_did_not_route(app, handler_calls):
    """Second line: the Flask app, called without connexion in front, runs no handler."""
    # connexion turns Flask's 404 into the middleware's exception, rendered further out.
    with pytest.raises(HTTPException) as raised:
        app.app.test_client().get("/api/v1/users/me")

    assert raised.value.status_code == 404
    assert handler_calls == []


def test_flask_merges_no_slashes(app):
    assert app.app.url_map.merge_slashes is False
    assert app.app.url_map.strict_slashes is True


# --- the docs keep working ----------------------------------------------------------------


def test_the_docs_page_is_served(anonymous):
    response = anonymous.get("/apidocs/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_the_docs_without_slash_redirect_relatively(anonymous):
    response = anonymous.get(
        "/apidocs?x=1", headers={"Host": "evil.example"}, follow_redirects=False
    )

    assert response.status_code == 308
    assert response.headers["location"] == "/apidocs/?x=1"


@pytest.mark.parametrize("path", ["/openapi.json", "/openapi.yaml"])
def test_the_raw_specs_are_served(anonymous, path):
    assert anonymous.get(path).status_code == 200


@pytest.mark.parametrize("path", ["//apidocs/", "/apidocs//", "/openapi.json/"])
def test_misspelled_docs_paths_are_404(anonymous, path):
    assert_problem(anonymous.get(BASE + path), 404)


# --- the rule itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/", True),
        ("/api/v1/users", True),
        ("/apidocs/", True),
        ("/api/v1/users/", False),
        ("//api/v1/users", False),
        ("/api//v1/users", False),
        ("/api/./v1", False),
        ("/api/../v1", False),
        ("/api/v1/..", False),
        ("/api/.hidden", True),
        ("", False),
        ("api/v1", False),
    ],
)
def test_is_canonical(path, canonical):
    assert is_canonical(path, {"/apidocs/"}) is canonical
