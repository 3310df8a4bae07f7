"""Mail the service sends, through an outbox: rows in ``outbox_messages`` that a sender drains.

There is no mail server yet. Each queued message is logged at INFO on ``storekeeper.mail`` by
id, recipient and subject only: a body may carry a secret (a password-reset link and token),
and logs are read, shipped and kept far more widely than the outbox table. An operator who must
pass a reset on by hand prints a fresh link with ``storekeeper users reset-link EMAIL``. In
development, ``STOREKEEPER_LOG_MAIL_BODIES=true`` logs every body too (read as each message is
queued, so the API and the CLI both honour it). Messages are written in the caller's
transaction: a request that rolls back sends nothing.

Password resets live here because two callers issue them: ``POST /api/v1/auth/password-reset``
and the ``storekeeper users reset-link`` command. Both call :func:`create_password_reset`.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from sqlalchemy.orm import Session

from service.config import LOG_MAIL_BODIES_ENV, log_mail_bodies
from service.domain.accounts import RESET_PREFIX, digest, new_secret
from service.formats import utcnow
from service.models import OutboxMessage, PasswordResetToken, User

logger = logging.getLogger("storekeeper.mail")

RESET_TTL = timedelta(minutes=30)
RESET_PATH = "/reset-password"
# Where links in mail point. Set it in production: without it the API uses the Host header of
# the request, which a caller controls (a forged Host would send the victim a link to it).
PUBLIC_URL_ENV = "STOREKEEPER_PUBLIC_URL"
CONFIRM_PATH = "/api/v1/auth/password-reset/confirm"


DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"


def public_base_url(fallback: str = DEFAULT_PUBLIC_URL) -> str:
    """The configured public URL of the service (STOREKEEPER_PUBLIC_URL), else ``fallback``.

    Never the request's Host header: a caller controls it, and a forged Host would mail the
    victim a reset link to the attacker's site.
    """
    return (os.environ.get(PUBLIC_URL_ENV) or fallback).rstrip("/")


def queue_message(session: Session, recipient: str, subject: str, body: str) -> OutboxMessage:
    """Put a message in the outbox (in ``session``'s transaction) and log that it is there.

    The log names the message, never its body, unless STOREKEEPER_LOG_MAIL_BODIES is on.
    """
    message = OutboxMessage(recipient=recipient, subject=subject, body=body, created_at=utcnow())
    session.add(message)
    session.flush()
    if log_mail_bodies():
        logger.info(
            "outbox message %s queued for %s: %s (%s is on; the body follows)\n%s",
            message.id,
            recipient,
            subject,
            LOG_MAIL_BODIES_ENV,
            body,
        )
    else:
        logger.info("outbox message %s queued for %s: %s", message.id, recipient, subject)
    return message


def reset_link(base_url: str, secret: str) -> str:
    # In the fragment, the secret never reaches a web server's access log or a Referer header.
    return f"{base_url.rstrip('/')}{RESET_PATH}#token={secret}"


def create_password_reset(session: Session, user: User, base_url: str) -> str:
    """Issue a single-use reset token for ``user``, mail it (outbox), and return the link.

    Only the token's digest is stored; it expires after :data:`RESET_TTL` and works once.
    Raises ``ValueError`` for a deactivated user, whose reset could never be confirmed.
    """
    if not user.is_active:
        raise ValueError(f"user {user.id} is deactivated")
    secret = new_secret(RESET_PREFIX)
    now = utcnow()
    session.add(
        PasswordResetToken(
            user_id=user.id, token_hash=digest(secret), created_at=now, expires_at=now + RESET_TTL
        )
    )
    link = reset_link(base_url, secret)
    minutes = int(RESET_TTL.total_seconds() // 60)
    body = (
        f"Someone asked to reset the password of the Storekeeper account {user.email}.\n\n"
        f"To choose a new password, open this link within {minutes} minutes:\n\n"
        f"    {link}\n\n"
        f"or send the token with the new password to POST {base_url.rstrip('/')}{CONFIRM_PATH}:\n"
        f'    {{"token": "{secret}", "new_password": "..."}}\n\n'
        "The link works once. If you did not ask for it, ignore this message: your password "
        "stays as it is.\n"
    )
    queue_message(session, user.email, "Reset your Storekeeper password", body)
    return link
