"""Find breaking changes between a released OpenAPI document and the current one.

    python scripts/api_compat.py openapi/released/1.0.0.yaml openapi/openapi.yaml

Breaking for existing clients (each reported with where it happened):
- an operation (method + path) removed, or its operationId changed (generated clients name
  their methods after it);
- a request: a media type no longer accepted, a new required parameter or body field, a body
  field removed (bodies refuse unknown fields), a narrower type, enum, length, range or
  pattern (an enum replaced by rules only if they refuse one of its values);
- a success response: a field removed or no longer always present, a wider type, format,
  range or enum (clients may not handle the new values: an int64 id overflows an int32
  field) or a newly nullable field.
Adding operations, optional inputs or response fields is not breaking. Exit status 1 when
something breaks and the major version did not move.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
NARROWING = {  # keyword: how the new value narrows what a request may send
    "maxLength": lambda old, new: new < old,
    "minLength": lambda old, new: new > old,
    "maximum": lambda old, new: new < old,
    "minimum": lambda old, new: new > old,
    "maxItems": lambda old, new: new < old,
    "minItems": lambda old, new: new > old,
}
WIDENING = {  # keyword: how the new value widens what a response may hold (None: no bound)
    "maximum": lambda old, new: new is None or new > old,
    "minimum": lambda old, new: new is None or new < old,
}


def load(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def major(spec: dict) -> int:
    return int(str(spec["info"]["version"]).split(".")[0])


class _Resolver:
    def __init__(self, spec: dict) -> None:
        self.spec = spec

    def __call__(self, node: Any) -> Any:
        """Follow $ref and merge allOf, so schemas compare by content, not by spelling."""
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        if isinstance(node, dict) and "allOf" in node:
            merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
            for part in node["allOf"]:
                part = self(part)
                for key, value in part.items():
                    if key == "properties":
                        merged.setdefault("properties", {}).update(value)
                    elif key == "required":
                        merged["required"] = sorted({*merged.get("required", []), *value})
                    else:
                        merged.setdefault(key, value)
            node = merged
        return node


def _operations(spec: dict) -> dict[tuple[str, str], dict]:
    found = {}
    for path, item in spec.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method in item:
                operation = dict(item[method])
                operation["parameters"] = [*shared, *operation.get("parameters", [])]
                found[(method.upper(), path)] = operation
    return found


def _admits(schema: dict, value: Any) -> bool:
    """Whether ``schema``'s own length, pattern and range rules accept ``value``."""
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            return False
        if len(value) < schema.get("minLength", 0):
            return False
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return False
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return not number or schema.get("minimum", value) <= value <= schema.get("maximum", value)


def _compare_request(old: Any, new: Any, where: str, r_old, r_new, out: list[str]) -> None:
    old, new = r_old(old), r_new(new)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return
    if old.get("type") and new.get("type") and old["type"] != new["type"]:
        out.append(f"{where}: type {old['type']} → {new['type']}")
    if "enum" in new and set(new["enum"]) < set(old.get("enum", new["enum"])):
        out.append(f"{where}: enum lost {sorted(set(old['enum']) - set(new['enum']), key=str)}")
    if "enum" in new and "enum" not in old:
        out.append(f"{where}: now restricted to {new['enum']}")
    if old.get("nullable") and not new.get("nullable"):
        out.append(f"{where}: no longer accepts null")
    if "enum" in old and "enum" not in new:
        # The enum was all a client could send: narrower only if the new rules refuse some of it.
        refused = [value for value in old["enum"] if not _admits(new, value)]
        if refused:
            out.append(f"{where}: no longer accepts {refused}")
    else:
        if new.get("pattern") != old.get("pattern") and "pattern" in new:
            out.append(f"{where}: pattern changed")
        for keyword, narrower in NARROWING.items():
            if keyword in new and (keyword not in old or narrower(old[keyword], new[keyword])):
                out.append(f"{where}: {keyword} {old.get(keyword)} → {new[keyword]}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        out.append(f"{where}/{name}: newly required")
    for name, schema in old_props.items():
        if name not in new_props:
            if new.get("additionalProperties") is False:
                out.append(f"{where}/{name}: removed (now an unknown field)")
            continue
        _compare_request(schema, new_props[name], f"{where}/{name}", r_old, r_new, out)
    if "items" in old and "items" in new:
        _compare_request(old["items"], new["items"], f"{where}[]", r_old, r_new, out)


def _compare_response(old: Any, new: Any, where: str, r_old, r_new, out: list[str]) -> None:
    old, new = r_old(old), r_new(new)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return
    if old.get("type") and new.get("type") and old["type"] != new["type"]:
        out.append(f"{where}: type {old['type']} → {new['type']}")
    if "enum" in old and set(new.get("enum", [])) - set(old["enum"]):
        out.append(f"{where}: new values {sorted(set(new['enum']) - set(old['enum']), key=str)}")
    if new.get("nullable") and not old.get("nullable"):
        out.append(f"{where}: may now be null")
    if old.get("format") and new.get("format") != old["format"]:
        out.append(f"{where}: format {old['format']} → {new.get('format')}")
    for keyword, wider in WIDENING.items():
        if keyword in old and wider(old[keyword], new.get(keyword)):
            out.append(f"{where}: {keyword} {old[keyword]} → {new.get(keyword)}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in sorted(set(old.get("required", [])) - set(new.get("required", []))):
        out.append(f"{where}/{name}: no longer always present")
    for name, schema in old_props.items():
        if name not in new_props:
            out.append(f"{where}/{name}: removed")
            continue
        _compare_response(schema, new_props[name], f"{where}/{name}", r_old, r_new, out)
    if "items" in old and "items" in new:
        _compare_response(old["items"], new["items"], f"{where}[]", r_old, r_new, out)


def breaking_changes(old_spec: dict, new_spec: dict) -> list[str]:
    r_old, r_new = _Resolver(old_spec), _Resolver(new_spec)
    old_ops, new_ops = _operations(old_spec), _operations(new_spec)
    out: list[str] = []
    for key, old_op in old_ops.items():
        where = f"{key[0]} {key[1]}"
        new_op = new_ops.get(key)
        if new_op is None:
            out.append(f"{where}: operation removed")
            continue
        if old_op.get("operationId") != new_op.get("operationId"):
            out.append(
                f"{where}: operationId {old_op.get('operationId')} → {new_op.get('operationId')}"
            )
        old_params = {(p["in"], p["name"]): p for p in map(r_old, old_op["parameters"])}
        new_params = {(p["in"], p["name"]): p for p in map(r_new, new_op["parameters"])}
        for pkey, param in new_params.items():
            old_param = old_params.get(pkey)
            name = f"{where} {pkey[0]} parameter {pkey[1]}"
            if param.get("required") and not (old_param or {}).get("required"):
                out.append(f"{name}: newly required")
            if old_param is not None:
                _compare_request(
                    old_param.get("schema", {}), param.get("schema", {}), name, r_old, r_new, out
                )
        for pkey in old_params.keys() - new_params.keys():
            if pkey[0] in ("query", "path"):
                out.append(f"{where} {pkey[0]} parameter {pkey[1]}: removed")
        old_body = r_old(old_op.get("requestBody", {})).get("content", {})
        new_body = r_new(new_op.get("requestBody", {})).get("content", {})
        for media, content in old_body.items():
            if media not in new_body:
                out.append(f"{where} body {media}: no longer accepted")
                continue
            _compare_request(
                content.get("schema", {}),
                new_body[media].get("schema", {}),
                f"{where} body",
                r_old,
                r_new,
                out,
            )
        if r_new(new_op.get("requestBody", {})).get("required") and not r_old(
            old_op.get("requestBody", {})
        ).get("required"):
            out.append(f"{where} body: newly required")
        for status, response in old_op.get("responses", {}).items():
            if not str(status).startswith("2"):
                continue
            new_response = new_op.get("responses", {}).get(status)
            if new_response is None:
                out.append(f"{where} {status}: response removed")
                continue
            old_content = r_old(response).get("content", {})
            new_content = r_new(new_response).get("content", {})
            for media, content in old_content.items():
                if media not in new_content:
                    out.append(f"{where} {status} {media}: no longer returned")
                    continue
                _compare_response(
                    content.get("schema", {}),
                    new_content[media].get("schema", {}),
                    f"{where} {status}",
                    r_old,
                    r_new,
                    out,
                )
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    old_spec, new_spec = load(argv[1]), load(argv[2])
    changes = breaking_changes(old_spec, new_spec)
    for change in changes:
        print(f"BREAKING {change}")
    if changes and major(new_spec) <= major(old_spec):
        print(
            f"{len(changes)} breaking change(s) without a new major version "
            f"({old_spec['info']['version']} → {new_spec['info']['version']})"
        )
        return 1
    print(f"compatible: {old_spec['info']['version']} → {new_spec['info']['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
