"""The GraphQL limits, checked on the schema itself (validation runs before any resolver,
so no services are needed)."""

from __future__ import annotations

import asyncio

import pytest

import api.graphql as gql


def errors(query: str, schema: gql.Schema = gql.schema) -> list[str]:
    """The errors of running ``query`` with no token (resolvers refuse; limits come first)."""
    result = asyncio.run(schema.execute(query, context_value={}))
    return [e.message for e in result.errors or []]


def test_depth_limit() -> None:
    query = '{ asset(id: "M-1") { rul { survivalCurve { hours } } } }'  # depth 3 (counted from 0)
    assert any(
        "exceeds maximum operation depth of 2" in e for e in errors(query, gql.make_schema(2))
    )
    assert errors(query, gql.make_schema(3)) == [
        "no bearer token: send 'Authorization: Bearer <token>'"
    ]


@pytest.mark.parametrize(
    ("query", "cost"),
    [
        ("{ fleetHealth { machines } }", 2),
        ("{ assets(limit: 10) { id site } }", 1 + 10 * 2),
        # a list field without a limit counts for its default (assets: 100)
        ("{ assets { id } }", 1 + 100),
        # nested lists multiply: 10 assets x (currentState + sensors + 20 values)
        ("{ assets(limit: 10) { currentState { sensors { value } } } }", 1 + 10 * (1 + 1 + 20)),
        # fragments count where they are spread
        ("query { assets(limit: 10) { ...F } } fragment F on Asset { id name }", 1 + 10 * 2),
    ],
)
def test_cost_is_counted_per_item(query: str, cost: int) -> None:
    from graphql import parse

    from api.query_limits import measure

    assert measure(parse(query), gql.schema._schema, None, None).cost == cost


def test_costly_queries_are_refused_before_they_run() -> None:
    assert any(
        "over the limit of 50" in m
        for m in errors("{ assets(limit: 50) { id } }", gql.make_schema(max_cost=50))
    )
    messages = errors("{ assets(limit: 1000) { currentState { sensors { value unit } } } }")
    assert any(f"over the limit of {gql.MAX_COST}" in m for m in messages)
    assert not any("over the limit" in m for m in errors("{ assets(limit: 5) { id } }"))
