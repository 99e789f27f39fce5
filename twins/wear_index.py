"""Wear index: one number per reading that means the same wear at every operating point.

Regime normalisation (:mod:`twins.regimes`) takes away the *level* an operating point
gives a sensor, not how strongly the sensor responds to wear there. On C-MAPSS FD002 the
same wear moves some sensors three times as far (in regime z-scores) at one operating
point as at another (sensor 7, last 10 cycles against the healthy start: -1.1 at 42 kft
and Mach 0.84, -2.6 at sea level). A window that averages a sensor over cycles flown at
different operating points then mixes scales, and the mix, not the wear, moves the mean.

The wear index reads all sensors of one reading at once, with weights of its own regime::

    w(x, r) = b_r + sum_s a_rs * z_s(x)        (z: regime-normalised readings)

fitted by least squares on run-to-failure histories against the remaining life capped
like the RUL model's target, ``min(R, cap)``. It is in the target's unit (cycles, hours)
in every regime, so its rolling means, slope and drift are features like a sensor's.
Each regime's weights are shrunk towards the weights of all regimes together (``ridge``:
how many rows' worth of weight the shared fit has), so a regime seen rarely borrows from
the others instead of fitting its noise.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> n = 4000
>>> regime = rng.integers(0, 2, n)
>>> life = rng.uniform(0, 200, n)                          # remaining life of each row
>>> wear = np.clip(1 - life / 125, 0, None)                 # shows in the last 125
>>> gain = np.where(regime == 0, 1.0, 3.0)                  # the sensor responds 3x in regime 1
>>> z = np.column_stack([gain * wear + rng.normal(0, 0.2, n), rng.normal(0, 1, n)])
>>> target = np.minimum(life, 125)
>>> def error(w):
...     return float(np.sqrt(np.mean((w - target) ** 2)))
>>> per_regime = WearIndex(cap=125.0).fit(regime, z, life).transform(regime, z)
>>> one_regime = WearIndex(cap=125.0).fit(0 * regime, z, life).transform(0 * regime, z)
>>> error(per_regime) < 0.9 * error(one_regime)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class WearIndex:
    """Per-regime linear map of regime-normalised readings onto capped remaining life.

    Parameters
    ----------
    cap: the cap of the target (the RUL model's), in the unit of the remaining life.
    ridge: shrinkage of each regime's weights towards the shared weights, in rows.
    """

    def __init__(self, cap: float = 125.0, ridge: float = 100.0) -> None:
        if not (cap > 0 and math.isfinite(cap)):
            raise ValueError(f"cap must be positive and finite, got {cap}")
        if not (ridge >= 0 and math.isfinite(ridge)):
            raise ValueError(f"ridge must be >= 0 and finite, got {ridge}")
        self.cap = float(cap)
        self.ridge = float(ridge)

    def fit(
        self,
        regime: np.ndarray,
        z: np.ndarray,
        remaining: np.ndarray,
        event: np.ndarray | None = None,
    ) -> WearIndex:
        """Fit on readings ``z`` (rows, sensors) taken in ``regime`` (rows,) with
        ``remaining`` life after each; ``event`` False marks a history that ended without
        a failure (its rows count only where they ran past the cap)."""
        r, x = _check(regime, z)
        y = np.asarray(remaining, dtype=np.float64)
        if y.shape != (len(x),) or not np.isfinite(y).all() or (y < 0).any():
            raise ValueError(f"remaining must be ({len(x)},) finite values >= 0, got {y.shape}")
        known = np.ones(len(x), dtype=bool)
        if event is not None:
            e = np.asarray(event, dtype=bool)
            if e.shape != (len(x),):
                raise ValueError(f"event must be ({len(x)},), got {e.shape}")
            known = e | (y >= self.cap)  # a censored row says min(R, cap) only past the cap
        r, x, y = r[known], x[known], np.minimum(y[known], self.cap)
        if len(x) < x.shape[1] + 2:
            raise ValueError(f"need at least {x.shape[1] + 2} rows to fit, got {len(x)}")
        design = np.column_stack([np.ones(len(x)), x])
        penalty = np.eye(design.shape[1])
        penalty[0, 0] = 0.0  # the intercept (a regime's level) is not shrunk
        # Tiny absolute ridge on the shared fit only guards against collinear sensors.
        shared = np.linalg.solve(design.T @ design + 1e-9 * len(x) * penalty, design.T @ y)
        n_regimes = int(r.max()) + 1
        coef = np.tile(shared, (n_regimes, 1))
        for k in range(n_regimes):
            rows = r == k
            if not rows.any():
                continue  # a regime without rows keeps the shared weights
            d, t = design[rows], y[rows]
            a = d.T @ d + self.ridge * penalty + 1e-9 * len(t) * penalty
            coef[k] = np.linalg.solve(a, d.T @ t + self.ridge * penalty @ shared)
        self.coef_ = coef
        self.shared_ = shared
        return self

    @property
    def n_regimes_(self) -> int:
        self._require_fitted()
        return len(self.coef_)

    def transform(self, regime: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The wear index of each reading (rows,), in the unit of the remaining life.
        A regime the index was not fitted on gets the shared weights."""
        self._require_fitted()
        r, x = _check(regime, z)
        if x.shape[1] != self.coef_.shape[1] - 1:
            raise ValueError(f"z must have {self.coef_.shape[1] - 1} sensors, got {x.shape[1]}")
        w = np.where(
            (r < len(self.coef_))[:, None],
            self.coef_[np.minimum(r, len(self.coef_) - 1)],
            self.shared_,
        )
        return np.asarray(w[:, 0] + (w[:, 1:] * x).sum(axis=1))

    def _require_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValueError("the wear index is not fitted yet: call fit() first")

    def to_dict(self) -> dict[str, Any]:
        """The fitted weights as JSON-able lists."""
        self._require_fitted()
        return {
            "cap": self.cap,
            "ridge": self.ridge,
            "coef": self.coef_.tolist(),
            "shared": self.shared_.tolist(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> WearIndex:
        """The index :meth:`to_dict` wrote."""
        try:
            index = cls(cap=float(doc["cap"]), ridge=float(doc["ridge"]))
            coef = np.array(doc["coef"], dtype=np.float64)
            shared = np.array(doc["shared"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"wear index is incomplete or malformed: {exc}") from None
        if coef.ndim != 2 or shared.shape != (coef.shape[1],):
            raise ValueError(f"wear index weights have shapes {coef.shape} and {shared.shape}")
        index.coef_, index.shared_ = coef, shared
        return index


def _check(regime: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(regime)
    x = np.asarray(z, dtype=np.float64)
    if x.ndim != 2 or r.shape != (len(x),):
        raise ValueError(f"regime must be (rows,) and z (rows, sensors), got {r.shape}, {x.shape}")
    if r.size and (r.dtype.kind not in "iu" or (r < 0).any()):
        raise ValueError("regime must hold regime numbers >= 0")
    if not np.isfinite(x).all():
        raise ValueError("z must be finite")
    return r.astype(np.int64), x
