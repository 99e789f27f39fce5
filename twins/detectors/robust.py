"""Robust z-score against a slowly adapting median/MAD baseline, per sensor.

The baseline starts as the median and MAD (median absolute deviation) of each sensor's
first ``warmup`` readings. Afterwards both follow the data as stochastic quantile
trackers: every reading moves the median by ``adapt_rate * MAD`` towards it, and the MAD
up or down by ``adapt_rate * MAD`` depending on whether the reading's deviation is above
or below it. Readings the detector calls anomalous move the baseline ten times more
slowly, so a fault is not learned away while it happens, yet a lasting change (after a
repair, say) is eventually accepted.

``z = 0.6745 * (x - median) / MAD`` (0.6745 makes MAD comparable with a standard
deviation for Gaussian data) and the score is ``|z| / (|z| + threshold)``: 0.5 exactly at
``|z| = threshold``.

**Scale floor.** MAD is floored at the sensor's *resolution*, the smallest non-zero step
between two successive readings seen so far: a quantised sensor (a percentage in steps of
0.1, a count) whose readings mostly repeat one value has a MAD of 0, and without the floor
every change of one step would be a huge z-score. With the floor a change must be
``threshold / 0.6745`` steps (about 9 at the default threshold) before it alarms. Steps
below ``1e-9`` of the level (rounding noise of a continuous sensor) do not count. MAD is
also floored at ``min_scale`` and at ``1e-9 * |median|`` so that a constant sensor cannot
divide by zero. The trackers move by ``adapt_rate`` of the floored scale, so a MAD that
was 0 after the warm-up can still grow.

>>> import numpy as np
>>> det = RobustZScore(n_sensors=1, threshold=4.0, warmup=20)
>>> rng = np.random.default_rng(0)
>>> for i in range(50):
...     det.learn_one(Scan.from_values([10.0 + rng.normal()], now_s=float(i)))
>>> det.score_one(Scan.from_values([10.2], now_s=50.0)) < 0.5
True
>>> det.score_one(Scan.from_values([20.0], now_s=50.0)) > 0.5
True
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from schemas.anomaly import AnomalyType
from twins.detectors.base import ALARM, Scan, SensorDetector


class RobustZScore(SensorDetector):
    name = "robust_zscore"
    anomaly_type = AnomalyType.STATISTICAL
    _state_keys: ClassVar[tuple[str, ...]] = ("seen", "warm", "median", "mad", "last", "step")

    def __init__(
        self,
        n_sensors: int,
        threshold: float = 6.0,
        warmup: int = 30,
        adapt_rate: float = 0.01,
        min_scale: float = 1e-6,
    ) -> None:
        super().__init__(n_sensors)
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if warmup < 3:
            raise ValueError(f"warmup must be at least 3 readings, got {warmup}")
        if not 0 < adapt_rate < 1:
            raise ValueError(f"adapt_rate must be in (0, 1), got {adapt_rate}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be positive, got {min_scale}")
        self.threshold = float(threshold)
        self.warmup = int(warmup)
        self.adapt_rate = float(adapt_rate)
        self.min_scale = float(min_scale)

    def _build(self) -> None:
        self._seen = np.zeros(self.n_sensors, dtype=np.int64)
        self._warm = np.zeros((self.n_sensors, self.warmup))  # first readings, per sensor
        self._median = np.full(self.n_sensors, np.nan)  # NaN until warmed up
        self._mad = np.full(self.n_sensors, np.nan)
        self._last = np.full(self.n_sensors, np.nan)  # the previous reading
        self._step = np.full(self.n_sensors, np.nan)  # smallest non-zero step seen (NaN: none)
        super()._build()

    def _scale(self) -> np.ndarray:
        """MAD floored at the resolution, ``min_scale`` and ``1e-9`` of the level."""
        floor = np.maximum(self.min_scale, 1e-9 * np.abs(self._median))
        resolution = np.where(np.isnan(self._step), 0.0, self._step)
        return np.maximum(self._mad, np.maximum(floor, resolution))

    def _z(self, x: np.ndarray) -> np.ndarray:
        return 0.6745 * (x - self._median) / self._scale()

    def _score(self, scan: Scan) -> np.ndarray:
        az = np.abs(self._z(scan.values))
        return np.fmax(az / (az + self.threshold), 0.0)  # NaN (absent, warming up) -> 0

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        if scores is None:
            scores = self._score(scan)
        x = scan.values
        p = scan.present
        step = np.abs(x - self._last)  # NaN for an absent reading or the first one
        real = step > 1e-9 * np.abs(x) + 1e-300  # False for NaN
        if real.any():
            self._step = np.where(real, np.fmin(self._step, step), self._step)
        self._last = np.where(p, x, self._last)
        warming = p & (self._seen < self.warmup)
        if warming.any():
            idx = np.flatnonzero(warming)
            self._warm[idx, self._seen[idx]] = x[idx]
            done = idx[self._seen[idx] + 1 == self.warmup]
            if done.size:
                med = np.median(self._warm[done], axis=1)
                self._median[done] = med
                self._mad[done] = np.median(np.abs(self._warm[done] - med[:, None]), axis=1)
                if (self._seen[p] + 1 >= self.warmup).all() and not np.isnan(self._median).any():
                    self._warm = np.zeros((self.n_sensors, 0))  # every sensor warm: free it
        tracking = p & ~warming & (self._seen >= self.warmup)
        if tracking.any():
            rate = np.where(scores >= ALARM, self.adapt_rate / 10, self.adapt_rate)
            move = rate * self._scale()
            dev = x - self._median
            self._median = np.where(tracking, self._median + move * np.sign(dev), self._median)
            up = np.abs(dev) > self._mad
            self._mad = np.where(tracking, self._mad + np.where(up, move, -move), self._mad)
            self._mad = np.maximum(self._mad, 0.0)
        self._seen += p

    def load_state_dict(self, state: dict[str, Any]) -> None:
        warm = state.get("warm")
        # Snapshots from before the resolution floor have no last reading or step: the
        # floor then starts afresh (it is learned again from the next readings).
        unknown = np.full(self.n_sensors, np.nan)
        defaults = {"last": unknown, "step": unknown}
        warm_zeros = np.zeros((self.n_sensors, self.warmup))
        super().load_state_dict({**defaults, **state, "warm": warm_zeros})
        if warm is not None:
            self._warm = np.array(warm, dtype=np.float64).reshape(self.n_sensors, -1)

    def expected(self, scan: Scan) -> np.ndarray:
        return self._median.copy() if self._built else super().expected(scan)
