"""Telemetry wire formats: good batches round-trip, bad ones are refused by name and index."""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from schemas.common import EARLIEST_TIMESTAMP_MS, ID_PATTERN, Quality
from schemas.telemetry import (
    MAX_BATCH_READINGS,
    MAX_FUTURE_SKEW_MS,
    ReadingColumns,
    SensorReading,
    TelemetryBatch,
)

NOW_MS = 1_700_000_000_000
CTX = {"now_ms": NOW_MS}
LATEST_OK_MS = NOW_MS + MAX_FUTURE_SKEW_MS

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ids = st.from_regex(ID_PATTERN, fullmatch=True)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def wire_batches(draw: st.DrawFn, min_size: int = 1, max_size: int = 2000) -> dict[str, Any]:
    """A valid wire-format batch (a plain dict, as a gateway sends it)."""
    n = draw(st.integers(min_size, max_size) | st.sampled_from([min_size, max_size]))
    machines = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    names = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    which_machine = draw(arrays(np.int64, n, elements=st.integers(0, len(machines) - 1)))
    which_name = draw(arrays(np.int64, n, elements=st.integers(0, len(names) - 1)))
    timestamps = draw(
        arrays(np.int64, n, elements=st.integers(EARLIEST_TIMESTAMP_MS, LATEST_OK_MS))
    )
    values = draw(arrays(np.float64, n, elements=finite_floats))
    quality = draw(arrays(np.int64, n, elements=st.integers(0, 2)))
    readings: dict[str, Any] = {
        "machine_id": [machines[i] for i in which_machine],
        "sensor_id": [
            f"{machines[i]}.{names[j]}" for i, j in zip(which_machine, which_name, strict=True)
        ],
        "timestamp": timestamps.tolist(),
        "value": values.tolist(),
    }
    if draw(st.booleans()):  # an absent quality column means "all good"
        readings["quality"] = quality.tolist()
    return {
        "gateway_id": draw(ids),
        "site_id": draw(ids),
        "batch_id": draw(st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True)),
        "sent_at": draw(st.integers(EARLIEST_TIMESTAMP_MS, LATEST_OK_MS)),
        "readings": readings,
    }


def small_batch(n: int = 5) -> dict[str, Any]:
    return {
        "gateway_id": "gw-1",
        "site_id": "plant-a",
        "batch_id": "gw-1-000001",
        "sent_at": NOW_MS,
        "readings": {
            "machine_id": ["P-101"] * n,
            "sensor_id": [f"P-101.s{i}" for i in range(n)],
            "timestamp": [NOW_MS - 1000 + i for i in range(n)],
            "value": [float(i) for i in range(n)],
            "quality": [i % 3 for i in range(n)],
        },
    }


def refuse(data: Any, *, as_json: bool = False) -> ValidationError:
    """Validate (from a dict or from JSON text) and return the error it must raise."""
    with pytest.raises(ValidationError) as info:
        if as_json:
            TelemetryBatch.model_validate_json(json.dumps(data), context=CTX)
        else:
            TelemetryBatch.model_validate(data, context=CTX)
    return info.value


def assert_same_arrays(a: TelemetryBatch, b: TelemetryBatch) -> None:
    x, y = a.readings.arrays(), b.readings.arrays()
    assert x.machine_id.tolist() == y.machine_id.tolist()
    assert x.sensor_id.tolist() == y.sensor_id.tolist()
    assert x.timestamp.dtype == y.timestamp.dtype == np.int64
    assert np.array_equal(x.timestamp, y.timestamp)
    assert x.value.dtype == y.value.dtype == np.float64
    # bit for bit: -0.0 and the last digit of every float survive the trip
    assert np.array_equal(x.value.view(np.int64), y.value.view(np.int64))
    assert x.quality.dtype == y.quality.dtype == np.uint8
    assert np.array_equal(x.quality, y.quality)


# --- good input ---------------------------------------------------------------------------


@PROPERTY
@given(wire_batches())
def test_good_batches_validate_and_round_trip(data: dict[str, Any]) -> None:
    batch = TelemetryBatch.model_validate(data, context=CTX)
    wire = data["readings"]
    n = len(wire["value"])
    assert len(batch) == n
    arrs = batch.readings.arrays()
    assert arrs.machine_id.tolist() == wire["machine_id"]
    assert arrs.sensor_id.tolist() == wire["sensor_id"]
    assert arrs.timestamp.tolist() == wire["timestamp"]
    assert arrs.value.tolist() == wire["value"]
    assert arrs.quality.tolist() == wire.get("quality", [0] * n)

    from_dump = TelemetryBatch.model_validate(batch.model_dump(), context=CTX)
    from_json = TelemetryBatch.model_validate_json(batch.model_dump_json(), context=CTX)
    assert from_dump == batch
    assert from_json == batch
    assert from_json.model_dump() == batch.model_dump()
    assert_same_arrays(batch, from_dump)
    assert_same_arrays(batch, from_json)


@PROPERTY
@given(wire_batches(max_size=200))
def test_rows_and_columns_agree(data: dict[str, Any]) -> None:
    batch = TelemetryBatch.model_validate(data, context=CTX)
    rows = list(batch.iter_readings())
    assert [r.value for r in rows] == data["readings"]["value"]
    rebuilt = TelemetryBatch.from_readings(
        rows,
        gateway_id=batch.gateway_id,
        site_id=batch.site_id,
        batch_id=batch.batch_id,
        sent_at=batch.sent_at,
    )
    assert_same_arrays(batch, rebuilt)
    assert batch.machine_ids() == list(dict.fromkeys(data["readings"]["machine_id"]))


def test_arrays_are_cached_read_only_and_not_part_of_equality() -> None:
    a = TelemetryBatch.model_validate(small_batch(), context=CTX)
    b = TelemetryBatch.model_validate(small_batch(), context=CTX)
    assert a.readings.arrays() is a.readings.arrays()
    assert a == b  # one cached, one not
    b.readings.arrays()
    assert a == b  # both cached: numpy arrays must not be compared as bools
    with pytest.raises(ValueError, match="read-only"):
        a.readings.arrays().value[0] = 99.0
    changed = small_batch()
    changed["readings"]["value"][4] = -1.0
    assert TelemetryBatch.model_validate(changed, context=CTX) != a


def test_boundary_timestamps_are_accepted() -> None:
    data = small_batch(2)
    data["readings"]["timestamp"] = [EARLIEST_TIMESTAMP_MS, LATEST_OK_MS]
    data["sent_at"] = LATEST_OK_MS
    assert len(TelemetryBatch.model_validate(data, context=CTX)) == 2


def test_a_batch_of_only_edge_anomalies_is_not_empty() -> None:
    data = small_batch(0)
    data["anomalies"] = [EDGE_ANOMALY]
    batch = TelemetryBatch.model_validate(data, context=CTX)
    assert len(batch) == 0 and len(batch.anomalies) == 1


def test_max_size_batch_is_accepted() -> None:
    data = small_batch(MAX_BATCH_READINGS)
    assert len(TelemetryBatch.model_validate(data, context=CTX)) == MAX_BATCH_READINGS


# --- bad column entries: named by field and index -------------------------------------------


@PROPERTY
@given(
    wire_batches(max_size=300),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.data(),
    st.booleans(),
)
def test_non_finite_value_is_refused_at_its_index(
    data: dict[str, Any], bad: float, pick: st.DataObject, as_json: bool
) -> None:
    i = pick.draw(st.integers(0, len(data["readings"]["value"]) - 1))
    data["readings"]["value"][i] = bad
    err = refuse(data, as_json=as_json)
    assert err.error_count() == 1
    assert err.errors()[0]["loc"] == ("readings", "value", i)
    assert f"readings.value.{i}\n" in str(err)
    assert "finite" in str(err)


@PROPERTY
@given(wire_batches(max_size=300), st.sampled_from([3, -1, "excellent", 1.5]), st.data())
def test_bad_quality_code_is_refused_at_its_index(
    data: dict[str, Any], bad: object, pick: st.DataObject
) -> None:
    n = len(data["readings"]["value"])
    data["readings"]["quality"] = [0] * n
    i = pick.draw(st.integers(0, n - 1))
    data["readings"]["quality"][i] = bad
    err = refuse(data)
    assert err.error_count() == 1
    assert err.errors()[0]["loc"] == ("readings", "quality", i)
    assert f"readings.quality.{i}\n" in str(err)


@PROPERTY
@given(wire_batches(max_size=300), st.integers(1, 10**12), st.data(), st.booleans())
def test_future_timestamp_is_refused_at_its_index(
    data: dict[str, Any], ahead: int, pick: st.DataObject, as_json: bool
) -> None:
    ts = data["readings"]["timestamp"]
    i = pick.draw(st.integers(0, len(ts) - 1))
    ts[i] = LATEST_OK_MS + ahead
    err = refuse(data, as_json=as_json)
    message = str(err)
    assert f"timestamp.{i}: timestamp {ts[i]} is more than 300 s in the future" in message
    # a later offender does not hide the first one
    ts.append(LATEST_OK_MS + 1)
    for column in ("machine_id", "sensor_id", "value"):
        data["readings"][column].append(data["readings"][column][0])
    data["readings"].pop("quality", None)
    assert f"timestamp.{i}:" in str(refuse(data))


def test_future_is_measured_from_the_pinned_clock() -> None:
    data = small_batch(1)
    data["readings"]["timestamp"] = [LATEST_OK_MS + 1]
    data["sent_at"] = EARLIEST_TIMESTAMP_MS
    assert "timestamp.0" in str(refuse(data))
    later = {"now_ms": NOW_MS + 1}
    assert len(TelemetryBatch.model_validate(data, context=later)) == 1


@PROPERTY
@given(
    wire_batches(max_size=300),
    st.integers(-(10**12), EARLIEST_TIMESTAMP_MS - 1),
    st.data(),
)
def test_timestamp_before_2000_is_refused_at_its_index(
    data: dict[str, Any], early: int, pick: st.DataObject
) -> None:
    ts = data["readings"]["timestamp"]
    i = pick.draw(st.integers(0, len(ts) - 1))
    ts[i] = early
    err = refuse(data)
    assert err.errors()[0]["loc"] == ("readings", "timestamp", i)
    assert str(EARLIEST_TIMESTAMP_MS) in str(err)


def test_sent_at_in_the_future_or_before_2000_is_refused() -> None:
    data = small_batch()
    data["sent_at"] = LATEST_OK_MS + 1
    assert "sent_at: timestamp" in str(refuse(data))
    data["sent_at"] = EARLIEST_TIMESTAMP_MS - 1
    assert refuse(data).errors()[0]["loc"] == ("sent_at",)


@PROPERTY
@given(
    wire_batches(min_size=2, max_size=300),
    st.sampled_from(["machine_id", "sensor_id", "timestamp", "quality"]),
    st.sampled_from([-1, 1]),
)
def test_column_length_mismatch_names_the_column(
    data: dict[str, Any], column: str, change: int
) -> None:
    readings = data["readings"]
    n = len(readings["value"])
    readings.setdefault("quality", [0] * n)
    if change < 0:
        readings[column].pop()
    else:
        readings[column].append(readings[column][0])
    message = str(refuse(data))
    assert f"{column} has {n + change} entries but value has {n}" in message


def test_empty_batch_is_refused() -> None:
    data = small_batch(0)
    assert "readings: the batch is empty" in str(refuse(data))
    data.pop("readings")
    assert "readings: the batch is empty" in str(refuse(data))


def test_batch_over_the_limit_is_refused() -> None:
    data = small_batch(MAX_BATCH_READINGS + 1)
    assert f"exceed the limit of {MAX_BATCH_READINGS}" in str(refuse(data))


@st.composite
def id_columns(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Machine and sensor id columns: a run of good readings, then rows whose sensor is
    mostly of its own machine and sometimes of a near namesake."""
    machines = ["F-0"] * draw(st.integers(0, 2000))
    sensors = [f"{m}.s" for m in machines]
    rows = st.tuples(ids, ids, ids, st.sampled_from(["own", "own", "other", "longer", "case"]))
    for machine, other, name, owner in draw(st.lists(rows, min_size=1, max_size=60)):
        machines.append(machine)
        prefix = {"own": machine, "other": other, "longer": machine + "0"}.get(
            owner, machine.swapcase()
        )
        sensors.append(f"{prefix}.{name}")
    return machines, sensors


@PROPERTY
@given(id_columns())
def test_sensor_must_belong_to_its_machine(columns: tuple[list[str], list[str]]) -> None:
    """The vectorised check (long columns) and the loop (short ones) follow the rule."""
    machines, sensors = columns
    expected = next(
        (i for i, (m, s) in enumerate(zip(machines, sensors, strict=True)) if s.split(".")[0] != m),
        None,
    )
    n = len(machines)
    readings = {
        "machine_id": machines,
        "sensor_id": sensors,
        "timestamp": [NOW_MS] * n,
        "value": [0.0] * n,
    }
    if expected is None:
        assert len(ReadingColumns.model_validate(readings, context=CTX)) == n
    else:
        message = str(refuse({**small_batch(), "readings": readings}))
        assert (
            f"sensor_id.{expected}: {sensors[expected]!r} does not belong to machine "
            f"{machines[expected]!r}"
        ) in message


@pytest.mark.parametrize(
    ("machine", "sensor"),
    [("P-1", "P-12.flow"), ("P-12", "P-1.flow"), ("p-1", "P-1.flow"), ("P-1", "Q-1.flow")],
)
@pytest.mark.parametrize("n", [1, 64])
def test_sensor_of_another_machine_is_refused(machine: str, sensor: str, n: int) -> None:
    data = small_batch(n)
    i = n - 1
    data["readings"]["machine_id"][i] = machine
    data["readings"]["sensor_id"][i] = sensor
    assert f"sensor_id.{i}: {sensor!r} does not belong to machine {machine!r}" in str(refuse(data))


BAD_IDS = ["P.101", "P 101", "P*", ">", "P-101\n", "", "-P", "Pümpe", "x" * 65, "P\t1"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_machine_id_is_refused_at_its_index(bad: str) -> None:
    data = small_batch()
    data["readings"]["machine_id"][3] = bad
    err = refuse(data)
    assert ("readings", "machine_id", 3) in [e["loc"] for e in err.errors()]
    assert "readings.machine_id.3\n" in str(err)


BAD_SENSOR_IDS = [
    *(f"P-101.{b}" for b in BAD_IDS if b),
    "P-101",
    "P-101.",
    ".a",
    "P-101.a\n",
    "",
]


@pytest.mark.parametrize("bad", BAD_SENSOR_IDS)
def test_invalid_sensor_id_is_refused_at_its_index(bad: str) -> None:
    data = small_batch()
    data["readings"]["sensor_id"][2] = bad
    err = refuse(data)
    assert err.errors()[0]["loc"] == ("readings", "sensor_id", 2)


@pytest.mark.parametrize("field", ["gateway_id", "site_id"])
@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_gateway_and_site_ids_are_refused(field: str, bad: str) -> None:
    data = small_batch()
    data[field] = bad
    assert refuse(data).errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("bad", ["", "has space", "ä", "x" * 129])
def test_invalid_batch_id_is_refused(bad: str) -> None:
    data = small_batch()
    data["batch_id"] = bad
    assert refuse(data).errors()[0]["loc"] == ("batch_id",)


def test_missing_column_is_named() -> None:
    data = small_batch()
    del data["readings"]["timestamp"]
    err = refuse(data)
    assert err.errors()[0]["loc"] == ("readings", "timestamp")
    assert err.errors()[0]["type"] == "missing"


# --- edge anomalies and aggregates -----------------------------------------------------------


def aggregates(n: int = 3) -> dict[str, Any]:
    return {
        "machine_id": ["P-101"] * n,
        "sensor_id": [f"P-101.s{i}" for i in range(n)],
        "window_start": [NOW_MS - 60_000] * n,
        "avg": [1.0] * n,
        "min": [0.5] * n,
        "max": [2.0] * n,
        "std": [0.1] * n,
        "count": [60] * n,
    }


def test_aggregates_round_trip() -> None:
    data = {**small_batch(0), "aggregates": aggregates(50)}
    batch = TelemetryBatch.model_validate(data, context=CTX)
    assert batch.aggregates is not None and len(batch.aggregates) == 50
    again = TelemetryBatch.model_validate_json(batch.model_dump_json(), context=CTX)
    assert again == batch


@pytest.mark.parametrize("n", [3, 50])
def test_aggregate_average_outside_min_max_is_refused_at_its_index(n: int) -> None:
    agg = aggregates(n)
    agg["avg"][n - 1] = 3.0
    message = str(refuse({**small_batch(0), "aggregates": agg}))
    assert f"avg.{n - 1}: 3.0 is not between min 0.5 and max 2.0" in message


def test_too_many_aggregates_are_refused() -> None:
    agg = aggregates(MAX_BATCH_READINGS + 1)
    message = str(refuse({**small_batch(0), "aggregates": agg}))
    assert f"avg: {MAX_BATCH_READINGS + 1} aggregates exceed the limit" in message


def test_aggregate_checks_columns_sensors_and_time() -> None:
    agg = aggregates()
    agg["std"].pop()
    assert "std has 2 entries but avg has 3" in str(refuse({**small_batch(0), "aggregates": agg}))
    agg = aggregates()
    agg["sensor_id"][1] = "P-102.s1"
    assert "sensor_id.1: 'P-102.s1' does not belong to machine 'P-101'" in str(
        refuse({**small_batch(0), "aggregates": agg})
    )
    agg = aggregates()
    agg["window_start"][2] = LATEST_OK_MS + 1
    assert "window_start.2: timestamp" in str(refuse({**small_batch(0), "aggregates": agg}))


EDGE_ANOMALY = {
    "machine_id": "P-101",
    "sensor_id": "P-101.flow",
    "timestamp": NOW_MS,
    "value": 3.0,
    "anomaly_score": 0.9,
    "reason": "spike",
}


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"value": math.nan}, ("anomalies", 0, "value")),
        ({"anomaly_score": 1.5}, ("anomalies", 0, "anomaly_score")),
        ({"reason": ""}, ("anomalies", 0, "reason")),
        ({"timestamp": LATEST_OK_MS + 1}, ("anomalies", 0, "timestamp")),
        ({"sensor_id": "P-102.flow"}, ("anomalies", 0)),
    ],
)
def test_edge_anomaly_is_checked(change: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    err = refuse({**small_batch(0), "anomalies": [{**EDGE_ANOMALY, **change}]})
    assert err.errors()[0]["loc"] == loc
    if "sensor_id" in change:
        assert "sensor_id: 'P-102.flow' does not belong to machine 'P-101'" in str(err)


# --- one reading -------------------------------------------------------------------------------


def reading(**change: Any) -> dict[str, Any]:
    return {
        "machine_id": "M-1",
        "sensor_id": "M-1.rpm",
        "timestamp": NOW_MS,
        "value": 1480.0,
        **change,
    }


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("good", Quality.GOOD),
        ("uncertain", Quality.UNCERTAIN),
        ("bad", Quality.BAD),
        ("BAD", Quality.BAD),
        (0, Quality.GOOD),
        (1, Quality.UNCERTAIN),
        (2, Quality.BAD),
        (Quality.BAD, Quality.BAD),
    ],
)
def test_reading_quality_accepts_labels_and_codes(wire: object, expected: Quality) -> None:
    r = SensorReading.model_validate(reading(quality=wire), context=CTX)
    assert r.quality is expected
    assert SensorReading.model_validate_json(r.model_dump_json(), context=CTX) == r


def test_reading_quality_defaults_to_good() -> None:
    assert SensorReading.model_validate(reading(), context=CTX).quality is Quality.GOOD


@pytest.mark.parametrize("wire", [3, -1, "excellent", "", True, 1.0, None, [0]])
def test_reading_quality_refuses_anything_else(wire: object) -> None:
    with pytest.raises(ValidationError) as info:
        SensorReading.model_validate(reading(quality=wire), context=CTX)
    assert info.value.errors()[0]["loc"] == ("quality",)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan"])
def test_reading_refuses_non_finite_values(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        SensorReading.model_validate(reading(value=value), context=CTX)
    assert info.value.errors()[0]["loc"] == ("value",)


def test_reading_timestamps() -> None:
    aware = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert SensorReading.model_validate(reading(timestamp=aware), context=CTX).timestamp == NOW_MS
    for bad in [LATEST_OK_MS + 1, EARLIEST_TIMESTAMP_MS - 1, aware.replace(tzinfo=None)]:
        with pytest.raises(ValidationError) as info:
            SensorReading.model_validate(reading(timestamp=bad), context=CTX)
        assert info.value.errors()[0]["loc"] == ("timestamp",)
    with pytest.raises(ValidationError, match=re.escape("timestamp: timestamp")):
        SensorReading.model_validate(reading(timestamp=LATEST_OK_MS + 1), context=CTX)


def test_reading_refuses_a_sensor_id_without_machine() -> None:
    with pytest.raises(ValidationError) as info:
        SensorReading.model_validate(reading(sensor_id="rpm"), context=CTX)
    assert info.value.errors()[0]["loc"] == ("sensor_id",)


def test_validation_does_not_mutate_its_input() -> None:
    data = small_batch()
    before = copy.deepcopy(data)
    TelemetryBatch.model_validate(data, context=CTX)
    assert data == before
