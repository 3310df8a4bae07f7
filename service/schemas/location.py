from __future__ import annotations

from service.models import Location
from service.schemas.base import SERVER_MANAGED, InputSchema, OutputSchema


class LocationSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = Location
        exclude = ("code_key", "version")


class LocationInputSchema(InputSchema):
    class Meta(InputSchema.Meta):
        model = Location
        exclude = (*SERVER_MANAGED, "code_key")
