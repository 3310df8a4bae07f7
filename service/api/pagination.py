"""Keyset pagination with opaque cursors, shared by every list operation.

A cursor encodes the sort it was issued for and the sort key of the last row served, so
the next page starts strictly after that row: rows inserted meanwhile never shift pages,
and no row is served twice. Ties are broken by ``id``, which is unique.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import request
from sqlalchemy import BigInteger, Select, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.api.responses import json_response
from service.db import session
from service.formats import format_timestamp, parse_timestamp
from service.problems import BadRequestProblem, parameter_error

T = TypeVar("T")

MAX_ID = 2**31 - 1  # ids are int32 (see the spec's Id schema)
MAX_LEDGER_ID = 2**63 - 1  # document and movement ids are int64 (the spec's LedgerId)


def _identity(value: Any) -> Any:
    return value


# Cursor values come back from clients: check their types before they reach the database,
# where a wrong type is a driver error (500) instead of a malformed cursor (400).
def _text_from_cursor(value: Any) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not a text sort value")
    return value


def _datetime_from_cursor(value: Any) -> datetime:
    return parse_timestamp(value, strict=True)


def _id_from_cursor(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise ValueError("not a row id")
    return value


def _ledger_id_from_cursor(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_LEDGER_ID:
        raise ValueError("not a ledger row id")
    return value


def _id_decoder(column: InstrumentedAttribute) -> Callable[[Any], int]:
    """A cursor's id checked against its column's range: 64-bit columns take 64-bit ids."""
    # BigInteger().with_variant(Integer, "sqlite") is still a BigInteger here.
    return _ledger_id_from_cursor if isinstance(column.type, BigInteger) else _id_from_cursor


@dataclass(frozen=True)
class SortKey:
    """One public sort order: the column it sorts on and how its values travel in a cursor."""

    name: str
    column: InstrumentedAttribute
    descending: bool = False
    to_cursor: Callable[[Any], Any] = _identity
    from_cursor: Callable[[Any], Any] = _text_from_cursor

    @classmethod
    def for_datetime(cls, name: str, column: InstrumentedAttribute, descending: bool) -> SortKey:
        return cls(name, column, descending, format_timestamp, _datetime_from_cursor)

    def then_by(self, id_column: InstrumentedAttribute) -> Keyset:
        """This order, ties broken by the unique ``id_column``."""
        return Keyset(
            self.name,
            (self.column, id_column),
            self.descending,
            (self.to_cursor, _identity),
            (self.from_cursor, _id_decoder(id_column)),
        )


def sort_keys(
    *entries: tuple[str, InstrumentedAttribute] | tuple[str, InstrumentedAttribute, str],
) -> dict[str, SortKey]:
    """Ascending ``name`` and descending ``-name`` keys for each (name, column[, 'datetime'])."""
    keys: dict[str, SortKey] = {}
    for entry in entries:
        name, column = entry[0], entry[1]
        kind = entry[2] if len(entry) > 2 else "text"
        for descending in (False, True):
            public = f"-{name}" if descending else name
            if kind == "datetime":
                keys[public] = SortKey.for_datetime(public, column, descending)
            else:
                keys[public] = SortKey(public, column, descending)
    return keys


@dataclass(frozen=True)
class Keyset:
    """The order of a list: columns whose values are unique together, and how each travels."""

    name: str
    columns: tuple[InstrumentedAttribute, ...]
    descending: bool = False
    to_cursor: tuple[Callable[[Any], Any], ...] = ()
    from_cursor: tuple[Callable[[Any], Any], ...] = ()

    @classmethod
    def of_ids(cls, name: str, *columns: InstrumentedAttribute) -> Keyset:
        """Ascending by id columns (e.g. product then location)."""
        count = len(columns)
        decoders = tuple(_id_decoder(column) for column in columns)
        return cls(name, columns, False, (_identity,) * count, decoders)

    def values_of(self, row: Any) -> list[Any]:
        return [
            encode(getattr(row, column.key))
            for column, encode in zip(self.columns, self.to_cursor, strict=True)
        ]


@dataclass
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(sort: str, values: Sequence[Any]) -> str:
    raw = json.dumps({"s": sort, "k": list(values)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _invalid_cursor(detail: str) -> BadRequestProblem:
    return BadRequestProblem(detail, errors=[parameter_error("cursor", "query", detail)])


def decode_cursor(cursor: str, keyset: Keyset) -> list[Any]:
    """The sort values of the last row a cursor's page served, validated."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        values = data["k"]
        issued_for = data["s"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError) as exc:
        raise _invalid_cursor(
            "The cursor is not one this service issued; use next_cursor verbatim."
        ) from exc
    if issued_for != keyset.name:
        raise _invalid_cursor(
            f"The cursor was issued for sort={issued_for!r}; repeat that sort or start over."
        )
    if not isinstance(values, list) or len(values) != len(keyset.columns):
        raise _invalid_cursor("The cursor is malformed; use next_cursor verbatim.")
    try:
        return [decode(value) for value, decode in zip(values, keyset.from_cursor, strict=True)]
    except (TypeError, ValueError, OverflowError) as exc:
        raise _invalid_cursor("The cursor is malformed; use next_cursor verbatim.") from exc


def paginate(
    session: Session,
    stmt: Select,
    *,
    sort: SortKey | Keyset,
    id_column: InstrumentedAttribute | None = None,
    limit: int,
    cursor: str | None,
) -> Page:
    """One page of ``stmt`` in ``sort`` order, starting after the cursor's row.

    ``stmt`` selects columns (the sort columns among them); the page holds plain rows, not
    ORM instances (see :mod:`service.schemas.rows`). A :class:`SortKey` is made unique by
    ``id_column``.
    """
    keyset = sort.then_by(id_column) if isinstance(sort, SortKey) else sort
    columns = keyset.columns
    if cursor:
        last = decode_cursor(cursor, keyset)
        position = tuple_(*columns)
        # Bind through the columns' own types (e.g. UTC timestamps on SQLite).
        after = tuple_(*(literal(v, c.type) for v, c in zip(last, columns, strict=True)))
        stmt = stmt.where(position < after if keyset.descending else position > after)
    stmt = stmt.order_by(*(c.desc() if keyset.descending else c.asc() for c in columns))
    stmt = stmt.limit(limit + 1)
    rows = session.connection().execute(stmt).all()
    items, has_more = rows[:limit], len(rows) > limit
    next_cursor = None
    if has_more:
        next_cursor = encode_cursor(keyset.name, keyset.values_of(items[-1]))
    return Page(items=items, next_cursor=next_cursor)


def next_link(request_url: str, next_cursor: str | None) -> dict[str, str]:
    """The ``Link: <...>; rel="next"`` header for a page, or nothing on the last page."""
    if not next_cursor:
        return {}
    parts = urlsplit(request_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "cursor"]
    query.append(("cursor", next_cursor))
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return {"Link": f'<{url}>; rel="next"'}


def list_response(items: list[dict], page: Page, request_url: str) -> tuple[dict, int, dict]:
    body = {"items": items, "next_cursor": page.next_cursor}
    return json_response(body, 200, next_link(request_url, page.next_cursor))


def paginated(
    stmt: Select,
    *,
    sort: SortKey | Keyset,
    limit: int,
    cursor: str | None,
    dump: Callable[[Sequence[Any]], list[dict]],
    id_column: InstrumentedAttribute | None = None,
) -> tuple[dict, int, dict]:
    """A list operation's answer: one page of ``stmt`` in the request's session, ``dump``ed,
    with ``next_cursor`` and the ``Link`` header. Every list handler ends here."""
    page = paginate(session(), stmt, sort=sort, id_column=id_column, limit=limit, cursor=cursor)
    return list_response(dump(page.items), page, request.url)
