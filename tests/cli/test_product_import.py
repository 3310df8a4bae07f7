"""`storekeeper import products` and `storekeeper export products`: the API's code, from files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from service.cli import main
from tests.helpers import create_category, create_product

PRODUCTS = "/api/v1/products"


@pytest.fixture()
def run(database_url, client):
    """Invoke the CLI against the test database (emptied by the ``client`` fixture)."""

    def invoke(*args: str, input: bytes | None = None):
        return CliRunner().invoke(main, list(args), env={"DATABASE_URL": database_url}, input=input)

    return invoke


def all_products(client) -> dict[str, dict]:
    items = client.get(PRODUCTS, params={"limit": 200}).json()["items"]
    return {p["sku"]: p for p in items}


def test_import_csv_prints_counts_and_progress(run, client, tmp_path):
    create_product(client, "HAM-16OZ", name="Claw hammer")
    source = tmp_path / "products.csv"
    source.write_text("sku,name\nHAM-16OZ,Renamed hammer\nNEW-1,New\n")

    result = run("import", "products", str(source))

    assert result.exit_code == 0, result.output
    assert "rows: 2, created: 1, updated: 1, unchanged: 0" in result.stdout
    assert "Checking rows" in result.stderr
    assert "Writing products" in result.stderr
    assert all_products(client)["HAM-16OZ"]["name"] == "Renamed hammer"


def test_import_json_file(run, client, tmp_path):
    source = tmp_path / "products.json"
    source.write_text(json.dumps([{"sku": "J-1", "name": "From JSON", "reorder_point": 4}]))

    result = run("import", "products", str(source))

    assert result.exit_code == 0, result.output
    assert all_products(client)["J-1"]["reorder_point"] == 4


def test_dry_run_writes_nothing(run, client, tmp_path):
    source = tmp_path / "products.csv"
    source.write_text("sku,name\nNEW-1,New\n")

    result = run("import", "products", str(source), "--dry-run")

    assert result.exit_code == 0, result.output
    assert "created: 1" in result.stdout
    assert "dry run: nothing was written" in result.stdout
    assert "Writing products" not in result.stderr
    assert all_products(client) == {}


def test_row_errors_are_listed_by_line_and_exit_1(run, client, tmp_path):
    source = tmp_path / "products.csv"
    source.write_text("sku,name,reorder_point\nGOOD-1,Good,1\nBAD-1,,2\nBAD-2,Bad,-3\n")

    result = run("import", "products", str(source))

    assert result.exit_code == 1
    assert "2 problem(s) in 2 row(s); nothing was imported" in result.stderr
    assert "line 3, name: This field may not be empty." in result.stderr
    assert "line 4, reorder_point: -3 is less than the minimum of 0" in result.stderr
    assert all_products(client) == {}


def test_json_schema_errors_are_listed_too(run, tmp_path):
    source = tmp_path / "products.json"
    source.write_text(json.dumps([{"sku": "J 1", "colour": "red"}]))

    result = run("import", "products", str(source))

    assert result.exit_code == 1
    assert "line 1, colour: Unknown field." in result.stderr
    assert "line 1, sku: 'J 1' does not match" in result.stderr


def test_a_file_that_is_not_a_table_exits_1(run, tmp_path):
    source = tmp_path / "products.csv"
    source.write_bytes(b"sku,name\nA,caf\xe9\n")

    result = run("import", "products", str(source))

    assert result.exit_code == 1
    assert "not valid UTF-8" in result.stderr


def test_an_unknown_extension_needs_format(run, client, tmp_path):
    source = tmp_path / "products.txt"
    source.write_text("sku,name\nT-1,Text\n")

    assert run("import", "products", str(source)).exit_code == 2
    result = run("import", "products", str(source), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "T-1" in all_products(client)


def test_a_missing_file_exits_2(run, tmp_path):
    result = run("import", "products", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_a_missing_database_exits_2(tmp_path):
    source = tmp_path / "products.csv"
    source.write_text("sku,name\nA,b\n")
    result = CliRunner().invoke(
        main,
        ["import", "products", str(source)],
        env={"DATABASE_URL": f"sqlite:///{tmp_path / 'missing.db'}"},
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_export_csv_to_stdout(run, client):
    tools = create_category(client, "Tools")
    create_product(client, "HAM-16OZ", name="Claw hammer", category_id=tools["id"])

    result = run("export", "products")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("id,sku,name,description,category_id,category_path")
    assert "HAM-16OZ,Claw hammer,,1,Tools,each" in lines[1]


def test_export_json_to_a_file_with_filters(run, client, tmp_path):
    create_product(client, "ON-1", is_active=True)
    create_product(client, "OFF-1", is_active=False)
    target = tmp_path / "out.json"

    result = run("export", "products", "--format", "json", "--output", str(target), "--archived")

    assert result.exit_code == 0, result.output
    assert "wrote 1 product(s)" in result.stderr
    assert [item["sku"] for item in json.loads(target.read_text())] == ["OFF-1"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cli_export_imports_back_unchanged(run, client, tmp_path, fmt):
    tools = create_category(client, "Tools")
    create_product(client, "HAM-16OZ", name="=Claw hammer", category_id=tools["id"])
    create_product(client, "SAW-1", name="Bow saw", description="Line one\nline two")
    before = all_products(client)
    target = tmp_path / f"catalog.{fmt}"

    assert run("export", "products", "--format", fmt, "-o", str(target)).exit_code == 0
    result = run("import", "products", str(target))

    assert result.exit_code == 0, result.output
    assert "rows: 2, created: 0, updated: 0, unchanged: 2" in result.stdout
    assert all_products(client) == before


def test_import_reads_standard_input(run, client):
    result = run("import", "products", "-", "--dry-run", input=b"sku,name\nIN-1,From stdin\n")

    assert result.exit_code == 0, result.output
    assert "rows: 1, created: 1" in result.stdout
    assert all_products(client) == {}
