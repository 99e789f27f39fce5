"""The gateway end to end with real servers: a pymodbus server for the simulated plant,
the gateway with its own leaf node (nats-server), and the hub (nats-server) sourcing it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus_sim import ModbusPlantServer
from edge.config import GatewayConfig
from edge.gateway import Gateway
from schemas import load_plant
from schemas.common import Quality
from schemas.subjects import edge_alert_all
from tests.edge.conftest import Hub, gateway_config, hub_batches
from twinfleet.cli import _example_plant_path

CONVEYORS = [f"CV-40{i}" for i in range(1, 4)]


async def _run_gateway(
    cfg: GatewayConfig,
    hub_url: str,
    seconds: float,
    during: Any = None,
    drivers: list[Any] | None = None,
) -> tuple[Gateway, list[Any]]:
    """Run a gateway, stop its reading, and return it with what the hub received once
    the hub has every forwarded reading (the gateway's leaf node keeps running until then:
    the hub takes data from it)."""
    plant = load_plant(cfg.plant)
    from twinfleet.natsconf import GatewayCredentials

    gw = Gateway(cfg, plant, GatewayCredentials.load(cfg.hub.credentials))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop, drivers=drivers))
    await asyncio.wait_for(gw.ready.wait(), 20)
    if during is not None:
        await during(gw)
    await asyncio.sleep(seconds)
    await gw.stop_reading()
    batches = await hub_batches(hub_url, gw.counts["batches"], timeout_s=60)
    stop.set()
    await asyncio.wait_for(task, 60)
    return gw, batches


async def until(check: Any, what: str, timeout_s: float = 30.0) -> None:
    """Wait for a state of the gateway (polled), failing after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def _modbus(server: ModbusPlantServer, poll_s: float = 0.2) -> list[dict[str, Any]]:
    return [
        {
            "port": server.port,
            "machines": {m: server.unit_ids[m] for m in CONVEYORS},
            "poll_interval_s": poll_s,
        }
    ]


def test_values_read_over_modbus_reach_the_hub_through_the_leaf_node(
    tmp_path: Path, hub: Hub
) -> None:
    plant = load_plant(_example_plant_path())
    expected = {"CV-401": 1.25, "CV-402": 1.5, "CV-403": 1.75}

    async def main() -> tuple[Gateway, list[Any]]:
        server = ModbusPlantServer(plant, unit_ids={m: i + 1 for i, m in enumerate(CONVEYORS)})
        await server.start()
        server.live = False
        for m, v in expected.items():
            server.set_value(m, "belt_speed", v)
        cfg = GatewayConfig.model_validate(gateway_config(tmp_path, hub, modbus=_modbus(server)))
        gw, batches = await _run_gateway(cfg, hub.url, 2.0)
        await server.stop()
        return gw, batches

    gw, batches = asyncio.run(main())
    readings = [r for b in batches for r in b.iter_readings()]
    assert gw.counts["readings_forwarded"] > 0
    assert len(batches) == gw.counts["batches"]
    assert len(readings) == gw.counts["readings_forwarded"]  # all arrived, none twice
    assert len({b.batch_id for b in batches}) == len(batches)
    speeds = [r for r in readings if r.sensor_id.endswith(".belt_speed")]
    assert {r.machine_id for r in speeds} == set(expected)
    for r in speeds:
        assert r.value == pytest.approx(expected[r.machine_id], abs=1e-6)
        assert r.quality is Quality.GOOD
    assert all(b.gateway_id == "gw-north" and b.site_id == "plant-north" for b in batches)
    assert gw.rejected == {}


def test_an_edge_anomaly_fires_a_local_alert_and_sends_raw_data_around_it(
    tmp_path: Path, hub: Hub
) -> None:
    """Aggregates mode: normal data goes as 1-minute aggregates only; the sensor that
    crossed its critical limit raises an alert on the gateway's own server and its
    machine's values around it go at full resolution."""
    plant = load_plant(_example_plant_path())

    async def main() -> tuple[Gateway, list[Any], list[dict[str, Any]]]:
        import nats

        server = ModbusPlantServer(plant, unit_ids={m: i + 1 for i, m in enumerate(CONVEYORS)})
        await server.start()
        server.live = False
        for m in CONVEYORS:
            server.set_value(m, "belt_speed", 1.9)
        cfg = GatewayConfig.model_validate(
            gateway_config(
                tmp_path,
                hub,
                modbus=_modbus(server),
                forward={"mode": "aggregates", "window_s": 1, "context_s": 5},
            )
        )
        alerts: list[dict[str, Any]] = []

        async def during(gw: Gateway) -> None:
            assert gw.store is not None
            nc = await nats.connect(gw.store.url)

            async def on_alert(msg: Any) -> None:
                alerts.append(json.loads(msg.data))

            await nc.subscribe(edge_alert_all("gw-north"), cb=on_alert)
            await asyncio.sleep(1.0)
            server.set_value("CV-402", "belt_speed", 2.5)  # above critical_high 2.3
            # two readings beyond it (the detectors' on-delay), then the local alert
            deadline = asyncio.get_running_loop().time() + 10.0
            while not alerts and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            await nc.close()

        gw, batches = await _run_gateway(cfg, hub.url, 1.0, during)
        await server.stop()
        return gw, batches, alerts

    gw, batches, alerts = asyncio.run(main())
    assert [a["sensor_id"] for a in alerts][:1] == ["CV-402.belt_speed"]
    assert gw.counts["alerts"] >= 1
    readings = [r for b in batches for r in b.iter_readings()]
    assert readings and {r.machine_id for r in readings} == {"CV-402"}
    anomalies = [a for b in batches for a in b.anomalies]
    assert any(
        a.sensor_id == "CV-402.belt_speed" and a.value == pytest.approx(2.5) for a in anomalies
    )
    aggregates = [b.aggregates for b in batches if b.aggregates is not None]
    machines = {m for a in aggregates for m in a.machine_id}
    assert machines == set(CONVEYORS)
    counted = sum(sum(a.count) for a in aggregates)
    assert counted == gw.counts["accepted"]  # every accepted value is in one aggregate


def test_bad_values_are_refused_by_reason_counted_and_dead_lettered(
    tmp_path: Path, hub: Hub
) -> None:
    """Unknown sensors, NaN and far-future timestamps are refused one by one with the
    reason (counted, on tf.dlq.<gateway>); the good values of the same read go on."""
    import math
    import time

    from drivers.base import FieldValue

    now = int(time.time() * 1000)
    good = [
        FieldValue("CV-401", "belt_speed", 1.9, now),
        FieldValue("CV-402", "current", 14.0, now),
    ]
    bad = [
        FieldValue("CV-401", "no_such_sensor", 1.0, now),
        FieldValue("P-207", "flow", 1.0, now),  # another site's machine
        FieldValue("CV-401", "current", math.nan, now),
        FieldValue("CV-401", "vibration", 1.0, now + 3_600_000),
    ]

    async def main() -> tuple[Gateway, list[Any], list[dict[str, Any]]]:
        import nats

        dead: list[dict[str, Any]] = []

        async def during(gw: Gateway) -> None:
            assert gw.store is not None
            watcher = await nats.connect(gw.store.url)

            async def on_dead(msg: Any) -> None:
                dead.append(json.loads(msg.data))

            await watcher.subscribe("tf.dlq.gw-north", cb=on_dead)
            await watcher.flush()
            gw.receive([*bad[:2], *good, *bad[2:]])
            await asyncio.sleep(1.0)
            await watcher.close()

        machines = {"CV-401": 1, "CV-402": 2}  # the values come from receive(), not a driver
        cfg = GatewayConfig.model_validate(
            gateway_config(tmp_path, hub, modbus=[{"port": 1, "machines": machines}])
        )
        gw, batches = await _run_gateway(cfg, hub.url, 0.0, during, drivers=[])
        return gw, batches, dead

    gw, batches, dead = asyncio.run(main())
    readings = [r for b in batches for r in b.iter_readings()]
    assert sorted((r.sensor_id, r.value) for r in readings) == [
        ("CV-401.belt_speed", 1.9),
        ("CV-402.current", 14.0),
    ]
    assert gw.counts["rejected"] == 4
    assert sum(gw.rejected.values()) == 4
    reasons = [r["reason"] for d in dead for r in d["rejected"]]
    assert len(reasons) == 4
    assert any("unknown sensor CV-401.no_such_sensor" in r for r in reasons)
    assert any("unknown sensor P-207.flow" in r for r in reasons)
    assert any("not a finite number" in r for r in reasons)
    assert any("ahead of the gateway clock" in r for r in reasons)


def test_values_read_over_opcua_reach_the_hub_with_their_quality_and_source_time(
    tmp_path: Path, hub: Hub
) -> None:
    import time

    from drivers.opcua_sim import OpcUaPlantServer

    plant = load_plant(_example_plant_path())
    t = int(time.time() * 1000) - 60_000
    written = [
        ("M-101", "vibration", 2.25, Quality.GOOD, t),
        ("M-101", "current", 27.5, Quality.UNCERTAIN, t + 10),
        ("M-102", "bearing_temp", 41.0, Quality.GOOD, t + 20),
        ("M-102", "current", 0.0, Quality.BAD, t + 30),
    ]

    async def main() -> tuple[Gateway, list[Any]]:
        server = OpcUaPlantServer(plant, tick_s=3600)
        await server.start()
        server.pause()
        cfg = GatewayConfig.model_validate(
            gateway_config(
                tmp_path,
                hub,
                opcua=[
                    {
                        "endpoint": server.endpoint,
                        "machines": ["M-101", "M-102"],
                        "sampling_interval_ms": 0,
                    }
                ],
            )
        )

        async def during(gw: Gateway) -> None:
            # subscribed once the first values (the nodes' present ones) arrive
            await until(lambda: gw.drivers[0].stats.values >= 1, "the subscription")
            for m, s, v, q, ts in written:
                await server.set_value(m, s, v, q, ts)

        gw, batches = await _run_gateway(cfg, hub.url, 1.5, during)
        driver = gw.drivers[0]
        for m in ("M-101", "M-102"):  # units as the server declares them
            for s in plant.machine(m).sensors:
                assert driver.units[(m, s.name)] == s.unit
        await server.stop()
        return gw, batches

    gw, batches = asyncio.run(main())
    readings = {(r.sensor_id, r.timestamp): r for b in batches for r in b.iter_readings()}
    for m, s, v, q, ts in written[:3]:
        r = readings[(f"{m}.{s}", ts)]
        assert (r.value, r.quality) == (pytest.approx(v), q)
    # the Bad one: asyncua sends no value with a Bad status; counted, not forwarded
    assert ("M-102.current", t + 30) not in readings
    assert gw.counts["bad_quality_without_value"] >= 1


def test_the_gateway_restarts_its_leaf_node_if_it_dies_and_loses_nothing_stored(
    tmp_path: Path, hub: Hub
) -> None:
    """kill -9 of the gateway's nats-server: the gateway starts it again from its files,
    the batches it could not store meanwhile are retried, and the hub gets every batch."""
    plant = load_plant(_example_plant_path())

    async def main() -> tuple[Gateway, list[Any]]:
        server = ModbusPlantServer(plant, unit_ids={m: i + 1 for i, m in enumerate(CONVEYORS)})
        await server.start()
        cfg = GatewayConfig.model_validate(gateway_config(tmp_path, hub, modbus=_modbus(server)))

        async def during(gw: Gateway) -> None:
            await until(lambda: gw.counts["batches"] >= 1, "the first stored batch")
            assert gw.store is not None and gw.store.server is not None
            assert gw.store.server.process is not None
            gw.store.server.process.kill()
            # publishes fail; the gateway starts its store again and stores batches anew
            await until(lambda: gw.counts["store_restarts"] >= 1, "the store's restart")
            after = gw.counts["batches"]
            await until(lambda: gw.counts["batches"] >= after + 2, "batches after the restart")

        gw, batches = await _run_gateway(cfg, hub.url, 2.0, during)
        await server.stop()
        return gw, batches

    gw, batches = asyncio.run(main())
    assert gw.counts["store_restarts"] == 1
    assert gw.counts["publish_retries"] >= 1  # batches refused while it was down...
    assert len(batches) == gw.counts["batches"]  # ...were stored later, each once
    assert len({b.batch_id for b in batches}) == len(batches)
    assert sum(len(b) for b in batches) == gw.counts["readings_forwarded"]
