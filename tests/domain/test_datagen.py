"""service/datagen/: the bulk generator writes exactly what the ledger would, on both backends.

The strongest check replays every generated document through the real ledger
(:func:`service.domain.ledger.post`, :func:`service.domain.ledger.reversal_posting`) into a
second database and compares every row. The others check the invariants at the benchmark's
``--small`` size (2,000 products, 20,000 movements), determinism, reuse and refusal.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from service import datagen, migrate
from service.cli import main
from service.datagen import GenerationRefused, GenerationSpec, generate
from service.db import Database, make_engine
from service.domain import ledger
from service.models import Category, Location, Product
from tests.conftest import throwaway_database

NOW = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)
# Small enough to replay through the ORM in seconds, big enough for every kind of document.
REPLAYED = GenerationSpec(
    products=40, movements=1000, locations=4, days=30, seed=4, now=NOW, archived_share=0.05
)
# scripts/bench_reports.py --small
SMALL = GenerationSpec(products=2_000, movements=20_000, locations=8, days=120, seed=3, now=NOW)

REASONS = {"count", "damage", "loss", "found", "other"}
MOVEMENT_COLUMNS = (
    "id, document_id, line_no, kind, product_id, location_id, quantity, balance_after, "
    "unit_cost, average_cost_after, reason, note, reference, reversal_of"
)


@pytest.fixture()
def migrated_url(empty_database_url) -> Iterator[str]:
    migrate.upgrade(empty_database_url)
    yield empty_database_url


@pytest.fixture()
def second_url(backend, tmp_path_factory) -> Iterator[str]:
    with throwaway_database(backend, tmp_path_factory) as url:
        migrate.upgrade(url)
        yield url


def rows(url: str, sql: str, **params) -> list[tuple]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def scalar(url: str, sql: str, **params):
    return rows(url, sql, **params)[0][0]


def moment(value) -> datetime:
    """A timestamp column's value as an aware datetime (SQLite returns text here)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row the generator writes, in id order."""
    return {
        table: rows(url, f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
        for table, columns in datagen.TABLE_COLUMNS.items()
    }


# --- the ledger's own answer ---------------------------------------------------------------------


def replay(source_url: str, target_url: str) -> None:
    """Post the generated documents, one transaction each, through the real ledger."""
    database = Database(target_url)
    try:
        with database.transaction() as session:
            for id_, name, description, parent_id in rows(
                source_url, "SELECT id, name, description, parent_id FROM categories ORDER BY id"
            ):
                session.add(
                    Category(id=id_, name=name, description=description, parent_id=parent_id)
                )
                session.flush()
            for id_, code, name in rows(
                source_url, "SELECT id, code, name FROM locations ORDER BY id"
            ):
                session.add(Location(id=id_, code=code, name=name))
            for row in rows(
                source_url,
                "SELECT id, sku, name, description, category_id, unit_of_measure, "
                "reorder_point, reorder_quantity FROM products ORDER BY id",
            ):
                session.add(
                    Product(
                        **dict(
                            zip(
                                (
                                    "id",
                                    "sku",
                                    "name",
                                    "description",
                                    "category_id",
                                    "unit_of_measure",
                                    "reorder_point",
                                    "reorder_quantity",
                                ),
                                row,
                                strict=True,
                            )
                        )
                    )
                )
        movements = defaultdict(list)
        for row in rows(
            source_url,
            "SELECT document_id, line_no, kind, product_id, location_id, quantity, unit_cost, "
            "reason, note, reversal_of FROM stock_movements ORDER BY id",
        ):
            movements[row[0]].append(row[1:])
        documents = rows(
            source_url,
            "SELECT id, kind, reference, note, location_id, to_location_id "
            "FROM stock_documents ORDER BY id",
        )
        for document_id, kind, reference, note, location_id, to_location_id in documents:
            with database.transaction() as session:
                lines = movements[document_id]
                if kind == "reversal":
                    # As POST /stock/movements/{id}/reversal does, with the document's note.
                    posting = ledger.reversal_posting(session, lines[0][-1], None, note)
                else:
                    posting = ledger.Posting(
                        kind=kind,
                        changes=[
                            ledger.Change(
                                line_no=line_no,
                                kind=movement_kind,
                                product_id=product_id,
                                location_id=movement_location,
                                quantity=quantity,
                                unit_cost=None
                                if unit_cost is None
                                else Decimal(int(unit_cost)).scaleb(-4),
                                reason=reason,
                                note=line_note,
                            )
                            for (
                                line_no,
                                movement_kind,
                                product_id,
                                movement_location,
                                quantity,
                                unit_cost,
                                reason,
                                line_note,
                                _,
                            ) in lines
                        ],
                        reference=reference,
                        note=note,
                        location_id=location_id,
                        to_location_id=to_location_id,
                    )
                ledger.post(session, posting)
    finally:
        database.dispose()


def test_the_generated_history_is_what_the_ledger_posts(migrated_url, second_url):
    result = generate(migrated_url, REPLAYED)
    assert result.movements == REPLAYED.movements
    # Every kind of document, so that the comparison covers every path of post().
    assert set(result.documents) == {"receipt", "shipment", "transfer", "adjustment", "reversal"}

    replay(migrated_url, second_url)

    movements = f"SELECT {MOVEMENT_COLUMNS} FROM stock_movements ORDER BY id"
    generated, posted = rows(migrated_url, movements), rows(second_url, movements)
    assert len(generated) == REPLAYED.movements
    assert generated == posted
    documents = (
        "SELECT id, kind, reference, note, location_id, to_location_id "
        "FROM stock_documents ORDER BY id"
    )
    assert rows(migrated_url, documents) == rows(second_url, documents)
    levels = "SELECT id, product_id, location_id, on_hand FROM stock_levels ORDER BY id"
    assert rows(migrated_url, levels) == rows(second_url, levels)
    # Average cost and the version the ORM bumps whenever it moves.
    products = "SELECT id, average_cost, version FROM products ORDER BY id"
    assert rows(migrated_url, products) == rows(second_url, products)
    # Receipts were reversed (the cost formula met negative quantities), and a transfer.
    reversed_kinds = {
        kind
        for (kind,) in rows(
            migrated_url,
            "SELECT m.kind FROM stock_movements r JOIN stock_movements m ON m.id = r.reversal_of",
        )
    }
    assert {"receipt", "transfer_out", "transfer_in"} <= reversed_kinds


# --- invariants at the benchmark's small size ---------------------------------------------------


@pytest.fixture(scope="module")
def small(backend, tmp_path_factory) -> Iterator[tuple[str, datagen.GenerationResult]]:
    """One generated database per backend, read (never written) by the tests below."""
    with throwaway_database(backend, tmp_path_factory) as url:
        migrate.upgrade(url)
        yield url, generate(url, SMALL)


def test_small_size_counts_and_verify(small):
    url, result = small
    assert result.products == scalar(url, "SELECT COUNT(*) FROM products") == SMALL.products
    assert result.movements == scalar(url, "SELECT COUNT(*) FROM stock_movements") == 20_000
    assert sum(result.documents.values()) == scalar(url, "SELECT COUNT(*) FROM stock_documents")
    assert result.levels == scalar(url, "SELECT COUNT(*) FROM stock_levels")
    assert scalar(url, "SELECT COUNT(*) FROM locations") == SMALL.locations
    assert result.categories == scalar(url, "SELECT COUNT(*) FROM categories") > 30
    outcome = CliRunner().invoke(main, ["stock", "verify", "--database-url", url])
    assert outcome.exit_code == 0, outcome.output
    assert "movements:       20000" in outcome.output


def test_small_size_balances_and_average_costs_follow_the_ledger(small):
    url, _ = small
    on_hand: dict[tuple[int, int], int] = defaultdict(int)
    total: dict[int, int] = defaultdict(int)
    average: dict[int, Decimal] = defaultdict(Decimal)
    by_document = defaultdict(list)
    for row in rows(
        url,
        "SELECT document_id, product_id, location_id, quantity, balance_after, unit_cost, "
        "average_cost_after FROM stock_movements ORDER BY id",
    ):
        by_document[row[0]].append(row[1:])
    for movements in by_document.values():
        # post(): the cost moves from the product's total before the document.
        totals = {product: total[product] for product, _, _, _, cost, _ in movements if cost}
        for product, location, quantity, balance_after, cost, average_after in movements:
            on_hand[(product, location)] += quantity
            assert balance_after == on_hand[(product, location)] >= 0
            if cost is not None:
                average[product] = ledger.moving_average(
                    average[product], totals[product], quantity, Decimal(cost).scaleb(-4)
                )
                totals[product] += quantity
            assert Decimal(average_after).scaleb(-6) == average[product]
        for product, _, quantity, *_ in movements:
            total[product] += quantity
    for product_id, average_cost in rows(url, "SELECT id, average_cost FROM products"):
        assert Decimal(average_cost).scaleb(-6) == average[product_id]
    for product_id, location_id, level in rows(
        url, "SELECT product_id, location_id, on_hand FROM stock_levels"
    ):
        assert level == on_hand[(product_id, location_id)]
    assert len(on_hand) == scalar(url, "SELECT COUNT(*) FROM stock_levels")


def test_small_size_documents_are_well_formed(small):
    url, _ = small
    documents = {
        row[0]: row[1:]
        for row in rows(url, "SELECT id, kind, location_id, to_location_id FROM stock_documents")
    }
    movements = rows(url, f"SELECT {MOVEMENT_COLUMNS} FROM stock_movements ORDER BY id")
    by_document = defaultdict(list)
    for movement in movements:
        by_document[movement[1]].append(movement)
    kinds = {"receipt", "shipment", "transfer", "adjustment", "reversal"}
    for document_id, (kind, location_id, to_location_id) in documents.items():
        assert kind in kinds
        lines = by_document[document_id]
        line_numbers = sorted({m[2] for m in lines})
        assert line_numbers == list(range(len(line_numbers)))
        assert 1 <= len(line_numbers) <= 5
        if kind == "transfer":
            for out, into in zip(lines[::2], lines[1::2], strict=True):
                assert (out[3], into[3]) == ("transfer_out", "transfer_in")
                assert out[2] == into[2] and out[4] == into[4]
                assert out[6] == -into[6] < 0
                assert (out[5], into[5]) == (location_id, to_location_id)
        elif kind == "receipt":
            assert all(m[3] == "receipt" and m[6] > 0 and m[8] > 0 for m in lines)
        elif kind == "shipment":
            assert all(m[3] == "shipment" and m[6] < 0 and m[8] is None for m in lines)
        elif kind == "adjustment":
            assert all(m[3] == "adjustment" and m[6] != 0 and m[10] in REASONS for m in lines)
        if kind != "reversal":
            assert all(m[5] in (location_id, to_location_id) for m in lines)

    by_id = {m[0]: m for m in movements}
    reversals = [m for m in movements if m[3] == "reversal"]
    assert reversals
    reversed_ids = [m[13] for m in reversals]
    assert len(reversed_ids) == len(set(reversed_ids))  # nothing reversed twice
    for reversal in reversals:
        original = by_id[reversal[13]]
        assert original[3] != "reversal" and original[0] < reversal[0]
        assert (reversal[4], reversal[5], reversal[6]) == (original[4], original[5], -original[6])
        assert reversal[12] == original[12]  # the reversed movement's reference
        assert reversal[8] == (original[8] if original[3] == "receipt" else None)
        if original[3].startswith("transfer"):
            legs = [m for m in by_document[original[1]] if m[2] == original[2]]
            assert {leg[0] for leg in legs} <= set(reversed_ids)


def test_small_size_time_runs_forward_inside_the_history(small):
    url, result = small
    stamps = [
        moment(row[0]) for row in rows(url, "SELECT created_at FROM stock_documents ORDER BY id")
    ]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    movement_stamps = [
        moment(row[0]) for row in rows(url, "SELECT created_at FROM stock_movements ORDER BY id")
    ]
    assert movement_stamps == sorted(movement_stamps)
    assert result.first_movement_at >= NOW - timedelta(days=SMALL.days + 1)
    assert result.last_movement_at <= NOW
    # Spread over the whole period, not bunched at one end.
    assert result.last_movement_at >= NOW - timedelta(days=3)
    assert moment(scalar(url, "SELECT MAX(created_at) FROM products")) < stamps[0]


def test_small_size_references_and_catalog_are_sound(small):
    url, result = small
    # PostgreSQL may load without its foreign-key triggers: check the references here.
    for child, column, parent in (
        ("stock_movements", "document_id", "stock_documents"),
        ("stock_movements", "product_id", "products"),
        ("stock_movements", "location_id", "locations"),
        ("stock_movements", "reversal_of", "stock_movements"),
        ("stock_documents", "location_id", "locations"),
        ("stock_documents", "to_location_id", "locations"),
        ("stock_levels", "product_id", "products"),
        ("stock_levels", "location_id", "locations"),
        ("products", "category_id", "categories"),
        ("categories", "parent_id", "categories"),
    ):
        dangling = scalar(
            url,
            f"SELECT COUNT(*) FROM {child} c LEFT JOIN {parent} p ON p.id = c.{column} "
            f"WHERE c.{column} IS NOT NULL AND p.id IS NULL",
        )
        assert dangling == 0, (child, column)
    sku = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    unit = re.compile(r"^[a-z][a-z0-9_]*$")
    products = rows(url, "SELECT sku, name, unit_of_measure, category_id FROM products")
    assert len({s.casefold() for s, *_ in products}) == len(products)
    assert len({name for _, name, *_ in products}) == len(products)  # names are unique too
    leaves = {
        row[0]
        for row in rows(
            url,
            "SELECT id FROM categories c WHERE NOT EXISTS "
            "(SELECT 1 FROM categories k WHERE k.parent_id = c.id)",
        )
    }
    for code, name, unit_name, category_id in products:
        assert sku.match(code) and len(code) <= 64
        assert 0 < len(name) <= 200
        assert unit.match(unit_name)
        assert category_id in leaves
    paths = {
        f"{parent}/{child}"
        for parent, child in rows(
            url,
            "SELECT p.name, c.name FROM categories c JOIN categories p ON p.id = c.parent_id",
        )
    }
    assert {"Tools/Hand tools", "Fasteners/Screws", "Electrical/Cables", "Paint/Brushes"} <= paths
    codes = [row[0] for row in rows(url, "SELECT code FROM locations ORDER BY id")]
    assert codes[:4] == ["WH-MAIN", "WH-NORTH", "STORE-1", "RETURNS"]
    # Archived products and low-stock alerts (active, reorder point set, total at or below).
    assert scalar(url, "SELECT COUNT(*) FROM products WHERE NOT is_active") == 20
    low = scalar(
        url,
        "SELECT COUNT(*) FROM products p WHERE p.is_active AND p.reorder_point > 0 AND "
        "(SELECT COALESCE(SUM(on_hand), 0) FROM stock_levels l WHERE l.product_id = p.id) "
        "<= p.reorder_point",
    )
    assert low == result.low_stock_products >= round(0.05 * 1980)


def test_the_service_continues_after_the_generated_ids(migrated_url):
    url, spec = migrated_url, REPLAYED
    generate(url, spec)
    last_document = scalar(url, "SELECT MAX(id) FROM stock_documents")
    database = Database(url)
    try:
        with database.transaction() as session:
            location = Location(code="NEW-1", name="Created by the service")
            product = Product(sku="NEW-SKU-1", name="Created by the service")
            session.add_all([location, product])
            session.flush()
            assert location.id == spec.locations + 1
            assert product.id == spec.products + 1
            document = ledger.post(
                session,
                ledger.Posting(
                    "receipt",
                    [
                        ledger.Change(
                            0, "receipt", product.id, location.id, 5, unit_cost=Decimal("2")
                        )
                    ],
                ),
            )
            assert document.id == last_document + 1
            assert document.movements[0].id == spec.movements + 1
    finally:
        database.dispose()


# --- determinism, reuse, refusal ---------------------------------------------------------------


def test_same_spec_gives_the_same_rows_whichever_way_references_are_checked(
    migrated_url, second_url
):
    # On PostgreSQL (superuser) the first run skips the foreign-key triggers and inserts the
    # products last; the second keeps them and updates the products at the end.
    first = generate(migrated_url, REPLAYED)
    second = generate(second_url, REPLAYED, trust_references=False)
    assert second.foreign_keys in ("checked", "checked at commit")
    assert dump(migrated_url) == dump(second_url)
    assert first.documents == second.documents


def test_another_seed_gives_another_history(migrated_url, second_url):
    generate(migrated_url, REPLAYED)
    other = GenerationSpec(**{**REPLAYED.__dict__, "seed": REPLAYED.seed + 1})
    generate(second_url, other)
    assert dump(migrated_url)["stock_movements"] != dump(second_url)["stock_movements"]


def test_existing_rows_are_kept_reused_and_never_reloaded(migrated_url):
    database = Database(migrated_url)
    try:
        with database.transaction() as session:
            tools = Category(name="tools")  # the same name, another spelling: reused
            mine = Category(name="My things")
            main_warehouse = Location(code="wh-main", name="Our main warehouse")
            gone = Location(code="GONE", name="Deleted below")
            session.add_all([tools, mine, main_warehouse, gone])
            session.flush()
            product = Product(sku="MY-OWN-1", name="Our own product", category_id=mine.id)
            session.add(product)
            session.flush()
            ids = {"tools": tools.id, "wh": main_warehouse.id, "product": product.id}
        with database.transaction() as session:
            session.delete(session.get(Location, gone.id))
    finally:
        database.dispose()

    result = generate(migrated_url, REPLAYED)
    assert result.categories_reused == 1 and result.locations_reused == 1
    assert result.locations == REPLAYED.locations - 1
    hand_tools_parent = scalar(
        migrated_url, "SELECT parent_id FROM categories WHERE name = 'Hand tools'"
    )
    assert hand_tools_parent == ids["tools"]
    # New ids come after the existing ones, and never reuse the deleted location's id.
    assert scalar(migrated_url, "SELECT MIN(id) FROM locations WHERE code <> 'wh-main'") == 3
    assert scalar(migrated_url, "SELECT MIN(id) FROM products WHERE sku <> 'MY-OWN-1'") == 2
    receipts_at_main = scalar(
        migrated_url,
        "SELECT COUNT(*) FROM stock_movements WHERE location_id = :wh AND kind = 'receipt'",
        wh=ids["wh"],
    )
    assert receipts_at_main > 0
    assert scalar(migrated_url, "SELECT name FROM products WHERE sku = 'MY-OWN-1'") == (
        "Our own product"
    )

    before = dump(migrated_url)
    with pytest.raises(datagen.CatalogLoaded) as refused:
        generate(migrated_url, REPLAYED)
    assert refused.value.sku.count("-") == 2
    assert dump(migrated_url) == before  # all or nothing


def test_an_archived_location_with_a_generated_code_is_refused(migrated_url):
    database = Database(migrated_url)
    try:
        with database.transaction() as session:
            session.add(Location(code="STORE-1", name="Closed store", is_active=False))
    finally:
        database.dispose()
    with pytest.raises(GenerationRefused, match="STORE-1 exists and is archived"):
        generate(migrated_url, REPLAYED)
    assert scalar(migrated_url, "SELECT COUNT(*) FROM categories") == 0
    assert scalar(migrated_url, "SELECT COUNT(*) FROM products") == 0


def test_an_unmigrated_database_is_refused(empty_database_url):
    with pytest.raises(GenerationRefused, match="storekeeper db upgrade"):
        generate(empty_database_url, REPLAYED)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"products": 0, "movements": 10}, "movements need products"),
        ({"products": -1, "movements": 0}, "must not be negative"),
        ({"products": 5, "movements": 5, "locations": 0}, "location"),
        ({"products": 5, "movements": 5, "days": 0}, "one day"),
        ({"products": 5, "movements": 5, "now": datetime(2026, 1, 1)}, "timezone"),
    ],
)
def test_impossible_specs_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        GenerationSpec(**fields)


def test_the_generator_writes_every_column_the_models_have():
    datagen.check_model_columns()  # raises when a model gains or loses a column
