"""The maintenance policy (pure, no servers): when a prediction calls for a predictive work
order and why, when a limit alarm does, which catalogue task an order needs, and how urgent
it is. Thresholds are strict ("below", "above"); values are worked out by hand."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maintenance.policy import (
    GENERIC_TASK_HOURS,
    condition_crossed,
    policy_crossed,
    task_for,
    urgency,
)
from schemas.anomaly import AnomalyRecord
from schemas.common import FailureMode
from schemas.maintenance import Priority
from schemas.plant import MachineSpec, Plant, parse_plant
from schemas.rul import RulPrediction, SurvivalPoint

T = 1_764_400_020_000


def plant(**policy: object) -> Plant:
    """One pump type (vibration, bearing temperature, pressure) on two machines, P-2 of
    them critical; median below 200 h or P(failure within 100 h) above 0.3 crosses."""
    return parse_plant(
        {
            "name": "policy-test",
            "machine_types": {
                "pump": {
                    "kind": "pump",
                    "sensors": [
                        {"name": "vibration", "kind": "vibration", "unit": "mm/s"},
                        {"name": "bearing_temp", "kind": "temperature", "unit": "degC"},
                        {"name": "pressure", "kind": "pressure", "unit": "bar"},
                    ],
                    "failure_modes": ["bearing_wear", "seal_leak"],
                    "maintenance": [
                        {
                            "failure_mode": "seal_leak",
                            "skills": ["mechanical", "seals"],
                            "parts": ["SEAL-1", "GASKET-2"],
                            "duration_hours": 6,
                            "parts_cost": 450,
                        },
                        {"failure_mode": "bearing_wear", "duration_hours": 3},
                    ],
                    "policy": {
                        "rul_median_below_hours": 200,
                        "failure_within_hours": 100,
                        "failure_probability_above": 0.3,
                        **policy,
                    },
                }
            },
            "sites": [
                {
                    "id": "north",
                    "lines": [
                        {
                            "id": "L1",
                            "machines": [
                                {"id": "P-1", "type": "pump"},
                                {"id": "P-2", "type": "pump", "critical": True},
                            ],
                        }
                    ],
                }
            ],
        }
    )


def pump(machine: str = "P-1", **policy: object) -> MachineSpec:
    return plant(**policy).machine(machine)


@cache
def pump_168() -> MachineSpec:
    """P-1 with the policy horizon at a stated one (168 h), built once for the laws."""
    return pump(failure_within_hours=168)


def prediction(
    median: float = 1000.0,
    lower: float | None = None,
    p72: float = 0.0,
    p168: float = 0.0,
    mode: str | None = "seal_leak",
) -> RulPrediction:
    low = median / 2 if lower is None else lower
    return RulPrediction(
        machine_id="P-1",
        failure_mode=mode,
        median_hours=median,
        lower_hours=low,
        upper_hours=median * 2,
        survival_curve=[SurvivalPoint(hours=0, survival_probability=1.0)],
        failure_probability={24: 0.0, 72: p72, 168: p168, 336: max(p168, 0.9), 720: 1.0},
        model_version="v1",
        predicted_at=T,
    )


def alarm(
    sensor: str | None = "vibration",
    machine: str = "P-1",
    severity: str = "critical",
    kind: str = "threshold",
) -> AnomalyRecord:
    return AnomalyRecord(
        machine_id=machine,
        sensor_id=None if sensor is None else f"{machine}.{sensor}",
        timestamp=T,
        type=kind,
        severity=severity,
        score=0.99,
        reason="9.5 is above critical_high 9",
        detector="limits",
    )


# -- policy_crossed ----------------------------------------------------------------------------


def test_a_calm_prediction_does_not_cross() -> None:
    assert policy_crossed(pump(), prediction(median=1000, p72=0.05, p168=0.1)) is None


def test_a_short_median_crosses_and_says_so() -> None:
    assert policy_crossed(pump(), prediction(median=150)) == "median RUL 150 h is below 200 h"


def test_the_failure_probability_is_interpolated_at_the_policy_horizon() -> None:
    # 100 h lies between the stated 72 h (0.2) and 168 h (0.68): 0.2 + 0.48 * 28 / 96 = 0.34
    reason = policy_crossed(pump(), prediction(p72=0.2, p168=0.68))
    assert reason == "P(failure within 100 h) = 0.34 is above 0.3"
    # 0.2 + 0.38 * 28 / 96 = 0.3108..., still above; 0.2 + 0.3 * 28 / 96 = 0.2875, not
    assert policy_crossed(pump(), prediction(p72=0.2, p168=0.58)) is not None
    assert policy_crossed(pump(), prediction(p72=0.2, p168=0.5)) is None


def test_both_reasons_are_given() -> None:
    reason = policy_crossed(pump(), prediction(median=20.4, p72=0.9, p168=0.95))
    # 0.9 + 0.05 * 28 / 96 = 0.9146 -> 0.91
    assert reason == ("median RUL 20 h is below 200 h; P(failure within 100 h) = 0.91 is above 0.3")


def test_the_thresholds_are_strict() -> None:
    spec = pump(failure_within_hours=72, failure_probability_above=0.25)
    assert policy_crossed(spec, prediction(median=200, p72=0.25, p168=0.25)) is None
    assert policy_crossed(spec, prediction(median=199.99, p72=0.25, p168=0.25)) is not None
    assert policy_crossed(spec, prediction(median=200, p72=0.2501, p168=0.3)) is not None


def test_a_horizon_beyond_the_last_stated_one_uses_the_last() -> None:
    spec = pump(failure_within_hours=2000, failure_probability_above=0.95)
    assert policy_crossed(spec, prediction()) == "P(failure within 2000 h) = 1.00 is above 0.95"


medians = st.floats(0, 5000, allow_nan=False)
probabilities = st.floats(0, 1, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(medians, probabilities, probabilities)
def test_crossed_exactly_when_a_threshold_is_passed(median: float, a: float, b: float) -> None:
    p72, p168 = sorted((a, b))
    reason = policy_crossed(pump_168(), prediction(median, 0, p72, p168))
    short, likely = median < 200, p168 > 0.3
    assert (reason is not None) == (short or likely)
    assert ("median RUL" in (reason or "")) == short
    assert ("P(failure within 168 h)" in (reason or "")) == likely


# -- condition_crossed -------------------------------------------------------------------------


def test_a_critical_limit_on_a_condition_sensor_crosses() -> None:
    assert condition_crossed(pump(), alarm("vibration")) == (
        "vibration beyond its critical limit (9.5 is above critical_high 9)"
    )
    assert condition_crossed(pump(), alarm("bearing_temp")) is not None


@pytest.mark.parametrize(
    "anomaly",
    [
        alarm("pressure"),  # a process variable
        alarm("vibration", severity="high"),
        alarm("vibration", kind="statistical"),
        alarm(None),  # a machine-level anomaly
        alarm("flow"),  # not a sensor of this machine type
        alarm("vibration", machine="P-2"),  # another machine's sensor
    ],
    ids=["process-variable", "not-critical", "not-a-limit", "no-sensor", "unknown", "other"],
)
def test_other_anomalies_do_not_cross(anomaly: AnomalyRecord) -> None:
    assert condition_crossed(pump("P-1"), anomaly) is None


def test_the_policy_chooses_the_condition_kinds() -> None:
    assert condition_crossed(pump(condition_kinds=["pressure"]), alarm("pressure")) is not None
    assert condition_crossed(pump(condition_kinds=["pressure"]), alarm("vibration")) is None
    assert condition_crossed(pump(condition_kinds=[]), alarm("vibration")) is None


# -- task_for --------------------------------------------------------------------------------


def test_the_catalogue_task_for_a_failure_mode() -> None:
    task = task_for(pump(), FailureMode.SEAL_LEAK)
    assert task.failure_mode is FailureMode.SEAL_LEAK
    assert (task.skills, task.parts) == (["mechanical", "seals"], ["SEAL-1", "GASKET-2"])
    assert (task.duration_hours, task.parts_cost) == (6.0, 450.0)
    assert task_for(pump(), "seal_leak") == task  # the wire's string names it too
    assert task_for(pump(), "bearing_wear").duration_hours == 3.0


def test_without_a_catalogue_task_a_generic_inspection() -> None:
    task = task_for(pump(), FailureMode.MISALIGNMENT)
    assert task.failure_mode is FailureMode.MISALIGNMENT
    assert (task.skills, task.parts, task.parts_cost) == ([], [], 0.0)
    assert task.duration_hours == GENERIC_TASK_HOURS == 4.0
    unknown = task_for(pump(), None)  # no mode: an inspection sized like one
    assert (unknown.skills, unknown.parts, unknown.duration_hours) == ([], [], 4.0)


# -- urgency -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "machine", "want"),
    [
        (0, "P-1", Priority.CRITICAL),
        (72, "P-1", Priority.CRITICAL),
        (72.01, "P-1", Priority.HIGH),
        (168, "P-1", Priority.HIGH),
        (168.01, "P-1", Priority.MEDIUM),
        (5000, "P-1", Priority.MEDIUM),
        (5000, "P-2", Priority.HIGH),  # a critical machine is never less than high
        (72, "P-2", Priority.CRITICAL),
    ],
)
def test_urgency_from_the_interval_lower_bound(lower: float, machine: str, want: Priority) -> None:
    assert urgency(pump(machine), prediction(median=6000, lower=lower)) is want


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 5000), st.floats(0, 5000))
def test_a_sooner_lower_bound_is_never_less_urgent(a: float, b: float) -> None:
    rank = [Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL]
    sooner, later = sorted((a, b))
    spec = pump_168()
    u_sooner = urgency(spec, prediction(median=6000, lower=sooner))
    u_later = urgency(spec, prediction(median=6000, lower=later))
    assert rank.index(u_sooner) >= rank.index(u_later)
