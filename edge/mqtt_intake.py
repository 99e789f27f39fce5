"""MQTT and Sparkplug B devices into the twins, through the hub's own broker.

nats-server's MQTT listener is the broker (no second one): what a device publishes on an
MQTT topic is a NATS message on the topic's subject (:func:`edge.mqtt_plain.subject_of`).
The hub keeps those subjects in the JetStream stream ``MQTT`` (work-queue retention: a
message stays until this intake has handled it), so a message the broker acknowledged to
a device (QoS 1) survives a restart of the intake.

The intake reads the stream with one durable consumer, in order (Sparkplug needs the order
of a node's messages), and for each message:

1. decodes it: a plain topic by :class:`~edge.mqtt_plain.PlainTopics`, a ``spBv1.0/``
   topic by the Sparkplug host logic (:class:`~edge.sparkplug.SparkplugHost`);
2. publishes the readings as :class:`~schemas.telemetry.TelemetryBatch` messages on
   ``tf.telemetry.<site>.<machine>`` with a ``Nats-Msg-Id`` made from the message's
   identity (Sparkplug: edge node, device, session, seq and time; plain: topic and
   payload when it carries a timestamp, else the stream sequence), so a device's resend,
   or this intake handling a message again after a crash, is applied once. The id is
   in the intake's namespace (``mqtt:``) and keyed with its password
   (:func:`message_id`), so no gateway can compute one and publish it first;
3. sends what was refused, with its reason, to the dead-letter subject ``tf.dlq.mqtt``,
   and rebirth requests (``NCMD``) to the edge nodes;
4. acknowledges the message only then.

It is a Sparkplug host application: it holds the retained ``spBv1.0/STATE/<host id>``
message ``{"online": true}`` while connected (an MQTT client of its own, with the
``{"online": false}`` will the specification asks for).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from typing import Any

from bus.connect import nats_tls_on_node, nats_tls_options
from bus.fetch import fetch
from drivers.base import FieldValue, reading_columns
from edge.mqtt_plain import MqttInputError, PlainTopics, subject_of, topic_of
from edge.sparkplug import NAMESPACE, SparkplugHost, SparkplugMap, state_payload, state_topic
from schemas.plant import Plant
from schemas.subjects import dead_letter, inbox, telemetry
from schemas.telemetry import TelemetryBatch, scoped_message_id

log = logging.getLogger(__name__)

STREAM = "MQTT"
DURABLE = "mqtt-intake"
SOURCE = "mqtt"
SPARKPLUG_SUBJECTS = subject_of(f"{NAMESPACE}/#").replace("#", ">")
STREAM_MAX_AGE_S = 7 * 86_400


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def telemetry_batch(
    site: str, machine: str, batch_id: str, readings: list[FieldValue], now_ms: int
) -> TelemetryBatch:
    """One machine's readings as the twins' wire format."""
    return TelemetryBatch.model_validate(
        {
            "gateway_id": SOURCE,
            "site_id": site,
            "batch_id": batch_id,
            "sent_at": now_ms,
            "readings": reading_columns(machine, readings),
        },
        context={"now_ms": now_ms},
    )


def message_id(identity: str, machine: str, key: bytes = b"") -> str:
    """A ``Nats-Msg-Id`` (and batch id) of printable ASCII, at most 64 characters, in the
    intake's namespace (``mqtt:<digest>``). With a ``key`` (the intake's NATS password,
    the same at every start) the digest is keyed, so nobody who sees or guesses a
    device's message can compute its id and publish under it first.

    >>> message_id("seq:7", "P-101")
    'mqtt:...'
    >>> message_id("seq:7", "P-101", b"k") != message_id("seq:7", "P-101")
    True
    """
    text = f"{identity}|{machine}".encode()
    digest = (
        hmac.new(key, text, hashlib.sha256).hexdigest() if key else hashlib.sha256(text).hexdigest()
    )
    return scoped_message_id(SOURCE, digest[:40])


class MqttIntake:
    """Reads the hub's ``MQTT`` stream into telemetry (see the module)."""

    def __init__(
        self,
        plant: Plant,
        nats_url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        mqtt_port: int | None = None,
        mqtt_host: str = "127.0.0.1",
        host_id: str = "twinfleet",
        clock: Any = _now_ms,
        fetch_batch: int = 256,
        device_topics: list[str] | None = None,
    ) -> None:
        """``device_topics``: the plain topics registered devices may publish on (kept
        too, so a device's message on a topic that is no plant sensor is refused with
        its reason instead of vanishing)."""
        self.plant = plant
        self.nats_url = nats_url
        self.user, self.password = user, password
        self.mqtt_port, self.mqtt_host = mqtt_port, mqtt_host
        self.host_id = host_id
        self.clock = clock
        self.fetch_batch = fetch_batch
        self.device_subjects = sorted({subject_of(t) for t in device_topics or []})
        self.plain = PlainTopics.from_plant(plant)
        self.sparkplug = SparkplugHost(SparkplugMap.from_plant(plant))
        self.site_of = {m.id: m.site for m in plant.machines}
        self.counts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._mqtt: Any = None
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> MqttIntake:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

        self._nc = await nats.connect(
            self.nats_url,
            user=self.user,
            password=self.password,
            max_reconnect_attempts=-1,
            inbox_prefix=inbox("mqtt-intake"),
            **nats_tls_options(),  # the hub's CA on this node, when the hub has TLS
        )
        self._js = self._nc.jetstream()
        subjects = sorted({SPARKPLUG_SUBJECTS, *self.plain.subjects(), *self.device_subjects})
        config = StreamConfig(
            name=STREAM,
            subjects=subjects,
            retention=RetentionPolicy.WORK_QUEUE,
            max_age=STREAM_MAX_AGE_S,
        )
        try:
            await self._js.add_stream(config)
        except Exception:  # exists: the plant's topics may have changed since
            await self._js.update_stream(config)
        self._sub = await self._js.pull_subscribe(
            ">",
            durable=DURABLE,
            stream=STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1),
        )
        if self.mqtt_port is not None:
            self._mqtt = self._state_client()
        self._task = asyncio.create_task(self._run())
        return self

    def _state_client(self) -> Any:
        """The host application's own MQTT session: retained STATE online, will offline."""
        import paho.mqtt.client as mqtt

        born = self.clock()
        client = mqtt.Client(client_id=f"{self.host_id}-host", clean_session=True)
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        context = nats_tls_on_node()  # the hub has TLS: its MQTT port too
        if context is not None:
            client.tls_set_context(context)
        topic = state_topic(self.host_id)
        client.will_set(topic, state_payload(False, born), qos=1, retain=True)

        def online(c: Any, _userdata: Any, _flags: Any, rc: int) -> None:
            if rc == 0:
                c.publish(topic, state_payload(True, born), qos=1, retain=True)

        client.on_connect = online
        client.connect_async(self.mqtt_host, self.mqtt_port, keepalive=30)
        client.loop_start()
        return client

    async def stop(self) -> None:
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._mqtt is not None:  # a clean going: STATE offline, then disconnect
            info = self._mqtt.publish(
                state_topic(self.host_id), state_payload(False, self.clock()), qos=1, retain=True
            )
            with contextlib.suppress(Exception):
                await asyncio.to_thread(info.wait_for_publish, 2.0)
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
        if self._nc is not None:  # every message was acknowledged as it was handled
            with contextlib.suppress(Exception):
                await self._nc.close()

    def status(self) -> dict[str, Any]:
        return {
            **dict(self.counts),
            "refused_by_reason": dict(self.refusals),
            "sparkplug": dict(self.sparkplug.counters),
        }

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self.stopping:
            messages = await fetch(
                self._sub, self.fetch_batch, 1.0, name="MQTT intake", counters=self.counts
            )
            outgoing: list[tuple[str, str, bytes, int]] = []
            for msg in messages:  # in stream order: Sparkplug sessions need it
                outgoing += await self.handle(msg.subject, msg.data, msg.metadata.sequence.stream)
            await self._store(outgoing)
            for msg in messages:  # only once their telemetry is stored
                await msg.ack()

    async def handle(
        self, subject: str, data: bytes, stream_seq: int
    ) -> list[tuple[str, str, bytes, int]]:
        """One message of the stream: read it, dead-letter what is refused, send rebirth
        requests; the telemetry to store (subject, message id, body, readings)."""
        topic = topic_of(subject)
        now = self.clock()
        self.counts["messages"] += 1
        readings: list[FieldValue] = []
        refused: list[str] = []
        if topic.startswith(f"{NAMESPACE}/"):
            out = self.sparkplug.handle(topic, data, now)
            readings, refused = out.readings, out.refused
            identity = out.identity or f"seq:{stream_seq}"
            if out.duplicate:
                self.counts["duplicates"] += 1
            for cmd_topic, payload in out.commands:
                await self._nc.publish(subject_of(cmd_topic), payload)
                self.counts["commands_sent"] += 1
        else:
            try:
                reading = self.plain.read(topic, data, now)
            except MqttInputError as exc:
                refused = [str(exc)]
            else:
                readings = [reading]
            timed = readings and b'"timestamp"' in data
            identity = f"{topic}|{data.hex()}" if timed else f"seq:{stream_seq}"
        if refused:
            await self._dead_letter(topic, refused)
        per_machine: dict[str, list[FieldValue]] = {}
        for r in readings:
            per_machine.setdefault(r.machine_id, []).append(r)
        batches = []
        for machine, rows in per_machine.items():
            site = self.site_of[machine]
            batch_id = message_id(identity, machine, (self.password or "").encode())
            body = telemetry_batch(site, machine, batch_id, rows, now).model_dump_json().encode()
            batches.append((telemetry(site, machine), batch_id, body, len(rows)))
        return batches

    async def _store(self, pending: list[tuple[str, str, bytes, int]]) -> None:
        """Publish every batch and wait for the stream's acknowledgements, retrying those
        not acknowledged (their message id makes a retry of a stored batch harmless)."""
        backoff = 0.2
        while pending:
            futures = [
                await self._js.publish_async(subject, body, headers={"Nats-Msg-Id": batch_id})
                for subject, batch_id, body, _ in pending
            ]
            results = await asyncio.gather(
                *(asyncio.wait_for(f, timeout=5.0) for f in futures), return_exceptions=True
            )
            failed = []
            for item, result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append(item)
                elif result.duplicate:
                    self.counts["batches_duplicate"] += 1
                else:
                    self.counts["batches"] += 1
                    self.counts["readings"] += item[3]
            if failed:
                self.counts["publish_retries"] += len(failed)
                log.warning("MQTT intake: %d batches not stored; retrying", len(failed))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            pending = failed

    async def _dead_letter(self, topic: str, reasons: list[str]) -> None:
        for reason in reasons:
            self.refusals[_reason_kind(reason)] += 1
            log.warning("MQTT intake refused %s", reason)
        self.counts["refused"] += len(reasons)
        body = json.dumps({"source": SOURCE, "topic": topic, "reasons": reasons}).encode()
        await self._nc.publish(dead_letter(SOURCE), body)


def _reason_kind(reason: str) -> str:
    """A short key to count refusals by (the reason without its topic and numbers)."""
    text = reason.split(": ", 1)[-1]
    for key in (
        "no sensor",
        "not JSON",
        "protobuf",
        "alias",
        "seq",
        "before the edge node",
        "before the device",
        "timestamp",
        "not finite",
        "not a number",
    ):
        if key in text:
            return key
    return text[:40]
