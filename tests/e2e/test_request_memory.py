"""Hostile bodies against the production server: quick, short answers, bounded memory.

A body just within the default limit (1 MiB, ``STOREKEEPER_MAX_BODY_BYTES``) can still be
expensive: a megabyte of empty lines, or a receipt with 200,000 empty ``lines`` (each
missing every required field). Each must be refused (4xx) within a second, with an answer
under 100 KB (the ``errors[]`` list capped, no submitted value echoed in full), while the
gunicorn worker's resident memory grows by less than 50 MB.

The worker is the only child of the gunicorn master (``workers=1``); its ``VmRSS`` (and its
peak, ``VmHWM``) come from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service import migrate
from service.config import Settings
from tests.conftest import throwaway_database
from tests.live_server import live_server

LIMIT = Settings().max_body_bytes
MB = 1024 * 1024
MAX_GROWTH = 50 * MB
MAX_SECONDS = 1.0
MAX_ANSWER = 100 * 1024


def empty_lines(size: int = LIMIT) -> bytes:
    return b"\n" * size


def receipt_of_empty_lines(size: int = LIMIT) -> bytes:
    """``{"location_id":1,"lines":[{},{},...]}`` as close under ``size`` as it gets."""
    head, tail, item = b'{"location_id":1,"lines":[', b"]}", b"{},"
    count = (size - len(head) - len(tail) + 1) // len(item)
    body = head + (item * count)[:-1] + tail
    assert size - len(item) < len(body) <= size
    return body


BODIES = [
    pytest.param(
        "/api/v1/stock/receipts", "application/json", empty_lines, id="receipt-empty-lines"
    ),
    pytest.param(
        "/api/v1/stock/receipts", "application/json", receipt_of_empty_lines, id="receipt-{}-lines"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator:
    with throwaway_database("postgresql", tmp_path_factory) as url:
        migrate.upgrade(url)
        with live_server(url, workers=1) as running:
            yield running


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


@pytest.mark.parametrize(("path", "media_type", "make_body"), BODIES)
def test_a_hostile_body_is_refused_quickly_in_bounded_memory(server, path, media_type, make_body):
    body = make_body()
    assert len(body) <= LIMIT
    headers = {**server.headers, "Content-Type": media_type}
    pid = worker_pid(server.process.pid)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        # Warm up the operation (lazy imports, compiled schemas) with a small bad body.
        client.post(path, content=make_body(4096), headers=headers)
        before = memory(pid)

        started = time.perf_counter()
        response = client.post(path, content=body, headers=headers)
        elapsed = time.perf_counter() - started
        after = memory(pid)

    rss_growth = after["VmRSS"] - before["VmRSS"]
    peak_growth = after["VmHWM"] - before["VmHWM"]
    print(
        f"\n{path} {media_type} {len(body)} B: {response.status_code} in {elapsed:.3f} s, "
        f"answer {len(response.content)} B, RSS {before['VmRSS'] / MB:.1f} -> "
        f"{after['VmRSS'] / MB:.1f} MB (+{rss_growth / MB:.1f}), "
        f"peak +{peak_growth / MB:.1f} MB"
    )
    assert 400 <= response.status_code < 500, response.text[:500]
    assert elapsed < MAX_SECONDS
    assert len(response.content) < MAX_ANSWER
    assert rss_growth < MAX_GROWTH
    assert peak_growth < MAX_GROWTH


# --- the CSV import's upload, at its own limit (32 MiB) --------------------------------------

IMPORT_LIMIT = Settings().import_max_bytes
BOUNDARY = "memory-boundary"
UPLOAD_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _part(name: str, content: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    )


def _close(body: bytes) -> bytes:
    return body + f"--{BOUNDARY}--\r\n".encode()


def _fill(make_part, size: int = IMPORT_LIMIT) -> bytes:
    """As many parts as fit in ``size`` bytes (with the closing boundary)."""
    one = make_part()
    count = (size - len(f"--{BOUNDARY}--\r\n")) // len(one)
    return _close(one * count)


def _one_part_of(size: int, content_end: bytes = b"", **part) -> bytes:
    overhead = len(_close(_part(part.get("name", "file"), b"", part.get("filename"))))
    filler = b"sku\n" + b"x" * (size - overhead - 4 - len(content_end))
    return _close(_part(part.get("name", "file"), filler + content_end, part.get("filename")))


UPLOADS = [
    pytest.param(lambda: _fill(lambda: _part("f", b"v")), id="tiny-parts"),
    pytest.param(lambda: _fill(lambda: _part("file", b"sku\n", "p.csv")), id="tiny-file-parts"),
    pytest.param(lambda: _one_part_of(IMPORT_LIMIT, name="pad"), id="one-huge-unknown-part"),
    pytest.param(lambda: _one_part_of(IMPORT_LIMIT, b"\xff"), id="huge-file-not-utf8-at-the-end"),
    pytest.param(
        lambda: _one_part_of(IMPORT_LIMIT, name="pad")[:-100], id="huge-without-closing-boundary"
    ),
]


def _reset_peak(pid: int) -> None:
    """VmHWM back to the current RSS (Linux: 5 to clear_refs), so the peak is this request's."""
    # Where it is not allowed, the peak stays the process's: a looser bound.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.mark.parametrize("make_body", UPLOADS)
def test_a_hostile_upload_at_the_import_limit_is_refused_in_bounded_memory(server, make_body):
    """Read once as it arrives (nothing of a part kept but a text part's value): the worker
    holds the body connexion keeps for Flask (at most the limit) and little else."""
    body = make_body()
    assert IMPORT_LIMIT - 4096 < len(body) <= IMPORT_LIMIT
    headers = {**server.headers, "Content-Type": UPLOAD_TYPE}
    path = "/api/v1/products/import/csv"
    pid = worker_pid(server.process.pid)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        client.post(path, content=_close(_part("pad", b"warm up")), headers=headers)
        _reset_peak(pid)
        before = memory(pid)
        started = time.perf_counter()
        response = client.post(path, content=body, headers=headers)
        elapsed = time.perf_counter() - started
        after = memory(pid)

    rss_growth = after["VmRSS"] - before["VmRSS"]
    peak_growth = after["VmHWM"] - before["VmHWM"]
    print(
        f"\nupload {len(body)} B: {response.status_code} in {elapsed:.3f} s, "
        f"answer {len(response.content)} B, RSS {before['VmRSS'] / MB:.1f} -> "
        f"{after['VmRSS'] / MB:.1f} MB (+{rss_growth / MB:.1f}), "
        f"peak +{peak_growth / MB:.1f} MB"
    )
    assert response.status_code == 400, response.text[:500]
    assert elapsed < 5 * MAX_SECONDS
    assert len(response.content) < MAX_ANSWER
    assert peak_growth < IMPORT_LIMIT + MAX_GROWTH
