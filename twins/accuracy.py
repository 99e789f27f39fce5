"""Live accuracy of RUL predictions: did what the model said come true on this plant?

Every stored prediction is paired with how the machine's life it was made in ended: a
**failure** (a completed corrective repair naming a failure mode) at a known time, or a
**censoring** (a preventive or predictive repair, or the life still running) after which
nothing is known. From the pairs, per model version and machine type:

* **interval coverage**: among predictions made in lives that failed, the share whose
  true remaining life fell inside the predicted interval (a 90 % interval should hold
  about 90 %);
* **median error**: the median of ``|median - true remaining life|`` over the same;
* **Brier score and calibration of P(fail within h)**: over the predictions whose outcome
  at ``h`` is known (the machine failed within ``h``, or was still running ``h`` later);
  calibration bins compare the mean predicted probability with the observed rate;
* **concordance** (Harrell's C): does a shorter predicted median go with an earlier
  failure, censoring accounted for (0.5 is chance);
* **warning a week ahead**: for each failure, P(fail within 7 days) of the last prediction
  made at least 7 days before it.

Pure: the rows come from :mod:`store.accuracy`.

>>> life = Life("P-1", start_ms=0, end_ms=1000 * 3_600_000, failed=True, failure_mode="seal_leak")
>>> p = Prediction("P-1", "pump", "v1", predicted_at_ms=900 * 3_600_000, median_hours=80,
...     lower_hours=40, upper_hours=200, failure_probability={168: 0.9})
>>> [s.remaining_hours for s in pair([p], [life])]
[100.0]
>>> a = summarise(pair([p], [life]))[0]
>>> (a.interval_coverage, a.median_abs_error_hours, round(a.brier[168], 6))
(1.0, 20.0, 0.01)
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

H_MS = 3_600_000
WEEK_H = 168
CALIBRATION_EDGES: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
"""Bins of predicted probability for the calibration table."""


@dataclass(frozen=True)
class Life:
    """One life of a machine: from ``start_ms`` to ``end_ms`` (a failure or a censoring)."""

    machine_id: str
    start_ms: int
    end_ms: int
    failed: bool
    failure_mode: str | None = None

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(
                f"life of {self.machine_id}: end_ms ({self.end_ms}) is before start_ms "
                f"({self.start_ms})"
            )


@dataclass(frozen=True)
class Prediction:
    """What a stored RUL prediction said (``failure_probability``: horizon h → P)."""

    machine_id: str
    machine_type: str
    model_version: str
    predicted_at_ms: int
    median_hours: float
    lower_hours: float
    upper_hours: float
    failure_probability: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    """A prediction with the outcome of its life: ``remaining_hours`` from the prediction
    to the failure (``failed``) or to the end of observation (censored)."""

    prediction: Prediction
    remaining_hours: float
    failed: bool

    def outcome_within(self, hours: float) -> bool | None:
        """Did the machine fail within ``hours`` of the prediction (None: not known)."""
        if self.failed:
            return self.remaining_hours <= hours
        return False if self.remaining_hours > hours else None


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    count: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True)
class WeekAheadWarning:
    machine_id: str
    failed_at_ms: int
    p_fail_7d: float | None  # None: no prediction a week or more before the failure


@dataclass(frozen=True)
class Accuracy:
    """How one model version did on one machine type."""

    model_version: str
    machine_type: str
    predictions: int
    failures: int  # lives that ended in a failure and had a prediction
    interval_coverage: float | None  # None without a failed life
    median_abs_error_hours: float | None
    concordance: float | None  # None without a comparable pair
    brier: dict[int, float]  # horizon → Brier score over known outcomes
    known_outcomes: dict[int, int]  # horizon → predictions whose outcome at it is known
    calibration: dict[int, list[CalibrationBin]]
    week_ahead: list[WeekAheadWarning]


def pair(predictions: Iterable[Prediction], lives: Iterable[Life]) -> list[Scored]:
    """Each prediction with the life it was made in (``start <= at < end``); predictions
    made outside every known life (or at its very end) have no outcome and are left out."""
    by_machine: dict[str, list[Life]] = defaultdict(list)
    for life in lives:
        by_machine[life.machine_id].append(life)
    out = []
    for p in predictions:
        for life in by_machine.get(p.machine_id, ()):
            if life.start_ms <= p.predicted_at_ms < life.end_ms:
                remaining = (life.end_ms - p.predicted_at_ms) / H_MS
                out.append(Scored(p, remaining, life.failed))
                break
    return out


def concordance(scored: Sequence[Scored]) -> float | None:
    """Harrell's C of predicted medians against outcomes (None: no comparable pair).

    A pair is comparable when the one with the shorter observed time failed; it is
    concordant when that one also had the shorter predicted median (ties count half).
    lifelines computes it in O(n log n).
    """
    from lifelines.utils import concordance_index

    if not any(s.failed for s in scored):
        return None
    try:
        return float(
            concordance_index(
                [s.remaining_hours for s in scored],
                [s.prediction.median_hours for s in scored],
                [s.failed for s in scored],
            )
        )
    except ZeroDivisionError:  # lifelines: no admissible pair
        return None


def _calibration(probs: np.ndarray, observed: np.ndarray) -> list[CalibrationBin]:
    bins = []
    edges = CALIBRATION_EDGES
    for k, (low, high) in enumerate(itertools.pairwise(edges)):
        last = k == len(edges) - 2
        inside = (probs >= low) & ((probs <= high) if last else (probs < high))
        n = int(inside.sum())
        if n:
            bins.append(
                CalibrationBin(
                    low, high, n, float(probs[inside].mean()), float(observed[inside].mean())
                )
            )
    return bins


def _week_ahead(group: Sequence[Scored]) -> list[WeekAheadWarning]:
    """For each failure, P(fail within 7 d) of the last prediction a week or more before."""
    failures: dict[tuple[str, int], list[Scored]] = defaultdict(list)
    for s in group:
        if s.failed:
            at = s.prediction.predicted_at_ms + round(s.remaining_hours * H_MS)
            failures[(s.prediction.machine_id, at)].append(s)
    out = []
    for (machine, at), made in sorted(failures.items()):
        early = [s for s in made if s.remaining_hours >= WEEK_H]
        last = max(early, key=lambda s: s.prediction.predicted_at_ms, default=None)
        p = None if last is None else last.prediction.failure_probability.get(WEEK_H)
        out.append(WeekAheadWarning(machine, at, p))
    return out


def summarise(scored: Iterable[Scored]) -> list[Accuracy]:
    """Accuracy per (model version, machine type), in that order."""
    groups: dict[tuple[str, str], list[Scored]] = defaultdict(list)
    for s in scored:
        groups[(s.prediction.model_version, s.prediction.machine_type)].append(s)
    out = []
    for (version, mtype), group in sorted(groups.items()):
        failed = [s for s in group if s.failed]
        inside = [
            s.prediction.lower_hours <= s.remaining_hours <= s.prediction.upper_hours
            for s in failed
        ]
        errors = [abs(s.prediction.median_hours - s.remaining_hours) for s in failed]
        horizons = sorted({h for s in group for h in s.prediction.failure_probability})
        brier: dict[int, float] = {}
        known: dict[int, int] = {}
        calibration: dict[int, list[CalibrationBin]] = {}
        for h in horizons:
            rows = [
                (s.prediction.failure_probability[h], outcome)
                for s in group
                if h in s.prediction.failure_probability
                and (outcome := s.outcome_within(h)) is not None
            ]
            known[h] = len(rows)
            if rows:
                probs = np.array([p for p, _ in rows], dtype=np.float64)
                observed = np.array([o for _, o in rows], dtype=np.float64)
                brier[h] = float(np.mean((probs - observed) ** 2))
                calibration[h] = _calibration(probs, observed)
        week = _week_ahead(group)
        out.append(
            Accuracy(
                model_version=version,
                machine_type=mtype,
                predictions=len(group),
                failures=len(week),
                interval_coverage=float(np.mean(inside)) if inside else None,
                median_abs_error_hours=float(np.median(errors)) if errors else None,
                concordance=concordance(group),
                brier=brier,
                known_outcomes=known,
                calibration=calibration,
                week_ahead=week,
            )
        )
    return out


def describe(a: Accuracy) -> str:
    """One line for a terminal."""

    def fmt(v: float | None, spec: str) -> str:
        return "–" if v is None or math.isnan(v) else format(v, spec)

    warned = [w.p_fail_7d for w in a.week_ahead if w.p_fail_7d is not None]
    return (
        f"{a.model_version} on {a.machine_type}: {a.predictions} predictions, "
        f"{a.failures} failures; interval coverage {fmt(a.interval_coverage, '.0%')}, "
        f"median error {fmt(a.median_abs_error_hours, '.0f')} h, "
        f"concordance {fmt(a.concordance, '.2f')}, "
        f"Brier (7 d) {fmt(a.brier.get(WEEK_H), '.3f')} over {a.known_outcomes.get(WEEK_H, 0)}, "
        f"P(fail 7 d) a week before each failure: "
        + (", ".join(f"{p:.2f}" for p in warned) if warned else "–")
    )
