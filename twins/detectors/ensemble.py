"""Combining a machine's detectors and de-duplicating what they find.

For every scan, each sensor's score is the largest score any per-sensor detector gives
it, and the machine-level score is the largest multivariate score. An anomaly is
*reported* when a sensor (or the machine) crosses the alarm (0.5) or its severity rises
while it stays in alarm; it is not reported again while the condition lasts at the same or
a lower severity, and the condition ends when the scores fall back below the alarm. So one
stuck sensor gives one finding, not one per reading, and several detectors firing on the
same sensor at the same time give one finding that names them all. A multivariate finding
whose main contributing sensor already has a finding in the same scan is folded into it.

>>> import numpy as np
>>> from twins.detectors.rules import ThresholdRule, FlatlineRule
>>> ds = DetectorSet([ThresholdRule(1, normal_high=[80.0], critical_high=[100.0]),
...                   FlatlineRule(1, stuck_after=[3])])
>>> readings = [70, 90, 90, 95, 85]
>>> verdicts = [ds.process(Scan.from_values([v], float(i))) for i, v in enumerate(readings)]
>>> [[(f.detector, f.severity.value) for f in v.findings] for v in verdicts]
[[], [('threshold', 'medium')], [], [('threshold', 'high')], []]
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from schemas.anomaly import AnomalyType, Severity
from twins.detectors.base import ALARM, Scan, SensorDetector
from twins.snapshot import StateDict, prefixed, section

_SEVERITY_EDGES = np.array([0.5, 0.65, 0.8, 0.95])
_SEVERITIES = (None, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)


@dataclass(frozen=True, slots=True)
class Finding:
    """A newly reported anomaly. ``sensor`` is -1 for a machine-level finding."""

    sensor: int
    detector: str
    anomaly_type: AnomalyType
    score: float
    severity: Severity
    expected: float
    also: tuple[str, ...] = ()
    contributing: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the detectors made of one scan."""

    sensor_scores: np.ndarray
    machine_score: float
    findings: list[Finding] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The scan's overall anomaly score."""
        return max(float(self.sensor_scores.max(initial=0.0)), self.machine_score)


class DetectorSet:
    """Runs every detector on every scan, combines and de-duplicates their findings."""

    def __init__(self, detectors: Sequence[SensorDetector]) -> None:
        if not detectors:
            raise ValueError("detectors must not be empty")
        sizes = {d.n_sensors for d in detectors}
        if len(sizes) != 1:
            raise ValueError(f"detectors watch different numbers of sensors: {sorted(sizes)}")
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        self.detectors = list(detectors)
        self.n_sensors = sizes.pop()
        self._sensor_level = [i for i, d in enumerate(detectors) if not d.machine_level]
        self._machine_level = [i for i, d in enumerate(detectors) if d.machine_level]
        self._open = np.zeros(self.n_sensors + 1, dtype=np.int64)  # last slot: machine

    def process(self, scan: Scan) -> Verdict:
        """Score the scan with every detector, then let each learn from it."""
        self.detectors[0]._check(scan)  # all watch the same sensors: check once
        scores = [d.score_checked(scan) for d in self.detectors]
        s = self.n_sensors
        if self._sensor_level:
            stacked = np.stack([scores[i] for i in self._sensor_level])
            sensor_scores = stacked.max(axis=0)
        else:
            stacked = np.zeros((0, s))
            sensor_scores = np.zeros(s)
        machine_score = max((float(scores[i].max()) for i in self._machine_level), default=0.0)
        ranks = np.searchsorted(_SEVERITY_EDGES, np.append(sensor_scores, machine_score), "right")
        new = np.flatnonzero(ranks > self._open)
        # Open conditions keep their highest severity; below the alarm they close.
        self._open = np.where(ranks > 0, np.maximum(self._open, ranks), 0)
        findings: list[Finding] = []
        if new.size:
            findings = self._findings(scan, new, ranks, scores, stacked, machine_score)
        for d, sc in zip(self.detectors, scores, strict=True):
            d.learn_scored(scan, sc)
        return Verdict(sensor_scores, machine_score, findings)

    def _findings(
        self,
        scan: Scan,
        new: np.ndarray,
        ranks: np.ndarray,
        scores: list[np.ndarray],
        stacked: np.ndarray,
        machine_score: float,
    ) -> list[Finding]:
        out: list[Finding] = []
        for slot in new.tolist():
            if slot < self.n_sensors:
                column = stacked[:, slot]
                order = np.argsort(column)[::-1]
                best = self.detectors[self._sensor_level[int(order[0])]]
                also = tuple(
                    self.detectors[self._sensor_level[int(j)]].name
                    for j in order[1:]
                    if column[j] >= ALARM
                )
                out.append(
                    Finding(
                        sensor=slot,
                        detector=best.name,
                        anomaly_type=best.anomaly_type,
                        score=float(column[order[0]]),
                        severity=_SEVERITIES[int(ranks[slot])],  # type: ignore[arg-type]
                        expected=float(best.expected(scan)[slot]),
                        also=also,
                    )
                )
                continue
            det_i = max(self._machine_level, key=lambda i: float(scores[i].max()))
            det = self.detectors[det_i]
            share = scores[det_i]
            top = np.argsort(share)[::-1][:3]
            same = next((i for i, f in enumerate(out) if f.sensor == int(top[0])), None)
            if same is not None:  # folded into that sensor's finding of this scan
                out[same] = replace(out[same], also=(*out[same].also, det.name))
                continue
            out.append(
                Finding(
                    sensor=-1,
                    detector=det.name,
                    anomaly_type=det.anomaly_type,
                    score=machine_score,
                    severity=_SEVERITIES[int(ranks[slot])],  # type: ignore[arg-type]
                    expected=float("nan"),
                    contributing=tuple(int(i) for i in top if share[i] > 0),
                )
            )
        return out

    @property
    def open_severity(self) -> np.ndarray:
        """Severity rank (0 none .. 4 critical) of each sensor's open condition; the last
        entry is the machine-level one."""
        return self._open

    def tick(self, now_s: float, state: np.ndarray, running: bool = True) -> Verdict:
        """Judge a moment with no new readings (finds stale sensors)."""
        empty = np.full(self.n_sensors, np.nan)
        return self.process(Scan(empty, empty, state, now_s, running))

    def clone(self) -> DetectorSet:
        return copy.deepcopy(self)

    def state_dict(self) -> StateDict:
        out: StateDict = {"open": self._open}
        for d in self.detectors:
            out.update(prefixed(d.name, d.state_dict()))
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._open = np.asarray(state["open"], dtype=np.int64).copy()
        for d in self.detectors:
            d.load_state_dict(section(d.name, state))
