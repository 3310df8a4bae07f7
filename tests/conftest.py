"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL tests need an admin URL in STOREKEEPER_TEST_POSTGRES_URL, e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``. Each test session creates a
throwaway database there and drops it at the end. Without the variable the PostgreSQL
variants are skipped locally and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from service import migrate
from service.api.transaction import EXTENSION_KEY
from service.app import create_app
from service.config import Settings
from service.db import Database
from service.domain.accounts import hash_password, issue_access_token
from service.models import Base, User

POSTGRES_ENV = "STOREKEEPER_TEST_POSTGRES_URL"
# Webhook secrets are encrypted under this key in every test process and server it starts.
os.environ.setdefault("STOREKEEPER_SECRET_KEY", "storekeeper-tests-only")
BACKENDS = ("sqlite", "postgresql")


def postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{POSTGRES_ENV} must be set in CI: PostgreSQL tests may not be skipped")
    return None


@contextmanager
def throwaway_database(backend: str, tmp_path_factory) -> Iterator[str]:
    """An empty database of the given backend, removed afterwards."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "storekeeper.db"
        yield f"sqlite:///{path}"
        return
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(f"set {POSTGRES_ENV} to run the PostgreSQL variant")
    name = f"storekeeper_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory) -> Iterator[str]:
    """A database migrated to head, shared by the session's tests of one backend."""
    with throwaway_database(backend, tmp_path_factory) as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture()
def empty_database_url(backend, tmp_path_factory) -> Iterator[str]:
    """A brand-new, unmigrated database (for migration tests)."""
    with throwaway_database(backend, tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="session")
def app(database_url):
    """The connexion app, built once per backend (cold start is slow)."""
    application = create_app(Settings(database_url=database_url, validate_responses=True))
    yield application
    application.app.extensions[EXTENSION_KEY].dispose()


@pytest.fixture(scope="session")
def database(app) -> Database:
    return app.app.extensions[EXTENSION_KEY]


def wipe(engine: Engine) -> None:
    """Empty every table, fast, between tests."""
    tables = [t.name for t in Base.metadata.sorted_tables]
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # The append-only ledger's triggers refuse DELETE: lift them while wiping.
        triggers = cursor.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
        for name, _sql in triggers:
            cursor.execute(f"DROP TRIGGER {name}")
        cursor.execute("PRAGMA foreign_keys=OFF")
        for table in reversed(tables):
            cursor.execute(f"DELETE FROM {table}")
        for _name, sql in triggers:
            cursor.execute(sql)
        cursor.execute("DELETE FROM sqlite_sequence")  # restart AUTOINCREMENT ids
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
    finally:
        raw.close()


# argon2 is deliberately slow; tests that do not log in share one precomputed hash.
TEST_PASSWORD = "correct horse battery staple"
_TEST_PASSWORD_HASH = hash_password(TEST_PASSWORD)


def create_user(database: Database, role: str, email: str | None = None) -> User:
    """A user with TEST_PASSWORD, written straight to the database."""
    with database.transaction() as session:
        user = User(
            email=email or f"{role}-{uuid.uuid4().hex[:8]}@example.com",
            name=f"Test {role}",
            role=role,
            password_hash=_TEST_PASSWORD_HASH,
        )
        session.add(user)
        session.flush()
        session.expunge(user)
        return user


def bearer_for(database: Database, role: str) -> dict[str, str]:
    """Authorization headers for a fresh user of ``role``."""
    user = create_user(database, role)
    with database.transaction() as session:
        secret, _ = issue_access_token(session, session.get(User, user.id))
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture()
def auth_headers(database):
    """Factory: ``auth_headers("clerk")`` → headers of a new clerk's access token."""
    return lambda role="admin": bearer_for(database, role)


@pytest.fixture()
def client(app, database):
    """A client authenticated as an admin (every operation allowed)."""
    wipe(database.engine)
    with app.test_client(headers=bearer_for(database, "admin")) as test_client:
        yield test_client


@pytest.fixture()
def anonymous_client(app, database):
    wipe(database.engine)
    with app.test_client() as test_client:
        yield test_client


@dataclass
class QueryCounter:
    statements: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture()
def count_queries(database):
    """Context manager factory counting SQL statements the app's engine executes."""

    @contextmanager
    def counting() -> Iterator[QueryCounter]:
        counter = QueryCounter()

        def record(_conn, _cursor, statement, *_args):
            if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
                counter.statements.append(statement)

        event.listen(database.engine, "before_cursor_execute", record)
        try:
            yield counter
        finally:
            event.remove(database.engine, "before_cursor_execute", record)

    return counting
