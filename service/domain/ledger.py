"""Posting stock documents to the append-only ledger, correctly under concurrency.

Every document follows the same steps inside the request's one transaction:

1. lock the affected product rows (ascending id; they must exist and, for new documents, be
   active), then the affected stock-level rows (ascending product, location), creating
   missing levels at zero. Every writer locks a product before any of its levels, so
   concurrent documents queue on the product rows instead of deadlocking. (On SQLite the
   write transaction is BEGIN IMMEDIATE: writers are serialised anyway.)
2. apply the lines in order to the locked balances; collect every line that would go below
   zero and refuse the whole document (409 ``insufficient-stock``) if there is any;
3. write the document, one movement per line (two for a transfer line) with its balance
   after, update the levels and, for receipts and their reversals, the moving-average cost.
   Every movement records the product's average cost right after it
   (``average_cost_after``), so the ledger alone values stock at any past moment.

Levels are only ever changed here, in the same transaction as their movements, so each
level always equals the sum of its movements (``storekeeper stock verify`` checks it).

Every document runs through here, so it is written with Core statements, not the ORM's unit
of work: one statement per step (the products, the levels with their products' totals, the
document, all its movements with ``RETURNING``, the changed levels, the changed costs) and
the answer is built from the rows the statements returned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import case, func, insert, literal, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.domain import events
from service.formats import utcnow
from service.models import Location, Product, StockDocument, StockLevel, StockMovement
from service.problems import (
    ConflictProblem,
    InsufficientStockProblem,
    NotFoundProblem,
    UnprocessableProblem,
    pointer_error,
)
from service.schemas.stock import document_body, low_stock_alert

# stock_levels.on_hand is a 32-bit integer; refuse a receipt that would overflow it.
MAX_ON_HAND = 2_000_000_000
COST_PLACES = Decimal("0.000001")

LevelKey = tuple[int, int]  # (product_id, location_id)


@dataclass
class Change:
    """One movement to write: a signed quantity of a product at a location."""

    line_no: int
    kind: str
    product_id: int
    location_id: int
    quantity: int
    unit_cost: Decimal | None = None
    reason: str | None = None
    note: str | None = None
    reversal_of: int | None = None
    # The request field a shortage on this change is reported against.
    pointer: str = ""
    # Adjustments by count: the counted quantity; the delta is computed under the lock.
    counted: int | None = None


@dataclass
class Posting:
    kind: str
    changes: list[Change]
    reference: str | None = None
    note: str | None = None
    location_id: int | None = None
    to_location_id: int | None = None
    # Who writes it: a user (with an access token) or an API key (and its creator).
    created_by_user_id: int | None = None
    created_by_api_key_id: int | None = None
    # New documents take only active products; a reversal may compensate an archived one's.
    require_active: bool = True


# --- validation of the references a request makes -----------------------------------------


def require_location(session: Session, location_id: int, pointer: str) -> Location:
    location = session.get(Location, location_id)
    if location is None:
        raise UnprocessableProblem(
            f"Location {location_id} does not exist.",
            errors=[pointer_error(pointer, "No location has this id.")],
        )
    if not location.is_active:
        raise UnprocessableProblem(
            f"Location {location_id} ({location.code}) is archived and takes no new stock.",
            errors=[pointer_error(pointer, "The location is archived.")],
        )
    return location


# --- locking ---------------------------------------------------------------------------------


PRODUCTS = Product.__table__
LEVELS = StockLevel.__table__
DOCUMENTS = StockDocument.__table__
MOVEMENTS = StockMovement.__table__


def _lock_products(session: Session, product_ids: Iterable[int]) -> dict[int, Any]:
    """Lock the products' rows (ascending id); their current rows by id."""
    stmt = (
        select(
            PRODUCTS.c.id,
            PRODUCTS.c.sku,
            PRODUCTS.c.name,
            PRODUCTS.c.is_active,
            PRODUCTS.c.average_cost,
            PRODUCTS.c.reorder_point,
            PRODUCTS.c.reorder_quantity,
        )
        .where(PRODUCTS.c.id.in_(sorted(set(product_ids))))
        .order_by(PRODUCTS.c.id)
        .with_for_update()
    )
    return {row.id: row for row in session.connection().execute(stmt)}


def _require_products(changes: Sequence[Change], products: dict[int, Any], active: bool) -> None:
    """Every line names an existing (and, if ``active``, active) product; report every line
    that does not."""
    errors = []
    reported = set()
    for change in changes:
        product = products.get(change.product_id)
        if product is not None and (product.is_active or not active):
            continue
        if change.line_no in reported:  # the two legs of a transfer line
            continue
        reported.add(change.line_no)
        reason = "No product has this id." if product is None else "The product is archived."
        errors.append(pointer_error(f"/lines/{change.line_no}/product_id", reason))
    if errors:
        raise UnprocessableProblem(
            "Some lines name products that do not exist or are archived; see errors[].",
            errors=errors,
        )


def _select_levels(keys: Sequence[LevelKey]):
    """The levels of ``keys``, locked, each with its product's total over every location."""
    others = LEVELS.alias("others")
    product_total = (
        select(func.coalesce(func.sum(others.c.on_hand), 0))
        .where(others.c.product_id == LEVELS.c.product_id)
        .scalar_subquery()
    )
    return (
        select(LEVELS.c.id, LEVELS.c.product_id, LEVELS.c.location_id, LEVELS.c.on_hand)
        .add_columns(product_total.label("product_total"))
        .where(tuple_(LEVELS.c.product_id, LEVELS.c.location_id).in_(keys))
        .order_by(LEVELS.c.product_id, LEVELS.c.location_id)
        .with_for_update(of=LEVELS)
    )


def _lock_levels(session: Session, keys: Iterable[LevelKey]) -> dict[LevelKey, Any]:
    """Lock the levels of ``keys`` (missing ones are created at zero first)."""
    connection = session.connection()
    wanted = sorted(set(keys))
    found = {(r.product_id, r.location_id): r for r in connection.execute(_select_levels(wanted))}
    missing = [key for key in wanted if key not in found]
    if missing:
        now = utcnow()
        rows = [
            {"product_id": p, "location_id": loc, "on_hand": 0, "updated_at": now}
            for p, loc in missing
        ]
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        connection.execute(
            insert(LEVELS)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["product_id", "location_id"])
        )
        # Created here or, meanwhile, by another writer of the same product (which held the
        # product's lock, now ours): lock them as well.
        for row in connection.execute(_select_levels(missing)):
            found[(row.product_id, row.location_id)] = row
    return found


# --- posting ---------------------------------------------------------------------------------


def moving_average(old_avg: Decimal, old_total: int, quantity: int, cost: Decimal) -> Decimal:
    """Average cost after ``quantity`` units at ``cost`` join ``old_total`` units (signed)."""
    new_total = old_total + quantity
    if new_total <= 0:
        return old_avg  # nothing left to value: keep the last known cost
    value = old_avg * old_total + cost * quantity
    return max(Decimal(0), value / new_total).quantize(COST_PLACES, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Posted:
    """A posted document and its movements (by id), as the rows the database returned: every
    column of ``stock_documents`` and ``stock_movements``, in table order."""

    document: Any
    movements: list[Any]

    @property
    def id(self) -> int:
        return self.document.id


def _case(column: Any, values: dict[int, Any]) -> Any:
    """``column``'s new value per row id (one statement for every changed row), bound through
    the column's own type (scaled decimals on SQLite)."""
    if len(values) == 1:
        return next(iter(values.values()))
    whens = {row_id: literal(value, column.type) for row_id, value in values.items()}
    return case(whens, value=column.table.c.id)


def post(session: Session, posting: Posting) -> Posted:
    """Lock, check and write a document; raise 409 ``insufficient-stock`` if any line is short
    (422 if a line names a product that does not exist, or an archived one when
    ``posting.require_active``)."""
    connection = session.connection()
    products = _lock_products(session, (c.product_id for c in posting.changes))
    _require_products(posting.changes, products, active=posting.require_active)
    levels = _lock_levels(session, ((c.product_id, c.location_id) for c in posting.changes))
    totals = {key[0]: int(level.product_total) for key, level in levels.items()}
    totals_before = dict(totals)

    balances = {key: level.on_hand for key, level in levels.items()}
    shortages: list[dict[str, Any]] = []
    overflow: list[dict[str, str]] = []
    for change in posting.changes:
        key = (change.product_id, change.location_id)
        if change.counted is not None:
            change.quantity = change.counted - balances[key]
        after = balances[key] + change.quantity
        if after < 0:
            shortages.append(
                {
                    "line": change.line_no,
                    "product_id": change.product_id,
                    "location_id": change.location_id,
                    "requested": -change.quantity,
                    "available": max(balances[key], 0),
                }
            )
            # A short line takes nothing: the lines after it are judged against what is
            # really there (a negative running balance would report a later incoming line as
            # short, asking for a negative quantity).
            continue
        if after > MAX_ON_HAND:
            overflow.append(
                pointer_error(change.pointer, f"On-hand would exceed {MAX_ON_HAND} units.")
            )
        balances[key] = after
    if shortages:
        raise InsufficientStockProblem(shortages, posting.changes)
    if overflow:
        raise UnprocessableProblem("Some lines would exceed the on-hand limit.", errors=overflow)

    created_at = utcnow()
    document = connection.execute(
        insert(DOCUMENTS)
        .values(
            kind=posting.kind,
            reference=posting.reference,
            note=posting.note,
            location_id=posting.location_id,
            to_location_id=posting.to_location_id,
            created_at=created_at,
            created_by_user_id=posting.created_by_user_id,
            created_by_api_key_id=posting.created_by_api_key_id,
        )
        .returning(*DOCUMENTS.c)
    ).one()

    average = {product_id: Decimal(row.average_cost) for product_id, row in products.items()}
    running = {key: level.on_hand for key, level in levels.items()}
    movements = []
    for change in posting.changes:
        key = (change.product_id, change.location_id)
        running[key] += change.quantity
        if change.unit_cost is not None:
            total = totals.get(change.product_id, 0)
            average[change.product_id] = moving_average(
                average[change.product_id], total, change.quantity, change.unit_cost
            )
            totals[change.product_id] = total + change.quantity
        movements.append(
            {
                "document_id": document.id,
                "line_no": change.line_no,
                "kind": change.kind,
                "product_id": change.product_id,
                "location_id": change.location_id,
                "quantity": change.quantity,
                "balance_after": running[key],
                "unit_cost": change.unit_cost,
                "average_cost_after": average[change.product_id],
                "reason": change.reason,
                "note": change.note,
                "reference": posting.reference,
                "reversal_of": change.reversal_of,
                "created_at": created_at,
                "created_by_user_id": posting.created_by_user_id,
                "created_by_api_key_id": posting.created_by_api_key_id,
            }
        )
    written = connection.execute(insert(MOVEMENTS).values(movements).returning(*MOVEMENTS.c)).all()

    now = utcnow()
    changed_levels = {
        level.id: running[key] for key, level in levels.items() if level.on_hand != running[key]
    }
    if changed_levels:
        connection.execute(
            update(LEVELS)
            .where(LEVELS.c.id.in_(changed_levels))
            .values(on_hand=_case(LEVELS.c.on_hand, changed_levels), updated_at=now)
        )
    changed_costs = {
        product_id: cost
        for product_id, cost in average.items()
        if cost != Decimal(products[product_id].average_cost)
    }
    if changed_costs:
        # As an ORM update of the product would: a new version (its ETag) and updated_at.
        connection.execute(
            update(PRODUCTS)
            .where(PRODUCTS.c.id.in_(changed_costs))
            .values(
                average_cost=_case(PRODUCTS.c.average_cost, changed_costs),
                version=PRODUCTS.c.version + 1,
                updated_at=now,
            )
        )
    posted = Posted(document, sorted(written, key=lambda row: row.id))
    _record_events(session, posting, posted, products, totals_before)
    return posted


def _record_events(
    session: Session,
    posting: Posting,
    posted: Posted,
    products: dict[int, Any],
    totals_before: dict[int, int],
) -> None:
    """The document's events: posted, reversed (for a reversal), and each product whose
    total on hand crossed its reorder point (low at or below it, restocked above it)."""
    body = document_body(posted.document, posted.movements)
    events.record(session, events.DOCUMENT_POSTED, body)
    if posting.kind == "reversal":
        reversed_ids = [c.reversal_of for c in posting.changes if c.reversal_of is not None]
        events.record(
            session,
            events.MOVEMENT_REVERSED,
            {"reversed_movement_ids": reversed_ids, "document": body},
        )
    after = dict(totals_before)
    for change in posting.changes:
        after[change.product_id] += change.quantity
    for product_id in sorted(after):
        product = products[product_id]
        point = product.reorder_point
        if point <= 0 or not product.is_active:
            continue  # the low-stock alerts' rule: only active products with a point
        was_low, is_low = totals_before[product_id] <= point, after[product_id] <= point
        if was_low != is_low:
            event_type = events.LEVEL_LOW if is_low else events.LEVEL_RESTOCKED
            events.record(session, event_type, low_stock_alert(product, after[product_id]))


# --- reversals -------------------------------------------------------------------------------


def reversal_posting(
    session: Session, movement_id: int, reference: str | None, note: str | None
) -> Posting:
    """The compensating posting for a movement (both legs, for a transfer)."""
    movement = session.get(StockMovement, movement_id)
    if movement is None:
        raise NotFoundProblem("Stock movement", movement_id)
    if movement.kind == "reversal":
        raise ConflictProblem(
            "not-reversible",
            f"Movement {movement_id} is itself a reversal; post a new document instead.",
        )
    legs = [movement]
    if movement.kind in ("transfer_out", "transfer_in"):
        legs = list(
            session.scalars(
                select(StockMovement)
                .where(
                    StockMovement.document_id == movement.document_id,
                    StockMovement.line_no == movement.line_no,
                    StockMovement.kind.in_(("transfer_out", "transfer_in")),
                )
                .order_by(StockMovement.id)
            )
        )
    # Take the posting's first lock (its product rows) before looking for an earlier
    # reversal: a concurrent reversal of the same movement either committed already (and is
    # seen below) or waits for us.
    _lock_products(session, (leg.product_id for leg in legs))
    reversed_already = session.scalars(
        select(StockMovement.reversal_of).where(
            StockMovement.reversal_of.in_([leg.id for leg in legs])
        )
    ).all()
    if reversed_already:
        raise ConflictProblem(
            "already-reversed",
            f"Movement {movement_id} has already been reversed.",
            reversed_movement_ids=sorted(reversed_already),
        )
    changes = [
        Change(
            line_no=index,
            kind="reversal",
            product_id=leg.product_id,
            location_id=leg.location_id,
            quantity=-leg.quantity,
            unit_cost=leg.unit_cost if leg.kind == "receipt" else None,
            note=note,
            reversal_of=leg.id,
            pointer="",
        )
        for index, leg in enumerate(legs)
    ]
    return Posting(
        kind="reversal",
        require_active=False,
        changes=changes,
        reference=reference if reference is not None else movement.reference,
        note=note,
    )


def recompute_levels(session: Session) -> list[dict[str, Any]]:
    """Every (product, location) whose level differs from its ledger sum (empty = no drift)."""
    ledger = (
        select(
            StockMovement.product_id,
            StockMovement.location_id,
            func.sum(StockMovement.quantity).label("ledger"),
        )
        .group_by(StockMovement.product_id, StockMovement.location_id)
        .subquery()
    )
    sums: dict[LevelKey, int] = defaultdict(int)
    for product_id, location_id, total in session.execute(select(ledger)):
        sums[(product_id, location_id)] = int(total)
    drift = []
    seen = set()
    for level in session.scalars(select(StockLevel)):
        key = (level.product_id, level.location_id)
        seen.add(key)
        if level.on_hand != sums.get(key, 0) or level.on_hand < 0:
            drift.append(
                {
                    "product_id": key[0],
                    "location_id": key[1],
                    "level": level.on_hand,
                    "ledger": sums.get(key, 0),
                }
            )
    for key, total in sums.items():
        if key not in seen and total != 0:
            drift.append(
                {"product_id": key[0], "location_id": key[1], "level": None, "ledger": total}
            )
    return drift
