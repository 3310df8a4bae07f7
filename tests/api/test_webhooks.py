"""/api/v1/webhooks: endpoint CRUD, admin-only access, secret rotation, event filters,
redelivery and event retention, delivered by a real Deliverer to a real Receiver."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from standardwebhooks import Webhook, WebhookVerificationError

from service.api.transaction import WEBHOOK_SETTINGS_KEY
from service.config import WebhookSettings
from service.domain import secrets
from service.domain.delivery import Deliverer
from service.formats import utcnow
from service.models import Event, WebhookEndpoint
from tests.conftest import bearer_for
from tests.e2e.test_webhook_delivery import FAST_RETRIES, Receiver, drain, register
from tests.helpers import assert_problem, create_category, create_location, create_product

WEBHOOKS = "/api/v1/webhooks"
EVENTS = "/api/v1/events"


@pytest.fixture(autouse=True)
def restore_webhook_settings(app):
    """Each test may swap the app's WebhookSettings; put the original back afterwards."""
    original = app.app.extensions[WEBHOOK_SETTINGS_KEY]
    yield
    app.app.extensions[WEBHOOK_SETTINGS_KEY] = original


@pytest.fixture()
def receiver():
    running = Receiver()
    yield running
    running.close()


@pytest.fixture()
def deliverer(database):
    worker = Deliverer(database, FAST_RETRIES, concurrency=2)
    yield worker
    worker.close()


def endpoint_url(endpoint: dict) -> str:
    return f"{WEBHOOKS}/{endpoint['id']}"


def deliveries(client, endpoint: dict, **params) -> list[dict]:
    response = client.get(f"{endpoint_url(endpoint)}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def raw_body(body: dict) -> bytes:
    """The bytes the Deliverer signed (it serialises compactly, keys in order)."""
    return json.dumps(body, separators=(",", ":")).encode()


def rotate(client, endpoint: dict, overlap_seconds: int) -> dict:
    response = client.post(
        f"{endpoint_url(endpoint)}/secret-rotation", json={"overlap_seconds": overlap_seconds}
    )
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    return response.json()


# --- 1. create, get, list: the secret is shown once and stored encrypted ------------------


def test_create_is_201_with_location_etag_and_a_whsec_secret_shown_only_once(client, app, database):
    app.app.extensions[WEBHOOK_SETTINGS_KEY] = FAST_RETRIES
    response = client.post(
        WEBHOOKS,
        json={
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["location.created"],
            "description": "ERP",
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["secret"]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]+", secret)
    assert response.headers["location"] == endpoint_url(created)
    assert response.headers["etag"].startswith('"')
    assert "no-store" in response.headers["cache-control"]
    assert created["event_types"] == ["location.created"] and created["enabled"] is True

    fetched = client.get(response.headers["location"])
    listed = client.get(WEBHOOKS)
    assert fetched.status_code == listed.status_code == 200
    assert fetched.headers["etag"] == response.headers["etag"]
    assert "secret" not in fetched.json()
    assert [set(item) for item in listed.json()["items"]] == [set(fetched.json())]
    assert {k: v for k, v in created.items() if k != "secret"} == fetched.json()
    for text in (fetched.text, listed.text):
        assert secret not in text and secret.removeprefix("whsec_") not in text

    with database.transaction(write=False) as session:
        row = session.get(WebhookEndpoint, created["id"])
        assert secret.removeprefix("whsec_") not in row.secret_ciphertext
        assert secrets.decrypt(row.secret_ciphertext) == secret  # encrypted, not lost


# --- 2. update and delete -----------------------------------------------------------------


def test_patch_with_current_if_match_changes_every_field_and_the_etag(client, app):
    endpoint = register(client, app, "http://127.0.0.1:9/old")
    tag = client.get(endpoint_url(endpoint)).headers["etag"]
    change = {
        "url": "http://127.0.0.1:9/new",
        "event_types": ["product.created", "product.updated"],
        "description": "renamed",
        "enabled": False,
    }
    response = client.patch(endpoint_url(endpoint), json=change, headers={"If-Match": tag})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] != tag
    body = client.get(endpoint_url(endpoint)).json()
    assert {key: body[key] for key in change} == change
    assert body["disabled_reason"] is None


def test_patch_with_a_stale_if_match_is_412_and_changes_nothing(client, app):
    endpoint = register(client, app, "http://127.0.0.1:9/hook")
    stale = client.get(endpoint_url(endpoint)).headers["etag"]
    assert client.patch(endpoint_url(endpoint), json={"description": "first"}).status_code == 200

    response = client.patch(
        endpoint_url(endpoint), json={"description": "second"}, headers={"If-Match": stale}
    )
    assert_problem(response, 412)
    assert client.get(endpoint_url(endpoint)).json()["description"] == "first"


def test_patch_to_a_private_url_is_422_when_private_targets_are_refused(client, app):
    endpoint = register(client, app, "http://127.0.0.1:9/hook")
    before = client.get(endpoint_url(endpoint))
    app.app.extensions[WEBHOOK_SETTINGS_KEY] = WebhookSettings()

    response = client.patch(
        endpoint_url(endpoint),
        json={"url": "http://10.0.0.1/x", "description": "changed"},
        headers={"If-Match": before.headers["etag"]},
    )
    problem = assert_problem(response, 422)
    assert [error["pointer"] for error in problem["errors"]] == ["/url"]
    after = client.get(endpoint_url(endpoint))
    assert after.json() == before.json()
    assert after.headers["etag"] == before.headers["etag"]


def test_delete_is_204_then_get_is_404(client, app):
    endpoint = register(client, app, "http://127.0.0.1:9/hook")
    tag = client.get(endpoint_url(endpoint)).headers["etag"]

    response = client.delete(endpoint_url(endpoint), headers={"If-Match": tag})
    assert response.status_code == 204, response.text
    assert_problem(client.get(endpoint_url(endpoint)), 404)
    assert client.get(WEBHOOKS).json()["items"] == []


# --- 3. roles -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "clerk", "manager"])
def test_roles_below_admin_get_403_on_list_and_create(client, app, database, role):
    app.app.extensions[WEBHOOK_SETTINGS_KEY] = FAST_RETRIES
    with app.test_client(headers=bearer_for(database, role)) as other:
        assert_problem(other.get(WEBHOOKS), 403)
        assert_problem(other.post(WEBHOOKS, json={"url": "http://127.0.0.1:9/hook"}), 403)
    assert client.get(WEBHOOKS).json()["items"] == []  # nothing was registered


def test_the_event_feed_is_readable_by_a_viewer(client, database, app):
    create_location(client, code="FEED-1")
    with app.test_client(headers=bearer_for(database, "viewer")) as viewer:
        response = viewer.get(EVENTS)
    assert response.status_code == 200, response.text
    assert [event["type"] for event in response.json()["items"]] == ["location.created"]


# --- 4. secret rotation -------------------------------------------------------------------


def test_during_a_rotation_overlap_a_delivery_verifies_with_the_new_and_the_old_secret(
    client, app, receiver, deliverer
):
    endpoint = register(client, app, receiver.url)
    old = endpoint["secret"]
    rotated = rotate(client, endpoint, 3600)
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(minutes=59) < expires - utcnow() <= timedelta(hours=1)

    receiver.secret = new
    create_location(client, code="ROT-1")
    drain(deliverer, lambda: receiver.verified >= 1)

    headers, body = receiver.received[0]
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and len(set(signatures)) == 2
    assert all(signature.startswith("v1,") for signature in signatures)
    Webhook(new).verify(raw_body(body), headers)
    Webhook(old).verify(raw_body(body), headers)


def test_a_rotation_without_overlap_signs_with_the_new_secret_only(
    client, app, receiver, deliverer
):
    endpoint = register(client, app, receiver.url)
    old = endpoint["secret"]
    rotated = rotate(client, endpoint, 0)
    assert rotated["previous_secret_expires_at"] is None

    receiver.secret = rotated["secret"]
    create_location(client, code="ROT-0")
    drain(deliverer, lambda: receiver.verified >= 1)

    headers, body = receiver.received[0]
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(rotated["secret"]).verify(raw_body(body), headers)  # the bytes are the signed ones
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(raw_body(body), headers)


# --- 5. event type filter -----------------------------------------------------------------


def test_an_endpoint_subscribed_to_one_type_receives_only_those_events_in_order(
    client, app, receiver, deliverer
):
    app.app.extensions[WEBHOOK_SETTINGS_KEY] = FAST_RETRIES
    response = client.post(
        WEBHOOKS, json={"url": receiver.url, "event_types": ["location.created"]}
    )
    assert response.status_code == 201, response.text
    endpoint = response.json()
    receiver.secret = endpoint["secret"]
    first = create_location(client, code="TYPE-A")
    create_product(client, "TYPE-P")
    create_category(client, "Type")
    client.patch(f"/api/v1/locations/{first['id']}", json={"name": "Renamed"})
    create_location(client, code="TYPE-B")

    drain(deliverer, lambda: receiver.verified >= 2)
    for _ in range(5):  # nothing else arrives
        deliverer.run_once()

    bodies = [body for _, body in receiver.received]
    assert [body["type"] for body in bodies] == ["location.created", "location.created"]
    assert [body["data"]["code"] for body in bodies] == ["TYPE-A", "TYPE-B"]
    feed = client.get(EVENTS, params={"type": "location.created"}).json()["items"]
    assert [body["sequence"] for body in bodies] == [event["sequence"] for event in feed]
    assert {d["event_type"] for d in deliveries(client, endpoint)} == {"location.created"}


# --- 6. redelivery ------------------------------------------------------------------------


def test_a_redelivery_sends_the_same_webhook_id_again_and_both_are_listed(
    client, app, receiver, deliverer
):
    endpoint = register(client, app, receiver.url)
    receiver.secret = endpoint["secret"]
    create_location(client, code="RE-1")
    drain(deliverer, lambda: receiver.verified >= 1)
    (original,) = deliveries(client, endpoint)
    assert original["status"] == "succeeded" and original["redelivery"] is False

    response = client.post(f"{endpoint_url(endpoint)}/deliveries/{original['id']}/redelivery")
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "pending" and queued["redelivery"] is True
    assert queued["event_id"] == original["event_id"] and queued["id"] != original["id"]
    assert [d["id"] for d in deliveries(client, endpoint, status="pending")] == [queued["id"]]
    assert [d["id"] for d in deliveries(client, endpoint, status="succeeded")] == [original["id"]]

    drain(deliverer, lambda: receiver.verified >= 2)

    assert [headers["webhook-id"] for headers, _ in receiver.received] == [original["event_id"]] * 2
    listed = deliveries(client, endpoint)
    assert [d["id"] for d in listed] == [queued["id"], original["id"]]  # newest first
    assert {d["status"] for d in listed} == {"succeeded"}
    for delivery in listed:
        (attempt,) = delivery["attempts"]
        assert attempt["succeeded"] is True and attempt["response_status"] == 204
        assert isinstance(attempt["duration_ms"], int) and attempt["duration_ms"] >= 0
    assert deliveries(client, endpoint, status="pending") == []


def test_redelivery_is_409_for_a_disabled_endpoint_and_404_for_an_unknown_delivery(
    client, app, receiver, deliverer
):
    endpoint = register(client, app, receiver.url)
    other = register(client, app, receiver.url)
    receiver.secret = endpoint["secret"]
    create_location(client, code="RE-2")
    drain(deliverer, lambda: any(d["status"] == "succeeded" for d in deliveries(client, endpoint)))
    (delivered,) = deliveries(client, endpoint, status="succeeded")

    assert_problem(client.post(f"{endpoint_url(endpoint)}/deliveries/999999/redelivery"), 404)
    # Another endpoint's delivery is not this one's.
    assert_problem(
        client.post(f"{endpoint_url(other)}/deliveries/{delivered['id']}/redelivery"), 404
    )
    assert client.patch(endpoint_url(endpoint), json={"enabled": False}).status_code == 200
    assert_problem(
        client.post(f"{endpoint_url(endpoint)}/deliveries/{delivered['id']}/redelivery"), 409
    )
    assert deliveries(client, endpoint, status="pending") == []


# --- 7. retention -------------------------------------------------------------------------


def age_event(database, sequence: int, days: int = 40) -> None:
    with database.transaction() as session:
        session.execute(
            update(Event)
            .where(Event.sequence == sequence)
            .values(created_at=utcnow() - timedelta(days=days))
        )


def test_prune_removes_events_past_retention_and_keeps_newer_ones(client, database):
    create_location(client, code="OLD")
    create_location(client, code="NEW")
    old, new = client.get(EVENTS).json()["items"]
    age_event(database, old["sequence"])

    worker = Deliverer(database, FAST_RETRIES)
    try:
        assert worker.prune() == 1
    finally:
        worker.close()

    assert client.get(EVENTS).json()["items"] == [new]
    create_location(client, code="NEXT")  # the counter still numbers on from where it was
    assert [e["sequence"] for e in client.get(EVENTS).json()["items"]] == [
        new["sequence"],
        new["sequence"] + 1,
    ]


def test_a_pending_delivery_whose_event_was_pruned_expires_and_the_next_event_is_sent(
    client, app, database, receiver, deliverer
):
    endpoint = register(client, app, receiver.url)
    receiver.secret = endpoint["secret"]
    create_location(client, code="GONE")
    create_location(client, code="KEPT")
    gone, kept = client.get(EVENTS).json()["items"]
    deliverer.plan()  # the delivery of the first event is now pending
    (pending,) = deliveries(client, endpoint, status="pending")
    assert pending["event_id"] == gone["id"]
    age_event(database, gone["sequence"])
    assert deliverer.prune() == 1

    drain(deliverer, lambda: receiver.verified >= 1)

    (expired,) = deliveries(client, endpoint, status="expired")
    assert expired["id"] == pending["id"] and expired["attempts"] == []
    assert expired["completed_at"] is not None
    assert [body["id"] for _, body in receiver.received] == [kept["id"]]
    assert_problem(
        client.post(f"{endpoint_url(endpoint)}/deliveries/{expired['id']}/redelivery"), 409
    )
