"""What-if: run the plant simulator's degradation model forward from a twin's state.

The twin does not observe wear directly, so its wear per failure mode is estimated on the
degradation model's *mean path* (:meth:`DegradationModel.mean_path_wear
<twins.simulator.degradation.DegradationModel.mean_path_wear>`):

* every mode starts from the wear its operating age implies (age since installation or its
  last repair);
* when the twin has a RUL prediction, the predicted failure mode gets the wear that leaves
  exactly the predicted median life, and no other mode may be more worn than that (it
  would otherwise be the one predicted to fail first).

This is a first, simple estimator (documented as such in the design notes); a state
estimator fitted to the signals is future work. Then :meth:`DegradationModel.project`
simulates ``n_paths`` futures under the scenario (load factor, ambient temperature,
maintenance now or later, components replaced), and the result is summarised step by
step: failure probability, mean wear, a projected health score
``100 * (1 - max(mean wear of the worst mode, P(fail within the next 7 days | running)))``,
and the remaining-life distribution (median and 90 % interval, ``None`` where more than
that share of paths outlive the horizon) with the failure probability by horizon.

>>> from schemas.plant import MachineSpec, SensorSpec, RatedValues
>>> from twins.machine import MachineTwin
>>> from twins.simulator import DegradationModel, Scenario
>>> spec = MachineSpec(id="P-1", type="pump", kind="pump", site="s", line="l",
...     failure_modes=["bearing_wear", "seal_leak"], installed_hours=20000,
...     sensors=[SensorSpec(name="temp", kind="temperature", unit="degC")])
>>> twin = MachineTwin(spec)
>>> base = what_if(twin, Scenario(), horizon_hours=720, seed=1)
>>> harder = what_if(twin, Scenario(load_factor=1.5), horizon_hours=720, seed=1)
>>> harder.failure_probability[-1] >= base.failure_probability[-1]
True
>>> len(base.hours) == len(base.health) == len(base.failure_probability)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from schemas.common import FailureMode
from schemas.rul import FAILURE_HORIZONS_H
from schemas.whatif import WhatIfRequest
from twins.machine import MachineTwin
from twins.simulator import DegradationModel, DegradationState, MaintenanceAction, Scenario

WEEK_H = 168.0


@dataclass(frozen=True)
class WhatIfResult:
    """A projected trajectory, one entry per reported step (``hours`` from now)."""

    machine_id: str
    scenario: Scenario
    start_wear: dict[str, float]
    hours: list[float]
    failure_probability: list[float]
    mean_wear: dict[str, list[float]]
    health: list[float]
    rul_median_hours: float | None
    rul_lower_hours: float | None
    rul_upper_hours: float | None
    failure_probability_by: dict[int, float]
    failure_mode_share: dict[str, float]
    n_paths: int
    rul_by_step: list[tuple[float | None, float | None, float | None]] = field(default_factory=list)
    """Per reported step, remaining life (median, 5th, 95th percentile) of the paths still
    running then; None where it lies beyond the horizon or no path is still running."""


def estimate_state(
    twin: MachineTwin, model: DegradationModel, now_ms: int | None = None
) -> DegradationState:
    """The twin's wear per failure mode on the model's mean path (see the module notes)."""
    ages = twin.age_hours(now_ms)
    wear: dict[FailureMode, float] = {}
    for mode in model.modes:
        age = ages.get(mode.value, max(ages.values(), default=0.0))
        wear[mode] = model.mean_path_wear(mode, after_hours=age)
    rul = twin.rul
    if rul is not None and rul.failure_mode is not None:
        predicted = FailureMode(rul.failure_mode)
        if predicted in wear:
            cap = model.mean_path_wear(predicted, remaining_hours=rul.median_hours)
            wear = {m: min(w, cap) for m, w in wear.items()}
            wear[predicted] = cap
    return DegradationState(wear, age_hours=max(ages.values(), default=0.0))


def what_if(
    twin: MachineTwin,
    scenario: Scenario,
    *,
    horizon_hours: float = 720.0,
    step_hours: float = 1.0,
    report_every_hours: float = 24.0,
    n_paths: int = 500,
    seed: int = 0,
    model: DegradationModel | None = None,
    now_ms: int | None = None,
) -> WhatIfResult:
    """Project ``twin`` forward under ``scenario`` (the twin itself is not changed)."""
    if report_every_hours <= 0:
        raise ValueError(f"report_every_hours must be positive, got {report_every_hours}")
    model = model or DegradationModel.for_machine(twin.spec)
    state = estimate_state(twin, model, now_ms)
    projection = model.project(
        state,
        scenario,
        horizon_hours=max(horizon_hours, WEEK_H),
        step_hours=step_hours,
        n_paths=n_paths,
        rng=seed,
    )
    hours = projection.hours
    fail = projection.failure_probability
    stride = max(round(report_every_hours / step_hours), 1)
    picks = [k for k in range(0, len(hours), stride) if hours[k] <= horizon_hours]
    week = round(WEEK_H / step_hours)
    health = []
    for k in picks:
        ahead = fail[min(k + week, len(fail) - 1)]
        alive = 1.0 - fail[k]
        risk = (ahead - fail[k]) / alive if alive > 1e-12 else 1.0
        worn = float(projection.mean_wear[k].max())
        health.append(round(100.0 * (1.0 - max(worn, risk)), 3))
    ttf = np.sort(projection.time_to_failure_hours)

    def quantile(q: float, after: float = 0.0) -> float | None:
        alive = ttf[ttf > after] if after > 0 else ttf
        if len(alive) == 0:
            return None
        value = float(alive[min(int(q * len(alive)), len(alive) - 1)])
        return value - after if math.isfinite(value) and value <= horizon_hours else None

    return WhatIfResult(
        machine_id=twin.machine_id,
        scenario=scenario,
        start_wear={m.value: round(w, 6) for m, w in state.wear.items()},
        hours=[float(hours[k]) for k in picks],
        failure_probability=[float(fail[k]) for k in picks],
        mean_wear={
            m.value: [float(projection.mean_wear[k, j]) for k in picks]
            for j, m in enumerate(projection.modes)
        },
        health=health,
        rul_median_hours=quantile(0.5),
        rul_lower_hours=quantile(0.05),
        rul_upper_hours=quantile(0.95),
        failure_probability_by={
            h: float(projection.probability_by(h)) for h in FAILURE_HORIZONS_H if h <= horizon_hours
        },
        failure_mode_share={
            m.value: float(projection.failure_mode_share[j]) for j, m in enumerate(projection.modes)
        },
        n_paths=projection.n_paths,
        rul_by_step=[
            (
                quantile(0.5, float(hours[k])),
                quantile(0.05, float(hours[k])),
                quantile(0.95, float(hours[k])),
            )
            for k in picks
        ],
    )


def scenario_of(request: WhatIfRequest) -> Scenario:
    """The simulator's scenario for an API what-if request."""
    return Scenario(
        load_factor=request.load_factor,
        ambient_c=request.ambient_c,
        actions=tuple(
            MaintenanceAction(
                at_hours=m.delay_days * 24.0, component=m.component, restore_to=m.restore_to
            )
            for m in request.maintenance
        ),
        replaced=tuple(request.replaced),
        sensor_overrides=dict(request.sensor_overrides),
    )
