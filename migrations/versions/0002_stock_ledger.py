"""stock: locations, ledger, levels, idempotency keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:13:04.636435
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# SQLite batch operations rebuild the table; keep ids from ever being reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("response_headers", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("scope", "key", name=op.f("uq_idempotency_keys_scope_key")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "locations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("code_key", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locations")),
        sa.UniqueConstraint("code_key", name=op.f("uq_locations_code_key")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.create_index("ix_locations_name_id", ["name", "id"], unique=False)
        batch_op.create_index("ix_locations_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_locations_is_active_code_key", ["is_active", "code_key"], unique=False
        )
    op.create_table(
        "stock_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("location_id", sa.Integer(), nullable=True),
        sa.Column("to_location_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('receipt', 'shipment', 'transfer', 'adjustment', 'reversal')",
            name=op.f("ck_stock_documents_kind_known"),
        ),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_stock_documents_location_id_locations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["to_location_id"],
            ["locations.id"],
            name=op.f("fk_stock_documents_to_location_id_locations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_documents")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("stock_documents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stock_documents_created_at_id", ["created_at", "id"], unique=False
        )

    op.create_table(
        "stock_levels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("on_hand >= 0", name=op.f("ck_stock_levels_on_hand_never_negative")),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_stock_levels_location_id_locations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_stock_levels_product_id_products"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_levels")),
        sa.UniqueConstraint(
            "product_id", "location_id", name=op.f("uq_stock_levels_product_id_location_id")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("stock_levels", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stock_levels_location_id_product_id", ["location_id", "product_id"], unique=False
        )

    op.create_table(
        "stock_movements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("unit_cost", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("reversal_of", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('receipt', 'shipment', 'transfer_out', 'transfer_in', 'adjustment', "
            "'reversal')",
            name=op.f("ck_stock_movements_kind_known"),
        ),
        sa.CheckConstraint(
            "reason IS NULL OR reason IN ('count', 'damage', 'loss', 'found', 'other')",
            name=op.f("ck_stock_movements_reason_known"),
        ),
        sa.CheckConstraint(
            "balance_after >= 0", name=op.f("ck_stock_movements_balance_never_negative")
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["stock_documents.id"],
            name=op.f("fk_stock_movements_document_id_stock_documents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_stock_movements_location_id_locations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_stock_movements_product_id_products"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["reversal_of"],
            ["stock_movements.id"],
            name=op.f("fk_stock_movements_reversal_of_stock_movements"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movements")),
        sa.UniqueConstraint("reversal_of", name=op.f("uq_stock_movements_reversal_of")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("stock_movements", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stock_movements_created_at_id", ["created_at", "id"], unique=False
        )
        batch_op.create_index("ix_stock_movements_document_id", ["document_id"], unique=False)
        batch_op.create_index(
            "ix_stock_movements_kind_created_at_id", ["kind", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_stock_movements_location_id_created_at_id",
            ["location_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_stock_movements_product_id_created_at_id",
            ["product_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index("ix_stock_movements_reference", ["reference"], unique=False)

    # Existing products start at a zero average cost.
    with op.batch_alter_table("products", table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column("average_cost", sa.BigInteger(), nullable=True))
    op.execute("UPDATE products SET average_cost = 0")
    with op.batch_alter_table("products", table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.alter_column("average_cost", existing_type=sa.BigInteger(), nullable=False)

    _create_append_only_guard()


def downgrade() -> None:
    _drop_append_only_guard()
    with op.batch_alter_table("products", table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_column("average_cost")

    with op.batch_alter_table("stock_movements", schema=None) as batch_op:
        batch_op.drop_index("ix_stock_movements_reference")
        batch_op.drop_index("ix_stock_movements_product_id_created_at_id")
        batch_op.drop_index("ix_stock_movements_location_id_created_at_id")
        batch_op.drop_index("ix_stock_movements_kind_created_at_id")
        batch_op.drop_index("ix_stock_movements_document_id")
        batch_op.drop_index("ix_stock_movements_created_at_id")

    op.drop_table("stock_movements")
    with op.batch_alter_table("stock_levels", schema=None) as batch_op:
        batch_op.drop_index("ix_stock_levels_location_id_product_id")

    op.drop_table("stock_levels")
    with op.batch_alter_table("stock_documents", schema=None) as batch_op:
        batch_op.drop_index("ix_stock_documents_created_at_id")

    op.drop_table("stock_documents")
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.drop_index("ix_locations_is_active_code_key")
        batch_op.drop_index("ix_locations_created_at_id")
        batch_op.drop_index("ix_locations_name_id")

    op.drop_table("locations")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_expires_at")

    op.drop_table("idempotency_keys")


# The ledger is append-only: the database itself refuses UPDATE and DELETE of movements.
POSTGRESQL_GUARD = """
CREATE FUNCTION stock_movements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stock_movements is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$
"""
SQLITE_GUARDS = {
    "stock_movements_no_update": "UPDATE",
    "stock_movements_no_delete": "DELETE",
}


def _create_append_only_guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_GUARD)
        op.execute(
            "CREATE TRIGGER stock_movements_append_only BEFORE UPDATE OR DELETE "
            "ON stock_movements FOR EACH ROW EXECUTE FUNCTION stock_movements_append_only()"
        )
        return
    for name, operation in SQLITE_GUARDS.items():
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {operation} ON stock_movements "
            "BEGIN SELECT RAISE(ABORT, 'stock_movements is append-only'); END"
        )


def _drop_append_only_guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS stock_movements_append_only ON stock_movements")
        op.execute("DROP FUNCTION IF EXISTS stock_movements_append_only()")
        return
    for name in SQLITE_GUARDS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
