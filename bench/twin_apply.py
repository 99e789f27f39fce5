"""Cost of MachineTwin.apply per reading, and memory per twin.

Three machines, each fed the way it is in production or in a benchmark:

* ``skab``: the SKAB rig (eight sensors, no limits) with the SKAB benchmark's detectors
  (rules and the smoothed PCA monitor), one synthetic SKAB-like row per
  ``apply_arrays``: 400 learning rows, then 800 scored rows of which a quarter are a
  fault (a shifted, noisier flow), as ``twinfleet bench anomaly`` replays SKAB.
* ``plant``: pump P-201 of the example plant (``twinfleet/plants/example.yaml``, six
  sensors with limits) with its flow as operating condition, the default twin
  configuration (rules, robust z-score, PCA), simulated by
  :class:`~twins.simulator.plant.PlantSimulator` at 10-minute scans for two weeks, one
  batch per ``apply``.
* ``bench``: a 100-sensor machine fed 100-reading batches (one scan per batch) with every
  default detector on (threshold, rate of change, flatline, stale, robust z-score, PCA
  T²/Q); the memory per twin and the snapshot size are printed for it.

Every case reports microseconds per row (one ``apply``/``apply_arrays`` call) and per
reading: the median over ``--repeats`` fresh twins, batches decoded outside the timing.

``--baseline DIR`` times another version of the ``twins`` package side by side: DIR holds
that version's ``twins`` folder (for example ``git archive HEAD twins | tar -x -C DIR``).
Both run in this process, interleaved repeat by repeat, so the ratio is not at the mercy
of whatever else the machine is doing; the rows' results are checked to be the same.

    python bench/twin_apply.py [--case skab plant bench] [--repeats 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from schemas.plant import MachineSpec, OperatingConditionSpec, SensorSpec, load_plant
from schemas.telemetry import TelemetryBatch
from twinfleet.benchmarks.skab import FIT_ROWS, SKAB_CONFIG, skab_rig
from twins import machine as current_machine
from twins.simulator.faults import SensorFaults
from twins.simulator.plant import PlantSimulator

KINDS = [
    ("vibration", "mm/s", 2.0, 7.1, 11.0),
    ("temperature", "degC", 60.0, 85.0, 100.0),
    ("pressure", "bar", 5.0, 7.0, 8.0),
    ("current", "A", 80.0, 110.0, 125.0),
]
START_MS = 1_700_000_000_000
PLANT_FILE = Path(__file__).resolve().parents[1] / "twinfleet" / "plants" / "example.yaml"
PLANT_MACHINE = "P-201"
PLANT_CONDITION = "flow"


# -- the machines and their data --------------------------------------------------------------
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


def skab_rows(n: int = 1200, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Times (ms, one row a second, repeated per sensor) and values (rows x 8) like a
    SKAB recording: correlated, quantised flow and pressure, a fault in the last third."""
    rng = np.random.default_rng(seed)
    load = np.cumsum(rng.normal(0, 0.02, n))
    noise = rng.normal(size=(n, 8))
    values = np.column_stack(
        [
            0.21 + 0.01 * load + 0.004 * noise[:, 0],  # accelerometers (g)
            0.27 + 0.01 * load + 0.004 * noise[:, 1],
            1.9 + 0.2 * load + 0.3 * noise[:, 2],  # current (A)
            np.round(0.1 * load + 0.05 * noise[:, 3], 1),  # pressure (bar), 0.1 steps
            70.0 + np.linspace(0.0, 3.0, n) + 0.1 * noise[:, 4],  # warming temperatures
            28.0 + np.linspace(0.0, 1.0, n) + 0.05 * noise[:, 5],
            230.0 + 2.0 * noise[:, 6],  # voltage (V)
            np.round(32.0 + 2.0 * load + 0.5 * noise[:, 7]),  # flow (L/min), whole litres
        ]
    )
    fault = slice(FIT_ROWS + 500, FIT_ROWS + 700)
    values[fault, 7] -= 4.0 + 2.0 * rng.random(200)
    times = START_MS + 1000 * np.arange(n, dtype=np.int64)
    return np.repeat(times[:, None], 8, axis=1), values


def plant_pump() -> MachineSpec:
    spec = next(m for m in load_plant(PLANT_FILE).machines if m.id == PLANT_MACHINE)
    condition = OperatingConditionSpec(sensors=[PLANT_CONDITION], settle_minutes=30)
    return spec.model_copy(update={"operating_condition": condition})


def plant_batches(spec: MachineSpec, days: int = 14, seed: int = 5) -> list[TelemetryBatch]:
    plant = load_plant(PLANT_FILE)
    plant = plant.model_copy(update={"machines": [spec]})
    sim = PlantSimulator(plant, seed=seed, start_ms=START_MS, faults=SensorFaults())
    out = [b for _ in range(days * 24 * 6) for b in sim.advance(600)]
    for b in out:
        b.readings.arrays()  # decode outside the timed loop
    return out


# -- timing --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    """One machine and its rows: ``feed(twin, i)`` applies row ``i`` and returns the
    result; ``readings`` is the number of readings in all rows."""

    name: str
    description: str
    spec: MachineSpec
    config: Any
    rows: int
    readings: int
    feed: Callable[[Any, int], Any]


def skab_case() -> Case:
    times, values = skab_rows()
    return Case(
        "skab",
        "SKAB rig, 8 sensors, one row per apply_arrays (rules, smoothed PCA)",
        skab_rig(),
        SKAB_CONFIG,
        len(values),
        values.size,
        lambda twin, i: twin.apply_arrays(times[i], values[i]),
    )


def plant_case() -> Case:
    spec = plant_pump()
    data = plant_batches(spec)
    return Case(
        "plant",
        f"example plant {PLANT_MACHINE}, {len(spec.sensors)} sensors, condition "
        f"{PLANT_CONDITION}, one 10-minute scan per apply (rules, z-score, PCA)",
        spec,
        current_machine.TwinConfig(),
        len(data),
        sum(len(b) for b in data),
        lambda twin, i: twin.apply(data[i]),
    )


def bench_case(n_sensors: int, n_batches: int) -> Case:
    spec = machine(n_sensors)
    data = batches(spec, n_batches)
    return Case(
        "bench",
        f"{n_sensors} sensors, batches of {n_sensors} readings (one scan each), every "
        "default detector",
        spec,
        current_machine.TwinConfig(),
        len(data),
        n_sensors * len(data),
        lambda twin, i: twin.apply(data[i]),
    )


def load_baseline(root: Path) -> ModuleType:
    """``twins.machine`` of the package in ``root/twins``, imported beside the current one
    (its modules bind each other at import, so both versions can run in one process)."""
    if not (root / "twins" / "machine.py").is_file():
        raise SystemExit(f"--baseline {root}: no twins/machine.py there")
    ours = {k: v for k, v in sys.modules.items() if k == "twins" or k.startswith("twins.")}
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("twins.machine")
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k == "twins" or k.startswith("twins.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    return module


def run_once(module: ModuleType, case: Case) -> tuple[float, list[float]]:
    """Seconds for all rows through a fresh twin, and every row's scan scores."""
    fields = {f.name for f in dataclasses.fields(module.TwinConfig)}
    config = module.TwinConfig(
        **{k: v for k, v in dataclasses.asdict(case.config).items() if k in fields}
    )
    twin = module.MachineTwin(case.spec, config=config)
    scores: list[float] = []
    feed = case.feed
    clock = time.perf_counter
    gc.collect()
    spent = 0.0
    for i in range(case.rows):
        start = clock()
        result = feed(twin, i)
        spent += clock() - start
        scores.extend(result.scan_scores)
    return spent, scores


def time_case(case: Case, modules: dict[str, ModuleType], repeats: int) -> dict[str, float]:
    """Median seconds per row of each module, runs interleaved."""
    spent: dict[str, list[float]] = {label: [] for label in modules}
    scores: dict[str, list[float]] = {}
    for _ in range(repeats):
        for label, module in modules.items():
            seconds, scores[label] = run_once(module, case)
            spent[label].append(seconds)
    if len({tuple(s) for s in scores.values()}) > 1:
        print(f"  warning: {case.name}: the versions' scan scores differ")
    return {label: statistics.median(s) / case.rows for label, s in spent.items()}


def memory(case: Case, twins: int = 20) -> None:
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = []
    for _ in range(twins):
        twin = current_machine.MachineTwin(case.spec)
        for i in range(min(400, case.rows)):
            case.feed(twin, i)
        kept.append(twin)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(
        f"  memory per warmed-up twin (tracemalloc, {twins} twins): {grown / twins / 1024:,.0f} KiB"
    )
    print(f"  snapshot size per twin: {len(kept[0].snapshot()) / 1024:,.0f} KiB")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--case", nargs="+", choices=("skab", "plant", "bench"), default=["skab", "plant", "bench"]
    )
    ap.add_argument("--sensors", type=int, default=100, help="sensors of the bench machine")
    ap.add_argument("--batches", type=int, default=1500, help="batches for the bench machine")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="a folder holding another twins package")
    args = ap.parse_args(argv)
    modules = {"current": current_machine}
    if args.baseline is not None:
        modules = {"baseline": load_baseline(args.baseline.resolve()), **modules}
    makers = {
        "skab": skab_case,
        "plant": plant_case,
        "bench": lambda: bench_case(args.sensors, args.batches),
    }
    for name in args.case:
        case = makers[name]()
        per_row = time_case(case, modules, args.repeats)
        per_reading = case.readings / case.rows
        print(f"{case.name}: {case.description}")
        print(f"  {case.rows} rows, {per_reading:.1f} readings a row; median of {args.repeats}")
        for label, seconds in per_row.items():
            us = seconds * 1e6
            print(f"  {label:<9} {us:9.1f} us per row {us / per_reading:8.2f} us per reading")
        if "baseline" in per_row:
            print(f"  speed-up  {per_row['baseline'] / per_row['current']:.2f}x")
        if name == "bench":
            memory(case)


if __name__ == "__main__":
    main()
