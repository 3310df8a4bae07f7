"""/api/v1/categories: the category tree."""

from __future__ import annotations

from sqlalchemy import func, select

from service import db
from service.api import transaction
from service.api.conditional import not_modified, require_match, resource_response
from service.api.pagination import paginated, sort_keys
from service.api.responses import empty_response
from service.domain.catalog import descendant_ids, find_clash
from service.models import Category, Product
from service.models.category import sibling_key
from service.problems import ConflictProblem, UnprocessableProblem, pointer_error
from service.schemas.category import CategoryInputSchema, CategorySchema
from service.schemas.rows import RowShape

CATEGORY_ROWS = RowShape(CategorySchema(), Category)
SORTS = sort_keys(("name", Category.name), ("created_at", Category.created_at, "datetime"))


def _location(category: Category) -> str:
    return f"/api/v1/categories/{category.id}"


def _check_parent(category: Category | None, parent_id: int | None) -> None:
    if parent_id is None:
        return
    session = db.session()
    if session.get(Category, parent_id) is None:
        raise UnprocessableProblem(
            f"Parent category {parent_id} does not exist.",
            errors=[pointer_error("/parent_id", "No category has this id.")],
        )
    if category is not None and category.id is not None:
        below = set(session.scalars(descendant_ids(category.id)))
        if parent_id in below:
            raise UnprocessableProblem(
                "A category cannot be moved below itself or one of its descendants.",
                errors=[pointer_error("/parent_id", "Would create a cycle in the tree.")],
            )


def _check_unique_name(category: Category) -> None:
    clash = find_clash(
        Category.sibling_key, sibling_key(category.parent_id, category.name), category
    )
    if clash is not None:
        where = f"category {category.parent_id}" if category.parent_id else "the top level"
        raise ConflictProblem(
            "duplicate-category-name",
            f"A category named {category.name!r} already exists under {where} (id {clash}).",
            conflicting_id=clash,
        )


@transaction.unit_of_work
def list_categories(
    limit: int = 50,
    cursor: str | None = None,
    parent_id: int | None = None,
    top_level: bool | None = None,
    q: str | None = None,
    sort: str = "name",
):
    stmt = CATEGORY_ROWS.select()
    if parent_id is not None:
        stmt = stmt.where(Category.parent_id == parent_id)
    if top_level is not None:
        stmt = stmt.where(
            Category.parent_id.is_(None) if top_level else Category.parent_id.is_not(None)
        )
    if q:
        stmt = stmt.where(Category.name.icontains(q, autoescape=True))
    return paginated(
        stmt,
        sort=SORTS[sort],
        id_column=Category.id,
        limit=limit,
        cursor=cursor,
        dump=CATEGORY_ROWS.dump,
    )


@transaction.unit_of_work
def create_category(body: dict):
    session = db.session()
    category = CategoryInputSchema().load(body, session=session)
    _check_parent(None, category.parent_id)
    _check_unique_name(category)
    session.add(category)
    session.flush()
    return resource_response(CategorySchema().dump(category), category, 201, _location(category))


@transaction.unit_of_work
def get_category(category_id: int):
    category = transaction.get_or_404(Category, category_id, "Category")
    return not_modified(category) or resource_response(CategorySchema().dump(category), category)


@transaction.unit_of_work
def update_category(category_id: int, body: dict):
    session = db.session()
    category = transaction.get_or_404(Category, category_id, "Category")
    require_match(category)
    if "parent_id" in body:
        _check_parent(category, body["parent_id"])
    CategoryInputSchema().load(body, instance=category, partial=True, session=session)
    _check_unique_name(category)
    session.flush()
    return resource_response(CategorySchema().dump(category), category)


@transaction.unit_of_work
def delete_category(category_id: int):
    session = db.session()
    category = transaction.get_or_404(Category, category_id, "Category")
    require_match(category)
    children = session.scalar(
        select(func.count()).select_from(Category).where(Category.parent_id == category_id)
    )
    products = session.scalar(
        select(func.count()).select_from(Product).where(Product.category_id == category_id)
    )
    if children or products:
        blockers = []
        if children:
            blockers.append(f"{children} subcategor{'y' if children == 1 else 'ies'}")
        if products:
            blockers.append(f"{products} product{'' if products == 1 else 's'}")
        raise ConflictProblem(
            "category-in-use",
            f"Category {category_id} still has {' and '.join(blockers)}; move or delete "
            "them first.",
            blocking={"subcategories": children, "products": products},
        )
    session.delete(category)
    return empty_response()
