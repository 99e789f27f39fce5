"""NAB scoring: how the Numenta Anomaly Benchmark values a stream of detections.

NAB (Lavin & Ahmad 2015; Ahmad et al. 2017; scoring code of NAB v1.1, ``nab/sweeper.py``
and ``nab/runner.py``) labels each series with *anomaly windows* (row ranges around each
known anomaly) and rewards a detector for raising an alarm early inside a window, while
charging it for alarms elsewhere. For one file and a *profile* (weights ``tp_weight``,
``fp_weight``, ``fn_weight``):

* The first ``min(floor(0.15 * rows), 750)`` rows are a **probationary period**: no row
  there is scored (a detector may learn), and a window lying wholly inside it is ignored.
* Every row ``i`` has a *sweep score*, what a detection on that row would be worth, built
  from the scaled sigmoid ``σ(p) = 2 / (1 + exp(5 p)) - 1`` (and ``σ(p) = -1`` for
  ``p > 3``):

  - inside a window ``[a, b]`` (``w = b - a + 1`` rows): ``p = -(b - i + 1) / w`` (``-1``
    on the first row, ``-1/w`` on the last) and the score is ``tp_weight * σ(p) / σ(-1)``
    (exactly ``tp_weight`` for a detection on the window's first row, about 0 at its end);
  - outside every window, after a window ending at row ``b`` (the nearest before ``i``, of
    width ``w``): ``p = (i - b) / (w - 1)`` and the score is ``fp_weight * σ(p)``, close to
    0 just after the window and ``-fp_weight`` from three window widths on;
  - before the first window: ``-fp_weight``.

* A window counts the best (earliest) detection inside it, or ``-fn_weight`` if it has
  none; every detection outside windows adds its own (negative) score. A file's **raw
  score** is the sum.
* **Normalised score**, over all files together: ``100 * (raw - null) / (perfect -
  null)`` where ``null = -fn_weight * (windows not wholly probationary)`` is what a detector
  that never alarms gets and ``perfect = tp_weight * windows``. So 0 is the null detector
  and 100 a detector that fires exactly on the first row of every window and nowhere else.

A *detection* is a row flagged by the detector: for published detectors, a row whose
``anomaly_score`` is at or above the detector's threshold for that profile (NAB's rule).

>>> windows = [(100, 109)]  # rows 100..109 of a 200-row file (probation: 30 rows)
>>> hit = np.zeros(200, dtype=bool); hit[100] = True  # on the first row of the window
>>> score = score_file(hit, windows, STANDARD)
>>> round(score.raw, 6), score.normalised
(1.0, 100.0)
>>> hit[50] = True  # and a false alarm before the window
>>> round(score_file(hit, windows, STANDARD).raw, 2)
0.89
>>> score_file(np.zeros(200, dtype=bool), windows, STANDARD).normalised
0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Windows = Sequence[tuple[int, int]] | np.ndarray
"""Anomaly windows as (first row, last row) pairs, or an ``(n, 2)`` array of them."""

PROBATION_SHARE = 0.15
"""Share of each file's rows in the probationary period (capped at
``PROBATION_SHARE * 5000`` rows, as NAB does)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A NAB scoring profile: the weights of a detected window, a false alarm and a missed
    window (NAB's ``config/profiles.json`` cost matrix)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float

    def __post_init__(self) -> None:
        for field in ("tp_weight", "fp_weight", "fn_weight"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field} must be a finite number >= 0, got {value}")
        if self.tp_weight == 0 and self.fn_weight == 0:
            raise ValueError("tp_weight and fn_weight must not both be 0")

    @classmethod
    def from_cost_matrix(cls, name: str, cost: dict[str, Any]) -> Profile:
        """A profile from one entry of NAB's ``profiles.json`` (its ``CostMatrix``)."""
        try:
            return cls(
                name, float(cost["tpWeight"]), float(cost["fpWeight"]), float(cost["fnWeight"])
            )
        except KeyError as exc:
            raise ValueError(f"profile {name!r}: cost matrix lacks {exc.args[0]!r}") from None


STANDARD = Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
LOW_FP = Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0)
LOW_FN = Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
PROFILES = (STANDARD, LOW_FP, LOW_FN)
"""NAB v1.1's three profiles (as in its ``config/profiles.json``)."""


def scaled_sigmoid(position: Any) -> np.ndarray:
    """NAB's ``scaledSigmoid``: ``2 / (1 + exp(5 p)) - 1``, and -1 beyond ``p = 3``."""
    p = np.asarray(position, dtype=np.float64)
    return np.where(p > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(p, 3.0))) - 1.0)


_MAX_TP = float(scaled_sigmoid(-1.0))


def probationary_rows(n_rows: int, share: float = PROBATION_SHARE) -> int:
    """How many leading rows of an ``n_rows`` file are not scored."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    return int(min(math.floor(share * n_rows), share * 5000))


def check_windows(windows: Windows, n_rows: int) -> np.ndarray:
    """Windows as an ``(n, 2)`` array of first and last row, checked: inside the file, in
    order and not overlapping."""
    w = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    if w.size and (
        (w[:, 0] < 0).any()
        or (w[:, 1] >= n_rows).any()
        or (w[:, 1] < w[:, 0]).any()
        or (w[1:, 0] <= w[:-1, 1]).any()
    ):
        raise ValueError(
            f"windows must be ordered, non-overlapping [first, last] row pairs within "
            f"0..{n_rows - 1}, got {w.tolist()}"
        )
    return w


def row_scores(n_rows: int, windows: Windows, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """What a detection on each row is worth (NAB's per-row *sweep score*), and the window
    each row lies in (-1: none). Probationary rows get their value too (NAB writes it in
    its results files); :func:`score_file` does not count them."""
    w = check_windows(windows, n_rows)
    rows = np.arange(n_rows)
    window_of = np.full(n_rows, -1, dtype=np.int64)
    scores = np.full(n_rows, -profile.fp_weight)  # before any window
    for k, (first, last) in enumerate(w.tolist()):
        width = last - first + 1
        inside = rows[first : last + 1]
        window_of[first : last + 1] = k
        scores[first : last + 1] = (
            profile.tp_weight * scaled_sigmoid(-(last - inside + 1) / width) / _MAX_TP
        )
        end = int(w[k + 1, 0]) if k + 1 < len(w) else n_rows
        after = rows[last + 1 : end]
        # NAB divides by (width - 1); a one-row window would divide by zero there.
        scores[last + 1 : end] = profile.fp_weight * scaled_sigmoid(
            (after - last) / max(width - 1, 1)
        )
    return scores, window_of


@dataclass(frozen=True, slots=True)
class NabScore:
    """NAB's score of one file, or of several added together (one profile).

    ``raw``: the sum of window and false-alarm scores; ``windows``: labelled windows;
    ``scored_windows``: those not wholly in the probationary period; ``detected``: windows
    with a detection; ``false_alarms``: detections outside windows (after probation).
    """

    profile: Profile
    raw: float = 0.0
    windows: int = 0
    scored_windows: int = 0
    detected: int = 0
    false_alarms: int = 0

    @property
    def missed(self) -> int:
        return self.scored_windows - self.detected

    @property
    def null(self) -> float:
        """The raw score of a detector that never alarms."""
        return -self.profile.fn_weight * self.scored_windows

    @property
    def perfect(self) -> float:
        """The raw score of a detector that alarms on the first row of every window only."""
        return self.profile.tp_weight * self.windows

    @property
    def normalised(self) -> float:
        """``100 * (raw - null) / (perfect - null)``; NaN when there is no window at all."""
        span = self.perfect - self.null
        return 100.0 * (self.raw - self.null) / span if span > 0 else math.nan

    def __add__(self, other: NabScore) -> NabScore:
        if other.profile != self.profile:
            raise ValueError(
                f"cannot add scores of profiles {self.profile.name!r} and {other.profile.name!r}"
            )
        return NabScore(
            self.profile,
            self.raw + other.raw,
            self.windows + other.windows,
            self.scored_windows + other.scored_windows,
            self.detected + other.detected,
            self.false_alarms + other.false_alarms,
        )


def score_file(
    detections: Any,
    windows: Windows,
    profile: Profile,
    probation: int | None = None,
) -> NabScore:
    """NAB's score of one file's ``detections`` (one boolean per row) given its labelled
    ``windows`` (first and last row of each). ``probation``: rows not scored (default
    :func:`probationary_rows`)."""
    hit = np.asarray(detections, dtype=bool)
    if hit.ndim != 1:
        raise ValueError(f"detections must be 1-D (one per row), got shape {hit.shape}")
    n = len(hit)
    skip = probationary_rows(n) if probation is None else int(probation)
    if not 0 <= skip <= n:
        raise ValueError(f"probation must be in 0..{n}, got {probation}")
    worth, window_of = row_scores(n, windows, profile)
    scored = np.arange(n) >= skip
    w = check_windows(windows, n)
    live = w[:, 1] >= skip if w.size else np.zeros(0, dtype=bool)  # not wholly probationary
    counted = hit & scored
    false_alarms = counted & (window_of < 0)
    raw = float(worth[false_alarms].sum())
    detected = 0
    for k in np.flatnonzero(live).tolist():
        inside = np.flatnonzero(counted & (window_of == k))
        if inside.size:
            raw += float(worth[inside].max())
            detected += 1
        else:
            raw -= profile.fn_weight
    return NabScore(
        profile,
        raw=raw,
        windows=len(w),
        scored_windows=int(live.sum()),
        detected=detected,
        false_alarms=int(false_alarms.sum()),
    )
