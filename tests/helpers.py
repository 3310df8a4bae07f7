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
