"""Formats shared by every layer: RFC 3339 timestamps, the clock, the CSV formula guard.

One parser reads every ``format: date-time`` the API, the import and the CLI accept
(:func:`parse_timestamp`); one formatter writes them (:func:`format_timestamp`).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

# The media types of the two data formats the service reads and writes.
JSON = "application/json"
CSV = "text/csv"

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


class InvalidTimestamp(ValueError):
    """A value that is not an RFC 3339 date-time; the message says why, for the client."""


def utcnow() -> datetime:
    return datetime.now(UTC)


_RFC3339 = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$",
    re.ASCII,
)


def parse_timestamp(value: str, *, strict: bool = False) -> datetime:
    """An RFC 3339 date-time as an aware UTC datetime (no offset means UTC).

    Leap seconds count as the next second; instants outside what Python can represent
    (year 0, or an offset pushing year 1 or 9999 over the edge) clamp to the earliest or
    latest representable one, which no movement can precede or follow anyway. ``strict``
    (for values the service wrote itself, such as cursors) refuses both instead, and a
    missing offset too.
    """
    if not isinstance(value, str):
        raise InvalidTimestamp("Not an RFC 3339 date-time (e.g. 2026-11-02T09:15:00Z).")
    match = _RFC3339.match(value.strip())
    if match is None:
        raise InvalidTimestamp("Not an RFC 3339 date-time (e.g. 2026-11-02T09:15:00Z).")
    parts = {k: int(v) for k, v in match.groupdict().items() if k not in ("fraction", "offset")}
    fraction = (match["fraction"] or "0")[:6].ljust(6, "0")
    leap = parts["second"] == 60
    offset = timedelta(0)
    if strict and not match["offset"]:
        raise InvalidTimestamp("The date-time has no UTC offset.")
    if match["offset"] and match["offset"] not in ("Z", "z"):
        sign = -1 if match["offset"][0] == "-" else 1
        hours, minutes = int(match["offset"][1:3]), int(match["offset"][4:6])
        if hours > 23 or minutes > 59:
            raise InvalidTimestamp("The UTC offset is out of range.")
        offset = sign * timedelta(hours=hours, minutes=minutes)
    if parts["year"] == 0 and not strict:
        return EARLIEST
    try:
        local = datetime(
            parts["year"],
            parts["month"],
            parts["day"],
            parts["hour"],
            parts["minute"],
            59 if leap else parts["second"],
            int(fraction),
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        raise InvalidTimestamp("Not a valid calendar date and time.") from exc
    try:
        return local.astimezone(UTC) + (timedelta(seconds=1) if leap else timedelta(0))
    except OverflowError as exc:
        if strict:
            raise InvalidTimestamp("The date-time is out of range.") from exc
        return EARLIEST if local.year == 1 else LATEST


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
# CSV output prefixes such text with one apostrophe, also when apostrophes already precede the
# formula character, and CSV input removes exactly one: the two are exact inverses.
_FORMULA = re.compile(r"^'*[=+\-@\t\r]")
_ESCAPED_FORMULA = re.compile(r"^'+[=+\-@\t\r]")


def escape_formula(text: str) -> str:
    return "'" + text if _FORMULA.match(text) else text


def unescape_formula(text: str) -> str:
    return text[1:] if _ESCAPED_FORMULA.match(text) else text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_json(text: str) -> Any:
    """JSON as the contract reads it: NaN and Infinity are not numbers.

    Raises ``json.JSONDecodeError`` (position known) or ``ValueError`` (why) otherwise.
    """
    return json.loads(text, parse_constant=_reject_constant)
