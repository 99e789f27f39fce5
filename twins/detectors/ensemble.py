"""Combining a machine's detectors, giving what they find a severity, de-duplicating.

For every scan, each sensor's score is the largest score any per-sensor detector gives
it, and the machine-level score is the largest multivariate score. An anomaly is
*reported* when a sensor (or the machine) crosses the alarm (0.5) or its severity rises
while it stays in alarm; it is not reported again while the condition lasts at the same or
a lower severity, and the condition ends when the scores fall back below the alarm. So one
stuck sensor gives one finding, not one per reading, and several detectors firing on the
same sensor at the same time give one finding that names them all. A multivariate finding
whose main contributing sensor already has a finding in the same scan is folded into it.

**Severity means something** (alarm management after ISA-18.2 / EEMUA 191):

* *Limits* (:class:`~twins.detectors.rules.ThresholdRule`): an on-delay of one reading,
  then severity from the score: a limit alarm is raised when a sensor's second reading
  in a row is beyond the limit, at the lesser of the two readings' severities, so a
  sensor that stays beyond its critical limit is critical from its second reading on. A
  single reading beyond a limit (a glitch at any scan rate, not only one faster than the
  rate-of-change rule allows) raises nothing from the limits. A reading that *jumped*
  faster than the sensor can plausibly move (the rate-of-change rule is in alarm on it)
  is held at low until a reading confirms it.
* *Data quality* (spikes, flatlines, stale sensors): low. The data, not the machine, is
  in question.
* *Learned detectors* (statistical, multivariate): count from their second reading in
  alarm in a row (an on-delay: one noisy reading at the control limit is not a
  condition), start low, and rise one level for
  **persistence** (in alarm for ``persist_s`` of data time) and one for
  **corroboration** (another sensor of the machine in alarm, the machine-level monitor in
  alarm, or another detector on the same sensor): at most high. A statistical anomaly is
  never critical.

>>> import numpy as np
>>> from twins.detectors.rules import ThresholdRule, FlatlineRule
>>> ds = DetectorSet([ThresholdRule(1, normal_high=[80.0], critical_high=[100.0]),
...                   FlatlineRule(1, stuck_after=[3])])
>>> readings = [70, 90, 90, 95, 85]
>>> verdicts = [ds.process(Scan.from_values([v], float(i))) for i, v in enumerate(readings)]
>>> [[(f.detector, f.severity.value) for f in v.findings] for v in verdicts]
[[], [], [('threshold', 'medium')], [], []]
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


_LOW, _MEDIUM, _HIGH = 1, 2, 3
_DATA_QUALITY = (AnomalyType.SPIKE, AnomalyType.FLATLINE, AnomalyType.STALE)


class DetectorSet:
    """Runs every detector on every scan, grades and de-duplicates their findings.

    Detectors whose ``normalised`` flag is set (the learned ones) are shown the
    regime-normalised scan when the twin passes one (see :meth:`process`).
    """

    def __init__(self, detectors: Sequence[SensorDetector], persist_s: float = 3600.0) -> None:
        if not detectors:
            raise ValueError("detectors must not be empty")
        sizes = {d.n_sensors for d in detectors}
        if len(sizes) != 1:
            raise ValueError(f"detectors watch different numbers of sensors: {sorted(sizes)}")
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        if not persist_s >= 0:
            raise ValueError(f"persist_s must be >= 0, got {persist_s}")
        self.detectors = list(detectors)
        self.n_sensors = sizes.pop()
        self.persist_s = float(persist_s)
        self._sensor_level = [i for i, d in enumerate(detectors) if not d.machine_level]
        self._machine_level = [i for i, d in enumerate(detectors) if d.machine_level]
        level = [detectors[i] for i in self._sensor_level]
        # Rows of the stacked per-sensor scores, by what a finding of theirs means.
        self._rule_rows = [
            j for j, d in enumerate(level) if d.anomaly_type is AnomalyType.THRESHOLD
        ]
        self._quality_rows = [j for j, d in enumerate(level) if d.anomaly_type in _DATA_QUALITY]
        self._spike_rows = [j for j, d in enumerate(level) if d.anomaly_type is AnomalyType.SPIKE]
        self._learned_rows = [
            j
            for j, d in enumerate(level)
            if d.anomaly_type is not AnomalyType.THRESHOLD and d.anomaly_type not in _DATA_QUALITY
        ]
        self._open = np.zeros(self.n_sensors + 1, dtype=np.int64)  # last slot: machine
        self._since = np.full(self.n_sensors + 1, np.nan)  # learned alarm began (data time)
        self._armed = np.zeros(self.n_sensors + 1, dtype=bool)  # in alarm at the last reading
        self._limit_rank = np.zeros(self.n_sensors, dtype=np.int64)  # limits, last reading

    def process(self, scan: Scan, normalised: Scan | None = None) -> Verdict:
        """Score the scan with every detector, then let each learn from it. The learned
        detectors see ``normalised`` (the scan against its operating regime) if given."""
        self.detectors[0]._check(scan)  # all watch the same sensors: check once
        if normalised is not None:
            self.detectors[0]._check(normalised)
        seen = [
            normalised if (normalised is not None and d.normalised) else scan
            for d in self.detectors
        ]
        scores = [d.score_checked(x) for d, x in zip(self.detectors, seen, strict=True)]
        s = self.n_sensors
        if self._sensor_level:
            stacked = np.array([scores[i] for i in self._sensor_level], dtype=np.float64)
            sensor_scores = stacked.max(axis=0)
        else:
            stacked = np.zeros((0, s))
            sensor_scores = np.zeros(s)
        machine_score = max((float(scores[i].max()) for i in self._machine_level), default=0.0)
        findings: list[Finding] = []
        if sensor_scores.max() < ALARM and machine_score < ALARM:  # False for NaN
            self._all_clear(scan)
        else:
            ranks, category = self._grade(stacked, machine_score, scan.now_s, scan.present)
            new = np.flatnonzero(ranks > self._open)
            # Open conditions keep their highest severity; below the alarm they close.
            self._open = np.where(ranks > 0, np.maximum(self._open, ranks), 0)
            if new.size:
                findings = self._findings(scan, seen, new, ranks, category, scores, stacked)
        for d, x, sc in zip(self.detectors, seen, scores, strict=True):
            d.learn_scored(x, sc)
        return Verdict(sensor_scores, machine_score, findings)

    def _all_clear(self, scan: Scan) -> None:
        """What grading a scan does when no score reaches the alarm (most scans): every
        rank is 0 (so every open condition closes and none opens), no learned alarm is
        on, and the on-delay forgets the alarms of the sensors (and, when any reported,
        the machine) that reported."""
        n = self.n_sensors + 1
        self._open = np.zeros(n, dtype=np.int64)
        self._since = np.full(n, np.nan)
        if self._limit_rank.any():
            self._limit_rank = np.where(scan.present, 0, self._limit_rank)
        if scan.complete:
            self._armed = np.zeros(n, dtype=bool)
        elif self._armed.any():
            present = scan.present
            self._armed = np.where(np.append(present, present.any()), False, self._armed)

    def _grade(
        self, stacked: np.ndarray, machine_score: float, now_s: float, present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Severity rank (0 none .. 4 critical) of every sensor and the machine, and which
        kind of detector set it (0 limits, 1 data quality, 2 learned)."""
        s = self.n_sensors

        def top(rows: list[int]) -> np.ndarray:
            return stacked[rows].max(axis=0) if rows else np.zeros(s)

        rule_rank = np.searchsorted(_SEVERITY_EDGES, top(self._rule_rows), "right")
        # On-delay of one reading: a limit's severity is the lesser of the sensor's last two
        # readings'.
        confirmed = np.minimum(rule_rank, self._limit_rank)
        self._limit_rank = np.where(present, rule_rank, self._limit_rank)
        rule_rank = np.where(present, confirmed, 0)
        jumped = np.zeros(s, dtype=bool)
        if self._spike_rows:  # an implausible jump beyond a limit waits for confirmation
            jumped = top(self._spike_rows) >= ALARM
            rule_rank = np.where(jumped, np.minimum(rule_rank, _LOW), rule_rank)
        quality_rank = np.minimum(
            np.searchsorted(_SEVERITY_EDGES, top(self._quality_rows), "right"), _LOW
        )
        learned = stacked[self._learned_rows] >= ALARM if self._learned_rows else None
        raw = np.zeros(s + 1, dtype=bool)
        if learned is not None:
            raw[:s] = learned.any(axis=0)
        raw[s] = machine_score >= ALARM
        # On-delay: a learned detector's alarm counts from its second reading in a row
        # (of that sensor; of the machine for the machine level).
        alarm = raw & self._armed
        self._armed = np.where(np.append(present, present.any()), raw, self._armed)
        self._since = np.where(alarm, np.where(np.isnan(self._since), now_s, self._since), np.nan)
        persisted = alarm & (now_s - self._since >= self.persist_s)
        # A reading that jumped implausibly is suspect as a whole: it corroborates nothing.
        in_alarm = (alarm[:s] | (rule_rank > 0)) & ~jumped
        others = int(in_alarm.sum())
        corroborated = np.zeros(s + 1, dtype=bool)
        corroborated[:s] = (others - in_alarm >= 1) | alarm[s] | ((rule_rank > 0) & ~jumped)
        if learned is not None:
            corroborated[:s] |= learned.sum(axis=0) >= 2
        corroborated[s] = others >= 1
        learned_rank = np.where(alarm, _LOW + persisted + corroborated, 0)
        learned_rank[:s] = np.where(jumped, np.minimum(learned_rank[:s], _LOW), learned_rank[:s])
        ranks = np.maximum(learned_rank, np.append(np.maximum(rule_rank, quality_rank), 0))
        # Who speaks for the finding: a jump before the limit it crossed, limits before
        # learned detectors.
        r, q = np.append(rule_rank, 0), np.append(quality_rank, 0)
        glitch = np.append(jumped, False) & (q == ranks)
        category = np.where(glitch, 1, np.where(r == ranks, 0, np.where(q == ranks, 1, 2)))
        category[s] = 2
        return ranks, category

    def _findings(
        self,
        scan: Scan,
        seen: list[Scan],
        new: np.ndarray,
        ranks: np.ndarray,
        category: np.ndarray,
        scores: list[np.ndarray],
        stacked: np.ndarray,
    ) -> list[Finding]:
        out: list[Finding] = []
        rows_of = (self._rule_rows, self._quality_rows, self._learned_rows)
        for slot in new.tolist():
            if slot < self.n_sensors:
                column = stacked[:, slot]
                rows = rows_of[int(category[slot])] or list(range(len(column)))
                best_row = max(rows, key=lambda j: column[j])
                det_i = self._sensor_level[best_row]
                best = self.detectors[det_i]
                also = tuple(
                    self.detectors[self._sensor_level[j]].name
                    for j in np.argsort(column)[::-1].tolist()
                    if j != best_row and column[j] >= ALARM
                )
                out.append(
                    Finding(
                        sensor=slot,
                        detector=best.name,
                        anomaly_type=best.anomaly_type,
                        score=float(column[best_row]),
                        severity=_SEVERITIES[int(ranks[slot])],  # type: ignore[arg-type]
                        expected=float(best.expected(seen[det_i])[slot]),
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
                    score=float(share.max()),
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

    def tick(
        self,
        now_s: float,
        state: np.ndarray,
        running: bool = True,
        normalised: Scan | None = None,
    ) -> Verdict:
        """Judge a moment with no new readings (finds stale sensors); ``normalised`` as in
        :meth:`process`."""
        empty = np.full(self.n_sensors, np.nan)
        return self.process(Scan(empty, empty, state, now_s, running), normalised)

    def clone(self) -> DetectorSet:
        return copy.deepcopy(self)

    def state_dict(self) -> StateDict:
        out: StateDict = {
            "open": self._open,
            "since": self._since,
            "armed": self._armed,
            "limit_rank": self._limit_rank,
        }
        for d in self.detectors:
            out.update(prefixed(d.name, d.state_dict()))
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._open = np.asarray(state["open"], dtype=np.int64).copy()
        self._since = np.asarray(state["since"], dtype=np.float64).copy()
        self._armed = np.asarray(state["armed"], dtype=bool).copy()
        self._limit_rank = np.asarray(state["limit_rank"], dtype=np.int64).copy()
        for d in self.detectors:
            d.load_state_dict(section(d.name, state))
