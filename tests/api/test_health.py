from __future__ import annotations

from service.app import create_app
from service.config import Settings
from tests.helpers import assert_problem


def test_liveness(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness_checks_the_database(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


def test_readiness_is_503_when_the_database_is_unreachable(tmp_path):
    # A SQLite file inside a directory that does not exist cannot be opened.
    unreachable = f"sqlite:///{tmp_path}/missing/dir/db.sqlite"
    app = create_app(Settings(database_url=unreachable, validate_responses=True))
    with app.test_client() as client:
        response = client.get("/health/ready")
        problem = assert_problem(response, 503, "service-unavailable")
        assert response.headers["retry-after"] == "5"
        assert "missing" not in problem["detail"]  # no internals leak
        assert client.get("/health").status_code == 200
