"""The alert book on its own (pure): grouping, severity, life cycle, escalation periods."""

from __future__ import annotations

from datetime import timedelta

import pytest

from maintenance.alerts import AlertBook, failure_within
from maintenance.errors import Conflict, NotFound
from schemas.alerts import AlertStatus
from schemas.anomaly import AnomalyRecord
from schemas.common import datetime_to_ms
from schemas.maintenance_api import AlertFilter
from tests.maintenance.test_service import T0, plant, prediction


def anomaly(sensor: str, kind: str, severity: str, minutes: int = 0) -> AnomalyRecord:
    return AnomalyRecord(
        machine_id="P-201",
        sensor_id=f"P-201.{sensor}",
        timestamp=datetime_to_ms(T0 + timedelta(minutes=minutes)),
        type=kind,
        severity=severity,
        score=0.9,
        reason=f"{kind} on {sensor}",
        detector=kind,
    )


def test_one_alert_per_sensor_whatever_the_detector_and_the_worst_severity_wins() -> None:
    book = AlertBook(plant())
    first = book.on_anomaly(anomaly("vibration", "spike", "high"), T0)
    again = book.on_anomaly(anomaly("vibration", "threshold", "critical", 1), T0)
    other = book.on_anomaly(anomaly("flow", "spike", "high"), T0)
    below = book.on_anomaly(anomaly("flow", "stale", "medium"), T0)  # under the rule's high
    assert [r.new for r in first + again + other] == [True, False, True] and below == []
    (vib,) = [a for a in book.alerts.values() if a.subject == "vibration"]
    assert (vib.count, vib.severity.value, vib.message) == (
        2,
        "critical",
        "threshold anomaly on P-201.vibration: threshold on vibration",
    )
    assert [a.subject for a in book.select(AlertFilter(min_severity="critical"))] == ["vibration"]


def test_life_cycle_and_escalation_periods() -> None:
    book = AlertBook(plant())
    (raised,) = book.on_anomaly(anomaly("vibration", "threshold", "critical"), T0)
    alert = raised.alert
    # the example plant's escalation period for this rule is the plant's 30 minutes
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
    book = AlertBook(plant())
    calm = prediction("P-201", T0, median=900, lower=400)
    assert book.on_rul(calm, T0) == []
    worn = prediction("P-201", T0, median=200, lower=90)
    assert {r.alert.rule_id for r in book.on_rul(worn, T0)} == {"rul-low", "failure-7d"}
    p = worn.failure_probability
    assert failure_within(worn, 168) == pytest.approx(p[168])
    assert failure_within(worn, 120) == pytest.approx(p[72] + (p[168] - p[72]) * 48 / 96)
    assert failure_within(worn, 2000) == pytest.approx(p[720])


def test_an_anomaly_alert_returns_to_normal_when_its_condition_stops() -> None:
    book = AlertBook(plant())  # the example plant's anomaly rule: clear after 60 minutes
    (first,) = book.on_anomaly(anomaly("vibration", "spike", "high"), T0)
    book.on_anomaly(anomaly("vibration", "spike", "high"), T0 + timedelta(minutes=30))
    assert book.clear_quiet(T0 + timedelta(minutes=89)) == []
    (cleared,) = book.clear_quiet(T0 + timedelta(minutes=90))
    assert cleared.alert_id == first.alert.alert_id and cleared.status is AlertStatus.RESOLVED
    assert cleared.resolved_by == "system" and cleared.note.startswith("returned to normal")
    assert book.clear_quiet(T0 + timedelta(hours=5)) == []
    (again,) = book.on_anomaly(anomaly("vibration", "spike", "high"), T0 + timedelta(hours=6))
    assert again.new
