"""Webhook endpoints: registering, changing, rotating secrets, asking for a redelivery.

Delivery itself is the worker's (service/domain/delivery.py). A new endpoint starts at the
end of the feed: it receives the events committed after it was registered.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.domain import secrets, webhook_targets
from service.formats import utcnow
from service.models import Event, EventSequence, WebhookDelivery, WebhookEndpoint
from service.problems import ConflictProblem, UnprocessableProblem, pointer_error

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
DEFAULT_OVERLAP_S = 86400


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def check_target(url: str, *, allow_private: bool) -> None:
    """422 unless ``url`` may receive webhooks (see service/domain/webhook_targets.py)."""
    try:
        webhook_targets.check(url, allow_private=allow_private)
    except webhook_targets.TargetRefused as exc:
        raise UnprocessableProblem(
            f"The URL cannot receive webhooks: {exc}.",
            errors=[pointer_error("/url", str(exc))],
        ) from exc


def create_endpoint(
    session: Session, body: dict[str, Any], *, allow_private: bool
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; it and its signing secret (shown once)."""
    check_target(body["url"], allow_private=allow_private)
    secret = new_signing_secret()
    endpoint = WebhookEndpoint(
        url=body["url"],
        description=body.get("description"),
        event_types=list(body.get("event_types") or []),
        enabled=True,
        secret_ciphertext=secrets.encrypt(secret),
        delivered_through=session.scalar(select(EventSequence.last_sequence)) or 0,
    )
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def update_endpoint(
    session: Session, endpoint: WebhookEndpoint, body: dict[str, Any], *, allow_private: bool
) -> None:
    if "url" in body:
        check_target(body["url"], allow_private=allow_private)
        endpoint.url = body["url"]
    if "description" in body:
        endpoint.description = body["description"]
    if "event_types" in body:
        endpoint.event_types = list(body["event_types"])
    if body.get("enabled") is True and not endpoint.enabled:
        # Resume with the oldest undelivered event, retried at once.
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.failing_since = None
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "pending")
            .values(next_attempt_at=utcnow())
        )
    elif body.get("enabled") is False:
        endpoint.enabled = False
        endpoint.disabled_reason = None
    session.flush()


def rotate_secret(endpoint: WebhookEndpoint, overlap_s: int) -> str:
    """A new signing secret; the current one keeps signing beside it for ``overlap_s``."""
    secret = new_signing_secret()
    if overlap_s > 0:
        endpoint.previous_secret_ciphertext = endpoint.secret_ciphertext
        endpoint.previous_secret_expires_at = utcnow() + timedelta(seconds=overlap_s)
    else:
        endpoint.previous_secret_ciphertext = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_ciphertext = secrets.encrypt(secret)
    return secret


def redeliver(session: Session, endpoint: WebhookEndpoint, original: WebhookDelivery):
    """Queue ``original``'s event again, outside the endpoint's in-order stream."""
    if not endpoint.enabled:
        raise ConflictProblem(
            "webhook-disabled",
            f"Webhook endpoint {endpoint.id} is disabled; enable it first.",
        )
    if session.get(Event, original.event_sequence) is None:
        raise ConflictProblem(
            "event-expired",
            f"Event {original.event_id} has left the feed (retention); it cannot be sent again.",
        )
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_sequence=original.event_sequence,
        event_id=original.event_id,
        event_type=original.event_type,
        redelivery=True,
        status="pending",
        attempt_count=0,
        next_attempt_at=utcnow(),
    )
    session.add(delivery)
    session.flush()
    return delivery
