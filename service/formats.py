"""Formats shared by every layer: RFC 3339 timestamps, the clock, the CSV formula guard.

One parser reads every ``format: date-time`` the API, the import and the CLI accept
(:func:`parse_timestamp`); one formatter writes them (:func:`format_timestamp`).
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

# The media types of the two data formats the service reads and writes.
JSON = "application/json"
CSV = "text/csv"
# The two form encodings it takes: the OAuth2 token request, the CSV import's upload.
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

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


# Arrays and objects nest at most this deep (the contract's deepest body, a stock document's
# lines, nests 3). Python's parser recurses once per level and fails with RecursionError near
# 1,000, i.e. on a 2 KB body: the nesting is measured before it runs.
MAX_JSON_DEPTH = 32


class JSONTooDeep(ValueError):
    """A JSON document whose arrays and objects nest deeper than :data:`MAX_JSON_DEPTH`."""

    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"arrays and objects nest deeper than {limit} levels")
        self.limit = limit


# Bytes that matter for nesting: brackets and the quotes around strings (which hide brackets).
_STRUCTURE = b'[]{}"'
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in _STRUCTURE)
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")


@functools.lru_cache(maxsize=8)
def _balanced_within(limit: int) -> re.Pattern[bytes]:
    """Balanced "(...)" groups nested at most ``limit`` deep; possessive, so linear."""
    pattern = b""
    for _ in range(limit):
        pattern = rb"(?:\(" + pattern + rb"\))*+"
    return re.compile(pattern)


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in ``text`` (JSON, valid or not) nest deeper than ``limit``.

    Linear, in C: keep only the brackets outside strings, then match them against a pattern
    of balanced groups at most ``limit`` deep; the match stops at an opening bracket only
    where the nesting goes deeper. ``limit + 1`` closing brackets appended close what a
    truncated body leaves open. Brackets that do not pair up make invalid JSON, which
    json.loads refuses where they stop pairing, within ``limit`` levels (a ``[`` closed by
    a ``}`` counts as a pair here: at worst such a body is called too deep).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        # Escaped backslashes and quotes neither end nor start a string.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Empty strings go first: two adjacent quotes are an empty string or the end of one
    # string and the start of the next, so what lies outside strings is unchanged.
    data = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in data:
        data = b"".join(data.split(b'"')[::2])  # every other piece is inside a string
    parens = data.translate(_AS_PARENS) + b")" * (limit + 1)
    if b"(" * (limit + 1) in parens:
        return True
    end = _balanced_within(limit).match(parens).end()
    return parens[end : end + 1] == b"("


def loads_json(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON as the contract reads it: NaN and Infinity are not numbers, and arrays and
    objects nest at most ``max_depth`` levels (:class:`JSONTooDeep` otherwise).

    Raises ``json.JSONDecodeError`` (position known) or ``ValueError`` (why) otherwise.
    """
    if json_depth_exceeds(text, max_depth):
        raise JSONTooDeep(max_depth)
    return json.loads(text, parse_constant=_reject_constant)
