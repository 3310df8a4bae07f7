"""Posting stock documents to the append-only ledger, correctly under concurrency.

Every document follows the same steps inside the request's one transaction:

1. lock the affected product rows (ascending id), then the affected stock-level rows
   (ascending product, location), creating missing levels at zero first. Every writer takes
   its locks in this one global order, so concurrent documents queue instead of deadlocking.
   (On SQLite the write transaction is BEGIN IMMEDIATE: writers are serialised anyway.)
2. apply the lines in order to the locked balances; collect every line that would go below
   zero and refuse the whole document (409 ``insufficient-stock``) if there is any;
3. write the document, one movement per line (two for a transfer line) with its balance
   after, update the levels and, for receipts and their reversals, the moving-average cost.
   Every movement records the product's average cost right after it
   (``average_cost_after``), so the ledger alone values stock at any past moment.

Levels are only ever changed here, in the same transaction as their movements, so each
level always equals the sum of its movements (``storekeeper stock verify`` checks it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.formats import utcnow
from service.models import Location, Product, StockDocument, StockLevel, StockMovement
from service.problems import (
    ConflictProblem,
    InsufficientStockProblem,
    NotFoundProblem,
    UnprocessableProblem,
    pointer_error,
)

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


def require_products(session: Session, lines: Sequence[dict[str, Any]]) -> None:
    """Every line names an existing, active product; report every line that does not."""
    wanted = {line["product_id"] for line in lines}
    found = {
        product.id: product
        for product in session.scalars(select(Product).where(Product.id.in_(wanted)))
    }
    errors = []
    for index, line in enumerate(lines):
        product = found.get(line["product_id"])
        if product is None:
            errors.append(pointer_error(f"/lines/{index}/product_id", "No product has this id."))
        elif not product.is_active:
            errors.append(pointer_error(f"/lines/{index}/product_id", "The product is archived."))
    if errors:
        raise UnprocessableProblem(
            "Some lines name products that do not exist or are archived; see errors[].",
            errors=errors,
        )


# --- locking ---------------------------------------------------------------------------------


def _lock_products(session: Session, product_ids: Iterable[int]) -> dict[int, Product]:
    ids = sorted(set(product_ids))
    # populate_existing: the rows may already be in the session (read before the lock); the
    # average cost written on every movement must be the one read under the lock.
    stmt = (
        select(Product)
        .where(Product.id.in_(ids))
        .order_by(Product.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {product.id: product for product in session.scalars(stmt)}


def _lock_levels(session: Session, keys: Iterable[LevelKey]) -> dict[LevelKey, StockLevel]:
    ordered = sorted(set(keys))
    now = utcnow()
    rows = [
        {"product_id": p, "location_id": loc, "on_hand": 0, "updated_at": now} for p, loc in ordered
    ]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(StockLevel)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["product_id", "location_id"])
    )
    pair = tuple_(StockLevel.product_id, StockLevel.location_id)
    stmt = (
        select(StockLevel)
        .where(pair.in_(ordered))
        .order_by(StockLevel.product_id, StockLevel.location_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {(level.product_id, level.location_id): level for level in session.scalars(stmt)}


def _totals(session: Session, product_ids: Iterable[int]) -> dict[int, int]:
    stmt = (
        select(StockLevel.product_id, func.coalesce(func.sum(StockLevel.on_hand), 0))
        .where(StockLevel.product_id.in_(set(product_ids)))
        .group_by(StockLevel.product_id)
    )
    return {product_id: int(total) for product_id, total in session.execute(stmt)}


# --- posting ---------------------------------------------------------------------------------


def moving_average(old_avg: Decimal, old_total: int, quantity: int, cost: Decimal) -> Decimal:
    """Average cost after ``quantity`` units at ``cost`` join ``old_total`` units (signed)."""
    new_total = old_total + quantity
    if new_total <= 0:
        return old_avg  # nothing left to value: keep the last known cost
    value = old_avg * old_total + cost * quantity
    return max(Decimal(0), value / new_total).quantize(COST_PLACES, rounding=ROUND_HALF_EVEN)


def post(session: Session, posting: Posting) -> StockDocument:
    """Lock, check and write a document; raise 409 ``insufficient-stock`` if any line is short."""
    products = _lock_products(session, (c.product_id for c in posting.changes))
    levels = _lock_levels(session, ((c.product_id, c.location_id) for c in posting.changes))
    costed = {c.product_id for c in posting.changes if c.unit_cost is not None}
    totals = _totals(session, costed) if costed else {}

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

    document = StockDocument(
        kind=posting.kind,
        reference=posting.reference,
        note=posting.note,
        location_id=posting.location_id,
        to_location_id=posting.to_location_id,
        created_at=utcnow(),
        created_by_user_id=posting.created_by_user_id,
        created_by_api_key_id=posting.created_by_api_key_id,
    )
    session.add(document)
    session.flush()

    running = {key: level.on_hand for key, level in levels.items()}
    for change in posting.changes:
        key = (change.product_id, change.location_id)
        running[key] += change.quantity
        product = products[change.product_id]
        if change.unit_cost is not None:
            total = totals.get(change.product_id, 0)
            product.average_cost = moving_average(
                Decimal(product.average_cost), total, change.quantity, change.unit_cost
            )
            totals[change.product_id] = total + change.quantity
        session.add(
            StockMovement(
                document_id=document.id,
                line_no=change.line_no,
                kind=change.kind,
                product_id=change.product_id,
                location_id=change.location_id,
                quantity=change.quantity,
                balance_after=running[key],
                unit_cost=change.unit_cost,
                average_cost_after=product.average_cost,
                reason=change.reason,
                note=change.note,
                reference=posting.reference,
                reversal_of=change.reversal_of,
                created_at=document.created_at,
                created_by_user_id=posting.created_by_user_id,
                created_by_api_key_id=posting.created_by_api_key_id,
            )
        )
    now = utcnow()
    for key, level in levels.items():
        if level.on_hand != running[key]:
            level.on_hand = running[key]
            level.updated_at = now
    session.flush()
    session.refresh(document, attribute_names=["movements"])
    return document


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
