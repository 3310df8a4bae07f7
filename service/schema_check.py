"""JSON Schema checks against the contract's schemas, outside any web framework.

Used by the API's request validators and by the product import (whose CSV rows never pass
through connexion): one validator class that reads OpenAPI's ``nullable``, one translation
of a jsonschema error into the fields it concerns, JSON pointers, and a fast yes/no check
for rows (:func:`quick_check`).
"""

from __future__ import annotations

import re
import reprlib
import typing as t
from collections.abc import Iterator

from jsonschema import Draft4Validator, ValidationError, validators

_draft4_type = Draft4Validator.VALIDATORS["type"]
_draft4_enum = Draft4Validator.VALIDATORS["enum"]
_draft4_items = Draft4Validator.VALIDATORS["items"]


def _nullable(schema: dict) -> bool:
    return bool(schema.get("nullable") or schema.get("x-nullable"))


def _type(validator, types, instance, schema):
    if instance is None and _nullable(schema):
        return
    yield from _draft4_type(validator, types, instance, schema)


def _enum(validator, enums, instance, schema):
    if instance is None and _nullable(schema):
        return
    yield from _draft4_enum(validator, enums, instance, schema)


def _items(validator, items, instance, schema):
    """An array longer than its ``maxItems`` is that one error: its entries go unchecked.

    Whether the instance is valid does not change (maxItems refuses it); what changes is the
    cost of saying why: 400,000 broken entries in a 500-entry list are not examined.
    """
    limit = schema.get("maxItems")
    if isinstance(instance, list) and isinstance(limit, int) and len(instance) > limit:
        return
    yield from _draft4_items(validator, items, instance, schema)


# Draft 4 as OpenAPI 3.0 request bodies mean it (what connexion's request validator does).
RequestValidator = validators.extend(
    Draft4Validator, {"type": _type, "enum": _enum, "items": _items}
)


def request_validator(schema: dict) -> t.Any:
    return RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)


def escape_pointer(segment: t.Any) -> str:
    return str(segment).replace("~", "~0").replace("/", "~1")


def unescape_pointer(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def json_pointer(parts: t.Iterable[t.Any]) -> str:
    return "".join("/" + escape_pointer(p) for p in parts)


# Details quote at most this much of a submitted value (jsonschema quotes it whole).
EXCERPT_CHARS = 40
# And no message of one rule is longer than this.
MAX_MESSAGE_CHARS = 300
_short = reprlib.Repr()
_short.maxstring = _short.maxother = _short.maxlong = EXCERPT_CHARS
_short.maxlist = _short.maxdict = _short.maxtuple = _short.maxset = 4
_short.maxlevel = 2


def excerpt(value: t.Any) -> str:
    """``repr(value)``, or its first :data:`EXCERPT_CHARS` characters and a "…"."""
    if isinstance(value, str):
        if len(value) <= EXCERPT_CHARS:
            return repr(value)
        return f"{value[:EXCERPT_CHARS]!r}… ({len(value)} characters)"
    text = _short.repr(value)
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def message(error: ValidationError) -> str:
    """jsonschema's message, quoting no more than an excerpt of the value, and nothing of a
    secret (a writeOnly field's value)."""
    if isinstance(error.schema, dict) and error.schema.get("writeOnly"):
        return f"Does not satisfy {error.validator} {error.validator_value!r}."
    text = error.message
    if len(text) <= EXCERPT_CHARS:
        return text
    # jsonschema's messages start with the value they refuse; the rest comes from the schema
    # (a pattern, an enum), kept unless absurdly long.
    quoted = repr(error.instance)
    if len(quoted) > EXCERPT_CHARS and text.startswith(quoted):
        text = excerpt(error.instance) + text[len(quoted) :]
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


# --- NUL characters ---------------------------------------------------------------------------

NUL = "\x00"
NUL_DETAIL = "Contains a NUL character (U+0000), which text cannot hold."
NUL_KEY_DETAIL = "A field name here contains a NUL character (U+0000), which text cannot hold."


def nul_paths(value: t.Any, path: tuple[t.Any, ...] = ()) -> Iterator[tuple[list[t.Any], str]]:
    """(path, detail) of every string in ``value`` holding a NUL, keys included (reported at
    the object that has them: the key itself is not repeated back)."""
    if isinstance(value, str):
        if NUL in value:
            yield list(path), NUL_DETAIL
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and NUL in key:
                yield list(path), NUL_KEY_DETAIL
            else:
                yield from nul_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nul_paths(item, (*path, index))


REQUIRED_DETAIL = "This field is required."


def explain(error: ValidationError) -> Iterator[tuple[list[t.Any], str]]:
    """The (path, detail) of each field one jsonschema error is about.

    A missing required field and an unknown field are reported at that field's own path,
    not at the object that lacks or carries it.
    """
    base = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        for name in error.validator_value:
            if name not in instance:
                yield [*base, name], REQUIRED_DETAIL
        return
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        overlong = []
        for name in instance:
            if name in known:
                continue
            if len(str(name)) > EXCERPT_CHARS:
                overlong.append(name)
            else:
                yield [*base, name], "Unknown field."
        if overlong:
            # Not echoed whole, not even in a pointer: one entry at the object.
            first = excerpt(overlong[0])
            if len(overlong) == 1:
                yield base, f"Unknown field {first}."
            else:
                yield base, f"{len(overlong)} unknown fields with long names, the first {first}."
        return
    yield base, message(error)


# --- a fast path for arrays of rows -----------------------------------------------------------

# Keywords the request validator acts on; it ignores every other one (descriptions, examples,
# OpenAPI's nullable, which its type check reads, connexion's "components"), and so does this.
_VALIDATED_KEYWORDS = frozenset(RequestValidator.VALIDATORS)
_TYPES: dict[str, t.Callable[[t.Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
Check = t.Callable[[t.Any], bool]


def _is_number(value: t.Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def quick_check(schema: t.Any) -> Check | None:
    """A fast yes/no for ``schema`` that never says yes where connexion's validator says no.

    It knows the keywords row schemas use (type and OpenAPI's nullable, enum, lengths,
    pattern, minimum/maximum, allOf, properties, required, additionalProperties: false,
    items) and gives up (None) on any other, so a caller falls back to jsonschema. Only a
    "no" needs jsonschema's full error report: valid rows, the common case, cost a few
    comparisons instead of a validator tree walk.
    """
    if not isinstance(schema, dict):
        return None
    nullable = bool(schema.get("nullable") or schema.get("x-nullable"))
    checks: list[Check] = []
    for key, value in schema.items():
        if key not in _VALIDATED_KEYWORDS or key in _OBJECT_KEYWORDS:
            continue
        check = _keyword_check(key, value, schema, nullable)
        if check is None:
            return None
        checks.append(check)
    if _OBJECT_KEYWORDS.intersection(schema):
        check = _object_check(schema)
        if check is None:
            return None
        checks.append(check)
    return _all_of(checks)


def _all_of(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]

    def check_all(instance: t.Any) -> bool:
        return all(check(instance) for check in checks)

    return check_all


_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})


def _keyword_check(key: str, value: t.Any, schema: dict, nullable: bool) -> Check | None:
    if key == "format" and value not in Draft4Validator.FORMAT_CHECKER.checkers:
        return lambda _v: True  # e.g. OpenAPI's int32: no format check that validator runs
    if key == "type":
        is_type = _TYPES.get(value) if isinstance(value, str) else None
        if is_type is None:
            return None
        return (lambda v: v is None or is_type(v)) if nullable else is_type
    if key == "enum" and isinstance(value, list):
        # Stricter than jsonschema (1 and 1.0 differ here): a "no" only costs the full check.
        return lambda v: (
            (nullable and v is None) or any(v == e and type(v) is type(e) for e in value)
        )
    if key in ("minLength", "maxLength") and isinstance(value, int):
        if key == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= value
        return lambda v: not isinstance(v, str) or len(v) <= value
    if key == "pattern" and isinstance(value, str):
        pattern = re.compile(value)
        return lambda v: not isinstance(v, str) or pattern.search(v) is not None
    if key in ("minimum", "maximum") and _is_number(value):
        if schema.get("exclusiveMinimum") or schema.get("exclusiveMaximum"):
            return None
        if key == "minimum":
            return lambda v: not _is_number(v) or v >= value
        return lambda v: not _is_number(v) or v <= value
    if key == "allOf" and isinstance(value, list):
        parts = [quick_check(part) for part in value]
        if any(part is None for part in parts):
            return None
        return _all_of(parts)  # type: ignore[arg-type]
    if key == "items":
        item = quick_check(value)
        if item is None:
            return None
        return lambda v: not isinstance(v, list) or all(item(i) for i in v)
    return None


def _object_check(schema: dict) -> Check | None:
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or extra not in (True, False):
        return None
    compiled = {name: quick_check(sub) for name, sub in properties.items()}
    if any(check is None for check in compiled.values()):
        return None
    required = list(schema.get("required", []))
    known = frozenset(properties)

    def check(instance: t.Any) -> bool:
        if not isinstance(instance, dict):
            return True
        if any(name not in instance for name in required):
            return False
        if extra is False and not known.issuperset(instance):
            return False
        for name, value in instance.items():
            check = compiled.get(name)
            if check is not None and not check(value):
                return False
        return True

    return check
