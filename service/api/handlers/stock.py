"""/api/v1/stock: documents that move stock, the ledger they write, and the levels it sums to."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from service import db
from service.api import transaction
from service.api.idempotency import idempotent
from service.api.pagination import (
    Keyset,
    paginated,
    sort_keys,
)
from service.api.params import timestamp_parameter
from service.api.responses import json_response
from service.api.security import current_principal
from service.domain import ledger
from service.models import Product, StockDocument, StockLevel, StockMovement
from service.problems import (
    UnprocessableProblem,
    pointer_error,
)
from service.schemas.rows import RowShape
from service.schemas.stock import (
    MOVEMENT_ROWS,
    StockDocumentSchema,
    StockLevelSchema,
    StockMovementSchema,
    document_body,
    low_stock_alert,
)

LEVEL_ROWS = RowShape(StockLevelSchema(), StockLevel)
MOVEMENT_SORTS = sort_keys(("created_at", StockMovement.created_at, "datetime"))
# The spec promises levels "by product then location": (product_id, location_id) is unique.
LEVEL_ORDER = Keyset.of_ids("product_id", StockLevel.product_id, StockLevel.location_id)
ALERT_ORDER = Keyset.of_ids("product_id", Product.id)


def _created(posted: ledger.Posted):
    body = document_body(posted.document, posted.movements)
    return json_response(body, 201, {"Location": f"/api/v1/stock/documents/{posted.id}"})


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


@transaction.unit_of_work
@idempotent
def create_receipt(body: dict):
    session = db.session()
    ledger.require_location(session, body["location_id"], "/location_id")
    posting = ledger.Posting(
        kind="receipt",
        changes=_quantity_changes(body["lines"], "receipt", body["location_id"], +1),
        reference=body.get("reference"),
        note=body.get("note"),
        location_id=body["location_id"],
    )
    return _created(ledger.post(session, _authored(posting)))


@transaction.unit_of_work
@idempotent
def create_shipment(body: dict):
    session = db.session()
    ledger.require_location(session, body["location_id"], "/location_id")
    posting = ledger.Posting(
        kind="shipment",
        changes=_quantity_changes(body["lines"], "shipment", body["location_id"], -1),
        reference=body.get("reference"),
        note=body.get("note"),
        location_id=body["location_id"],
    )
    return _created(ledger.post(session, _authored(posting)))


@transaction.unit_of_work
@idempotent
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


@transaction.unit_of_work
@idempotent
def create_adjustment(body: dict):
    session = db.session()
    location_id = body["location_id"]
    ledger.require_location(session, location_id, "/location_id")
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


@transaction.unit_of_work
@idempotent
def reverse_stock_movement(movement_id: int, body: dict | None = None):
    session = db.session()
    body = body or {}
    posting = ledger.reversal_posting(session, movement_id, body.get("reference"), body.get("note"))
    return _created(ledger.post(session, _authored(posting)))


@transaction.unit_of_work
def get_stock_document(document_id: int):
    document = transaction.get_or_404(StockDocument, document_id, "Stock document")
    return json_response(StockDocumentSchema().dump(document))


@transaction.unit_of_work
def get_stock_movement(movement_id: int):
    movement = transaction.get_or_404(StockMovement, movement_id, "Stock movement")
    return json_response(StockMovementSchema().dump(movement))


@transaction.unit_of_work
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
    stmt = db.where_equal(
        MOVEMENT_ROWS.select(),
        (StockMovement.product_id, product_id),
        (StockMovement.location_id, location_id),
        (StockMovement.kind, kind),
        (StockMovement.reference, reference),
    )
    if created_after is not None:
        stmt = stmt.where(
            StockMovement.created_at >= timestamp_parameter(created_after, "created_after")
        )
    if created_before is not None:
        stmt = stmt.where(
            StockMovement.created_at < timestamp_parameter(created_before, "created_before")
        )
    return paginated(
        stmt,
        sort=MOVEMENT_SORTS["-created_at"],
        id_column=StockMovement.id,
        limit=limit,
        cursor=cursor,
        dump=MOVEMENT_ROWS.dump,
    )


@transaction.unit_of_work
def list_stock_levels(
    limit: int = 50,
    cursor: str | None = None,
    product_id: int | None = None,
    location_id: int | None = None,
    below_reorder_point: bool | None = None,
):
    stmt = db.where_equal(
        LEVEL_ROWS.select(),
        (StockLevel.product_id, product_id),
        (StockLevel.location_id, location_id),
    )
    if below_reorder_point is not None:
        stmt = stmt.join(Product, Product.id == StockLevel.product_id)
        at_or_below = StockLevel.on_hand <= Product.reorder_point
        stmt = stmt.where(at_or_below if below_reorder_point else ~at_or_below)
    return paginated(stmt, sort=LEVEL_ORDER, limit=limit, cursor=cursor, dump=LEVEL_ROWS.dump)


@transaction.unit_of_work
def get_product_stock(product_id: int):
    session = db.session()
    transaction.get_or_404(Product, product_id, "Product")
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


@transaction.unit_of_work
def list_low_stock_alerts(limit: int = 50, cursor: str | None = None):
    total = func.coalesce(func.sum(StockLevel.on_hand), 0).label("total_on_hand")
    stmt = (
        select(Product.__table__, total)
        .outerjoin(StockLevel, StockLevel.product_id == Product.id)
        .where(Product.is_active.is_(True), Product.reorder_point > 0)
        .group_by(Product.id)
        .having(total <= Product.reorder_point)
    )
    return paginated(stmt, sort=ALERT_ORDER, limit=limit, cursor=cursor, dump=_alerts)


def _alerts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [low_stock_alert(row, int(row.total_on_hand)) for row in rows]
