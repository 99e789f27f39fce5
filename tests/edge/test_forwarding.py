"""What the gateway forwards, checked against numpy on random data."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.base import FieldValue
from edge.forwarding import Forwarder
from schemas.common import Quality
from schemas.telemetry import EdgeAnomaly

T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000  # a minute boundary


def _values(rng: np.random.Generator, n: int, sensors: list[tuple[str, str]]) -> list[FieldValue]:
    out = []
    for i in range(n):
        for m, s in sensors:
            out.append(FieldValue(m, s, float(rng.normal(10, 3)), T0 + i * 1000))
    return out


def test_aggregates_equal_numpy_per_sensor_and_window() -> None:
    rng = np.random.default_rng(5)
    sensors = [("M-1", "a"), ("M-1", "b"), ("M-2", "a")]
    values = _values(rng, 300, sensors)  # 5 minutes at 1 Hz
    fw = Forwarder(mode="aggregates", window_s=60)
    got = []
    for k in range(0, len(values), 37):  # arbitrary batch boundaries
        got += fw.add(values[k : k + 37], []).aggregates
    got += fw.close_all().aggregates
    assert len(got) == 3 * 5
    for agg in got:
        m, s = agg.sensor_id.split(".")
        xs = np.array(
            [
                v.value
                for v in values
                if (v.machine_id, v.sensor) == (m, s)
                and agg.window_start <= v.timestamp_ms < agg.window_start + 60_000
            ]
        )
        assert agg.count == len(xs) == 60
        assert agg.avg == pytest.approx(xs.mean(), rel=1e-12)
        assert agg.std == pytest.approx(xs.std(), rel=1e-9)  # population std
        assert (agg.min, agg.max) == (xs.min(), xs.max())


def test_quiet_sensors_windows_close_after_the_grace_and_bad_values_are_not_averaged() -> None:
    fw = Forwarder(mode="aggregates", window_s=60, grace_ms=5_000)
    fw.add(
        [
            FieldValue("M-1", "a", 1.0, T0),
            FieldValue("M-1", "a", 99.0, T0 + 1000, Quality.BAD),
            FieldValue("M-1", "a", 3.0, T0 + 2000),
        ],
        [],
    )
    assert fw.flush(T0 + 64_000).aggregates == []
    (agg,) = fw.flush(T0 + 65_000).aggregates
    assert (agg.count, agg.avg, agg.max) == (2, 2.0, 3.0)


def test_raw_data_goes_only_around_an_anomaly_of_that_machine() -> None:
    rng = np.random.default_rng(2)
    values = _values(rng, 120, [("M-1", "a"), ("M-2", "a")])
    fw = Forwarder(mode="aggregates", window_s=60, context_s=10)
    alarm_at = T0 + 50_000
    anomaly = EdgeAnomaly(
        machine_id="M-1",
        sensor_id="M-1.a",
        timestamp=alarm_at,
        value=1.0,
        anomaly_score=0.9,
        reason="threshold",
    )
    raw = []
    for k in range(0, len(values), 20):
        batch = values[k : k + 20]
        found = [anomaly] if any(v.timestamp_ms == alarm_at for v in batch) else []
        raw += fw.add(batch, found).readings
    times = sorted(v.timestamp_ms for v in raw)
    assert {v.machine_id for v in raw} == {"M-1"}
    assert times == list(range(alarm_at - 10_000, alarm_at + 10_001, 1000))  # once each


def test_everything_mode_forwards_every_value_in_order() -> None:
    rng = np.random.default_rng(3)
    values = _values(rng, 10, [("M-1", "a")])
    fw = Forwarder(mode="everything")
    assert fw.add(values, []).readings == values


def test_an_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        Forwarder(mode="some")  # type: ignore[arg-type]
