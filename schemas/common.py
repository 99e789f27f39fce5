"""Shared vocabulary: identifiers, quality codes, sensor and machine kinds, time helpers.

Identifiers of sites, lines, machines, gateways and sensor names become NATS subject
tokens, so they are restricted to letters, digits, ``_`` and ``-`` (no dots, spaces or
wildcards). A sensor's plant-wide id is ``<machine_id>.<sensor name>``.

>>> Quality.from_wire("uncertain")
<Quality.UNCERTAIN: 1>
>>> sensor_id("P-101", "bearing_temp")
'P-101.bearing_temp'
>>> ms_to_datetime(0).isoformat()
'1970-01-01T00:00:00+00:00'
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A site, line, machine, gateway, technician or sensor-name token."""

SENSOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
SensorId = Annotated[str, StringConstraints(pattern=SENSOR_ID_PATTERN)]
"""A plant-wide sensor id: ``<machine_id>.<sensor name>``."""

# Epoch milliseconds before this are not plausible readings (2000-01-01T00:00:00Z).
EARLIEST_TIMESTAMP_MS = 946_684_800_000
# The last millisecond ISO 8601 (and Python's datetime) can write: 9999-12-31T23:59:59.999Z.
LATEST_TIMESTAMP_MS = 253_402_300_799_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Quality(IntEnum):
    """Reading quality, ordered like OPC UA status severities (good < uncertain < bad).

    On the columnar wire format quality travels as these small integers.
    """

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @classmethod
    def from_wire(cls, value: str | int) -> Quality:
        """Accept ``"good"``/``"uncertain"``/``"bad"`` or ``0``/``1``/``2``."""
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(
                    f"unknown quality {value!r}; expected good, uncertain or bad"
                ) from None
        return cls(value)

    @property
    def label(self) -> str:
        return self.name.lower()


class SensorKind(StrEnum):
    VIBRATION = "vibration"
    TEMPERATURE = "temperature"
    PRESSURE = "pressure"
    FLOW = "flow"
    CURRENT = "current"
    SPEED = "speed"
    VOLTAGE = "voltage"
    POWER = "power"
    OTHER = "other"


class MachineKind(StrEnum):
    MOTOR = "motor"
    PUMP = "pump"
    COMPRESSOR = "compressor"
    CONVEYOR = "conveyor"


class FailureMode(StrEnum):
    BEARING_WEAR = "bearing_wear"
    SEAL_LEAK = "seal_leak"
    WINDING_INSULATION = "winding_insulation"
    MISALIGNMENT = "misalignment"


def sensor_id(machine_id: str, name: str) -> str:
    """The plant-wide id of sensor ``name`` on machine ``machine_id``."""
    return f"{machine_id}.{name}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int | float) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(dt: datetime) -> int:
    if dt.utcoffset() is None:
        raise ValueError("timestamps must carry a time zone (UTC)")
    return round((dt - _EPOCH) / timedelta(milliseconds=1))


def iso_utc(ms: int | float) -> str:
    """ISO 8601 UTC with a ``Z``, as the public API writes times."""
    return ms_to_datetime(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_int_text(value: str) -> bool:
    return value.isascii() and value.lstrip("-").isdigit()


def _to_ms(value: object) -> object:
    if isinstance(value, datetime):
        return datetime_to_ms(value)
    if isinstance(value, str) and not _is_int_text(value):
        return datetime_to_ms(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return value


EpochMs = Annotated[
    int,
    BeforeValidator(_to_ms),
    Field(ge=0, le=LATEST_TIMESTAMP_MS),
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
]
"""A time held as epoch milliseconds; accepted as ms, datetime or ISO 8601, written to
JSON as ISO 8601 UTC (between 1970 and 9999, so that it can always be written)."""


def _ms_to_utc_datetime(value: object) -> object:
    """Epoch milliseconds (a number or a string of digits) become an aware UTC datetime;
    anything else is left to pydantic's datetime parsing (ISO 8601, datetime)."""
    if isinstance(value, str) and _is_int_text(value):
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"epoch milliseconds must be finite, got {value}")
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise ValueError(f"epoch milliseconds {value} are out of range") from None
    return value


def _as_utc(dt: datetime) -> datetime:
    if dt.utcoffset() is None:
        raise ValueError("timestamps must carry a time zone (UTC)")
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:30+01:00 is before year 1 in UTC
        raise ValueError(f"{dt.isoformat()} is out of range in UTC") from None


def _iso_z(dt: datetime) -> str:
    spec = "milliseconds" if dt.microsecond % 1000 == 0 else "microseconds"
    return dt.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


UtcDatetime = Annotated[
    datetime,
    BeforeValidator(_ms_to_utc_datetime),
    AfterValidator(_as_utc),
    PlainSerializer(_iso_z, return_type=str, when_used="json"),
]
"""A time held as an aware UTC ``datetime``; accepted as ISO 8601 with a zone, datetime
or epoch milliseconds; naive times are refused. Written to JSON as ISO 8601 UTC with ``Z``.

>>> from pydantic import TypeAdapter
>>> ta = TypeAdapter(UtcDatetime)
>>> ta.dump_json(ta.validate_python("2025-01-02T10:00:00+02:00"))
b'"2025-01-02T08:00:00.000Z"'
>>> ta.validate_python(1_700_000_000_000) == ta.validate_python("2023-11-14T22:13:20Z")
True
"""
