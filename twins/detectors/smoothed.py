"""Multivariate detector for noisy, quantised process signals: PCA T² and Q on
EWMA-smoothed readings, limits from held-out normal scans, and an alarm hold.

It is the textbook PCA monitor (see :mod:`twins.detectors.multivariate`) with three
changes that suit rigs whose sensors are coarse and noisy (a flow meter that reads whole
litres, a pressure gauge that toggles between two values):

1. **Smoothing.** Every scan's *state* (the latest value of each sensor) goes through an
   exponentially weighted moving average with weight ``smoothing`` on the new reading, so
   a shift of the mean level stands out of the quantisation noise.
2. **Empirical limits.** The first ``n_fit`` scans give the mean, covariance and
   principal components (those explaining ``variance``); the next ``n_calibrate`` scans,
   not used for the fit, give the control limits of T² and Q as their ``quantile``.
3. **Alarm hold.** The statistic must be over its limit in ``hold`` of the last
   ``window`` scans before the detector alarms, and the alarm lasts while that holds.

Sensors that are not steady during the fit are left out of the model: a sensor whose
variation is mostly slow drift (the variance of its means over blocks of ``slow_block``
scans is at least ``slow_share`` of its total variance in the fit scans, as with motor and
water temperatures warming up) has a level the fit scans cannot describe.

The machine-level score is ``r / (r + 1)`` with ``r = max(T²/T²_limit, Q/Q_limit)``,
raised to 0.5 while the hold says "alarm" and capped just below 0.5 while it does not;
``score_sensors`` splits it over the sensors by their share of the dominating statistic.
Per scan the work is O(sensors²).

>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> det = SmoothedPCAMonitor(n_sensors=3, n_fit=120, n_calibrate=60, hold=3, window=5)
>>> def reading(shift=0.0):
...     a = rng.normal()
...     return [a, 2 * a + 0.2 * rng.normal() - shift, rng.normal()]
>>> for i in range(180):
...     det.learn_one(Scan.from_values(reading(), float(i)))
>>> det.fitted, det.steady_sensors.tolist()
(True, [0, 1, 2])
>>> scores = [float(det.process_one(Scan.from_values(reading(3.0), 180.0 + i)).max())
...           for i in range(10)]
>>> scores[0] < 0.5 <= scores[-1]  # the flow fell: alarm after a few scans, not at once
True
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from schemas.anomaly import AnomalyType
from twins.detectors.base import ALARM, Scan, SensorDetector

_BELOW_ALARM = np.nextafter(ALARM, 0.0)
_TINY = 1e-12


class SmoothedPCAMonitor(SensorDetector):
    name = "smoothed_pca"
    anomaly_type = AnomalyType.MULTIVARIATE
    machine_level = True
    _state_keys: ClassVar[tuple[str, ...]] = (
        "count",
        "smooth",
        "mean",
        "m2",
        "raw_mean",
        "raw_m2",
        "block_sum",
        "block_mean",
        "block_m2",
        "blocks",
        "steady",
        "scale",
        "components",
        "eigenvalues",
        "calibration",
        "t2_limit",
        "q_limit",
        "over",
    )

    def __init__(
        self,
        n_sensors: int,
        n_fit: int = 300,
        n_calibrate: int = 100,
        smoothing: float = 0.2,
        variance: float = 0.9,
        quantile: float = 0.99,
        hold: int = 5,
        window: int = 10,
        slow_block: int = 25,
        slow_share: float = 0.5,
    ) -> None:
        super().__init__(n_sensors)
        if n_fit < max(10, n_sensors + 2):
            raise ValueError(f"n_fit must be at least max(10, n_sensors + 2), got {n_fit}")
        if n_calibrate < 10:
            raise ValueError(f"n_calibrate must be at least 10, got {n_calibrate}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        if not 0 < variance < 1:
            raise ValueError(f"variance must be in (0, 1), got {variance}")
        if not 0.5 <= quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 1 <= hold <= window:
            raise ValueError(f"hold must be in 1..window ({window}), got {hold}")
        if not 2 <= slow_block <= n_fit // 2:
            raise ValueError(f"slow_block must be in 2..n_fit/2 ({n_fit // 2}), got {slow_block}")
        if not 0 < slow_share <= 1:
            raise ValueError(f"slow_share must be in (0, 1], got {slow_share}")
        self.n_fit = int(n_fit)
        self.n_calibrate = int(n_calibrate)
        self.smoothing = float(smoothing)
        self.variance = float(variance)
        self.quantile = float(quantile)
        self.hold = int(hold)
        self.window = int(window)
        self.slow_block = int(slow_block)
        self.slow_share = float(slow_share)

    def _build(self) -> None:
        s = self.n_sensors
        self._count = 0  # scans learned (with every sensor known)
        self._smooth = np.full(s, np.nan)  # EWMA of the state
        self._mean = np.zeros(s)
        self._m2 = np.zeros((s, s))
        self._raw_mean = np.zeros(s)  # the readings' own mean and M2 (slow-drift test)
        self._raw_m2 = np.zeros(s)
        self._block_sum = np.zeros(s)  # the block of readings being summed
        self._block_mean = np.zeros(s)  # running mean and M2 of the blocks' means
        self._block_m2 = np.zeros(s)
        self._blocks = 0
        self._steady = np.zeros(s, dtype=bool)  # sensors in the model
        self._scale = np.ones(s)
        self._components = np.zeros((s, s))  # rows: kept components (zero rows unused)
        self._eigenvalues = np.ones(s)
        self._calibration = np.zeros((self.n_calibrate, 2))  # T², Q of held-out scans
        self._t2_limit = np.nan
        self._q_limit = np.nan  # 0.0: every steady component kept, no Q
        self._over = np.zeros(self.window, dtype=bool)  # ring: over the limit, oldest first
        super()._build()

    @property
    def fitted(self) -> bool:
        """Whether the model and its limits are set (after ``n_fit + n_calibrate`` scans)."""
        return self._built and not np.isnan(self._t2_limit)

    @property
    def steady_sensors(self) -> np.ndarray:
        """Indices of the sensors the model watches (empty before the fit)."""
        return np.flatnonzero(self._steady) if self._built else np.zeros(0, dtype=np.int64)

    # -- the statistics -----------------------------------------------------------------
    def _smoothed(self, scan: Scan) -> np.ndarray:
        if np.isnan(self._smooth).any():
            return scan.state.copy()
        if not scan.present.any():  # nothing new (a tick): the average stays
            return self._smooth
        return self._smooth + self.smoothing * (scan.state - self._smooth)

    def _statistics(self, x: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        """T², Q and each sensor's share of each, for a smoothed state ``x``."""
        z = np.where(self._steady, (x - self._mean) / self._scale, 0.0)
        t = self._components @ z
        residual = z - t @ self._components
        t_scaled = t / self._eigenvalues
        t2_share = np.maximum(z * (self._components.T @ t_scaled), 0.0)
        q_share = residual * residual
        return float(np.dot(t, t_scaled)), float(q_share.sum()), t2_share, q_share

    def _ratio(self, t2: float, q: float) -> tuple[float, bool]:
        t2_ratio = t2 / self._t2_limit
        q_ratio = q / self._q_limit if self._q_limit > 0 else 0.0
        return max(t2_ratio, q_ratio), q_ratio > t2_ratio

    # -- the protocol -----------------------------------------------------------------------
    def _score(self, scan: Scan) -> np.ndarray:
        if not self.fitted or not self._steady.any() or np.isnan(scan.state).any():
            return np.zeros(self.n_sensors)
        t2, q, t2_share, q_share = self._statistics(self._smoothed(scan))
        r, q_dominates = self._ratio(t2, q)
        over = int(self._over[1:].sum()) + (r >= 1.0)
        score = r / (r + 1.0)
        score = max(score, ALARM) if over >= self.hold else min(score, _BELOW_ALARM)
        share = q_share if q_dominates else t2_share
        top = share.max()
        weights = share / top if top > 0 else self._steady.astype(np.float64)
        return score * weights

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        if np.isnan(scan.state).any() or not scan.present.any():
            return
        x = self._smoothed(scan)
        self._smooth = x
        if self.fitted:
            r, _ = self._ratio(*self._statistics(x)[:2])
            self._over = np.append(self._over[1:], r >= 1.0)
            return
        if self._count < self.n_fit:
            self._accumulate(x, scan.state)
        else:
            self._calibration[self._count - self.n_fit] = self._statistics(x)[:2]
        self._count += 1
        if self._count == self.n_fit:
            self._fit()
        elif self._count == self.n_fit + self.n_calibrate:
            self._set_limits()

    def _accumulate(self, x: np.ndarray, raw: np.ndarray) -> None:
        """Fit statistics: of the smoothed state ``x`` for the model, of the readings
        ``raw`` (and their block means) for the slow-drift test."""
        n = self._count + 1
        delta = x - self._mean
        self._mean = self._mean + delta / n
        self._m2 = self._m2 + np.outer(delta, x - self._mean)
        d_raw = raw - self._raw_mean
        self._raw_mean = self._raw_mean + d_raw / n
        self._raw_m2 = self._raw_m2 + d_raw * (raw - self._raw_mean)
        self._block_sum = self._block_sum + raw
        if n % self.slow_block == 0:
            means = self._block_sum / self.slow_block
            self._blocks += 1
            d = means - self._block_mean
            self._block_mean = self._block_mean + d / self._blocks
            self._block_m2 = self._block_m2 + d * (means - self._block_mean)
            self._block_sum = np.zeros(self.n_sensors)

    def _fit(self) -> None:
        n = self._count
        var = np.maximum(self._raw_m2 / n, 0.0)
        block_var = self._block_m2 / self._blocks
        moving = var > 1e-12 * np.maximum(self._raw_mean * self._raw_mean, 1.0)
        steady = moving & (block_var < self.slow_share * np.where(moving, var, 1.0))
        self._steady = steady
        idx = np.flatnonzero(steady)
        if idx.size == 0:
            return
        cov = self._m2[np.ix_(idx, idx)] / (n - 1)
        std = np.sqrt(np.diag(cov))
        self._scale = np.ones(self.n_sensors)
        self._scale[idx] = std
        corr = cov / np.outer(std, std)
        eigenvalues, vectors = np.linalg.eigh(corr)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.maximum(eigenvalues[order], _TINY)
        vectors = vectors[:, order]
        explained = np.cumsum(eigenvalues) / eigenvalues.sum()
        m = idx.size
        k = max(min(int(np.searchsorted(explained, self.variance)) + 1, m - 1), 1)
        self._components = np.zeros((self.n_sensors, self.n_sensors))
        self._components[:k, idx] = vectors[:, :k].T
        self._eigenvalues = np.ones(self.n_sensors)
        self._eigenvalues[:k] = eigenvalues[:k]
        self._q_limit = 0.0 if k == m else np.nan  # set by the calibration

    def _set_limits(self) -> None:
        if not self._steady.any():
            self._t2_limit = 1.0  # nothing to watch: the statistics stay 0
            return
        t2, q = np.quantile(self._calibration, self.quantile, axis=0)
        self._t2_limit = max(float(t2), _TINY)
        if self._q_limit != 0.0:
            self._q_limit = max(float(q), _TINY)
