"""ETag, If-None-Match (304) and If-Match (412) on single resources."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from service.api.handlers import products
from service.models import Product
from tests.helpers import assert_problem, create_category, create_product


@pytest.fixture(params=["product", "category"])
def resource(request, client) -> tuple[str, dict, dict]:
    """(url, current body, a valid PATCH body) for one product or one category."""
    if request.param == "product":
        product = create_product(client, "HAM-1", name="Hammer")
        return f"/api/v1/products/{product['id']}", product, {"name": "Mallet"}
    category = create_category(client, "Tools")
    return f"/api/v1/categories/{category['id']}", category, {"name": "Equipment"}


def etag(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


def test_get_returns_a_quoted_etag_matching_the_create_response(client):
    response = client.post("/api/v1/products", json={"sku": "A-1", "name": "A"})
    created_tag = response.headers["etag"]

    tag = etag(client, response.headers["location"])

    assert tag == created_tag
    assert tag.startswith('"') and tag.endswith('"')


def test_if_none_match_with_current_etag_is_304_without_body(client, resource):
    url, _, _ = resource
    tag = etag(client, url)

    response = client.get(url, headers={"If-None-Match": tag})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == tag
    assert "content-type" not in response.headers


def test_if_none_match_accepts_lists_weak_tags_and_star(client, resource):
    url, _, _ = resource
    tag = etag(client, url)

    for header in (f'"0-0", {tag}', f"W/{tag}", "*"):
        assert client.get(url, headers={"If-None-Match": header}).status_code == 304, header


def test_if_none_match_with_other_etag_is_200(client, resource):
    url, body, _ = resource

    response = client.get(url, headers={"If-None-Match": '"0-0"'})

    assert response.status_code == 200
    assert response.json() == body


def test_after_patch_the_old_etag_no_longer_gives_304(client, resource):
    url, _, change = resource
    old = etag(client, url)

    patched = client.patch(url, json=change)
    assert patched.status_code == 200, patched.text
    new = patched.headers["etag"]

    assert new != old
    assert etag(client, url) == new
    stale = client.get(url, headers={"If-None-Match": old})
    assert stale.status_code == 200
    assert stale.json() == patched.json()
    assert client.get(url, headers={"If-None-Match": new}).status_code == 304


def test_if_none_match_on_an_unknown_resource_is_404(client):
    response = client.get("/api/v1/products/999", headers={"If-None-Match": "*"})
    assert_problem(response, 404, "not-found")


def test_patch_with_stale_if_match_is_412_and_changes_nothing(client, resource):
    url, body, change = resource
    stale = etag(client, url)
    assert client.patch(url, json=change).status_code == 200
    current = client.get(url).json()

    response = client.patch(url, json={"description": "lost update"}, headers={"If-Match": stale})

    problem = assert_problem(response, 412, "precondition-failed")
    assert problem["detail"]
    assert client.get(url).json() == current
    assert current != body


def test_delete_with_stale_if_match_is_412_and_deletes_nothing(client, resource):
    url, _, change = resource
    stale = etag(client, url)
    assert client.patch(url, json=change).status_code == 200

    assert_problem(client.delete(url, headers={"If-Match": stale}), 412, "precondition-failed")

    assert client.get(url).status_code == 200


def test_patch_with_current_if_match_succeeds_and_returns_new_etag(client, resource):
    url, _, change = resource
    tag = etag(client, url)

    response = client.patch(url, json=change, headers={"If-Match": tag})

    assert response.status_code == 200, response.text
    assert response.headers["etag"] != tag
    # The same ETag cannot be used twice: the second writer loses.
    second = client.patch(url, json={"description": "again"}, headers={"If-Match": tag})
    assert_problem(second, 412, "precondition-failed")


def test_if_match_list_containing_the_current_etag_succeeds(client, resource):
    url, _, change = resource
    tag = etag(client, url)

    response = client.patch(url, json=change, headers={"If-Match": f'"0-0", {tag}'})

    assert response.status_code == 200, response.text


def test_if_match_uses_strong_comparison(client, resource):
    """A weak tag never satisfies If-Match (RFC 9110 section 13.1.1)."""
    url, body, change = resource
    tag = etag(client, url)

    assert_problem(client.patch(url, json=change, headers={"If-Match": f"W/{tag}"}), 412)
    assert client.get(url).json() == body


def test_delete_with_current_if_match_succeeds(client, resource):
    url, _, _ = resource
    tag = etag(client, url)

    assert client.delete(url, headers={"If-Match": tag}).status_code == 204
    assert client.get(url).status_code == 404


def test_if_match_star_succeeds(client, resource):
    url, _, change = resource

    assert client.patch(url, json=change, headers={"If-Match": "*"}).status_code == 200
    assert client.delete(url, headers={"If-Match": "*"}).status_code == 204


def test_if_match_on_an_unknown_resource_is_404(client):
    response = client.patch("/api/v1/products/999", json={"name": "X"}, headers={"If-Match": "*"})
    assert_problem(response, 404, "not-found")


def test_refused_write_does_not_change_the_etag(client, resource):
    """A 409/422 leaves the version alone, so the client's ETag stays valid."""
    url, _, _ = resource
    tag = etag(client, url)
    refused = {"category_id": 4242} if url.startswith("/api/v1/products") else {"parent_id": 4242}

    assert client.patch(url, json=refused, headers={"If-Match": tag}).status_code == 422
    assert etag(client, url) == tag


def test_etag_of_a_recreated_resource_differs_from_the_deleted_ones(client):
    """An If-Match saved for a deleted product must not apply to a new one at the same URL."""
    create_product(client, "A-1")
    doomed = create_product(client, "B-1")
    url = f"/api/v1/products/{doomed['id']}"
    old = etag(client, url)
    assert client.delete(url).status_code == 204

    reborn = create_product(client, "C-1")

    assert reborn["id"] != doomed["id"]
    patched = client.patch(url, json={"name": "Hijacked"}, headers={"If-Match": old})
    assert patched.status_code in (404, 412), patched.text


@pytest.mark.parametrize(
    ("if_match", "status", "type_"),
    [(True, 412, "precondition-failed"), (False, 409, "concurrent-modification")],
)
def test_a_write_that_loses_a_race_is_refused(
    client, backend, database, monkeypatch, if_match, status, type_
):
    """Another writer commits between our If-Match check and our UPDATE: we must not win.

    SQLite takes the write lock at BEGIN, so there the race cannot happen (and the
    concurrent write below would wait for our lock): PostgreSQL only.
    """
    if backend == "sqlite":
        pytest.skip("SQLite serialises writers at BEGIN IMMEDIATE")
    product = create_product(client, "HAM-1", name="Hammer")
    url = f"/api/v1/products/{product['id']}"
    tag = etag(client, url)
    real_require_match = products.require_match

    def check_then_lose_the_race(resource):
        real_require_match(resource)
        with database.engine.begin() as other:
            other.execute(
                update(Product)
                .where(Product.id == product["id"])
                .values(name="Theirs", version=Product.version + 1)
            )

    monkeypatch.setattr(products, "require_match", check_then_lose_the_race)
    headers = {"If-Match": tag} if if_match else {}

    response = client.patch(url, json={"name": "Ours"}, headers=headers)

    assert_problem(response, status, type_)
    monkeypatch.undo()
    assert client.get(url).json()["name"] == "Theirs"
