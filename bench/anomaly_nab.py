"""NAB anomaly benchmark through one-sensor machine twins, side by side with the published
HTM and ARTime results scored by the same scorer (see twinfleet.benchmarks.nab), then the
drift detector's own cost per scan for 1 and 8 sensors, next to the robust z-score's
measured in the same run (timings on shared machines are noisy: compare the ratio).

python bench/anomaly_nab.py [../shared/data/nab] [--per-file] [--with-zscore]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from twinfleet.benchmarks.nab import main
from twins.detectors.base import Scan, SensorDetector
from twins.detectors.drift import DriftDetector
from twins.detectors.robust import RobustZScore

SCANS = 4000


def us_per_scan(make: type[SensorDetector], sensors: int, seed: int = 0) -> float:
    """Microseconds per ``process_one`` (score, then learn) of a warmed-up detector on
    stationary noise, best of three passes."""
    rng = np.random.default_rng(seed)
    det = make(sensors)
    scans = [Scan.from_values(x, float(i)) for i, x in enumerate(rng.normal(size=(SCANS, sensors)))]
    for scan in scans[: SCANS // 2]:  # past the warm-up
        det.process_one(scan)
    best = float("inf")
    for _ in range(3):
        copy = det.clone()
        start = time.perf_counter()
        for scan in scans[SCANS // 2 :]:
            copy.process_one(scan)
        best = min(best, time.perf_counter() - start)
    return 1e6 * best / (SCANS // 2)


def cost_table() -> list[str]:
    lines = ["detector cost, us per scan (process_one; best of 3), same run:"]
    lines.append(f"{'sensors':>8}{'drift':>10}{'robust_z':>10}{'ratio':>8}{'drift/reading':>15}")
    for n in (1, 8):
        drift, robust = us_per_scan(DriftDetector, n), us_per_scan(RobustZScore, n)
        lines.append(f"{n:>8}{drift:>10.1f}{robust:>10.1f}{drift / robust:>8.2f}{drift / n:>15.1f}")
    return lines


if __name__ == "__main__":
    code = main()
    if code == 0:
        print("\n".join(cost_table()))
    sys.exit(code)
