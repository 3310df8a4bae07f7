from __future__ import annotations

from typing import Any

from marshmallow import fields

from service.models import StockDocument, StockLevel, StockMovement
from service.schemas.base import OutputSchema
from service.schemas.rows import RowShape


class StockMovementSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = StockMovement
        # average_cost_after feeds the valuation report (service/domain/reports.py); the contract's
        # movement does not carry it.
        exclude = ("line_no", "average_cost_after")

    unit_cost = fields.Decimal(places=4, as_string=True, allow_none=True)


class StockDocumentSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = StockDocument

    movements = fields.List(fields.Nested(StockMovementSchema))


class StockLevelSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = StockLevel
        exclude = ("id",)


MOVEMENT_ROWS = RowShape(StockMovementSchema(), StockMovement)
# A document as StockDocumentSchema dumps it: its movements first, then its own columns.
DOCUMENT_ROWS = RowShape(StockDocumentSchema(exclude=("movements",)), StockDocument)


def document_body(document: Any, movements: list[Any]) -> dict[str, Any]:
    """A posted document from the rows its statements returned, as StockDocumentSchema
    dumps it (the 201 answer, and the data of its ``stock.document.posted`` event)."""
    return {"movements": MOVEMENT_ROWS.dump(movements), **DOCUMENT_ROWS.dump_one(document)}


def low_stock_alert(product: Any, on_hand: int) -> dict[str, Any]:
    """A low-stock alert from a product row (plain columns) and its total on hand."""
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
