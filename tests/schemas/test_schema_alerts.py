"""Alert rules: the defaults of the alarm-management settings, and every bad combination
refused with the rule and the setting named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.alerts import Alert, Alerting, AlertRule, AlertStatus, default_rules
from schemas.maintenance_api import KpiRequest, ShelveAlert


def refusal(**rule: Any) -> str:
    with pytest.raises(ValidationError) as err:
        AlertRule(**rule)
    return str(err.value)


def test_defaults_per_kind() -> None:
    anomaly = AlertRule(id="a", kind="anomaly")
    assert (anomaly.severity.value, anomaly.escalate_to.value) == ("low", "high")
    assert (anomaly.on_delay_minutes, anomaly.persist_minutes, anomaly.corroborate_minutes) == (
        5.0,
        30.0,
        15.0,
    )
    assert anomaly.anomaly_types == []
    threshold = AlertRule(id="t", kind="threshold", sensor="flow", below=10)
    assert (threshold.severity.value, threshold.on_delay_minutes, threshold.deadband) == (
        "high",
        0.0,
        0.0,
    )
    explicit = AlertRule(id="a", kind="anomaly", severity="medium", on_delay_minutes=0)
    assert (explicit.severity.value, explicit.on_delay_minutes) == ("medium", 0.0)
    assert AlertRule.model_validate_json(explicit.model_dump_json()) == explicit
    lead = AlertRule(
        id="f", kind="failure_probability", within_repair_lead_time=True, probability=0.2
    )
    assert lead.planning_lead_hours == 24.0 and lead.horizon_hours is None
    assert Alerting().max_shelve_minutes == 24 * 60


def test_bad_combinations_name_the_rule_and_the_setting() -> None:
    assert "rule 'a' (anomaly): escalate_to cannot be critical" in refusal(
        id="a", kind="anomaly", escalate_to="critical"
    )
    assert "rule 'a' (anomaly): severity (where an alert on a statistical anomaly starts)" in (
        refusal(id="a", kind="anomaly", severity="critical")
    )
    assert "rule 'a' (anomaly): escalate_to (medium) is below severity (high)" in refusal(
        id="a", kind="anomaly", severity="high", escalate_to="medium"
    )
    assert "rule 'a' (anomaly): deadband applies to threshold rules only" in refusal(
        id="a", kind="anomaly", deadband=2
    )
    assert "rule 't' (threshold): persist_minutes applies to anomaly rules only" in refusal(
        id="t", kind="threshold", sensor="flow", above=1, persist_minutes=10
    )
    assert "rule 'n' (no_data): on_delay_minutes applies to anomaly and threshold rules" in (
        refusal(id="n", kind="no_data", minutes=10, on_delay_minutes=5)
    )
    assert "needs horizon_hours or within_repair_lead_time: true" in refusal(
        id="f", kind="failure_probability", probability=0.3
    )
    assert "give horizon_hours or within_repair_lead_time, not both" in refusal(
        id="f",
        kind="failure_probability",
        probability=0.3,
        horizon_hours=24,
        within_repair_lead_time=True,
    )
    assert "on_delay_minutes" in refusal(id="a", kind="anomaly", on_delay_minutes=-1)
    assert "deadband" in refusal(id="t", kind="threshold", sensor="f", above=1, deadband=-1)
    assert "anomaly_types" in refusal(id="a", kind="anomaly", anomaly_types=["bogus"])


def test_advice_on_a_critical_planning_horizon_and_the_default_rules_take_it() -> None:
    week = AlertRule(
        id="failure-7d",
        kind="failure_probability",
        horizon_hours=168,
        probability=0.3,
        severity="critical",
    )
    assert week.advice() is not None and "plan work (high)" in (week.advice() or "")
    assert week.model_copy(update={"severity": "high"}).advice() is None
    assert [r.advice() for r in default_rules()] == [None] * len(default_rules())
    rules = {r.id: r for r in default_rules()}
    assert rules["failure-7d"].severity.value == "high"
    assert rules["failure-lead-time"].severity.value == "critical"
    assert rules["anomaly"].severity.value == "low"


def test_shelving_and_kpi_requests_are_bounded() -> None:
    with pytest.raises(ValidationError, match="minutes"):
        ShelveAlert(alert_id="AL-0", actor="ana", minutes=0, reason="x")
    with pytest.raises(ValidationError, match="reason"):
        ShelveAlert(alert_id="AL-0", actor="ana", minutes=10, reason="")
    with pytest.raises(ValidationError, match="end\n  Value error, must be after start"):
        KpiRequest(start="2026-11-30T00:00:00Z", end="2026-11-29T00:00:00Z")
    alert = Alert(
        alert_id="AL-0123456789abcdef",
        machine_id="P-201",
        rule_id="anomaly",
        kind="anomaly",
        severity="low",
        message="m",
        first_raised_at="2026-11-30T00:00:00Z",
        last_raised_at="2026-11-30T00:00:00Z",
    )
    assert not alert.shelved
    shelved = alert.model_copy(update={"shelved_until": alert.first_raised_at})
    assert shelved.shelved
    assert not shelved.model_copy(update={"status": AlertStatus.RESOLVED}).shelved
