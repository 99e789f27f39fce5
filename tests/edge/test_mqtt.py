"""MQTT and Sparkplug B devices through the hub's own broker (nats-server's MQTT
listener), with a real MQTT client library (paho) as the devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pysparkplug import DataType, DData, Metric

from actors.bus import ensure_jetstream
from drivers.base import FieldValue
from drivers.sparkplug_sim import SparkplugEdgeNode
from edge.mqtt_intake import MqttIntake
from edge.sparkplug import SparkplugMap
from schemas.plant import Plant, parse_plant
from twinfleet.natsconf import INTERNAL_USER, MqttDevice, hub_config
from twinfleet.services import NatsServer, free_port

PLANT = {
    "name": "mqtt-plant",
    "machine_types": {
        "pump": {
            "kind": "pump",
            "sensors": [
                {"name": "flow", "kind": "flow", "unit": "m3/h"},
                {"name": "temp", "kind": "temperature", "unit": "degC"},
            ],
        },
        "fan": {"kind": "motor", "sensors": [{"name": "speed", "kind": "speed", "unit": "rpm"}]},
    },
    "sites": [
        {
            "id": "north",
            "lines": [
                {
                    "id": "L1",
                    "machines": [
                        {"id": "P-1", "type": "pump"},
                        {"id": "P-2", "type": "pump"},
                        {"id": "F-1", "type": "fan"},
                    ],
                }
            ],
        }
    ],
    "mqtt": {
        "sparkplug": [{"machine_types": ["pump"]}],
        "topics": [{"topic": "{site}/{machine}/{sensor}", "machine_types": ["fan"]}],
    },
}
FAN_TOPIC = "north/F-1/speed"


@dataclass
class Broker:
    server: NatsServer
    port: int
    mqtt_port: int
    password: str
    node: MqttDevice
    fan: MqttDevice
    store: Path

    @property
    def url(self) -> str:
        return self.server.url

    def restart(self) -> None:
        self.server.stop()
        self.server.start()


@pytest.fixture
def plant() -> Plant:
    return parse_plant(PLANT)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    port, mqtt_port = free_port(), free_port()
    node = MqttDevice.new("line-1", sparkplug=("north", "L1"))
    fan = MqttDevice.new("fan-1", topics=[FAN_TOPIC, "north/F-1/unknown"])
    config = hub_config(
        port=port,
        leaf_port=free_port(),
        store_dir=tmp_path / "nats" / "jetstream",
        internal_password="secret-internal",
        gateways=[],
        mqtt_port=mqtt_port,
        mqtt_devices=[node, fan],
    )
    server = NatsServer(
        tmp_path / "nats", port=port, config=config, credentials=(INTERNAL_USER, "secret-internal")
    )
    with server:
        yield Broker(server, port, mqtt_port, "secret-internal", node, fan, tmp_path)


@dataclass
class Seen:
    """What reached the hub: telemetry rows (stored) and dead letters."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)

    def reasons(self) -> list[str]:
        """Every refusal but a Sparkplug node's data before its (lost QoS 0) birth."""
        return [
            r for d in self.dead for r in d["reasons"] if "before the edge node's NBIRTH" not in r
        ]

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; rows {self.rows[-5:]}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_hub(broker: Broker, plant: Plant) -> AsyncIterator[tuple[MqttIntake, Seen]]:
    import nats

    nc = await nats.connect(broker.url)
    js = nc.jetstream()
    await ensure_jetstream(js)
    seen = Seen()

    async def stored(msg: Any) -> None:
        batch = json.loads(msg.data)
        r = batch["readings"]
        for i in range(len(r["sensor_id"])):
            seen.rows.append({k: r[k][i] for k in r} | {"batch_id": batch["batch_id"]})
        await msg.ack()

    async def dead(msg: Any) -> None:
        seen.dead.append(json.loads(msg.data))

    await js.subscribe("tf.telemetry.>", cb=stored, ordered_consumer=True)
    await nc.subscribe("tf.dlq.mqtt", cb=dead)
    intake = MqttIntake(
        plant,
        broker.url,
        user=INTERNAL_USER,
        password=broker.password,
        mqtt_port=broker.mqtt_port,
        device_topics=list(broker.fan.topics),
    )
    await intake.start()
    yield intake, seen
    await intake.stop()
    await nc.close()


def edge_node(broker: Broker, plant: Plant, qos: int = 0) -> SparkplugEdgeNode:
    return SparkplugEdgeNode(
        SparkplugMap.from_plant(plant),
        "north",
        "L1",
        port=broker.mqtt_port,
        user=broker.node.user,
        password=broker.node.password,
        qos=qos,
    )


def device(broker: Broker, who: MqttDevice, client_id: str) -> mqtt.Client:
    client = mqtt.Client(client_id=client_id, clean_session=False)
    client.username_pw_set(who.user, who.password)
    client.connect("127.0.0.1", broker.mqtt_port, keepalive=10)
    client.loop_start()
    return client


async def born(node: SparkplugEdgeNode, intake: MqttIntake, seen: Seen, births: int) -> None:
    """Wait until the host has seen the node's ``births``-th NBIRTH. Births are QoS 0 (as
    the specification says), and on this shared machine nats-server has been seen to
    drop one under load; then the node's next data asks for a rebirth, as a host must."""
    for _ in range(10):
        with contextlib.suppress(AssertionError):
            await seen.until(lambda: intake.sparkplug.counters["births"] >= births, "NBIRTH", 3)
            return
        node.publish([FieldValue("P-1", "temp", 1.0, int(time.time() * 1000))])
    raise AssertionError(f"edge node never born ({births} births expected)")


def values(t: int, flow: float) -> list[FieldValue]:
    return [FieldValue("P-1", "flow", flow, t), FieldValue("P-2", "temp", 40.0 + flow, t)]


def test_sparkplug_life_cycle_birth_data_death_rebirth(broker: Broker, plant: Plant):
    asyncio.run(_test_sparkplug_life_cycle_birth_data_death_rebirth(broker, plant))


async def _test_sparkplug_life_cycle_birth_data_death_rebirth(broker: Broker, plant: Plant):
    async with running_hub(broker, plant) as hub:
        intake, seen = hub
        node = await asyncio.to_thread(edge_node(broker, plant).start)
        await born(node, intake, seen, 1)
        t = int(time.time() * 1000)
        node.publish(values(t, 12.5))
        await seen.until(lambda: len(seen.rows) == 2, "the first DDATA")
        assert {(r["sensor_id"], r["value"], r["quality"]) for r in seen.rows} == {
            ("P-1.flow", 12.5, 0),
            ("P-2.temp", 52.5, 0),
        }
        # a crash: the broker publishes the node's will (NDEATH): its sensors go bad quality
        await asyncio.to_thread(node.stop, False)
        await seen.until(lambda: intake.sparkplug.counters["deaths"] == 1, "the NDEATH will")
        await seen.until(lambda: len(seen.rows) == 6, "bad-quality rows for the 4 sensors")
        assert {r["sensor_id"] for r in seen.rows[2:]} == {
            "P-1.flow",
            "P-1.temp",
            "P-2.flow",
            "P-2.temp",
        }
        assert all(r["quality"] == 2 for r in seen.rows[2:])
        # back, a new session (bdSeq + 1): births (after the broker confirmed the node's
        # command subscriptions), then data again
        await asyncio.to_thread(node.start)
        await born(node, intake, seen, 2)
        node.publish(values(t + 1000, 13.0))
        await seen.until(lambda: any(r["value"] == 13.0 for r in seen.rows), "data after rebirth")
        assert seen.reasons() == []
        assert intake.sparkplug.nodes[("north", "L1")].bd_seq == node.bd_seq == 1
        await asyncio.to_thread(node.stop)


def test_host_state_is_retained_online(broker: Broker, plant: Plant):
    asyncio.run(_test_host_state_is_retained_online(broker, plant))


async def _test_host_state_is_retained_online(broker: Broker, plant: Plant):
    async with running_hub(broker, plant) as hub:
        got: list[bytes] = []
        watcher = mqtt.Client(client_id="watcher")
        watcher.username_pw_set(broker.node.user, broker.node.password)
        watcher.on_message = lambda _c, _u, msg: got.append(msg.payload)
        watcher.connect("127.0.0.1", broker.mqtt_port)
        watcher.subscribe("spBv1.0/STATE/twinfleet", qos=1)
        watcher.loop_start()
        try:
            await hub[1].until(lambda: bool(got), "the retained STATE")
            assert json.loads(got[0])["online"] is True
        finally:
            watcher.loop_stop()
            watcher.disconnect()


def test_a_resent_message_is_applied_once(broker: Broker, plant: Plant):
    asyncio.run(_test_a_resent_message_is_applied_once(broker, plant))


async def _test_a_resent_message_is_applied_once(broker: Broker, plant: Plant):
    async with running_hub(broker, plant) as hub:
        intake, seen = hub
        node = await asyncio.to_thread(edge_node(broker, plant).start)
        await born(node, intake, seen, 1)
        t = int(time.time() * 1000)
        body = DData(t, node._next_seq(), (Metric(t, None, DataType.DOUBLE, value=7.0, alias=1),))
        raw = device(broker, broker.node, "resender")
        for _ in range(2):  # a QoS 1 resend: the same message twice
            raw.publish("spBv1.0/north/DDATA/L1/P-1", body.encode(), qos=1).wait_for_publish(5)
        node.publish(values(t + 1, 8.0))  # a barrier: later than both copies
        await seen.until(lambda: any(r["value"] == 8.0 for r in seen.rows), "the barrier")
        assert [r["value"] for r in seen.rows].count(7.0) == 1
        assert intake.sparkplug.counters["duplicates"] == 1
        raw.loop_stop()
        await asyncio.to_thread(node.stop)


def test_a_sequence_gap_asks_for_a_rebirth(broker: Broker, plant: Plant):
    asyncio.run(_test_a_sequence_gap_asks_for_a_rebirth(broker, plant))


async def _test_a_sequence_gap_asks_for_a_rebirth(broker: Broker, plant: Plant):
    async with running_hub(broker, plant) as hub:
        intake, seen = hub
        node = await asyncio.to_thread(edge_node(broker, plant).start)
        await born(node, intake, seen, 1)
        node.seq += 5  # five messages "lost"
        node.publish(values(int(time.time() * 1000), 3.0))
        await seen.until(lambda: node.rebirths >= 1, "the NCMD rebirth at the edge node")
        await born(node, intake, seen, 2)
        assert intake.sparkplug.counters["sequence_gaps"] == 1
        assert any("seq" in r for r in seen.reasons())
        assert any(r["value"] == 3.0 for r in seen.rows)  # the message after the gap is real
        await asyncio.to_thread(node.stop)


def test_unknown_alias_and_malformed_protobuf_are_dead_lettered(broker: Broker, plant: Plant):
    asyncio.run(_test_unknown_alias_and_malformed_protobuf_are_dead_lettered(broker, plant))


async def _test_unknown_alias_and_malformed_protobuf_are_dead_lettered(
    broker: Broker, plant: Plant
):
    async with running_hub(broker, plant) as hub:
        intake, seen = hub
        node = await asyncio.to_thread(edge_node(broker, plant).start)
        await born(node, intake, seen, 1)
        raw = device(broker, broker.node, "bad-node")
        t = int(time.time() * 1000)
        unknown = DData(
            t, node._next_seq(), (Metric(t, None, DataType.DOUBLE, value=1.0, alias=999),)
        )
        raw.publish("spBv1.0/north/DDATA/L1/P-1", unknown.encode(), qos=1).wait_for_publish(5)
        raw.publish("spBv1.0/north/NDATA/L1", b"\xff\xff not protobuf", qos=1).wait_for_publish(5)
        await seen.until(
            lambda: intake.refusals["alias"] == 1 and intake.refusals["protobuf"] == 1,
            "both refusals counted",
        )
        await seen.until(lambda: len(seen.reasons()) >= 2, "both dead letters")
        reasons = seen.reasons()
        assert any("alias 999 is not in any birth" in r for r in reasons), reasons
        assert any("malformed Sparkplug B protobuf" in r for r in reasons), reasons
        await seen.until(lambda: node.rebirths >= 1, "a rebirth asked for the unknown alias")
        raw.loop_stop()
        await asyncio.to_thread(node.stop)


def test_a_device_cannot_publish_outside_its_namespace(broker: Broker, plant: Plant):
    asyncio.run(_test_a_device_cannot_publish_outside_its_namespace(broker, plant))


async def _test_a_device_cannot_publish_outside_its_namespace(broker: Broker, plant: Plant):
    async with running_hub(broker, plant) as hub:
        intake, seen = hub
        raw = device(broker, broker.fan, "fan-outside")
        t = int(time.time() * 1000)
        body = json.dumps({"value": 1.0, "timestamp": t}).encode()
        raw.publish("spBv1.0/north/NDATA/L1", b"\x08\x01", qos=0)  # another node's namespace
        raw.publish("north/P-1/flow", body, qos=0)  # a topic it was not given
        time.sleep(0.2)
        if not raw.is_connected():  # the broker may drop a client over a violation
            raw.loop_stop()
            raw = device(broker, broker.fan, "fan-outside-2")
        raw.publish(FAN_TOPIC, json.dumps({"value": 1450.0, "timestamp": t}).encode(), qos=1)
        await seen.until(lambda: any(r["value"] == 1450.0 for r in seen.rows), "the barrier")
        # only its own topic reached the hub (besides the host's own STATE)
        assert intake.counts["messages"] - intake.sparkplug.counters["state_messages"] == 1
        assert [r["sensor_id"] for r in seen.rows] == ["F-1.speed"]
        raw.loop_stop()


def test_plain_topics_and_their_bad_input(broker: Broker, plant: Plant):
    asyncio.run(_test_plain_topics_and_their_bad_input(broker, plant))


async def _test_plain_topics_and_their_bad_input(broker: Broker, plant: Plant):
    async with running_hub(broker, plant) as hub:
        intake, seen = hub
        raw = device(broker, broker.fan, "fan")
        t = int(time.time() * 1000)
        sends = [
            (FAN_TOPIC, json.dumps({"value": 1440.0, "timestamp": t})),
            (FAN_TOPIC, "1441.5"),  # a bare number, timed on arrival
            (FAN_TOPIC, '"fast"'),
            (FAN_TOPIC, "NaN"),
            (FAN_TOPIC, json.dumps({"value": 1.0, "timestamp": t + 3_600_000})),
            ("north/F-1/unknown", "1.0"),
        ]
        for topic, body in sends:
            raw.publish(topic, body.encode(), qos=1).wait_for_publish(5)
        await seen.until(lambda: len(seen.dead) == 4 and len(seen.rows) == 2, "2 rows, 4 refusals")
        assert [r["value"] for r in seen.rows] == [1440.0, 1441.5]
        reasons = [d["reasons"][0] for d in seen.dead]
        assert "JSON number" in reasons[0]
        assert "not finite" in reasons[1]
        assert "ahead of the hub's clock" in reasons[2]
        assert "no sensor of the plant file has this topic" in reasons[3]
        assert intake.counts["refused"] == 4
        raw.loop_stop()


def test_hub_restart_under_a_qos1_publisher_loses_and_doubles_nothing(
    broker: Broker, plant: Plant
) -> None:
    asyncio.run(_restart_under_publisher(broker, plant))


async def _restart_under_publisher(broker: Broker, plant: Plant) -> None:
    """nats-server stops and starts again (same store) while a device publishes QoS 1
    readings; the device resends what was not acknowledged; each is stored once."""
    import nats

    nc = await nats.connect(broker.url)
    await ensure_jetstream(nc.jetstream())
    await nc.close()
    intake = await MqttIntake(plant, broker.url, device_topics=[FAN_TOPIC]).start()
    raw = device(broker, broker.fan, "fan-restart")
    raw.reconnect_delay_set(0.1, 1)
    t0 = int(time.time() * 1000)
    total = 400
    for i in range(total):
        body = json.dumps({"value": float(i), "timestamp": t0 + i}).encode()
        raw.publish(FAN_TOPIC, body, qos=1)
        if i == total // 2:
            await asyncio.to_thread(broker.restart)
        await asyncio.sleep(0.002)
    deadline = time.monotonic() + 60
    values: list[float] = []
    while time.monotonic() < deadline:
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        sub = await js.subscribe("tf.telemetry.>", ordered_consumer=True)
        values = []
        with_timeout = True
        while with_timeout:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                with_timeout = False
                continue
            values.extend(json.loads(msg.data)["readings"]["value"])
        await nc.close()
        if len(set(values)) == total:
            break
        await asyncio.sleep(1.0)
    raw.loop_stop()
    await intake.stop()
    assert len(set(values)) == total, f"lost {total - len(set(values))}"
    assert len(values) == total, f"doubled {len(values) - total}"


def test_the_simulated_sparkplug_plant_reaches_every_machine(broker: Broker) -> None:
    """``twinfleet sim sparkplug``'s edge nodes (one per line of the example plant) are
    born at the hub and their DDATA become readings of every machine."""
    from drivers.sparkplug_sim import serve_sparkplug
    from schemas import load_plant

    plant = load_plant(Path(__file__).parents[2] / "twinfleet" / "plants" / "example.yaml")

    async def scenario() -> None:
        async with running_hub(broker, plant) as (intake, seen):
            serving = asyncio.create_task(
                serve_sparkplug(
                    plant,
                    port=broker.mqtt_port,
                    tick_s=0.5,
                    user=INTERNAL_USER,
                    password=broker.password,
                )
            )
            nodes = len(SparkplugMap.from_plant(plant).by_node)
            machines = {m.id for m in plant.machines}
            await seen.until(
                lambda: {r["machine_id"] for r in seen.rows} >= machines, "every machine", 60
            )
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            assert intake.sparkplug.counters["births"] >= nodes
            assert seen.reasons() == []

    asyncio.run(scenario())
