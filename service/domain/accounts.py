"""Accounts and credentials: password hashing, token issue, lookup and revocation, roles.

Scheme: opaque random bearer secrets, stored only as SHA-256 digests, looked up on every
request. Chosen over signed tokens (JWT) because revocation must be immediate (logout,
password reset, deactivation, key revocation) and the service already keeps all shared
state in its database: a lookup by a unique index is cheap, needs no key management, and
no revocation list can go stale. Login tokens start with ``sk_at_``, API keys with
``sk_live_``; both travel as ``Authorization: Bearer``.

Roles are OAuth2 scopes in the spec. A credential carries its role and every role below it,
so connexion's own scope check enforces each operation's ``security`` requirement.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from service.formats import utcnow
from service.models import AccessToken, ApiKey, User
from service.models.auth import ROLES

TOKEN_PREFIX = "sk_at_"
API_KEY_PREFIX = "sk_live_"
RESET_PREFIX = "rst_"
TOKEN_TTL = timedelta(hours=12)
API_KEY_MAX_TTL = timedelta(days=366)
# Writing last_used_at on every request would turn reads into writes; once a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_hasher = PasswordHasher()
# Verifying against this keeps an unknown e-mail as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("storekeeper-timing-equaliser")


def role_rank(role: str) -> int:
    return ROLES.index(role)


def scopes_for(role: str) -> list[str]:
    """The roles a credential of ``role`` may act as: its own and every one below."""
    return list(ROLES[: role_rank(role) + 1])


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def password_problems(password: str, email: str) -> list[str]:
    """Why a password is refused (empty when it is acceptable)."""
    problems = []
    if len(password) < 12:
        problems.append("must be at least 12 characters long")
    local = email.split("@", 1)[0].casefold()
    if len(local) >= 3 and local in password.casefold():
        problems.append("must not contain the e-mail address")
    if password.strip() == "":
        problems.append("must not be blank")
    return problems


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, the credential used, and the role it grants."""

    user_id: int
    role: str
    kind: str  # "access_token" or "api_key"
    credential_id: int
    # An API key whose last_used_at is due for an update.
    touch: bool = False

    @property
    def scope_key(self) -> str:
        """Whose budget and idempotency keys these are: an API key's own, or the user's.

        A user's successive login tokens share one scope, so a retry after logging in again
        still replays; each integration key is a scope of its own.
        """
        if self.kind == "api_key":
            return f"api_key:{self.credential_id}"
        return f"user:{self.user_id}"

    def token_info(self) -> dict[str, Any]:
        return {
            "sub": str(self.user_id),
            "scope": scopes_for(self.role),
            "role": self.role,
            "kind": self.kind,
            "credential_id": self.credential_id,
        }

    @classmethod
    def from_token_info(cls, info: dict[str, Any]) -> Principal:
        return cls(int(info["sub"]), info["role"], info["kind"], int(info["credential_id"]))


def issue_access_token(session: Session, user: User) -> tuple[str, AccessToken]:
    secret = new_secret(TOKEN_PREFIX)
    now = utcnow()
    token = AccessToken(
        user_id=user.id, token_hash=digest(secret), created_at=now, expires_at=now + TOKEN_TTL
    )
    session.add(token)
    session.flush()
    return secret, token


def revoke_user_credentials(
    session: Session, user_id: int, *, api_keys: bool, keep_token_id: int | None = None
) -> None:
    """Revoke a user's access tokens (all but ``keep_token_id``) and optionally API keys."""
    now = utcnow()
    session.execute(
        update(AccessToken)
        .where(
            AccessToken.user_id == user_id,
            AccessToken.revoked_at.is_(None),
            AccessToken.id != (keep_token_id or 0),
        )
        .values(revoked_at=now)
    )
    if api_keys:
        session.execute(
            update(ApiKey)
            .where(ApiKey.created_by_user_id == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now)
        )


def credential_key(secret: str) -> str | None:
    """What identifies a bearer secret without holding it: its kind's prefix and its digest
    (None for a string that is no credential of ours)."""
    for prefix in (TOKEN_PREFIX, API_KEY_PREFIX):
        if secret.startswith(prefix):
            return prefix + digest(secret)
    return None


def authenticate(session: Session, secret: str) -> Principal | None:
    """The principal behind a bearer secret, or None if it is unknown, expired or revoked."""
    key = credential_key(secret)
    return authenticate_key(session, key) if key is not None else None


# Built once: every authenticated request runs one of these, and building a statement costs
# more than executing it. Plain column rows, no ORM instances.
_TOKEN_LOOKUP = (
    select(
        AccessToken.id,
        AccessToken.revoked_at,
        AccessToken.expires_at,
        User.id.label("user_id"),
        User.role,
        User.is_active,
    )
    .join(User, User.id == AccessToken.user_id)
    .where(AccessToken.token_hash == bindparam("secret_digest"))
)
_API_KEY_LOOKUP = (
    select(
        ApiKey.id,
        ApiKey.role.label("key_role"),
        ApiKey.revoked_at,
        ApiKey.expires_at,
        ApiKey.last_used_at,
        User.id.label("user_id"),
        User.role,
        User.is_active,
    )
    .join(User, User.id == ApiKey.created_by_user_id)
    .where(ApiKey.secret_hash == bindparam("secret_digest"))
)


def authenticate_key(session: Session, key: str) -> Principal | None:
    """:func:`authenticate` for a :func:`credential_key`."""
    now = utcnow()
    connection = session.connection()
    if key.startswith(TOKEN_PREFIX):
        row = connection.execute(
            _TOKEN_LOOKUP, {"secret_digest": key.removeprefix(TOKEN_PREFIX)}
        ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return None
        if not row.is_active:
            return None
        return Principal(row.user_id, row.role, "access_token", row.id)
    if key.startswith(API_KEY_PREFIX):
        row = connection.execute(
            _API_KEY_LOOKUP, {"secret_digest": key.removeprefix(API_KEY_PREFIX)}
        ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return None
        if not row.is_active:
            return None
        # A key never grants more than its creator holds now.
        role = min(row.key_role, row.role, key=role_rank)
        stale = row.last_used_at is None or row.last_used_at <= now - LAST_USED_RESOLUTION
        return Principal(row.user_id, role, "api_key", row.id, touch=stale)
    return None


def api_key_expiry_problem(expires_at: datetime, now: datetime) -> str | None:
    if expires_at <= now:
        return "must be in the future"
    if expires_at > now + API_KEY_MAX_TTL:
        return "must be at most a year away"
    return None
