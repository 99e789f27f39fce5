"""The whole API stack, started once for the module: a real nats-server, the machine
actors on a local Ray, and the Serve application on a free port."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.auth import Authority, Role
from schemas.plant import MachineSpec, load_plant
from twinfleet.cli import _example_plant_path
from twinfleet.services import NatsServer, free_port

SECRET = "test-secret-" + "x" * 32
CONFIG = {"pca_fit_scans": 50, "zscore_warmup": 20, "rul_min_hours": 2.0, "rul_every_hours": 1.0}


@dataclass
class Stack:
    url: str
    nats_url: str
    machines: list[MachineSpec]
    authority: Authority
    fleet: Any
    secret: str = SECRET

    def token(self, role: Role | str, subject: str | None = None, **kw: Any) -> str:
        role = Role(role)
        return self.authority.issue(subject or f"{role.value}-user", role, **kw)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body or text) of a real HTTP request."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        h = {"content-type": "application/json", **(headers or {})}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, method=method, data=data, headers=h)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    @staticmethod
    def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
        return wait_for(condition, timeout_s, what)

    def graphql(self, query: str, token: str | None, variables: Any = None) -> tuple[int, Any]:
        return self.call("POST", "/graphql", {"query": query, "variables": variables}, token)


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def pick_machines() -> list[MachineSpec]:
    """Three machines of one site and one of another."""
    plant = load_plant(_example_plant_path())
    first = plant.machines[0].site
    here = [m for m in plant.machines if m.site == first][:3]
    there = [m for m in plant.machines if m.site != first][:1]
    return here + there


@pytest.fixture(scope="module")
def stack(
    local_ray: None,
    tmp_path_factory: pytest.TempPathFactory,
    toy_model: Callable[[MachineSpec, float], bytes],
) -> Iterator[Stack]:
    from ray import serve

    import serve_app
    from actors.fleet import Fleet

    machines = pick_machines()
    models = {m.type: toy_model(m, 0.1) for m in machines}
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")), port=free_port()).start()
    fleet = None
    try:
        fleet = Fleet(machines, server.url, config=CONFIG, models=models, name="api").start()
        fleet.wait_ready()
        settings = {
            "nats_url": server.url,
            "secret": SECRET,
            "fleet_name": "api",
            "rate_per_s": 20.0,
            "rate_burst": 40.0,
        }
        url = serve_app.deploy(settings, machines, port=free_port())
        s = Stack(url, server.url, machines, Authority(SECRET), fleet)
        wait_for(lambda: s.call("GET", "/api/v1/ready")[0] == 200, 60, "the API to be ready")
        yield s
    finally:
        serve.shutdown()
        if fleet is not None:
            fleet.stop()
        server.stop()
