"""A clone of a machine's twin in its own Ray actor, for what-if simulations.

A clone starts from a snapshot of the live twin and is never fed live data, so nothing
done to it reaches the live twin. It answers what-if requests
(:func:`twins.whatif.what_if`) and expires ``ttl_s`` after it was made: after that it
refuses requests, and :meth:`actors.fleet.Fleet.expire_clones` removes its actor.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray

from schemas.plant import MachineSpec
from schemas.whatif import WhatIfRequest
from twins.machine import MachineTwin, TwinConfig
from twins.rul import load_rul_model
from twins.whatif import scenario_of, what_if


class CloneExpired(RuntimeError):
    """The clone's time to live is over."""


@ray.remote(max_restarts=0)
class CloneActor:
    """Started empty (the fleet keeps one warm, since starting a Ray worker process takes
    a second or more on a small machine), then :meth:`load` makes it a clone."""

    def __init__(self) -> None:
        self.clone_id = ""
        self.expires_at = 0.0

    def load(
        self,
        clone_id: str,
        spec_json: str,
        snapshot: bytes,
        model: bytes | None,
        config: dict[str, Any],
        ttl_s: float,
    ) -> None:
        spec = MachineSpec.model_validate_json(spec_json)
        self.clone_id = clone_id
        self.twin = MachineTwin(
            spec,
            rul_model=None if model is None else load_rul_model(model),
            config=TwinConfig(**config),
        )
        self.twin.restore(snapshot)
        self.expires_at = time.time() + float(ttl_s)

    def _check(self) -> None:
        if time.time() >= self.expires_at:
            raise CloneExpired(f"clone {self.clone_id} has expired")

    def what_if(self, request_json: str) -> dict[str, Any]:
        """Project the clone under a :class:`~schemas.whatif.WhatIfRequest` (JSON)."""
        self._check()
        request = WhatIfRequest.model_validate_json(request_json)
        started = time.perf_counter()
        result = what_if(
            self.twin,
            scenario_of(request),
            horizon_hours=request.horizon_days * 24.0,
            n_paths=request.paths,
            seed=request.seed,
        )
        out = dataclasses.asdict(result)
        out["scenario"] = request.model_dump(mode="json")
        out["clone_id"] = self.clone_id
        out["seconds"] = time.perf_counter() - started
        return out

    def snapshot(self) -> bytes:
        self._check()
        return self.twin.snapshot()

    def expired(self) -> bool:
        return time.time() >= self.expires_at
