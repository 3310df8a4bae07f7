from __future__ import annotations

from service.models import Category
from service.schemas.base import SERVER_MANAGED, InputSchema, OutputSchema


class CategorySchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = Category
        exclude = ("sibling_key", "version")


class CategoryInputSchema(InputSchema):
    class Meta(InputSchema.Meta):
        model = Category
        exclude = (*SERVER_MANAGED, "sibling_key")
