"""Request validators that report every invalid field, not just the first one.

connexion's stock validators stop at the first error and put it in a free-text ``detail``.
Integrators need machine-readable errors, so these subclasses collect all of them as
``errors[]`` entries (a JSON pointer for body fields, a name for parameters). They also turn
undecodable bodies (invalid UTF-8, unknown charsets, lone surrogates, NaN) into 400 problems
instead of server errors.

A body that is an array of rows (the product import) gets each entry's row as well: ``line``
(the 1-based position in the array) and ``field`` (the key in that row), the same words the
import's own row errors use; the list stops at ``MAX_LISTED_ERRORS`` entries and
``error_count`` says how many there were.
"""

from __future__ import annotations

import json
import math
import re
import typing as t

from connexion.datastructures import MediaTypeDict
from connexion.json_schema import Draft4RequestValidator
from connexion.lifecycle import ConnexionRequest
from connexion.utils import is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    FormDataValidator,
    JSONRequestBodyValidator,
    ParameterValidator,
)
from jsonschema import Draft4Validator, ValidationError
from starlette.concurrency import run_in_threadpool

from service.errors import ApiProblem, BadRequestProblem, parameter_error, pointer_error

MAX_LISTED_ERRORS = 1000
# Bodies larger than this are parsed and checked in a worker thread, not on the event loop
# (a bulk import's 100,000 rows would otherwise stall every request of the process).
OFFLOAD_BYTES = 256 * 1024


def json_pointer(parts: t.Iterable[t.Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _message(error: ValidationError) -> str:
    """jsonschema's message, unless it would echo a secret (a writeOnly field's value)."""
    if isinstance(error.schema, dict) and error.schema.get("writeOnly"):
        return f"Does not satisfy {error.validator} {error.validator_value!r}."
    return error.message


def _schema_errors(error: ValidationError) -> list[dict[str, str]]:
    """Turn one jsonschema error into entries that point at the field concerned."""
    base = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        return [
            pointer_error(json_pointer([*base, name]), "This field is required.")
            for name in error.validator_value
            if name not in instance
        ]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        return [
            pointer_error(json_pointer([*base, name]), "Unknown field.")
            for name in instance
            if name not in known
        ]
    return [pointer_error(json_pointer(base), _message(error))]


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _check_encodable(value: t.Any) -> None:
    """Lone surrogates (\\ud800) parse as JSON but cannot be stored as text."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestProblem(
            "The request body contains a string that is not valid Unicode (a lone surrogate)."
        ) from exc


def _path_key(error: ValidationError) -> list[tuple[int, int | str]]:
    """Errors in document order: array positions as numbers (row 2 before row 10)."""
    return [(0, p) if isinstance(p, int) else (1, str(p)) for p in error.path]


def _collect_errors(validator: t.Any, body: t.Any) -> list[dict[str, str]]:
    """Every schema violation in ``body``, one entry per field (even if it breaks several rules)."""
    found = sorted(validator.iter_errors(body), key=_path_key)
    by_pointer: dict[str, dict[str, str]] = {}
    for error in found:
        for entry in _schema_errors(error):
            known = by_pointer.setdefault(entry["pointer"], entry)
            if known is not entry and entry["detail"] not in known["detail"]:
                known["detail"] = f"{known['detail']}; {entry['detail']}"
    return list(by_pointer.values())


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _with_rows(errors: list[dict[str, str]]) -> list[dict[str, t.Any]]:
    """Entries about the rows of an array body, each naming its ``line`` and ``field``."""
    annotated = []
    for entry in errors:
        segments = entry["pointer"].split("/")[1:]
        if not segments or not segments[0].isdigit():
            annotated.append(entry)
            continue
        row: dict[str, t.Any] = {"line": int(segments[0]) + 1}
        if len(segments) > 1:
            row["field"] = _unescape(segments[1])
        annotated.append({**row, **entry})
    return annotated


def _raise_row_errors(errors: list[dict[str, t.Any]]) -> None:
    if errors:
        raise ApiProblem(
            400,
            "validation-error",
            f"The request body is invalid: {len(errors)} error(s); see errors[].",
            title="Invalid request",
            errors=errors[:MAX_LISTED_ERRORS],
            error_count=len(errors),
        )


def _raise_body_errors(errors: list[dict[str, str]]) -> None:
    if errors:
        raise BadRequestProblem(
            f"The request body is invalid: {len(errors)} error(s); see errors[].",
            errors=errors,
        )


class ProblemFormDataValidator(FormDataValidator):
    """Form bodies (the OAuth2 password grant) report errors like JSON bodies do.

    connexion's own form validator logs the offending value at ERROR, which for a login form
    can be a password; this one never logs or echoes a writeOnly value.
    """

    def _validate(self, body: t.Any) -> dict | None:
        if not isinstance(body, dict):
            raise BadRequestProblem("The form body must be a set of fields.")
        errors: list[dict[str, str]] = []
        if self._strict_validation:
            known = set(self._schema.get("properties", {}))
            errors += [
                pointer_error(json_pointer([name]), "Unknown field.")
                for name in body
                if name not in known
            ]
        errors += _collect_errors(self._validator, body)
        _raise_body_errors(errors)
        return None


# --- a fast path for arrays of rows -----------------------------------------------------------

# Keywords the request validator acts on; it ignores every other one (descriptions, examples,
# OpenAPI's nullable, which its type check reads, connexion's "components"), and so does this.
_VALIDATED_KEYWORDS = frozenset(Draft4RequestValidator.VALIDATORS)
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


class ProblemJSONBodyValidator(JSONRequestBodyValidator):
    """JSON bodies: decoded strictly, every schema violation reported."""

    _errors: list[dict[str, t.Any]] | None = None

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: t.Any) -> t.Any:
        raw = b"".join([message async for message in stream])
        if len(raw) <= OFFLOAD_BYTES:
            return self._load(raw)
        body = await run_in_threadpool(self._load, raw)
        if body is not None:
            self._errors = await run_in_threadpool(self._body_errors, body)
        return body

    def _body_errors(self, body: t.Any) -> list[dict[str, t.Any]]:
        if isinstance(body, list):
            valid = quick_check(self._schema)
            if valid is not None and valid(body):
                return []
        return _collect_errors(self._validator, body)

    def _load(self, raw: bytes) -> t.Any:
        try:
            text = raw.decode(self._encoding)
        except LookupError as exc:
            raise BadRequestProblem(f"Unknown charset {self._encoding!r}; use utf-8.") from exc
        except UnicodeDecodeError as exc:
            raise BadRequestProblem(
                f"The request body is not valid {self._encoding}: byte {exc.start} "
                "cannot be decoded."
            ) from exc
        if not text.strip():
            return None
        try:
            body = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise BadRequestProblem(
                f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, "
                f"column {exc.colno})."
            ) from exc
        except ValueError as exc:
            raise BadRequestProblem(f"The request body is not valid JSON: {exc}.") from exc
        if isinstance(body, float) and not math.isfinite(body):
            raise BadRequestProblem("The request body is not a finite number.")
        _check_encodable(body)
        return body

    def _validate(self, body: t.Any) -> dict | None:
        if body is None:
            if self._required and not self._nullable:
                raise BadRequestProblem(
                    "The request body is required.",
                    errors=[pointer_error("", "A JSON body is required.")],
                )
            return None
        errors = self._errors if self._errors is not None else self._body_errors(body)
        if isinstance(body, list):
            _raise_row_errors(_with_rows(errors))
        _raise_body_errors(errors)
        return None


class ProblemParameterValidator(ParameterValidator):
    def _parameter_errors(self, location: str, values: t.Mapping[str, t.Any]) -> list[dict]:
        errors = []
        seen: set[str] = set()
        for param in self.parameters.get(location, []):
            name = param["name"]
            # connexion 3.3 appends path-level parameters to each operation's list once per
            # middleware that builds it; check each parameter once.
            if name in seen:
                continue
            seen.add(name)
            lookup = name.replace("-", "_") if location == "path" else name
            value = values.get(lookup)
            if is_nullable(param) and value in (None, "null", "None"):
                continue
            if value is None:
                if param.get("required"):
                    errors.append(parameter_error(name, location, "This parameter is required."))
                continue
            validator = Draft4Validator(
                param.get("schema", param), format_checker=Draft4Validator.FORMAT_CHECKER
            )
            messages = [error.message for error in validator.iter_errors(value)]
            if messages:
                errors.append(parameter_error(name, location, "; ".join(messages)))
        return errors

    def validate_request(self, request: ConnexionRequest) -> None:
        errors: list[dict] = []
        if self.strict_validation:
            extra = self.validate_query_parameter_list(
                request, security_params=self.security_query_params
            )
            errors.extend(
                parameter_error(name, "query", "Unknown query parameter.") for name in sorted(extra)
            )
        errors.extend(self._parameter_errors("query", request.query_params))
        errors.extend(self._parameter_errors("path", request.path_params))
        errors.extend(self._parameter_errors("header", request.headers))
        if errors:
            raise BadRequestProblem(
                f"The request parameters are invalid: {len(errors)} error(s); see errors[].",
                errors=errors,
            )


VALIDATORS = {
    "parameter": ProblemParameterValidator,
    "body": MediaTypeDict(
        {
            **dict(VALIDATOR_MAP["body"]),
            "*/*json": ProblemJSONBodyValidator,
            "application/x-www-form-urlencoded": ProblemFormDataValidator,
        }
    ),
}
