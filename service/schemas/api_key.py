from __future__ import annotations

from service.models import ApiKey
from service.schemas.base import OutputSchema


class ApiKeySchema(OutputSchema):
    """An API key as lists show it: never its secret, nor the secret's digest."""

    class Meta(OutputSchema.Meta):
        model = ApiKey
        exclude = ("secret_hash",)
