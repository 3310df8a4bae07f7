"""/api/v1/stock: documents that move stock, the ledger they write, and the levels it sums to."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import request
from sqlalchemy import func, literal, select, tuple_

from service import db, ledger
from service.auth import current_principal
from service.errors import (
    BadRequestProblem,
    UnprocessableProblem,
    parameter_error,
    pointer_error,
)
from service.idempotency import idempotent
from service.models import Product, StockDocument, StockLevel, StockMovement
from service.pagination import (
    Page,
    decode_position,
    encode_cursor,
    list_response,
    paginate,
    sort_keys,
)
from service.responses import json_response
from service.schemas.stock import StockDocumentSchema, StockLevelSchema, StockMovementSchema

MOVEMENT_SORTS = sort_keys(("created_at", StockMovement.created_at, "datetime"))
LEVEL_SORTS = sort_keys(("product_id", StockLevel.product_id, "id"))
ALERT_SORTS = sort_keys(("product_id", Product.id, "id"))


def _created(document: StockDocument):
    body = StockDocumentSchema().dump(document)
    return json_response(body, 201, {"Location": f"/api/v1/stock/documents/{document.id}"})


def _authored(posting: ledger.Posting) -> ledger.Posting:
    """Stamp the caller on the document and its movements."""
    principal = current_principal()
    if principal is not None:
        posting.created_by_user_id = principal.user_id
        if principal.kind == "api_key":
            posting.created_by_api_key_id = principal.credential_id
    return posting


def _quantity_changes(lines, kind: str, location_id: int, sign: int) -> list[ledger.Change]:
    return [
        ledger.Change(
            line_no=index,
            kind=kind,
            product_id=line["product_id"],
            location_id=location_id,
            quantity=sign * line["quantity"],
            unit_cost=Decimal(line["unit_cost"]) if "unit_cost" in line else None,
            pointer=f"/lines/{index}/quantity",
        )
        for index, line in enumerate(lines)
    ]


@idempotent
@db.unit_of_work
def create_receipt(body: dict):
    session = db.session()
    ledger.require_location(session, body["location_id"], "/location_id")
    ledger.require_products(session, body["lines"])
    posting = ledger.Posting(
        kind="receipt",
        changes=_quantity_changes(body["lines"], "receipt", body["location_id"], +1),
        reference=body.get("reference"),
        note=body.get("note"),
        location_id=body["location_id"],
    )
    return _created(ledger.post(session, _authored(posting)))


@idempotent
@db.unit_of_work
def create_shipment(body: dict):
    session = db.session()
    ledger.require_location(session, body["location_id"], "/location_id")
    ledger.require_products(session, body["lines"])
    posting = ledger.Posting(
        kind="shipment",
        changes=_quantity_changes(body["lines"], "shipment", body["location_id"], -1),
        reference=body.get("reference"),
        note=body.get("note"),
        location_id=body["location_id"],
    )
    return _created(ledger.post(session, _authored(posting)))


@idempotent
@db.unit_of_work
def create_transfer(body: dict):
    session = db.session()
    source, target = body["from_location_id"], body["to_location_id"]
    if source == target:
        raise UnprocessableProblem(
            "A transfer needs two different locations.",
            errors=[pointer_error("/to_location_id", "Must differ from from_location_id.")],
        )
    ledger.require_location(session, source, "/from_location_id")
    ledger.require_location(session, target, "/to_location_id")
    ledger.require_products(session, body["lines"])
    changes = []
    for out_leg, in_leg in zip(
        _quantity_changes(body["lines"], "transfer_out", source, -1),
        _quantity_changes(body["lines"], "transfer_in", target, +1),
        strict=True,
    ):
        changes += [out_leg, in_leg]
    posting = ledger.Posting(
        kind="transfer",
        changes=changes,
        reference=body.get("reference"),
        note=body.get("note"),
        location_id=source,
        to_location_id=target,
    )
    return _created(ledger.post(session, _authored(posting)))


@idempotent
@db.unit_of_work
def create_adjustment(body: dict):
    session = db.session()
    location_id = body["location_id"]
    ledger.require_location(session, location_id, "/location_id")
    ledger.require_products(session, body["lines"])
    changes = []
    for index, line in enumerate(body["lines"]):
        counted = line.get("counted_quantity")
        changes.append(
            ledger.Change(
                line_no=index,
                kind="adjustment",
                product_id=line["product_id"],
                location_id=location_id,
                quantity=line.get("quantity_delta", 0),
                counted=counted,
                reason=line["reason"],
                note=line.get("note"),
                pointer=f"/lines/{index}/"
                + ("counted_quantity" if counted is not None else "quantity_delta"),
            )
        )
    posting = ledger.Posting(
        kind="adjustment",
        changes=changes,
        reference=body.get("reference"),
        note=body.get("note"),
        location_id=location_id,
    )
    return _created(ledger.post(session, _authored(posting)))


@idempotent
@db.unit_of_work
def reverse_stock_movement(movement_id: int, body: dict | None = None):
    session = db.session()
    body = body or {}
    posting = ledger.reversal_posting(session, movement_id, body.get("reference"), body.get("note"))
    return _created(ledger.post(session, _authored(posting)))


@db.unit_of_work
def get_stock_document(document_id: int):
    document = db.get_or_404(StockDocument, document_id, "Stock document")
    return json_response(StockDocumentSchema().dump(document))


@db.unit_of_work
def get_stock_movement(movement_id: int):
    movement = db.get_or_404(StockMovement, movement_id, "Stock movement")
    return json_response(StockMovementSchema().dump(movement))


@db.unit_of_work
def list_stock_movements(
    limit: int = 50,
    cursor: str | None = None,
    product_id: int | None = None,
    location_id: int | None = None,
    kind: str | None = None,
    reference: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
):
    stmt = select(StockMovement)
    if product_id is not None:
        stmt = stmt.where(StockMovement.product_id == product_id)
    if location_id is not None:
        stmt = stmt.where(StockMovement.location_id == location_id)
    if kind is not None:
        stmt = stmt.where(StockMovement.kind == kind)
    if reference is not None:
        stmt = stmt.where(StockMovement.reference == reference)
    if created_after is not None:
        stmt = stmt.where(StockMovement.created_at >= _timestamp(created_after, "created_after"))
    if created_before is not None:
        stmt = stmt.where(StockMovement.created_at < _timestamp(created_before, "created_before"))
    page = paginate(
        db.session(),
        stmt,
        sort=MOVEMENT_SORTS["-created_at"],
        id_column=StockMovement.id,
        limit=limit,
        cursor=cursor,
    )
    return list_response(StockMovementSchema(many=True).dump(page.items), page, request.url)


def _timestamp(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequestProblem(
            f"{name} is not an RFC 3339 date-time.",
            errors=[parameter_error(name, "query", "Not an RFC 3339 date-time.")],
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@db.unit_of_work
def list_stock_levels(
    limit: int = 50,
    cursor: str | None = None,
    product_id: int | None = None,
    location_id: int | None = None,
    below_reorder_point: bool | None = None,
):
    stmt = select(StockLevel)
    if product_id is not None:
        stmt = stmt.where(StockLevel.product_id == product_id)
    if location_id is not None:
        stmt = stmt.where(StockLevel.location_id == location_id)
    if below_reorder_point is not None:
        stmt = stmt.join(Product, Product.id == StockLevel.product_id)
        at_or_below = StockLevel.on_hand <= Product.reorder_point
        stmt = stmt.where(at_or_below if below_reorder_point else ~at_or_below)
    # The spec promises "by product then location": keyset on (product_id, location_id),
    # which is unique, rather than on the level's own id (its creation order).
    order = (StockLevel.product_id, StockLevel.location_id)
    if cursor:
        last = decode_position(cursor, LEVEL_SORTS["product_id"])
        stmt = stmt.where(tuple_(*order) > tuple_(*(literal(v) for v in last)))
    rows = db.session().scalars(stmt.order_by(*order).limit(limit + 1)).all()
    levels, more = rows[:limit], len(rows) > limit
    next_cursor = (
        encode_cursor("product_id", [levels[-1].product_id, levels[-1].location_id])
        if more
        else None
    )
    page = Page(items=levels, next_cursor=next_cursor)
    return list_response(StockLevelSchema(many=True).dump(page.items), page, request.url)


@db.unit_of_work
def get_product_stock(product_id: int):
    session = db.session()
    db.get_or_404(Product, product_id, "Product")
    levels = session.scalars(
        select(StockLevel)
        .where(StockLevel.product_id == product_id)
        .order_by(StockLevel.location_id)
    ).all()
    body = {
        "product_id": product_id,
        "total_on_hand": sum(level.on_hand for level in levels),
        "locations": [
            {"location_id": level.location_id, "on_hand": level.on_hand} for level in levels
        ],
    }
    return json_response(body)


@db.unit_of_work
def list_low_stock_alerts(limit: int = 50, cursor: str | None = None):
    total = func.coalesce(func.sum(StockLevel.on_hand), 0).label("total_on_hand")
    stmt = (
        select(Product, total)
        .outerjoin(StockLevel, StockLevel.product_id == Product.id)
        .where(Product.is_active.is_(True), Product.reorder_point > 0)
        .group_by(Product.id)
        .having(total <= Product.reorder_point)
        .order_by(Product.id)
    )
    if cursor:
        _, last_id = decode_position(cursor, ALERT_SORTS["product_id"])
        stmt = stmt.where(Product.id > last_id)
    rows = db.session().execute(stmt.limit(limit + 1)).all()
    page_rows, more = rows[:limit], len(rows) > limit
    items = [_alert(product, int(on_hand)) for product, on_hand in page_rows]
    next_cursor = (
        encode_cursor("product_id", [page_rows[-1][0].id, page_rows[-1][0].id]) if more else None
    )
    return list_response(items, Page(items=items, next_cursor=next_cursor), request.url)


def _alert(product: Product, on_hand: int) -> dict[str, Any]:
    return {
        "product_id": product.id,
        "sku": product.sku,
        "name": product.name,
        "total_on_hand": on_hand,
        "reorder_point": product.reorder_point,
        "reorder_quantity": product.reorder_quantity,
        "suggested_reorder_quantity": max(
            product.reorder_quantity, product.reorder_point - on_hand
        ),
    }
