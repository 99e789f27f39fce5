"""Operating regimes: the same sensor reads differently at another operating point.

A machine that runs at several operating points (altitude and throttle of an engine; the
speed and load set-points of a pump) shows sensor levels that depend on the operating
point more than on wear. Before wear can be seen, each reading is expressed relative to
what is normal *at that operating point*: ``z = (value - mean_r) / std_r`` with the
mean and spread of the sensor in regime ``r``, learned from training data.

Regimes are found by clustering the operating settings (k-means on standardised
settings, scikit-learn). The number of regimes is chosen, not given: the ``k`` up to
``max_regimes`` with the crispest clustering (highest silhouette), if that is at least
``min_silhouette``; settings that only jitter around one point are one regime.

**Resolution.** A sensor is read to some resolution (C-MAPSS writes two decimals): its
``resolution_`` is the smallest step between two of its distinct training readings. A
sensor whose spread within a regime is below one step only flips between neighbouring
values there (rounding, not the machine), and a z-score against that spread turns a flip
into a spike of dozens of standard deviations. So the spread is never taken below one
step, and a sensor that does not vary by more than a step within any regime carries no
information and is reported in ``constant_``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> points = np.array([[0.0, 100.0], [20.0, 60.0], [35.0, 100.0]])
>>> which = rng.integers(0, 3, 600)
>>> settings = points[which] + rng.normal(0, 0.01, (600, 2))
>>> temp = 500 + 40 * which + rng.normal(0, 1.0, 600)   # level set by the regime
>>> regimes = OperatingRegimes().fit(settings, temp[:, None])
>>> regimes.n_regimes_
3
>>> z = regimes.transform(settings, temp[:, None])
>>> bool(abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05)
True
>>> OperatingRegimes().fit(rng.normal(0, 0.01, (600, 2)), temp[:, None]).n_regimes_
1
"""

from __future__ import annotations

from typing import Any

import numpy as np


class OperatingRegimes:
    """Per-regime sensor normalisation.

    Parameters
    ----------
    max_regimes: the most regimes considered.
    min_silhouette: how crisp a clustering must be to count as separate regimes.
    sample: rows used to score a clustering (silhouette is quadratic in rows).
    seed: seed of k-means and of the sample.
    """

    def __init__(
        self,
        max_regimes: int = 8,
        min_silhouette: float = 0.8,
        sample: int = 2000,
        seed: int = 0,
    ) -> None:
        if max_regimes < 1:
            raise ValueError(f"max_regimes must be at least 1, got {max_regimes}")
        if not 0 < min_silhouette < 1:
            raise ValueError(f"min_silhouette must be in (0, 1), got {min_silhouette}")
        if sample < 10:
            raise ValueError(f"sample must be at least 10, got {sample}")
        self.max_regimes = int(max_regimes)
        self.min_silhouette = float(min_silhouette)
        self.sample = int(sample)
        self.seed = int(seed)

    def fit(self, settings: np.ndarray, values: np.ndarray) -> OperatingRegimes:
        """Learn regimes from ``settings`` (rows, n_settings) and the per-regime mean and
        spread of ``values`` (rows, n_sensors)."""
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        s, v = _check(settings, values)
        if len(s) < 2 * self.max_regimes:
            raise ValueError(f"need at least {2 * self.max_regimes} rows to fit, got {len(s)}")
        centre, scale = s.mean(axis=0), s.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        zs = (s - centre) / scale
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(zs), size=min(self.sample, len(zs)), replace=False)
        best, best_score = np.zeros((1, s.shape[1])), self.min_silhouette
        for k in range(2, self.max_regimes + 1):
            km = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(zs)
            labels = km.labels_[pick]
            if len(np.unique(labels)) < 2:
                break
            score = float(silhouette_score(zs[pick], labels))
            if score >= best_score:
                best, best_score = km.cluster_centers_, score
        self.settings_centre_ = centre
        self.settings_scale_ = scale
        self.centres_ = best
        labels = self._label(s)
        k = len(best)
        self.sensor_mean_ = np.zeros((k, v.shape[1]))
        self.sensor_std_ = np.ones((k, v.shape[1]))
        for r in range(k):
            rows = v[labels == r]
            if len(rows) < 2:
                raise ValueError(f"regime {r} has fewer than 2 training rows")
            self.sensor_mean_[r] = rows.mean(axis=0)
            self.sensor_std_[r] = rows.std(axis=0)
        self.resolution_ = _resolution(v)
        tiny = self.sensor_std_ <= 1e-9 * np.maximum(np.abs(self.sensor_mean_), 1.0)
        unresolved = tiny | (self.sensor_std_ <= self.resolution_)
        self.constant_ = unresolved.all(axis=0)
        floor = np.where(self.resolution_ > 0, self.resolution_, 1.0)
        self.sensor_std_ = np.where(
            unresolved, np.maximum(self.sensor_std_, floor), self.sensor_std_
        )
        return self

    @property
    def n_regimes_(self) -> int:
        return len(self.centres_)

    def _label(self, settings: np.ndarray) -> np.ndarray:
        zs = (settings - self.settings_centre_) / self.settings_scale_
        d = ((zs[:, None, :] - self.centres_[None, :, :]) ** 2).sum(axis=2)
        return np.asarray(d.argmin(axis=1))

    def regime(self, settings: np.ndarray) -> np.ndarray:
        """The regime of each row of settings."""
        self._require_fitted()
        s = np.asarray(settings, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != self.centres_.shape[1]:
            raise ValueError(f"settings must be (rows, {self.centres_.shape[1]}), got {s.shape}")
        return self._label(s)

    def transform(self, settings: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Each value relative to its sensor's normal at the row's regime."""
        self._require_fitted()
        s, v = _check(settings, values)
        if v.shape[1] != self.sensor_mean_.shape[1]:
            raise ValueError(
                f"values must have {self.sensor_mean_.shape[1]} sensors, got {v.shape[1]}"
            )
        r = self.regime(s)
        return np.asarray((v - self.sensor_mean_[r]) / self.sensor_std_[r])

    def _require_fitted(self) -> None:
        if not hasattr(self, "centres_"):
            raise ValueError("the regimes are not fitted yet: call fit() first")

    def to_dict(self) -> dict[str, Any]:
        """The fitted parameters as JSON-able lists."""
        self._require_fitted()
        return {
            "settings_centre": self.settings_centre_.tolist(),
            "settings_scale": self.settings_scale_.tolist(),
            "centres": self.centres_.tolist(),
            "sensor_mean": self.sensor_mean_.tolist(),
            "sensor_std": self.sensor_std_.tolist(),
            "resolution": self.resolution_.tolist(),
            "constant": self.constant_.tolist(),
        }


def _resolution(values: np.ndarray) -> np.ndarray:
    """Per sensor, the smallest step between two distinct readings (0 for a sensor with a
    single value). Steps below 1e-9 of the sensor's magnitude are float noise, not
    resolution, and are ignored."""
    out = np.zeros(values.shape[1])
    for j in range(values.shape[1]):
        distinct = np.unique(values[:, j])
        if len(distinct) < 2:
            continue
        steps = np.diff(distinct)
        steps = steps[steps > 1e-9 * max(float(np.abs(distinct).max()), 1.0)]
        out[j] = float(steps.min()) if steps.size else 0.0
    return out


def _check(settings: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(settings, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if s.ndim != 2 or v.ndim != 2 or len(s) != len(v):
        raise ValueError(
            f"settings and values must be 2-D with the same rows, got {s.shape} and {v.shape}"
        )
    if not (np.isfinite(s).all() and np.isfinite(v).all()):
        raise ValueError("settings and values must be finite")
    return s, v
