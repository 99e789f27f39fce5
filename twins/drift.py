"""Model drift: do the machines of one type still read like the data their RUL model was
trained on? (pure: numpy only, no I/O)

**What is compared.** A RUL model reads trend features built from one thing: each
sensor's readings while the machine runs. A gauge recalibrated, a sensor of another make,
a process change show there first, so the comparison is made on the readings, **per
operating regime** (a pump at 60 % load reads differently from one at 90 %: a regime is
the bin of the machine's condition sensor, its load set-point, ``regime_width`` of its
rated value wide).

**What is comparable.** Two confounds make a naive comparison (the live readings against
every training reading, by population stability index) alarm on a healthy plant,
measured on the simulated plant (PSI 0.5-1.8 on vibration and temperatures, seeds 7-9):
wear moves the key sensors a long way over a life (a seal near failure reads 20-40 °C
hotter) and a fleet is not at the same point of its lives as the training data; and each
machine sits at its own level (its wear, its duty), so a type's 6-16 machines are a few
clusters, not a sample. So each sensor is taken relative to **the machine's own level**
in that regime, learned over its first :data:`BASELINE_HOURS` of observation
(:class:`OwnBaseline`; since installation, a repair, or its twin starting), and averaged
per regime over :data:`WINDOW_HOURS` (which also averages out the daily cycle of the
ambient): the regime-wise form of the twins' ``<sensor>.drift`` feature. In training
the same is done on every life, for every day up to :data:`HORIZON_HOURS` after its
baseline: wear, noise and load within a regime give the spread of how far a machine's
daily level moves from its own start in two weeks.

**Reference** (:class:`DriftReference`, captured when the model is trained and saved in
its artifact): per regime and sensor, the :data:`LOW_QUANTILE` and
:data:`HIGH_QUANTILE` of those training daily deviations. **Live**
(:class:`MachineWindow`, one per machine, mergeable over periods): the sums and counts of
a machine's deviations per regime. **Verdict** (:func:`evaluate`): a machine has *moved*
on a sensor when its daily deviation in a regime (with at least :data:`MIN_READINGS`
readings) is outside the reference's band; a sensor has *drifted* for the type when at
least :data:`MIN_MACHINES` machines and :data:`MIN_SHARE` of those compared have moved on
it (a two-sample test of the type's machines against the training machines: under the
reference, one machine in 100 per regime is outside; a worn machine or a sensor fault
is one machine; a change of calibration, make or process is many).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = DriftReference.fit(["temp"], rng.normal(0, 1, (5000, 1)), np.zeros(5000, int))
>>> def window(shift):
...     w = MachineWindow(1); w.add(rng.normal(shift, 0.3, (24, 1)), np.zeros(24, int)); return w
>>> fleet = {f"P-{i}": window(0.0) for i in range(8)}
>>> evaluate(ref, fleet).drifted
[]
>>> fleet.update({f"P-{i}": window(5.0) for i in range(4)})
>>> verdict = evaluate(ref, fleet)
>>> verdict.describe(), verdict.machine in {"P-0", "P-1", "P-2", "P-3"}
('temp (4 of 8 machines)', True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REFERENCE_FORMAT = 1
BASELINE_HOURS = 48.0
"""A machine's own level in each regime is learned over its first this many hours of
observation (since installation, a repair, or its twin starting)."""
HORIZON_HOURS = 14 * 24.0
"""Deviations are compared up to this long after the baseline (the reference covers no
more); then the machine's baseline is learned again."""
WINDOW_HOURS = 24.0
"""Deviations are averaged over this long, per machine and regime."""
MIN_BASELINE = 3
"""Readings of a regime its baseline needs (fewer: that regime is not compared)."""
MIN_READINGS = 4
"""Readings of a regime in a window its daily deviation needs."""
LOW_QUANTILE, HIGH_QUANTILE = 0.005, 0.995
"""The band of the training machines' daily deviations (99 % of them inside)."""
MIN_MACHINES = 3
MIN_SHARE = 0.25
"""A sensor has drifted when at least this many machines, and this share of the machines
compared, have moved outside the band on it."""
MIN_REFERENCE = 50
"""Training daily deviations a regime needs to have a band for a sensor."""
IDLE = -1
"""The regime of a reading taken while the machine stands (not compared)."""


def regimes_of(settings: np.ndarray, scale: Sequence[float], width: float) -> np.ndarray:
    """The regime of each row of condition-sensor values (rows, condition sensors): the
    bin ``floor(value / (width * scale))`` of each, combined (``b0 + 1000 * b1 + ...``);
    :data:`IDLE` where the first is not above 0 (stopped) or a value is missing.

    >>> regimes_of(np.array([[85.0], [0.0], [41.0]]), [100.0], 0.1).tolist()
    [8, -1, 4]
    """
    s = np.asarray(settings, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(scale) or not width > 0:
        raise ValueError(f"settings must be (rows, {len(scale)}) and width positive")
    if s.shape[1] == 0:
        return np.zeros(len(s), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        bins = np.floor(s / (width * np.asarray(scale, dtype=np.float64)))
    ok = np.isfinite(bins).all(axis=1) & (s[:, 0] > 0)
    key = np.zeros(len(s), dtype=np.int64)
    for j in range(s.shape[1]):
        key += np.where(ok, np.clip(bins[:, j], 0, 999), 0).astype(np.int64) * 1000**j
    return np.where(ok, key, IDLE)


def daily_deviations(
    deviations: np.ndarray, regimes: np.ndarray, hours: np.ndarray, window: float = WINDOW_HOURS
) -> tuple[np.ndarray, np.ndarray]:
    """A history's deviations averaged per regime over consecutive windows of ``window``
    hours (from its first deviation): (rows, features) and the regime of each row; a mean
    of fewer than :data:`MIN_READINGS` readings is NaN."""
    d = np.asarray(deviations, dtype=np.float64)
    r = np.asarray(regimes, dtype=np.int64)
    h = np.asarray(hours, dtype=np.float64)
    known = np.isfinite(d).any(axis=1) & (r != IDLE)
    if not known.any():
        return np.zeros((0, d.shape[1])), np.zeros(0, dtype=np.int64)
    d, r, h = d[known], r[known], h[known]
    block = np.floor((h - h[0]) / window).astype(np.int64)
    rows, regs = [], []
    for b in np.unique(block):
        w = MachineWindow(d.shape[1])
        w.add(d[block == b], r[block == b])
        for regime, mean in w.means().items():
            rows.append(mean)
            regs.append(regime)
    if not rows:
        return np.zeros((0, d.shape[1])), np.zeros(0, dtype=np.int64)
    return np.array(rows), np.array(regs, dtype=np.int64)


@dataclass
class DriftReference:
    """Per regime and sensor: the band (low, high) of the training machines' daily
    deviations and how many it rests on. ``condition``/``scale``/``width`` say how
    readings are put in regimes (:func:`regimes_of`; no condition sensors: one regime)."""

    features: list[str]
    bands: dict[tuple[int, str], tuple[float, float]]
    counts: dict[tuple[int, str], int]
    condition: list[str] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    width: float = 0.1

    @classmethod
    def fit(
        cls,
        features: Sequence[str],
        daily: np.ndarray,
        regimes: np.ndarray,
        *,
        condition: Sequence[str] = (),
        scale: Sequence[float] = (),
        width: float = 0.1,
    ) -> DriftReference:
        """The bands of training daily deviations ``daily`` (rows, features; NaN: none)
        in ``regimes`` (one per row)."""
        v = np.asarray(daily, dtype=np.float64)
        r = np.asarray(regimes, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != len(features) or r.shape != (len(v),):
            raise ValueError(f"daily must be (rows, {len(features)}) with one regime per row")
        bands: dict[tuple[int, str], tuple[float, float]] = {}
        counts: dict[tuple[int, str], int] = {}
        for regime in sorted(set(r.tolist()) - {IDLE}):
            rows = v[r == regime]
            for j, name in enumerate(features):
                x = rows[:, j][np.isfinite(rows[:, j])]
                if len(x) < MIN_REFERENCE:
                    continue
                lo, hi = np.quantile(x, [LOW_QUANTILE, HIGH_QUANTILE])
                bands[(regime, name)] = (float(lo), float(hi))
                counts[(regime, name)] = len(x)
        return cls(list(features), bands, counts, list(condition), list(scale), float(width))

    def regimes(self, settings: np.ndarray) -> np.ndarray:
        """The regime of each row of condition-sensor values (see :func:`regimes_of`)."""
        if not self.condition:
            return np.zeros(len(np.asarray(settings)), dtype=np.int64)
        return regimes_of(settings, self.scale, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "features": self.features,
            "condition": self.condition,
            "scale": self.scale,
            "width": self.width,
            "bands": [
                {
                    "regime": regime,
                    "feature": name,
                    "low": lo,
                    "high": hi,
                    "count": self.counts[(regime, name)],
                }
                for (regime, name), (lo, hi) in sorted(self.bands.items())
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DriftReference:
        if not isinstance(doc, Mapping) or doc.get("format") != REFERENCE_FORMAT:
            raise ValueError("unknown drift reference format")
        bands, counts = {}, {}
        for b in doc["bands"]:
            key = (int(b["regime"]), str(b["feature"]))
            bands[key] = (float(b["low"]), float(b["high"]))
            counts[key] = int(b["count"])
        return cls(
            [str(f) for f in doc["features"]],
            bands,
            counts,
            [str(c) for c in doc.get("condition", [])],
            [float(s) for s in doc.get("scale", [])],
            float(doc.get("width", 0.1)),
        )


class MachineWindow:
    """One machine's deviations over a period, per regime: sums and counts (mergeable:
    the windows of consecutive periods add up)."""

    def __init__(self, n_features: int) -> None:
        self.n = int(n_features)
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, np.ndarray] = {}

    def add(self, deviations: np.ndarray, regimes: np.ndarray) -> None:
        d = np.atleast_2d(np.asarray(deviations, dtype=np.float64))
        r = np.atleast_1d(np.asarray(regimes, dtype=np.int64))
        if d.shape != (len(r), self.n):
            raise ValueError(f"deviations must be (rows, {self.n}) with one regime per row")
        for regime in set(r.tolist()) - {IDLE}:
            rows = d[r == regime]
            ok = np.isfinite(rows)
            s, c = np.where(ok, rows, 0.0).sum(axis=0), ok.sum(axis=0)
            if regime in self.sums:
                self.sums[regime] = self.sums[regime] + s
                self.counts[regime] = self.counts[regime] + c
            else:
                self.sums[regime], self.counts[regime] = s, c

    def merge(self, other: MachineWindow) -> MachineWindow:
        """Add another window's sums and counts into this one."""
        if other.n != self.n:
            raise ValueError(f"windows of {other.n} and {self.n} features cannot be merged")
        for regime, s in other.sums.items():
            if regime in self.sums:
                self.sums[regime] = self.sums[regime] + s
                self.counts[regime] = self.counts[regime] + other.counts[regime]
            else:
                self.sums[regime], self.counts[regime] = s.copy(), other.counts[regime].copy()
        return self

    def means(self) -> dict[int, np.ndarray]:
        """The mean deviation per regime (NaN with fewer than :data:`MIN_READINGS`)."""
        out = {}
        for regime, s in sorted(self.sums.items()):
            c = self.counts[regime]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[regime] = np.where(c >= MIN_READINGS, s / np.maximum(c, 1), np.nan)
        return out


@dataclass(frozen=True)
class FeatureDrift:
    """One sensor of a type: the machines compared on it, those that moved outside the
    band (with how far beyond it, in band widths, and in which regime)."""

    feature: str
    compared: int
    moved: dict[str, float]
    drifted: bool

    @property
    def share(self) -> float:
        return len(self.moved) / self.compared if self.compared else 0.0


@dataclass(frozen=True)
class DriftVerdict:
    """The type's sensors compared (most moved first), which drifted, and the machine a
    drift alert is filed on (the one moved on the most drifted sensors, then the farthest
    beyond the band; None without drift)."""

    features: list[FeatureDrift]
    machine: str | None

    @property
    def compared(self) -> bool:
        return any(f.compared for f in self.features)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def describe(self) -> str:
        """The drifted sensors for people: ``discharge_pressure (7 of 14 machines)``."""
        return ", ".join(
            f"{f.feature} ({len(f.moved)} of {f.compared} machines)"
            for f in self.features
            if f.drifted
        )


def evaluate(
    reference: DriftReference,
    machines: Mapping[str, MachineWindow],
    *,
    min_machines: int = MIN_MACHINES,
    min_share: float = MIN_SHARE,
) -> DriftVerdict:
    """Compare the machines' windows with the reference (see the module docstring)."""
    if min_machines < 1 or not 0 < min_share <= 1:
        raise ValueError("min_machines must be at least 1 and min_share in (0, 1]")
    means = {m: w.means() for m, w in machines.items()}
    out = []
    for j, name in enumerate(reference.features):
        compared = 0
        moved: dict[str, float] = {}
        for machine_id in sorted(means):
            beyond, seen = 0.0, False
            for regime, mean in means[machine_id].items():
                band = reference.bands.get((regime, name))
                if band is None or not np.isfinite(mean[j]):
                    continue
                seen = True
                lo, hi = band
                width = max(hi - lo, 1e-12)
                excess = max(lo - mean[j], mean[j] - hi, 0.0) / width
                beyond = max(beyond, float(excess))
            compared += int(seen)
            if beyond > 0:
                moved[machine_id] = round(beyond, 6)
        past = len(moved) >= min_machines and len(moved) >= min_share * compared
        out.append(FeatureDrift(name, compared, moved, past))
    out.sort(key=lambda f: (-f.drifted, -f.share, f.feature))
    drifted = [f for f in out if f.drifted]
    machine = None
    if drifted:
        score: dict[str, tuple[int, float]] = {}
        for f in drifted:
            for m, excess in f.moved.items():
                n, total = score.get(m, (0, 0.0))
                score[m] = (n + 1, total + excess)
        machine = max(sorted(score), key=lambda m: score[m])
    return DriftVerdict(out, machine)


class OwnBaseline:
    """One machine's own level of each sensor per regime, learned over its first
    ``hours`` of observation; after that, each reading is given as its deviation from it
    (for :data:`HORIZON_HOURS`, then the baseline is learned again).

    >>> b = OwnBaseline(1, hours=2.0, min_readings=1)
    >>> b.deviations(np.array([[10.0], [12.0], [15.0]]), np.array([5, 5, 5]),
    ...              np.array([0.0, 1.0, 3.0])).tolist()
    [[nan], [nan], [4.0]]
    """

    def __init__(
        self,
        n_features: int,
        hours: float = BASELINE_HOURS,
        horizon: float = HORIZON_HOURS,
        min_readings: int = MIN_BASELINE,
    ) -> None:
        if not hours > 0 or not horizon > 0 or min_readings < 1:
            raise ValueError("hours and horizon must be positive, min_readings at least 1")
        self.n = int(n_features)
        self.hours = float(hours)
        self.horizon = float(horizon)
        self.min_readings = int(min_readings)
        self.reset()

    def reset(self) -> None:
        """Learn the baseline again from the next reading (after a repair, say)."""
        self.start: float | None = None
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, np.ndarray] = {}

    def deviations(self, values: np.ndarray, regimes: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """Readings ``values`` (rows, features; NaN: missing) in ``regimes`` at ``hours``
        (ascending, any origin), as deviations from the baseline of their regime; NaN
        while the baseline is being learned, where it has too few readings, and idle."""
        v = np.atleast_2d(np.asarray(values, dtype=np.float64))
        r = np.atleast_1d(np.asarray(regimes, dtype=np.int64))
        h = np.atleast_1d(np.asarray(hours, dtype=np.float64))
        if v.shape != (len(r), self.n) or h.shape != r.shape:
            raise ValueError(f"values must be (rows, {self.n}) with a regime and hour per row")
        out = np.full(v.shape, np.nan)
        i = 0
        while i < len(v):
            if self.start is None:
                self.start = float(h[i])
            if h[i] > self.start + self.hours + self.horizon:
                self.reset()
                continue
            learning = h[i:] < self.start + self.hours
            if learning[0]:
                j = i + int(np.argmin(learning)) if not learning.all() else len(v)
                self._learn(v[i:j], r[i:j])
            else:
                stop = h[i:] > self.start + self.hours + self.horizon
                j = i + int(np.argmax(stop)) if stop.any() else len(v)
                out[i:j] = self._deviate(v[i:j], r[i:j])
            i = j
        return out

    def _learn(self, v: np.ndarray, r: np.ndarray) -> None:
        for regime in set(r.tolist()) - {IDLE}:
            rows = v[r == regime]
            ok = np.isfinite(rows)
            s = np.where(ok, rows, 0.0).sum(axis=0)
            c = ok.sum(axis=0)
            if regime in self.sums:
                self.sums[regime] += s
                self.counts[regime] += c
            else:
                self.sums[regime], self.counts[regime] = s, c

    def _deviate(self, v: np.ndarray, r: np.ndarray) -> np.ndarray:
        out = np.full(v.shape, np.nan)
        for regime in set(r.tolist()) - {IDLE}:
            c = self.counts.get(regime)
            if c is None:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(c >= self.min_readings, self.sums[regime] / c, np.nan)
            out[r == regime] = v[r == regime] - mean
        return out
