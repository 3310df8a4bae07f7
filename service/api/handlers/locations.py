"""/api/v1/locations: warehouses, rooms and bins that hold stock."""

from __future__ import annotations

from sqlalchemy import func, or_, select

from service import db
from service.api import transaction
from service.api.conditional import not_modified, require_match, resource_response
from service.api.pagination import paginated, sort_keys
from service.api.responses import empty_response
from service.domain.catalog import find_clash
from service.models import Location, StockDocument, StockLevel, StockMovement
from service.models.location import code_key
from service.problems import ConflictProblem
from service.schemas.location import LocationInputSchema, LocationSchema
from service.schemas.rows import RowShape

LOCATION_ROWS = RowShape(LocationSchema(), Location)
SORTS = sort_keys(
    ("code", Location.code_key),
    ("name", Location.name),
    ("created_at", Location.created_at, "datetime"),
)


def _location(location: Location) -> str:
    return f"/api/v1/locations/{location.id}"


def _check_unique_code(location: Location) -> None:
    clash = find_clash(Location.code_key, code_key(location.code), location)
    if clash is not None:
        raise ConflictProblem(
            "duplicate-location-code",
            f"Location code {location.code!r} is already used by location {clash} (codes "
            "are unique regardless of case).",
            conflicting_id=clash,
        )


def _count(stmt) -> int:
    return db.session().scalar(stmt) or 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@transaction.unit_of_work
def list_locations(
    limit: int = 50,
    cursor: str | None = None,
    is_active: bool | None = None,
    q: str | None = None,
    sort: str = "code",
):
    stmt = LOCATION_ROWS.select()
    if is_active is not None:
        stmt = stmt.where(Location.is_active.is_(is_active))
    if q:
        stmt = stmt.where(
            or_(
                Location.code.icontains(q, autoescape=True),
                Location.name.icontains(q, autoescape=True),
            )
        )
    return paginated(
        stmt,
        sort=SORTS[sort],
        id_column=Location.id,
        limit=limit,
        cursor=cursor,
        dump=LOCATION_ROWS.dump,
    )


@transaction.unit_of_work
def create_location(body: dict):
    session = db.session()
    location = LocationInputSchema().load(body, session=session)
    _check_unique_code(location)
    session.add(location)
    session.flush()
    return resource_response(LocationSchema().dump(location), location, 201, _location(location))


@transaction.unit_of_work
def get_location(location_id: int):
    location = transaction.get_or_404(Location, location_id, "Location")
    return not_modified(location) or resource_response(LocationSchema().dump(location), location)


@transaction.unit_of_work
def update_location(location_id: int, body: dict):
    session = db.session()
    location = transaction.get_or_404(Location, location_id, "Location")
    require_match(location)
    LocationInputSchema().load(body, instance=location, partial=True, session=session)
    _check_unique_code(location)
    session.flush()
    return resource_response(LocationSchema().dump(location), location)


@transaction.unit_of_work
def delete_location(location_id: int):
    session = db.session()
    location = transaction.get_or_404(Location, location_id, "Location")
    require_match(location)
    movements = _count(
        select(func.count())
        .select_from(StockMovement)
        .where(StockMovement.location_id == location_id)
    )
    levels = _count(
        select(func.count()).select_from(StockLevel).where(StockLevel.location_id == location_id)
    )
    documents = _count(
        select(func.count())
        .select_from(StockDocument)
        .where(
            or_(
                StockDocument.location_id == location_id,
                StockDocument.to_location_id == location_id,
            )
        )
    )
    if movements or levels or documents:
        raise ConflictProblem(
            "location-in-use",
            f"Location {location_id} has stock history ({_plural(movements, 'stock movement')}, "
            f"{_plural(levels, 'stock level')}, {_plural(documents, 'stock document')}); "
            "the ledger is permanent, so archive it with is_active=false instead.",
            blocking={"movements": movements, "stock_levels": levels, "documents": documents},
        )
    session.delete(location)
    return empty_response()
