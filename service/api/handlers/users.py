"""/api/v1/users: accounts, their roles, and who is calling (``/users/me``).

Users are never deleted (the ledger keeps its authors); DELETE deactivates. Roles are
enforced by connexion from the spec's scopes; these handlers only keep the rules a scope
cannot express: unique e-mail, the password policy, and at least one active admin.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service import db
from service.api import transaction
from service.api.conditional import not_modified, require_match, resource_response
from service.api.pagination import paginated, sort_keys
from service.api.responses import empty_response, json_response
from service.api.security import current_principal
from service.domain.accounts import (
    hash_password,
    password_problems,
    revoke_user_credentials,
    role_rank,
)
from service.domain.catalog import find_clash
from service.models import User
from service.models.auth import email_key
from service.problems import (
    ConflictProblem,
    NotFoundProblem,
    WeakPasswordProblem,
)
from service.schemas.rows import RowShape
from service.schemas.user import UserInputSchema, UserSchema

# The contract promises oldest first; there is no sort parameter.
USER_ROWS = RowShape(UserSchema(), User)
OLDEST_FIRST = sort_keys(("created_at", User.created_at, "datetime"))["created_at"]


def _location(user: User) -> str:
    return f"/api/v1/users/{user.id}"


def _password_hash(password: str, email: str) -> str:
    """The argon2 hash of an acceptable password (422 ``weak-password`` otherwise)."""
    problems = password_problems(password, email)
    if problems:
        raise WeakPasswordProblem(problems)
    return hash_password(password)


def _check_unique_email(user: User) -> None:
    clash = find_clash(User.email_key, email_key(user.email), user)
    if clash is not None:
        raise ConflictProblem(
            "duplicate-email",
            f"The e-mail address is already used by user {clash} (addresses are unique "
            "regardless of case).",
            conflicting_id=clash,
        )


def _keep_an_active_admin(user: User) -> None:
    """Refuse to demote or deactivate the last active admin.

    The active admins' rows are locked (in id order, so two callers never deadlock) before
    they are counted: on PostgreSQL a concurrent demotion waits here until the other one
    commits, then counts without it. SQLite serialises writers anyway (BEGIN IMMEDIATE).
    """
    locked = (
        db.session()
        .scalars(
            select(User.id)
            .where(User.role == "admin", User.is_active.is_(True))
            .order_by(User.id)
            .with_for_update()
        )
        .all()
    )
    if not [admin_id for admin_id in locked if admin_id != user.id]:
        raise ConflictProblem(
            "last-admin",
            f"User {user.id} is the last active admin; make another user an active admin first.",
        )


def _refuse_self_lockout(user: User, role: str, is_active: bool) -> None:
    """Admins cannot deactivate themselves or lower their own role: another admin must."""
    principal = current_principal()
    if principal is None or principal.user_id != user.id:
        return
    if not is_active or role_rank(role) < role_rank(user.role):
        raise ConflictProblem(
            "self-lockout",
            "You cannot deactivate yourself or lower your own role; ask another admin.",
        )


def _own_token(user: User) -> int | None:
    principal = current_principal()
    if principal and principal.user_id == user.id and principal.kind == "access_token":
        return principal.credential_id
    return None


def _removes_admin(user: User, role: str, is_active: bool) -> bool:
    was_admin = user.role == "admin" and user.is_active
    return was_admin and not (role == "admin" and is_active)


@transaction.unit_of_work
def list_users(
    limit: int = 50,
    cursor: str | None = None,
    role: str | None = None,
    is_active: bool | None = None,
):
    stmt = USER_ROWS.select()
    if role is not None:
        stmt = stmt.where(User.role == role)
    if is_active is not None:
        stmt = stmt.where(User.is_active.is_(is_active))
    return paginated(
        stmt,
        sort=OLDEST_FIRST,
        id_column=User.id,
        limit=limit,
        cursor=cursor,
        dump=USER_ROWS.dump,
    )


def create_user(body: dict):
    # argon2 is slow on purpose: hash before the write transaction, which on SQLite holds
    # the one write lock (and on PostgreSQL a pooled connection).
    password_hash = _password_hash(body["password"], body["email"])
    return _insert_user(body, password_hash)


@transaction.unit_of_work
def _insert_user(body: dict, password_hash: str):
    session = db.session()
    fields = {k: v for k, v in body.items() if k != "password"}
    user = UserInputSchema().load(fields, session=session)
    _check_unique_email(user)
    user.password_hash = password_hash
    session.add(user)
    session.flush()
    return resource_response(UserSchema().dump(user), user, 201, _location(user))


@transaction.unit_of_work
def get_current_user():
    principal = current_principal()
    # connexion has authenticated the caller, and users are never deleted.
    user = transaction.get_or_404(User, principal.user_id, "User")
    credential: dict[str, Any] = {"kind": principal.kind, "role": principal.role}
    if principal.kind == "api_key":
        credential["api_key_id"] = principal.credential_id
    return json_response({**UserSchema().dump(user), "credential": credential})


@transaction.unit_of_work
def get_user(user_id: int):
    user = transaction.get_or_404(User, user_id, "User")
    return not_modified(user) or resource_response(UserSchema().dump(user), user)


def update_user(user_id: int, body: dict):
    password_hash = None
    if "password" in body:
        # Check and hash the new password outside the write transaction (see create_user).
        # The e-mail it is checked against cannot change: UserUpdate has no email.
        with transaction.get_database().transaction(write=False) as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotFoundProblem("User", user_id)
            require_match(user)
            email = user.email
        password_hash = _password_hash(body["password"], email)
    return _apply_update(user_id, body, password_hash)


@transaction.unit_of_work
def _apply_update(user_id: int, body: dict, password_hash: str | None):
    session = db.session()
    user = transaction.get_or_404(User, user_id, "User")
    require_match(user)
    fields = {k: v for k, v in body.items() if k != "password"}
    role = fields.get("role", user.role)
    is_active = fields.get("is_active", user.is_active)
    deactivating = user.is_active and not is_active
    _refuse_self_lockout(user, role, is_active)
    if _removes_admin(user, role, is_active):
        _keep_an_active_admin(user)
    UserInputSchema().load(fields, instance=user, partial=True, session=session)
    if password_hash is not None:
        user.password_hash = password_hash
    session.flush()
    if deactivating:
        # As DELETE does: nothing issued before the deactivation works after a reactivation.
        revoke_user_credentials(session, user.id, api_keys=True)
    elif password_hash is not None:
        # Sessions opened with the old password end (except the one changing it, when users
        # change their own); API keys are separate credentials.
        revoke_user_credentials(session, user.id, api_keys=False, keep_token_id=_own_token(user))
    return resource_response(UserSchema().dump(user), user)


@transaction.unit_of_work
def deactivate_user(user_id: int):
    session = db.session()
    user = transaction.get_or_404(User, user_id, "User")
    require_match(user)
    _refuse_self_lockout(user, user.role, False)
    if _removes_admin(user, user.role, False):
        _keep_an_active_admin(user)
    user.is_active = False
    session.flush()
    revoke_user_credentials(session, user.id, api_keys=True)
    return empty_response()
