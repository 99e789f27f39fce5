"""How long validating one telemetry batch takes, from a Python dict and from JSON bytes.

Run from the project root::

    .venv/bin/python bench/schema_validate.py [--readings 1000] [--runs 2000]

Prints, for each input form, the median time per batch (µs) over ``--runs`` timed runs
(after a warm-up) and the readings/s that median implies. The batch is shaped like a
gateway's: ``--machines`` machines with ``readings / machines`` sensors each, one
timestamp per scan, quality codes 0..2. The receiver's clock is pinned with the validation
context, so the figures do not depend on the date.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from schemas.telemetry import TelemetryBatch

NOW_MS = 1_700_000_000_000


def make_batch(readings: int, machines: int) -> dict[str, Any]:
    """A valid wire-format batch of ``readings`` readings spread over ``machines``."""
    per_machine = max(1, readings // machines)
    machine_ids: list[str] = []
    sensor_ids: list[str] = []
    for i in range(readings):
        m = f"M-{(i // per_machine) % machines:04d}"
        machine_ids.append(m)
        sensor_ids.append(f"{m}.s{i % per_machine:03d}")
    return {
        "gateway_id": "gw-1",
        "site_id": "plant-a",
        "batch_id": "gw-1-000001",
        "sent_at": NOW_MS,
        "readings": {
            "machine_id": machine_ids,
            "sensor_id": sensor_ids,
            "timestamp": [NOW_MS - 1000 + (i % 10) for i in range(readings)],
            "value": [20.0 + (i % 97) * 0.25 for i in range(readings)],
            "quality": [i % 3 for i in range(readings)],
        },
    }


def median_us(fn: Callable[[], object], runs: int, warmup: int = 50) -> float:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()

    data = make_batch(args.readings, args.machines)
    raw = json.dumps(data).encode()
    ctx = {"now_ms": NOW_MS}
    # Both forms must validate to the same batch before anything is timed.
    from_dict = TelemetryBatch.model_validate(data, context=ctx)
    from_json = TelemetryBatch.model_validate_json(raw, context=ctx)
    if from_dict != from_json or len(from_dict) != args.readings:
        raise SystemExit("the dict and JSON forms did not validate to the same batch")

    print(
        f"TelemetryBatch, {args.readings} readings on {args.machines} machines, "
        f"median of {args.runs} runs"
    )
    cases: list[tuple[str, Callable[[], object]]] = [
        ("from dict", lambda: TelemetryBatch.model_validate(data, context=ctx)),
        ("from JSON bytes", lambda: TelemetryBatch.model_validate_json(raw, context=ctx)),
    ]
    for label, fn in cases:
        us = median_us(fn, args.runs)
        print(f"  {label:<16} {us:9.1f} µs/batch  {args.readings / us * 1e6:13,.0f} readings/s")


if __name__ == "__main__":
    main()
