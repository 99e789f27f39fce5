"""The OpenAPI document tells the truth about refusals and authentication (issue 18): every
route documents the error responses it may give, the security schemes are named, the
telemetry route's request body has its schema, every reference resolves, and a 405 says
which methods the route takes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from api.app import Settings
from schemas.plant import load_plant
from tests.api.conftest import LiveApi
from twinfleet.services import NatsServer, free_port

SECRET = "openapi-secret-" + "x" * 32


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    plant = load_plant("twinfleet/plants/example.yaml")
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=free_port())
    with server, LiveApi(Settings(nats_url=server.url, secret=SECRET), plant.machines[:2]) as a:
        yield a


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_the_document_names_refusals_authentication_and_the_telemetry_body(api: LiveApi) -> None:
    status, doc = api._request("GET", "/openapi.json", None, None)
    assert status == 200
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session"}
    assert doc["security"] == [{"bearer": []}, {"session": []}]
    assert doc["paths"]["/api/v1/health"]["get"]["security"] == []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            documented = set(op["responses"])
            assert {"401", "403", "422", "429", "503"} <= documented, (path, method)
    body = doc["paths"]["/api/v1/telemetry/batch"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/HttpBatch"}
    assert "gateway_id" in doc["components"]["schemas"]["HttpBatch"]["properties"]
    for ref in set(refs(doc)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}


def test_a_405_says_which_methods_the_route_takes(api: LiveApi) -> None:
    request = urllib.request.Request(api.url + "/api/v1/health", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 405
    assert e.value.headers["Allow"] == "GET"
    assert json.loads(e.value.read())["error"]["code"] == "method_not_allowed"


def test_query_parameters_carry_their_real_bounds(api: LiveApi) -> None:
    status, doc = api._request("GET", "/openapi.json", None, None)
    params = {
        (path, p["name"]): p["schema"]
        for path, ops in doc["paths"].items()
        for op in ops.values()
        for p in op.get("parameters", [])
    }
    horizon = params[("/api/v1/maintenance/schedule", "horizon_hours")]
    assert (horizon["exclusiveMinimum"], horizon["maximum"]) == (0, 744)
    limit = params[("/api/v1/maintenance/workorders", "limit")]
    assert (limit["minimum"], limit["maximum"]) == (1, 10_000)
    # a value the document allows is never refused for its size, one it does not is 422
    status, body = api.get("/api/v1/maintenance/schedule", horizon_hours="-3e16")
    assert status == 422 and body["error"]["field"] == "horizon_hours", body
    status, body = api.get("/api/v1/maintenance/workorders", limit="0")
    assert status == 422 and body["error"]["field"] == "limit", body
