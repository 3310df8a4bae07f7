"""64-bit ledger ids: stock documents, stock movements and every column holding their ids

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00.000000

At a billion movements a year, 32-bit ids run out in about two years. On PostgreSQL
``stock_documents.id``, ``stock_movements.id``, ``stock_movements.document_id`` and
``stock_movements.reversal_of`` become BIGINT, and the two SERIAL sequences behind the ids
(``AS integer``, MAXVALUE 2^31-1) become ``AS bigint``. No other table stores a document or
movement id (idempotency rows keep whole responses as text; checkpoints are keyed by time).

``ALTER COLUMN ... TYPE`` rewrites each table under an ACCESS EXCLUSIVE lock: writers and
readers of the ledger wait for the whole rewrite, so on a large ledger run it in a
maintenance window.

SQLite needs no change: its INTEGER is already 64-bit, and the ids stay ``INTEGER PRIMARY
KEY`` (the rowid, the only spelling that autoincrements).

The downgrade narrows back, and refuses while any id, reference or sequence is beyond
2^31-1: such rows cannot be stored in (or served by) the 32-bit schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# table: its columns holding a document or movement id (its own id first).
LEDGER_ID_COLUMNS = {
    "stock_documents": ("id",),
    "stock_movements": ("id", "document_id", "reversal_of"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: INTEGER is 64-bit already (see the docstring)
    _retype("bigint", INT64_MAX)


def downgrade() -> None:
    too_wide = _ids_beyond_int32()
    if too_wide:
        raise RuntimeError(
            "Refusing to downgrade below 0007: 32-bit ledger ids cannot hold "
            + "; ".join(too_wide)
            + f" (beyond {INT32_MAX}). Those documents and movements exist only in the "
            "64-bit schema; restore a backup taken before the ids passed 2^31-1 instead."
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    _retype("integer", INT32_MAX)


def _retype(sql_type: str, max_value: int) -> None:
    """Every ledger id column, then the id sequences, to ``sql_type`` (PostgreSQL)."""
    for table, columns in LEDGER_ID_COLUMNS.items():
        # One ALTER TABLE per table: one rewrite, however many columns change.
        changes = ", ".join(f"ALTER COLUMN {column} TYPE {sql_type}" for column in columns)
        op.execute(f"ALTER TABLE {table} {changes}")
    for _table, sequence in _sequences():
        op.execute(f"ALTER SEQUENCE {sequence} AS {sql_type} MAXVALUE {max_value}")


def _sequences() -> list[tuple[str, str]]:
    """(table, sequence) behind each ledger id; SERIAL columns, so pg_get_serial_sequence."""
    bind = op.get_bind()
    found = []
    for table in LEDGER_ID_COLUMNS:
        sequence = bind.execute(
            sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table}
        ).scalar_one()
        if sequence is None:
            raise RuntimeError(f"{table}.id has no sequence; expected a SERIAL column")
        found.append((table, sequence))
    return found


def _ids_beyond_int32() -> list[str]:
    """What a 32-bit schema could not hold: each column's (and sequence's) highest value."""
    bind = op.get_bind()
    found = []
    for table, columns in LEDGER_ID_COLUMNS.items():
        for column in columns:
            highest = bind.execute(sa.text(f"SELECT MAX({column}) FROM {table}")).scalar()
            if highest is not None and highest > INT32_MAX:
                found.append(f"{table}.{column} = {highest}")
    # A sequence already past the bound would hand out such an id next (and PostgreSQL
    # refuses to narrow it).
    if bind.dialect.name == "postgresql":
        for table, sequence in _sequences():
            last = bind.execute(sa.text(f"SELECT last_value FROM {sequence}")).scalar()
            if last is not None and last > INT32_MAX:
                found.append(f"the {table} id sequence at {last}")
    else:
        rows = bind.execute(
            sa.text("SELECT name, seq FROM sqlite_sequence WHERE name IN (:d, :m)"),
            {"d": "stock_documents", "m": "stock_movements"},
        ).all()
        found.extend(f"the {name} id sequence at {seq}" for name, seq in rows if seq > INT32_MAX)
    return found
