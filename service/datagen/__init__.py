"""A realistic catalog and stock history, written straight into the database in bulk.

``generate(database_url, GenerationSpec(...))`` lays out a category tree (``Tools/Hand tools``,
``Fasteners/Screws`` ...), locations (``WH-MAIN``, ``STORE-1``, ``RETURNS`` ...) and products
with realistic names, SKUs, units, costs and reorder points, simulates a stock history of
exactly ``movements`` ledger movements over the past ``days`` days, and writes it all in one
transaction: the rows :func:`service.domain.ledger.post` would have written for the same
documents, in bulk instead of an ORM round trip per row. The same spec and seed give the same
data, and ``storekeeper stock verify`` passes on it. Meant for a database nobody else writes to
meanwhile (a demo, a benchmark).

The parts: :mod:`~service.datagen.spec` (what to generate, what came of it, refusals),
:mod:`~service.datagen.catalog` (the catalog, from ``catalog.yaml``),
:mod:`~service.datagen.history` (the documents and movements) and
:mod:`~service.datagen.writers` (the bulk writes on SQLite and PostgreSQL).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from service.datagen.catalog import lay_out_categories, make_locations, make_products
from service.datagen.history import History, settle_reorder_points, timelines
from service.datagen.spec import (
    DEMO_SPEC,
    CatalogLoaded,
    GenerationRefused,
    GenerationResult,
    GenerationSpec,
)
from service.datagen.writers import (
    FLUSH_EVERY,
    TABLE_COLUMNS,
    BackgroundWriter,
    InlineWriter,
    PostgresWriter,
    SqliteWriter,
    check_model_columns,
    insert_products,
    refuse_existing_skus,
    require_schema,
    write_categories,
    write_locations,
)

__all__ = [
    "DEMO_SPEC",
    "TABLE_COLUMNS",
    "CatalogLoaded",
    "GenerationRefused",
    "GenerationResult",
    "GenerationSpec",
    "check_model_columns",
    "generate",
]


def generate(
    database_url: str,
    spec: GenerationSpec,
    *,
    progress: Callable[[str], None] | None = None,
    trust_references: bool = True,
) -> GenerationResult:
    """Write the catalog and history of ``spec`` into the (migrated) database, all or nothing.

    ``trust_references=False`` keeps PostgreSQL's foreign-key triggers on even when the role
    could skip them (slower; the tests use it to cover that path).
    """
    from service.db import make_engine
    from service.domain.ledger import moving_average

    check_model_columns()
    say = progress or (lambda _message: None)
    began = time.perf_counter()
    result = GenerationResult()
    now = spec.now or datetime.now(UTC)
    setup_at, opening_clock, regular_clock = timelines(now, spec.days)
    rng = random.Random(spec.seed)
    categories = lay_out_categories()
    products = make_products(rng, spec.products, categories)
    locations = make_locations(spec.locations)
    tables = list(TABLE_COLUMNS)

    engine = make_engine(database_url)
    try:
        require_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    raw = engine.raw_connection()
    writer: SqliteWriter | PostgresWriter | None = None
    sink: BackgroundWriter | InlineWriter | None = None
    try:
        writer = (
            PostgresWriter(raw, tables, trust_references)
            if engine.dialect.name == "postgresql"
            else SqliteWriter(raw)
        )
        result.foreign_keys = writer.foreign_keys
        ids = writer.next_ids(tables)
        phase = time.perf_counter()
        write_categories(writer, categories, ids, setup_at, result)
        location_ids = write_locations(writer, locations, ids, setup_at, result)
        refuse_existing_skus(writer, products)
        first_product_id = ids["products"] + 1
        product_ids = list(range(first_product_id, first_product_id + len(products)))
        # Created during the hour before opening stock, in id order.
        spread = timedelta(minutes=55) / max(len(products), 1)
        created = [setup_at + timedelta(minutes=2) + spread * i for i in range(len(products))]
        if not writer.products_last:
            # Checked references: the products exist before their movements, and get their
            # final cost, version and reorder point by an UPDATE at the end.
            insert_products(writer, products, product_ids, categories, created, None)
        result.products = len(products)
        result.phases["catalog"] = time.perf_counter() - phase
        say(f"catalog: {result.categories} categories, {result.products} products")

        phase = time.perf_counter()
        sink = writer.sink()
        history = History(
            spec,
            rng,
            products,
            product_ids,
            location_ids,
            [role for _, _, role in locations],
            writer,
            sink,
            ids,
            moving_average,
        )
        history.run(opening_clock, regular_clock)
        sink.close()
        result.movements = history.produced
        result.documents = {k: v for k, v in history.kinds.items() if v}
        result.first_movement_at, result.last_movement_at = history.first_at, history.last_at
        result.phases["history"] = time.perf_counter() - phase
        say(f"history: {sum(result.documents.values())} documents, {result.movements} movements")

        phase = time.perf_counter()
        result.archived_products = history.active.count(False)
        result.low_stock_products = settle_reorder_points(spec, rng, products, history)
        if writer.products_last:
            insert_products(writer, products, product_ids, categories, created, history)
        else:
            writer.update_products(
                [
                    (
                        product_ids[i],
                        history.average_scaled[i],
                        products[i].reorder_point,
                        products[i].reorder_quantity,
                        writer.boolean(history.active[i]),
                        writer.time(history.changed_at[i] or created[i]),
                        history.version[i],
                    )
                    for i in range(len(products))
                ]
            )
        level_rows = [
            (level_id, product_id, location_id, on_hand, updated_at)
            for (product_id, location_id), (level_id, updated_at, on_hand) in sorted(
                history.levels.items(), key=lambda item: item[1][0]
            )
        ]
        for start in range(0, len(level_rows), FLUSH_EVERY):
            writer.insert("stock_levels", level_rows[start : start + FLUSH_EVERY])
        result.levels = len(level_rows)
        result.phases["products_and_levels"] = time.perf_counter() - phase

        phase = time.perf_counter()
        ids.update(
            stock_documents=history.next_document,
            stock_movements=history.next_movement,
            stock_levels=history.next_level,
            products=ids["products"] + len(products),
        )
        writer.finish(ids)
        result.phases["commit"] = time.perf_counter() - phase
        phase = time.perf_counter()
        writer.analyze(tables)
        result.phases["analyze"] = time.perf_counter() - phase
    except BaseException:
        if sink is not None:
            sink.close(raise_error=False)  # no more writes from its thread
        if writer is not None:
            writer.abort()
        raise
    finally:
        raw.close()
        engine.dispose()
    result.seconds = time.perf_counter() - began
    return result
