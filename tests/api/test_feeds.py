"""Shared subscription feeds, on the real schema and view (the view is fed by hand here;
the integration tests feed it through NATS)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from api.app import Services, Settings
from api.auth import Authority, Role
from api.feeds import Feeds, key_of
from api.graphql import schema
from api.limits import RateLimiter
from api.view import FleetView
from schemas.plant import MachineSpec, SensorSpec

SECRET = "s" * 40


def machine(i: int) -> MachineSpec:
    return MachineSpec(
        id=f"M-{i}",
        type="motor",
        kind="motor",
        site="a",
        line="l1",
        sensors=[SensorSpec(name="rpm", kind="speed", unit="rpm")],
    )


def setup(queue_size: int = 256) -> tuple[FleetView, Feeds, dict[str, Any]]:
    view = FleetView([machine(1), machine(2)], "nats://unused")
    authority = Authority(SECRET)
    services = Services(
        Settings("nats://unused", SECRET),
        view,
        authority,
        RateLimiter(1e6, 1e6),
        feeds=Feeds(queue_size),
    )
    principal = authority.verify("Bearer " + authority.issue("v", Role.VIEWER))
    return view, services.feeds, {"services": services, "principal": principal}


def state_query(machine_id: str) -> tuple[str, str, str]:
    return key_of(
        f'subscription {{ assetStateChanged(assetId: "{machine_id}") {{ assetId version }} }}',
        None,
        None,
    )


def event(machine_id: str, version: int) -> dict[str, Any]:
    return {
        "machine_id": machine_id,
        "version": version,
        "health_score": 90.0,
        "status": "running",
        "sensors": {f"{machine_id}.rpm": [1480.0, 1, 0]},
    }


async def take(stream: AsyncIterator[Any], n: int) -> list[Any]:
    return [await asyncio.wait_for(anext(stream), 2) for _ in range(n)]


def test_subscribers_of_one_query_share_one_feed() -> None:
    async def scenario() -> None:
        view, feeds, context = setup()
        streams = [feeds.join(schema, context, state_query("M-1")) for _ in range(3)]
        other = feeds.join(schema, context, state_query("M-2"))
        assert len(feeds.running) == 2 and feeds.subscribers == 4
        await asyncio.sleep(0.05)  # the feeds' subscriptions are listening
        view.broadcast.publish("state.M-1", event("M-1", 7))
        view.broadcast.publish("state.M-2", event("M-2", 3))
        for stream in streams:
            [(kind, text)] = await take(stream, 1)
            assert kind == "next"
            assert json.loads(text) == {
                "data": {"assetStateChanged": {"assetId": "M-1", "version": 7}}
            }
        assert json.loads((await take(other, 1))[0][1])["data"]["assetStateChanged"]["version"] == 3
        # the feed stops when its last subscriber leaves
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert list(feeds.running) == [state_query("M-2")]
        await other.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert feeds.running == {} and view.broadcast.topics == {}

    asyncio.run(scenario())


def test_a_slow_subscriber_loses_its_oldest_updates_and_holds_nobody_up() -> None:
    async def scenario() -> None:
        view, feeds, context = setup(queue_size=2)
        slow = feeds.join(schema, context, state_query("M-1"))
        fast = feeds.join(schema, context, state_query("M-1"))
        await asyncio.sleep(0.05)
        seen = []
        for version in range(1, 6):
            view.broadcast.publish("state.M-1", event("M-1", version))
            [(_, text)] = await take(fast, 1)
            seen.append(json.loads(text)["data"]["assetStateChanged"]["version"])
        assert seen == [1, 2, 3, 4, 5]
        kept = [
            json.loads(t)["data"]["assetStateChanged"]["version"] for _, t in await take(slow, 2)
        ]
        assert kept == [4, 5] and feeds.dropped == 3

    asyncio.run(scenario())


def test_fleet_health_joiners_get_the_current_value_first() -> None:
    async def scenario() -> None:
        _, feeds, context = setup()
        key = key_of("subscription { fleetHealthChanged { machines } }", None, None)
        first = feeds.join(schema, context, key)
        assert (
            json.loads((await take(first, 1))[0][1])["data"]["fleetHealthChanged"]["machines"] == 2
        )
        late = feeds.join(schema, context, key)
        assert len(feeds.running) == 1
        assert (
            json.loads((await take(late, 1))[0][1])["data"]["fleetHealthChanged"]["machines"] == 2
        )

    asyncio.run(scenario())


def test_refusals_reach_every_subscriber() -> None:
    async def scenario() -> None:
        _, feeds, context = setup()
        [(kind, errors)] = await take(
            feeds.join(schema, context, key_of("subscription { nope }", None, None)), 1
        )
        assert kind == "error" and "Cannot query field 'nope'" in errors[0]["message"]
        [(kind, text)] = await take(feeds.join(schema, context, state_query("NOPE-9")), 1)
        assert kind == "next" and json.loads(text)["errors"][0]["message"] == "no asset 'NOPE-9'"

    asyncio.run(scenario())
