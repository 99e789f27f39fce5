"""Throughput of MachineTwin.apply and memory per twin.

Prints readings/s through ``MachineTwin.apply`` for a 100-sensor machine fed 100-reading
batches (one scan per batch) with every detector on (threshold, rate of change,
flatline, stale, robust z-score, PCA T²/Q), plus bytes per twin.

    python bench/twin_apply.py [--sensors 100] [--batches 3000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import numpy as np

from schemas.plant import MachineSpec, SensorSpec
from schemas.telemetry import TelemetryBatch
from twins.machine import MachineTwin

KINDS = [
    ("vibration", "mm/s", 2.0, 7.1, 11.0),
    ("temperature", "degC", 60.0, 85.0, 100.0),
    ("pressure", "bar", 5.0, 7.0, 8.0),
    ("current", "A", 80.0, 110.0, 125.0),
]
START_MS = 1_700_000_000_000


def machine(n_sensors: int) -> MachineSpec:
    sensors = []
    for i in range(n_sensors):
        kind, unit, _, nh, ch = KINDS[i % len(KINDS)]
        sensors.append(
            SensorSpec(
                name=f"s{i:03d}",
                kind=kind,
                unit=unit,
                normal_high=nh,
                critical_high=ch,
                max_rate_per_s=nh,
                stuck_after=30,
                sample_period_s=1.0,
            )
        )
    return MachineSpec(id="B-1", type="bench", kind="motor", site="s", line="l", sensors=sensors)


def batches(spec: MachineSpec, n: int, seed: int = 7) -> list[TelemetryBatch]:
    rng = np.random.default_rng(seed)
    ids = spec.sensor_ids()
    s = len(ids)
    base = np.array([KINDS[i % len(KINDS)][2] for i in range(s)])
    latent = np.cumsum(rng.normal(0, 0.01, size=(n, 3)), axis=0)
    mix = rng.normal(0, 0.3, size=(3, s))
    values = base * (1 + latent @ mix * 0.1) + rng.normal(0, 0.01, size=(n, s)) * base
    out = []
    for k in range(n):
        t = START_MS + k * 1000
        out.append(
            TelemetryBatch.model_validate(
                {
                    "gateway_id": "bench",
                    "site_id": "s",
                    "batch_id": f"b{k}",
                    "sent_at": t,
                    "readings": {
                        "machine_id": ["B-1"] * s,
                        "sensor_id": ids,
                        "timestamp": (t + rng.integers(0, 50, s)).tolist(),
                        "value": values[k].tolist(),
                    },
                },
                context={"now_ms": t + 1000},
            )
        )
        out[-1].readings.arrays()  # decode outside the timed loop, as an actor would
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sensors", type=int, default=100)
    ap.add_argument("--batches", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec = machine(args.sensors)
    data = batches(spec, args.batches)
    warm = 400  # detectors warm up (z-score 30 scans, PCA 200 scans) before timing
    rates = []
    for _ in range(args.repeats):
        twin = MachineTwin(spec)
        for b in data[:warm]:
            twin.apply(b)
        gc.collect()
        t0 = time.perf_counter()
        for b in data[warm:]:
            twin.apply(b)
        dt = time.perf_counter() - t0
        rates.append((len(data) - warm) * args.sensors / dt)
    per_batch_us = args.sensors / statistics.median(rates) * 1e6
    print(f"machine: {args.sensors} sensors, batches of {args.sensors} readings (one scan each)")
    print("detectors: threshold, rate_of_change, flatline, stale, robust_zscore, pca_t2_q")
    print(
        f"apply throughput: {statistics.median(rates):,.0f} readings/s "
        f"(median of {args.repeats}; {per_batch_us:.0f} us per batch; one core)"
    )
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    twins = []
    for _ in range(20):
        t = MachineTwin(spec)
        for b in data[:warm]:
            t.apply(b)
        twins.append(t)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"memory per warmed-up twin (tracemalloc, 20 twins): {grown / 20 / 1024:,.0f} KiB")
    print(f"snapshot size per twin: {len(twins[0].snapshot()) / 1024:,.0f} KiB")
    print(f"anomalies raised while timing: {twin.counters['anomalies']}")


if __name__ == "__main__":
    main()
