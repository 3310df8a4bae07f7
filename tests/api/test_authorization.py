"""Walk every operation in the spec: its security requirement is enforced as written.

No credential → 401 with a Bearer challenge; a credential one role below the operation's
required role → 403; the required role itself gets past security (any answer but 401/403).
Public operations (``security: []``) answer without credentials.
"""

from __future__ import annotations

import re

import pytest
import yaml

from service.config import Settings
from service.models.auth import ROLES

METHODS = ("get", "post", "put", "patch", "delete")


def _operations() -> list[tuple[str, str, str, str | None]]:
    spec = yaml.safe_load(Settings().spec_path.read_text())
    default = spec.get("security", [])
    found = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            security = operation.get("security", default)
            role = None
            for requirement in security:
                for scopes in requirement.values():
                    role = max(scopes, key=ROLES.index) if scopes else "viewer"
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            found.append((operation["operationId"], method, concrete, role))
    return found


OPERATIONS = _operations()
PROTECTED = [op for op in OPERATIONS if op[3] is not None]
ABOVE_VIEWER = [op for op in PROTECTED if op[3] != "viewer"]


def _call(client, method: str, path: str, headers: dict | None = None):
    kwargs = {"headers": headers or {}}
    if method in ("post", "patch", "put"):
        kwargs["json"] = {}
    return client.request(method.upper(), path, **kwargs)


def test_every_api_operation_declares_its_security():
    """Nothing under /api/v1 is public except logging in and resetting a password."""
    public = {op_id for op_id, _, path, role in OPERATIONS if role is None and "/api/" in path}
    assert public == {"login", "issueToken", "requestPasswordReset", "confirmPasswordReset"}


@pytest.mark.parametrize(("operation_id", "method", "path", "role"), PROTECTED, ids=lambda v: v)
def test_no_credential_is_401_with_a_challenge(anonymous_client, operation_id, method, path, role):
    response = _call(anonymous_client, method, path)
    assert response.status_code == 401, (operation_id, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(("operation_id", "method", "path", "role"), PROTECTED, ids=lambda v: v)
def test_an_unknown_token_is_401(anonymous_client, operation_id, method, path, role):
    response = _call(anonymous_client, method, path, {"Authorization": "Bearer sk_at_forged"})
    assert response.status_code == 401, (operation_id, response.text)


@pytest.mark.parametrize(("operation_id", "method", "path", "role"), ABOVE_VIEWER, ids=lambda v: v)
def test_one_role_too_low_is_403(anonymous_client, auth_headers, operation_id, method, path, role):
    too_low = ROLES[ROLES.index(role) - 1]
    response = _call(anonymous_client, method, path, auth_headers(too_low))
    assert response.status_code == 403, (operation_id, too_low, response.text)


@pytest.mark.parametrize(("operation_id", "method", "path", "role"), PROTECTED, ids=lambda v: v)
def test_the_required_role_gets_past_security(
    anonymous_client, auth_headers, operation_id, method, path, role
):
    response = _call(anonymous_client, method, path, auth_headers(role))
    assert response.status_code not in (401, 403), (operation_id, role, response.text)
