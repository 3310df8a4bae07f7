"""Users, their access tokens, API keys, password-reset tokens and the mail outbox.

Secrets (tokens, keys, reset links) are high-entropy random strings; only their SHA-256
digest is stored, so a database leak reveals no usable credential. Passwords are hashed with
argon2. Users and keys are never deleted (deactivated / revoked instead), so the ledger
keeps its authors.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from service.formats import utcnow
from service.models.base import Base, TimestampedVersioned, UTCDateTime

ROLES = ("viewer", "clerk", "manager", "admin")
_ROLE_CHECK = "role IN ('viewer', 'clerk', 'manager', 'admin')"


def email_key(email: str) -> str:
    """E-mail addresses are unique regardless of case."""
    return email.strip().casefold()


class User(TimestampedVersioned, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    email_key: Mapped[str] = mapped_column(String(254), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(_ROLE_CHECK, name="role_known"),
        Index("ix_users_created_at_id", "created_at", "id"),
        Index("ix_users_role_is_active", "role", "is_active"),
        {"sqlite_autoincrement": True},
    )


@event.listens_for(User, "before_insert")
@event.listens_for(User, "before_update")
def _maintain_email_key(_mapper, _connection, target: User) -> None:
    target.email_key = email_key(target.email)


class AccessToken(Base):
    """A login session's bearer token (hash only); expires, and logout revokes it."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_access_tokens_user_id", "user_id"),)


class ApiKey(Base):
    """A long-lived integration credential with its own role, at most its creator's."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    # The first characters of the key, shown in lists so a key can be recognised.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(_ROLE_CHECK, name="role_known"),
        Index("ix_api_keys_created_by_user_id", "created_by_user_id"),
        {"sqlite_autoincrement": True},
    )


class PasswordResetToken(Base):
    """A single-use, short-lived password-reset secret (hash only)."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_password_reset_tokens_user_id", "user_id"),)


class OutboxMessage(Base):
    """Mail the service would send; with no mail server configured it waits here."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(254), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
