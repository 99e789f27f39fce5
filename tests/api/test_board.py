"""The dashboard's GraphQL fields (api/board.py) on the real schema and view: the view is
fed its NATS messages by hand here (as in test_feeds.py); the plan calendar is asked of the
real maintenance service over a real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.app import Services, Settings
from api.auth import Authority, Role
from api.board import coalesced, fleet_row
from api.feeds import Feeds, key_of
from api.graphql import schema
from api.limits import RateLimiter
from api.view import FleetView
from schemas.plant import MachineSpec, Plant, SensorSpec, load_plant
from schemas.rul import RulPrediction, SurvivalPoint
from tests.api.test_maintenance_api import PLANT_FILE, LiveApi, LiveService
from twinfleet.services import NatsServer

SECRET = "b" * 40


def machine(i: int, site: str = "north") -> MachineSpec:
    return MachineSpec(
        id=f"M-{i}",
        name=f"Motor {i}",
        type="motor-15kw",
        kind="motor",
        site=site,
        line="l1",
        sensors=[
            SensorSpec(
                name="vibration", kind="vibration", unit="mm/s", normal_high=4.5, critical_high=7.1
            ),
            SensorSpec(name="rpm", kind="speed", unit="rpm", rated=1480.0),
        ],
        failure_modes=["bearing_wear"],
    )


@dataclass
class Message:
    """What nats-py hands a subscription callback (the view reads ``data``)."""

    data: bytes


def twin_event(machine_id: str, version: int, health: float = 90.0) -> Message:
    return Message(
        json.dumps(
            {
                "machine_id": machine_id,
                "version": version,
                "health_score": health,
                "status": "warning" if health < 80 else "running",
                "last_update": 1_700_000_000_000 + version,
                "sensors": {f"{machine_id}.vibration": [3.2, 1_700_000_000_000 + version, 0]},
            }
        ).encode()
    )


def prediction(machine_id: str, at_ms: int) -> Message:
    p = RulPrediction(
        machine_id=machine_id,
        failure_mode="bearing_wear",
        median_hours=300.0,
        lower_hours=120.0,
        upper_hours=700.0,
        survival_curve=[SurvivalPoint(hours=0, survival_probability=1.0)],
        failure_probability={24: 0.01, 72: 0.1, 168: 0.35, 336: 0.5, 720: 0.8},
        model_version="toy-1",
        predicted_at=at_ms,
    )
    return Message(p.model_dump_json().encode())


def setup() -> tuple[FleetView, Feeds, dict[str, Any]]:
    view = FleetView([machine(1), machine(2), machine(3, site="south")], "nats://unused")
    authority = Authority(SECRET)
    services = Services(Settings("nats://unused", SECRET), view, authority, RateLimiter(1e6, 1e6))
    principal = authority.verify("Bearer " + authority.issue("v", Role.VIEWER))
    return view, services.feeds, {"services": services, "principal": principal}


async def ask(context: dict[str, Any], query: str, **variables: Any) -> dict[str, Any]:
    result = await schema.execute(query, variable_values=variables, context_value=context)
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data


async def take(stream: AsyncIterator[Any], n: int, timeout: float = 2.0) -> list[Any]:
    return [await asyncio.wait_for(anext(stream), timeout) for _ in range(n)]


def test_a_row_holds_what_the_view_knows_of_a_machine() -> None:
    async def scenario() -> None:
        view, _, _ = setup()
        assert fleet_row(view, "M-2")["status"] == "unknown"
        assert fleet_row(view, "M-2")["rulMedianHours"] is None
        await view._on_twin_event(twin_event("M-1", 5, health=72.5))
        await view._on_rul_msg(prediction("M-1", 1_700_000_100_000))
        row = fleet_row(view, "M-1")
        assert row == {
            "id": "M-1",
            "name": "Motor 1",
            "site": "north",
            "line": "l1",
            "type": "motor-15kw",
            "kind": "motor",
            "critical": False,
            "status": "warning",
            "healthScore": 72.5,
            "version": 5,
            "lastUpdate": "2023-11-14T22:13:20.005Z",
            "rulMedianHours": 300.0,
            "rulLowerHours": 120.0,
            "rulUpperHours": 700.0,
            "failProbability7d": 0.35,
            "failureMode": "bearing_wear",
            "rulPredictedAt": "2023-11-14T22:15:00.000Z",
        }

    asyncio.run(scenario())


def test_the_fleet_table_limits_and_actions_answer_from_the_plant_and_the_view() -> None:
    async def scenario() -> None:
        view, _, context = setup()
        await view._on_rul_msg(prediction("M-1", 1_700_000_100_000))
        data = await ask(context, "{ fleetTable { machines rows } }")
        assert [r["id"] for r in data["fleetTable"]["rows"]] == ["M-1", "M-2", "M-3"]
        south = await ask(context, '{ fleetTable(site: "south") { machines } }')
        assert south["fleetTable"]["machines"] == 1
        limits = await ask(
            context,
            "query($a: ID!) { sensorLimits(assetId: $a) { name unit normalHigh criticalHigh "
            "rated } }",
            a="M-1",
        )
        assert limits["sensorLimits"] == [
            {
                "name": "vibration",
                "unit": "mm/s",
                "normalHigh": 4.5,
                "criticalHigh": 7.1,
                "rated": None,
            },
            {
                "name": "rpm",
                "unit": "rpm",
                "normalHigh": None,
                "criticalHigh": None,
                "rated": 1480.0,
            },
        ]
        q = "query($a: ID!) { recommendedActions(assetId: $a) { priority action } }"
        # P(fail within a week) 0.35: high, within 3 days (api/present.py)
        assert (await ask(context, q, a="M-1"))["recommendedActions"][0]["priority"] == "high"
        assert (await ask(context, q, a="M-2"))["recommendedActions"] == []
        refused = await schema.execute(q, variable_values={"a": "M-9"}, context_value=context)
        assert refused.errors and refused.errors[0].extensions == {
            "code": "not_found",
            "field": "assetId",
        }
        anonymous = await schema.execute(
            "{ fleetTable { machines } }", context_value={**context, "principal": None}
        )
        assert anonymous.errors and anonymous.errors[0].extensions == {"code": "unauthorized"}

    asyncio.run(scenario())


def test_coalescing_sends_the_first_change_at_once_then_one_set_per_window() -> None:
    async def scenario() -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def changes() -> AsyncIterator[str]:
            while True:
                yield await queue.get()

        loop = asyncio.get_running_loop()
        batches = coalesced(changes(), 0.3)
        queue.put_nowait("M-1")
        began = loop.time()
        assert await anext(batches) == {"M-1"}
        assert loop.time() - began < 0.1  # at once
        for m in ("M-2", "M-3", "M-2"):
            queue.put_nowait(m)
        assert await anext(batches) == {"M-2", "M-3"}  # each once
        assert loop.time() - began >= 0.29  # not before the window is over
        await batches.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_fleet_changed_delivers_the_rows_that_changed_to_every_subscriber() -> None:
    async def scenario() -> None:
        view, feeds, context = setup()
        every = key_of("subscription { fleetChanged(everyMs: 50) { machines rows } }", None, None)
        one = key_of(
            'subscription { fleetChanged(everyMs: 50, assetId: "M-2") { rows } }', None, None
        )
        streams = [feeds.join(schema, context, every) for _ in range(2)]
        mine = feeds.join(schema, context, one)
        assert len(feeds.running) == 2  # one feed per query, however many subscribers
        await asyncio.sleep(0.05)
        await view._on_twin_event(twin_event("M-1", 1))
        await view._on_twin_event(twin_event("M-2", 1, health=60.0))
        for stream in streams:
            got: dict[str, Any] = {}
            while len(got) < 2:
                [(kind, text)] = await take(stream, 1)
                assert kind == "next"
                for row in json.loads(text)["data"]["fleetChanged"]["rows"]:
                    got[row["id"]] = row
            assert got["M-2"]["healthScore"] == 60.0 and got["M-2"]["status"] == "warning"
        [(_, text)] = await take(mine, 1)
        assert [r["id"] for r in json.loads(text)["data"]["fleetChanged"]["rows"]] == ["M-2"]
        # a new RUL prediction is a change too
        await view._on_rul_msg(prediction("M-2", 1_700_000_200_000))
        [(_, text)] = await take(mine, 1)
        assert json.loads(text)["data"]["fleetChanged"]["rows"][0]["rulMedianHours"] == 300.0
        for stream in [*streams, mine]:
            await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert feeds.running == {} and view.broadcast.topics == {}
        bad = key_of("subscription { fleetChanged(everyMs: 5) { rows } }", None, None)
        [(_, text)] = await take(feeds.join(schema, context, bad), 1)
        assert json.loads(text)["errors"][0]["extensions"]["field"] == "everyMs"

    asyncio.run(scenario())


@pytest.mark.slow
def test_the_plan_calendar_comes_from_the_maintenance_service(nats_server: NatsServer) -> None:
    plant: Plant = load_plant(PLANT_FILE)
    query = """{ schedule { start horizonHours }
      planCalendar { start horizonHours technicians { id name siteId onShift { start end } }
        lines { siteId lineId windows { start end } } } }"""
    with LiveService(plant, nats_server.url), LiveApi(plant, nats_server.url) as api:
        data = api.graphql(query)["data"]
    calendar = data["planCalendar"]
    assert calendar["start"] == data["schedule"]["start"]  # the plan's own start
    assert calendar["horizonHours"] == 168
    assert [t["id"] for t in calendar["technicians"]] == [t.id for t in plant.technicians]
    start = datetime.fromisoformat(calendar["start"])
    end = start + timedelta(hours=168)
    for tech, spec in zip(calendar["technicians"], plant.technicians, strict=True):
        shifts = [
            (datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"]))
            for p in tech["onShift"]
        ]
        assert shifts, tech
        for a, b in shifts:
            assert start <= a < b <= end
            # the example plant's sites are on UTC: each shift starts at its wall time
            # (or at the plan's start, for one under way) on one of its days
            assert a == start or (
                a.astimezone(UTC).strftime("%H:%M") == spec.shift.start
                and a.weekday() in spec.shift.days
            )
    windowed = {(line["siteId"], line["lineId"]) for line in calendar["lines"] if line["windows"]}
    expected = {
        (site.id, line.id)
        for site in plant.sites
        for line in site.lines
        if line.maintenance_windows
    }
    assert windowed == expected and expected


def test_sensor_trends_answer_every_sensor_by_columns(database: str) -> None:
    """From a real PostgreSQL: the columns hold what the REST time series holds."""
    from types import SimpleNamespace

    import psycopg

    from api.history import History
    from store.partitions import Partitions
    from store.registry import register_plant, sensor_keys

    spec = machine(1)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    minutes = [end - timedelta(minutes=m) for m in range(90, 0, -1)]
    with psycopg.connect(database) as conn:
        register_plant(conn, SimpleNamespace(machines=[spec], technicians=[]))
        key = sensor_keys(conn, ["M-1.vibration"])["M-1.vibration"]
        Partitions().ensure(conn, "rollup_1m", minutes)
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rollup_1m (sensor_key, bucket, count, mean, m2, vmin, vmax, "
                "n_uncertain, n_bad) VALUES (%s, %s, 6, %s, 0.5, %s, %s, 0, 0)",
                [
                    (key, t, 3.0 + i / 100, 2.9 + i / 100, 3.1 + i / 100)
                    for i, t in enumerate(minutes)
                ],
            )

    async def scenario() -> None:
        _, _, context = setup()
        services = context["services"]
        query = "query($a: ID!) { sensorTrends(assetId: $a) }"
        missing = await schema.execute(query, variable_values={"a": "M-1"}, context_value=context)
        assert missing.errors and missing.errors[0].extensions == {"code": "unavailable"}
        services.history = await History.open(database)
        try:
            trends = (await ask(context, query, a="M-1"))["sensorTrends"]
            rest = await services.history.timeseries(
                "M-1.vibration", end - timedelta(hours=24), datetime.now(UTC), "auto"
            )
        finally:
            await services.history.close()
        vibration = trends["vibration"]
        assert vibration["aggregation"] == "1m" and vibration["unit"] == "mm/s"
        assert vibration["dataPoints"] == 90 == len(vibration["time"]) == len(vibration["avg"])
        assert vibration["time"] == [p["timestamp"] for p in rest["data"]]
        assert vibration["avg"] == [p["avg"] for p in rest["data"]]
        assert vibration["max"][0] == pytest.approx(3.1)
        assert vibration["statistics"] == rest["statistics"]
        assert trends["rpm"]["dataPoints"] == 0 and trends["rpm"]["time"] == []
        unknown = await schema.execute(query, variable_values={"a": "M-9"}, context_value=context)
        assert unknown.errors and unknown.errors[0].extensions == {
            "code": "not_found",
            "field": "assetId",
        }

    asyncio.run(scenario())
