"""``storekeeper demo``: a small, realistic catalog with 90 days of stock history to explore.

It migrates the database first (a no-op when it is current), then writes, in one transaction,
the demo of :data:`service.datagen.DEMO_SPEC`: 80 products in a two- and three-level category
tree (``Tools/Hand tools``, ``Fasteners/Screws``, ``Electrical/Cables`` ...), the locations
WH-MAIN, WH-NORTH, STORE-1 and RETURNS, and receipts, shipments, transfers, adjustments and
a few reversals over the past 90 days, exactly as the ledger would have posted them. A few
products end below their reorder point, so the low-stock alerts and the reports have
something to show.

* An empty catalog (no products) gets the demo.
* A catalog with products is refused (exit 1), unless ``--force``: then the demo is added
  beside what is there. A category with the same name under the same parent and a location
  with the same code are reused, nothing that exists is changed, and if any demo SKU exists
  already (the demo is loaded) the whole run is refused (exit 1) and nothing is written.
* ``--if-empty`` (``make run DEMO=1``): with products in the catalog, say so and exit 0.
* ``--ask`` (``make run``): only on a terminal and an empty catalog, ask first (default no);
  otherwise do nothing, silently, so that scripts and CI never block on it.

Exit codes: 0 loaded (or nothing to do), 1 refused, 2 the database cannot be used.
"""

from __future__ import annotations

import sys

import click
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from service import migrate
from service.cli.common import EXIT_FAILED, database_url_option, fail, open_database, redacted
from service.models import Product


def _interactive() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def _product_count(database_url: str) -> int:
    with open_database(database_url) as database, database.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(Product)) or 0


def _migrate(database_url: str) -> None:
    try:
        migrate.upgrade(database_url)
    except (SQLAlchemyError, OSError) as exc:
        kind = exc.__class__.__name__
        fail(f"cannot migrate {redacted(database_url)}: {kind}: {exc}", cause=exc)


@click.command()
@database_url_option("Database to load the demo into.")
@click.option(
    "--force",
    is_flag=True,
    help="Load even if the catalog has products: the demo is added beside them "
    "(same-named categories and location codes are reused, nothing existing changes). "
    "Still refused if the demo is loaded already.",
)
@click.option(
    "--if-empty",
    is_flag=True,
    help="If the catalog has products, say so and exit 0 instead of refusing.",
)
@click.option(
    "--ask",
    is_flag=True,
    help="Ask first, and only on a terminal with an empty catalog; otherwise do nothing.",
)
def demo(database_url: str, force: bool, if_empty: bool, ask: bool) -> None:
    """Load a demo catalog with 90 days of stock history (into an empty catalog).

    Exit codes: 0 loaded or nothing to do, 1 refused (the catalog has products and no
    --force, or the demo is loaded already), 2 the database cannot be used.
    """
    from service import datagen

    if ask and not _interactive():
        return  # make run without a terminal: never block, change nothing
    spec = datagen.DEMO_SPEC
    _migrate(database_url)
    products = _product_count(database_url)
    if products and not force:
        if ask:
            return
        if if_empty:
            click.echo(f"demo: the catalog already has {products} products; not loading the demo")
            return
        fail(
            f"the catalog already has {products} products; the demo is meant for an empty "
            "one. 'storekeeper demo --force' adds it beside them.",
            EXIT_FAILED,
        )
    if ask and not click.confirm(
        f"Load the demo catalog (about {spec.products} products with {spec.days} days of "
        "stock history)?",
        default=False,
    ):
        return

    try:
        result = datagen.generate(database_url, spec)
    except datagen.CatalogLoaded as exc:
        fail(
            f"the demo catalog is loaded already (a product with SKU {exc.sku} exists); "
            "nothing was written",
            EXIT_FAILED,
            exc,
        )
    except datagen.GenerationRefused as exc:
        fail(f"the demo was not loaded: {exc}", EXIT_FAILED, exc)
    except SQLAlchemyError as exc:
        fail(f"cannot write the demo: {exc.__class__.__name__}: {exc}", cause=exc)
    click.echo(render(database_url, spec, result))


def render(database_url: str, spec, result) -> str:
    documents = sum(result.documents.values())
    kinds = ", ".join(f"{count} {kind}s" for kind, count in result.documents.items())
    reused = []
    if result.categories_reused:
        reused.append(f"{result.categories_reused} existing categories")
    if result.locations_reused:
        reused.append(f"{result.locations_reused} existing locations")
    lines = [
        f"Loaded the demo catalog into {redacted(database_url)} in {result.seconds:.1f} s:",
        f"  {result.products} products in {result.categories} new categories "
        "(Tools/Hand tools, Fasteners/Screws, Electrical/Cables, ...)",
        f"  locations {', '.join(result.location_codes)}",
        f"  {result.movements} stock movements in {documents} documents over the past "
        f"{spec.days} days ({kinds})",
        f"  {result.low_stock_products} products at or below their reorder point "
        f"(GET /api/v1/stock/low-stock), {result.archived_products} archived",
    ]
    if reused:
        lines.append(f"  reused {' and '.join(reused)}")
    lines += [
        "Next: create an admin (storekeeper users create --role admin --email you@example.com),",
        "serve (make run) and sign in at http://127.0.0.1:8080/apidocs/.",
    ]
    return "\n".join(lines)
