"""/api/v1/auth: login (JSON), the OAuth2 token endpoint (RFC 6749 form), logout, reset."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from base64 import b64encode
from datetime import datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, update

from service.api.handlers import auth as auth_handlers
from service.domain.accounts import TOKEN_TTL
from service.formats import utcnow
from service.models import AccessToken, OutboxMessage, PasswordResetToken, User
from tests.conftest import TEST_PASSWORD, create_user
from tests.helpers import assert_problem

LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
LOGOUT = "/api/v1/auth/logout"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
NEW_PASSWORD = "a brand new passphrase"
RESET_TOKEN_IN_LINK = re.compile(r"#token=(rst_[A-Za-z0-9_-]+)")


# --- helpers ------------------------------------------------------------------------------


def form_login(client, email: str, password: str = TEST_PASSWORD, **extra: str):
    """The OAuth2 password grant at the token endpoint (``extra``: more form fields)."""
    return client.post(
        TOKEN, data={"grant_type": "password", "username": email, "password": password, **extra}
    )


def json_login(client, email: str, password: str = TEST_PASSWORD):
    return client.post(LOGIN, json={"email": email, "password": password})


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
OAUTH_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def assert_oauth_error(response, error: str) -> str:
    """An RFC 6749 §5.2 error answer (400, JSON, never cached); its error_description."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["x-request-id"]
    assert "www-authenticate" not in response.headers
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert body["error_description"] and OAUTH_TEXT.fullmatch(body["error_description"]), body
    return body["error_description"]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def logged_in(client, email: str, password: str = TEST_PASSWORD) -> dict[str, str]:
    response = json_login(client, email, password)
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def set_active(database, user_id: int, active: bool) -> None:
    with database.transaction() as session:
        session.execute(update(User).where(User.id == user_id).values(is_active=active))


def request_reset(client, email: str):
    response = client.post(RESET, json={"email": email})
    assert response.status_code == 202, response.text
    return response


def reset_token_for(client, database, email: str) -> str:
    """Ask for a reset link and fish the token out of the outbox, as the mail would."""
    request_reset(client, email)
    with database.transaction(write=False) as session:
        body = session.scalars(
            select(OutboxMessage.body)
            .where(OutboxMessage.recipient == email)
            .order_by(OutboxMessage.id.desc())
        ).first()
    assert body is not None
    match = RESET_TOKEN_IN_LINK.search(body)
    assert match, body
    return match.group(1)


def confirm(client, token: str, new_password: str = NEW_PASSWORD):
    return client.post(CONFIRM, json={"token": token, "new_password": new_password})


def comparable(response) -> tuple:
    """Everything a client can see of a response, minus the request id."""
    body = response.json() if response.content else None
    if isinstance(body, dict):
        body.pop("request_id", None)
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in {"x-request-id", "content-length"}
    }
    return response.status_code, headers, body


# --- login --------------------------------------------------------------------------------


def test_form_login_issues_a_bearer_token_that_works(anonymous_client, database):
    user = create_user(database, "clerk")
    before = utcnow()
    response = form_login(anonymous_client, user.email)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    # RFC 6749 §5.1
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    token = response.json()
    assert set(token) == {"access_token", "token_type", "expires_in", "expires_at", "scope"}
    assert token["token_type"] == "bearer"
    assert token["access_token"].startswith("sk_at_")
    assert token["expires_in"] == int(TOKEN_TTL.total_seconds())
    assert token["scope"] == "viewer clerk"
    expires_at = datetime.fromisoformat(token["expires_at"])
    assert before + TOKEN_TTL <= expires_at <= utcnow() + TOKEN_TTL
    listed = anonymous_client.get("/api/v1/products", headers=bearer(token["access_token"]))
    assert listed.status_code == 200, listed.text


def test_json_login_works_and_records_last_login(anonymous_client, database):
    user = create_user(database, "manager")
    before = utcnow()
    response = json_login(anonymous_client, user.email.upper())  # e-mails ignore case
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["scope"] == "viewer clerk manager"
    with database.transaction(write=False) as session:
        stored = session.get(User, user.id)
        assert stored.last_login_at is not None
        assert stored.last_login_at >= before
        assert stored.version == user.version + 1  # the ETag follows last_login_at


def test_the_token_is_stored_only_as_a_hash(anonymous_client, database):
    user = create_user(database, "viewer")
    secret = json_login(anonymous_client, user.email).json()["access_token"]
    with database.transaction(write=False) as session:
        stored = session.scalars(select(AccessToken).where(AccessToken.user_id == user.id)).all()
    assert len(stored) == 1
    assert stored[0].token_hash != secret
    assert secret not in stored[0].token_hash
    assert stored[0].token_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_every_login_failure_looks_the_same(anonymous_client, database, monkeypatch):
    user = create_user(database, "clerk")
    inactive = create_user(database, "clerk")
    set_active(database, inactive.id, False)
    checked = []
    real_verify = auth_handlers.verify_password
    monkeypatch.setattr(
        auth_handlers,
        "verify_password",
        lambda stored, password: checked.append(stored) or real_verify(stored, password),
    )

    wrong_password = json_login(anonymous_client, user.email, "not the password at all")
    unknown_email = json_login(anonymous_client, "nobody@example.com")
    deactivated = json_login(anonymous_client, inactive.email)  # right password
    for response in (wrong_password, unknown_email, deactivated):
        problem = assert_problem(response, 401, "invalid-credentials")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert problem["detail"] == "The e-mail address or password is wrong."
    assert comparable(wrong_password) == comparable(unknown_email) == comparable(deactivated)

    # The token endpoint: one RFC 6749 invalid_grant for the same three.
    form_wrong_password = form_login(anonymous_client, user.email, "not the password at all")
    form_unknown_email = form_login(anonymous_client, "nobody@example.com")
    form_deactivated = form_login(anonymous_client, inactive.email)
    for response in (form_wrong_password, form_unknown_email, form_deactivated):
        detail = assert_oauth_error(response, "invalid_grant")
        assert detail == "The e-mail address or password is wrong."
    assert (
        comparable(form_wrong_password)
        == comparable(form_unknown_email)
        == comparable(form_deactivated)
    )
    # An unknown e-mail still costs a hash verification (against a dummy hash).
    assert len(checked) == 6
    assert checked[1] is None and checked[4] is None
    assert all(checked[i] is not None for i in (0, 2, 3, 5))


def test_a_deactivated_user_cannot_log_in(anonymous_client, database):
    user = create_user(database, "admin")
    assert json_login(anonymous_client, user.email).status_code == 200
    set_active(database, user.id, False)
    assert_problem(json_login(anonymous_client, user.email), 401, "invalid-credentials")
    assert_oauth_error(form_login(anonymous_client, user.email), "invalid_grant")
    with database.transaction(write=False) as session:
        tokens = session.scalars(select(AccessToken.id).where(AccessToken.user_id == user.id))
        assert len(tokens.all()) == 1  # only the login before deactivation issued one


def test_login_rejects_malformed_requests(anonymous_client, database):
    user = create_user(database, "viewer")
    extra = {"email": user.email, "password": TEST_PASSWORD, "role": "admin"}
    problem = assert_problem(anonymous_client.post(LOGIN, json=extra), 400, "validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/role"]  # JSON: unknown is an error
    problem = assert_problem(anonymous_client.post(LOGIN, json={"email": user.email}), 400)
    assert [e["pointer"] for e in problem["errors"]] == ["/password"]


def test_each_operation_takes_one_media_type(anonymous_client, database):
    user = create_user(database, "viewer")
    grant = {"grant_type": "password", "username": user.email, "password": TEST_PASSWORD}
    as_form = assert_problem(anonymous_client.post(LOGIN, data=grant), 415)
    assert as_form["media_types"] == ["application/json"]
    as_json = assert_problem(
        anonymous_client.post(TOKEN, json={"email": user.email, "password": TEST_PASSWORD}), 415
    )
    assert as_json["media_types"] == ["application/x-www-form-urlencoded"]
    with database.transaction(write=False) as session:
        assert (
            session.scalars(select(AccessToken).where(AccessToken.user_id == user.id)).all() == []
        )


# --- the OAuth2 token endpoint (RFC 6749) ---------------------------------------------------


def test_the_token_works_and_the_answer_says_which_scopes_it_grants(anonymous_client, database):
    user = create_user(database, "manager")
    for scope in (None, "", "viewer", "clerk viewer", " manager  viewer "):
        extra = {} if scope is None else {"scope": scope}
        response = form_login(anonymous_client, user.email, **extra)
        assert response.status_code == 200, (scope, response.text)
        # Always the user's role and those below: what the token really carries.
        assert response.json()["scope"] == "viewer clerk manager", scope
        token = response.json()["access_token"]
        me = anonymous_client.get("/api/v1/users/me", headers=bearer(token))
        assert me.status_code == 200 and me.json()["email"] == user.email


def test_a_scope_beyond_the_role_is_invalid_scope(anonymous_client, database):
    user = create_user(database, "clerk")
    for scope in ("admin", "viewer manager", "manager admin"):
        detail = assert_oauth_error(
            form_login(anonymous_client, user.email, scope=scope), "invalid_scope"
        )
        assert "does not grant" in detail
    unknown = form_login(anonymous_client, user.email, scope="superuser")
    assert "viewer clerk manager admin" in assert_oauth_error(unknown, "invalid_scope")
    # No password, no answer about the role: a wrong one is invalid_grant whatever scope asks.
    wrong = form_login(anonymous_client, user.email, "not the password at all", scope="admin")
    assert_oauth_error(wrong, "invalid_grant")
    with database.transaction(write=False) as session:
        assert (
            session.scalars(select(AccessToken).where(AccessToken.user_id == user.id)).all() == []
        )


@pytest.mark.parametrize(
    "grant_type", ["client_credentials", "authorization_code", "refresh_token", "PASSWORD", "x"]
)
def test_a_grant_other_than_password_is_unsupported(anonymous_client, database, grant_type):
    user = create_user(database, "viewer")
    form = {"grant_type": grant_type, "username": user.email, "password": TEST_PASSWORD}
    response = anonymous_client.post(TOKEN, data=form)
    assert "password grant" in assert_oauth_error(response, "unsupported_grant_type")


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_credentials", "client_id": "erp", "client_secret": "s"},
        {"grant_type": "refresh_token", "refresh_token": "rt_123"},
        {"grant_type": "authorization_code", "code": "abc", "redirect_uri": "https://x.test/"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "d"},
    ],
    ids=["client_credentials", "refresh_token", "authorization_code", "device_code"],
)
def test_another_grant_with_its_own_parameters_is_unsupported_not_invalid(anonymous_client, form):
    """No username or password: those belong to the password grant, the grant type is wrong."""
    response = anonymous_client.post(TOKEN, data=form)
    assert "password grant" in assert_oauth_error(response, "unsupported_grant_type")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("username=ada%40example.com&password=secret", "grant_type"),
        ("grant_type=password&password=secret", "username"),
        ("grant_type=password&username=ada%40example.com", "password"),
        ("grant_type=&username=ada%40example.com&password=secret", "grant_type"),
        ("grant_type=password&username=&password=secret", "username"),
        ("grant_type=password&username=ada%40example.com&password=", "password"),
        ("", "body"),
    ],
    ids=[
        "no-grant_type",
        "no-username",
        "no-password",
        "empty-grant_type",
        "empty-username",
        "empty-password",
        "empty-body",
    ],
)
def test_a_missing_or_empty_parameter_is_invalid_request(anonymous_client, body, named):
    response = anonymous_client.post(TOKEN, content=body.encode(), headers=FORM)
    detail = assert_oauth_error(response, "invalid_request")
    assert named in detail.lower(), detail


@pytest.mark.parametrize(
    "name", ["grant_type", "username", "password", "scope", "client_id", "client_secret"]
)
def test_a_parameter_given_twice_is_invalid_request(anonymous_client, database, name):
    user = create_user(database, "viewer")
    fields = [
        ("grant_type", "password"),
        ("username", user.email),
        ("password", TEST_PASSWORD),
        ("scope", "viewer"),
        ("client_id", "swagger"),
        ("client_secret", "none"),
    ]
    value = dict(fields)[name]
    body = "&".join(f"{k}={quote(v)}" for k, v in [*fields, (name, value)])
    response = anonymous_client.post(TOKEN, content=body.encode(), headers=FORM)
    assert name in assert_oauth_error(response, "invalid_request")


def test_malformed_requests_are_invalid_request_without_echo(anonymous_client, caplog):
    secret = "x" * 300  # over the 256-character limit
    cases = [
        {"grant_type": "password", "username": "a@example.com", "password": secret},
        {"grant_type": "password", "username": "a\x00@example.com", "password": "y"},
        {"grant_type": "password", "username": "u" * 300, "password": "y"},
        {"grant_type": "password", "username": "a@example.com", "password": "y", "scope": secret},
    ]
    for form in cases:
        response = anonymous_client.post(TOKEN, data=form)
        assert_oauth_error(response, "invalid_request")
        assert secret not in response.text and "\x00" not in response.text
    assert secret not in caplog.text
    # A parameter in the query string (they belong in the body).
    response = anonymous_client.post(
        TOKEN + "?password=y", data={"grant_type": "password", "username": "a@example.com"}
    )
    assert "password" in assert_oauth_error(response, "invalid_request")
    # error_description stays within RFC 6749's characters whatever it quotes.
    for query in ("caf%C3%A9=1", "a%22b%5Cc=1", "x%FF=1"):
        response = anonymous_client.post(
            f"{TOKEN}?{query}",
            data={"grant_type": "password", "username": "a@example.com", "password": "y"},
        )
        assert_oauth_error(response, "invalid_request")


def test_client_credentials_and_unknown_parameters_are_ignored(anonymous_client, database):
    """RFC 6749 §3.2: unrecognised parameters are ignored; every client is public."""
    user = create_user(database, "viewer")
    extra = {
        "client_id": "swagger-ui",
        "client_secret": "anything",
        "state": "xyz",
        "redirect_uri": "https://client.example.com/cb",
        "nonce": "\x00 even a NUL",
        "x" * 300: "a long name",
    }
    basic = {"Authorization": "Basic " + b64encode(b"my-client:its-secret").decode()}
    response = anonymous_client.post(
        TOKEN,
        data={"grant_type": "password", "username": user.email, "password": TEST_PASSWORD, **extra},
        headers=basic,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"
    # Swagger UI's Authorize sends an empty scope and `Basic Og==` (no client id).
    response = form_login(anonymous_client, user.email, scope="", client_id="")
    assert response.status_code == 200, response.text
    response = anonymous_client.post(
        TOKEN,
        data={"grant_type": "password", "username": user.email, "password": TEST_PASSWORD},
        headers={"Authorization": "Basic Og=="},
    )
    assert response.status_code == 200, response.text
    # Ignored, not trusted: the right client secret does not replace a wrong password.
    wrong = anonymous_client.post(
        TOKEN,
        data={"grant_type": "password", "username": user.email, "password": "not it", **extra},
        headers=basic,
    )
    assert_oauth_error(wrong, "invalid_grant")


def test_validation_errors_are_rfc_6749_also_from_a_server_that_sends_no_extensions(
    app, anonymous_client
):
    """uvicorn's ASGI scope has no `extensions` (Starlette's TestClient's has): the error
    handlers must still know the routed operation. httpx's ASGI transport sends none either."""

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(TOKEN, data={"grant_type": "password", "username": "a@b.c"})

    response = asyncio.run(post())
    detail = assert_oauth_error(response, "invalid_request")
    assert detail == "The request is invalid: password: This field is required."


def test_the_token_endpoint_keeps_problems_for_413_and_415(anonymous_client):
    huge = {"grant_type": "password", "username": "a@example.com", "password": "p" * (2 << 20)}
    assert_problem(anonymous_client.post(TOKEN, data=huge), 413, "payload-too-large")
    as_text = anonymous_client.post(
        TOKEN, content=b"grant_type=password", headers={"Content-Type": "text/plain"}
    )
    assert_problem(as_text, 415, "unsupported-media-type")


# --- logout and expiry --------------------------------------------------------------------


def test_logout_revokes_the_token_of_the_request(anonymous_client, database):
    user = create_user(database, "viewer")
    first = logged_in(anonymous_client, user.email)
    second = logged_in(anonymous_client, user.email)
    assert anonymous_client.get("/api/v1/products", headers=first).status_code == 200

    response = anonymous_client.post(LOGOUT, headers=first)
    assert response.status_code == 204, response.text
    assert response.content == b""

    after = anonymous_client.get("/api/v1/products", headers=first)
    assert_problem(after, 401)
    assert after.headers["www-authenticate"].startswith("Bearer")
    assert_problem(anonymous_client.post(LOGOUT, headers=first), 401)
    # Other sessions of the same user go on.
    assert anonymous_client.get("/api/v1/products", headers=second).status_code == 200


def test_logout_needs_a_credential(anonymous_client):
    assert_problem(anonymous_client.post(LOGOUT), 401)


def test_logout_with_an_api_key_is_refused(anonymous_client, database):
    user = create_user(database, "clerk")
    session_headers = logged_in(anonymous_client, user.email)
    created = anonymous_client.post(
        "/api/v1/api-keys",
        json={"name": "ERP", "role": "viewer", "expires_at": iso(utcnow() + timedelta(days=30))},
        headers=session_headers,
    )
    assert created.status_code == 201, created.text
    key_headers = bearer(created.json()["secret"])
    assert_problem(anonymous_client.post(LOGOUT, headers=key_headers), 422, "not-an-access-token")
    assert anonymous_client.get("/api/v1/products", headers=key_headers).status_code == 200


def test_an_expired_token_is_refused(anonymous_client, database):
    user = create_user(database, "viewer")
    headers = logged_in(anonymous_client, user.email)
    with database.transaction() as session:
        session.execute(
            update(AccessToken)
            .where(AccessToken.user_id == user.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = anonymous_client.get("/api/v1/products", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_deactivating_a_user_ends_their_sessions(anonymous_client, database):
    user = create_user(database, "viewer")
    headers = logged_in(anonymous_client, user.email)
    set_active(database, user.id, False)
    assert_problem(anonymous_client.get("/api/v1/products", headers=headers), 401)


# --- password reset request ---------------------------------------------------------------


def test_reset_request_answers_the_same_for_any_address(anonymous_client, database, caplog):
    known = create_user(database, "clerk")
    inactive = create_user(database, "clerk")
    set_active(database, inactive.id, False)
    with caplog.at_level(logging.INFO, logger="storekeeper.mail"):
        for_known = request_reset(anonymous_client, known.email)
        for_unknown = request_reset(anonymous_client, "nobody@example.com")
        for_inactive = request_reset(anonymous_client, inactive.email)
    assert for_known.content == b""
    assert comparable(for_known) == comparable(for_unknown) == comparable(for_inactive)

    with database.transaction(write=False) as session:
        outbox = session.scalars(select(OutboxMessage)).all()
        tokens = session.scalars(select(PasswordResetToken)).all()
    assert [m.recipient for m in outbox] == [known.email]
    assert [t.user_id for t in tokens] == [known.id]
    mail_lines = [r for r in caplog.records if r.name == "storekeeper.mail"]
    assert len(mail_lines) == 1
    assert mail_lines[0].levelno == logging.INFO
    link = RESET_TOKEN_IN_LINK.search(outbox[0].body)
    # The log names the mail, never its link (tests/api/test_mail_logging.py).
    assert link and link.group(1) not in caplog.text
    assert known.email in mail_lines[0].getMessage()


def test_reset_tokens_are_stored_hashed_and_short_lived(anonymous_client, database):
    user = create_user(database, "viewer")
    before = utcnow()
    secret = reset_token_for(anonymous_client, database, user.email)
    with database.transaction(write=False) as session:
        stored = session.scalars(select(PasswordResetToken)).one()
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert stored.used_at is None
    assert before + timedelta(minutes=30) <= stored.expires_at <= utcnow() + timedelta(minutes=30)


def test_reset_request_takes_as_long_either_way(anonymous_client, database):
    user = create_user(database, "viewer")
    for email in (user.email, "nobody@example.com"):
        started = time.monotonic()
        request_reset(anonymous_client, email)
        assert time.monotonic() - started >= auth_handlers.RESET_REQUEST_MIN_SECONDS


# --- password reset confirm ---------------------------------------------------------------


def test_a_reset_token_sets_the_password_once(anonymous_client, database):
    user = create_user(database, "clerk")
    token = reset_token_for(anonymous_client, database, user.email)

    response = confirm(anonymous_client, token)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert json_login(anonymous_client, user.email, NEW_PASSWORD).status_code == 200
    assert_problem(json_login(anonymous_client, user.email), 401, "invalid-credentials")

    again = confirm(anonymous_client, token, "yet another fine passphrase")
    problem = assert_problem(again, 422, "invalid-reset-token")
    assert problem["errors"][0]["pointer"] == "/token"
    assert json_login(anonymous_client, user.email, NEW_PASSWORD).status_code == 200


def test_confirm_revokes_every_session_of_the_user(anonymous_client, database):
    user = create_user(database, "clerk")
    sessions = [logged_in(anonymous_client, user.email) for _ in range(2)]
    key = anonymous_client.post(
        "/api/v1/api-keys",
        json={"name": "ERP", "role": "clerk", "expires_at": iso(utcnow() + timedelta(days=30))},
        headers=sessions[0],
    )
    assert key.status_code == 201, key.text
    token = reset_token_for(anonymous_client, database, user.email)
    assert confirm(anonymous_client, token).status_code == 204
    for headers in sessions:
        assert_problem(anonymous_client.get("/api/v1/products", headers=headers), 401)
    # API keys are integrations' credentials: a password change leaves them alone.
    key_headers = bearer(key.json()["secret"])
    assert anonymous_client.get("/api/v1/products", headers=key_headers).status_code == 200


def test_confirm_spends_every_outstanding_link(anonymous_client, database):
    user = create_user(database, "viewer")
    first = reset_token_for(anonymous_client, database, user.email)
    second = reset_token_for(anonymous_client, database, user.email)
    assert first != second
    assert confirm(anonymous_client, second).status_code == 204
    assert_problem(confirm(anonymous_client, first), 422, "invalid-reset-token")


def test_an_expired_reset_token_is_refused(anonymous_client, database):
    user = create_user(database, "viewer")
    token = reset_token_for(anonymous_client, database, user.email)
    with database.transaction() as session:
        session.execute(
            update(PasswordResetToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_problem(confirm(anonymous_client, token), 422, "invalid-reset-token")
    assert json_login(anonymous_client, user.email).status_code == 200  # unchanged


@pytest.mark.parametrize("token", ["rst_made-up", "sk_at_not-a-reset-token"])
def test_an_unknown_reset_token_is_refused(anonymous_client, token):
    assert_problem(confirm(anonymous_client, token), 422, "invalid-reset-token")


def test_a_reset_token_of_a_deactivated_user_is_refused(anonymous_client, database):
    user = create_user(database, "viewer")
    token = reset_token_for(anonymous_client, database, user.email)
    set_active(database, user.id, False)
    assert_problem(confirm(anonymous_client, token), 422, "invalid-reset-token")


def test_a_weak_new_password_is_refused_and_the_token_kept(anonymous_client, database):
    user = create_user(database, "viewer", email="alexandra@example.com")
    token = reset_token_for(anonymous_client, database, user.email)
    weak = confirm(anonymous_client, token, "my name is Alexandra!")
    problem = assert_problem(weak, 422, "weak-password")
    assert [e["pointer"] for e in problem["errors"]] == ["/new_password"]
    assert "e-mail" in problem["errors"][0]["detail"]
    assert_problem(confirm(anonymous_client, token, "short"), 400)  # the spec's minLength
    assert confirm(anonymous_client, token).status_code == 204


def test_the_reset_link_can_be_made_outside_a_request(anonymous_client, database):
    """What `storekeeper users reset-link` calls."""
    from service.domain.outbox import create_password_reset

    user = create_user(database, "viewer")
    inactive = create_user(database, "viewer")
    set_active(database, inactive.id, False)
    with database.transaction() as session:
        link = create_password_reset(
            session, session.get(User, user.id), "https://stock.example.com/"
        )
        with pytest.raises(ValueError):
            create_password_reset(session, session.get(User, inactive.id), "https://x.example")
    assert link.startswith("https://stock.example.com/reset-password#token=rst_")
    with database.transaction(write=False) as session:
        assert session.scalars(select(OutboxMessage.recipient)).all() == [user.email]


def test_an_invalid_login_form_names_the_field_and_never_echoes_the_password(
    anonymous_client, caplog
):
    """The token endpoint's invalid_request names the field, and never repeats the password."""
    secret = "x" * 300  # over the 256-character limit
    response = anonymous_client.post(
        TOKEN, data={"grant_type": "password", "username": "a@example.com", "password": secret}
    )
    assert assert_oauth_error(response, "invalid_request").startswith(
        "The request is invalid: password: "
    )
    assert secret not in response.text
    assert secret not in caplog.text

    response = anonymous_client.post(
        TOKEN, data={"grant_type": "password", "username": "a@example.com"}
    )
    detail = assert_oauth_error(response, "invalid_request")
    assert detail == "The request is invalid: password: This field is required."
