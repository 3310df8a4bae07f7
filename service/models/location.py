from __future__ import annotations

from sqlalchemy import Boolean, Index, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, TimestampedVersioned


def code_key(code: str) -> str:
    """Location codes are unique regardless of case; the original spelling is displayed."""
    return code.casefold()


class Location(TimestampedVersioned, Base):
    """A warehouse, room or bin that holds stock."""

    __tablename__ = "locations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), nullable=False)
    code_key: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    __table_args__ = (
        # Sorts (ties by id) and the is_active filter; the unique code_key serves the code sort.
        Index("ix_locations_name_id", "name", "id"),
        Index("ix_locations_created_at_id", "created_at", "id"),
        Index("ix_locations_is_active_code_key", "is_active", "code_key"),
        {"sqlite_autoincrement": True},
    )


@event.listens_for(Location, "before_insert")
@event.listens_for(Location, "before_update")
def _maintain_code_key(_mapper, _connection, target: Location) -> None:
    target.code_key = code_key(target.code)
