"""SQLAlchemy models; importing this package registers every table on ``Base.metadata``."""

from service.models.auth import AccessToken, ApiKey, OutboxMessage, PasswordResetToken, User
from service.models.base import Base
from service.models.category import Category
from service.models.event import (
    Event,
    EventSequence,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from service.models.idempotency import IdempotencyRecord
from service.models.location import Location
from service.models.product import Product
from service.models.stock import (
    StockCheckpoint,
    StockCheckpointBalance,
    StockDocument,
    StockLevel,
    StockMovement,
)

__all__ = [
    "AccessToken",
    "ApiKey",
    "Base",
    "Category",
    "Event",
    "EventSequence",
    "IdempotencyRecord",
    "Location",
    "OutboxMessage",
    "PasswordResetToken",
    "Product",
    "StockCheckpoint",
    "StockCheckpointBalance",
    "StockDocument",
    "StockLevel",
    "StockMovement",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
