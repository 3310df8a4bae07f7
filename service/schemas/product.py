from __future__ import annotations

from marshmallow import fields

from service.models import Product
from service.schemas.base import SERVER_MANAGED, InputSchema, OutputSchema
from service.schemas.rows import RowShape


class ProductSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = Product
        exclude = ("sku_key", "version")

    average_cost = fields.Decimal(places=6, as_string=True)


class ProductInputSchema(InputSchema):
    class Meta(InputSchema.Meta):
        model = Product
        exclude = (*SERVER_MANAGED, "sku_key", "average_cost")


# Products as ProductSchema dumps them, from plain column rows (lists, the import's events).
PRODUCT_ROWS = RowShape(ProductSchema(), Product)
