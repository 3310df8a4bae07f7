"""The bulk writes: every generated row into SQLite or PostgreSQL, all or nothing.

One transaction for the whole generation:

* SQLite: ``executemany`` after ``BEGIN IMMEDIATE``; foreign keys are checked at commit
  (``defer_foreign_keys``), so the products go in last, with their final cost and version.
* PostgreSQL: ``COPY``, from a writer thread while the history is being made, after locking
  the tables it writes (others can still read); then the id sequences move past every id
  used, and ``ANALYZE`` runs. A role that may (a superuser) skips the foreign-key triggers for
  this transaction (``session_replication_role = replica``, as ``pg_restore
  --disable-triggers`` does) and writes the products last. Other roles keep them: products
  first, an UPDATE at the end.

Ids continue after the existing rows (and after deleted ones). A category with the same name
under the same parent and an active location with the same code are reused; an archived one
refuses the run, and so does a product SKU that exists already (:class:`CatalogLoaded`): the
same catalog is never loaded twice.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from service.datagen.spec import CatalogLoaded, GenerationRefused, GenerationResult

if TYPE_CHECKING:
    from service.datagen.catalog import CatalogCategory, CatalogProduct
    from service.datagen.history import History

# Rows buffered before they go to the database (one executemany / one COPY).
FLUSH_EVERY = 50_000

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "categories": (
        "id",
        "name",
        "description",
        "parent_id",
        "sibling_key",
        "created_at",
        "updated_at",
        "version",
    ),
    "locations": (
        "id",
        "code",
        "code_key",
        "name",
        "is_active",
        "created_at",
        "updated_at",
        "version",
    ),
    "products": (
        "id",
        "sku",
        "sku_key",
        "name",
        "description",
        "category_id",
        "unit_of_measure",
        "reorder_point",
        "reorder_quantity",
        "is_active",
        "created_at",
        "updated_at",
        "version",
        "average_cost",
    ),
    "stock_documents": (
        "id",
        "kind",
        "reference",
        "note",
        "location_id",
        "to_location_id",
        "created_at",
        "created_by_user_id",
        "created_by_api_key_id",
    ),
    "stock_movements": (
        "id",
        "document_id",
        "line_no",
        "kind",
        "product_id",
        "location_id",
        "quantity",
        "balance_after",
        "unit_cost",
        "average_cost_after",
        "reason",
        "note",
        "reference",
        "reversal_of",
        "created_at",
        "created_by_user_id",
        "created_by_api_key_id",
    ),
    "stock_levels": ("id", "product_id", "location_id", "on_hand", "updated_at"),
}
PRODUCT_UPDATE_COLUMNS = (
    "id",
    "average_cost",
    "reorder_point",
    "reorder_quantity",
    "is_active",
    "updated_at",
    "version",
)


def check_model_columns() -> None:
    """The generator writes every column of its tables; fail loudly if the models moved on."""
    from service.models import Base

    for table, columns in TABLE_COLUMNS.items():
        model = {column.name for column in Base.metadata.tables[table].columns}
        if model != set(columns):
            raise RuntimeError(
                f"service/datagen/ writes {table} columns {sorted(columns)}, the model has "
                f"{sorted(model)}: update TABLE_COLUMNS and the rows it writes"
            )


def require_schema(engine: Any) -> None:
    from sqlalchemy import inspect

    inspector = inspect(engine)
    missing = [table for table in TABLE_COLUMNS if not inspector.has_table(table)]
    if missing:
        raise GenerationRefused(
            f"the database has no {', '.join(missing)} table(s); run 'storekeeper db upgrade'"
        )
    columns = {c["name"] for c in inspector.get_columns("stock_movements")}
    if "average_cost_after" not in columns:
        raise GenerationRefused(
            "the database is not migrated to head; run 'storekeeper db upgrade'"
        )


class Writer:
    """Bulk writes in one transaction; subclasses per backend."""

    products_last = False
    foreign_keys = ""

    def __init__(self, raw_connection: Any) -> None:
        self.raw = raw_connection

    def time(self, moment: datetime) -> Any:
        raise NotImplementedError

    def boolean(self, value: bool) -> Any:
        raise NotImplementedError

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def insert(self, table: str, rows: list[tuple]) -> None:
        raise NotImplementedError


class SqliteWriter(Writer):
    # Foreign keys are checked at COMMIT (defer_foreign_keys), so products can come last.
    products_last = True
    foreign_keys = "checked at commit"

    def __init__(self, raw_connection: Any) -> None:
        super().__init__(raw_connection)
        self.db = raw_connection.driver_connection
        self.db.execute("PRAGMA cache_size = -262144")  # 256 MiB while indexes grow
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("PRAGMA defer_foreign_keys = ON")  # until this transaction ends

    def sink(self) -> InlineWriter:
        # sqlite3 holds the GIL while it binds each row: a writer thread only adds contention.
        return InlineWriter(self)

    def time(self, moment: datetime) -> str:
        # What SQLAlchemy's SQLite DateTime stores for UTCDateTime: naive UTC, microseconds.
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    def boolean(self, value: bool) -> int:
        return int(value)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.db.execute(sql, params).fetchall()

    def next_ids(self, tables: Iterable[str]) -> dict[str, int]:
        # AUTOINCREMENT never reuses an id, even a deleted row's: continue after its counter.
        out = {}
        for table in tables:
            sequence = self.scalar("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
            highest = self.scalar(f"SELECT MAX(id) FROM {table}")
            out[table] = max(sequence or 0, highest or 0)
        return out

    def insert(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        columns = TABLE_COLUMNS[table]
        placeholders = ", ".join("?" for _ in columns)
        self.db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows
        )

    def update_products(self, rows: list[tuple]) -> None:
        # rows: PRODUCT_UPDATE_COLUMNS
        self.db.executemany(
            "UPDATE products SET average_cost = ?, reorder_point = ?, reorder_quantity = ?, "
            "is_active = ?, updated_at = ?, version = ? WHERE id = ?",
            [(*row[1:], row[0]) for row in rows],
        )

    def finish(self, counters: dict[str, int]) -> None:
        for table, last in counters.items():
            # The ids the ledger would have consumed.
            self.db.execute(
                "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (last, table)
            )
        self.db.execute("COMMIT")

    def abort(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def analyze(self, _tables: Iterable[str]) -> None:
        """SQLite gets no statistics: the service never runs ANALYZE there either."""


class PostgresWriter(Writer):
    def __init__(
        self, raw_connection: Any, lock_tables: Iterable[str], trust_references: bool
    ) -> None:
        import psycopg

        super().__init__(raw_connection)
        self.db = raw_connection.driver_connection
        self.db.autocommit = False
        self.products_last = False
        self.foreign_keys = "checked"
        with self.db.cursor() as cursor:
            # Nobody else writes these tables until we commit; readers are not blocked.
            cursor.execute(f"LOCK TABLE {', '.join(lock_tables)} IN SHARE ROW EXCLUSIVE MODE")
            if not trust_references:
                return
            # The foreign-key triggers cost most of the load; every id written here is one the
            # generator just made, so a role that may (a superuser, as in development and CI)
            # skips them for this transaction only, like pg_restore --disable-triggers. Then
            # products can come last, with their final values. Otherwise: checked, and an
            # UPDATE at the end.
            cursor.execute("SAVEPOINT datagen_replica")
            try:
                cursor.execute("SET LOCAL session_replication_role = replica")
            except psycopg.errors.InsufficientPrivilege:
                cursor.execute("ROLLBACK TO SAVEPOINT datagen_replica")
            else:
                self.products_last = True
                self.foreign_keys = "not checked (bulk load as superuser)"
            cursor.execute("RELEASE SAVEPOINT datagen_replica")

    def sink(self) -> BackgroundWriter:
        return BackgroundWriter(self)

    def time(self, moment: datetime) -> datetime:
        return moment

    def boolean(self, value: bool) -> bool:
        return value

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.db.cursor() as cursor:
            row = cursor.execute(sql.replace("?", "%s"), params).fetchone()
            return row[0] if row else None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.db.cursor() as cursor:
            return cursor.execute(sql.replace("?", "%s"), params).fetchall()

    def next_ids(self, tables: Iterable[str]) -> dict[str, int]:
        out = {}
        for table in tables:
            sequence = self.scalar("SELECT pg_get_serial_sequence(?, 'id')", (table,))
            last, called = self.rows(f"SELECT last_value, is_called FROM {sequence}")[0]
            highest = self.scalar(f"SELECT MAX(id) FROM {table}")
            out[table] = max(last if called else last - 1, highest or 0)
        return out

    def insert(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        columns = ", ".join(TABLE_COLUMNS[table])
        with (
            self.db.cursor() as cursor,
            cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def update_products(self, rows: list[tuple]) -> None:
        with self.db.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE datagen_products (id integer PRIMARY KEY, "
                "average_cost bigint, reorder_point integer, reorder_quantity integer, "
                "is_active boolean, "
                "updated_at timestamptz, version integer) ON COMMIT DROP"
            )
            with cursor.copy(
                f"COPY datagen_products ({', '.join(PRODUCT_UPDATE_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                "UPDATE products p SET average_cost = d.average_cost, "
                "reorder_point = d.reorder_point, reorder_quantity = d.reorder_quantity, "
                "is_active = d.is_active, "
                "updated_at = d.updated_at, version = d.version "
                "FROM datagen_products d WHERE p.id = d.id"
            )

    def finish(self, counters: dict[str, int]) -> None:
        with self.db.cursor() as cursor:
            for table, last in counters.items():
                # The next id the service hands out comes after every id we used.
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"GREATEST((SELECT MAX(id) FROM {table}), %s, 1))",
                    (last,),
                )
        self.db.commit()

    def abort(self) -> None:
        self.db.rollback()

    def analyze(self, tables: Iterable[str]) -> None:
        """Fresh statistics, as autovacuum would gather after a load this size."""
        self.db.autocommit = True
        try:
            with self.db.cursor() as cursor:
                cursor.execute(f"ANALYZE {', '.join(tables)}")
        finally:
            self.db.autocommit = False


class InlineWriter:
    """Writes each batch as it comes."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def put(self, batch: list[tuple[str, list[tuple]]]) -> None:
        for table, rows in batch:
            self.writer.insert(table, rows)

    def close(self, *, raise_error: bool = True) -> None:
        """Nothing pending."""


class BackgroundWriter:
    """Writes row batches in a thread while the history goes on: the two overlap.

    (psycopg and sqlite3 release the GIL while the database works.) One batch waits at most,
    so memory stays bounded; the first error stops the writing and is raised to the caller.
    """

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.batches: queue.Queue[list[tuple[str, list[tuple]]] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="datagen-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (batch := self.batches.get()) is not None:
            if self.error is not None:
                continue  # drain until close()
            try:
                for table, rows in batch:
                    self.writer.insert(table, rows)
            except BaseException as exc:  # handed to the main thread
                self.error = exc

    def put(self, batch: list[tuple[str, list[tuple]]]) -> None:
        while True:
            self._raise()
            try:
                self.batches.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self, *, raise_error: bool = True) -> None:
        if self.thread.is_alive():
            self.batches.put(None)
            self.thread.join()
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


# --- the catalog's rows ------------------------------------------------------------------------


def write_categories(
    writer: Writer,
    categories: list[CatalogCategory],
    ids: dict[str, int],
    setup_at: datetime,
    result: GenerationResult,
) -> None:
    """The tree; a category with the same name under the same parent is reused."""
    from service.models.category import sibling_key

    existing = {
        key: category_id
        for category_id, key in writer.rows("SELECT id, sibling_key FROM categories")
    }
    rows = []
    for index, category in enumerate(categories):
        parent_id = categories[category.parent].id if category.parent is not None else None
        key = sibling_key(parent_id, category.name)
        if key in existing:
            category.id, category.reused = existing[key], True
            result.categories_reused += 1
            continue
        ids["categories"] += 1
        category.id = ids["categories"]
        moment = writer.time(setup_at + timedelta(seconds=index))
        rows.append(
            (category.id, category.name, category.description, parent_id, key, moment, moment, 1)
        )
    writer.insert("categories", rows)
    result.categories = len(rows)


def write_locations(
    writer: Writer,
    locations: list[tuple[str, str, str]],
    ids: dict[str, int],
    setup_at: datetime,
    result: GenerationResult,
) -> list[int]:
    """The locations' ids; an active location with the same code is reused."""
    from service.models.location import code_key

    existing = {
        key: (location_id, bool(active))
        for location_id, key, active in writer.rows("SELECT id, code_key, is_active FROM locations")
    }
    location_ids, rows = [], []
    for index, (code, name, _role) in enumerate(locations):
        key = code_key(code)
        if key in existing:
            location_id, active = existing[key]
            if not active:
                raise GenerationRefused(
                    f"location {code} exists and is archived: it takes no stock"
                )
            location_ids.append(location_id)
            result.locations_reused += 1
            continue
        ids["locations"] += 1
        location_ids.append(ids["locations"])
        moment = writer.time(setup_at + timedelta(minutes=1, seconds=index))
        rows.append((ids["locations"], code, key, name, writer.boolean(True), moment, moment, 1))
    writer.insert("locations", rows)
    result.locations = len(rows)
    result.location_codes = [code for code, _, _ in locations]
    return location_ids


def refuse_existing_skus(writer: Writer, products: list[CatalogProduct]) -> None:
    """A SKU that exists already means this catalog is (partly) loaded: refuse it whole."""
    from service.models.product import sku_key

    if not products or not writer.scalar("SELECT COUNT(*) FROM products"):
        return
    taken = {key for (key,) in writer.rows("SELECT sku_key FROM products")}
    clash = next((p.sku for p in products if sku_key(p.sku) in taken), None)
    if clash is not None:
        raise CatalogLoaded(clash)


def insert_products(
    writer: Writer,
    products: list[CatalogProduct],
    product_ids: list[int],
    categories: list[CatalogCategory],
    created: list[datetime],
    history: History | None,
) -> None:
    """Product rows: final (after the history) or as first created (``history`` None)."""
    from service.models.product import sku_key

    rows = []
    for i, product in enumerate(products):
        born = writer.time(created[i])
        changed = born
        active, version, average = True, 1, 0
        if history is not None:
            active, version = history.active[i], history.version[i]
            average = history.average_scaled[i]
            if history.changed_at[i] is not None:
                changed = writer.time(history.changed_at[i])
        rows.append(
            (
                product_ids[i],
                product.sku,
                sku_key(product.sku),
                product.name,
                product.description,
                categories[product.category].id,
                product.unit,
                product.reorder_point,
                product.reorder_quantity,
                writer.boolean(active),
                born,
                changed,
                version,
                average,
            )
        )
    for start in range(0, len(rows), FLUSH_EVERY):
        writer.insert("products", rows[start : start + FLUSH_EVERY])
