"""No secret in the logs: a password reset's link and token stay in the outbox.

The log says that a mail was queued (id, recipient, subject), never what it says, on both
paths that issue resets: ``POST /api/v1/auth/password-reset`` and ``storekeeper users
reset-link`` (which prints the link to the operator who ran it: that is its job).
``STOREKEEPER_LOG_MAIL_BODIES=true``, for development, logs the bodies too.
"""

from __future__ import annotations

import logging
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from service.cli import main
from service.config import LOG_MAIL_BODIES_ENV
from service.models import OutboxMessage
from tests.conftest import create_user

RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
TOKEN_IN_BODY = re.compile(r"rst_[A-Za-z0-9_-]+")


@pytest.fixture()
def everything_logged(caplog, monkeypatch):
    """Every record of every logger, from DEBUG up; the setting as a deployment leaves it."""
    monkeypatch.delenv(LOG_MAIL_BODIES_ENV, raising=False)
    caplog.set_level(logging.DEBUG)
    return caplog


def logged_text(caplog) -> str:
    """All that the records would write: messages, arguments, tracebacks."""
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), record.exc_text or ""]
    return "\n".join(parts)


def the_mail(database, recipient: str) -> OutboxMessage:
    with database.transaction(write=False) as session:
        [message] = session.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == recipient)
        ).all()
        session.expunge(message)
        return message


def mail_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "storekeeper.mail"]


def reset_link_command(database, email: str):
    url = database.engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(main, ["users", "reset-link", email, "--database-url", url])


def test_a_reset_request_logs_that_a_mail_was_queued_never_its_token(
    anonymous_client, database, everything_logged
):
    user = create_user(database, "clerk")

    response = anonymous_client.post(RESET, json={"email": user.email})

    assert response.status_code == 202, response.text
    message = the_mail(database, user.email)
    [secret] = set(TOKEN_IN_BODY.findall(message.body))
    assert secret in message.body  # the mail carries the token...
    assert secret not in logged_text(everything_logged)  # ... the log does not
    assert "#token=" not in logged_text(everything_logged)
    [record] = mail_records(everything_logged)
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"outbox message {message.id} queued for {user.email}: {message.subject}"
    )

    # Using the token (refused for a weak password, then accepted, then refused as used)
    # logs no part of it either.
    assert confirm_status(anonymous_client, secret, f"my {user.email} password") == 422
    assert confirm_status(anonymous_client, secret, "a brand new passphrase") == 204
    assert confirm_status(anonymous_client, secret, "another new passphrase") == 422
    assert everything_logged.records
    assert secret not in logged_text(everything_logged)


def confirm_status(client, token: str, new_password: str) -> int:
    return client.post(CONFIRM, json={"token": token, "new_password": new_password}).status_code


def test_the_reset_link_command_prints_the_link_but_logs_no_token(database, everything_logged):
    user = create_user(database, "clerk")

    result = reset_link_command(database, user.email)

    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    [secret] = TOKEN_IN_BODY.findall(link)
    assert secret in the_mail(database, user.email).body
    assert secret not in result.stderr  # only the operator's stdout shows it
    assert secret not in logged_text(everything_logged)
    [record] = mail_records(everything_logged)
    assert record.getMessage().endswith(f"queued for {user.email}: Reset your Storekeeper password")


@pytest.mark.parametrize("path", ["api", "cli"])
def test_the_development_setting_logs_mail_bodies(
    anonymous_client, database, everything_logged, monkeypatch, path
):
    monkeypatch.setenv(LOG_MAIL_BODIES_ENV, "true")
    user = create_user(database, "clerk")

    if path == "api":
        assert anonymous_client.post(RESET, json={"email": user.email}).status_code == 202
    else:
        assert reset_link_command(database, user.email).exit_code == 0

    message = the_mail(database, user.email)
    [record] = mail_records(everything_logged)
    assert record.getMessage().endswith(message.body)
    assert LOG_MAIL_BODIES_ENV in record.getMessage()
