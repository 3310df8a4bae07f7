"""List endpoints issue a constant number of SQL statements, whatever the page size."""

from __future__ import annotations

import pytest

from tests.helpers import create_category, create_product


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/products", {}),
        ("/api/v1/products", {"sort": "-created_at", "is_active": "true"}),
        ("/api/v1/products", {"include_descendants": "true"}),
    ],
)
def test_product_list_statement_count_does_not_grow_with_page_size(
    client, count_queries, path, params
):
    parent = create_category(client, "Tools")
    child = create_category(client, "Hand tools", parent_id=parent["id"])
    for i in range(201):
        create_product(client, sku=f"SKU-{i:04d}", category_id=child["id"])
    if "include_descendants" in params:
        params = {**params, "category_id": parent["id"]}

    counts = {}
    for limit in (5, 200):
        with count_queries() as counter:
            response = client.get(path, params={**params, "limit": limit})
        assert response.status_code == 200
        assert len(response.json()["items"]) == limit
        counts[limit] = counter.count
    assert counts[5] == counts[200], counts
    print(f"statements per product list page: {counts}")


def test_category_list_statement_count_does_not_grow_with_page_size(client, count_queries):
    for i in range(201):
        create_category(client, f"Category {i:03d}")
    counts = {}
    for limit in (5, 200):
        with count_queries() as counter:
            response = client.get("/api/v1/categories", params={"limit": limit})
        assert len(response.json()["items"]) == limit
        counts[limit] = counter.count
    assert counts[5] == counts[200], counts
