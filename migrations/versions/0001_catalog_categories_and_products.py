"""catalog: categories and products

Revision ID: 0001
Revises:
Create Date: 2026-11-22 01:51:26.723713
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # Trigram indexes serve the case-insensitive substring search (`q`).
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "categories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("sibling_key", sa.String(length=400), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "parent_id IS NULL OR parent_id <> id", name=op.f("ck_categories_not_own_parent")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["categories.id"],
            name=op.f("fk_categories_parent_id_categories"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_categories")),
        sa.UniqueConstraint("sibling_key", name=op.f("uq_categories_sibling_key")),
        # Never reuse a deleted row's id (ids are in ETags and URLs).
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("categories", schema=None) as batch_op:
        batch_op.create_index("ix_categories_name_id", ["name", "id"], unique=False)
        batch_op.create_index(
            "ix_categories_parent_id_name_id", ["parent_id", "name", "id"], unique=False
        )
    if postgresql:
        op.create_index(
            "ix_categories_name_trgm",
            "categories",
            ["name"],
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        )

    op.create_table(
        "products",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("sku_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category_id", sa.Integer(), nullable=True),
        sa.Column("unit_of_measure", sa.String(length=16), nullable=False),
        sa.Column("reorder_point", sa.Integer(), nullable=False),
        sa.Column("reorder_quantity", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "reorder_point >= 0", name=op.f("ck_products_reorder_point_non_negative")
        ),
        sa.CheckConstraint(
            "reorder_quantity >= 0", name=op.f("ck_products_reorder_quantity_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["categories.id"],
            name=op.f("fk_products_category_id_categories"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint("sku_key", name=op.f("uq_products_sku_key")),
        # Never reuse a deleted row's id (ids are in ETags and URLs).
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index(
            "ix_products_category_id_name_id", ["category_id", "name", "id"], unique=False
        )
        batch_op.create_index("ix_products_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_products_is_active_name_id", ["is_active", "name", "id"], unique=False
        )
        batch_op.create_index("ix_products_name_id", ["name", "id"], unique=False)
    if postgresql:
        for column in ("name", "sku"):
            op.create_index(
                f"ix_products_{column}_trgm",
                "products",
                [column],
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            )


def downgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index("ix_products_name_id")
        batch_op.drop_index("ix_products_is_active_name_id")
        batch_op.drop_index("ix_products_created_at_id")
        batch_op.drop_index("ix_products_category_id_name_id")

    op.drop_table("products")
    with op.batch_alter_table("categories", schema=None) as batch_op:
        batch_op.drop_index("ix_categories_parent_id_name_id")
        batch_op.drop_index("ix_categories_name_id")

    op.drop_table("categories")
