"""/api/v1/events: every change emits its event in its own transaction, in commit order."""

from __future__ import annotations

from tests.helpers import assert_problem, create_category, create_location, create_product

EVENTS = "/api/v1/events"
STOCK = "/api/v1/stock"


def feed(client, **params) -> list[dict]:
    response = client.get(EVENTS, params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def types(items: list[dict]) -> list[str]:
    return [item["type"] for item in items]


def test_catalog_changes_are_events_with_the_resource_as_it_became(client):
    category = create_category(client)
    product = create_product(client, category_id=category["id"])
    location = create_location(client)
    renamed = client.patch(f"/api/v1/products/{product['id']}", json={"name": "Hammer"}).json()
    archived = client.patch(f"/api/v1/products/{product['id']}", json={"is_active": False})
    assert archived.status_code == 200
    client.patch(f"/api/v1/locations/{location['id']}", json={"is_active": False})
    assert (
        client.delete(f"/api/v1/categories/{create_category(client, 'Spare')['id']}").status_code
        == 204
    )

    items = feed(client)
    assert types(items) == [
        "category.created",
        "product.created",
        "location.created",
        "product.updated",
        "product.archived",
        "location.archived",
        "category.created",
        "category.deleted",
    ]
    assert [item["sequence"] for item in items] == list(range(1, len(items) + 1))
    assert items[1]["data"] == product
    assert items[3]["data"] == renamed
    assert items[4]["data"] == archived.json()
    assert items[7]["data"]["name"] == "Spare"
    assert all(item["id"].startswith("evt_") for item in items)
    assert len({item["id"] for item in items}) == len(items)


def test_a_posted_document_is_an_event_and_a_refused_one_emits_nothing(client):
    product = create_product(client, reorder_point=5)
    location = create_location(client)
    before = feed(client)
    receipt = client.post(
        f"{STOCK}/receipts",
        json={
            "location_id": location["id"],
            "lines": [{"product_id": product["id"], "quantity": 10, "unit_cost": "2.50"}],
        },
    )
    assert receipt.status_code == 201
    short = client.post(
        f"{STOCK}/shipments",
        json={
            "location_id": location["id"],
            "lines": [{"product_id": product["id"], "quantity": 99}],
        },
    )
    assert_problem(short, 409, "insufficient-stock")
    invalid = client.post(f"{STOCK}/shipments", json={"location_id": location["id"]})
    assert invalid.status_code == 400

    items = feed(client, after=before[-1]["sequence"])
    # From 0 (at or below the reorder point of 5) to 10: restocked.
    assert types(items) == ["stock.document.posted", "stock.level.restocked"]
    assert items[0]["data"] == receipt.json()
    assert items[1]["data"]["product_id"] == product["id"]
    assert items[1]["data"]["total_on_hand"] == 10


def test_crossing_the_reorder_point_is_low_then_restocked(client):
    product = create_product(client, reorder_point=5, reorder_quantity=20)
    location = create_location(client)
    cost = {"unit_cost": "1.00"}
    lines = lambda quantity, **more: [{"product_id": product["id"], "quantity": quantity, **more}]  # noqa: E731
    client.post(
        f"{STOCK}/receipts", json={"location_id": location["id"], "lines": lines(8, **cost)}
    )
    start = feed(client)[-1]["sequence"]
    client.post(f"{STOCK}/shipments", json={"location_id": location["id"], "lines": lines(2)})
    client.post(f"{STOCK}/shipments", json={"location_id": location["id"], "lines": lines(2)})
    client.post(f"{STOCK}/shipments", json={"location_id": location["id"], "lines": lines(1)})
    client.post(
        f"{STOCK}/receipts", json={"location_id": location["id"], "lines": lines(1, **cost)}
    )

    items = feed(client, after=start)
    assert types(items) == [
        "stock.document.posted",  # 8 -> 6
        "stock.document.posted",  # 6 -> 4: low
        "stock.level.low",
        "stock.document.posted",  # 4 -> 3: still low, no second alert
        "stock.document.posted",  # 3 -> 4
    ]
    low = items[2]["data"]
    assert low == {
        "product_id": product["id"],
        "sku": product["sku"],
        "name": product["name"],
        "total_on_hand": 4,
        "reorder_point": 5,
        "reorder_quantity": 20,
        "suggested_reorder_quantity": 20,
    }
    assert feed(client, type="stock.level.low") == [items[2]]


def test_a_reversal_is_a_posted_document_and_a_reversed_event(client):
    product = create_product(client)
    location = create_location(client)
    receipt = client.post(
        f"{STOCK}/receipts",
        json={
            "location_id": location["id"],
            "lines": [{"product_id": product["id"], "quantity": 3, "unit_cost": "1.00"}],
        },
    ).json()
    movement_id = receipt["movements"][0]["id"]
    reversal = client.post(f"{STOCK}/movements/{movement_id}/reversal", json={})
    assert reversal.status_code == 201
    items = feed(client, type=["stock.movement.reversed", "stock.document.posted"])
    assert types(items) == [
        "stock.document.posted",
        "stock.document.posted",
        "stock.movement.reversed",
    ]
    assert items[2]["data"] == {"reversed_movement_ids": [movement_id], "document": reversal.json()}


def test_the_feed_pages_by_cursor_and_by_after(client):
    for index in range(5):
        create_location(client, code=f"L{index}")
    first = client.get(EVENTS, params={"limit": 2})
    body = first.json()
    assert [item["sequence"] for item in body["items"]] == [1, 2]
    assert 'rel="next"' in first.headers["Link"]
    second = client.get(EVENTS, params={"limit": 2, "cursor": body["next_cursor"]}).json()
    assert [item["sequence"] for item in second["items"]] == [3, 4]
    assert [item["sequence"] for item in feed(client, after=3)] == [4, 5]
    assert feed(client, after=5) == []
    assert client.get(EVENTS, params={"type": "no.such"}).status_code == 400
    assert client.get(EVENTS, params={"after": -1}).status_code == 400


def test_product_import_emits_an_event_per_product(client):
    create_product(client, sku="OLD-1")
    start = feed(client)[-1]["sequence"]
    response = client.post(
        "/api/v1/products/import",
        json=[
            {"sku": "NEW-1", "name": "New one"},
            {"sku": "OLD-1", "is_active": False},
        ],
    )
    assert response.status_code == 200, response.text
    items = feed(client, after=start)
    assert sorted(types(items)) == ["product.archived", "product.created"]
    assert {item["data"]["sku"] for item in items} == {"NEW-1", "OLD-1"}


def test_viewers_read_the_feed(client, app, auth_headers):
    create_location(client)
    with app.test_client(headers=auth_headers("viewer")) as viewer:
        assert viewer.get(EVENTS).status_code == 200
    with app.test_client() as anonymous:
        assert anonymous.get(EVENTS).status_code == 401
