"""What the live contract run (scripts/contract-live.sh) relies on, checked without a server.

- Every rate-limited operation documents 429, and every schemathesis.toml entry that narrows
  a rate-limited operation's accepted statuses keeps 429: the run is against the deployment
  defaults, rate limits on.
- No fixed `Idempotency-Key` value in the spec: tools send examples verbatim, and a key is
  spent once used (the next stock document with it is a 422).
- The spec's links resolve and fill request bodies only with fields the target accepts.
- scripts/contract_summary.py counts the access log per operation and fails without a 201
  on a stock document operation.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import pytest

from service import spec
from service.api.ratelimit import RateLimits
from service.config import PROJECT_ROOT, Settings

SUMMARY = PROJECT_ROOT / "scripts" / "contract_summary.py"
METHODS = ("get", "put", "post", "patch", "delete")

sys.path.insert(0, str(SUMMARY.parent))
from contract_summary import STOCK_DOCUMENT_OPERATIONS  # noqa: E402


def operations() -> list[tuple[str, str, dict]]:
    return [
        (method, path, operation)
        for path, item in spec.paths().items()
        for method, operation in item.items()
        if method in METHODS
    ]


def rate_limited() -> list[tuple[str, str, dict]]:
    limits = RateLimits(Settings(database_url="sqlite://", rate_limit_enabled=True))
    return [
        (method, path, operation)
        for method, path, operation in operations()
        if limits.policy_for(method.upper(), path, operation["operationId"]) is not None
    ]


def test_every_rate_limited_operation_documents_429():
    limited = rate_limited()
    assert len(limited) > 20  # every write, login and password reset
    missing = [
        operation["operationId"]
        for _, _, operation in limited
        if "429" not in operation["responses"]
    ]
    assert missing == []


def test_schemathesis_entries_for_rate_limited_operations_accept_429():
    config = tomllib.loads((PROJECT_ROOT / "schemathesis.toml").read_text(encoding="utf-8"))
    labels = {f"{method.upper()} {path}" for method, path, _ in rate_limited()}
    narrowed = []
    for entry in config.get("operations", []):
        statuses = (
            entry.get("checks", {}).get("positive_data_acceptance", {}).get("expected-statuses")
        )
        if statuses is None:
            continue  # schemathesis' defaults accept 429
        if "include-name" in entry:
            covered = {entry["include-name"]} & labels
        else:
            pattern = re.compile(entry["include-name-regex"])
            covered = {label for label in labels if pattern.search(label)}
        if covered and "429" not in statuses:
            narrowed.append(entry.get("include-name") or entry["include-name-regex"])
    assert narrowed == []


def test_idempotency_key_has_no_value_that_tools_would_send():
    parameter = spec.document()["components"]["parameters"]["IdempotencyKey"]
    assert "example" not in parameter and "examples" not in parameter
    assert "example" not in parameter["schema"] and "default" not in parameter["schema"]
    for _, _, operation in operations():
        for item in operation.get("parameters", []):
            if item.get("name") == "Idempotency-Key":  # an inline copy would bring its own
                pytest.fail(f"{operation['operationId']} declares Idempotency-Key inline")


def _links() -> list[tuple[str, str, dict]]:
    document = spec.document()
    found = []
    for _, _, operation in operations():
        for status, response in operation["responses"].items():
            response = spec.inline_refs(response, document)
            for name, link in (response.get("links") or {}).items():
                found.append((f"{operation['operationId']} {status} {name}", status, link))
    return found


def test_links_name_operations_and_body_fields_that_exist():
    document = spec.document()
    by_id = {operation["operationId"]: operation for _, _, operation in operations()}
    shared = {  # parameters declared on the path item, for all of its operations
        operation["operationId"]: spec.paths()[path].get("parameters", [])
        for _, path, operation in operations()
    }
    for label, _, link in _links():
        assert link["operationId"] in by_id, label
        target = by_id[link["operationId"]]
        declared = [*shared[link["operationId"]], *target.get("parameters", [])]
        names = {p["name"] for p in spec.inline_refs(declared, document)}
        assert set(link.get("parameters", {})) <= names, label
        body = link.get("requestBody")
        if body is None:
            continue
        schema = spec.inline_refs(target["requestBody"], document)["content"]["application/json"][
            "schema"
        ]
        assert set(body) <= set(schema["properties"]), label
        for field in ("lines",):
            if field in body:
                line_fields = set(schema["properties"]["lines"]["items"]["properties"])
                assert all(set(line) <= line_fields for line in body[field]), label


def test_every_stock_document_operation_is_a_link_target():
    targets = {link["operationId"] for _, _, link in _links()}
    assert set(STOCK_DOCUMENT_OPERATIONS) <= targets


ACCESS = "2026-12-02 03:02:56,812 INFO storekeeper.access {} {} {} 9.2ms request_id=abc"


def run_summary(tmp_path, lines: list[str]) -> subprocess.CompletedProcess:
    log = tmp_path / "server.log"
    log.write_text("\n".join(["[gunicorn] Booting worker", *lines]) + "\n")
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(spec.document()))
    return subprocess.run(
        [sys.executable, str(SUMMARY), str(log), str(document), "--label", "t"],
        capture_output=True,
        text=True,
    )


def test_summary_counts_status_classes_per_operation(tmp_path):
    lines = [
        ACCESS.format("POST", "/api/v1/stock/receipts", 201),
        ACCESS.format("POST", "/api/v1/stock/receipts", 429),
        ACCESS.format("POST", "/api/v1/stock/receipts", 422),
        ACCESS.format("POST", "/api/v1/stock/shipments", 201),
        ACCESS.format("POST", "/api/v1/stock/transfers", 201),
        ACCESS.format("POST", "/api/v1/stock/adjustments", 201),
        ACCESS.format("POST", "/api/v1/stock/movements/7/reversal", 201),
        ACCESS.format("GET", "/api/v1/users/me", 200),  # not getUser: the literal path wins
        ACCESS.format("GET", "/api/v1/users/4", 404),
        ACCESS.format("TRACE", "/api/v1/products", 405),
    ]
    result = run_summary(tmp_path, lines)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    # requests, 2xx, 3xx, 4xx, 429, 5xx
    assert rows["createReceipt"] == ["3", "1", "0", "1", "1", "0"]
    assert rows["getCurrentUser"] == ["1", "1", "0", "0", "0", "0"]
    assert rows["getUser"] == ["1", "0", "0", "1", "0", "0"]
    assert "(not" in rows  # the TRACE
    assert "every required operation answered 201" in result.stdout


def test_summary_fails_when_a_stock_document_operation_never_answered_201(tmp_path):
    lines = [
        ACCESS.format("POST", "/api/v1/stock/receipts", 201),
        ACCESS.format("POST", "/api/v1/stock/shipments", 409),
    ]
    result = run_summary(tmp_path, lines)
    assert result.returncode == 1
    assert "no 201 answer for createShipment, createTransfer" in result.stderr
