"""Rule detectors: critical thresholds, rate of change, flatline (stuck) and stale sensors.

Scores follow :mod:`twins.detectors.base` (0..1, alarm at 0.5):

* :class:`ThresholdRule` — inside the normal range 0; between the normal and the critical
  limit ``0.5 + 0.45 * f`` where ``f`` is how far (0..1) the value has gone from the normal
  towards the critical limit; at or beyond the critical limit at least 0.95 (critical).
  A sensor with only a normal limit scores 0.5 beyond it; with only a critical limit,
  at least 0.95.
* :class:`RateOfChangeRule` — ``0.5 * rate / max_rate``, capped at 1 (a spike).
* :class:`FlatlineRule` — ``0.5 * repeats / stuck_after``, capped at 0.5: after
  ``stuck_after`` repeats of the same value (``stuck_after + 1`` identical readings in a
  row) the sensor is stuck, one low-severity condition however long it lasts.
* :class:`StaleRule` — ``0.5 * age / max_age`` for sensors that did not report in this
  scan, where age is the time since their last reading, capped at 0.79 (medium severity:
  a silent sensor is a data problem, not a machine in danger).

While the machine is idle (``Scan.running`` false) only the threshold rule (high limits)
and the stale rule judge scans: at standstill a speed of zero is neither low, stuck nor a
jump, and the learned detectors model running behaviour.

A twin runs every rule on every scan, and most scans break none, so each rule first asks
the cheap question: a rule with nothing configured to check (no limits, no maximum rate,
no ``stuck_after`` on any sensor) scores 0 without looking; the threshold rule scores 0
when no reading reaches a limit, the stale rule when every sensor reported. The full
formulas give exactly those zeros in those cases.

>>> import numpy as np
>>> rule = ThresholdRule(n_sensors=1, normal_high=[80.0], critical_high=[100.0])
>>> [round(rule.score_one(Scan.from_values([v], now_s=0.0)), 3) for v in (70.0, 90.0, 100.0)]
[0.0, 0.725, 0.95]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from schemas.anomaly import AnomalyType
from schemas.plant import MachineSpec
from twins.detectors.base import Scan, SensorDetector, limits


def _ramp(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 1) without np.clip's overhead on small arrays."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


class ThresholdRule(SensorDetector):
    """Normal and critical limits per sensor (NaN or None: no limit on that side)."""

    name = "threshold"
    anomaly_type = AnomalyType.THRESHOLD
    while_idle = True  # a hot bearing matters at standstill too; low limits do not apply

    def __init__(
        self,
        n_sensors: int,
        normal_low: Any = None,
        normal_high: Any = None,
        critical_low: Any = None,
        critical_high: Any = None,
    ) -> None:
        super().__init__(n_sensors)
        self.normal_low = limits(normal_low, n_sensors, "normal_low")
        self.normal_high = limits(normal_high, n_sensors, "normal_high")
        self.critical_low = limits(critical_low, n_sensors, "critical_low")
        self.critical_high = limits(critical_high, n_sensors, "critical_high")
        for lo, hi, lo_name, hi_name in (
            (self.normal_low, self.normal_high, "normal_low", "normal_high"),
            (self.critical_low, self.normal_low, "critical_low", "normal_low"),
            (self.normal_high, self.critical_high, "normal_high", "critical_high"),
        ):
            if np.any(lo > hi):
                raise ValueError(f"{hi_name} must be at or above {lo_name} for every sensor")
        # Only a critical limit: crossing it is critical at once. Only a normal limit:
        # crossing it is an alarm (0.5) that never becomes critical.
        self._nh = np.where(np.isnan(self.normal_high), self.critical_high, self.normal_high)
        self._ch = np.where(np.isnan(self.critical_high), np.inf, self.critical_high)
        self._nl = np.where(np.isnan(self.normal_low), self.critical_low, self.normal_low)
        self._cl = np.where(np.isnan(self.critical_low), -np.inf, self.critical_low)
        self._has_low = bool((~np.isnan(self._nl)).any())
        self._unlimited = np.isnan(self._nl) & np.isnan(self._nh)
        self._inert = bool(self._unlimited.all())  # no limits at all: every score is 0
        with np.errstate(invalid="ignore"):
            self._span_hi = np.where(self._ch > self._nh, self._ch - self._nh, np.inf)
            self._span_lo = np.where(self._nl > self._cl, self._nl - self._cl, np.inf)
        if np.any(self.critical_low > self.normal_high) or np.any(
            self.critical_low > self.critical_high
        ):
            raise ValueError("critical_low must be below the high limits for every sensor")

    @classmethod
    def for_machine(cls, spec: MachineSpec) -> ThresholdRule:
        s = spec.sensors
        return cls(
            len(s),
            normal_low=[x.normal_low for x in s],
            normal_high=[x.normal_high for x in s],
            critical_low=[x.critical_low for x in s],
            critical_high=[x.critical_high for x in s],
        )

    def _score(self, scan: Scan) -> np.ndarray:
        x = scan.values
        low = self._has_low and scan.running
        # No reading at or beyond a limit (the usual scan; NaN compares False): both
        # formulas below take their 0.0 branch for every sensor. The critical limits lie
        # beyond the normal ones, so the normal ones are the only ones to compare with.
        if self._inert or not ((x >= self._nh).any() or (low and bool((x <= self._nl).any()))):
            return np.zeros(self.n_sensors)
        with np.errstate(invalid="ignore"):
            hi = np.where(
                x >= self._ch,
                0.95 + 0.05 * _ramp((x - self._ch) / self._span_hi),
                np.where(x > self._nh, 0.5 + 0.45 * ((x - self._nh) / self._span_hi), 0.0),
            )
            if not low:
                return np.fmax(hi, 0.0)  # fmax: NaN (no reading/limit) -> 0
            lo = np.where(
                x <= self._cl,
                0.95 + 0.05 * _ramp((self._cl - x) / self._span_lo),
                np.where(x < self._nl, 0.5 + 0.45 * ((self._nl - x) / self._span_lo), 0.0),
            )
        return np.fmax(np.fmax(hi, lo), 0.0)

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        """Limits are configuration: nothing to learn."""

    def expected(self, scan: Scan) -> np.ndarray:
        clipped = np.fmin(
            np.fmax(scan.values, self._nl), self._nh
        )  # fmin/fmax: a missing side does not clip
        return np.where(self._unlimited, np.nan, clipped)


class RateOfChangeRule(SensorDetector):
    """Flags readings that moved faster than ``max_rate_per_s`` since the previous one."""

    name = "rate_of_change"
    anomaly_type = AnomalyType.SPIKE
    _state_keys: ClassVar[tuple[str, ...]] = ("last_value", "last_time")

    def __init__(self, n_sensors: int, max_rate_per_s: Any = None) -> None:
        super().__init__(n_sensors)
        self.max_rate_per_s = limits(max_rate_per_s, n_sensors, "max_rate_per_s")
        if np.any(self.max_rate_per_s <= 0):
            raise ValueError("max_rate_per_s must be positive where set")
        self._inert = bool(np.isnan(self.max_rate_per_s).all())  # no maximum rate anywhere

    @classmethod
    def for_machine(cls, spec: MachineSpec) -> RateOfChangeRule:
        return cls(len(spec.sensors), [s.max_rate_per_s for s in spec.sensors])

    def _build(self) -> None:
        self._last_value = np.full(self.n_sensors, np.nan)
        self._last_time = np.full(self.n_sensors, np.nan)
        super()._build()

    def _score(self, scan: Scan) -> np.ndarray:
        if self._inert:  # the formula divides by NaN everywhere: every score is 0
            return np.zeros(self.n_sensors)
        with np.errstate(invalid="ignore", divide="ignore"):
            dt = np.maximum(scan.times_s - self._last_time, 1e-3)
            rate = np.abs(scan.values - self._last_value) / dt
            score = np.minimum(0.5 * rate / self.max_rate_per_s, 1.0)
        return np.fmax(score, 0.0)

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        if scan.complete:
            self._last_value[:] = scan.values
            self._last_time[:] = scan.times_s
            return
        p = scan.present
        self._last_value[p] = scan.values[p]
        self._last_time[p] = scan.times_s[p]

    def expected(self, scan: Scan) -> np.ndarray:
        return self._last_value.copy() if self._built else super().expected(scan)


class FlatlineRule(SensorDetector):
    """Flags a sensor stuck on one value: ``stuck_after`` repeats in a row (0 = off).

    Two readings are the same when they differ by at most ``tolerance`` (per sensor,
    default 0: exactly equal).
    """

    name = "flatline"
    anomaly_type = AnomalyType.FLATLINE
    MAX_SCORE = 0.5
    """A stuck sensor is one condition (low severity) however long it lasts."""
    _state_keys: ClassVar[tuple[str, ...]] = ("last_value", "repeats")

    def __init__(self, n_sensors: int, stuck_after: Any = None, tolerance: Any = None) -> None:
        super().__init__(n_sensors)
        n = limits(stuck_after, n_sensors, "stuck_after")
        if np.any(n < 0):
            raise ValueError("stuck_after must be >= 0")
        self.stuck_after = np.where(np.isnan(n) | (n == 0), np.inf, n)
        self.tolerance = np.nan_to_num(limits(tolerance, n_sensors, "tolerance"), nan=0.0)
        if np.any(self.tolerance < 0):
            raise ValueError("tolerance must be >= 0")
        self._inert = bool(np.isinf(self.stuck_after).all())  # off for every sensor

    @classmethod
    def for_machine(cls, spec: MachineSpec) -> FlatlineRule:
        return cls(len(spec.sensors), [s.stuck_after for s in spec.sensors])

    def _build(self) -> None:
        self._last_value = np.full(self.n_sensors, np.nan)
        self._repeats = np.zeros(self.n_sensors)
        super()._build()

    def _repeats_after(self, scan: Scan) -> np.ndarray:
        same = np.abs(scan.values - self._last_value) <= self.tolerance
        return np.where(same, self._repeats + 1, 0.0)

    def _score(self, scan: Scan) -> np.ndarray:
        if self._inert:  # repeats / inf: every score is 0
            return np.zeros(self.n_sensors)
        score = np.minimum(0.5 * self._repeats_after(scan) / self.stuck_after, self.MAX_SCORE)
        return np.where(scan.present, score, 0.0)

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        # Counted even while off: the count is part of the state a snapshot keeps.
        if scan.complete:
            self._repeats = self._repeats_after(scan)
            self._last_value[:] = scan.values
            return
        p = scan.present
        self._repeats = np.where(p, self._repeats_after(scan), self._repeats)
        self._last_value[p] = scan.values[p]


class StaleRule(SensorDetector):
    """Flags sensors that have not reported for longer than ``max_age_s``."""

    name = "stale"
    anomaly_type = AnomalyType.STALE
    while_idle = True
    MAX_SCORE = 0.79
    """A silent sensor is a data problem, not a machine in danger: at most medium."""
    _state_keys: ClassVar[tuple[str, ...]] = ("last_time",)

    def __init__(self, n_sensors: int, max_age_s: Any = None) -> None:
        super().__init__(n_sensors)
        self.max_age_s = limits(max_age_s, n_sensors, "max_age_s")
        if np.any(self.max_age_s <= 0):
            raise ValueError("max_age_s must be positive where set")

    @classmethod
    def for_machine(cls, spec: MachineSpec, periods: float = 5.0) -> StaleRule:
        """Stale after ``periods`` missed sampling periods (at least 60 s)."""
        return cls(
            len(spec.sensors), [max(periods * s.sample_period_s, 60.0) for s in spec.sensors]
        )

    def _build(self) -> None:
        self._last_time = np.full(self.n_sensors, np.nan)
        super()._build()

    def _score(self, scan: Scan) -> np.ndarray:
        if scan.complete:  # every sensor reported: none is stale
            return np.zeros(self.n_sensors)
        with np.errstate(invalid="ignore"):
            score = np.minimum(
                0.5 * (scan.now_s - self._last_time) / self.max_age_s, self.MAX_SCORE
            )
        return np.where(scan.present, 0.0, np.fmax(score, 0.0))

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        if scan.complete:  # every sensor's last reading is this scan's
            self._last_time = np.array(scan.times_s, dtype=np.float64)
            return
        # A sensor never heard from is counted as silent since the machine's first scan.
        last = np.where(np.isnan(self._last_time), scan.now_s, self._last_time)
        p = scan.present
        last[p] = scan.times_s[p]
        self._last_time = last
