"""GraphQL documents cannot make validation slow (issue 18, finding 5): a document of
fragments spreading each other, thousands of repeated fields, a huge document or a
``limit`` sent as a variable are refused quickly, each in the GraphQL JSON error shape
with a code and a clear message. Validation of any document takes under 50 ms."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import api.graphql as gql
from api.app import Settings
from schemas.plant import load_plant
from tests.api.conftest import LiveApi
from twinfleet.services import NatsServer

BUDGET_S = 0.05
"""CPU seconds of this thread (the machine is shared: waiting for a core is not counted)."""
SECRET = "limits-secret-" + "x" * 32


def nested_fragments(n: int) -> str:
    """``F<i>`` spreads ``F<i-1>`` twice: 2**n fields when expanded."""
    frags = ["fragment F0 on Asset { id name }"]
    frags += [f"fragment F{i} on Asset {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, n + 1)]
    return f'{{ asset(id: "M-101") {{ ...F{n} }} }} {" ".join(frags)}'


ATTACKS = {
    "nested fragments": nested_fragments(20),
    "nested fragments under introspection": "{ __schema { types { ...T19 } } } "
    + " ".join(
        ["fragment T0 on __Type { name }"]
        + [f"fragment T{i} on __Type {{ ...T{i - 1} ...T{i - 1} }}" for i in range(1, 20)]
    ),
    "repeated fields": "{ " + "fleetHealth { machines } " * 3000 + "}",
    "repeated leaf fields": "{ fleetHealth { " + "machines " * 3000 + "} }",
    "many aliases": "{ " + " ".join(f"a{i}: fleetHealth {{ machines }}" for i in range(400)) + " }",
    "repeated fragment spreads": "{ fleetHealth { "
    + "...H " * 1500
    + "} } fragment H on FleetHealth { machines }",
    "many distinct fragments": "{ fleetHealth { "
    + " ".join(f"...H{i}" for i in range(75))
    + " } } "
    + " ".join(f"fragment H{i} on FleetHealth {{ byStatus {{ count }} }}" for i in range(75)),
    "huge document": "{ fleetHealth { machines } }" + " " * 100_000 + "# end",
}


ANSWERED = {"nested fragments under introspection"}
"""Introspection is not costed (GraphiQL's query is deep): 20 fragments (the most a
document may define) spreading each other under it are answered, and quickly."""


def run(query: str, variables: dict[str, Any] | None = None) -> tuple[float, list[Any]]:
    """Seconds to answer with no token (limits refuse before any resolver) and the errors;
    the best of three (the machine is shared)."""

    async def once() -> tuple[float, list[Any]]:
        t = time.thread_time()
        result = await gql.schema.execute(query, variables, context_value={})
        return time.thread_time() - t, list(result.errors or [])

    async def best() -> tuple[float, list[Any]]:
        return min([await once() for _ in range(3)], key=lambda r: r[0])

    return asyncio.run(best())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_hostile_documents_are_refused_quickly(name: str) -> None:
    seconds, errors = run(ATTACKS[name])
    assert seconds < BUDGET_S, f"{name}: {seconds:.3f} s"
    if name in ANSWERED:
        assert not errors, errors
        return
    assert errors, name
    messages = [e.message for e in errors]
    assert "Validation aborted." not in messages, messages
    codes = {(e.extensions or {}).get("code") for e in errors}
    assert codes & {
        "query_too_large",
        "query_too_costly",
        "query_too_deep",
        "too_many_aliases",
    }, messages


def test_limit_variables_are_costed_at_their_value() -> None:
    query = "query($n: Int!) { assets(limit: $n) { currentState { sensors { value } } } }"
    _, errors = run(query, {"n": 1000})
    assert [(e.extensions or {}).get("code") for e in errors] == ["query_too_costly"], errors
    _, errors = run(query, {"n": 2})
    assert [(e.extensions or {}).get("code") for e in errors] == ["unauthorized"], errors


def test_history_fields_cost_more_than_plain_fields() -> None:
    query = "{ assets(limit: 30) { sensors { timeseries { dataPoints } } } }"
    _, errors = run(query)
    assert [(e.extensions or {}).get("code") for e in errors] == ["query_too_costly"], errors


def test_refusals_over_http_are_graphql_errors(nats_server: NatsServer) -> None:
    """Over HTTP, with a valid token, while the refusal is given /health answers."""
    plant = load_plant("twinfleet/plants/example.yaml")
    settings = Settings(nats_url=nats_server.url, secret=SECRET)
    with LiveApi(settings, list(plant.machines)) as api:
        for name, query in ATTACKS.items():
            status, body = api._request("POST", "/graphql", {"query": query}, "viewer")
            assert status in (200, 413), (name, status, body)
            if status == 413:  # over the body limit: the API's JSON error
                assert body["error"]["code"] == "payload_too_large"
                continue
            if name in ANSWERED:
                assert "errors" not in body, body
                continue
            assert body["data"] is None, (name, body)
            assert body["errors"][0]["extensions"]["code"], (name, body)
            assert body["errors"][0]["message"] != "Validation aborted.", name


def test_rollup_rows_are_capped() -> None:
    """A 1-minute series over 5 years (2.6 million buckets) is refused before it is read;
    hourly buckets over 5 years pass."""
    from datetime import UTC, datetime, timedelta

    from api.errors import ApiError
    from api.history import MAX_ROLLUP_ROWS, rollup_rows

    start = datetime(2021, 12, 1, tzinfo=UTC)
    end = start + timedelta(days=5 * 365)
    with pytest.raises(ApiError) as refused:
        rollup_rows(start, end, "1m")
    assert refused.value.status == 413 and refused.value.code == "range_too_large"
    assert rollup_rows(start, end, "1h") <= MAX_ROLLUP_ROWS
