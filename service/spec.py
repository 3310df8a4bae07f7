"""The contract, loaded once: ``openapi/openapi.yaml`` as a document and its named schemas.

The app (paths and methods for ``Allow``), the product import (its row schema) and the CLI
(the same string rules as the API) all read the spec through here.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from service.config import Settings

MAX_REF_DEPTH = 32


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def document(path: Path | None = None) -> dict[str, Any]:
    """The parsed spec (a fresh copy: callers may change it)."""
    return copy.deepcopy(_load(path or Settings.spec_path))


def paths(path: Path | None = None) -> dict[str, Any]:
    return document(path)["paths"]


def schema(name: str, path: Path | None = None) -> dict[str, Any]:
    """``components.schemas[name]`` with every ``$ref`` inlined."""
    spec = _load(path or Settings.spec_path)
    return inline_refs(spec["components"]["schemas"][name], spec)


def inline_refs(node: Any, spec: dict, depth: int = 0) -> Any:
    """``node`` with each local ``$ref`` replaced by (a copy of) what it points at."""
    if depth > MAX_REF_DEPTH:
        raise ValueError("$ref nesting too deep in the spec")
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return inline_refs(merged, spec, depth + 1)
        return {key: inline_refs(value, spec, depth + 1) for key, value in node.items()}
    if isinstance(node, list):
        return [inline_refs(item, spec, depth + 1) for item in node]
    return node
