"""Rate limits: login and password reset per address and per e-mail, writes per credential.

Each test builds its own app with tight limits on the session's database (the shared ``app``
fixture runs without limits). Redis tests use database 15 of the local server (14, 13, ...
for parallel workers) at ``STOREKEEPER_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/15``), flushed before and after; without a reachable Redis they are
skipped locally and fail in CI (CI=true).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import flask
import pytest
import redis
from connexion.lifecycle import ConnexionResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from service.api import ratelimit
from service.api.ratelimit import EXTENSION_KEY as RATE_LIMITS_KEY
from service.api.ratelimit import RateLimits, with_headers
from service.api.transaction import EXTENSION_KEY
from service.app import create_app
from service.config import Settings
from service.models import Category
from tests.conftest import TEST_PASSWORD, bearer_for, create_user
from tests.helpers import JSON, assert_problem

LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
CATEGORIES = "/api/v1/categories"
REDIS_ENV = "STOREKEEPER_TEST_REDIS_URL"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@pytest.fixture()
def make_app(database_url) -> Iterator:
    """Factory: an app on the session's database with rate limits on and these settings."""
    built = []

    def make(**settings):
        options = {"rate_limit_enabled": True, "validate_responses": True, **settings}
        application = create_app(Settings(database_url=database_url, **options))
        built.append(application)
        return application

    yield make
    for application in built:
        application.app.extensions[RATE_LIMITS_KEY].close()
        application.app.extensions[EXTENSION_KEY].dispose()


@pytest.fixture()
def redis_url() -> Iterator[str]:
    # Parallel test workers (pytest-xdist: gw0, gw1, ...) flush databases of their own.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    url = os.environ.get(REDIS_ENV, f"redis://127.0.0.1:6379/{15 - worker}")
    connection = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        connection.ping()
    except redis.RedisError as exc:
        connection.close()
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {url} must be reachable in CI: {exc}")
        pytest.skip(f"no Redis at {url} ({exc}); set {REDIS_ENV}")
    connection.flushdb()
    try:
        yield url
    finally:
        connection.flushdb()
        connection.close()


def email() -> str:
    return f"nobody-{uuid.uuid4().hex[:10]}@example.com"


def forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def login(client, address: str | None = None, *, user: str | None = None, form: bool = False):
    """A login attempt (a wrong password for an unknown user unless told otherwise): JSON at
    /auth/login, or with ``form`` the OAuth2 password grant at /auth/token."""
    headers = forwarded(address) if address else {}
    user = user or email()
    if form:
        data = {"grant_type": "password", "username": user, "password": "wrong password"}
        return client.post(TOKEN, data=data, headers=headers)
    return client.post(LOGIN, json={"email": user, "password": "wrong password"}, headers=headers)


def refused(response) -> bool:
    """A counted, failed login: a 401 problem from /auth/login, RFC 6749 invalid_grant from
    /auth/token."""
    if response.status_code == 400:
        return response.json().get("error") == "invalid_grant"
    return response.status_code == 401


def assert_rate_limited(response, limit: int) -> dict:
    problem = assert_problem(response, 429, "rate-limited")
    assert problem["title"] == "Too many requests"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert problem["detail"].endswith(f"retry in {retry_after} seconds.")
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["ratelimit-reset"]) <= 60
    return problem


def category(client, headers: dict[str, str], name: str | None = None):
    name = name or f"c-{uuid.uuid4().hex[:8]}"
    return client.post(CATEGORIES, json={"name": name}, headers=headers)


# --- login ------------------------------------------------------------------------------


def test_login_over_the_limit_is_a_429_problem_with_rate_limit_headers(make_app):
    app = make_app(login_rate_limit="3/minute")
    with app.test_client() as client:
        victim = email()
        for remaining in (2, 1, 0):
            response = login(client, user=victim)
            assert_problem(response, 401, "invalid-credentials")
            # The handler's own problem keeps its challenge and gains the budget.
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["ratelimit-limit"] == "3"
            assert response.headers["ratelimit-remaining"] == str(remaining)
            assert 1 <= int(response.headers["ratelimit-reset"]) <= 60
        response = login(client, user=victim)
        problem = assert_rate_limited(response, 3)
        assert problem["detail"].startswith("Too many login attempts")
        # Still refused; a refused attempt does not push the window further out.
        assert_rate_limited(login(client, user=victim), 3)


def test_per_email_limit_holds_across_client_addresses(make_app):
    app = make_app(login_rate_limit="3/minute", trust_proxy_headers=True)
    victim = email()
    with app.test_client() as client:
        # Form (username) and JSON (email) bodies, any case: one e-mail, one budget.
        assert refused(login(client, "10.0.0.1", user=victim))
        assert refused(login(client, "10.0.0.2", user=victim.upper(), form=True))
        assert refused(login(client, "10.0.0.3", user=victim.title()))
        assert_rate_limited(login(client, "10.0.0.4", user=victim, form=True), 3)
        # The fourth address itself still has budget for another e-mail.
        assert login(client, "10.0.0.4").status_code == 401


def test_different_emails_from_one_address_trip_the_address_limit(make_app):
    app = make_app(login_rate_limit="3/minute", trust_proxy_headers=True)
    with app.test_client() as client:
        for _ in range(3):
            assert login(client, "10.0.1.1").status_code == 401
        assert_rate_limited(login(client, "10.0.1.1"), 3)
        assert_rate_limited(login(client, "10.0.1.1", form=True), 3)
        assert login(client, "10.0.1.2").status_code == 401


def test_forwarded_for_is_ignored_unless_proxy_headers_are_trusted(make_app):
    app = make_app(login_rate_limit="3/minute")
    with app.test_client() as client:
        for address in ("10.0.2.1", "10.0.2.2", "10.0.2.3"):
            assert login(client, address).status_code == 401
        # Every attempt came from the one peer address, whatever the header claimed.
        assert_rate_limited(login(client, "10.0.2.4"), 3)


def test_trusted_forwarded_for_uses_the_entry_the_proxy_added(make_app):
    app = make_app(login_rate_limit="2/minute", trust_proxy_headers=True)
    with app.test_client() as client:
        # The client controls the left part of the chain; the proxy appends the peer.
        assert login(client, "1.1.1.1, 10.0.3.1").status_code == 401
        assert login(client, "2.2.2.2, 10.0.3.1").status_code == 401
        assert_rate_limited(login(client, "3.3.3.3, 10.0.3.1"), 2)


def test_an_attempt_refused_by_one_budget_is_not_charged_to_the_other(make_app):
    app = make_app(login_rate_limit="2/minute", trust_proxy_headers=True)
    victim = email()
    with app.test_client() as client:
        assert login(client, "10.0.4.1").status_code == 401
        assert login(client, "10.0.4.1").status_code == 401
        # The exhausted address tries the victim's e-mail: refused, and not counted for it.
        for _ in range(3):
            assert_rate_limited(login(client, "10.0.4.1", user=victim), 2)
        assert login(client, "10.0.4.2", user=victim).status_code == 401
        assert login(client, "10.0.4.3", user=victim).status_code == 401
        assert_rate_limited(login(client, "10.0.4.4", user=victim), 2)


def test_a_real_login_under_the_limiter_reads_form_and_json_bodies(make_app):
    app = make_app(login_rate_limit="5/minute")
    user = create_user(app.app.extensions[EXTENSION_KEY], "clerk")
    with app.test_client() as client:
        form = {"grant_type": "password", "username": user.email, "password": TEST_PASSWORD}
        by_form = client.post(TOKEN, data=form)
        by_json = client.post(LOGIN, json={"email": user.email, "password": TEST_PASSWORD})
        for response, remaining in ((by_form, "4"), (by_json, "3")):
            assert response.status_code == 200, response.text
            assert response.json()["access_token"]
            assert response.headers["cache-control"] == "no-store"  # the handler's header
            assert response.headers["ratelimit-limit"] == "5"
            assert response.headers["ratelimit-remaining"] == remaining


def test_the_token_endpoint_shares_the_login_budget_and_answers_429_as_a_problem(make_app):
    app = make_app(login_rate_limit="3/minute")
    with app.test_client() as client:
        victim = email()
        # RFC 6749 errors carry the budget like the login's problems do.
        for remaining, form in (("2", True), ("1", False), ("0", True)):
            response = login(client, user=victim, form=form)
            assert refused(response), response.text
            assert response.headers["ratelimit-limit"] == "3"
            assert response.headers["ratelimit-remaining"] == remaining
        assert response.json()["error"] == "invalid_grant"
        assert response.headers["cache-control"] == "no-store"
        # Over the limit: the same 429 problem on both (not an RFC 6749 error).
        problem = assert_rate_limited(login(client, user=victim, form=True), 3)
        assert problem["detail"].startswith("Too many login attempts")
        assert_rate_limited(login(client, user=victim), 3)
        # Also a malformed token request: refused before it is validated.
        assert_rate_limited(client.post(TOKEN, data={"grant_type": "password"}), 3)


# --- password reset ---------------------------------------------------------------------


def test_password_reset_request_and_confirm_are_limited(make_app):
    app = make_app(password_reset_rate_limit="2/minute", trust_proxy_headers=True)
    victim = email()
    with app.test_client() as client:
        for address in ("10.0.5.1", "10.0.5.2"):
            response = client.post(RESET, json={"email": victim}, headers=forwarded(address))
            assert response.status_code == 202, response.text
            assert response.headers["ratelimit-limit"] == "2"
        # Per e-mail, from a third address.
        response = client.post(RESET, json={"email": victim}, headers=forwarded("10.0.5.3"))
        problem = assert_rate_limited(response, 2)
        assert problem["detail"].startswith("Too many password reset requests")
        # Per address, for other e-mails.
        address = forwarded("10.0.5.1")
        assert client.post(RESET, json={"email": email()}, headers=address).status_code == 202
        assert_rate_limited(client.post(RESET, json={"email": email()}, headers=address), 2)

        # Confirmations have their own per-address budget.
        bogus = {"token": "rst_bogus", "new_password": "a long enough passphrase"}
        for _ in range(2):
            assert_problem(client.post(CONFIRM, json=bogus, headers=address), 422)
        assert_rate_limited(client.post(CONFIRM, json=bogus, headers=address), 2)
        assert_problem(client.post(CONFIRM, json=bogus, headers=forwarded("10.0.5.9")), 422)


# --- writes -----------------------------------------------------------------------------


def test_writes_are_limited_per_credential_and_reads_are_not(make_app):
    app = make_app(write_rate_limit="3/minute")
    database = app.app.extensions[EXTENSION_KEY]
    first, second = bearer_for(database, "manager"), bearer_for(database, "manager")
    with app.test_client() as client:
        for remaining in (2, 1, 0):
            response = category(client, first)
            assert response.status_code == 201, response.text
            assert response.headers["location"]  # the handler's headers stay
            assert response.headers["ratelimit-limit"] == "3"
            assert response.headers["ratelimit-remaining"] == str(remaining)
        refused = f"refused-{uuid.uuid4().hex[:8]}"
        problem = assert_rate_limited(category(client, first, refused), 3)
        assert problem["detail"].startswith("Too many writes")
        with database.transaction(write=False) as session:  # a refused write wrote nothing
            assert session.scalar(select(Category).where(Category.name == refused)) is None

        # Another credential (another user here; the budget is per token or key).
        assert category(client, second).status_code == 201
        # Reads are never limited, nor counted.
        for _ in range(10):
            response = client.get(CATEGORIES, headers=first)
            assert response.status_code == 200
            assert not set(RATE_HEADERS) & set(response.headers)
        assert category(client, second).status_code == 201
        # Every write method counts: PATCH and DELETE too.
        created = category(client, second).json()
        patch = client.patch(f"{CATEGORIES}/{created['id']}", json={"name": "x"}, headers=second)
        assert_rate_limited(patch, 3)


def test_a_write_refused_by_validation_counts_and_over_the_limit_is_429_not_400(make_app):
    # The limit is checked before the body is validated (issue 11): a flood of invalid
    # bodies is refused with 429s once its budget is spent, without a validation each.
    app = make_app(write_rate_limit="2/minute")
    headers = bearer_for(app.app.extensions[EXTENSION_KEY], "manager")
    with app.test_client() as client:
        for remaining in ("1", "0"):
            response = client.post(CATEGORIES, json={"nom": "x"}, headers=headers)
            assert_problem(response, 400)
            assert response.headers["ratelimit-remaining"] == remaining  # counted
        assert_rate_limited(client.post(CATEGORIES, json={"nom": "x"}, headers=headers), 2)
        deep = client.post(CATEGORIES, content=b"[" * 5000, headers={**headers, **JSON})
        assert_rate_limited(deep, 2)
        assert_rate_limited(category(client, headers), 2)


def test_without_rate_limits_nothing_is_limited_or_labelled(make_app):
    app = make_app(rate_limit_enabled=False, login_rate_limit="1/minute")
    with app.test_client() as client:
        for _ in range(3):
            response = login(client)
            assert response.status_code == 401
            assert not set(RATE_HEADERS) & set(response.headers)


# --- Redis ------------------------------------------------------------------------------


def test_two_app_instances_share_the_budget_in_redis(make_app, redis_url):
    settings = {
        "redis_url": redis_url,
        "login_rate_limit": "3/minute",
        "write_rate_limit": "2/minute",
    }
    one, two = make_app(**settings), make_app(**settings)
    victim = email()
    headers = bearer_for(one.app.extensions[EXTENSION_KEY], "manager")
    with one.test_client() as first, two.test_client() as second:
        assert login(first, user=victim).status_code == 401
        assert login(second, user=victim).status_code == 401
        assert login(first, user=victim).headers["ratelimit-remaining"] == "0"
        assert_rate_limited(login(second, user=victim), 3)
        assert_rate_limited(login(first, user=victim), 3)

        assert category(first, headers).status_code == 201
        assert category(second, headers).status_code == 201
        assert_rate_limited(category(first, headers), 2)
        assert_rate_limited(category(second, headers), 2)

    keys = [key.decode() for key in redis.Redis.from_url(redis_url).keys("*")]
    assert keys and all(key.startswith("LIMITS:LIMITER/storekeeper/") for key in keys)
    # The e-mail is stored only as a digest.
    assert not any(victim in key for key in keys)


def test_unreachable_redis_falls_back_to_per_process_limits_with_a_warning(make_app, caplog):
    app = make_app(redis_url=UNREACHABLE_REDIS, login_rate_limit="2/minute")
    with (
        caplog.at_level(logging.WARNING, logger="storekeeper.ratelimit"),
        app.test_client() as client,
    ):
        victim = email()
        assert login(client, user=victim).status_code == 401
        assert login(client, user=victim).status_code == 401
        assert_rate_limited(login(client, user=victim), 2)
        assert client.get("/health").status_code == 200
    warnings = [r for r in caplog.records if r.name == "storekeeper.ratelimit"]
    # One warning per back-off period, not one per request.
    assert len(warnings) == 1, warnings
    assert warnings[0].levelno == logging.WARNING
    assert "per-process limits" in warnings[0].getMessage()


def test_after_a_redis_failure_the_limiter_goes_back_to_redis(make_app, redis_url, monkeypatch):
    app = make_app(redis_url=redis_url, write_rate_limit="5/minute")
    limits: RateLimits = app.app.extensions[RATE_LIMITS_KEY]
    headers = bearer_for(app.app.extensions[EXTENSION_KEY], "manager")
    store = redis.Redis.from_url(redis_url)

    def down(*_args, **_kwargs):
        raise RedisConnectionError("connection refused")

    with app.test_client() as client:
        monkeypatch.setattr(limits.limiter, "hit", down)
        assert category(client, headers).status_code == 201  # served from the fallback
        monkeypatch.undo()
        assert category(client, headers).status_code == 201  # still backing off
        assert store.keys("*") == []
        limits._redis_retry_at = 0.0  # the back-off is over
        response = category(client, headers)
        assert response.status_code == 201
        assert response.headers["ratelimit-remaining"] == "4"  # Redis counted this one only
        assert store.keys("*")
    store.close()


# --- units ------------------------------------------------------------------------------


def test_a_bad_limit_stops_the_app_at_start():
    with pytest.raises(ValueError, match="WRITE_RATE_LIMIT"):
        RateLimits(Settings(rate_limit_enabled=True, write_rate_limit="lots"))


def test_environment_defaults(monkeypatch):
    for name in (
        "RATE_LIMIT_ENABLED",
        "LOGIN_RATE_LIMIT",
        "PASSWORD_RESET_RATE_LIMIT",
        "WRITE_RATE_LIMIT",
        "REDIS_URL",
        "TRUST_PROXY_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.rate_limit_enabled is True
    assert settings.redis_url is None
    assert settings.trust_proxy_headers is False
    limits = RateLimits(settings)
    assert [str(i) for i in limits.auth_policies["login"].limits] == ["10 per 1 minute"]
    assert [str(i) for i in limits.write_policy.limits] == ["600 per 1 minute"]
    monkeypatch.setenv("RATE_LIMIT_ENABLED", "false")
    monkeypatch.setenv("LOGIN_RATE_LIMIT", "10/minute;50/hour")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    settings = Settings.from_env()
    assert settings.rate_limit_enabled is False
    assert len(RateLimits(settings).auth_policies["login"].limits) == 2
    assert settings.redis_url == "redis://redis:6379/0"
    # Built in code, as the shared test app is: no limits unless asked.
    assert Settings().rate_limit_enabled is False


def test_anonymous_writes_are_counted_per_client_address(monkeypatch):
    limits = RateLimits(Settings(rate_limit_enabled=True))
    monkeypatch.setattr(ratelimit, "current_principal", lambda: None)
    flask_app = flask.Flask(__name__)
    with flask_app.test_request_context(
        "/api/v1/x", method="POST", environ_base={"REMOTE_ADDR": "192.0.2.7"}
    ):
        checks = limits.checks(limits.write_policy)
    assert [c.identifiers for c in checks] == [("storekeeper", "write", "address", "192.0.2.7")]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"a": 1}, ({"a": 1}, {"RateLimit-Limit": "3"})),
        (({"a": 1},), ({"a": 1}, {"RateLimit-Limit": "3"})),
        (({"a": 1}, 201), ({"a": 1}, 201, {"RateLimit-Limit": "3"})),
        (({"a": 1}, {"X": "y"}), ({"a": 1}, {"RateLimit-Limit": "3", "X": "y"})),
        (
            ({"a": 1}, 201, {"RateLimit-Limit": "own"}),
            ({"a": 1}, 201, {"RateLimit-Limit": "own"}),
        ),
        (({"a": 1}, 200, [("X", "y")]), ({"a": 1}, 200, [("X", "y"), ("RateLimit-Limit", "3")])),
    ],
)
def test_handler_results_gain_headers(result, expected):
    assert with_headers(result, {"RateLimit-Limit": "3"}) == expected


def test_response_objects_gain_headers():
    response = with_headers(flask.Response(status=204), {"RateLimit-Limit": "3"})
    assert response.headers["RateLimit-Limit"] == "3"
    connexion_response = with_headers(
        ConnexionResponse(status_code=200, headers={"X": "y"}), {"RateLimit-Limit": "3"}
    )
    assert connexion_response.headers == {"RateLimit-Limit": "3", "X": "y"}
