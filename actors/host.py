"""A host that runs many machine twins, each as an actor with its own ordered mailbox.

Ray runs each actor as a whole process (about 48 MB each), so one Ray actor per machine
stops at about a hundred machines per node (see ARCHITECTURE.md). A ``MachineHost`` holds a
partition of the fleet instead and gives every machine actor semantics inside it: an
identity, private state (its :class:`~twins.machine.MachineTwin`) and messages handled one
at a time, in arrival order. This class is the body of the Ray host actor; it does no I/O.

Batches that mix machines are split per machine (the columns are sliced, not
re-validated); readings for machines this host does not hold are rejected with a reason.

>>> from schemas.plant import MachineSpec, SensorSpec
>>> from schemas.telemetry import TelemetryBatch
>>> spec = MachineSpec(id="M-1", type="motor", kind="motor", site="s", line="l",
...     sensors=[SensorSpec(name="rpm", kind="speed", unit="rpm")])
>>> host = MachineHost([spec])
>>> batch = TelemetryBatch.model_validate({"gateway_id": "g", "site_id": "s", "batch_id": "1",
...     "sent_at": 1_700_000_000_000, "readings": {"machine_id": ["M-1", "M-9"],
...     "sensor_id": ["M-1.rpm", "M-9.rpm"], "timestamp": [1_700_000_000_000] * 2,
...     "value": [1480.0, 1490.0]}}, context={"now_ms": 1_700_000_000_000})
>>> outcome = host.apply(batch)
>>> outcome.results["M-1"].applied, outcome.rejected
(1, [(1, "machine 'M-9' is not held by this host")])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from schemas.plant import MachineSpec
from schemas.telemetry import ReadingColumns, TelemetryBatch
from twins.machine import ApplyResult, MachineTwin, TwinConfig
from twins.rul import RulModel


@dataclass
class HostOutcome:
    """Per-machine results of one batch, plus readings no machine here could take."""

    results: dict[str, ApplyResult] = field(default_factory=dict)
    rejected: list[tuple[int, str]] = field(default_factory=list)


class MachineHost:
    """Runs the twins of a partition of the fleet."""

    def __init__(
        self,
        machines: Iterable[MachineSpec],
        models: Mapping[str, RulModel] | None = None,
        config: TwinConfig | None = None,
    ) -> None:
        self.models: dict[str, RulModel] = dict(models or {})
        self.config = config or TwinConfig()
        self.twins: dict[str, MachineTwin] = {}
        for spec in machines:
            self.add(spec)

    def add(self, spec: MachineSpec) -> MachineTwin:
        if spec.id in self.twins:
            raise ValueError(f"machine {spec.id!r} is already held by this host")
        twin = MachineTwin(spec, rul_model=self.models.get(spec.type), config=self.config)
        self.twins[spec.id] = twin
        return twin

    def remove(self, machine_id: str) -> MachineTwin:
        try:
            return self.twins.pop(machine_id)
        except KeyError:
            raise KeyError(f"machine {machine_id!r} is not held by this host") from None

    def set_model(self, machine_type: str, model: RulModel) -> int:
        """Hand a new model version to every twin of ``machine_type``; returns how many."""
        self.models[machine_type] = model
        count = 0
        for twin in self.twins.values():
            if twin.spec.type == machine_type:
                twin.set_rul_model(model)
                count += 1
        return count

    def apply(self, batch: TelemetryBatch) -> HostOutcome:
        """Deliver a batch: each machine's readings to its twin, in order."""
        outcome = HostOutcome()
        machines = batch.readings.machine_id
        if not machines:
            return outcome
        first = machines[0]
        if machines.count(first) == len(machines):  # the common case: one machine
            self._deliver(first, batch, np.arange(len(machines)), outcome)
            return outcome
        arr = batch.readings.arrays()
        for machine in dict.fromkeys(machines):
            rows = np.flatnonzero(arr.machine_id == machine)
            self._deliver(machine, _subset(batch, rows), rows, outcome)
        return outcome

    def _deliver(
        self, machine: str, batch: TelemetryBatch, rows: np.ndarray, outcome: HostOutcome
    ) -> None:
        twin = self.twins.get(machine)
        if twin is None:
            reason = f"machine {machine!r} is not held by this host"
            outcome.rejected.extend((int(i), reason) for i in rows)
            return
        outcome.results[machine] = twin.apply(batch)

    def tick(self, now_ms: int) -> dict[str, ApplyResult]:
        """Let time pass for every twin (finds stale sensors)."""
        return {m: t.tick(now_ms) for m, t in self.twins.items()}


def _subset(batch: TelemetryBatch, rows: np.ndarray) -> TelemetryBatch:
    """The batch restricted to ``rows`` (already validated: sliced, not re-checked)."""
    r = batch.readings
    pick = rows.tolist()
    cols = ReadingColumns.model_construct(
        machine_id=[r.machine_id[i] for i in pick],
        sensor_id=[r.sensor_id[i] for i in pick],
        timestamp=[r.timestamp[i] for i in pick],
        value=[r.value[i] for i in pick],
        quality=[r.quality[i] for i in pick] if r.quality else [],
    )
    return batch.model_copy(update={"readings": cols, "anomalies": [], "aggregates": None})
