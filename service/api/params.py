"""Request values the spec types as strings but handlers need as Python values.

Every ``format: date-time`` parameter and body field goes through
:func:`service.formats.parse_timestamp`; a value it refuses is a 400 problem naming the
parameter (or the body field's pointer).
"""

from __future__ import annotations

from datetime import datetime

from service.formats import InvalidTimestamp, parse_timestamp
from service.problems import BadRequestProblem, parameter_error, pointer_error


def timestamp_parameter(value: str | None, name: str, location: str = "query") -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except InvalidTimestamp as exc:
        raise BadRequestProblem(
            f"{name} is not an RFC 3339 date-time.",
            errors=[parameter_error(name, location, str(exc))],
        ) from exc


def timestamp_field(value: str, pointer: str) -> datetime:
    try:
        return parse_timestamp(value)
    except InvalidTimestamp as exc:
        field = pointer.rsplit("/", 1)[-1]
        raise BadRequestProblem(
            f"{field} is not an RFC 3339 date-time.", errors=[pointer_error(pointer, str(exc))]
        ) from exc
