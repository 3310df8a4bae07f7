"""Settings read from the environment, once, at application start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "var" / "storekeeper.db"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def default_database_url() -> str:
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=default_database_url)
    spec_path: Path = PROJECT_ROOT / "openapi" / "openapi.yaml"
    # Response validation costs time per request; tests and CI switch it on.
    validate_responses: bool = False
    log_level: str = "INFO"
    # SQLite waits this long for a competing writer before giving up.
    sqlite_busy_timeout_ms: int = 5000

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DATABASE_URL") or default_database_url(),
            spec_path=Path(os.environ.get("STOREKEEPER_SPEC_PATH") or cls.spec_path),
            validate_responses=_env_bool("STOREKEEPER_VALIDATE_RESPONSES", False),
            log_level=os.environ.get("LOG_LEVEL", "INFO").upper(),
            sqlite_busy_timeout_ms=int(os.environ.get("SQLITE_BUSY_TIMEOUT_MS", "5000")),
        )
