"""The contract only breaks clients when its major version says so."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from service.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
from api_compat import breaking_changes, load, major

RELEASED = PROJECT_ROOT / "openapi" / "released"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.stem.split("."))


def latest_release() -> Path:
    return max(RELEASED.glob("*.yaml"), key=_version_key)


CURRENT = load(PROJECT_ROOT / "openapi" / "openapi.yaml")


def test_current_spec_does_not_break_the_last_release_without_a_major_version():
    released = load(latest_release())
    changes = breaking_changes(released, CURRENT)
    assert not changes or major(CURRENT) > major(released), changes


def test_the_current_version_is_released_or_newer_and_in_the_changelog():
    version = CURRENT["info"]["version"]
    assert _version_key(Path(f"{version}.yaml")) >= _version_key(latest_release())
    assert f"## {version}" in (PROJECT_ROOT / "CHANGELOG.md").read_text()


# --- the detector itself can fail ---------------------------------------------------------


def _spec() -> dict:
    return copy.deepcopy(CURRENT)


def _schemas(spec: dict) -> dict:
    return spec["components"]["schemas"]


def _replace_enum(schema: dict, **rules) -> None:
    del schema["enum"]
    schema.update(rules)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["paths"].pop("/api/v1/locations"), "GET /api/v1/locations: operation removed"),
        (
            lambda s: _schemas(s)["Product"]["properties"].pop("sku"),
            "GET /api/v1/products/{product_id} 200/sku: removed",
        ),
        (
            lambda s: _schemas(s)["ProductCreate"]["required"].append("description"),
            "POST /api/v1/products body/description: newly required",
        ),
        (
            lambda s: _schemas(s)["ProductCreate"]["properties"].pop("description"),
            "POST /api/v1/products body/description: removed (now an unknown field)",
        ),
        (
            lambda s: _schemas(s)["Sku"].update(maxLength=32),
            "POST /api/v1/products body/sku: maxLength 64 → 32",
        ),
        (
            lambda s: _schemas(s)["ReasonCode"]["enum"].remove("found"),
            "POST /api/v1/stock/adjustments body/lines[]/reason: enum lost ['found']",
        ),
        (
            lambda s: _schemas(s)["Product"]["properties"]["reorder_point"].update(type="string"),
            "GET /api/v1/products/{product_id} 200/reorder_point: type integer → string",
        ),
        (
            lambda s: s["components"]["parameters"]["Limit"].update(required=True),
            "GET /api/v1/products query parameter limit: newly required",
        ),
        (
            lambda s: s["paths"]["/api/v1/categories"]["post"]["requestBody"]["content"].pop(
                "application/json"
            ),
            "POST /api/v1/categories body application/json: no longer accepted",
        ),
        (
            lambda s: s["paths"]["/api/v1/categories"]["post"].update(operationId="addCategory"),
            "POST /api/v1/categories: operationId createCategory → addCategory",
        ),
        (
            lambda s: _replace_enum(_schemas(s)["ReasonCode"], maxLength=4),
            "POST /api/v1/stock/adjustments body/lines[]/reason: no longer accepts "
            "['count', 'damage', 'found', 'other']",
        ),
        (
            lambda s: _schemas(s)["Id"].update(format="int64"),
            "GET /api/v1/products/{product_id} 200/id: format int32 → int64",
        ),
        (
            lambda s: _schemas(s)["Id"].update(maximum=2**63 - 1),
            f"GET /api/v1/products/{{product_id}} 200/id: maximum {2**31 - 1} → {2**63 - 1}",
        ),
    ],
    ids=[
        "removed-operation",
        "removed-response-field",
        "newly-required-field",
        "removed-request-field",
        "narrowed-length",
        "narrowed-enum",
        "changed-type",
        "required-parameter",
        "removed-request-media-type",
        "renamed-operation",
        "enum-replaced-by-narrower-rules",
        "wider-response-format",
        "wider-response-range",
    ],
)
def test_detector_reports_each_kind_of_breaking_change(change, expected):
    changed = _spec()
    change(changed)
    assert expected in breaking_changes(CURRENT, changed)


def test_the_login_split_is_reported_against_1_0_0():
    """2.0.0: JSON login moved to /auth/login; /auth/token is the OAuth2 form endpoint only."""
    changes = breaking_changes(load(RELEASED / "1.0.0.yaml"), CURRENT)
    assert "POST /api/v1/auth/token body application/json: no longer accepted" in changes
    assert "POST /api/v1/auth/token: operationId login → issueToken" in changes
    assert major(CURRENT) >= 2


def test_the_64_bit_ledger_ids_are_reported_against_1_0_0():
    """2.0.0: document and movement ids are int64 in responses; wider path ids break nothing."""
    changes = breaking_changes(load(RELEASED / "1.0.0.yaml"), CURRENT)
    for field in ("id", "document_id", "reversal_of"):
        assert f"GET /api/v1/stock/movements/{{movement_id}} 200/{field}: format int32 → int64" in (
            changes
        )
    assert "GET /api/v1/stock/documents/{document_id} 200/id: format int32 → int64" in changes
    assert not [change for change in changes if "parameter" in change or "/product" in change]
    assert major(CURRENT) >= 2


def test_an_enum_replaced_by_rules_that_admit_its_values_is_not_breaking():
    """Like 1.0.0's grant_type `enum: [password]` becoming a string of at most 100."""
    changed = _spec()
    _replace_enum(_schemas(changed)["ReasonCode"], maxLength=20, pattern="^[a-z]+$")
    assert breaking_changes(CURRENT, changed) == []


def test_additions_are_not_breaking():
    changed = _spec()
    _schemas(changed)["Product"]["properties"]["colour"] = {"type": "string"}
    _schemas(changed)["ProductCreate"]["properties"]["colour"] = {"type": "string"}
    changed["paths"]["/api/v1/extra"] = {
        "get": {"operationId": "extra", "responses": {"200": {"description": "ok"}}}
    }
    assert breaking_changes(CURRENT, changed) == []
    assert breaking_changes(CURRENT, CURRENT) == []


def test_a_breaking_change_passes_only_with_a_new_major_version(tmp_path):
    import yaml
    from api_compat import main

    released = load(latest_release())
    changed = _spec()
    changed["paths"].pop("/api/v1/locations")
    changed["info"]["version"] = released["info"]["version"]
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(changed))
    old = str(latest_release())
    assert main(["api_compat", old, str(new)]) == 1
    changed["info"]["version"] = f"{major(released) + 1}.0.0"
    new.write_text(yaml.safe_dump(changed))
    assert main(["api_compat", old, str(new)]) == 0
