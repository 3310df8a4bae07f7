from __future__ import annotations

from service.models import Product
from service.schemas.base import SERVER_MANAGED, InputSchema, OutputSchema


class ProductSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = Product
        exclude = ("sku_key", "version")


class ProductInputSchema(InputSchema):
    class Meta(InputSchema.Meta):
        model = Product
        exclude = (*SERVER_MANAGED, "sku_key")
