"""From a JetStream message to the twins, exactly once (pure: no I/O).

Every telemetry message read from the stream has a stream sequence number. Each machine
remembers the sequence of the last message applied to it, and that number is part of its
checkpoint, so a message delivered again (a redelivery, or the replay after a restart from
a checkpoint) is recognised and skipped: its effect on the twin happens once. A message
republished by a gateway never reaches the stream twice (JetStream drops a repeated
``Nats-Msg-Id`` within the stream's duplicate window).

Messages are validated with the time JetStream stored them as "now", so a replay decides
exactly as the first delivery did. Whatever is refused becomes a :class:`DeadLetter` with
the reason, counted per machine and per gateway:

* the whole message: not a telemetry batch (malformed JSON, NaN/inf, future timestamps,
  too many readings...), or a subject that is not a machine's telemetry subject;
* the whole message, when it travels outside its site (issue 18): NATS permissions hold
  a gateway to its own sites' subjects, but the message itself must agree with its
  subject: the machine must be of the subject's site, the batch must be of that site, a
  message id scoped to a gateway (``<gateway>:...``) must be the batch's gateway's, and
  a gateway the hub knows (``gateway_sites``) must be registered for that site;
* single readings: for another machine than the subject's, for a machine or sensor this
  host does not hold, duplicates and out-of-order (late) readings (the twin's rules).

>>> from schemas.plant import MachineSpec, SensorSpec
>>> from actors.host import MachineHost
>>> spec = MachineSpec(id="M-1", type="motor", kind="motor", site="s1", line="l",
...     sensors=[SensorSpec(name="rpm", kind="speed", unit="rpm")])
>>> ingest = StreamIngest(MachineHost([spec]))
>>> body = (b'{"gateway_id": "gw", "site_id": "s1", "batch_id": "b1", "sent_at": 1700000000000,'
...         b' "readings": {"machine_id": ["M-1"], "sensor_id": ["M-1.rpm"],'
...         b' "timestamp": [1700000000000], "value": [1480.0]}}')
>>> out = ingest.process(Delivery(7, "tf.telemetry.s1.M-1", body, 1700000000000))
>>> out.result.applied, ingest.sequence["M-1"]
(1, 7)
>>> ingest.process(Delivery(7, "tf.telemetry.s1.M-1", body, 1700000000000)).skipped
True
>>> bad = ingest.process(Delivery(8, "tf.telemetry.s1.M-1", b"{oops", 1700000000000))
>>> bad.dead_letters[0].reason.startswith("not a telemetry batch")
True
>>> elsewhere = ingest.process(Delivery(9, "tf.telemetry.s2.M-1", body, 1700000000000))
>>> elsewhere.result is None, elsewhere.dead_letters[0].reason
(True, "machine 'M-1' is at site 's1', not at the subject's site 's2'")
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from actors.host import MachineHost, _subset
from schemas.subjects import PREFIX, telemetry_address
from schemas.telemetry import TelemetryBatch, scope_error
from twins.machine import ApplyResult

_TELEMETRY = f"{PREFIX}.telemetry."


@dataclass(frozen=True)
class Delivery:
    """One message as read from the stream."""

    seq: int
    subject: str
    data: bytes
    stored_ms: int
    msg_id: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    """Something refused, with the reason (published on the dead-letter subject)."""

    reason: str
    subject: str
    seq: int
    msg_id: str | None
    gateway_id: str | None = None
    machine_id: str | None = None
    reading: int | None = None
    """Index of the reading in the batch; None when the whole message is refused."""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()


@dataclass
class Processed:
    machine_id: str | None = None
    result: ApplyResult | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)
    skipped: bool = False
    """True when the message had been applied already (redelivery or replay)."""


def machine_of(subject: str) -> str | None:
    """The machine a telemetry subject names (``tf.telemetry.<site>.<machine>``)."""
    if not subject.startswith(_TELEMETRY):
        return None
    tokens = subject[len(_TELEMETRY) :].split(".")
    return tokens[1] if len(tokens) == 2 and all(tokens) else None


class StreamIngest:
    """Applies stream messages to a :class:`MachineHost`'s twins once each."""

    def __init__(
        self, host: MachineHost, gateway_sites: Mapping[str, Collection[str]] | None = None
    ) -> None:
        """``gateway_sites``: the registered gateways' sites (gateway id -> sites); a
        batch naming one of them is taken only on its sites' subjects. Other sources
        (the hub's own: HTTP, MQTT) are held to the subject's site only."""
        self.host = host
        self.gateway_sites = {g: frozenset(s) for g, s in (gateway_sites or {}).items()}
        self.sequence: dict[str, int] = dict.fromkeys(host.twins, 0)
        self.rejected_by_machine: Counter[str] = Counter()
        self.rejected_by_gateway: Counter[str] = Counter()
        self.messages = 0
        self.skipped = 0

    def holds(self, machine_id: str) -> bool:
        return machine_id in self.host.twins

    def process(self, delivery: Delivery) -> Processed:
        machine = machine_of(delivery.subject)
        out = Processed(machine_id=machine)
        if machine is None:
            self._refuse(
                out,
                delivery,
                f"subject {delivery.subject!r} is not a machine's "
                f"telemetry subject ({_TELEMETRY}<site>.<machine>)",
            )
            return out
        if delivery.seq <= self.sequence.get(machine, 0):
            out.skipped = True
            self.skipped += 1
            return out
        self.messages += 1
        if machine in self.sequence:
            self.sequence[machine] = delivery.seq
        try:
            batch = TelemetryBatch.model_validate_json(
                delivery.data, context={"now_ms": delivery.stored_ms}
            )
        except ValidationError as exc:
            self._refuse(out, delivery, f"not a telemetry batch: {_summary(exc)}", machine)
            return out
        if not self.holds(machine):
            self._refuse(
                out,
                delivery,
                f"unknown machine {machine!r}: no twin of it is held",
                machine,
                batch.gateway_id,
            )
            return out
        outside = self._outside(delivery, machine, batch)
        if outside is not None:
            self._refuse(out, delivery, outside, machine, batch.gateway_id)
            return out
        machines = np.asarray(batch.readings.machine_id)
        foreign = np.flatnonzero(machines != machine)
        if foreign.size:
            for i in foreign.tolist():
                self._refuse(
                    out,
                    delivery,
                    f"reading for machine {machines[i]!r} on the subject of {machine!r}",
                    machine,
                    batch.gateway_id,
                    i,
                )
            own = np.flatnonzero(machines == machine)
            if not own.size:
                return out
            batch = _subset(batch, own)
            index = own
        else:
            index = np.arange(len(machines))
        result = self.host.twins[machine].apply(batch)
        out.result = result
        for r in result.rejected:
            self._refuse(out, delivery, r.reason, machine, batch.gateway_id, int(index[r.index]))
        dup = result.duplicates
        if dup or result.late:
            for i in result.late:
                self._refuse(
                    out,
                    delivery,
                    "late: older than the sensor's last applied reading",
                    machine,
                    batch.gateway_id,
                    int(index[i]),
                )
            if dup:
                self._refuse(
                    out, delivery, f"{dup} duplicate reading(s) dropped", machine, batch.gateway_id
                )
        return out

    def _outside(self, delivery: Delivery, machine: str, batch: TelemetryBatch) -> str | None:
        """Why a held machine's batch does not belong on its subject (None if it does)."""
        address = telemetry_address(delivery.subject)
        if address is None:  # machine_of() took it: a token no identifier can be
            return f"subject {delivery.subject!r} names no site and machine"
        site = address[0]
        home = self.host.twins[machine].spec.site
        if home != site:
            return f"machine {machine!r} is at site {home!r}, not at the subject's site {site!r}"
        why = scope_error(site, batch.site_id, batch.gateway_id, delivery.msg_id)
        if why is not None:
            return why
        sites = self.gateway_sites.get(batch.gateway_id)
        if sites is not None and site not in sites:
            return f"gateway {batch.gateway_id!r} is not registered for site {site!r}"
        return None

    def _refuse(
        self,
        out: Processed,
        delivery: Delivery,
        reason: str,
        machine: str | None = None,
        gateway: str | None = None,
        reading: int | None = None,
    ) -> None:
        out.dead_letters.append(
            DeadLetter(
                reason, delivery.subject, delivery.seq, delivery.msg_id, gateway, machine, reading
            )
        )
        self.rejected_by_machine[machine or "?"] += 1
        self.rejected_by_gateway[gateway or "?"] += 1

    def counters(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "skipped_already_applied": self.skipped,
            "rejected_by_machine": dict(self.rejected_by_machine),
            "rejected_by_gateway": dict(self.rejected_by_gateway),
        }


def _summary(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "message"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
