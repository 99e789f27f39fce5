"""Degradation model, load profiles and what-if projections of the plant simulator."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Any, cast

import numpy as np
import pytest

from schemas.common import FailureMode, MachineKind
from schemas.plant import MachineSpec, SensorSpec
from twins.simulator import (
    DEFAULT_FAILURE_MODES,
    DegradationModel,
    DegradationState,
    LoadProfile,
    MaintenanceAction,
    Scenario,
    failure_modes_for,
)

B = FailureMode.BEARING_WEAR
S = FailureMode.SEAL_LEAK
W = FailureMode.WINDING_INSULATION
M = FailureMode.MISALIGNMENT


# -- load profiles ---------------------------------------------------------------------


def test_load_profile_is_a_pure_seeded_function_of_time() -> None:
    hours = np.arange(0.0, 24 * 7 * 3)
    a = LoadProfile("motor", seed=5)
    first = a.load_at(hours)
    # asking out of order, one at a time, or from a twin built with the same seed agrees
    assert [a.load_at(float(h)) for h in hours[::-1][:50]] == first[::-1][:50].tolist()
    assert np.array_equal(LoadProfile("motor", seed=5).load_at(hours), first)
    assert not np.array_equal(LoadProfile("motor", seed=6).load_at(hours), first)
    assert a.load_at(10.25) == a.load_at(10.0) == a.load_at(np.array(10.9))
    assert first.min() >= 0.0 and first.max() <= 1.2


def test_load_profile_follows_shifts_weekends_and_idle_time() -> None:
    conveyor = LoadProfile("conveyor", seed=1).load_at(np.arange(0.0, 24 * 7 * 8))
    by_hour = conveyor.reshape(-1, 24)  # one row per day, day 0 = Monday
    weekday = np.arange(by_hour.shape[0]) % 7 < 5
    assert (by_hour[:, 22:] == 0).all() and (by_hour[:, :6] == 0).all()  # no night shift
    assert (by_hour[~weekday] == 0).all()  # stopped at weekends
    day_shift = by_hour[weekday][:, 6:22]
    assert 0.5 < day_shift[day_shift > 0].mean() < 1.1
    assert (day_shift == 0).mean() > 0.0  # some idle blocks

    pump = LoadProfile("pump", seed=1, idle_fraction=0.0).load_at(np.arange(0.0, 24 * 7 * 8))
    days = pump.reshape(-1, 24)
    wd = np.arange(days.shape[0]) % 7 < 5
    assert days[~wd].mean() < days[wd].mean() * 0.9  # quieter weekends
    assert days[wd][:, 6:14].mean() > days[wd][:, 22:].mean()  # morning busier than night
    assert (pump > 0).all()  # a process pump without idle time never stops


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"kind": "toaster"}, "kind"),
        ({"seed": -1}, "seed"),
        ({"shift_loads": (0.5, 0.5)}, "shift_loads"),
        ({"shift_loads": (0.5, 0.5, 1.5)}, "shift_loads"),
        ({"weekend_factor": 1.5}, "weekend_factor"),
        ({"idle_fraction": 1.0}, "idle_fraction"),
        ({"idle_block_hours": 0}, "idle_block_hours"),
        ({"noise": float("nan")}, "noise"),
        ({"level": 0}, "level"),
    ],
)
def test_load_profile_rejects_bad_arguments(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        LoadProfile(**kwargs)  # type: ignore[arg-type]


# -- failure modes and state ---------------------------------------------------------------


def test_failure_modes_per_kind_and_spec_override() -> None:
    assert failure_modes_for("motor") == (B, W, M)
    assert failure_modes_for(MachineKind.PUMP) == (B, S, M)
    assert failure_modes_for("compressor") == (B, S, W)
    assert failure_modes_for("conveyor") == (B, M)
    spec = MachineSpec(
        id="P-9",
        type="pump-x",
        kind="pump",
        site="s",
        line="l",
        failure_modes=[S],
        sensors=[SensorSpec(name="flow", kind="flow", unit="m3/h")],
    )
    assert failure_modes_for(spec) == (S,)
    assert DegradationModel.for_machine(spec).modes == (S,)
    with pytest.raises(ValueError, match="machine kind"):
        failure_modes_for("toaster")


def test_state_is_an_immutable_value() -> None:
    state = DegradationState({B: 0.7, S: 0.2}, age_hours=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.age_hours = 11.0  # type: ignore[misc]
    repaired = state.with_repair(B, restore_to=0.1)
    assert repaired.wear == {B: 0.1, S: 0.2} and state.wear == {B: 0.7, S: 0.2}
    assert state.with_repair(None).wear == {B: 0.05, S: 0.05}
    assert state.worst_mode() is B and state.worst_wear == 0.7
    failed = DegradationState({B: 1.0, S: 0.2}, failed_mode="bearing_wear")  # type: ignore[arg-type]
    assert failed.is_failed and not failed.with_repair(B).is_failed
    assert failed.with_repair(S).is_failed  # fixing the wrong part does not restart it
    with pytest.raises(ValueError, match="failed_mode"):
        DegradationState({B: 0.2}, failed_mode=S)
    with pytest.raises(ValueError, match="age_hours"):
        DegradationState({B: 0.2}, age_hours=-1)
    with pytest.raises(ValueError, match="wear"):
        DegradationState({"rust": 0.2})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="restore_to"):
        state.with_repair(B, restore_to=1.0)
    with pytest.raises(ValueError, match="mode"):
        state.with_repair(W)


# -- the gamma process ---------------------------------------------------------------------


def test_base_rate_follows_the_documented_parametrisation() -> None:
    model = DegradationModel("pump", mtbf_hours=3000, wear_acceleration=4.0)
    c = 4.0
    lives = model.mode_life_hours
    # mode lives keep the documented ratios, scaled by one common factor
    assert lives[S] / lives[B] == pytest.approx(1.2 / 0.8)
    assert lives[M] / lives[B] == pytest.approx(2.0 / 0.8)
    for mode in model.modes:
        assert model.base_rate[mode] == pytest.approx((1 - math.exp(-c)) / (c * lives[mode]))
    # and the factor does not depend on the MTBF: time simply scales
    other = DegradationModel("pump", mtbf_hours=1500, wear_acceleration=4.0)
    assert other.mode_life_hours[B] == pytest.approx(lives[B] / 2)


@pytest.mark.parametrize("modes", ["pump", "motor", ["bearing_wear"]])
def test_a_new_machine_at_rated_load_lasts_its_mtbf(modes: str | list[str]) -> None:
    model = DegradationModel(modes, mtbf_hours=1000)  # type: ignore[arg-type]
    new = DegradationState.new(model.modes)
    p = model.project(new, horizon_hours=8000, step_hours=1.0, n_paths=2000, rng=3)
    assert np.isfinite(p.time_to_failure_hours).all()
    assert p.time_to_failure_hours.mean() == pytest.approx(1000, rel=0.04)


def test_acceleration_factors() -> None:
    model = DegradationModel(["bearing_wear", "seal_leak", "winding_insulation", "misalignment"])
    rated = model.acceleration(1.0, 25.0)
    assert rated == pytest.approx(np.ones(4))
    over = model.acceleration(1.2, 25.0) / rated
    assert over[0] == pytest.approx(1.2**3)  # bearings: load cubed
    assert over[1] == pytest.approx(1.2**1.5)  # seals
    assert over[3] == pytest.approx(1.2)  # alignment
    # windings: +10 degC of winding temperature doubles ageing (Montsinger)
    assert model.acceleration(1.0, 35.0)[2] == pytest.approx(2.0)
    assert model.acceleration(1.2, 25.0)[2] == pytest.approx(2 ** (45 * (1.44 - 1) / 10))
    assert model.acceleration(1.0, 40.0)[0] == pytest.approx(2.0)  # grease life
    assert model.acceleration(0.0, 25.0)[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(("wear", "load", "ambient"), [(0.0, 1.0, 25.0), (0.5, 0.8, 32.0)])
def test_mean_and_variance_of_increments_match_the_gamma_process(
    wear: float, load: float, ambient: float
) -> None:
    model = DegradationModel("motor", mtbf_hours=2000, dispersion=0.02)
    n, dt = 200_000, 5.0
    start = np.full((n, 3), wear)
    rng = np.random.default_rng(11)
    increments = model.step_paths(start, load, ambient, dt, rng) - start
    expected = model.mean_rate(wear, load, ambient) * dt
    assert increments.mean(axis=0) == pytest.approx(expected, rel=0.03)
    # Gamma(shape k, scale b): variance = b * mean
    assert increments.var(axis=0) == pytest.approx(0.02 * expected, rel=0.1)
    assert (increments >= 0).all()  # wear never heals by itself


def test_mean_path_of_a_mode_reaches_failure_after_its_mode_life() -> None:
    # with little dispersion every path stays close to the mean path
    model = DegradationModel(["bearing_wear"], mtbf_hours=1000, dispersion=0.002)
    p = model.project(
        DegradationState({B: 0.0}), horizon_hours=3000, step_hours=1.0, n_paths=300, rng=3
    )
    assert p.time_to_failure_hours.mean() == pytest.approx(model.mode_life_hours[B], rel=0.03)


def test_wear_is_slow_first_then_fast() -> None:
    model = DegradationModel("pump")
    assert model.mean_rate(0.9, 1.0, 25.0)[0] > 20 * model.mean_rate(0.1, 1.0, 25.0)[0]


def test_step_is_seeded_and_fails_at_wear_one() -> None:
    model = DegradationModel("pump", mtbf_hours=3000)
    state = model.initial_state(7, wear={B: 0.95})

    def run(seed: int) -> list[DegradationState]:
        rng = np.random.default_rng(seed)
        out, s = [], state
        for _ in range(400):
            s = model.step(s, load=1.0, ambient_c=25.0, dt_hours=1.0, rng=rng)
            out.append(s)
        return out

    a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    failed = [s for s in a if s.is_failed]
    assert failed, "a bearing at 0.95 wear fails within 400 hours at rated load"
    first = failed[0]
    assert first.failed_mode is B and first.wear[B] == 1.0
    assert all(s == first for s in failed)  # a failed machine no longer changes
    assert max(s.age_hours for s in a) == first.age_hours
    assert all(x.wear[m] <= y.wear[m] for x, y in itertools.pairwise(a) for m in model.modes)


def test_step_counts_operating_hours_only_and_rejects_bad_input() -> None:
    model = DegradationModel("motor")
    rng = np.random.default_rng(0)
    state = model.initial_state(rng)
    idle = model.step(state, load=0.0, ambient_c=25.0, dt_hours=5.0, rng=rng)
    assert idle.age_hours == 0.0 and idle.wear[B] == state.wear[B]
    run = model.step(state, load=0.5, ambient_c=25.0, dt_hours=5.0, rng=rng)
    assert run.age_hours == 5.0
    assert model.step(state, load=1.0, ambient_c=25.0, dt_hours=0.0, rng=rng).wear == state.wear
    with pytest.raises(ValueError, match="load"):
        model.step(state, load=-1.0, ambient_c=25.0, dt_hours=1.0, rng=rng)
    with pytest.raises(ValueError, match="dt_hours"):
        model.step(state, load=1.0, ambient_c=25.0, dt_hours=-1.0, rng=rng)
    with pytest.raises(ValueError, match="no wear for failure mode"):
        model.step(DegradationState({B: 0.1}), load=1.0, ambient_c=25.0, dt_hours=1, rng=rng)
    with pytest.raises(ValueError, match="wear must have shape"):
        model.step_paths(np.zeros((4, 2)), 1.0, 25.0, 1.0, rng)
    with pytest.raises(ValueError, match="load"):
        model.step_paths(np.zeros((4, 3)), np.ones(3), 25.0, 1.0, rng)


def test_initial_state_draws_seeded_wear() -> None:
    model = DegradationModel("compressor")
    states = [model.initial_state(np.random.default_rng(s)) for s in range(200)]
    wear = np.array([s.as_array(model.modes) for s in states])
    assert wear.min() >= 0.0 and wear.max() < 0.3 and wear.std() > 0.05
    assert model.initial_state(5) == model.initial_state(5) != model.initial_state(6)
    given = model.initial_state(5, wear={"seal_leak": 0.7}, age_hours=100)
    assert given.wear[S] == 0.7 and given.age_hours == 100
    with pytest.raises(ValueError, match="misalignment"):
        model.initial_state(5, wear={M: 0.5})
    with pytest.raises(ValueError, match=r"wear\[seal_leak\]"):
        model.initial_state(5, wear={S: 1.0})
    with pytest.raises(ValueError, match="rng"):
        model.initial_state("seed")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"kind_or_modes": "toaster"}, "kind_or_modes"),
        ({"kind_or_modes": []}, "kind_or_modes"),
        ({"kind_or_modes": ["rust"]}, "kind_or_modes"),
        ({"mtbf_hours": 0}, "mtbf_hours"),
        ({"life_ratio": {B: -1}}, "life_ratio"),
        ({"load_exponent": {B: 11}}, "load_exponent"),
        ({"dispersion": 0}, "dispersion"),
        ({"wear_acceleration": -1}, "wear_acceleration"),
        ({"thermal_doubling_c": 0}, "thermal_doubling_c"),
        ({"grease_doubling_c": float("inf")}, "grease_doubling_c"),
        ({"initial_wear_high": 1.0}, "initial_wear_high"),
    ],
)
def test_model_rejects_bad_arguments(kwargs: dict[str, object], argument: str) -> None:
    kwargs = {"kind_or_modes": "pump", **kwargs}
    with pytest.raises(ValueError, match=argument):
        DegradationModel(**kwargs)  # type: ignore[arg-type]


# -- scenarios and projections --------------------------------------------------------------


def test_scenario_and_action_validation() -> None:
    s = Scenario(replaced=("seal_leak",), sensor_overrides={"flow": 10})  # type: ignore[arg-type]
    assert s.replaced == (S,) and s.sensor_overrides == {"flow": 10.0}
    late, early = MaintenanceAction(300, B), MaintenanceAction(10, None)
    assert Scenario(actions=(late, early)).actions == (early, late)  # kept in time order
    for kwargs, argument in [
        ({"load_factor": -1}, "load_factor"),
        ({"load_factor": float("nan")}, "load_factor"),
        ({"ambient_c": 200}, "ambient_c"),
        ({"actions": ("bearing",)}, r"actions\[0\]"),
        ({"replaced": ("rust",)}, r"replaced\[0\]"),
        ({"sensor_overrides": {"flow": "high"}}, "sensor_overrides"),
    ]:
        with pytest.raises(ValueError, match=argument):
            Scenario(**kwargs)  # type: ignore[arg-type]
    for kwargs, argument in [
        ({"at_hours": float("inf")}, "at_hours"),
        ({"at_hours": 1, "component": "rust"}, "component"),
        ({"at_hours": 1, "restore_to": 1.5}, "restore_to"),
    ]:
        with pytest.raises(ValueError, match=argument):
            MaintenanceAction(**kwargs)  # type: ignore[arg-type]


WORN = DegradationState({B: 0.5, S: 0.2, M: 0.1})
PROFILE = LoadProfile("pump", seed=2)


def _pump() -> DegradationModel:
    return DegradationModel("pump", mtbf_hours=2400)


def test_projection_is_a_proper_failure_distribution() -> None:
    p = _pump().project(
        WORN, Scenario(), horizon_hours=720, n_paths=400, rng=1, load_profile=PROFILE
    )
    fp = p.failure_probability
    assert p.hours[0] == 0.0 and p.hours[-1] == 720.0 and fp.shape == p.hours.shape
    assert fp[0] == 0.0 and (np.diff(fp) >= 0).all() and ((fp >= 0) & (fp <= 1)).all()
    assert 0.05 < fp[-1] < 1.0
    failed = np.isfinite(p.time_to_failure_hours)
    assert fp[-1] == pytest.approx(failed.mean())
    assert (p.time_to_failure_hours[failed] <= 720).all()
    assert p.failure_mode_share.sum() == pytest.approx(1.0) and p.share(B) > 0.5
    assert p.probability_by(360) == pytest.approx(fp[360])
    q = p.wear_quantiles
    assert q.shape == (3, 721, 3) and (q[0] <= q[1]).all() and (q[1] <= q[2]).all()
    assert (np.diff(p.mean_wear[:, 0]) >= -1e-12).all() and p.mean_wear[0, 0] == 0.5
    summary = p.summary()
    assert summary["failure_probability"] == fp[-1] and summary["n_paths"] == 400
    assert summary["failure_mode_share"] == {
        "bearing_wear": p.share(B),
        "seal_leak": p.share(S),
        "misalignment": p.share(M),
    }


def test_projection_is_seeded() -> None:
    model = _pump()
    a = model.project(WORN, horizon_hours=240, n_paths=100, rng=4)
    b = model.project(WORN, horizon_hours=240, n_paths=100, rng=np.random.default_rng(4))
    c = model.project(WORN, horizon_hours=240, n_paths=100, rng=5)
    assert np.array_equal(a.time_to_failure_hours, b.time_to_failure_hours)
    assert np.array_equal(a.wear_quantiles, b.wear_quantiles)
    assert not np.array_equal(a.mean_wear, c.mean_wear)


def test_more_load_means_more_failures() -> None:
    model = _pump()
    p = {
        f: model.project(
            WORN, Scenario(load_factor=f), horizon_hours=720, rng=9, load_profile=PROFILE
        ).failure_probability[-1]
        for f in (0.8, 1.0, 1.2)
    }
    assert p[0.8] < p[1.0] < p[1.2]


def test_maintenance_now_beats_maintenance_later() -> None:
    model = _pump()
    kw: dict[str, Any] = {"horizon_hours": 720.0, "n_paths": 500, "rng": 3, "load_profile": PROFILE}
    now = model.project(WORN, Scenario(actions=(MaintenanceAction(0, B),)), **kw)
    later = model.project(WORN, Scenario(actions=(MaintenanceAction(336, B),)), **kw)
    never = model.project(WORN, Scenario(), **kw)
    assert now.failure_probability[-1] < later.failure_probability[-1]
    assert later.failure_probability[-1] <= never.failure_probability[-1]
    # maintenance resets the wear of the maintained part on every running path
    assert now.mean_wear[0, 0] == pytest.approx(0.05)
    assert later.mean_wear[336, 0] < later.mean_wear[335, 0]  # applied at hour 336
    overhaul = model.project(WORN, Scenario(actions=(MaintenanceAction(0, None, 0.0),)), **kw)
    assert overhaul.mean_wear[0].tolist() == [0.0, 0.0, 0.0]


def test_replaced_parts_start_new_and_a_failed_machine_stays_failed() -> None:
    model = _pump()
    failed = DegradationState({B: 1.0, S: 0.2, M: 0.1}, failed_mode=B)
    down = model.project(failed, horizon_hours=48, n_paths=50, rng=1)
    assert (down.failure_probability == 1.0).all() and (down.time_to_failure_hours == 0).all()
    fixed = model.project(failed, Scenario(replaced=(B,)), horizon_hours=48, n_paths=50, rng=1)
    assert fixed.failure_probability[0] == 0.0 and fixed.mean_wear[0, 0] == 0.0


def test_projection_rejects_bad_arguments() -> None:
    model = _pump()
    for kwargs, argument in [
        ({"horizon_hours": 0}, "horizon_hours"),
        ({"step_hours": -1}, "step_hours"),
        ({"n_paths": 0}, "n_paths"),
        ({"quantiles": (1.5,)}, "quantiles"),
        ({"load_profile": "busy"}, "load_profile"),
        ({"scenario": Scenario(actions=(MaintenanceAction(5, W),))}, r"actions\[0\].component"),
        ({"scenario": Scenario(replaced=(W,))}, r"replaced\[0\]"),
    ]:
        args: dict[str, Any] = {"horizon_hours": 24.0, "rng": 0, **cast(dict[str, Any], kwargs)}
        with pytest.raises(ValueError, match=argument):
            model.project(WORN, **args)


def test_projection_speed_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timed assertion: prints how long 30 days x 500 paths takes (run with -s)."""
    model = DegradationModel("pump", mtbf_hours=2400)
    profile = LoadProfile("pump", seed=1)
    started = time.perf_counter()
    p = model.project(WORN, horizon_hours=720, n_paths=500, rng=0, load_profile=profile)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[project] 30 days x 500 paths at 1 h steps: {elapsed * 1000:.0f} ms")
    assert p.failure_probability.shape == (721,)


def test_default_failure_modes_cover_every_kind() -> None:
    assert set(DEFAULT_FAILURE_MODES) == set(MachineKind)
