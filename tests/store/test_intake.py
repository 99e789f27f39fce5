"""What the writer accepts and refuses, and why (pure, no servers): decoding a telemetry
message, screening its rows, gateways' aggregates as rollup partials, and the table rows
of events. Law: every row of a message is either kept or counted in exactly one refusal."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.anomaly import AnomalyRecord
from schemas.common import FailureMode
from schemas.maintenance import WorkOrder
from schemas.rul import RulPrediction, SurvivalPoint
from schemas.telemetry import EdgeAnomaly
from store.intake import (
    Decoded,
    Refusal,
    Rows,
    anomaly_row,
    decode_telemetry,
    edge_anomaly_row,
    edge_partials,
    rul_row,
    screen,
    snapshot_row,
    workorder_row,
)

T = 1_764_400_020_000  # 2025-11-29T07:07:00Z, a minute boundary in the past
MINUTE = 60_000
KEYS = {"P-1.temp": 7, "P-1.vib": 8, "P-2.temp": 9}


def message(**fields: Any) -> bytes:
    batch = {"gateway_id": "gw-1", "site_id": "north", "batch_id": "b-1", "sent_at": T}
    return json.dumps({**batch, **fields}).encode()


def readings(
    sensors: list[str], ts: list[int], values: list[float], quality: list[int] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine_id": [s.split(".")[0] for s in sensors],
        "sensor_id": sensors,
        "timestamp": ts,
        "value": values,
    }
    if quality is not None:
        out["quality"] = quality
    return out


def aggregates(
    sensors: list[str],
    starts: list[int],
    avg: list[float],
    std: list[float],
    count: list[int],
    window_ms: int = MINUTE,
) -> dict[str, Any]:
    return {
        "machine_id": [s.split(".")[0] for s in sensors],
        "sensor_id": sensors,
        "window_start": starts,
        "window_ms": window_ms,
        "avg": avg,
        "min": [a - 1 for a in avg],
        "max": [a + 2 for a in avg],
        "std": std,
        "count": count,
    }


def rows(
    sensors: list[str], ts: list[int], values: list[float], quality: list[int] | None = None
) -> Rows:
    return Rows(
        np.array(sensors, dtype=object),
        np.array(ts, np.int64),
        np.array(values, np.float32),
        np.array(quality or [0] * len(sensors), np.int8),
    )


# -- decode_telemetry ------------------------------------------------------------------------


def test_a_valid_message_becomes_columns() -> None:
    data = message(
        readings=readings(["P-1.temp", "P-2.temp"], [T, T + 1], [20.5, 1e10], [0, 1]),
        anomalies=[
            {
                "machine_id": "P-1",
                "sensor_id": "P-1.vib",
                "timestamp": T,
                "value": 9.5,
                "anomaly_score": 0.9,
                "reason": "above 9",
            }
        ],
    )
    d = decode_telemetry(12, data, stream_time=3.5, msg="the message")
    assert (d.seq, d.stream_time, d.msg, d.refused) == (12, 3.5, "the message", None)
    assert d.count == 2 and d.rows is not None
    assert d.rows.sensor_id.tolist() == ["P-1.temp", "P-2.temp"]
    assert d.rows.ts_ms.tolist() == [T, T + 1]
    assert d.rows.value.dtype == np.float32 and d.rows.value.tolist() == [20.5, 1e10]
    assert d.rows.quality.dtype == np.int8 and d.rows.quality.tolist() == [0, 1]
    assert d.rows.key is None
    assert d.aggregates is None
    assert [a.sensor_id for a in d.anomalies] == ["P-1.vib"]


def test_quality_defaults_to_good() -> None:
    d = decode_telemetry(1, message(readings=readings(["P-1.temp"], [T], [1.0])), 0.0)
    assert d.rows is not None and d.rows.quality.tolist() == [0]


def test_a_message_of_aggregates_only_has_no_rows() -> None:
    data = message(aggregates=aggregates(["P-1.temp"], [T], [5.0], [1.0], [60]))
    d = decode_telemetry(1, data, 0.0)
    assert d.refused is None and d.rows is None and d.count == 0
    assert d.aggregates is not None and d.aggregates.sensor_id == ["P-1.temp"]


def test_a_value_beyond_float32_is_decoded_as_infinite_for_screen_to_refuse() -> None:
    d = decode_telemetry(1, message(readings=readings(["P-1.temp"] * 2, [T, T], [1e39, -1e300])), 0)
    assert d.refused is None and d.rows is not None
    assert d.rows.value.tolist() == [math.inf, -math.inf]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "invalid telemetry batch: message: Invalid JSON"),
        (b"{}", "invalid telemetry batch: gateway_id: Field required"),
        (message(), "invalid telemetry batch: message: Value error, readings: the batch is empty"),
        (
            message(readings=readings(["P-1.temp"] * 2, [T], [1.0, 2.0])),
            "invalid telemetry batch: readings: Value error, timestamp has 1 entries but value "
            "has 2",
        ),
        (
            message(readings=readings(["P-1.temp"], [T], [1.0], [3])),
            "invalid telemetry batch: readings.quality.0: Input should be less than or equal to 2",
        ),
        (
            message(readings={**readings(["P-2.temp"], [T], [1.0]), "machine_id": ["P-1"]}),
            "invalid telemetry batch: readings: Value error, sensor_id.0: 'P-2.temp' does not "
            "belong to machine 'P-1'",
        ),
        (
            message(sent_at=T + 10**12),
            "invalid telemetry batch: sent_at: Value error, sent_at: timestamp",
        ),
    ],
    ids=["not-json", "no-fields", "empty", "columns", "quality", "foreign-sensor", "future"],
)
def test_an_invalid_message_is_refused_whole_naming_the_field(data: bytes, reason: str) -> None:
    d = decode_telemetry(4, data, 0.0)
    assert d.refused is not None and d.refused.startswith(reason), d.refused
    assert d.rows is None and d.aggregates is None and d.anomalies == [] and d.count == 0


def test_refuse_drops_what_was_decoded() -> None:
    d = decode_telemetry(1, message(readings=readings(["P-1.temp"], [T], [1.0])), 0.0)
    d.refuse("duplicate")
    assert (d.refused, d.rows, d.aggregates, d.anomalies, d.count) == (
        "duplicate",
        None,
        None,
        [],
        0,
    )


# -- screen ------------------------------------------------------------------------------------


def test_screen_keeps_good_rows_with_their_keys_in_order() -> None:
    r = rows(["P-1.vib", "P-1.temp", "P-2.temp"], [T + 2, T + 1, T], [3.0, 2.0, 1.0], [0, 1, 2])
    kept, refusals = screen(5, r, KEYS, oldest_ms=0, keep_days=90)
    assert refusals == []
    assert kept.key is not None and kept.key.dtype == np.int32
    assert kept.key.tolist() == [8, 7, 9]
    assert kept.sensor_id.tolist() == ["P-1.vib", "P-1.temp", "P-2.temp"]
    assert kept.ts_ms.tolist() == [T + 2, T + 1, T]
    assert kept.value.tolist() == [3.0, 2.0, 1.0]
    assert kept.quality.tolist() == [0, 1, 2]  # bad quality is stored, not refused


def test_screen_refuses_once_per_reason_counting_rows_and_naming_the_first() -> None:
    oldest = T - 1000
    r = rows(
        ["P-1.temp", "X-9.a", "P-1.vib", "X-8.b", "P-2.temp", "P-1.vib", "P-1.temp"],
        [T, T, oldest - 1, oldest - 5000, T, T, oldest],
        [1.0, 2.0, 3.0, 4.0, math.inf, -math.inf, 7.0],
    )
    kept, refusals = screen(9, r, KEYS, oldest_ms=oldest, keep_days=30)
    assert kept.key is not None and kept.key.tolist() == [7, 7]  # the first and the last
    assert kept.value.tolist() == [1.0, 7.0]  # exactly at the retention limit is kept
    assert refusals == [
        Refusal(9, "unknown sensor: X-9.a is not registered", 2, "X-9.a"),
        Refusal(9, "older than the raw retention (30 days)", 1, str(oldest - 1)),
        Refusal(9, "value out of range: beyond a 4-byte float", 2, "P-2.temp"),
    ]


def test_an_old_row_of_an_unknown_sensor_is_refused_once_as_unknown() -> None:
    kept, refusals = screen(1, rows(["X-1.a"], [0], [math.nan]), KEYS, oldest_ms=T, keep_days=1)
    assert len(kept) == 0 and kept.key is not None and len(kept.key) == 0
    assert [(r.reason, r.rows) for r in refusals] == [
        ("unknown sensor: X-1.a is not registered", 1)
    ]


def test_screen_of_no_rows() -> None:
    kept, refusals = screen(1, rows([], [], []), KEYS, oldest_ms=0, keep_days=1)
    assert (len(kept), refusals) == (0, [])


sensor_names = st.sampled_from(["P-1.temp", "P-1.vib", "P-2.temp", "X-1.a", "X-2.b"])
value_st = st.one_of(
    st.floats(-1e6, 1e6, width=32), st.sampled_from([math.inf, -math.inf, math.nan])
)
row_st = st.tuples(sensor_names, st.integers(T - 10_000, T + 10_000), value_st, st.integers(0, 2))


@settings(max_examples=100, deadline=None)
@given(st.lists(row_st, max_size=40), st.integers(T - 10_000, T + 10_000))
def test_every_row_is_kept_or_refused_once_with_a_reason(
    data: list[tuple[str, int, float, int]], oldest: int
) -> None:
    r = rows([d[0] for d in data], [d[1] for d in data], [d[2] for d in data], [d[3] for d in data])
    kept, refusals = screen(3, r, KEYS, oldest_ms=oldest, keep_days=7)
    # The rule, one row at a time: registered, not older than the retention, finite.
    expected = [d for d in data if d[0] in KEYS and d[1] >= oldest and math.isfinite(d[2])]
    assert kept.sensor_id.tolist() == [d[0] for d in expected]
    assert kept.ts_ms.tolist() == [d[1] for d in expected]
    assert kept.value.tolist() == [float(np.float32(d[2])) for d in expected]
    assert kept.quality.tolist() == [d[3] for d in expected]
    assert kept.key is not None and kept.key.tolist() == [KEYS[d[0]] for d in expected]
    assert len(kept) + sum(f.rows for f in refusals) == len(data)  # nothing lost or doubled
    reasons = [f.reason.split(":")[0].split(" (")[0] for f in refusals]
    assert len(reasons) == len(set(reasons))  # one refusal per reason
    assert all(f.seq == 3 and f.rows > 0 and f.reason and f.sample for f in refusals)
    unknown = sum(d[0] not in KEYS for d in data)
    assert sum(f.rows for f in refusals if f.reason.startswith("unknown sensor")) == unknown


# -- edge_partials ---------------------------------------------------------------------------


def decoded(seq: int, **fields: Any) -> Decoded:
    d = decode_telemetry(seq, message(**fields), 0.0)
    assert d.refused is None, d.refused
    return d


def test_edge_aggregates_become_partials_with_m2_from_the_population_std() -> None:
    d = decoded(
        1,
        aggregates=aggregates(
            ["P-1.temp", "P-2.temp"], [T, T + 30_000], [5.0, 7.5], [2.0, 0.5], [60, 4]
        ),
    )
    p, refusals = edge_partials([d], KEYS)
    assert refusals == [] and p is not None
    assert p.sensor.tolist() == [7, 9]
    assert p.bucket_ms.tolist() == [T, T]  # a window starting mid-minute is that minute's
    assert p.count.tolist() == [60, 4]
    assert p.mean.tolist() == [5.0, 7.5]
    assert p.m2.tolist() == [240.0, 1.0]  # std^2 * count
    assert p.vmin.tolist() == [4.0, 6.5] and p.vmax.tolist() == [7.0, 9.5]
    assert p.n_uncertain.tolist() == [0, 0] and p.n_bad.tolist() == [0, 0]
    dtypes = [a.dtype for a in (p.sensor, p.bucket_ms, p.count, p.mean, p.m2, p.vmin, p.vmax)]
    assert dtypes == [np.int32, np.int64, np.int32, np.float64, np.float64, np.float32, np.float32]


def test_the_last_aggregate_sent_for_a_sensor_and_minute_wins() -> None:
    first = decoded(
        1, aggregates=aggregates(["P-1.temp", "P-1.vib"], [T, T], [1.0, 2.0], [0.0, 0.0], [10, 10])
    )
    resent = decoded(
        2,
        aggregates=aggregates(
            ["P-1.temp", "P-1.temp", "P-1.temp"],
            [T, T + MINUTE, T + 59_000],
            [3.0, 4.0, 5.0],
            [0.0, 0.0, 0.0],
            [30, 40, 50],
        ),
    )
    p, _ = edge_partials([first, resent], KEYS)
    assert p is not None
    columns = zip(p.sensor, p.bucket_ms, p.count, p.mean, strict=True)
    got = {(int(s), int(b)): (int(c), float(m)) for s, b, c, m in columns}
    assert got == {(7, T): (50, 5.0), (8, T): (10, 2.0), (7, T + MINUTE): (40, 4.0)}


def test_other_windows_and_unknown_sensors_are_refused() -> None:
    hourly = decoded(
        3,
        aggregates=aggregates(["P-1.temp"] * 2, [T, T], [1.0, 1.0], [0.0, 0.0], [1, 1], 3_600_000),
    )
    mixed = decoded(
        4,
        aggregates=aggregates(
            ["X-1.a", "P-1.temp", "X-2.b"], [T, T, T], [1.0, 2.0, 3.0], [0.0] * 3, [1, 2, 3]
        ),
    )
    p, refusals = edge_partials([hourly, mixed], KEYS)
    assert refusals == [
        Refusal(
            3,
            "aggregate window: 3600000 ms is not 1 minute; only 1-minute aggregates are stored",
            2,
            "3600000",
        ),
        Refusal(4, "unknown sensor: X-1.a is not registered", 2, "X-1.a"),
    ]
    assert p is not None and p.sensor.tolist() == [7] and p.count.tolist() == [2]


def test_no_aggregates_no_partials() -> None:
    only_readings = decoded(1, readings=readings(["P-1.temp"], [T], [1.0]))
    refused = decode_telemetry(2, b"{}", 0.0)
    unknown = decoded(3, aggregates=aggregates(["X-1.a"], [T], [1.0], [0.0], [1]))
    p, refusals = edge_partials([only_readings, refused, unknown], KEYS)
    assert p is None
    assert [(r.seq, r.rows) for r in refusals] == [(3, 1)]
    assert edge_partials([], KEYS) == (None, [])


def test_an_aggregate_with_a_huge_spread_does_not_break_the_batch() -> None:
    huge = decoded(
        1,
        aggregates={
            **aggregates(["P-1.temp"], [T], [0.0], [1e200], [3]),
            "min": [-1e200],
            "max": [1e200],
        },
    )
    p, refusals = edge_partials([huge], KEYS)
    assert p is None  # refused, as a reading of that size is, not lost and not crashing
    assert [(r.seq, r.reason, r.rows) for r in refusals] == [
        (1, "value out of range: beyond a 4-byte float", 1)
    ]


def test_an_aggregate_beyond_float32_is_not_stored_as_infinite() -> None:
    big = decoded(
        1,
        aggregates={
            **aggregates(["P-1.temp", "P-1.vib"], [T, T], [1e39, 1.0], [0.0, 0.0], [3, 3]),
            "min": [1e39, 0.0],
            "max": [1e39, 2.0],
        },
    )
    p, refusals = edge_partials([big], KEYS)
    assert p is not None and len(p) == 1  # the other sensor's aggregate is kept
    assert bool(np.isfinite(p.vmin).all() and np.isfinite(p.vmax).all())
    assert [(r.reason, r.rows, r.sample) for r in refusals] == [
        ("value out of range: beyond a 4-byte float", 1, "P-1.temp")
    ]


# -- table rows ------------------------------------------------------------------------------


def test_an_edge_anomaly_row_has_a_deterministic_id_and_a_severity_from_its_score() -> None:
    a = EdgeAnomaly(
        machine_id="P-1",
        sensor_id="P-1.vib",
        timestamp=T,
        value=9.5,
        anomaly_score=0.85,
        reason="above 9",
    )
    row = edge_anomaly_row(a)
    assert row[:12] == (
        f"P-1:P-1.vib:{T}:edge",
        "P-1",
        "P-1.vib",
        datetime(2025, 11, 29, 7, 7, tzinfo=UTC),
        "edge",
        "high",
        0.85,
        9.5,
        None,
        "above 9",
        "edge",
        "edge",
    )
    assert json.loads(row[12])["anomaly_score"] == 0.85
    assert edge_anomaly_row(a)[0] == row[0]
    assert edge_anomaly_row(a.model_copy(update={"anomaly_score": 0.97}))[5] == "critical"


def test_an_anomaly_row_is_from_the_twin() -> None:
    a = AnomalyRecord(
        machine_id="P-1",
        sensor_id="P-1.vib",
        timestamp=T,
        type="threshold",
        severity="critical",
        score=0.99,
        value=9.5,
        expected_value=4.0,
        reason="above 9",
        detector="limits",
    )
    row = anomaly_row(a)
    assert row[0] == a.anomaly_id
    assert row[1:12] == (
        "P-1",
        "P-1.vib",
        datetime(2025, 11, 29, 7, 7, tzinfo=UTC),
        "threshold",
        "critical",
        0.99,
        9.5,
        4.0,
        "above 9",
        "limits",
        "twin",
    )


def prediction(mode: str | None) -> RulPrediction:
    return RulPrediction(
        machine_id="P-1",
        failure_mode=mode,
        median_hours=100,
        lower_hours=50,
        upper_hours=300,
        survival_curve=[SurvivalPoint(hours=0, survival_probability=1.0)],
        failure_probability={24: 0.01, 72: 0.1, 168: 0.6, 336: 0.8, 720: 0.9},
        model_version="v3",
        predicted_at=T,
    )


def test_a_rul_row_carries_the_one_week_failure_probability() -> None:
    row = rul_row(prediction("seal_leak"))
    assert row[:9] == (
        "P-1",
        datetime(2025, 11, 29, 7, 7, tzinfo=UTC),
        "machine",
        "seal_leak",
        100.0,
        50.0,
        300.0,
        0.6,
        "v3",
    )
    assert rul_row(prediction(None))[3] is None


def test_a_workorder_row() -> None:
    at = datetime(2026, 1, 5, tzinfo=UTC)
    w = WorkOrder(
        workorder_id="WO-2026-01-0001",
        asset_id="P-1",
        type="corrective",
        title="Fix",
        created_at=at,
    )
    row = workorder_row(w)
    assert row[:10] == (
        "WO-2026-01-0001",
        "P-1",
        "corrective",
        "medium",
        "scheduled",
        "Fix",
        None,
        None,
        at,
        None,
    )
    assert row[11] is None
    assert (
        workorder_row(w.model_copy(update={"failure_mode": FailureMode.SEAL_LEAK}))[11]
        == "seal_leak"
    )


def test_a_snapshot_row_at_the_twins_data_time() -> None:
    doc = {
        "last_update": T,
        "version": "4",
        "status": "degraded",
        "health_score": "0.5",
        "anomalies": 2,
    }
    row = snapshot_row("P-1", doc)
    assert row is not None
    assert row[:6] == ("P-1", datetime(2025, 11, 29, 7, 7, tzinfo=UTC), 4, "degraded", 0.5, 2)
    assert json.loads(row[6]) == doc
    no_anomalies = {k: v for k, v in doc.items() if k != "anomalies"}
    assert (snapshot_row("P-1", no_anomalies) or ())[5] == 0


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"last_update": None, "version": 1, "status": "ok", "health_score": 1.0},
        {"last_update": T, "status": "ok", "health_score": 1.0},  # no version
        {"last_update": T, "version": "four", "status": "ok", "health_score": 1.0},
        {"last_update": "soon", "version": 1, "status": "ok", "health_score": 1.0},
        {"last_update": T, "version": 1, "status": "ok", "health_score": None},
    ],
    ids=["empty", "no-data-yet", "no-version", "bad-version", "bad-time", "no-health"],
)
def test_a_malformed_or_empty_twin_event_has_no_snapshot_row(doc: dict[str, Any]) -> None:
    assert snapshot_row("P-1", doc) is None
