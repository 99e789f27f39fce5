"""Ingest through the whole path: JetStream -> Ray host actors -> twins -> events.

Starts a nats-server (JetStream, temporary directory) and a local Ray, builds a fleet of
synthetic machines with ``--sensors`` sensors each (all detectors on), and prints:

1. sustained readings/s into the twins with every detector past its warm-up: ``--rounds``
   one-scan batches per machine published as fast as one process can, timed from the
   first publish to the last message applied (the warm-up rounds before are timed too);
2. p50/p99 latency from publish to the twin-changed event at a fixed offered load
   (``--rate`` readings/s spread over all machines);
3. machines held, resident memory of the host processes per machine, Ray actor count;
4. clone + 30-day what-if time.

    python bench/ingest.py [--machines 2000] [--sensors 100] [--hosts 2] [--rate 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from actors.bus import ensure_jetstream
from actors.fleet import Fleet
from schemas import subjects
from schemas.plant import MachineSpec, SensorSpec
from schemas.whatif import WhatIfRequest
from twinfleet.services import NatsServer, free_port

KINDS = ["vibration", "temperature", "pressure", "current", "flow"]


def machine(i: int, sensors: int) -> MachineSpec:
    return MachineSpec(
        id=f"M-{i:05d}",
        type="motor-bench",
        kind="motor",
        site="site-a",
        line=f"line-{i % 20}",
        failure_modes=["bearing_wear", "winding_insulation"],
        sensors=[
            SensorSpec(
                name=f"s{j:03d}",
                kind=KINDS[j % len(KINDS)],
                unit="u",
                normal_high=150.0,
                critical_high=200.0,
                stuck_after=0,
            )
            for j in range(sensors)
        ],
    )


def scan(spec: MachineSpec, k: int, t0: int, rng: np.random.Generator) -> bytes:
    n = len(spec.sensors)
    return json.dumps(
        {
            "gateway_id": "gw-bench",
            "site_id": spec.site,
            "batch_id": f"{spec.id}-{k}",
            "sent_at": t0 + k * 1000,
            "readings": {
                "machine_id": [spec.id] * n,
                "sensor_id": [f"{spec.id}.{s.name}" for s in spec.sensors],
                "timestamp": [t0 + k * 1000] * n,
                "value": (100.0 + rng.normal(0, 1, n)).round(3).tolist(),
            },
        }
    ).encode()


async def publish_all(url: str, messages: list[tuple[str, bytes, str]]) -> float:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_jetstream(js)
    started = time.perf_counter()
    window = 2000
    pending: list[asyncio.Future[object]] = []
    for subject, body, msg_id in messages:
        pending.append(
            asyncio.ensure_future(js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}))
        )
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.drain()
    return started


async def latency_run(
    url: str, specs: list[MachineSpec], rate: float, seconds: float, t0: int, start_k: int
) -> list[float]:
    """Publish at ``rate`` readings/s for ``seconds``; latency of each twin event."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    sent: dict[int, float] = {}
    latencies: list[float] = []

    async def on_event(msg: object) -> None:
        seq = json.loads(msg.data)["seq"]  # type: ignore[attr-defined]
        at = sent.pop(seq, None)
        if at is not None:
            latencies.append(time.perf_counter() - at)

    await nc.subscribe(f"{subjects.PREFIX}.twin.*", cb=on_event)
    per_message = len(specs[0].sensors)
    interval = per_message / rate
    rng = np.random.default_rng(1)
    bodies = [(s, scan(s, start_k, t0, rng)) for s in specs]
    begin = time.perf_counter()
    i = 0
    while time.perf_counter() - begin < seconds:
        due = begin + i * interval
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        spec, body = bodies[i % len(bodies)]
        k = start_k + i // len(bodies)
        if i >= len(bodies):
            body = scan(spec, k, t0, rng)
        at = time.perf_counter()
        ack = await js.publish(
            subjects.telemetry(spec.site, spec.id), body, headers={"Nats-Msg-Id": f"l{i}"}
        )
        sent[ack.seq] = at
        i += 1
    deadline = time.perf_counter() + 10
    while sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await nc.drain()
    return latencies


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=2000)
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=2, help="host actors (2 cores: 2)")
    parser.add_argument("--rounds", type=int, default=10, help="timed scans per machine")
    parser.add_argument("--rate", type=float, default=50_000, help="readings/s offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    args = parser.parse_args()
    # SIGTERM ends the run like Ctrl-C: the servers it started are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp), port=free_port()) as nats:
        specs = [machine(i, args.sensors) for i in range(args.machines)]
        per_host = -(-args.machines // args.hosts)
        started = time.perf_counter()
        fleet = Fleet(
            specs,
            nats.url,
            machines_per_host=per_host,
            config={"pca_fit_scans": 150, "zscore_warmup": 30},
            checkpoint_every_s=30.0,
            state_every_s=15.0,
            name="bench",
        ).start()
        fleet.wait_ready()
        print(
            f"fleet: {args.machines} machines x {args.sensors} sensors on {len(fleet.hosts)} "
            f"host actors, started in {time.perf_counter() - started:.1f} s"
        )
        t0 = int(time.time() * 1000) - 3 * 86_400_000
        rng = np.random.default_rng(0)

        def rounds_of(first: int, count: int) -> list[tuple[str, bytes, str]]:
            return [
                (subjects.telemetry(s.site, s.id), scan(s, k, t0, rng), f"{s.id}-{k}")
                for k in range(first, first + count)
                for s in specs
            ]

        def ingest(messages: list[tuple[str, bytes, str]], done: int) -> tuple[float, float]:
            began = asyncio.run(publish_all(nats.url, messages))
            published = time.perf_counter() - began
            deadline = time.perf_counter() + 1800
            while not all(s["last_seq"] >= done for s in fleet.stats()):
                if time.perf_counter() > deadline:
                    raise SystemExit("ingest did not finish within 30 minutes")
                time.sleep(0.05)
            return time.perf_counter() - began, published

        # Every detector learns first (PCA needs sensors + 2 scans), then the timed rounds.
        warm_rounds = max(args.sensors + 2, 31) + 1
        warm = rounds_of(0, warm_rounds)
        took, _ = ingest(warm, len(warm))
        n = len(warm) * args.sensors
        print(
            f"warm-up: {n:,} readings ({warm_rounds} scans per machine) in {took:.1f} s "
            f"= {n / took:,.0f} readings/s while the detectors learn"
        )
        timed = rounds_of(warm_rounds, args.rounds)
        took, published = ingest(timed, len(warm) + len(timed))
        readings = len(timed) * args.sensors
        print(
            f"sustained, all detection on: {readings:,} readings in {len(timed):,} messages "
            f"applied in {took:.1f} s = {readings / took:,.0f} readings/s "
            f"(publishing alone took {published:.1f} s)"
        )
        start_k = warm_rounds + args.rounds
        lat = asyncio.run(latency_run(nats.url, specs, args.rate, args.seconds, t0, start_k))
        if lat:
            ms = np.array(lat) * 1000
            print(
                f"latency publish -> twin event at {args.rate:,.0f} readings/s offered: "
                f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms "
                f"({len(ms):,} events)"
            )
        pids = [ray.get(h.pid.remote()) for h in fleet.hosts.values()]
        rss = sum(rss_kib(p) for p in pids)
        print(
            f"held: {args.machines} machines; host processes' resident memory {rss / 1024:.0f} "
            f"MiB = {rss / args.machines:.0f} KiB per machine; Ray actors: "
            f"{len(fleet.hosts) + 1} (hosts + registry)"
        )
        started = time.perf_counter()
        clone = fleet.clone(specs[0].id, ttl_s=60)
        result = fleet.what_if(clone, WhatIfRequest(horizon_days=30).model_dump_json())
        print(
            f"clone + 30-day what-if ({result['n_paths']} paths): "
            f"{time.perf_counter() - started:.2f} s (simulation {result['seconds']:.2f} s)"
        )
        fleet.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
