"""The alert book: conditions in, de-duplicated alerts out (pure; the clock is passed in).

Every observation (an anomaly, a RUL prediction, a twin update, a clock tick) is checked
against the plant's :class:`~schemas.alerts.AlertRule` list. A condition is identified by
(machine, rule, subject): the subject is the sensor of an anomaly or threshold (whatever
the detector: a sensor misbehaving is one problem), the failure mode of a prediction.
While an alert for it is open or acknowledged, a repeat adds to its ``count`` (and
raises its severity if the repeat is worse) instead of raising another.
Once resolved (or marked false positive), the next occurrence opens a new alert.

A critical alert nobody acknowledged escalates after the rule's (or the plant's)
``escalate_after_minutes``, then again after each further period: ``escalation_level``
counts the escalations. "No data" alerts resolve themselves when data returns; an
anomaly or threshold alert whose rule sets ``clear_after_minutes`` resolves itself (return
to normal) when its condition has not repeated for that long.

>>> from datetime import UTC, datetime, timedelta
>>> from schemas.plant import load_plant
>>> plant = load_plant("twinfleet/plants/example.yaml")
>>> book = AlertBook(plant)
>>> t0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
>>> book.last_seen["P-201"] = t0
>>> [r.alert.message for r in book.check_no_data(t0 + timedelta(minutes=11))]
['no data from P-201 for 11 min (rule no-data: 10 min)']
>>> [r.alert.count for r in book.check_no_data(t0 + timedelta(minutes=12))]
[2]
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from maintenance.errors import Conflict, NotFound
from maintenance.schedule import failure_probability
from schemas.alerts import Alert, AlertRule, AlertStatus, RuleKind
from schemas.anomaly import AnomalyRecord, Severity
from schemas.common import Quality
from schemas.maintenance_api import AlertFilter
from schemas.plant import MachineSpec, Plant
from schemas.rul import RulPrediction
from schemas.twin import TwinChanged

SYSTEM = "system"


@dataclass(frozen=True)
class Raised:
    """An alert after an observation; ``new``: first occurrence (notify), else a repeat."""

    alert: Alert
    new: bool


def alert_id(machine_id: str, rule_id: str, subject: str, occurrence: int, first: datetime) -> str:
    """The n-th alert of a condition, raised at ``first``: unique even when two are raised
    at the same instant, or when closed alerts were forgotten and the count restarted."""
    key = f"{machine_id}|{rule_id}|{subject}|{occurrence}|{first.isoformat()}"
    return "AL-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class AlertBook:
    def __init__(self, plant: Plant, alerts: Iterable[Alert] = ()):
        self.rules = list(plant.alert_rules)
        self.alerting = plant.alerting
        self.machines: dict[str, MachineSpec] = {m.id: m for m in plant.machines}
        self.alerts: dict[str, Alert] = {}
        self._open: dict[tuple[str, str, str], str] = {}
        self._occurrences: Counter[tuple[str, str, str]] = Counter()
        self.last_seen: dict[str, datetime] = {}
        """When new readings of each machine last arrived (from twin updates)."""
        self._data_ms: dict[str, int] = {}
        for a in alerts:
            self.keep(a)

    def keep(self, alert: Alert) -> Alert:
        key = (alert.machine_id, alert.rule_id, alert.subject)
        if alert.alert_id not in self.alerts:
            self._occurrences[key] += 1
        self.alerts[alert.alert_id] = alert
        if alert.status.closed:
            if self._open.get(key) == alert.alert_id:
                del self._open[key]
        else:
            self._open[key] = alert.alert_id
        return alert

    def _rules(self, machine_id: str, kind: RuleKind) -> list[AlertRule]:
        spec = self.machines.get(machine_id)
        if spec is None:
            return []
        return [r for r in self.rules if r.kind is kind and r.applies_to(machine_id, spec.type)]

    def raise_condition(
        self,
        machine_id: str,
        rule: AlertRule,
        subject: str,
        message: str,
        now: datetime,
        severity: Severity | None = None,
        value: float | None = None,
        workorder_id: str | None = None,
    ) -> Raised:
        """Open an alert for the condition, or count a repeat of the open one."""
        severity = severity or rule.severity
        key = (machine_id, rule.id, subject)
        current = self.alerts.get(self._open.get(key, ""))
        if current is not None:
            worse = severity.rank > current.severity.rank
            return Raised(
                self.keep(
                    current.model_copy(
                        update={
                            "count": current.count + 1,
                            "last_raised_at": now,
                            "value": value if value is not None else current.value,
                            "severity": severity if worse else current.severity,
                            "message": message if worse else current.message,
                            "workorder_id": workorder_id or current.workorder_id,
                        }
                    )
                ),
                new=False,
            )
        alert = Alert(
            alert_id=alert_id(machine_id, rule.id, subject, self._occurrences[key], now),
            machine_id=machine_id,
            rule_id=rule.id,
            kind=rule.kind,
            subject=subject,
            severity=severity,
            message=message,
            value=value,
            first_raised_at=now,
            last_raised_at=now,
            workorder_id=workorder_id,
        )
        return Raised(self.keep(alert), new=True)

    # -- observations -------------------------------------------------------------------

    def on_anomaly(self, a: AnomalyRecord, now: datetime) -> list[Raised]:
        out = []
        for rule in self._rules(a.machine_id, RuleKind.ANOMALY):
            if a.severity.rank < rule.min_severity.rank:
                continue
            sensor = a.sensor_id.split(".", 1)[1] if a.sensor_id else "machine"
            out.append(
                self.raise_condition(
                    a.machine_id,
                    rule,
                    sensor,
                    f"{a.type.value} anomaly on {a.sensor_id or a.machine_id}: {a.reason}",
                    now,
                    severity=max(a.severity, rule.severity, key=lambda s: s.rank),
                    value=a.value,
                )
            )
        return out

    def on_rul(self, p: RulPrediction, now: datetime) -> list[Raised]:
        out = []
        mode = p.failure_mode.value if p.failure_mode else p.component
        for rule in self._rules(p.machine_id, RuleKind.RUL_BELOW):
            assert rule.hours is not None
            if p.median_hours < rule.hours:
                message = (
                    f"{p.machine_id}: median remaining life {p.median_hours:.0f} h "
                    f"({mode}; {p.lower_hours:.0f}-{p.upper_hours:.0f} h) is below {rule.hours:g} h"
                )
                out.append(
                    self.raise_condition(
                        p.machine_id, rule, mode, message, now, value=p.median_hours
                    )
                )
        for rule in self._rules(p.machine_id, RuleKind.FAILURE_PROBABILITY):
            assert rule.horizon_hours is not None and rule.probability is not None
            prob = failure_within(p, rule.horizon_hours)
            if prob > rule.probability:
                message = (
                    f"{p.machine_id}: P(failure within {rule.horizon_hours} h) = {prob:.2f} "
                    f"({mode}) is above {rule.probability:g}"
                )
                out.append(self.raise_condition(p.machine_id, rule, mode, message, now, value=prob))
        return out

    def on_twin(self, event: TwinChanged, now: datetime) -> list[Raised]:
        """Threshold rules on the readings a twin just applied; notes that the machine
        reported.

        "No data" counts from when new readings last *arrived* (``now`` of the update that
        brought them), not from their timestamps: a backlog replayed after an outage is
        data arriving, and a plant whose clock is off is not silent."""
        out: list[Raised] = []
        machine = event.machine_id
        if event.last_update is not None and event.last_update > self._data_ms.get(machine, -1):
            self._data_ms[machine] = event.last_update
            self.last_seen[machine] = now
            out.extend(self._data_returned(machine, now))
        for rule in self._rules(machine, RuleKind.THRESHOLD):
            reading = event.sensors.get(f"{machine}.{rule.sensor}")
            if reading is None or reading.value is None or reading.quality is Quality.BAD:
                continue
            v = reading.value
            crossed = (rule.above is not None and v > rule.above) or (
                rule.below is not None and v < rule.below
            )
            if crossed:
                limit = (
                    f"above {rule.above:g}" if rule.above is not None else f"below {rule.below:g}"
                )
                message = f"{machine}.{rule.sensor} = {v:g} is {limit} (rule {rule.id})"
                out.append(
                    self.raise_condition(machine, rule, rule.sensor or "", message, now, value=v)
                )
        return out

    def _data_returned(self, machine_id: str, now: datetime) -> list[Raised]:
        out = []
        for rule in self._rules(machine_id, RuleKind.NO_DATA):
            current = self.alerts.get(self._open.get((machine_id, rule.id, ""), ""))
            if current is not None:
                alert = self._close(current, AlertStatus.RESOLVED, SYSTEM, "data returned", now)
                out.append(Raised(alert, new=False))
        return out

    def check_no_data(self, now: datetime) -> list[Raised]:
        """Machines silent for longer than a "no data" rule allows (repeats count)."""
        out = []
        for machine_id, seen in self.last_seen.items():
            silent = now - seen
            for rule in self._rules(machine_id, RuleKind.NO_DATA):
                assert rule.minutes is not None
                if silent > timedelta(minutes=rule.minutes):
                    minutes = silent.total_seconds() / 60
                    message = (
                        f"no data from {machine_id} for {minutes:.0f} min "
                        f"(rule {rule.id}: {rule.minutes:g} min)"
                    )
                    out.append(self.raise_condition(machine_id, rule, "", message, now))
        return out

    # -- people -------------------------------------------------------------------------

    def get(self, alert_id: str) -> Alert:
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise NotFound(f"alert {alert_id!r} does not exist", "alert_id")
        return alert

    def forget(self, alert_id: str) -> None:
        """Drop a closed alert (kept elsewhere); its condition's numbering goes on."""
        alert = self.alerts.pop(alert_id)
        key = (alert.machine_id, alert.rule_id, alert.subject)
        if self._open.get(key) == alert_id:
            del self._open[key]

    def link(self, alert_id: str, workorder_id: str) -> Alert:
        """Point an alert at the work order that answers it."""
        return self.keep(self.get(alert_id).model_copy(update={"workorder_id": workorder_id}))

    def acknowledge(self, alert_id: str, actor: str, note: str, now: datetime) -> Alert:
        alert = self.get(alert_id)
        if alert.status is not AlertStatus.OPEN:
            raise Conflict(
                f"alert {alert_id} is {alert.status.value}; only an open alert can be acknowledged",
                "alert_id",
            )
        return self.keep(
            alert.model_copy(
                update={
                    "status": AlertStatus.ACKNOWLEDGED,
                    "acknowledged_at": now,
                    "acknowledged_by": actor,
                    "note": note or alert.note,
                }
            )
        )

    def resolve(
        self, alert_id: str, actor: str, note: str, now: datetime, false_positive: bool = False
    ) -> Alert:
        alert = self.get(alert_id)
        if alert.status.closed:
            raise Conflict(f"alert {alert_id} is already {alert.status.value}", "alert_id")
        status = AlertStatus.FALSE_POSITIVE if false_positive else AlertStatus.RESOLVED
        return self._close(alert, status, actor, note, now)

    def _close(
        self, alert: Alert, status: AlertStatus, actor: str, note: str, now: datetime
    ) -> Alert:
        return self.keep(
            alert.model_copy(
                update={
                    "status": status,
                    "resolved_at": now,
                    "resolved_by": actor,
                    "note": note or alert.note,
                }
            )
        )

    def clear_quiet(self, now: datetime) -> list[Alert]:
        """Resolve the alerts whose condition has not repeated for its rule's
        ``clear_after_minutes`` (return to normal)."""
        rules = {r.id: r for r in self.rules if r.clear_after_minutes is not None}
        out = []
        for alert in list(self.alerts.values()):
            rule = rules.get(alert.rule_id)
            if rule is None or alert.status.closed or rule.clear_after_minutes is None:
                continue
            quiet = now - alert.last_raised_at
            if quiet >= timedelta(minutes=rule.clear_after_minutes):
                note = f"returned to normal: no repeat for {rule.clear_after_minutes:g} min"
                out.append(self._close(alert, AlertStatus.RESOLVED, SYSTEM, note, now))
        return out

    def escalate_due(self, now: datetime) -> list[Alert]:
        """Escalate critical alerts nobody acknowledged: level n after n periods."""
        out = []
        for alert in list(self.alerts.values()):
            if alert.status is not AlertStatus.OPEN or alert.severity is not Severity.CRITICAL:
                continue
            period = timedelta(minutes=self._escalate_after(alert))
            level = int((now - alert.first_raised_at) / period)
            if level > alert.escalation_level:
                out.append(
                    self.keep(
                        alert.model_copy(update={"escalation_level": level, "escalated_at": now})
                    )
                )
        return out

    def _escalate_after(self, alert: Alert) -> float:
        rule = next((r for r in self.rules if r.id == alert.rule_id), None)
        if rule is not None and rule.escalate_after_minutes is not None:
            return rule.escalate_after_minutes
        return self.alerting.escalate_after_minutes

    def select(self, f: AlertFilter) -> list[Alert]:
        out = [
            a
            for a in self.alerts.values()
            if (f.machine_id is None or a.machine_id == f.machine_id)
            and (not f.status or a.status in f.status)
            and (f.min_severity is None or a.severity.rank >= f.min_severity.rank)
            and (f.rule_id is None or a.rule_id == f.rule_id)
        ]
        out.sort(key=lambda a: (a.last_raised_at, a.alert_id), reverse=True)
        return out[: f.limit]


def failure_within(p: RulPrediction, horizon_h: float) -> float:
    """P(failure within ``horizon_h``), interpolated between the stated horizons."""
    return failure_probability(sorted(p.failure_probability.items()), horizon_h)
