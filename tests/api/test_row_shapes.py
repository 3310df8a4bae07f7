"""Lists serialise plain column rows (service.schemas.rows): the same dicts as the schemas.

For every list's shape, each row of its table is dumped both ways, from the plain row that the
list selects and from the ORM instance through the marshmallow schema, and the two must be
equal field for field, in the same order (the JSON bytes follow).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from service.api.handlers.api_keys import API_KEY_ROWS
from service.api.handlers.categories import CATEGORY_ROWS
from service.api.handlers.locations import LOCATION_ROWS
from service.api.handlers.products import PRODUCT_ROWS
from service.api.handlers.stock import LEVEL_ROWS, MOVEMENT_ROWS
from service.api.handlers.users import USER_ROWS
from service.models import ApiKey, Category, Location, Product, StockLevel, StockMovement, User
from service.schemas.api_key import ApiKeySchema
from service.schemas.category import CategorySchema
from service.schemas.location import LocationSchema
from service.schemas.product import ProductSchema
from service.schemas.rows import RowShape
from service.schemas.stock import StockLevelSchema, StockMovementSchema
from service.schemas.user import UserSchema
from tests.helpers import create_category, create_location, create_product

SHAPES = [
    (PRODUCT_ROWS, ProductSchema, Product),
    (CATEGORY_ROWS, CategorySchema, Category),
    (LOCATION_ROWS, LocationSchema, Location),
    (MOVEMENT_ROWS, StockMovementSchema, StockMovement),
    (LEVEL_ROWS, StockLevelSchema, StockLevel),
    (USER_ROWS, UserSchema, User),
    (API_KEY_ROWS, ApiKeySchema, ApiKey),
]


@pytest.fixture()
def varied_rows(client):
    """Rows with nulls and without, odd decimals, several kinds of movement, a reversal."""
    tools = create_category(client, "Tools")
    create_category(client, "Hand tools", parent_id=tools["id"], description="Held in a hand")
    source = create_location(client, "WH1-A01")
    target = create_location(client, "WH2-B02", name="Second", is_active=True)
    plain = create_product(client, sku="PLAIN-1")
    costly = create_product(
        client,
        sku="COSTLY-2",
        name="Brass fitting ½″",
        description='Ünïcödé and "quotes"',
        category_id=tools["id"],
        reorder_point=7,
        reorder_quantity=30,
    )
    for product, cost in ((plain, "0.0001"), (costly, "12345.6789")):
        receipt = client.post(
            "/api/v1/stock/receipts",
            json={
                "location_id": source["id"],
                "reference": "PO-1",
                "lines": [{"product_id": product["id"], "quantity": 9, "unit_cost": cost}],
            },
        )
        assert receipt.status_code == 201, receipt.text
    transfer = client.post(
        "/api/v1/stock/transfers",
        json={
            "from_location_id": source["id"],
            "to_location_id": target["id"],
            "note": "rebalance",
            "lines": [{"product_id": costly["id"], "quantity": 4}],
        },
    )
    assert transfer.status_code == 201, transfer.text
    movement_id = transfer.json()["movements"][0]["id"]
    reversal = client.post(f"/api/v1/stock/movements/{movement_id}/reversal", json={})
    assert reversal.status_code == 201, reversal.text
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    key = client.post(
        "/api/v1/api-keys", json={"name": "ci", "role": "viewer", "expires_at": expires}
    )
    assert key.status_code == 201, key.text


def test_every_list_field_is_a_column_and_dumps_like_its_schema(database, varied_rows):
    with database.transaction(write=False) as session:
        for shape, schema_class, model in SHAPES:
            rows = session.connection().execute(shape.select().order_by(model.id)).all()
            instances = session.scalars(select(model).order_by(model.id)).all()
            assert rows, f"no {model.__name__} rows to compare"
            expected = schema_class(many=True).dump(instances)
            got = shape.dump(rows)
            assert got == expected, model.__name__
            assert [list(item) for item in got] == [list(item) for item in expected]


def test_a_field_that_is_not_a_column_is_refused_when_the_shape_is_built():
    from marshmallow import fields

    class WithComputed(ProductSchema):
        margin = fields.Decimal(as_string=True)

    with pytest.raises(ValueError, match="margin"):
        RowShape(WithComputed(), Product)


def test_a_posted_document_answers_as_the_document_reads_back(client):
    """ledger.post answers from the rows its statements returned; the document read back
    through the ORM and its schema must be the same JSON, key order included."""
    source = create_location(client, "WH1-A01")
    target = create_location(client, "WH2-B02")
    product = create_product(client, sku="DOC-1")
    other = create_product(client, sku="DOC-2")
    etag_before = client.get(f"/api/v1/products/{product['id']}").headers["ETag"]
    lines = [
        {"product_id": product["id"], "quantity": 5, "unit_cost": "1.2345"},
        {"product_id": other["id"], "quantity": 3, "unit_cost": "99.5"},
        {"product_id": product["id"], "quantity": 2, "unit_cost": "3"},
    ]
    posted = [
        client.post(
            "/api/v1/stock/receipts",
            json={"location_id": source["id"], "reference": "PO-9", "note": "n", "lines": lines},
        ),
        client.post(
            "/api/v1/stock/transfers",
            json={
                "from_location_id": source["id"],
                "to_location_id": target["id"],
                "lines": [
                    {"product_id": product["id"], "quantity": 4},
                    {"product_id": other["id"], "quantity": 1},
                ],
            },
        ),
        client.post(
            "/api/v1/stock/adjustments",
            json={
                "location_id": source["id"],
                "lines": [
                    {"product_id": product["id"], "counted_quantity": 1, "reason": "count"},
                    {"product_id": other["id"], "quantity_delta": -1, "reason": "damage"},
                ],
            },
        ),
    ]
    damage = posted[2].json()["movements"][1]["id"]
    posted.append(client.post(f"/api/v1/stock/movements/{damage}/reversal", json={}))
    for response in posted:
        assert response.status_code == 201, response.text
        document = response.json()
        read_back = client.get(f"/api/v1/stock/documents/{document['id']}")
        assert read_back.status_code == 200
        assert document == read_back.json()
        assert response.content.rstrip() == read_back.content.rstrip()
    # The moving average moved the product's version (its ETag) as an ORM update would.
    after = client.get(f"/api/v1/products/{product['id']}")
    assert after.headers["ETag"] != etag_before
    assert after.json()["average_cost"] == "1.738929"  # (5 x 1.2345 + 2 x 3) / 7
