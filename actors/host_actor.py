"""The Ray host actor: a partition of the fleet fed by its JetStream consumer.

``HostActor.run()`` is the actor's life: connect to NATS, restore every held twin from its
checkpoint, then read the telemetry stream from the oldest sequence any of its twins still
needs, and apply each message once (:class:`~actors.ingest.StreamIngest`). For every
message it publishes, on core NATS:

* ``tf.twin.<machine>``: a compact "twin changed" event (version, health, status, the new
  readings of the sensors that changed, the stream sequence);
* ``tf.event.anomaly.<machine>`` and ``tf.event.rul.<machine>``: the records;
* ``tf.dlq.<gateway>``: every refused message or reading, with the reason (also a
  message outside its subject's site, see :mod:`actors.ingest`);

and every ``state_every_s`` the latest full state of each twin that changed goes into the
``tf_twins`` key-value bucket (coalesced: a full state is about 50 KB and 1 ms to build
for a 100-sensor machine, too much to write per message). Every ``checkpoint_every_s``
it writes the twins that changed to the ``tf_checkpoints`` bucket (stream sequence +
snapshot).

The actor is created with ``max_restarts=-1`` and ``max_task_retries=-1``: when its process
dies (``kill -9``), Ray starts it again (the constructor runs again) and re-submits the
``run()`` call that was in flight, which restores from the checkpoints and replays the
stream from there. Already-applied messages are skipped by sequence, so the twins end in
exactly the state an uninterrupted run reaches.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from typing import Any

import ray

from actors.bus import STREAM, ensure_jetstream, pack_checkpoint, unpack_checkpoint
from actors.host import MachineHost
from actors.ingest import Delivery, Processed, StreamIngest, machine_of
from bus.connect import nats_url_on_node
from bus.fetch import FETCH_ERRORS, fetch
from schemas import subjects
from schemas.plant import MachineSpec
from twins.machine import ApplyResult, MachineTwin, TwinConfig
from twins.rul import load_rul_model

MEMBERSHIP_PREFIX = "_host."
"""Key prefix, in the checkpoints bucket, of each host's runtime membership changes
(cannot be a machine id: those start with a letter or digit and have no dot)."""

FLUSH_BUDGET_S = 0.01
"""Longest a loop turn spends writing due states and checkpoints."""


def _inbox(client: str) -> str:
    """The client's own inbox prefix; the shared one when its name is no subject token."""
    try:
        return subjects.inbox(client)
    except ValueError:
        return "_INBOX"


async def _keys(bucket: Any) -> set[str]:
    """The keys in a key-value bucket (none when it is empty)."""
    from nats.js.errors import NoKeysError

    try:
        return set(await bucket.keys())
    except NoKeysError:
        return set()


def twin_event(machine_id: str, seq: int, result: ApplyResult, twin: MachineTwin) -> bytes:
    """The compact "twin changed" event: the new readings of the sensors the message
    changed (``sensors``: ``{id: [value, timestamp ms, quality]}``), the twin's data time,
    and the subjects of its anomaly conditions still open (``in_alarm``)."""
    return json.dumps(
        {
            "machine_id": machine_id,
            "version": result.version,
            "seq": seq,
            "applied": result.applied,
            "health_score": round(result.health_score, 3),
            "status": result.status.value,
            "last_update": twin.last_update_ms,
            "sensors": twin.readings(result.changed_index),
            "anomalies": len(result.anomalies),
            "in_alarm": twin.in_alarm(),
            "rul_model": None if result.rul is None else result.rul.model_version,
        }
    ).encode()


@ray.remote(max_restarts=-1, max_task_retries=-1)
class HostActor:
    """A Ray actor hosting many machine twins (see the module docstring)."""

    def __init__(
        self,
        host_id: str,
        machines: list[str],
        nats_url: str,
        models: dict[str, bytes] | None = None,
        config: dict[str, Any] | None = None,
        checkpoint_every_s: float = 30.0,
        fetch_batch: int = 256,
        handles_unknown: bool = False,
        fleet: list[str] | None = None,
        state_every_s: float = 15.0,
        gateway_sites: dict[str, list[str]] | None = None,
    ) -> None:
        """``gateway_sites``: the registered gateways' sites (gateway id -> sites), so a
        batch naming a gateway is applied only on its sites' subjects (see
        :class:`~actors.ingest.StreamIngest`)."""
        self.host_id = host_id
        self.nats_url = nats_url
        self.checkpoint_every_s = float(checkpoint_every_s)
        self.fetch_batch = int(fetch_batch)
        self.state_every_s = float(state_every_s)
        self.handles_unknown = handles_unknown
        self.fleet = set(fleet or [])
        specs = [MachineSpec.model_validate_json(m) for m in machines]
        self.model_blobs = dict(models or {})
        self.config = dict(config or {})
        rul_models = {t: load_rul_model(b) for t, b in self.model_blobs.items()}
        self.host = MachineHost(specs, models=rul_models, config=TwinConfig(**(config or {})))
        self.ingest = StreamIngest(self.host, gateway_sites)
        # machine -> when it first changed since its last write (insertion-ordered)
        self.dirty_state: dict[str, float] = {}
        self.dirty_checkpoint: dict[str, float] = {}
        self.stopping = False
        self.started = time.time()
        self.restored = 0
        self.checkpoints_written = 0
        self.last_seq = 0
        self.phase = "created"
        self.errors = 0
        self.last_error: str | None = None
        self.counters: Counter[str] = Counter()  # fetch_errors (see bus.fetch)
        self._restored_once = False
        self.joined: dict[str, int] = {}  # stream position where a machine was added
        self._nc: Any = None

    # -- life ----------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        """Consume until :meth:`stop`. Restores from the checkpoints first (also after a
        restart of the process). An error on the way (NATS unreachable, a timeout) does
        not end the actor: it counts the error, waits, reconnects and goes on from the
        twins' own stream sequences (the twins in memory are the truth by then)."""
        import asyncio

        pause = 0.2
        while not self.stopping:
            began = time.monotonic()
            try:
                await self._consume()
            except Exception as exc:  # keep the machines alive whatever the bus does
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.phase = "recovering"
                with contextlib.suppress(Exception):
                    await self._nc.close()
                if time.monotonic() - began > 30.0:
                    pause = 0.2  # it had been working: this is a new outage
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        return await self.stats()

    async def _consume(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        self.phase = "connecting"
        self._nc = nc = await nats.connect(
            nats_url_on_node(self.nats_url),  # the password is read on this node
            max_reconnect_attempts=-1,
            inbox_prefix=_inbox(f"host-{self.host_id}"),
        )
        js = nc.jetstream()
        checkpoints, twins_kv = await ensure_jetstream(js)
        self._checkpoints, self._twins_kv = checkpoints, twins_kv
        if not self._restored_once:
            self.phase = "restoring"
            keys = await _keys(checkpoints)
            await self._load_membership(checkpoints, keys)
            await self._restore(checkpoints, keys)
            self._restored_once = True
        start = min(self.ingest.sequence.values(), default=0) + 1
        durable = f"host-{self.host_id}"
        with contextlib.suppress(NotFoundError):  # start again from the twins' sequences
            await js.delete_consumer(STREAM, durable)
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=durable,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=AckPolicy.ALL,
                filter_subject=subjects.TELEMETRY_ALL,
                max_ack_pending=20_000,
            ),
        )
        sub = await js.pull_subscribe_bind(durable, stream=STREAM)
        self.phase = "consuming"
        while not self.stopping:
            msgs = await fetch(sub, self.fetch_batch, 0.2, name=durable, counters=self.counters)
            for msg in msgs:
                meta = msg.metadata
                self.last_seq = meta.sequence.stream
                machine = machine_of(msg.subject)
                theirs = machine is not None and not self.ingest.holds(machine)
                if theirs and not (self.handles_unknown and machine not in self.fleet):
                    continue  # another host's machine
                delivery = Delivery(
                    seq=meta.sequence.stream,
                    subject=msg.subject,
                    data=msg.data,
                    stored_ms=int(meta.timestamp.timestamp() * 1000),
                    msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
                )
                await self._publish(delivery, self.ingest.process(delivery))
            if msgs:
                await msgs[-1].ack()
            await self._write_due(FLUSH_BUDGET_S)
        self.phase = "stopping"
        await self._store_states()
        await self.checkpoint()
        await nc.flush()  # everything published is out; draining a pull subscription
        await nc.close()  # would wait for its drain timeout (30 s) instead
        self.phase = "stopped"

    async def _restore(self, checkpoints: Any, present: set[str]) -> None:
        """Every held twin that has a checkpoint comes back from it (one read per
        checkpoint that exists)."""
        from nats.js.errors import KeyNotFoundError

        for machine_id, twin in self.host.twins.items():
            if machine_id not in present:
                continue
            try:
                entry = await checkpoints.get(machine_id)
            except KeyNotFoundError:
                continue
            if entry.value is None:
                continue
            seq, snapshot = unpack_checkpoint(entry.value)
            twin.restore(snapshot)
            self.ingest.sequence[machine_id] = seq
            self.restored += 1

    async def _publish(self, delivery: Delivery, out: Processed) -> None:
        nc = self._nc
        for letter in out.dead_letters:
            await nc.publish(subjects.dead_letter(letter.gateway_id or "unknown"), letter.to_json())
        result, machine = out.result, out.machine_id
        if result is None or machine is None:
            return
        twin = self.host.twins[machine]
        await nc.publish(subjects.twin(machine), twin_event(machine, delivery.seq, result, twin))
        for record in result.anomalies:
            await nc.publish(subjects.anomaly(machine), record.model_dump_json().encode())
        if result.rul is not None:
            await nc.publish(subjects.rul(machine), result.rul.model_dump_json().encode())
        now = time.monotonic()
        self.dirty_state.setdefault(machine, now)
        self.dirty_checkpoint.setdefault(machine, now)

    async def _write_due(self, budget_s: float) -> None:
        """Write states and checkpoints that are due, oldest first, for at most
        ``budget_s`` each in this loop turn (so writing thousands of them never stalls ingest)."""
        for dirty, every, write in (
            (self.dirty_checkpoint, self.checkpoint_every_s, self._write_checkpoint),
            (self.dirty_state, self.state_every_s, self._write_state),
        ):
            start = time.monotonic()
            while dirty:
                machine, since = next(iter(dirty.items()))
                now = time.monotonic()
                if now - since < every or now - start > budget_s:
                    break
                del dirty[machine]
                await write(machine)

    async def _write_state(self, machine: str) -> None:
        twin = self.host.twins.get(machine)
        if twin is not None:
            await self._twins_kv.put(machine, twin.state().model_dump_json().encode())

    async def _write_checkpoint(self, machine: str) -> None:
        twin = self.host.twins.get(machine)
        if twin is not None:
            value = pack_checkpoint(self.ingest.sequence[machine], twin.snapshot())
            await self._checkpoints.put(machine, value)
            self.checkpoints_written += 1

    async def _store_states(self) -> None:
        for machine in list(self.dirty_state):
            await self._write_state(machine)
        self.dirty_state.clear()

    async def checkpoint(self) -> int:
        """Write the changed twins' checkpoints now; returns how many."""
        machines = list(self.dirty_checkpoint)
        for machine in machines:
            await self._write_checkpoint(machine)
        self.dirty_checkpoint.clear()
        return len(machines)

    async def stop(self) -> None:
        self.stopping = True

    # -- queries and changes -------------------------------------------------------------
    async def pid(self) -> int:
        return os.getpid()

    async def stats(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "phase": self.phase,
            "errors": self.errors,
            "last_error": self.last_error,
            FETCH_ERRORS: self.counters[FETCH_ERRORS],
            "machines": len(self.host.twins),
            "last_seq": self.last_seq,
            "restored": self.restored,
            "checkpoints_written": self.checkpoints_written,
            **self.ingest.counters(),
        }

    async def snapshot(self, machine_id: str) -> bytes:
        return self.host.twins[machine_id].snapshot()

    async def state(self, machine_id: str) -> tuple[str, int]:
        """The twin's full state now (JSON) and the stream sequence it covers: the
        consistent read, as of every message this host has applied."""
        twin = self.host.twins[machine_id]
        return twin.state().model_dump_json(), self.ingest.sequence.get(machine_id, 0)

    async def clone_source(self, machine_id: str) -> tuple[str, bytes, bytes | None, dict]:
        """What a clone of the machine starts from: its spec (JSON), a snapshot, its type's
        RUL model (bytes, None if it has none) and the twin configuration."""
        twin = self.host.twins[machine_id]
        spec = twin.spec
        return spec.model_dump_json(), twin.snapshot(), self.model_blobs.get(spec.type), self.config

    async def record_repair(self, machine_id: str, failure_mode: str | None, at_ms: int) -> str:
        """A completed repair: the twin restarts that mode's age (its wear) and its
        condition trend. The state and the checkpoint are written at once, so a restarted
        host keeps the repair. Returns the twin's new state (JSON)."""
        twin = self.host.twins[machine_id]
        twin.record_repair(failure_mode, at_ms)
        await self._write_state(machine_id)
        await self._write_checkpoint(machine_id)
        return twin.state().model_dump_json()

    async def mark_false_positive(self, machine_id: str, sensor: str | None, at_ms: int) -> str:
        """People marked a condition false positive (``sensor``: the sensor's short name,
        None for a machine-level one): the twin stops alarming on it for the machine and
        its operating regime until it changes materially. The state and the checkpoint
        are written at once, like :meth:`record_repair`. Returns the twin's new state
        (JSON). An unknown machine raises ``KeyError``; what the twin refuses (an unknown
        sensor) its ``ValueError``."""
        twin = self.host.twins[machine_id]
        twin.mark_false_positive(sensor, at_ms)
        await self._write_state(machine_id)
        await self._write_checkpoint(machine_id)
        return twin.state().model_dump_json()

    async def sequences(self) -> dict[str, int]:
        return dict(self.ingest.sequence)

    async def add_machine(self, spec_json: str) -> None:
        spec = MachineSpec.model_validate_json(spec_json)
        self.host.add(spec)
        # A machine joins at the current position: earlier messages were not its to apply.
        self.ingest.sequence[spec.id] = self.last_seq
        self.joined[spec.id] = self.last_seq
        self.fleet.add(spec.id)
        await self._note_added(spec)

    async def remove_machine(self, machine_id: str) -> None:
        self.host.remove(machine_id)
        self.ingest.sequence.pop(machine_id, None)
        was_added = self.joined.pop(machine_id, None) is not None
        self.fleet.discard(machine_id)
        if self._nc is not None:
            await self._checkpoints.delete(machine_id)
        await self._note_removed(machine_id, was_added)

    # -- membership: which machines this host holds survives a restart --------------------
    # A restart re-runs the constructor with the original machine list; what changed at
    # runtime is kept per machine in the checkpoints bucket (one small key each, so no
    # value grows with the fleet) and read back first.
    def _member_key(self, change: str, machine_id: str) -> str:
        return f"{MEMBERSHIP_PREFIX}{self.host_id}.{change}.{machine_id}"

    async def _note_added(self, spec: MachineSpec) -> None:
        if getattr(self, "_checkpoints", None) is None:
            return
        doc = {"spec": spec.model_dump_json(), "joined": self.joined.get(spec.id, 0)}
        await self._checkpoints.put(self._member_key("added", spec.id), json.dumps(doc).encode())
        with contextlib.suppress(Exception):
            await self._checkpoints.delete(self._member_key("removed", spec.id))

    async def _note_removed(self, machine_id: str, was_added: bool) -> None:
        if getattr(self, "_checkpoints", None) is None:
            return
        if was_added:
            await self._checkpoints.delete(self._member_key("added", machine_id))
        else:
            await self._checkpoints.put(self._member_key("removed", machine_id), b"1")

    async def _load_membership(self, checkpoints: Any, keys: set[str]) -> None:
        from nats.js.errors import KeyNotFoundError

        mine = f"{MEMBERSHIP_PREFIX}{self.host_id}."
        for key in sorted(k for k in keys if k.startswith(mine)):
            change, machine_id = key[len(mine) :].split(".", 1)
            try:
                entry = await checkpoints.get(key)
            except KeyNotFoundError:
                continue
            if not entry.value:  # deleted
                continue
            if change == "removed" and machine_id in self.host.twins:
                self.host.remove(machine_id)
                self.ingest.sequence.pop(machine_id, None)
            elif change == "added" and machine_id not in self.host.twins:
                item = json.loads(entry.value)
                self.host.add(MachineSpec.model_validate_json(item["spec"]))
                self.ingest.sequence[machine_id] = int(item["joined"])
                self.joined[machine_id] = int(item["joined"])

    async def set_model(self, machine_type: str, blob: bytes) -> int:
        """Load a new RUL model version for a machine type without a restart."""
        self.model_blobs[machine_type] = blob
        return self.host.set_model(machine_type, load_rul_model(blob))

    async def set_fleet(self, fleet: list[str]) -> None:
        self.fleet = set(fleet)
