"""/api/v1/users: accounts, roles, the password policy, the last-admin guard and revocation."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from service.domain.accounts import (
    API_KEY_PREFIX,
    digest,
    issue_access_token,
    new_secret,
    verify_password,
)
from service.formats import utcnow
from service.models import AccessToken, ApiKey, User
from tests.conftest import create_user
from tests.helpers import assert_problem, walk_pages

USERS = "/api/v1/users"
ME = f"{USERS}/me"
USER_FIELDS = {
    "id",
    "email",
    "name",
    "role",
    "is_active",
    "last_login_at",
    "created_at",
    "updated_at",
}
PASSWORD = "long enough passphrase"
NEW_PASSWORD = "another long passphrase"


def url_of(user: dict | User) -> str:
    return f"{USERS}/{user['id'] if isinstance(user, dict) else user.id}"


def new_user(client, email: str = "casey@example.com", role: str = "clerk", **fields) -> dict:
    body = {"email": email, "name": "Casey Clerk", "role": role, "password": PASSWORD, **fields}
    response = client.post(USERS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def token_for(database, user_id: int) -> dict[str, str]:
    """Headers with a fresh access token of an existing user."""
    with database.transaction() as session:
        secret, _ = issue_access_token(session, session.get(User, user_id))
    return bearer(secret)


def api_key_for(database, user_id: int, role: str) -> tuple[dict[str, str], int]:
    """Headers with a fresh API key created by ``user_id``, and the key's id."""
    secret = new_secret(API_KEY_PREFIX)
    with database.transaction() as session:
        key = ApiKey(
            name="integration",
            role=role,
            prefix=secret[:12],
            secret_hash=digest(secret),
            created_by_user_id=user_id,
            expires_at=utcnow() + timedelta(days=30),
        )
        session.add(key)
        session.flush()
        return bearer(secret), key.id


def stored(database, user_id: int) -> User:
    with database.transaction(write=False) as session:
        user = session.get(User, user_id)
        session.expunge(user)
        return user


def my_id(client) -> int:
    response = client.get(ME)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def assert_unauthorized(response) -> None:
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


# --- create -----------------------------------------------------------------------------


def test_create_user_is_201_with_location_etag_and_no_password(client, database):
    response = client.post(
        USERS,
        json={"email": "Casey@Example.com", "name": "Casey", "role": "clerk", "password": PASSWORD},
    )

    assert response.status_code == 201, response.text
    user = response.json()
    assert set(user) == USER_FIELDS
    assert user["email"] == "Casey@Example.com"  # kept as spelt
    assert (user["name"], user["role"], user["is_active"]) == ("Casey", "clerk", True)
    assert user["last_login_at"] is None
    assert user["created_at"] == user["updated_at"]
    assert response.headers["location"] == url_of(user)
    assert response.headers["etag"] == f'"{user["id"]}-1"'
    assert client.get(response.headers["location"]).json() == user
    row = stored(database, user["id"])
    assert row.password_hash.startswith("$argon2id$")
    assert verify_password(row.password_hash, PASSWORD)
    assert not verify_password(row.password_hash, PASSWORD.upper())


def test_created_user_can_use_the_api_with_its_role(client, database):
    user = new_user(client, role="viewer")

    headers = token_for(database, user["id"])

    assert client.get("/api/v1/products", headers=headers).status_code == 200
    assert_problem(
        client.post("/api/v1/products", json={"sku": "X", "name": "X"}, headers=headers), 403
    )


def test_duplicate_email_in_another_case_is_409_naming_the_holder(client):
    first = new_user(client, "Casey@Example.com")

    problem = assert_problem(
        client.post(
            USERS,
            json={
                "email": "casey@example.COM",
                "name": "Other",
                "role": "viewer",
                "password": PASSWORD,
            },
        ),
        409,
        "duplicate-email",
    )

    assert problem["conflicting_id"] == first["id"]
    emails = [u["email"] for u in client.get(USERS).json()["items"]]
    assert emails.count("Casey@Example.com") == 1 and "casey@example.COM" not in emails


@pytest.mark.parametrize(
    ("email", "password", "problem"),
    [
        ("casey.clerk@example.com", "casey.clerk rules the stockroom", "e-mail"),
        ("casey.clerk@example.com", "I am CASEY.CLERK, hello", "e-mail"),
        ("casey@example.com", " " * 12, "blank"),
    ],
    ids=["contains-local-part", "contains-local-part-other-case", "blank"],
)
def test_weak_password_is_422_pointing_at_password_and_creates_nothing(
    client, email, password, problem
):
    body = {"email": email, "name": "Casey", "role": "clerk", "password": password}

    found = assert_problem(client.post(USERS, json=body), 422, "weak-password")

    assert [e["pointer"] for e in found["errors"]] == ["/password"]
    assert problem in found["errors"][0]["detail"]
    assert [u["email"] for u in client.get(USERS).json()["items"] if u["email"] == email] == []


def test_short_password_is_refused_by_the_contract_with_a_pointer(client):
    # The Password schema's minLength (12) answers before the handler's policy can (400).
    body = {"email": "casey@example.com", "name": "Casey", "role": "clerk", "password": "short"}

    found = assert_problem(client.post(USERS, json=body), 400)

    assert [e["pointer"] for e in found["errors"]] == ["/password"]
    assert client.get(USERS, params={"role": "clerk"}).json()["items"] == []


@pytest.mark.parametrize(
    "extra",
    [
        {"is_active": False},
        {"password_hash": "x"},
        {"id": 7},
        {"last_login_at": "2026-01-01T00:00:00+00:00"},
        {"role": "owner"},
        {"email": "not-an-email"},
    ],
    ids=["is-active", "password-hash", "id", "last-login", "unknown-role", "bad-email"],
)
def test_invalid_create_body_is_400_and_writes_nothing(client, extra):
    body = {"email": "casey@example.com", "name": "Casey", "role": "clerk", "password": PASSWORD}

    assert_problem(client.post(USERS, json={**body, **extra}), 400)

    assert client.get(USERS, params={"role": "clerk"}).json()["items"] == []


def test_the_password_never_appears_in_a_response(client, database):
    secret = "Zebra-unique-passphrase-91"
    bodies = []

    def record(response):
        bodies.append(response.text)
        return response

    created = record(
        client.post(
            USERS, json={"email": "z@example.com", "name": "Z", "role": "clerk", "password": secret}
        )
    ).json()
    record(client.get(url_of(created)))
    record(client.get(USERS))
    record(client.patch(url_of(created), json={"password": secret + "-2", "name": "Zed"}))
    record(client.get(ME, headers=token_for(database, created["id"])))
    # Refusals: a duplicate, a weak one, and a body the contract rejects.
    record(
        client.post(
            USERS, json={"email": "Z@example.com", "name": "Z", "role": "clerk", "password": secret}
        )
    )
    record(client.patch(url_of(created), json={"password": "z@example.com" + secret}))
    record(client.patch(url_of(created), json={"password": secret, "email": "y@example.com"}))

    for text in bodies:
        assert secret not in text
        assert "password_hash" not in text
        assert "$argon2" not in text


@pytest.mark.parametrize("password", ["Shorty-pw-1", "Long-pw-" * 40], ids=["short", "long"])
def test_a_password_the_contract_rejects_is_not_echoed(client, password):
    body = {"email": "e@example.com", "name": "E", "role": "clerk", "password": password}

    response = client.post(USERS, json=body)

    assert_problem(response, 400)
    assert password not in response.json()["errors"][0]["detail"]


def test_passwords_are_not_logged(client, caplog):
    secret = "Quokka-unique-passphrase-77"
    caplog.set_level(logging.DEBUG)

    new_user(client, "q@example.com", password=secret)
    client.post(
        USERS, json={"email": "q@example.com", "name": "Q", "role": "clerk", "password": secret}
    )
    client.post(
        USERS,
        json={
            "email": "quokka@example.com",
            "name": "Q",
            "role": "clerk",
            "password": "quokka" + secret,
        },
    )

    assert caplog.records  # the refusals were logged ...
    assert secret not in caplog.text  # ... without the password


# --- get and list -----------------------------------------------------------------------


def test_get_unknown_user_is_404(client):
    problem = assert_problem(client.get(f"{USERS}/999"), 404, "not-found")
    assert "User 999" in problem["detail"]


def test_get_with_current_etag_is_304_and_with_a_stale_one_200(client):
    user = new_user(client)
    etag = client.get(url_of(user)).headers["etag"]

    cached = client.get(url_of(user), headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag

    client.patch(url_of(user), json={"name": "Renamed"})
    fresh = client.get(url_of(user), headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh.json()["name"] == "Renamed"


def test_list_is_oldest_first_across_pages_with_link_headers(client):
    created = [new_user(client, f"user{i}@example.com", role="viewer") for i in range(5)]

    response = client.get(USERS, params={"limit": 2})
    assert 'rel="next"' in response.headers["link"]
    items = walk_pages(client, USERS, limit=2)

    assert [u["id"] for u in items][1:] == [u["id"] for u in created]  # after the fixture admin
    assert set(items[0]) == USER_FIELDS


def test_list_follows_created_at_not_id(client, database):
    first, second = new_user(client, "a@example.com"), new_user(client, "b@example.com")
    with database.transaction() as session:
        session.execute(
            update(User)
            .where(User.id == second["id"])
            .values(created_at=datetime(2020, 1, 1, tzinfo=UTC))
        )

    ids = [u["id"] for u in walk_pages(client, USERS, limit=1)]

    assert ids[0] == second["id"]
    assert ids.index(first["id"]) > 0


def test_list_filters_by_role_and_is_active(client):
    admin_id = my_id(client)
    clerk = new_user(client, "clerk@example.com", role="clerk")
    gone = new_user(client, "gone@example.com", role="clerk")
    viewer = new_user(client, "viewer@example.com", role="viewer")
    assert client.delete(url_of(gone)).status_code == 204

    def ids(**params):
        return [u["id"] for u in walk_pages(client, USERS, **params)]

    assert ids(role="clerk") == [clerk["id"], gone["id"]]
    assert ids(is_active="false") == [gone["id"]]
    assert ids(is_active="true") == [admin_id, clerk["id"], viewer["id"]]
    assert ids(role="clerk", is_active="true") == [clerk["id"]]
    assert ids(role="manager") == []
    assert_problem(client.get(USERS, params={"role": "owner"}), 400)


# --- update -----------------------------------------------------------------------------


def test_patch_changes_name_role_and_bumps_the_etag(client):
    user = new_user(client)

    response = client.patch(url_of(user), json={"name": "Casey Manager", "role": "manager"})

    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["name"], updated["role"], updated["email"]) == (
        "Casey Manager",
        "manager",
        user["email"],
    )
    assert response.headers["etag"] == f'"{user["id"]}-2"'
    assert updated["updated_at"] > user["updated_at"]


def test_patch_with_stale_if_match_is_412_and_changes_nothing(client):
    user = new_user(client)
    client.patch(url_of(user), json={"name": "Second"})

    assert_problem(
        client.patch(
            url_of(user), json={"role": "admin"}, headers={"If-Match": f'"{user["id"]}-1"'}
        ),
        412,
        "precondition-failed",
    )
    current = client.get(url_of(user))
    assert current.json()["role"] == "clerk"

    ok = client.patch(
        url_of(user), json={"role": "admin"}, headers={"If-Match": current.headers["etag"]}
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "new@example.com"},
        {"role": "owner"},
        {"is_active": "no"},
        {"password": "short"},
    ],
    ids=["empty", "email", "unknown-role", "string-is-active", "short-password"],
)
def test_invalid_patch_is_400(client, body):
    user = new_user(client)
    assert_problem(client.patch(url_of(user), json=body), 400)
    assert client.get(url_of(user)).json() == user


@pytest.mark.parametrize(
    "body", [{"name": "X"}, {"password": NEW_PASSWORD}], ids=["name", "password"]
)
def test_patch_unknown_user_is_404(client, body):
    assert_problem(client.patch(f"{USERS}/999", json=body), 404, "not-found")


def test_password_patch_with_stale_if_match_is_412_and_keeps_password_and_tokens(client, database):
    user = new_user(client)
    token = token_for(database, user["id"])
    client.patch(url_of(user), json={"name": "Second"})

    response = client.patch(
        url_of(user), json={"password": NEW_PASSWORD}, headers={"If-Match": f'"{user["id"]}-1"'}
    )

    assert_problem(response, 412, "precondition-failed")
    assert verify_password(stored(database, user["id"]).password_hash, PASSWORD)
    assert client.get(ME, headers=token).status_code == 200


def test_patch_password_revokes_access_tokens_but_not_api_keys(client, database):
    user = new_user(client)
    token = token_for(database, user["id"])
    key, _ = api_key_for(database, user["id"], "clerk")
    assert client.get(ME, headers=token).status_code == 200

    response = client.patch(url_of(user), json={"password": NEW_PASSWORD})

    assert response.status_code == 200, response.text
    assert_unauthorized(client.get(ME, headers=token))
    assert client.get(ME, headers=key).status_code == 200
    row = stored(database, user["id"])
    assert verify_password(row.password_hash, NEW_PASSWORD)
    assert not verify_password(row.password_hash, PASSWORD)
    assert client.get(ME, headers=token_for(database, user["id"])).status_code == 200


def test_weak_password_in_patch_is_422_and_keeps_password_and_tokens(client, database):
    user = new_user(client, "casey.clerk@example.com")
    token = token_for(database, user["id"])

    found = assert_problem(
        client.patch(url_of(user), json={"password": "Casey.Clerk's new password", "name": "New"}),
        422,
        "weak-password",
    )

    assert found["errors"][0]["pointer"] == "/password"
    assert client.get(url_of(user)).json() == user
    assert verify_password(stored(database, user["id"]).password_hash, PASSWORD)
    assert client.get(ME, headers=token).status_code == 200


def test_other_changes_keep_tokens(client, database):
    user = new_user(client)
    token = token_for(database, user["id"])

    client.patch(url_of(user), json={"name": "Renamed", "role": "manager"})

    me = client.get(ME, headers=token)
    assert me.status_code == 200
    assert me.json()["credential"]["role"] == "manager"


# --- deactivate -------------------------------------------------------------------------


def test_delete_deactivates_and_revokes_tokens_and_api_keys(client, database):
    user = new_user(client)
    token = token_for(database, user["id"])
    key, key_id = api_key_for(database, user["id"], "viewer")
    assert client.get(ME, headers=token).status_code == 200
    assert client.get(ME, headers=key).status_code == 200

    response = client.delete(url_of(user))

    assert response.status_code == 204
    assert response.content == b""
    assert client.get(url_of(user)).json()["is_active"] is False  # kept, not deleted
    assert_unauthorized(client.get(ME, headers=token))
    assert_unauthorized(client.get(ME, headers=key))
    with database.transaction(write=False) as session:
        assert session.get(ApiKey, key_id).revoked_at is not None
        tokens = session.scalars(select(AccessToken).where(AccessToken.user_id == user["id"]))
        assert all(t.revoked_at is not None for t in tokens)


def test_reactivation_does_not_revive_old_credentials(client, database):
    user = new_user(client)
    token = token_for(database, user["id"])
    key, _ = api_key_for(database, user["id"], "viewer")

    assert client.patch(url_of(user), json={"is_active": False}).status_code == 200
    reactivated = client.patch(url_of(user), json={"is_active": True})

    assert reactivated.json()["is_active"] is True
    assert_unauthorized(client.get(ME, headers=token))
    assert_unauthorized(client.get(ME, headers=key))
    assert client.get(ME, headers=token_for(database, user["id"])).status_code == 200


def test_deactivating_twice_is_fine(client):
    user = new_user(client)
    assert client.delete(url_of(user)).status_code == 204
    assert client.delete(url_of(user)).status_code == 204


def test_delete_with_stale_if_match_is_412_and_keeps_the_user_active(client):
    user = new_user(client)
    client.patch(url_of(user), json={"name": "Second"})

    assert_problem(client.delete(url_of(user), headers={"If-Match": f'"{user["id"]}-1"'}), 412)
    assert client.get(url_of(user)).json()["is_active"] is True


def test_delete_unknown_user_is_404(client):
    assert_problem(client.delete(f"{USERS}/999"), 404, "not-found")


# --- the last active admin --------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        ("patch", {"role": "manager"}),
        ("patch", {"role": "viewer", "name": "Demoted"}),
        ("patch", {"is_active": False}),
        ("delete", None),
    ],
    ids=["demote", "demote-and-rename", "patch-inactive", "delete"],
)
def test_admins_cannot_demote_or_deactivate_themselves(client, change):
    """Also keeps the last admin: an admin can only be removed by another one."""
    admin_id = my_id(client)
    before = client.get(f"{USERS}/{admin_id}").json()
    method, body = change

    response = client.request(method.upper(), f"{USERS}/{admin_id}", json=body)

    assert_problem(response, 409, "self-lockout")
    assert client.get(f"{USERS}/{admin_id}").json() == before  # and the token still works


def test_an_admin_can_be_demoted_while_another_active_admin_remains(client, database):
    admin_id = my_id(client)
    other = new_user(client, "other-admin@example.com", role="admin")
    other_headers = token_for(database, other["id"])

    demoted = client.patch(f"{USERS}/{admin_id}", json={"role": "manager"}, headers=other_headers)
    assert demoted.status_code == 200, demoted.text

    # The fixture admin is a manager now; the remaining admin cannot remove itself.
    assert_problem(client.get(USERS), 403)
    assert_problem(client.delete(url_of(other), headers=other_headers), 409, "self-lockout")
    assert client.delete(f"{USERS}/{admin_id}", headers=other_headers).status_code == 204


def test_another_admin_can_deactivate_an_admin(client, database):
    admin_id = my_id(client)
    other = new_user(client, "other-admin@example.com", role="admin")

    response = client.delete(f"{USERS}/{admin_id}", headers=token_for(database, other["id"]))

    assert response.status_code == 204
    assert_unauthorized(client.get(ME))


def test_demoting_a_non_admin_needs_no_other_admin(client):
    user = new_user(client, role="manager")
    assert client.patch(url_of(user), json={"role": "viewer"}).json()["role"] == "viewer"


def test_concurrent_demotions_cannot_remove_every_admin(client, database):
    """A demotion waits for a concurrent one and then counts without its admin.

    Admin A (the client) demotes admin B while another writer, not yet committed, demotes A:
    once that commits no admin would remain, so A's request is refused.
    """
    admin_id = my_id(client)
    other = create_user(database, "admin")
    outcome = {}

    with database.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(
            update(User).where(User.id == admin_id).values(role="manager", version=User.version + 1)
        )
        thread = threading.Thread(
            target=lambda: outcome.update(
                response=client.patch(f"{USERS}/{other.id}", json={"role": "manager"})
            )
        )
        thread.start()
        time.sleep(0.5)
        still_waiting = thread.is_alive()
        transaction.commit()
    thread.join(timeout=30)

    assert still_waiting, "the demotion did not wait for the admin rows' lock"
    assert_problem(outcome["response"], 409, "last-admin")
    with database.transaction(write=False) as session:
        assert session.get(User, other.id).role == "admin"


# --- /users/me --------------------------------------------------------------------------


def test_me_for_a_clerk_token(app, database):
    clerk = create_user(database, "clerk", "Clerk@Example.com")

    with app.test_client(headers=token_for(database, clerk.id)) as clerk_client:
        response = clerk_client.get(ME)

    assert response.status_code == 200, response.text
    me = response.json()
    assert set(me) == {*USER_FIELDS, "credential"}
    assert (me["id"], me["email"], me["role"]) == (clerk.id, "Clerk@Example.com", "clerk")
    assert me["credential"] == {"kind": "access_token", "role": "clerk"}


def test_me_for_an_api_key_names_the_key_and_the_role_it_grants(client, database):
    manager = new_user(client, role="manager")
    headers, key_id = api_key_for(database, manager["id"], "viewer")

    me = client.get(ME, headers=headers).json()

    assert me["id"] == manager["id"]
    assert me["role"] == "manager"
    assert me["credential"] == {"kind": "api_key", "role": "viewer", "api_key_id": key_id}


def test_me_never_grants_more_than_the_user_holds_now(client, database):
    user = new_user(client, role="manager")
    headers, _ = api_key_for(database, user["id"], "manager")
    client.patch(url_of(user), json={"role": "viewer"})

    assert client.get(ME, headers=headers).json()["credential"]["role"] == "viewer"


def test_me_for_a_viewer(client, auth_headers):
    response = client.get(ME, headers=auth_headers("viewer"))
    assert response.status_code == 200
    assert response.json()["credential"]["role"] == "viewer"


# --- who may call -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "clerk", "manager"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", USERS, None),
        (
            "POST",
            USERS,
            {"email": "x@example.com", "name": "X", "role": "admin", "password": PASSWORD},
        ),
        ("GET", USERS + "/{admin}", None),
        ("PATCH", USERS + "/{admin}", {"role": "viewer"}),
        ("DELETE", USERS + "/{admin}", None),
    ],
    ids=["list", "create", "get", "patch", "delete"],
)
def test_non_admins_get_403(client, auth_headers, role, method, path, body):
    admin_id = my_id(client)

    path = path.format(admin=admin_id)

    response = client.request(method, path, json=body, headers=auth_headers(role))

    assert_problem(response, 403)
    admin = client.get(f"{USERS}/{admin_id}").json()
    assert (admin["role"], admin["is_active"]) == ("admin", True)
    assert [
        u["email"] for u in client.get(USERS).json()["items"] if u["email"] == "x@example.com"
    ] == []


@pytest.mark.parametrize("path", [USERS, ME, f"{USERS}/1"])
def test_no_token_is_401_with_a_challenge(anonymous_client, path):
    assert_unauthorized(anonymous_client.get(path))


def test_unknown_token_is_401(anonymous_client):
    assert_unauthorized(anonymous_client.get(ME, headers=bearer("sk_at_not-a-real-token")))
