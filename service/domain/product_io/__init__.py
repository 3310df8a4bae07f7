"""Product import and export: the one implementation behind the API and the CLI.

Export (:func:`export_stream`) reads the catalog in one snapshot (REPEATABLE READ, read-only
on PostgreSQL; one read transaction on SQLite, which WAL keeps consistent) on a connection of
its own, and yields the CSV or JSON body a chunk of rows at a time: memory stays flat however
many products there are, and the connection is closed when the generator finishes or is
closed (a client that went away).

Under connexion's FlaskApp the body really streams: a2wsgi iterates the Flask response in a
worker thread and hands each chunk to the server through a queue of ten, so a slow client
holds that thread (and the snapshot's connection) until it has read everything. Response
validation (``STOREKEEPER_VALIDATE_RESPONSES``, off by default, on in tests and CI) leaves
the CSV body alone but collects a JSON body whole to validate it: the JSON export is then
buffered (for 100,000 products: first byte after ~15 s, ~180 MiB more RSS).

Import is all or nothing, in three steps:

1. parse: CSV (:func:`parse_csv`) or JSON (:func:`parse_json`) into :class:`ImportRow`s, each
   value converted to its field's type and checked against ``ProductImportRow`` in the
   spec, the same rules ``createProduct``/``updateProduct`` apply;
2. plan (:func:`plan_import`): match SKUs (case-insensitively) against the catalog in a few
   bulk reads, resolve categories by id or path, find duplicate SKUs and new SKUs without a
   name, and work out which products are new, changed or unchanged;
3. write (:func:`apply_plan`): bulk INSERT and bulk UPDATE (each update checks the version it
   read, so a concurrent change is a conflict, not a lost update).

Every row is checked before anything is written; any problem raises
:class:`ImportRowsProblem` (422) listing at most ``MAX_LISTED_ERRORS`` of them by line and
field. Input that is not a table at all (not UTF-8, empty, no header row, broken quoting) is
an :class:`ImportInputProblem` (400).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from jsonschema import ValidationError
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    any_,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from service.db import snapshot_engine
from service.domain import events
from service.domain.catalog import ProductFilter
from service.formats import (
    CSV,
    JSON,
    JSONTooDeep,
    escape_formula,
    loads_json,
    unescape_formula,
    utcnow,
)
from service.models import Category, Product
from service.models.product import sku_key
from service.problems import (
    ConcurrentChangeProblem,
    ImportInputProblem,
    ImportRowsProblem,
    JSONTooDeepProblem,
    row_error,
)
from service.schema_check import (
    EXCERPT_CHARS,
    NUL,
    NUL_DETAIL,
    NUL_KEY_DETAIL,
    escape_pointer,
    excerpt,
    explain,
    quick_check,
    request_validator,
)
from service.schemas.product import PRODUCT_ROWS
from service.spec import schema as spec_schema

FORMATS = {"csv": CSV, "json": JSON}

EXPORT_COLUMNS = (
    "id",
    "sku",
    "name",
    "description",
    "category_id",
    "category_path",
    "unit_of_measure",
    "reorder_point",
    "reorder_quantity",
    "is_active",
    "average_cost",
    "created_at",
    "updated_at",
)
# An export's read-only columns: accepted by the import, and ignored, so an export re-imports.
IGNORED_COLUMNS = frozenset({"id", "average_cost", "created_at", "updated_at"})
# What a new product gets for a field its row leaves out.
CREATE_DEFAULTS: dict[str, Any] = {
    "description": None,
    "category_id": None,
    "unit_of_measure": "each",
    "reorder_point": 0,
    "reorder_quantity": 0,
    "is_active": True,
}
# The product columns an import writes (sku_key, version and updated_at follow from them).
WRITTEN_FIELDS = ("sku", "name", *CREATE_DEFAULTS)
TEXT_FIELDS = ("sku", "name", "description", "category_path", "unit_of_measure")

EXPORT_CHUNK_ROWS = 1000
# SKUs per bulk lookup on SQLite (its bound-parameter limit is 32,766).
LOOKUP_CHUNK = 5000
WRITE_CHUNK = 1000
CATEGORY_SEPARATOR = "/"
# Category trees are shallow; a deeper chain can only be a cycle written behind our back.
MAX_CATEGORY_DEPTH = 64

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


# --- the row schema, straight from the spec ------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # "string", "integer" or "boolean"
    nullable: bool


@dataclass(frozen=True)
class RowSchema:
    schema: dict
    fields: dict[str, FieldSpec]

    @functools.cached_property
    def validator(self) -> Any:
        return request_validator(self.schema)

    @functools.cached_property
    def quick(self) -> Callable[[Any], bool] | None:
        return quick_check(self.schema)

    def errors(
        self, values: dict[str, Any], line: int, pointer_base: str | None
    ) -> list[dict[str, Any]]:
        """The row's schema violations; valid rows pass the quick check and stop there."""
        if self.quick is not None and self.quick(values):
            return []
        return _schema_errors(self, values, line, pointer_base)


def _field_spec(name: str, schema: dict) -> FieldSpec:
    parts = [schema, *schema.get("allOf", [])]
    types = [part["type"] for part in parts if "type" in part]
    nullable = any(part.get("nullable") for part in parts)
    return FieldSpec(name, types[0] if types else "string", nullable)


@functools.lru_cache(maxsize=4)
def row_schema(spec_path: Path | None = None) -> RowSchema:
    """``ProductImportRow`` from the contract, every ``$ref`` inlined."""
    schema = spec_schema("ProductImportRow", spec_path)
    fields = {name: _field_spec(name, prop) for name, prop in schema["properties"].items()}
    return RowSchema(schema, fields)


def _schema_errors(
    schema: RowSchema, values: dict[str, Any], line: int, pointer_base: str | None
) -> list[dict[str, Any]]:
    found: dict[str | None, list[str]] = {}
    for error in schema.validator.iter_errors(values):
        for name, detail in _explain(error):
            messages = found.setdefault(name, [])
            if detail not in messages:
                messages.append(detail)
    return [
        row_error(line, name, "; ".join(messages), _pointer(pointer_base, name))
        for name, messages in found.items()
    ]


def _explain(error: ValidationError) -> Iterator[tuple[str | None, str]]:
    """(field, detail) pairs: the row's own key each error concerns (None: the whole row)."""
    for parts, detail in explain(error):
        yield (str(parts[0]) if parts else None), detail


def _pointer(base: str | None, name: str | None) -> str | None:
    if base is None:
        return None
    if name is None:
        return base
    return f"{base}/{escape_pointer(name)}"


# --- parsing -------------------------------------------------------------------------------


@dataclass
class ImportRow:
    """One row of an import: where it came from and the fields it sets."""

    line: int
    values: dict[str, Any]
    # JSON rows: the pointer of the row in the body ("/3"); CSV rows have none.
    pointer: str | None = None


@dataclass
class ParsedImport:
    rows: list[ImportRow]
    errors: list[dict[str, Any]] = field(default_factory=list)


Progress = Callable[[int], None]


def _decode(data: bytes, what: str = "body") -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportInputProblem(
            f"The {what} is not valid UTF-8: byte {exc.start} (line {line}) cannot be decoded. "
            "Save the file as UTF-8.",
            slug="invalid-encoding",
            errors=[row_error(line, None, f"Byte {exc.start} is not valid UTF-8.")],
        ) from exc
    return text.removeprefix("\ufeff")


def _read_header(cells: list[str], line: int, schema: RowSchema) -> list[str]:
    header = [cell.strip().lower() for cell in cells]
    problems = []
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name:
            problems.append(row_error(line, None, f"Column {position} has no name."))
        elif NUL in name or len(name) > EXCERPT_CHARS:  # not a column; not echoed whole
            reason = NUL_DETAIL if NUL in name else f"Unknown column {excerpt(name)}."
            problems.append(row_error(line, None, f"Column {position}: {reason}"))
        elif name in seen:
            problems.append(row_error(line, name, "This column appears more than once."))
        elif name not in schema.fields:
            problems.append(row_error(line, name, "Unknown column."))
        seen.add(name)
    if "sku" not in seen:
        problems.append(row_error(line, "sku", "The header row must name a sku column."))
    if problems:
        raise ImportInputProblem(
            "The first line must be a header row naming the columns: sku and any of "
            f"{', '.join(n for n in schema.fields if n != 'sku')}; see errors[].",
            errors=problems,
        )
    return header


def _convert_cell(spec: FieldSpec, cell: str) -> tuple[Any, str | None]:
    """A CSV cell as the field's value, or the reason it cannot be one."""
    if cell == "":
        if spec.nullable:
            return None, None
        return None, "This field may not be empty."
    if NUL in cell:  # PostgreSQL cannot store it in text; no field of a product holds one
        return None, NUL_DETAIL
    if spec.type == "integer":
        text = cell.strip()
        if not _INTEGER.match(text):
            return None, f"{excerpt(cell)} is not a whole number."
        if len(text) > 20:  # far out of every range (and int() of huge strings is slow)
            return None, f"{excerpt(cell)} is out of range."
        return int(text), None
    if spec.type == "boolean":
        text = cell.strip().lower()
        if text in _TRUE:
            return True, None
        if text in _FALSE:
            return False, None
        return None, f"{excerpt(cell)} is not a boolean (true/false, 1/0, yes/no)."
    return unescape_formula(cell), None


def parse_csv(
    data: bytes, *, schema: RowSchema | None = None, progress: Progress | None = None
) -> ParsedImport:
    """Rows of a CSV file: UTF-8 (optional BOM), a header row, one product per row."""
    schema = schema or row_schema()
    text = _decode(data, "file")
    if not text.strip():
        raise ImportInputProblem("The file is empty; send a header row and one row per product.")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    parsed = ParsedImport(rows=[])
    header: list[str] | None = None
    next_line = 1
    try:
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            if header is None:
                if not cells or not any(c.strip() for c in cells):
                    continue  # blank lines before the header
                header = _read_header(cells, line, schema)
                continue
            if not cells:
                continue  # a blank line
            _parse_record(cells, header, line, schema, parsed)
            if progress is not None:
                progress(1)
    except csv.Error as exc:
        raise ImportInputProblem(
            f"The CSV is malformed at line {reader.line_num}: {exc}.",
            errors=[row_error(reader.line_num, None, f"Malformed CSV: {exc}.")],
        ) from exc
    if header is None:
        raise ImportInputProblem("The file holds no header row.")
    return parsed


def _parse_record(
    cells: list[str], header: list[str], line: int, schema: RowSchema, parsed: ParsedImport
) -> None:
    if len(cells) != len(header):
        parsed.errors.append(
            row_error(
                line,
                None,
                f"The row has {len(cells)} cell(s); the header has {len(header)} column(s).",
            )
        )
        return
    values: dict[str, Any] = {}
    problems = []
    for name, cell in zip(header, cells, strict=True):
        if name in IGNORED_COLUMNS:
            continue
        value, problem = _convert_cell(schema.fields[name], cell)
        if problem is not None:
            problems.append(row_error(line, name, problem))
        else:
            values[name] = value
    # Every problem of the row, also where a cell could not even be converted.
    unconverted = {entry.get("field") for entry in problems}
    problems += [e for e in schema.errors(values, line, None) if e.get("field") not in unconverted]
    if problems:
        parsed.errors.extend(problems)
        return
    parsed.rows.append(ImportRow(line, values))


def load_json(data: bytes) -> Any:
    """A JSON document from UTF-8 bytes, or the 400 problem saying why it is not one."""
    text = _decode(data)
    if not text.strip():
        raise ImportInputProblem("The body is empty; send a JSON array of products.")
    try:
        return loads_json(text)
    except JSONTooDeep as exc:
        raise JSONTooDeepProblem(exc.limit) from exc
    except json.JSONDecodeError as exc:
        raise ImportInputProblem(
            f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from exc
    except ValueError as exc:
        raise ImportInputProblem(f"The body is not valid JSON: {exc}.") from exc


def _nul_problems(item: dict[str, Any], line: int, pointer: str) -> list[dict[str, Any]]:
    """A row's keys and text values holding a NUL (nested values break the schema anyway)."""
    problems = []
    for key, value in item.items():
        if NUL in key:
            problems.append(row_error(line, None, NUL_KEY_DETAIL, pointer))
        elif isinstance(value, str) and NUL in value:
            problems.append(row_error(line, key, NUL_DETAIL, _pointer(pointer, key)))
    return problems


def parse_json(
    body: Any,
    *,
    schema: RowSchema | None = None,
    progress: Progress | None = None,
) -> ParsedImport:
    """Rows of a JSON body (bytes, or the array already parsed), each row checked here.

    Also when the API's request validation has checked them already: the import never
    trusts the path a body came by (a cheap check, since valid rows pass the quick check).
    """
    schema = schema or row_schema()
    if isinstance(body, bytes | bytearray):
        body = load_json(bytes(body))
    if not isinstance(body, list):
        raise ImportInputProblem("The body must be a JSON array of products.")
    parsed = ParsedImport(rows=[])
    for index, item in enumerate(body):
        line, pointer = index + 1, f"/{index}"
        if not isinstance(item, dict):
            parsed.errors.append(row_error(line, None, "Each row must be an object.", pointer))
            continue
        problems = _nul_problems(item, line, pointer) or schema.errors(item, line, pointer)
        if problems:
            parsed.errors.extend(problems)
            continue
        values = {k: v for k, v in item.items() if k not in IGNORED_COLUMNS}
        parsed.rows.append(ImportRow(line, values, pointer))
        if progress is not None:
            progress(1)
    return parsed


# --- categories ----------------------------------------------------------------------------


@dataclass
class CategoryIndex:
    """Every category's path (names from the top joined by '/') and the reverse lookup."""

    paths: dict[int, str]
    by_path: dict[str, list[int]]

    @classmethod
    def load(cls, connection: Connection | Session) -> CategoryIndex:
        rows = connection.execute(select(Category.id, Category.parent_id, Category.name)).all()
        parents = {row.id: row.parent_id for row in rows}
        names = {row.id: row.name for row in rows}
        paths: dict[int, str] = {}

        def path_of(category_id: int) -> str:
            chain = []
            current: int | None = category_id
            while current is not None and current not in paths and len(chain) < MAX_CATEGORY_DEPTH:
                chain.append(current)
                current = parents.get(current)
            prefix = paths.get(current, "") if current is not None else ""
            for node in reversed(chain):
                prefix = f"{prefix}{CATEGORY_SEPARATOR}{names[node]}" if prefix else names[node]
                paths[node] = prefix
            return paths[category_id]

        by_path: dict[str, list[int]] = {}
        for category_id in names:
            by_path.setdefault(path_of(category_id).casefold(), []).append(category_id)
        return cls(paths, by_path)


# --- planning ------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    rows: int = 0
    creates: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    # Ids of updated products that the import archives (is_active from true to false).
    archives: set[int] = field(default_factory=set)
    unchanged: int = 0

    def counts(self, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "rows": self.rows,
            "created": len(self.creates),
            "updated": len(self.updates),
            "unchanged": self.unchanged,
        }


_EXISTING_COLUMNS = (
    Product.id,
    Product.sku_key,
    Product.version,
    *(getattr(Product, name) for name in WRITTEN_FIELDS),
)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _where_in(
    session: Session, columns: Sequence[Any], key: Any, values: Sequence[Any], element: Any
) -> list[Any]:
    """Rows whose ``key`` is one of ``values``, in as few statements as the backend allows.

    PostgreSQL: one statement with the values as one array parameter (``= ANY``), which the
    planner serves with the index for a few keys and one hashed scan for many (an expanded
    ``IN`` list is neither, and has a 65,535-parameter ceiling). SQLite: ``IN`` lists of
    LOOKUP_CHUNK parameters, each an index lookup.
    """
    if not values:
        return []
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam("values", list(values), type_=ARRAY(element))
        return list(session.execute(select(*columns).where(key == any_(array))).all())
    rows: list[Any] = []
    for chunk in _chunks(values, LOOKUP_CHUNK):
        rows.extend(session.execute(select(*columns).where(key.in_(chunk))).all())
    return rows


def _existing_products(session: Session, keys: Sequence[str]) -> dict[str, Any]:
    rows = _where_in(session, _EXISTING_COLUMNS, Product.sku_key, keys, String)
    return {row.sku_key: row for row in rows}


def _resolve_category(
    row: ImportRow, index: CategoryIndex | None, known_ids: set[int]
) -> tuple[bool, int | None, list[dict[str, Any]]]:
    """(whether the row sets the category, the category id, problems)."""
    values = row.values
    has_id, has_path = "category_id" in values, "category_path" in values
    if not has_id and not has_path:
        return False, None, []
    problems = []
    by_id = values.get("category_id")
    if by_id is not None and by_id not in known_ids:
        problems.append(
            row_error(
                row.line,
                "category_id",
                f"No category has id {by_id}.",
                _pointer(row.pointer, "category_id"),
            )
        )
    path = values.get("category_path")
    if path is None:
        if has_path and has_id and by_id is not None:
            problems.append(
                row_error(
                    row.line,
                    "category_path",
                    f"Empty, but category_id names category {by_id}; give both or one.",
                    _pointer(row.pointer, "category_path"),
                )
            )
        return True, by_id, problems
    assert index is not None
    candidates = index.by_path.get(path.casefold(), [])
    pointer = _pointer(row.pointer, "category_path")
    if not candidates:
        problems.append(row_error(row.line, "category_path", f"No category {path!r}.", pointer))
        return True, None, problems
    if has_id:
        if by_id is None:
            problems.append(
                row_error(
                    row.line,
                    "category_id",
                    f"Empty, but category_path names category {candidates[0]}; give both or one.",
                    _pointer(row.pointer, "category_id"),
                )
            )
        elif by_id in known_ids and by_id not in candidates:
            problems.append(
                row_error(
                    row.line,
                    "category_path",
                    f"{path!r} is category {candidates[0]}, not category {by_id} (category_id).",
                    pointer,
                )
            )
        return True, by_id, problems
    if len(candidates) > 1:
        problems.append(
            row_error(
                row.line,
                "category_path",
                f"Several categories have the path {path!r} (ids "
                f"{', '.join(map(str, sorted(candidates)))}); use category_id.",
                pointer,
            )
        )
        return True, None, problems
    return True, candidates[0], problems


def plan_import(
    session: Session,
    rows: Sequence[ImportRow],
    *,
    errors: Sequence[dict[str, Any]] = (),
    now: datetime | None = None,
) -> ImportPlan:
    """What the rows would do, or :class:`ImportRowsProblem` listing every problem.

    ``errors`` are the problems parsing already found: they are reported together with the
    ones found here, in line order.
    """
    problems = list(errors)
    keys = [sku_key(row.values["sku"]) for row in rows]
    existing = _existing_products(session, sorted(set(keys)))
    needs_categories = any("category_path" in row.values for row in rows)
    index = CategoryIndex.load(session) if needs_categories else None
    wanted_ids = {
        row.values["category_id"] for row in rows if row.values.get("category_id") is not None
    }
    if index is not None:
        known_ids = set(index.paths)
    elif wanted_ids:
        found = _where_in(session, [Category.id], Category.id, sorted(wanted_ids), Integer)
        known_ids = {category.id for category in found}
    else:
        known_ids = set()

    now = now or utcnow()
    plan = ImportPlan(rows=len(rows))
    first_line: dict[str, int] = {}
    for row, key in zip(rows, keys, strict=True):
        values = row.values
        if key in first_line:
            problems.append(
                row_error(
                    row.line,
                    "sku",
                    f"SKU {values['sku']!r} already appears on line {first_line[key]} "
                    "(SKUs are unique regardless of case).",
                    _pointer(row.pointer, "sku"),
                )
            )
            continue
        first_line[key] = row.line
        sets_category, category_id, category_problems = _resolve_category(row, index, known_ids)
        if category_problems:
            problems.extend(category_problems)
            continue
        wanted = {name: values[name] for name in WRITTEN_FIELDS if name in values}
        if sets_category:
            wanted["category_id"] = category_id
        current = existing.get(key)
        if current is None:
            if wanted.get("name") is None:
                problems.append(
                    row_error(
                        row.line,
                        "name",
                        f"SKU {values['sku']!r} is new: a name is required.",
                        _pointer(row.pointer, "name"),
                    )
                )
                continue
            plan.creates.append(
                {
                    **CREATE_DEFAULTS,
                    **wanted,
                    "sku_key": key,
                    "average_cost": Decimal(0),
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
            )
            continue
        changed = {name: value for name, value in wanted.items() if getattr(current, name) != value}
        if not changed:
            plan.unchanged += 1
            continue
        if changed.get("is_active") is False:
            plan.archives.add(current.id)
        plan.updates.append(
            {
                **{name: getattr(current, name) for name in WRITTEN_FIELDS},
                **changed,
                "sku_key": key,
                "version": current.version + 1,
                "updated_at": now,
                "b_id": current.id,
                "b_version": current.version,
            }
        )
    if problems:
        problems.sort(key=lambda entry: entry.get("line", 0))
        raise ImportRowsProblem(problems)
    # Row locks in ascending id order, the order every stock document locks products in.
    plan.updates.sort(key=lambda values: values["b_id"])
    return plan


def apply_plan(session: Session, plan: ImportPlan, progress: Progress | None = None) -> None:
    """Write the plan: bulk INSERT the new products, bulk UPDATE the changed ones."""
    table = Product.__table__
    for chunk in _chunks(plan.creates, WRITE_CHUNK):
        session.execute(insert(table), list(chunk))
        if progress is not None:
            progress(len(chunk))
    # Each update names the version it read: a product changed meanwhile matches no row.
    statement = update(table).where(
        table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version")
    )
    for chunk in _chunks(plan.updates, WRITE_CHUNK):
        result = session.execute(statement, list(chunk))
        if result.rowcount != len(chunk):
            raise ConcurrentChangeProblem(
                "Products changed while the import ran; nothing was imported. Retry it."
            )
        if progress is not None:
            progress(len(chunk))
    _record_events(session, plan)


def _record_events(session: Session, plan: ImportPlan) -> None:
    """product.created, .updated or .archived for every product written, as it now is."""
    shape = PRODUCT_ROWS
    table = Product.__table__
    created = [values["sku_key"] for values in plan.creates]
    for chunk in _chunks(created, LOOKUP_CHUNK):
        rows = session.execute(
            shape.select().where(table.c.sku_key.in_(chunk)).order_by(table.c.id)
        ).all()
        for item in shape.dump(rows):
            events.record(session, "product.created", item)
    updated = [values["b_id"] for values in plan.updates]
    for chunk in _chunks(updated, LOOKUP_CHUNK):
        rows = session.execute(
            shape.select().where(table.c.id.in_(chunk)).order_by(table.c.id)
        ).all()
        for row, item in zip(rows, shape.dump(rows), strict=True):
            kind = "archived" if row.id in plan.archives else "updated"
            events.record(session, f"product.{kind}", item)


def import_rows(
    session: Session,
    parsed: ParsedImport,
    *,
    dry_run: bool,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Plan and (unless ``dry_run``) write an import; the counts of the answer."""
    plan = plan_import(session, parsed.rows, errors=parsed.errors)
    if not dry_run:
        apply_plan(session, plan, progress)
    return plan.counts(dry_run)


# --- export --------------------------------------------------------------------------------


_EXPORT_QUERY_COLUMNS = (
    Product.id,
    Product.sku,
    Product.name,
    Product.description,
    Product.category_id,
    Product.unit_of_measure,
    Product.reorder_point,
    Product.reorder_quantity,
    Product.is_active,
    Product.average_cost,
    Product.created_at,
    Product.updated_at,
)


@contextlib.contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection reading one consistent snapshot, closed on exit."""
    with snapshot_engine(engine).connect() as connection, connection.begin():
        yield connection


def export_filename(media_type: str, today: date | None = None) -> str:
    extension = "csv" if media_type == CSV else "json"
    return f"products-{(today or utcnow().date()).isoformat()}.{extension}"


def _record(row: Any, paths: dict[int, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "sku": row.sku,
        "name": row.name,
        "description": row.description,
        "category_id": row.category_id,
        "category_path": paths.get(row.category_id) if row.category_id is not None else None,
        "unit_of_measure": row.unit_of_measure,
        "reorder_point": row.reorder_point,
        "reorder_quantity": row.reorder_quantity,
        "is_active": row.is_active,
        "average_cost": format(row.average_cost, "f"),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _csv_cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in TEXT_FIELDS:
        return escape_formula(value)
    return str(value)


def _encode_csv(records: Iterable[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for record in records:
        writer.writerow([_csv_cell(name, record[name]) for name in EXPORT_COLUMNS])
    return out.getvalue().encode("utf-8")


def _encode_json(records: Iterable[dict[str, Any]], first: bool) -> bytes:
    parts = [json.dumps(record, ensure_ascii=False, separators=(",", ":")) for record in records]
    if not parts:
        return b""
    return (("\n" if first else ",\n") + ",\n".join(parts)).encode("utf-8")


def export_stream(
    engine: Engine,
    media_type: str,
    filters: ProductFilter | None = None,
    *,
    chunk_rows: int | None = None,
    stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """The export body, ``chunk_rows`` products at a time (default EXPORT_CHUNK_ROWS), from
    one snapshot.

    Two statements whatever the size: the categories (for their paths), then the products
    through a server-side cursor (PostgreSQL) or SQLite's incremental cursor. ``stop`` is
    asked between chunks (a client that went away); returning True ends the body early.
    """
    statement = (
        select(*_EXPORT_QUERY_COLUMNS)
        .where(*(filters or ProductFilter()).clauses())
        .order_by(Product.id)
    )
    with read_snapshot(engine) as connection:
        paths = CategoryIndex.load(connection).paths
        result = connection.execution_options(
            stream_results=True, yield_per=chunk_rows or EXPORT_CHUNK_ROWS
        ).execute(statement)
        yield _encode_csv([{name: name for name in EXPORT_COLUMNS}]) if media_type == CSV else b"["
        first = True
        for partition in result.partitions():
            if stop is not None and stop():
                return
            records = [_record(row, paths) for row in partition]
            yield _encode_csv(records) if media_type == CSV else _encode_json(records, first)
            first = False
            if progress is not None:
                progress(len(records))
        if media_type == JSON:
            yield b"\n]\n" if not first else b"]\n"
