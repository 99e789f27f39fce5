"""Multivariate detector for noisy process signals whose level wanders: PCA T² and Q of
EWMA-smoothed readings around a slowly following baseline, limits cross-validated on the
learning scans, and an alarm hold.

It is the textbook PCA monitor (see :mod:`twins.detectors.multivariate`) with changes
that suit rigs whose sensors are coarse and noisy (a flow meter that reads whole litres,
a pressure gauge that toggles between two values) and whose operating point moves:

1. **Smoothing.** Every scan's *state* (the latest value of each sensor) goes through an
   exponentially weighted moving average with weight ``smoothing`` on the new reading, so
   a shift of the mean level stands out of the quantisation noise.
2. **Cross-validated limits.** The first ``n_fit + n_calibrate`` scans give the baseline,
   covariance and principal components (those explaining ``variance``). The control
   limits of T² and Q come from the statistics of those same scans, each block of
   ``n_calibrate`` consecutive scans judged by a model fitted on all the others. A block
   held out from the others has wandered from their mean as much as the rig's level
   wanders over minutes, so the limits include that wander. Limits taken from the scans
   right after a fit see only short-term noise and sit too low: on SKAB valve1 11 % of
   the normal scans went over them instead of 1 %. Each limit starts at the ``quantile``
   of its statistic; as a scan is out of control when *either* is over, both are then
   raised by one factor until only ``1 - quantile`` of the held-out scans have either
   over (the two statistics' own 1 % do not coincide: on SKAB's anomaly-free recording
   3.0 % of scans went over one of two 99 % limits, 1.6 % after this).
3. **A baseline that follows slow change.** After the fit the baseline (the expected
   smoothed state) moves towards each scan by ``level_rate`` and the covariance towards
   the scan's deviation from it by ``spread_rate``, but only for scans *in control* (under
   the limits and not in alarm): slow drift, warming up and a noisier regime are learned,
   a fault is not. A scan over the limits or in alarm moves the baseline ten times more
   slowly and the covariance not at all, so that a fault is not learned away while it
   lasts, yet a lasting change is eventually accepted (as the robust z-score does). When
   a fault clears, the state is judged against the level from before it. No sensor's
   variance is taken below a quarter of what the learning scans showed, so a sensor that
   goes quiet does not make the model hair-trigger. A drift is followed while the
   baseline's lag behind it (its rate over ``level_rate``) stays inside the limits; a
   faster change is reported (one condition) and stays so until it is accepted (of the
   order of ``10 / level_rate`` scans) or :meth:`SmoothedPCAMonitor.refit` is called.
4. **Alarm hold.** The statistic must be over its limit in ``hold`` of the last
   ``window`` scans before the detector alarms, and the alarm lasts while that holds.

The principal axes are recomputed from the followed covariance every
:data:`REFRESH_SCANS` learned scans, with the number of components fixed at the fit (so
that the limits keep their meaning). Sensors that are not steady during the learning
scans are left out of the model: a sensor whose variation is mostly slow drift (the
variance of its means over blocks of ``slow_block`` scans is at least ``slow_share`` of its
total variance, as with motor and water temperatures warming up) has a level the
learning scans cannot describe.

The machine-level score is ``r / (r + 1)`` with ``r = max(T²/T²_limit, Q/Q_limit)``,
raised to 0.5 while the hold says "alarm" and capped just below 0.5 while it does not;
``score_sensors`` splits it over the sensors by their share of the dominating statistic.
Per scan the work is O(sensors²), plus an O(sensors³) eigen-decomposition every
:data:`REFRESH_SCANS` scans.

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

from typing import Any, ClassVar

import numpy as np

from schemas.anomaly import AnomalyType
from twins.detectors.base import ALARM, Scan, SensorDetector

REFRESH_SCANS = 25
"""Learned scans between two recomputations of the principal axes from the followed
covariance."""
SPREAD_FLOOR = 0.25
"""Fraction of each sensor's learned variance below which the followed variance is not
taken (a sensor that goes quiet, or sticks, must not make the model hair-trigger)."""
ALARM_SLOWDOWN = 10.0
"""How many times more slowly the baseline follows scans over the limits or in alarm."""
_BELOW_ALARM = np.nextafter(ALARM, 0.0)
_TINY = 1e-12


class SmoothedPCAMonitor(SensorDetector):
    name = "smoothed_pca"
    anomaly_type = AnomalyType.MULTIVARIATE
    machine_level = True
    _state_keys: ClassVar[tuple[str, ...]] = (
        "count",
        "smooth",
        "learned",
        "raw_mean",
        "raw_m2",
        "block_sum",
        "block_mean",
        "block_m2",
        "blocks",
        "steady",
        "baseline",
        "spread",
        "floor",
        "scale",
        "components",
        "eigenvalues",
        "kept",
        "t2_limit",
        "q_limit",
        "over",
        "since_refresh",
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
        level_rate: float = 0.001,
        spread_rate: float = 0.005,
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
        if not 0 <= level_rate < 1:
            raise ValueError(f"level_rate must be in [0, 1), got {level_rate}")
        if not 0 <= spread_rate < 1:
            raise ValueError(f"spread_rate must be in [0, 1), got {spread_rate}")
        self.n_fit = int(n_fit)
        self.n_calibrate = int(n_calibrate)
        self.smoothing = float(smoothing)
        self.variance = float(variance)
        self.quantile = float(quantile)
        self.hold = int(hold)
        self.window = int(window)
        self.slow_block = int(slow_block)
        self.slow_share = float(slow_share)
        self.level_rate = float(level_rate)
        self.spread_rate = float(spread_rate)

    @property
    def n_learn(self) -> int:
        """Scans learned from before anything is scored (``n_fit + n_calibrate``)."""
        return self.n_fit + self.n_calibrate

    def _build(self) -> None:
        s = self.n_sensors
        self._count = 0  # learning scans seen (with every sensor known)
        self._smooth = np.full(s, np.nan)  # EWMA of the state
        self._learned = np.zeros((self.n_learn, s))  # smoothed learning scans (freed at fit)
        self._raw_mean = np.zeros(s)  # the readings' own mean and M2 (slow-drift test)
        self._raw_m2 = np.zeros(s)
        self._block_sum = np.zeros(s)  # the block of readings being summed
        self._block_mean = np.zeros(s)  # running mean and M2 of the blocks' means
        self._block_m2 = np.zeros(s)
        self._blocks = 0
        self._steady = np.zeros(s, dtype=bool)  # sensors in the model
        self._baseline = np.zeros(s)  # expected smoothed state
        self._spread = np.zeros((s, s))  # covariance of the deviations from the baseline
        self._floor = np.zeros(s)  # lowest variance the followed covariance is taken with
        self._scale = np.ones(s)
        self._components = np.zeros((s, s))  # rows: kept components (zero rows unused)
        self._eigenvalues = np.ones(s)
        self._kept = 0  # number of components in the model
        self._t2_limit = np.nan
        self._q_limit = np.nan  # 0.0: every steady component kept, no Q
        self._over = np.zeros(self.window, dtype=bool)  # ring: over the limit, oldest first
        self._since_refresh = 0
        self._scored: tuple[Scan, np.ndarray, float, float] | None = None  # a cache, not state
        super()._build()

    @property
    def fitted(self) -> bool:
        """Whether the model and its limits are set (after ``n_fit + n_calibrate`` scans)."""
        return self._built and not np.isnan(self._t2_limit)

    def refit(self) -> None:
        """Forget the model and learn the machine afresh from the next
        ``n_fit + n_calibrate`` scans (people judged its alarm a false positive)."""
        self._build()

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
        z = np.where(self._steady, (x - self._baseline) / self._scale, 0.0)
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
        x = self._smoothed(scan)
        t2, q, t2_share, q_share = self._statistics(x)
        self._scored = (scan, x, t2, q)  # learning from this very scan next need not redo it
        r, q_dominates = self._ratio(t2, q)
        over = int(self._over[1:].sum()) + (r >= 1.0)
        score = r / (r + 1.0)
        score = max(score, ALARM) if over >= self.hold else min(score, _BELOW_ALARM)
        share = q_share if q_dominates else t2_share
        top = share.max()
        weights = share / top if top > 0 else self._steady.astype(np.float64)
        return score * weights

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        scored, self._scored = self._scored, None
        if scored is not None and scored[0] is scan:  # just scored (so its state is complete)
            if scan.present.any():  # a tick (nothing new) teaches nothing
                _, x, t2, q = scored
                self._smooth = x
                self._follow(x, t2, q)
            return
        if np.isnan(scan.state).any() or not scan.present.any():
            return
        x = self._smoothed(scan)
        self._smooth = x
        if self.fitted:
            self._follow(x, *self._statistics(x)[:2])
            return
        self._accumulate(scan.state)
        self._learned[self._count] = x
        self._count += 1
        if self._count == self.n_learn:
            self._fit()

    def expected(self, scan: Scan) -> np.ndarray:
        """The baseline of each watched sensor (its expected smoothed reading)."""
        if not self.fitted:
            return super().expected(scan)
        return np.where(self._steady, self._baseline, np.nan)

    # -- learning ---------------------------------------------------------------------------
    def _follow(self, x: np.ndarray, t2: float, q: float) -> None:
        """After the fit: note the scan (smoothed state ``x``, statistics ``t2``, ``q``) in
        the alarm hold, and let the baseline and the covariance follow it (slowly, or not
        at all, when it is out of control)."""
        if not self._steady.any():
            return
        over = self._ratio(t2, q)[0] >= 1.0
        self._over = np.append(self._over[1:], over)
        in_control = not over and int(self._over.sum()) < self.hold
        rate = self.level_rate if in_control else self.level_rate / ALARM_SLOWDOWN
        self._baseline = np.where(
            self._steady, self._baseline + rate * (x - self._baseline), self._baseline
        )
        if in_control and self.spread_rate > 0:
            d = np.where(self._steady, x - self._baseline, 0.0)
            self._spread = self._spread + self.spread_rate * (np.outer(d, d) - self._spread)
            self._since_refresh += 1
            if self._since_refresh >= REFRESH_SCANS:
                low = np.maximum(self._floor - np.diag(self._spread), 0.0)
                self._decompose(self._spread + np.diag(low), self._kept)
                self._since_refresh = 0

    def _accumulate(self, raw: np.ndarray) -> None:
        """Statistics of the readings ``raw`` (and their block means) for the slow-drift
        test."""
        n = self._count + 1
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
        block_var = self._block_m2 / max(self._blocks, 1)
        moving = var > 1e-12 * np.maximum(self._raw_mean * self._raw_mean, 1.0)
        self._steady = moving & (block_var < self.slow_share * np.where(moving, var, 1.0))
        learned, self._learned = self._learned, np.zeros((0, self.n_sensors))
        if not self._steady.any():
            self._t2_limit = 1.0  # nothing to watch: the statistics stay 0
            return
        idx = np.flatnonzero(self._steady)
        k = self._model(learned[:, idx], None)
        # Cross-validation: each block of n_calibrate scans judged by the others' model.
        held_out = []
        for start in range(0, n, self.n_calibrate):
            rest = np.ones(n, dtype=bool)
            rest[start : start + self.n_calibrate] = False
            self._model(learned[rest][:, idx], k)
            held_out.append(self._batch_statistics(learned[~rest][:, idx]))
        stats = np.concatenate(held_out)
        t2, q = np.maximum(np.quantile(stats, self.quantile, axis=0), _TINY)
        # An alarm is either statistic over its limit: both limits are raised by one
        # factor until only 1 - quantile of the held-out scans have either over.
        either = (
            stats[:, 0] / t2 if k == idx.size else np.maximum(stats[:, 0] / t2, stats[:, 1] / q)
        )
        factor = max(float(np.quantile(either, self.quantile)), 1.0)
        self._model(learned[:, idx], k)
        self._floor = SPREAD_FLOOR * np.diag(self._spread)
        self._t2_limit = float(t2) * factor
        self._q_limit = 0.0 if k == idx.size else float(q) * factor

    def _model(self, rows: np.ndarray, k: int | None) -> int:
        """Baseline, covariance and components from the steady sensors' ``rows`` (``k``
        components, or as many as explain ``variance`` when None); returns ``k``."""
        idx = np.flatnonzero(self._steady)
        self._baseline = np.zeros(self.n_sensors)
        self._baseline[idx] = rows.mean(axis=0)
        self._spread = np.zeros((self.n_sensors, self.n_sensors))
        self._spread[np.ix_(idx, idx)] = np.atleast_2d(np.cov(rows, rowvar=False))
        return self._decompose(self._spread, k)

    def _decompose(self, spread: np.ndarray, k: int | None) -> int:
        """Scale and principal components of the steady sensors' covariance ``spread``."""
        idx = np.flatnonzero(self._steady)
        cov = spread[np.ix_(idx, idx)]
        std = np.sqrt(np.maximum(np.diag(cov), _TINY))
        eigenvalues, vectors = np.linalg.eigh(cov / np.outer(std, std))
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.maximum(eigenvalues[order], _TINY)
        vectors = vectors[:, order]
        if k is None:
            explained = np.cumsum(eigenvalues) / eigenvalues.sum()
            k = max(min(int(np.searchsorted(explained, self.variance)) + 1, idx.size - 1), 1)
        self._scale = np.ones(self.n_sensors)
        self._scale[idx] = std
        self._components = np.zeros((self.n_sensors, self.n_sensors))
        self._components[:k, idx] = vectors[:, :k].T
        self._eigenvalues = np.ones(self.n_sensors)
        self._eigenvalues[:k] = eigenvalues[:k]
        self._kept = k
        return k

    def _batch_statistics(self, rows: np.ndarray) -> np.ndarray:
        """T² and Q (columns) of smoothed states ``rows`` (steady sensors only)."""
        idx = np.flatnonzero(self._steady)
        z = (rows - self._baseline[idx]) / self._scale[idx]
        p = self._components[:, idx]
        t = z @ p.T
        residual = z - t @ p
        return np.column_stack([(t * t / self._eigenvalues).sum(axis=1), (residual**2).sum(1)])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        learned = state.get("learned")
        if learned is not None and np.shape(learned)[0] == 0:  # freed at the fit
            state = {**state, "learned": np.zeros((self.n_learn, np.shape(learned)[1]))}
        super().load_state_dict(state)
        if learned is not None and np.shape(learned)[0] == 0:
            self._learned = np.zeros((0, self.n_sensors))
