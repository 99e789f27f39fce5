"""Multivariate detector: PCA with Hotelling's T² and the Q (squared prediction error)
statistic over all of a machine's sensors at once.

Learning: the first ``n_fit`` complete scans (every sensor known) are accumulated into
running mean and covariance (Welford/Chan), so no raw data is kept. Then the sensors are
standardised, the correlation matrix is decomposed (``numpy.linalg.eigh``) and the
principal components explaining ``variance`` of the variation are kept. Control limits
at confidence ``1 - alpha`` come from the textbook distributions: T² from the F
distribution, Q from Jackson & Mudholkar's approximation. The model then stays fixed
until :meth:`PCAMonitor.refit` is called (a changed machine is a fact to report, not to
absorb).

The machine-level score is ``r / (r + 1)`` with ``r = max(T²/T²_limit, Q/Q_limit)``, so
0.5 sits exactly on the control limit. ``score_sensors`` splits that score over sensors in
proportion to their share of the residual (their contribution to Q).

It scores the scan's *state* vector (the latest value of every sensor), so it can judge
a scan in which only some sensors reported.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> det = PCAMonitor(n_sensors=3, n_fit=200)
>>> for i in range(200):
...     a = rng.normal()
...     det.learn_one(Scan.from_values([a, 2 * a + 0.1 * rng.normal(), rng.normal()], i))
>>> det.fitted
True
>>> det.score_one(Scan.from_values([1.0, 2.0, 0.0], 201.0)) < 0.5
True
>>> det.score_one(Scan.from_values([1.0, -2.0, 0.0], 201.0)) > 0.5  # breaks the correlation
True
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy import stats

from schemas.anomaly import AnomalyType
from twins.detectors.base import Scan, SensorDetector


class PCAMonitor(SensorDetector):
    name = "pca_t2_q"
    anomaly_type = AnomalyType.MULTIVARIATE
    machine_level = True
    _state_keys: ClassVar[tuple[str, ...]] = (
        "count",
        "mean",
        "m2",
        "scale",
        "components",
        "eigenvalues",
        "t2_limit",
        "q_limit",
    )

    def __init__(
        self,
        n_sensors: int,
        n_fit: int = 200,
        variance: float = 0.9,
        alpha: float = 0.001,
    ) -> None:
        super().__init__(n_sensors)
        if n_fit < max(10, n_sensors + 2):
            raise ValueError(f"n_fit must be at least max(10, n_sensors + 2), got {n_fit}")
        if not 0 < variance < 1:
            raise ValueError(f"variance must be in (0, 1), got {variance}")
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
        self.n_fit = int(n_fit)
        self.variance = float(variance)
        self.alpha = float(alpha)

    def _build(self) -> None:
        s = self.n_sensors
        self._count = 0
        self._mean = np.zeros(s)
        self._m2 = np.zeros((s, s))  # sum of outer products of deviations (freed after fit)
        self._scale = np.zeros(0)
        self._components = np.zeros((0, s))
        self._eigenvalues = np.zeros(0)
        self._t2_limit = np.nan
        self._q_limit = np.nan
        super()._build()

    @property
    def fitted(self) -> bool:
        return self._built and self._components.shape[0] > 0

    def refit(self) -> None:
        """Forget the model and learn a new one from the next ``n_fit`` scans."""
        self._build()

    def _score(self, scan: Scan) -> np.ndarray:
        """The machine score on the sensors that drive it: Q contributions (squared
        residuals) when Q dominates, T² contributions when T² does."""
        if not self.fitted or np.isnan(scan.state).any():
            return np.zeros(self.n_sensors)
        z = (scan.state - self._mean) / self._scale
        t = self._components @ z
        residual = z - t @ self._components
        t2_ratio = float(np.dot(t * t, 1.0 / self._eigenvalues)) / self._t2_limit
        q_ratio = float(np.dot(residual, residual)) / self._q_limit
        r = max(t2_ratio, q_ratio)
        if q_ratio >= t2_ratio:
            share = residual * residual
        else:  # T² = sum_s z_s * (P^T (t / lambda))_s: each sensor's part of it
            share = np.maximum(z * (self._components.T @ (t / self._eigenvalues)), 0.0)
        top = share.max()
        weights = share / top if top > 0 else np.ones(self.n_sensors)
        return (r / (r + 1.0)) * weights

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        if self.fitted or np.isnan(scan.state).any() or not scan.present.any():
            return
        self._count += 1
        delta = scan.state - self._mean
        self._mean = self._mean + delta / self._count
        self._m2 = self._m2 + np.outer(delta, scan.state - self._mean)
        if self._count >= self.n_fit:
            self._fit()

    def _fit(self) -> None:
        n = self._count
        cov = self._m2 / (n - 1)
        std = np.sqrt(np.maximum(np.diag(cov), 0.0))
        scale = np.where(std > 1e-9 * np.maximum(np.abs(self._mean), 1.0), std, 1.0)
        corr = cov / np.outer(scale, scale)
        eigenvalues, vectors = np.linalg.eigh(corr)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.maximum(eigenvalues[order], 1e-12)
        vectors = vectors[:, order]
        explained = np.cumsum(eigenvalues) / eigenvalues.sum()
        k = min(int(np.searchsorted(explained, self.variance)) + 1, self.n_sensors - 1, n - 2)
        k = max(k, 1)
        conf = 1.0 - self.alpha
        t2_limit = k * (n - 1) * (n + 1) / (n * (n - k)) * stats.f.ppf(conf, k, n - k)
        rest = eigenvalues[k:]
        q_limit = _jackson_mudholkar(rest, conf) if rest.size else 1e-9
        self._scale = scale
        self._components = vectors[:, :k].T.copy()
        self._eigenvalues = eigenvalues[:k].copy()
        self._t2_limit = float(t2_limit)
        self._q_limit = float(max(q_limit, 1e-9))
        self._m2 = np.zeros((0, 0))

    def load_state_dict(self, state: dict[str, object]) -> None:
        if not state.get("built"):
            self._built = False
            return
        self._build()
        self._count = int(state["count"])  # type: ignore[call-overload]
        self._t2_limit = float(state["t2_limit"])  # type: ignore[arg-type]
        self._q_limit = float(state["q_limit"])  # type: ignore[arg-type]
        s = self.n_sensors
        arrays = {
            k: np.array(state[k], dtype=np.float64)
            for k in ("mean", "m2", "scale", "components", "eigenvalues")
        }
        k = arrays["components"].shape[0]
        expected: dict[str, list[tuple[int, ...]]] = {
            "mean": [(s,)],
            "m2": [(s, s), (0, 0)],
            "scale": [(s,), (0,)],
            "components": [(k, s)],
            "eigenvalues": [(k,)],
        }
        for key, arr in arrays.items():
            if arr.shape not in expected[key]:
                raise ValueError(f"{self.name}.{key}: shape {arr.shape} does not fit {s} sensors")
            setattr(self, "_" + key, arr)


def _jackson_mudholkar(rest: np.ndarray, conf: float) -> float:
    """Upper control limit of Q from the discarded eigenvalues (Jackson & Mudholkar 1979)."""
    t1, t2, t3 = rest.sum(), (rest**2).sum(), (rest**3).sum()
    h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2)
    if h0 <= 0:  # degenerate spectrum: fall back to the chi-square (Box) approximation
        g, h = t2 / t1, t1 * t1 / t2
        return float(g * stats.chi2.ppf(conf, h))
    c = stats.norm.ppf(conf)
    inner = c * np.sqrt(2 * t2 * h0 * h0) / t1 + 1 + t2 * h0 * (h0 - 1) / (t1 * t1)
    return float(t1 * inner ** (1.0 / h0))
