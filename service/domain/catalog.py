"""Catalog rules shared by the API, the import/export and the CLI: the category tree, the
product filters, and the unique-key clash lookup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from service.db import session
from service.models import Category, Product


def descendant_ids(category_id: int) -> Select:
    """A recursive CTE selecting ``category_id`` and every category below it."""
    tree = select(Category.id).where(Category.id == category_id).cte("subtree", recursive=True)
    tree = tree.union_all(select(Category.id).where(Category.parent_id == tree.c.id))
    return select(tree.c.id)


@dataclass(frozen=True)
class ProductFilter:
    """The catalog filters of listProducts and exportProducts (and ``storekeeper export``)."""

    category_id: int | None = None
    include_descendants: bool = False
    is_active: bool | None = None

    def clauses(self) -> list[Any]:
        """The WHERE clauses selecting the products this filter admits."""
        found: list[Any] = []
        if self.category_id is not None:
            if self.include_descendants:
                found.append(Product.category_id.in_(descendant_ids(self.category_id)))
            else:
                found.append(Product.category_id == self.category_id)
        if self.is_active is not None:
            found.append(Product.is_active.is_(self.is_active))
        return found


def find_clash(key_column, key: Any, row: Any) -> int | None:
    """The id of another row whose unique ``key_column`` equals ``key`` (None if free).

    Runs without autoflush, so the pending change to ``row`` is checked before it reaches
    the database's unique constraint (which still catches races: IntegrityError → 409).
    """
    model = key_column.class_
    current = session()
    with current.no_autoflush:
        return current.scalar(select(model.id).where(key_column == key, model.id != (row.id or 0)))
