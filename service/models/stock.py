"""The stock ledger: documents, their append-only movements, and the levels they sum to."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.formats import utcnow
from service.models.base import Base, ScaledDecimal, UTCDateTime

# Unit costs: exact decimals with 4 places (up to 10^12 per the contract).
Money = ScaledDecimal(4)
# Moving-average unit costs carry 6 places, like products.average_cost.
AverageCost = ScaledDecimal(6)
# Document and movement ids (and every column holding one) are 64-bit: at a billion
# movements a year, 32 bits last about two. SQLite's INTEGER is already 64-bit, and only
# "INTEGER PRIMARY KEY" is the autoincrementing rowid, so it keeps that spelling there.
LedgerId = BigInteger().with_variant(Integer, "sqlite")


class StockDocument(Base):
    """One business event (a receipt, shipment, transfer, adjustment or reversal)."""

    __tablename__ = "stock_documents"

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(100), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    location_id: Mapped[int | None] = mapped_column(
        ForeignKey("locations.id", ondelete="RESTRICT"), nullable=True
    )
    to_location_id: Mapped[int | None] = mapped_column(
        ForeignKey("locations.id", ondelete="RESTRICT"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # Who wrote it: the user, or the API key (and through it the user who created the key).
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), nullable=True
    )
    created_by_api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="RESTRICT"), nullable=True
    )

    movements: Mapped[list[StockMovement]] = relationship(
        back_populates="document", order_by="StockMovement.id", lazy="selectin"
    )

    __table_args__ = (
        CheckConstraint(
            "kind IN ('receipt', 'shipment', 'transfer', 'adjustment', 'reversal')",
            name="kind_known",
        ),
        Index("ix_stock_documents_created_at_id", "created_at", "id"),
        {"sqlite_autoincrement": True},
    )


class StockMovement(Base):
    """One signed change of on-hand for a (product, location). Never updated or deleted."""

    __tablename__ = "stock_movements"

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True)
    document_id: Mapped[int] = mapped_column(
        LedgerId, ForeignKey("stock_documents.id", ondelete="RESTRICT"), nullable=False
    )
    # Position of the request line this movement came from (both legs of a transfer share it).
    line_no: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="RESTRICT"), nullable=False
    )
    location_id: Mapped[int] = mapped_column(
        ForeignKey("locations.id", ondelete="RESTRICT"), nullable=False
    )
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    balance_after: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_cost: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    # The product's moving-average unit cost right after this movement was posted: it
    # changes only on receipts and their reversals, so valuation at any past moment is the
    # latest movement's value (reports.py).
    average_cost_after: Mapped[Decimal] = mapped_column(AverageCost, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    reference: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # The movement this one compensates; unique, so nothing is reversed twice.
    reversal_of: Mapped[int | None] = mapped_column(
        LedgerId,
        ForeignKey("stock_movements.id", ondelete="RESTRICT"),
        nullable=True,
        unique=True,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), nullable=True
    )
    created_by_api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="RESTRICT"), nullable=True
    )

    document: Mapped[StockDocument] = relationship(back_populates="movements")

    __table_args__ = (
        CheckConstraint(
            "kind IN ('receipt', 'shipment', 'transfer_out', 'transfer_in', 'adjustment', "
            "'reversal')",
            name="kind_known",
        ),
        CheckConstraint("balance_after >= 0", name="balance_never_negative"),
        CheckConstraint(
            "reason IS NULL OR reason IN ('count', 'damage', 'loss', 'found', 'other')",
            name="reason_known",
        ),
        # Movement lists are newest first, optionally per product / location / kind.
        Index("ix_stock_movements_created_at_id", "created_at", "id"),
        # Per product it also carries the average cost, so the valuation report finds a
        # product's cost at any moment with one index-only probe.
        Index(
            "ix_stock_movements_product_id_created_at_id_average_cost_after",
            "product_id",
            "created_at",
            "id",
            "average_cost_after",
        ),
        Index("ix_stock_movements_location_id_created_at_id", "location_id", "created_at", "id"),
        Index("ix_stock_movements_kind_created_at_id", "kind", "created_at", "id"),
        Index("ix_stock_movements_reference", "reference"),
        Index("ix_stock_movements_document_id", "document_id"),
        {"sqlite_autoincrement": True},
    )


class StockLevel(Base):
    """On-hand of one product at one location: always the sum of its movements."""

    __tablename__ = "stock_levels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="RESTRICT"), nullable=False
    )
    location_id: Mapped[int] = mapped_column(
        ForeignKey("locations.id", ondelete="RESTRICT"), nullable=False
    )
    on_hand: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )

    __table_args__ = (
        UniqueConstraint("product_id", "location_id"),
        CheckConstraint("on_hand >= 0", name="on_hand_never_negative"),
        Index("ix_stock_levels_location_id_product_id", "location_id", "product_id"),
        {"sqlite_autoincrement": True},
    )


class StockCheckpoint(Base):
    """A closed period boundary: the ledger summed up to ``at`` (inclusive), kept for reports.

    Derived data, never a source of truth: its balances equal the ledger's sums up to ``at``
    (``storekeeper stock verify`` checks it), and the valuation report starts from the latest
    checkpoint at or before its moment instead of summing the whole ledger
    (service/domain/checkpoints.py).
    """

    __tablename__ = "stock_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Every movement with created_at <= at is in it, none after.
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, unique=True)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # What it holds: (product, location) pairs with stock, and their units.
    pairs: Mapped[int] = mapped_column(Integer, nullable=False)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = ({"sqlite_autoincrement": True},)


class StockCheckpointBalance(Base):
    """One (product, location) held at a checkpoint: its on-hand and its product's cost then."""

    __tablename__ = "stock_checkpoint_balances"

    checkpoint_id: Mapped[int] = mapped_column(
        ForeignKey("stock_checkpoints.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign keys to products and locations: only pairs with movements appear, and the
    # ledger's own keys already keep those rows from being deleted (a key here would make
    # every product delete scan this table).
    product_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    on_hand: Mapped[int] = mapped_column(Integer, nullable=False)
    # The product's moving-average cost at the checkpoint (the same on each of its rows).
    average_cost: Mapped[Decimal] = mapped_column(AverageCost, nullable=False)

    __table_args__ = (CheckConstraint("on_hand > 0", name="on_hand_positive"),)
