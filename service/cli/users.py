"""``storekeeper users ...``: accounts managed from the command line.

``storekeeper users create`` makes a user (the first admin of a new installation, above all)
with the same rules as ``POST /api/v1/users``: the e-mail is unique regardless of case and
the password must pass :func:`service.domain.accounts.password_problems`. It prints the new
user's id.

``storekeeper users reset-link EMAIL`` issues a single-use password-reset token exactly as the
password-reset request does (:func:`service.domain.outbox.create_password_reset`, which also queues
the mail) and prints the link, for an operator to hand over.

Exit codes: 0 done, 1 refused (duplicate e-mail, weak password, invalid value, unknown or
deactivated user), 2 usage error or a database that cannot be used.
"""

from __future__ import annotations

import re
import sys

import click
from sqlalchemy import select

from service import spec
from service.cli.common import EXIT_FAILED, database_url_option, transaction
from service.models.auth import ROLES

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


class Refused(click.ClickException):
    exit_code = EXIT_FAILED


UNUSABLE = (
    "cannot use the database {url} ({kind}); is it reachable and upgraded "
    "('storekeeper db upgrade')?"
)
DATABASE_OPTION = database_url_option("Database to write to.")


def _schema_problems(value: str, schema_name: str) -> list[str]:
    """Why ``value`` breaks a string schema of the spec (never quoting the value)."""
    schema = spec.schema(schema_name)
    problems = []
    if len(value) < schema.get("minLength", 0):
        problems.append(f"must be at least {schema['minLength']} characters long")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"must be at most {schema['maxLength']} characters long")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append("contains characters that are not allowed")
    return problems


def _check(value: str, schema_name: str, label: str) -> None:
    problems = _schema_problems(value, schema_name)
    if problems:
        raise Refused(f"{label} {'; '.join(problems)}")


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _read_password(password: str | None, password_stdin: bool) -> str:
    if password is not None and password_stdin:
        raise click.UsageError("give either --password or --password-stdin, not both")
    if password is not None:
        return password
    if password_stdin:
        text = sys.stdin.read().rstrip("\r\n")
        if "\n" in text or "\r" in text:
            raise Refused("the password on stdin must be a single line")
        return text
    if not _stdin_is_tty():
        raise click.UsageError(
            "no password given: use --password-stdin (or --password), or run on a terminal "
            "to be prompted"
        )
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group()
def users() -> None:
    """User accounts."""


@users.command()
@click.option("--email", required=True, help="Login e-mail (unique regardless of case).")
@click.option("--role", required=True, type=click.Choice(ROLES), help="The user's role.")
@click.option("--name", help="Display name (default: the e-mail's local part).")
@click.option(
    "--password",
    help="The password. Visible to other local users and in shell history: prefer "
    "--password-stdin or the prompt.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@DATABASE_OPTION
def create(
    email: str,
    role: str,
    name: str | None,
    password: str | None,
    password_stdin: bool,
    database_url: str,
) -> None:
    """Create a user and print its id.

    Without --password or --password-stdin, the password is prompted for (hidden, twice)
    when stdin is a terminal.
    """
    from service.domain.accounts import hash_password, password_problems
    from service.models import User
    from service.models.auth import email_key

    email = email.strip()
    _check(email, "Email", "the e-mail address")
    name = (name if name is not None else email.split("@", 1)[0][:100]).strip()
    _check(name, "Name", "the name")
    secret = _read_password(password, password_stdin)
    problems = password_problems(secret, email) + _schema_problems(secret, "Password")
    if problems:
        # password_problems and the schema both check the length: say it once.
        raise Refused(f"the password {'; '.join(dict.fromkeys(problems))}")
    password_hash = hash_password(secret)  # slow on purpose: before the write transaction

    with transaction(database_url, failure=UNUSABLE) as session:
        clash = session.scalar(select(User.id).where(User.email_key == email_key(email)))
        if clash is not None:
            raise Refused(
                f"the e-mail address {email} is already used by user {clash} "
                "(addresses are unique regardless of case)"
            )
        user = User(
            email=email,
            name=name,
            role=role,
            password_hash=password_hash,
            is_active=True,
        )
        session.add(user)
        session.flush()
        user_id = user.id
    click.echo(user_id)


def _default_base_url() -> str:
    from service.domain.outbox import public_base_url

    return public_base_url(DEFAULT_BASE_URL)


@users.command("reset-link")
@click.argument("email")
@click.option(
    "--base-url",
    default=_default_base_url,
    show_default=f"STOREKEEPER_PUBLIC_URL or {DEFAULT_BASE_URL}",
    help="The service's public URL, where the reset page is served.",
)
@DATABASE_OPTION
def reset_link(email: str, base_url: str, database_url: str) -> None:
    """Print a single-use password-reset link for EMAIL (valid for 30 minutes).

    The token is issued exactly as POST /api/v1/auth/password-reset issues it (the mail is
    queued in the outbox too); only its digest is stored.
    """
    from service.domain.outbox import RESET_TTL, create_password_reset
    from service.models import User
    from service.models.auth import email_key

    with transaction(database_url, failure=UNUSABLE) as session:
        user = session.scalar(select(User).where(User.email_key == email_key(email)))
        if user is None:
            raise Refused(f"no user has the e-mail address {email.strip()}")
        if not user.is_active:
            raise Refused(
                f"user {user.id} is deactivated; reactivate them (PATCH is_active=true) first"
            )
        link = create_password_reset(session, user, base_url)
    minutes = int(RESET_TTL.total_seconds() // 60)
    click.echo(link)
    click.echo(f"single use; expires in {minutes} minutes", err=True)
