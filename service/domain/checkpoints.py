"""Stock checkpoints: the ledger summed at closed period boundaries, so that past valuations
read a checkpoint plus a short ledger tail instead of the whole ledger.

A checkpoint at moment ``at`` holds every (product, location) with stock after all
movements with ``created_at <= at`` (inclusive), and the product's moving-average cost at
that moment: exactly what :func:`service.domain.reports.valuation` needs for a moment at or
after ``at``. It is derived data: the ledger stays the only source of truth, checkpoints
never change once closed, and ``storekeeper stock verify`` recomputes each from the ledger.

**Which moments can be closed.** :func:`service.domain.ledger.post` stamps a movement's
``created_at`` with the clock when it writes, inside a transaction that commits a little
later. A checkpoint is only correct if no movement stamped at or before ``at`` can still
commit after it was closed, so ``at`` must be older than any transaction still in flight
could have stamped: :func:`close` refuses a moment later than now minus
:data:`SAFETY_MARGIN` (far longer than any write transaction may run: requests are bounded
by the database statement and lock timeouts), and on PostgreSQL also refuses while a
transaction that began at or before ``at`` is still open. Closing the same moment again
returns the existing checkpoint (idempotent).

**How often.** A checkpoint holds every (product, location) with stock, however few of them
moved since the last one, so it costs as many rows as the stock levels: closing one a month
keeps them a fraction of the ledger, while a past valuation replays at most a month of
movements. The default moment (the CLI's) is therefore the start of the current UTC month;
``storekeeper stock checkpoint`` can run daily from cron (e.g. at 00:30 UTC, past the margin):
it closes each month once and reports "closed already" on the other days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    except_,
    func,
    insert,
    literal,
    select,
    text,
    type_coerce,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.domain import reports
from service.formats import format_timestamp, utcnow
from service.models import StockCheckpoint, StockCheckpointBalance

# How far in the past a checkpoint's moment must be when it is closed (see above).
SAFETY_MARGIN = timedelta(minutes=10)


class CheckpointRefused(Exception):
    """The moment cannot be closed (yet); the message says why."""


@dataclass
class Closed:
    """A closed checkpoint; ``created`` is False when it existed already."""

    id: int
    at: datetime
    pairs: int
    quantity: int
    created: bool


PERIODS = ("month", "week")


def start_of_period(period: str, now: datetime | None = None) -> datetime:
    """The default checkpoint moment: the start of the current UTC month, or of the current
    ISO week (Monday 00:00 UTC)."""
    now = (now or utcnow()).astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return midnight - timedelta(days=midnight.weekday())
    if period == "month":
        return midnight.replace(day=1)
    raise ValueError(f"period must be one of {PERIODS}")


def _existing(session: Session, at: datetime) -> Closed | None:
    row = session.execute(select(StockCheckpoint).where(StockCheckpoint.at == at)).scalar()
    if row is None:
        return None
    return Closed(row.id, row.at, row.pairs, int(row.quantity), created=False)


def _open_transactions_since(session: Session, at: datetime) -> int:
    """PostgreSQL: other transactions in this database that began at or before ``at``."""
    return session.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND xact_start <= :at"
        ),
        {"at": at},
    ).scalar_one()


def close(
    session: Session,
    at: datetime,
    *,
    now: datetime | None = None,
    margin: timedelta = SAFETY_MARGIN,
) -> Closed:
    """Close the checkpoint at ``at`` in the session's transaction (the caller commits).

    Raises :class:`CheckpointRefused` for a moment that is not old enough.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    at = at.astimezone(UTC)
    now = now or utcnow()
    if at > now - margin:
        raise CheckpointRefused(
            f"{format_timestamp(at)} is too recent: a checkpoint can only be closed for a "
            f"moment at least {margin} in the past (before {format_timestamp(now - margin)}), "
            "so that no write still in flight can add a movement before it"
        )
    existing = _existing(session, at)
    if existing is not None:
        return existing
    if session.get_bind().dialect.name == "postgresql" and _open_transactions_since(session, at):
        raise CheckpointRefused(
            f"a transaction that began at or before {format_timestamp(at)} is still open; "
            "try again once it has finished"
        )
    reports.prepare(session)
    replay = reports.plan_replay(session, at)
    if replay.direction == "now":
        # The levels minus nothing, in the same statement as the rest: one snapshot.
        replay = reports.Replay("backward")
    pairs, costs = reports.holdings(at, replay)
    try:
        with session.begin_nested():
            checkpoint_id = session.execute(
                insert(StockCheckpoint)
                .values(at=at, closed_at=utcnow(), pairs=0, quantity=0)
                .returning(StockCheckpoint.id)
            ).scalar_one()
    except IntegrityError:
        # Closed meanwhile by someone else: the same moment gives the same checkpoint.
        existing = _existing(session, at)
        if existing is None:
            raise
        return existing
    balance = StockCheckpointBalance
    rows = select(
        literal(checkpoint_id, Integer).label("checkpoint_id"),
        pairs.c.product_id,
        pairs.c.location_id,
        pairs.c.on_hand,
        type_coerce(costs.c.cost, BigInteger).label("average_cost"),
    ).join(costs, costs.c.product_id == pairs.c.product_id)
    session.execute(
        insert(balance).from_select(
            ["checkpoint_id", "product_id", "location_id", "on_hand", "average_cost"], rows
        )
    )
    count, quantity = session.execute(
        select(func.count(), func.coalesce(func.sum(balance.on_hand), 0)).where(
            balance.checkpoint_id == checkpoint_id
        )
    ).one()
    checkpoint = session.get(StockCheckpoint, checkpoint_id)
    checkpoint.pairs, checkpoint.quantity = int(count), int(quantity)
    session.flush()
    return Closed(checkpoint_id, at, int(count), int(quantity), created=True)


@dataclass
class CheckpointCheck:
    """One checkpoint compared with the ledger summed up to its moment."""

    id: int
    at: datetime
    pairs: int
    # (product_id, location_id, on_hand, average_cost) rows only the checkpoint has, and
    # rows only the ledger has (a few of each).
    only_in_checkpoint: list[tuple] = field(default_factory=list)
    only_in_ledger: list[tuple] = field(default_factory=list)
    header_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.header_ok and not self.only_in_checkpoint and not self.only_in_ledger


def verify(session: Session, *, examples: int = 5) -> list[CheckpointCheck]:
    """Every checkpoint against the ledger summed forward to its moment (no checkpoint used)."""
    reports.prepare(session)
    balance = StockCheckpointBalance
    checks = []
    for checkpoint in session.scalars(select(StockCheckpoint).order_by(StockCheckpoint.at)):
        pairs, costs = reports.holdings(checkpoint.at, reports.Replay("forward"))
        ledger_rows = select(
            pairs.c.product_id,
            pairs.c.location_id,
            pairs.c.on_hand,
            type_coerce(costs.c.cost, BigInteger),
        ).join(costs, costs.c.product_id == pairs.c.product_id)
        stored = select(
            balance.product_id,
            balance.location_id,
            balance.on_hand,
            type_coerce(balance.average_cost, BigInteger),
        ).where(balance.checkpoint_id == checkpoint.id)
        check = CheckpointCheck(checkpoint.id, checkpoint.at, checkpoint.pairs)
        check.only_in_checkpoint = _rows(session, except_(stored, ledger_rows), examples)
        check.only_in_ledger = _rows(session, except_(ledger_rows, stored), examples)
        count, quantity = session.execute(
            select(func.count(), func.coalesce(func.sum(balance.on_hand), 0)).where(
                balance.checkpoint_id == checkpoint.id
            )
        ).one()
        check.header_ok = (checkpoint.pairs, int(checkpoint.quantity)) == (count, int(quantity))
        checks.append(check)
    return checks


def _rows(session: Session, compound: Any, limit: int) -> list[tuple]:
    found = compound.subquery("differs")
    return [
        tuple(int(v) for v in row)
        for row in session.execute(select(found).order_by(*found.c).limit(limit))
    ]
