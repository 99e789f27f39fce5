"""What every field driver produces and the counters it keeps.

A driver reads values from the field and passes them, a list at a time, to a *sink*: a
plain callable the edge gateway provides. Values are not validated here (a driver reports
what the device said, NaN and bad quality included); the gateway validates them against
the schemas and counts what it refuses.

>>> v = FieldValue("P-101", "flow", 41.5, 1_700_000_000_000, Quality.GOOD)
>>> v.sensor_id
'P-101.flow'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.common import Quality, sensor_id


@dataclass(frozen=True, slots=True)
class FieldValue:
    """One value as a device reported it."""

    machine_id: str
    sensor: str
    value: float
    timestamp_ms: int
    quality: Quality = Quality.GOOD

    @property
    def sensor_id(self) -> str:
        return sensor_id(self.machine_id, self.sensor)


def reading_columns(machine: str, values: list[FieldValue]) -> dict[str, list[Any]]:
    """One machine's values as the columns of a telemetry batch's ``readings``."""
    return {
        "machine_id": [machine] * len(values),
        "sensor_id": [v.sensor_id for v in values],
        "timestamp": [v.timestamp_ms for v in values],
        "value": [float(v.value) for v in values],
        "quality": [int(v.quality) for v in values],
    }


Sink = Callable[[list[FieldValue]], None]
"""Receives each list of values a driver read (called on the driver's event loop)."""


@dataclass(slots=True)
class DriverStats:
    """Counters a driver keeps (read by the gateway's status and the benchmarks)."""

    values: int = 0
    connects: int = 0
    disconnects: int = 0
    errors: int = 0
    backfilled: int = 0
    last_error: str = ""
    per_reason: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str, message: str) -> None:
        self.errors += 1
        self.per_reason[reason] = self.per_reason.get(reason, 0) + 1
        self.last_error = message
