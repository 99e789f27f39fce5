"""The fleet on Ray: a registry of which host holds which machine, and the hosts.

:class:`FleetRegistry` is a named, detached Ray actor (``tf-registry`` in the
``twinfleet`` namespace): the one place that knows the placement. :class:`Fleet` is what
the rest of the system uses: it starts the hosts (``machines_per_host`` machines each;
1 gives every machine its own Ray actor), records the placement, and routes calls for a
machine to its host. Nothing outside ``actors/`` sees hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ray

from actors.clone import CloneActor
from actors.host_actor import HostActor
from schemas.plant import MachineSpec

NAMESPACE = "twinfleet"
REGISTRY = "tf-registry"


@ray.remote(max_restarts=-1, max_task_retries=-1)
class FleetRegistry:
    """machine id -> host name, and host name -> machine ids."""

    def __init__(self) -> None:
        self.placement: dict[str, str] = {}

    def place(self, machine_id: str, host: str) -> None:
        self.placement[machine_id] = host

    def remove(self, machine_id: str) -> str | None:
        return self.placement.pop(machine_id, None)

    def host_of(self, machine_id: str) -> str | None:
        return self.placement.get(machine_id)

    def all(self) -> dict[str, str]:
        return dict(self.placement)


class Fleet:
    """Machine actors hosted on Ray, fed by JetStream (see the module docstring)."""

    def __init__(
        self,
        machines: Iterable[MachineSpec],
        nats_url: str,
        *,
        machines_per_host: int = 1000,
        models: Mapping[str, bytes] | None = None,
        config: Mapping[str, Any] | None = None,
        checkpoint_every_s: float = 30.0,
        state_every_s: float = 15.0,
        name: str = "fleet",
    ) -> None:
        if machines_per_host < 1:
            raise ValueError(f"machines_per_host must be at least 1, got {machines_per_host}")
        self.specs = {m.id: m for m in machines}
        self.nats_url = nats_url
        self.machines_per_host = int(machines_per_host)
        self.models = dict(models or {})
        self.config = dict(config or {})
        self.checkpoint_every_s = float(checkpoint_every_s)
        self.state_every_s = float(state_every_s)
        self.name = name
        self._arguments: dict[str, Any] = {}
        self.hosts: dict[str, Any] = {}
        self.runs: dict[str, Any] = {}
        self.registry: Any = None
        self.clones: dict[str, Any] = {}
        self._clone_count = 0
        self._spare_clone: Any = None

    def start(self) -> Fleet:
        self.registry = FleetRegistry.options(  # type: ignore[attr-defined]
            name=f"{REGISTRY}-{self.name}",
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
        ).remote()
        ids = list(self.specs)
        chunks = [
            ids[i : i + self.machines_per_host] for i in range(0, len(ids), self.machines_per_host)
        ] or [[]]
        for i, chunk in enumerate(chunks):
            self._start_host(f"{self.name}-{i}", chunk, handles_unknown=(i == 0))
        self._spare_clone = CloneActor.remote()  # type: ignore[attr-defined]  # kept warm
        return self

    def _start_host(self, host: str, machine_ids: list[str], handles_unknown: bool) -> None:
        # Large constructor arguments live in the object store; a restarted actor needs
        # them again, so the fleet keeps them referenced for the host's lifetime.
        machines = ray.put([self.specs[m].model_dump_json() for m in machine_ids])
        self._arguments[host] = machines
        actor = HostActor.options(  # type: ignore[attr-defined]
            name=f"tf-host-{host}", namespace=NAMESPACE
        ).remote(
            host,
            machines,
            self.nats_url,
            self.models,
            self.config,
            self.checkpoint_every_s,
            handles_unknown=handles_unknown,
            fleet=list(self.specs),
            state_every_s=self.state_every_s,
        )
        self.hosts[host] = actor
        self.runs[host] = actor.run.remote()
        ray.get([self.registry.place.remote(m, host) for m in machine_ids])

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until every host is consuming its stream (restored and subscribed)."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            phases = {s["host_id"]: s["phase"] for s in self.stats()}
            if all(p == "consuming" for p in phases.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"hosts not consuming after {timeout_s} s: {phases}")
            time.sleep(0.1)

    def host_of(self, machine_id: str) -> Any:
        host = ray.get(self.registry.host_of.remote(machine_id))
        if host is None:
            raise KeyError(f"machine {machine_id!r} is not in the fleet")
        return self.hosts[host]

    # -- runtime changes -----------------------------------------------------------------
    def add_machine(self, spec: MachineSpec) -> None:
        """Add a machine at runtime (to the host with the fewest machines, or a new one)."""
        if spec.id in self.specs:
            raise ValueError(f"machine {spec.id!r} is already in the fleet")
        self.specs[spec.id] = spec
        counts = dict.fromkeys(self.hosts, 0)
        for host in ray.get(self.registry.all.remote()).values():
            counts[host] = counts.get(host, 0) + 1
        host = min(counts, key=counts.__getitem__) if counts else None
        if host is None or counts[host] >= self.machines_per_host:
            self._start_host(f"{self.name}-{len(self.hosts)}", [spec.id], handles_unknown=False)
        else:
            ray.get(self.hosts[host].add_machine.remote(spec.model_dump_json()))
            ray.get(self.registry.place.remote(spec.id, host))
        self._tell_fleet()

    def remove_machine(self, machine_id: str) -> None:
        host = ray.get(self.registry.remove.remote(machine_id))
        if host is None:
            raise KeyError(f"machine {machine_id!r} is not in the fleet")
        ray.get(self.hosts[host].remove_machine.remote(machine_id))
        del self.specs[machine_id]
        self._tell_fleet()

    def _tell_fleet(self) -> None:
        ray.get([h.set_fleet.remote(list(self.specs)) for h in self.hosts.values()])

    def set_model(self, machine_type: str, blob: bytes) -> int:
        """Every host loads the new model version now; returns the twins that took it."""
        self.models[machine_type] = blob
        return int(
            sum(ray.get([h.set_model.remote(machine_type, blob) for h in self.hosts.values()]))
        )

    # -- clones and what-if --------------------------------------------------------------
    def clone(self, machine_id: str, ttl_s: float = 900.0) -> str:
        """An independent copy of a machine's twin in its own Ray actor; returns its id."""
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.expire_clones()
        snapshot = self.snapshot(machine_id)
        spec = self.specs[machine_id]
        self._clone_count += 1
        clone_id = f"{machine_id}-clone-{self._clone_count}"
        actor = self._spare_clone or CloneActor.remote()  # type: ignore[attr-defined]
        self._spare_clone = CloneActor.remote()  # type: ignore[attr-defined]  # the next one
        ray.get(
            actor.load.remote(
                clone_id,
                spec.model_dump_json(),
                snapshot,
                self.models.get(spec.type),
                self.config,
                ttl_s,
            )
        )
        self.clones[clone_id] = actor
        return clone_id

    def what_if(self, clone_id: str, request_json: str) -> dict[str, Any]:
        """Run a what-if request (:class:`schemas.whatif.WhatIfRequest` as JSON) on a clone."""
        actor = self.clones.get(clone_id)
        if actor is None:
            raise KeyError(f"no clone {clone_id!r} (never made, retired or expired)")
        return dict(ray.get(actor.what_if.remote(request_json)))

    def retire_clone(self, clone_id: str) -> None:
        actor = self.clones.pop(clone_id, None)
        if actor is None:
            raise KeyError(f"no clone {clone_id!r}")
        ray.kill(actor, no_restart=True)

    def expire_clones(self) -> list[str]:
        """Remove the clones whose time to live is over; returns their ids."""
        gone = [c for c, a in list(self.clones.items()) if ray.get(a.expired.remote())]
        for clone_id in gone:
            self.retire_clone(clone_id)
        return gone

    # -- queries -------------------------------------------------------------------------
    def snapshot(self, machine_id: str) -> bytes:
        return bytes(ray.get(self.host_of(machine_id).snapshot.remote(machine_id)))

    def stats(self) -> list[dict[str, Any]]:
        return list(ray.get([h.stats.remote() for h in self.hosts.values()]))

    def stop(self) -> list[dict[str, Any]]:
        """Stop consuming, write final checkpoints; returns each host's statistics."""
        ray.get([h.stop.remote() for h in self.hosts.values()])
        results = ray.get(list(self.runs.values()))
        spare = [self._spare_clone] if self._spare_clone is not None else []
        for h in [*self.hosts.values(), *self.clones.values(), *spare]:
            ray.kill(h, no_restart=True)
        self.clones.clear()
        self._spare_clone = None
        if self.registry is not None:
            ray.kill(self.registry, no_restart=True)
        return list(results)
