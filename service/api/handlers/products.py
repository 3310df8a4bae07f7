"""/api/v1/products: the catalog, and its bulk import and export."""

from __future__ import annotations

from flask import Response, request
from sqlalchemy import func, or_, select

from service import db
from service.api import transaction
from service.api.conditional import not_modified, require_match, resource_response
from service.api.middleware.disconnect import disconnected_event
from service.api.pagination import paginated, sort_keys
from service.api.responses import empty_response, json_response, negotiate
from service.domain import product_io
from service.domain.catalog import ProductFilter, find_clash
from service.formats import MULTIPART
from service.models import Category, Product, StockMovement
from service.models.product import sku_key
from service.problems import (
    BodyErrorsProblem,
    ConflictProblem,
    UnprocessableProblem,
    UnsupportedMediaTypeProblem,
    pointer_error,
)
from service.schemas.product import PRODUCT_ROWS, ProductInputSchema, ProductSchema

SORTS = sort_keys(
    ("name", Product.name),
    ("sku", Product.sku_key),
    ("created_at", Product.created_at, "datetime"),
)


def _location(product: Product) -> str:
    return f"/api/v1/products/{product.id}"


def _check_category(category_id: int | None) -> None:
    if category_id is not None and db.session().get(Category, category_id) is None:
        raise UnprocessableProblem(
            f"Category {category_id} does not exist.",
            errors=[pointer_error("/category_id", "No category has this id.")],
        )


def _check_unique_sku(product: Product) -> None:
    clash = find_clash(Product.sku_key, sku_key(product.sku), product)
    if clash is not None:
        raise ConflictProblem(
            "duplicate-sku",
            f"SKU {product.sku!r} is already used by product {clash} (SKUs are unique "
            "regardless of case).",
            conflicting_id=clash,
        )


@transaction.unit_of_work
def list_products(
    limit: int = 50,
    cursor: str | None = None,
    category_id: int | None = None,
    include_descendants: bool = False,
    is_active: bool | None = None,
    q: str | None = None,
    sort: str = "name",
):
    stmt = PRODUCT_ROWS.select().where(
        *ProductFilter(category_id, include_descendants, is_active).clauses()
    )
    if q:
        stmt = stmt.where(
            or_(
                Product.sku.icontains(q, autoescape=True),
                Product.name.icontains(q, autoescape=True),
            )
        )
    return paginated(
        stmt,
        sort=SORTS[sort],
        id_column=Product.id,
        limit=limit,
        cursor=cursor,
        dump=PRODUCT_ROWS.dump,
    )


@transaction.unit_of_work
def create_product(body: dict):
    session = db.session()
    product = ProductInputSchema().load(body, session=session)
    _check_category(product.category_id)
    _check_unique_sku(product)
    session.add(product)
    session.flush()
    return resource_response(ProductSchema().dump(product), product, 201, _location(product))


@transaction.unit_of_work
def get_product(product_id: int):
    product = transaction.get_or_404(Product, product_id, "Product")
    return not_modified(product) or resource_response(ProductSchema().dump(product), product)


@transaction.unit_of_work
def update_product(product_id: int, body: dict):
    session = db.session()
    product = transaction.get_or_404(Product, product_id, "Product")
    require_match(product)
    if "category_id" in body:
        _check_category(body["category_id"])
    ProductInputSchema().load(body, instance=product, partial=True, session=session)
    _check_unique_sku(product)
    session.flush()
    return resource_response(ProductSchema().dump(product), product)


@transaction.unit_of_work
def delete_product(product_id: int):
    session = db.session()
    product = transaction.get_or_404(Product, product_id, "Product")
    require_match(product)
    movements = session.scalar(
        select(func.count())
        .select_from(StockMovement)
        .where(StockMovement.product_id == product_id)
    )
    if movements:
        raise ConflictProblem(
            "product-has-stock-history",
            f"Product {product_id} has {movements} stock movement(s); the ledger keeps its "
            "history. Archive it with is_active=false instead.",
            blocking={"movements": movements},
        )
    session.delete(product)
    return empty_response()


def export_products(
    category_id: int | None = None,
    include_descendants: bool = False,
    is_active: bool | None = None,
):
    """Streams the export from its own snapshot connection (not the request's session,
    which is closed before the body is sent), on the read replica when it is current."""
    media_type = negotiate(request.headers.get("Accept"))
    gone = disconnected_event(request.environ.get("asgi.scope"))
    filters = ProductFilter(category_id, include_descendants, is_active)
    # The first chunk opens the snapshot now: a database error is still a problem answer,
    # not a download cut short.
    first, chunks, source = transaction.get_database().stream_on_replica(
        lambda engine: product_io.export_stream(
            engine, media_type, filters, stop=gone.is_set if gone is not None else None
        )
    )
    return Response(
        _prepend(first, chunks),
        status=200,
        mimetype=media_type,
        headers={
            "Content-Disposition": (
                f'attachment; filename="{product_io.export_filename(media_type)}"'
            ),
            "Vary": "Accept",
            transaction.DATA_SOURCE_HEADER: source,
        },
    )


def _prepend(first: bytes, rest):
    try:
        yield first
        yield from rest
    finally:
        rest.close()  # the client went away or the body ended: release the connection


# The one part of importProductsCsv's form.
CSV_PART = "file"


def import_products(body, dry_run: bool = False):
    """Parse and check outside the transaction, then plan and write inside one.

    Every row is checked here, also after connexion's validation (cheaply: valid rows pass
    the quick check). A body of any other media type, or of none, is refused here too, not
    only by the middleware.
    """
    if request.mimetype != product_io.JSON:
        raise UnsupportedMediaTypeProblem(request.mimetype or None, (product_io.JSON,))
    # The parsed array, or the raw bytes (parsed by the import's own bounded reader).
    parsed = product_io.parse_json(body if isinstance(body, list) else request.get_data())
    return _import(parsed, dry_run)


def import_products_csv(dry_run: bool = False):
    """The uploaded file's rows, parsed and checked like the CLI's, then as import_products.

    Request validation has checked the form (one ``file`` part and nothing else; a part
    without a filename valid UTF-8); the media type and the part are checked here again.
    """
    if request.mimetype != MULTIPART:
        raise UnsupportedMediaTypeProblem(request.mimetype or None, (MULTIPART,))
    return _import(product_io.parse_csv(_uploaded_file()), dry_run)


def _uploaded_file() -> bytes:
    """The bytes of the form's ``file`` part: a file (werkzeug spooled it to disk), or, sent
    without a filename, text that werkzeug decoded as UTF-8 (which validation checked)."""
    files = request.files.getlist(CSV_PART)
    texts = request.form.getlist(CSV_PART)
    if len(files) + len(texts) != 1:
        raise BodyErrorsProblem(
            [
                pointer_error(
                    f"/{CSV_PART}",
                    f"Send the CSV file as one part named {CSV_PART!r}; the form has "
                    f"{len(files) + len(texts)}.",
                )
            ]
        )
    return files[0].read() if files else texts[0].encode("utf-8")


@transaction.unit_of_work
def _import(parsed: product_io.ParsedImport, dry_run: bool):
    return json_response(product_io.import_rows(db.session(), parsed, dry_run=dry_run))
