from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import POSTGRESQL_ONLY, Base, ScaledDecimal, TimestampedVersioned


def sku_key(sku: str) -> str:
    """SKUs are unique regardless of case; the original spelling is kept for display."""
    return sku.casefold()


class Product(TimestampedVersioned, Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), nullable=False)
    sku_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    category_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="RESTRICT"), nullable=True
    )
    unit_of_measure: Mapped[str] = mapped_column(String(16), nullable=False, default="each")
    reorder_point: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reorder_quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Moving-average unit cost, updated by receipts (and their reversals) under the level lock.
    average_cost: Mapped[Decimal] = mapped_column(
        ScaledDecimal(6), nullable=False, default=Decimal(0)
    )

    __table_args__ = (
        CheckConstraint("reorder_point >= 0", name="reorder_point_non_negative"),
        CheckConstraint("reorder_quantity >= 0", name="reorder_quantity_non_negative"),
        # One index per sort order (ties broken by id) and per filter; the unique
        # sku_key index serves the SKU sort.
        Index("ix_products_name_id", "name", "id"),
        Index("ix_products_created_at_id", "created_at", "id"),
        Index("ix_products_category_id_name_id", "category_id", "name", "id"),
        Index("ix_products_is_active_name_id", "is_active", "name", "id"),
        # `q` is a case-insensitive substring of SKU or name (ILIKE): trigram indexes on
        # PostgreSQL; SQLite scans.
        Index(
            "ix_products_name_trgm",
            "name",
            postgresql_using="gin",
            info={POSTGRESQL_ONLY: True},
            postgresql_ops={"name": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_products_sku_trgm",
            "sku",
            postgresql_using="gin",
            info={POSTGRESQL_ONLY: True},
            postgresql_ops={"sku": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        # Never hand a deleted row's id (and so its ETag) to a new row.
        {"sqlite_autoincrement": True},
    )


@event.listens_for(Product, "before_insert")
@event.listens_for(Product, "before_update")
def _maintain_sku_key(_mapper, _connection, target: Product) -> None:
    target.sku_key = sku_key(target.sku)
