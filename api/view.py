"""The in-replica view of the fleet, kept current by what the actors publish on NATS.

Nothing here calls an actor. The view is fed by:

* the ``tf_twins`` key-value bucket (watched): every twin's latest full
  :class:`~schemas.twin.TwinState` (written by the host actors every ``state_every_s``);
* ``tf.twin.<machine>`` (core NATS, one event per applied telemetry message): version,
  health, status, the data time and the new values of the sensors that changed. They are
  laid over the full state, so values, health and status are current to the message;
* the ``EVENTS`` stream (``tf.event.>``, JetStream): anomalies (the last
  ``anomaly_replay_h`` hours are replayed when a replica starts, so a new replica knows
  them too) and each machine's latest RUL prediction;
* the ``tf_acks`` bucket (watched): acknowledgements of anomalies, shared by all replicas.
* the ``tf_revoked`` bucket (watched): revoked API tokens (:mod:`api.revocations`).

Subscribers (GraphQL subscriptions) get bounded queues: a subscriber that does not keep up
loses its oldest undelivered updates (counted in ``dropped``), never blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from actors.bus import ACKS, EVENTS, REVOKED, ensure_bucket, ensure_jetstream
from api.revocations import Revocations
from schemas import subjects
from schemas.anomaly import AnomalyRecord
from schemas.common import now_ms
from schemas.plant import MachineSpec
from schemas.rul import RulPrediction
from schemas.twin import MachineStatus, SensorState, TwinState

FLEET = "fleet"
CHANGED = "changed"
"""The topic on which the id of every machine whose twin event or RUL prediction arrived
is published (the dashboard's fleet table follows it)."""


@dataclass
class Live:
    """What the compact twin events told about one machine since its last full state."""

    version: int = -1
    seq: int = 0
    health_score: float | None = None
    status: str | None = None
    last_update: int | None = None
    received_ms: int | None = None
    sensors: dict[str, tuple[float | None, int | None, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class AssetView:
    """One machine as the API answers it: its spec, state, newest RUL and when."""

    spec: MachineSpec
    state: TwinState | None
    rul: RulPrediction | None
    source: str  # "view" or "actor"

    @property
    def status(self) -> str:
        return self.state.status.value if self.state else MachineStatus.UNKNOWN.value

    @property
    def health_score(self) -> float | None:
        return None if self.state is None else self.state.health_score


def ack_key(anomaly_id: str) -> str:
    """Key-value keys allow no ``:``; an anomaly's key is a hash of its id."""
    return hashlib.sha256(anomaly_id.encode()).hexdigest()[:40]


class Broadcaster:
    """Topic -> bounded queues of the subscribers listening to it."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self.topics: dict[str, set[asyncio.Queue[Any]]] = {}
        self.dropped = 0
        self.sent = 0

    def publish(self, topic: str, item: Any) -> None:
        for queue in self.topics.get(topic, ()):
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(item)
            self.sent += 1

    async def listen(self, topic: str) -> AsyncIterator[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue(self.queue_size)
        self.topics.setdefault(topic, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            listeners = self.topics.get(topic)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self.topics[topic]


class FleetView:
    """See the module docstring. ``start()`` connects; ``ready`` once the full states
    and the anomaly history present at start have been read."""

    def __init__(
        self,
        machines: Iterable[MachineSpec],
        nats_url: str,
        *,
        anomaly_replay_h: float = 24.0,
        recent_per_machine: int = 200,
        recent_total: int = 20_000,
        fleet_every_s: float = 0.5,
    ) -> None:
        self.machines = {m.id: m for m in machines}
        self.sensors = {s: m for m in self.machines.values() for s in m.sensor_ids()}
        """sensor id -> its machine"""
        self.nats_url = nats_url
        self.anomaly_replay_h = anomaly_replay_h
        self.recent_per_machine = recent_per_machine
        self.fleet_every_s = fleet_every_s
        self.states: dict[str, TwinState] = {}
        self.live: dict[str, Live] = {}
        self.rul: dict[str, RulPrediction] = {}
        self.anomalies: dict[str, deque[AnomalyRecord]] = {}
        self.recent: deque[AnomalyRecord] = deque(maxlen=recent_total)
        self.acks: dict[str, dict[str, Any]] = {}
        self.broadcast = Broadcaster()
        self.counters: Counter[str] = Counter()
        self.nc: Any = None
        self.js: Any = None
        self._acks_kv: Any = None
        self.revocations = Revocations()
        self._tasks: list[asyncio.Task[Any]] = []
        self._fleet_due: asyncio.TimerHandle | None = None
        self._overlaid: dict[str, TwinState] = {}
        self._states_loaded = asyncio.Event()
        self._anomalies_loaded = asyncio.Event()

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> FleetView:
        import nats

        self.nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1)
        self.js = self.nc.jetstream()
        _, twins_kv = await ensure_jetstream(self.js)
        self._acks_kv = await self.js.key_value(ACKS)
        await self.nc.subscribe(subjects.TWIN_ALL, cb=self._on_twin_event)
        self._tasks.append(asyncio.create_task(self._watch(twins_kv, self._on_state)))
        self._tasks.append(asyncio.create_task(self._watch(self._acks_kv, self._on_ack)))
        revoked = await ensure_bucket(self.js, REVOKED, 256)
        self._tasks.append(asyncio.create_task(self._watch(revoked, self.revocations.apply)))
        await self._follow_events()
        return self

    @property
    def ready(self) -> bool:
        return (
            self.nc is not None
            and self.nc.is_connected
            and self._states_loaded.is_set()
            and self._anomalies_loaded.is_set()
        )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        await asyncio.wait_for(self._states_loaded.wait(), timeout_s)
        await asyncio.wait_for(self._anomalies_loaded.wait(), timeout_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _watch(self, bucket: Any, apply: Any) -> None:
        """Follow a bucket: its present values first (then ``None`` marks the end of
        them), then every change."""
        watcher = await bucket.watchall()
        first = True
        async for entry in watcher:
            if entry is None:
                if first and apply == self._on_state:
                    self._states_loaded.set()
                first = False
                continue
            try:
                apply(entry.key, entry.value)
            except Exception as exc:  # a bad value is counted, never stops the view
                self.counters[f"bad_{bucket._name}"] += 1
                self.counters["last_error:" + type(exc).__name__] += 1

    async def _follow_events(self) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        since = now_ms() - int(self.anomaly_replay_h * 3_600_000)
        self._anomaly_sub = await self.js.subscribe(
            subjects.ANOMALY_ALL,
            stream=EVENTS,
            ordered_consumer=True,
            cb=self._on_anomaly_msg,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=datetime.fromtimestamp(since / 1000, tz=UTC),
            ),
        )
        pending = (await self._anomaly_sub.consumer_info()).num_pending
        if pending == 0:
            self._anomalies_loaded.set()
        self._rul_sub = await self.js.subscribe(
            subjects.RUL_ALL,
            stream=EVENTS,
            ordered_consumer=True,
            cb=self._on_rul_msg,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
        )

    # -- what arrives ---------------------------------------------------------------------
    def _on_state(self, key: str, value: bytes | None) -> None:
        if key not in self.machines:
            return
        if not value:
            self.states.pop(key, None)
            return
        state = TwinState.model_validate_json(value)
        live = self.live.get(key)
        if live is None or state.version >= live.version:
            self.live[key] = Live(
                version=state.version,
                health_score=state.health_score,
                status=state.status.value,
                last_update=state.last_update,
                received_ms=now_ms(),
            )
        self.states[key] = state
        self.counters["states"] += 1

    async def _on_twin_event(self, msg: Any) -> None:
        try:
            event = json.loads(msg.data)
            machine = event["machine_id"]
            if machine not in self.machines:
                self.counters["events_unknown_machine"] += 1
                return
            live = self.live.setdefault(machine, Live())
            if event["version"] < live.version:
                return  # older than what is known
            live.version = int(event["version"])
            live.seq = int(event.get("seq", 0))
            live.health_score = float(event["health_score"])
            live.status = str(event["status"])
            live.last_update = event.get("last_update", live.last_update)
            live.received_ms = now_ms()
            for sensor, reading in (event.get("sensors") or {}).items():
                live.sensors[sensor] = (reading[0], reading[1], int(reading[2]))
        except (ValueError, KeyError, TypeError, IndexError):
            self.counters["bad_twin_events"] += 1
            return
        self.counters["twin_events"] += 1
        event["_received_ms"] = live.received_ms
        self.broadcast.publish(f"state.{machine}", event)
        self.broadcast.publish(CHANGED, machine)
        if self.broadcast.topics.get(FLEET):
            self._fleet_soon()

    def _fleet_soon(self) -> None:
        """Fleet health goes out at most every ``fleet_every_s``, after the events that
        changed it (coalesced, not polled)."""
        if self._fleet_due is not None:
            return

        def emit() -> None:
            self._fleet_due = None
            self.broadcast.publish(FLEET, self.fleet_health())

        self._fleet_due = asyncio.get_running_loop().call_later(self.fleet_every_s, emit)

    async def _on_anomaly_msg(self, msg: Any) -> None:
        try:
            record = AnomalyRecord.model_validate_json(msg.data)
        except ValueError:
            self.counters["bad_anomaly_events"] += 1
        else:
            if record.machine_id in self.machines:
                per = self.anomalies.setdefault(
                    record.machine_id, deque(maxlen=self.recent_per_machine)
                )
                per.append(record)
                self.recent.append(record)
                self.counters["anomalies"] += 1
                if self._anomalies_loaded.is_set():
                    self.broadcast.publish(f"anomaly.{record.machine_id}", record)
                    self.broadcast.publish("anomaly.*", record)
        if not self._anomalies_loaded.is_set() and msg.metadata.num_pending == 0:
            self._anomalies_loaded.set()

    async def _on_rul_msg(self, msg: Any) -> None:
        try:
            prediction = RulPrediction.model_validate_json(msg.data)
        except ValueError:
            self.counters["bad_rul_events"] += 1
            return
        known = self.rul.get(prediction.machine_id)
        if known is None or prediction.predicted_at >= known.predicted_at:
            self.rul[prediction.machine_id] = prediction
            self.broadcast.publish(CHANGED, prediction.machine_id)

    def _on_ack(self, key: str, value: bytes | None) -> None:
        if value:
            doc = json.loads(value)
            self.acks[doc["anomaly_id"]] = doc

    # -- answers --------------------------------------------------------------------------
    def asset(self, machine_id: str) -> AssetView | None:
        spec = self.machines.get(machine_id)
        if spec is None:
            return None
        live = self.live.get(machine_id)
        state = self.states.get(machine_id)
        if live is not None and (state is None or live.version > state.version):
            cached = self._overlaid.get(machine_id)
            if cached is None or cached.version != live.version:
                cached = self._overlaid[machine_id] = _overlay(machine_id, state, live)
            state = cached
        rul = self.rul.get(machine_id)
        if (
            state is not None
            and state.rul is not None
            and (rul is None or state.rul.predicted_at > rul.predicted_at)
        ):
            rul = state.rul
        return AssetView(spec, state, rul, "view")

    def summary(self, machine_id: str) -> tuple[str, float | None]:
        """(status, health) from the compact events alone: cheap, for filters."""
        live = self.live.get(machine_id)
        if live is None or live.status is None:
            return MachineStatus.UNKNOWN.value, None
        return live.status, live.health_score

    def fleet_health(self) -> dict[str, Any]:
        statuses: Counter[str] = Counter()
        scores = []
        for machine_id in self.machines:
            status, health = self.summary(machine_id)
            statuses[status] += 1
            if health is not None:
                scores.append(health)
        at_risk = sum(1 for p in self.rul.values() if p.failure_probability.get(168, 0.0) >= 0.3)
        return {
            "machines": len(self.machines),
            "reporting": len(scores),
            "mean_health": sum(scores) / len(scores) if scores else None,
            "min_health": min(scores) if scores else None,
            "by_status": dict(sorted(statuses.items())),
            "at_risk": at_risk,
            "at": now_ms(),
        }

    def find_anomaly(self, anomaly_id: str) -> AnomalyRecord | None:
        machine = anomaly_id.split(":", 1)[0]
        for record in self.anomalies.get(machine, ()):
            if record.anomaly_id == anomaly_id:
                return record
        return None

    async def acknowledge(
        self, anomaly_id: str, by: str, note: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Record who acknowledged an anomaly (once: a second acknowledgement returns the
        first); returns the acknowledgement and whether this call made it. Raises KeyError
        for an anomaly the view does not know."""
        from nats.js.errors import KeyWrongLastSequenceError

        if self.find_anomaly(anomaly_id) is None:
            raise KeyError(anomaly_id)
        doc = {"anomaly_id": anomaly_id, "by": by, "at": now_ms(), "note": note}
        made = True
        try:
            await self._acks_kv.create(ack_key(anomaly_id), json.dumps(doc).encode())
        except KeyWrongLastSequenceError:
            entry = await self._acks_kv.get(ack_key(anomaly_id))
            doc, made = json.loads(entry.value), False
        self.acks[anomaly_id] = doc
        return doc, made


def _overlay(machine_id: str, state: TwinState | None, live: Live) -> TwinState:
    """The full state with what the newer compact events said laid over it."""
    sensors = dict(state.sensors) if state is not None else {}
    for sensor, (value, ts, quality) in live.sensors.items():
        sensors[sensor] = SensorState(value=value, timestamp=ts, quality=quality)
    base: dict[str, Any] = state.model_dump() if state is not None else {"machine_id": machine_id}
    base.update(
        version=live.version,
        health_score=live.health_score if live.health_score is not None else 100.0,
        status=live.status or MachineStatus.UNKNOWN.value,
        last_update=live.last_update,
        sensors=sensors,
    )
    return TwinState.model_validate(base)
