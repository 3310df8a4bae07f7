"""Problem documents for every kind of failure, request ids, and no partial writes."""

from __future__ import annotations

import re

import pytest

from tests.helpers import JSON, assert_problem, create_category, create_product

PRODUCTS = "/api/v1/products"
CATEGORIES = "/api/v1/categories"


def pointers(problem: dict) -> list[str]:
    return [entry.get("pointer") for entry in problem.get("errors", [])]


def boom(*_args, **_kwargs):
    raise RuntimeError("SELECT secret FROM users")


# --- routing ----------------------------------------------------------------------------


def test_unknown_path_is_a_404_problem(client):
    problem = assert_problem(client.get("/api/v1/nothing-here"), 404)
    assert problem["detail"]


def test_unknown_path_outside_the_api_is_a_404_problem(client):
    assert_problem(client.get("/no/such/page"), 404)


def test_method_not_allowed_is_405_with_allow_header(client):
    response = client.put(PRODUCTS, json={"sku": "A-1", "name": "A"})

    assert_problem(response, 405)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert "PUT" not in allowed


def test_method_not_allowed_on_a_single_resource_lists_its_methods(client):
    product = create_product(client, "A-1")

    response = client.post(f"{PRODUCTS}/{product['id']}", json={"sku": "B-1", "name": "B"})

    assert_problem(response, 405)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed
    assert "POST" not in allowed


# --- bodies -----------------------------------------------------------------------------


def test_text_plain_body_is_415(client):
    response = client.post(PRODUCTS, content=b"sku=A-1", headers={"Content-Type": "text/plain"})
    assert_problem(response, 415)
    assert client.get(PRODUCTS).json()["items"] == []


def test_malformed_json_is_400(client):
    response = client.post(PRODUCTS, content=b'{"sku": "A-1", ', headers=JSON)
    problem = assert_problem(response, 400)
    assert "JSON" in problem["detail"]


def test_invalid_utf8_body_is_400_not_500(client):
    response = client.post(PRODUCTS, content=b'{"sku": "\xff"}', headers=JSON)
    assert_problem(response, 400)


def test_lone_surrogate_in_body_is_400(client):
    """JSON allows the escape, but the string cannot be stored as UTF-8 text."""
    body = b'{"sku": "A-1", "name": "bad \\ud800 name"}'
    response = client.post(PRODUCTS, content=body, headers=JSON)
    assert_problem(response, 400)
    assert client.get(PRODUCTS).json()["items"] == []


def test_nan_in_body_is_400(client):
    body = b'{"sku": "A-1", "name": "A", "reorder_point": NaN}'
    assert_problem(client.post(PRODUCTS, content=body, headers=JSON), 400)


def test_empty_body_is_400(client):
    assert_problem(client.post(PRODUCTS, content=b"", headers=JSON), 400)


def test_json_array_body_is_400(client):
    assert_problem(client.post(PRODUCTS, json=[{"sku": "A-1", "name": "A"}]), 400)


def test_unknown_body_field_is_400_pointing_at_it(client):
    response = client.post(PRODUCTS, json={"sku": "A-1", "name": "A", "bogus": 1})

    problem = assert_problem(response, 400, "validation-error")
    assert "/bogus" in pointers(problem)
    assert client.get(PRODUCTS).json()["items"] == []


def test_server_managed_fields_are_rejected_as_unknown(client):
    body = {"sku": "A-1", "name": "A", "id": 7, "created_at": "2020-01-01T00:00:00Z"}
    problem = assert_problem(client.post(PRODUCTS, json=body), 400)
    assert {"/id", "/created_at"} <= set(pointers(problem))


def test_missing_required_fields_are_each_reported(client):
    problem = assert_problem(client.post(PRODUCTS, json={"description": "x"}), 400)
    assert sorted(pointers(problem)) == ["/name", "/sku"]


def test_several_invalid_fields_give_one_entry_each(client):
    body = {
        "sku": "has space",  # pattern
        "name": "Fine",
        "reorder_point": -1,  # minimum
        "unit_of_measure": "Box",  # pattern
        "is_active": "yes",  # type
    }

    problem = assert_problem(client.post(PRODUCTS, json=body), 400, "validation-error")

    assert sorted(pointers(problem)) == [
        "/is_active",
        "/reorder_point",
        "/sku",
        "/unit_of_measure",
    ]
    assert all(entry["detail"] for entry in problem["errors"])


def test_a_field_failing_several_rules_is_still_one_entry(client):
    problem = assert_problem(client.post(PRODUCTS, json={"sku": "", "name": ""}), 400)
    assert sorted(pointers(problem)) == ["/name", "/sku"]


@pytest.mark.parametrize(
    "body",
    [
        {"sku": 123, "name": "A"},
        {"sku": "A-1", "name": "A", "reorder_point": "5"},
        {"sku": "A-1", "name": "A", "reorder_point": 1.5},
        {"sku": "A-1", "name": "A", "is_active": 1},
        {"sku": "A-1", "name": "A", "category_id": "1"},
        {"sku": "A-1", "name": ["A"]},
    ],
    ids=["int-sku", "string-int", "float-int", "int-bool", "string-id", "list-name"],
)
def test_wrong_type_is_400(client, body):
    problem = assert_problem(client.post(PRODUCTS, json=body), 400, "validation-error")
    assert problem["errors"]


def test_wrong_type_on_patch_is_400_and_changes_nothing(client):
    product = create_product(client, "A-1")

    response = client.patch(f"{PRODUCTS}/{product['id']}", json={"reorder_point": "many"})

    problem = assert_problem(response, 400)
    assert pointers(problem) == ["/reorder_point"]
    assert client.get(f"{PRODUCTS}/{product['id']}").json() == product


def test_out_of_range_body_id_is_400_not_500(client):
    body = {"sku": "A-1", "name": "A", "category_id": 99999999999}
    problem = assert_problem(client.post(PRODUCTS, json=body), 400)
    assert pointers(problem) == ["/category_id"]


# --- path and query parameters ----------------------------------------------------------


@pytest.mark.parametrize("path", [f"{PRODUCTS}/99999999999", f"{CATEGORIES}/99999999999"])
def test_id_beyond_int32_in_path_is_a_problem_not_500(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404), response.text
    assert_problem(response, response.status_code)


@pytest.mark.parametrize("path", [f"{PRODUCTS}/0", f"{PRODUCTS}/-1", f"{PRODUCTS}/abc"])
def test_invalid_id_in_path_is_a_400_naming_it(client, path):
    problem = assert_problem(client.get(path), 400, "validation-error")
    assert [e["parameter"] for e in problem["errors"]] == ["product_id"]


def test_bad_path_id_is_reported_once(client):
    problem = assert_problem(client.get(f"{PRODUCTS}/0"), 400)
    assert len(problem["errors"]) == 1
    assert problem["errors"][0]["parameter"] == "product_id"


def test_boolean_query_parameter_with_garbage_is_400(client):
    problem = assert_problem(client.get(PRODUCTS, params={"is_active": "maybe"}), 400)
    assert problem["errors"][0]["parameter"] == "is_active"


def test_problem_lists_every_bad_parameter(client):
    response = client.get(PRODUCTS, params={"limit": 0, "sort": "price", "colour": "red"})
    problem = assert_problem(response, 400)
    assert {e["parameter"] for e in problem["errors"]} == {"limit", "sort", "colour"}


# --- request ids ------------------------------------------------------------------------


def test_supplied_request_id_is_echoed(client):
    response = client.get(PRODUCTS, headers={"X-Request-ID": "req-42.abc:1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42.abc:1"


def test_supplied_request_id_appears_in_a_problem(client):
    response = client.get(f"{PRODUCTS}/999", headers={"X-Request-ID": "trace-123"})

    problem = assert_problem(response, 404)
    assert problem["request_id"] == "trace-123"
    assert response.headers["x-request-id"] == "trace-123"


def test_missing_request_id_is_generated(client):
    first = client.get(PRODUCTS).headers["x-request-id"]
    second = client.get(PRODUCTS).headers["x-request-id"]

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second


@pytest.mark.parametrize("supplied", ["has space", "x" * 129, "<script>", ""])
def test_unacceptable_request_id_is_replaced(client, supplied):
    response = client.get(PRODUCTS, headers={"X-Request-ID": supplied})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_request_id_is_set_on_routing_and_validation_problems(client):
    for response in (
        client.get("/nope", headers={"X-Request-ID": "rid-1"}),
        client.put(PRODUCTS, headers={"X-Request-ID": "rid-1"}),
        client.get(PRODUCTS, params={"limit": 0}, headers={"X-Request-ID": "rid-1"}),
    ):
        assert response.headers["x-request-id"] == "rid-1"
        assert response.json()["request_id"] == "rid-1"


# --- unexpected failures ----------------------------------------------------------------


def test_unexpected_exception_is_a_500_problem_without_internals(client, monkeypatch):
    monkeypatch.setattr("service.api.pagination.paginate", boom)

    response = client.get(PRODUCTS, headers={"X-Request-ID": "oops-1"})

    problem = assert_problem(response, 500, "internal-error")
    assert problem["request_id"] == "oops-1"
    assert "oops-1" in response.text
    for leak in ("SELECT", "secret", "Traceback", "RuntimeError", ".py"):
        assert leak not in response.text
        assert all(leak not in value for value in response.headers.values())


def test_500_without_supplied_id_still_carries_a_generated_one(client, monkeypatch):
    monkeypatch.setattr("service.api.pagination.paginate", boom)

    response = client.get(PRODUCTS)

    problem = assert_problem(response, 500)
    assert re.fullmatch(r"[0-9a-f]{32}", problem["request_id"])


def test_fault_after_flush_on_create_leaves_no_product(client, monkeypatch):
    """The row was INSERTed (flushed) before the failure; the transaction must roll back."""
    with monkeypatch.context() as patch:
        patch.setattr("service.api.handlers.products.ProductSchema.dump", boom)
        response = client.post(PRODUCTS, json={"sku": "GHOST-1", "name": "Ghost"})
        assert_problem(response, 500)

    assert [p["sku"] for p in client.get(PRODUCTS).json()["items"]] == []
    # The SKU is free: nothing holds it.
    create_product(client, "GHOST-1")


def test_fault_after_flush_on_create_category_leaves_nothing(client, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr("service.api.handlers.categories.CategorySchema.dump", boom)
        assert_problem(client.post(CATEGORIES, json={"name": "Ghost"}), 500)

    assert client.get(CATEGORIES).json()["items"] == []


def test_fault_after_flush_on_update_leaves_the_old_values(client, monkeypatch):
    product = create_product(client, "A-1", name="Original")

    with monkeypatch.context() as patch:
        patch.setattr("service.api.handlers.products.ProductSchema.dump", boom)
        response = client.patch(f"{PRODUCTS}/{product['id']}", json={"name": "Changed"})
        assert_problem(response, 500)

    fetched = client.get(f"{PRODUCTS}/{product['id']}")
    assert fetched.json() == product
    assert fetched.headers["etag"] == f'"{product["id"]}-1"'


def test_fault_during_delete_leaves_the_category(client, monkeypatch):
    tools = create_category(client, "Tools")

    with monkeypatch.context() as patch:
        patch.setattr("service.api.handlers.categories.empty_response", boom)
        assert_problem(client.delete(f"{CATEGORIES}/{tools['id']}"), 500)

    assert client.get(f"{CATEGORIES}/{tools['id']}").json() == tools
