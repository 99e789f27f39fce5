"""What the writer accepts, and what it refuses with which reason (pure: no I/O).

:func:`decode_telemetry` turns one JetStream message into a :class:`Decoded` (or a
refusal of the whole message, naming the field at fault); :func:`screen` keeps the rows
that can be stored and says why the others cannot; :func:`edge_partials` turns gateways'
own 1-minute aggregates into rollup partials; the ``*_row`` functions give the table rows
of edge anomalies and of the actors' events.

>>> keys = {"P-1.t": 7}
>>> rows = Rows(np.array(["P-1.t", "P-1.x"], dtype=object), np.array([NOW, NOW]),
...             np.array([1.0, 2.0], np.float32), np.zeros(2, np.int8))
>>> kept, refusals = screen(3, rows, keys, oldest_ms=0, keep_days=90)
>>> kept.key.tolist(), [r.reason for r in refusals]
([7], ['unknown sensor: P-1.x is not registered'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from schemas.alerts import Alert
from schemas.anomaly import AnomalyRecord, Severity
from schemas.audit import AuditRecord
from schemas.maintenance import WorkOrder
from schemas.problems import first_problem
from schemas.rul import RulPrediction
from schemas.telemetry import AggregateColumns, EdgeAnomaly, TelemetryBatch
from store.rollups import Partials

NOW = 1_764_400_000_000  # for the examples


@dataclass(frozen=True)
class Refusal:
    seq: int
    reason: str
    rows: int
    sample: str


@dataclass(frozen=True)
class Rows:
    """Reading columns; ``key`` (the sensors' integer keys) once screened."""

    sensor_id: np.ndarray  # object (str)
    ts_ms: np.ndarray  # int64
    value: np.ndarray  # float32
    quality: np.ndarray  # int8
    key: np.ndarray | None = None  # int32

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass
class Decoded:
    """One telemetry message, decoded and validated, ready to be written."""

    seq: int
    msg: Any
    stream_time: float
    rows: Rows | None = None
    aggregates: AggregateColumns | None = None
    anomalies: list[EdgeAnomaly] = field(default_factory=list)
    refused: str | None = None  # the whole message, with the reason

    @property
    def count(self) -> int:
        return 0 if self.rows is None else len(self.rows)

    def refuse(self, reason: str) -> None:
        self.refused = reason
        self.rows, self.aggregates, self.anomalies = None, None, []


def first_error(exc: ValidationError, what: str) -> str:
    """``"<what>: <location>: <message>"`` of a validation error's first problem."""
    where, problem = first_problem(exc)
    return f"{what}: {where or 'message'}: {problem}"


def decode_telemetry(seq: int, data: bytes, stream_time: float, msg: Any = None) -> Decoded:
    out = Decoded(seq=seq, msg=msg, stream_time=stream_time)
    try:
        batch = TelemetryBatch.model_validate_json(data)
    except ValidationError as exc:
        out.refused = first_error(exc, "invalid telemetry batch")
        return out
    if len(batch.readings):
        arrays = batch.readings.arrays()
        with np.errstate(over="ignore"):  # beyond float32: refused by screen()
            value = arrays.value.astype(np.float32)
        out.rows = Rows(arrays.sensor_id, arrays.timestamp, value, arrays.quality.astype(np.int8))
    out.aggregates = batch.aggregates
    out.anomalies = list(batch.anomalies)
    return out


def screen(
    seq: int, rows: Rows, keys: dict[str, int], oldest_ms: float, keep_days: int
) -> tuple[Rows, list[Refusal]]:
    """The rows that can be stored (with their sensor keys), and a refusal per reason for
    the others: an unregistered sensor, older than the raw retention, beyond float32."""
    key = np.array([keys.get(s, -1) for s in rows.sensor_id.tolist()], dtype=np.int32)
    refusals = []
    unknown = key < 0
    old = ~unknown & (rows.ts_ms < oldest_ms)
    huge = ~unknown & ~old & ~np.isfinite(rows.value)
    for mask, reason, sample in (
        (unknown, "unknown sensor: {} is not registered", rows.sensor_id),
        (old, f"older than the raw retention ({keep_days} days)", rows.ts_ms),
        (huge, "value out of range: beyond a 4-byte float", rows.sensor_id),
    ):
        if mask.any():
            first = str(sample[int(np.argmax(mask))])
            refusals.append(Refusal(seq, reason.format(first), int(mask.sum()), first))
    keep = ~(unknown | old | huge)
    kept = Rows(rows.sensor_id[keep], rows.ts_ms[keep], rows.value[keep], rows.quality[keep])
    return Rows(kept.sensor_id, kept.ts_ms, kept.value, kept.quality, key[keep]), refusals


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def edge_partials(
    messages: list[Decoded], keys: dict[str, int]
) -> tuple[Partials | None, list[Refusal]]:
    """Gateways' 1-minute aggregates as rollup partials (one per sensor and minute, the
    last sent winning), and refusals for other windows and unregistered sensors."""
    refusals: list[Refusal] = []
    k: list[int] = []
    cols: list[tuple[int, int, float, float, float, float]] = []
    for d in messages:
        agg = d.aggregates
        if agg is None or not len(agg):
            continue
        if agg.window_ms != 60_000:
            refusals.append(
                Refusal(
                    d.seq,
                    f"aggregate window: {agg.window_ms} ms is not 1 minute; only "
                    "1-minute aggregates are stored",
                    len(agg),
                    str(agg.window_ms),
                )
            )
            continue
        unknown = [s for s in agg.sensor_id if s not in keys]
        if unknown:
            refusals.append(
                Refusal(
                    d.seq,
                    f"unknown sensor: {unknown[0]} is not registered",
                    len(unknown),
                    unknown[0],
                )
            )
        huge: list[str] = []
        for i, s in enumerate(agg.sensor_id):
            if s not in keys:
                continue
            if not all(abs(v) <= _FLOAT32_MAX for v in (agg.avg[i], agg.min[i], agg.max[i])) or (
                agg.std[i] > _FLOAT32_MAX
            ):
                huge.append(s)  # as screen() refuses such a reading
                continue
            k.append(keys[s])
            cols.append(
                (
                    agg.window_start[i],
                    agg.count[i],
                    agg.avg[i],
                    agg.std[i] ** 2 * agg.count[i],  # below 1.2e78: finite
                    agg.min[i],
                    agg.max[i],
                )
            )
        if huge:
            refusals.append(
                Refusal(d.seq, "value out of range: beyond a 4-byte float", len(huge), huge[0])
            )
    if not k:
        return None, refusals
    key = np.array(k, np.int32)
    start, count, mean, m2, lo, hi = (np.array(c) for c in zip(*cols, strict=True))
    bucket = start.astype(np.int64) // 60_000 * 60_000
    joint = (key.astype(np.int64) << 32) | (bucket // 60_000)
    _, last = np.unique(joint[::-1], return_index=True)
    pick = len(key) - 1 - last
    zeros = np.zeros(len(pick), np.int32)
    return Partials(
        sensor=key[pick],
        bucket_ms=bucket[pick],
        count=count[pick].astype(np.int32),
        mean=mean[pick].astype(np.float64),
        m2=m2[pick].astype(np.float64),
        vmin=lo[pick].astype(np.float32),
        vmax=hi[pick].astype(np.float32),
        n_uncertain=zeros,
        n_bad=zeros,
    ), refusals


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def edge_anomaly_row(a: EdgeAnomaly) -> tuple[Any, ...]:
    """A row of ``anomalies`` for an anomaly a gateway found (``type`` and ``detector``
    ``edge``; the id is deterministic, so a resent one is not stored twice)."""
    record = a.model_dump()
    return (
        f"{a.machine_id}:{a.sensor_id}:{a.timestamp}:edge",
        a.machine_id,
        a.sensor_id,
        _dt(a.timestamp),
        "edge",
        Severity.from_score(a.anomaly_score).value,
        a.anomaly_score,
        a.value,
        None,
        a.reason,
        "edge",
        "edge",
        json.dumps(record),
    )


def anomaly_row(a: AnomalyRecord) -> tuple[Any, ...]:
    return (
        a.anomaly_id,
        a.machine_id,
        a.sensor_id,
        _dt(a.timestamp),
        a.type.value,
        a.severity.value,
        a.score,
        a.value,
        a.expected_value,
        a.reason,
        a.detector,
        "twin",
        a.model_dump_json(),
    )


def rul_row(r: RulPrediction) -> tuple[Any, ...]:
    return (
        r.machine_id,
        _dt(r.predicted_at),
        r.component,
        None if r.failure_mode is None else r.failure_mode.value,
        r.median_hours,
        r.lower_hours,
        r.upper_hours,
        r.failure_probability.get(168),
        r.model_version,
        r.model_dump_json(),
    )


def workorder_row(w: WorkOrder) -> tuple[Any, ...]:
    return (
        w.workorder_id,
        w.asset_id,
        w.type.value,
        w.priority.value,
        w.status.value,
        w.title,
        w.scheduled_date,
        w.assigned_technician_id,
        w.created_at,
        w.completed_at,
        w.model_dump_json(),
        w.failure_mode.value if w.failure_mode else None,
    )


def alert_row(a: Alert) -> tuple[Any, ...]:
    return (
        a.alert_id,
        a.machine_id,
        a.rule_id,
        a.kind.value,
        a.subject,
        a.severity.value,
        a.status.value,
        a.count,
        a.first_raised_at,
        a.last_raised_at,
        a.resolved_at,
        a.escalation_level,
        a.workorder_id,
        a.model_dump_json(),
    )


def snapshot_row(machine_id: str, doc: dict[str, Any]) -> tuple[Any, ...] | None:
    """A row of ``twin_snapshots`` from a twin's change event, at the twin's data time;
    None when the twin has no data yet or the event is malformed."""
    try:
        if doc.get("last_update") is None:
            return None
        return (
            machine_id,
            _dt(int(doc["last_update"])),
            int(doc["version"]),
            str(doc["status"]),
            float(doc["health_score"]),
            int(doc.get("anomalies", 0)),
            json.dumps(doc),
        )
    except (KeyError, TypeError, ValueError):
        return None


def audit_row(a: AuditRecord) -> tuple[Any, ...]:
    return (a.audit_id, _dt(a.at), a.actor, a.role, a.action, a.target, json.dumps(a.detail))


EVENT_KINDS = {
    "anomaly": AnomalyRecord,
    "rul": RulPrediction,
    "workorder": WorkOrder,
    "audit": AuditRecord,
    "alert": Alert,
}
