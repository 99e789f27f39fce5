"""The whole API stack, started once for the module: a real nats-server, the machine
actors on a local Ray, and the Serve application on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.app import Services, Settings, create_app, start_services
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


@contextlib.contextmanager
def serve_stack(
    tmp_path_factory: pytest.TempPathFactory,
    toy_model: Callable[[MachineSpec, float], bytes],
    machines: list[MachineSpec],
    name: str,
    **settings: Any,
) -> Iterator[Stack]:
    """A nats-server, the fleet of ``machines`` on Ray and the API on Ray Serve with
    ``settings`` (beside the NATS URL, the secret and the fleet's name); all stopped after."""
    from ray import serve

    import serve_app
    from actors.fleet import Fleet

    models = {m.type: toy_model(m, 0.1) for m in machines}
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")), port=free_port()).start()
    fleet = None
    try:
        fleet = Fleet(machines, server.url, config=CONFIG, models=models, name=name).start()
        fleet.wait_ready()
        base = {"nats_url": server.url, "secret": SECRET, "fleet_name": name}
        url = serve_app.deploy({**base, **settings}, machines, port=free_port())
        s = Stack(url, server.url, machines, Authority(SECRET), fleet)
        wait_for(lambda: s.call("GET", "/api/v1/ready")[0] == 200, 60, "the API to be ready")
        yield s
    finally:
        serve.shutdown()
        if fleet is not None:
            fleet.stop()
        server.stop()


@pytest.fixture(scope="module")
def stack(
    local_ray: None,
    tmp_path_factory: pytest.TempPathFactory,
    toy_model: Callable[[MachineSpec, float], bytes],
) -> Iterator[Stack]:
    with serve_stack(
        tmp_path_factory, toy_model, pick_machines(), "api", rate_per_s=20.0, rate_burst=40.0
    ) as s:
        yield s


class LiveApi:
    """``create_app(await start_services(...))`` served by uvicorn on a free port, in a
    thread with its own event loop; leaving stops the server and the services."""

    def __init__(self, settings: Settings, machines: list[MachineSpec]) -> None:
        self.settings = settings
        self.machines = machines
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.authority = Authority(settings.secret)
        self.services: Services | None = None
        self.server: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        import uvicorn

        try:
            self.services = await start_services(self.settings, self.machines)
            try:
                config = uvicorn.Config(
                    create_app(self.services),
                    host="127.0.0.1",
                    port=self.port,
                    log_level="warning",
                    lifespan="off",
                )
                self.server = uvicorn.Server(config)
                await self.server.serve()
            finally:
                await self.services.stop()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> LiveApi:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not (self.server is not None and self.server.started):
            if self.error is not None or not self._thread.is_alive():
                raise AssertionError(f"the API did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError("the API did not start in 30 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self._thread.join(30)
        assert not self._thread.is_alive(), "the API did not stop"
        if self.error is not None:
            raise self.error

    def token(self, role: Role = Role.VIEWER, **kw: Any) -> str:
        return self.authority.issue(f"{role.value}-user", role, **kw)

    def get(
        self, path: str, token: str | None = "viewer", **params: str
    ) -> tuple[int, dict[str, Any]]:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        return self._request("GET", path + query, None, token)

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = "viewer"
    ) -> dict[str, Any]:
        status, body = self._request(
            "POST", "/graphql", {"query": query, "variables": variables}, token
        )
        assert status == 200, body
        return body

    def _request(
        self, method: str, path: str, body: Any, token: str | None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"content-type": "application/json"}
        if token == "viewer":
            token = self.token()
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            with contextlib.closing(e):
                return e.code, json.loads(e.read())


async def subscribe(url: str, token: str | None, query: str) -> Any:
    """A graphql-transport-ws connection to ``url``/graphql, acknowledged and subscribed
    to ``query``."""
    from websockets.asyncio.client import connect

    ws = await connect(
        url.replace("http", "ws") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
    )
    payload = {} if token is None else {"Authorization": f"Bearer {token}"}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ack["type"] == "connection_ack", ack
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
    return ws


async def next_data(ws: Any, timeout: float) -> dict[str, Any]:
    """The data of the subscription's next message (pings skipped, errors fail)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] == "ping":
            continue
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        return dict(message["payload"]["data"])
