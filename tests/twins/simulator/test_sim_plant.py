"""The example plant file, the plant simulator and run-to-failure histories."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from schemas import load_plant
from schemas.common import FailureMode, Quality
from schemas.maintenance import WorkOrderType
from schemas.plant import MachineSpec, ModbusAddress, OpcUaAddress, Plant
from schemas.telemetry import TelemetryBatch
from twins.simulator import (
    DegradationModel,
    FailureEvent,
    MaintenanceEvent,
    PlantSimulator,
    SensorFault,
    SensorFaults,
    SignalModel,
    run_to_failure,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "twinfleet" / "plants" / "example.yaml"
START_MS = 1_700_000_000_000  # Tuesday 2023-11-14 22:13 UTC
HOUR_S = 3600.0

B = FailureMode.BEARING_WEAR
S = FailureMode.SEAL_LEAK
W = FailureMode.WINDING_INSULATION
M = FailureMode.MISALIGNMENT


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(EXAMPLE)


def _spec(plant: Plant, machine_type: str) -> MachineSpec:
    return next(m for m in plant.machines if m.type == machine_type)


# -- the example plant ---------------------------------------------------------------------


def test_example_plant_has_the_promised_shape(plant: Plant) -> None:
    assert len(plant.machines) == 52
    assert [s.id for s in plant.sites] == ["plant-north", "plant-south"]
    assert all(2 <= len(s.lines) <= 3 for s in plant.sites)
    assert Counter(m.type for m in plant.machines) == {
        "motor-15kw": 16,
        "pump-75kw": 14,
        "compressor-110kw": 8,
        "conveyor-drive": 14,
    }
    assert len(plant.technicians) == 6 and all(t.skills for t in plant.technicians)
    skills = {skill for t in plant.technicians for skill in t.skills}
    for mtype in plant.machine_types.values():
        assert mtype.rated.mtbf_hours and mtype.rated.rpm and mtype.rated.current_a
        assert {task.failure_mode for task in mtype.maintenance} == set(mtype.failure_modes)
        for task in mtype.maintenance:
            assert set(task.skills) <= skills, "every job can be staffed"
        assert mtype.operating_condition is not None
        for sensor in mtype.sensors:
            assert isinstance(sensor.address, (OpcUaAddress, ModbusAddress))
            if sensor.name in mtype.operating_condition.sensors:
                continue  # the duty set-point: no limits
            assert sensor.normal_high is not None and sensor.critical_high is not None
            assert isinstance(sensor.address, (OpcUaAddress, ModbusAddress))
    protocols = {
        s.address.protocol for t in plant.machine_types.values() for s in t.sensors if s.address
    }
    assert protocols == {"opcua", "modbus"}


# -- the simulator ---------------------------------------------------------------------------


def _run(plant: Plant, seed: int, hours: int, **kwargs: object) -> list[TelemetryBatch]:
    sim = PlantSimulator(plant, seed=seed, start_ms=START_MS, **kwargs)  # type: ignore[arg-type]
    return [b for _ in range(hours) for b in sim.advance(HOUR_S)]


def test_batches_are_valid_telemetry_for_the_plant(plant: Plant) -> None:
    sim = PlantSimulator(plant, seed=1, start_ms=START_MS, faults=SensorFaults.none())
    known = {sid for m in plant.machines for sid in m.sensor_ids()}
    batch_ids: set[str] = set()
    for step in range(1, 4):
        batches = sim.advance(60.0)
        assert sim.now_ms == START_MS + step * 60_000
        assert len(batches) == 52
        for batch in batches:
            spec = plant.machine(batch.machine_ids()[0])
            assert batch.machine_ids() == [spec.id]
            assert batch.gateway_id == f"sim-{spec.site}" and batch.site_id == spec.site
            assert batch.sent_at == sim.now_ms
            assert batch.readings.sensor_id == spec.sensor_ids()  # every sensor, in order
            assert set(batch.readings.timestamp) == {sim.now_ms}
            assert set(batch.readings.sensor_id) <= known
            # a round trip through the wire format validates again
            TelemetryBatch.model_validate_json(
                batch.model_dump_json(), context={"now_ms": sim.now_ms}
            )
            batch_ids.add(batch.batch_id)
    assert len(batch_ids) == 3 * 52
    assert "M-101-000000003" in batch_ids


def test_same_seed_same_plant_different_seed_different_plant(plant: Plant) -> None:
    a = _run(plant, seed=7, hours=5)
    b = _run(plant, seed=7, hours=5)
    c = _run(plant, seed=8, hours=5)
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
    values = [x.readings.value for x in a]
    assert values != [x.readings.value for x in c]


def test_a_healthy_plant_reads_mostly_normal(plant: Plant) -> None:
    batches = _run(plant, seed=3, hours=48, faults=SensorFaults.none())
    limits = {
        sid: plant.machine(sid.split(".")[0]).sensor(sid.split(".")[1]).normal_high
        for m in plant.machines
        for sid in m.sensor_ids()
    }
    over = total = 0
    for batch in batches:
        for sid, value in zip(batch.readings.sensor_id, batch.readings.value, strict=True):
            high = limits[sid]
            total += 1
            over += high is not None and value > high
    assert total == 48 * sum(len(m.sensors) for m in plant.machines)
    assert over / total < 0.005


DEMO_WEAR: dict[str, dict[FailureMode, float]] = {
    "P-204": {S: 0.8},
    "M-103": {B: 0.8},
    "C-302": {B: 0.75},
}


def test_worn_machines_fail_then_get_repaired(plant: Plant) -> None:
    sim = PlantSimulator(
        plant,
        seed=0,
        start_ms=START_MS,
        initial_wear=DEMO_WEAR,
        faults=SensorFaults.none(),
        repair_hours=8.0,
    )
    bad_quality: set[str] = set()
    for _ in range(400):
        for batch in sim.advance(HOUR_S):
            if set(batch.readings.quality) == {int(Quality.BAD)}:
                bad_quality.add(batch.machine_ids()[0])
    failures = sim.failures
    failed = {f.machine_id: f for f in failures}
    assert set(DEMO_WEAR) <= set(failed), f"failed: {sorted(failed)}"
    for machine_id, wear in DEMO_WEAR.items():
        failure = failed[machine_id]
        assert failure.mode == next(iter(wear))
        assert failure.age_hours > 0
        repair = next(
            e for e in sim.events if isinstance(e, MaintenanceEvent) and e.machine_id == machine_id
        )
        assert repair.kind is WorkOrderType.CORRECTIVE and repair.modes == (failure.mode,)
        assert repair.timestamp_ms - failure.timestamp_ms == 8 * 3_600_000
        assert repair.wear_before[failure.mode] == 1.0
    assert set(DEMO_WEAR) <= bad_quality  # a failed machine reports bad quality
    # healthy machines rarely fail in a few hundred hours
    assert len(set(failed) - set(DEMO_WEAR)) <= 3
    events = sim.events
    assert [e.timestamp_ms for e in events] == sorted(e.timestamp_ms for e in events)
    assert all(isinstance(e, (FailureEvent, MaintenanceEvent)) for e in events)


def test_failed_machine_stops_until_repaired(plant: Plant) -> None:
    sim = PlantSimulator(
        plant,
        seed=2,
        start_ms=START_MS,
        initial_wear={"P-201": {B: 0.97}},
        faults=SensorFaults.none(),
        repair_hours=48.0,
    )
    flow = [s.name for s in plant.machine("P-201").sensors].index("flow")
    for _ in range(200):
        batches = {b.machine_ids()[0]: b for b in sim.advance(HOUR_S)}
        if sim.ground_truth("P-201").is_failed:
            break
    truth = sim.ground_truth("P-201")
    assert truth.is_failed and truth.failed_mode is B and not sim.is_running("P-201")
    down = [batches["P-201"]]
    for _ in range(12):
        down.append({b.machine_ids()[0]: b for b in sim.advance(HOUR_S)}["P-201"])
    assert sim.ground_truth("P-201") == truth  # no wear while standing still
    flows = [b.readings.value[flow] for b in down[1:]]
    assert max(flows) < 2.0  # flow near zero: the pump is stopped
    assert all(set(b.readings.quality) == {int(Quality.BAD)} for b in down[1:])
    # preventive maintenance of the failed part repairs it at once
    event = sim.maintain("P-201", "bearing_wear")
    assert event.kind is WorkOrderType.CORRECTIVE
    assert not sim.ground_truth("P-201").is_failed
    assert sim.ground_truth("P-201").wear[B] == pytest.approx(0.05)
    after = next(b for b in sim.advance(HOUR_S) if b.machine_ids()[0] == "P-201")
    assert set(after.readings.quality) == {int(Quality.GOOD)}
    assert sim.maintenance == [event]


def test_maintain_resets_wear_now(plant: Plant) -> None:
    sim = PlantSimulator(plant, seed=4, start_ms=START_MS, initial_wear={"M-101": {W: 0.6}})
    event = sim.maintain("M-101", W, restore_to=0.02)
    assert event.kind is WorkOrderType.PREVENTIVE and event.wear_before == {W: 0.6}
    assert event.timestamp_ms == START_MS
    assert sim.ground_truth("M-101").wear[W] == 0.02
    overhaul = sim.maintain("M-101")
    assert set(overhaul.modes) == {B, W, M}
    assert max(sim.ground_truth("M-101").wear.values()) <= 0.05
    with pytest.raises(ValueError, match="machine_id"):
        sim.maintain("M-999")
    with pytest.raises(ValueError, match="component"):
        sim.maintain("M-101", "seal_leak")
    with pytest.raises(ValueError, match="component"):
        sim.maintain("M-101", "rust")
    with pytest.raises(ValueError, match="restore_to"):
        sim.maintain("M-101", B, restore_to=2.0)


def test_sensor_faults_in_telemetry_match_the_ground_truth(plant: Plant) -> None:
    faults = SensorFaults(spike_rate=0.01, drift_rate=0.0, stuck_rate=0.0, dropout_rate=0.01)
    sim = PlantSimulator(plant, seed=5, start_ms=START_MS, faults=faults)
    reported: dict[tuple[str, int], float] = {}
    n_readings = 0
    n_expected = 0
    for _ in range(30):
        batches = sim.advance(600.0)
        n_expected += sum(len(m.sensors) for m in plant.machines)
        for b in batches:
            for sid, t, v in zip(
                b.readings.sensor_id, b.readings.timestamp, b.readings.value, strict=True
            ):
                reported[(sid, t)] = v
                n_readings += 1
    injected = sim.injected_faults
    kinds = Counter(f.fault for f in injected)
    scale = {
        sid: value
        for m in plant.machines
        for sid, value in zip(m.sensor_ids(), SignalModel(m).reference, strict=True)
    }
    assert set(kinds) == {SensorFault.SPIKE, SensorFault.DROPOUT}
    assert kinds[SensorFault.DROPOUT] == n_expected - n_readings  # every dropout is missing
    for fault in injected:
        key = (fault.sensor_id, fault.timestamp_ms)
        if fault.fault is SensorFault.DROPOUT:
            assert key not in reported and fault.reported_value is None
        else:
            assert fault.reported_value is not None and reported[key] == fault.reported_value
            jump = fault.reported_value - fault.true_value
            # x3-x5 of the value, or of a tenth of the sensor's scale near zero
            assert jump >= 1.99 * max(abs(fault.true_value), 0.1 * abs(scale[fault.sensor_id]))
    for rate_kind in (SensorFault.SPIKE, SensorFault.DROPOUT):
        assert 0.5 * 0.01 * n_expected < kinds[rate_kind] < 1.6 * 0.01 * n_expected
    assert injected[0].machine_id == injected[0].sensor_id.split(".")[0]


def test_default_faults_are_small_and_none_means_none(plant: Plant) -> None:
    sim = PlantSimulator(plant, seed=6, start_ms=START_MS)
    clean = PlantSimulator(plant, seed=6, start_ms=START_MS, faults=SensorFaults.none())
    faulty_values: dict[tuple[str, int], float] = {}
    clean_values: dict[tuple[str, int], float] = {}
    for _ in range(20):
        for batches, into in (
            (sim.advance(HOUR_S), faulty_values),
            (clean.advance(HOUR_S), clean_values),
        ):
            for b in batches:
                for sid, t, v in zip(
                    b.readings.sensor_id, b.readings.timestamp, b.readings.value, strict=True
                ):
                    into[(sid, t)] = v
    assert not clean.injected_faults
    injected = {(f.sensor_id, f.timestamp_ms) for f in sim.injected_faults}
    assert 0 < len(injected) < 0.05 * len(clean_values)
    # the machines behave the same either way: only the faulted readings differ
    assert all(sim.ground_truth(m) == clean.ground_truth(m) for m in sim.machine_ids)
    differ = {k for k, v in clean_values.items() if faulty_values.get(k) != v}
    assert differ and differ <= injected


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"seed": -1}, "seed"),
        ({"start_ms": 5}, "start_ms"),
        ({"repair_hours": 0}, "repair_hours"),
        ({"restore_to": 1.0}, "restore_to"),
        ({"ambient_c": 500}, "ambient_c"),
        ({"max_step_hours": float("nan")}, "max_step_hours"),
        ({"faults": "many"}, "faults"),
        ({"initial_wear": {"M-999": {B: 0.5}}}, "initial_wear"),
        ({"initial_wear": {"M-101": {S: 0.5}}}, "initial_wear"),
        ({"initial_wear": {"M-101": {B: 1.5}}}, "initial_wear"),
        ({"degradation_options": {"dispersion": -1}}, "dispersion"),
        ({"degradation_options": {"colour": "red"}}, "degradation_options"),
    ],
)
def test_simulator_rejects_bad_arguments(
    plant: Plant, kwargs: dict[str, object], argument: str
) -> None:
    args: dict[str, object] = {"seed": 1, "start_ms": START_MS, **kwargs}
    with pytest.raises(ValueError, match=argument):
        PlantSimulator(plant, **args)  # type: ignore[arg-type]


def test_advance_and_lookups_reject_bad_arguments(plant: Plant) -> None:
    sim = PlantSimulator(plant, seed=1, start_ms=START_MS)
    for bad in (0, -5, float("inf"), 0.0001):
        with pytest.raises(ValueError, match="seconds"):
            sim.advance(bad)
    with pytest.raises(ValueError, match="machine_id"):
        sim.ground_truth("nope")
    assert sim.now_ms == START_MS


def test_long_advances_are_split_into_hourly_steps(plant: Plant) -> None:
    one = PlantSimulator(plant, seed=9, start_ms=START_MS, faults=SensorFaults.none())
    one.advance(24 * HOUR_S)
    hourly = PlantSimulator(plant, seed=9, start_ms=START_MS, faults=SensorFaults.none())
    for _ in range(24):
        hourly.advance(HOUR_S)
    for machine_id in ("M-101", "P-210", "CV-414"):
        assert one.ground_truth(machine_id) == hourly.ground_truth(machine_id)


# -- run to failure ----------------------------------------------------------------------------


def test_lives_end_in_failure_with_a_rising_key_signal(plant: Plant) -> None:
    spec = _spec(plant, "pump-75kw")
    started = time.perf_counter()
    lives = run_to_failure(spec, n_lives=40, seed=11)
    elapsed = time.perf_counter() - started
    print(f"\n[run_to_failure] 40 pump lives: {elapsed * 1000:.0f} ms")
    signals = SignalModel(spec)
    assert [life.machine_id for life in lives[:2]] == ["P-201-life0", "P-201-life1"]
    hours = np.array([life.failure_hours for life in lives])
    assert 800 < np.median(hours) < 4000, "pump lives are a couple of thousand hours"
    rising = 0
    for life in lives:
        assert life.failed and life.failure_mode in spec.failure_modes
        assert life.failure_hours > life.hours[-1] >= life.failure_hours - 1.0
        assert life.values.shape == (life.hours.size, len(spec.sensors))
        assert life.sensor_names == tuple(s.name for s in spec.sensors)
        assert life.loads.shape == life.hours.shape and life.wear.shape[1] == 3
        assert not np.isnan(life.values).any() and not life.faults.any()
        assert (np.diff(life.wear, axis=0) >= 0).all()  # wear only grows
        assert life.wear.max() < 1.0 and life.rul_hours[-1] <= 1.0
        assert life.failure_mode is not None
        key = signals.key_sensor(life.failure_mode)
        running = life.loads > 0
        series = life.column(key)[running]  # type: ignore[arg-type]
        early, late = series[: max(24, series.size // 10)], series[-24:]
        rising += late.mean() > early.mean() * 1.2
    assert rising >= 38, f"only {rising} of 40 lives show a rising key signal"
    assert len({life.failure_mode for life in lives}) >= 2


def test_run_to_failure_is_seeded_and_faults_are_optional(plant: Plant) -> None:
    spec = _spec(plant, "conveyor-drive")
    fast = DegradationModel.for_machine(spec, mtbf_hours=300)
    a = run_to_failure(spec, n_lives=3, seed=2, model=fast)
    b = run_to_failure(spec, n_lives=3, seed=2, model=fast)
    c = run_to_failure(spec, n_lives=3, seed=3, model=fast)
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, b, strict=True))
    assert [x.failure_hours for x in a] == [y.failure_hours for y in b]
    assert [x.failure_hours for x in a] != [y.failure_hours for y in c]
    faulty = run_to_failure(
        spec, n_lives=3, seed=2, model=fast, faults=SensorFaults(spike_rate=0.02)
    )
    # the same lives, now with corrupted readings marked in `faults`
    assert [x.failure_hours for x in faulty] == [x.failure_hours for x in a]
    codes = np.concatenate([x.faults.ravel() for x in faulty])
    assert (codes == SensorFault.SPIKE).any()
    clean = np.concatenate([x.values.ravel() for x in a])
    dirty = np.concatenate([x.values.ravel() for x in faulty])
    same = codes == SensorFault.NONE
    assert np.array_equal(clean[same], dirty[same])


def test_lives_still_running_at_max_hours_are_censored(plant: Plant) -> None:
    spec = _spec(plant, "motor-15kw")
    lives = run_to_failure(spec, n_lives=2, seed=1, max_hours=100, sample_hours=2.0)
    for life in lives:
        assert not life.failed and life.failure_hours == float("inf")
        assert life.hours.tolist() == [2.0 * k for k in range(50)]


def test_run_to_failure_rejects_bad_arguments(plant: Plant) -> None:
    spec = _spec(plant, "pump-75kw")
    for kwargs, argument in [
        ({"n_lives": 0}, "n_lives"),
        ({"seed": -2}, "seed"),
        ({"sample_hours": 0}, "sample_hours"),
        ({"max_hours": 0.5}, "max_hours"),
        ({"initial_wear_high": 1}, "initial_wear_high"),
        ({"faults": 0.1}, "faults"),
        ({"model": "pump"}, "model"),
    ]:
        args: dict[str, Any] = {"n_lives": 1, "seed": 0, **cast(dict[str, Any], kwargs)}
        with pytest.raises(ValueError, match=argument):
            run_to_failure(spec, **args)
    with pytest.raises(ValueError, match="sensor_name"):
        run_to_failure(spec, n_lives=1, seed=0, max_hours=5)[0].column("rpm")
