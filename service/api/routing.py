"""connexion's router, with path parameters typed by validation instead of by the route.

connexion turns an ``integer`` path parameter into a route converter, so ``/products/abc``
matched no route and fell through to a bare 404, while ``/products/0`` routed and failed
validation with a 400 naming ``product_id``. Here every path parameter matches one segment
whatever it holds, so a request for a malformed id is routed to its operation, authenticated
like any other, and refused by request validation with the same 400 problem as an id out of
range. (Flask's own rules keep their converters: they only ever see requests that passed
validation.)

Without converters, ``/products/export`` would also match ``/products/{product_id}``. As in
Flask's router, a fixed segment wins: a parameter never matches a value that another route
spells as a fixed segment in the same place (so ``PATCH /products/export`` stays a 405, not a
400 for ``product_id``).
"""

from __future__ import annotations

import re
import typing as t
from collections import defaultdict

import starlette.routing
from connexion.frameworks import starlette as starlette_utils
from connexion.middleware.routing import RoutingAPI, RoutingMiddleware
from connexion.operations import AbstractOperation


def _shape(segments: list[str]) -> tuple[str, ...]:
    return tuple("{}" if segment.startswith("{") else segment for segment in segments)


def _fixed_segments_win(routes: list[starlette.routing.BaseRoute]) -> None:
    """Narrow each parameter of ``routes`` to values no sibling route spells as fixed."""
    paths = [route for route in routes if isinstance(route, starlette.routing.Route)]
    fixed: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for route in paths:
        segments = route.path.split("/")
        for index, segment in enumerate(segments):
            if not segment.startswith("{"):
                fixed[_shape(segments[:index])].add(segment)
    for route in paths:
        segments = route.path.split("/")
        pattern = route.path_regex.pattern
        for index, segment in enumerate(segments):
            taken = fixed.get(_shape(segments[:index])) if segment.startswith("{") else None
            if not taken:
                continue
            name = segment.strip("{}")
            excluded = "|".join(re.escape(value) for value in sorted(taken))
            pattern = pattern.replace(
                f"(?P<{name}>[^/]+)", f"(?P<{name}>(?!(?:{excluded})(?:/|$))[^/]+)"
            )
        route.path_regex = re.compile(pattern)


class UntypedPathRoutingAPI(RoutingAPI):
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        _fixed_segments_win(self.router.routes)

    @staticmethod
    def _framework_path_and_name(operation: AbstractOperation, path: str) -> tuple[str, str]:
        starlette_path = starlette_utils.starlettify_path(path)  # no types: no converters
        return starlette_path, starlette_path


class UntypedPathRoutingMiddleware(RoutingMiddleware):
    """:class:`RoutingMiddleware` building :class:`UntypedPathRoutingAPI` routers."""

    def add_api(self, specification: t.Any, base_path: str | None = None, **kwargs: t.Any):
        api = UntypedPathRoutingAPI(specification, base_path=base_path, next_app=self.app, **kwargs)
        # As connexion does: an API mounted on an existing base path is its fallback.
        for route in self.router.routes:
            if isinstance(route, starlette.routing.Mount) and route.path == api.base_path:
                route.app.default = api.router
        self.router.mount(api.base_path, app=api.router)
