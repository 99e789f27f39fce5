"""Plain MQTT: which topic is which sensor, and what its JSON payload says. Pure: no I/O.

The plant file gives a sensor an :class:`~schemas.mqtt.MqttAddress` (a topic template);
:class:`PlainTopics` expands it for every machine and reads a message into a
:class:`~drivers.base.FieldValue`, or refuses it with an :class:`MqttInputError` naming
what is wrong. The payload convention is in :mod:`schemas.mqtt`.

The hub's broker is nats-server's MQTT listener, which carries an MQTT topic as a NATS
subject: levels become tokens, and a ``.`` inside a level becomes ``//``
(:func:`subject_of`, :func:`topic_of`).

>>> from schemas.plant import load_plant
>>> topics = PlainTopics({"north/M-1/temp": ("north", "M-1", "temp")})
>>> topics.read("north/M-1/temp", b'{"value": 41.5, "timestamp": 1764763200000}', 1764763201000)
... # doctest: +ELLIPSIS
FieldValue(machine_id='M-1', sensor='temp', value=41.5, timestamp_ms=1764763200000, ...)
>>> topics.read("north/M-1/temp", b'"hot"', 1764763201000)
Traceback (most recent call last):
...
edge.mqtt_plain.MqttInputError: north/M-1/temp: the payload must be a JSON number or ...
>>> subject_of("spBv1.0/G1/NDATA/N1"), topic_of("spBv1//0.G1.NDATA.N1")
('spBv1//0.G1.NDATA.N1', 'spBv1.0/G1/NDATA/N1')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from drivers.base import FieldValue
from schemas.common import EARLIEST_TIMESTAMP_MS, Quality
from schemas.mqtt import MqttAddress
from schemas.plant import Plant
from schemas.telemetry import MAX_FUTURE_SKEW_MS

MAX_PAYLOAD_BYTES = 4096
"""A plain sensor message is one value; anything longer is refused unread."""


class MqttInputError(ValueError):
    """An MQTT message that cannot be used; the message says which topic and why."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason


def mapped_sensors(
    plant: Plant, kind: type, rule_of: Callable[[str], Any], what: str
) -> dict[Any, tuple[str, str, str]]:
    """Every sensor with an address of ``kind`` (its own, else its machine type's rule
    from ``rule_of``): ``address.expand(...) -> (site, machine id, sensor name)``. Two
    sensors with the same address are an error naming both."""
    out: dict[Any, tuple[str, str, str]] = {}
    for m in plant.machines:
        rule = rule_of(m.type)
        for s in m.sensors:
            address: Any = s.address if isinstance(s.address, kind) else rule
            if address is None:
                continue
            key = address.expand(site=m.site, line=m.line, machine=m.id, sensor=s.name)
            if key in out:
                _, machine, sensor = out[key]
                raise ValueError(
                    f"{what} {key!r} is both {machine}.{sensor} and {m.id}.{s.name}: "
                    "give each sensor its own"
                )
            out[key] = (m.site, m.id, s.name)
    return out


def subject_of(topic: str) -> str:
    """The NATS subject nats-server's MQTT listener carries ``topic`` on."""
    return ".".join(level.replace(".", "//") for level in topic.split("/"))


def topic_of(subject: str) -> str:
    """The MQTT topic of a NATS subject (the inverse of :func:`subject_of`)."""
    return "/".join(token.replace("//", ".") for token in subject.split("."))


def check_time(topic: str, timestamp_ms: int, now_ms: int) -> int:
    """``timestamp_ms`` if it is a plausible reading time (after 2000, not more than the
    telemetry's skew allowance ahead of ``now_ms``)."""
    if timestamp_ms < EARLIEST_TIMESTAMP_MS:
        raise MqttInputError(topic, f"timestamp {timestamp_ms} is before 2000 (ms expected)")
    if timestamp_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise MqttInputError(
            topic, f"timestamp {timestamp_ms} is more than 5 min ahead of the hub's clock"
        )
    return timestamp_ms


class PlainTopics:
    """Plain topics of a plant: ``topic -> (site, machine id, sensor name)``."""

    def __init__(self, sensors: dict[str, tuple[str, str, str]]) -> None:
        self.sensors = dict(sensors)

    @classmethod
    def from_plant(cls, plant: Plant) -> PlainTopics:
        return cls(mapped_sensors(plant, MqttAddress, plant.mqtt.topic_rule, "MQTT topic"))

    def subjects(self) -> list[str]:
        """The NATS subjects of every known topic (what the hub's stream captures)."""
        return sorted(subject_of(t) for t in self.sensors)

    def site_of(self, topic: str) -> str:
        return self.sensors[topic][0]

    def read(self, topic: str, payload: bytes, now_ms: int) -> FieldValue:
        """The reading a message carries (timed ``now_ms`` when it names no time)."""
        where = self.sensors.get(topic)
        if where is None:
            raise MqttInputError(topic, "no sensor of the plant file has this topic")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MqttInputError(topic, f"payload of {len(payload)} bytes is over 4 KiB")
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MqttInputError(topic, f"the payload is not JSON ({exc})") from None
        value, stamp, quality = _fields(topic, data)
        timestamp = now_ms if stamp is None else check_time(topic, _millis(topic, stamp), now_ms)
        _, machine_id, sensor = where
        return FieldValue(machine_id, sensor, value, timestamp, quality)


def _fields(topic: str, data: Any) -> tuple[float, Any, Quality]:
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"value", "timestamp", "quality"})
        if unknown:
            raise MqttInputError(topic, f"unknown payload fields {unknown}")
        if "value" not in data:
            raise MqttInputError(topic, 'the payload object has no "value"')
        value, stamp, quality = data["value"], data.get("timestamp"), data.get("quality", 0)
    else:
        value, stamp, quality = data, None, 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MqttInputError(
            topic,
            'the payload must be a JSON number or an object with "value", '
            f"got {type(value).__name__}",
        )
    if not math.isfinite(value):
        raise MqttInputError(topic, f"value {value} is not finite")
    if isinstance(quality, bool) or quality not in (0, 1, 2):
        raise MqttInputError(topic, f"quality must be 0, 1 or 2, got {quality!r}")
    return float(value), stamp, Quality(quality)


def _millis(topic: str, stamp: Any) -> int:
    if isinstance(stamp, bool):
        raise MqttInputError(topic, "timestamp must be ms since the epoch or ISO 8601 text")
    if isinstance(stamp, int):
        return stamp
    if isinstance(stamp, float) and math.isfinite(stamp):
        return int(stamp)
    if isinstance(stamp, str):
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            raise MqttInputError(topic, f"timestamp {stamp!r} is not ISO 8601") from None
        if when.tzinfo is None:
            raise MqttInputError(topic, f"timestamp {stamp!r} has no time zone")
        return int(when.timestamp() * 1000)
    raise MqttInputError(topic, "timestamp must be ms since the epoch or ISO 8601 text")
