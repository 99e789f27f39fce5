"""What is normal for each sensor in each operating regime, learned slowly by the twin.

The learned detectors judge a reading against what the machine usually reads *in the
regime it is in* (:mod:`twins.condition`): ``z = (value - mean[r]) / spread[r]``. This
module keeps ``mean`` and ``spread`` per regime and sensor from the machine's own settled
readings:

* **Warm-up.** The first ``warmup`` settled readings of a sensor in a regime give its
  mean and standard deviation (Welford). Until then the sensor has no normal in that
  regime and its ``z`` is NaN (the learned detectors skip it).
* **Slow adaptation.** Afterwards mean and variance follow the readings as exponentially
  weighted averages with a time constant of ``adapt_s`` seconds *of running in that
  regime* (a week by default): legitimate slow change (seasonal ambient, a re-tuned
  process) is accepted over days, while a fault that develops over days is caught by the
  detectors first.
* **No learning a fault away.** Readings of a sensor the detectors hold in alarm are not
  learned (the caller says which), so a developing fault cannot become the normal while
  it is reported.
* **Told, not guessed.** :meth:`RegimeBaseline.accept` makes a level the normal of a
  sensor in a regime (a person marked its alarm a false positive);
  :meth:`RegimeBaseline.relearn` forgets every regime's normal (after a repair the machine
  is a different machine), to be learned again from the next readings.

The spread is floored at ``min_spread`` times the mean's magnitude (and an absolute
``1e-9``), so a sensor that never moves in a regime cannot divide by zero.

>>> import numpy as np
>>> base = RegimeBaseline(n_sensors=2, n_regimes=3, warmup=5)
>>> rng = np.random.default_rng(0)
>>> for i in range(5):
...     base.learn(1, np.array([50.0, 3.0]) + rng.normal(0, [1.0, 0.1]), float(i * 600))
>>> z = base.normalise(1, np.array([53.0, 3.0]))
>>> bool(abs(z[0]) > 2), bool(abs(z[1]) < 2)
(True, True)
>>> base.normalise(2, np.array([53.0, 3.0])).tolist()  # nothing learned in regime 2
[nan, nan]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from twins.snapshot import StateDict

WEEK_S = 7 * 86_400.0
_MAX_STEP_S = 3600.0


class RegimeBaseline:
    """Per-regime, per-sensor mean and spread of a machine's settled readings.

    Parameters
    ----------
    n_sensors: sensors of the machine.
    n_regimes: regimes, idle (0) included.
    warmup: settled readings of a sensor in a regime before it has a normal there.
    adapt_s: time constant (seconds of running in the regime) of the slow adaptation.
    min_spread: floor of the spread, relative to the mean's magnitude.
    recent_s: time constant of the recent level that :meth:`accept` adopts.
    """

    def __init__(
        self,
        n_sensors: int,
        n_regimes: int,
        *,
        warmup: int = 30,
        adapt_s: float = WEEK_S,
        min_spread: float = 1e-3,
        recent_s: float = 3600.0,
    ) -> None:
        if n_sensors < 1:
            raise ValueError(f"n_sensors must be at least 1, got {n_sensors}")
        if n_regimes < 1:
            raise ValueError(f"n_regimes must be at least 1, got {n_regimes}")
        if warmup < 3:
            raise ValueError(f"warmup must be at least 3 readings, got {warmup}")
        if not (math.isfinite(adapt_s) and adapt_s > 0):
            raise ValueError(f"adapt_s must be positive, got {adapt_s}")
        if not (math.isfinite(min_spread) and min_spread >= 0):
            raise ValueError(f"min_spread must be >= 0, got {min_spread}")
        if not (math.isfinite(recent_s) and recent_s > 0):
            raise ValueError(f"recent_s must be positive, got {recent_s}")
        self.n_sensors = int(n_sensors)
        self.n_regimes = int(n_regimes)
        self.warmup = int(warmup)
        self.adapt_s = float(adapt_s)
        self.min_spread = float(min_spread)
        self.recent_s = float(recent_s)
        shape = (self.n_regimes, self.n_sensors)
        self._count = np.zeros(shape)
        self._mean = np.zeros(shape)
        self._m2 = np.zeros(shape)  # sum of squared deviations while warming; then variance
        self._recent = np.full(shape, np.nan)
        self._last_s = np.full(self.n_regimes, np.nan)  # time of the regime's last learning

    def normalise(self, regime: int, values: np.ndarray) -> np.ndarray:
        """``(values - mean) / spread`` in ``regime``; NaN where a sensor has no normal
        there yet (or the value is NaN)."""
        mean, spread, warm = self._normal(regime)
        with np.errstate(invalid="ignore"):
            return np.where(warm, (values - mean) / spread, np.nan)

    def _normal(self, regime: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        count = self._count[regime]
        warm = count >= self.warmup
        var = np.where(warm, self._m2[regime], 0.0)
        mean = self._mean[regime]
        spread = np.maximum(np.sqrt(var), np.maximum(self.min_spread * np.abs(mean), 1e-9))
        return mean, spread, warm

    def expected(self, regime: int) -> np.ndarray:
        """The normal value of every sensor in ``regime`` (NaN while warming up)."""
        mean, _, warm = self._normal(regime)
        return np.where(warm, mean, np.nan)

    def learn(
        self,
        regime: int,
        values: np.ndarray,
        now_s: float,
        hold: np.ndarray | None = None,
    ) -> None:
        """Learn settled readings ``values`` (NaN: no reading) taken in ``regime`` at
        ``now_s``; sensors where ``hold`` is True (in alarm) are not learned."""
        x = values
        learn = ~np.isnan(x)
        if hold is not None:
            learn &= ~hold
        last = self._last_s[regime]
        # Time running in the regime: a gap (it ran elsewhere, stood still) counts at most
        # as long as _MAX_STEP_S.
        dt = 0.0 if math.isnan(last) else min(max(now_s - last, 0.0), _MAX_STEP_S)
        self._last_s[regime] = now_s
        recent = self._recent[regime]
        keep = math.exp(-dt / self.recent_s)
        self._recent[regime] = np.where(
            np.isnan(x), recent, np.where(np.isnan(recent), x, keep * recent + (1 - keep) * x)
        )
        if not learn.any():
            return
        count, mean, m2 = self._count[regime], self._mean[regime], self._m2[regime]
        warming = learn & (count < self.warmup)
        adapting = learn & ~warming
        n = count + warming
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(learn, x - mean, 0.0)
            step = np.where(warming, delta / np.maximum(n, 1.0), 0.0)
            new_mean = mean + step
            new_m2 = np.where(warming, m2 + delta * (x - new_mean), m2)
            done = warming & (n >= self.warmup)
            new_m2 = np.where(done, new_m2 / np.maximum(n - 1.0, 1.0), new_m2)  # -> variance
            rate = 1.0 - math.exp(-dt / self.adapt_s)
            if adapting.any() and rate > 0:
                new_mean = np.where(adapting, mean + rate * delta, new_mean)
                new_m2 = np.where(adapting, (1 - rate) * (m2 + rate * delta * delta), new_m2)
        self._count[regime] = n
        self._mean[regime] = new_mean
        self._m2[regime] = new_m2

    def recent(self, regime: int) -> np.ndarray:
        """Each sensor's recent level in ``regime`` (an hour's exponential average of its
        settled readings; NaN if none)."""
        return self._recent[regime].copy()

    def spread(self, regime: int) -> np.ndarray:
        """Each sensor's normal spread in ``regime`` (NaN while warming up)."""
        _, spread, warm = self._normal(regime)
        return np.where(warm, spread, np.nan)

    def accept(self, regime: int, sensor: int, level: float) -> None:
        """Make ``level`` the sensor's normal in ``regime`` (people said it is normal);
        its spread stays. A sensor without a normal there yet learns one anyway."""
        if self._count[regime, sensor] >= self.warmup:
            self._mean[regime, sensor] = level

    def relearn(self) -> None:
        """Forget every regime's normal; it is learned again from the next readings."""
        self._count[:] = 0.0
        self._mean[:] = 0.0
        self._m2[:] = 0.0

    def warm(self, regime: int) -> np.ndarray:
        """Which sensors have a normal in ``regime``."""
        return self._count[regime] >= self.warmup

    # -- snapshots -----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        return {
            "count": self._count,
            "mean": self._mean,
            "m2": self._m2,
            "recent": self._recent,
            "last_s": self._last_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("count", "mean", "m2", "recent", "last_s"):
            current = getattr(self, "_" + key)
            arr = np.asarray(state[key], dtype=np.float64)
            if arr.shape != current.shape:
                raise ValueError(f"baseline.{key}: shape {arr.shape} != {current.shape}")
            setattr(self, "_" + key, arr.copy())
