"""Small HTTP constants shared by the middleware, error rendering and handlers."""

import re

REQUEST_ID_HEADER = "X-Request-ID"
# Where connexion's routing middleware leaves the resolved operation in the ASGI scope.
ROUTING_CONTEXT = "connexion_routing"


def operation_name(scope: dict) -> str | None:
    """The spec's operationId of the routed request (connexion prefixes it with the module)."""
    routing = scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
    operation_id = routing.get("operation_id")
    return operation_id.rpartition(".")[2] if operation_id else None


# path template regex → methods the spec defines for it; filled when the app is built.
_ALLOWED: list[tuple[re.Pattern[str], list[str]]] = []
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _path_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}/?$")


def register_spec_paths(paths: dict) -> None:
    """Remember which methods each spec path allows, for truthful ``Allow`` headers."""
    _ALLOWED.clear()
    for template, item in paths.items():
        methods = sorted(m.upper() for m in item if m in HTTP_METHODS)
        if "GET" in methods and "HEAD" not in methods:
            methods.append("HEAD")
        _ALLOWED.append((_path_pattern(template), methods))


def allowed_methods(path: str) -> list[str]:
    for pattern, methods in _ALLOWED:
        if pattern.match(path):
            return methods
    return []
