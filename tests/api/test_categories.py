"""/api/v1/categories: the category tree, sibling-unique names, and guarded deletes."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.helpers import assert_problem, create_category, create_product, walk_pages

CATEGORIES = "/api/v1/categories"
CATEGORY_FIELDS = {"id", "name", "description", "parent_id", "created_at", "updated_at"}


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def count_categories(client) -> int:
    response = client.get(CATEGORIES, params={"limit": 200})
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


# --- create, get, list -----------------------------------------------------------------


def test_create_returns_201_with_location_etag_and_body(client):
    response = client.post(CATEGORIES, json={"name": "Tools", "description": "Hand tools"})

    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == CATEGORY_FIELDS
    assert isinstance(body["id"], int)
    assert body["name"] == "Tools"
    assert body["description"] == "Hand tools"
    assert body["parent_id"] is None
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    assert datetime.fromisoformat(body["updated_at"]).utcoffset() is not None
    assert response.headers["location"] == f"{CATEGORIES}/{body['id']}"
    assert response.headers["etag"].startswith('"')


def test_create_child_and_get_it_back(client):
    tools = create_category(client, "Tools")
    response = client.post(CATEGORIES, json={"name": "Hand tools", "parent_id": tools["id"]})
    assert response.status_code == 201, response.text
    child = response.json()
    assert child["parent_id"] == tools["id"]
    assert child["description"] is None

    fetched = client.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == child
    assert fetched.headers["etag"] == response.headers["etag"]


def test_list_returns_page_shape_sorted_by_name(client):
    for name in ("Paint", "Fasteners", "Tools"):
        create_category(client, name)

    response = client.get(CATEGORIES)

    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"items", "next_cursor"}
    assert page["next_cursor"] is None
    assert "link" not in response.headers
    assert [c["name"] for c in page["items"]] == ["Fasteners", "Paint", "Tools"]
    assert all(set(item) == CATEGORY_FIELDS for item in page["items"])


def test_list_of_nothing_is_an_empty_page(client):
    response = client.get(CATEGORIES)
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


def test_list_filters_by_parent_id_one_level_only(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    create_category(client, "Power tools", parent_id=tools["id"])
    create_category(client, "Hammers", parent_id=hand["id"])  # grandchild: not listed
    create_category(client, "Paint")

    assert names(client.get(CATEGORIES, params={"parent_id": tools["id"]})) == [
        "Hand tools",
        "Power tools",
    ]
    assert names(client.get(CATEGORIES, params={"parent_id": hand["id"]})) == ["Hammers"]


def test_list_q_is_a_case_insensitive_substring_of_the_name(client):
    for name in ("Hand tools", "Power TOOLS", "Paint", "Toolboxes"):
        create_category(client, name)

    assert names(client.get(CATEGORIES, params={"q": "tOoL"})) == [
        "Hand tools",
        "Power TOOLS",
        "Toolboxes",
    ]
    assert names(client.get(CATEGORIES, params={"q": "nothing"})) == []


def test_list_q_matches_wildcard_characters_literally(client):
    create_category(client, "100% cotton")
    create_category(client, "1000 cotton")
    create_category(client, "snake_case")
    create_category(client, "snakeXcase")

    assert names(client.get(CATEGORIES, params={"q": "0%"})) == ["100% cotton"]
    assert names(client.get(CATEGORIES, params={"q": "e_c"})) == ["snake_case"]


def test_list_q_is_case_insensitive_beyond_ascii(client):
    """SQLite's built-in lower() folds only ASCII; names are any Unicode."""
    create_category(client, "Écrous")
    create_category(client, "Ölfilter")

    assert names(client.get(CATEGORIES, params={"q": "écr"})) == ["Écrous"]
    assert names(client.get(CATEGORIES, params={"q": "ÖLF"})) == ["Ölfilter"]


def test_list_pages_through_every_category(client):
    created = [create_category(client, f"Category {i:02d}")["id"] for i in range(5)]

    first = client.get(CATEGORIES, params={"limit": 2})
    assert first.status_code == 200
    assert len(first.json()["items"]) == 2
    assert first.json()["next_cursor"]

    seen = [item["id"] for item in walk_pages(client, CATEGORIES, limit=2)]
    assert seen == created


@pytest.mark.parametrize("sort", ["name", "-name", "created_at", "-created_at"])
def test_walking_pages_in_every_sort_breaks_name_ties_by_id(client, sort):
    """Names repeat under different parents, so the name sorts need the id tie-break."""
    parents = [create_category(client, f"Parent {i}") for i in range(3)]
    children = [create_category(client, "Spares", parent_id=p["id"]) for p in parents]
    everything = parents + children

    walked = [c["id"] for c in walk_pages(client, CATEGORIES, limit=2, sort=sort)]

    field = sort.lstrip("-")
    expected = sorted(everything, key=lambda c: (c[field], c["id"]), reverse=sort[0] == "-")
    assert walked == [c["id"] for c in expected]


def test_get_unknown_category_is_a_404_problem(client):
    problem = assert_problem(client.get(f"{CATEGORIES}/999"), 404, "not-found")
    assert "999" in problem["detail"]


def test_patch_and_delete_unknown_category_are_404_problems(client):
    assert_problem(client.patch(f"{CATEGORIES}/999", json={"name": "X"}), 404, "not-found")
    assert_problem(client.delete(f"{CATEGORIES}/999"), 404, "not-found")


# --- names unique among siblings --------------------------------------------------------


def test_duplicate_top_level_name_differing_only_in_case_is_409(client):
    """Both roots have parent_id NULL; a plain UNIQUE(parent_id, name) would let this by."""
    tools = create_category(client, "Tools")

    problem = assert_problem(
        client.post(CATEGORIES, json={"name": "tools"}), 409, "duplicate-category-name"
    )

    assert problem["conflicting_id"] == tools["id"]
    assert count_categories(client) == 1


def test_duplicate_name_under_the_same_parent_is_409(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])

    problem = assert_problem(
        client.post(CATEGORIES, json={"name": "HAND TOOLS", "parent_id": tools["id"]}),
        409,
        "duplicate-category-name",
    )

    assert problem["conflicting_id"] == hand["id"]
    assert count_categories(client) == 2


def test_same_name_is_allowed_under_different_parents(client):
    tools = create_category(client, "Tools")
    garden = create_category(client, "Garden")

    first = client.post(CATEGORIES, json={"name": "Accessories", "parent_id": tools["id"]})
    second = client.post(CATEGORIES, json={"name": "accessories", "parent_id": garden["id"]})
    root = client.post(CATEGORIES, json={"name": "Accessories"})

    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert root.status_code == 201, root.text


def test_create_with_unknown_parent_is_422_pointing_at_parent_id(client):
    problem = assert_problem(
        client.post(CATEGORIES, json={"name": "Orphan", "parent_id": 4242}),
        422,
        "unprocessable-entity",
    )

    assert problem["errors"][0]["pointer"] == "/parent_id"
    assert count_categories(client) == 0


# --- PATCH ------------------------------------------------------------------------------


def test_patch_renames_and_leaves_other_fields(client):
    tools = create_category(client, "Tools", description="Hand and power tools")

    response = client.patch(f"{CATEGORIES}/{tools['id']}", json={"name": "Equipment"})

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "Equipment"
    assert updated["description"] == "Hand and power tools"
    assert updated["parent_id"] is None
    assert updated["created_at"] == tools["created_at"]
    assert updated["updated_at"] > tools["updated_at"]
    assert client.get(f"{CATEGORIES}/{tools['id']}").json() == updated


def test_patch_can_change_only_the_case_of_its_own_name(client):
    tools = create_category(client, "Tools")

    response = client.patch(f"{CATEGORIES}/{tools['id']}", json={"name": "TOOLS"})

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "TOOLS"


def test_patch_rename_onto_a_sibling_name_is_409_and_changes_nothing(client):
    create_category(client, "Tools")
    paint = create_category(client, "Paint")

    assert_problem(
        client.patch(f"{CATEGORIES}/{paint['id']}", json={"name": "tOOLS"}),
        409,
        "duplicate-category-name",
    )

    assert client.get(f"{CATEGORIES}/{paint['id']}").json()["name"] == "Paint"


def test_patch_description_null_clears_it(client):
    tools = create_category(client, "Tools", description="Old text")

    response = client.patch(f"{CATEGORIES}/{tools['id']}", json={"description": None})

    assert response.status_code == 200, response.text
    assert response.json()["description"] is None
    assert response.json()["name"] == "Tools"


def test_patch_moves_a_category_and_moves_it_back_to_the_root(client):
    tools = create_category(client, "Tools")
    hammers = create_category(client, "Hammers")
    url = f"{CATEGORIES}/{hammers['id']}"

    moved = client.patch(url, json={"parent_id": tools["id"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["parent_id"] == tools["id"]
    assert names(client.get(CATEGORIES, params={"parent_id": tools["id"]})) == ["Hammers"]

    back = client.patch(url, json={"parent_id": None})
    assert back.status_code == 200, back.text
    assert back.json()["parent_id"] is None
    assert client.get(url).json()["parent_id"] is None
    assert names(client.get(CATEGORIES, params={"parent_id": tools["id"]})) == []


def test_move_to_the_root_onto_an_existing_root_name_is_409(client):
    """The root level is a sibling group too, even though its parent_id is NULL."""
    create_category(client, "Hammers")
    tools = create_category(client, "Tools")
    nested = create_category(client, "hammers", parent_id=tools["id"])

    assert_problem(
        client.patch(f"{CATEGORIES}/{nested['id']}", json={"parent_id": None}),
        409,
        "duplicate-category-name",
    )

    assert client.get(f"{CATEGORIES}/{nested['id']}").json()["parent_id"] == tools["id"]


def test_move_under_a_parent_with_a_same_named_child_is_409(client):
    tools = create_category(client, "Tools")
    create_category(client, "Hammers", parent_id=tools["id"])
    loose = create_category(client, "HAMMERS")

    assert_problem(
        client.patch(f"{CATEGORIES}/{loose['id']}", json={"parent_id": tools["id"]}),
        409,
        "duplicate-category-name",
    )


def test_move_to_an_unknown_parent_is_422(client):
    tools = create_category(client, "Tools")

    problem = assert_problem(
        client.patch(f"{CATEGORIES}/{tools['id']}", json={"parent_id": 4242}),
        422,
        "unprocessable-entity",
    )

    assert problem["errors"][0]["pointer"] == "/parent_id"
    assert client.get(f"{CATEGORIES}/{tools['id']}").json()["parent_id"] is None


def test_move_below_itself_is_422(client):
    tools = create_category(client, "Tools")

    problem = assert_problem(
        client.patch(f"{CATEGORIES}/{tools['id']}", json={"parent_id": tools["id"]}),
        422,
        "unprocessable-entity",
    )

    assert problem["errors"][0]["pointer"] == "/parent_id"
    assert client.get(f"{CATEGORIES}/{tools['id']}").json()["parent_id"] is None


def test_move_below_a_descendant_is_422_and_changes_nothing(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    hammers = create_category(client, "Hammers", parent_id=hand["id"])

    for below in (hand, hammers):
        problem = assert_problem(
            client.patch(f"{CATEGORIES}/{tools['id']}", json={"parent_id": below["id"]}),
            422,
            "unprocessable-entity",
        )
        assert problem["errors"][0]["pointer"] == "/parent_id"

    assert client.get(f"{CATEGORIES}/{tools['id']}").json() == tools


def test_move_into_a_sibling_subtree_is_allowed(client):
    """Only the category's own subtree is off limits, not its siblings'."""
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    power = create_category(client, "Power tools", parent_id=tools["id"])

    response = client.patch(f"{CATEGORIES}/{power['id']}", json={"parent_id": hand["id"]})

    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] == hand["id"]


# --- DELETE -----------------------------------------------------------------------------


def test_delete_empty_category_is_204_then_404(client):
    tools = create_category(client, "Tools")
    url = f"{CATEGORIES}/{tools['id']}"

    response = client.delete(url)

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(client.get(url), 404, "not-found")
    assert_problem(client.delete(url), 404, "not-found")


def test_delete_with_children_is_409_counting_them(client):
    tools = create_category(client, "Tools")
    create_category(client, "Hand tools", parent_id=tools["id"])
    create_category(client, "Power tools", parent_id=tools["id"])

    problem = assert_problem(client.delete(f"{CATEGORIES}/{tools['id']}"), 409, "category-in-use")

    assert problem["blocking"] == {"subcategories": 2, "products": 0}
    assert client.get(f"{CATEGORIES}/{tools['id']}").status_code == 200
    assert count_categories(client) == 3


def test_delete_with_products_is_409_counting_them(client):
    tools = create_category(client, "Tools")
    hammer = create_product(client, "HAM-1", category_id=tools["id"])

    problem = assert_problem(client.delete(f"{CATEGORIES}/{tools['id']}"), 409, "category-in-use")

    assert problem["blocking"] == {"subcategories": 0, "products": 1}
    assert client.get(f"{CATEGORIES}/{tools['id']}").status_code == 200
    assert client.get(f"/api/v1/products/{hammer['id']}").json()["category_id"] == tools["id"]


def test_delete_with_children_and_products_counts_both(client):
    tools = create_category(client, "Tools")
    create_category(client, "Hand tools", parent_id=tools["id"])
    for sku in ("A-1", "A-2", "A-3"):
        create_product(client, sku, category_id=tools["id"])

    problem = assert_problem(client.delete(f"{CATEGORIES}/{tools['id']}"), 409, "category-in-use")

    assert problem["blocking"] == {"subcategories": 1, "products": 3}
    assert "1 subcategory" in problem["detail"]
    assert "3 products" in problem["detail"]


def test_delete_becomes_possible_once_the_category_is_emptied(client):
    tools = create_category(client, "Tools")
    hand = create_category(client, "Hand tools", parent_id=tools["id"])
    hammer = create_product(client, "HAM-1", category_id=tools["id"])
    assert client.delete(f"{CATEGORIES}/{tools['id']}").status_code == 409

    assert client.patch(f"{CATEGORIES}/{hand['id']}", json={"parent_id": None}).status_code == 200
    patched = client.patch(f"/api/v1/products/{hammer['id']}", json={"category_id": None})
    assert patched.status_code == 200

    assert client.delete(f"{CATEGORIES}/{tools['id']}").status_code == 204
