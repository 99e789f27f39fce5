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

from actors.access import HOST_PREFIX, NAMESPACE, REGISTRY, FleetAccess
from actors.host_actor import HostActor
from schemas.plant import MachineSpec


@ray.remote(max_restarts=-1, max_task_retries=-1)
class FleetRegistry:
    """machine id -> host name, and the clones: id -> actor name, machine, expiry."""

    def __init__(self) -> None:
        self.placement: dict[str, str] = {}
        # clone id -> {clone_id, machine_id, expires_at, actor: the clone actor's name,
        # owner: who made it ("" for the driver)}
        self.clones: dict[str, dict[str, Any]] = {}

    def place(self, machine_id: str, host: str) -> None:
        self.placement[machine_id] = host

    def remove(self, machine_id: str) -> str | None:
        return self.placement.pop(machine_id, None)

    def host_of(self, machine_id: str) -> str | None:
        return self.placement.get(machine_id)

    def all(self) -> dict[str, str]:
        return dict(self.placement)

    def add_clone(
        self,
        clone_id: str,
        machine_id: str,
        expires_at: float,
        actor: str,
        owner: str = "",
        max_total: int | None = None,
        max_per_owner: int | None = None,
    ) -> str | None:
        """List a clone of ``owner``; or, when that would hold more clones than
        ``max_per_owner`` for the owner or ``max_total`` in all, list nothing and return
        why (the check and the listing are one step: the registry is the one place)."""
        held = sum(1 for e in self.clones.values() if e.get("owner") == owner)
        if owner and max_per_owner is not None and held >= max_per_owner:
            return (
                f"{owner} holds {held} clones, the most one user may hold "
                f"({max_per_owner}); retire one first"
            )
        if max_total is not None and len(self.clones) >= max_total:
            return (
                f"{len(self.clones)} clones are held, the most there may be ({max_total}); "
                "retire one or wait for one to expire"
            )
        self.clones[clone_id] = {
            "clone_id": clone_id,
            "machine_id": machine_id,
            "expires_at": expires_at,
            "actor": actor,
            "owner": owner,
        }
        return None

    def clone_of(self, clone_id: str) -> dict[str, Any] | None:
        return self.clones.get(clone_id)

    def drop_clone(self, clone_id: str) -> dict[str, Any] | None:
        return self.clones.pop(clone_id, None)

    def expired_clones(self, now: float) -> list[dict[str, Any]]:
        gone = [c for c, e in self.clones.items() if e["expires_at"] <= now]
        return [self.clones.pop(c) for c in gone]

    def all_clones(self) -> list[str]:
        return list(self.clones)

    def drop_all_clones(self) -> list[dict[str, Any]]:
        entries = list(self.clones.values())
        self.clones.clear()
        return entries


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
        gateway_sites: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """``gateway_sites``: the registered gateways' sites, so the hosts apply a batch
        naming one of them only on its sites' subjects (:class:`actors.ingest.StreamIngest`)."""
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
        self.gateway_sites = {g: list(s) for g, s in (gateway_sites or {}).items()}
        self._arguments: dict[str, Any] = {}
        self.hosts: dict[str, Any] = {}
        self.runs: dict[str, Any] = {}
        self.registry: Any = None
        self.access = FleetAccess(name)

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
        self.access.keep_spare()  # a warm clone actor: a new Ray worker takes seconds
        return self

    def _start_host(self, host: str, machine_ids: list[str], handles_unknown: bool) -> None:
        # Large constructor arguments live in the object store; a restarted actor needs
        # them again, so the fleet keeps them referenced for the host's lifetime.
        machines = ray.put([self.specs[m].model_dump_json() for m in machine_ids])
        self._arguments[host] = machines
        actor = HostActor.options(  # type: ignore[attr-defined]
            name=HOST_PREFIX + host, namespace=NAMESPACE
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
            gateway_sites=self.gateway_sites,
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

    # -- clones and what-if (the same code the API replicas use: actors.access) ----------
    def _run(self, call: Any) -> Any:
        import asyncio

        return asyncio.run(call)

    def clone(self, machine_id: str, ttl_s: float = 900.0) -> str:
        """An independent copy of a machine's twin in its own Ray actor; returns its id."""
        if machine_id not in self.specs:
            raise KeyError(f"machine {machine_id!r} is not in the fleet")
        return str(self._run(self.access.clone(machine_id, ttl_s))["clone_id"])

    def what_if(self, clone_id: str, request_json: str) -> dict[str, Any]:
        """Run a what-if request (:class:`schemas.whatif.WhatIfRequest` as JSON) on a clone."""
        return dict(self._run(self.access.what_if(clone_id, request_json)))

    def retire_clone(self, clone_id: str) -> None:
        self._run(self.access.retire_clone(clone_id))

    def expire_clones(self) -> list[str]:
        """Remove the clones whose time to live is over; returns their ids."""
        return list(self._run(self.access.expire_clones()))

    def clone_ids(self) -> list[str]:
        return sorted(ray.get(self.registry.all_clones.remote()))

    # -- queries -------------------------------------------------------------------------
    def snapshot(self, machine_id: str) -> bytes:
        return bytes(ray.get(self.host_of(machine_id).snapshot.remote(machine_id)))

    def stats(self) -> list[dict[str, Any]]:
        return list(ray.get([h.stats.remote() for h in self.hosts.values()]))

    def stop(self) -> list[dict[str, Any]]:
        """Stop consuming, write final checkpoints; returns each host's statistics."""
        ray.get([h.stop.remote() for h in self.hosts.values()])
        results = ray.get(list(self.runs.values()))
        self._run(self.access.retire_all())
        for h in self.hosts.values():
            ray.kill(h, no_restart=True)
        if self.registry is not None:
            ray.kill(self.registry, no_restart=True)
        return list(results)
