"""/api/v1/auth: login (form and JSON), logout, password reset request and confirm."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from service.api.handlers import auth as auth_handlers
from service.domain.accounts import TOKEN_TTL
from service.formats import utcnow
from service.models import AccessToken, OutboxMessage, PasswordResetToken, User
from tests.conftest import TEST_PASSWORD, create_user
from tests.helpers import assert_problem

TOKEN = "/api/v1/auth/token"
LOGOUT = "/api/v1/auth/logout"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
NEW_PASSWORD = "a brand new passphrase"
RESET_TOKEN_IN_LINK = re.compile(r"#token=(rst_[A-Za-z0-9_-]+)")


# --- helpers ------------------------------------------------------------------------------


def form_login(client, email: str, password: str = TEST_PASSWORD):
    return client.post(
        TOKEN, data={"grant_type": "password", "username": email, "password": password}
    )


def json_login(client, email: str, password: str = TEST_PASSWORD):
    return client.post(TOKEN, json={"email": email, "password": password})


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
    assert response.headers["cache-control"] == "no-store"
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
    wrong_by_form = form_login(anonymous_client, user.email, "not the password at all")

    for response in (wrong_password, unknown_email, deactivated, wrong_by_form):
        problem = assert_problem(response, 401, "invalid-credentials")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert problem["detail"] == "The e-mail address or password is wrong."
    assert comparable(wrong_password) == comparable(unknown_email) == comparable(deactivated)
    assert comparable(wrong_password) == comparable(wrong_by_form)
    # An unknown e-mail still costs a hash verification (against a dummy hash).
    assert len(checked) == 4
    assert checked[1] is None
    assert all(stored is not None for stored in (checked[0], checked[2], checked[3]))


def test_a_deactivated_user_cannot_log_in(anonymous_client, database):
    user = create_user(database, "admin")
    assert json_login(anonymous_client, user.email).status_code == 200
    set_active(database, user.id, False)
    assert_problem(json_login(anonymous_client, user.email), 401, "invalid-credentials")
    assert_problem(form_login(anonymous_client, user.email), 401, "invalid-credentials")
    with database.transaction(write=False) as session:
        tokens = session.scalars(select(AccessToken.id).where(AccessToken.user_id == user.id))
        assert len(tokens.all()) == 1  # only the login before deactivation issued one


def test_login_rejects_malformed_requests(anonymous_client, database):
    user = create_user(database, "viewer")
    grant = {"grant_type": "client_credentials", "username": user.email, "password": "x"}
    assert_problem(anonymous_client.post(TOKEN, data=grant), 400)
    extra = {"email": user.email, "password": TEST_PASSWORD, "role": "admin"}
    assert_problem(anonymous_client.post(TOKEN, json=extra), 400)
    assert_problem(anonymous_client.post(TOKEN, json={"email": user.email}), 400)


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


def test_an_invalid_login_form_gets_field_errors_and_no_password_echo(anonymous_client, caplog):
    """The OAuth2 form reports errors[] like JSON bodies, and never repeats the password."""
    secret = "x" * 300  # over the 256-character limit
    response = anonymous_client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": "a@example.com", "password": secret},
    )
    problem = assert_problem(response, 400, "validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/password"]
    assert secret not in response.text
    assert secret not in caplog.text

    response = anonymous_client.post(
        "/api/v1/auth/token", data={"grant_type": "password", "username": "a@example.com"}
    )
    problem = assert_problem(response, 400, "validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/password"]
