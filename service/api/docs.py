"""Swagger UI (flasgger) for the hand-written spec, at /apidocs.

flasgger is told to take the spec verbatim: OpenAPI 3 mode, and a rule filter that rejects
every Flask route so no docstring or view ever leaks into the documented contract.

service/api/templates/flasgger/head.html overrides flasgger's page head (Flask searches the
app's templates, :data:`TEMPLATES`, before a blueprint's) to drop its Google Fonts link: the
docs load nothing from outside this server. tests/e2e/test_swagger_ui_browser.py checks the
page in headless Chromium.
"""

from __future__ import annotations

from pathlib import Path

from flasgger import Swagger
from flask import Flask

# The Flask app's template folder (its templates win over flasgger's own).
TEMPLATES = Path(__file__).resolve().parent / "templates"
DOCS_ROUTE = "/apidocs/"
DOCS_SPEC_ROUTE = "/apidocs/openapi.json"


def _reject_every_rule(_rule) -> bool:
    return False


def init_docs(flask_app: Flask, spec_path: Path) -> Swagger:
    config = {
        "openapi": "3.0.3",
        "headers": [],
        "specs": [
            {
                "endpoint": "apidocs_spec",
                "route": DOCS_SPEC_ROUTE,
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
    return Swagger(flask_app, template_file=str(spec_path), config=config, merge=False)
