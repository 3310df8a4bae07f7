"""`storekeeper users create` and `storekeeper users reset-link`, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from service.cli import main
from service.cli import users as users_cli
from service.db import Database
from service.domain import outbox as mailer
from service.domain.accounts import RESET_PREFIX, digest, verify_password
from service.formats import utcnow
from service.models import OutboxMessage, PasswordResetToken, User
from tests.conftest import wipe

PASSWORD = "long enough passphrase"


@pytest.fixture()
def database(database_url) -> Iterator[Database]:
    """The session's migrated database of this backend, emptied for the test."""
    database = Database(database_url)
    wipe(database.engine)
    yield database
    database.dispose()


def run(database: Database, *args: str, input: str | None = None):
    url = database.engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(main, ["users", *args, "--database-url", url], input=input)


def users_in(database: Database) -> list[User]:
    with database.transaction(write=False) as session:
        users = session.scalars(select(User).order_by(User.id)).all()
        session.expunge_all()
        return list(users)


def reset_tokens(database: Database) -> list[PasswordResetToken]:
    with database.transaction(write=False) as session:
        tokens = session.scalars(select(PasswordResetToken).order_by(PasswordResetToken.id)).all()
        session.expunge_all()
        return list(tokens)


# --- create -----------------------------------------------------------------------------


def test_create_prints_the_new_users_id(database):
    result = run(
        database,
        "create",
        "--email",
        "Root@Example.com",
        "--role",
        "admin",
        "--name",
        "Root",
        "--password",
        PASSWORD,
    )

    assert result.exit_code == 0, result.output
    [user] = users_in(database)
    assert result.stdout.strip() == str(user.id)
    assert (user.email, user.name, user.role, user.is_active) == (
        "Root@Example.com",
        "Root",
        "admin",
        True,
    )
    assert user.password_hash.startswith("$argon2id$")
    assert verify_password(user.password_hash, PASSWORD)
    assert PASSWORD not in result.output


def test_create_reads_the_password_from_stdin_and_defaults_the_name(database):
    result = run(
        database,
        "create",
        "--email",
        "casey@example.com",
        "--role",
        "clerk",
        "--password-stdin",
        input=PASSWORD + "\n",
    )

    assert result.exit_code == 0, result.output
    [user] = users_in(database)
    assert (user.name, user.role) == ("casey", "clerk")
    assert verify_password(user.password_hash, PASSWORD)


def test_create_prompts_twice_with_hidden_input_on_a_terminal(database, monkeypatch):
    monkeypatch.setattr(users_cli, "_stdin_is_tty", lambda: True)

    result = run(
        database,
        "create",
        "--email",
        "casey@example.com",
        "--role",
        "viewer",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )

    assert result.exit_code == 0, result.output
    assert result.output.count("Password") == 1
    assert "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output  # hidden
    [user] = users_in(database)
    assert verify_password(user.password_hash, PASSWORD)


def test_create_prompt_insists_on_matching_entries(database, monkeypatch):
    monkeypatch.setattr(users_cli, "_stdin_is_tty", lambda: True)

    result = run(
        database,
        "create",
        "--email",
        "casey@example.com",
        "--role",
        "viewer",
        input=f"{PASSWORD}\nsomething else entirely\n{PASSWORD}\n{PASSWORD}\n",
    )

    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    [user] = users_in(database)
    assert verify_password(user.password_hash, PASSWORD)


def test_create_without_a_password_and_without_a_terminal_is_a_usage_error(database):
    result = run(database, "create", "--email", "casey@example.com", "--role", "viewer")

    assert result.exit_code == 2
    assert "--password-stdin" in result.output
    assert users_in(database) == []


def test_create_refuses_both_password_options(database):
    result = run(
        database,
        "create",
        "--email",
        "casey@example.com",
        "--role",
        "viewer",
        "--password",
        PASSWORD,
        "--password-stdin",
        input=PASSWORD + "\n",
    )

    assert result.exit_code == 2
    assert users_in(database) == []


def test_create_duplicate_email_in_another_case_exits_1(database):
    first = run(
        database,
        "create",
        "--email",
        "Casey@Example.com",
        "--role",
        "clerk",
        "--password",
        PASSWORD,
    )
    assert first.exit_code == 0, first.output

    result = run(
        database,
        "create",
        "--email",
        "casey@EXAMPLE.com",
        "--role",
        "admin",
        "--password",
        PASSWORD,
    )

    assert result.exit_code == 1
    assert "already used by user" in result.output
    assert [u.email for u in users_in(database)] == ["Casey@Example.com"]


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short pw", "at least 12 characters"),
        ("casey.clerk and some words", "must not contain the e-mail address"),
        (" " * 14, "must not be blank"),
        ("x" * 257, "at most 256 characters"),
    ],
    ids=["short", "contains-local-part", "blank", "too-long"],
)
def test_create_weak_password_exits_1_and_writes_nothing(database, password, reason):
    result = run(
        database,
        "create",
        "--email",
        "casey.clerk@example.com",
        "--role",
        "clerk",
        "--password-stdin",
        input=password + "\n",
    )

    assert result.exit_code == 1
    assert reason in result.output
    assert password not in result.output
    assert users_in(database) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "not-an-email", "--role", "clerk"], "e-mail"),
        (["--email", "a b@example.com", "--role", "clerk"], "e-mail"),
        (["--email", "casey@example.com", "--role", "clerk", "--name", "x" * 101], "name"),
        (["--email", "casey@example.com", "--role", "clerk", "--name", "tab\there"], "name"),
    ],
    ids=["no-at", "space", "long-name", "control-character"],
)
def test_create_refuses_values_the_api_would_refuse(database, args, message):
    result = run(database, "create", *args, "--password", PASSWORD)

    assert result.exit_code == 1
    assert message in result.output
    assert users_in(database) == []


def test_create_unknown_role_is_a_usage_error(database):
    result = run(
        database,
        "create",
        "--email",
        "casey@example.com",
        "--role",
        "owner",
        "--password",
        PASSWORD,
    )

    assert result.exit_code == 2
    assert "owner" in result.output
    assert users_in(database) == []


def test_create_on_a_missing_sqlite_file_exits_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'absent.db'}"

    result = CliRunner().invoke(
        main,
        [
            "users",
            "create",
            "--email",
            "casey@example.com",
            "--role",
            "admin",
            "--password",
            PASSWORD,
            "--database-url",
            url,
        ],
    )

    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "absent.db").exists()


def test_create_reads_database_url_from_the_environment(database):
    url = database.engine.url.render_as_string(hide_password=False)

    result = CliRunner().invoke(
        main,
        ["users", "create", "--email", "env@example.com", "--role", "viewer", "--password-stdin"],
        input=PASSWORD + "\n",
        env={"DATABASE_URL": url},
    )

    assert result.exit_code == 0, result.output
    assert [u.email for u in users_in(database)] == ["env@example.com"]


# --- reset-link -------------------------------------------------------------------------


def _create(database: Database, email: str = "casey@example.com") -> int:
    result = run(database, "create", "--email", email, "--role", "clerk", "--password", PASSWORD)
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip())


def _secret_of(link: str) -> str:
    [secret] = re.findall(r"token=(rst_[A-Za-z0-9_-]+)$", link)
    return secret


def test_reset_link_issues_a_single_use_token_valid_for_30_minutes(database):
    user_id = _create(database)
    before = utcnow()

    result = run(database, "reset-link", "CASEY@example.com")

    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    secret = _secret_of(link)
    assert link == mailer.reset_link("http://127.0.0.1:8080", secret)  # as the API mails it
    assert link.startswith("http://127.0.0.1:8080/reset-password")
    assert len(secret) > len(RESET_PREFIX) + 40
    [token] = reset_tokens(database)
    assert token.user_id == user_id
    assert token.token_hash == digest(secret)  # only the digest is stored
    assert token.used_at is None
    lifetime = token.expires_at - before
    assert timedelta(minutes=29) < lifetime <= timedelta(minutes=30, seconds=5)
    assert "30 minutes" in result.stderr
    with database.transaction(write=False) as session:
        [message] = session.scalars(select(OutboxMessage)).all()
        assert message.recipient == "casey@example.com"
        assert secret in message.body


def test_reset_links_differ_each_time(database):
    _create(database)

    first = run(database, "reset-link", "casey@example.com").stdout.strip()
    second = run(database, "reset-link", "casey@example.com").stdout.strip()

    assert _secret_of(first) != _secret_of(second)
    assert len(reset_tokens(database)) == 2


def test_reset_link_with_a_base_url(database, monkeypatch):
    monkeypatch.setenv(mailer.PUBLIC_URL_ENV, "https://ignored.example.com")
    _create(database)

    result = run(
        database, "reset-link", "casey@example.com", "--base-url", "https://stock.example.com/app/"
    )

    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link == mailer.reset_link("https://stock.example.com/app", _secret_of(link))
    assert link.startswith("https://stock.example.com/app/reset-password")


def test_reset_link_defaults_to_the_configured_public_url(database, monkeypatch):
    monkeypatch.setenv(mailer.PUBLIC_URL_ENV, "https://stock.example.com/")
    _create(database)

    result = run(database, "reset-link", "casey@example.com")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("https://stock.example.com/reset-password")


def test_reset_link_for_an_unknown_email_exits_1_and_writes_nothing(database):
    result = run(database, "reset-link", "nobody@example.com")

    assert result.exit_code == 1
    assert "no user" in result.output
    assert reset_tokens(database) == []
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_reset_link_for_a_deactivated_user_exits_1(database):
    user_id = _create(database)
    with database.transaction() as session:
        session.execute(update(User).where(User.id == user_id).values(is_active=False))

    result = run(database, "reset-link", "casey@example.com")

    assert result.exit_code == 1
    assert "deactivated" in result.output
    assert reset_tokens(database) == []
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_cli_user_logs_in_and_resets_through_the_api(app, database):
    _create(database, "root@example.com")
    new_password = "a brand new passphrase"

    with app.test_client() as api:
        login = {"email": "ROOT@example.com", "password": PASSWORD}
        assert api.post("/api/v1/auth/login", json=login).status_code == 200

        secret = _secret_of(run(database, "reset-link", "root@example.com").stdout.strip())
        confirm = {"token": secret, "new_password": new_password}
        response = api.post("/api/v1/auth/password-reset/confirm", json=confirm)
        assert response.status_code == 204, response.text
        again = api.post("/api/v1/auth/password-reset/confirm", json=confirm)
        assert again.status_code >= 400  # single use

        assert api.post("/api/v1/auth/login", json=login).status_code == 401
        relogin = {"email": "root@example.com", "password": new_password}
        assert api.post("/api/v1/auth/login", json=relogin).status_code == 200
