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
import typing as t

from connexion.datastructures import MediaTypeDict
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

from service.formats import loads_json
from service.problems import BadRequestProblem, BodyErrorsProblem, parameter_error, pointer_error
from service.schema_check import explain, json_pointer, quick_check, unescape_pointer

# Bodies larger than this are parsed and checked in a worker thread, not on the event loop
# (a bulk import's 100,000 rows would otherwise stall every request of the process).
OFFLOAD_BYTES = 256 * 1024


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
        for parts, detail in explain(error):
            entry = pointer_error(json_pointer(parts), detail)
            known = by_pointer.setdefault(entry["pointer"], entry)
            if known is not entry and entry["detail"] not in known["detail"]:
                known["detail"] = f"{known['detail']}; {entry['detail']}"
    return list(by_pointer.values())


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
            row["field"] = unescape_pointer(segments[1])
        annotated.append({**row, **entry})
    return annotated


def _raise_body_errors(errors: list[dict[str, t.Any]]) -> None:
    if errors:
        raise BodyErrorsProblem(errors)


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
            body = loads_json(text)
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
        _raise_body_errors(_with_rows(errors) if isinstance(body, list) else errors)
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
