"""`storekeeper stock verify`: levels recomputed from the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from service import migrate
from service.cli import main
from service.db import Database
from service.domain import ledger
from service.models import Location, Product


@pytest.fixture()
def migrated_url(empty_database_url) -> Iterator[str]:
    """A fresh database of its own: these tests break it on purpose."""
    migrate.upgrade(empty_database_url)
    yield empty_database_url


@pytest.fixture()
def database(migrated_url) -> Iterator[Database]:
    database = Database(migrated_url)
    yield database
    database.dispose()


def _post(database: Database, posting: ledger.Posting) -> None:
    with database.transaction() as session:
        ledger.post(session, posting)


def _line(kind: str, product_id: int, location_id: int, quantity: int, **fields):
    return ledger.Change(
        line_no=0,
        kind=kind,
        product_id=product_id,
        location_id=location_id,
        quantity=quantity,
        **fields,
    )


@pytest.fixture()
def stocked(database) -> dict[str, int]:
    """Two products at two locations, with receipts, a shipment and a transfer."""
    with database.transaction() as session:
        locations = [Location(code=code, name=f"Location {code}") for code in ("WH-A", "WH-B")]
        products = [Product(sku=sku, name=f"Product {sku}") for sku in ("BOLT-M6", "NUT-M6")]
        session.add_all(locations + products)
        session.flush()
        ids = {
            "a": locations[0].id,
            "b": locations[1].id,
            "bolt": products[0].id,
            "nut": products[1].id,
        }
    a, b, bolt, nut = ids["a"], ids["b"], ids["bolt"], ids["nut"]
    cost = {"unit_cost": Decimal("1.5000")}
    _post(database, ledger.Posting("receipt", [_line("receipt", bolt, a, 10, **cost)]))
    _post(database, ledger.Posting("receipt", [_line("receipt", nut, a, 4, **cost)]))
    _post(database, ledger.Posting("shipment", [_line("shipment", bolt, a, -3)]))
    transfer = [_line("transfer_out", bolt, a, -2), _line("transfer_in", bolt, b, 2)]
    _post(database, ledger.Posting("transfer", transfer, location_id=a, to_location_id=b))
    return ids


def verify(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["stock", "verify", *args], env=env)


def test_verify_passes_on_an_empty_database(migrated_url):
    result = verify("--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    assert "levels checked:  0" in result.output
    assert "OK" in result.output


def test_verify_passes_when_levels_equal_the_ledger(migrated_url, stocked):
    result = verify("--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    assert "levels checked:  3" in result.output
    assert "movements:       5" in result.output
    assert "documents:       4" in result.output
    assert "drift rows:      0" in result.output


def test_verify_reads_database_url_from_the_environment(migrated_url, stocked):
    result = verify(env={"DATABASE_URL": migrated_url})
    assert result.exit_code == 0, result.output
    assert "levels checked:  3" in result.output


def test_verify_reports_drift_and_exits_1(migrated_url, database, stocked):
    # stock_levels is not append-only: a raw UPDATE is the drift verify exists to catch.
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE stock_levels SET on_hand = on_hand + 7 "
                "WHERE product_id = :product AND location_id = :location"
            ),
            {"product": stocked["bolt"], "location": stocked["a"]},
        )
    result = verify("--database-url", migrated_url)
    assert result.exit_code == 1, result.output
    assert "drift rows:      1" in result.output
    row = next(line for line in result.output.splitlines() if "BOLT-M6" in line)
    # product, sku, location, code, level, ledger, diff
    bolt, a = str(stocked["bolt"]), str(stocked["a"])
    assert row.split() == [bolt, "BOLT-M6", a, "WH-A", "12", "5", "+7"]
    assert "FAILED" in result.output


def test_verify_reports_a_missing_level(migrated_url, database, stocked):
    with database.engine.begin() as connection:
        connection.execute(
            text("DELETE FROM stock_levels WHERE product_id = :product AND location_id = :loc"),
            {"product": stocked["nut"], "loc": stocked["a"]},
        )
    result = verify("--database-url", migrated_url)
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if "NUT-M6" in line)
    assert row.split()[-3:] == ["missing", "4", "-4"]


def test_verify_reports_a_negative_level(migrated_url, database, stocked):
    # The schema forbids negative levels; lift the CHECK to simulate a corrupt database.
    with database.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(
                    "ALTER TABLE stock_levels "
                    "DROP CONSTRAINT ck_stock_levels_on_hand_never_negative"
                )
            )
        else:
            connection.execute(text("PRAGMA ignore_check_constraints = ON"))
        connection.execute(
            text("UPDATE stock_levels SET on_hand = -1 WHERE product_id = :p AND location_id = :l"),
            {"p": stocked["bolt"], "l": stocked["b"]},
        )
    result = verify("--database-url", migrated_url)
    assert result.exit_code == 1, result.output
    assert "negative levels: 1" in result.output
    negative = result.output.split("negative levels:\n", 1)[1]
    row = next(line for line in negative.splitlines() if "BOLT-M6" in line)
    assert row.split() == [str(stocked["bolt"]), "BOLT-M6", str(stocked["b"]), "WH-B", "-1"]


def test_verify_exits_2_when_the_database_is_not_migrated(empty_database_url):
    result = verify("--database-url", empty_database_url)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output


def test_verify_exits_2_when_the_database_is_unreachable():
    url = "postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2"
    result = verify("--database-url", url)
    assert result.exit_code == 2, result.output
    assert "cannot read the database" in result.output


# --- storekeeper stock checkpoint ---------------------------------------------------------------


def checkpoint(*args: str):
    return CliRunner().invoke(main, ["stock", "checkpoint", *args])


@pytest.fixture()
def stocked_last_month(database, monkeypatch) -> dict[str, int]:
    """A receipt and a transfer posted 40 days ago, before this month's checkpoint."""
    monkeypatch.setattr(ledger, "utcnow", lambda: datetime.now(UTC) - timedelta(days=40))
    with database.transaction() as session:
        locations = [Location(code=code, name=code) for code in ("WH-A", "WH-B")]
        product = Product(sku="BOLT-M6", name="Bolt")
        session.add_all([*locations, product])
        session.flush()
        a, b, bolt = locations[0].id, locations[1].id, product.id
    _post(database, ledger.Posting("receipt", [_line("receipt", bolt, a, 10, unit_cost=1)]))
    transfer = [_line("transfer_out", bolt, a, -4), _line("transfer_in", bolt, b, 4)]
    _post(database, ledger.Posting("transfer", transfer, location_id=a, to_location_id=b))
    monkeypatch.undo()
    return {"a": a, "b": b, "bolt": bolt}


def test_checkpoint_closes_the_start_of_this_month_once(migrated_url, stocked_last_month):
    result = checkpoint("--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    month = datetime.now(UTC).strftime("%Y-%m-01T00:00:00.000000+00:00")
    assert f"checkpoint:      1 at {month} (closed)" in result.output
    assert "pairs held:      2" in result.output
    assert "units:           10" in result.output
    again = checkpoint("--database-url", migrated_url)
    assert again.exit_code == 0, again.output
    assert "(closed already)" in again.output
    checked = verify("--database-url", migrated_url)
    assert checked.exit_code == 0, checked.output
    assert "checkpoints:     1" in checked.output
    assert "bad checkpoints: 0" in checked.output


def test_checkpoint_every_week_closes_this_monday(migrated_url, stocked_last_month):
    now = datetime.now(UTC)
    monday = (now - timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    if now - monday < timedelta(minutes=11):
        pytest.skip("Monday 00:00 UTC is still too recent to close")
    result = checkpoint("--database-url", migrated_url, "--every", "week")
    assert result.exit_code == 0, result.output
    assert f"at {monday.strftime('%Y-%m-%dT00:00:00.000000+00:00')} (closed)" in result.output
    assert "units:           10" in result.output
    assert checkpoint("--database-url", migrated_url, "--every", "day").exit_code == 2


@pytest.mark.parametrize(
    ("at", "exit_code", "says"),
    [
        ("2999-01-01T00:00:00Z", 1, "too recent"),
        ("yesterday", 2, "--at"),
    ],
)
def test_checkpoint_refuses_a_recent_or_malformed_moment(migrated_url, at, exit_code, says):
    result = checkpoint("--database-url", migrated_url, "--at", at)
    assert result.exit_code == exit_code, result.output
    assert says in result.output
    checked = verify("--database-url", migrated_url)
    assert "checkpoints:     0" in checked.output


def test_verify_reports_a_checkpoint_that_differs_from_the_ledger(
    migrated_url, database, stocked_last_month
):
    assert checkpoint("--database-url", migrated_url).exit_code == 0
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE stock_checkpoint_balances SET on_hand = 5 WHERE location_id = :b"),
            {"b": stocked_last_month["b"]},
        )
    result = verify("--database-url", migrated_url)
    assert result.exit_code == 1, result.output
    assert "bad checkpoints: 1" in result.output
    row = next(line for line in result.output.splitlines() if line.strip().startswith("1 "))
    bolt, b = stocked_last_month["bolt"], stocked_last_month["b"]
    # id, at, header (pairs and units no longer add up), only in checkpoint, only in ledger
    assert "wrong" in row
    assert f"{bolt} {b} 5 1000000" in row
    assert f"{bolt} {b} 4 1000000" in row
