"""The dashboard against the real stack, in a real browser.

The stack (started once for the module, as ``twinfleet up`` composes it): a nats-server
with JetStream, PostgreSQL (the session fixture's server, a database of its own, the
example plant registered), the example plant's 52 machine actors on a local Ray (small
fitted RUL models), the history writer and the maintenance service as Ray actors, and the
API on Ray Serve on a free port. People are made with ``twinfleet user add ...
--password-stdin`` and log in through the dashboard's login page.

The browser is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright, started
headless with no network beyond this machine (the flags below) and Playwright's fresh
profile directory (``--user-data-dir`` of a new temporary directory, which Playwright
passes itself); each person gets a browser context of their own (cookies). Every page
records what the browser console says; a test fails on any console error.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from api.auth import Authority, Role
from schemas.plant import MachineSpec, Plant, load_plant
from tests.conftest import new_database
from twinfleet.cli import _example_plant_path
from twinfleet.postgres import PostgresServer
from twinfleet.services import NatsServer, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "dashboard-secret-" + "d" * 32
CONFIG = {"pca_fit_scans": 50, "zscore_warmup": 20, "rul_min_hours": 2.0, "rul_every_hours": 1.0}
PEOPLE = {
    Role.VIEWER: ("vera", "viewer-password-1"),
    Role.OPERATOR: ("olga", "operator-password-1"),
    Role.ENGINEER: ("erin", "engineer-password-1"),
}
SCREENSHOTS = Path(os.environ.get("TWINFLEET_SCREENSHOTS", "docs/img"))
"""Where the tests save a screenshot of each page (the README shows them)."""
MINUTE_MS = 60_000


def nominal(spec: MachineSpec, k: int) -> dict[str, float]:
    """Plausible readings of every sensor at scan ``k`` (slowly varying, deterministic)."""
    out = {}
    for s in spec.sensors:
        base = s.rated or (s.normal_high or 100.0) * 0.6
        out[s.name] = round(base * (1 + 0.01 * math.sin(k / 7.0)), 4)
    return out


def rows(
    spec: MachineSpec, start_ms: int, scans: int, step_ms: int = MINUTE_MS, **override: float
) -> list[dict[str, Any]]:
    """One reading per sensor every ``step_ms`` (a minute) from ``start_ms``."""
    return [
        {
            "sensor_id": f"{spec.id}.{name}",
            "timestamp": start_ms + k * step_ms,
            "value": value,
            "quality": "good",
        }
        for k in range(scans)
        for name, value in {**nominal(spec, k), **override}.items()
    ]


def wait_for(condition: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Plantside:
    """The running stack and how to reach it."""

    url: str
    nats_url: str
    database_url: str
    plant: Plant
    settings: dict[str, Any]
    port: int
    authority: Authority = field(default_factory=lambda: Authority(SECRET))

    def machine(self, machine_id: str) -> MachineSpec:
        return next(m for m in self.plant.machines if m.id == machine_id)

    def token(self, role: Role) -> str:
        return self.authority.issue(f"test-{role.value}", role)

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def graphql(self, query: str, role: Role, variables: Any = None) -> dict[str, Any]:
        status, answer = self.call(
            "POST", "/graphql", {"query": query, "variables": variables}, self.token(role)
        )
        assert status == 200 and "errors" not in answer, answer
        return dict(answer["data"])

    def send(self, readings: list[dict[str, Any]], site: str) -> dict[str, Any]:
        """POST readings as a gateway of ``site``."""
        token = self.authority.issue("gw-dash", Role.GATEWAY, gateway_id="gw-dash", sites=[site])
        body = {"gateway_id": "gw-dash", "timestamp": int(time.time() * 1000), "readings": readings}
        status, answer = self.call("POST", "/api/v1/telemetry/batch", body, token)
        assert status == 202, answer
        return dict(answer)

    def deploy(self) -> None:
        """(Re)start the API on Serve, on the same port, and wait until it is ready."""
        import serve_app

        serve_app.deploy(self.settings, list(self.plant.machines), port=self.port)
        wait_for(lambda: self.call("GET", "/api/v1/ready")[0] == 200, 120, "the API")

    def restart_api(self) -> None:
        from ray import serve

        serve.shutdown()
        self.deploy()


def add_people(database_url: str) -> None:
    """``twinfleet user add NAME --role ROLE --password-stdin``, as an administrator would."""
    for role, (name, password) in PEOPLE.items():
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("twinfleet")),
                "user",
                "add",
                name,
                "--role",
                role.value,
                "--password-stdin",
                "--database-url",
                database_url,
            ],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


def _seed(side: Plantside) -> None:
    """Half an hour of readings for every machine, four hours for three of them (enough
    for their first RUL predictions), sent through the API as gateways do."""
    now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    rich = {"M-101", "P-201", "M-107"}
    for site in sorted({m.site for m in side.plant.machines}):
        batch: list[dict[str, Any]] = []
        for spec in side.plant.machines:
            if spec.site != site:
                continue
            scans = 240 if spec.id in rich else 30
            batch += rows(spec, now - scans * MINUTE_MS, scans)
            if len(batch) > 4000:
                side.send(batch, site)
                batch = []
        if batch:
            side.send(batch, site)


@pytest.fixture(scope="module")
def plantside(
    local_ray: None,
    postgres: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
    toy_model: Callable[[MachineSpec, float], bytes],
) -> Iterator[Plantside]:
    import ray
    from ray import serve

    from actors.fleet import Fleet
    from actors.history import HistoryWriter
    from actors.maintenance import MaintenanceActor

    plant = load_plant(_example_plant_path())
    database_url = new_database(postgres, plant)
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")), port=free_port()).start()
    fleet = writer = service = None
    try:
        models: dict[str, bytes] = {}
        for spec in plant.machines:
            if spec.type not in models:
                models[spec.type] = toy_model(spec, 0.1)
        fleet = Fleet(plant.machines, server.url, config=CONFIG, models=models, name="dash")
        fleet.start().wait_ready()
        writer = HistoryWriter.remote(server.url, database_url)  # type: ignore[attr-defined]
        ray.get(writer.start.remote())
        service = MaintenanceActor.remote(  # type: ignore[attr-defined]
            plant.model_dump_json(), server.url, "dash"
        )
        ray.get(service.start.remote())
        port = free_port()
        settings = {
            "nats_url": server.url,
            "secret": SECRET,
            "fleet_name": "dash",
            "database_url": database_url,
        }
        side = Plantside(
            f"http://127.0.0.1:{port}", server.url, database_url, plant, settings, port
        )
        side.deploy()
        add_people(database_url)
        _seed(side)
        yield side
    finally:
        serve.shutdown()
        if fleet is not None:
            fleet.stop()
        for actor in (service, writer):
            if actor is not None:
                try:
                    ray.get(actor.stop.remote(), timeout=30)
                finally:
                    ray.kill(actor)
        server.stop()


# -- the browser ------------------------------------------------------------------------------
@dataclass
class Tab:
    """A page of one person's browser context, with what its console said."""

    page: Any
    errors: list[str]

    def goto(self, side: Plantside, route: str) -> None:
        self.page.goto(f"{side.url}/#/{route}")

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


class Browsers:
    """Chromium, and a logged-in tab per person."""

    def __init__(self, browser: Any, side: Plantside) -> None:
        self.browser = browser
        self.side = side
        self.tabs: list[Tab] = []

    def tab(self, role: Role | None, width: int = 1400, height: int = 900) -> Tab:
        context = self.browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        tab = Tab(page, errors)
        self.tabs.append(tab)
        if role is not None:
            login(tab, self.side, *PEOPLE[role])
        return tab

    def close(self) -> None:
        for tab in self.tabs:
            tab.page.context.close()
        self.tabs = []


def login(tab: Tab, side: Plantside, name: str, password: str) -> None:
    """Through the login page, as a person would."""
    page = tab.page
    page.goto(f"{side.url}/")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#connection[data-state=live]", timeout=30_000)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browsers(chromium: Any, plantside: Plantside) -> Iterator[Browsers]:
    """Tabs for the test; the test fails if any page logged a console error."""
    made = Browsers(chromium, plantside)
    yield made
    errors = [(i, e) for i, tab in enumerate(made.tabs) for e in tab.errors]
    made.close()
    assert not errors, f"console errors: {errors}"
