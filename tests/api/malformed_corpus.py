"""The malformed-input corpus (issue 11): hostile variants of every operation in the spec.

:func:`build_corpus` walks ``openapi/openapi.yaml`` (every path and method, its parameters
and request media types) and makes, for each operation, the malformed variants that apply to
it: odd paths (``//``, trailing ``/``, bad ids) and methods, unknown and out-of-range query
parameters, bogus cursors, NUL and invalid UTF-8 in text, overlong headers, a giant
``Idempotency-Key``, broken, deep, untyped and oversized JSON, NaN and huge numbers, huge
strings, huge ``errors[]`` lists, bad import files and forms.

A case is built against a :class:`World` (the real ids of a small seeded store) only when it
runs, so the case list, and with it the test ids, is fixed at collection time. Each case says
what a correct answer is (:data:`EXPECT_4XX`, or :data:`EXPECT_2XX` for the few inputs that
are legitimate, e.g. ``%`` in ``q``) and :func:`check` lists everything wrong with an answer.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import yaml

from service.config import Settings
from service.formats import utcnow
from service.models.auth import ROLES
from tests.helpers import multipart

BASE_URL = "http://testserver"
METHODS = ("get", "put", "post", "delete", "patch")

# What the answers are measured against.
MAX_ANSWER_BYTES = 100_000
DEFAULT_BODY_LIMIT = 1024 * 1024  # every body but the product import's (1 MiB)
IMPORT_BODY_LIMIT = Settings().import_max_bytes  # the test app runs with the default
LEAKS = ("Traceback", 'File "', 'File \\"', "SELECT ", "INSERT ")
LEAKS_ANY_CASE = ("sqlalchemy", "psycopg", "sqlite3")
PROBLEM_JSON = "application/problem+json"
# The OAuth2 token endpoint answers its 400s as RFC 6749 §5.2 JSON, not problem documents.
OAUTH_TOKEN_OPERATION = "issueToken"
OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)
OAUTH_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # RFC 6749 §5.2

EXPECT_4XX = "4xx"
EXPECT_2XX = "2xx"
# Far timestamps on query filters: clamped by design (service.formats.parse_timestamp,
# tests/api/test_reports.py) or refused; either is right if it is done correctly.
EXPECT_4XX_OR_2XX = "4xx-or-2xx"

# Sizes of the hostile values.
HUGE_STRING = 200_000  # characters in a text field (under the 1 MiB body limit)
HUGE_QUERY = 30_000  # characters in a query parameter (httpx refuses URLs over 64 KiB)
HUGE_HEADER = 64 * 1024  # one header value, above every common server's limit
GIANT_KEY = 100_000  # characters of Idempotency-Key
OVERLONG_TAG = 10_000  # If-Match / If-None-Match (the spec allows 512)
DEEP = 1000  # nesting levels
MANY_ERRORS = 2_000  # array entries or unknown fields that are each an error (cap: 1000)
HUGE_INT = 10**30
HUGE_DIGITS = "9" * 5000  # beyond Python's 4300-digit int conversion limit

FAR_TIMESTAMPS = {
    # name: (value, is it after every stored instant?)
    "far-future-offset": ("9999-12-31T23:59:59-14:00", True),
    "leap-second-at-max": ("9999-12-31T23:59:60Z", True),
    "far-past-offset": ("0001-01-01T00:00:00+14:00", False),
    "year-zero": ("0000-01-01T00:00:00Z", False),
}

LOGIN_PASSWORD = "a long corpus passphrase"


# --- the spec -------------------------------------------------------------------------------

SPEC: dict = yaml.safe_load(Settings().spec_path.read_text())


def resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def flatten(schema: Any) -> dict:
    """A schema with its ``$ref`` followed and its ``allOf`` merged into one dict."""
    schema = resolve(schema)
    if not isinstance(schema, dict):
        return {}
    merged: dict = {}
    for part in schema.get("allOf", []):
        merged.update(flatten(part))
    merged.update({k: v for k, v in schema.items() if k != "allOf"})
    return merged


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str  # upper case
    path: str  # the template, e.g. /api/v1/products/{product_id}
    parameters: tuple[dict, ...]
    media_types: dict[str, dict]  # request media type → flattened schema
    body_required: bool
    role: str | None  # the lowest role it needs; None for public operations

    @property
    def path_parameters(self) -> list[dict]:
        return [p for p in self.parameters if p["in"] == "path"]

    def parameters_in(self, location: str) -> list[dict]:
        return [p for p in self.parameters if p["in"] == location]

    def label(self) -> str:
        return f"{self.method} {self.path}"


def spec_operations() -> list[Operation]:
    default_security = SPEC.get("security", [])
    found = []
    for path, item in SPEC["paths"].items():
        shared = [resolve(p) for p in item.get("parameters", [])]
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            parameters: dict[tuple[str, str], dict] = {}
            for param in [*shared, *(resolve(p) for p in operation.get("parameters", []))]:
                parameters[(param["in"], param["name"])] = param
            body = resolve(operation.get("requestBody")) or {}
            role = None
            for requirement in operation.get("security", default_security):
                for scopes in requirement.values():
                    role = max(scopes, key=ROLES.index) if scopes else "viewer"
            found.append(
                Operation(
                    operation_id=operation["operationId"],
                    method=method.upper(),
                    path=path,
                    parameters=tuple(parameters.values()),
                    media_types={
                        media: flatten(content.get("schema", {}))
                        for media, content in body.get("content", {}).items()
                    },
                    body_required=bool(body.get("required")),
                    role=role,
                )
            )
    return found


def spec_paths() -> dict[str, list[str]]:
    return {path: [m.upper() for m in METHODS if m in item] for path, item in SPEC["paths"].items()}


# --- the seeded store -----------------------------------------------------------------------


@dataclass
class World:
    """Real ids and contents of the store the corpus runs against (see the test module)."""

    category: dict
    spare_category: dict  # empty: a DELETE that wrongly gets through really deletes it
    product: dict  # holds stock
    spare_product: dict  # no stock history: deletable
    location: dict  # holds stock
    other_location: dict
    spare_location: dict  # empty: deletable
    receipt: dict  # the stock document; its movement exists
    user: dict  # a viewer that can log in with LOGIN_PASSWORD
    api_key: dict
    webhook: dict  # an endpoint with one delivery on record
    webhook_delivery_id: int
    lists: dict[str, list[dict]]  # categories, products, locations, movements: every item
    valuation: dict  # the valuation report now
    logout_tokens: list[str] = field(default_factory=list)

    @property
    def movement_id(self) -> int:
        return self.receipt["movements"][0]["id"]

    def take_logout_token(self) -> str:
        return self.logout_tokens.pop()

    def path_ids(self, operation: Operation) -> dict[str, int]:
        """The id to put in each path parameter: spare resources for writes."""
        write = operation.method != "GET"
        return {
            "category_id": (self.spare_category if write else self.category)["id"],
            "product_id": (self.spare_product if write else self.product)["id"],
            "location_id": (self.spare_location if write else self.location)["id"],
            "document_id": self.receipt["id"],
            "movement_id": self.movement_id,
            "user_id": self.user["id"],
            "key_id": self.api_key["id"],
            "webhook_id": self.webhook["id"],
            "delivery_id": self.webhook_delivery_id,
        }


def in_days(days: int) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


# A public address literal: the target guard accepts it without DNS (nothing is sent to it).
PUBLIC_WEBHOOK_URL = "https://93.184.215.14/hooks/storekeeper"


# The body a correct request of each operation would send (the variants break it).
VALID_BODIES: dict[str, Callable[[World], Any]] = {
    "createCategory": lambda w: {"name": "Corpus category", "description": "From the corpus"},
    "updateCategory": lambda w: {"name": "Corpus renamed", "description": "Renamed"},
    "createProduct": lambda w: {
        "sku": "CORPUS-NEW",
        "name": "Corpus product",
        "description": "From the corpus",
        "reorder_point": 1,
    },
    "updateProduct": lambda w: {"name": "Corpus renamed", "reorder_point": 2},
    "createLocation": lambda w: {"code": "CORPUS-NEW", "name": "Corpus location"},
    "updateLocation": lambda w: {"name": "Corpus renamed", "is_active": False},
    "createReceipt": lambda w: {
        "location_id": w.location["id"],
        "reference": "CORPUS-R",
        "note": "corpus",
        "lines": [{"product_id": w.product["id"], "quantity": 1, "unit_cost": "1.50"}],
    },
    "createShipment": lambda w: {
        "location_id": w.location["id"],
        "reference": "CORPUS-S",
        "lines": [{"product_id": w.product["id"], "quantity": 1}],
    },
    "createTransfer": lambda w: {
        "from_location_id": w.location["id"],
        "to_location_id": w.other_location["id"],
        "reference": "CORPUS-T",
        "lines": [{"product_id": w.product["id"], "quantity": 1}],
    },
    "createAdjustment": lambda w: {
        "location_id": w.location["id"],
        "reference": "CORPUS-A",
        "lines": [{"product_id": w.product["id"], "reason": "found", "quantity_delta": 1}],
    },
    "reverseStockMovement": lambda w: {"reference": "CORPUS-REV", "note": "corpus"},
    "login": lambda w: {"email": w.user["email"], "password": LOGIN_PASSWORD},
    "requestPasswordReset": lambda w: {"email": w.user["email"]},
    "confirmPasswordReset": lambda w: {
        "token": "corpus-reset-token",
        "new_password": "another long passphrase",
    },
    "createUser": lambda w: {
        "email": "corpus-new@example.com",
        "name": "Corpus user",
        "role": "viewer",
        "password": "a long corpus passphrase 2",
    },
    "updateUser": lambda w: {"name": "Corpus renamed"},
    "createApiKey": lambda w: {"name": "Corpus key 2", "role": "viewer", "expires_at": in_days(30)},
    "importProducts": lambda w: [{"sku": "CORPUS-IMP", "name": "Imported", "reorder_point": 3}],
    "createWebhook": lambda w: {
        "url": PUBLIC_WEBHOOK_URL,
        "event_types": ["stock.document.posted"],
        "description": "Corpus hook 2",
    },
    "updateWebhook": lambda w: {"description": "Corpus renamed", "enabled": False},
    "rotateWebhookSecret": lambda w: {"overlap_seconds": 60},
}
VALID_CSV = b"sku,name,reorder_point\nCORPUS-IMP,Imported,3\n"
# The CSV import's form (multipart/form-data, one part "file").
UPLOAD_BOUNDARY = "corpus-boundary"
UPLOAD_TYPE = f"multipart/form-data; boundary={UPLOAD_BOUNDARY}"


def form_of(*parts: tuple[str, bytes, dict[str, str]]) -> bytes:
    return multipart(*parts, boundary=UPLOAD_BOUNDARY)[0]


def csv_form(content: bytes, part_type: str = "text/csv") -> bytes:
    return form_of(("file", content, {"filename": "corpus.csv", "Content-Type": part_type}))


def valid_form(w: World) -> dict[str, str]:
    return {"grant_type": "password", "username": w.user["email"], "password": LOGIN_PASSWORD}


# --- requests and cases ---------------------------------------------------------------------


@dataclass
class Request:
    method: str
    url: str
    headers: dict[Any, Any] = field(default_factory=dict)
    content: bytes | None = None


Verify = Callable[[Any, World], list[str]]


@dataclass
class Case:
    id: str
    kind: str
    build: Callable[[World], Request]
    expect: str = EXPECT_4XX
    statuses: frozenset[int] | None = None  # the exact 4xx statuses allowed, if specified
    verify: Verify | None = None  # checks a 2xx answer
    huge: str | None = None  # a submitted value the answer must not echo in full
    needs_logout_token: bool = False
    oauth: bool = False  # a 400 is an RFC 6749 error document (the token endpoint)
    oauth_error: str | None = None  # the RFC 6749 error code a 400 must carry, if specified


def fill_path(operation: Operation, world: World, overrides: dict[str, str] | None = None) -> str:
    path = operation.path
    ids = world.path_ids(operation)
    for param in operation.path_parameters:
        name = param["name"]
        value = (overrides or {}).get(name, str(ids[name]))
        path = path.replace("{" + name + "}", value)
    return path


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


RAW = "\u0001raw\u0001"  # a placeholder replaced by raw bytes after encoding


def encode_with_raw(body: Any, target: tuple, raw: bytes) -> bytes:
    """The JSON of ``body`` with the value at ``target`` replaced by ``raw`` bytes verbatim."""
    marked = set_at(body, target, RAW)
    return encode_json(marked).replace(encode_json(RAW), raw)


def set_at(body: Any, path: tuple, value: Any) -> Any:
    result = copy.deepcopy(body)
    node = result
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return result


def pointer(path: tuple) -> str:
    return "/" + "/".join(str(p) for p in path)


def string_targets(schema: dict, value: Any, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """Every string field of ``schema`` along ``value`` (present in it or optional)."""
    schema = flatten(schema)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, prop in properties.items():
            if name in value:
                yield from string_targets(prop, value[name], (*path, name))
            elif _writable_text(flatten(prop)):
                yield (*path, name), flatten(prop)
    elif isinstance(value, list) and value:
        yield from string_targets(schema.get("items", {}), value[0], (*path, 0))
    elif isinstance(value, str):
        yield path, schema


def _writable_text(schema: dict) -> bool:
    """A string field the service reads (not one it ignores, like an export's ``id``)."""
    ignored = str(schema.get("description", "")).startswith("Ignored")
    return schema.get("type") == "string" and not schema.get("readOnly") and not ignored


def leaf_targets(schema: dict, value: Any, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """Every scalar present in ``value``, with its schema, in document order."""
    schema = flatten(schema)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, item in value.items():
            yield from leaf_targets(properties.get(name, {}), item, (*path, name))
    elif isinstance(value, list) and value:
        yield from leaf_targets(schema.get("items", {}), value[0], (*path, 0))
    else:
        yield path, schema


def text_target(schema: dict, body: Any) -> tuple:
    """The first string field; for a body without one, its first field (text where a number
    belongs is hostile input too)."""
    leaves = list(leaf_targets(schema, body))
    for path, leaf in leaves:
        if leaf.get("type") == "string":
            return path
    if not leaves:
        raise AssertionError(f"no field in {body!r}")
    return leaves[0][0]


def number_target(schema: dict, body: Any) -> tuple:
    """The first integer field (present in the body, else any the schema has), else text."""
    for path, leaf in leaf_targets(schema, body):
        if leaf.get("type") == "integer":
            return path
    root = body[0] if isinstance(body, list) else body
    prefix: tuple = (0,) if isinstance(body, list) else ()
    properties = flatten(schema.get("items", {}) if isinstance(body, list) else schema).get(
        "properties", {}
    )
    for name, prop in properties.items():
        if flatten(prop).get("type") == "integer" and name not in root:
            return (*prefix, name)
    return text_target(schema, body)


# --- checking an answer ---------------------------------------------------------------------


def leaks(text: str) -> list[str]:
    found = [word for word in LEAKS if word in text]
    lowered = text.lower()
    found += [word for word in LEAKS_ANY_CASE if word in lowered]
    return found


def check(case: Case, response: Any, world: World) -> list[str]:
    """Everything wrong with ``response`` as the answer to ``case`` (empty: all is well)."""
    problems: list[str] = []
    status = response.status_code
    raw = response.content
    text = raw.decode("utf-8", "replace")
    header_text = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    found = leaks(text) + leaks(header_text)
    if found:
        problems.append(f"leaks {found}")
    if case.huge is not None and case.huge in text:
        problems.append(f"echoes the submitted {len(case.huge)}-character value in full")
    is_4xx = 400 <= status < 500
    is_2xx = 200 <= status < 300
    if case.expect == EXPECT_2XX and not is_2xx:
        problems.append(f"expected 2xx, got {status}")
    elif case.expect == EXPECT_4XX and not is_4xx:
        problems.append(f"expected 4xx, got {status}")
    elif case.expect == EXPECT_4XX_OR_2XX and not (is_4xx or is_2xx):
        problems.append(f"expected 4xx or 2xx, got {status}")
    if is_4xx:
        if case.statuses is not None and status not in case.statuses:
            problems.append(f"expected {sorted(case.statuses)}, got {status}")
        if case.oauth and status == 400:
            problems += oauth_error_document_errors(response, text, case.oauth_error)
        else:
            problems += problem_document_errors(response, text)
    elif is_2xx and case.verify is not None:
        problems += case.verify(response, world)
    return problems


def problem_document_errors(response: Any, text: str) -> list[str]:
    problems = []
    if len(response.content) >= MAX_ANSWER_BYTES:
        problems.append(f"answer is {len(response.content)} bytes")
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith(PROBLEM_JSON):
        problems.append(f"content-type {content_type!r}")
    try:
        document = json.loads(text)
    except ValueError:
        return [*problems, "body is not JSON"]
    if not isinstance(document, dict):
        return [*problems, "body is not a JSON object"]
    for member, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        if not isinstance(document.get(member), kind) or document.get(member) in ("", None):
            problems.append(f"problem member {member!r} missing or not a {kind.__name__}")
    if document.get("status") != response.status_code:
        problems.append(f"problem status {document.get('status')!r} != {response.status_code}")
    request_id = response.headers.get("x-request-id")
    if not request_id or document.get("request_id") != request_id:
        problems.append("problem request_id does not match X-Request-ID")
    if response.status_code == 405 and not response.headers.get("allow"):
        problems.append("405 without Allow")
    if response.status_code == 401 and not response.headers.get("www-authenticate"):
        problems.append("401 without WWW-Authenticate")
    return problems


def oauth_error_document_errors(response: Any, text: str, expected: str | None) -> list[str]:
    """What is wrong with an RFC 6749 §5.2 error answer (400, JSON, not cached)."""
    problems = []
    if len(response.content) >= MAX_ANSWER_BYTES:
        problems.append(f"answer is {len(response.content)} bytes")
    content_type = response.headers.get("content-type", "")
    if content_type != "application/json":
        problems.append(f"content-type {content_type!r}")
    if response.headers.get("cache-control") != "no-store":
        problems.append("no Cache-Control: no-store")
    try:
        document = json.loads(text)
    except ValueError:
        return [*problems, "body is not JSON"]
    if not isinstance(document, dict):
        return [*problems, "body is not a JSON object"]
    error = document.get("error")
    if error not in OAUTH_ERRORS:
        problems.append(f"error {error!r} is not an RFC 6749 error code")
    elif expected is not None and error != expected:
        problems.append(f"error {error!r}, expected {expected!r}")
    description = document.get("error_description")
    if not isinstance(description, str) or not OAUTH_TEXT.fullmatch(description):
        problems.append(f"error_description {str(description)[:60]!r} is not RFC 6749 text")
    if not response.headers.get("x-request-id"):
        problems.append("no X-Request-ID")
    return problems


def listed_ids(response: Any) -> list[int] | None:
    body = response.json()
    if not isinstance(body, dict) or "items" not in body:
        return None
    return sorted(item["id"] for item in body["items"])


def expect_items(list_name: str, keep: Callable[[dict], bool]) -> Verify:
    """A 2xx list answer holding exactly the seeded items ``keep`` accepts, on one page."""

    def verify(response: Any, world: World) -> list[str]:
        expected = sorted(item["id"] for item in world.lists[list_name] if keep(item))
        got = listed_ids(response)
        problems = []
        if got != expected:
            problems.append(f"items {got} != expected {expected}")
        if response.json().get("next_cursor") is not None:
            problems.append("next_cursor on a one-page answer")
        return problems

    return verify


def search_verify(list_name: str, fields: tuple[str, ...], q: str) -> Verify:
    needle = q.casefold()
    return expect_items(
        list_name, lambda item: any(needle in (item[f] or "").casefold() for f in fields)
    )


def expect_generated_request_id(response: Any, world: World) -> list[str]:
    if re.fullmatch(r"[0-9a-f]{32}", response.headers.get("x-request-id", "")):
        return []
    return [f"X-Request-ID not replaced: {response.headers.get('x-request-id', '')[:60]!r}"]


def movement_summary_verify(expected_movements: Callable[[World], int]) -> Verify:
    def verify(response: Any, world: World) -> list[str]:
        totals = response.json().get("totals", {})
        if totals.get("movements") != expected_movements(world):
            return [f"totals {totals} but expected {expected_movements(world)} movements"]
        return []

    return verify


def valuation_verify(after_everything: bool) -> Verify:
    def verify(response: Any, world: World) -> list[str]:
        report = response.json()
        if after_everything:
            if report.get("totals") != world.valuation["totals"]:
                return [f"totals {report.get('totals')} != now {world.valuation['totals']}"]
            return []
        if report.get("rows") or report.get("totals", {}).get("quantity") != 0:
            return [f"stock before the first movement: {report.get('totals')}"]
        return []

    return verify


def timestamp_verify(operation_id: str, name: str, after_everything: bool) -> Verify:
    """What a clamped far timestamp must answer (nothing happened before or after it)."""
    if operation_id == "listStockMovements":
        # created_after is inclusive, created_before exclusive.
        keep_all = (name == "created_before") == after_everything
        return expect_items("movements", lambda _item: keep_all)
    if operation_id == "getValuationReport":
        return valuation_verify(after_everything)
    if operation_id == "getMovementSummary":
        # from defaults to 30 days before to; to defaults to now.
        if name == "from" and not after_everything:
            return movement_summary_verify(lambda w: len(w.lists["movements"]))
        return movement_summary_verify(lambda w: 0)
    raise AssertionError(f"no expectation for a far {name} on {operation_id}")


# --- the corpus -----------------------------------------------------------------------------


class CorpusBuilder:
    def __init__(self) -> None:
        self.cases: list[Case] = []

    def add(self, operation: Operation | str, kind: str, build, **options: Any) -> None:
        if isinstance(operation, Operation):
            label = operation.label()
            # Every logout case spends a token of its own (it would revoke the client's).
            options.setdefault("needs_logout_token", operation.operation_id == "logout")
            options.setdefault("oauth", operation.operation_id == OAUTH_TOKEN_OPERATION)
        else:
            label = operation
        self.cases.append(
            Case(id=f"{label} {kind}", kind=kind.split(":")[0], build=build, **options)
        )

    # a correct request of the operation, optionally changed

    @staticmethod
    def request(
        operation: Operation,
        world: World,
        *,
        path: str | None = None,
        query: str = "",
        headers: dict | None = None,
        body: bytes | None = None,
        media_type: str | None = None,
        method: str | None = None,
        with_body: bool = True,
    ) -> Request:
        all_headers: dict[Any, Any] = {}
        if operation.operation_id == "logout":
            all_headers["Authorization"] = f"Bearer {world.take_logout_token()}"
        content = None
        if with_body and operation.media_types:
            if body is None:
                media_type, content = default_body(operation, world)
            else:
                content = body
            if media_type is not None:
                all_headers["Content-Type"] = media_type
        elif body is not None:
            content = body
            if media_type is not None:
                all_headers["Content-Type"] = media_type
        all_headers.update(headers or {})
        url = BASE_URL + (path if path is not None else fill_path(operation, world))
        if query:
            url += "?" + query
        return Request(method or operation.method, url, all_headers, content)

    def operation_cases(self, operation: Operation) -> None:
        self.path_cases(operation)
        self.query_cases(operation)
        self.header_cases(operation)
        if "application/json" in operation.media_types:
            self.json_body_cases(operation)
        if "multipart/form-data" in operation.media_types:
            self.csv_cases(operation)
        if "application/x-www-form-urlencoded" in operation.media_types:
            self.form_cases(operation)
        if not operation.media_types:
            self.add(
                operation,
                "oversize-unexpected-body",
                lambda w, op=operation: self.request(
                    op, w, body=oversize_json(DEFAULT_BODY_LIMIT), media_type="application/json"
                ),
                statuses=frozenset({413}),
            )

    # paths

    def path_cases(self, operation: Operation) -> None:
        op = operation

        def with_path(change: Callable[[str], str]):
            return lambda w: self.request(op, w, path=change(fill_path(op, w)))

        self.add(op, "leading-double-slash", with_path(lambda p: "/" + p))
        self.add(
            op,
            "inner-double-slash",
            with_path(lambda p: p[: p.rindex("/")] + "/" + p[p.rindex("/") :]),
        )
        self.add(op, "trailing-slash", with_path(lambda p: p + "/"))
        if op.path_parameters:
            name = op.path_parameters[-1]["name"]
            for kind, value in (
                ("path-id-zero", "0"),
                ("path-id-negative", "-1"),
                ("path-id-text", "abc"),
                ("path-id-float", "1.5"),
                ("huge-number:path-id", "99999999999"),
                ("huge-number:path-id-digits", str(HUGE_INT)),
                ("nul:path-id", "1%00"),
                ("invalid-utf8:path-id", "%FF%FE"),
            ):
                self.add(
                    op,
                    kind,
                    lambda w, v=value, n=name: self.request(op, w, path=fill_path(op, w, {n: v})),
                )
        else:
            for kind, suffix in (
                ("nul:path", "%00"),
                ("invalid-utf8:path", "%FF%FE"),
                ("path-semicolon", ";x=1"),
            ):
                self.add(
                    op,
                    kind,
                    lambda w, s=suffix: self.request(op, w, path=fill_path(op, w) + s),
                )

    def method_cases(self, path: str, methods: list[str], operation: Operation) -> None:
        undefined = [m for m in ("PUT", "PATCH", "DELETE", "POST") if m not in methods]
        for method in [*undefined[:2], "FOO"]:
            self.add(
                f"{method} {path}",
                "odd-method",
                lambda w, m=method: Request(
                    m,
                    BASE_URL + fill_path(operation, w),
                    {"Content-Type": "application/json"},
                    b"{}",
                ),
                statuses=frozenset({405}),
            )

    # query parameters

    def query_cases(self, operation: Operation) -> None:
        op = operation

        def with_query(query: str):
            return lambda w: self.request(op, w, query=query)

        self.add(op, "unknown-query-param", with_query("bogus_param=1"))
        for param in op.parameters_in("query"):
            name = param["name"]
            schema = flatten(param.get("schema", {}))
            kind = schema.get("type")
            variants: list[tuple[str, str, dict]] = []
            if kind == "integer":
                variants += [
                    ("huge-number", str(HUGE_INT), {}),
                    ("huge-number:digits", HUGE_DIGITS, {}),
                    ("wrong-type", "abc", {}),
                    ("wrong-type:float", "1.5", {}),
                ]
            elif kind == "boolean":
                variants += [("wrong-type", "maybe", {})]
            elif name == "cursor":
                variants += [
                    ("bogus-cursor:chars", quote("not a cursor!"), {}),
                    ("bogus-cursor:long", "A" * 2000, {}),
                    ("bogus-cursor:garbage", "Zm9vYmFy", {}),
                    ("bogus-cursor:forged", forged_cursor({"s": "bogus", "k": [1]}), {}),
                    ("bogus-cursor:huge-id", forged_cursor({"s": "x", "k": ["a", HUGE_INT]}), {}),
                    ("bogus-cursor:not-object", forged_cursor([1, 2]), {}),
                ]
            elif schema.get("enum"):
                variants += [
                    ("bogus-enum", "bogus", {}),
                    ("nul", quote(schema["enum"][0]) + "%00", {}),
                ]
            elif schema.get("format") == "date-time":
                variants += [
                    ("wrong-type", "yesterday", {}),
                    ("nul", quote("2026-01-01T00:00:00Z") + "%00", {}),
                ]
                for far, (value, after) in FAR_TIMESTAMPS.items():
                    variants.append(
                        (
                            f"timestamp-overflow:{far}",
                            quote(value),
                            {
                                "expect": EXPECT_4XX_OR_2XX,
                                "verify": timestamp_verify(op.operation_id, name, after),
                            },
                        )
                    )
            elif kind == "string":
                huge = "q" * HUGE_QUERY
                variants += [
                    ("nul", "a%00b", {}),
                    ("invalid-utf8", "%FF%FE", {}),
                    ("huge-string", huge, {"huge": huge}),
                ]
                variants += self.legitimate_text_queries(op, name)
            for variant, value, options in variants:
                self.add(op, f"{variant}:{name}", with_query(f"{name}={value}"), **options)
        if op.operation_id.startswith("list"):
            value = "r" * 1000
            self.add(
                op,
                "overlong-request-id",
                lambda w: self.request(op, w, headers={"X-Request-ID": value}),
                expect=EXPECT_2XX,
                verify=expect_generated_request_id,
            )

    @staticmethod
    def legitimate_text_queries(op: Operation, name: str) -> list[tuple[str, str, dict]]:
        searched = {
            ("listCategories", "q"): ("categories", ("name",)),
            ("listProducts", "q"): ("products", ("sku", "name")),
            ("listLocations", "q"): ("locations", ("code", "name")),
        }
        variants = []
        for label, text in (
            ("percent", "%"),
            ("underscore", "_"),
            ("percent-underscore", "%_"),
            ("backslash", "\\"),
            ("like-pattern", "0%c"),
        ):
            if (op.operation_id, name) in searched:
                list_name, fields = searched[(op.operation_id, name)]
                verify = search_verify(list_name, fields, text)
            elif (op.operation_id, name) == ("listStockMovements", "reference"):
                verify = expect_items("movements", lambda m, t=text: m["reference"] == t)
            else:
                continue
            variants.append(
                (
                    f"legit-search:{label}",
                    quote(text, safe=""),
                    {"expect": EXPECT_2XX, "verify": verify},
                )
            )
        return variants

    # headers

    def header_cases(self, operation: Operation) -> None:
        op = operation

        def with_headers(headers: dict):
            return lambda w: self.request(op, w, headers=headers)

        pad = "h" * HUGE_HEADER
        self.add(
            op,
            "overlong-header:X-Padding",
            with_headers({"X-Padding": pad}),
            huge=pad,
        )
        if op.role is not None:
            secret = "Bearer " + "t" * HUGE_HEADER
            self.add(
                op, "overlong-authorization", with_headers({"Authorization": secret}), huge=secret
            )
        for param in op.parameters_in("header"):
            name = param["name"]
            if name in ("If-Match", "If-None-Match"):
                tag = '"' + "e" * OVERLONG_TAG + '"'
                self.add(op, f"overlong-header:{name}", with_headers({name: tag}), huge=tag)
            if name == "If-Match":
                self.add(op, f"bad-if-match:{name}", with_headers({name: '"no-such-version"'}))
            if name == "Idempotency-Key":
                key = "k" * GIANT_KEY
                self.add(op, "giant-idempotency-key", with_headers({name: key}), huge=key)
                self.add(op, "idempotency-key-with-space", with_headers({name: "two words"}))
                self.add(
                    op,
                    "idempotency-key-non-ascii",
                    with_headers({name.encode(): "ключ".encode()}),
                )

    # JSON bodies

    def json_body_cases(self, operation: Operation) -> None:
        op = operation
        schema = op.media_types["application/json"]
        is_array = schema.get("type") == "array"

        def raw(content: bytes, media_type: str | None = "application/json", **_: Any):
            return lambda w: self.request(op, w, body=content, media_type=media_type)

        def changed(make: Callable[[World], bytes], media_type: str | None = "application/json"):
            return lambda w: self.request(op, w, body=make(w), media_type=media_type)

        def valid(w: World) -> Any:
            return VALID_BODIES[op.operation_id](w)

        example = VALID_BODIES[op.operation_id](_PLACEHOLDER_WORLD)
        text_at = text_target(schema, example)
        number_at = number_target(schema, example)
        has_text = any(leaf.get("type") == "string" for _, leaf in leaf_targets(schema, example))

        self.add(op, "broken-json", changed(lambda w: encode_json(valid(w))[:-2]))
        self.add(op, "trailing-garbage", changed(lambda w: encode_json(valid(w)) + b" xyz"))
        self.add(op, "deep-json", raw(b"[" * DEEP + b"]" * DEEP))
        self.add(op, "deep-json-objects", raw(b'{"a":' * DEEP + b"1" + b"}" * DEEP))
        self.add(
            op,
            "no-content-type",
            changed(lambda w: encode_json(valid(w)), media_type=None),
            statuses=frozenset({415}),
        )
        self.add(
            op,
            "bogus-charset",
            changed(lambda w: encode_json(valid(w)), media_type="application/json; charset=bogus"),
            statuses=frozenset({415}),
        )
        self.add(
            op,
            "wrong-content-type",
            changed(lambda w: encode_json(valid(w)), media_type="text/plain"),
            statuses=frozenset({415}),
        )
        for kind, value in (
            ("nan", b"NaN"),
            ("infinity", b"Infinity"),
            ("huge-number:float", b"1e999"),
            ("huge-number:int", str(HUGE_INT).encode()),
            ("huge-number:negative", str(-HUGE_INT).encode()),
            ("huge-number:digits", HUGE_DIGITS.encode()),
        ):
            self.add(
                op,
                f"{kind}:{pointer(number_at)}",
                changed(lambda w, v=value: encode_with_raw(valid(w), number_at, v)),
            )
        huge = "x" * HUGE_STRING
        self.add(
            op,
            f"huge-string:{pointer(text_at)}",
            changed(lambda w: encode_json(set_at(valid(w), text_at, huge))),
            huge=huge,
        )
        for target, _leaf in string_targets(
            schema, VALID_BODIES[op.operation_id](_PLACEHOLDER_WORLD)
        ):
            self.add(
                op,
                f"nul:{pointer(target)}",
                changed(lambda w, t=target: encode_json(set_at(valid(w), t, "bad\u0000value"))),
            )
        for target, leaf in string_targets(
            schema, VALID_BODIES[op.operation_id](_PLACEHOLDER_WORLD)
        ):
            if leaf.get("format") != "date-time":
                continue
            for far, (value, _after) in FAR_TIMESTAMPS.items():
                self.add(
                    op,
                    f"timestamp-overflow:{far}:{pointer(target)}",
                    changed(lambda w, t=target, v=value: encode_json(set_at(valid(w), t, v))),
                )
        # A number where text belongs; for a body without text, an object in its number.
        wrong = 12345 if has_text else {"n": 1}
        self.add(
            op,
            f"wrong-type:{pointer(text_at)}",
            changed(lambda w: encode_json(set_at(valid(w), text_at, wrong))),
        )
        if number_at != text_at:
            self.add(
                op,
                f"wrong-type:{pointer(number_at)}",
                changed(lambda w: encode_json(set_at(valid(w), number_at, {"n": 1}))),
            )
        self.add(op, "wrong-type:body", raw(b"{}" if is_array else b"[]"))
        self.add(op, "wrong-type:scalar-body", raw(b'"text"'))
        if op.body_required:
            self.add(op, "null-body", raw(b"null"))
            self.add(op, "empty-body", raw(b""))
        self.add(
            op,
            "invalid-utf8",
            changed(lambda w: encode_with_raw(valid(w), text_at, b'"bad \xff\xfe value"')),
        )
        self.add(
            op,
            "lone-surrogate",
            changed(lambda w: encode_with_raw(valid(w), text_at, b'"bad \\ud800 value"')),
        )
        unknown_at = (0, "bogus_field") if is_array else ("bogus_field",)
        self.add(
            op, "unknown-field", changed(lambda w: encode_json(set_at(valid(w), unknown_at, 1)))
        )

        def many_unknown(w: World) -> bytes:
            body = valid(w)
            row = body[0] if is_array else body
            row.update({f"f{i:05d}": 0 for i in range(MANY_ERRORS * 2)})
            return encode_json(body)

        self.add(op, "huge-errors:unknown-fields", changed(many_unknown))
        if is_array:
            self.add(op, "huge-errors:rows", raw(encode_json([{}] * MANY_ERRORS)))
        elif "lines" in schema.get("properties", {}):

            def empty_lines(w: World) -> bytes:
                return encode_json({**valid(w), "lines": [{}] * MANY_ERRORS})

            self.add(op, "huge-errors:lines", changed(empty_lines))

            def too_many_lines(w: World) -> bytes:
                body = valid(w)
                return encode_json({**body, "lines": body["lines"] * MANY_ERRORS})

            # One error (maxItems), whose message must not repeat the 2,000 lines.
            self.add(op, "huge-errors:too-many-lines", changed(too_many_lines))
        limit = IMPORT_BODY_LIMIT if op.operation_id == "importProducts" else DEFAULT_BODY_LIMIT
        self.add(
            op,
            "oversize",
            changed(lambda w: oversize_body(valid(w), text_at, limit)),
            statuses=frozenset({413}),
        )

    # the product import's CSV

    def csv_cases(self, operation: Operation) -> None:
        """The CSV import's upload: bad files in a good form, and bad forms."""
        op = operation

        def raw(body: bytes, media_type: str | None = UPLOAD_TYPE):
            return lambda w: self.request(op, w, body=body, media_type=media_type)

        def csv(content: bytes, media_type: str | None = UPLOAD_TYPE, part_type="text/csv"):
            return raw(csv_form(content, part_type), media_type)

        bad_rows = b"sku,name,reorder_point\nhas space,x,1\nOK-1,,-5\n,nameless,1\n"
        huge = "n" * HUGE_STRING
        many = b"sku,name\n" + b"bad sku,x\n" * MANY_ERRORS
        for kind, content, options in (
            ("csv-no-content-type", VALID_CSV, {"media_type": None}),
            ("csv-bogus-charset", VALID_CSV, {"media_type": UPLOAD_TYPE + "; charset=bogus"}),
            ("csv-part-bogus-charset", VALID_CSV, {"part_type": "text/csv; charset=bogus"}),
            ("csv-bad-rows", bad_rows, {}),
            ("nul:csv", b"sku,name,description\nCORPUS-IMP,x,nul\x00here\n", {}),
            ("nul:csv-header", b"sku,na\x00me\nCORPUS-IMP,x\n", {}),
            ("invalid-utf8:csv", b"sku,name\nCORPUS-IMP,bad \xff\xfe\n", {}),
            ("csv-unknown-column", b"sku,name,colour\nCORPUS-IMP,x,red\n", {}),
            ("csv-broken-quoting", b'sku,name\nCORPUS-IMP,"unterminated\n', {}),
            ("huge-number:csv", f"sku,name,reorder_point\nCORPUS-IMP,x,{HUGE_INT}\n".encode(), {}),
            ("huge-string:csv", f"sku,name\nCORPUS-IMP,{huge}\n".encode(), {"huge": huge}),
            ("huge-errors:csv", many, {}),
        ):
            options = dict(options)
            media_type = options.pop("media_type", UPLOAD_TYPE)
            part_type = options.pop("part_type", "text/csv")
            statuses = frozenset({415}) if "content-type" in kind or "charset" in kind else None
            self.add(op, kind, csv(content, media_type, part_type), statuses=statuses, **options)
        good = csv_form(VALID_CSV)
        file_part = ("file", VALID_CSV, {"filename": "corpus.csv"})
        for kind, build in (
            ("multipart-no-boundary", raw(good, "multipart/form-data")),
            ("multipart-wrong-boundary", raw(good, "multipart/form-data; boundary=other")),
            ("multipart-truncated", raw(good[: len(good) // 2])),
            ("multipart-not-multipart", raw(VALID_CSV)),
            ("multipart-no-file-part", raw(multipart(boundary=UPLOAD_BOUNDARY)[0])),
            ("multipart-two-files", raw(form_of(file_part, file_part))),
            ("multipart-unknown-part", raw(form_of(file_part, ("colour", b"red", {})))),
            ("multipart-many-parts", raw(form_of(*[(f"p{i}", b"x", {}) for i in range(5000)]))),
            (
                "multipart-no-disposition",
                raw(good.replace(b"Content-Disposition: form-data", b"X-Other: form-data", 1)),
            ),
        ):
            self.add(op, kind, build, statuses=frozenset({400}))
        padding = b"PAD-X,pad\n" * (IMPORT_BODY_LIMIT // 10 + 1)
        self.add(
            op,
            "oversize:csv",
            csv(b"sku,name\n" + padding),
            statuses=frozenset({413}),
        )

    # the login form

    def form_cases(self, operation: Operation) -> None:
        op = operation
        form_type = "application/x-www-form-urlencoded"

        def form(make: Callable[[World], bytes], media_type: str = form_type):
            return lambda w: self.request(op, w, body=make(w), media_type=media_type)

        def encode_form(fields: dict[str, str]) -> bytes:
            return "&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items()).encode()

        huge = "p" * HUGE_STRING
        self.add(
            op,
            "invalid-utf8:form",
            form(lambda w: b"grant_type=password&username=%FF%FE&password=x"),
        )
        self.add(
            op,
            "nul:form-username",
            form(lambda w: encode_form({**valid_form(w), "username": "a\x00b@example.com"})),
        )
        self.add(
            op,
            "nul:form-password",
            form(lambda w: encode_form({**valid_form(w), "password": "bad\x00password"})),
        )
        self.add(
            op,
            "huge-string:form-password",
            form(lambda w: encode_form({**valid_form(w), "password": huge})),
            huge=huge,
        )
        # RFC 6749 §3.2: an unknown parameter is ignored. With a wrong password (a variant
        # that logs in would write a token) the answer shows it got past validation.
        self.add(
            op,
            "unknown-field:form",
            form(lambda w: encode_form({**valid_form(w), "password": "not it", "bogus": "1"})),
            statuses=frozenset({400}),
            oauth_error="invalid_grant",
        )
        self.add(
            op,
            "wrong-type:form-grant",
            form(lambda w: encode_form({**valid_form(w), "grant_type": "x"})),
            statuses=frozenset({400}),
            oauth_error="unsupported_grant_type",
        )
        self.add(
            op,
            "duplicate:form-username",
            form(lambda w: encode_form(valid_form(w)) + b"&username=x%40example.com"),
            statuses=frozenset({400}),
            oauth_error="invalid_request",
        )
        self.add(op, "broken-form", form(lambda w: b"%%%&&&===&username"))
        self.add(
            op,
            "bogus-charset:form",
            form(lambda w: encode_form(valid_form(w)), media_type=form_type + "; charset=bogus"),
            statuses=frozenset({415}),
        )
        self.add(
            op,
            "oversize:form",
            form(lambda w: encode_form({**valid_form(w), "scope": "s" * DEFAULT_BODY_LIMIT})),
            statuses=frozenset({413}),
        )


def default_body(operation: Operation, world: World) -> tuple[str, bytes]:
    """The media type and body of a correct request (JSON when the operation takes it)."""
    if "application/json" in operation.media_types:
        return "application/json", encode_json(VALID_BODIES[operation.operation_id](world))
    if "multipart/form-data" in operation.media_types:
        return UPLOAD_TYPE, csv_form(VALID_CSV)
    if "application/x-www-form-urlencoded" in operation.media_types:
        fields = valid_form(world)
        return "application/x-www-form-urlencoded", "&".join(
            f"{k}={quote(v, safe='')}" for k, v in fields.items()
        ).encode()
    raise AssertionError(f"no default body for {operation.operation_id}")


def oversize_json(limit: int) -> bytes:
    return encode_json({"pad": "o" * (limit + 1)})


def oversize_body(body: Any, target: tuple, limit: int) -> bytes:
    return encode_json(set_at(body, target, "o" * (limit + 1)))


def forged_cursor(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class _Placeholder(dict):
    """Stands in for seeded resources when only a body's shape is needed."""

    def __missing__(self, key: str) -> Any:
        return 1 if key == "id" else f"placeholder-{key}@example.com"


_PLACEHOLDER_WORLD = World(
    *(_Placeholder() for _ in range(12)),
    lists={},
    valuation={},
)


OTHERWISE_CORRECT_KINDS = frozenset(
    {
        "overlong-header",
        "leading-double-slash",
        "inner-double-slash",
        "trailing-slash",
        "path-semicolon",
    }
)


def build_corpus() -> list[Case]:
    builder = CorpusBuilder()
    operations = spec_operations()
    for operation in operations:
        missing_body = (
            "application/json" in operation.media_types
            and operation.operation_id not in VALID_BODIES
        )
        if missing_body:
            raise AssertionError(f"VALID_BODIES needs an entry for {operation.operation_id}")
        builder.operation_cases(operation)
    by_path = {op.path: op for op in operations}
    for path, methods in spec_paths().items():
        builder.method_cases(path, methods, by_path[path])
    # The read-only cases with a 2xx answer first: their expected answers are the seeded
    # store's, which a malformed write that wrongly succeeds would change.
    # Kinds whose requests are otherwise correct go last: where the service misses the
    # defect they really write (delete a spare resource, post a receipt), which would turn
    # the cases after them into plain 404s.
    cases = sorted(
        builder.cases,
        key=lambda c: (c.expect == EXPECT_4XX, c.kind in OTHERWISE_CORRECT_KINDS, c.kind),
    )
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, duplicates
    return cases
