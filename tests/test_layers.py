"""The layers of ``service/`` stay visible: an import-graph check over the source tree.

Rules (every import counts, also one inside a function):

- ``service.domain``, ``service.models``, ``service.schemas``, ``service.datagen`` and the
  framework-free core modules never import ``service.api``, ``service.app`` or a web
  framework (connexion, Flask, Starlette, Werkzeug, flasgger);
- ``service.cli`` never imports ``service.api`` or ``service.app``: commands reach the same
  domain functions the handlers call;
- nothing but ``service.api.handlers`` itself imports a handler module (connexion finds them
  by name from the spec);
- importing ``service.cli`` loads no web framework at all (checked in a fresh interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "service"

WEB = ("connexion", "flask", "starlette", "werkzeug", "flasgger", "a2wsgi")
API = ("service.api", "service.app", "service.asgi")
CORE = (
    "service.config",
    "service.db",
    "service.db_faults",
    "service.formats",
    "service.migrate",
    "service.problems",
    "service.schema_check",
    "service.spec",
)
FRAMEWORK_FREE = ("service.domain", "service.models", "service.schemas", "service.datagen", *CORE)


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported} ({self.rule})"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, nested ones included."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # `from service.api import transaction` imports service.api.transaction.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            found.append((node.lineno, target))
    return found


def violations(module: str, source: str, is_package: bool = False) -> list[Violation]:
    found = []
    for line, imported in imports_of(source, module, is_package):
        if _within(module, FRAMEWORK_FREE):
            if _within(imported, WEB):
                found.append(Violation(module, line, imported, "web framework below the API"))
            elif _within(imported, API):
                found.append(Violation(module, line, imported, "upward import into the API"))
        if _within(module, ("service.cli",)) and _within(imported, API):
            found.append(Violation(module, line, imported, "the CLI goes through the domain"))
        if _within(imported, ("service.api.handlers",)) and not _within(
            module, ("service.api.handlers",)
        ):
            found.append(Violation(module, line, imported, "handlers are leaves"))
    return found


def tree_violations(root: Path = SERVICE) -> list[Violation]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        found += violations(module_name(path, root.parent), source, path.name == "__init__.py")
    return found


def test_the_service_tree_keeps_its_layers():
    found = tree_violations()
    assert not found, "layer violations:\n" + "\n".join(map(str, found))


def test_the_tree_is_read_whole():
    """The check sees every package (a renamed folder must not slip out of it)."""
    modules = {module_name(path) for path in SERVICE.rglob("*.py")}
    for expected in ("service.api.handlers.products", "service.domain.ledger", "service.cli"):
        assert expected in modules


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("service.domain.ledger", "from flask import request\n", "web framework below the API"),
        ("service.domain.ledger", "import connexion.context\n", "web framework below the API"),
        ("service.db", "def f():\n    from starlette import types\n", "web framework below"),
        ("service.models.stock", "from service.api import transaction\n", "upward import"),
        ("service.domain.catalog", "from ..api.pagination import paginate\n", "upward import"),
        ("service.cli.stock", "from service.api.security import token_info\n", "the CLI"),
        ("service.domain.product_io", "from service.api.handlers import categories\n", "leaves"),
    ],
)
def test_a_forbidden_import_is_caught(module, source, rule):
    found = violations(module, source)
    assert found, f"{source!r} in {module} was not reported"
    assert any(rule in violation.rule for violation in found), found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("service.api.handlers.products", "from service.domain import product_io\n"),
        ("service.api.transaction", "from flask import request\n"),
        ("service.cli.stock", "from service.domain.ledger import recompute_levels\n"),
        ("service.domain.ledger", "from service.problems import ConflictProblem\n"),
    ],
)
def test_allowed_imports_pass(module, source):
    assert violations(module, source) == []


@pytest.mark.parametrize("module", ["service.cli", "service.domain.ledger", "service.datagen"])
def test_importing_below_the_api_loads_no_web_framework(module):
    probe = (
        f"import sys, {module}\n"
        f"loaded = sorted(m for m in {WEB!r} if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
