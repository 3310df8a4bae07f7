"""A schema's output shape for plain column rows: how every list page is serialised.

A page of ORM instances pays twice per row: once to build the instance (identity map, state
tracking) and once for marshmallow's per-object dump machinery. A list only reads, so it
selects the table's columns as plain rows instead, and :class:`RowShape` turns each row into
exactly the dict the schema's ``dump`` gives for the same row loaded as an instance: the
schema's fields in its order, under its keys, each value through the field's own
serialisation (see :func:`_converter`), except for the fields whose serialisation leaves a
database value as it is (plain integers, strings and booleans). The plan is made once per
schema, at import.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Sequence
from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import Select, select
from sqlalchemy.orm import DeclarativeBase

# Fields whose dump of a value of their column's Python type is that value itself.
_AS_IS = (fields.Integer, fields.String, fields.Boolean)


def _passes_through(field: fields.Field) -> bool:
    return type(field) in _AS_IS and not getattr(field, "as_string", False)


def _converter(field: fields.Field) -> Callable[[Any, str, Any], Any] | None:
    """How ``field`` dumps a value read from its column: None for as-is, else a function.

    The two kinds every list carries, ISO timestamps and fixed-place decimal strings, get
    the steps of marshmallow's own ``_serialize`` without its per-call lookups; any other
    field is dumped by its ``_serialize``.
    """
    if _passes_through(field):
        return None
    if type(field) is fields.DateTime and (field.format or field.DEFAULT_FORMAT) == "iso":
        return _iso_timestamp
    if (
        type(field) is fields.Decimal
        and field.as_string
        and field.places is not None
        and not field.allow_nan
    ):
        places, rounding = field.places, field.rounding

        def fixed_places(value: Any, _key: str, _row: Any) -> str | None:
            if value is None:
                return None
            if not isinstance(value, decimal.Decimal):
                value = decimal.Decimal(str(value))
            if value.is_finite():
                value = value.quantize(places, rounding=rounding)
            return format(value, "f")

        return fixed_places
    return field._serialize


def _iso_timestamp(value: Any, _key: str, _row: Any) -> str | None:
    return None if value is None else value.isoformat()


class RowShape:
    """``schema``'s dump of ``model``'s rows, for rows selected by :meth:`select`."""

    def __init__(self, schema: Schema, model: type[DeclarativeBase]) -> None:
        self.table = model.__table__
        # Rows of select() carry the table's columns in this order: read them by position.
        positions = {key: index for index, key in enumerate(self.table.c.keys())}
        plan: list[tuple[str, int, Callable[[Any, str, Any], Any] | None]] = []
        for name, field in schema.dump_fields.items():
            attribute = field.attribute or name
            if attribute not in positions:
                raise ValueError(f"{type(schema).__name__}.{name} is not a column of {model}")
            convert = _converter(field)
            plan.append((field.data_key or name, positions[attribute], convert))
        self._plan = tuple(plan)

    def select(self, *extra: Any) -> Select:
        """Every column of the table (sort keys included), then ``extra`` columns."""
        return select(self.table, *extra)

    def dump_one(self, row: Sequence[Any]) -> dict[str, Any]:
        return {
            key: row[index] if convert is None else convert(row[index], key, row)
            for key, index, convert in self._plan
        }

    def dump(self, rows: Sequence[Any]) -> list[dict[str, Any]]:
        return [self.dump_one(row) for row in rows]
