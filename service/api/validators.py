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

``multipart/form-data`` bodies (the CSV import's upload) are read once as they arrive by
:mod:`service.api.multipart_form` (connexion's own multipart validator answers a missing
boundary, a nameless part or a thousand parts with a 500): every part is named, an unknown
or repeated one is a 400 naming it, and no file part's bytes are kept.

Hostile input costs little: JSON nesting is bounded before it is parsed
(:func:`service.formats.loads_json`); the search for errors stops after
:data:`MAX_COUNTED_ERRORS` of them (``error_count_exact: false``), and an array longer than
its ``maxItems`` is not searched at all; details quote at most an excerpt of a value
(:func:`service.schema_check.message`); a NUL character anywhere (body strings and keys, form
fields, parameters), which PostgreSQL cannot store in text, is a 400 naming where it is.
"""

from __future__ import annotations

import json
import math
import typing as t
from urllib.parse import parse_qsl, unquote_to_bytes

from connexion.datastructures import MediaTypeDict
from connexion.lifecycle import ConnexionRequest
from connexion.utils import is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    AbstractRequestBodyValidator,
    FormDataValidator,
    JSONRequestBodyValidator,
    ParameterValidator,
)
from jsonschema import Draft4Validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from service.api.multipart_form import Form, is_file_schema, part_pointer, read_form
from service.formats import FORM, MULTIPART, JSONTooDeep, loads_json
from service.problems import (
    MAX_LISTED_ERRORS,
    BadRequestProblem,
    BodyErrorsProblem,
    JSONTooDeepProblem,
    ParameterErrorsProblem,
    Problem,
    parameter_error,
    pointer_error,
)
from service.schema_check import (
    EXCERPT_CHARS,
    NUL,
    NUL_DETAIL,
    REQUIRED_DETAIL,
    excerpt,
    explain,
    json_pointer,
    message,
    nul_paths,
    quick_check,
    request_validator,
    unescape_pointer,
)

# Bodies larger than this are parsed and checked in a worker thread, not on the event loop
# (a bulk import's 100,000 rows would otherwise stall every request of the process).
OFFLOAD_BYTES = 256 * 1024
# The search for a body's errors stops after this many: far more than errors[] lists, and
# little enough that a body with 400,000 broken fields costs what one with 1,000 does.
MAX_COUNTED_ERRORS = 10 * MAX_LISTED_ERRORS
# One field's details (every rule it breaks, joined) stop growing past this.
MAX_DETAIL_CHARS = 500


def _check_encodable(value: t.Any) -> None:
    """Lone surrogates (\\ud800) parse as JSON but cannot be stored as text."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestProblem(
            "The request body contains a string that is not valid Unicode (a lone surrogate)."
        ) from exc


def _part_key(parts: t.Iterable[t.Any]) -> list[tuple[int, int | str]]:
    """Document order: array positions as numbers (row 2 before row 10)."""
    return [(0, p) if isinstance(p, int) else (1, str(p)) for p in parts]


def _merged_entries(
    found: t.Iterable[tuple[list[t.Any], str]], limit: int
) -> tuple[list[dict[str, str]], bool]:
    """One entry per pointer, in document order, from (path, detail) pairs; at most ``limit``
    entries (then False: the pairs were not all read)."""
    by_pointer: dict[str, tuple[list[t.Any], dict[str, str]]] = {}
    exact = True
    for parts, detail in found:
        pointer = json_pointer(parts)
        known = by_pointer.get(pointer)
        if known is None:
            if len(by_pointer) >= limit:
                exact = False
                break
            by_pointer[pointer] = (parts, pointer_error(pointer, detail))
        elif detail not in known[1]["detail"] and len(known[1]["detail"]) < MAX_DETAIL_CHARS:
            known[1]["detail"] = f"{known[1]['detail']}; {detail}"
    ordered = sorted(by_pointer.values(), key=lambda item: _part_key(item[0]))
    return [entry for _parts, entry in ordered], exact


def _collect_errors(
    validator: t.Any, body: t.Any, limit: int = MAX_COUNTED_ERRORS
) -> tuple[list[dict[str, str]], bool]:
    """The schema violations in ``body``, one entry per field (even if it breaks several rules),
    in document order; and whether that is all of them.

    Lazy: jsonschema's errors are read one by one and the search stops at the first one past
    ``limit`` entries, so time and memory stay bounded whatever the body holds.
    """
    found = (pair for error in validator.iter_errors(body) for pair in explain(error))
    return _merged_entries(found, limit)


def _nul_errors(body: t.Any, limit: int = MAX_COUNTED_ERRORS) -> tuple[list[dict[str, str]], bool]:
    """An entry for each string (value or key) of ``body`` holding a NUL character."""
    return _merged_entries(nul_paths(body), limit)


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


def _raise_body_errors(errors: list[dict[str, t.Any]], exact: bool = True) -> None:
    if errors:
        raise BodyErrorsProblem(errors, exact=exact)


class ProblemFormDataValidator(FormDataValidator):
    """Form bodies (the OAuth2 password grant) report errors like JSON bodies do.

    connexion's own form validator logs the offending value at ERROR, which for a login form
    can be a password; this one never logs or echoes a writeOnly value.

    Strict validation refuses fields the schema does not name, unless the schema says
    ``additionalProperties: true``: then they are ignored, NUL characters included (the OAuth2
    token request, whose unknown parameters RFC 6749 §3.2 says to ignore).

    A problem it raises carries the form as sent, ``form_fields`` (name, value) pairs in
    order, repeats kept: the token endpoint's error rendering reads ``grant_type`` from it.
    """

    _fields: list[tuple[str, str]] | None = None

    @property
    def _validator(self) -> t.Any:
        return request_validator(self._schema)

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: t.Any) -> t.Any:
        raw = bytearray()  # at most the body limit: BodyLimitMiddleware ran first

        async def recorded() -> t.AsyncGenerator[bytes, None]:
            async for chunk in stream:
                raw.extend(chunk)
                yield chunk

        body = await super()._parse(recorded(), scope)
        self._fields = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return body

    def _validate(self, body: t.Any) -> dict | None:
        try:
            return self._check(body)
        except Problem as problem:
            problem.form_fields = self._fields or []  # type: ignore[attr-defined]
            raise

    def _check(self, body: t.Any) -> dict | None:
        if not isinstance(body, dict):
            raise BadRequestProblem("The form body must be a set of fields.")
        known = set(self._schema.get("properties", {}))
        ignore_unknown = self._schema.get("additionalProperties") is True
        checked = {k: v for k, v in body.items() if k in known} if ignore_unknown else body
        nul, exact = _nul_errors(checked)
        if nul:
            _raise_body_errors(nul, exact)
        errors: list[dict[str, str]] = []
        if self._strict_validation and not ignore_unknown:
            errors += [
                pointer_error(json_pointer([name]), "Unknown field.")
                if len(name) <= EXCERPT_CHARS
                else pointer_error("", f"Unknown field {excerpt(name)}.")
                for name in body
                if name not in known
            ][:MAX_COUNTED_ERRORS]
        found, exact = _collect_errors(self._validator, body)
        _raise_body_errors(errors + found, exact)
        return None


class ProblemMultipartValidator(AbstractRequestBodyValidator):
    """``multipart/form-data`` bodies (the CSV product import's upload), every part checked.

    The body is read once as it arrives (:func:`service.api.multipart_form.read_form`, which
    keeps no file part's bytes and refuses a malformed body with a 400 problem); then each part
    against the schema's properties: an unknown part (strict validation) and a second part of
    a property that is not an array are named in ``errors[]`` by their JSON pointer (``/file``),
    and the text parts and the presence of the file parts are checked against the schema like
    any form (a missing required part: "This field is required.").
    """

    @property
    def _validator(self) -> t.Any:
        return request_validator(self._schema)

    async def wrap_receive(self, receive: t.Any, *, scope: t.Any) -> t.Any:
        length = Headers(scope=scope).get("content-length", "0").strip()
        if self._required and length in ("", "0"):
            raise BadRequestProblem(
                "The request body is required: a multipart/form-data form.",
                errors=[pointer_error("", "A multipart/form-data body is required.")],
            )
        return await super().wrap_receive(receive, scope=scope)

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: t.Any) -> Form:
        content_type = Headers(scope=scope).get("content-type", "")
        return await read_form(content_type, stream, self._schema.get("properties", {}))

    def _validate(self, body: t.Any) -> dict | None:
        if not isinstance(body, Form):
            raise BadRequestProblem("The body must be a multipart/form-data form.")
        properties = self._schema.get("properties", {})
        errors: list[dict[str, t.Any]] = []
        values: dict[str, t.Any] = {}
        for name, parts in body.by_name().items():
            pointer = part_pointer(name)
            schema = properties.get(name)
            if schema is None:
                if self._strict_validation:
                    known = ", ".join(properties) or "none"
                    what = "Unknown part" if pointer else f"Unknown part {excerpt(name)}"
                    errors.append(pointer_error(pointer, f"{what}; the form takes: {known}."))
                    continue
                schema = {}
            is_array = schema.get("type") == "array"
            if len(parts) > 1 and not is_array:
                errors.append(
                    pointer_error(pointer, f"Send this part once; the form has {len(parts)}.")
                )
                values[name] = ""  # reported: not "required" as well
                continue
            item_schema = schema.get("items", {}) if is_array else schema
            items: list[t.Any] = []
            for part in parts:
                if is_file_schema(item_schema):
                    items.append("")  # present; its bytes are the handler's to read
                elif part.filename is not None:
                    errors.append(pointer_error(pointer, "A text value, not a file, goes here."))
                else:
                    items.append(part.text)
            values[name] = items if is_array else (items[0] if items else "")
        nul, _exact = _nul_errors(values)
        found, exact = _collect_errors(self._validator, values)
        for entry in found:
            if entry["detail"] == REQUIRED_DETAIL:
                entry["detail"] = "This part is required."
        _raise_body_errors(errors + nul + found, exact)
        return None


class ProblemJSONBodyValidator(JSONRequestBodyValidator):
    """JSON bodies: decoded strictly, every schema violation reported."""

    _errors: tuple[list[dict[str, t.Any]], bool] | None = None

    @property
    def _validator(self) -> t.Any:
        return request_validator(self._schema)

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: t.Any) -> t.Any:
        raw = b"".join([message async for message in stream])
        if len(raw) <= OFFLOAD_BYTES:
            return self._load(raw)
        body = await run_in_threadpool(self._load, raw)
        if body is not None:
            self._errors = await run_in_threadpool(self._body_errors, body)
        return body

    def _body_errors(self, body: t.Any) -> tuple[list[dict[str, t.Any]], bool]:
        if isinstance(body, list):
            valid = quick_check(self._schema)
            if valid is not None and valid(body):
                return [], True
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
        except JSONTooDeep as exc:
            raise JSONTooDeepProblem(exc.limit) from exc
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
        if "\\u0000" in text:  # in JSON text, a NUL can only be this escape
            nul, exact = _nul_errors(body)
            if nul:
                _raise_body_errors(_with_rows(nul) if isinstance(body, list) else nul, exact)
        return body

    def _validate(self, body: t.Any) -> dict | None:
        if body is None:
            if self._required and not self._nullable:
                raise BadRequestProblem(
                    "The request body is required.",
                    errors=[pointer_error("", "A JSON body is required.")],
                )
            return None
        errors, exact = self._errors if self._errors is not None else self._body_errors(body)
        _raise_body_errors(_with_rows(errors) if isinstance(body, list) else errors, exact)
        return None


class ProblemParameterValidator(ParameterValidator):
    def _parameter_errors(
        self, location: str, values: t.Mapping[str, t.Any], skip: t.Collection[str] = ()
    ) -> list[dict]:
        errors = []
        seen: set[str] = set(skip)
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
            if _holds_nul(value):
                errors.append(parameter_error(name, location, NUL_DETAIL))
                continue
            validator = Draft4Validator(
                param.get("schema", param), format_checker=Draft4Validator.FORMAT_CHECKER
            )
            messages = [message(error) for error in validator.iter_errors(value)]
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
                parameter_error(_parameter_name(name), "query", "Unknown query parameter.")
                for name in sorted(extra)
            )
        # Starlette decodes the query string with replacement characters: check the bytes.
        undecodable = _undecodable_query(request.scope.get("query_string", b""))
        errors.extend(
            parameter_error(_parameter_name(name), "query", UNDECODABLE_DETAIL)
            for name in undecodable
        )
        errors.extend(self._parameter_errors("query", request.query_params, undecodable))
        errors.extend(self._parameter_errors("path", request.path_params))
        errors.extend(self._parameter_errors("header", request.headers))
        if errors:
            raise ParameterErrorsProblem(errors)


UNDECODABLE_DETAIL = "Not valid UTF-8 once percent-decoded."


def _undecodable_query(raw: bytes) -> list[str]:
    """Names of the query parameters whose name or value is not UTF-8 once percent-decoded."""
    if b"%" not in raw and raw.isascii():
        return []
    names: list[str] = []
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        try:
            for part in (name, value):
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            decoded = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
            if decoded not in names:
                names.append(decoded)
    return names


def _holds_nul(value: t.Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, list | tuple):
        return any(isinstance(item, str) and NUL in item for item in value)
    return False


def _parameter_name(name: str) -> str:
    """An unknown parameter's name as errors[] quotes it: no NUL, at most an excerpt."""
    if NUL in name or len(name) > EXCERPT_CHARS:
        return excerpt(name)  # repr: a NUL shows as the four characters \\x00
    return name


VALIDATORS = {
    "parameter": ProblemParameterValidator,
    "body": MediaTypeDict(
        {
            **dict(VALIDATOR_MAP["body"]),
            "*/*json": ProblemJSONBodyValidator,
            FORM: ProblemFormDataValidator,
            MULTIPART: ProblemMultipartValidator,
        }
    ),
}
