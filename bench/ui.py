"""The dashboard in Debian's Chromium driven by Playwright, against the API on Ray Serve,
the twins on a local Ray, nats-server and PostgreSQL, all sharing this machine's cores
(every figure includes the browser's own work). Prints:

1. Fleet page, the example plant's 52 machines: from navigation (``page.goto``) to every
   machine's row shown (the page's ``twinfleet:fleet-shown`` performance mark), median
   and worst of ``--runs``;
2. telemetry POSTed (``/api/v1/telemetry/batch``) to its value in the machine page's DOM
   (a MutationObserver's ``Date.now()``: the wall clock of the POST's ``time.time()``),
   p50/p99 of ``--posts``;
3. 20 open fleet dashboards (tabs): the API's twin-query latency (GraphQL ``asset``,
   4 clients) p50/p99 without them and with them, while every machine sends a scan a
   second; also with the 20 dashboards' subscriptions held by plain websocket clients
   (the API's cost without the browsers' rendering); three interleaved rounds, medians;
4. Fleet page with ``--machines`` machines (2,000): navigation to every row shown, and
   scrolling its table (frame times while it scrolls);
5. Machine page of a machine with 20 sensors and 30 days of hourly history: navigation to
   every trend drawn (``twinfleet:trends-shown``).

    python bench/ui.py [--runs 10] [--posts 100] [--machines 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

# Run as a script, this file's directory comes first on sys.path and would hide the
# ``api`` package: drop it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from api.auth import Authority, Role  # noqa: E402
from schemas import subjects  # noqa: E402
from schemas.plant import MachineSpec, SensorSpec, load_plant  # noqa: E402
from twinfleet.cli import _example_plant_path  # noqa: E402
from twinfleet.postgres import PostgresServer  # noqa: E402
from twinfleet.services import NatsServer, free_port  # noqa: E402

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
SECRET = "bench-ui-secret-" + "u" * 32
USER, PASSWORD = "bench", "bench-password-1"
QUERY = (
    "query($id: ID!) { asset(id: $id) { id status healthScore lastUpdate "
    "currentState { sensors { sensorId value } } } }"
)
KINDS = ["vibration", "temperature", "current", "speed", "pressure"]
RUN = f"{random.randrange(16**8):08x}"
"""In the messages' ids: JetStream drops a message id it saw in the last two minutes."""


def in_thread(call: Any, *args: Any) -> Any:
    """``call(*args)`` in a thread of its own: Playwright's sync API keeps an event loop
    running in this one, where ``asyncio.run`` (ours, the fleet's) cannot run."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call, *args).result()


def arun(coroutine: Any) -> Any:
    return in_thread(asyncio.run, coroutine)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


def nominal(spec: MachineSpec) -> dict[str, float]:
    return {s.name: float(s.rated or (s.normal_high or 100.0) * 0.6) for s in spec.sensors}


def batch(spec: MachineSpec, k: int, t_ms: int, rng: random.Random) -> bytes:
    """One scan of every sensor of ``spec``, as a gateway's JetStream message."""
    values = nominal(spec)
    names = list(values)
    return json.dumps(
        {
            "gateway_id": "gw-bench",
            "site_id": spec.site,
            "batch_id": f"{spec.id}-{k}",
            "sent_at": t_ms,
            "readings": {
                "machine_id": [spec.id] * len(names),
                "sensor_id": [f"{spec.id}.{n}" for n in names],
                "timestamp": [t_ms] * len(names),
                "value": [round(values[n] * (1 + 0.01 * rng.uniform(-1, 1)), 4) for n in names],
            },
        }
    ).encode()


async def publish(nats_url: str, specs: list[MachineSpec], k: int, t_ms: int) -> None:
    import nats

    from actors.bus import ensure_jetstream

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_jetstream(js)
    rng = random.Random(k)
    pending = [
        js.publish(
            subjects.telemetry(s.site, s.id),
            batch(s, k, t_ms, rng),
            headers={"Nats-Msg-Id": f"{s.id}-{RUN}-{k}"},
        )
        for s in specs
    ]
    for i in range(0, len(pending), 1000):
        await asyncio.gather(*pending[i : i + 1000])
    await nc.drain()


def bench_machine(i: int, sensors: int, mid: str | None = None) -> MachineSpec:
    limits = {"unit": "u", "normal_high": 150.0, "critical_high": 200.0, "rated": 100.0}
    return MachineSpec(
        id=mid or f"M-{i:05d}",
        name=f"Bench motor {i}",
        type="motor-bench",
        kind="motor",
        site=f"site-{'ab'[i % 2]}",
        line=f"line-{i % 20:02d}",
        failure_modes=["bearing_wear"],
        sensors=[
            SensorSpec(name=f"s{j:02d}", kind=KINDS[j % len(KINDS)], stuck_after=0, **limits)
            for j in range(sensors)
        ],
    )


class Stack:
    """nats-server, PostgreSQL, Ray; the fleet of twins and the API on Serve, each
    replaceable (a new plant for the next measure)."""

    def __init__(self, tmp: Path) -> None:
        import ray

        self.nats = NatsServer(tmp / "nats", port=free_port()).start()
        self.pg = PostgresServer(tmp / "pg", port=free_port()).start()
        self.database_url = self._database()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fleet: Any = None
        self.service: Any = None
        self.authority = Authority(SECRET)
        self.specs: list[MachineSpec] = []

    def _database(self) -> str:
        import psycopg

        from store.migrations import migrate

        with psycopg.connect(self.pg.url) as conn:
            migrate(conn)
        cli = str(Path(sys.executable).with_name("twinfleet"))
        add = f"user add {USER} --role engineer --password-stdin --database-url".split()
        subprocess.run(
            [cli, *add, self.pg.url],
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        return str(self.pg.url)

    def start(self, specs: list[MachineSpec], plant: Any = None) -> None:
        """The twins of ``specs`` (one scan each), the maintenance service of ``plant``
        (none without), and the API over them."""
        import psycopg
        import ray
        from ray import serve

        import serve_app
        from actors.fleet import Fleet
        from actors.maintenance import MaintenanceActor
        from store.registry import register_plant

        self.stop_plant()
        self.specs = specs
        with psycopg.connect(self.database_url) as conn:
            register_plant(conn, SimpleNamespace(machines=specs, technicians=[]))
        name = f"ui{random.randrange(10**6)}"
        self.fleet = Fleet(specs, self.nats.url, name=name, config={"pca_fit_scans": 10_000})
        self.fleet.start().wait_ready()
        if plant is not None:
            self.service = MaintenanceActor.remote(plant.model_dump_json(), self.nats.url, name)  # type: ignore[attr-defined]
            ray.get(self.service.start.remote())
        arun(publish(self.nats.url, specs, 0, int(time.time() * 1000) - 60_000))
        settings = {
            "nats_url": self.nats.url,
            "secret": SECRET,
            "fleet_name": name,
            "database_url": self.database_url,
            "rate_per_s": 1e6,
            "rate_burst": 1e6,
        }
        serve.shutdown()
        serve_app.deploy(settings, specs, port=self.port)
        deadline = time.monotonic() + 300
        while not self._shows(specs[0].id) or not self._shows(specs[-1].id):
            if time.monotonic() > deadline:
                raise TimeoutError("the API does not show the twins' first scans")
            time.sleep(0.5)

    def _shows(self, machine_id: str) -> bool:
        try:
            asset = self.graphql(QUERY, {"id": machine_id})["asset"]
        except OSError:
            return False
        return bool(asset and asset["lastUpdate"])

    def send(self, path: str, body: Any, token: str) -> Any:
        """POST ``body`` as JSON with ``token``; the answer's JSON."""
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def graphql(self, query: str, variables: dict[str, Any]) -> Any:
        token = self.authority.issue("bench-probe", Role.VIEWER)
        return self.send("/graphql", {"query": query, "variables": variables}, token)["data"]

    def post(self, spec: MachineSpec, sensor: str, value: float) -> None:
        token = self.authority.issue("gw", Role.GATEWAY, gateway_id="gw-bench", sites=[spec.site])
        now = int(time.time() * 1000)
        reading = {"sensor_id": f"{spec.id}.{sensor}", "timestamp": now, "value": value}
        body = {"gateway_id": "gw-bench", "timestamp": now, "readings": [reading]}
        assert self.send("/api/v1/telemetry/batch", body, token)["readings_accepted"] == 1

    def stop_plant(self) -> None:
        import ray

        if self.service is not None:
            ray.get(self.service.stop.remote(), timeout=30)
            ray.kill(self.service)
            self.service = None
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        in_thread(self.stop_plant)
        ray.shutdown()
        self.pg.stop()
        self.nats.stop()


def seed_history(database_url: str, spec: MachineSpec, days: int) -> int:
    """``days`` of hourly rollups of every sensor of ``spec``, ending this hour."""
    import psycopg

    from store.partitions import Partitions
    from store.registry import sensor_keys

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [end - timedelta(hours=h) for h in range(days * 24, 0, -1)]
    rng = np.random.default_rng(3)
    rows = []
    with psycopg.connect(database_url) as conn:
        keys = sensor_keys(conn, [f"{spec.id}.{s.name}" for s in spec.sensors])
        Partitions().ensure(conn, "rollup_1h", hours)
        for key in keys.values():
            mean = 100 + np.cumsum(rng.normal(0, 0.3, len(hours)))
            for t, m in zip(hours, mean, strict=True):
                rows.append((key, t, 3600, float(m), 3600 * 4.0, float(m) - 4, float(m) + 4, 0, 0))
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rollup_1h (sensor_key, bucket, count, mean, m2, vmin, vmax, "
                "n_uncertain, n_bad) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
    return len(rows)


# -- the browser ------------------------------------------------------------------------------
def logged_in(browser: Any, url: str) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(f"{url}/")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#connection[data-state=live]", timeout=120_000)
    return page


def navigate(page: Any, url: str, mark: str, ready: str, timeout_ms: int = 120_000) -> float:
    """Milliseconds from the start of the navigation to ``mark`` (the page's own
    performance mark), once ``ready`` (a JS expression) holds."""
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_function(f"() => {ready}", timeout=timeout_ms)
    return float(page.evaluate(f"() => performance.getEntriesByName('{mark}')[0].startTime"))


def fleet_load(page: Any, url: str, machines: int, runs: int) -> list[float]:
    ready = (  # every row listed (a long list draws those in view), none without a state
        f"document.querySelector('table.fleet[data-ready=true][data-rows=\"{machines}\"]') && "
        "!document.querySelector('tr[data-machine][data-status=unknown]') && "
        "performance.getEntriesByName('twinfleet:fleet-shown').length > 0"
    )
    return [navigate(page, f"{url}/#/fleet", "twinfleet:fleet-shown", ready) for _ in range(runs)]


def machine_load(page: Any, url: str, machine_id: str, sensors: int, runs: int) -> list[float]:
    ready = (
        "document.querySelector('.trends[data-ready=true]') && "
        f"document.querySelectorAll('figure.trend canvas').length === {sensors} && "
        "performance.getEntriesByName('twinfleet:trends-shown').length > 0"
    )
    route = f"{url}/#/machine/{machine_id}?range=30d"
    return [navigate(page, route, "twinfleet:trends-shown", ready) for _ in range(runs)]


def scrolling(page: Any, px_per_s: float = 3000.0, seconds: float = 3.0) -> dict[str, float]:
    """Frame times (ms) while the fleet table scrolls at ``px_per_s`` (a brisk scroll:
    about 90 rows a second) for ``seconds``."""
    frames = page.evaluate(
        """([speed, span]) => new Promise((done) => {
          const box = document.querySelector('.scroll'); const times = []; let start = null;
          function step(t) { if (start === null) start = t; times.push(t);
            box.scrollTop = speed * (t - start) / 1000;
            if (t - start < span * 1000) requestAnimationFrame(step); else done(times); }
          requestAnimationFrame(step); })""",
        [px_per_s, seconds],
    )
    gaps = np.diff(np.asarray(frames))
    figures = {"p50": pct(list(gaps), 50), "p95": pct(list(gaps), 95), "max": float(gaps.max())}
    return {"frames": len(gaps), "over_50ms": int((gaps > 50).sum()), **figures}


def telemetry_to_dom(page: Any, stack: Stack, spec: MachineSpec, posts: int) -> list[float]:
    """POST a reading, time until the machine page's cell shows it (ms)."""
    sensor = spec.sensors[0].name
    cell = f'tr[data-sensor="{spec.id}.{sensor}"] [data-field=value]'
    page.goto("about:blank")
    page.goto(f"{stack.url}/#/machine/{spec.id}")
    page.wait_for_selector(cell)
    page.evaluate(
        """(sel) => { window.shown = {}; const el = document.querySelector(sel);
        new MutationObserver(() => { window.shown[el.dataset.value] = Date.now(); })
          .observe(el, {attributes: true, childList: true, subtree: true}); }""",
        cell,
    )
    took = []
    base = nominal(spec)[sensor]
    for k in range(posts):
        value = round(base * (1.001 + k * 1e-5), 6)
        sent = time.time() * 1000
        stack.post(spec, sensor, value)
        page.wait_for_function("(v) => window.shown[String(v)]", arg=value, timeout=10_000)
        took.append(float(page.evaluate("(v) => window.shown[String(v)]", value)) - sent)
        time.sleep(0.2)
    return took


# -- 20 dashboards against the API's twin queries ---------------------------------------------
class Telemetry:
    """Every machine sends a scan a second (JetStream), in a thread, until stopped."""

    def __init__(self, nats_url: str, specs: list[MachineSpec]) -> None:
        import threading

        self.nats_url, self.specs = nats_url, specs
        self.running = True
        self.k = 1
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        while self.running:
            began = time.monotonic()
            await publish(self.nats_url, self.specs, self.k, int(time.time() * 1000))
            self.k += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))

    def stop(self) -> None:
        self.running = False
        self.thread.join(30)


def _query_load() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_api", _HERE / "api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.query_load


def replica_cpu() -> Any:
    """A function giving the CPU seconds the API's Serve replica has used so far (its
    process from Ray's actor table: the live actor named for the TwinApi deployment)."""
    import ray

    actors = ray._private.state.actors().values()
    [pid] = [a["Pid"] for a in actors if a["State"] == "ALIVE" and "TwinApi" in a["Name"]]
    tick = os.sysconf("SC_CLK_TCK")

    def used() -> float:  # utime + stime, fields 14 and 15 of /proc/PID/stat
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return used


async def _sockets(url: str, token: str, n: int) -> list[Any]:
    """``n`` websocket clients holding the fleet page's two subscriptions."""
    from websockets.asyncio.client import connect

    queries = [
        "subscription FleetChanged { fleetChanged(everyMs: 1000) { rows } }",
        "subscription FleetAlerts { alertRaised { alertId machineId severity status } }",
    ]
    sockets = []
    for _ in range(n):
        ws = await connect(
            url.replace("http", "ws") + "/graphql",
            subprotocols=["graphql-transport-ws"],
            max_queue=None,
        )
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for i, q in enumerate(queries):
            await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {"query": q}}))
        sockets.append(ws)
        asyncio.get_running_loop().create_task(_drain(ws))  # read as a page would
    return sockets


async def _drain(ws: Any) -> None:
    async for _ in ws:
        pass


def dashboards_effect(
    browser: Any, stack: Stack, seconds: float, rounds: int = 3
) -> dict[str, list[dict[str, float]]]:
    """Twin-query latency with no dashboard, with 20 dashboards in Chromium, and with 20
    websocket clients holding the dashboards' subscriptions, in ``rounds`` interleaved
    rounds (the machine is shared: its load drifts within a minute by as much as the
    effect measured, so one of each would compare moments, not conditions)."""
    query_load, cpu = _query_load(), replica_cpu()
    tokens = [stack.authority.issue(f"q{i}", Role.VIEWER) for i in range(4)]
    ids = [s.id for s in stack.specs]
    feed = Telemetry(stack.nats.url, stack.specs)
    out: dict[str, list[dict[str, float]]] = {"none": [], "browsers": [], "sockets": []}

    async def load() -> Any:
        """The query load, and the replica's CPU (share of a core) meanwhile."""
        began, used = time.monotonic(), cpu()
        result = await query_load(stack.url, tokens, ids, 4, seconds)
        result["api_cpu"] = (cpu() - used) / (time.monotonic() - began)
        return result

    async def with_sockets() -> Any:
        sockets = await _sockets(stack.url, tokens[0], 20)
        await asyncio.sleep(2.0)
        result = await load()
        for ws in sockets:
            await ws.close()
        return result

    try:
        arun(query_load(stack.url, tokens, ids, 4, 2.0))  # warm-up
        for _ in range(rounds):
            out["none"].append(arun(load()))
            first = logged_in(browser, stack.url)  # 20 tabs of one person's browser
            pages = [first, *(first.context.new_page() for _ in range(19))]
            for page in pages:
                page.goto(f"{stack.url}/#/fleet")
                page.wait_for_selector("table.fleet[data-ready=true]", timeout=120_000)
            time.sleep(2.0)
            out["browsers"].append(arun(load()))
            first.context.close()
            out["sockets"].append(arun(with_sockets()))
    finally:
        feed.stop()
    return out


def report(name: str, values: list[float], target: str) -> None:
    print(
        f"{name}: median {statistics.median(values):.0f} ms, worst {max(values):.0f} ms "
        f"over {len(values)} runs (target {target}; load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--machines", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    plant = load_plant(_example_plant_path())
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stop:
        stack = Stack(Path(tmp))
        stop.callback(stack.close)
        playwright = stop.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        stop.callback(browser.close)

        in_thread(stack.start, list(plant.machines), plant)
        page = logged_in(browser, stack.url)
        report("fleet page, 52 machines", fleet_load(page, stack.url, 52, args.runs), "<= 1000 ms")
        took = telemetry_to_dom(page, stack, plant.machines[0], args.posts)
        print(
            f"telemetry POST -> value in the DOM: p50 {pct(took, 50):.0f} ms, p99 "
            f"{pct(took, 99):.0f} ms, worst {max(took):.0f} ms over {len(took)} posts "
            "(target p50 <= 150 ms, p99 <= 500 ms)",
            flush=True,
        )
        page.context.close()
        effect = dashboards_effect(browser, stack, args.seconds)
        base = statistics.median(q["p99_ms"] for q in effect["none"])
        for key, label in (
            ("none", "no dashboard"),
            ("browsers", "20 dashboards in Chromium"),
            ("sockets", "20 dashboards' subscriptions (websocket clients)"),
        ):
            p99 = [q["p99_ms"] for q in effect[key]]
            p50 = statistics.median(q["p50_ms"] for q in effect[key])
            errors = sum(q["errors"] for q in effect[key])
            api = statistics.median(q["api_cpu"] for q in effect[key]) * 100
            print(
                f"twin queries, {label}: p50 {p50:.1f} ms, p99 {statistics.median(p99):.1f} ms "
                f"({(statistics.median(p99) / base - 1) * 100:+.0f} %; rounds "
                f"{', '.join(f'{v:.0f}' for v in p99)} ms), {errors} errors, API replica "
                f"{api:.0f} % of a core (target: p99 within +20 % of no dashboard)",
                flush=True,
            )

        history = bench_machine(0, 20, mid="H-020")
        specs = [bench_machine(i, 6) for i in range(1, args.machines)] + [history]
        in_thread(stack.start, specs)
        seeded = seed_history(stack.database_url, history, 30)
        page = logged_in(browser, stack.url)
        report(
            f"fleet page, {len(specs)} machines",
            fleet_load(page, stack.url, len(specs), args.runs),
            "<= 2000 ms",
        )
        s = scrolling(page)
        print(
            f"scrolling {len(specs)} rows at 3,000 px/s: {s['frames']} frames, frame time "
            f"p50 {s['p50']:.0f} ms, p95 {s['p95']:.0f} ms, worst {s['max']:.0f} ms, "
            f"{s['over_50ms']} over 50 ms",
            flush=True,
        )
        report(
            f"machine page, 20 sensors x 30 days hourly ({seeded} buckets)",
            machine_load(page, stack.url, history.id, 20, args.runs),
            "<= 1500 ms",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
