"""Point-wise anomaly-detection scores with the definitions of the SKAB benchmark.

Every scored reading (row) is one binary decision: flagged as anomalous or not, against
its label. Over all scored rows:

* **F1** of the anomaly class: ``2 TP / (2 TP + FP + FN)``;
* **false-alarm rate** ``FAR = FP / (FP + TN)``: the share of normal rows flagged;
* **missed-alarm rate** ``MAR = FN / (FN + TP)``: the share of anomalous rows missed.

Scores over several recordings add the counts first and take the ratios of the sums (as
SKAB's evaluation does), which is not the mean of the per-recording ratios. A ratio whose
denominator is 0 (no anomalous row and none flagged, say) is reported as 0.

>>> c = AlarmCounts.of([True, True, False, False, True], [True, False, False, True, True])
>>> c
AlarmCounts(tp=2, fp=1, fn=1, tn=1)
>>> round(c.f1, 3), c.false_alarm_rate, round(c.missed_alarm_rate, 3)
(0.667, 0.5, 0.333)
>>> (c + AlarmCounts(tp=0, fp=0, fn=0, tn=3)).false_alarm_rate
0.2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class AlarmCounts:
    """Counts of flagged/unflagged rows against their labels."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, flagged: Any, anomalous: Any) -> AlarmCounts:
        """Counts for rows ``flagged`` by a detector whose true labels are ``anomalous``
        (two equally long sequences of booleans)."""
        p = np.asarray(flagged, dtype=bool)
        y = np.asarray(anomalous, dtype=bool)
        if p.shape != y.shape or p.ndim != 1:
            raise ValueError(
                f"flagged and anomalous must be equally long 1-D sequences, "
                f"got {p.shape} and {y.shape}"
            )
        return cls(
            tp=int((p & y).sum()),
            fp=int((p & ~y).sum()),
            fn=int((~p & y).sum()),
            tn=int((~p & ~y).sum()),
        )

    def __add__(self, other: AlarmCounts) -> AlarmCounts:
        return AlarmCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @property
    def rows(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def f1(self) -> float:
        """F1 of the anomaly class (0 when there is nothing to find and nothing flagged)."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def false_alarm_rate(self) -> float:
        """FP / (FP + TN): the share of normal rows flagged."""
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def missed_alarm_rate(self) -> float:
        """FN / (FN + TP): the share of anomalous rows not flagged."""
        return _ratio(self.fn, self.fn + self.tp)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0
