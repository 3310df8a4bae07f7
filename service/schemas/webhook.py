"""Output shapes of events, webhook endpoints and their deliveries."""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from service.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.schemas.base import OutputSchema
from service.schemas.rows import RowShape


class EventSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = Event
        fields = ("sequence", "id", "type", "created_at", "data")

    data = fields.Raw()


class WebhookEndpointSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = WebhookEndpoint
        fields = (
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_reason",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        )

    event_types = fields.List(fields.String())


class WebhookAttemptSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = WebhookAttempt
        fields = ("started_at", "duration_ms", "succeeded", "response_status", "error")


class WebhookDeliverySchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = WebhookDelivery
        fields = (
            "id",
            "event_id",
            "event_type",
            "sequence",
            "redelivery",
            "status",
            "attempt_count",
            "next_attempt_at",
            "created_at",
            "completed_at",
            "attempts",
        )

    sequence = fields.Integer(attribute="event_sequence")
    attempts = fields.List(fields.Nested(WebhookAttemptSchema))


EVENT_ROWS = RowShape(EventSchema(), Event)
ENDPOINT_ROWS = RowShape(WebhookEndpointSchema(), WebhookEndpoint)


def endpoint_created_body(endpoint: WebhookEndpoint, secret: str) -> dict[str, Any]:
    return {**WebhookEndpointSchema().dump(endpoint), "secret": secret}
