"""The API under load: GraphQL twin queries and websocket subscriptions through Ray Serve.

Starts a nats-server, a local Ray, ``--machines`` machine actors fed one scan each, and
the API, then prints

1. GraphQL twin-query latency p50/p99 and throughput with 1, 32 and 200 concurrent clients
   (each its own token; a query of one asset's status, health and sensor values, a random
   asset each time);
2. with ``--subscribers`` websocket clients subscribed to one asset's updates: p50/p99
   delivery latency from the telemetry publish (and from the twin-changed event on NATS)
   to each subscriber, over ``--updates`` updates.

``--ingress`` picks how HTTP reaches the app:
``serve`` (Ray Serve's Python proxy), ``throughput`` (Serve with
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``), ``haproxy`` (``RAY_SERVE_ENABLE_HA_PROXY=1`` and
``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``, as ``twinfleet up`` runs it),
``uvicorn`` (the same ASGI app in a plain uvicorn process, no Serve: the floor), or
``all`` (each in turn, in its own process, and a table).

The clients run on the same two cores as the servers, so every figure includes the
clients' own cost; compare the ingress modes within one run.

    python bench/api.py [--ingress all] [--machines 2000] [--seconds 8] [--subscribers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, this file's directory comes first on sys.path, and this file would
# hide the ``api`` package: drop the directory, and load the ingest benchmark by its path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_spec = importlib.util.spec_from_file_location("bench_ingest", _HERE / "ingest.py")
assert _spec is not None and _spec.loader is not None
_ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ingest)
machine, publish_all, scan = _ingest.machine, _ingest.publish_all, _ingest.scan

SECRET = "bench-secret-" + "z" * 40
QUERY = (
    "query($id: ID!) { asset(id: $id) { id status healthScore lastUpdate "
    "currentState { sensors { sensorId value } } } }"
)
MODES = ["serve", "throughput", "haproxy", "uvicorn"]
ENV = {
    "serve": {},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy": {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    },
    "uvicorn": {},
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


async def query_load(
    url: str, tokens: list[str], ids: list[str], clients: int, seconds: float
) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients + 10)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(i: int) -> None:
            nonlocal errors
            headers = {"authorization": f"Bearer {tokens[i]}"}
            rng = random.Random(i)
            while time.perf_counter() < stop:
                body = {"query": QUERY, "variables": {"id": rng.choice(ids)}}
                began = time.perf_counter()
                async with session.post(f"{url}/graphql", json=body, headers=headers) as r:
                    answer = await r.json()
                took = time.perf_counter() - began
                if r.status != 200 or "errors" in answer or answer["data"]["asset"] is None:
                    errors += 1
                else:
                    latencies.append(took)

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - began
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "per_s": len(latencies) / wall,
    }


async def subscriber_load(
    url: str, nats_url: str, token: str, spec: Any, subscribers: int, updates: int, t0: int
) -> dict[str, float]:
    import nats
    from websockets.asyncio.client import connect

    from schemas import subjects

    query = f'subscription {{ assetStateChanged(assetId: "{spec.id}") {{ version }} }}'
    sent: dict[int, float] = {}
    evented: dict[int, float] = {}
    from_publish: list[float] = []
    from_event: list[float] = []

    async def subscriber() -> Any:
        ws = await connect(
            url.replace("http", "ws") + "/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            max_queue=None,
        )
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        return ws

    sockets = []
    for i in range(0, subscribers, 50):  # connect in waves (the proxy accepts ~hundreds/s)
        sockets += await asyncio.gather(*(subscriber() for _ in range(min(50, subscribers - i))))
    await asyncio.sleep(2.0)

    async def listen(ws: Any) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") != "next":
                continue
            version = message["payload"]["data"]["assetStateChanged"]["version"]
            now = time.perf_counter()
            if version in sent:
                from_publish.append(now - sent[version])
            if version in evented:
                from_event.append(now - evented[version])

    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def on_twin(msg: Any) -> None:
        evented[json.loads(msg.data)["version"]] = time.perf_counter()

    await nc.subscribe(subjects.twin(spec.id), cb=on_twin)
    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    rng = np.random.default_rng(1)
    version = 1  # the warm-up scan
    for k in range(updates):
        version += 1
        sent[version] = time.perf_counter()
        await js.publish(
            subjects.telemetry(spec.site, spec.id),
            scan(spec, 10 + k, t0, rng),
            headers={"Nats-Msg-Id": f"sub-{spec.id}-{k}"},
        )
        await asyncio.sleep(0.5)
    await asyncio.sleep(3.0)
    expected = updates * subscribers
    missing = expected - len(from_publish)
    for task in listeners:
        task.cancel()
    for ws in sockets:
        await ws.close()
    await nc.drain()
    return {
        "subscribers": subscribers,
        "updates": updates,
        "delivered": len(from_publish),
        "missing": missing,
        "p50_ms": percentile(from_publish, 50),
        "p99_ms": percentile(from_publish, 99),
        "event_p50_ms": percentile(from_event, 50),
        "event_p99_ms": percentile(from_event, 99),
    }


def serve_uvicorn(port: int, nats_url: str, machines: int, sensors: int) -> None:
    """The ASGI app in plain uvicorn (the ``uvicorn`` mode's server process)."""
    import uvicorn

    from api.app import Settings, create_app, start_services

    async def main() -> None:
        settings = Settings(
            nats_url=nats_url, secret=SECRET, fleet_name="bench", rate_per_s=1e9, rate_burst=1e9
        )
        specs = [machine(i, sensors) for i in range(machines)]
        services = await start_services(settings, specs)
        config = uvicorn.Config(
            create_app(services),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ws="websockets-sansio",
        )
        await uvicorn.Server(config).serve()

    asyncio.run(main())


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(ENV[mode])
    import ray

    import serve_app
    from actors.fleet import Fleet
    from api.auth import Authority, Role
    from schemas import subjects
    from twinfleet.services import NatsServer, free_port

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    results: dict[str, Any] = {"ingress": mode}
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp), port=free_port()) as nats:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        uvicorn_proc = None
        try:
            specs = [machine(i, args.sensors) for i in range(args.machines)]
            fleet = Fleet(specs, nats.url, name="bench", config={"pca_fit_scans": 10_000}).start()
            fleet.wait_ready()
            t0 = int(time.time() * 1000) - 86_400_000
            rng = np.random.default_rng(0)
            asyncio.run(
                publish_all(
                    nats.url,
                    [
                        (subjects.telemetry(s.site, s.id), scan(s, 0, t0, rng), f"{s.id}-0")
                        for s in specs
                    ],
                )
            )
            port = free_port()
            if mode == "uvicorn":
                uvicorn_proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve-uvicorn",
                        str(port),
                        nats.url,
                        str(args.machines),
                        str(args.sensors),
                    ]
                )
                url = f"http://127.0.0.1:{port}"
            else:
                settings = {
                    "nats_url": nats.url,
                    "secret": SECRET,
                    "fleet_name": "bench",
                    "rate_per_s": 1e9,
                    "rate_burst": 1e9,
                }
                url = serve_app.deploy(settings, specs, port=port)
            _wait_ready(url)
            authority = Authority(SECRET)
            ids = [s.id for s in specs]
            while True:  # every twin has its scan
                if all(_has_data(url, authority, m) for m in (ids[0], ids[-1])):
                    break
                time.sleep(0.2)
            tokens = [authority.issue(f"client-{i}", Role.VIEWER) for i in range(200)]
            asyncio.run(query_load(url, tokens, ids, 4, 2.0))  # warm-up
            results["queries"] = [
                asyncio.run(query_load(url, tokens, ids, c, args.seconds)) for c in (1, 32, 200)
            ]
            for q in results["queries"]:
                print(
                    f"[{mode}] {q['clients']:>3} clients: p50 {q['p50_ms']:.1f} ms, "
                    f"p99 {q['p99_ms']:.1f} ms, {q['per_s']:.0f} queries/s "
                    f"({q['errors']} errors)",
                    flush=True,
                )
            if args.subscribers:
                results["subscriptions"] = asyncio.run(
                    subscriber_load(
                        url, nats.url, tokens[0], specs[0], args.subscribers, args.updates, t0
                    )
                )
                s = results["subscriptions"]
                print(
                    f"[{mode}] {s['subscribers']} subscribers x {s['updates']} updates: "
                    f"delivered {s['delivered']} (missing {s['missing']}); from publish "
                    f"p50 {s['p50_ms']:.1f} ms p99 {s['p99_ms']:.1f} ms; from the twin "
                    f"event p50 {s['event_p50_ms']:.1f} ms p99 {s['event_p99_ms']:.1f} ms",
                    flush=True,
                )
            fleet.stop()
        finally:
            if uvicorn_proc is not None:
                uvicorn_proc.terminate()
                uvicorn_proc.wait(10)
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    return results


def _wait_ready(url: str, timeout_s: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def _has_data(url: str, authority: Any, machine_id: str) -> bool:
    """Whether the API already shows a reading of the machine."""
    import urllib.request

    from api.auth import Role

    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": QUERY, "variables": {"id": machine_id}}).encode(),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {authority.issue('probe', Role.VIEWER)}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        asset = json.loads(r.read())["data"]["asset"]
    return bool(asset and asset["lastUpdate"])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-uvicorn":
        port, url, machines, sensors = sys.argv[2:6]
        serve_uvicorn(int(port), url, int(machines), int(sensors))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingress", choices=[*MODES, "all"], default="all")
    parser.add_argument("--machines", type=int, default=2000)
    parser.add_argument("--sensors", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args()
    if args.ingress != "all":
        result = run_mode(args.ingress, args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    rows = []
    for mode in MODES:
        argv = [
            sys.executable,
            __file__,
            "--ingress",
            mode,
            "--machines",
            str(args.machines),
            "--sensors",
            str(args.sensors),
            "--seconds",
            str(args.seconds),
            "--subscribers",
            str(args.subscribers),
            "--updates",
            str(args.updates),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        for ln in done.stdout.splitlines():
            if ln.startswith("["):
                print(ln, flush=True)
        if done.returncode != 0 or not lines:
            print(f"[{mode}] failed: {done.stderr.strip().splitlines()[-3:]}", flush=True)
            continue
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
    print("\ningress      clients  p50 ms  p99 ms  queries/s | subscribers  p50 ms  p99 ms")
    for r in rows:
        s = r.get("subscriptions") or {}
        for i, q in enumerate(r["queries"]):
            tail = (
                (
                    f" | {s.get('subscribers', '-'):>11}  {s.get('p50_ms', float('nan')):6.1f}"
                    f"  {s.get('p99_ms', float('nan')):6.1f}"
                )
                if i == 0 and s
                else ""
            )
            print(
                f"{r['ingress']:12} {q['clients']:>7}  {q['p50_ms']:6.1f}  {q['p99_ms']:6.1f}"
                f"  {q['per_s']:9.0f}{tail}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
