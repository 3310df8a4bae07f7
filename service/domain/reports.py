"""Manager reports: stock valuation and movement summary, aggregated in the database.

Each report is one aggregate SQL statement (GROUP BY over CTEs, correlated index-only
probes for past costs, a recursive CTE for category paths), plus on PostgreSQL one
statement making the report's settings and, for a valuation in the past, a probe of the
ledger's time span: a constant number of statements whatever the size of the ledger.
Python only formats the group rows that come back. A valuation in the past starts from the
nearest anchor: the latest checkpoint at or before its moment (the ledger summed at a
closed period boundary, service/domain/checkpoints.py) plus the ledger tail up to the
moment, or the current levels minus what moved since, whichever spans less time; without
checkpoints it sums from the nearer end of the ledger. Every way gives the same rows.

The API (service/api/handlers/reports.py) and the CLI (service/cli/reports.py) call the same
functions here and render the same rows as JSON, CSV or a table.

Money is exact. Costs are scaled 64-bit integers (``ScaledDecimal``), so a value is an
integer count of millionths: on PostgreSQL the products are summed as NUMERIC; SQLite has
no exact wide type, so each factor is split into small limbs whose products and sums stay
far inside 64 bits, and Python recombines the limb sums with arbitrary-precision integers.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Numeric,
    String,
    Text,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import ColumnElement

from service.db import where_equal
from service.formats import EARLIEST, escape_formula, format_timestamp, utcnow
from service.models import (
    Category,
    Location,
    Product,
    StockCheckpoint,
    StockCheckpointBalance,
    StockLevel,
    StockMovement,
)

VALUATION_GROUPS = ("category", "location")
MOVEMENT_GROUPS = ("day", "product", "location", "kind")
MOVEMENT_KINDS = ("receipt", "shipment", "transfer_out", "transfer_in", "adjustment", "reversal")
DEFAULT_PERIOD = timedelta(days=30)
UNCATEGORISED_KEY = "none"
UNCATEGORISED_LABEL = "(uncategorised)"
TOTAL_KEY = "total"
COST_SCALE = 6  # average costs are stored as millionths
# Category paths are built top-down; a tree deeper than this (the API prevents cycles) is
# labelled with the category's own name.
MAX_CATEGORY_DEPTH = 64

# PostgreSQL settings for a report's own transaction only (set_config(..., is_local)):
# replaying the ledger hashes every (product, location) pair, and the default work_mem
# (4MB) spills that to disk, which triples the time (hash nodes may use hash_mem_multiplier
# times as much); and the planner's row estimates for the replay are far too high, which
# makes it spend more time JIT-compiling the query (~0.4 s) than running it.
POSTGRESQL_REPORT_SETTINGS = {"work_mem": "32MB", "jit": "off"}

# SQLite limbs: on-hand (below 2^48) in 16-bit limbs, costs (int64) in 24-bit limbs. Every
# limb product is below 2^40, so a group's sum stays exact for up to 2^23 rows.
QUANTITY_LIMBS = ((0, 0xFFFF), (16, 0xFFFF), (32, None))
COST_LIMBS = ((0, 0xFFFFFF), (24, 0xFFFFFF), (48, None))


@dataclass
class Report:
    """A report's rows and totals, ready for JSON, CSV or a table."""

    kind: str  # "valuation" or "movements"
    header: dict[str, Any]  # group_by and the period: as_of, or from and to
    columns: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {**self.header, "rows": self.rows, "totals": self.totals}

    def filename(self) -> str:
        if self.kind == "valuation":
            period = _compact(self.header["as_of"])
        else:
            period = f"{_compact(self.header['from'])}-{_compact(self.header['to'])}"
        return f"{self.kind}-by-{self.header['group_by']}-{period}.csv"


def _compact(timestamp: str) -> str:
    """2026-11-02T09:15:00.000000+00:00 → 20261102T091500Z, for file names."""
    return re.sub(r"[-:]", "", timestamp[:19]) + "Z"


# --- exact money -----------------------------------------------------------------------------


def prepare(session: Session) -> str:
    """The session's dialect name, with the report's settings made on PostgreSQL."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            select(
                *(
                    func.set_config(name, value, True)
                    for name, value in POSTGRESQL_REPORT_SETTINGS.items()
                )
            )
        )
    return dialect


def _value_string(millionths: int) -> str:
    """An exact count of millionths as a decimal string with 6 places (e.g. "12.500000")."""
    sign = "-" if millionths < 0 else ""
    whole, fraction = divmod(abs(millionths), 10**COST_SCALE)
    return f"{sign}{whole}.{fraction:0{COST_SCALE}d}"


def _limb(expression: ColumnElement, shift: int, mask: int | None) -> ColumnElement:
    shifted = expression.bitwise_rshift(shift) if shift else expression
    return shifted.bitwise_and(mask) if mask is not None else shifted


def _value_columns(dialect: str, quantity: ColumnElement, cost: ColumnElement) -> list:
    """Aggregates whose results :func:`_combine_value` turns into Σ quantity * cost, exactly."""
    if dialect == "postgresql":
        return [func.sum(cast(quantity, Numeric) * cast(cost, Numeric)).label("value_0")]
    return [
        func.sum(_limb(quantity, q_shift, q_mask) * _limb(cost, c_shift, c_mask)).label(
            f"value_{index}"
        )
        for index, ((q_shift, q_mask), (c_shift, c_mask)) in enumerate(
            (q, c) for q in QUANTITY_LIMBS for c in COST_LIMBS
        )
    ]


def _combine_value(dialect: str, row: Any) -> int:
    if dialect == "postgresql":
        return int(row.value_0 or 0)
    total = 0
    for index, ((q_shift, _), (c_shift, _)) in enumerate(
        (q, c) for q in QUANTITY_LIMBS for c in COST_LIMBS
    ):
        total += int(getattr(row, f"value_{index}") or 0) << (q_shift + c_shift)
    return total


# --- valuation -------------------------------------------------------------------------------

VALUATION_COLUMNS = ("key", "label", "name", "products", "quantity", "value")


def _raw(column) -> ColumnElement:
    """A ScaledDecimal column as its stored integer (millionths, ten-thousandths)."""
    return type_coerce(column, BigInteger)


def _cost_at(product_id: ColumnElement, as_of: datetime) -> ColumnElement:
    """The product's average cost after its latest movement at or before ``as_of``.

    One index-only probe per product (ix_stock_movements_product_id_created_at_id_
    average_cost_after); zero if the product had no movement by then.
    """
    movement = aliased(StockMovement, name="costed")
    latest = (
        select(_raw(movement.average_cost_after))
        .where(movement.product_id == product_id, movement.created_at <= as_of)
        .order_by(movement.created_at.desc(), movement.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(latest, 0)


@dataclass(frozen=True)
class Replay:
    """How a past moment is reached: ``now`` (the levels), ``forward`` (the ledger summed up
    to it), ``backward`` (the levels minus what moved after it) or ``checkpoint`` (a
    checkpoint's balances plus what moved after its moment, up to it)."""

    direction: str
    checkpoint_id: int | None = None
    checkpoint_at: datetime | None = None


def _moved_since(replay: Replay, as_of: datetime):
    """The product ids of movements the replay adds (checkpoint) or subtracts (backward)."""
    movement = StockMovement
    if replay.direction == "checkpoint":
        window = (movement.created_at > replay.checkpoint_at, movement.created_at <= as_of)
    else:
        window = (movement.created_at > as_of,)
    return select(movement.product_id).where(*window)


def _from_checkpoint(replay: Replay, as_of: datetime, *by: str):
    """The checkpoint's balances and the tail's movements, one row each, as a union:
    ``by`` columns, ``quantity``, ``cost`` (the checkpoint's, NULL for a tail movement)."""
    balance, movement = StockCheckpointBalance, StockMovement
    held = select(
        *(getattr(balance, name) for name in by),
        balance.on_hand.label("quantity"),
        _raw(balance.average_cost).label("cost"),
    ).where(balance.checkpoint_id == replay.checkpoint_id)
    tail = select(
        *(getattr(movement, name) for name in by),
        movement.quantity.label("quantity"),
        cast(null(), BigInteger).label("cost"),
    ).where(movement.created_at > replay.checkpoint_at, movement.created_at <= as_of)
    return union_all(held, tail).subquery("replayed")


def _later(as_of: datetime, *by: ColumnElement):
    """What moved after ``as_of``, summed per ``by`` (the backward replay subtracts it)."""
    movement = StockMovement
    return (
        select(*by, func.sum(movement.quantity).label("quantity"))
        .where(movement.created_at > as_of)
        .group_by(*by)
        .cte("later")
    )


def _per_product(as_of: datetime | None, replay: Replay):
    """(product_id, on_hand > 0, cost) per product held at ``as_of`` (None: now).

    ``cost`` is the scaled average cost at ``as_of``, or NULL for "the product's current
    average cost". Every (product, location) balance is >= 0 at every moment (the ledger
    refuses anything else), so a product's total is the sum over its locations.

    * now: the stock levels;
    * forward: the ledger summed up to ``as_of``, each product's cost probed;
    * backward: the levels minus what moved after ``as_of``; only products that moved
      since have their cost probed, the others' is still their current average cost;
    * checkpoint: its balances plus what moved after it up to ``as_of``; products that
      moved in between have their cost probed, the others keep the checkpoint's cost.
    """
    movement, level = StockMovement, StockLevel
    direction = replay.direction
    if direction == "checkpoint":
        replayed = _from_checkpoint(replay, as_of, "product_id")
        on_hand = func.sum(replayed.c.quantity)
        # A tail row (cost NULL) means the product moved since the checkpoint.
        moved = func.count() > func.count(replayed.c.cost)
        return (
            select(
                replayed.c.product_id,
                on_hand.label("on_hand"),
                case(
                    (moved, _cost_at(replayed.c.product_id, as_of)),
                    else_=func.max(replayed.c.cost),
                ).label("cost"),
            )
            .group_by(replayed.c.product_id)
            .having(on_hand > 0)
            .subquery("per_product")
        )
    if as_of is None:
        on_hand = func.sum(level.on_hand)
        return (
            select(
                level.product_id, on_hand.label("on_hand"), cast(null(), BigInteger).label("cost")
            )
            .where(level.on_hand > 0)
            .group_by(level.product_id)
            .subquery("per_product")
        )
    if direction == "forward":
        on_hand = func.sum(movement.quantity)
        return (
            select(
                movement.product_id,
                on_hand.label("on_hand"),
                _cost_at(movement.product_id, as_of).label("cost"),
            )
            .where(movement.created_at <= as_of)
            .group_by(movement.product_id)
            .having(on_hand > 0)
            .subquery("per_product")
        )
    later = _later(as_of, movement.product_id)
    current = (
        select(level.product_id, func.sum(level.on_hand).label("on_hand"))
        .group_by(level.product_id)
        .subquery("current")
    )
    on_hand = current.c.on_hand - func.coalesce(later.c.quantity, 0)
    return (
        select(
            current.c.product_id,
            on_hand.label("on_hand"),
            case((later.c.product_id.is_not(None), _cost_at(current.c.product_id, as_of))).label(
                "cost"
            ),
        )
        .outerjoin(later, later.c.product_id == current.c.product_id)
        .where(on_hand > 0)
        .subquery("per_product")
    )


def _per_pair(as_of: datetime | None, replay: Replay):
    """(product_id, location_id, on_hand > 0, checkpoint cost) held at ``as_of`` (None: now),
    as a CTE; the cost column is the checkpoint's cost (NULL unless replayed from one)."""
    movement, level = StockMovement, StockLevel
    direction = replay.direction
    if direction == "checkpoint":
        replayed = _from_checkpoint(replay, as_of, "product_id", "location_id")
        on_hand = func.sum(replayed.c.quantity)
        return (
            select(
                replayed.c.product_id,
                replayed.c.location_id,
                on_hand.label("on_hand"),
                func.max(replayed.c.cost).label("checkpoint_cost"),
            )
            .group_by(replayed.c.product_id, replayed.c.location_id)
            .having(on_hand > 0)
            .cte("pairs")
        )
    no_cost = cast(null(), BigInteger).label("checkpoint_cost")
    if as_of is None:
        return (
            select(level.product_id, level.location_id, level.on_hand, no_cost)
            .where(level.on_hand > 0)
            .cte("pairs")
        )
    if direction == "forward":
        on_hand = func.sum(movement.quantity)
        return (
            select(movement.product_id, movement.location_id, on_hand.label("on_hand"), no_cost)
            .where(movement.created_at <= as_of)
            .group_by(movement.product_id, movement.location_id)
            .having(on_hand > 0)
            .cte("pairs")
        )
    later = _later(as_of, movement.product_id, movement.location_id)
    on_hand = level.on_hand - func.coalesce(later.c.quantity, 0)
    return (
        select(level.product_id, level.location_id, on_hand.label("on_hand"), no_cost)
        .outerjoin(
            later,
            (later.c.product_id == level.product_id) & (later.c.location_id == level.location_id),
        )
        .where(on_hand > 0)
        .cte("pairs")
    )


def _pair_costs(pairs, as_of: datetime | None, replay: Replay):
    """(product_id, cost) for every product in ``pairs``, its scaled cost at ``as_of``."""
    direction = replay.direction
    current = func.max(_raw(Product.average_cost))
    if as_of is None:
        cost = current
    elif direction == "forward":
        cost = _cost_at(pairs.c.product_id, as_of)
    else:
        # Only products that moved between as_of and the anchor can have had another cost.
        cost = case(
            (
                pairs.c.product_id.in_(_moved_since(replay, as_of)),
                _cost_at(pairs.c.product_id, as_of),
            ),
            else_=func.max(pairs.c.checkpoint_cost) if direction == "checkpoint" else current,
        )
    stmt = select(pairs.c.product_id, cost.label("cost"))
    if as_of is None or direction == "backward":
        stmt = stmt.join(Product, Product.id == pairs.c.product_id)
    return stmt.group_by(pairs.c.product_id).cte("costs")


def _category_paths():
    """Every category's path from the root, e.g. ``Tools/Hand tools`` (recursive CTE)."""
    paths = (
        select(
            Category.id,
            cast(Category.name, Text).label("path"),
            literal(1, Integer).label("depth"),
        )
        .where(Category.parent_id.is_(None))
        .cte("category_paths", recursive=True)
    )
    child = aliased(Category, name="child")
    return paths.union_all(
        select(
            child.id,
            paths.c.path + literal("/", Text) + cast(child.name, Text),
            paths.c.depth + 1,
        )
        .join(paths, child.parent_id == paths.c.id)
        .where(paths.c.depth < MAX_CATEGORY_DEPTH)
    )


def latest_checkpoint(session: Session, at: datetime) -> tuple[int, datetime] | None:
    """(id, moment) of the latest checkpoint at or before ``at``, if any (one index probe)."""
    row = session.execute(
        select(StockCheckpoint.id, StockCheckpoint.at)
        .where(StockCheckpoint.at <= at)
        .order_by(StockCheckpoint.at.desc())
        .limit(1)
    ).first()
    return (row.id, row.at) if row is not None else None


# A day of backward replay costs about twice a day of checkpoint replay: it reads every
# level as well and probes the cost of each product that moved, where a checkpoint's tail
# probes only the products that moved in it (measured at 10M movements on PostgreSQL).
BACKWARD_WEIGHT = 2


def plan_replay(session: Session, as_of: datetime) -> Replay:
    """now, forward, backward or checkpoint: whichever costs least.

    The ledger's first and last timestamps (two index probes) and the latest checkpoint at
    or before ``as_of`` (one) tell: nothing after ``as_of`` means the current levels are
    the answer; otherwise replay from the nearest anchor, assuming movements spread evenly
    over time (a backward span weighs :data:`BACKWARD_WEIGHT` times as much).
    """
    first, last = session.execute(
        select(func.min(StockMovement.created_at), func.max(StockMovement.created_at))
    ).one()
    if last is None or as_of >= last:
        return Replay("now")
    if as_of < first:
        return Replay("forward")
    candidates = [
        ((last - as_of) * BACKWARD_WEIGHT, 1, Replay("backward")),
        (as_of - first, 2, Replay("forward")),
    ]
    checkpoint = latest_checkpoint(session, as_of)
    if checkpoint is not None:
        checkpoint_id, checkpoint_at = checkpoint
        span = as_of - max(checkpoint_at, first)
        candidates.append((span, 0, Replay("checkpoint", checkpoint_id, checkpoint_at)))
    return min(candidates, key=lambda candidate: candidate[:2])[2]


def _grouped_by_category(dialect: str, as_of: datetime | None, replay: Replay):
    """Per category: products held, units, value (each product in its own category)."""
    held = _per_product(as_of, replay)
    cost = func.coalesce(held.c.cost, _raw(Product.average_cost))
    return (
        select(
            Product.category_id.label("group_id"),
            func.count().label("products"),
            func.sum(held.c.on_hand).label("quantity"),
            *_value_columns(dialect, held.c.on_hand, cost),
        )
        .join(Product, Product.id == held.c.product_id)
        .group_by(Product.category_id)
        .subquery("grouped")
    )


def holdings(as_of: datetime | None, replay: Replay):
    """(pairs, costs) CTEs: what was held per (product, location) at ``as_of`` (None: now),
    and each held product's scaled average cost then."""
    pairs = _per_pair(as_of, replay)
    return pairs, _pair_costs(pairs, as_of, replay)


def _grouped_by_location(dialect: str, as_of: datetime | None, replay: Replay):
    """Per location: products held, units, value; and the number of distinct products."""
    pairs, costs = holdings(as_of, replay)
    distinct_products = select(func.count()).select_from(costs).scalar_subquery()
    return (
        select(
            pairs.c.location_id.label("group_id"),
            func.count().label("products"),
            func.sum(pairs.c.on_hand).label("quantity"),
            *_value_columns(dialect, pairs.c.on_hand, costs.c.cost),
            distinct_products.label("distinct_products"),
        )
        .join(costs, costs.c.product_id == pairs.c.product_id)
        .group_by(pairs.c.location_id)
        .subquery("grouped")
    )


def valuation(
    session: Session, group_by: str = "category", as_of: datetime | None = None
) -> Report:
    """On-hand * moving-average cost per category or location, now or at ``as_of``.

    A future ``as_of`` means now. Only groups holding stock appear.
    """
    if group_by not in VALUATION_GROUPS:
        raise ValueError(f"group_by must be one of {VALUATION_GROUPS}")
    dialect = prepare(session)
    now = utcnow()
    effective = now if as_of is None or as_of >= now else as_of
    replay = Replay("now") if effective is now else plan_replay(session, effective)
    replay_as_of = None if replay.direction == "now" else effective

    if group_by == "category":
        grouped = _grouped_by_category(dialect, replay_as_of, replay)
        paths = _category_paths()
        stmt = (
            select(
                grouped,
                func.coalesce(paths.c.path, Category.name).label("label"),
                Category.name.label("name"),
            )
            .outerjoin(Category, Category.id == grouped.c.group_id)
            .outerjoin(paths, paths.c.id == grouped.c.group_id)
        )
    else:
        grouped = _grouped_by_location(dialect, replay_as_of, replay)
        stmt = select(grouped, Location.code.label("label"), Location.name.label("name")).outerjoin(
            Location, Location.id == grouped.c.group_id
        )

    rows, products, quantity, value = [], 0, 0, 0
    for row in session.execute(stmt):
        row_value = _combine_value(dialect, row)
        uncategorised = row.group_id is None
        rows.append(
            {
                "key": UNCATEGORISED_KEY if uncategorised else str(row.group_id),
                "label": UNCATEGORISED_LABEL if uncategorised else row.label,
                "name": row.name,
                "products": int(row.products),
                "quantity": int(row.quantity),
                "value": _value_string(row_value),
            }
        )
        # A product held at several locations counts once in the totals.
        products = (
            int(row.distinct_products) if group_by == "location" else products + int(row.products)
        )
        quantity += int(row.quantity)
        value += row_value
    rows.sort(key=lambda r: (r["label"] or "", r["key"]))
    return Report(
        kind="valuation",
        header={"group_by": group_by, "as_of": format_timestamp(effective)},
        columns=VALUATION_COLUMNS,
        rows=rows,
        totals={"products": products, "quantity": quantity, "value": _value_string(value)},
    )


# --- movement summary --------------------------------------------------------------------------

MOVEMENT_COLUMNS = (
    "key",
    "label",
    "name",
    "quantity_in",
    "quantity_out",
    "net",
    "movements",
)


def movement_period(
    start: datetime | None, end: datetime | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The half-open period [start, end): ``end`` defaults to now, ``start`` to 30 days before."""
    end = end if end is not None else (now or utcnow())
    if start is None:
        try:
            start = end - DEFAULT_PERIOD
        except OverflowError:
            start = EARLIEST
    return start, end


def _utc_day(dialect: str, created_at: ColumnElement) -> ColumnElement:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", created_at), "YYYY-MM-DD")
    # SQLite stores naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff".
    return func.substr(type_coerce(created_at, String), 1, 10)


def _movement_sums(quantity: ColumnElement) -> tuple[ColumnElement, ...]:
    """quantity_in, quantity_out, net and movements over the grouped ``quantity`` rows."""
    return (
        func.sum(case((quantity > 0, quantity), else_=0)).label("quantity_in"),
        func.sum(case((quantity < 0, -quantity), else_=0)).label("quantity_out"),
        func.sum(quantity).label("net"),
        func.count().label("movements"),
    )


def _in_period(stmt, start: datetime, end: datetime, product_id, location_id, kind):
    movement = StockMovement
    stmt = stmt.where(movement.created_at >= start, movement.created_at < end)
    return where_equal(
        stmt,
        (movement.product_id, product_id),
        (movement.location_id, location_id),
        (movement.kind, kind),
    )


def movement_summary(
    session: Session,
    group_by: str = "day",
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    product_id: int | None = None,
    location_id: int | None = None,
    kind: str | None = None,
) -> Report:
    """Quantities in and out per day, product, location or kind over [start, end), whole.

    Callers check ``start < end`` (the API answers 400, the CLI refuses). The API pages
    the by-product JSON instead (:func:`product_movements`).
    """
    if group_by not in MOVEMENT_GROUPS:
        raise ValueError(f"group_by must be one of {MOVEMENT_GROUPS}")
    dialect = prepare(session)
    start, end = movement_period(start, end)
    movement = StockMovement
    key = {
        "day": _utc_day(dialect, movement.created_at),
        "product": movement.product_id,
        "location": movement.location_id,
        "kind": movement.kind,
    }[group_by]
    grouped = select(key.label("group_key"), *_movement_sums(movement.quantity))
    grouped = _in_period(grouped, start, end, product_id, location_id, kind)
    grouped = grouped.group_by("group_key").subquery("grouped")

    if group_by == "product":
        stmt = select(grouped, Product.sku.label("label"), Product.name.label("name")).outerjoin(
            Product, Product.id == grouped.c.group_key
        )
    elif group_by == "location":
        stmt = select(grouped, Location.code.label("label"), Location.name.label("name")).outerjoin(
            Location, Location.id == grouped.c.group_key
        )
    else:
        stmt = select(
            grouped, literal(None, String).label("label"), literal(None, String).label("name")
        )

    # Up to one row per product: Core rows (no ORM loading), one pass.
    found = session.connection().execute(stmt).mappings().all()
    if group_by == "product":
        # The SKU order of the product list and of the paged summary (sku_key, then id).
        found.sort(key=lambda r: ((r["label"] or "").casefold(), r["group_key"]))
    elif group_by == "location":
        found.sort(key=lambda r: (r["label"] or "", r["group_key"]))  # code, then id
    else:
        found.sort(key=lambda r: r["group_key"])  # days in order; kinds by name
    return movement_report(group_by, start, end, found)


def product_movements(
    session: Session,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    product_id: int | None = None,
    location_id: int | None = None,
    kind: str | None = None,
):
    """The by-product summary as a statement over the products, to be paged in SKU order.

    Each row: ``group_key``, the four sums, ``label`` (SKU), ``name``, and the page's sort
    key ``sku_key`` and ``id`` (the product list's SKU order). Only products that moved in
    [start, end) appear. A page walks the products in SKU order and sums each one's
    movements through the (product_id, created_at) index, so its cost follows the page
    size and the period's movements of the page's products, not the whole ledger: on
    PostgreSQL a LATERAL subquery per product; SQLite, without LATERAL, correlated
    subqueries. Returns the start and end used, and the statement.
    """
    dialect = prepare(session)
    start, end = movement_period(start, end)
    movement = StockMovement
    columns = (
        Product.id.label("group_key"),
        Product.sku.label("label"),
        Product.name.label("name"),
        Product.sku_key,
        Product.id,
    )
    if dialect == "postgresql":
        sums = _in_period(
            select(*_movement_sums(movement.quantity)).where(movement.product_id == Product.id),
            start,
            end,
            None,
            location_id,
            kind,
        ).lateral("sums")
        stmt = (
            select(*columns, sums.c.quantity_in, sums.c.quantity_out, sums.c.net, sums.c.movements)
            .select_from(Product)
            .join(sums, literal(True))
            .where(sums.c.movements > 0)
        )
    else:
        # No LATERAL: one correlated probe per sum (each an index range scan of the
        # product's movements), and products without movements left out by the count's.
        probes = {
            name: _in_period(
                select(total).where(movement.product_id == Product.id),
                start,
                end,
                None,
                location_id,
                kind,
            ).scalar_subquery()
            for name, total in zip(
                ("quantity_in", "quantity_out", "net", "movements"),
                _movement_sums(movement.quantity),
                strict=True,
            )
        }
        stmt = select(*columns, *(probe.label(name) for name, probe in probes.items())).where(
            probes["movements"] > 0
        )
    if product_id is not None:
        stmt = stmt.where(Product.id == product_id)
    return start, end, stmt


def movement_report(group_by: str, start: datetime, end: datetime, found: Sequence[Any]) -> Report:
    """A movement summary of ``found`` rows (mappings with ``group_key``, ``label``, ``name``
    and the four sums); the totals sum these rows."""
    rows = []
    total_in = total_out = total_net = total_movements = 0
    for row in found:
        key, label, name = row["group_key"], row["label"], row["name"]
        quantity_in, quantity_out = row["quantity_in"], row["quantity_out"]
        net, movements = row["net"], row["movements"]
        rows.append(
            {
                "key": str(key),
                "label": label if label is not None else str(key),
                "name": name,
                "quantity_in": int(quantity_in),
                "quantity_out": int(quantity_out),
                "net": int(net),
                "movements": int(movements),
            }
        )
        total_in += quantity_in
        total_out += quantity_out
        total_net += net
        total_movements += movements
    totals = {
        "quantity_in": int(total_in),
        "quantity_out": int(total_out),
        "net": int(total_net),
        "movements": int(total_movements),
    }
    return Report(
        kind="movements",
        header={
            "group_by": group_by,
            "from": format_timestamp(start),
            "to": format_timestamp(end),
        },
        columns=MOVEMENT_COLUMNS,
        rows=rows,
        totals=totals,
    )


# --- CSV -------------------------------------------------------------------------------------

# Text cells are protected against spreadsheet formulas (see escape_formula); numbers are
# never touched.
TEXT_COLUMNS = ("key", "label", "name")


def _csv_values(columns: Sequence[str], row: dict[str, Any]) -> list[Any]:
    # csv writes None as "" and numbers as str(); only text cells need the formula guard.
    return [
        escape_formula(str(row[c])) if c in TEXT_COLUMNS and row[c] is not None else row[c]
        for c in columns
    ]


def to_csv(report: Report) -> str:
    """A header row, one row per group, and the totals as a last row keyed ``total``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    writer.writerows(_csv_values(report.columns, row) for row in report.rows)
    totals = {"key": TOTAL_KEY, "label": "", "name": "", **report.totals}
    writer.writerow(_csv_values(report.columns, totals))
    return out.getvalue()
