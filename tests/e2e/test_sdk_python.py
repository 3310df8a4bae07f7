"""Generated client SDKs against the real server, as an integrator would use them.

A session fixture generates the Python client with the pinned openapi-python-client
(``scripts/generate-clients.sh python``, which fails on any generator warning) into a
temporary directory and imports it. A module fixture starts the production server
(``scripts/serve-production.sh``) on a throwaway database of each backend, with a user whose
password we know. The tests then go through the generated client only: log in, build a
catalog, receive and ship stock, page with cursors, and get typed problem documents back.
The TypeScript flow (``sdk/typescript/e2e.ts``) is compiled with tsc and run with Node.js
against the same server. In CI (``CI=true``) a missing generator or Node.js is a failure.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.db import Database
from tests.conftest import TEST_PASSWORD, create_user, throwaway_database
from tests.live_server import ROOT, LiveServer, live_server, venv_bin

GENERATE = ROOT / "scripts" / "generate-clients.sh"
PACKAGE = "storekeeper_client"
PROBLEMS = "https://storekeeper.dev/problems/"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the SDK tests may not be skipped in CI")
    pytest.skip(reason)


def _generate(target: str, clients_dir: Path, spec: Path | None = None):
    env = {**os.environ, "CLIENTS_DIR": str(clients_dir), "VENV": str(venv_bin().parent)}
    if spec is not None:
        env["SPEC"] = str(spec)
    return subprocess.run(
        ["bash", str(GENERATE), target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="session")
def python_generation(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if not (venv_bin() / "openapi-python-client").exists():
        _unavailable("openapi-python-client is not installed (make install)")
    clients_dir = tmp_path_factory.mktemp("clients")
    return clients_dir, _generate("python", clients_dir)


@pytest.fixture(scope="session")
def sdk(python_generation) -> Iterator[ModuleType]:
    """The generated package, importable as ``storekeeper_client`` for the session."""
    clients_dir, result = python_generation
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(clients_dir / "python"))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(clients_dir / "python"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def live(backend, tmp_path_factory) -> Iterator[LiveServer]:
    with throwaway_database(backend, tmp_path_factory) as url:
        env = {"STOREKEEPER_VALIDATE_RESPONSES": "true", "LOG_LEVEL": "WARNING"}
        with live_server(url, workers=1, env=env) as server:
            yield server


@pytest.fixture(scope="module")
def manager_email(live) -> str:
    """A manager (catalog, stock and location writes) with TEST_PASSWORD in the live database."""
    database = Database(live.database_url)
    try:
        return create_user(database, "manager").email
    finally:
        database.dispose()


@pytest.fixture(scope="module")
def api(sdk, live, manager_email) -> Iterator[Any]:
    """An AuthenticatedClient holding a token from logging in through the client."""
    from storekeeper_client.api.auth import login
    from storekeeper_client.models import AccessToken, LoginRequest

    with sdk.Client(base_url=live.base_url, raise_on_unexpected_status=True) as anonymous:
        token = login.sync(
            client=anonymous, body=LoginRequest(email=manager_email, password=TEST_PASSWORD)
        )
    assert isinstance(token, AccessToken), token
    with sdk.AuthenticatedClient(
        base_url=live.base_url, token=token.access_token, raise_on_unexpected_status=True
    ) as client:
        yield client


@pytest.fixture()
def tag() -> str:
    """Unique per test: the module's server and database are shared."""
    return uuid.uuid4().hex[:8].upper()


def _created(response) -> Any:
    assert response.status_code == 201, response.content
    return response.parsed


def _problem(response, status: int, kind: str) -> Any:
    from storekeeper_client.models import Problem

    problem = response.parsed
    assert isinstance(problem, Problem), response.content
    assert response.status_code == status == problem.status
    assert problem.type_ == PROBLEMS + kind, problem
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem.title and isinstance(problem.detail, str) and problem.detail
    assert problem.request_id == response.headers["x-request-id"]
    return problem


def _catalog(api, tag: str) -> tuple[Any, Any, Any]:
    from storekeeper_client.api.categories import create_category
    from storekeeper_client.api.locations import create_location
    from storekeeper_client.api.products import create_product
    from storekeeper_client.models import CategoryCreate, LocationCreate, ProductCreate

    category = _created(
        create_category.sync_detailed(client=api, body=CategoryCreate(name=f"Tools {tag}"))
    )
    product = _created(
        create_product.sync_detailed(
            client=api,
            body=ProductCreate(
                sku=f"PY-{tag}-HAM",
                name="Claw hammer 16 oz",
                category_id=category.id,
                reorder_point=10,
            ),
        )
    )
    location = _created(
        create_location.sync_detailed(
            client=api, body=LocationCreate(code=f"PY-{tag}", name="Main warehouse")
        )
    )
    return category, product, location


# --- generation ------------------------------------------------------------------------------


def test_python_client_generates_without_warnings(python_generation):
    clients_dir, result = python_generation
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower()
    package = clients_dir / "python" / PACKAGE
    # One module per operation, grouped by tag, named after the operationId.
    for module in ("auth/login", "products/list_products", "stock/create_receipt"):
        assert (package / "api" / f"{module}.py").is_file(), module
    assert not (package / "models" / "stock_movement_reason_type_1.py").exists()


def test_bodies_with_several_media_types_are_sent_as_the_one_given(sdk):
    """The template fixes of sdk/python/patch_templates.py, on the operations that need them."""
    from storekeeper_client.api.auth import login
    from storekeeper_client.api.products import import_products
    from storekeeper_client.models import LoginRequest, PasswordGrant, ProductImportRow
    from storekeeper_client.models.password_grant_grant_type import PasswordGrantGrantType

    form = login._get_kwargs(
        body=PasswordGrant(
            grant_type=PasswordGrantGrantType.PASSWORD, username="a@example.com", password="pw"
        )
    )
    assert form["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert form["data"] == {"grant_type": "password", "username": "a@example.com", "password": "pw"}
    assert "json" not in form
    as_json = login._get_kwargs(body=LoginRequest(email="a@example.com", password="pw"))
    assert as_json["headers"]["Content-Type"] == "application/json"
    assert as_json["json"] == {"email": "a@example.com", "password": "pw"}

    csv = "sku,name\r\nANV-1,Anvil\r\n"
    as_csv = import_products._get_kwargs(body=csv)
    assert as_csv["headers"]["Content-Type"] == "text/csv"
    assert as_csv["content"] == csv and "json" not in as_csv
    rows = import_products._get_kwargs(body=[ProductImportRow(sku="ANV-1")], dry_run=True)
    assert rows["headers"]["Content-Type"] == "application/json"
    assert rows["json"][0]["sku"] == "ANV-1" and "content" not in rows
    assert rows["params"] == {"dry_run": True}


def test_generation_fails_on_a_generator_warning(tmp_path):
    if not (venv_bin() / "openapi-python-client").exists():
        _unavailable("openapi-python-client is not installed (make install)")
    spec = tmp_path / "broken.yaml"
    # The path names a parameter the operation does not declare: the generator skips the
    # operation with a warning, which must fail the script.
    spec.write_text(
        "openapi: 3.0.3\n"
        "info: {title: Broken, version: '1'}\n"
        "paths:\n"
        "  /things/{thing_id}:\n"
        "    get:\n"
        "      operationId: getThing\n"
        "      responses: {'204': {description: Nothing.}}\n"
    )
    result = _generate("python", tmp_path / "clients", spec)
    assert result.returncode != 0
    assert "Path parameters do not match" in result.stdout + result.stderr


# --- the flow through the Python client ------------------------------------------------------


def test_login_with_json_or_the_oauth2_form(sdk, live, manager_email):
    from storekeeper_client.api.auth import login
    from storekeeper_client.api.users import get_current_user
    from storekeeper_client.models import AccessToken, LoginRequest, PasswordGrant
    from storekeeper_client.models.password_grant_grant_type import PasswordGrantGrantType
    from storekeeper_client.types import UNSET

    with sdk.Client(base_url=live.base_url, raise_on_unexpected_status=True) as anonymous:
        form = login.sync_detailed(
            client=anonymous,
            body=PasswordGrant(
                grant_type=PasswordGrantGrantType.PASSWORD,
                username=manager_email,
                password=TEST_PASSWORD,
            ),
        )
        wrong = login.sync_detailed(
            client=anonymous, body=LoginRequest(email=manager_email, password="not the password")
        )
    assert form.status_code == 200, form.content
    assert isinstance(form.parsed, AccessToken)
    assert form.parsed.token_type == "bearer"
    assert form.parsed.scope.split() == ["viewer", "clerk", "manager"]
    with sdk.AuthenticatedClient(base_url=live.base_url, token=form.parsed.access_token) as client:
        me = get_current_user.sync(client=client)
    assert me.email == manager_email
    assert me.role.value == "manager"

    problem = _problem(wrong, 401, "invalid-credentials")
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert problem.errors is UNSET


def test_receive_and_ship_stock(api, tag):
    from storekeeper_client.api.stock import create_receipt, create_shipment, get_product_stock
    from storekeeper_client.models import (
        MovementKind,
        QuantityLinesItem,
        ReceiptCreate,
        ReceiptCreateLinesItem,
        ShipmentCreate,
        StockDocument,
    )

    category, product, location = _catalog(api, tag)
    assert category.name == f"Tools {tag}" and category.parent_id is None
    assert product.sku == f"PY-{tag}-HAM" and product.category_id == category.id
    assert product.reorder_point == 10 and product.is_active is True
    assert location.code == f"PY-{tag}" and location.is_active is True

    receipt_body = ReceiptCreate(
        location_id=location.id,
        reference=f"PO-{tag}",
        lines=[ReceiptCreateLinesItem(product_id=product.id, quantity=40, unit_cost="7.25")],
    )
    key = str(uuid.uuid4())
    first = create_receipt.sync_detailed(client=api, body=receipt_body, idempotency_key=key)
    receipt = _created(first)
    assert isinstance(receipt, StockDocument)
    assert receipt.kind.value == "receipt" and receipt.reference == f"PO-{tag}"
    [movement] = receipt.movements
    assert movement.kind is MovementKind.RECEIPT
    assert (movement.product_id, movement.location_id) == (product.id, location.id)
    assert (movement.quantity, movement.balance_after) == (40, 40)
    assert movement.unit_cost == "7.2500"
    assert movement.reason is None
    assert first.headers["location"] == f"/api/v1/stock/documents/{receipt.id}"

    replay = create_receipt.sync_detailed(client=api, body=receipt_body, idempotency_key=key)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.parsed.id == receipt.id

    shipment = _created(
        create_shipment.sync_detailed(
            client=api,
            body=ShipmentCreate(
                location_id=location.id,
                reference=f"SO-{tag}",
                lines=[QuantityLinesItem(product_id=product.id, quantity=3)],
            ),
        )
    )
    [shipped] = shipment.movements
    assert shipped.kind is MovementKind.SHIPMENT
    assert (shipped.quantity, shipped.balance_after) == (-3, 37)

    # More than is on hand: refused whole, as a typed 409 problem naming the short line.
    refused = create_shipment.sync_detailed(
        client=api,
        body=ShipmentCreate(
            location_id=location.id,
            lines=[QuantityLinesItem(product_id=product.id, quantity=50)],
        ),
    )
    problem = _problem(refused, 409, "insufficient-stock")
    assert "needs 50, 37 available" in problem.detail
    assert [(e.pointer, e.detail) for e in problem.errors] == [
        ("/lines/0/quantity", "Only 37 available.")
    ]
    # The shortages are typed too (Problem.shortages -> StockShortage).
    assert [
        (s.line, s.product_id, s.location_id, s.requested, s.available) for s in problem.shortages
    ] == [(0, product.id, location.id, 50, 37)]

    stock = get_product_stock.sync(product.id, client=api)
    assert stock.total_on_hand == 37
    assert [(level.location_id, level.on_hand) for level in stock.locations] == [(location.id, 37)]


def test_conflict_and_validation_problems_are_typed(api, tag):
    from storekeeper_client.api.products import create_product, list_products
    from storekeeper_client.models import ProblemError, ProductCreate
    from storekeeper_client.models.problem_error_in import ProblemErrorIn
    from storekeeper_client.types import UNSET

    _category, product, _location = _catalog(api, tag)
    duplicate = create_product.sync_detailed(
        client=api, body=ProductCreate(sku=product.sku.lower(), name="Another hammer")
    )
    problem = _problem(duplicate, 409, "duplicate-sku")
    assert f"already used by product {product.id}" in problem.detail
    assert problem.additional_properties["conflicting_id"] == product.id

    # A body the contract refuses: each bad field comes back as a typed errors[] entry.
    invalid = create_product.sync_detailed(
        client=api, body=ProductCreate(sku="", name="Hammer", reorder_point=-1)
    )
    problem = _problem(invalid, 400, "validation-error")
    assert all(isinstance(error, ProblemError) for error in problem.errors)
    assert {error.pointer for error in problem.errors} >= {"/sku", "/reorder_point"}
    assert all(error.in_ is UNSET for error in problem.errors)  # body fields, not parameters

    # A parameter out of range names the parameter and where it was.
    too_many = list_products.sync_detailed(client=api, limit=500)
    problem = _problem(too_many, 400, "validation-error")
    [error] = problem.errors
    assert (error.parameter, error.in_) == ("limit", ProblemErrorIn.QUERY)


def test_pages_follow_next_cursor_to_the_end(api, tag):
    from storekeeper_client.api.products import create_product, list_products
    from storekeeper_client.models import ListProductsSort, ProductCreate, ProductPage
    from storekeeper_client.types import UNSET, Unset

    skus = [f"PG-{tag}-{i:02d}" for i in range(7)]
    for sku in reversed(skus):
        _created(create_product.sync_detailed(client=api, body=ProductCreate(sku=sku, name=sku)))

    pages: list[list[str]] = []
    cursor: str | Unset = UNSET
    while len(pages) < 10:
        page = list_products.sync(
            client=api, q=f"PG-{tag}", sort=ListProductsSort.SKU, limit=3, cursor=cursor
        )
        assert isinstance(page, ProductPage), page
        pages.append([item.sku for item in page.items])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [skus[0:3], skus[3:6], skus[6:7]]


def test_update_with_if_match_refuses_a_stale_etag(api, tag):
    from storekeeper_client.api.products import get_product, update_product
    from storekeeper_client.models import Product, ProductUpdate

    _category, product, _location = _catalog(api, tag)
    read = get_product.sync_detailed(product.id, client=api)
    assert isinstance(read.parsed, Product)
    first_etag = read.headers["etag"]

    updated = update_product.sync_detailed(
        product.id, client=api, body=ProductUpdate(reorder_point=20), if_match=first_etag
    )
    assert updated.status_code == 200, updated.content
    assert updated.parsed.reorder_point == 20
    second_etag = updated.headers["etag"]
    assert second_etag != first_etag

    stale = update_product.sync_detailed(
        product.id, client=api, body=ProductUpdate(reorder_point=30), if_match=first_etag
    )
    problem = _problem(stale, 412, "precondition-failed")
    assert second_etag in problem.detail
    assert get_product.sync(product.id, client=api).reorder_point == 20

    unchanged = get_product.sync_detailed(product.id, client=api, if_none_match=second_etag)
    assert unchanged.status_code == 304
    assert unchanged.parsed is None


# --- the TypeScript client, compiled and run -------------------------------------------------


@pytest.fixture(scope="session")
def typescript_e2e(tmp_path_factory) -> tuple[str, Path]:
    """Node.js and sdk/typescript/e2e.ts compiled against a freshly generated client."""
    node = shutil.which("node")
    bin_dir = ROOT / "node_modules" / ".bin"
    if node is None or not (bin_dir / "tsc").exists() or not (bin_dir / "openapi-ts").exists():
        _unavailable("Node.js with the npm packages is required (npm ci)")
    # The checked-in tsconfig imports the client from build/clients/typescript.
    generated = _generate("typescript", ROOT / "build" / "clients")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    out = tmp_path_factory.mktemp("sdk-e2e")
    compiled = subprocess.run(
        [str(bin_dir / "tsc"), "-p", "sdk/typescript", "--outDir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return node, out / "sdk" / "typescript" / "e2e.js"


def test_typescript_flow_runs_against_the_server(typescript_e2e, live, manager_email):
    node, script = typescript_e2e
    tag = uuid.uuid4().hex[:8].upper()
    env = {
        **os.environ,
        "STOREKEEPER_URL": live.base_url,
        "STOREKEEPER_EMAIL": manager_email,
        "STOREKEEPER_PASSWORD": TEST_PASSWORD,
        "STOREKEEPER_TAG": tag,
    }
    run = subprocess.run(
        [node, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])

    assert summary["token_type"] == "bearer"
    assert summary["product"]["sku"] == f"TS-{tag}-HAM"
    assert summary["product"]["category_id"] == summary["category_id"]
    assert summary["product"]["reorder_point"] == 20
    assert summary["receipt"]["balance_after"] == 40
    assert summary["receipt"]["replayed"] is True
    assert summary["shipment"]["balance_after"] == 37
    assert summary["insufficient"] == {
        "status": 409,
        "title": "Conflict",
        "shortages": [
            {
                "line": 0,
                "product_id": summary["product"]["id"],
                "location_id": summary["location_id"],
                "requested": 50,
                "available": 37,
            }
        ],
        "pointers": ["/lines/0/quantity"],
    }
    assert summary["duplicate_sku"]["status"] == 409
    assert "already used by product" in summary["duplicate_sku"]["detail"]
    assert summary["etag"]["stale_status"] == 412
    assert summary["etag"]["stale_type"] == PROBLEMS + "precondition-failed"
    assert summary["etag"]["first"] != summary["etag"]["second"]
    # The run's six products, two per page, in SKU order, by following next_cursor.
    all_skus = sorted([f"TS-{tag}-HAM", *(f"TS-{tag}-P{i}" for i in range(1, 6))])
    assert summary["pages"] == [all_skus[0:2], all_skus[2:4], all_skus[4:6]]
