"""Websockets are held to the same rules as HTTP for their whole life (issue 18, finding
6): a token that expires closes the connection and its subscriptions (4401); operations
over the socket count against the token's rate (an error ``rate_limited``) and a message
larger than the body limit closes it (4413); a socket that never sends
``connection_init`` is closed after a few seconds (4408), not a minute."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api.app import Settings
from api.auth import Role
from schemas.plant import load_plant
from tests.api.conftest import LiveApi, subscribe
from twinfleet.services import NatsServer

SECRET = "websocket-secret-" + "x" * 32
MAX_BODY = 10_000
INIT_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    from twinfleet.services import free_port

    plant = load_plant("twinfleet/plants/example.yaml")
    with NatsServer(tmp_path_factory.mktemp("nats"), port=free_port()) as server:
        settings = Settings(
            nats_url=server.url,
            secret=SECRET,
            max_body_bytes=MAX_BODY,
            rate_per_s=0.5,
            rate_burst=4,
            ws_init_timeout_s=INIT_TIMEOUT_S,
        )
        with LiveApi(settings, list(plant.machines)) as live:
            yield live


async def closed(ws: Any, within_s: float) -> tuple[int | None, str, list[Any]]:
    """The close code and reason (and what came before) once the server closes."""
    from websockets.exceptions import ConnectionClosed

    seen: list[Any] = []
    try:
        async with asyncio.timeout(within_s):
            while True:
                seen.append(json.loads(await ws.recv()))
    except ConnectionClosed:
        pass
    except TimeoutError:
        await ws.close()
        raise AssertionError(f"still open after {within_s} s; got {seen}") from None
    return ws.close_code, ws.close_reason, seen


def test_a_socket_without_connection_init_is_closed_soon(api: LiveApi) -> None:
    from websockets.asyncio.client import connect

    async def go() -> tuple[float, int | None]:
        t = time.monotonic()
        ws = await connect(
            api.url.replace("http", "ws") + "/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        )
        code, _, _ = await closed(ws, 10)
        return time.monotonic() - t, code

    seconds, code = asyncio.run(go())
    assert code == 4408 and seconds < INIT_TIMEOUT_S + 3, (code, seconds)


def test_an_expiring_token_closes_its_subscriptions(api: LiveApi) -> None:
    token = api.authority.issue("short-lived", Role.VIEWER, ttl_s=3)

    async def go() -> tuple[int | None, str, float]:
        ws = await subscribe(api.url, token, "subscription { fleetHealthChanged { machines } }")
        t = time.monotonic()
        code, reason, _ = await closed(ws, 15)
        return code, reason, time.monotonic() - t

    code, reason, seconds = asyncio.run(go())
    assert code == 4401 and "expired" in reason, (code, reason)
    assert seconds < 8, seconds


def test_operations_over_the_socket_are_rate_limited(api: LiveApi) -> None:
    token = api.token(Role.VIEWER)

    async def go() -> list[Any]:
        ws = await subscribe(api.url, token, "{ fleetHealth { machines } }")
        for i in range(2, 12):
            payload = {"query": "{ fleetHealth { machines } }"}
            await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
        answers: list[Any] = []
        try:
            async with asyncio.timeout(10):
                while len([a for a in answers if a["type"] in ("complete", "error")]) < 11:
                    answers.append(json.loads(await ws.recv()))
        finally:
            await ws.close()
        return answers

    answers = asyncio.run(go())
    refused = [a for a in answers if a["type"] == "error"]
    assert refused, answers
    assert all(a["payload"][0]["extensions"]["code"] == "rate_limited" for a in refused), refused
    assert "retry after" in refused[0]["payload"][0]["message"]


def test_a_message_over_the_size_limit_closes_the_socket(api: LiveApi) -> None:
    token = api.token(Role.VIEWER)

    async def go() -> tuple[int | None, str]:
        ws = await subscribe(api.url, token, "{ fleetHealth { machines } }")
        big = {"query": "{ fleetHealth { machines } }", "variables": {"x": "y" * 2 * MAX_BODY}}
        await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": big}))
        code, reason, _ = await closed(ws, 10)
        return code, reason

    code, reason = asyncio.run(go())
    assert code == 4413 and str(MAX_BODY) in reason, (code, reason)


@pytest.mark.parametrize(
    ("head", "on"),
    [('{ asset(id: "M-101")', "Asset"), ("subscription { fleetHealthChanged", "FleetHealth")],
)
def test_document_limits_hold_over_the_socket(api: LiveApi, head: str, on: str) -> None:
    """A document that HTTP refuses is refused over the socket too, as the operation's
    error (the connection stays open); a query and a subscription."""
    token = api.token(Role.VIEWER)
    first = "id" if on == "Asset" else "machines"
    frags = [f"fragment F0 on {on} {{ {first} }}"] + [
        f"fragment F{i} on {on} {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 20)
    ]
    query = head + " { ...F19 } } " + " ".join(frags)

    async def go() -> dict[str, Any]:
        ws = await subscribe(api.url, token, query)
        try:
            async with asyncio.timeout(10):
                return dict(json.loads(await ws.recv()))
        finally:
            await ws.close()

    answer = asyncio.run(go())
    assert answer["type"] == "error", answer
    assert answer["payload"][0]["extensions"]["code"] == "query_too_costly", answer
