"""/api/v1/api-keys: create, list and revoke integration keys, and what a key may do."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from service.domain.accounts import issue_access_token
from service.formats import utcnow
from service.models import ApiKey, StockDocument, StockMovement, User
from tests.conftest import create_user
from tests.helpers import assert_problem, create_location, create_product

KEYS = "/api/v1/api-keys"
KEY_FIELDS = {
    "id",
    "name",
    "role",
    "prefix",
    "created_by_user_id",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
}


# --- helpers ------------------------------------------------------------------------------


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def signed_in(database, role: str) -> tuple[User, dict[str, str]]:
    """A new user of ``role`` and the headers of an access token of theirs."""
    user = create_user(database, role)
    with database.transaction() as session:
        secret, _ = issue_access_token(session, session.get(User, user.id))
    return user, bearer(secret)


def in_days(days: float) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


def create_key(client, headers=None, *, name="ERP sync", role="clerk", days=30) -> dict:
    body = {"name": name, "role": role, "expires_at": in_days(days)}
    response = client.post(KEYS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def walk(client, limit: int, headers=None) -> list[dict]:
    """Every key the caller may list, following next_cursor."""
    items, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(KEYS, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert "link" not in response.headers
            return items
        assert 'rel="next"' in response.headers["link"]


def admin_id(database) -> int:
    with database.transaction(write=False) as session:
        return session.scalar(select(User.id).where(User.role == "admin"))


def stored_key(database, key_id: int) -> ApiKey:
    with database.transaction(write=False) as session:
        return session.get(ApiKey, key_id)


def set_key(database, key_id: int, **values) -> None:
    with database.transaction() as session:
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


def set_user(database, user_id: int, **values) -> None:
    with database.transaction() as session:
        session.execute(update(User).where(User.id == user_id).values(**values))


# --- create -------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_stores_its_hash(client, database):
    expires_at = datetime(2030, 1, 1, tzinfo=UTC)
    expires_at = min(expires_at, utcnow() + timedelta(days=200))
    body = {"name": "ERP sync", "role": "clerk", "expires_at": expires_at.isoformat()}
    response = client.post(KEYS, json=body)
    assert response.status_code == 201, response.text
    key = response.json()
    assert set(key) == KEY_FIELDS | {"secret"}
    assert response.headers["location"] == f"{KEYS}/{key['id']}"
    assert response.headers["cache-control"] == "no-store"
    assert key["secret"].startswith("sk_live_")
    assert len(key["secret"]) > 40
    assert key["prefix"] == key["secret"][:12]
    assert key["name"] == "ERP sync"
    assert key["role"] == "clerk"
    assert key["created_by_user_id"] == admin_id(database)
    assert datetime.fromisoformat(key["expires_at"]) == expires_at
    assert key["revoked_at"] is None
    assert key["last_used_at"] is None

    stored = stored_key(database, key["id"])
    assert stored.secret_hash == hashlib.sha256(key["secret"].encode()).hexdigest()
    assert key["secret"] not in (stored.secret_hash, stored.prefix, stored.name)

    listed = client.get(KEYS)
    assert listed.status_code == 200, listed.text
    assert key["secret"] not in listed.text
    assert listed.json()["items"] == [{k: v for k, v in key.items() if k != "secret"}]


def test_a_key_role_above_the_creator_is_forbidden(anonymous_client, database):
    _, headers = signed_in(database, "clerk")
    body = {"name": "too much", "role": "manager", "expires_at": in_days(30)}
    response = anonymous_client.post(KEYS, json=body, headers=headers)
    assert_problem(response, 403, "role-too-high")
    for role in ("viewer", "clerk"):
        assert create_key(anonymous_client, headers, role=role)["role"] == role


@pytest.mark.parametrize("days", [367, -1, 0])
def test_the_expiry_is_in_the_future_and_within_a_year(client, days):
    body = {"name": "ERP", "role": "viewer", "expires_at": in_days(days)}
    problem = assert_problem(client.post(KEYS, json=body), 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/expires_at"]
    assert client.get(KEYS).json()["items"] == []


@pytest.mark.parametrize("expires_at", ["next week", "2027-13-01T00:00:00Z", ""])
def test_an_unreadable_expiry_is_a_bad_request(client, expires_at):
    body = {"name": "ERP", "role": "viewer", "expires_at": expires_at}
    problem = assert_problem(client.post(KEYS, json=body), 400)
    assert [e["pointer"] for e in problem["errors"]] == ["/expires_at"]


def test_an_expiry_a_year_away_is_accepted(client):
    assert create_key(client, days=365)["role"] == "clerk"


def test_an_api_key_cannot_create_keys(client):
    key = create_key(client, role="admin")
    body = {"name": "child", "role": "viewer", "expires_at": in_days(30)}
    response = client.post(KEYS, json=body, headers=bearer(key["secret"]))
    assert_problem(response, 403, "api-key-cannot-create-keys")


def test_api_keys_need_a_credential(anonymous_client):
    assert_problem(anonymous_client.get(KEYS), 401)
    body = {"name": "ERP", "role": "viewer", "expires_at": in_days(30)}
    assert_problem(anonymous_client.post(KEYS, json=body), 401)
    assert_problem(anonymous_client.delete(f"{KEYS}/1"), 401)


# --- list ---------------------------------------------------------------------------------


def test_users_list_their_own_keys_and_admins_all(client, database):
    alice, alice_headers = signed_in(database, "clerk")
    bob, bob_headers = signed_in(database, "viewer")
    alices = [create_key(client, alice_headers, name=f"alice {i}") for i in range(3)]
    bobs = [create_key(client, bob_headers, name="bob", role="viewer")]
    admins = [create_key(client, name="admin")]

    def ids(items):
        return [item["id"] for item in items]

    assert ids(walk(client, 1, alice_headers)) == ids(alices)
    assert ids(walk(client, 2, bob_headers)) == ids(bobs)
    everyone = walk(client, 2)
    assert ids(everyone) == ids(alices + bobs + admins)  # oldest first
    assert {item["created_by_user_id"] for item in everyone} == {
        alice.id,
        bob.id,
        admin_id(database),
    }
    assert all(set(item) == KEY_FIELDS for item in everyone)


def test_an_admin_key_with_a_lower_role_lists_only_its_owner_keys(client, database):
    _, clerk_headers = signed_in(database, "clerk")
    create_key(client, clerk_headers)
    viewer_key = create_key(client, role="viewer")
    listed = client.get(KEYS, headers=bearer(viewer_key["secret"])).json()["items"]
    assert [item["id"] for item in listed] == [viewer_key["id"]]


# --- revoke -------------------------------------------------------------------------------


def test_revoking_a_key_stops_it_at_once(client, database):
    key = create_key(client, role="viewer")
    headers = bearer(key["secret"])
    assert client.get("/api/v1/products", headers=headers).status_code == 200

    response = client.delete(f"{KEYS}/{key['id']}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    refused = client.get("/api/v1/products", headers=headers)
    assert_problem(refused, 401)
    assert refused.headers["www-authenticate"].startswith("Bearer")

    revoked_at = client.get(KEYS).json()["items"][0]["revoked_at"]
    assert revoked_at is not None
    again = client.delete(f"{KEYS}/{key['id']}")
    assert again.status_code == 204, again.text
    assert client.get(KEYS).json()["items"][0]["revoked_at"] == revoked_at


def test_a_key_can_revoke_itself(client):
    key = create_key(client, role="viewer")
    response = client.delete(f"{KEYS}/{key['id']}", headers=bearer(key["secret"]))
    assert response.status_code == 204, response.text
    assert_problem(client.get(KEYS, headers=bearer(key["secret"])), 401)


def test_someone_elses_key_is_not_found_unless_you_are_admin(client, database):
    _, alice_headers = signed_in(database, "manager")
    _, bob_headers = signed_in(database, "manager")
    alices = create_key(client, alice_headers)
    bobs = create_key(client, bob_headers)

    assert_problem(client.delete(f"{KEYS}/{alices['id']}", headers=bob_headers), 404, "not-found")
    assert stored_key(database, alices["id"]).revoked_at is None
    missing = client.delete(f"{KEYS}/999999", headers=bob_headers)
    assert_problem(missing, 404, "not-found")
    # The same answer whether the key exists or not.
    assert missing.json()["title"] == "Not found"

    assert client.delete(f"{KEYS}/{alices['id']}").status_code == 204  # admin
    assert client.delete(f"{KEYS}/{bobs['id']}", headers=bob_headers).status_code == 204
    assert stored_key(database, alices["id"]).revoked_at is not None
    assert stored_key(database, bobs["id"]).revoked_at is not None


# --- using a key --------------------------------------------------------------------------


def test_a_clerk_key_reads_and_writes_stock_but_not_the_catalog(client, database):
    location = create_location(client)
    product = create_product(client)
    key = create_key(client, role="clerk")  # created by the admin, limited to clerk
    headers = bearer(key["secret"])

    assert client.get(f"/api/v1/products/{product['id']}", headers=headers).status_code == 200
    receipt = client.post(
        "/api/v1/stock/receipts",
        json={
            "location_id": location["id"],
            "lines": [{"product_id": product["id"], "quantity": 5, "unit_cost": "1.50"}],
        },
        headers=headers,
    )
    assert receipt.status_code == 201, receipt.text
    assert receipt.json()["created_by_api_key_id"] == key["id"]
    assert receipt.json()["created_by_user_id"] == admin_id(database)

    product_write = client.post(
        "/api/v1/products", json={"sku": "NEW-1", "name": "New"}, headers=headers
    )
    assert_problem(product_write, 403)
    assert_problem(
        client.post("/api/v1/locations", json={"code": "X", "name": "X"}, headers=headers), 403
    )

    with database.transaction(write=False) as session:
        document = session.get(StockDocument, receipt.json()["id"])
        assert document.created_by_api_key_id == key["id"]
        assert document.created_by_user_id == admin_id(database)
        movements = session.scalars(
            select(StockMovement).where(StockMovement.document_id == document.id)
        ).all()
    assert [(m.created_by_api_key_id, m.created_by_user_id) for m in movements] == [
        (key["id"], admin_id(database))
    ]


def test_an_access_token_write_records_no_key(client, database):
    location = create_location(client)
    product = create_product(client)
    receipt = client.post(
        "/api/v1/stock/receipts",
        json={
            "location_id": location["id"],
            "lines": [{"product_id": product["id"], "quantity": 1, "unit_cost": "1.00"}],
        },
    )
    assert receipt.status_code == 201, receipt.text
    assert receipt.json()["created_by_api_key_id"] is None
    assert receipt.json()["created_by_user_id"] == admin_id(database)


def test_a_key_never_grants_more_than_its_creator_holds_now(client, database):
    location = create_location(client)
    product = create_product(client)
    manager, manager_headers = signed_in(database, "manager")
    key = create_key(client, manager_headers, role="manager")
    headers = bearer(key["secret"])
    body = {"sku": "MGR-1", "name": "By the key"}
    assert client.post("/api/v1/products", json=body, headers=headers).status_code == 201

    set_user(database, manager.id, role="viewer")
    assert client.get("/api/v1/products", headers=headers).status_code == 200
    assert_problem(
        client.post("/api/v1/products", json=body | {"sku": "MGR-2"}, headers=headers), 403
    )
    receipt = {
        "location_id": location["id"],
        "lines": [{"product_id": product["id"], "quantity": 1, "unit_cost": "1.00"}],
    }
    assert_problem(client.post("/api/v1/stock/receipts", json=receipt, headers=headers), 403)


def test_a_key_of_a_deactivated_user_is_refused(client, database):
    user, user_headers = signed_in(database, "clerk")
    key = create_key(client, user_headers)
    headers = bearer(key["secret"])
    assert client.get("/api/v1/products", headers=headers).status_code == 200
    set_user(database, user.id, is_active=False)
    assert_problem(client.get("/api/v1/products", headers=headers), 401)


def test_an_expired_key_is_refused(client, database):
    key = create_key(client)
    headers = bearer(key["secret"])
    assert client.get("/api/v1/products", headers=headers).status_code == 200
    set_key(database, key["id"], expires_at=utcnow() - timedelta(seconds=1))
    assert_problem(client.get("/api/v1/products", headers=headers), 401)


def test_a_made_up_key_is_refused(client):
    key = create_key(client)
    forged = key["secret"][:-4] + ("AAAA" if not key["secret"].endswith("AAAA") else "BBBB")
    assert_problem(client.get("/api/v1/products", headers=bearer(forged)), 401)


def test_using_a_key_records_when_it_was_last_used(client, database):
    key = create_key(client, role="viewer")
    assert stored_key(database, key["id"]).last_used_at is None
    before = utcnow()
    assert client.get("/api/v1/products", headers=bearer(key["secret"])).status_code == 200
    used = stored_key(database, key["id"]).last_used_at
    assert used is not None and used >= before
    listed = client.get(KEYS).json()["items"][0]
    assert datetime.fromisoformat(listed["last_used_at"]) == used
