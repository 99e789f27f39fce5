"""``POST /api/v1/telemetry/batch``: readings from a gateway that speaks HTTP.

The body is the row form of ``../shared/API.md`` (``gateway_id``, ``timestamp``,
``readings[] {sensor_id, timestamp, value, quality}``, optional ``anomalies[]`` and
``batch_id``). Each reading is checked on its own: a bad one is refused with its index and
the reason, the others go on. Accepted readings are grouped per machine into
:class:`~schemas.telemetry.TelemetryBatch` messages on ``tf.telemetry.<site>.<machine>``
(JetStream) with ``Nats-Msg-Id`` = ``<gateway>-<batch id>-<machine>``. The batch id is the
client's, or a hash of the body, so a resent request is dropped by the server and applied
once.

>>> from schemas.plant import MachineSpec, SensorSpec
>>> m = MachineSpec(id="P-1", type="pump", kind="pump", site="a", line="l1",
...     sensors=[SensorSpec(name="flow", kind="flow", unit="m3/h")])
>>> plan = plan_batch({"gateway_id": "gw-1", "timestamp": 1_700_000_000_000, "readings": [
...     {"sensor_id": "P-1.flow", "timestamp": 1_700_000_000_000, "value": 41.5},
...     {"sensor_id": "P-1.flow", "timestamp": 1_700_000_000_000, "value": "x"},
...     {"sensor_id": "Q-9.flow", "timestamp": 1_700_000_000_000, "value": 1.0}]},
...     {"P-1.flow": m}, sites={"a"}, now_ms=1_700_000_000_000)
>>> [len(b) for b in plan.batches], [r["index"] for r in plan.rejected]
([1], [1, 2])
>>> plan.rejected[1]["reason"]
"sensor 'Q-9.flow' is not a sensor of any machine here"
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.errors import ApiError
from schemas.common import Identifier
from schemas.plant import MachineSpec
from schemas.problems import first_problem
from schemas.telemetry import (
    MAX_BATCH_READINGS,
    EdgeAnomaly,
    RecentTimestampMs,
    SensorReading,
    TelemetryBatch,
)


class HttpBatch(BaseModel):
    """The envelope; readings are checked one by one afterwards."""

    model_config = ConfigDict(extra="forbid")
    gateway_id: Identifier
    timestamp: RecentTimestampMs
    batch_id: (
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None
    ) = None
    readings: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_BATCH_READINGS)
    anomalies: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_BATCH_READINGS)


@dataclass
class Plan:
    gateway_id: str
    batch_id: str
    batches: list[TelemetryBatch] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    anomalies_rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def readings_accepted(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def anomalies_accepted(self) -> int:
        return sum(len(b.anomalies) for b in self.batches)


def _reason(exc: ValidationError) -> str:
    where, what = first_problem(exc)
    return f"{where or 'reading'}: {what}"


def plan_batch(
    body: Any,
    sensors: Mapping[str, MachineSpec],
    *,
    sites: set[str] | frozenset[str],
    now_ms: int | None = None,
    gateway_id: str | None = None,
) -> Plan:
    """Check a request body against the known sensors (sensor id -> its machine); the
    per-machine messages to publish and what was refused. Raises :class:`ApiError` (422)
    when the envelope itself is wrong, 403 when it names another gateway than the token's."""
    context = {"now_ms": now_ms} if now_ms is not None else None
    try:
        envelope = HttpBatch.model_validate(body, context=context)
    except ValidationError as exc:
        where, what = first_problem(exc)
        raise ApiError(422, "invalid_batch", f"{where}: {what}", field=where) from None
    if gateway_id is not None and envelope.gateway_id != gateway_id:
        raise ApiError(
            403,
            "forbidden",
            f"gateway_id {envelope.gateway_id!r} is not this token's gateway ({gateway_id!r})",
            field="gateway_id",
        )
    batch_id = (
        envelope.batch_id
        or hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:32]
    )
    plan = Plan(envelope.gateway_id, batch_id)
    rows: dict[str, list[SensorReading]] = {}
    edge: dict[str, list[EdgeAnomaly]] = {}
    site_of: dict[str, str] = {}

    def admit(i: int, item: Any, out: list[dict[str, Any]]) -> MachineSpec | None:
        if not isinstance(item, dict):
            out.append({"index": i, "sensor_id": None, "reason": "not an object"})
            return None
        sensor_id = item.get("sensor_id")
        machine = sensors.get(sensor_id) if isinstance(sensor_id, str) else None
        if machine is None:
            out.append(
                {
                    "index": i,
                    "sensor_id": item.get("sensor_id"),
                    "reason": f"sensor {item.get('sensor_id')!r} is not a sensor of any "
                    "machine here",
                }
            )
            return None
        if machine.site not in sites:
            out.append(
                {
                    "index": i,
                    "sensor_id": item["sensor_id"],
                    "reason": f"sensor {item['sensor_id']!r} is at site {machine.site!r}, "
                    f"not one of this gateway's sites ({', '.join(sorted(sites))})",
                }
            )
            return None
        site_of[machine.id] = machine.site
        return machine

    for i, item in enumerate(envelope.readings):
        machine = admit(i, item, plan.rejected)
        if machine is None:
            continue
        try:
            reading = SensorReading.model_validate(
                {**item, "machine_id": machine.id}, context=context
            )
        except ValidationError as exc:
            plan.rejected.append(
                {"index": i, "sensor_id": item.get("sensor_id"), "reason": _reason(exc)}
            )
            continue
        rows.setdefault(machine.id, []).append(reading)
    for i, item in enumerate(envelope.anomalies):
        machine = admit(i, item, plan.anomalies_rejected)
        if machine is None:
            continue
        try:
            found = EdgeAnomaly.model_validate({**item, "machine_id": machine.id}, context=context)
        except ValidationError as exc:
            plan.anomalies_rejected.append(
                {"index": i, "sensor_id": item.get("sensor_id"), "reason": _reason(exc)}
            )
            continue
        edge.setdefault(machine.id, []).append(found)
    for machine_id in dict.fromkeys([*rows, *edge]):
        plan.batches.append(
            TelemetryBatch.from_readings(
                rows.get(machine_id, []),
                gateway_id=envelope.gateway_id,
                site_id=site_of[machine_id],
                batch_id=f"{batch_id}-{machine_id}",
                sent_at=envelope.timestamp,
                anomalies=edge.get(machine_id, []),
            )
        )
    return plan
