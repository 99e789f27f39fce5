"""The alert book: conditions in, de-duplicated alerts out (pure; the clock is passed in).

Every observation (an anomaly, a RUL prediction, a twin update, a clock tick) is checked
against the plant's :class:`~schemas.alerts.AlertRule` list. A condition is identified by
(machine, rule, subject): the subject is the sensor of an anomaly or threshold (whatever
the detector: a sensor misbehaving is one problem), the failure mode of a prediction.
While an alert for it is open or acknowledged, a repeat adds to its ``count`` (and
raises its severity if the repeat is worse) instead of raising another.
Once resolved (or marked false positive), the next occurrence opens a new alert.

Alarm management (ISA-18.2, EEMUA 191):

* **Severity.** A threshold anomaly keeps the detector's severity (critical only beyond a
  critical limit). An alert on a statistical anomaly starts at its rule's ``severity``
  (low by default) and goes up one step for each ``persist_minutes`` its condition has
  kept repeating, and one step when it is corroborated: another sensor or detector of
  the machine in alarm within ``corroborate_minutes``, a worsening RUL prediction
  (median :data:`RUL_WORSENING` lower than the one before, made within
  :data:`RUL_FRESH`), or an open RUL alert of the machine. Never below the twin's own
  severity (the twin escalates on the data's time: persistence, corroboration among its
  detectors and sensors) and never above ``escalate_to``.
  A predictive rule gives its ``severity``; ``within_repair_lead_time`` measures the
  failure probability over the repair's duration plus a planning lead.
* **Conditions that last.** A twin reports an anomaly once, when its condition starts
  (or worsens); its updates (:class:`~schemas.twin.TwinChanged`) list the conditions
  still open (``in_alarm``). Those count as the condition repeating, without adding to
  an alert's ``count``: for the on-delay, the off-delay and corroboration.
* **On-delay.** A condition is raised only once it has kept repeating for its rule's
  ``on_delay_minutes`` (a critical one at once); until then it is pending. A pending
  condition quiet for the rule's ``clear_after_minutes`` (or :data:`PENDING_QUIET`) is
  forgotten.
* **Off-delay.** An anomaly or threshold alert whose rule sets ``clear_after_minutes``
  resolves itself (return to normal) when its condition has not repeated for that long.
  "No data" alerts resolve themselves when data returns. Several machines of a site
  silent at once get one alert for the common cause (:meth:`AlertBook.check_no_data`).
* **Predictions return to normal.** A RUL or failure-probability alert resolves itself when
  a newer prediction of its machine is clear of the rule by :data:`RETURN_MARGIN` (after
  a repair the model starts again and predicts a long life).
* **Deadband.** A threshold condition, once crossed, lasts until the value is back past
  the limit by the rule's ``deadband``: readings in between are repeats.
* **Shelving.** An operator shelves an alert for a bounded time with a reason: it
  notifies nothing, does not escalate and does not return to normal while shelved; at
  expiry it comes back (or, if its condition stopped, resolves).

A critical alert nobody acknowledged escalates after the rule's (or the plant's)
``escalate_after_minutes``, then again after each further period: ``escalation_level``
counts the escalations, from when the alert became critical (time spent shelved does not
count).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from maintenance.errors import Conflict, Invalid, NotFound
from maintenance.schedule import failure_probability
from schemas.alerts import STATISTICAL_TYPES, Alert, AlertRule, AlertStatus, RuleKind
from schemas.anomaly import AnomalyRecord, Severity
from schemas.common import Quality, datetime_to_ms
from schemas.maintenance_api import AlertFilter
from schemas.plant import MachineSpec, Plant
from schemas.rul import RulPrediction
from schemas.twin import TwinChanged

SYSTEM = "system"
SEVERITIES = sorted(Severity, key=lambda s: s.rank)
PENDING_QUIET = timedelta(minutes=60)
"""A pending condition (on-delay) of a rule without ``clear_after_minutes`` is forgotten
after this long without a repeat."""
RUL_WORSENING = 0.1
"""A prediction whose median is this fraction lower than the one before is worsening."""
RUL_FRESH = timedelta(hours=24)
"""A worsening prediction corroborates for this long."""
Key = tuple[str, str, str]
NO_DATA_FLOOD = 3
"""This many machines of one site silent at once under one "no data" rule get one alert
(a common cause), not one each."""
NO_DATA_SITE = "site "
"""The subject of a common-cause "no data" alert: ``site <site id>``."""
DRIFT_SUBJECT = "drift "
"""The subject of a model drift alert: ``drift <machine type>`` (one per type, filed on
the machine of that type that moved the most)."""


@dataclass(frozen=True)
class Raised:
    """An alert after an observation; ``new``: first occurrence (notify), else a repeat;
    ``worse``: a repeat that raised the alert's severity."""

    alert: Alert
    new: bool
    worse: bool = False


RETURN_MARGIN = 1.5
"""A predictive alert returns to normal when a newer prediction of its machine is clear of
its rule by this factor (a median RUL 1.5 times the rule's hours, a probability a third
below its threshold): a deadband, so that a prediction hovering at the limit does not
chatter."""


@dataclass
class Pending:
    """A condition waiting out its rule's on-delay."""

    first: datetime
    last: datetime
    count: int
    severity: Severity
    message: str = ""


class PlantClock:
    """The plant's time: the wall clock, held back to the data's time in a replay.

    ``now = wall + min(offset, 0)`` where ``offset`` is the largest (event data time -
    wall time when it was observed) over the events observed. In live operation that is
    minus the smallest latency, so the plant clock is the wall clock less a little; in a
    replay of past data (``twinfleet up``) it follows the data. It never runs ahead of
    the wall clock, and it never goes back (the offset only grows, the wall clock too).
    An event dated more than ``future_tolerance_s`` after the wall clock (a gateway whose
    clock is wrong) is ignored and counted in ``ignored``. Before any event it is the wall
    clock (or the stored ``offset_ms`` of an earlier run).

    >>> from datetime import UTC, datetime
    >>> wall = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    >>> clock = PlantClock(lambda: wall)
    >>> clock.observe(datetime_to_ms(wall) - 86_400_000)  # data from a day ago
    >>> clock().isoformat()
    '2026-11-28T12:00:00+00:00'
    >>> clock.observe(datetime_to_ms(wall) + 3_600_000)  # an hour in the future: ignored
    >>> clock().isoformat(), clock.ignored
    ('2026-11-28T12:00:00+00:00', 1)
    """

    def __init__(
        self,
        wall: Callable[[], datetime],
        *,
        future_tolerance_s: float = 300.0,
        offset_ms: int | None = None,
    ) -> None:
        if not future_tolerance_s >= 0:
            raise ValueError(f"future_tolerance_s must be >= 0, got {future_tolerance_s}")
        self.wall = wall
        self.future_tolerance_ms = int(future_tolerance_s * 1000)
        self.offset_ms = offset_ms
        self.first_ms: int | None = None
        """The data time of the first event observed (not later than the wall clock)."""
        self.ignored = 0

    def observe(self, data_ms: int | None) -> None:
        if data_ms is None:
            return
        wall_ms = datetime_to_ms(self.wall())
        offset = data_ms - wall_ms
        if offset > self.future_tolerance_ms:
            self.ignored += 1
            return
        if self.first_ms is None:
            self.first_ms = min(data_ms, wall_ms)
        if self.offset_ms is None or offset > self.offset_ms:
            self.offset_ms = offset

    def __call__(self) -> datetime:
        wall = self.wall()
        if self.offset_ms is None or self.offset_ms >= 0:
            return wall
        return wall + timedelta(milliseconds=self.offset_ms)


def alert_id(machine_id: str, rule_id: str, subject: str, occurrence: int, first: datetime) -> str:
    """The n-th alert of a condition, raised at ``first``: unique even when two are raised
    at the same instant, or when closed alerts were forgotten and the count restarted."""
    key = f"{machine_id}|{rule_id}|{subject}|{occurrence}|{first.isoformat()}"
    return "AL-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class AlertBook:
    def __init__(self, plant: Plant, alerts: Iterable[Alert] = ()):
        self.rules = list(plant.alert_rules)
        self._rule = {r.id: r for r in self.rules}
        self.alerting = plant.alerting
        self.machines: dict[str, MachineSpec] = {m.id: m for m in plant.machines}
        self.alerts: dict[str, Alert] = {}
        self._open: dict[Key, str] = {}
        self._occurrences: Counter[Key] = Counter()
        self._pending: dict[Key, Pending] = {}
        self._back_to_normal: set[Key] = set()
        """Threshold conditions back past their deadband whose alert is still open."""
        self._alarms: dict[str, dict[tuple[str, str], datetime]] = {}
        """Per machine: (subject, source) -> when last in alarm (for corroboration)."""
        windows = [r.corroborate_minutes for r in self.rules if r.corroborate_minutes]
        self._alarm_window = timedelta(minutes=max(windows, default=15.0))
        self._rul_trend: dict[str, tuple[float, float | None, datetime]] = {}
        """Per machine: latest median RUL, the one before, when the latest came."""
        self.last_seen: dict[str, datetime] = {}
        """When new readings of each machine last arrived (from twin updates)."""
        self._still_on: dict[tuple[str, str], datetime] = {}
        """Per (machine, subject): when its twin last said that anomaly condition is still
        open (:attr:`~schemas.twin.TwinChanged.in_alarm`)."""
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
                self._back_to_normal.discard(key)
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
        count: int = 1,
        first_seen: datetime | None = None,
    ) -> Raised:
        """Open an alert for the condition (seen ``count`` times since ``first_seen``), or
        count a repeat of the open one."""
        severity = severity or rule.severity
        key = (machine_id, rule.id, subject)
        current = self.alerts.get(self._open.get(key, ""))
        if current is not None:
            worse = severity.rank > current.severity.rank
            # escalation counts from when an alert became critical
            critical_now = worse and severity is Severity.CRITICAL
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
                            "escalation_from": now if critical_now else current.escalation_from,
                        }
                    )
                ),
                new=False,
                worse=worse,
            )
        alert = Alert(
            alert_id=alert_id(machine_id, rule.id, subject, self._occurrences[key], now),
            machine_id=machine_id,
            rule_id=rule.id,
            kind=rule.kind,
            subject=subject,
            severity=severity,
            message=message,
            count=count,
            value=value,
            first_raised_at=now,
            last_raised_at=now,
            first_seen_at=first_seen if first_seen is not None and first_seen < now else None,
            workorder_id=workorder_id,
        )
        return Raised(self.keep(alert), new=True)

    # -- chattering: on-delay, pending conditions -------------------------------------------

    def _quiet(self, rule: AlertRule) -> timedelta:
        """How long without a repeat ends a condition (the off-delay)."""
        if rule.clear_after_minutes is not None:
            return timedelta(minutes=rule.clear_after_minutes)
        return PENDING_QUIET

    def _pending_of(self, key: Key, rule: AlertRule, now: datetime) -> Pending | None:
        p = self._pending.get(key)
        if p is not None and now - p.last > self._quiet(rule):
            del self._pending[key]
            return None
        return p

    def _occur(
        self,
        machine_id: str,
        rule: AlertRule,
        subject: str,
        message: str,
        now: datetime,
        severity: Severity,
        value: float | None,
    ) -> Raised | None:
        """One occurrence of a condition: a repeat of its open alert, a new alert once the
        rule's on-delay has passed (at once when critical), else pending (None)."""
        key = (machine_id, rule.id, subject)
        if key in self._open:
            return self.raise_condition(machine_id, rule, subject, message, now, severity, value)
        p = self._pending_of(key, rule, now)
        first = p.first if p is not None else now
        count = 1 + (p.count if p is not None else 0)
        if p is not None and p.severity.rank > severity.rank:
            severity = p.severity
        if severity is Severity.CRITICAL or now - first >= timedelta(minutes=rule.on_delay_minutes):
            self._pending.pop(key, None)
            return self.raise_condition(
                machine_id, rule, subject, message, now, severity, value, None, count, first
            )
        self._pending[key] = Pending(first, now, count, severity, message)
        return None

    def pending(self) -> dict[Key, Pending]:
        """The conditions waiting out an on-delay."""
        return dict(self._pending)

    # -- severity of statistical anomalies ---------------------------------------------------

    def _note_alarm(self, machine_id: str, subject: str, source: str, now: datetime) -> None:
        seen = self._alarms.setdefault(machine_id, {})
        seen[(subject, source)] = now
        for k in [k for k, t in seen.items() if now - t > self._alarm_window]:
            del seen[k]

    def _corroboration(
        self, machine_id: str, subject: str, source: str, now: datetime, window: timedelta
    ) -> str | None:
        """What else says the machine is in trouble now (None: nothing)."""
        others = sorted(
            f"{machine_id}.{s} ({src})" if s != "machine" else f"{machine_id} ({src})"
            for (s, src), t in self._alarms.get(machine_id, {}).items()
            if (s, src) != (subject, source) and now - t <= window
        )
        if others:
            return ", ".join(others[:3])
        trend = self._rul_trend.get(machine_id)
        if trend is not None:
            latest, before, at = trend
            if (
                before is not None
                and latest <= before * (1 - RUL_WORSENING)
                and now - at <= RUL_FRESH
            ):
                return f"a worsening RUL prediction (median {before:.0f} h, then {latest:.0f} h)"
        for (machine, _, _), aid in self._open.items():
            a = self.alerts[aid]
            if machine == machine_id and a.kind in (
                RuleKind.RUL_BELOW,
                RuleKind.FAILURE_PROBABILITY,
            ):
                return f"the open alert {a.rule_id} ({a.subject})"
        return None

    def _statistical_severity(
        self, rule: AlertRule, machine_id: str, subject: str, source: str, now: datetime
    ) -> tuple[Severity, str]:
        """The rule's starting severity, one step up per persistence period and one if
        corroborated, capped at ``escalate_to``; and why, for the message."""
        key = (machine_id, rule.id, subject)
        current = self.alerts.get(self._open.get(key, ""))
        pending = self._pending_of(key, rule, now)
        since = (
            current.condition_since
            if current is not None
            else pending.first
            if pending is not None
            else now
        )
        rank, why = rule.severity.rank, []
        if rule.persist_minutes is not None:
            periods = int((now - since) / timedelta(minutes=rule.persist_minutes))
            if periods > 0:
                rank += periods
                why.append(f"persisting {(now - since).total_seconds() / 60:.0f} min")
        if rule.corroborate_minutes is not None:
            window = timedelta(minutes=rule.corroborate_minutes)
            by = self._corroboration(machine_id, subject, source, now, window)
            if by is not None:
                rank += 1
                why.append(f"corroborated by {by}")
        rank = min(rank, rule.escalate_to.rank)
        return SEVERITIES[rank - 1], f" ({'; '.join(why)})" if why else ""

    # -- observations -------------------------------------------------------------------

    def on_anomaly(self, a: AnomalyRecord, now: datetime) -> list[Raised]:
        sensor = a.sensor_id.split(".", 1)[1] if a.sensor_id else "machine"
        # Any anomaly corroborates another, whether or not a rule alerts on it.
        self._note_alarm(a.machine_id, sensor, a.type.value, now)
        rules = [
            r
            for r in self._rules(a.machine_id, RuleKind.ANOMALY)
            if a.severity.rank >= r.min_severity.rank
            and (not r.anomaly_types or a.type in r.anomaly_types)
        ]
        out = []
        for rule in rules:
            message = f"{a.type.value} anomaly on {a.sensor_id or a.machine_id}: {a.reason}"
            severity = a.severity
            if a.type in STATISTICAL_TYPES:
                severity, why = self._statistical_severity(
                    rule, a.machine_id, sensor, a.type.value, now
                )
                # The twin escalates on the data's own time (persistence, corroboration
                # among its detectors and sensors): never below what it says.
                if a.severity.rank > severity.rank:
                    severity = SEVERITIES[min(a.severity.rank, rule.escalate_to.rank) - 1]
                message += why
            r = self._occur(a.machine_id, rule, sensor, message, now, severity, a.value)
            if r is not None:
                out.append(r)
        return out

    def repair_lead_time(
        self, machine_id: str, mode: str | None, rule: AlertRule
    ) -> tuple[float, float]:
        """(The repair lead time, the repair's part of it) in hours: the catalogue's
        duration of the failure mode's repair plus the rule's planning lead."""
        from maintenance.policy import task_for  # it imports this module

        repair = task_for(self.machines[machine_id], mode).duration_hours
        return repair + rule.planning_lead_hours, repair

    def on_rul(self, p: RulPrediction, now: datetime) -> list[Raised]:
        out = []
        before = self._rul_trend.get(p.machine_id)
        self._rul_trend[p.machine_id] = (p.median_hours, before[0] if before else None, now)
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
            elif p.median_hours >= rule.hours * RETURN_MARGIN:
                note = (
                    f"returned to normal: median remaining life {p.median_hours:.0f} h "
                    f"({mode}) is back above {rule.hours:g} h"
                )
                out.extend(self._prediction_cleared(p.machine_id, rule, note, now))
        for rule in self._rules(p.machine_id, RuleKind.FAILURE_PROBABILITY):
            assert rule.probability is not None
            if rule.horizon_hours is not None:
                horizon = float(rule.horizon_hours)
                within = f"{rule.horizon_hours} h"
            else:
                mode_name = p.failure_mode.value if p.failure_mode else None
                horizon, repair = self.repair_lead_time(p.machine_id, mode_name, rule)
                within = (
                    f"the repair lead time, {horizon:g} h: {repair:g} h repair + "
                    f"{rule.planning_lead_hours:g} h planning"
                )
            prob = failure_within(p, horizon)
            if prob > rule.probability:
                message = (
                    f"{p.machine_id}: P(failure within {within}) = {prob:.2f} "
                    f"({mode}) is above {rule.probability:g}"
                )
                out.append(self.raise_condition(p.machine_id, rule, mode, message, now, value=prob))
            elif prob * RETURN_MARGIN <= rule.probability:
                note = (
                    f"returned to normal: P(failure within {within}) = {prob:.2f} ({mode}) is "
                    f"back below {rule.probability:g}"
                )
                out.extend(self._prediction_cleared(p.machine_id, rule, note, now))
        return out

    def on_drift(
        self,
        machine_type: str,
        drifted: list[str],
        machine_id: str | None,
        description: str,
        now: datetime,
    ) -> list[Raised]:
        """A drift verdict of a machine type (:func:`twins.drift.evaluate`): the sensors
        that drifted (empty: none), the machine to file the alert on (the one moved on
        the most drifted sensors) and the verdict for people.

        One alert per type and rule, subject :data:`DRIFT_SUBJECT` + the type, on
        ``machine_id`` when it opens (later verdicts repeat it on the machine it was
        raised on); a verdict without drift resolves it (return to normal)."""
        subject = DRIFT_SUBJECT + machine_type
        out: list[Raised] = []
        for rule in (r for r in self.rules if r.kind is RuleKind.MODEL_DRIFT):
            if rule.machine_types and machine_type not in rule.machine_types:
                continue
            current = next(
                (
                    self.alerts[aid]
                    for (_, rule_id, subj), aid in self._open.items()
                    if rule_id == rule.id and subj == subject
                ),
                None,
            )
            if drifted and (current is not None or machine_id is not None):
                on = current.machine_id if current is not None else machine_id
                assert on is not None
                if current is None and not rule.applies_to(on, machine_type):
                    continue
                message = (
                    f"model drift on {machine_type}: {description} read unlike the RUL "
                    "model's training data (check sensor calibration, sensor changes and "
                    "process changes before trusting its predictions; retrain if real)"
                )
                out.append(
                    self.raise_condition(on, rule, subject, message, now, value=len(drifted))
                )
            elif not drifted and current is not None and not current.shelved:
                note = f"returned to normal: {machine_type} reads like its training data again"
                out.append(
                    Raised(self._close(current, AlertStatus.RESOLVED, SYSTEM, note, now), False)
                )
        return out

    def _prediction_cleared(
        self, machine_id: str, rule: AlertRule, note: str, now: datetime
    ) -> list[Raised]:
        """Resolve the machine's open (not shelved) alerts of a predictive rule: a newer
        prediction is clear of the rule by :data:`RETURN_MARGIN` (after a repair, say)."""
        out = []
        for (machine, rule_id, _), alert_id in list(self._open.items()):
            alert = self.alerts[alert_id]
            if machine == machine_id and rule_id == rule.id and not alert.shelved:
                closed = self._close(alert, AlertStatus.RESOLVED, SYSTEM, note, now)
                out.append(Raised(closed, new=False))
        return out

    def on_twin(self, event: TwinChanged, now: datetime) -> list[Raised]:
        """Threshold rules on the readings a twin just applied; notes that the machine
        reported.

        "No data" counts from when new readings of a machine last *arrived* (``now`` of
        the update that brought them), not from their timestamps: a backlog replayed after
        an outage is data arriving, and a plant whose clock is off is not silent."""
        out: list[Raised] = []
        machine = event.machine_id
        if event.last_update is not None and event.last_update > self._data_ms.get(machine, -1):
            self._data_ms[machine] = event.last_update
            self.last_seen[machine] = now
            out.extend(self._data_returned(machine, now))
        for subject in event.in_alarm:
            out.extend(self._condition_lasts(machine, subject, now))
        for rule in self._rules(machine, RuleKind.THRESHOLD):
            sensor = rule.sensor or ""
            reading = event.sensors.get(f"{machine}.{sensor}")
            if reading is None or reading.value is None or reading.quality is Quality.BAD:
                continue
            v = reading.value
            key = (machine, rule.id, sensor)
            above = rule.above is not None and v > rule.above
            below = rule.below is not None and v < rule.below
            limit = f"above {rule.above:g}" if rule.above is not None else f"below {rule.below:g}"
            message = f"{machine}.{sensor} = {v:g} is {limit} (rule {rule.id})"
            if not (above or below) and rule.deadband > 0 and self._in_alarm(key, rule, now):
                held = (rule.above is not None and v > rule.above - rule.deadband) or (
                    rule.below is not None and v < rule.below + rule.deadband
                )
                if held:
                    above = True  # still in alarm: inside the deadband
                    message = (
                        f"{machine}.{sensor} = {v:g} is inside the deadband "
                        f"({rule.deadband:g}) of its limit (rule {rule.id})"
                    )
            if above or below:
                self._back_to_normal.discard(key)
                self._note_alarm(machine, sensor, f"rule {rule.id}", now)
                r = self._occur(machine, rule, sensor, message, now, rule.severity, v)
                if r is not None:
                    out.append(r)
            elif key in self._open or key in self._pending:
                self._back_to_normal.add(key)
        return out

    def _condition_lasts(self, machine: str, subject: str, now: datetime) -> list[Raised]:
        """The machine's twin says its anomaly condition on ``subject`` is still open: it
        keeps corroborating, its alerts do not return to normal, and a pending one is
        raised once its rule's on-delay has passed."""
        self._still_on[(machine, subject)] = now
        seen = self._alarms.get(machine, {})
        for alarm in seen:
            if alarm[0] == subject:
                seen[alarm] = now
        out = []
        for rule in self._rules(machine, RuleKind.ANOMALY):
            key = (machine, rule.id, subject)
            p = self._pending_of(key, rule, now)
            if p is None:
                continue
            p.last = now
            if now - p.first >= timedelta(minutes=rule.on_delay_minutes):
                del self._pending[key]
                out.append(
                    self.raise_condition(
                        machine,
                        rule,
                        subject,
                        p.message,
                        now,
                        p.severity,
                        None,
                        None,
                        p.count,
                        p.first,
                    )
                )
        return out

    def _last_active(self, alert: Alert, rule: AlertRule) -> datetime:
        """When the alert's condition was last seen: its last repeat or, for an anomaly,
        the last time its twin said the condition is still open."""
        last = alert.last_raised_at
        if rule.kind is RuleKind.ANOMALY:
            on = self._still_on.get((alert.machine_id, alert.subject))
            if on is not None and on > last:
                return on
        return last

    def _in_alarm(self, key: Key, rule: AlertRule, now: datetime) -> bool:
        active = key in self._open or self._pending_of(key, rule, now) is not None
        return active and key not in self._back_to_normal

    def _data_returned(self, machine_id: str, now: datetime) -> list[Raised]:
        out = []
        for rule in self._rules(machine_id, RuleKind.NO_DATA):
            current = self.alerts.get(self._open.get((machine_id, rule.id, ""), ""))
            if current is not None:
                alert = self._close(current, AlertStatus.RESOLVED, SYSTEM, "data returned", now)
                out.append(Raised(alert, new=False))
        return out

    def check_no_data(self, now: datetime) -> list[Raised]:
        """Machines silent for longer than a "no data" rule allows (repeats count).

        **One alert for a common cause.** When :data:`NO_DATA_FLOOD` or more machines of a
        site are silent under the same rule, that is almost never the machines: a gateway,
        the network or the hub falling behind silenced them together (ISA-18.2's alarm
        flood and first-out practice). They get one alert, on the machine silent the
        longest (subject ``site <site>``), naming how many and which, instead of one per
        machine. While it is open it covers every silent machine of its site under that
        rule; it resolves itself when none of them is silent. A machine that was already
        alerting on its own keeps (and repeats) its own alert and is not counted in it."""
        out = []
        for rule in (r for r in self.rules if r.kind is RuleKind.NO_DATA):
            assert rule.minutes is not None
            limit = timedelta(minutes=rule.minutes)
            silent_by_site: dict[str, list[tuple[datetime, str]]] = {}
            for machine_id, seen in self.last_seen.items():
                spec = self.machines.get(machine_id)
                if spec is None or not rule.applies_to(machine_id, spec.type):
                    continue
                if now - seen > limit:
                    silent_by_site.setdefault(spec.site, []).append((seen, machine_id))
            groups = self._no_data_groups(rule)
            for site_id in sorted(set(silent_by_site) | set(groups)):
                silent = sorted(silent_by_site.get(site_id, []))
                out.extend(self._no_data_site(rule, site_id, silent, groups.get(site_id), now))
        return out

    def _no_data_groups(self, rule: AlertRule) -> dict[str, Alert]:
        """The open common-cause "no data" alerts of ``rule``, by site."""
        out = {}
        for (_, rule_id, subject), alert_id in self._open.items():
            if rule_id == rule.id and subject.startswith(NO_DATA_SITE):
                out[subject.removeprefix(NO_DATA_SITE)] = self.alerts[alert_id]
        return out

    def _no_data_site(
        self,
        rule: AlertRule,
        site_id: str,
        silent: list[tuple[datetime, str]],
        group: Alert | None,
        now: datetime,
    ) -> list[Raised]:
        """One site's silent machines under one rule: the common-cause alert (new, repeated
        or resolved) or one alert per machine."""
        own = {m for (m, rid, subj) in self._open if rid == rule.id and subj == ""}
        out = [self._no_data_machine(rule, m, now - seen, now) for seen, m in silent if m in own]
        silent = [(seen, m) for seen, m in silent if m not in own]
        if group is None and len(silent) < NO_DATA_FLOOD:
            return out + [self._no_data_machine(rule, m, now - seen, now) for seen, m in silent]
        if group is not None and not silent:
            note = f"data returned from every machine of {site_id}"
            return [
                *out,
                Raised(self._close(group, AlertStatus.RESOLVED, SYSTEM, note, now), False),
            ]
        watched = sum(
            1
            for m in self.last_seen
            if (spec := self.machines.get(m)) is not None
            and spec.site == site_id
            and rule.applies_to(m, spec.type)
        )
        first_seen, first_out = silent[0]
        names = ", ".join(m for _, m in silent[:5]) + (", ..." if len(silent) > 5 else "")
        message = (
            f"no data from {len(silent)} of {watched} machines at {site_id} "
            f"({names}) for {(now - first_seen).total_seconds() / 60:.0f} min or more "
            f"(rule {rule.id}: {rule.minutes:g} min): a common cause (a gateway, the "
            "network or the hub falling behind), one alert for all of them"
        )
        machine_id = group.machine_id if group is not None else first_out
        subject = NO_DATA_SITE + site_id
        return [
            *out,
            self.raise_condition(machine_id, rule, subject, message, now, value=len(silent)),
        ]

    def _no_data_machine(
        self, rule: AlertRule, machine_id: str, silent: timedelta, now: datetime
    ) -> Raised:
        minutes = silent.total_seconds() / 60
        message = (
            f"no data from {machine_id} for {minutes:.0f} min "
            f"(rule {rule.id}: {rule.minutes:g} min)"
        )
        return self.raise_condition(machine_id, rule, "", message, now)

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
                    "shelved_until": None,
                }
            )
        )

    def shelve(
        self, alert_id: str, actor: str, reason: str, minutes: float, now: datetime
    ) -> Alert:
        """Shelve an open or acknowledged alert for ``minutes`` (at most the plant's
        ``alerting.max_shelve_minutes``); shelving a shelved one sets a new expiry."""
        alert = self.get(alert_id)
        if alert.status.closed:
            raise Conflict(
                f"alert {alert_id} is {alert.status.value}; only an open or acknowledged "
                "alert can be shelved",
                "alert_id",
            )
        longest = self.alerting.max_shelve_minutes
        if not 0 < minutes <= longest:
            raise Invalid(
                f"minutes: an alert is shelved for more than 0 and at most {longest:g} minutes "
                f"(alerting.max_shelve_minutes), got {minutes:g}",
                "minutes",
            )
        if not reason.strip():
            raise Invalid("reason: say why the alert is shelved", "reason")
        return self.keep(
            alert.model_copy(
                update={
                    "shelved_until": now + timedelta(minutes=minutes),
                    "shelved_at": alert.shelved_at if alert.shelved else now,
                    "shelved_by": actor,
                    "shelve_reason": reason,
                }
            )
        )

    def unshelve(self, alert_id: str, actor: str, note: str, now: datetime) -> Alert:
        """Bring a shelved alert back before its expiry."""
        alert = self.get(alert_id)
        if not alert.shelved:
            raise Conflict(f"alert {alert_id} is not shelved", "alert_id")
        return self._unshelve(alert, now, note)

    def _unshelve(self, alert: Alert, until: datetime, note: str = "") -> Alert:
        """Back from the shelf at ``until``: the escalation clock resumes where it stopped."""
        paused = until - (alert.shelved_at or until)
        start = alert.escalation_from or alert.first_raised_at
        return self.keep(
            alert.model_copy(
                update={
                    "shelved_until": None,
                    "escalation_from": start + max(paused, timedelta(0)),
                    "note": note or alert.note,
                }
            )
        )

    def unshelve_due(self, now: datetime) -> list[tuple[Alert, bool]]:
        """Shelved alerts whose time is up, each with whether its condition is still
        active: then it is back (and should be notified); else it returned to normal while
        shelved and is resolved."""
        out = []
        for alert in list(self.alerts.values()):
            if not alert.shelved or alert.shelved_until is None or alert.shelved_until > now:
                continue
            rule = self._rule.get(alert.rule_id)
            if (
                rule is not None
                and rule.clear_after_minutes is not None
                and now - self._last_active(alert, rule)
                >= timedelta(minutes=rule.clear_after_minutes)
            ):
                note = (
                    "returned to normal while shelved: no repeat for "
                    f"{rule.clear_after_minutes:g} min"
                )
                out.append((self._close(alert, AlertStatus.RESOLVED, SYSTEM, note, now), False))
            else:
                out.append((self._unshelve(alert, alert.shelved_until), True))
        return out

    def clear_quiet(self, now: datetime) -> list[Alert]:
        """Resolve the alerts whose condition has not repeated for its rule's
        ``clear_after_minutes`` (return to normal; a shelved alert waits for its expiry),
        and forget pending conditions that went quiet."""
        for key in list(self._pending):
            rule = self._rule.get(key[1])
            if rule is None:
                del self._pending[key]
            else:
                self._pending_of(key, rule, now)
        out = []
        for alert in list(self.alerts.values()):
            rule = self._rule.get(alert.rule_id)
            if (
                rule is None
                or rule.clear_after_minutes is None
                or alert.status.closed
                or alert.shelved
            ):
                continue
            quiet = now - self._last_active(alert, rule)
            if quiet >= timedelta(minutes=rule.clear_after_minutes):
                note = f"returned to normal: no repeat for {rule.clear_after_minutes:g} min"
                out.append(self._close(alert, AlertStatus.RESOLVED, SYSTEM, note, now))
        return out

    def escalate_due(self, now: datetime) -> list[Alert]:
        """Escalate critical alerts nobody acknowledged (and nobody shelved): level n
        after n periods."""
        out = []
        for alert in list(self.alerts.values()):
            if (
                alert.status is not AlertStatus.OPEN
                or alert.severity is not Severity.CRITICAL
                or alert.shelved
            ):
                continue
            period = timedelta(minutes=self._escalate_after(alert))
            level = int((now - (alert.escalation_from or alert.first_raised_at)) / period)
            if level > alert.escalation_level:
                out.append(
                    self.keep(
                        alert.model_copy(update={"escalation_level": level, "escalated_at": now})
                    )
                )
        return out

    def _escalate_after(self, alert: Alert) -> float:
        rule = self._rule.get(alert.rule_id)
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
            and (f.shelved is None or a.shelved == f.shelved)
        ]
        out.sort(key=lambda a: (a.last_raised_at, a.alert_id), reverse=True)
        return out[: f.limit]


def failure_within(p: RulPrediction, horizon_h: float) -> float:
    """P(failure within ``horizon_h``), interpolated between the stated horizons."""
    return failure_probability(sorted(p.failure_probability.items()), horizon_h)
