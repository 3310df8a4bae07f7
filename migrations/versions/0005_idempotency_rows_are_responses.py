"""idempotency keys: a row is a stored response; no committed "in progress" claim

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:30:00.000000

A request now holds its Idempotency-Key in its own transaction (an advisory lock on
PostgreSQL, the write transaction itself on SQLite) and inserts the row only with its
response, so ``state`` goes and the response columns become NOT NULL. Rows still
``in_progress`` are claims of the old mechanism, never responses: they are deleted (their
requests either died or, during an online upgrade, fail as they try to complete one).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM idempotency_keys WHERE state <> 'completed'"))
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("state")
        batch_op.alter_column("response_status", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("response_body", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("response_headers", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("response_headers", existing_type=sa.Text(), nullable=True)
        batch_op.alter_column("response_body", existing_type=sa.Text(), nullable=True)
        batch_op.alter_column("response_status", existing_type=sa.Integer(), nullable=True)
        # Every row is a stored response: "completed" in the old vocabulary.
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="completed")
        )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("state", existing_type=sa.String(length=16), server_default=None)
