"""Swagger UI in a real browser: what an integrator does first, end to end.

The production server (scripts/serve-production.sh) runs on a throwaway database of each
backend with two products and a viewer whose password we know. Headless Chromium (Debian's,
see tests/e2e/browser/chromium.py) opens /apidocs/ and:

- finds every tag of openapi/openapi.yaml as an operation group holding exactly that tag's
  operations (read from the spec at test time, so new operations are covered without edits);
- logs in through **Authorize** (the spec's OAuth2 password flow: Swagger UI posts the
  username and password to /api/v1/auth/token) and shows itself authorized;
- runs **Try it out** → **Execute** on GET /api/v1/products with that token and shows 200
  and both SKUs;
- (a second test) as a manager, picks a CSV file in the CSV import's file picker (POST
  /api/v1/products/import/csv, a multipart/form-data upload) and imports it: 200, created 1.

JavaScript errors, console errors and any request that leaves the server fail the test:
flasgger renders the page from a template, and OpenAPI 3 specs have broken its UI before.
A full-page screenshot goes to artifacts/swagger-ui-<backend>.png, also when the test fails,
and one of the executed operation to artifacts/swagger-ui-<backend>-list-products.png.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from playwright.sync_api import ConsoleMessage, Page, Request, expect, sync_playwright

from service.config import Settings
from tests.conftest import throwaway_database
from tests.e2e.browser.chromium import launch, require_chromium
from tests.live_server import ROOT, LiveServer, live_server

ARTIFACTS = ROOT / "artifacts"
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
VIEWER_PASSWORD = "a long and unguessable passphrase"
UI_TIMEOUT_MS = 15_000
LIST_PRODUCTS = "listProducts"
IMPORT_CSV = "importProductsCsv"


# --- the spec --------------------------------------------------------------------------------


def _spec() -> dict:
    return yaml.safe_load(Settings().spec_path.read_text())


def _operation_ids_by_tag(spec: dict) -> dict[str, set[str]]:
    """Every tag of the spec (declared or used) → the operationIds filed under it."""
    by_tag: dict[str, set[str]] = {tag["name"]: set() for tag in spec.get("tags", [])}
    for item in spec["paths"].values():
        for method, operation in item.items():
            if method in METHODS:
                for tag in operation.get("tags", []):
                    by_tag.setdefault(tag, set()).add(operation["operationId"])
    return by_tag


def _resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        target: dict = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _operation(spec: dict, operation_id: str) -> tuple[str, str, list[dict]]:
    """(path, tag Swagger UI files it under, its parameters with $refs resolved)."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS and operation["operationId"] == operation_id:
                parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
                resolved = [_resolve(spec, parameter) for parameter in parameters]
                return path, operation["tags"][0], resolved
    raise LookupError(operation_id)


# --- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(backend, tmp_path_factory) -> Iterator[LiveServer]:
    with throwaway_database(backend, tmp_path_factory) as url:
        log_path = tmp_path_factory.mktemp("live") / f"server-{backend}.log"
        env = {"STOREKEEPER_VALIDATE_RESPONSES": "true", "LOG_LEVEL": "WARNING"}
        with live_server(url, workers=1, env=env, log_path=log_path) as server:
            yield server


def _seed(server: LiveServer) -> tuple[str, list[str]]:
    """A viewer who logs in with a password, and two products: (e-mail, SKUs)."""
    suffix = uuid.uuid4().hex[:6].upper()
    email = f"docs-reader-{suffix.lower()}@example.com"
    skus = [f"UI-HAMMER-{suffix}", f"UI-SAW-{suffix}"]
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=30) as api:
        user = {
            "email": email,
            "name": "Docs reader",
            "role": "viewer",
            "password": VIEWER_PASSWORD,
        }
        response = api.post("/api/v1/users", json=user)
        assert response.status_code == 201, response.text
        for sku, name in zip(skus, ["Claw hammer", "Panel saw"], strict=True):
            response = api.post("/api/v1/products", json={"sku": sku, "name": name})
            assert response.status_code == 201, response.text
    return email, skus


# --- the browser -------------------------------------------------------------------------------


class PageProblems:
    """JavaScript errors, console errors and requests to anywhere but our server."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.origin = urlsplit(base_url).netloc
        self.errors: list[str] = []
        self.outside_requests: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        if "favicon" in where and "404" in message.text:
            return  # a browser's own favicon probe, not the UI
        self.errors.append(f"console error: {message.text} ({where})")

    def _request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in {"http", "https"} and parts.netloc != self.origin:
            self.outside_requests.append(request.url)

    def assert_none(self) -> None:
        assert not self.errors, "the docs page logged errors:\n" + "\n".join(self.errors)
        assert not self.outside_requests, (
            "the docs page fetched from outside this server: " + ", ".join(self.outside_requests)
        )


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Checked before the server starts: a missing browser skips (fails in CI) at once."""
    return require_chromium()


@pytest.fixture()
def page(chromium, live, backend) -> Iterator[Page]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright, chromium)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            try:
                yield page
            finally:
                # Whatever state the page is in: the one picture a CI failure needs.
                page.screenshot(path=ARTIFACTS / f"swagger-ui-{backend}.png", full_page=True)
        finally:
            browser.close()


# --- the test ----------------------------------------------------------------------------------


def test_swagger_ui_authorizes_and_tries_out_the_product_list(chromium, live, page, backend):
    email, skus = _seed(live)
    spec = _spec()
    problems = PageProblems(page, live.base_url)

    # The page reads the spec as served at /openapi.json (the document as written).
    with page.expect_response(lambda r: urlsplit(r.url).path == "/openapi.json") as loaded:
        page.goto(f"{live.base_url}/apidocs/")
    assert loaded.value.status == 200 and loaded.value.json() == spec
    expect(page.locator(".swagger-ui .info .title")).to_contain_text(spec["info"]["title"])

    # Every tag is an operation group, holding exactly the operations the spec files under it.
    for tag, operation_ids in _operation_ids_by_tag(spec).items():
        group = page.locator(f'h4.opblock-tag[data-tag="{tag}"]')
        expect(group, f"tag {tag!r} is not listed").to_have_count(1)
        section = page.locator(".opblock-tag-section").filter(has=group)
        rendered = section.locator(".opblock").evaluate_all("blocks => blocks.map(b => b.id)")
        assert set(rendered) == {f"operations-{tag}-{op}" for op in operation_ids}, tag
    problems.assert_none()  # the root cause, before any click it might break

    # Authorize: the password flow posts the viewer's credentials to the token URL.
    authorize = page.locator(".auth-wrapper button.authorize")
    expect(authorize).to_have_class(re.compile(r"\bunlocked\b"))
    authorize.click()
    dialog = page.locator(".modal-ux")
    dialog.locator("#oauth_username").fill(email)
    dialog.locator("#oauth_password").fill(VIEWER_PASSWORD)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/v1/auth/token") as login:
        dialog.locator(".auth-btn-wrapper button.authorize").click()
    assert login.value.status == 200, login.value.text()
    # The RFC 6749 password grant form (the token endpoint takes nothing else).
    sent_type = login.value.request.headers.get("content-type", "")
    assert sent_type.startswith("application/x-www-form-urlencoded"), sent_type
    assert login.value.headers.get("cache-control") == "no-store"
    token = login.value.json()["access_token"]
    expect(dialog).to_contain_text("Authorized")
    dialog.locator(".auth-btn-wrapper button.btn-done").click()
    expect(dialog).to_have_count(0)
    expect(authorize).to_have_class(re.compile(r"\blocked\b"))
    # A real token of that user, not something the UI made up.
    me = httpx.get(f"{live.base_url}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["email"] == email, me.text

    # Try it out on the product list.
    path, tag, parameters = _operation(spec, LIST_PRODUCTS)
    block = page.locator(f"#operations-{tag}-{LIST_PRODUCTS}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    # Swagger UI 3 pre-fills optional parameters with their schema's example (category_id=42),
    # which would filter the list down to nothing: clear those without a default, as a user would.
    for parameter in parameters:
        if parameter["in"] != "query" or parameter.get("required"):
            continue
        if "default" in _resolve(spec, parameter.get("schema", {})):
            continue
        field = block.locator(f'tr[data-param-name="{parameter["name"]}"] input[type="text"]')
        if field.count():
            field.fill("")
    with page.expect_request(lambda r: urlsplit(r.url).path == path) as sent:
        block.locator("button.execute").click()
    assert sent.value.headers.get("authorization") == f"Bearer {token}"

    live_response = block.locator(".live-responses-table")
    expect(live_response.locator("tr.response td.response-col_status")).to_have_text("200")
    body = live_response.locator("tr.response td.response-col_description .microlight").first
    for sku in skus:
        expect(body).to_contain_text(sku)
    # servers: "/" resolves against the page: the request went to this server, this path.
    request_url = block.locator(".request-url pre").inner_text().strip()
    assert urlsplit(request_url)._replace(query="").geturl() == f"{live.base_url}{path}"

    block.screenshot(path=ARTIFACTS / f"swagger-ui-{backend}-list-products.png")
    problems.assert_none()


def test_swagger_ui_uploads_a_csv_file_to_the_import(chromium, live, page, backend, tmp_path):
    suffix = uuid.uuid4().hex[:6].upper()
    email = f"docs-manager-{suffix.lower()}@example.com"
    manager = {"email": email, "name": "Docs manager", "role": "manager"}
    with httpx.Client(base_url=live.base_url, headers=live.headers, timeout=30) as api:
        created = api.post("/api/v1/users", json={**manager, "password": VIEWER_PASSWORD})
        assert created.status_code == 201, created.text
    sku = f"UI-UPLOAD-{suffix}"
    csv = tmp_path / "products.csv"
    csv.write_text(f"sku,name\n{sku},Uploaded from the docs\n", encoding="utf-8")
    spec = _spec()
    problems = PageProblems(page, live.base_url)
    page.goto(f"{live.base_url}/apidocs/")

    # Authorize as the manager (the password flow, as in the test above).
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    dialog.locator("#oauth_username").fill(email)
    dialog.locator("#oauth_password").fill(VIEWER_PASSWORD)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/v1/auth/token") as login:
        dialog.locator(".auth-btn-wrapper button.authorize").click()
    assert login.value.status == 200, login.value.text()
    token = login.value.json()["access_token"]
    dialog.locator(".auth-btn-wrapper button.btn-done").click()
    expect(dialog).to_have_count(0)

    # Try it out: the form's one part is a file picker.
    path, tag, _parameters = _operation(spec, IMPORT_CSV)
    block = page.locator(f"#operations-{tag}-{IMPORT_CSV}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    picker = block.locator('input[type="file"]')
    expect(picker).to_have_count(1)
    picker.set_input_files(csv)
    with page.expect_request(lambda r: urlsplit(r.url).path == path) as sent:
        block.locator("button.execute").click()
    assert sent.value.headers.get("authorization") == f"Bearer {token}"
    assert sent.value.headers["content-type"].startswith("multipart/form-data; boundary=")

    live_response = block.locator(".live-responses-table")
    expect(live_response.locator("tr.response td.response-col_status")).to_have_text("200")
    body = live_response.locator("tr.response td.response-col_description .microlight").first
    expect(body).to_contain_text('"created": 1')
    with httpx.Client(base_url=live.base_url, headers=live.headers, timeout=30) as api:
        found = api.get("/api/v1/products", params={"q": sku}).json()["items"]
    assert [p["name"] for p in found] == ["Uploaded from the docs"]

    block.screenshot(path=ARTIFACTS / f"swagger-ui-{backend}-import-csv.png")
    problems.assert_none()
