"""Store-and-forward through a network outage: a gateway reading 1,000 values/s over
Modbus loses its link to the hub for 60 s (a TCP proxy standing for the network is cut),
and in the second test is itself restarted during the outage. Afterwards the hub has
every batch the gateway stored, exactly once, in order per sensor."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus_sim import ModbusPlantServer
from edge.config import GatewayConfig
from edge.gateway import Gateway
from schemas import load_plant
from schemas.subjects import edge_alert_all
from tests.edge.conftest import Hub, LinkProxy, gateway_config, hub_batches
from twinfleet.cli import _example_plant_path
from twinfleet.natsconf import GatewayCredentials

pytestmark = pytest.mark.slow

CONVEYORS = [f"CV-4{i:02d}" for i in range(1, 11)]  # 10 machines x 4 sensors
POLL_S = 0.04  # 40 sensors at 25 Hz: 1,000 readings/s
OUTAGE_S = 60.0


def _now() -> float:
    return asyncio.get_running_loop().time()


class Run:
    """A gateway running in this process, with a subscriber to its local alerts."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.gw = Gateway(cfg, load_plant(cfg.plant), GatewayCredentials.load(cfg.hub.credentials))
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self._nc: Any = None

    async def start(self) -> Run:
        import nats

        self.task = asyncio.create_task(self.gw.run(self.stop))
        await asyncio.wait_for(self.gw.ready.wait(), 30)
        assert self.gw.store is not None
        self._nc = await nats.connect(self.gw.store.url)

        async def on_alert(msg: Any) -> None:
            self.alerts.append((_now(), json.loads(msg.data)))

        await self._nc.subscribe(edge_alert_all(self.gw.config.gateway_id), cb=on_alert)
        return self

    async def finish(self) -> None:
        await self._nc.close()
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)


async def _plant_and_link(hub: Hub) -> tuple[ModbusPlantServer, LinkProxy]:
    """The conveyors on a Modbus server changing every poll, and the link to the hub."""
    plant = load_plant(_example_plant_path())
    server = ModbusPlantServer(
        plant, unit_ids={m: i + 1 for i, m in enumerate(CONVEYORS)}, tick_s=POLL_S
    )
    await server.start()
    proxy = LinkProxy(hub.leaf_port)
    await proxy.start()
    return server, proxy


def _config(tmp_path: Path, hub: Hub, proxy: LinkProxy, server: ModbusPlantServer) -> GatewayConfig:
    data = gateway_config(
        tmp_path,
        hub,
        modbus=[
            {
                "port": server.port,
                "machines": {m: server.unit_ids[m] for m in CONVEYORS},
                "poll_interval_s": POLL_S,
            }
        ],
    )
    data["hub"]["leaf_url"] = f"nats-leaf://127.0.0.1:{proxy.port}"
    data["forward"]["batch_max_readings"] = 1000
    return GatewayConfig.model_validate(data)


def _check_exactly_once_in_order(batches: list[Any], stored_batches: int, forwarded: int) -> None:
    assert len(batches) == stored_batches  # none lost
    assert len({b.batch_id for b in batches}) == len(batches)  # none twice
    readings = [r for b in batches for r in b.iter_readings()]
    assert len(readings) == forwarded
    last: dict[str, int] = defaultdict(int)
    seen = set()
    for r in readings:  # hub stream order
        key = (r.sensor_id, r.timestamp)
        assert key not in seen, f"{key} arrived twice"
        seen.add(key)
        assert r.timestamp > last[r.sensor_id], f"{r.sensor_id} out of order at {r.timestamp}"
        last[r.sensor_id] = r.timestamp


def test_a_60_s_link_outage_loses_nothing_and_duplicates_nothing(tmp_path: Path, hub: Hub) -> None:
    async def main() -> None:
        server, proxy = await _plant_and_link(hub)
        run = await Run(_config(tmp_path, hub, proxy, server)).start()
        await asyncio.sleep(5)
        before = run.gw.counts["accepted"]
        await proxy.cut()
        cut_at = _now()
        await asyncio.sleep(OUTAGE_S / 2)
        # hold a value above critical for over two of the sensor's 1 s sample periods (edge
        # detection scores a sensor once per 0.9 periods, and a limit alarm needs two
        # readings in a row beyond the limit: the on-delay)
        server.live = False
        server.set_value("CV-405", "belt_speed", 2.6)
        held = _now()
        while not any(a["machine_id"] == "CV-405" for _, a in run.alerts) and _now() < held + 10:
            await asyncio.sleep(0.1)  # until the local alert fires (or 10 s)
        server.live = True
        await asyncio.sleep(max(OUTAGE_S / 2 - (_now() - held), 0.0))
        during = run.gw.counts["accepted"] - before
        await proxy.restore()
        restored_at = _now()
        await asyncio.sleep(3)
        await run.gw.stop_reading()
        batches = await hub_batches(hub.url, run.gw.counts["batches"], timeout_s=120)
        print(
            f"outage: {during} readings accepted in {OUTAGE_S:.0f} s "
            f"({during / OUTAGE_S:.0f}/s); hub has {len(batches)} batches"
        )
        await run.finish()
        await server.stop()
        await proxy.close()
        assert during >= 0.5 * 1000 * OUTAGE_S  # it kept collecting (~1,000/s nominal)
        alerts_in_outage = [
            a for t, a in run.alerts if cut_at < t < restored_at and a["machine_id"] == "CV-405"
        ]
        assert alerts_in_outage, "local alerts must keep firing while the hub is unreachable"
        _check_exactly_once_in_order(
            batches, run.gw.counts["batches"], run.gw.counts["readings_forwarded"]
        )

    asyncio.run(main())


def test_a_gateway_restarted_during_the_outage_still_delivers_everything_once(
    tmp_path: Path, hub: Hub
) -> None:
    async def main() -> None:
        server, proxy = await _plant_and_link(hub)
        cfg = _config(tmp_path, hub, proxy, server)
        first = await Run(cfg).start()
        await asyncio.sleep(3)
        await proxy.cut()
        await asyncio.sleep(OUTAGE_S / 2)
        await first.finish()  # the gateway and its leaf node stop, mid-outage
        second = await Run(cfg).start()  # same store directory: the backlog is still there
        await asyncio.sleep(OUTAGE_S / 2)
        await proxy.restore()
        await asyncio.sleep(3)
        await second.gw.stop_reading()
        stored = first.gw.counts["batches"] + second.gw.counts["batches"]
        forwarded = first.gw.counts["readings_forwarded"] + second.gw.counts["readings_forwarded"]
        batches = await hub_batches(hub.url, stored, timeout_s=120)
        await second.finish()
        await server.stop()
        await proxy.close()
        # batch ids are "<gateway>:<incarnation>-<secret>-<seq>" (issue 18, finding 8)
        starts = {b.batch_id.split(":", 1)[1].rsplit("-", 1)[0] for b in batches}
        assert {s.split("-")[0] for s in starts} == {"1", "2"}
        assert len({s.split("-")[1] for s in starts}) == 2  # a new secret at each start
        _check_exactly_once_in_order(batches, stored, forwarded)

    asyncio.run(main())
