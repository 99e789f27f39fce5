"""Health score and derived metrics of a machine, with the formulas written down.

**Sensor condition** ``c_s`` (0..1) for each sensor with limits: 0 inside the normal range,
rising linearly to 1 between the normal and the critical limit, 1 at or beyond it. It is
taken from the last two readings (the one nearer to normal), so a single spike does not
move it, and low limits are ignored while the machine is idle.

**Health score** (0..100)::

    condition = 0.7 * max_s c_s + 0.3 * mean_s c_s      (the worst sensor dominates)
    risk      = P(failure within 168 h)                 (latest RUL prediction, 0 if none)
    health    = 100 * (1 - max(condition, risk))

**Derived metrics** (None where the machine lacks the sensor or rated value):

================== ====================================================================
load_fraction      current / rated current
speed_ratio        speed / rated speed
flow_ratio         flow / rated flow
pressure_ratio     pressure / rated pressure
performance_index  flow_ratio / load_fraction for pumps and compressors (1.0 = output
                   in proportion to input, as rated), speed_ratio for motors and conveyors
efficiency         hydraulic power / electrical input for pumps and compressors:
                   ``(flow[m3/h] / 3600 * pressure[bar] * 1e5) /
                   (sqrt(3) * rated voltage * current * rated power factor)``
temperature_margin smallest (critical_high - value) over temperature sensors, in their unit
================== ====================================================================

>>> from schemas.plant import MachineSpec, SensorSpec, RatedValues
>>> spec = MachineSpec(id="P-1", type="pump", kind="pump", site="s", line="l",
...     rated=RatedValues(current_a=100, voltage_v=400, flow_m3h=200, pressure_bar=5),
...     sensors=[SensorSpec(name="current", kind="current", unit="A"),
...              SensorSpec(name="flow", kind="flow", unit="m3/h"),
...              SensorSpec(name="pressure", kind="pressure", unit="bar"),
...              SensorSpec(name="bearing_temp", kind="temperature", unit="degC",
...                         normal_high=80, critical_high=100)])
>>> model = HealthModel(spec)
>>> import numpy as np
>>> m = model.metrics(np.array([80.0, 180.0, 4.5, 90.0]))
>>> m["load_fraction"], m["flow_ratio"], m["temperature_margin"]
(0.8, 0.9, 10.0)
>>> round(m["efficiency"], 3)
0.478
>>> model.score(np.array([80.0, 180.0, 4.5, 90.0]), failure_risk=0.1)
50.0
"""

from __future__ import annotations

import math

import numpy as np

from schemas.common import MachineKind, SensorKind
from schemas.plant import MachineSpec

WORST_WEIGHT = 0.7
RISK_HORIZON_H = 168


class HealthModel:
    """Health score and derived metrics for one machine specification."""

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        sensors = spec.sensors

        def arr(name: str) -> np.ndarray:
            return np.array(
                [np.nan if getattr(s, name) is None else getattr(s, name) for s in sensors]
            )

        nl, nh, cl, ch = (
            arr("normal_low"),
            arr("normal_high"),
            arr("critical_low"),
            arr("critical_high"),
        )
        self._nh = np.where(np.isnan(nh), ch, nh)
        self._ch = np.where(np.isnan(ch), nh, ch)
        self._nl = np.where(np.isnan(nl), cl, nl)
        self._cl = np.where(np.isnan(cl), nl, cl)
        self._span_hi = np.where(self._ch > self._nh, self._ch - self._nh, np.inf)
        self._span_lo = np.where(self._nl > self._cl, self._nl - self._cl, np.inf)
        self._limited = ~(np.isnan(self._nh) & np.isnan(self._nl))
        self._any_limits = bool(self._limited.any())
        # Where a sensor's condition starts to rise (the nearer of its two limits per side).
        self._rise_hi = np.fmin(self._nh, self._ch)
        self._rise_lo = np.fmax(self._nl, self._cl)
        self._first = {
            k: next((i for i, s in enumerate(sensors) if s.kind == k), None) for k in SensorKind
        }
        self._temps = np.array(
            [
                i
                for i, s in enumerate(sensors)
                if s.kind == SensorKind.TEMPERATURE and s.critical_high is not None
            ],
            dtype=np.int64,
        )
        self._temp_limits = np.array(
            [sensors[i].critical_high for i in self._temps], dtype=np.float64
        )

    def condition(
        self, values: np.ndarray, previous: np.ndarray | None = None, running: bool = True
    ) -> np.ndarray:
        """``c_s`` per sensor (0 where unknown or without limits).

        Given the ``previous`` readings too, a limit counts only when the last two readings
        both passed it, so one spike does not move the health score. While the machine is
        idle (``running`` false) low limits do not apply.
        """
        high, low = values, values
        if previous is not None:
            high, low = np.fmin(values, previous), np.fmax(values, previous)
        with np.errstate(invalid="ignore"):
            c = np.where(high >= self._ch, 1.0, (high - self._nh) / self._span_hi)
            if running:
                c = np.fmax(c, np.where(low <= self._cl, 1.0, (self._nl - low) / self._span_lo))
            c = np.fmax(c, 0.0)  # fmax: unknown (NaN) counts as 0
        return np.minimum(c, 1.0)

    def score(self, values: np.ndarray, failure_risk: float = 0.0) -> float:
        return self.score_condition(self.condition(values), failure_risk)

    def score_condition(self, condition: np.ndarray, failure_risk: float = 0.0) -> float:
        """The health score from per-sensor conditions already computed."""
        c = condition[self._limited]
        overall = (
            WORST_WEIGHT * float(c.max()) + (1 - WORST_WEIGHT) * float(c.mean()) if c.size else 0.0
        )
        return _health(overall, failure_risk)

    def assess(
        self,
        values: np.ndarray,
        previous: np.ndarray | None = None,
        running: bool = True,
        failure_risk: float = 0.0,
    ) -> tuple[float, bool]:
        """The health score and whether any sensor is at or beyond a critical limit:
        ``score_condition(condition(values, previous, running), failure_risk)`` and
        ``(condition(...) >= 1).any()``, with the usual case (no reading near a limit, so
        every ``c_s`` is 0) answered without the formulas."""
        if self._any_limits:
            high, low = values, values
            if previous is not None:
                high, low = np.fmin(values, previous), np.fmax(values, previous)
            # Below where the high side starts rising (and, running, above where the low
            # side does) every c_s is 0 (or -0.0, which scores the same); NaN compares
            # False and counts as 0 in the formulas too.
            if (high >= self._rise_hi).any() or (running and (low <= self._rise_lo).any()):
                condition = self.condition(values, previous, running)
                return (
                    self.score_condition(condition, failure_risk),
                    bool((condition >= 1.0).any()),
                )
        return _health(0.0, failure_risk), False

    def _value(self, values: np.ndarray, kind: SensorKind) -> float | None:
        i = self._first[kind]
        if i is None or math.isnan(values[i]):
            return None
        return float(values[i])

    def metrics(self, values: np.ndarray) -> dict[str, float | None]:
        rated = self.spec.rated

        def ratio(v: float | None, r: float | None) -> float | None:
            return None if v is None or not r else round(v / r, 6)

        current = self._value(values, SensorKind.CURRENT)
        flow = self._value(values, SensorKind.FLOW)
        pressure = self._value(values, SensorKind.PRESSURE)
        load = ratio(current, rated.current_a)
        speed = ratio(self._value(values, SensorKind.SPEED), rated.rpm)
        flow_r = ratio(flow, rated.flow_m3h)
        out: dict[str, float | None] = {
            "load_fraction": load,
            "speed_ratio": speed,
            "flow_ratio": flow_r,
            "pressure_ratio": ratio(pressure, rated.pressure_bar),
        }
        fluid = self.spec.kind in (MachineKind.PUMP, MachineKind.COMPRESSOR)
        if fluid:
            out["performance_index"] = (
                round(flow_r / load, 6) if flow_r is not None and load else None
            )
        else:
            out["performance_index"] = speed
        efficiency = None
        if fluid and None not in (flow, pressure, current) and rated.voltage_v and current:
            hydraulic = flow / 3600.0 * pressure * 1e5  # type: ignore[operator]
            electrical = math.sqrt(3) * rated.voltage_v * current * rated.power_factor
            efficiency = round(hydraulic / electrical, 6)
        out["efficiency"] = efficiency
        if self._temps.size:
            t = values[self._temps]
            known = ~np.isnan(t)
            out["temperature_margin"] = (
                round(float((self._temp_limits[known] - t[known]).min()), 6)
                if known.any()
                else None
            )
        else:
            out["temperature_margin"] = None
        return out


def _health(condition: float, failure_risk: float) -> float:
    """The health score of a machine whose overall condition is ``condition``."""
    return round(100.0 * (1.0 - max(condition, failure_risk, 0.0)), 2)
