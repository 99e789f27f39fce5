"""Issue 18, finding 8: one gateway cannot pre-claim another's message ids.

JetStream drops a message whose ``Nats-Msg-Id`` the stream has seen within its duplicate
window, before anything reads it, so an id another gateway publishes first is lost data
for its owner. A gateway's ids carry its id and a secret drawn at each start, so no other
gateway can compute them: here a plant-north gateway publishes, under its own NATS user,
every id a plant-south gateway would use in the old scheme and the guessable part of the
new one, and the plant-south gateway (real, direct mode) still gets every batch stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import FieldValue
from edge.config import GatewayConfig
from edge.gateway import Gateway
from schemas import subjects
from schemas.plant import load_plant
from tests.edge.conftest import hub_batches
from twinfleet.cli import _example_plant_path
from twinfleet.natsconf import GatewayCredentials, gateways_dir, hub_server
from twinfleet.services import NatsServer, free_port

BATCHES = 5
GUESSES = 50


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[NatsServer, dict[str, GatewayCredentials]]]:
    data_dir = tmp_path / "hub"
    gws = {
        "gw-north": GatewayCredentials.new("gw-north", ["plant-north"]),
        "gw-south": GatewayCredentials.new("gw-south", ["plant-south"]),
    }
    for creds in gws.values():
        creds.save(gateways_dir(data_dir))
    with hub_server(data_dir, port=free_port(), leaf_port=free_port()) as server:
        yield server, gws


def guesses(gateway_id: str) -> list[str]:
    """What another gateway can compute of ``gateway_id``'s first ids after its first
    start: the old scheme (``<gateway>-<start>-<seq>``) and the new one's visible parts."""
    out = []
    for seq in range(1, GUESSES + 1):
        out += [f"{gateway_id}-1-{seq:010d}", f"{gateway_id}:1-{seq:010d}"]
    return out


def test_a_gateway_cannot_preclaim_another_gateways_message_ids(
    tmp_path: Path, hub: tuple[NatsServer, dict[str, GatewayCredentials]]
) -> None:
    import nats

    from actors.bus import ensure_jetstream

    server, gws = hub
    north, south = gws["gw-north"], gws["gw-south"]
    plant = load_plant(_example_plant_path())
    pump = next(m for m in plant.machines if m.id == "P-207")
    sensor = pump.sensors[0]
    creds_path = tmp_path / "gw-south.json"
    south.save(tmp_path)
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": "gw-south",
            "plant": str(_example_plant_path()),
            "hub": {"url": server.public_url, "credentials": str(creds_path)},
            "store": {"mode": "direct", "dir": str(tmp_path / "edge")},
            "forward": {"mode": "everything", "batch_max_delay_ms": 50},
            "modbus": [{"port": 1, "machines": {pump.id: 1}}],
        }
    )

    async def scenario() -> tuple[Gateway, list[Any], int]:
        hub_nc = await nats.connect(server.url)
        await ensure_jetstream(hub_nc.jetstream())
        await hub_nc.close()
        attacker = await nats.connect(
            f"nats://{north.direct_user}:{north.direct_password}@127.0.0.1:{server.port}",
            inbox_prefix=north.inbox_prefix,
        )
        js = attacker.jetstream()
        now = int(time.time() * 1000)
        body = json.dumps(
            {
                "gateway_id": "gw-north",
                "site_id": "plant-north",
                "batch_id": "claim",
                "sent_at": now,
                "readings": {
                    "machine_id": ["M-101"],
                    "sensor_id": ["M-101.vibration"],
                    "timestamp": [now - 120_000],
                    "value": [1.0],
                },
            }
        ).encode()
        claimed = 0
        for msg_id in guesses("gw-south"):
            ack = await js.publish(
                subjects.telemetry("plant-north", "M-101"), body, headers={"Nats-Msg-Id": msg_id}
            )
            claimed += not ack.duplicate
        await attacker.close()

        gw = Gateway(cfg, plant, south)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop, drivers=[]))
        await asyncio.wait_for(gw.ready.wait(), 20)
        for k in range(BATCHES):
            sent = gw.counts["batches"]
            gw.receive([FieldValue(pump.id, sensor.name, 50.0 + k, now - 60_000 + k * 1000)])
            deadline = time.monotonic() + 20
            while gw.counts["batches"] == sent:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the gateway did not publish: {dict(gw.counts)}")
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 30)
        stored = await hub_batches(server.url, claimed + gw.counts["batches"], timeout_s=10)
        return gw, stored, claimed

    gw, stored, claimed = asyncio.run(scenario())
    assert claimed == 2 * GUESSES  # the attacker's messages were all taken
    theirs = [b for b in stored if b.gateway_id == "gw-south"]
    # every batch the gateway stored reached the hub (the readings' batches, and the
    # minute's aggregate when the minute closed while it ran)
    assert len(theirs) == gw.counts["batches"] >= BATCHES, (len(theirs), dict(gw.counts))
    values = sorted(r.value for b in theirs for r in b.iter_readings())
    assert values == [50.0 + k for k in range(BATCHES)], "pre-claimed ids lost readings"
    assert all(b.batch_id.startswith("gw-south:") for b in theirs)
