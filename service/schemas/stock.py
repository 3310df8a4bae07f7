from __future__ import annotations

from marshmallow import fields

from service.models import StockDocument, StockLevel, StockMovement
from service.schemas.base import OutputSchema


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
