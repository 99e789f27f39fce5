"""What-if projections from a twin: the per-step remaining life."""

from __future__ import annotations

from schemas.plant import load_plant
from twinfleet.cli import _example_plant_path
from twins.machine import MachineTwin
from twins.simulator import Scenario
from twins.whatif import what_if


def test_each_step_states_the_remaining_life_of_the_paths_still_running() -> None:
    spec = load_plant(_example_plant_path()).machines[0]
    twin = MachineTwin(spec)
    worn = what_if(
        twin,
        Scenario(load_factor=2.5, ambient_c=45),
        horizon_hours=24 * 365,
        report_every_hours=24 * 30,
        n_paths=300,
        seed=3,
    )
    assert len(worn.rul_by_step) == len(worn.hours)
    # at the start, the step's figures are the projection's own
    assert worn.rul_by_step[0] == (
        worn.rul_median_hours,
        worn.rul_lower_hours,
        worn.rul_upper_hours,
    )
    for (median, lower, upper), hours in zip(worn.rul_by_step, worn.hours, strict=True):
        if median is not None:
            assert lower is not None and lower <= median
            assert median + hours <= 24 * 365  # within the horizon
            if upper is not None:
                assert median <= upper
    assert any(m is not None for m, _, _ in worn.rul_by_step)
