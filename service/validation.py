"""Request validators that report every invalid field, not just the first one.

connexion's stock validators stop at the first error and put it in a free-text ``detail``.
Integrators need machine-readable errors, so these subclasses collect all of them as
``errors[]`` entries (a JSON pointer for body fields, a name for parameters). They also turn
undecodable bodies (invalid UTF-8, unknown charsets, lone surrogates, NaN) into 400 problems
instead of server errors.
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

from service.errors import BadRequestProblem, parameter_error, pointer_error


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


def _collect_errors(validator: t.Any, body: t.Any) -> list[dict[str, str]]:
    """Every schema violation in ``body``, one entry per field (even if it breaks several rules)."""
    found = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.path])
    by_pointer: dict[str, dict[str, str]] = {}
    for error in found:
        for entry in _schema_errors(error):
            known = by_pointer.setdefault(entry["pointer"], entry)
            if known is not entry and entry["detail"] not in known["detail"]:
                known["detail"] = f"{known['detail']}; {entry['detail']}"
    return list(by_pointer.values())


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


class ProblemJSONBodyValidator(JSONRequestBodyValidator):
    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: t.Any) -> t.Any:
        raw = b"".join([message async for message in stream])
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
        _raise_body_errors(_collect_errors(self._validator, body))
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
