"""`storekeeper report valuation|movements`: the API's reports as tables, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner

from service import migrate
from service.cli import main
from service.db import Database
from service.domain import ledger
from service.models import Category, Location, Product


@pytest.fixture()
def migrated_url(empty_database_url) -> Iterator[str]:
    migrate.upgrade(empty_database_url)
    yield empty_database_url


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture()
def stocked(migrated_url, monkeypatch) -> str:
    """WH-A holds 10 bolts (avg 1.75 after two receipts) and 4 nuts; 2 bolts moved to WH-B."""
    database = Database(migrated_url)
    try:
        with database.transaction() as session:
            fasteners = Category(name="Fasteners")
            session.add(fasteners)
            session.flush()
            a, b = Location(code="WH-A", name="Warehouse A"), Location(code="WH-B", name="B")
            bolt = Product(sku="BOLT-M6", name="Bolt M6", category_id=fasteners.id)
            nut = Product(sku="NUT-M6", name="Nut M6")
            session.add_all([a, b, bolt, nut])
            session.flush()
            a, b, bolt, nut = a.id, b.id, bolt.id, nut.id

        def post(when: str, kind: str, *changes: tuple) -> None:
            monkeypatch.setattr(ledger, "utcnow", lambda: at(when))
            lines = [
                ledger.Change(
                    line_no=i,
                    kind=k,
                    product_id=p,
                    location_id=loc,
                    quantity=q,
                    unit_cost=Decimal(c) if c else None,
                )
                for i, (k, p, loc, q, c) in enumerate(changes)
            ]
            with database.transaction() as session:
                ledger.post(session, ledger.Posting(kind, lines))

        post("2026-11-02T09:00:00", "receipt", ("receipt", bolt, a, 6, "1.5"))
        post(
            "2026-11-02T10:00:00",
            "receipt",
            ("receipt", bolt, a, 6, "2"),
            ("receipt", nut, a, 4, "0.25"),
        )
        post(
            "2026-11-03T09:00:00",
            "transfer",
            ("transfer_out", bolt, a, -2, None),
            ("transfer_in", bolt, b, 2, None),
        )
    finally:
        database.dispose()
    return migrated_url


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["report", *args], env=env)


def test_valuation_table_is_aligned_with_totals(stocked):
    result = run("valuation", "--database-url", stocked)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Stock valuation by category as of ")
    assert lines[2].split() == ["key", "label", "name", "products", "quantity", "value"]
    # Bolts 12 * 1.75, nuts 4 * 0.25; numbers right-aligned under their headers.
    assert lines[4].split() == ["none", "(uncategorised)", "1", "4", "1.000000"]
    assert lines[5].split() == ["1", "Fasteners", "Fasteners", "1", "12", "21.000000"]
    assert lines[7].split() == ["total", "2", "16", "22.000000"]
    value_end = lines[2].index("value") + len("value")
    assert all(len(line) == value_end for line in (lines[2], lines[4], lines[5], lines[7]))


def test_valuation_json_and_csv_are_the_apis(stocked):
    as_json = run(
        "valuation", "--database-url", stocked, "--group-by", "location", "--format", "json"
    )
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["group_by"] == "location"
    assert [(r["label"], r["products"], r["quantity"], r["value"]) for r in body["rows"]] == [
        ("WH-A", 2, 14, "18.500000"),
        ("WH-B", 1, 2, "3.500000"),
    ]
    assert body["totals"] == {"products": 2, "quantity": 16, "value": "22.000000"}

    as_csv = run(
        "valuation",
        "--database-url",
        stocked,
        "--group-by",
        "location",
        "--as-of",
        body["as_of"],
        "--format",
        "csv",
    )
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.reader(io.StringIO(as_csv.output)))
    assert rows[0] == ["key", "label", "name", "products", "quantity", "value"]
    assert rows[1:] == [
        [r["key"], r["label"], r["name"], str(r["products"]), str(r["quantity"]), r["value"]]
        for r in body["rows"]
    ] + [["total", "", "", "2", "16", "22.000000"]]


def test_valuation_as_of_the_past(stocked):
    result = run(
        "valuation",
        "--database-url",
        stocked,
        "--as-of",
        "2026-11-02T09:30:00Z",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["as_of"] == "2026-11-02T09:30:00.000000+00:00"
    assert [(r["label"], r["quantity"], r["value"]) for r in body["rows"]] == [
        ("Fasteners", 6, "9.000000")
    ]


def test_movements_table_and_filters(stocked):
    result = run(
        "movements",
        "--database-url",
        stocked,
        "--from",
        "2026-11-01T00:00:00Z",
        "--to",
        "2026-11-08T00:00:00Z",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "Stock movements by day from 2026-11-01T00:00:00.000000+00:00 "
        "to 2026-11-08T00:00:00.000000+00:00 (exclusive)"
    )
    assert [line.split() for line in lines[4:6]] == [
        ["2026-11-02", "2026-11-02", "16", "0", "16", "3"],
        ["2026-11-03", "2026-11-03", "2", "2", "0", "2"],
    ]
    assert lines[7].split() == ["total", "18", "2", "16", "5"]

    filtered = run(
        "movements",
        "--database-url",
        stocked,
        "--group-by",
        "location",
        "--from",
        "2026-11-01T00:00:00Z",
        "--kind",
        "transfer_in",
        "--format",
        "json",
    )
    assert filtered.exit_code == 0, filtered.output
    body = json.loads(filtered.output)
    assert [(r["label"], r["name"], r["quantity_in"]) for r in body["rows"]] == [("WH-B", "B", 2)]


def test_an_empty_report_says_so(migrated_url):
    result = run("movements", "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    assert "(no rows)" in result.output
    assert result.output.splitlines()[-1].split() == ["total", "0", "0", "0", "0"]


def test_database_url_comes_from_the_environment(stocked):
    result = run("valuation", "--format", "json", env={"DATABASE_URL": stocked})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"]["quantity"] == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["valuation", "--as-of", "yesterday"], "--as-of"),
        (["movements", "--from", "2026-11-08T00:00:00Z", "--to", "2026-11-01T00:00:00Z"], "--from"),
        (["movements", "--group-by", "week"], "--group-by"),
        (["valuation", "--format", "xml"], "--format"),
    ],
)
def test_bad_arguments_exit_2(migrated_url, args, message):
    result = run(*args, "--database-url", migrated_url)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_unusable_database_exits_2(empty_database_url, tmp_path):
    missing = run("valuation", "--database-url", f"sqlite:///{tmp_path}/nothing.db")
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    database = Database(empty_database_url)
    with database.engine.connect():  # creates an empty SQLite file
        pass
    database.dispose()
    unmigrated = run("movements", "--database-url", empty_database_url)
    assert unmigrated.exit_code == 2
    assert "storekeeper db upgrade" in unmigrated.output
