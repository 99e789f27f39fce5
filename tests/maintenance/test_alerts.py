"""The alert book on its own (pure): grouping, severity, life cycle, escalation periods,
and the alarm management (severity by persistence and corroboration, on-delay, off-delay,
deadband, shelving), with its own rules so that the example plant's may change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from maintenance.alerts import AlertBook, PlantClock, failure_within
from maintenance.errors import Conflict, Invalid, NotFound
from schemas.alerts import AlertRule, AlertStatus
from schemas.anomaly import AnomalyRecord
from schemas.common import datetime_to_ms
from schemas.maintenance_api import AlertFilter
from schemas.plant import Plant
from schemas.twin import TwinChanged
from tests.maintenance.test_service import T0, plant, prediction

# The alerting of the example plant before issue 16, written out: the anomaly rule raises
# at once, at high, from high anomalies on, and clears after an hour.
LEGACY = [
    AlertRule(
        id="anomaly",
        kind="anomaly",
        min_severity="high",
        severity="high",
        on_delay_minutes=0,
        clear_after_minutes=60,
    ),
    AlertRule(id="rul-low", kind="rul_below", hours=240, severity="high"),
    AlertRule(
        id="failure-7d",
        kind="failure_probability",
        horizon_hours=168,
        probability=0.3,
        severity="critical",
    ),
]
# The managed anomaly rule with its defaults: starts low, on-delay 5 min, one step per
# 30 min of persistence, one for corroboration within 15 min, at most high.
MANAGED = AlertRule(id="anomaly", kind="anomaly", min_severity="medium", clear_after_minutes=60)
# The same, alerting on the twin's low anomalies too (the book's own escalation shows).
EVERY = AlertRule(id="anomaly", kind="anomaly", min_severity="low", clear_after_minutes=60)


def with_rules(*rules: AlertRule) -> Plant:
    return plant().model_copy(update={"alert_rules": list(rules)})


def anomaly(
    sensor: str | None,
    kind: str,
    severity: str,
    minutes: float = 0,
    machine: str = "P-201",
) -> AnomalyRecord:
    return AnomalyRecord(
        machine_id=machine,
        sensor_id=None if sensor is None else f"{machine}.{sensor}",
        timestamp=datetime_to_ms(T0 + timedelta(minutes=minutes)),
        type=kind,
        severity=severity,
        score=0.9,
        reason=f"{kind} on {sensor}",
        detector=kind,
    )


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def seen(book: AlertBook, a: AnomalyRecord, minutes: float) -> list[tuple[Any, ...]]:
    """(new, severity, count) of what one anomaly at ``minutes`` raised."""
    return [(r.new, r.alert.severity.value, r.alert.count) for r in book.on_anomaly(a, at(minutes))]


# -- as before ---------------------------------------------------------------------------------
def test_one_alert_per_sensor_whatever_the_detector_and_the_worst_severity_wins() -> None:
    book = AlertBook(with_rules(*LEGACY))
    first = book.on_anomaly(anomaly("vibration", "spike", "high"), T0)
    again = book.on_anomaly(anomaly("vibration", "threshold", "critical", 1), T0)
    other = book.on_anomaly(anomaly("flow", "spike", "high"), T0)
    below = book.on_anomaly(anomaly("flow", "stale", "medium"), T0)  # under the rule's high
    assert [r.new for r in first + again + other] == [True, False, True] and below == []
    assert again[0].worse
    (vib,) = [a for a in book.alerts.values() if a.subject == "vibration"]
    assert (vib.count, vib.severity.value, vib.message) == (
        2,
        "critical",
        "threshold anomaly on P-201.vibration: threshold on vibration",
    )
    assert [a.subject for a in book.select(AlertFilter(min_severity="critical"))] == ["vibration"]


def test_life_cycle_and_escalation_periods() -> None:
    book = AlertBook(with_rules(*LEGACY))
    (raised,) = book.on_anomaly(anomaly("vibration", "threshold", "critical"), T0)
    alert = raised.alert
    # the escalation period of this rule is the plant's 30 minutes
    assert book.escalate_due(T0 + timedelta(minutes=29)) == []
    (up,) = book.escalate_due(T0 + timedelta(minutes=95))  # three periods passed at once
    assert up.escalation_level == 3
    assert book.escalate_due(T0 + timedelta(minutes=100)) == []
    acked = book.acknowledge(alert.alert_id, "ana", "on it", T0 + timedelta(minutes=96))
    assert acked.status is AlertStatus.ACKNOWLEDGED and acked.acknowledged_by == "ana"
    assert book.escalate_due(T0 + timedelta(hours=5)) == []
    with pytest.raises(Conflict):
        book.acknowledge(alert.alert_id, "ana", "", T0)
    fp = book.resolve(alert.alert_id, "ana", "sensor cable", T0, false_positive=True)
    assert fp.status is AlertStatus.FALSE_POSITIVE and fp.note == "sensor cable"
    (again,) = book.on_anomaly(anomaly("vibration", "threshold", "critical", 5), T0)
    assert again.new and again.alert.alert_id != alert.alert_id
    with pytest.raises(NotFound):
        book.resolve("AL-0000000000000000", "ana", "", T0)


def test_rul_rules_and_the_probability_between_horizons() -> None:
    book = AlertBook(with_rules(*LEGACY))
    calm = prediction("P-201", T0, median=900, lower=400)
    assert book.on_rul(calm, T0) == []
    worn = prediction("P-201", T0, median=200, lower=90)
    assert {r.alert.rule_id for r in book.on_rul(worn, T0)} == {"rul-low", "failure-7d"}
    p = worn.failure_probability
    assert failure_within(worn, 168) == pytest.approx(p[168])
    assert failure_within(worn, 120) == pytest.approx(p[72] + (p[168] - p[72]) * 48 / 96)
    assert failure_within(worn, 2000) == pytest.approx(p[720])


def test_a_prediction_alert_returns_to_normal_once_a_newer_one_is_well_clear() -> None:
    """After a repair the model predicts a long life again: the machine's RUL and
    failure-probability alerts resolve themselves. A prediction just inside the limit
    (the deadband of RETURN_MARGIN) keeps them open, so a hovering one does not chatter."""
    book = AlertBook(with_rules(*LEGACY))
    worn = prediction("P-201", T0, median=200, lower=90)
    raised = book.on_rul(worn, T0)
    assert {r.alert.rule_id for r in raised} == {"rul-low", "failure-7d"}
    hovering = prediction("P-201", at(60), median=280, lower=60)  # 280 h < 1.5 x 240 h
    assert 0.2 < failure_within(hovering, 168) <= 0.3  # not above 0.3, nor a third below
    assert book.on_rul(hovering, at(60)) == []
    assert all(not a.status.closed for a in book.alerts.values())
    repaired = prediction("P-201", at(120), median=2000, lower=900)
    cleared = book.on_rul(repaired, at(120))
    assert {r.alert.rule_id for r in cleared} == {"rul-low", "failure-7d"}
    assert all(r.alert.status is AlertStatus.RESOLVED and not r.new for r in cleared)
    assert all("returned to normal" in r.alert.note for r in cleared)
    assert book.on_rul(repaired, at(180)) == []
    # the next worn prediction opens new alerts
    assert all(r.new for r in book.on_rul(worn, at(240)))


def test_an_anomaly_alert_returns_to_normal_when_its_condition_stops() -> None:
    book = AlertBook(with_rules(*LEGACY))  # clear after 60 minutes
    (first,) = book.on_anomaly(anomaly("vibration", "spike", "high"), T0)
    book.on_anomaly(anomaly("vibration", "spike", "high"), T0 + timedelta(minutes=30))
    assert book.clear_quiet(T0 + timedelta(minutes=89)) == []
    (cleared,) = book.clear_quiet(T0 + timedelta(minutes=90))
    assert cleared.alert_id == first.alert.alert_id and cleared.status is AlertStatus.RESOLVED
    assert cleared.resolved_by == "system" and cleared.note.startswith("returned to normal")
    assert book.clear_quiet(T0 + timedelta(hours=5)) == []
    (again,) = book.on_anomaly(anomaly("vibration", "spike", "high"), T0 + timedelta(hours=6))
    assert again.new


# -- severity means something -----------------------------------------------------------------
def test_a_statistical_anomaly_starts_low_and_escalates_only_by_persistence() -> None:
    """Spikes on one sensor every 5 minutes, nothing else on the machine: pending for the
    on-delay, raised low at 5 min, medium after 30 min, high after 60, and no higher."""
    book = AlertBook(with_rules(EVERY))
    spike = anomaly("vibration", "spike", "low")
    assert seen(book, spike, 0) == []  # on-delay: pending
    assert seen(book, spike, 5) == [(True, "low", 2)]
    alert = next(iter(book.alerts.values()))
    assert alert.first_seen_at == T0 and alert.first_raised_at == at(5)
    steps = {m: seen(book, spike, m)[0][1] for m in range(10, 125, 5)}
    assert {m for m, s in steps.items() if s == "low"} == {10, 15, 20, 25}
    assert {m for m, s in steps.items() if s == "medium"} == {30, 35, 40, 45, 50, 55}
    assert {m for m, s in steps.items() if s == "high"} == set(range(60, 125, 5))
    alert = book.get(alert.alert_id)
    assert alert.message == (
        "spike anomaly on P-201.vibration: spike on vibration (persisting 60 min)"
    )
    assert alert.count == 2 + len(steps)


def test_corroboration_by_another_sensor_another_detector_or_a_worsening_prediction() -> None:
    book = AlertBook(with_rules(EVERY))
    assert seen(book, anomaly("vibration", "spike", "low"), 0) == []
    assert seen(book, anomaly("vibration", "spike", "low"), 5) == [(True, "low", 2)]
    # Another sensor of the machine in alarm (pending for its on-delay): corroborates.
    assert seen(book, anomaly("flow", "statistical", "low"), 6) == []
    assert seen(book, anomaly("vibration", "spike", "low"), 10) == [(False, "medium", 3)]
    vib = next(a for a in book.alerts.values() if a.subject == "vibration")
    assert vib.message.endswith("(corroborated by P-201.flow (statistical))")
    # Flow's own alert is raised corroborated by vibration: medium at once.
    assert seen(book, anomaly("flow", "statistical", "low"), 11) == [(True, "medium", 2)]
    # Another detector on the same sensor corroborates too (P-202, alone on its machine).
    other = AlertBook(with_rules(EVERY))
    assert seen(other, anomaly("seal_temp", "flatline", "low", machine="P-202"), 0) == []
    assert seen(other, anomaly("seal_temp", "flatline", "low", machine="P-202"), 5) == [
        (True, "low", 2)
    ]
    assert seen(other, anomaly("seal_temp", "statistical", "low", machine="P-202"), 7) == [
        (False, "medium", 3)
    ]
    # 20 minutes after flow's last anomaly it no longer corroborates: medium by persistence
    # alone (31 min), not high.
    assert seen(book, anomaly("vibration", "spike", "low"), 31) == [(False, "medium", 4)]
    # A worsening RUL prediction corroborates: P-203's median falls by more than 10 %.
    rul = AlertBook(with_rules(EVERY))
    rul.on_rul(prediction("P-203", T0, median=900, lower=400), T0)
    rul.on_rul(prediction("P-203", T0, median=700, lower=300), at(1))
    seen(rul, anomaly("flow", "spike", "low", machine="P-203"), 2)
    assert seen(rul, anomaly("flow", "spike", "low", machine="P-203"), 7) == [(True, "medium", 2)]
    (a,) = rul.alerts.values()
    assert a.message.endswith(
        "(corroborated by a worsening RUL prediction (median 900 h, then 700 h))"
    )
    steady = AlertBook(with_rules(EVERY))
    steady.on_rul(prediction("P-203", T0, median=900, lower=400), T0)
    steady.on_rul(prediction("P-203", T0, median=850, lower=380), at(1))  # 5.6 % lower
    seen(steady, anomaly("flow", "spike", "low", machine="P-203"), 2)
    assert seen(steady, anomaly("flow", "spike", "low", machine="P-203"), 7) == [(True, "low", 2)]


def test_only_a_sensor_beyond_its_critical_limit_is_a_critical_anomaly_and_it_does_not_wait() -> (
    None
):
    book = AlertBook(with_rules(MANAGED))
    (r,) = book.on_anomaly(anomaly("bearing_temp", "threshold", "critical"), T0)
    assert r.new and r.alert.severity.value == "critical" and r.alert.count == 1
    # a threshold anomaly beyond the normal limit only waits for the on-delay and keeps
    # the detector's severity
    assert seen(book, anomaly("flow", "threshold", "high"), 0) == []
    assert seen(book, anomaly("flow", "threshold", "high"), 5) == [(True, "high", 2)]
    # whatever the detectors say, persistence and corroboration stop at high
    for m in range(0, 300, 5):
        book.on_anomaly(anomaly("vibration", "multivariate", "critical"), at(m))
    vib = next(a for a in book.alerts.values() if a.subject == "vibration")
    assert vib.severity.value == "high"


def test_the_failure_probability_within_the_repair_lead_time() -> None:
    """P-201's bearing repair takes 6 h in the catalogue; with a 24 h planning lead the
    rule looks 30 h ahead."""
    rule = AlertRule(
        id="failure-lead-time",
        kind="failure_probability",
        within_repair_lead_time=True,
        probability=0.05,
        severity="critical",
    )
    book = AlertBook(with_rules(rule))
    assert book.repair_lead_time("P-201", "bearing_wear", rule) == (30.0, 6.0)
    soon = prediction("P-201", T0, median=60, lower=20)
    (r,) = book.on_rul(soon, T0)
    assert r.alert.severity.value == "critical"
    assert r.alert.value == pytest.approx(failure_within(soon, 30))
    assert "P(failure within the repair lead time, 30 h: 6 h repair + 24 h planning)" in (
        r.alert.message
    )
    assert book.on_rul(prediction("P-202", T0, median=2000, lower=900), T0) == []


# -- chattering -------------------------------------------------------------------------------
def test_on_delay_a_single_occurrence_is_never_raised_and_a_quiet_one_is_forgotten() -> None:
    book = AlertBook(with_rules(EVERY))
    assert seen(book, anomaly("flow", "spike", "low"), 0) == []
    assert seen(book, anomaly("flow", "spike", "low"), 4) == []  # 4 min: still waiting
    assert list(book.pending()) == [("P-201", "anomaly", "flow")] and book.alerts == {}
    book.clear_quiet(at(63))  # quiet for 59 minutes: still pending
    assert list(book.pending()) == [("P-201", "anomaly", "flow")]
    book.clear_quiet(at(65))  # quiet for over the rule's 60 minutes: forgotten
    assert book.pending() == {}
    assert seen(book, anomaly("flow", "spike", "low"), 70) == []  # starts again
    assert seen(book, anomaly("flow", "spike", "low"), 74) == []
    assert seen(book, anomaly("flow", "spike", "low"), 75) == [(True, "low", 3)]
    assert book.alerts and all(a.first_seen_at == at(70) for a in book.alerts.values())


def test_the_twins_severity_is_the_floor_of_a_statistical_alert() -> None:
    """The twin escalates on the data's own time (persistence, corroboration among its
    detectors): its medium anomaly raises a medium alert (after the on-delay), its high
    one raises the alert to high; a critical one stops at the rule's escalate_to."""
    book = AlertBook(with_rules(MANAGED))
    assert seen(book, anomaly("flow", "statistical", "low"), 0) == []  # below min_severity
    assert book.pending() == {}
    assert seen(book, anomaly("flow", "statistical", "medium"), 1) == []  # on-delay
    assert seen(book, anomaly("flow", "statistical", "medium"), 6) == [(True, "medium", 2)]
    assert seen(book, anomaly("flow", "statistical", "high"), 7) == [(False, "high", 3)]
    assert seen(book, anomaly("flow", "multivariate", "critical"), 8) == [(False, "high", 4)]


def in_alarm(subjects: list[str], minutes: float, machine: str = "P-201") -> TwinChanged:
    """A twin update of ``machine`` saying its anomaly conditions on ``subjects`` last."""
    return TwinChanged(
        machine_id=machine,
        version=1,
        last_update=datetime_to_ms(at(minutes)),
        in_alarm=subjects,
    )


def test_an_anomaly_alert_lasts_while_its_twin_says_the_condition_is_open() -> None:
    """The twin reports an anomaly once, when it starts; its updates then say the
    condition is still open. The pending alert is raised when the on-delay has passed, it
    does not return to normal while the condition lasts, and it does an hour after the twin
    stops saying so."""
    book = AlertBook(with_rules(MANAGED))
    assert seen(book, anomaly("flow", "statistical", "medium"), 0) == []
    assert book.on_twin(in_alarm(["flow"], 3), at(3)) == []  # still waiting
    (r,) = book.on_twin(in_alarm(["flow"], 6), at(6))
    assert r.new and r.alert.severity.value == "medium" and r.alert.subject == "flow"
    assert r.alert.first_seen_at == T0
    for m in range(10, 180, 10):  # three hours in alarm, no new anomaly reported
        book.on_twin(in_alarm(["flow", "machine"], m), at(m))
        assert book.clear_quiet(at(m)) == []
    assert book.clear_quiet(at(170 + 59)) == []
    (resolved,) = book.clear_quiet(at(170 + 60))
    assert resolved.alert_id == r.alert.alert_id and resolved.status is AlertStatus.RESOLVED
    # without the twin's word, the same alert returns to normal an hour after it was raised
    other = AlertBook(with_rules(MANAGED))
    seen(other, anomaly("flow", "statistical", "medium"), 0)
    seen(other, anomaly("flow", "statistical", "medium"), 6)
    assert [a.subject for a in other.clear_quiet(at(66))] == ["flow"]


def reading(value: float, minutes: float) -> TwinChanged:
    ms = datetime_to_ms(at(minutes))
    return TwinChanged.model_validate(
        {
            "machine_id": "P-201",
            "version": int(minutes * 10),
            "last_update": ms,
            "sensors": {"P-201.seal_temp": [value, ms, 0]},
        }
    )


def test_a_threshold_alert_holds_inside_its_deadband_and_re_arms_past_it() -> None:
    rule = AlertRule(
        id="hot-seal",
        kind="threshold",
        machine_types=["pump-75kw"],
        sensor="seal_temp",
        above=80,
        deadband=5,
        clear_after_minutes=10,
    )
    book = AlertBook(with_rules(rule))

    def count(value: float, minutes: float) -> list[int]:
        return [r.alert.count for r in book.on_twin(reading(value, minutes), at(minutes))]

    assert count(79, 0) == []
    assert count(85, 1) == [1]  # crossed
    assert count(78, 2) == [2]  # back under the limit, not past the deadband: still in alarm
    assert count(76, 3) == [3]
    assert count(74, 4) == []  # past the deadband (75): back to normal
    assert count(78, 5) == []  # re-armed: under the limit is not an alarm any more
    assert count(81, 6) == [4]  # crossed again: the open alert counts it
    assert count(72, 7) == []
    (alert,) = book.alerts.values()
    assert book.clear_quiet(at(15)) == []  # the off-delay: 10 quiet minutes after 6
    (cleared,) = book.clear_quiet(at(16))
    assert cleared.alert_id == alert.alert_id and cleared.status is AlertStatus.RESOLVED
    assert count(78, 17) == []  # a new condition needs the limit crossed, not the deadband
    assert [r.new for r in book.on_twin(reading(82, 18), at(18))] == [True]
    # without a deadband the first reading under the limit is normal
    plain = AlertBook(with_rules(rule.model_copy(update={"deadband": 0.0})))
    assert [r.alert.count for r in plain.on_twin(reading(85, 1), at(1))] == [1]
    assert plain.on_twin(reading(79.9, 2), at(2)) == []


def test_threshold_on_delay_waits_for_the_condition_to_last() -> None:
    rule = AlertRule(
        id="hot-seal",
        kind="threshold",
        sensor="seal_temp",
        machine_types=["pump-75kw"],
        above=80,
        on_delay_minutes=3,
    )
    book = AlertBook(with_rules(rule))
    assert book.on_twin(reading(85, 0), at(0)) == []
    assert book.on_twin(reading(86, 2), at(2)) == []
    (r,) = book.on_twin(reading(84, 3), at(3))
    assert r.new and r.alert.count == 3 and r.alert.first_seen_at == T0


def test_escalation_counts_from_when_an_alert_became_critical() -> None:
    book = AlertBook(with_rules(*LEGACY))
    assert [r.new for r in book.on_anomaly(anomaly("vibration", "spike", "high"), T0)] == [True]
    (worse,) = book.on_anomaly(anomaly("vibration", "threshold", "critical"), at(100))
    assert worse.worse and worse.alert.escalation_from == at(100)
    assert book.escalate_due(at(129)) == []  # 129 minutes old, critical for 29
    (up,) = book.escalate_due(at(130))
    assert up.escalation_level == 1


# -- shelving ---------------------------------------------------------------------------------
def test_a_shelved_alert_neither_escalates_nor_clears_and_comes_back_at_expiry() -> None:
    book = AlertBook(with_rules(*LEGACY))
    (r,) = book.on_anomaly(anomaly("bearing_temp", "threshold", "critical"), T0)
    aid = r.alert.alert_id
    with pytest.raises(Invalid) as too_long:
        book.shelve(aid, "ana", "recalibration", 24 * 60 + 1, T0)
    assert too_long.value.field == "minutes" and "1440" in too_long.value.message
    with pytest.raises(Invalid):
        book.shelve(aid, "ana", "recalibration", 0, T0)
    with pytest.raises(Invalid) as why:
        book.shelve(aid, "ana", "  ", 60, T0)
    assert why.value.field == "reason"
    with pytest.raises(Conflict):
        book.unshelve(aid, "ana", "", T0)
    shelved = book.shelve(aid, "ana", "recalibration", 120, at(10))
    assert shelved.shelved and shelved.shelved_until == at(130) and shelved.shelved_by == "ana"
    assert [a.alert_id for a in book.select(AlertFilter(shelved=True))] == [aid]
    assert book.escalate_due(at(100)) == []  # would be level 3 unshelved
    assert book.clear_quiet(at(100)) == []  # quiet 100 min, rule clears after 60: waits
    book.on_anomaly(anomaly("bearing_temp", "threshold", "critical"), at(110))  # still there
    assert book.unshelve_due(at(129)) == []
    ((back, active),) = book.unshelve_due(at(131))
    assert active and not back.shelved and back.status is AlertStatus.OPEN
    # the escalation clock stopped while shelved (10 min before, 120 on the shelf)
    assert back.escalation_from == T0 + timedelta(minutes=120)
    assert book.escalate_due(at(131)) == []  # 11 minutes of escalation time
    (up,) = book.escalate_due(at(150))  # 30 minutes
    assert up.escalation_level == 1
    # a shelved alert whose condition stopped returns resolved, not notified
    book.shelve(aid, "ana", "again", 60, at(151))
    ((closed, active),) = book.unshelve_due(at(211))
    assert not active and closed.status is AlertStatus.RESOLVED
    assert closed.note.startswith("returned to normal while shelved")
    with pytest.raises(Conflict):
        book.shelve(aid, "ana", "closed", 60, at(212))


def test_the_plant_clock_follows_the_data_and_never_runs_ahead_of_the_wall_clock() -> None:
    wall = [datetime(2026, 11, 29, 12, 0, tzinfo=UTC)]
    clock = PlantClock(lambda: wall[0])
    assert clock() == wall[0]  # before any event: the wall clock
    replay = wall[0] - timedelta(days=14)
    clock.observe(datetime_to_ms(replay))
    assert clock() == replay
    times = []
    for minute in range(1, 60):  # a replay: an hour of data in a minute of wall time
        wall[0] += timedelta(seconds=1)
        clock.observe(datetime_to_ms(replay + timedelta(minutes=minute)))
        times.append(clock())
    assert times == sorted(times) and times[-1] == replay + timedelta(minutes=59)
    clock.observe(datetime_to_ms(replay))  # an old event does not move it back
    assert clock() == replay + timedelta(minutes=59)
    wall[0] += timedelta(minutes=10)  # the replay stops: plant time goes on with the wall
    assert clock() == replay + timedelta(minutes=69)
    clock.observe(datetime_to_ms(wall[0] + timedelta(days=1)))  # a future-dated event
    assert clock() == replay + timedelta(minutes=69) and clock.ignored == 1
    clock.observe(datetime_to_ms(wall[0] + timedelta(seconds=2)))  # a gateway slightly ahead
    assert clock() == wall[0]  # caught up with live data; never ahead of the wall clock
    with pytest.raises(ValueError, match="future_tolerance_s"):
        PlantClock(lambda: wall[0], future_tolerance_s=-1)


# -- "no data": one alert for a common cause -------------------------------------------------
NO_DATA = AlertRule(id="no-data", kind="no_data", minutes=10, severity="medium")


def no_data_alerts(book: AlertBook) -> list[tuple[str, str, str, float | None]]:
    return sorted(
        (a.machine_id, a.subject, a.status.value, a.value)
        for a in book.alerts.values()
        if a.rule_id == "no-data"
    )


def test_a_few_silent_machines_get_an_alert_each() -> None:
    book = AlertBook(with_rules(NO_DATA))
    for m in ("P-201", "P-202", "P-207"):  # two at plant-north, one at plant-south
        book.last_seen[m] = T0
    book.last_seen["M-101"] = T0 + timedelta(minutes=9)
    raised = book.check_no_data(T0 + timedelta(minutes=11))
    assert [r.new for r in raised] == [True, True, True]
    assert no_data_alerts(book) == [
        ("P-201", "", "open", None),
        ("P-202", "", "open", None),
        ("P-207", "", "open", None),
    ]


def test_many_silent_machines_of_a_site_get_one_alert_that_resolves_when_all_are_back() -> None:
    book = AlertBook(with_rules(NO_DATA))
    north = ["P-201", "P-202", "P-203", "P-204"]
    for i, m in enumerate(north):  # P-201 silent the longest: the first out
        book.last_seen[m] = T0 + timedelta(minutes=i)
    book.last_seen["P-207"] = T0  # one at plant-south
    book.last_seen["M-101"] = T0 + timedelta(minutes=20)  # plant-north, reporting
    raised = book.check_no_data(T0 + timedelta(minutes=14))
    assert [r.new for r in raised] == [True, True]
    assert no_data_alerts(book) == [
        ("P-201", "site plant-north", "open", 4.0),
        ("P-207", "", "open", None),
    ]
    (group,) = [r.alert for r in raised if r.alert.subject]
    assert group.message.startswith(
        "no data from 4 of 5 machines at plant-north (P-201, P-202, P-203, P-204) for 14 min"
    )
    assert "common cause" in group.message

    # A fifth machine falls silent: the same alert covers it, nothing new is raised.
    raised = book.check_no_data(T0 + timedelta(minutes=31))
    assert not [r for r in raised if r.new]
    assert no_data_alerts(book) == [
        ("P-201", "site plant-north", "open", 5.0),
        ("P-207", "", "open", None),
    ]
    assert book.get(group.alert_id).count == 2

    # The first-out machine reports again: the others are still silent, it stays open.
    now = T0 + timedelta(minutes=32)
    for m in ("P-201", "P-202", "P-203"):
        book.last_seen[m] = now
    book.check_no_data(now)
    assert book.get(group.alert_id).status is AlertStatus.OPEN
    assert book.get(group.alert_id).value == 2.0
    for m in ("P-204", "M-101"):
        book.last_seen[m] = now
    (closed,) = [r for r in book.check_no_data(now) if r.alert.alert_id == group.alert_id]
    assert closed.alert.status is AlertStatus.RESOLVED and closed.alert.resolved_by == "system"
    assert not closed.new

    # Next time three fall silent at once it is a new common-cause alert, not a repeat.
    raised = book.check_no_data(now + timedelta(minutes=11))
    assert [(r.new, r.alert.subject, r.alert.value) for r in raised if r.alert.subject] == [
        (True, "site plant-north", 5.0)
    ]


def test_a_machine_already_alerting_on_its_own_keeps_its_alert() -> None:
    book = AlertBook(with_rules(NO_DATA))
    book.last_seen["P-201"] = T0
    (own,) = book.check_no_data(T0 + timedelta(minutes=11))
    for m in ("P-202", "P-203"):
        book.last_seen[m] = T0 + timedelta(minutes=5)
    # Two more silent: with P-201, three, but only two are new; each gets its own alert.
    book.check_no_data(T0 + timedelta(minutes=16))
    assert [s for _, s, _, _ in no_data_alerts(book)] == ["", "", ""]
    book.last_seen["P-204"] = T0 + timedelta(minutes=6)
    book.last_seen["P-205"] = T0 + timedelta(minutes=6)
    book.last_seen["P-206"] = T0 + timedelta(minutes=6)
    book.check_no_data(T0 + timedelta(minutes=17))
    assert no_data_alerts(book) == [
        ("P-201", "", "open", None),
        ("P-202", "", "open", None),
        ("P-203", "", "open", None),
        ("P-204", "site plant-north", "open", 3.0),
    ]
    assert book.get(own.alert.alert_id).count == 3  # its own alert goes on counting
