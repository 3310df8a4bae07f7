"""A real OAuth2 client library against the real server's token endpoint (RFC 6749).

The production server (``scripts/serve-production.sh``) runs on a throwaway database of each
backend with a clerk whose password we know. authlib's ``OAuth2Session`` (requests) does what
an integrator's OAuth2 client does with the spec's ``OAuth2`` password flow: fetches a token
from its ``tokenUrl`` (``POST /api/v1/auth/token``, a form) and calls the API with it; the
failures come back as authlib's ``OAuthError`` carrying the RFC 6749 ``error`` code, which
only works if the server answers them as RFC 6749 §5.2 JSON.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import yaml
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from service.config import Settings
from service.db import Database
from tests.conftest import TEST_PASSWORD, create_user, throwaway_database
from tests.live_server import LiveServer, live_server


def _token_path() -> str:
    """The tokenUrl of the spec's password flow (what a client reads from the spec)."""
    spec = yaml.safe_load(Settings().spec_path.read_text())
    return spec["components"]["securitySchemes"]["OAuth2"]["flows"]["password"]["tokenUrl"]


@pytest.fixture(scope="module")
def live(backend, tmp_path_factory) -> Iterator[LiveServer]:
    with throwaway_database(backend, tmp_path_factory) as url:
        # Every test here logs in from 127.0.0.1: room for all of them within the minute.
        env = {
            "STOREKEEPER_VALIDATE_RESPONSES": "true",
            "LOG_LEVEL": "WARNING",
            "LOGIN_RATE_LIMIT": "200/minute",
        }
        with live_server(url, workers=1, env=env) as server:
            yield server


@pytest.fixture(scope="module")
def clerk_email(live) -> str:
    database = Database(live.database_url)
    try:
        return create_user(database, "clerk").email
    finally:
        database.dispose()


@pytest.fixture()
def token_url(live) -> str:
    path = _token_path()
    assert path == "/api/v1/auth/token"
    return live.base_url + path


def test_authlib_fetches_a_token_with_the_password_grant_and_calls_the_api(
    live, token_url, clerk_email
):
    with OAuth2Session(client_id="storekeeper-e2e") as session:
        token = session.fetch_token(
            token_url, username=clerk_email, password=TEST_PASSWORD, grant_type="password"
        )
        assert token["token_type"] == "bearer"
        assert token["access_token"].startswith("sk_at_")
        assert token["scope"] == "viewer clerk"
        assert token["expires_in"] == 12 * 3600
        assert token.is_expired() is False
        # The session now sends `Authorization: Bearer <access_token>` itself.
        me = session.get(f"{live.base_url}/api/v1/users/me", timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["email"] == clerk_email
        assert me.json()["role"] == "clerk"


def test_a_wrong_password_is_authlibs_oauth_error_invalid_grant(token_url, clerk_email):
    with OAuth2Session(client_id="storekeeper-e2e") as session:
        with pytest.raises(OAuthError) as raised:
            session.fetch_token(
                token_url, username=clerk_email, password="not the password", grant_type="password"
            )
        assert raised.value.error == "invalid_grant"
        assert raised.value.description == "The e-mail address or password is wrong."
        assert session.token is None
        # An unknown e-mail gets the very same answer.
        with pytest.raises(OAuthError) as unknown:
            session.fetch_token(token_url, username="nobody@example.com", password=TEST_PASSWORD)
        assert (unknown.value.error, unknown.value.description) == (
            raised.value.error,
            raised.value.description,
        )


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post", "none"])
def test_client_credentials_are_accepted_and_ignored(live, token_url, clerk_email, auth_method):
    """Every client is public: however a client authenticates itself, only the user counts."""
    with OAuth2Session(
        client_id="some-integration",
        client_secret="its secret",
        token_endpoint_auth_method=auth_method,
        scope="viewer clerk",
    ) as session:
        token = session.fetch_token(token_url, username=clerk_email, password=TEST_PASSWORD)
        assert token["scope"] == "viewer clerk"
        assert session.get(f"{live.base_url}/api/v1/products", timeout=10).status_code == 200


def test_a_scope_beyond_the_role_and_another_grant_are_oauth_errors(token_url, clerk_email):
    with OAuth2Session(client_id="storekeeper-e2e", scope="viewer admin") as session:
        with pytest.raises(OAuthError) as raised:
            session.fetch_token(token_url, username=clerk_email, password=TEST_PASSWORD)
        assert raised.value.error == "invalid_scope"
    with OAuth2Session(client_id="storekeeper-e2e", client_secret="x") as session:
        with pytest.raises(OAuthError) as raised:
            session.fetch_token(token_url, grant_type="client_credentials")
        assert raised.value.error == "unsupported_grant_type"


def test_request_validation_errors_are_rfc_6749_json_on_the_real_server(token_url):
    """connexion's validation runs in the ASGI stack: its 400 is still an RFC 6749 error."""
    response = httpx.post(
        token_url, data={"grant_type": "password", "username": "a@example.com"}, timeout=10
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "The request is invalid: password: This field is required.",
    }
    # And what is not a 400 stays a problem document.
    as_json = httpx.post(token_url, json={"email": "a@example.com", "password": "x"}, timeout=10)
    assert as_json.status_code == 415
    assert as_json.headers["content-type"].startswith("application/problem+json")
