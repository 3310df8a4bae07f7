"""A path id that is not an integer is a 400 naming the parameter, like one out of range.

connexion used to turn integer path parameters into route converters, so ``/products/abc``
matched no route (a bare 404) while ``/products/0`` was a 400 (service/api/routing.py). Every
operation with an integer path parameter is tried here, with credentials and without.
"""

from __future__ import annotations

import re

import pytest

from service import spec
from tests.helpers import assert_problem

METHODS = ("get", "put", "post", "delete", "patch")


def _resolved(node: dict) -> dict:
    while "$ref" in node:
        target: dict = spec.document()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _integer_path_parameters(item: dict, operation: dict) -> list[str]:
    parameters = [
        _resolved(p) for p in (*item.get("parameters", []), *operation.get("parameters", []))
    ]
    return [
        p["name"]
        for p in parameters
        if p["in"] == "path" and _resolved(p["schema"]).get("type") == "integer"
    ]


CASES = [
    pytest.param(method.upper(), template, name, id=f"{method.upper()} {template} {name}")
    for template, item in spec.paths().items()
    for method, operation in item.items()
    if method in METHODS
    for name in _integer_path_parameters(item, operation)
]


def _with(template: str, name: str, value: str) -> str:
    """``template`` with ``value`` for ``name`` and 1 for every other parameter."""
    return re.sub(r"\{([^}/]+)\}", lambda m: value if m.group(1) == name else "1", template)


def test_every_integer_path_parameter_is_covered():
    names = {case.values[2] for case in CASES}
    assert {"category_id", "product_id", "location_id", "movement_id", "user_id"} <= names
    assert len(CASES) >= 15


@pytest.mark.parametrize(("method", "template", "name"), CASES)
@pytest.mark.parametrize("value", ["abc", "1.5", "0x10", "%20", "1e3"])
def test_a_non_integer_path_id_is_a_400_naming_it(client, method, template, name, value):
    body = {} if method in ("POST", "PATCH", "PUT") else None
    response = client.request(method, _with(template, name, value), json=body)
    problem = assert_problem(response, 400, "validation-error")
    assert [(e["parameter"], e["in"]) for e in problem["errors"]] == [(name, "path")]


@pytest.mark.parametrize(("method", "template", "name"), CASES)
def test_without_credentials_it_is_a_401_first(anonymous_client, method, template, name):
    response = anonymous_client.request(method, _with(template, name, "abc"))
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(
    "path",
    ["/api/v1/products/export", "/api/v1/users/me", "/api/v1/stock/levels"],
)
def test_fixed_paths_still_win_over_a_parameter_in_the_same_place(client, path):
    assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v1/products/abc"),  # no PUT on /products/{product_id}
        ("PATCH", "/api/v1/products/export"),  # a fixed path is never read as an id
        ("DELETE", "/api/v1/products/export"),
        ("GET", "/api/v1/products/import"),
        ("PATCH", "/api/v1/users/me"),
    ],
)
def test_a_method_the_path_does_not_have_is_still_405(client, method, path):
    response = client.request(method, path, json={})
    assert_problem(response, 405)
