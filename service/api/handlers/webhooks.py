"""/api/v1/webhooks: endpoints that receive the event feed, and their deliveries (admins)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from service import db
from service.api import transaction
from service.api.conditional import not_modified, require_match, resource_response
from service.api.pagination import paginated, sort_keys
from service.api.responses import NO_STORE, empty_response, json_response
from service.config import WebhookSettings
from service.domain import webhooks
from service.formats import format_timestamp
from service.models import WebhookDelivery, WebhookEndpoint
from service.problems import NotFoundProblem
from service.schemas.webhook import (
    ENDPOINT_ROWS,
    WebhookDeliverySchema,
    WebhookEndpointSchema,
    endpoint_created_body,
)

SORTS = sort_keys(("created_at", WebhookEndpoint.created_at, "datetime"))
NEWEST_FIRST = sort_keys(("created_at", WebhookDelivery.created_at, "datetime"))["-created_at"]
DELIVERIES = WebhookDeliverySchema(many=True)


def _settings() -> WebhookSettings:
    return current_app.extensions[transaction.WEBHOOK_SETTINGS_KEY]


def _location(endpoint: WebhookEndpoint) -> str:
    return f"/api/v1/webhooks/{endpoint.id}"


def _endpoint(webhook_id: int) -> WebhookEndpoint:
    return transaction.get_or_404(WebhookEndpoint, webhook_id, "Webhook endpoint")


@transaction.unit_of_work
def list_webhooks(limit: int = 50, cursor: str | None = None):
    return paginated(
        ENDPOINT_ROWS.select(),
        sort=SORTS["created_at"],
        id_column=WebhookEndpoint.id,
        limit=limit,
        cursor=cursor,
        dump=ENDPOINT_ROWS.dump,
    )


@transaction.unit_of_work
def create_webhook(body: dict):
    endpoint, secret = webhooks.create_endpoint(
        db.session(), body, allow_private=_settings().allow_private_targets
    )
    body, status, headers = resource_response(
        endpoint_created_body(endpoint, secret), endpoint, 201, _location(endpoint)
    )
    return body, status, {**headers, **NO_STORE}


@transaction.unit_of_work
def get_webhook(webhook_id: int):
    endpoint = _endpoint(webhook_id)
    return not_modified(endpoint) or resource_response(
        WebhookEndpointSchema().dump(endpoint), endpoint
    )


@transaction.unit_of_work
def update_webhook(webhook_id: int, body: dict):
    endpoint = _endpoint(webhook_id)
    require_match(endpoint)
    webhooks.update_endpoint(
        db.session(), endpoint, body, allow_private=_settings().allow_private_targets
    )
    return resource_response(WebhookEndpointSchema().dump(endpoint), endpoint)


@transaction.unit_of_work
def delete_webhook(webhook_id: int):
    endpoint = _endpoint(webhook_id)
    require_match(endpoint)
    db.session().delete(endpoint)
    return empty_response()


@transaction.unit_of_work
def list_webhook_deliveries(
    webhook_id: int, limit: int = 50, cursor: str | None = None, status: str | None = None
):
    _endpoint(webhook_id)
    stmt = select(WebhookDelivery.id, WebhookDelivery.created_at).where(
        WebhookDelivery.endpoint_id == webhook_id
    )
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return paginated(
        stmt,
        sort=NEWEST_FIRST,
        id_column=WebhookDelivery.id,
        limit=limit,
        cursor=cursor,
        dump=_deliveries,
    )


def _deliveries(rows) -> list[dict]:
    """The page's deliveries with their attempts: two statements, whatever the page size."""
    ids = [row.id for row in rows]
    loaded = db.session().scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .options(selectinload(WebhookDelivery.attempts))
    )
    by_id = {delivery.id: delivery for delivery in loaded}
    return DELIVERIES.dump([by_id[i] for i in ids])


@transaction.unit_of_work
def redeliver_webhook_delivery(webhook_id: int, delivery_id: int):
    session = db.session()
    endpoint = _endpoint(webhook_id)
    original = session.get(WebhookDelivery, delivery_id)
    if original is None or original.endpoint_id != webhook_id:
        raise NotFoundProblem("Webhook delivery", delivery_id)
    delivery = webhooks.redeliver(session, endpoint, original)
    return json_response(WebhookDeliverySchema().dump(delivery), 202)


@transaction.unit_of_work
def rotate_webhook_secret(webhook_id: int, body: dict | None = None):
    endpoint = _endpoint(webhook_id)
    overlap = (body or {}).get("overlap_seconds", webhooks.DEFAULT_OVERLAP_S)
    secret = webhooks.rotate_secret(endpoint, overlap)
    db.session().flush()
    expires = endpoint.previous_secret_expires_at
    answer = {
        "secret": secret,
        "previous_secret_expires_at": format_timestamp(expires) if expires else None,
    }
    return json_response(answer, 200, NO_STORE)
