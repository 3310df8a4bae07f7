"""scripts/generate-clients.sh: every stock generator, and its zero-warning bar.

The helpers here are shared by the SDK flows (tests/e2e/test_sdk_python.py and
tests/e2e/test_sdk_typescript.py): ``generate`` runs the script for one target, ``serving``
starts the production server on a throwaway database with a manager whose password we know.
In CI (``CI=true``) a missing generator or Node.js is a failure, never a skip.

The tests here prove that the script's warning check works for each generator: each gets a
small spec that makes that generator warn (and otherwise carry on), and the script must fail
and show the warning. Each flow module checks that our own spec generates with no warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.db import Database
from tests.conftest import create_user, throwaway_database
from tests.live_server import ROOT, LiveServer, live_server, venv_bin

GENERATE = ROOT / "scripts" / "generate-clients.sh"
NODE_BIN = ROOT / "node_modules" / ".bin"
# The command each target needs (scripts/generate-clients.sh says where it comes from).
GENERATORS = {
    "python": venv_bin() / "openapi-python-client",
    "hey-api": NODE_BIN / "openapi-ts",
    "openapi-fetch": NODE_BIN / "openapi-typescript",
    "orval": NODE_BIN / "orval",
}


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the SDK tests may not be skipped in CI")
    pytest.skip(reason)


def require_generator(target: str) -> None:
    if not GENERATORS[target].exists():
        how = "make install" if target == "python" else "npm ci"
        unavailable(f"{GENERATORS[target].name} is not installed ({how})")
    if target != "python" and shutil.which("node") is None:
        unavailable("Node.js is required for the TypeScript generators")


def generate(
    target: str, clients_dir: Path, spec: Path | None = None
) -> subprocess.CompletedProcess:
    """``scripts/generate-clients.sh TARGET`` into CLIENTS_DIR (and SPEC, if given)."""
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


def assert_generated_quietly(target: str, result: subprocess.CompletedProcess) -> None:
    """It succeeded and said only its `+ generator version -> output` line."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stderr == "", output
    [line] = result.stdout.splitlines()
    assert line.startswith("+ ") and line.endswith(f"/{target}"), output


@dataclass
class Serving:
    server: LiveServer
    manager_email: str


@contextmanager
def serving(backend: str, tmp_path_factory) -> Iterator[Serving]:
    """The production server on a throwaway database of BACKEND, with a manager (TEST_PASSWORD)."""
    with throwaway_database(backend, tmp_path_factory) as url:
        env = {"STOREKEEPER_VALIDATE_RESPONSES": "true", "LOG_LEVEL": "WARNING"}
        with live_server(url, workers=1, env=env) as server:
            database = Database(server.database_url)
            try:
                email = create_user(database, "manager").email
            finally:
                database.dispose()
            yield Serving(server, email)


# One spec per generator that it warns about and still generates from (except the Python
# generator, which --fail-on-warning stops): the script must turn each warning into a failure.
_HEAD = "openapi: 3.0.3\ninfo: {title: Broken, version: '1'}\nservers: [{url: /}]\npaths:\n"
WARNING_SPECS = {
    # The path names a parameter that the operation does not declare: the operation is
    # skipped with a warning.
    "python": (
        _HEAD + "  /things/{thing_id}:\n"
        "    get:\n"
        "      operationId: getThing\n"
        "      responses: {'204': {description: Nothing.}}\n",
        "Path parameters do not match",
    ),
    # An enum of objects: hey-api cannot type it, says so, and writes a wrong type.
    "hey-api": (
        _HEAD + "  /things:\n"
        "    get:\n"
        "      operationId: getThings\n"
        "      responses:\n"
        "        '200':\n"
        "          description: Things.\n"
        "          content:\n"
        "            application/json:\n"
        "              schema: {enum: [{a: 1}, [1]]}\n",
        'unhandled "object" typeof value',
    ),
    # A discriminator mapping onto a schema that is not an object: openapi-typescript warns
    # and writes the union without the discriminator.
    "openapi-fetch": (
        _HEAD + "  /pets:\n"
        "    get:\n"
        "      operationId: getPet\n"
        "      responses:\n"
        "        '200':\n"
        "          description: A pet.\n"
        "          content: {application/json: {schema: {$ref: '#/components/schemas/Pet'}}}\n"
        "components:\n"
        "  schemas:\n"
        "    Pet:\n"
        "      oneOf: [{$ref: '#/components/schemas/Cat'}]\n"
        "      discriminator: {propertyName: kind, mapping: {cat: '#/components/schemas/Cat'}}\n"
        "    Cat: {type: string}\n",
        "Discriminator mapping has an invalid schema",
    ),
    # A response without its required description: orval's validation warns, then generates.
    "orval": (
        _HEAD + "  /things:\n"
        "    get:\n"
        "      operationId: getThings\n"
        "      responses:\n"
        "        '200':\n"
        "          content: {application/json: {schema: {type: string}}}\n",
        "Swagger schema validation failed",
    ),
}


@pytest.mark.parametrize("target", list(WARNING_SPECS))
def test_generation_fails_on_a_generator_warning(target, tmp_path):
    require_generator(target)
    text, warning = WARNING_SPECS[target]
    spec = tmp_path / "broken.yaml"
    spec.write_text(text)
    result = generate(target, tmp_path / "clients", spec)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert warning in output
    # The Python generator stops itself (--fail-on-warning); the script stops the others.
    verdict = "failed" if target == "python" else "printed warnings"
    last = result.stderr.splitlines()[-1]
    assert last.startswith("generate-clients: ") and last.endswith(f" {verdict} (above)"), output


def test_an_unknown_target_is_refused(tmp_path):
    result = generate("swift", tmp_path / "clients")
    assert result.returncode != 0
    assert "unknown target 'swift' (python, hey-api, openapi-fetch, orval)" in result.stderr
