"""Condition-based work orders: a condition sensor confirmed beyond its critical limit gets
the machine a predictive order even when its RUL model sees nothing (pure, no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from maintenance.orders import CONDITION_SOURCE, WorkOrderBook
from maintenance.policy import condition_crossed
from schemas.anomaly import AnomalyRecord
from schemas.common import datetime_to_ms
from schemas.maintenance import Priority, WorkOrderType
from schemas.plant import Plant, load_plant
from schemas.rul import RulPrediction, SurvivalPoint
from twinfleet.cli import _example_plant_path

NOW = datetime(2026, 1, 5, 6, 20, tzinfo=UTC)


def plant() -> Plant:
    return load_plant(_example_plant_path())


def limit_alarm(
    sensor: str, severity: str = "critical", machine: str = "CV-408", kind: str = "threshold"
) -> AnomalyRecord:
    return AnomalyRecord(
        machine_id=machine,
        sensor_id=f"{machine}.{sensor}",
        timestamp=datetime_to_ms(NOW),
        type=kind,
        severity=severity,
        score=0.97,
        value=9.02,
        expected_value=4.5,
        reason=f"{sensor} 9.02 is above critical_high 9",
        detector="limits",
    )


def calm_prediction(machine: str = "CV-408", median: float = 1950.0) -> RulPrediction:
    """What CV-408's model said on seed 9 while its vibration was beyond 9 mm/s."""
    return RulPrediction(
        machine_id=machine,
        failure_mode="misalignment",
        median_hours=median,
        lower_hours=median / 2,
        upper_hours=median * 1.5,
        survival_curve=[SurvivalPoint(hours=0, survival_probability=1.0)],
        failure_probability={24: 0.0, 72: 0.0, 168: 0.0, 336: 0.01, 720: 0.05},
        model_version="conveyor-drive-aft-test",
        predicted_at=datetime_to_ms(NOW),
    )


def test_only_a_critical_limit_on_a_condition_sensor_crosses_the_policy() -> None:
    spec = plant().machine("CV-408")
    assert "vibration beyond its critical limit" in (
        condition_crossed(spec, limit_alarm("vibration")) or ""
    )
    assert condition_crossed(spec, limit_alarm("bearing_temp")) is not None
    # Below the critical limit, a learned detector, or a process variable: no order.
    assert condition_crossed(spec, limit_alarm("vibration", severity="high")) is None
    assert condition_crossed(spec, limit_alarm("vibration", kind="statistical")) is None
    assert condition_crossed(spec, limit_alarm("belt_speed")) is None
    # A plant that wants predictions only says so in the policy.
    quiet = spec.model_copy(
        update={"policy": spec.policy.model_copy(update={"condition_kinds": ()})}
    )
    assert condition_crossed(quiet, limit_alarm("vibration")) is None


def test_a_critical_vibration_makes_one_order_due_within_the_policy_horizon() -> None:
    book = WorkOrderBook(plant())
    order = book.consider_condition(limit_alarm("vibration"), calm_prediction(), NOW)
    assert order is not None
    assert order.type is WorkOrderType.PREDICTIVE and order.source == CONDITION_SOURCE
    assert order.priority is Priority.HIGH
    assert order.failure_mode is not None and order.failure_mode.value == "misalignment"
    assert order.due_by == NOW + timedelta(hours=168)
    assert "condition-based" in (order.description or "")
    # Once: not again while it is open, nor for another condition sensor.
    later = NOW + timedelta(hours=1)
    assert book.consider_condition(limit_alarm("vibration"), calm_prediction(), later) is None
    assert book.consider_condition(limit_alarm("bearing_temp"), None, later) is None
    assert len(book.open_orders("CV-408")) == 1
    # The calm model does not push its deadline back; a sooner prediction brings it forward.
    book.consider(calm_prediction(), later)
    assert book.get(order.workorder_id).due_by == NOW + timedelta(hours=168)
    book.consider(calm_prediction(median=40.0), later)
    assert book.get(order.workorder_id).due_by == NOW + timedelta(hours=20)  # its lower bound


def test_without_a_prediction_the_order_is_an_inspection() -> None:
    book = WorkOrderBook(plant())
    order = book.consider_condition(limit_alarm("vibration", machine="CV-403"), None, NOW)
    assert order is not None and order.title.startswith("Inspect Assembly conveyor drive 3")
    assert order.failure_prediction is None
    # An unknown machine is not an error here (the alert book counts it): nothing happens.
    assert book.consider_condition(limit_alarm("vibration", machine="X-1"), None, NOW) is None
