"""Wire formats for telemetry: one reading, and the columnar batch a gateway sends.

A :class:`TelemetryBatch` carries many readings as parallel columns, so validating a
1,000-reading batch is a handful of array checks rather than 1,000 model instances.
Validation rejects, with a message naming the field (and the index where one column
entry is at fault): NaN or infinite values, quality codes other than 0/1/2, timestamps
more than :data:`MAX_FUTURE_SKEW_MS` ahead of the receiver's clock or before 2000,
columns of different lengths, empty batches and batches over :data:`MAX_BATCH_READINGS`.

The receiver's clock can be pinned with the validation context ``{"now_ms": ...}``
(used by tests and replays).

>>> batch = TelemetryBatch.model_validate({
...     "gateway_id": "gw-1", "site_id": "plant-a", "batch_id": "gw-1-000001",
...     "sent_at": 1_700_000_000_000,
...     "readings": {"machine_id": ["P-101", "P-101"],
...                  "sensor_id": ["P-101.flow", "P-101.vibration"],
...                  "timestamp": [1_700_000_000_000, 1_700_000_000_000],
...                  "value": [41.5, 2.3], "quality": [0, 1]}})
>>> len(batch)
2
>>> batch.readings.arrays().value.tolist()
[41.5, 2.3]
>>> TelemetryBatch.model_validate({**batch.model_dump(), "readings": {
...     **batch.readings.model_dump(), "value": [1.0, float("nan")]}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for TelemetryBatch
readings.value.1
  Input should be a finite number [type=finite_number, input_value=nan, input_type=float]
...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Self

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.common import (
    EARLIEST_TIMESTAMP_MS,
    Identifier,
    Quality,
    SensorId,
    datetime_to_ms,
    now_ms,
)

MAX_BATCH_READINGS = 10_000
"""The most readings one telemetry message may carry."""

MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
"""How far ahead of the receiver's clock a timestamp may be (clock skew allowance)."""

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
QualityCode = Annotated[int, Field(ge=0, le=2)]
TimestampMs = Annotated[int, Field(ge=EARLIEST_TIMESTAMP_MS)]


def _future_limit(info: ValidationInfo) -> int:
    """The latest acceptable timestamp: the receiver's clock (or the pinned
    ``context["now_ms"]``) plus :data:`MAX_FUTURE_SKEW_MS`."""
    ctx = info.context or {}
    now = ctx.get("now_ms")
    return (now_ms() if now is None else int(now)) + MAX_FUTURE_SKEW_MS


def _future_message(field: str, ts: int) -> str:
    return f"{field}: timestamp {ts} is more than {MAX_FUTURE_SKEW_MS // 1000} s in the future"


def _not_future(v: int, info: ValidationInfo) -> int:
    if v > _future_limit(info):
        raise ValueError(_future_message(str(info.field_name), v))
    return v


RecentTimestampMs = Annotated[TimestampMs, AfterValidator(_not_future)]
"""A timestamp not before 2000 and not beyond the receiver's clock plus the skew."""


def _check_not_future(values: Sequence[int], field: str, info: ValidationInfo) -> None:
    """Refuse a column whose latest timestamp is too far ahead, naming the first such entry.

    ``max`` runs in C; the index is only looked for once a column is known to be bad.
    """
    if not values:
        return
    limit = _future_limit(info)
    if max(values) > limit:
        bad = next(i for i, ts in enumerate(values) if ts > limit)
        raise ValueError(_future_message(f"{field}.{bad}", values[bad]))


_DOT = ord(".")
_NEWLINE = ord("\n")
_VECTORISE_FROM = 32  # below this many readings a plain loop is faster


def _first_foreign_sensor(machine_ids: list[str], sensor_ids: list[str]) -> int | None:
    """The index of the first sensor id that is not ``"<its machine id>.<name>"``, or None.

    Vectorised for batches: both columns are joined with newlines and viewed as bytes;
    dropping every ``.<name>`` run from the sensor bytes must leave exactly the machine
    bytes. That relies on what the field patterns already guarantee (a sensor id holds
    exactly one dot, a machine id none, neither a newline; the columns have one length)
    and costs a few numpy passes over ~15 KB instead of Python work per reading. Only a
    bad column (or a short one) is walked in Python, to name the entry at fault.

    >>> _first_foreign_sensor(["P-1", "P-1", "P-12"], ["P-1.a", "P-1.b", "P-12.a"]) is None
    True
    >>> _first_foreign_sensor(["P-1"] * 40, ["P-1.a"] * 39 + ["P-12.a"])
    39
    """
    if len(sensor_ids) >= _VECTORISE_FROM:
        raw = np.frombuffer("\n".join(sensor_ids).encode(), dtype=np.uint8)
        # depth is 1 from each "." up to (not including) the newline ending its sensor id.
        step = (raw == _DOT).view(np.int8) - (raw == _NEWLINE).view(np.int8)
        depth = np.cumsum(step, dtype=np.int32)
        if raw[depth == 0].tobytes() == "\n".join(machine_ids).encode():
            return None
    for i, (m, s) in enumerate(zip(machine_ids, sensor_ids, strict=True)):
        if not s.startswith(m) or s[len(m) : len(m) + 1] != ".":
            return i
    return None


def _check_sensors_belong(machine_ids: list[str], sensor_ids: list[str]) -> None:
    bad = _first_foreign_sensor(machine_ids, sensor_ids)
    if bad is not None:
        raise ValueError(
            f"sensor_id.{bad}: {sensor_ids[bad]!r} does not belong to machine {machine_ids[bad]!r}"
        )


class SensorReading(BaseModel):
    """One reading of one sensor (the row form; batches travel as columns).

    >>> r = SensorReading(machine_id="M-1", sensor_id="M-1.rpm", timestamp=1_700_000_000_000,
    ...                   value=1480.0, quality="good")
    >>> r.quality
    <Quality.GOOD: 0>
    """

    model_config = ConfigDict(frozen=True)

    machine_id: Identifier
    sensor_id: SensorId
    timestamp: RecentTimestampMs = Field(description="epoch milliseconds, UTC")
    value: FiniteFloat
    quality: Quality = Quality.GOOD

    @field_validator("quality", mode="before")
    @classmethod
    def _quality(cls, v: object) -> Quality:
        if isinstance(v, Quality):
            return v
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            return Quality.from_wire(v)
        raise ValueError(f"unknown quality {v!r}; expected good, uncertain or bad")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, v: object) -> object:
        return datetime_to_ms(v) if isinstance(v, datetime) else v


@dataclass(frozen=True, slots=True)
class ReadingArrays:
    """The numpy view of a batch's reading columns (built once per batch)."""

    machine_id: np.ndarray  # object (str)
    sensor_id: np.ndarray  # object (str)
    timestamp: np.ndarray  # int64, epoch ms
    value: np.ndarray  # float64
    quality: np.ndarray  # uint8, Quality codes


class ReadingColumns(BaseModel):
    """Readings as parallel columns. ``quality`` may be left empty to mean all good."""

    machine_id: list[Identifier]
    sensor_id: list[SensorId]
    timestamp: list[TimestampMs]
    value: list[FiniteFloat]
    quality: list[QualityCode] = Field(default_factory=list)

    _arrays: ReadingArrays | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _columns_agree(self, info: ValidationInfo) -> Self:
        n = len(self.value)
        for name in ("machine_id", "sensor_id", "timestamp"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries but value has {n}")
        if self.quality and len(self.quality) != n:
            raise ValueError(f"quality has {len(self.quality)} entries but value has {n}")
        if n > MAX_BATCH_READINGS:
            raise ValueError(f"value: {n} readings exceed the limit of {MAX_BATCH_READINGS}")
        _check_not_future(self.timestamp, "timestamp", info)
        # A sensor id names its machine: "<machine>.<name>".
        _check_sensors_belong(self.machine_id, self.sensor_id)
        return self

    def __len__(self) -> int:
        return len(self.value)

    def __eq__(self, other: object) -> bool:
        """Equal when the columns are: the cached numpy view is not part of the value
        (pydantic would compare it too, and numpy arrays do not compare to a bool)."""
        if not isinstance(other, ReadingColumns):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def arrays(self) -> ReadingArrays:
        """Columns as numpy arrays (cached and shared, so read-only)."""
        if self._arrays is None:
            n = len(self.value)
            quality = (
                np.asarray(self.quality, dtype=np.uint8)
                if self.quality
                else np.zeros(n, dtype=np.uint8)
            )
            arrays = ReadingArrays(
                machine_id=np.asarray(self.machine_id, dtype=object),
                sensor_id=np.asarray(self.sensor_id, dtype=object),
                timestamp=np.asarray(self.timestamp, dtype=np.int64),
                value=np.asarray(self.value, dtype=np.float64),
                quality=quality,
            )
            for column in (arrays.machine_id, arrays.sensor_id, arrays.timestamp, arrays.value):
                column.flags.writeable = False
            quality.flags.writeable = False
            self._arrays = arrays
        return self._arrays


class EdgeAnomaly(BaseModel):
    """An anomaly the edge gateway detected before forwarding."""

    machine_id: Identifier
    sensor_id: SensorId
    timestamp: RecentTimestampMs
    value: FiniteFloat
    anomaly_score: Annotated[float, Field(ge=0.0, le=1.0)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]

    @model_validator(mode="after")
    def _sensor_belongs(self) -> Self:
        if _first_foreign_sensor([self.machine_id], [self.sensor_id]) is not None:
            raise ValueError(
                f"sensor_id: {self.sensor_id!r} does not belong to machine {self.machine_id!r}"
            )
        return self


class AggregateColumns(BaseModel):
    """1-minute (or other window) aggregates per sensor, as parallel columns."""

    machine_id: list[Identifier]
    sensor_id: list[SensorId]
    window_start: list[TimestampMs]
    window_ms: Annotated[int, Field(gt=0, le=3_600_000)] = 60_000
    avg: list[FiniteFloat]
    min: list[FiniteFloat]
    max: list[FiniteFloat]
    std: list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]]
    count: list[Annotated[int, Field(ge=1)]]

    @model_validator(mode="after")
    def _columns_agree(self, info: ValidationInfo) -> Self:
        n = len(self.avg)
        for name in ("machine_id", "sensor_id", "window_start", "min", "max", "std", "count"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries but avg has {n}")
        if n > MAX_BATCH_READINGS:
            raise ValueError(f"avg: {n} aggregates exceed the limit of {MAX_BATCH_READINGS}")
        lo = np.asarray(self.min, dtype=np.float64)
        mean = np.asarray(self.avg, dtype=np.float64)
        hi = np.asarray(self.max, dtype=np.float64)
        outside = (lo > mean) | (mean > hi)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(
                f"avg.{i}: {float(mean[i])} is not between min {float(lo[i])} "
                f"and max {float(hi[i])}"
            )
        _check_not_future(self.window_start, "window_start", info)
        _check_sensors_belong(self.machine_id, self.sensor_id)
        return self

    def __len__(self) -> int:
        return len(self.avg)


MESSAGE_ID_SEPARATOR = ":"
"""Ends the publisher's part of a scoped ``Nats-Msg-Id`` (never in an identifier)."""


def scoped_message_id(gateway_id: str, local_id: str) -> str:
    """A ``Nats-Msg-Id`` in ``gateway_id``'s namespace: ``<gateway>:<local id>``.

    JetStream drops a message whose id it has seen within the duplicate window, stream-wide
    and before anyone reads it, so ids are scoped to their publisher and, for gateways,
    carry a secret drawn at each start (:mod:`edge.gateway`): no other gateway can compute
    them. The hub refuses a message whose id is in another gateway's namespace than the
    batch's (:func:`message_id_gateway`).

    >>> scoped_message_id("gw-1", "3-9f2c-0000000001")
    'gw-1:3-9f2c-0000000001'
    >>> message_id_gateway("gw-1:3-9f2c-0000000001"), message_id_gateway("legacy-17")
    ('gw-1', None)
    """
    if MESSAGE_ID_SEPARATOR in gateway_id or not gateway_id:
        raise ValueError(f"gateway_id {gateway_id!r} cannot scope a message id")
    return f"{gateway_id}{MESSAGE_ID_SEPARATOR}{local_id}"


def message_id_gateway(msg_id: str | None) -> str | None:
    """The gateway whose namespace a ``Nats-Msg-Id`` is in; None for an unscoped id."""
    if not msg_id or MESSAGE_ID_SEPARATOR not in msg_id:
        return None
    return msg_id.split(MESSAGE_ID_SEPARATOR, 1)[0]


def scope_error(
    subject_site: str, batch_site: str, batch_gateway: str, msg_id: str | None
) -> str | None:
    """Why a batch cannot travel on a subject of ``subject_site`` under ``msg_id``
    (None when it can): the batch must be of the subject's site, and a scoped message id
    must be in the batch's gateway's namespace.

    >>> scope_error("north", "north", "gw-1", "gw-1:1-a-1") is None
    True
    >>> scope_error("north", "south", "gw-1", None)
    "a batch of site 'south' on a telemetry subject of site 'north'"
    >>> scope_error("north", "north", "gw-1", "gw-2:1-a-1")
    "message id 'gw-2:1-a-1' belongs to gateway 'gw-2', not to the batch's gateway 'gw-1'"
    """
    if batch_site != subject_site:
        return f"a batch of site {batch_site!r} on a telemetry subject of site {subject_site!r}"
    owner = message_id_gateway(msg_id)
    if owner is not None and owner != batch_gateway:
        return (
            f"message id {msg_id!r} belongs to gateway {owner!r}, "
            f"not to the batch's gateway {batch_gateway!r}"
        )
    return None


class TelemetryBatch(BaseModel):
    """What a gateway publishes: readings, edge anomalies and aggregates of one site.

    ``batch_id`` is unique per gateway and becomes the NATS ``Nats-Msg-Id``, so a resent
    batch is recognised and dropped. A gateway's batch ids are scoped to it
    (:func:`scoped_message_id`); the hub takes a batch only on a subject of its site.
    """

    gateway_id: Identifier
    site_id: Identifier
    batch_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
    sent_at: RecentTimestampMs
    readings: ReadingColumns = Field(
        default_factory=lambda: ReadingColumns(machine_id=[], sensor_id=[], timestamp=[], value=[])
    )
    anomalies: list[EdgeAnomaly] = Field(default_factory=list, max_length=MAX_BATCH_READINGS)
    aggregates: AggregateColumns | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not len(self.readings) and not self.anomalies and not self.aggregates:
            raise ValueError("readings: the batch is empty (no readings, anomalies or aggregates)")
        return self

    def __len__(self) -> int:
        return len(self.readings)

    def machine_ids(self) -> list[str]:
        """The machines this batch has readings for, in first-seen order."""
        return list(dict.fromkeys(self.readings.machine_id))

    def iter_readings(self) -> Iterator[SensorReading]:
        r = self.readings
        quality = r.quality or [0] * len(r)
        for m, s, t, v, q in zip(
            r.machine_id, r.sensor_id, r.timestamp, r.value, quality, strict=True
        ):
            yield SensorReading.model_construct(
                machine_id=m, sensor_id=s, timestamp=t, value=v, quality=Quality(q)
            )

    @classmethod
    def from_readings(
        cls,
        readings: Iterable[SensorReading],
        *,
        gateway_id: str,
        site_id: str,
        batch_id: str,
        sent_at: int,
        anomalies: Iterable[EdgeAnomaly] = (),
    ) -> TelemetryBatch:
        """A batch of readings (and edge anomalies) that were checked one by one already;
        their own times are taken as the receiver's clock."""
        rows = list(readings)
        found = list(anomalies)
        return cls.model_validate(
            {
                "gateway_id": gateway_id,
                "site_id": site_id,
                "batch_id": batch_id,
                "sent_at": sent_at,
                "readings": {
                    "machine_id": [r.machine_id for r in rows],
                    "sensor_id": [r.sensor_id for r in rows],
                    "timestamp": [r.timestamp for r in rows],
                    "value": [r.value for r in rows],
                    "quality": [int(r.quality) for r in rows],
                },
                "anomalies": [a.model_dump() for a in found],
            },
            context={
                "now_ms": max(
                    [sent_at, *(r.timestamp for r in rows), *(a.timestamp for a in found)]
                )
            },
        )
