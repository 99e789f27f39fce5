"""Edge gateway figures.

1. OPC UA -> gateway -> NATS: the simulated plant's OPC UA server (a separate process,
   ``twinfleet sim opcua``) changes every sensor every ``--tick`` seconds; one gateway
   subscribes to all of it and forwards everything through its leaf node to a hub. Prints
   values/s the gateway received and stored, the gateway process's CPU share, and what
   reached the hub.
2. Gateway pipeline alone (no driver): values pushed into the gateway as fast as it takes
   them (validate, detect, forward, batch, store on its leaf node). Prints readings/s and
   edge detection p50/p99 per batch: the gateway's own ceiling, to compare with (1).

    .venv/bin/python bench/edge.py [--seconds 20] [--tick 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from drivers.base import FieldValue  # noqa: E402
from edge.config import GatewayConfig  # noqa: E402
from edge.gateway import Gateway  # noqa: E402
from schemas.plant import Plant, load_plant  # noqa: E402
from twinfleet.natsconf import GatewayCredentials, gateways_dir, hub_server  # noqa: E402
from twinfleet.services import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLANT = ROOT / "twinfleet" / "plants" / "example.yaml"


async def _prepare(url: str, creds: GatewayCredentials) -> None:
    import nats

    from actors.bus import ensure_jetstream, source_gateways

    nc = await nats.connect(url)
    await ensure_jetstream(nc.jetstream())
    await source_gateways(nc.jetstream(), [creds])
    await nc.close()


async def _hub_messages(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    n = int((await nc.jetstream().stream_info("TELEMETRY")).state.messages)
    await nc.close()
    return n


def _config(
    tmp: Path, plant: Plant, leaf_port: int, creds_path: Path, **extra: Any
) -> GatewayConfig:
    data: dict[str, Any] = {
        "gateway_id": "gw-bench",
        "plant": str(PLANT),
        "hub": {"leaf_url": f"nats-leaf://127.0.0.1:{leaf_port}", "credentials": str(creds_path)},
        "store": {"dir": str(tmp / "edge"), "max_bytes": 4 << 30},
        "forward": {"mode": "everything", "batch_max_readings": 1000, "batch_max_delay_ms": 200},
    }
    data.update(extra)
    return GatewayConfig.model_validate(data)


async def opcua_run(
    tmp: Path,
    plant: Plant,
    hub_url: str,
    leaf_port: int,
    creds_path: Path,
    seconds: float,
    tick: float,
) -> dict[str, float]:
    port = free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twinfleet.cli",
            "sim",
            "opcua",
            "--port",
            str(port),
            "--tick",
            str(tick),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        await asyncio.sleep(6.0)  # the server builds its address space
        cfg = _config(
            tmp / "opcua",
            plant,
            leaf_port,
            creds_path,
            opcua=[
                {
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/twinfleet/",
                    "machines": [m.id for m in plant.machines],
                    "sampling_interval_ms": 0,
                    "queue_size": 10,
                }
            ],
        )
        creds = GatewayCredentials.load(creds_path)
        gw = Gateway(cfg, plant, creds)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        await asyncio.wait_for(gw.ready.wait(), 30)
        await asyncio.sleep(5.0)  # connect, browse, subscribe
        r0, s0 = gw.counts["received"], gw.counts["readings_forwarded"]
        c0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - t0
        cpu = time.process_time() - c0
        received = (gw.counts["received"] - r0) / wall
        stored = (gw.counts["readings_forwarded"] - s0) / wall
        await gw.stop_reading()
        batches = gw.counts["batches"]
        deadline = time.monotonic() + 60
        while await _hub_messages(hub_url) < batches and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        at_hub = await _hub_messages(hub_url)
        stop.set()
        await task
        lat = np.asarray(gw.detect_ms)
        return {
            "offered": sum(len(m.sensors) for m in plant.machines) / tick,
            "received": received,
            "stored": stored,
            "cpu": cpu / wall,
            "batches": batches,
            "at_hub": at_hub,
            "detect_p50": float(np.percentile(lat, 50)),
            "detect_p99": float(np.percentile(lat, 99)),
        }
    finally:
        sim.terminate()
        sim.wait(10)


async def pipeline_run(
    tmp: Path, plant: Plant, leaf_port: int, creds_path: Path, seconds: float
) -> dict[str, float]:
    every = [m.id for m in plant.machines]  # configured, but fed by receive() below
    cfg = _config(
        tmp / "pipeline",
        plant,
        leaf_port,
        creds_path,
        opcua=[{"endpoint": "opc.tcp://127.0.0.1:1/unused/", "machines": every}],
    )
    gw = Gateway(cfg, plant, GatewayCredentials.load(creds_path))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop, drivers=[]))
    await asyncio.wait_for(gw.ready.wait(), 30)
    rng = np.random.default_rng(1)
    sensors = [(m.id, s.name, s.rated or 1.0) for m in plant.machines for s in m.sensors]
    t_ms = int(time.time() * 1000) - 3_600_000
    c0, t0 = time.process_time(), time.monotonic()
    f0 = gw.counts["readings_forwarded"]
    while time.monotonic() - t0 < seconds:
        noise = rng.normal(1.0, 0.02, len(sensors))
        t_ms += 100
        gw.receive(
            [
                FieldValue(m, s, float(r * k), t_ms)
                for (m, s, r), k in zip(sensors, noise, strict=True)
            ]
        )
        if len(gw._pending) >= cfg.forward.batch_max_readings:
            await gw.step()  # as fast as the gateway can take it
    wall = time.monotonic() - t0
    cpu = time.process_time() - c0
    done = gw.counts["readings_forwarded"] - f0
    lat = np.asarray(gw.detect_ms)
    stop.set()
    await task
    return {
        "readings_per_s": done / wall,
        "cpu": cpu / wall,
        "batch": cfg.forward.batch_max_readings,
        "detect_p50": float(np.percentile(lat, 50)),
        "detect_p99": float(np.percentile(lat, 99)),
        "stored_bytes_per_reading": json.loads((cfg.store.dir / "status.json").read_text())[
            "store"
        ]["bytes"]
        / max(1, gw.counts["readings_forwarded"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--tick", type=float, default=0.05, help="OPC UA server update period")
    args = ap.parse_args()
    plant = load_plant(PLANT)
    tmp = Path(tempfile.mkdtemp(prefix="twinfleet-bench-edge-"))
    creds = GatewayCredentials.new("gw-bench", [s.id for s in plant.sites])
    creds_path = creds.save(gateways_dir(tmp / "hub"))
    leaf_port = free_port()
    with hub_server(tmp / "hub", port=free_port(), leaf_port=leaf_port) as hub:
        asyncio.run(_prepare(hub.url, creds))
        op = asyncio.run(
            opcua_run(tmp, plant, hub.url, leaf_port, creds_path, args.seconds, args.tick)
        )
        pl = asyncio.run(pipeline_run(tmp, plant, leaf_port, creds_path, args.seconds))
    n = sum(len(m.sensors) for m in plant.machines)
    print(f"plant: {len(plant.machines)} machines, {n} sensors")
    print(
        f"OPC UA -> gateway -> leaf node -> hub (server updates every sensor every "
        f"{args.tick:g} s: {op['offered']:,.0f} changes/s offered):"
    )
    print(
        f"  received {op['received']:,.0f} values/s, stored {op['stored']:,.0f} readings/s; "
        f"gateway process CPU {op['cpu']:.0%} of one core"
    )
    print(
        f"  hub has {op['at_hub']:.0f} of {op['batches']:.0f} batches; "
        f"edge detection per batch p50 {op['detect_p50']:.2f} ms, p99 {op['detect_p99']:.2f} ms"
    )
    print("gateway pipeline alone (validate, detect, forward, batch, store; no driver):")
    print(
        f"  {pl['readings_per_s']:,.0f} readings/s at {pl['cpu']:.0%} CPU; edge detection per "
        f"{pl['batch']:.0f}-value batch p50 {pl['detect_p50']:.2f} ms, "
        f"p99 {pl['detect_p99']:.2f} ms; "
        f"{pl['stored_bytes_per_reading']:.0f} bytes stored per reading"
    )


if __name__ == "__main__":
    main()
