from __future__ import annotations

from marshmallow import RAISE
from marshmallow_sqlalchemy import SQLAlchemyAutoSchema

# Columns that only the service writes; no input schema may accept them.
SERVER_MANAGED = ("id", "created_at", "updated_at", "version")


class OutputSchema(SQLAlchemyAutoSchema):
    class Meta:
        include_fk = True
        load_instance = False


class InputSchema(SQLAlchemyAutoSchema):
    class Meta:
        include_fk = True
        load_instance = True
        unknown = RAISE
