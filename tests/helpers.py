"""Small builders shared by the API tests."""

from __future__ import annotations

from typing import Any

JSON = {"Content-Type": "application/json"}


def create_category(client, name: str = "Tools", **fields: Any) -> dict:
    response = client.post("/api/v1/categories", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def create_product(client, sku: str = "HAM-16OZ", name: str | None = None, **fields: Any) -> dict:
    body = {"sku": sku, "name": name or f"Product {sku}", **fields}
    response = client.post("/api/v1/products", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response, status: int, type_suffix: str | None = None) -> dict:
    """The response is an RFC 9457 problem with this status (and type, when given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert problem["request_id"] == response.headers["x-request-id"]
    if type_suffix is not None:
        assert problem["type"].endswith("/" + type_suffix), problem["type"]
    return problem


def walk_pages(client, path: str, **params: Any) -> list[dict]:
    """Follow next_cursor to the end; return every item seen."""
    items: list[dict] = []
    cursor = None
    for _ in range(10_000):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert "link" not in response.headers
            return items
        assert 'rel="next"' in response.headers["link"]
    raise AssertionError("pagination did not terminate")


def create_location(client, code: str = "WH1-A01", name: str | None = None, **fields: Any) -> dict:
    body = {"code": code, "name": name or f"Location {code}", **fields}
    response = client.post("/api/v1/locations", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def asgi_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """An HTTP request scope for calling the ASGI app directly, ``path`` exactly as given."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


# --- the CSV import's file upload ---------------------------------------------------------

IMPORT_CSV = "/api/v1/products/import/csv"
BOUNDARY = "storekeeper-test-boundary"


def multipart(
    *parts: tuple[str, bytes, dict[str, str]], boundary: str = BOUNDARY
) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/form-data`` body of ``(name, content, headers)`` parts, spelled out byte
    for byte (so a test can send it chunked, or measure it), and its Content-Type header.

    A part's headers are ``filename`` (put in its Content-Disposition; ``None`` for none) and
    any others as they are (``Content-Type``).
    """
    out = bytearray()
    for name, content, headers in parts:
        extra = dict(headers)
        disposition = f'form-data; name="{name}"'
        filename = extra.pop("filename", None)
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        for key, value in extra.items():
            out += f"{key}: {value}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def csv_upload(
    content: str | bytes,
    *,
    filename: str | None = "products.csv",
    content_type: str | None = "text/csv",
) -> tuple[bytes, dict[str, str]]:
    """The CSV import's form: one ``file`` part holding ``content``."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    headers = {"filename": filename}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return multipart(("file", data, headers))


def upload_csv(client, content: str | bytes, *, headers: dict[str, str] | None = None, **params):
    """POST ``content`` to the CSV import as a file upload (``params``: the query)."""
    body, content_type = csv_upload(content)
    return client.post(
        IMPORT_CSV, content=body, headers={**content_type, **(headers or {})}, params=params
    )
