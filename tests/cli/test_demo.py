"""`storekeeper demo`: the demo catalog, loaded into an empty database on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from service import migrate
from service.cli import demo as demo_cli
from service.cli import main
from service.datagen import DEMO_SPEC
from service.db import Database, make_engine
from service.models import Location, Product

LOW_STOCK = (
    # The rule of GET /api/v1/stock/low-stock: active, a reorder point, total at or below it.
    "SELECT COUNT(*) FROM products p WHERE p.is_active AND p.reorder_point > 0 AND "
    "(SELECT COALESCE(SUM(on_hand), 0) FROM stock_levels l WHERE l.product_id = p.id) "
    "<= p.reorder_point"
)


def demo(url: str, *args: str, input: str | None = None):
    return CliRunner().invoke(main, ["demo", "--database-url", url, *args], input=input)


def scalar(url: str, sql: str):
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def counts(url: str) -> tuple[int, ...]:
    return tuple(
        scalar(url, f"SELECT COUNT(*) FROM {table}")
        for table in ("categories", "locations", "products", "stock_documents", "stock_movements")
    )


def add_own_catalog(url: str) -> None:
    """Someone's own product and a location whose code the demo also uses."""
    migrate.upgrade(url)
    database = Database(url)
    try:
        with database.transaction() as session:
            session.add(Product(sku="MY-OWN-1", name="Our own product"))
            session.add(Location(code="WH-MAIN", name="Our warehouse"))
    finally:
        database.dispose()


def test_demo_migrates_and_loads_an_empty_database(empty_database_url):
    result = demo(empty_database_url)
    assert result.exit_code == 0, result.output
    assert "Loaded the demo catalog" in result.output
    assert f"{DEMO_SPEC.products} products" in result.output
    assert "locations WH-MAIN, WH-NORTH, STORE-1, RETURNS" in result.output

    assert scalar(empty_database_url, "SELECT COUNT(*) FROM products") == DEMO_SPEC.products
    assert scalar(empty_database_url, "SELECT COUNT(*) FROM stock_movements") == 2400
    codes = scalar(empty_database_url, "SELECT COUNT(*) FROM locations")
    assert codes == 4
    hand_tools = scalar(
        empty_database_url,
        "SELECT COUNT(*) FROM categories c JOIN categories p ON p.id = c.parent_id "
        "WHERE p.name = 'Tools' AND c.name = 'Hand tools'",
    )
    assert hand_tools == 1
    # About 90 days of history, and something for the low-stock alerts to show.
    days = scalar(
        empty_database_url,
        "SELECT COUNT(DISTINCT substr(CAST(created_at AS TEXT), 1, 10)) FROM stock_documents",
    )
    assert days >= 60
    low = scalar(empty_database_url, LOW_STOCK)
    assert 3 <= low <= 10
    assert f"{low} products at or below their reorder point" in result.output

    verify = CliRunner().invoke(main, ["stock", "verify", "--database-url", empty_database_url])
    assert verify.exit_code == 0, verify.output


def test_demo_refuses_a_catalog_with_products(empty_database_url):
    add_own_catalog(empty_database_url)
    before = counts(empty_database_url)
    result = demo(empty_database_url)
    assert result.exit_code == 1
    assert "already has 1 products" in result.output
    assert "--force" in result.output
    assert counts(empty_database_url) == before


def test_force_adds_the_demo_beside_existing_products_once(empty_database_url):
    add_own_catalog(empty_database_url)
    result = demo(empty_database_url, "--force")
    assert result.exit_code == 0, result.output
    assert "reused 1 existing locations" in result.output
    assert scalar(empty_database_url, "SELECT COUNT(*) FROM products") == DEMO_SPEC.products + 1
    # WH-MAIN was reused, not duplicated; the own product is untouched.
    assert scalar(empty_database_url, "SELECT COUNT(*) FROM locations") == 4
    assert scalar(empty_database_url, "SELECT name FROM locations WHERE code = 'WH-MAIN'") == (
        "Our warehouse"
    )
    assert scalar(empty_database_url, "SELECT version FROM products WHERE sku = 'MY-OWN-1'") == 1

    loaded = counts(empty_database_url)
    again = demo(empty_database_url, "--force")
    assert again.exit_code == 1
    assert "demo catalog is loaded already" in again.output
    assert counts(empty_database_url) == loaded


def test_if_empty_skips_a_catalog_with_products(empty_database_url):
    add_own_catalog(empty_database_url)
    before = counts(empty_database_url)
    result = demo(empty_database_url, "--if-empty")
    assert result.exit_code == 0, result.output
    assert "not loading the demo" in result.output
    assert counts(empty_database_url) == before


def test_if_empty_loads_an_empty_catalog(empty_database_url):
    result = demo(empty_database_url, "--if-empty")
    assert result.exit_code == 0, result.output
    assert scalar(empty_database_url, "SELECT COUNT(*) FROM products") == DEMO_SPEC.products


def test_ask_without_a_terminal_does_nothing_at_all(empty_database_url):
    result = demo(empty_database_url, "--ask")  # CliRunner's stdin is not a terminal
    assert result.exit_code == 0, result.output
    assert result.output == ""
    engine = make_engine(empty_database_url)
    try:
        assert not inspect(engine).has_table("products")  # not even migrated
    finally:
        engine.dispose()


@pytest.mark.parametrize(("answer", "loaded"), [("y\n", True), ("\n", False), ("n\n", False)])
def test_ask_on_a_terminal_loads_only_on_yes(empty_database_url, monkeypatch, answer, loaded):
    monkeypatch.setattr(demo_cli, "_interactive", lambda: True)
    result = demo(empty_database_url, "--ask", input=answer)
    assert result.exit_code == 0, result.output
    assert (
        "Load the demo catalog (about 80 products with 90 days of stock history)? [y/N]"
        in result.output
    )
    expected = DEMO_SPEC.products if loaded else 0
    assert scalar(empty_database_url, "SELECT COUNT(*) FROM products") == expected


def test_ask_on_a_terminal_with_products_asks_nothing(empty_database_url, monkeypatch):
    add_own_catalog(empty_database_url)
    monkeypatch.setattr(demo_cli, "_interactive", lambda: True)
    result = demo(empty_database_url, "--ask", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert scalar(empty_database_url, "SELECT COUNT(*) FROM products") == 1


def test_a_database_that_cannot_be_used_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = demo(f"sqlite:///{blocker}/sub/storekeeper.db")
    assert result.exit_code == 2
    assert "error: cannot migrate" in result.output
    unreachable = demo("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    assert unreachable.exit_code == 2
    assert "error: cannot migrate" in unreachable.output
