"""The maintenance policy: when a prediction calls for a predictive work order, and what
that order needs (from the machine type's maintenance catalogue).

>>> from schemas.plant import load_plant
>>> from schemas.rul import RulPrediction, SurvivalPoint
>>> spec = load_plant("twinfleet/plants/example.yaml").machine("P-201")
>>> p = RulPrediction(machine_id="P-201", failure_mode="bearing_wear", median_hours=150,
...     lower_hours=90, upper_hours=400, survival_curve=[SurvivalPoint(hours=0,
...     survival_probability=1.0)], failure_probability={24: 0.01, 72: 0.05, 168: 0.4,
...     336: 0.7, 720: 0.95}, model_version="v1", predicted_at=1_700_000_000_000)
>>> print(policy_crossed(spec, p))
median RUL 150 h is below 168 h; P(failure within 168 h) = 0.40 is above 0.3
>>> task_for(spec, p.failure_mode).parts
['BRG-6312-C3', 'BRG-NU312']
"""

from __future__ import annotations

from maintenance.alerts import failure_within
from schemas.anomaly import AnomalyRecord, AnomalyType, Severity
from schemas.common import FailureMode
from schemas.maintenance import Priority
from schemas.plant import MachineSpec, MaintenanceTask
from schemas.rul import RulPrediction

GENERIC_TASK_HOURS = 4.0


def policy_crossed(spec: MachineSpec, p: RulPrediction) -> str | None:
    """Why ``p`` crosses the machine's policy (None: it does not)."""
    policy = spec.policy
    reasons = []
    if p.median_hours < policy.rul_median_below_hours:
        reasons.append(
            f"median RUL {p.median_hours:.0f} h is below {policy.rul_median_below_hours:g} h"
        )
    prob = failure_within(p, policy.failure_within_hours)
    if prob > policy.failure_probability_above:
        reasons.append(
            f"P(failure within {policy.failure_within_hours} h) = {prob:.2f} is above "
            f"{policy.failure_probability_above:g}"
        )
    return "; ".join(reasons) or None


def condition_crossed(spec: MachineSpec, anomaly: AnomalyRecord) -> str | None:
    """Why ``anomaly`` calls for a condition-based work order (None: it does not): a
    limit alarm of critical severity on a sensor of one of the policy's
    ``condition_kinds`` (vibration and temperature by default; process variables such as
    speed or pressure follow set-points, so their limits are the operators' matter)."""
    if anomaly.type is not AnomalyType.THRESHOLD or anomaly.severity is not Severity.CRITICAL:
        return None
    name = (anomaly.sensor_id or "").removeprefix(f"{spec.id}.")
    sensor = next((s for s in spec.sensors if s.name == name), None)
    if sensor is None or sensor.kind not in spec.policy.condition_kinds:
        return None
    return f"{name} beyond its critical limit ({anomaly.reason})"


def task_for(spec: MachineSpec, mode: FailureMode | str | None) -> MaintenanceTask:
    """The catalogue's task for ``mode``; without one, a generic inspection-sized task."""
    for task in spec.maintenance:
        if task.failure_mode == mode:
            return task
    return MaintenanceTask(
        failure_mode=FailureMode(mode) if mode in set(FailureMode) else FailureMode.BEARING_WEAR,
        duration_hours=GENERIC_TASK_HOURS,
    )


def urgency(spec: MachineSpec, p: RulPrediction) -> Priority:
    """Critical when the interval's lower bound is within 3 days, high within 7."""
    if p.lower_hours <= 72:
        return Priority.CRITICAL
    if p.lower_hours <= 168 or spec.critical:
        return Priority.HIGH
    return Priority.MEDIUM
