"""The event feed: what happened, written in the transaction that made it happen.

Writers call :func:`record` with an event's type and data; changes to products, categories
and locations made through the ORM are recorded by a flush hook, so every path that makes
them (the API, the product import, the CLI) emits the same events. Nothing is written until
the transaction commits, and a transaction that rolls back emits nothing.

Sequence numbers are taken as the very last step before COMMIT: one upsert of the one-row
``event_sequence`` counter hands the transaction its numbers and locks that row until the
commit ends. Transactions that write events therefore commit one at a time, in the order
of their numbers, so:

- sequences are gap-free (a transaction that fails gives its numbers back with the counter
  update it rolls back), and
- a reader that has seen sequence N never later finds an event with a smaller one: whatever
  held a smaller number had committed before N was handed out.

The cost is that event writers serialise on the counter for the length of their commit (on
SQLite every writer is serialised anyway).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, insert, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.formats import utcnow
from service.models import Category, Location, Product
from service.models.event import Event, EventSequence

DOCUMENT_POSTED = "stock.document.posted"
MOVEMENT_REVERSED = "stock.movement.reversed"
LEVEL_LOW = "stock.level.low"
LEVEL_RESTOCKED = "stock.level.restocked"

# Every type the feed carries, in the order the spec lists them.
EVENT_TYPES = (
    DOCUMENT_POSTED,
    MOVEMENT_REVERSED,
    LEVEL_LOW,
    LEVEL_RESTOCKED,
    "product.created",
    "product.updated",
    "product.archived",
    "product.deleted",
    "category.created",
    "category.updated",
    "category.deleted",
    "location.created",
    "location.updated",
    "location.archived",
    "location.deleted",
)

_PENDING = "storekeeper.pending_events"
COUNTER_ID = 1
EVENTS = Event.__table__
COUNTER = EventSequence.__table__


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


@dataclass
class _Pending:
    """The events a transaction has recorded so far, in order.

    Catalog changes are keyed by (resource, id) so that several flushes of one row in one
    transaction make one event, its data rendered from the row as it is at commit.
    """

    events: list[tuple[str, Any]] = field(default_factory=list)
    catalog: dict[tuple[str, int], int] = field(default_factory=dict)


def _pending(session: Session) -> _Pending:
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = _Pending()
    return pending


def record(session: Session, event_type: str, data: dict[str, Any]) -> None:
    """Emit an event with the transaction of ``session``, when (and only if) it commits."""
    _pending(session).events.append((event_type, data))


# --- catalog changes, seen by the ORM ------------------------------------------------------


def _renderers() -> dict[type, tuple[str, Callable[[Any], dict[str, Any]]]]:
    # Imported here: the schemas import the models, and this module is imported with them.
    from service.schemas.category import CategorySchema
    from service.schemas.location import LocationSchema
    from service.schemas.product import ProductSchema

    return {
        Product: ("product", ProductSchema().dump),
        Category: ("category", CategorySchema().dump),
        Location: ("location", LocationSchema().dump),
    }


_RENDERERS: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {}


def _renderer(instance: Any) -> tuple[str, Callable[[Any], dict[str, Any]]] | None:
    if not _RENDERERS:
        _RENDERERS.update(_renderers())
    return _RENDERERS.get(type(instance))


def _archived(instance: Any) -> bool:
    history = inspect(instance).attrs.is_active.history
    return bool(history.deleted) and history.deleted[0] is True and instance.is_active is False


def _note_catalog(pending: _Pending, resource: str, row_id: int, change: str, item: Any) -> None:
    key = (resource, row_id)
    index = pending.catalog.get(key)
    if index is None:
        pending.catalog[key] = len(pending.events)
        pending.events.append((f"{resource}.{change}", item))
        return
    earlier, _ = pending.events[index]
    earlier_change = earlier.rpartition(".")[2]
    if change == "deleted" or earlier_change == "created":
        # Created and changed in one transaction is still "created", with its final data.
        change = "deleted" if change == "deleted" else "created"
    elif earlier_change == "archived" and change == "updated":
        change = "archived"
    pending.events[index] = (f"{resource}.{change}", item)


@event.listens_for(Session, "after_flush")
def _collect_catalog_changes(session: Session, _flush_context: Any) -> None:
    pending = None
    for instance, change in (
        *((instance, "created") for instance in session.new),
        *((instance, "updated") for instance in session.dirty),
        *((instance, "deleted") for instance in session.deleted),
    ):
        renderer = _renderer(instance)
        if renderer is None:
            continue
        if change == "updated":
            if not session.is_modified(instance, include_collections=False):
                continue
            if getattr(instance, "is_active", True) is False and _archived(instance):
                change = "archived"
        resource, dump = renderer
        pending = pending or _pending(session)
        # A deleted row is rendered now, while its attributes are still loaded; the others
        # at commit, as they are then.
        item = dump(instance) if change == "deleted" else instance
        _note_catalog(pending, resource, instance.id, change, item)


# --- numbering and writing, at commit ------------------------------------------------------


@event.listens_for(Session, "before_commit")
def _write_pending_events(session: Session) -> None:
    if session.new or session.dirty or session.deleted:
        session.flush()  # catalog changes not flushed yet are recorded by the hook above
    pending = session.info.pop(_PENDING, None)
    if pending is None or not pending.events:
        return
    rows = []
    now = utcnow()
    for event_type, item in pending.events:
        if not isinstance(item, dict):
            _, dump = _renderer(item)
            item = dump(item)
        rows.append({"id": new_event_id(), "type": event_type, "created_at": now, "data": item})
    connection = session.connection()
    upsert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    stmt = upsert(COUNTER).values(id=COUNTER_ID, last_sequence=len(rows))
    last = connection.execute(
        stmt.on_conflict_do_update(
            index_elements=[COUNTER.c.id],
            set_={"last_sequence": COUNTER.c.last_sequence + stmt.excluded.last_sequence},
        ).returning(COUNTER.c.last_sequence)
    ).scalar_one()
    first = last - len(rows) + 1
    for offset, row in enumerate(rows):
        row["sequence"] = first + offset
    connection.execute(insert(EVENTS), rows)


@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_commit")
def _forget_pending_events(session: Session) -> None:
    session.info.pop(_PENDING, None)
