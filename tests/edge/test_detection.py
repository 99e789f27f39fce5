"""Edge detection groups a batch into scans of one value per sensor."""

from __future__ import annotations

from drivers.base import FieldValue
from edge.detection import EdgeDetection
from schemas.plant import MachineSpec, SensorSpec

T0 = 1_700_000_000_000


def _spec(machine_id: str) -> MachineSpec:
    sensors = [
        SensorSpec(name="temp", kind="temperature", unit="degC", normal_high=80, critical_high=100),
        SensorSpec(name="rpm", kind="speed", unit="rpm"),
    ]
    return MachineSpec(id=machine_id, type="t", kind="motor", site="s", line="l", sensors=sensors)


def test_queued_values_of_one_sensor_become_successive_scans_not_one_scan_each() -> None:
    det = EdgeDetection([_spec("M-1"), _spec("M-2")])
    # OPC UA delivers a monitored item's queued values back to back
    values = [FieldValue("M-1", "temp", 70.0 + k, T0 + k * 1000) for k in range(3)]
    values += [FieldValue("M-2", "rpm", 1450.0, T0 + k * 1000) for k in range(3)]
    values += [FieldValue("M-1", "rpm", 1450.0, T0)]
    assert det.process(values) == []
    assert det.scans == 3


def test_a_critical_value_is_found_once_with_its_machine_sensor_time_and_value() -> None:
    det = EdgeDetection([_spec("M-1"), _spec("M-2")])
    temps = [70.0, 71.0, 105.0, 106.0, 72.0]
    found = []
    for k, t in enumerate(temps):
        found += det.process(
            [FieldValue("M-2", "temp", t, T0 + k * 1000), FieldValue("M-1", "temp", 60.0, T0)]
        )
    (a,) = found  # at the second reading beyond the limit (the on-delay of one reading)
    assert (a.machine_id, a.sensor_id, a.timestamp, a.value) == (
        "M-2",
        "M-2.temp",
        T0 + 3000,
        106.0,
    )
    assert a.reason.startswith("threshold") and "degC" in a.reason and a.anomaly_score >= 0.95


def test_a_sensor_read_faster_than_its_sample_period_is_scored_once_per_period() -> None:
    """Oversampled noise must not look like spikes: 10 reads/s of a 1 s sensor whose
    value jitters by 0.5 (max rate 1 unit/s) raise nothing; a real step does."""
    spec = MachineSpec(
        id="M-1",
        type="t",
        kind="motor",
        site="s",
        line="l",
        sensors=[SensorSpec(name="temp", kind="temperature", unit="degC", max_rate_per_s=1.0)],
    )
    det = EdgeDetection([spec])
    jitter = [FieldValue("M-1", "temp", 50.0 + 0.5 * (k % 2), T0 + k * 100) for k in range(50)]
    assert det.process(jitter) == []
    assert det.scans == 6 and det.skipped == 44  # scored at 0, 0.9, 1.8 ... 4.5 s
    (step,) = det.process([FieldValue("M-1", "temp", 80.0, T0 + 6000)])
    assert step.reason.startswith("rate_of_change")
