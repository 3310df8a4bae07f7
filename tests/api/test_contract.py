"""Contract fuzzing in-process: schemathesis drives the ASGI app from its own spec.

Every check runs (schemathesis.toml widens positive_data_acceptance only where the spec
cannot express a rule). Generation is derandomized, so a failure reproduces on rerun.
The live-server run with all four phases is `make contract` (scripts/contract-live.sh).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import bearer_for, wipe

pytestmark = pytest.mark.contract

FUZZ_SETTINGS = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


@pytest.fixture(scope="session")
def api_schema(app):
    # Not logout: it would revoke the token a test is using (see schemathesis.toml).
    return schemathesis.openapi.from_asgi("/openapi.json", app).exclude(operation_id="logout")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture()
def admin_headers(database) -> dict[str, str]:
    """A fresh admin token: other tests wipe the users table between tests."""
    return bearer_for(database, "admin")


@schema.parametrize()
@FUZZ_SETTINGS
def test_operation_conforms_to_contract(case, admin_headers):
    # With a real credential; the ignored_auth check also replays each case without it.
    case.call_and_validate(headers=admin_headers)


def test_stateful_workflows_conform_to_contract(api_schema, database):
    """Chains operations through the spec's links (create → get/update/delete/list)."""

    class Workflow(api_schema.as_state_machine()):
        def setup(self) -> None:
            # Each scenario starts from an empty database, so replays draw the same data.
            wipe(database.engine)
            self.headers = bearer_for(database, "admin")

        def get_call_kwargs(self, case):
            return {"headers": self.headers}

    Workflow.run(
        settings=settings(
            max_examples=20,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
