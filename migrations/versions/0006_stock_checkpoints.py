"""stock checkpoints: the ledger summed at closed period boundaries, for past valuations

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 19:00:00.000000

``stock_checkpoints`` has one row per closed moment (``storekeeper stock checkpoint``),
``stock_checkpoint_balances`` the (product, location) pairs held then, with their on-hand
and the product's average cost at that moment. Both are derived from the append-only
ledger and can be rebuilt from it; the ledger itself is untouched. The ledger tail after a
checkpoint is read through the existing ``ix_stock_movements_created_at_id``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stock_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_checkpoints")),
        sa.UniqueConstraint("at", name=op.f("uq_stock_checkpoints_at")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "stock_checkpoint_balances",
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("average_cost", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "on_hand > 0", name=op.f("ck_stock_checkpoint_balances_on_hand_positive")
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["stock_checkpoints.id"],
            name=op.f("fk_stock_checkpoint_balances_checkpoint_id_stock_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "checkpoint_id",
            "product_id",
            "location_id",
            name=op.f("pk_stock_checkpoint_balances"),
        ),
    )


def downgrade() -> None:
    op.drop_table("stock_checkpoint_balances")
    op.drop_table("stock_checkpoints")
