"""/api/v1/events: the ordered feed of what happened (service/domain/events.py writes it)."""

from __future__ import annotations

from service.api import transaction
from service.api.pagination import Keyset, paginated
from service.models import Event
from service.schemas.webhook import EVENT_ROWS

FEED_ORDER = Keyset.of_ids("sequence", Event.sequence)


@transaction.unit_of_work
def list_events(
    after: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
    type: list[str] | None = None,
):
    stmt = EVENT_ROWS.select()
    if after is not None:
        stmt = stmt.where(Event.sequence > after)
    if type:
        stmt = stmt.where(Event.type.in_(type))
    return paginated(stmt, sort=FEED_ORDER, limit=limit, cursor=cursor, dump=EVENT_ROWS.dump)
