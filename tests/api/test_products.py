"""/api/v1/products: the catalog, its filters, and keyset pagination."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from service.models import Product
from tests.helpers import assert_problem, create_category, create_product, walk_pages

PRODUCTS = "/api/v1/products"
PRODUCT_FIELDS = {
    "id",
    "sku",
    "name",
    "description",
    "category_id",
    "unit_of_measure",
    "reorder_point",
    "reorder_quantity",
    "average_cost",
    "is_active",
    "created_at",
    "updated_at",
}
SORTS = ("name", "-name", "sku", "-sku", "created_at", "-created_at")


def list_products(client, **params) -> list[dict]:
    response = client.get(PRODUCTS, params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def skus(client, **params) -> list[str]:
    return [item["sku"] for item in list_products(client, **params)]


def expected_order(products: list[dict], sort: str) -> list[int]:
    """The ids in the order the API promises: by the sort field, ties broken by id.

    Only valid for fixtures whose values compare the same bytewise and in the
    database's collation (plain ASCII letters and digits of one case).
    """
    field = sort.lstrip("-")

    def key(p: dict):
        value = p[field].casefold() if field == "sku" else p[field]
        return (value, p["id"])

    return [p["id"] for p in sorted(products, key=key, reverse=sort.startswith("-"))]


def make_cursor(payload) -> str:
    """A cursor forged in the service's own encoding (base64url of JSON)."""
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- create -----------------------------------------------------------------------------


def test_create_minimal_product_applies_defaults(client):
    response = client.post(PRODUCTS, json={"sku": "SCR-4X40", "name": "Wood screw 4x40"})

    assert response.status_code == 201, response.text
    product = response.json()
    assert set(product) == PRODUCT_FIELDS
    assert product["sku"] == "SCR-4X40"
    assert product["name"] == "Wood screw 4x40"
    assert product["unit_of_measure"] == "each"
    assert product["reorder_point"] == 0
    assert product["reorder_quantity"] == 0
    assert product["is_active"] is True
    assert product["description"] is None
    assert product["category_id"] is None
    assert response.headers["location"] == f"{PRODUCTS}/{product['id']}"
    assert response.headers["etag"]
    assert client.get(response.headers["location"]).json() == product


def test_create_full_product_round_trips(client):
    tools = create_category(client, "Tools")
    body = {
        "sku": "HAM-16OZ",
        "name": "Claw hammer 16 oz",
        "description": "Fibreglass handle",
        "category_id": tools["id"],
        "unit_of_measure": "box",
        "reorder_point": 10,
        "reorder_quantity": 40,
        "is_active": False,
    }

    response = client.post(PRODUCTS, json=body)

    assert response.status_code == 201, response.text
    product = response.json()
    assert {k: product[k] for k in body} == body


def test_duplicate_sku_differing_in_case_is_409_naming_the_holder(client):
    hammer = create_product(client, "HAM-16OZ", name="Hammer")

    problem = assert_problem(
        client.post(PRODUCTS, json={"sku": "ham-16oz", "name": "Other"}), 409, "duplicate-sku"
    )

    assert problem["conflicting_id"] == hammer["id"]
    assert skus(client) == ["HAM-16OZ"]


def test_patch_sku_onto_another_products_sku_is_409(client):
    hammer = create_product(client, "HAM-16OZ")
    saw = create_product(client, "SAW-1")

    problem = assert_problem(
        client.patch(f"{PRODUCTS}/{saw['id']}", json={"sku": "Ham-16oz"}), 409, "duplicate-sku"
    )

    assert problem["conflicting_id"] == hammer["id"]
    assert client.get(f"{PRODUCTS}/{saw['id']}").json()["sku"] == "SAW-1"


def test_patch_can_change_only_the_case_of_its_own_sku(client):
    hammer = create_product(client, "ham-16oz")

    response = client.patch(f"{PRODUCTS}/{hammer['id']}", json={"sku": "HAM-16OZ"})

    assert response.status_code == 200, response.text
    assert response.json()["sku"] == "HAM-16OZ"


def test_create_with_unknown_category_is_422_pointing_at_category_id(client):
    problem = assert_problem(
        client.post(PRODUCTS, json={"sku": "A-1", "name": "A", "category_id": 4242}),
        422,
        "unprocessable-entity",
    )

    assert problem["errors"][0]["pointer"] == "/category_id"
    assert skus(client) == []


def test_patch_with_unknown_category_is_422_and_changes_nothing(client):
    product = create_product(client, "A-1")

    problem = assert_problem(
        client.patch(f"{PRODUCTS}/{product['id']}", json={"category_id": 4242}),
        422,
        "unprocessable-entity",
    )

    assert problem["errors"][0]["pointer"] == "/category_id"
    assert client.get(f"{PRODUCTS}/{product['id']}").json() == product


# --- get, patch, delete -----------------------------------------------------------------


def test_get_unknown_product_is_a_404_problem(client):
    problem = assert_problem(client.get(f"{PRODUCTS}/999"), 404, "not-found")
    assert "999" in problem["detail"]


def test_patch_changes_only_the_given_fields_and_bumps_updated_at(client):
    tools = create_category(client, "Tools")
    product = create_product(
        client,
        "HAM-1",
        name="Hammer",
        description="Steel",
        category_id=tools["id"],
        reorder_point=5,
        reorder_quantity=20,
    )

    response = client.patch(
        f"{PRODUCTS}/{product['id']}", json={"reorder_point": 7, "name": "Big hammer"}
    )

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated == {
        **product,
        "reorder_point": 7,
        "name": "Big hammer",
        "updated_at": updated["updated_at"],
    }
    assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(
        product["updated_at"]
    )
    assert client.get(f"{PRODUCTS}/{product['id']}").json() == updated


def test_patch_description_null_and_category_null_clear_them(client):
    tools = create_category(client, "Tools")
    product = create_product(client, "HAM-1", description="Steel", category_id=tools["id"])

    response = client.patch(
        f"{PRODUCTS}/{product['id']}", json={"description": None, "category_id": None}
    )

    assert response.status_code == 200, response.text
    assert response.json()["description"] is None
    assert response.json()["category_id"] is None


def test_archive_with_is_active_false(client):
    product = create_product(client, "HAM-1")

    response = client.patch(f"{PRODUCTS}/{product['id']}", json={"is_active": False})

    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert skus(client, is_active="false") == ["HAM-1"]
    assert skus(client, is_active="true") == []


def test_empty_patch_is_400(client):
    product = create_product(client, "HAM-1")
    assert_problem(client.patch(f"{PRODUCTS}/{product['id']}", json={}), 400)


def test_delete_product_is_204_then_404(client):
    product = create_product(client, "HAM-1")
    url = f"{PRODUCTS}/{product['id']}"

    assert client.delete(url).status_code == 204
    assert_problem(client.get(url), 404, "not-found")
    assert_problem(client.delete(url), 404, "not-found")
    assert skus(client) == []


def test_a_deleted_products_sku_can_be_reused(client):
    product = create_product(client, "HAM-1")
    assert client.delete(f"{PRODUCTS}/{product['id']}").status_code == 204

    create_product(client, "ham-1")

    assert skus(client) == ["ham-1"]


# --- list filters -----------------------------------------------------------------------


def test_list_filters_by_category(client):
    tools = create_category(client, "Tools")
    paint = create_category(client, "Paint")
    create_product(client, "T-1", category_id=tools["id"])
    create_product(client, "T-2", category_id=tools["id"])
    create_product(client, "P-1", category_id=paint["id"])
    create_product(client, "N-1")

    assert skus(client, category_id=tools["id"], sort="sku") == ["T-1", "T-2"]
    assert skus(client, category_id=paint["id"]) == ["P-1"]


def test_list_include_descendants_covers_the_whole_subtree(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand", parent_id=tools["id"])
    hammers = create_category(client, "Hammers", parent_id=hand["id"])
    power = create_category(client, "Power", parent_id=tools["id"])
    paint = create_category(client, "Paint")
    create_product(client, "L1-TOOLS", category_id=tools["id"])
    create_product(client, "L2-HAND", category_id=hand["id"])
    create_product(client, "L3-HAMMER", category_id=hammers["id"])
    create_product(client, "L2-POWER", category_id=power["id"])
    create_product(client, "X-PAINT", category_id=paint["id"])
    create_product(client, "X-NONE")

    def subtree(category: dict, descendants: str) -> list[str]:
        return skus(client, category_id=category["id"], include_descendants=descendants, sort="sku")

    assert subtree(tools, "true") == ["L1-TOOLS", "L2-HAND", "L2-POWER", "L3-HAMMER"]
    assert subtree(tools, "false") == ["L1-TOOLS"]
    assert subtree(hand, "true") == ["L2-HAND", "L3-HAMMER"]
    assert subtree(hammers, "true") == ["L3-HAMMER"]
    assert subtree(paint, "true") == ["X-PAINT"]


def test_list_filters_by_is_active(client):
    create_product(client, "ON-1")
    create_product(client, "OFF-1", is_active=False)
    create_product(client, "ON-2")

    assert skus(client, is_active="true", sort="sku") == ["ON-1", "ON-2"]
    assert skus(client, is_active="false") == ["OFF-1"]
    assert len(skus(client)) == 3


def test_list_q_matches_sku_or_name_case_insensitively(client):
    create_product(client, "HAM-16OZ", name="Claw hammer")
    create_product(client, "SAW-1", name="Hand saw")
    create_product(client, "NAIL-1", name="Nails for HAMMERING")
    create_product(client, "DRILL-1", name="Drill")

    assert skus(client, q="ham", sort="sku") == ["HAM-16OZ", "NAIL-1"]
    assert skus(client, q="SAW") == ["SAW-1"]
    assert skus(client, q="16oz") == ["HAM-16OZ"]
    assert skus(client, q="nothing") == []


def test_list_q_treats_percent_and_underscore_literally(client):
    create_product(client, "A-1", name="100% cotton")
    create_product(client, "A-2", name="1000 cotton")
    create_product(client, "B_1", name="Snake")
    create_product(client, "BX1", name="Other")

    assert skus(client, q="0%") == ["A-1"]
    assert skus(client, q="%") == ["A-1"]
    assert skus(client, q="b_") == ["B_1"]
    assert skus(client, q="_") == ["B_1"]


def test_list_q_treats_escape_characters_literally(client):
    """'/' is the LIKE escape character the service uses; a backslash is PostgreSQL's."""
    create_product(client, "AB/12", name="Slash")
    create_product(client, "AB12", name="Back\\slash")
    create_product(client, "AB-12", name="Plain")

    assert skus(client, q="b/1") == ["AB/12"]
    assert skus(client, q="/") == ["AB/12"]
    assert skus(client, q="k\\s") == ["AB12"]
    assert skus(client, q="\\") == ["AB12"]


def test_list_q_is_case_insensitive_beyond_ascii(client):
    create_product(client, "NUT-6", name="Écrou M6")

    assert skus(client, q="écrou") == ["NUT-6"]
    assert skus(client, q="ÉCROU") == ["NUT-6"]


def test_list_filters_combine(client):
    tools = create_category(client, "Tools")
    create_product(client, "HAM-1", name="Hammer", category_id=tools["id"])
    create_product(client, "HAM-2", name="Hammer", category_id=tools["id"], is_active=False)
    create_product(client, "HAM-3", name="Hammer")

    assert skus(client, category_id=tools["id"], is_active="true", q="ham") == ["HAM-1"]


# --- sorting ----------------------------------------------------------------------------


@pytest.fixture()
def catalog(client) -> list[dict]:
    """Seven products whose name, SKU and creation orders all differ, with name ties."""
    rows = [
        ("M-3", "Bravo"),
        ("Z-1", "Alpha"),
        ("A-9", "Charlie"),
        ("Q-2", "Alpha"),
        ("C-5", "Bravo"),
        ("K-7", "Alpha"),
        ("B-4", "Delta"),
    ]
    return [create_product(client, sku, name=name) for sku, name in rows]


@pytest.mark.parametrize("sort", SORTS)
def test_sort_orders_with_ties_broken_by_id(client, catalog, sort):
    ids = [item["id"] for item in list_products(client, sort=sort)]
    assert ids == expected_order(catalog, sort)


def test_sort_by_name_breaks_ties_by_ascending_id_and_descending_by_descending_id(client, catalog):
    alphas = [p["id"] for p in catalog if p["name"] == "Alpha"]
    ascending = [p["id"] for p in list_products(client, sort="name") if p["name"] == "Alpha"]
    descending = [p["id"] for p in list_products(client, sort="-name") if p["name"] == "Alpha"]

    assert ascending == sorted(alphas)
    assert descending == sorted(alphas, reverse=True)


def test_default_sort_is_by_name(client, catalog):
    assert [p["id"] for p in list_products(client)] == expected_order(catalog, "name")


def test_sku_sort_ignores_case(client):
    create_product(client, "b-2")
    create_product(client, "A-1")
    create_product(client, "c-3")

    assert skus(client, sort="sku") == ["A-1", "b-2", "c-3"]
    assert skus(client, sort="-sku") == ["c-3", "b-2", "A-1"]


@pytest.mark.parametrize("sort", SORTS)
def test_walking_pages_returns_every_product_once_in_order(client, catalog, sort):
    walked = walk_pages(client, PRODUCTS, limit=2, sort=sort)

    assert [p["id"] for p in walked] == expected_order(catalog, sort)


@pytest.mark.parametrize("sort", ["created_at", "-created_at"])
def test_created_at_ties_are_broken_by_id_across_pages(client, database, sort):
    """Identical timestamps (bulk imports, coarse clocks) must still page exactly."""
    products = [create_product(client, f"P-{i}") for i in range(5)]
    same = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    with database.engine.begin() as connection:
        connection.execute(update(Product).values(created_at=same))

    walked = [p["id"] for p in walk_pages(client, PRODUCTS, limit=2, sort=sort)]

    ids = [p["id"] for p in products]
    assert walked == (sorted(ids, reverse=True) if sort.startswith("-") else sorted(ids))


def test_created_at_sort_follows_the_timestamp_not_the_id(client, database):
    products = [create_product(client, f"P-{i}") for i in range(4)]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with database.engine.begin() as connection:
        for offset, product in enumerate(reversed(products)):
            connection.execute(
                update(Product)
                .where(Product.id == product["id"])
                .values(created_at=base + timedelta(seconds=offset))
            )

    walked = [p["id"] for p in walk_pages(client, PRODUCTS, limit=3, sort="created_at")]

    assert walked == [p["id"] for p in reversed(products)]


# --- pagination -------------------------------------------------------------------------


def test_link_header_carries_the_next_cursor(client, catalog):
    response = client.get(PRODUCTS, params={"limit": 2, "sort": "sku", "q": "-"})

    assert response.status_code == 200
    page = response.json()
    assert page["next_cursor"]
    link = response.headers["link"]
    assert link.endswith('; rel="next"')
    url = link[link.index("<") + 1 : link.index(">")]
    query = parse_qs(urlsplit(url).query)
    assert query["cursor"] == [page["next_cursor"]]
    # The link repeats the other parameters, so following it continues the same list.
    assert query["limit"] == ["2"]
    assert query["sort"] == ["sku"]
    assert query["q"] == ["-"]


def test_following_link_headers_with_special_characters_in_q(client):
    for i in range(3):
        create_product(client, f"X-{i}", name="50%_a&b=c #1")

    response = client.get(PRODUCTS, params={"limit": 1, "q": "50%_a&b=c #1"})
    seen = [item["sku"] for item in response.json()["items"]]
    while "link" in response.headers:
        link = response.headers["link"]
        response = client.get(link[link.index("<") + 1 : link.index(">")])
        assert response.status_code == 200, response.text
        seen.extend(item["sku"] for item in response.json()["items"])

    assert seen == ["X-0", "X-1", "X-2"]


def test_last_page_has_null_cursor_and_no_link(client):
    create_product(client, "A-1")
    create_product(client, "A-2")

    response = client.get(PRODUCTS, params={"limit": 2})

    assert response.json()["next_cursor"] is None
    assert "link" not in response.headers


def test_keyset_pages_are_stable_under_inserts(client):
    """An insert before the cursor neither repeats nor skips rows on the next page."""
    for name in ("Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf"):
        create_product(client, name.upper(), name=name)
    original = [p["sku"] for p in list_products(client, sort="name")]

    first = client.get(PRODUCTS, params={"limit": 3, "sort": "name"}).json()
    create_product(client, "ALPHA", name="Alpha")  # sorts before everything on page 1
    second = client.get(
        PRODUCTS, params={"limit": 3, "sort": "name", "cursor": first["next_cursor"]}
    ).json()

    served = [p["sku"] for p in first["items"] + second["items"]]
    assert len(served) == len(set(served))
    assert served == original
    assert second["next_cursor"] is None


def test_keyset_pages_do_not_lose_rows_when_earlier_rows_are_deleted(client):
    for name in ("Bravo", "Charlie", "Delta", "Echo"):
        create_product(client, name.upper(), name=name)

    first = client.get(PRODUCTS, params={"limit": 2, "sort": "name"}).json()
    assert client.delete(f"{PRODUCTS}/{first['items'][0]['id']}").status_code == 204
    second = client.get(
        PRODUCTS, params={"limit": 2, "sort": "name", "cursor": first["next_cursor"]}
    ).json()

    assert [p["sku"] for p in second["items"]] == ["DELTA", "ECHO"]


def test_cursor_from_another_sort_is_400_on_cursor(client, catalog):
    cursor = client.get(PRODUCTS, params={"limit": 2, "sort": "name"}).json()["next_cursor"]

    for other in ("-name", "sku", "created_at"):
        problem = assert_problem(
            client.get(PRODUCTS, params={"limit": 2, "sort": other, "cursor": cursor}),
            400,
            "validation-error",
        )
        assert problem["errors"][0]["parameter"] == "cursor"


def test_cursor_defaults_to_the_name_sort(client, catalog):
    """A cursor issued for sort=-sku is refused on a request that omits sort."""
    cursor = client.get(PRODUCTS, params={"limit": 2, "sort": "-sku"}).json()["next_cursor"]
    problem = assert_problem(client.get(PRODUCTS, params={"cursor": cursor}), 400)
    assert problem["errors"][0]["parameter"] == "cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        "zzz",
        "A",
        make_cursor([1, 2]),
        make_cursor({"s": "name"}),
        make_cursor({"s": "name", "k": ["Alpha"]}),
        make_cursor({"s": "name", "k": ["Alpha", "one"]}),
    ],
    ids=["garbage", "one-char", "list", "no-key", "short-key", "non-numeric-id"],
)
def test_malformed_cursor_is_400_on_cursor(client, catalog, cursor):
    problem = assert_problem(client.get(PRODUCTS, params={"cursor": cursor}), 400)
    assert problem["errors"][0]["parameter"] == "cursor"


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("name", [{"a": 1}, 1]),
        ("name", [5, 1]),
        ("name", [None, 1]),
        ("name", ["Alpha\u0000", 1]),
        ("name", ["Alpha", 1e30]),
        ("name", ["Alpha", 99999999999]),
        ("name", ["Alpha", True]),
        ("sku", [["a"], 1]),
        ("created_at", ["2026-01-01T00:00:00", 1]),
        ("created_at", [12345, 1]),
        ("created_at", ["yesterday", 1]),
        ("created_at", ["9999-12-31T23:59:59-14:00", 1]),
    ],
    ids=[
        "object-value",
        "number-for-text",
        "null-value",
        "nul-in-text",
        "huge-float-id",
        "id-beyond-int32",
        "boolean-id",
        "list-value",
        "naive-timestamp",
        "number-for-timestamp",
        "garbage-timestamp",
        "timestamp-overflowing-utc",
    ],
)
def test_forged_cursor_values_are_400_not_500(client, catalog, sort, key):
    """A well-encoded cursor with values of the wrong type must not reach the database."""
    cursor = make_cursor({"s": sort, "k": key})
    problem = assert_problem(client.get(PRODUCTS, params={"sort": sort, "cursor": cursor}), 400)
    assert problem["errors"][0]["parameter"] == "cursor"


@pytest.mark.parametrize("limit", [0, -1, 201])
def test_limit_out_of_range_is_400(client, limit):
    problem = assert_problem(client.get(PRODUCTS, params={"limit": limit}), 400)
    assert problem["errors"][0]["parameter"] == "limit"


def test_limit_bounds_are_accepted(client, catalog):
    assert len(list_products(client, limit=1)) == 1
    assert len(list_products(client, limit=200)) == len(catalog)


def test_unknown_query_parameter_is_400(client):
    problem = assert_problem(client.get(PRODUCTS, params={"colour": "red"}), 400)
    assert problem["errors"][0]["parameter"] == "colour"


def test_unknown_sort_is_400(client):
    problem = assert_problem(client.get(PRODUCTS, params={"sort": "price"}), 400)
    assert problem["errors"][0]["parameter"] == "sort"
