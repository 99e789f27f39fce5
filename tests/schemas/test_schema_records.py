"""Records others read: anomalies, RUL predictions, twin states and work orders.

Each round-trips through Python and JSON, writes its times as ISO 8601 UTC with ``Z`` and
reads them back from ISO text or epoch milliseconds, and refuses what it must.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.anomaly import AnomalyRecord, AnomalyType, Severity
from schemas.common import ID_PATTERN, LATEST_TIMESTAMP_MS, iso_utc
from schemas.maintenance import WorkOrder, WorkOrderStatus
from schemas.rul import FAILURE_HORIZONS_H, RulPrediction
from schemas.twin import MachineStatus, TwinState

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=60)

ISO_Z_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{3}|\d{6})Z")
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z

ids = st.from_regex(ID_PATTERN, fullmatch=True)
epoch_ms = st.integers(0, LATEST_TIMESTAMP_MS)
finite = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(0, 1)
hours = st.floats(0, 1e6)
words = st.text(min_size=1, max_size=40)


def round_trips(model: BaseModel) -> dict[str, Any]:
    """Dump to Python and JSON, read both back, compare; return the JSON document."""
    cls = type(model)
    assert cls.model_validate(model.model_dump()) == model
    again = cls.model_validate_json(model.model_dump_json())
    assert again == model
    assert again.model_dump_json() == model.model_dump_json()
    doc: dict[str, Any] = json.loads(model.model_dump_json())
    return doc


def refused(cls: type[BaseModel], data: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    return info.value


# --- anomaly records ---------------------------------------------------------------------------


@st.composite
def anomalies(draw: st.DrawFn) -> AnomalyRecord:
    machine = draw(ids)
    sensors = st.builds(lambda name: f"{machine}.{name}", ids)
    return AnomalyRecord(
        machine_id=machine,
        sensor_id=draw(st.none() | sensors),
        timestamp=draw(epoch_ms),
        type=draw(st.sampled_from(AnomalyType)),
        severity=draw(st.sampled_from(Severity)),
        score=draw(unit),
        value=draw(st.none() | finite),
        expected_value=draw(st.none() | finite),
        reason=draw(words),
        detector=draw(words),
        contributing_sensors=draw(st.lists(sensors, max_size=4)),
    )


@PROPERTY
@given(anomalies())
def test_anomaly_round_trips_with_iso_times(record: AnomalyRecord) -> None:
    doc = round_trips(record)
    assert ISO_Z_MS.fullmatch(doc["timestamp"])
    assert doc["timestamp"] == iso_utc(record.timestamp)
    assert doc["anomaly_id"] == record.anomaly_id
    from_ms = AnomalyRecord.model_validate({**doc, "timestamp": record.timestamp})
    from_ms_text = AnomalyRecord.model_validate({**doc, "timestamp": str(record.timestamp)})
    assert from_ms == from_ms_text == record


def anomaly_doc(**change: Any) -> dict[str, Any]:
    return {
        "machine_id": "P-101",
        "sensor_id": "P-101.bearing_temp",
        "timestamp": T0,
        "type": "threshold",
        "severity": "critical",
        "score": 0.97,
        "value": 101.2,
        "reason": "above critical limit 95.0",
        "detector": "threshold",
        **change,
    }


def test_anomaly_id_is_derived_and_checked() -> None:
    record = AnomalyRecord.model_validate(anomaly_doc())
    assert record.anomaly_id == f"P-101:P-101.bearing_temp:{T0}:threshold"
    assert AnomalyRecord.model_validate(anomaly_doc(anomaly_id=record.anomaly_id)) == record
    err = refused(AnomalyRecord, anomaly_doc(anomaly_id="P-101:-:0:spike"))
    assert "anomaly_id 'P-101:-:0:spike' does not match the record" in str(err)


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"score": 1.01}, ("score",)),
        ({"score": math.nan}, ("score",)),
        ({"value": math.inf}, ("value",)),
        ({"type": "weird"}, ("type",)),
        ({"severity": "meh"}, ("severity",)),
        ({"reason": ""}, ("reason",)),
        ({"machine_id": "P.101"}, ("machine_id",)),
        ({"timestamp": "2023-11-14T22:13:20"}, ("timestamp",)),  # no zone
        ({"timestamp": -1}, ("timestamp",)),
        ({"timestamp": LATEST_TIMESTAMP_MS + 1}, ("timestamp",)),
        ({"unknown": 1}, ("unknown",)),
        ({"sensor_id": "P-102.bearing_temp"}, ()),
        ({"contributing_sensors": ["P-101.a", "P-9.b"]}, ()),
    ],
)
def test_anomaly_refuses(change: dict[str, Any], loc: tuple[str, ...]) -> None:
    err = refused(AnomalyRecord, anomaly_doc(**change))
    assert err.errors()[0]["loc"] == loc
    if not loc:
        assert "does not belong to machine 'P-101'" in str(err)


def test_anomaly_timestamp_from_iso_with_offset() -> None:
    record = AnomalyRecord.model_validate(anomaly_doc(timestamp="2023-11-14T23:13:20+01:00"))
    assert record.timestamp == T0
    aware = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert AnomalyRecord.model_validate(anomaly_doc(timestamp=aware)).timestamp == T0


# --- RUL predictions ---------------------------------------------------------------------------


@st.composite
def rul_predictions(draw: st.DrawFn) -> RulPrediction:
    lower, median, upper = sorted(draw(st.lists(hours, min_size=3, max_size=3)))
    times = sorted(draw(st.lists(hours, max_size=8)))
    survival = sorted(draw(st.lists(unit, min_size=len(times), max_size=len(times))), reverse=True)
    failure = sorted(draw(st.lists(unit, min_size=5, max_size=5)))
    return RulPrediction.model_validate(
        {
            "machine_id": draw(ids),
            "failure_mode": draw(st.none() | st.sampled_from(["bearing_wear", "seal_leak"])),
            "median_hours": median,
            "lower_hours": lower,
            "upper_hours": upper,
            "confidence": draw(st.floats(0.01, 0.99)),
            "survival_curve": [
                {"hours": h, "survival_probability": p}
                for h, p in zip(times, survival, strict=True)
            ],
            "failure_probability": dict(zip(FAILURE_HORIZONS_H, failure, strict=True)),
            "contributing_factors": draw(
                st.lists(
                    st.fixed_dictionaries(
                        {"factor": words, "importance": unit},
                        optional={"current_value": finite, "threshold": finite},
                    ),
                    max_size=3,
                )
            ),
            "model_version": draw(words),
            "predicted_at": draw(epoch_ms),
            "age_hours": draw(hours),
        }
    )


@PROPERTY
@given(rul_predictions())
def test_rul_round_trips_with_iso_times(prediction: RulPrediction) -> None:
    doc = round_trips(prediction)
    assert ISO_Z_MS.fullmatch(doc["predicted_at"])
    assert set(doc["failure_probability"]) == {str(h) for h in FAILURE_HORIZONS_H}
    from_ms = RulPrediction.model_validate({**doc, "predicted_at": prediction.predicted_at})
    assert from_ms == prediction


def rul_doc(**change: Any) -> dict[str, Any]:
    return {
        "machine_id": "P-101",
        "failure_mode": "bearing_wear",
        "median_hours": 400,
        "lower_hours": 150,
        "upper_hours": 900,
        "survival_curve": [
            {"hours": 0, "survival_probability": 1.0},
            {"hours": 400, "survival_probability": 0.5},
        ],
        "failure_probability": {24: 0.01, 72: 0.03, 168: 0.08, 336: 0.2, 720: 0.6},
        "model_version": "bearing-v1",
        "predicted_at": T0,
        **change,
    }


def test_rul_example_is_valid() -> None:
    assert RulPrediction.model_validate(rul_doc()).failure_probability[168] == 0.08


@pytest.mark.parametrize(("median", "lower", "upper"), [(100, 150, 900), (1000, 150, 900)])
def test_rul_median_outside_interval_is_refused(median: float, lower: float, upper: float) -> None:
    err = refused(RulPrediction, rul_doc(median_hours=median, lower_hours=lower, upper_hours=upper))
    assert f"median_hours ({float(median)}) must lie between lower_hours" in str(err)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "survival_curve": [
                    {"hours": 5, "survival_probability": 1},
                    {"hours": 1, "survival_probability": 0.9},
                ]
            },
            r"survival_curve.1.hours \(1.0\) comes before",
        ),
        (
            {
                "survival_curve": [
                    {"hours": 0, "survival_probability": 0.5},
                    {"hours": 9, "survival_probability": 0.6},
                ]
            },
            r"survival_curve.1.survival_probability \(0.6\) rises",
        ),
        ({"failure_probability": {24: 0.1, 168: 0.3}}, r"no entry for horizons \[72, 336, 720\]"),
        (
            {"failure_probability": {24: 0.1, 72: 0.05, 168: 0.3, 336: 0.4, 720: 0.5}},
            r"failure_probability.72 \(0.05\) is below failure_probability.24",
        ),
        (
            {"failure_probability": {0: 0, 24: 0.1, 72: 0.2, 168: 0.3, 336: 0.4, 720: 0.5}},
            "greater than 0",
        ),
        (
            {"failure_mode_shares": {"bearing_wear": 0.5, "seal_leak": 0.2}},
            r"failure_mode_shares sum to 0.7000; the shares of one predicted failure sum to 1",
        ),
        ({"failure_mode_shares": {"bearing_wear": 1.5}}, "less than or equal to 1"),
        ({"median_hours": -1, "lower_hours": -2}, "greater than or equal to 0"),
        ({"confidence": 1.0}, "less than 1"),
        ({"upper_hours": math.inf}, "finite"),
        ({"predicted_at": "yesterday"}, "Invalid isoformat"),
        ({"extra": True}, "Extra inputs are not permitted"),
    ],
)
def test_rul_refuses(change: dict[str, Any], message: str) -> None:
    assert re.search(message, str(refused(RulPrediction, rul_doc(**change))))


def test_rul_tolerates_numerical_noise_in_curves() -> None:
    noisy = rul_doc(
        survival_curve=[
            {"hours": 0, "survival_probability": 0.5},
            {"hours": 1, "survival_probability": 0.5 + 1e-12},
        ]
    )
    assert len(RulPrediction.model_validate(noisy).survival_curve) == 2


# --- twin states -------------------------------------------------------------------------------


@st.composite
def twin_states(draw: st.DrawFn) -> TwinState:
    machine = draw(ids)
    sensor_ids = st.builds(lambda name: f"{machine}.{name}", ids)
    return TwinState.model_validate(
        {
            "machine_id": machine,
            "version": draw(st.integers(0, 2**62)),
            "last_update": draw(st.none() | epoch_ms),
            "health_score": draw(st.floats(0, 100)),
            "status": draw(st.sampled_from(MachineStatus)),
            "sensors": draw(
                st.dictionaries(
                    sensor_ids,
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "value": finite,
                            "timestamp": epoch_ms,
                            "quality": st.sampled_from([0, 1, 2]),
                            "stale": st.booleans(),
                        },
                    ),
                    max_size=4,
                )
            ),
            "derived_metrics": draw(st.dictionaries(words, st.none() | finite, max_size=3)),
            "features": draw(
                st.dictionaries(sensor_ids, st.dictionaries(words, finite, max_size=3), max_size=3)
            ),
            "active_anomalies": draw(st.integers(0, 100)),
            "rul": draw(st.none() | rul_predictions()),
        }
    )


@PROPERTY
@given(twin_states())
def test_twin_state_round_trips_with_iso_times(state: TwinState) -> None:
    doc = round_trips(state)
    if state.last_update is None:
        assert doc["last_update"] is None
    else:
        assert ISO_Z_MS.fullmatch(doc["last_update"])
    for sid, sensor in state.sensors.items():
        written = doc["sensors"][sid]["timestamp"]
        assert written is None if sensor.timestamp is None else ISO_Z_MS.fullmatch(written)


def twin_doc(**change: Any) -> dict[str, Any]:
    return {
        "machine_id": "P-101",
        "version": 3,
        "last_update": T0,
        "health_score": 87.5,
        "status": "running",
        **change,
    }


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"health_score": 100.5}, ("health_score",)),
        ({"version": -1}, ("version",)),
        ({"status": "exploded"}, ("status",)),
        ({"features": {"P-101.a": {"slope_64": math.nan}}}, ("features", "P-101.a", "slope_64")),
        ({"derived_metrics": {"efficiency": math.inf}}, ("derived_metrics", "efficiency")),
        ({"sensors": {"P-101.a": {"value": math.nan}}}, ("sensors", "P-101.a", "value")),
        ({"sensors": {"P-101.a": {"colour": 1}}}, ("sensors", "P-101.a", "colour")),
        ({"unknown": 1}, ("unknown",)),
    ],
)
def test_twin_state_refuses(change: dict[str, Any], loc: tuple[str, ...]) -> None:
    errors = refused(TwinState, twin_doc(**change)).errors()
    assert loc in [e["loc"][: len(loc)] for e in errors]


def test_twin_metric_that_cannot_be_computed_is_none() -> None:
    state = TwinState.model_validate(twin_doc(derived_metrics={"efficiency": None}))
    assert round_trips(state)["derived_metrics"] == {"efficiency": None}


# --- work orders -------------------------------------------------------------------------------

utc_times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)
offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)


@st.composite
def work_orders(draw: st.DrawFn) -> WorkOrder:
    status = draw(st.sampled_from(WorkOrderStatus))
    created = draw(utc_times)
    return WorkOrder.model_validate(
        {
            "workorder_id": draw(st.from_regex(r"WO-[0-9]{4}-[0-9]{2}-[0-9]{4,8}", fullmatch=True)),
            "asset_id": draw(ids),
            "type": draw(st.sampled_from(["predictive", "preventive", "corrective", "inspection"])),
            "priority": draw(st.sampled_from(["low", "medium", "high", "critical"])),
            "title": draw(words),
            "description": draw(st.text(max_size=100)),
            "status": status,
            "scheduled_date": draw(st.none() | utc_times),
            "estimated_duration_hours": draw(st.floats(0.1, 1000)),
            "required_skills": draw(st.lists(ids, max_size=3)),
            "parts_required": draw(
                st.lists(
                    st.fixed_dictionaries(
                        {"part_number": ids, "quantity": st.integers(1, 50)},
                        optional={"description": words},
                    ),
                    max_size=3,
                )
            ),
            "failure_prediction": draw(
                st.none()
                | st.fixed_dictionaries(
                    {"probability": unit, "rul_hours": hours},
                    optional={"failure_mode": st.sampled_from(["bearing_wear", "misalignment"])},
                )
            ),
            "assigned_technician_id": draw(st.none() | ids),
            "created_at": created.astimezone(draw(offsets)),  # any zone in, UTC out
            "completed_at": (
                created + timedelta(hours=draw(st.integers(0, 10_000)))
                if status is WorkOrderStatus.COMPLETED
                else None
            ),
        }
    )


@PROPERTY
@given(work_orders())
def test_work_order_round_trips_with_iso_times(order: WorkOrder) -> None:
    doc = round_trips(order)
    assert order.created_at.tzinfo is UTC
    assert ISO_Z.fullmatch(doc["created_at"])
    for field in ("scheduled_date", "completed_at"):
        value = getattr(order, field)
        assert (doc[field] is None) if value is None else bool(ISO_Z.fullmatch(doc[field]))
    as_written = WorkOrder.model_validate_json(json.dumps(doc))
    assert as_written.created_at == order.created_at


@PROPERTY
@given(utc_times.map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)))
def test_work_order_times_read_from_epoch_ms(created: datetime) -> None:
    ms = (created - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    doc = work_order_doc(created_at=ms)
    order = WorkOrder.model_validate(doc)
    assert order.created_at == created
    assert WorkOrder.model_validate_json(json.dumps(doc)).created_at == created
    assert WorkOrder.model_validate(work_order_doc(created_at=str(ms))).created_at == created
    written = json.loads(order.model_dump_json())["created_at"]
    assert ISO_Z_MS.fullmatch(written)
    assert datetime.fromisoformat(written) == created


def work_order_doc(**change: Any) -> dict[str, Any]:
    return {
        "workorder_id": "WO-2025-01-0089",
        "asset_id": "P-101",
        "type": "predictive",
        "title": "Replace drive-end bearing",
        "created_at": "2025-01-02T08:00:00Z",
        **change,
    }


def test_work_order_times_are_normalised_to_utc() -> None:
    order = WorkOrder.model_validate(
        work_order_doc(created_at="2025-01-02T10:00:00+02:00", scheduled_date=T0)
    )
    assert order.created_at == datetime(2025, 1, 2, 8, tzinfo=UTC)
    assert order.created_at.utcoffset() == timedelta(0)
    doc = json.loads(order.model_dump_json())
    assert doc["created_at"] == "2025-01-02T08:00:00.000Z"
    assert doc["scheduled_date"] == "2023-11-14T22:13:20.000Z"  # epoch ms, not seconds


@pytest.mark.parametrize("good", ["WO-2025-01-0089", "WO-2025-12-0001", "WO-1999-00-123456789"])
def test_work_order_id_pattern_accepts(good: str) -> None:
    assert WorkOrder.model_validate(work_order_doc(workorder_id=good)).workorder_id == good


@pytest.mark.parametrize(
    "bad",
    [
        "WO-2025-1-0089",
        "wo-2025-01-0089",
        "WO-2025-01-089",
        "WO-25-01-0089",
        "WO-2025-01-0089 ",
        "WO-2025-01-0089\n",
        "WO-2025-01-00a9",
        "WO-٢٠٢٥-01-0089",  # Arabic-Indic digits: \d would take them
        "WO-2025-01-" + "9" * 60,  # longer than a subject token may be
        "",
    ],
)
def test_work_order_id_pattern_refuses(bad: str) -> None:
    assert refused(WorkOrder, work_order_doc(workorder_id=bad)).errors()[0]["loc"] == (
        "workorder_id",
    )


@pytest.mark.parametrize("status", list(WorkOrderStatus))
@pytest.mark.parametrize("completed", [True, False])
def test_completed_at_is_set_exactly_when_completed(
    status: WorkOrderStatus, completed: bool
) -> None:
    doc = work_order_doc(status=status, completed_at="2025-01-03T12:00:00Z" if completed else None)
    if completed == (status is WorkOrderStatus.COMPLETED):
        assert WorkOrder.model_validate(doc).status is status
    else:
        err = refused(WorkOrder, doc)
        assert "completed_at is set exactly when status is completed" in str(err)


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"created_at": "2025-01-02T08:00:00"}, ("created_at",)),  # naive
        ({"created_at": datetime(2025, 1, 2, 8)}, ("created_at",)),  # naive
        ({"created_at": "2025-01-02"}, ("created_at",)),
        ({"created_at": math.inf}, ("created_at",)),
        ({"created_at": True}, ("created_at",)),
        ({"scheduled_date": "soon"}, ("scheduled_date",)),
        ({"estimated_duration_hours": 0}, ("estimated_duration_hours",)),
        ({"asset_id": "P 101"}, ("asset_id",)),
        ({"type": "magic"}, ("type",)),
        (
            {"parts_required": [{"part_number": "B-6205", "quantity": 0}]},
            ("parts_required", 0, "quantity"),
        ),
        (
            {"failure_prediction": {"probability": 2, "rul_hours": 5}},
            ("failure_prediction", "probability"),
        ),
        ({"unknown": 1}, ("unknown",)),
        (
            {"parts_required": [{"part_number": "B-6205", "colour": "red"}]},
            ("parts_required", 0, "colour"),
        ),
    ],
)
def test_work_order_refuses(change: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    assert refused(WorkOrder, work_order_doc(**change)).errors()[0]["loc"] == loc
