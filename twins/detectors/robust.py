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
``|z| = threshold``. MAD is floored at ``min_scale`` and at ``1e-9 * |median|`` so that a
constant sensor cannot divide by zero.

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
    _state_keys: ClassVar[tuple[str, ...]] = ("seen", "warm", "median", "mad")

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
        super()._build()

    def _z(self, x: np.ndarray) -> np.ndarray:
        scale = np.maximum(self._mad, np.maximum(self.min_scale, 1e-9 * np.abs(self._median)))
        return 0.6745 * (x - self._median) / scale

    def _score(self, scan: Scan) -> np.ndarray:
        az = np.abs(self._z(scan.values))
        return np.fmax(az / (az + self.threshold), 0.0)  # NaN (absent, warming up) -> 0

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        if scores is None:
            scores = self._score(scan)
        x = scan.values
        p = scan.present
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
            step = rate * np.maximum(self._mad, self.min_scale)
            dev = x - self._median
            self._median = np.where(tracking, self._median + step * np.sign(dev), self._median)
            up = np.abs(dev) > self._mad
            self._mad = np.where(tracking, self._mad + np.where(up, step, -step), self._mad)
            self._mad = np.maximum(self._mad, 0.0)
        self._seen += p

    def load_state_dict(self, state: dict[str, Any]) -> None:
        warm = state.get("warm")
        super().load_state_dict({**state, "warm": np.zeros((self.n_sensors, self.warmup))})
        if warm is not None:
            self._warm = np.array(warm, dtype=np.float64).reshape(self.n_sensors, -1)

    def expected(self, scan: Scan) -> np.ndarray:
        return self._median.copy() if self._built else super().expected(scan)
