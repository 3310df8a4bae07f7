"""The TypeScript clients of three stock generators, each in the same flow against the real server.

For each target (``hey-api``: @hey-api/openapi-ts; ``openapi-fetch``: openapi-typescript's
types with the openapi-fetch runtime; ``orval``: orval's axios client) a session fixture
generates the client into build/clients/<target> (``scripts/generate-clients.sh``, any warning
fails) and compiles sdk/<target>/e2e.ts against it with tsc (strict, sdk/tsconfig.base.json)
into a temporary directory. A module fixture starts the production server on a throwaway
database of each backend; Node.js runs each flow against it, and the flow's JSON summary is
checked here, the same for every client: log in (JSON), catalog writes, an idempotent receipt
and its replay, a typed 409 insufficient-stock, a 412 on a stale If-Match, cursor paging, and a
CSV file upload (importProductsCsv, dry run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_PASSWORD
from tests.e2e.test_sdk_generation import (
    NODE_BIN,
    Serving,
    assert_generated_quietly,
    generate,
    require_generator,
    serving,
    unavailable,
)
from tests.live_server import ROOT

TARGETS = ("hey-api", "openapi-fetch", "orval")
PROBLEMS = "https://storekeeper.dev/problems/"


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """``compiled(target)``: (generation result, compiled e2e.js), generated and built once."""
    cache: dict[str, tuple[subprocess.CompletedProcess, Path]] = {}
    out = tmp_path_factory.mktemp("sdk-e2e")

    def build(target: str) -> tuple[subprocess.CompletedProcess, Path]:
        if target not in cache:
            require_generator(target)
            if not (NODE_BIN / "tsc").exists():
                unavailable("tsc is not installed (npm ci)")
            # sdk/<target>/e2e.ts imports the client from build/clients/<target>.
            generated = generate(target, ROOT / "build" / "clients")
            assert generated.returncode == 0, generated.stdout + generated.stderr
            tsc = subprocess.run(
                [str(NODE_BIN / "tsc"), "-p", f"sdk/{target}", "--outDir", str(out)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert tsc.returncode == 0, tsc.stdout + tsc.stderr
            cache[target] = (generated, out / "sdk" / target / "e2e.js")
        return cache[target]

    return build


@pytest.fixture(scope="module")
def serve(backend, tmp_path_factory) -> Iterator[Serving]:
    with serving(backend, tmp_path_factory) as running:
        yield running


@pytest.mark.parametrize("target", TARGETS)
def test_client_generates_without_warnings(compiled, target):
    generated, _script = compiled(target)
    assert_generated_quietly(target, generated)


@pytest.mark.parametrize("target", TARGETS)
def test_flow_runs_against_the_server(compiled, serve, target):
    _generated, script = compiled(target)
    tag = f"{target[:2].upper()}-{uuid.uuid4().hex[:8].upper()}"
    env = {
        **os.environ,
        "STOREKEEPER_URL": serve.server.base_url,
        "STOREKEEPER_EMAIL": serve.manager_email,
        "STOREKEEPER_PASSWORD": TEST_PASSWORD,
        "STOREKEEPER_TAG": tag,
        # The compiled flow is outside the checkout: its runtime packages (openapi-fetch,
        # axios) come from the checkout's node_modules.
        "NODE_PATH": str(ROOT / "node_modules"),
    }
    run = subprocess.run(
        [shutil.which("node") or "node", str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])

    assert summary["token_type"] == "bearer"
    product = summary["product"]
    assert product["sku"] == f"{tag}-HAM"
    assert product["category_id"] == summary["category_id"]
    assert product["reorder_point"] == 20
    # The replay of the receipt is the same document, marked as a replay.
    assert summary["receipt"]["replay_document_id"] == summary["receipt"]["document_id"]
    assert summary["receipt"]["replayed"] is True
    assert summary["receipt"]["balance_after"] == 40
    assert summary["shipment"]["balance_after"] == 37
    assert summary["insufficient"] == {
        "status": 409,
        "type": PROBLEMS + "insufficient-stock",
        "shortages": [
            {
                "line": 0,
                "product_id": product["id"],
                "location_id": summary["location_id"],
                "requested": 50,
                "available": 37,
            }
        ],
        "pointers": ["/lines/0/quantity"],
    }
    assert summary["duplicate_sku"]["status"] == 409
    assert summary["duplicate_sku"]["type"] == PROBLEMS + "duplicate-sku"
    assert f"already used by product {product['id']}" in summary["duplicate_sku"]["detail"]
    etag = summary["etag"]
    assert etag["first"] != etag["second"]
    assert (etag["stale_status"], etag["stale_type"]) == (412, PROBLEMS + "precondition-failed")
    # The run's six products, two per page, in SKU order, by following next_cursor.
    skus = sorted([f"{tag}-HAM", *(f"{tag}-P{i}" for i in range(1, 6))])
    assert summary["pages"] == [skus[0:2], skus[2:4], skus[4:6]]
    # The uploaded CSV: one row updates the hammer, one would create a product; a dry run.
    assert summary["csv_import"] == {
        "dry_run": True,
        "rows": 2,
        "created": 1,
        "updated": 1,
        "unchanged": 0,
    }
