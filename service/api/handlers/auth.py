"""/api/v1/auth: log in (JSON, or the OAuth2 token endpoint) and out, reset a password.

argon2 is slow on purpose, so no password is hashed or verified inside a transaction: on
SQLite a write transaction holds the one write lock, and on PostgreSQL it holds a pooled
connection. Each operation reads what it needs, does the slow work with no transaction open,
then writes in a short transaction that re-checks what it read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import request
from sqlalchemy import select, update

from service import db
from service.api import transaction
from service.api.responses import NO_STORE, empty_response, json_response
from service.api.security import current_principal
from service.domain.accounts import (
    RESET_PREFIX,
    TOKEN_TTL,
    digest,
    hash_password,
    issue_access_token,
    new_secret,
    password_problems,
    revoke_user_credentials,
    scopes_for,
    verify_password,
)
from service.domain.outbox import create_password_reset, public_base_url
from service.formats import utcnow
from service.models import AccessToken, PasswordResetToken, User
from service.models.auth import ROLES, email_key
from service.problems import (
    INVALID_CREDENTIALS_DETAIL,
    UNSUPPORTED_GRANT_DETAIL,
    InvalidCredentialsProblem,
    InvalidResetTokenProblem,
    OAuthError,
    Problem,
    WeakPasswordProblem,
)

# A reset request answers no sooner than this, whether or not the address is known, so the
# mail work done for a known one does not show in the response time.
RESET_REQUEST_MIN_SECONDS = 0.1
# The parameters of an RFC 6749 §4.3.2 token request; any other is ignored (§3.2).
TOKEN_REQUEST_PARAMETERS = (
    "grant_type",
    "username",
    "password",
    "scope",
    "client_id",
    "client_secret",
)


@dataclass(frozen=True)
class _Account:
    id: int
    email: str
    password_hash: str
    is_active: bool
    role: str


def _account(user: User) -> _Account:
    return _Account(user.id, user.email, user.password_hash, user.is_active, user.role)


# --- login and logout -------------------------------------------------------------------


def login(body: dict):
    """POST /auth/login: {email, password} as JSON; a 401 problem when they do not match."""
    account = _authenticate(body["email"], body["password"])
    token = _issue_token(account) if account is not None else None
    if token is None:
        raise InvalidCredentialsProblem()
    return json_response(token, 200, NO_STORE)


def issue_token(body: dict):
    """POST /auth/token, the OAuth2 token endpoint: RFC 6749 §4.3 password grant, §5.2 errors.

    The spec has checked each parameter's type and length and that the required ones are
    there (its failures become ``invalid_request`` in ``problem_handlers``); the form is read
    again here, from the raw fields, for what a schema cannot say: a parameter given twice,
    the grant type, the scope. ``client_id``, ``client_secret``, an ``Authorization: Basic``
    header and unknown parameters are ignored: every client is public.
    """
    form = request.form
    for name in TOKEN_REQUEST_PARAMETERS:
        if len(form.getlist(name)) > 1:
            raise OAuthError("invalid_request", f"The {name} parameter is given more than once.")
    if _required(form, "grant_type") != "password":
        raise OAuthError("unsupported_grant_type", UNSUPPORTED_GRANT_DETAIL)
    username, password = _required(form, "username"), _required(form, "password")
    requested = set(form.get("scope", "").split(" ")) - {""}
    if requested - set(ROLES):  # refused before any password work: it depends on no user
        raise OAuthError(
            "invalid_scope", f"The scopes are the roles {' '.join(ROLES)}; scope names another."
        )
    account = _authenticate(username, password)
    # Only a user who gave the right password learns what their role does not grant.
    denied = requested - set(scopes_for(account.role)) if account is not None else set()
    if denied:
        names = " ".join(role for role in ROLES if role in denied)
        raise OAuthError("invalid_scope", f"The user's role does not grant the scope {names}.")
    token = _issue_token(account) if account is not None else None
    if token is None:
        raise OAuthError("invalid_grant", INVALID_CREDENTIALS_DETAIL)
    return json_response(token, 200, NO_STORE)


def _required(form, name: str) -> str:
    value = form.get(name, "")
    if not value:  # the spec requires it; RFC 6749 §3.2: an empty parameter counts as absent
        raise OAuthError("invalid_request", f"The {name} parameter is required.")
    return value


def _authenticate(email: str, password: str) -> _Account | None:
    """The active account with this e-mail and password; None for every kind of mismatch."""
    with transaction.get_database().transaction(write=False) as session:
        user = session.scalar(select(User).where(User.email_key == email_key(email)))
        account = _account(user) if user is not None else None
    # An unknown e-mail is verified against a dummy hash: as slow as a wrong password.
    verified = verify_password(account.password_hash if account else None, password)
    if account is None or not verified or not account.is_active:
        return None
    return account


@transaction.unit_of_work
def _issue_token(account: _Account) -> dict | None:
    """A new access token for ``account`` (the answer's body); None if the user was
    deactivated, or their password or role changed, while the hash was being verified."""
    session = db.session()
    user = session.get(User, account.id)
    if (
        user is None
        or not user.is_active
        or user.password_hash != account.password_hash
        or user.role != account.role
    ):
        return None
    secret, token = issue_access_token(session, user)
    # No optimistic version check here: two logins at once must both succeed. The version
    # still moves, so the user's ETag follows last_login_at; updated_at stays (no edit).
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(
            last_login_at=token.created_at, version=User.version + 1, updated_at=User.updated_at
        )
        .execution_options(synchronize_session=False)
    )
    return {
        "access_token": secret,
        "token_type": "bearer",
        "expires_in": int(TOKEN_TTL.total_seconds()),
        "expires_at": token.expires_at.isoformat(),
        "scope": " ".join(scopes_for(user.role)),
    }


@transaction.unit_of_work
def logout():
    principal = current_principal()
    if principal is None or principal.kind != "access_token":
        raise Problem(
            422,
            "not-an-access-token",
            "This request is authenticated with an API key, which logout does not end; "
            "revoke it with DELETE /api/v1/api-keys/{key_id}.",
            title="Unprocessable request",
        )
    db.session().execute(
        update(AccessToken)
        .where(AccessToken.id == principal.credential_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return empty_response()


# --- password reset ---------------------------------------------------------------------


def request_password_reset(body: dict):
    started = time.monotonic()
    _send_reset(body["email"], public_base_url())
    remaining = RESET_REQUEST_MIN_SECONDS - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)
    return empty_response(202)


@transaction.unit_of_work
def _send_reset(email: str, base_url: str) -> None:
    session = db.session()
    user = session.scalar(
        select(User).where(User.email_key == email_key(email), User.is_active.is_(True))
    )
    if user is not None:
        create_password_reset(session, user, base_url)
    else:
        digest(new_secret(RESET_PREFIX))  # the same token work, thrown away


def confirm_password_reset(body: dict):
    token_hash = digest(body["token"])
    with transaction.get_database().transaction(write=False) as session:
        row = session.execute(
            select(PasswordResetToken.id, User)
            .join(User, User.id == PasswordResetToken.user_id)
            .where(
                PasswordResetToken.token_hash == token_hash,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.expires_at > utcnow(),
                User.is_active.is_(True),
            )
        ).first()
        target = (row[0], _account(row[1])) if row is not None else None
    if target is None:
        raise InvalidResetTokenProblem()
    token_id, account = target
    problems = password_problems(body["new_password"], account.email)
    if problems:
        raise WeakPasswordProblem(problems, "/new_password")
    _apply_reset(token_id, account.id, hash_password(body["new_password"]))
    return empty_response()


@transaction.unit_of_work
def _apply_reset(token_id: int, user_id: int, password_hash: str) -> None:
    session = db.session()
    now = utcnow()
    # Claim the token: of two requests racing with it, exactly one turns used_at from NULL.
    claimed = session.execute(
        update(PasswordResetToken)
        .where(
            PasswordResetToken.id == token_id,
            PasswordResetToken.used_at.is_(None),
            PasswordResetToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    user = session.get(User, user_id)
    if claimed != 1 or user is None or not user.is_active:
        raise InvalidResetTokenProblem()
    user.password_hash = password_hash
    session.flush()
    # The other links sent to this user are spent too, and every session ends.
    session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    revoke_user_credentials(session, user_id, api_keys=False)
