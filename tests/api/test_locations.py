"""/api/v1/locations: warehouses and bins, their filters, sorts and guarded deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from service.models import Location, StockDocument, StockLevel, StockMovement
from tests.helpers import assert_problem, create_location, create_product, walk_pages

LOCATIONS = "/api/v1/locations"
LOCATION_FIELDS = {"id", "code", "name", "is_active", "created_at", "updated_at"}
SORTS = ("code", "-code", "name", "-name", "created_at", "-created_at")


def url_of(location: dict) -> str:
    return f"{LOCATIONS}/{location['id']}"


def list_locations(client, **params) -> list[dict]:
    response = client.get(LOCATIONS, params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def codes(client, **params) -> list[str]:
    return [item["code"] for item in list_locations(client, **params)]


def expected_order(locations: list[dict], sort: str) -> list[int]:
    """Ids in the promised order: by the sort field (code ignoring case), ties by id.

    Only valid for fixtures whose names compare the same bytewise and in the database's
    collation (plain ASCII letters of one case).
    """
    field = sort.lstrip("-")

    def key(location: dict):
        value = location[field]
        if field == "code":
            value = value.casefold()
        elif field == "created_at":
            value = datetime.fromisoformat(value)
        return (value, location["id"])

    return [loc["id"] for loc in sorted(locations, key=key, reverse=sort.startswith("-"))]


# --- create -----------------------------------------------------------------------------


def test_create_minimal_location_is_active_by_default(client):
    response = client.post(LOCATIONS, json={"code": "WH1-A01", "name": "Main warehouse, A1"})

    assert response.status_code == 201, response.text
    location = response.json()
    assert set(location) == LOCATION_FIELDS
    assert location["code"] == "WH1-A01"
    assert location["name"] == "Main warehouse, A1"
    assert location["is_active"] is True
    assert location["created_at"] == location["updated_at"]
    assert response.headers["location"] == url_of(location)
    assert response.headers["etag"] == f'"{location["id"]}-1"'
    assert client.get(response.headers["location"]).json() == location


def test_create_archived_location_round_trips(client):
    body = {"code": "OLD.store/2", "name": "Old store", "is_active": False}

    response = client.post(LOCATIONS, json=body)

    assert response.status_code == 201, response.text
    assert {k: response.json()[k] for k in body} == body


def test_code_keeps_its_spelling(client):
    location = create_location(client, "wh1-MiXeD")
    assert client.get(url_of(location)).json()["code"] == "wh1-MiXeD"


def test_duplicate_code_differing_in_case_is_409_naming_the_holder(client):
    main = create_location(client, "WH1-A01", name="Main")

    problem = assert_problem(
        client.post(LOCATIONS, json={"code": "wh1-a01", "name": "Other"}),
        409,
        "duplicate-location-code",
    )

    assert problem["conflicting_id"] == main["id"]
    assert "wh1-a01" in problem["detail"]
    assert codes(client) == ["WH1-A01"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "No code"},
        {"code": "WH1"},
        {"code": "", "name": "Empty code"},
        {"code": "-leading-dash", "name": "Bad"},
        {"code": "has space", "name": "Bad"},
        {"code": "X" * 33, "name": "Too long"},
        {"code": "WH1", "name": "N" * 101},
        {"code": "WH1", "name": "Fine", "id": 7},
        {"code": "WH1", "name": "Fine", "code_key": "wh1"},
        {"code": "WH1", "name": "Fine", "version": 3},
        {"code": "WH1", "name": "Fine", "is_active": "yes"},
    ],
    ids=[
        "no-code",
        "no-name",
        "empty-code",
        "leading-dash",
        "space-in-code",
        "code-too-long",
        "name-too-long",
        "id",
        "code-key",
        "version",
        "string-is-active",
    ],
)
def test_invalid_create_body_is_400_and_writes_nothing(client, body):
    assert_problem(client.post(LOCATIONS, json=body), 400)
    assert codes(client) == []


# --- get --------------------------------------------------------------------------------


def test_get_unknown_location_is_a_404_problem(client):
    problem = assert_problem(client.get(f"{LOCATIONS}/999"), 404, "not-found")
    assert "Location 999" in problem["detail"]


def test_get_with_current_etag_is_304_without_body(client):
    location = create_location(client)
    etag = client.get(url_of(location)).headers["etag"]

    response = client.get(url_of(location), headers={"If-None-Match": etag})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


def test_get_with_stale_etag_is_200(client):
    location = create_location(client)
    stale = client.get(url_of(location)).headers["etag"]
    assert client.patch(url_of(location), json={"name": "Renamed"}).status_code == 200

    response = client.get(url_of(location), headers={"If-None-Match": stale})

    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"
    assert response.headers["etag"] != stale


# --- patch ------------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields_and_bumps_version(client):
    location = create_location(client, "WH1-A01", name="Main")

    response = client.patch(url_of(location), json={"name": "Main warehouse"})

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated == {**location, "name": "Main warehouse", "updated_at": updated["updated_at"]}
    assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(
        location["updated_at"]
    )
    assert response.headers["etag"] == f'"{location["id"]}-2"'
    assert client.get(url_of(location)).json() == updated


def test_patch_code_is_applied_and_frees_the_old_code(client):
    location = create_location(client, "WH1-A01")

    response = client.patch(url_of(location), json={"code": "WH2-B07"})

    assert response.status_code == 200, response.text
    assert response.json()["code"] == "WH2-B07"
    assert create_location(client, "wh1-a01")["code"] == "wh1-a01"
    assert codes(client) == ["wh1-a01", "WH2-B07"]


def test_archive_with_is_active_false(client):
    location = create_location(client, "WH1")

    response = client.patch(url_of(location), json={"is_active": False})

    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert codes(client, is_active="false") == ["WH1"]
    assert codes(client, is_active="true") == []


def test_patch_code_onto_another_locations_code_is_409(client):
    main = create_location(client, "WH1-A01")
    other = create_location(client, "WH2")

    problem = assert_problem(
        client.patch(url_of(other), json={"code": "Wh1-A01", "name": "Renamed"}),
        409,
        "duplicate-location-code",
    )

    assert problem["conflicting_id"] == main["id"]
    assert client.get(url_of(other)).json() == other


def test_patch_can_change_only_the_case_of_its_own_code(client):
    location = create_location(client, "wh1-a01")

    response = client.patch(url_of(location), json={"code": "WH1-A01"})

    assert response.status_code == 200, response.text
    assert response.json()["code"] == "WH1-A01"


@pytest.mark.parametrize(
    "body",
    [{}, {"code": "bad code"}, {"name": ""}, {"is_active": None}, {"colour": "red"}],
    ids=["empty", "bad-code", "empty-name", "null-is-active", "unknown-field"],
)
def test_invalid_patch_is_400_and_changes_nothing(client, body):
    location = create_location(client)

    assert_problem(client.patch(url_of(location), json=body), 400)

    assert client.get(url_of(location)).json() == location


def test_patch_unknown_location_is_404(client):
    assert_problem(client.patch(f"{LOCATIONS}/999", json={"name": "X"}), 404, "not-found")


def test_patch_with_stale_if_match_is_412_and_changes_nothing(client):
    location = create_location(client, "WH1", name="Main")
    stale = client.get(url_of(location)).headers["etag"]
    current = client.patch(url_of(location), json={"name": "Second"}).headers["etag"]

    assert_problem(
        client.patch(url_of(location), json={"name": "Third"}, headers={"If-Match": stale}),
        412,
        "precondition-failed",
    )
    assert client.get(url_of(location)).json()["name"] == "Second"

    response = client.patch(url_of(location), json={"name": "Third"}, headers={"If-Match": current})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Third"


def test_patch_with_if_match_star_succeeds(client):
    location = create_location(client)
    response = client.patch(url_of(location), json={"name": "Any"}, headers={"If-Match": "*"})
    assert response.status_code == 200, response.text


# --- delete -----------------------------------------------------------------------------


def test_delete_location_is_204_then_404(client):
    location = create_location(client, "WH1")

    response = client.delete(url_of(location))

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(client.get(url_of(location)), 404, "not-found")
    assert_problem(client.delete(url_of(location)), 404, "not-found")
    assert codes(client) == []


def test_a_deleted_locations_code_can_be_reused_with_a_new_id(client):
    location = create_location(client, "WH1")
    assert client.delete(url_of(location)).status_code == 204

    again = create_location(client, "wh1")

    assert again["id"] != location["id"]


def test_delete_with_stale_if_match_is_412_and_deletes_nothing(client):
    location = create_location(client, "WH1")
    stale = client.get(url_of(location)).headers["etag"]
    current = client.patch(url_of(location), json={"name": "Renamed"}).headers["etag"]

    assert_problem(
        client.delete(url_of(location), headers={"If-Match": stale}), 412, "precondition-failed"
    )
    assert client.get(url_of(location)).status_code == 200

    assert client.delete(url_of(location), headers={"If-Match": current}).status_code == 204
    assert codes(client) == []


# --- delete refused while the location has stock history ---------------------------------


def add_stock_history(
    database,
    product_id: int,
    location_id: int,
    quantities: tuple[int, ...] = (5,),
    *,
    to_location_id: int | None = None,
) -> None:
    """Write a receipt (one movement per quantity) and the level it sums to, directly."""
    with database.sessionmaker() as session, session.begin():
        document = StockDocument(
            kind="transfer" if to_location_id else "receipt",
            reference="PO-1",
            location_id=location_id,
            to_location_id=to_location_id,
        )
        session.add(document)
        session.flush()
        balance = 0
        for line_no, quantity in enumerate(quantities, start=1):
            balance += quantity
            session.add(
                StockMovement(
                    document_id=document.id,
                    line_no=line_no,
                    kind="receipt",
                    product_id=product_id,
                    location_id=location_id,
                    quantity=quantity,
                    balance_after=balance,
                    unit_cost=Decimal("1.5000"),
                    average_cost_after=Decimal("1.500000"),
                    reference="PO-1",
                )
            )
        session.add(StockLevel(product_id=product_id, location_id=location_id, on_hand=balance))


def stock_rows(database) -> dict[str, int]:
    with database.sessionmaker() as session:
        return {
            "documents": session.scalar(select(func.count()).select_from(StockDocument)),
            "movements": session.scalar(select(func.count()).select_from(StockMovement)),
            "levels": session.scalar(select(func.count()).select_from(StockLevel)),
            "locations": session.scalar(select(func.count()).select_from(Location)),
        }


def test_delete_of_a_location_with_stock_history_is_409_and_deletes_nothing(client, database):
    product = create_product(client, "HAM-1")
    location = create_location(client, "WH1")
    add_stock_history(database, product["id"], location["id"], (5, 3))
    before = stock_rows(database)
    etag = client.get(url_of(location)).headers["etag"]

    problem = assert_problem(
        client.delete(url_of(location), headers={"If-Match": etag}), 409, "location-in-use"
    )

    assert "2 stock movements" in problem["detail"]
    assert problem["blocking"] == {"movements": 2, "stock_levels": 1, "documents": 1}
    assert client.get(url_of(location)).json() == location
    assert codes(client) == ["WH1"]
    assert (
        stock_rows(database)
        == before
        == {
            "documents": 1,
            "movements": 2,
            "levels": 1,
            "locations": 1,
        }
    )


def test_delete_names_a_single_movement_in_the_singular(client, database):
    product = create_product(client, "HAM-1")
    location = create_location(client, "WH1")
    add_stock_history(database, product["id"], location["id"], (4,))

    problem = assert_problem(client.delete(url_of(location)), 409, "location-in-use")

    assert "1 stock movement," in problem["detail"]
    assert problem["blocking"]["movements"] == 1


def test_archiving_is_the_way_out_for_a_location_with_history(client, database):
    product = create_product(client, "HAM-1")
    location = create_location(client, "WH1")
    add_stock_history(database, product["id"], location["id"])
    assert_problem(client.delete(url_of(location)), 409, "location-in-use")

    response = client.patch(url_of(location), json={"is_active": False})

    assert response.status_code == 200, response.text
    assert codes(client, is_active="false") == ["WH1"]


def test_delete_is_refused_for_a_location_named_only_as_a_documents_destination(client, database):
    product = create_product(client, "HAM-1")
    source = create_location(client, "SRC")
    destination = create_location(client, "DST")
    add_stock_history(database, product["id"], source["id"], to_location_id=destination["id"])

    problem = assert_problem(client.delete(url_of(destination)), 409, "location-in-use")

    assert problem["blocking"] == {"movements": 0, "stock_levels": 0, "documents": 1}
    assert codes(client) == ["DST", "SRC"]


def test_delete_is_refused_for_a_location_with_only_a_stock_level(client, database):
    product = create_product(client, "HAM-1")
    location = create_location(client, "WH1")
    with database.sessionmaker() as session, session.begin():
        session.add(StockLevel(product_id=product["id"], location_id=location["id"], on_hand=0))

    problem = assert_problem(client.delete(url_of(location)), 409, "location-in-use")

    assert problem["blocking"] == {"movements": 0, "stock_levels": 1, "documents": 0}
    assert client.get(url_of(location)).status_code == 200


def test_history_elsewhere_does_not_block_deleting_an_unused_location(client, database):
    product = create_product(client, "HAM-1")
    used = create_location(client, "USED")
    unused = create_location(client, "UNUSED")
    add_stock_history(database, product["id"], used["id"])

    assert client.delete(url_of(unused)).status_code == 204
    assert codes(client) == ["USED"]


# --- list filters -----------------------------------------------------------------------


def test_list_shape_and_is_active_filter(client):
    create_location(client, "A-1", is_active=True)
    create_location(client, "B-2", is_active=False)
    create_location(client, "C-3")

    response = client.get(LOCATIONS)
    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"items", "next_cursor"}
    assert page["next_cursor"] is None
    assert all(set(item) == LOCATION_FIELDS for item in page["items"])

    assert codes(client) == ["A-1", "B-2", "C-3"]
    assert codes(client, is_active="true") == ["A-1", "C-3"]
    assert codes(client, is_active="false") == ["B-2"]


def test_q_matches_code_or_name_ignoring_case(client):
    create_location(client, "WH1-A01", name="Main hall")
    create_location(client, "WH1-A02", name="Main hall")
    create_location(client, "STORE", name="Back room")
    create_location(client, "YARD", name="Outdoor stock of wh1 pallets")

    assert codes(client, q="wh1-a") == ["WH1-A01", "WH1-A02"]
    assert codes(client, q="wh1") == ["WH1-A01", "WH1-A02", "YARD"]
    assert codes(client, q="BACK ROOM") == ["STORE"]
    assert codes(client, q="oO") == ["STORE", "YARD"]
    assert codes(client, q="nothing") == []


def test_q_combines_with_is_active(client):
    create_location(client, "WH1-A01", is_active=False)
    create_location(client, "WH1-A02")

    assert codes(client, q="wh1", is_active="false") == ["WH1-A01"]
    assert codes(client, q="wh1", is_active="true") == ["WH1-A02"]


def test_q_treats_like_wildcards_literally(client):
    create_location(client, "P-1", name="Bin 50%_A")
    create_location(client, "P-2", name="Bin 500 A")
    create_location(client, "P-3", name="Bin 50\\A")
    create_location(client, "SHELF/1", name="Shelf one")

    assert codes(client, q="50%_") == ["P-1"]
    assert codes(client, q="%") == ["P-1"]
    assert codes(client, q="_") == ["P-1"]
    assert codes(client, q="0\\") == ["P-3"]
    assert codes(client, q="f/1") == ["SHELF/1"]  # "/" is the escape character used


def test_q_folds_non_ascii_names(client):
    create_location(client, "EU-1", name="Été storage")

    assert codes(client, q="ÉTÉ") == ["EU-1"]


# --- sorts and pages --------------------------------------------------------------------


@pytest.fixture()
def site(client) -> list[dict]:
    """Seven locations whose code, name and creation orders differ, with name ties."""
    rows = [
        ("m-3", "Bravo"),
        ("Z-1", "Alpha"),
        ("a-9", "Charlie"),
        ("Q-2", "Alpha"),
        ("C-5", "Bravo"),
        ("k-7", "Alpha"),
        ("B-4", "Delta"),
    ]
    return [create_location(client, code, name=name) for code, name in rows]


def test_default_sort_is_by_code_ignoring_case(client, site):
    assert codes(client) == ["a-9", "B-4", "C-5", "k-7", "m-3", "Q-2", "Z-1"]


@pytest.mark.parametrize("sort", SORTS)
def test_sort_orders_with_ties_broken_by_id(client, site, sort):
    ids = [item["id"] for item in list_locations(client, sort=sort)]
    assert ids == expected_order(site, sort)


@pytest.mark.parametrize("sort", SORTS)
def test_walking_pages_of_two_returns_every_location_once_in_order(client, site, sort):
    walked = walk_pages(client, LOCATIONS, limit=2, sort=sort)

    assert [loc["id"] for loc in walked] == expected_order(site, sort)
    assert walked == sorted(site, key=lambda loc: expected_order(site, sort).index(loc["id"]))


def test_name_ties_ascending_by_id_and_descending_by_descending_id(client, site):
    alphas = [loc["id"] for loc in site if loc["name"] == "Alpha"]

    ascending = [loc["id"] for loc in walk_pages(client, LOCATIONS, limit=2, sort="name")]
    descending = [loc["id"] for loc in walk_pages(client, LOCATIONS, limit=2, sort="-name")]

    assert [i for i in ascending if i in alphas] == sorted(alphas)
    assert [i for i in descending if i in alphas] == sorted(alphas, reverse=True)


@pytest.mark.parametrize("sort", ["created_at", "-created_at"])
def test_created_at_follows_the_timestamp_not_the_id(client, database, sort):
    locations = [create_location(client, f"L-{i}") for i in range(5)]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with database.engine.begin() as connection:
        for offset, location in enumerate(reversed(locations)):
            connection.execute(
                update(Location)
                .where(Location.id == location["id"])
                .values(created_at=base + timedelta(seconds=offset))
            )

    walked = [loc["id"] for loc in walk_pages(client, LOCATIONS, limit=2, sort=sort)]

    ids = [loc["id"] for loc in locations]  # the first created is now the newest
    assert walked == (ids if sort.startswith("-") else ids[::-1])


@pytest.mark.parametrize("sort", ["created_at", "-created_at"])
def test_identical_created_at_pages_exactly_by_id(client, database, sort):
    locations = [create_location(client, f"L-{i}") for i in range(5)]
    with database.engine.begin() as connection:
        connection.execute(
            update(Location).values(created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
        )

    walked = [loc["id"] for loc in walk_pages(client, LOCATIONS, limit=2, sort=sort)]

    ids = [loc["id"] for loc in locations]
    assert walked == (ids[::-1] if sort.startswith("-") else ids)


def test_code_pages_are_stable_under_inserts(client):
    for code in ("B", "C", "D", "E"):
        create_location(client, code)

    first = client.get(LOCATIONS, params={"limit": 2}).json()
    create_location(client, "a")  # sorts before everything already served
    second = client.get(LOCATIONS, params={"limit": 2, "cursor": first["next_cursor"]}).json()

    served = [loc["code"] for loc in first["items"] + second["items"]]
    assert served == ["B", "C", "D", "E"]
    assert second["next_cursor"] is None


def test_cursor_from_another_sort_is_400_on_cursor(client, site):
    cursor = client.get(LOCATIONS, params={"limit": 2}).json()["next_cursor"]

    for other in ("-code", "name", "created_at"):
        problem = assert_problem(
            client.get(LOCATIONS, params={"limit": 2, "sort": other, "cursor": cursor}),
            400,
            "validation-error",
        )
        assert problem["errors"][0]["parameter"] == "cursor"


@pytest.mark.parametrize(
    "params",
    [{"sort": "sku"}, {"limit": 0}, {"limit": 201}, {"is_active": "maybe"}, {"colour": "red"}],
    ids=["unknown-sort", "limit-0", "limit-201", "bad-boolean", "unknown-parameter"],
)
def test_bad_list_parameters_are_400(client, params):
    problem = assert_problem(client.get(LOCATIONS, params=params), 400)
    assert problem["errors"][0]["parameter"] == next(iter(params))
