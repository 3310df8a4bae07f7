from tests.helpers import create_category, create_product


def test_create_and_get_product(client):
    category = create_category(client)
    product = create_product(client, category_id=category["id"])
    response = client.get(f"/api/v1/products/{product['id']}")
    assert response.status_code == 200
    assert response.json() == product
