"""Programmatic alembic: upgrade, downgrade and current, used by the CLI and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from service.config import PROJECT_ROOT, Settings
from service.models.base import POSTGRESQL_ONLY


def include_object_for(dialect_name: str):
    """alembic ``include_object`` hook: leave out objects meant for another backend."""

    def include_object(obj, _name, _type, _reflected, _compare_to) -> bool:
        info = getattr(obj, "info", None) or {}
        return not (info.get(POSTGRESQL_ONLY) and dialect_name != "postgresql")

    return include_object


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url or Settings.from_env().database_url
    config.attributes["configure_logging"] = False
    return config


def ensure_sqlite_directory(database_url: str) -> None:
    """An embedded SQLite file needs its folder to exist before the first connect."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and ":memory:" not in database_url:
        Path(database_url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    url = database_url or Settings.from_env().database_url
    ensure_sqlite_directory(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(database_url: str | None = None, revision: str = "-1") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str | None = None) -> None:
    command.current(alembic_config(database_url), verbose=False)
