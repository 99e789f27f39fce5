"""Health score and derived metrics follow their documented formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.plant import MachineSpec, RatedValues, SensorSpec
from twins.health import HealthModel

PUMP = MachineSpec(
    id="P-1",
    type="pump-75kw",
    kind="pump",
    site="s",
    line="l",
    rated=RatedValues(
        current_a=130, voltage_v=400, flow_m3h=300, pressure_bar=6, rpm=2950, power_factor=0.88
    ),
    sensors=[
        SensorSpec(name="current", kind="current", unit="A", normal_high=140, critical_high=160),
        SensorSpec(name="flow", kind="flow", unit="m3/h", normal_low=200, critical_low=150),
        SensorSpec(name="discharge_pressure", kind="pressure", unit="bar"),
        SensorSpec(
            name="bearing_temp", kind="temperature", unit="degC", normal_high=80, critical_high=95
        ),
        SensorSpec(name="rpm", kind="speed", unit="rpm"),
    ],
)
MOTOR = PUMP.model_copy(update={"kind": "motor"})


def test_condition_is_zero_inside_normal_linear_between_and_one_beyond_critical() -> None:
    model = HealthModel(PUMP)
    c = model.condition(np.array([150.0, 175.0, 5.0, 95.0, np.nan]))
    np.testing.assert_allclose(c, [0.5, 0.5, 0.0, 1.0, 0.0])
    assert model.condition(np.array([100.0, 250.0, 5.0, 60.0, 2900.0])).tolist() == [0.0] * 5


def test_health_score_formula() -> None:
    model = HealthModel(PUMP)
    values = np.array([150.0, 250.0, 5.0, 87.5, 2900.0])  # conditions 0.5, 0, -, 0.5 (3 limited)
    condition = 0.7 * 0.5 + 0.3 * (1.0 / 3)
    assert model.score(values) == pytest.approx(100 * (1 - condition), abs=0.01)
    assert model.score(values, failure_risk=0.9) == pytest.approx(10.0)
    assert model.score(np.array([100.0, 250.0, 5.0, 60.0, 2900.0])) == 100.0


def test_pump_metrics_formulas() -> None:
    m = HealthModel(PUMP).metrics(np.array([104.0, 270.0, 5.4, 70.0, 2920.0]))
    assert m["load_fraction"] == pytest.approx(0.8)
    assert m["flow_ratio"] == pytest.approx(0.9)
    assert m["pressure_ratio"] == pytest.approx(0.9)
    assert m["speed_ratio"] == pytest.approx(2920 / 2950, abs=1e-6)
    assert m["performance_index"] == pytest.approx(0.9 / 0.8, abs=1e-6)
    hydraulic = 270 / 3600 * 5.4e5
    electrical = math.sqrt(3) * 400 * 104 * 0.88
    assert m["efficiency"] == pytest.approx(hydraulic / electrical, abs=1e-6)
    assert m["temperature_margin"] == pytest.approx(25.0)


def test_motor_performance_is_speed_and_missing_inputs_give_none() -> None:
    m = HealthModel(MOTOR).metrics(np.array([np.nan, np.nan, np.nan, np.nan, 2950.0]))
    assert m["performance_index"] == pytest.approx(1.0)
    assert (
        m["efficiency"] is None and m["load_fraction"] is None and m["temperature_margin"] is None
    )
