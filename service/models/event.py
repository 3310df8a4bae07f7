"""The event feed and the webhook endpoints, deliveries and attempts that carry it out.

``events`` is a transactional outbox that is also the public feed: each row is written in the
transaction of the change it describes, and its ``sequence`` is taken from the one-row
``event_sequence`` counter as the last step before that transaction commits (see
service/domain/events.py), so sequences are gap-free and increase in commit order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.formats import utcnow
from service.models.base import Base, TimestampedVersioned, UTCDateTime
from service.models.stock import LedgerId

PENDING_IN_ORDER = text("status = 'pending' AND NOT redelivery")
# JSONB on PostgreSQL (smaller, and what operators query), JSON text on SQLite.
Document = JSON().with_variant(JSONB(), "postgresql")


class EventSequence(Base):
    """The feed's counter: one row, whose lock orders the commits of event writers."""

    __tablename__ = "event_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class Event(Base):
    """Something that happened, as the feed and every webhook delivery carry it."""

    __tablename__ = "events"

    sequence: Mapped[int] = mapped_column(LedgerId, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(Document, nullable=False)

    __table_args__ = (
        # The feed filtered by type, and retention's cut by age.
        Index("ix_events_type_sequence", "type", "sequence"),
        Index("ix_events_created_at", "created_at"),
    )


class WebhookEndpoint(TimestampedVersioned, Base):
    """A receiver of events: where, which types, and how far through the feed it is."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # Exact event types; empty means every type.
    event_types: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The signing secrets, encrypted (service/domain/secrets.py). During a rotation's overlap
    # the previous one signs too, until previous_secret_expires_at.
    secret_ciphertext: Mapped[str] = mapped_column(Text, nullable=False)
    previous_secret_ciphertext: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), nullable=True
    )
    # Every event up to this sequence has been delivered (or was not of its types).
    delivered_through: Mapped[int] = mapped_column(LedgerId, nullable=False, default=0)
    # When the endpoint's oldest undelivered event first failed (cleared by a success).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_webhook_endpoints_created_at_id", "created_at", "id"),
        {"sqlite_autoincrement": True},
    )


class WebhookDelivery(Base):
    """One event on its way to one endpoint: pending until it succeeds or is given up.

    In-order deliveries (``redelivery`` false) are made one at a time per endpoint, oldest
    event first; a redelivery an admin asked for goes out beside them.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    # Events expire from the feed; a delivery keeps what it needs to be listed.
    event_sequence: Mapped[int] = mapped_column(LedgerId, nullable=False)
    event_id: Mapped[str] = mapped_column(String(40), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    redelivery: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A worker holds a delivery while it sends it; a lease that runs out (the worker died)
    # lets another send it again.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    endpoint: Mapped[WebhookEndpoint] = relationship(back_populates="deliveries")
    attempts: Mapped[list[WebhookAttempt]] = relationship(
        order_by="WebhookAttempt.id", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        # One in-order delivery pending per endpoint: two workers cannot both plan one.
        Index(
            "uq_webhook_deliveries_pending_in_order",
            "endpoint_id",
            unique=True,
            sqlite_where=PENDING_IN_ORDER,
            postgresql_where=PENDING_IN_ORDER,
        ),
        # Ids are shown to admins: never reused after retention deletes old rows.
        {"sqlite_autoincrement": True},
    )


class WebhookAttempt(Base):
    """One HTTP request of a delivery and what came back."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False, index=True
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    succeeded: Mapped[bool] = mapped_column(Boolean, nullable=False)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)

    __table_args__ = ({"sqlite_autoincrement": True},)
