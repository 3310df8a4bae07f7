"""The application factory: connexion in front, Flask underneath, one spec for everything."""

from __future__ import annotations

import json
import logging
import re
from functools import partial

import connexion
from connexion.exceptions import ProblemException
from connexion.jsonifier import Jsonifier
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.options import SwaggerUIOptions
from connexion.utils import get_function_from_name
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from service import spec
from service.api import transaction
from service.api.docs import DOCS_ROUTE, init_docs, serve_spec
from service.api.docs import TEMPLATES as DOCS_TEMPLATES
from service.api.http_facts import register_spec_paths
from service.api.middleware.body_limit import BodyLimitMiddleware
from service.api.middleware.disconnect import DisconnectWatchMiddleware
from service.api.middleware.header_limits import HeaderLimitMiddleware
from service.api.middleware.media_type import MediaTypeMiddleware, body_contracts
from service.api.middleware.path_guard import PathGuardMiddleware, refuse_unrouted_views
from service.api.middleware.request_id import RequestIdMiddleware
from service.api.problem_handlers import (
    handle_database_error,
    handle_http_exception,
    handle_problem,
    handle_unexpected,
)
from service.api.ratelimit import EXTENSION_KEY as RATE_LIMITS_KEY
from service.api.ratelimit import RateLimitingResolver, RateLimitMiddleware, RateLimits
from service.api.routing import UntypedPathRoutingMiddleware
from service.api.security import CREDENTIALS_KEY, RecentCredentials, SecurityScopeMiddleware
from service.api.transaction import EXTENSION_KEY, WEBHOOK_SETTINGS_KEY
from service.api.validators import VALIDATORS
from service.config import Settings
from service.db import Database
from service.problems import Problem


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _resolve_handler(dotted: str):
    """``service.api.handlers.products.listProducts`` → ``...products.list_products``.

    operationIds stay camelCase for generated SDKs; the Python functions stay snake_case.
    """
    module, _, operation_id = dotted.rpartition(".")
    handler = get_function_from_name(f"{module}.{_snake_case(operation_id)}")
    # Every operation confirms a credential answered from memory before its handler acts.
    return transaction.credential_confirmed(handler)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def _middleware_stack(
    settings: Settings,
    database: Database,
    credentials: RecentCredentials,
    rate_limits: RateLimits,
) -> list:
    """connexion's ASGI middlewares and ours, outermost first, in the order a request meets
    them. connexion's SwaggerUIMiddleware is left out (flasgger serves the docs and
    ``service.api.docs`` the spec), and its response validation unless it is switched on."""
    return [
        ServerErrorMiddleware,
        # Every answer carries the request id, problems included.
        RequestIdMiddleware,
        ExceptionMiddleware,
        # Inside the error rendering, in front of everything that routes: `//`, `.`/`..`
        # segments and trailing slashes are a 404 problem; oversized headers a 431.
        partial(PathGuardMiddleware, slash_routes={DOCS_ROUTE}),
        HeaderLimitMiddleware,
        # A malformed path id is routed and refused by validation (400), not a bare 404.
        UntypedPathRoutingMiddleware,
        partial(SecurityScopeMiddleware, database=database, credentials=credentials),
        SecurityMiddleware,
        # After security (401/403 first), before validation reads the body: its size (413),
        # then its media type and charset against the spec's requestBody (415).
        partial(
            BodyLimitMiddleware,
            default=settings.max_body_bytes,
            limits={
                "importProducts": settings.import_max_bytes,
                "importProductsCsv": settings.import_max_bytes,
            },
        ),
        partial(MediaTypeMiddleware, contracts=body_contracts(spec.document(settings.spec_path))),
        # Then the rate limits (429), still before validation: a flood of invalid bodies is
        # refused without validating each. After security: writes count per credential.
        partial(RateLimitMiddleware, limits=rate_limits),
        partial(DisconnectWatchMiddleware, operations={"exportProducts"}),
        RequestValidationMiddleware,
        *([ResponseValidationMiddleware] if settings.validate_responses else []),
        LifespanMiddleware,
        ContextMiddleware,
    ]


def create_app(settings: Settings | None = None) -> connexion.FlaskApp:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)

    rate_limits = RateLimits(settings)
    database = Database.from_settings(settings)
    credentials = RecentCredentials()
    app = connexion.FlaskApp(
        __name__,
        server_args={"template_folder": str(DOCS_TEMPLATES)},
        middlewares=_middleware_stack(settings, database, credentials, rate_limits),
    )
    # Flask matches only the exact spelling of a route: no merged `//`, and (strict slashes)
    # no trailing `/` on a slash-less rule. PathGuardMiddleware refuses both before routing.
    app.app.url_map.merge_slashes = False
    app.app.url_map.strict_slashes = True
    app.add_api(
        settings.spec_path,
        # Wraps login, password reset and every write in its rate limit.
        resolver=RateLimitingResolver(rate_limits, function_resolver=_resolve_handler),
        strict_validation=True,
        validate_responses=settings.validate_responses,
        validator_map=VALIDATORS,
        jsonifier=Jsonifier(json, separators=(",", ":")),
        # flasgger serves the docs UI; service.api.docs serves the spec as written (connexion
        # would serve a fully dereferenced copy).
        swagger_ui_options=SwaggerUIOptions(swagger_ui=False, serve_spec=False),
    )
    app.add_error_handler(Problem, handle_problem)
    app.add_error_handler(ProblemException, handle_problem)
    app.add_error_handler(HTTPException, handle_http_exception)
    # Unreachable, frozen or busy database: 503 (the rest of SQLAlchemy's errors stay 500s).
    app.add_error_handler(SQLAlchemyError, handle_database_error)
    app.add_error_handler(Exception, handle_unexpected)

    register_spec_paths(spec.paths(settings.spec_path))

    flask_app = app.app
    # werkzeug holds a multipart text part in memory up to this (then a 413). BodyLimitMiddleware
    # bounds every whole body already, and the CSV import's file part may come without a
    # filename (werkzeug then reads it as text), so the import's limit is the one that counts.
    flask_app.config["MAX_FORM_MEMORY_SIZE"] = max(
        settings.max_body_bytes, settings.import_max_bytes
    )
    flask_app.extensions[EXTENSION_KEY] = database
    flask_app.extensions[CREDENTIALS_KEY] = credentials
    flask_app.extensions[RATE_LIMITS_KEY] = rate_limits
    flask_app.extensions[WEBHOOK_SETTINGS_KEY] = settings.webhooks
    serve_spec(flask_app, settings.spec_path)
    init_docs(flask_app, settings.spec_path)
    refuse_unrouted_views(flask_app)
    return app
