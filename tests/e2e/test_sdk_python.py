"""The Python client that openapi-python-client generates, against the real server.

A session fixture generates it with the pinned generator at its default options
(``scripts/generate-clients.sh python``: names from sdk/python/config.yaml, no template
patches, any warning fails) into a temporary directory and imports it. A module fixture starts
the production server (``scripts/serve-production.sh``) on a throwaway database of each
backend, with a manager whose password we know. The tests then go through the generated client
only: log in (JSON, and the OAuth2 form), build a catalog, receive and ship stock, page with
cursors, upload a CSV file, and get typed problem documents back. The TypeScript clients have
the same flow in tests/e2e/test_sdk_typescript.py.
"""

from __future__ import annotations

import importlib
import io
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import TEST_PASSWORD
from tests.e2e.test_sdk_generation import (
    Serving,
    assert_generated_quietly,
    generate,
    require_generator,
    serving,
)
from tests.live_server import LiveServer

PACKAGE = "storekeeper_client"
PROBLEMS = "https://storekeeper.dev/problems/"


@pytest.fixture(scope="session")
def python_generation(tmp_path_factory):
    require_generator("python")
    clients_dir = tmp_path_factory.mktemp("clients")
    return clients_dir, generate("python", clients_dir)


@pytest.fixture(scope="session")
def sdk(python_generation) -> Iterator[ModuleType]:
    """The generated package, importable as ``storekeeper_client`` for the session."""
    clients_dir, result = python_generation
    assert result.returncode == 0, result.stdout + result.stderr
    path = str(Path(clients_dir) / "python")
    sys.path.insert(0, path)
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(path)
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def serve(backend, tmp_path_factory) -> Iterator[Serving]:
    with serving(backend, tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def live(serve) -> LiveServer:
    return serve.server


@pytest.fixture(scope="module")
def manager_email(serve) -> str:
    """A manager (catalog, stock and location writes) with TEST_PASSWORD in the live database."""
    return serve.manager_email


@pytest.fixture(scope="module")
def api(sdk, live, manager_email) -> Iterator[Any]:
    """An AuthenticatedClient holding a token from logging in (JSON) through the client."""
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
    assert_generated_quietly("python", result)
    package = clients_dir / "python" / PACKAGE
    # One module per operation, grouped by tag, named after the operationId.
    for module in (
        "auth/login",
        "auth/issue_token",
        "products/list_products",
        "products/import_products",
        "products/import_products_csv",
        "stock/create_receipt",
    ):
        assert (package / "api" / f"{module}.py").is_file(), module
    # StockMovement.reason is the shared ReasonCode (sdk/python/config.yaml), not a copy.
    assert (package / "models" / "reason_code.py").is_file()
    assert not list((package / "models").glob("stock_movement_reason_type_*.py"))


# --- the flow through the Python client ------------------------------------------------------


def test_login_with_json_or_the_oauth2_form(sdk, live, manager_email):
    from storekeeper_client.api.auth import issue_token, login
    from storekeeper_client.api.users import get_current_user
    from storekeeper_client.models import AccessToken, LoginRequest, OAuthError, PasswordGrant
    from storekeeper_client.models.o_auth_error_error import OAuthErrorError
    from storekeeper_client.types import UNSET

    with sdk.Client(base_url=live.base_url, raise_on_unexpected_status=True) as anonymous:
        as_json = login.sync_detailed(
            client=anonymous, body=LoginRequest(email=manager_email, password=TEST_PASSWORD)
        )
        wrong = login.sync_detailed(
            client=anonymous, body=LoginRequest(email=manager_email, password="not the password")
        )
        # The OAuth2 token endpoint: the same credentials as a password grant form.
        form = issue_token.sync_detailed(
            client=anonymous,
            body=PasswordGrant(
                grant_type="password", username=manager_email, password=TEST_PASSWORD
            ),
        )
        wrong_form = issue_token.sync_detailed(
            client=anonymous,
            body=PasswordGrant(
                grant_type="password", username=manager_email, password="not the password"
            ),
        )
    for response in (as_json, form):
        assert response.status_code == 200, response.content
        assert isinstance(response.parsed, AccessToken)
        assert response.parsed.token_type == "bearer"
        assert response.parsed.scope.split() == ["viewer", "clerk", "manager"]
        assert response.headers["cache-control"] == "no-store"
        with sdk.AuthenticatedClient(
            base_url=live.base_url, token=response.parsed.access_token
        ) as client:
            me = get_current_user.sync(client=client)
        assert me.email == manager_email
        assert me.role.value == "manager"

    problem = _problem(wrong, 401, "invalid-credentials")
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert problem.errors is UNSET

    # RFC 6749 errors, typed as the generated OAuthError, not as a problem document.
    assert wrong_form.status_code == 400, wrong_form.content
    assert wrong_form.headers["content-type"].startswith("application/json")
    assert isinstance(wrong_form.parsed, OAuthError)
    assert wrong_form.parsed.error is OAuthErrorError.INVALID_GRANT
    assert wrong_form.parsed.error_description


def test_csv_import_uploads_a_file(api, tag):
    """importProductsCsv: multipart/form-data with one `file` part, from the generated model."""
    from storekeeper_client.api.products import get_product, import_products_csv
    from storekeeper_client.models import ImportProductsCsvBody, ProductImportResult
    from storekeeper_client.types import File

    _category, product, _location = _catalog(api, tag)

    def upload(csv: str, dry_run: bool):
        body = ImportProductsCsvBody(
            file=File(
                payload=io.BytesIO(csv.encode()), file_name="products.csv", mime_type="text/csv"
            )
        )
        return import_products_csv.sync_detailed(client=api, body=body, dry_run=dry_run)

    csv = f"sku,name,reorder_point\r\n{product.sku},Claw hammer 16 oz,25\r\nPY-{tag}-NEW,Saw,5\r\n"
    checked = upload(csv, dry_run=True)
    assert checked.status_code == 200, checked.content
    assert isinstance(checked.parsed, ProductImportResult)
    assert checked.parsed.to_dict() == {
        "dry_run": True,
        "rows": 2,
        "created": 1,
        "updated": 1,
        "unchanged": 0,
    }
    assert get_product.sync(product.id, client=api).reorder_point == 10  # nothing written

    # A bad row: a typed 422 problem naming the CSV line and column.
    refused = upload(f"sku,reorder_point\r\n{product.sku},-4\r\n", dry_run=True)
    problem = _problem(refused, 422, "invalid-import-rows")
    assert [(error.line, error.field) for error in problem.errors] == [(2, "reorder_point")]


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
