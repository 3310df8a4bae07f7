"""docker-compose.yml, read as Docker would (Docker does not run here): the services and
what the worker shares with the API."""

from __future__ import annotations

import yaml

from service.config import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]


def test_the_stack_has_api_worker_postgres_and_redis():
    assert set(SERVICES) == {"api", "worker", "postgres", "redis"}
    assert set(SERVICES["api"]["depends_on"]) == {"postgres", "redis"}


def test_the_worker_delivers_from_the_apis_database_with_the_apis_secret_key():
    api, worker = SERVICES["api"]["environment"], SERVICES["worker"]["environment"]
    assert SERVICES["worker"]["command"] == ["storekeeper", "worker"]
    assert worker["DATABASE_URL"] == api["DATABASE_URL"]
    # Secrets are encrypted under this key by the API and decrypted by the worker.
    assert worker["STOREKEEPER_SECRET_KEY"] == api["STOREKEEPER_SECRET_KEY"]
    # It starts once the api container has applied the migrations.
    assert SERVICES["worker"]["depends_on"] == {"api": {"condition": "service_healthy"}}
