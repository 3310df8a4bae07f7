"""Export and import over real HTTP: the production server (gunicorn + uvicorn workers).

What only a real server shows: the export's first bytes arrive while its snapshot is still
being read (the body is streamed, not built first), a client that goes away releases the
database connection, and the import's size limit holds for a chunked upload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import create_engine, insert, text

from service import migrate
from service.models import Product
from tests.conftest import throwaway_database
from tests.helpers import IMPORT_CSV, csv_upload
from tests.live_server import live_server

EXPORT = "/api/v1/products/export"
PRODUCTS = 50_000
LIMIT = 4096


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory) -> Iterator[str]:
    with throwaway_database("postgresql", tmp_path_factory) as url:
        migrate.upgrade(url)
        engine = create_engine(url)
        now = datetime.now(UTC)
        with engine.begin() as connection:
            connection.execute(
                insert(Product.__table__),
                [
                    {
                        "sku": f"LIVE-{i:06d}",
                        "sku_key": f"live-{i:06d}",
                        "name": f"Live product {i}",
                        "unit_of_measure": "each",
                        "reorder_point": 0,
                        "reorder_quantity": 0,
                        "is_active": True,
                        "average_cost": 0,
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                    }
                    for i in range(PRODUCTS)
                ],
            )
        engine.dispose()
        yield url


@pytest.fixture(scope="module")
def server(pg_url):
    with live_server(
        pg_url, workers=1, env={"STOREKEEPER_IMPORT_MAX_BYTES": str(LIMIT)}
    ) as running:
        yield running


def export_transactions(url: str) -> list[tuple]:
    """Backends of the server's database inside a transaction reading the products.

    (The export reads through a server-side cursor: its backend shows the DECLARE, then
    FETCH after FETCH.)
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            return connection.execute(
                text(
                    "SELECT pid, state, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND xact_start IS NOT NULL "
                    "AND (query ILIKE '%FROM products%' OR query ILIKE 'FETCH%')"
                )
            ).all()
    finally:
        engine.dispose()


def test_first_bytes_arrive_while_the_snapshot_is_read_and_a_gone_client_frees_it(server, pg_url):
    client = httpx.Client(base_url=server.base_url, headers=server.headers, timeout=30)
    with client.stream("GET", EXPORT, headers={"Accept": "text/csv"}) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)
        assert first.startswith(b"id,sku,name,")
        # We stop reading: the server is mid-body, its read transaction still open.
        time.sleep(0.5)
        reading = export_transactions(pg_url)
        assert reading, "the export's snapshot should still be open"
    client.close()  # the client goes away with most of the body unread

    deadline = time.monotonic() + 10
    while export_transactions(pg_url):
        assert time.monotonic() < deadline, export_transactions(pg_url)
        time.sleep(0.1)


def test_a_full_export_streams_every_product(server):
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as client:
        started = time.perf_counter()
        first_at = None
        lines = 0
        with client.stream("GET", EXPORT, headers={"Accept": "text/csv"}) as response:
            for chunk in response.iter_raw():
                first_at = first_at or time.perf_counter() - started
                lines += chunk.count(b"\r\n")
        total = time.perf_counter() - started
    assert lines == PRODUCTS + 1
    assert first_at is not None and first_at < total
    print(f"export of {PRODUCTS} products: first bytes {first_at * 1000:.0f} ms, all {total:.2f} s")


def test_the_size_limit_holds_by_content_length_and_for_chunked_uploads(server):
    big, form_type = csv_upload(
        b"sku,name\n" + b"".join(f"B-{i:05d},Big {i}\n".encode() for i in range(400))
    )
    small, _ = csv_upload(b"sku,name\nS-1,Small\n")
    headers = {**server.headers, **form_type}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        by_length = client.post(IMPORT_CSV, content=big)
        chunked = client.post(
            IMPORT_CSV, content=iter([big[i : i + 512] for i in range(0, len(big), 512)])
        )
        within = client.post(
            IMPORT_CSV, content=iter([small[:5], small[5:]]), params={"dry_run": "true"}
        )

    assert len(big) > LIMIT
    for response in (by_length, chunked):
        assert response.status_code == 413, response.text
        assert response.json()["max_bytes"] == LIMIT
    assert within.status_code == 200, within.text
    assert within.json()["created"] == 1
