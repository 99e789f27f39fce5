"""Sensor signal model and sensor faults of the plant simulator, against the example plant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas import load_plant
from schemas.common import FailureMode
from schemas.plant import MachineSpec, Plant, SensorSpec
from twins.simulator import (
    KEY_SENSORS,
    KNOWN_SENSORS,
    FaultState,
    LoadProfile,
    SensorFault,
    SensorFaults,
    SignalModel,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "twinfleet" / "plants" / "example.yaml"
TYPES = ["motor-15kw", "pump-75kw", "compressor-110kw", "conveyor-drive"]


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(EXAMPLE)


def _spec(plant: Plant, machine_type: str) -> MachineSpec:
    return next(m for m in plant.machines if m.type == machine_type)


def _highs(spec: MachineSpec, key: str) -> np.ndarray:
    return np.array([np.inf if getattr(s, key) is None else getattr(s, key) for s in spec.sensors])


# -- deterministic physics -------------------------------------------------------------


@pytest.mark.parametrize("machine_type", TYPES)
def test_a_healthy_machine_reads_inside_its_normal_ranges(plant: Plant, machine_type: str) -> None:
    spec = _spec(plant, machine_type)
    model = SignalModel(spec)
    normal_high = _highs(spec, "normal_high")
    # worst healthy case: rated load (and a little over), warm afternoon, wear as installed
    for load in (0.2, 0.6, 1.0, 1.05):
        values = model.steady(load, 28.0, np.full(len(model.modes), 0.3))
        over = [n for n, v, h in zip(model.sensor_names, values, normal_high, strict=True) if v > h]
        assert not over, f"{machine_type} at load {load}: {over} above normal_high"


@pytest.mark.parametrize("machine_type", TYPES)
def test_a_worn_machine_crosses_normal_high_on_its_key_sensor(
    plant: Plant, machine_type: str
) -> None:
    spec = _spec(plant, machine_type)
    model = SignalModel(spec)
    for j, mode in enumerate(model.modes):
        key = model.key_sensor(mode)
        assert key is not None, f"{machine_type} has no sensor that shows {mode}"
        sensor = spec.sensor(key)
        assert sensor.normal_high is not None and sensor.critical_high is not None
        col = model.sensor_names.index(key)
        for wear, threshold in ((0.9, sensor.normal_high), (1.0, 0.97 * sensor.critical_high)):
            w = np.zeros(len(model.modes))
            w[j] = wear
            value = model.steady(1.0, 25.0, w)[col]
            assert value > threshold, f"{machine_type} {mode} at {wear}: {key}={value:.1f}"


@pytest.mark.parametrize("machine_type", TYPES)
def test_noisy_healthy_week_stays_mostly_normal(plant: Plant, machine_type: str) -> None:
    spec = _spec(plant, machine_type)
    model = SignalModel(spec)
    hours = np.arange(0.0, 24 * 7 * 2)
    loads = LoadProfile(spec.kind, seed=3).load_at(hours)
    rng = np.random.default_rng(1)
    wear = rng.uniform(0.0, 0.3, size=(hours.size, len(model.modes)))
    ambient = 25.0 + 3.0 * np.sin(2 * np.pi * (hours % 24 - 9) / 24)
    values = model.add_noise(
        model.follow_series(model.steady(loads, ambient, wear), 1.0), np.random.default_rng(2)
    )
    inside = values <= _highs(spec, "normal_high")
    assert inside.mean() > 0.995
    assert (values <= _highs(spec, "critical_high")).all()


def test_signals_by_name_follow_load_and_wear(plant: Plant) -> None:
    pump = SignalModel(_spec(plant, "pump-75kw"))
    col = {n: i for i, n in enumerate(pump.sensor_names)}
    new = pump.steady(1.0, 25.0, [0.0, 0.0, 0.0])
    half = pump.steady(0.5, 25.0, [0.0, 0.0, 0.0])
    leaking = pump.steady(1.0, 25.0, [0.0, 0.8, 0.0])
    worn = pump.steady(1.0, 25.0, [0.8, 0.0, 0.0])
    assert new[col["flow"]] == pytest.approx(180.0) and half[col["flow"]] == pytest.approx(90.0)
    assert new[col["discharge_pressure"]] == pytest.approx(8.0)
    assert new[col["current"]] == pytest.approx(132.0)
    assert leaking[col["flow"]] < new[col["flow"]]
    assert leaking[col["discharge_pressure"]] < new[col["discharge_pressure"]]
    assert leaking[col["seal_temp"]] > new[col["seal_temp"]] + 20
    assert worn[col["vibration"]] > new[col["vibration"]] + 4
    assert worn[col["bearing_temp"]] > new[col["bearing_temp"]] + 15
    assert half[col["bearing_temp"]] < new[col["bearing_temp"]]
    motor = SignalModel(_spec(plant, "motor-15kw"))
    rpm = motor.sensor_names.index("rpm")
    assert motor.steady(1.0, 25.0, [0, 0, 0])[rpm] == pytest.approx(1465.0)  # nameplate speed
    assert motor.steady(0.3, 25.0, [0, 0, 0])[rpm] > 1465.0  # less slip at part load


def test_a_stopped_machine_goes_quiet_and_cools_down(plant: Plant) -> None:
    model = SignalModel(_spec(plant, "compressor-110kw"))
    stopped = model.steady(0.0, 22.0, [0.9, 0.9, 0.9])
    failed = model.steady(1.0, 22.0, [0.9, 0.9, 0.9], running=False)
    assert np.array_equal(stopped, failed)
    thermal = model.thermal
    assert (stopped[thermal] == 22.0).all() and (stopped[~thermal] == 0.0).all()
    running = model.steady(1.0, 22.0, [0.9, 0.9, 0.9])
    after_1h = model.follow(running, stopped, 1.0)
    assert (after_1h[~thermal] == 0.0).all()
    assert (after_1h[thermal] > 22.0).all() and (after_1h[thermal] < running[thermal]).all()
    after_1d = model.follow(running, np.tile(stopped, (24, 1)), 1.0)
    assert after_1d[thermal] == pytest.approx(np.full(thermal.sum(), 22.0), abs=1e-6)


def test_follow_over_many_steps_equals_one_step_at_a_time(plant: Plant) -> None:
    model = SignalModel(_spec(plant, "motor-15kw"), thermal_time_constant_hours=0.7)
    rng = np.random.default_rng(0)
    targets = model.steady(rng.uniform(0, 1, 30), 25.0, rng.uniform(0, 0.5, (30, 3)))
    y = targets[0].copy()
    series = [y]
    for row in targets[1:]:
        y = model.follow(y, row, 0.5)
        series.append(y)
    assert model.follow(targets[0], targets[1:], 0.5) == pytest.approx(series[-1])
    assert model.follow_series(targets, 0.5) == pytest.approx(np.array(series))


def test_unknown_names_fall_back_on_their_kind() -> None:
    spec = MachineSpec(
        id="X-1",
        type="x",
        kind="pump",
        site="s",
        line="l",
        rated={"flow_m3h": 50.0, "pressure_bar": 4.0, "rpm": 1000.0},
        sensors=[
            SensorSpec(name="casing_vibration", kind="vibration", unit="mm/s"),
            SensorSpec(name="oil_temp", kind="temperature", unit="degC"),
            SensorSpec(name="outlet_flow", kind="flow", unit="m3/h"),
            SensorSpec(name="outlet_pressure", kind="pressure", unit="bar"),
            SensorSpec(name="shaft_speed", kind="speed", unit="rpm"),
            SensorSpec(name="setpoint", kind="other", unit="%", normal_low=40, normal_high=60),
            SensorSpec(name="ambient_temp", kind="temperature", unit="degC"),
        ],
    )
    model = SignalModel(spec)
    healthy = model.steady(1.0, 20.0, [0.0, 0.0, 0.0])
    worn = model.steady(1.0, 20.0, [0.9, 0.0, 0.0])
    assert healthy.tolist() == pytest.approx([2.0, 40.0, 50.0, 4.0, 1000.0, 50.0, 20.0])
    assert worn[0] > healthy[0] + 5 and worn[1] > healthy[1] + 15
    assert set(KNOWN_SENSORS) >= {"vibration", "bearing_temp", "winding_temp", "seal_temp"}
    assert model.key_sensor("bearing_wear") is None  # no sensor named for it


def test_overrides_pin_sensor_values(plant: Plant) -> None:
    model = SignalModel(_spec(plant, "pump-75kw"))
    pinned = model.steady(1.0, 25.0, [0.1, 0.1, 0.1], overrides={"flow": 12.5})
    assert pinned[model.sensor_names.index("flow")] == 12.5
    with pytest.raises(ValueError, match="overrides"):
        model.steady(1.0, 25.0, [0.1, 0.1, 0.1], overrides={"belt_speed": 1.0})


def test_noise_is_seeded_and_sized_per_sensor(plant: Plant) -> None:
    model = SignalModel(_spec(plant, "pump-75kw"))
    clean = np.tile(model.reference, (20_000, 1))
    a = model.add_noise(clean, np.random.default_rng(3))
    assert np.array_equal(a, model.add_noise(clean, np.random.default_rng(3)))
    assert not np.array_equal(a, model.add_noise(clean, np.random.default_rng(4)))
    relative = (a / clean).std(axis=0)
    kinds = [s.kind.value for s in model.spec.sensors]
    assert relative[kinds.index("vibration")] == pytest.approx(0.04 + 0.003, rel=0.05)
    assert relative[kinds.index("temperature")] == pytest.approx(0.01 + 0.003, rel=0.05)
    quiet = model.add_noise(np.zeros((1000, len(model.sensor_names))), np.random.default_rng(0))
    non_temp = np.array([k != "temperature" for k in kinds]) & ~model.exact
    assert (quiet[:, non_temp] >= 0).all() and (quiet[:, non_temp] > 0).mean() > 0.99
    assert (quiet[:, model.exact] == 0).all()  # a set-point is read exactly
    assert np.array_equal(SignalModel(model.spec, noise_scale=0).add_noise(clean, 1), clean)


def test_signal_model_rejects_bad_arguments(plant: Plant) -> None:
    spec = _spec(plant, "motor-15kw")
    with pytest.raises(ValueError, match="noise_scale"):
        SignalModel(spec, noise_scale=-1)
    with pytest.raises(ValueError, match="thermal_time_constant_hours"):
        SignalModel(spec, thermal_time_constant_hours=0)
    with pytest.raises(ValueError, match="spec"):
        SignalModel("motor")  # type: ignore[arg-type]
    model = SignalModel(spec)
    with pytest.raises(ValueError, match="wear"):
        model.steady(1.0, 25.0, [0.1, 0.2])
    with pytest.raises(ValueError, match="load"):
        model.steady(-1.0, 25.0, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="dt_hours"):
        model.follow(model.reference, model.reference, -1)
    with pytest.raises(ValueError, match="running"):
        model.steady(np.ones(4), 25.0, [0.1, 0.2, 0.3], running=[True, False])
    per_row = model.steady(1.0, 25.0, [0.1, 0.2, 0.3], running=[True, False])
    assert per_row.shape == (2, len(model.sensor_names)) and per_row[1, 0] == 0.0


def test_every_mode_has_a_key_sensor_in_the_example_plant(plant: Plant) -> None:
    for machine in plant.machines:
        model = SignalModel(machine)
        for mode in model.modes:
            assert model.key_sensor(mode) in KEY_SENSORS[FailureMode(mode)]


# -- sensor faults ------------------------------------------------------------------------


def _run_faults(
    faults: SensorFaults, n_sensors: int = 100, n_readings: int = 3000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = 50.0 + rng.normal(0.0, 0.5, size=(n_readings, n_sensors))
    reported = np.empty_like(truth)
    codes = np.empty(truth.shape, dtype=np.int8)
    state = FaultState.clear(n_sensors)
    scale = np.full(n_sensors, 50.0)
    for k in range(n_readings):
        reported[k], codes[k], state = faults.apply(
            truth[k], state, scale=scale, dt_hours=0.1, rng=rng
        )
    return truth, reported, codes


def test_faults_appear_at_their_rates_and_are_reported() -> None:
    faults = SensorFaults(
        spike_rate=0.002,
        drift_rate=0.01,  # per hour: 0.001 per reading at 0.1 h between readings
        stuck_rate=0.0005,
        dropout_rate=0.003,
        stuck_readings=20,
        drift_hours=5.0,
    )
    truth, reported, codes = _run_faults(faults)
    n = truth.size

    def near(count: float, rate: float, trials: float) -> bool:
        expected = rate * trials
        return abs(count - expected) < 5 * np.sqrt(expected) + 2

    spikes = codes == SensorFault.SPIKE
    dropouts = codes == SensorFault.DROPOUT
    stuck = codes == SensorFault.STUCK
    drift = codes == SensorFault.DRIFT
    assert near(dropouts.sum(), 0.003, n)
    # spikes hidden by a stuck value or a dropout are not reported as spikes
    assert near(spikes.sum(), 0.002, n * (1 - stuck.mean() - 0.003))
    stuck_starts = (stuck[1:] & ~stuck[:-1]).sum() + stuck[0].sum()
    assert near(stuck_starts, 0.0005, n * (1 - stuck.mean()))
    drift_starts = (drift[1:] & ~drift[:-1]).sum()
    assert near(drift_starts, -np.expm1(-0.01 * 0.1), n * (1 - drift.mean()))

    ok = codes == SensorFault.NONE
    assert np.array_equal(reported[ok], truth[ok])  # untouched readings are the truth
    assert np.isnan(reported[dropouts]).all() and not np.isnan(reported[~dropouts]).any()
    assert (reported[spikes] >= 2.9 * truth[spikes]).all()
    assert (reported[drift] != truth[drift]).all()
    # a stuck sensor repeats the previous reported value exactly
    rows, cols = np.nonzero(stuck[1:])
    prev = reported[rows, cols]
    cur = reported[rows + 1, cols]
    prev_ok = ~np.isnan(prev)
    assert np.array_equal(cur[prev_ok & ~np.isnan(cur)], prev[prev_ok & ~np.isnan(cur)])


def test_drift_builds_up_slowly_then_resets() -> None:
    faults = SensorFaults(
        spike_rate=0, drift_rate=1e9, stuck_rate=0, dropout_rate=0, drift_per_hour=0.01
    )
    state = FaultState.clear(1)
    rng = np.random.default_rng(0)
    biases = []
    for _ in range(40):
        out, _code, state = faults.apply(
            np.array([100.0]), state, scale=np.array([100.0]), dt_hours=1.0, rng=rng
        )
        biases.append(abs(out[0] - 100.0))
    # starts at 0, grows 1 unit (1 % of scale) per hour, resets after drift_hours (24 h)
    assert biases[0] == 0.0 and biases[1:24] == pytest.approx(list(range(1, 24)))
    assert biases[24] == 0.0


def test_faults_are_seeded_and_can_be_switched_off() -> None:
    faults = SensorFaults(spike_rate=0.01, dropout_rate=0.01)
    a = _run_faults(faults, n_readings=300, seed=5)
    b = _run_faults(faults, n_readings=300, seed=5)
    c = _run_faults(faults, n_readings=300, seed=6)
    assert np.array_equal(a[2], b[2]) and not np.array_equal(a[2], c[2])
    truth, reported, codes = _run_faults(SensorFaults.none(), n_readings=300)
    assert np.array_equal(truth, reported) and not codes.any()
    assert not SensorFaults.none().enabled and SensorFaults().enabled


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"spike_rate": -0.1}, "spike_rate"),
        ({"drift_rate": -1}, "drift_rate"),
        ({"stuck_rate": float("nan")}, "stuck_rate"),
        ({"dropout_rate": 2}, "dropout_rate"),
        ({"spike_factor": (0.5, 2.0)}, "spike_factor"),
        ({"drift_per_hour": -1}, "drift_per_hour"),
        ({"drift_hours": 0}, "drift_hours"),
        ({"stuck_readings": 0}, "stuck_readings"),
    ],
)
def test_fault_config_rejects_bad_arguments(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        SensorFaults(**kwargs)  # type: ignore[arg-type]


def test_fault_apply_checks_shapes() -> None:
    with pytest.raises(ValueError, match="same 3 sensors"):
        SensorFaults().apply(
            np.ones(3),
            FaultState.clear(2),
            scale=np.ones(3),
            dt_hours=1,
            rng=np.random.default_rng(),
        )
