"""A simulated Sparkplug B edge node: the plant's machines as its devices, over MQTT.

``twinfleet sim sparkplug`` runs one :class:`SparkplugEdgeNode` per edge node the plant
file's Sparkplug mapping names (by default one per line: the group is the site, each
machine a device, each sensor a metric of the same name) and feeds them from the plant
simulator, as ``twinfleet sim opcua`` and ``sim modbus`` serve the same plant.

The node behaves as the specification asks of an edge node: it connects with its
``NDEATH`` as the MQTT will (with this session's ``bdSeq``), publishes ``NBIRTH`` then a
``DBIRTH`` per device (every metric with its name, alias, data type and current value),
then ``DDATA`` with aliases only and the next sequence number (0-255, wrapping); on an
``NCMD`` ``Node Control/Rebirth`` it publishes its births again. Publishing is QoS 0 for
data as Sparkplug prescribes, unless ``qos=1`` is asked (the hub's tests of resends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pysparkplug import DataType, DBirth, DData, Metric, NBirth, NDeath

from drivers.base import FieldValue
from edge.sparkplug import BD_SEQ, NAMESPACE, REBIRTH, SparkplugMap
from schemas.mqtt import MqttSettings, SparkplugRule
from schemas.plant import Plant

_log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def with_default_rule(plant: Plant) -> Plant:
    """The plant, with the default Sparkplug rule when its file gives none."""
    if plant.mqtt.sparkplug:
        return plant
    return plant.model_copy(
        update={"mqtt": MqttSettings(sparkplug=[SparkplugRule()], topics=plant.mqtt.topics)}
    )


class SparkplugEdgeNode:
    """One edge node and its devices (see the module); a paho MQTT client underneath."""

    def __init__(
        self,
        mapping: SparkplugMap,
        group: str,
        edge_node: str,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        user: str | None = None,
        password: str | None = None,
        qos: int = 0,
        clock: Callable[[], int] = _now_ms,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: connect over TLS with this context (a hub with TLS accepts MQTT over
        TLS only; :func:`bus.connect.tls_context` trusts its CA)."""
        self.group, self.edge_node = group, edge_node
        self.tls = tls
        self.host, self.port, self.qos, self.clock = host, port, qos, clock
        self.user, self.password = user, password
        # device -> metric name -> alias; and (machine, sensor) -> (device, metric name)
        self.aliases: dict[str, dict[str, int]] = {}
        self.where: dict[tuple[str, str], tuple[str, str]] = {}
        alias = 1
        for (g, n, device, metric), (_, machine, sensor) in sorted(mapping.sensors.items()):
            if (g, n) == (group, edge_node):
                self.aliases.setdefault(device, {})[metric] = alias
                self.where[(machine, sensor)] = (device, metric)
                alias += 1
        if not self.where:
            raise ValueError(f"no sensor of the plant maps to edge node {group}/{edge_node}")
        self.last: dict[tuple[str, str], float] = {}
        self.bd_seq = -1
        self.seq = 0
        self.births = 0
        self.rebirths = 0
        self.published = 0
        self._lock = threading.Lock()
        self._client: Any = None
        self.connected = threading.Event()

    def _topic(self, kind: str, device: str = "") -> str:
        tail = f"/{device}" if device else ""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}{tail}"

    def _bd_seq_metric(self) -> Metric:
        return Metric(self.clock(), BD_SEQ, DataType.INT64, value=self.bd_seq)

    # -- life cycle ----------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> SparkplugEdgeNode:
        """Connect (with this session's NDEATH as the will) and publish the births."""
        import paho.mqtt.client as mqtt

        self.bd_seq = (self.bd_seq + 1) % 256
        client = mqtt.Client(client_id=f"spb-{self.group}-{self.edge_node}", clean_session=True)
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        if self.tls is not None:
            client.tls_set_context(self.tls)
        death = NDeath(None, self._bd_seq_metric()).encode()
        client.will_set(self._topic("NDEATH"), death, qos=1, retain=False)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = lambda *_: self.connected.clear()
        client.connect(self.host, self.port, keepalive=10)
        client.loop_start()
        self._client = client
        if not self.connected.wait(timeout_s):
            self.stop(clean=False)
            raise ConnectionError(
                f"edge node {self.group}/{self.edge_node}: no MQTT session with "
                f"{self.host}:{self.port} within {timeout_s} s"
            )
        return self

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: int) -> None:
        if rc != 0:
            _log.warning("edge node %s: MQTT connection refused (rc %s)", self.edge_node, rc)
            return
        # Births only once the broker confirmed the command subscriptions (as the
        # specification orders it): a rebirth request can then never be missed, and the
        # broker's session is ready for the QoS 0 births.
        client.subscribe([(self._topic("NCMD"), 0), (self._topic("DCMD", "+"), 0)])

    def _on_subscribe(self, _client: Any, _u: Any, _mid: int, _granted: Any) -> None:
        self.publish_births()
        self.connected.set()

    def _on_message(self, _client: Any, _u: Any, msg: Any) -> None:
        from pysparkplug._protobuf import Payload

        payload = Payload()
        try:
            payload.ParseFromString(msg.payload)
        except Exception:
            return
        if any(m.name == REBIRTH and m.boolean_value for m in payload.metrics):
            self.rebirths += 1
            self.publish_births()

    def stop(self, clean: bool = True) -> None:
        """Disconnect: cleanly (NDEATH published first, as the specification asks), or as
        a crash (the socket dropped: the broker publishes the will)."""
        client, self._client = self._client, None
        if client is None:
            return
        if clean:
            info = client.publish(
                self._topic("NDEATH"), NDeath(None, self._bd_seq_metric()).encode(), qos=1
            )
            with contextlib.suppress(Exception):
                info.wait_for_publish(2.0)
            client.disconnect()
            client.loop_stop()
        else:  # no DISCONNECT: the broker sees the connection drop and sends the will
            client.loop_stop()
            sock = client.socket()
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self.connected.clear()

    # -- messages ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def publish_births(self) -> None:
        with self._lock:
            now = self.clock()
            self.seq = 0
            node_metrics = (
                self._bd_seq_metric(),
                Metric(now, REBIRTH, DataType.BOOLEAN, value=False),
            )
            self._send(self._topic("NBIRTH"), NBirth(now, 0, node_metrics).encode(), qos=0)
            for device, metrics in self.aliases.items():
                values = {m: v for (dev, m), v in self._last_by_metric().items() if dev == device}
                births = tuple(
                    Metric(
                        now,
                        name,
                        DataType.DOUBLE,
                        value=values.get(name),
                        alias=alias,
                        is_null=name not in values,
                    )
                    for name, alias in metrics.items()
                )
                body = DBirth(now, self._next_seq(), births).encode()
                self._send(self._topic("DBIRTH", device), body, qos=0)
            self.births += 1

    def _last_by_metric(self) -> dict[tuple[str, str], float]:
        return {self.where[k]: v for k, v in self.last.items() if k in self.where}

    def publish(self, values: list[FieldValue]) -> int:
        """DDATA for the values of this node's devices (one message per device); returns
        how many metrics were published."""
        per_device: dict[str, list[Metric]] = {}
        for v in values:
            where = self.where.get((v.machine_id, v.sensor))
            if where is None:
                continue
            device, metric = where
            self.last[(v.machine_id, v.sensor)] = v.value
            alias = self.aliases[device][metric]
            per_device.setdefault(device, []).append(
                Metric(v.timestamp_ms, None, DataType.DOUBLE, value=float(v.value), alias=alias)
            )
        sent = 0
        with self._lock:
            for device, metrics in per_device.items():
                body = DData(self.clock(), self._next_seq(), tuple(metrics)).encode()
                self._send(self._topic("DDATA", device), body, qos=self.qos)
                sent += len(metrics)
        self.published += sent
        return sent

    def _send(self, topic: str, body: bytes, qos: int) -> None:
        if self._client is not None:
            self._client.publish(topic, body, qos=qos)


def edge_nodes(
    plant: Plant,
    host: str,
    port: int,
    *,
    user: str | None = None,
    password: str | None = None,
    only: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> list[SparkplugEdgeNode]:
    """An edge node for every (group, edge node) of the plant's Sparkplug mapping (or
    only the one ``only`` names)."""
    mapping = SparkplugMap.from_plant(with_default_rule(plant))
    if only is not None and only not in mapping.by_node:
        known = ", ".join("/".join(k) for k in sorted(mapping.by_node))
        raise ValueError(f"no edge node {'/'.join(only)} in the plant's mapping (known: {known})")
    return [
        SparkplugEdgeNode(
            mapping, g, n, host=host, port=port, user=user, password=password, tls=tls
        )
        for g, n in sorted(mapping.by_node)
        if only is None or (g, n) == only
    ]


async def serve_sparkplug(
    plant: Plant,
    host: str = "127.0.0.1",
    port: int = 1883,
    seed: int = 0,
    *,
    tick_s: float = 1.0,
    speed: float = 1.0,
    user: str | None = None,
    password: str | None = None,
    only: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Publish the simulated plant as Sparkplug edge nodes until cancelled (over TLS
    with ``tls``)."""
    from twins.simulator.plant import PlantSimulator

    nodes = edge_nodes(plant, host, port, user=user, password=password, only=only, tls=tls)
    for node in nodes:
        await asyncio.to_thread(node.start)
    sim = PlantSimulator(plant, seed=seed, start_ms=_now_ms())
    try:
        next_at = time.monotonic()
        while True:
            next_at += tick_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            values = [
                FieldValue(m, s.partition(".")[2], v, int(t))
                for b in sim.advance(tick_s * speed)
                for m, s, t, v in zip(
                    b.readings.machine_id,
                    b.readings.sensor_id,
                    b.readings.timestamp,
                    b.readings.value,
                    strict=True,
                )
            ]
            for node in nodes:
                node.publish(values)
            if next_at < time.monotonic() - 10 * tick_s:
                next_at = time.monotonic()
    finally:
        for node in nodes:
            node.stop()
