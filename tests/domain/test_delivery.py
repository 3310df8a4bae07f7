"""The delivery rules of service/domain/delivery.py: backoff, Retry-After, the retry horizon,
one failing endpoint never holding another, and the target guard at every attempt."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from service.config import WebhookSettings
from service.domain.delivery import Deliverer, parse_retry_after, retry_delay
from service.formats import utcnow
from service.models import WebhookEndpoint
from tests.e2e.test_webhook_delivery import FAST_RETRIES, Receiver, drain, register
from tests.helpers import create_location

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_backoff_doubles_with_jitter_up_to_the_cap():
    settings = WebhookSettings(retry_base_s=10, retry_max_delay_s=3600)
    for attempts, nominal in ((1, 10), (2, 20), (3, 40), (6, 320)):
        delays = [retry_delay(attempts, settings, None) for _ in range(200)]
        assert min(delays) >= nominal * 0.8 and max(delays) <= nominal * 1.2
        assert len(set(delays)) > 100  # jittered, not one fixed value
    capped = [retry_delay(40, settings, None) for _ in range(200)]
    assert min(capped) >= 3600 * 0.8 and max(capped) == 3600  # jitter below the cap only


def test_retry_after_lengthens_the_wait_but_never_past_the_cap():
    settings = WebhookSettings(retry_base_s=10, retry_max_delay_s=3600)
    assert retry_delay(1, settings, 600) == 600
    assert retry_delay(1, settings, 10**9) == 3600
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Sat, 05 Dec 2026 12:05:00 GMT", NOW) == 300
    assert parse_retry_after("Sat, 05 Dec 2026 11:00:00 GMT", NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.fixture()
def receivers():
    running = [Receiver(), Receiver()]
    yield running
    for receiver in running:
        receiver.close()


def test_a_failing_endpoint_holds_its_own_events_and_never_anothers(
    client, app, database, receivers
):
    failing, healthy = receivers
    failing.answers = [500] * 1000
    down = register(client, app, failing.url)
    up = register(client, app, healthy.url)
    failing.secret, healthy.secret = down["secret"], up["secret"]
    for index in range(5):
        create_location(client, code=f"HOLD-{index}")
    deliverer = Deliverer(database, FAST_RETRIES, concurrency=4)
    try:
        drain(deliverer, lambda: healthy.verified == 5)
    finally:
        deliverer.close()
    assert failing.received == []
    pending = client.get(f"/api/v1/webhooks/{down['id']}/deliveries").json()["items"]
    assert len(pending) == 1  # only its oldest event is in flight; the rest wait behind it
    assert pending[0]["status"] == "pending" and pending[0]["attempt_count"] >= 1


def test_an_endpoint_failing_past_the_horizon_is_disabled_with_a_reason(
    client, app, database, receivers
):
    failing = receivers[0]
    failing.answers = [503] * 1000
    endpoint = register(client, app, failing.url)
    create_location(client)
    deliverer = Deliverer(database, FAST_RETRIES, concurrency=1)
    try:
        deliverer.run_once()  # the first failure starts the clock
        with database.transaction() as session:  # ... which began four days ago
            session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint["id"])
                .values(failing_since=utcnow() - timedelta(days=4))
            )
        disabled = lambda: not client.get(f"/api/v1/webhooks/{endpoint['id']}").json()["enabled"]  # noqa: E731
        drain(deliverer, disabled)
    finally:
        deliverer.close()
    body = client.get(f"/api/v1/webhooks/{endpoint['id']}").json()
    assert "No event could be delivered since" in body["disabled_reason"]


def test_the_target_guard_runs_again_at_every_attempt(client, app, database, receivers):
    receiver = receivers[0]
    endpoint = register(client, app, receiver.url)  # allowed while registering (tests)
    receiver.secret = endpoint["secret"]
    create_location(client)
    guarded = replace(FAST_RETRIES, allow_private_targets=False)
    deliverer = Deliverer(database, guarded, concurrency=1)
    try:
        deliverer.run_once()
    finally:
        deliverer.close()
    assert receiver.received == []  # 127.0.0.1 is refused at the attempt itself
    [delivery] = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["items"]
    attempt = delivery["attempts"][0]
    assert attempt["response_status"] is None
    assert attempt["error"].startswith("target refused")
