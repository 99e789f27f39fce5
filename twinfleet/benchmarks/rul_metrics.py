"""How published work scores remaining-useful-life predictions (C-MAPSS, PHM'08).

All functions take arrays of the same length, one entry per machine, in the same time
unit (cycles for C-MAPSS).

>>> rmse([10, 20], [13, 16])
3.5355...
>>> round(phm08_score([10, 20], [10, 20]), 6)
0.0
>>> interval_coverage([10, 50], lower=[5, 10], upper=[15, 40])
0.5
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


def _pair(true: ArrayLike, predicted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"need two non-empty 1-D arrays of one length, got {t.shape}, {p.shape}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("true and predicted values must be finite")
    return t, p


def rmse(true: ArrayLike, predicted: ArrayLike) -> float:
    """Root mean squared error of the predictions."""
    t, p = _pair(true, predicted)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def phm08_score(true: ArrayLike, predicted: ArrayLike) -> float:
    """The PHM'08 challenge score, summed over machines (lower is better).

    With ``d = predicted - true``: ``exp(-d / 13) - 1`` when the prediction is early
    (``d < 0``), ``exp(d / 10) - 1`` when it is late: a late prediction, which lets a
    machine fail unplanned, costs more than an early one.
    """
    t, p = _pair(true, predicted)
    d = p - t
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def interval_coverage(true: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of true values inside their ``[lower, upper]`` interval (bounds included)."""
    t, lo = _pair(true, lower)
    _, hi = _pair(true, upper)
    if (lo > hi).any():
        raise ValueError("every lower bound must be at most its upper bound")
    return float(np.mean((lo <= t) & (t <= hi)))


def mean_width(lower: ArrayLike, upper: ArrayLike) -> float:
    """Mean width of the intervals."""
    lo, hi = _pair(lower, upper)
    return float(np.mean(hi - lo))
