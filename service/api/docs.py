"""The contract as written, at /openapi.json and /openapi.yaml, and Swagger UI (flasgger) for it.

``/openapi.yaml`` is ``openapi/openapi.yaml`` byte for byte; ``/openapi.json`` is the same
document as JSON: components, ``$ref``s and ``servers`` exactly as written, so a generator
makes the named types we wrote (connexion's own copy is fully dereferenced). Both are public.

Swagger UI (flasgger) reads that same ``/openapi.json``: flasgger's spec route is declared at
that path and its view is ours, so the page documents exactly the served contract (flasgger's
own rendering of the file is never served). It is told to take the spec verbatim anyway: OpenAPI
3 mode, and a rule filter that rejects every Flask route so no docstring or view leaks in.

service/api/templates/flasgger/head.html overrides flasgger's page head (Flask searches the
app's templates, :data:`TEMPLATES`, before a blueprint's) to drop its Google Fonts link: the
docs load nothing from outside this server. tests/e2e/test_swagger_ui_browser.py checks the
page in headless Chromium.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from flasgger import Swagger
from flask import Flask, Response, request

# The Flask app's template folder (its templates win over flasgger's own).
TEMPLATES = Path(__file__).resolve().parent / "templates"
DOCS_ROUTE = "/apidocs/"
SPEC_JSON_ROUTE = "/openapi.json"
SPEC_YAML_ROUTE = "/openapi.yaml"
SPEC_JSON_ENDPOINT = "openapi_json"


def serve_spec(flask_app: Flask, spec_path: Path) -> None:
    """Serve the spec file as written (YAML) and as the same document in JSON."""
    text = spec_path.read_text(encoding="utf-8")
    as_json = json.dumps(yaml.safe_load(text), ensure_ascii=False, indent=1) + "\n"
    tag = '"' + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + '"'

    def answer(body: str, media_type: str) -> Response:
        if tag in request.headers.get("If-None-Match", ""):
            return Response(status=304, headers={"ETag": tag})
        return Response(body, mimetype=media_type, headers={"ETag": tag})

    flask_app.add_url_rule(
        SPEC_JSON_ROUTE, SPEC_JSON_ENDPOINT, lambda: answer(as_json, "application/json")
    )
    flask_app.add_url_rule(
        SPEC_YAML_ROUTE, "openapi_yaml", lambda: answer(text, "application/yaml")
    )


def _reject_every_rule(_rule) -> bool:
    return False


def init_docs(flask_app: Flask, spec_path: Path) -> Swagger:
    """Swagger UI at /apidocs/, reading /openapi.json (call :func:`serve_spec` first)."""
    config = {
        "openapi": "3.0.3",
        "headers": [],
        "specs": [
            {
                "endpoint": SPEC_JSON_ENDPOINT,
                "route": SPEC_JSON_ROUTE,
                "rule_filter": _reject_every_rule,
                "model_filter": _reject_every_rule,
            }
        ],
        "static_url_path": "/apidocs/static",
        "swagger_ui": True,
        "specs_route": DOCS_ROUTE,
        "title": "Storekeeper API",
        "uiversion": 3,
        "hide_top_bar": True,
        # Rendered verbatim into `ui.initOAuth(...)`: without it the page gets `None`, a
        # ReferenceError that stops the script before `window.ui` exists.
        "auth": {},
    }
    swagger = Swagger(flask_app, template_file=str(spec_path), config=config, merge=False)
    # flasgger adds a rule for its copy of the spec at /openapi.json, behind serve_spec's own
    # (Flask dispatches to the first), and the page links to it by that endpoint: both answer
    # the document as written.
    flask_app.view_functions[f"flasgger.{SPEC_JSON_ENDPOINT}"] = flask_app.view_functions[
        SPEC_JSON_ENDPOINT
    ]
    return swagger
