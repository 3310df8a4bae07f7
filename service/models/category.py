from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import POSTGRESQL_ONLY, Base, TimestampedVersioned


def sibling_key(parent_id: int | None, name: str) -> str:
    """Unique among siblings, case-insensitively; '0' stands for the root level.

    A plain UNIQUE(parent_id, name) would let two roots share a name, because both
    backends treat NULLs as distinct, so uniqueness lives in one derived column.
    """
    return f"{parent_id or 0}/{name.casefold()}"


class Category(TimestampedVersioned, Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="RESTRICT"), nullable=True
    )
    sibling_key: Mapped[str] = mapped_column(String(400), nullable=False, unique=True)

    __table_args__ = (
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        Index("ix_categories_parent_id_name_id", "parent_id", "name", "id"),
        Index("ix_categories_name_id", "name", "id"),
        # `q` is a case-insensitive substring (ILIKE): trigram index on PostgreSQL.
        Index(
            "ix_categories_name_trgm",
            "name",
            postgresql_using="gin",
            info={POSTGRESQL_ONLY: True},
            postgresql_ops={"name": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        # Never hand a deleted row's id (and so its ETag) to a new row.
        {"sqlite_autoincrement": True},
    )


@event.listens_for(Category, "before_insert")
@event.listens_for(Category, "before_update")
def _maintain_sibling_key(_mapper, _connection, target: Category) -> None:
    target.sibling_key = sibling_key(target.parent_id, target.name)
