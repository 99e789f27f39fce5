"""A Sparkplug B host application's logic: births, aliases, sequence numbers, deaths.

Pure: messages in (MQTT topic, payload bytes, the hub's clock), decisions out
(:class:`HostOutput`): readings for the twins, refusals with their reasons, commands to
publish (``NCMD`` rebirth requests), and whether the message was a duplicate. The I/O
around it is :mod:`edge.mqtt_intake`.

What the specification (Sparkplug 3.0) asks of a host, and how it is kept here:

* **Births.** ``NBIRTH`` starts an edge node's session: its ``bdSeq`` metric, its
  sequence number, and every node metric with its name, alias and data type. ``DBIRTH``
  does the same for one device of the node. Births carry current values: those are
  readings too.
* **Aliases.** ``NDATA``/``DDATA`` may name a metric by its alias alone; the alias table
  comes from the births of the node's current session. An unknown alias cannot be read:
  it is refused and a rebirth is requested.
* **Sequence numbers.** Every message of a session after ``NBIRTH`` carries the next
  ``seq`` (0-255, wrapping). A message that repeats one already seen (same ``bdSeq``,
  ``seq`` and timestamp: an MQTT QoS 1 resend) is a **duplicate** and is applied once;
  a gap means messages were lost, and a rebirth is requested (the message itself is
  still read: its values are real).
* **Data before a birth** (the host started after the node's birth, or the birth was
  lost): dropped, and a rebirth requested, at most once per ``rebirth_every_ms`` per node.
* **Deaths.** ``NDEATH`` (the node's MQTT will, with the ``bdSeq`` of its session: a
  death of an older session is ignored) and ``DDEATH`` mark every mapped sensor of the
  node (or device) as bad quality: the twins see them go stale instead of holding the
  last value.
* **Rebirth request**: ``NCMD`` to ``spBv1.0/<group>/NCMD/<node>`` with the boolean metric
  ``Node Control/Rebirth`` = true.

Signed integers travel as unsigned (two's complement) in Sparkplug; they are read back
with the data type the birth declared.

>>> from pysparkplug import DataType, DBirth, DData, Metric, NBirth
>>> mapping = SparkplugMap({("G", "N", "M-1", "temp"): ("north", "M-1", "temp")})
>>> host = SparkplugHost(mapping)
>>> t = 1_764_763_200_000
>>> bd = Metric(timestamp=t, name="bdSeq", datatype=DataType.INT64, value=0)
>>> _ = host.handle("spBv1.0/G/NBIRTH/N", NBirth(t, 0, (bd,)).encode(), t)
>>> birth = DBirth(t, 1, (Metric(t, "temp", DataType.DOUBLE, value=40.0, alias=7),))
>>> [(r.sensor, r.value) for r in host.handle("spBv1.0/G/DBIRTH/N/M-1", birth.encode(), t).readings]
[('temp', 40.0)]
>>> later = Metric(t + 1000, None, DataType.DOUBLE, value=41.5, alias=7)
>>> data = DData(t + 1000, 2, (later,)).encode()
>>> [r.value for r in host.handle("spBv1.0/G/DDATA/N/M-1", data, t + 1000).readings]
[41.5]
>>> host.handle("spBv1.0/G/DDATA/N/M-1", data, t + 1000).duplicate   # a QoS 1 resend
True
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from pysparkplug._protobuf import Payload  # the published Sparkplug B schema, compiled

from drivers.base import FieldValue
from edge.mqtt_plain import MqttInputError, check_time, mapped_sensors
from schemas.common import Quality
from schemas.mqtt import SparkplugAddress
from schemas.plant import Plant

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
BOOLEAN = 11
MAX_PAYLOAD_BYTES = 1 << 20
_SIGNED = {1: 32, 2: 32, 3: 32, 4: 64}  # Int8/16/32 in uint32, Int64 in uint64
_NUMERIC = ("int_value", "long_value", "float_value", "double_value")
_RECENT = 512  # message identities kept per node to recognise resends

Key = tuple[str, str, str, str]
"""(group, edge node, device or "", metric name)."""


class SparkplugMap:
    """Which Sparkplug metric is which plant sensor: ``Key -> (site, machine, sensor)``."""

    def __init__(self, sensors: dict[Key, tuple[str, str, str]]) -> None:
        self.sensors = dict(sensors)
        self.by_node: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
        for (group, node, device, _), (site, machine, sensor) in self.sensors.items():
            self.by_node.setdefault((group, node), []).append((device, site, machine, sensor))

    @classmethod
    def from_plant(cls, plant: Plant) -> SparkplugMap:
        return cls(
            mapped_sensors(plant, SparkplugAddress, plant.mqtt.sparkplug_rule, "Sparkplug metric")
        )

    def sensors_of(self, group: str, node: str, device: str | None) -> list[tuple[str, str]]:
        """(machine, sensor) of a node's mapped metrics (one device's, when given)."""
        return [
            (machine, sensor)
            for dev, _, machine, sensor in self.by_node.get((group, node), [])
            if device is None or dev == device
        ]


@dataclass
class HostOutput:
    """What one message means for the hub."""

    readings: list[FieldValue] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    commands: list[tuple[str, bytes]] = field(default_factory=list)
    duplicate: bool = False
    identity: str = ""
    """The message's identity (edge node, device, session, seq, time): telemetry made
    from it carries it, so a resend that gets this far is still applied once."""


@dataclass
class _Node:
    bd_seq: int | None = None
    seq: int | None = None
    online: bool = False
    aliases: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    """(device or "", alias) -> (metric name, data type)."""
    types: dict[tuple[str, str], int] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    recent: deque[tuple[int | None, int, int]] = field(
        default_factory=lambda: deque(maxlen=_RECENT)
    )
    rebirth_at_ms: int | None = None


@dataclass(frozen=True)
class _Topic:
    group: str
    kind: str
    node: str
    device: str  # "" for node messages


def parse_topic(topic: str) -> _Topic:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise MqttInputError(
            topic, f"not a Sparkplug B topic ({NAMESPACE}/group/type/node[/device])"
        )
    _, group, kind, node, *rest = parts
    device = rest[0] if rest else ""
    if kind not in {"NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH", "NCMD", "DCMD"}:
        raise MqttInputError(topic, f"unknown Sparkplug message type {kind!r}")
    if kind.startswith("D") != bool(device):
        raise MqttInputError(
            topic, f"{kind} {'needs' if kind.startswith('D') else 'has no'} device id"
        )
    return _Topic(group, kind, node, device)


def rebirth_request(group: str, node: str, now_ms: int) -> tuple[str, bytes]:
    """The ``NCMD`` asking an edge node to publish its births again."""
    payload = Payload(timestamp=now_ms)
    metric = payload.metrics.add()
    metric.name, metric.timestamp, metric.datatype = REBIRTH, now_ms, BOOLEAN
    metric.boolean_value = True
    return f"{NAMESPACE}/{group}/NCMD/{node}", payload.SerializeToString()


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool, now_ms: int) -> bytes:
    """The host application's STATE message (Sparkplug 3.0: JSON, retained)."""
    return json.dumps({"online": online, "timestamp": now_ms}).encode()


class SparkplugHost:
    """The host application's view of every edge node (see the module)."""

    def __init__(self, mapping: SparkplugMap, *, rebirth_every_ms: int = 5000) -> None:
        self.mapping = mapping
        self.rebirth_every_ms = rebirth_every_ms
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.counters: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes, now_ms: int) -> HostOutput:
        """What one message means (never raises: a bad message is ``refused``)."""
        out = HostOutput()
        try:
            self._handle(topic, payload, now_ms, out)
        except MqttInputError as exc:
            out.refused.append(str(exc))
        self.counters["messages"] += 1
        self.counters["refused"] += len(out.refused)
        self.counters["readings"] += len(out.readings)
        return out

    def _handle(self, topic: str, payload: bytes, now_ms: int, out: HostOutput) -> None:
        if topic.startswith(f"{NAMESPACE}/STATE/"):
            self.counters["state_messages"] += 1  # host applications' own; not data
            return
        t = parse_topic(topic)
        if t.kind in ("NCMD", "DCMD"):
            self.counters["commands_seen"] += 1  # ours (or another host's), not data
            return
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MqttInputError(topic, f"payload of {len(payload)} bytes is over 1 MiB")
        msg = Payload()
        try:
            msg.ParseFromString(payload)
        except DecodeError as exc:
            raise MqttInputError(topic, f"malformed Sparkplug B protobuf ({exc})") from None
        node = self.nodes.setdefault((t.group, t.node), _Node())
        stamp = msg.timestamp if msg.HasField("timestamp") else now_ms
        if t.kind == "NBIRTH":
            self._node_birth(t, msg, node, now_ms, out)
        elif t.kind == "NDEATH":
            self._node_death(t, msg, node, stamp, out)
        elif not node.online:
            out.refused.append(f"{topic}: {t.kind} before the edge node's NBIRTH; rebirth asked")
            self._ask_rebirth(t, node, now_ms, out)
        elif self._resent_or_gap(t, msg, node, now_ms, out):
            return
        elif t.kind == "DBIRTH":
            node.devices.add(t.device)
            self._learn(t, msg, node)
            self._read(t, msg, node, now_ms, out)
        elif t.kind == "DDEATH":
            node.devices.discard(t.device)
            self._stale(t, node, t.device, stamp, out)
        else:  # NDATA, DDATA
            if t.device and t.device not in node.devices:
                out.refused.append(f"{topic}: DDATA before the device's DBIRTH; rebirth asked")
                self._ask_rebirth(t, node, now_ms, out)
                return
            self._read(t, msg, node, now_ms, out)

    # -- sessions ------------------------------------------------------------------------

    def _node_birth(self, t: _Topic, msg: Any, node: _Node, now_ms: int, out: HostOutput) -> None:
        bd = next((int(m.long_value) for m in msg.metrics if m.name == BD_SEQ), None)
        if bd is None:
            raise MqttInputError(f"{NAMESPACE}/{t.group}/NBIRTH/{t.node}", "NBIRTH has no bdSeq")
        node.bd_seq, node.seq, node.online = bd, int(msg.seq), True
        node.aliases.clear()
        node.types.clear()
        node.devices.clear()
        node.recent.clear()
        node.recent.append((bd, int(msg.seq), int(msg.timestamp)))
        out.identity = f"{t.group}/{t.node}:{bd}:{msg.seq}:{msg.timestamp}"
        self.counters["births"] += 1
        self._learn(t, msg, node)
        self._read(t, msg, node, now_ms, out)

    def _node_death(self, t: _Topic, msg: Any, node: _Node, stamp: int, out: HostOutput) -> None:
        bd = next((int(m.long_value) for m in msg.metrics if m.name == BD_SEQ), None)
        if node.bd_seq is not None and bd is not None and bd != node.bd_seq:
            self.counters["stale_deaths"] += 1  # the will of an older session
            return
        node.online = False
        node.devices.clear()
        self.counters["deaths"] += 1
        self._stale(t, node, None, stamp, out)

    def _resent_or_gap(
        self, t: _Topic, msg: Any, node: _Node, now_ms: int, out: HostOutput
    ) -> bool:
        """True for a resend (drop it); on a gap, ask for a rebirth (and read it)."""
        if not msg.HasField("seq"):
            raise MqttInputError(f"{NAMESPACE}/{t.group}/{t.kind}/{t.node}", "no seq number")
        seq, ident = int(msg.seq), (node.bd_seq, int(msg.seq), int(msg.timestamp))
        out.identity = f"{t.group}/{t.node}/{t.device}:{node.bd_seq}:{seq}:{msg.timestamp}"
        if ident in node.recent:
            out.duplicate = True
            self.counters["duplicates"] += 1
            return True
        expected = None if node.seq is None else (node.seq + 1) % 256
        if expected is not None and seq != expected:
            self.counters["sequence_gaps"] += 1
            out.refused.append(
                f"{NAMESPACE}/{t.group}/{t.kind}/{t.node}: seq {seq} where {expected} was "
                "next (messages lost); rebirth asked"
            )
            self._ask_rebirth(t, node, now_ms, out)
        node.seq = seq
        node.recent.append(ident)
        return False

    def _ask_rebirth(self, t: _Topic, node: _Node, now_ms: int, out: HostOutput) -> None:
        if node.rebirth_at_ms is not None and now_ms - node.rebirth_at_ms < self.rebirth_every_ms:
            return
        node.rebirth_at_ms = now_ms
        out.commands.append(rebirth_request(t.group, t.node, now_ms))
        self.counters["rebirths_requested"] += 1

    # -- metrics -------------------------------------------------------------------------

    def _learn(self, t: _Topic, msg: Any, node: _Node) -> None:
        for m in msg.metrics:
            if m.name:
                node.types[(t.device, m.name)] = int(m.datatype)
                if m.HasField("alias"):
                    node.aliases[(t.device, int(m.alias))] = (m.name, int(m.datatype))

    def _read(self, t: _Topic, msg: Any, node: _Node, now_ms: int, out: HostOutput) -> None:
        topic = f"{NAMESPACE}/{t.group}/{t.kind}/{t.node}" + (f"/{t.device}" if t.device else "")
        default_ms = int(msg.timestamp) if msg.HasField("timestamp") else now_ms
        unknown = False
        for m in msg.metrics:
            if m.name:
                name, dtype = m.name, node.types.get((t.device, m.name), int(m.datatype))
            elif m.HasField("alias") and (t.device, int(m.alias)) in node.aliases:
                name, dtype = node.aliases[(t.device, int(m.alias))]
            else:
                out.refused.append(f"{topic}: metric alias {m.alias} is not in any birth")
                unknown = True
                continue
            where = self.mapping.sensors.get((t.group, t.node, t.device, name))
            if where is None:
                self.counters["unmapped_metrics"] += 1
                continue
            if m.is_null or m.WhichOneof("value") is None:
                self.counters["null_metrics"] += 1
                continue
            try:
                value = _number(topic, name, m, dtype)
                stamp = check_time(
                    topic, int(m.timestamp) if m.HasField("timestamp") else default_ms, now_ms
                )
            except MqttInputError as exc:
                out.refused.append(str(exc))
                continue
            out.readings.append(FieldValue(where[1], where[2], value, stamp))
        if unknown:
            self._ask_rebirth(t, node, now_ms, out)

    def _stale(
        self, t: _Topic, node: _Node, device: str | None, stamp: int, out: HostOutput
    ) -> None:
        for machine, sensor in self.mapping.sensors_of(t.group, t.node, device):
            out.readings.append(FieldValue(machine, sensor, 0.0, stamp, Quality.BAD))


def _number(topic: str, name: str, m: Any, dtype: int) -> float:
    kind = m.WhichOneof("value")
    if kind == "boolean_value":
        return 1.0 if m.boolean_value else 0.0
    if kind not in _NUMERIC:
        raise MqttInputError(topic, f"metric {name!r} has a {kind}, not a number")
    raw = getattr(m, kind)
    bits = _SIGNED.get(dtype)
    if bits is not None and kind in ("int_value", "long_value") and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    value = float(raw)
    if not math.isfinite(value):
        raise MqttInputError(topic, f"metric {name!r} is {value}, not a finite number")
    return value
