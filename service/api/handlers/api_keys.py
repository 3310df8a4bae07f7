"""/api/v1/api-keys: long-lived bearer credentials for integrations.

A key's secret is shown once, in the create response; only its SHA-256 digest is stored
(``service.domain.accounts`` looks keys up by it and keeps ``last_used_at``). A key acts with
its own role, never more than its creator's current one. Keys are revoked, never deleted, so the
ledger keeps its authors.
"""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import update

from service import db
from service.api import transaction
from service.api.pagination import paginated, sort_keys
from service.api.params import timestamp_field
from service.api.responses import NO_STORE, empty_response, json_response
from service.api.security import current_principal
from service.domain.accounts import (
    API_KEY_PREFIX,
    Principal,
    api_key_expiry_problem,
    digest,
    new_secret,
    role_rank,
)
from service.formats import utcnow
from service.models import ApiKey
from service.problems import NotFoundProblem, Problem, pointer_error
from service.schemas.api_key import ApiKeySchema
from service.schemas.rows import RowShape

API_KEY_ROWS = RowShape(ApiKeySchema(), ApiKey)
SORTS = sort_keys(("created_at", ApiKey.created_at, "datetime"))
PREFIX_LENGTH = 12  # "sk_live_" and four characters of the random part


def _caller() -> Principal:
    principal = current_principal()
    if principal is None:  # the spec requires a credential; this is a wiring error
        raise RuntimeError("API key operations need an authenticated caller")
    return principal


def _is_admin(principal: Principal) -> bool:
    return principal.role == "admin"


@transaction.unit_of_work
def list_api_keys(limit: int = 50, cursor: str | None = None):
    principal = _caller()
    stmt = API_KEY_ROWS.select()
    if not _is_admin(principal):
        stmt = stmt.where(ApiKey.created_by_user_id == principal.user_id)
    return paginated(
        stmt,
        sort=SORTS["created_at"],
        id_column=ApiKey.id,
        limit=limit,
        cursor=cursor,
        dump=API_KEY_ROWS.dump,
    )


@transaction.unit_of_work
def create_api_key(body: dict):
    principal = _caller()
    if principal.kind == "api_key":
        # A leaked key must not be able to mint successors that outlive its revocation.
        raise Problem(
            403,
            "api-key-cannot-create-keys",
            "API keys are created with a login access token, not with another API key.",
        )
    if role_rank(body["role"]) > role_rank(principal.role):
        raise Problem(
            403,
            "role-too-high",
            f"A key's role can be at most yours ({principal.role}); {body['role']!r} is higher.",
        )
    now = utcnow()
    expires_at = timestamp_field(body["expires_at"], "/expires_at")
    problem = api_key_expiry_problem(expires_at, now)
    if problem:
        raise Problem(
            422,
            "invalid-expiry",
            f"expires_at {problem}.",
            title="Unprocessable request",
            errors=[pointer_error("/expires_at", f"The expiry {problem}.")],
        )
    secret = new_secret(API_KEY_PREFIX)
    key = ApiKey(
        name=body["name"],
        role=body["role"],
        prefix=secret[:PREFIX_LENGTH],
        secret_hash=digest(secret),
        created_by_user_id=principal.user_id,
        created_at=now,
        expires_at=expires_at.astimezone(UTC),
    )
    session = db.session()
    session.add(key)
    session.flush()
    body = {**ApiKeySchema().dump(key), "secret": secret}
    return json_response(body, 201, {"Location": f"/api/v1/api-keys/{key.id}", **NO_STORE})


@transaction.unit_of_work
def revoke_api_key(key_id: int):
    principal = _caller()
    key = db.session().get(ApiKey, key_id)
    # Someone else's key is answered as missing: its existence is not the caller's business.
    if key is None or (not _is_admin(principal) and key.created_by_user_id != principal.user_id):
        raise NotFoundProblem("API key", key_id)
    # Revoking twice is harmless; the first revocation time stays.
    db.session().execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return empty_response()
