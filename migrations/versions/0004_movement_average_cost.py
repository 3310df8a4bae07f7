"""stock movements record the moving-average cost after them, indexed for reports

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00.000000

``stock_movements.average_cost_after`` is the product's moving-average unit cost right after
the movement was posted. Existing rows are backfilled by replaying each product's movements
in id order with the ledger's formula (copied here: a migration must not change meaning when
the service code changes later).
"""

from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_EVEN, Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SQLITE_GUARDS = {
    "stock_movements_no_update": "UPDATE",
    "stock_movements_no_delete": "DELETE",
}
POSTGRESQL_GUARD = "stock_movements_append_only"

COST_PLACES = Decimal("0.000001")
UNIT_COST_SCALE = 4  # stock_movements.unit_cost: 4 decimal places, stored scaled
AVERAGE_COST_SCALE = 6  # average costs: 6 decimal places, stored scaled
BATCH = 5000


def upgrade() -> None:
    op.add_column(
        "stock_movements", sa.Column("average_cost_after", sa.BigInteger(), nullable=True)
    )
    _lift_append_only_guard()
    _backfill_average_cost_after()
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild_with_required_average_cost()
    else:
        op.alter_column("stock_movements", "average_cost_after", nullable=False)
    _restore_append_only_guard()
    # The per-product index also carries the cost: the valuation report probes a product's
    # cost at a moment index-only. It replaces the (product_id, created_at, id) index.
    op.create_index(
        "ix_stock_movements_product_id_created_at_id_average_cost_after",
        "stock_movements",
        ["product_id", "created_at", "id", "average_cost_after"],
    )
    op.drop_index("ix_stock_movements_product_id_created_at_id", "stock_movements")


def downgrade() -> None:
    op.create_index(
        "ix_stock_movements_product_id_created_at_id",
        "stock_movements",
        ["product_id", "created_at", "id"],
    )
    op.drop_index(
        "ix_stock_movements_product_id_created_at_id_average_cost_after", "stock_movements"
    )
    # Native DROP COLUMN on both (SQLite >= 3.35): no table rebuild, the triggers stay.
    op.drop_column("stock_movements", "average_cost_after")
    _restore_append_only_guard()


def _sqlite_rebuild_with_required_average_cost() -> None:
    """SQLite cannot add NOT NULL to a column: rebuild the table, renaming the old one first.

    alembic's batch mode copies into a new table, drops the old one and renames the copy;
    with foreign keys on (they cannot be switched off inside the migration's transaction)
    the copy's reversal_of rows still reference the old table, which then cannot be
    dropped. Renamed first, the old table takes its self-references along, and the new
    one is created under the final name, referencing itself.
    """
    bind = op.get_bind()
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'stock_movements'"
    ).scalar_one()
    index_sql = (
        bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'stock_movements' AND sql IS NOT NULL"
        )
        .scalars()
        .all()
    )
    sequence = bind.exec_driver_sql(
        "SELECT seq FROM sqlite_sequence WHERE name = 'stock_movements'"
    ).scalar()
    required_sql = table_sql.replace(
        "average_cost_after BIGINT", "average_cost_after BIGINT NOT NULL", 1
    )
    if required_sql == table_sql:
        raise RuntimeError("stock_movements.average_cost_after not found in the table's SQL")
    op.execute("ALTER TABLE stock_movements RENAME TO stock_movements_before_0004")
    op.execute(required_sql)
    op.execute("INSERT INTO stock_movements SELECT * FROM stock_movements_before_0004")
    # Dropping a table deletes its rows first, in id order, and reversal_of is ON DELETE
    # RESTRICT (checked row by row): take the reversals out before what they reverse.
    op.execute("DELETE FROM stock_movements_before_0004 WHERE reversal_of IS NOT NULL")
    op.execute("DROP TABLE stock_movements_before_0004")
    for sql in index_sql:
        op.execute(sql)
    if sequence is not None:
        op.execute(
            sa.text(
                "UPDATE sqlite_sequence SET seq = :seq WHERE name = 'stock_movements'"
            ).bindparams(seq=sequence)
        )


# --- the append-only guard -----------------------------------------------------------------


def _lift_append_only_guard() -> None:
    """The backfill is the one UPDATE the ledger ever gets, inside this migration only."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE stock_movements DISABLE TRIGGER {POSTGRESQL_GUARD}")
        return
    for name in SQLITE_GUARDS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def _restore_append_only_guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE stock_movements ENABLE TRIGGER {POSTGRESQL_GUARD}")
        return
    for name, operation in SQLITE_GUARDS.items():
        op.execute(
            f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {operation} ON stock_movements "
            "BEGIN SELECT RAISE(ABORT, 'stock_movements is append-only'); END"
        )


# --- the backfill --------------------------------------------------------------------------


def moving_average(old_avg: Decimal, old_total: int, quantity: int, cost: Decimal) -> Decimal:
    """service.domain.ledger.moving_average as of this revision."""
    new_total = old_total + quantity
    if new_total <= 0:
        return old_avg  # nothing left to value: keep the last known cost
    value = old_avg * old_total + cost * quantity
    return max(Decimal(0), value / new_total).quantize(COST_PLACES, rounding=ROUND_HALF_EVEN)


def _costed_averages(bind: sa.Connection) -> Iterator[dict[str, int]]:
    """(product, movement, scaled average) after every movement that carries a unit cost.

    Replays each product's movements in id order (the order they were posted under the
    product's lock), keeping the product's total on-hand over all locations, as the ledger
    does when it posts.
    """
    rows = bind.execute(
        sa.text(
            "SELECT id, product_id, quantity, unit_cost FROM stock_movements "
            "ORDER BY product_id, id"
        ).execution_options(stream_results=True, yield_per=BATCH)
    )
    product_id, average, total = None, Decimal(0), 0
    for movement_id, movement_product_id, quantity, unit_cost in rows:
        if movement_product_id != product_id:
            product_id, average, total = movement_product_id, Decimal(0), 0
        if unit_cost is not None:
            cost = Decimal(int(unit_cost)).scaleb(-UNIT_COST_SCALE)
            average = moving_average(average, total, quantity, cost)
            yield {
                "product_id": product_id,
                "movement_id": movement_id,
                "average_cost": int(average.scaleb(AVERAGE_COST_SCALE)),
            }
        total += quantity


def _backfill_average_cost_after() -> None:
    """Average after every costed movement, then every row takes its latest costed one."""
    bind = op.get_bind()
    costs = sa.Table(
        "average_cost_backfill",
        sa.MetaData(),
        sa.Column("product_id", sa.Integer(), primary_key=True),
        sa.Column("movement_id", sa.Integer(), primary_key=True),
        sa.Column("average_cost", sa.BigInteger(), nullable=False),
        prefixes=["TEMPORARY"],
    )
    costs.create(bind)
    batch: list[dict[str, int]] = []
    for row in _costed_averages(bind):
        batch.append(row)
        if len(batch) >= BATCH:
            bind.execute(costs.insert(), batch)
            batch.clear()
    if batch:
        bind.execute(costs.insert(), batch)
    # Movements before a product's first receipt keep its starting average, zero.
    op.execute(
        "UPDATE stock_movements SET average_cost_after = COALESCE(("
        " SELECT c.average_cost FROM average_cost_backfill c"
        " WHERE c.product_id = stock_movements.product_id"
        " AND c.movement_id <= stock_movements.id"
        " ORDER BY c.movement_id DESC LIMIT 1), 0)"
    )
    costs.drop(bind)
