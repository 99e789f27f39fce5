"""The actor graph as seen from any Ray process (an API replica, the driver): find a
machine's host through the fleet's named registry, read a twin consistently from its actor,
and make, use and retire clones.

Clones are listed in the registry (id -> actor name, machine, expiry), so a clone made through
one API replica can be used and retired through any other. A clone's actor belongs to the
process that made it (a replica or the driver): if that process ends, its clones end too;
they are sandboxes for what-if, and the registry then answers "gone".
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import ray

NAMESPACE = "twinfleet"
REGISTRY = "tf-registry"
HOST_PREFIX = "tf-host-"
CLONE_PREFIX = "tf-clone-"


class CloneGone(KeyError):
    """No such clone: never made, retired, expired, or its process ended."""


class CloneLimit(RuntimeError):
    """Making the clone would hold more clones than allowed (per user or in all)."""


class NotYourClone(PermissionError):
    """The clone belongs to another user."""


class FleetAccess:
    """Async access to the fleet named ``name`` (see the module docstring)."""

    def __init__(self, name: str = "fleet") -> None:
        self.name = name
        self._registry: Any = None
        self._hosts: dict[str, Any] = {}
        self._spare: Any = None
        # The clones this process made: a clone actor lives while its maker holds it.
        self._made: dict[str, Any] = {}

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = ray.get_actor(f"{REGISTRY}-{self.name}", namespace=NAMESPACE)
        return self._registry

    async def host_of(self, machine_id: str) -> Any:
        host = await self.registry.host_of.remote(machine_id)
        if host is None:
            raise KeyError(f"machine {machine_id!r} is not in the fleet")
        actor = self._hosts.get(host)
        if actor is None:
            actor = self._hosts[host] = ray.get_actor(HOST_PREFIX + host, namespace=NAMESPACE)
        return actor

    async def state(self, machine_id: str) -> tuple[str, int]:
        """The twin's full state from its actor (JSON) and the stream sequence it covers."""
        host = await self.host_of(machine_id)
        state, seq = await host.state.remote(machine_id)
        return str(state), int(seq)

    async def record_repair(self, machine_id: str, failure_mode: str | None, at_ms: int) -> str:
        """Tell the machine's twin a repair of ``failure_mode`` finished at ``at_ms``."""
        host = await self.host_of(machine_id)
        return str(await host.record_repair.remote(machine_id, failure_mode, at_ms))

    def keep_spare(self) -> None:
        """Start a clone actor now so that the next clone does not wait for a worker.
        It is named (``tf-clone-<hex>``): the registry lists clones by actor name, since
        passing it a handle would make it import the clone's code (1.5 s the first time)."""
        from actors.clone import CloneActor

        if self._spare is None:
            token = uuid.uuid4().hex[:12]
            actor = CloneActor.options(  # type: ignore[attr-defined]
                name=CLONE_PREFIX + token, namespace=NAMESPACE
            ).remote()
            self._spare = (token, actor)

    async def clone(
        self,
        machine_id: str,
        ttl_s: float = 900.0,
        *,
        owner: str = "",
        max_per_owner: int | None = None,
        max_total: int | None = None,
    ) -> dict[str, Any]:
        """An independent copy of the machine's twin in its own actor, held by ``owner``.
        :class:`CloneLimit` when ``owner`` already holds ``max_per_owner`` clones or all
        together ``max_total``."""
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        await self.expire_clones()
        host = await self.host_of(machine_id)
        self.keep_spare()
        (token, actor), self._spare = self._spare, None
        clone_id = f"{machine_id}-clone-{token}"
        expires_at = time.time() + ttl_s
        refused = await self.registry.add_clone.remote(
            clone_id, machine_id, expires_at, CLONE_PREFIX + token, owner, max_total, max_per_owner
        )
        if refused is not None:
            if self._spare is None:
                self._spare = (token, actor)  # still unused: the next clone takes it
            else:
                ray.kill(actor, no_restart=True)
            raise CloneLimit(str(refused))
        self.keep_spare()  # the next one
        try:
            spec_json, snapshot, model, config = await host.clone_source.remote(machine_id)
            await actor.load.remote(clone_id, spec_json, snapshot, model, config, ttl_s)
        except BaseException:
            await self.registry.drop_clone.remote(clone_id)
            ray.kill(actor, no_restart=True)
            raise
        self._made[clone_id] = actor
        return {"clone_id": clone_id, "machine_id": machine_id, "expires_at": expires_at}

    async def _entry(self, clone_id: str, owner: str | None) -> dict[str, Any]:
        """The clone's registry entry; ``owner`` (``None``: anyone) must have made it."""
        entry = await self.registry.clone_of.remote(clone_id)
        if entry is None:
            raise CloneGone(f"no clone {clone_id!r} (never made, retired or expired)")
        if owner is not None and entry.get("owner", "") != owner:
            raise NotYourClone(
                f"clone {clone_id!r} belongs to another user; only its maker or an admin "
                "may use or retire it"
            )
        return dict(entry)

    async def _clone_actor(self, clone_id: str, owner: str | None = None) -> Any:
        entry = await self._entry(clone_id, owner)
        actor = _named(entry["actor"])
        if actor is None:
            await self.registry.drop_clone.remote(clone_id)
            raise CloneGone(f"clone {clone_id!r} is gone (the process that made it ended)")
        return actor

    async def what_if(
        self, clone_id: str, request_json: str, owner: str | None = None
    ) -> dict[str, Any]:
        """Run a what-if request (:class:`schemas.whatif.WhatIfRequest` JSON) on a clone
        (of ``owner``, when given)."""
        from ray.exceptions import RayActorError

        actor = await self._clone_actor(clone_id, owner)
        try:
            return dict(await actor.what_if.remote(request_json))
        except RayActorError:
            await self.registry.drop_clone.remote(clone_id)
            raise CloneGone(
                f"clone {clone_id!r} is gone (the process that made it ended)"
            ) from None

    async def retire_clone(self, clone_id: str, owner: str | None = None) -> None:
        """Retire a clone (of ``owner``, when given)."""
        if owner is not None:
            await self._entry(clone_id, owner)
        entry = await self.registry.drop_clone.remote(clone_id)
        if entry is None:
            raise CloneGone(f"no clone {clone_id!r}")
        _kill(entry["actor"])
        self._made.pop(clone_id, None)

    async def expire_clones(self) -> list[str]:
        """Retire the clones whose time to live is over; returns their ids."""
        gone = await self.registry.expired_clones.remote(time.time())
        for entry in gone:
            _kill(entry["actor"])
        if self._made:  # let go of ours that any process retired
            listed = set(await self.registry.all_clones.remote())
            self._made = {c: a for c, a in self._made.items() if c in listed}
        return [entry["clone_id"] for entry in gone]

    async def retire_all(self) -> None:
        for entry in await self.registry.drop_all_clones.remote():
            _kill(entry["actor"])
        self._made.clear()
        if self._spare is not None:
            ray.kill(self._spare[1], no_restart=True)
            self._spare = None


def _named(name: str) -> Any:
    """The clone actor of that name, or None when it is gone."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def _kill(name: str) -> None:
    actor = _named(name)
    if actor is not None:
        ray.kill(actor, no_restart=True)
