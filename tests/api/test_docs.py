"""One contract: served as written at /openapi.json and /openapi.yaml, and in Swagger UI."""

from __future__ import annotations

import yaml

from service.config import Settings

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _operations(spec: dict) -> set[tuple[str, str, str]]:
    return {
        (path, method, operation["operationId"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def _source_spec() -> dict:
    return yaml.safe_load(Settings().spec_path.read_text())


def test_raw_spec_is_the_hand_written_contract(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    served = response.json()
    assert served["openapi"].startswith("3.0.")
    assert _operations(served) == _operations(_source_spec())


def test_the_served_spec_is_the_file_as_written(anonymous_client):
    """Components, $refs and servers intact: what generators need for named types."""
    source = Settings().spec_path.read_text(encoding="utf-8")
    as_yaml = anonymous_client.get("/openapi.yaml")
    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert as_yaml.text == source
    as_json = anonymous_client.get("/openapi.json")
    assert as_json.status_code == 200
    assert as_json.headers["content-type"].startswith("application/json")
    served = as_json.json()
    assert served == yaml.safe_load(source)
    assert served["servers"] == yaml.safe_load(source)["servers"]
    refs = as_json.text.count('"$ref"')
    assert refs > 100, f"only {refs} $refs: the served spec looks dereferenced"
    # Conditional: the document only changes with a deployment.
    tag = as_json.headers["etag"]
    assert anonymous_client.get("/openapi.json", headers={"If-None-Match": tag}).status_code == 304
    assert as_yaml.headers["etag"] == tag


def test_swagger_ui_reads_the_served_spec_itself(client):
    """The page loads /openapi.json, the document as written: there is no second copy."""
    page = client.get("/apidocs/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert 'url: "/openapi.json"' in page.text
    assert client.get("/apidocs/openapi.json").status_code == 404
    # The UI's assets ship with flasgger: no CDN is needed to render it.
    asset = client.get("/apidocs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_every_operation_documents_its_errors():
    """Each operation has an id, summary, description, tags, a 4xx and a default response."""
    spec = _source_spec()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            for key in ("operationId", "summary", "description", "tags"):
                assert operation.get(key), f"{where} lacks {key}"
            codes = set(operation["responses"])
            assert "default" in codes, f"{where} lacks a default response"
            if path.startswith("/api/"):
                assert any(c.startswith("4") for c in codes), f"{where} documents no 4xx"
