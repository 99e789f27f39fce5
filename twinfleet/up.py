"""``twinfleet up``: the whole system on one machine.

Starts what is not given: a nats-server with JetStream in the data directory (unless
``NATS_URL``), a PostgreSQL 15 cluster in the data directory (unless ``DATABASE_URL``;
migrated on start, the plant's assets and sensors registered) and a local Ray head
(unless ``RAY_ADDRESS``); starts the history writer (a Ray actor, JetStream to
PostgreSQL); loads (or trains once) the RUL model of every machine type; starts the fleet
of machine actors on Ray; and runs the plant simulator as a gateway that publishes every
machine's telemetry to JetStream, as fast as it can, for the last ``--days`` (simulated
time ending now, so the history keeps it). While it runs it prints, from the NATS
subjects the actors publish (not by asking the actors), what the twins report: anomalies
by severity, the machines most at risk by their latest RUL prediction, failures in the
simulated plant, the hosts' counters and the history writer's progress and lag. It also
starts the API (Ray Serve: GraphQL at ``/graphql``, REST at ``/api/v1``, OpenAPI at
``/docs``) on ``--api-port`` and prints a viewer and an engineer token for it. With
``--stay`` it keeps the services up afterwards until Ctrl-C. Ctrl-C stops everything it
started: the API, the fleet, the writer, Ray, PostgreSQL, nats-server.

Repairs done in the simulated plant are told to the twins (through their host actors,
once the fleet has applied every reading before them), so a repaired machine's model
starts again as in reality. At the end it prints the warning lead time of every failure
(:mod:`maintenance.lead_times`: the first P(fail 7 d) of 0.3 or more, or predictive work
order, before it) and the warnings for machines that did not fail, and the maintenance
service's alarm KPIs (on plant time).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bus.retention import DEFAULT as DEFAULT_RETENTION
from bus.retention import Retention, describe
from maintenance.lead_times import TimeOrderedLeadTimes
from schemas import subjects
from schemas.common import iso_utc
from schemas.maintenance import WorkOrder, WorkOrderStatus, WorkOrderType
from schemas.plant import Plant
from schemas.rul import RulPrediction
from twinfleet.demo import polled_alerting, polled_plant, worn_start
from twinfleet.models import load_or_train
from twinfleet.natsconf import hub_server
from twinfleet.postgres import PostgresServer
from twinfleet.services import ServiceError, port_is_free

SERVE_INGRESS = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # Serve keeps a stopping ingress replica (and proxy) draining for at least 30 s so
    # that an external load balancer can deregister it; here the only balancer is the
    # HAProxy Serve itself reconfigures on this machine, and those 30 s were the whole of
    # a stop's wait (34 s after Ctrl-C). A second finishes the requests in flight.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "1",
}
"""How the API is reached: HAProxy straight to the replicas (Serve's direct ingress)
rather than Serve's Python proxy, and the app on the replica's own event loop; see
``bench/api.py`` and the README for what each option measured. Every route but health
and readiness needs a token. Stopping drains for 1 s, not Serve's 30."""


def local_head_env(data_dir: Path) -> dict[str, str]:
    """The environment of the local Ray head ``twinfleet up`` starts (its processes
    inherit it): Serve's ingress, everything on loopback (:mod:`twinfleet.loopback`:
    Ray's servers, HAProxy's statistics and metrics on free loopback ports, its access
    log to a Unix socket, its admin socket for its owner only). A variable already set
    is kept: that is how to configure otherwise (for example
    ``RAY_SERVE_HAPROXY_STATS_PORT``)."""
    from twinfleet.loopback import RAY_LOOPBACK_ENV, haproxy_log_target, haproxy_wrapper
    from twinfleet.services import free_port

    env = {
        **SERVE_INGRESS,
        **RAY_LOOPBACK_ENV,
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }
    log_target = haproxy_log_target(data_dir)
    if log_target is not None:
        env["RAY_SERVE_HAPROXY_LOG_TARGET"] = log_target
    env = {k: os.environ.get(k, v) for k, v in env.items()}
    # always the wrapper: it runs the HAProxy a given RAY_SERVE_HAPROXY_BINARY_PATH names
    env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(haproxy_wrapper(data_dir))
    return env


class Watcher:
    """Listens to the actors' event subjects and keeps what the reports print."""

    def __init__(self, warnings: TimeOrderedLeadTimes) -> None:
        self.severity: Counter[str] = Counter()
        self.dead_letters = 0
        self.rul: dict[str, dict[str, Any]] = {}
        self.events = 0
        self.warnings = warnings
        self._orders: set[str] = set()

    async def start(self, nc: Any) -> None:
        async def on_anomaly(msg: Any) -> None:
            self.severity[json.loads(msg.data)["severity"]] += 1

        async def on_rul(msg: Any) -> None:
            p = RulPrediction.model_validate_json(msg.data)
            self.rul[p.machine_id] = json.loads(msg.data)
            self.warnings.prediction(
                p.machine_id, p.predicted_at, p.failure_probability.get(168, 0.0), p.failure_mode
            )

        async def on_workorder(msg: Any) -> None:
            order = WorkOrder.model_validate_json(msg.data)
            if order.type is not WorkOrderType.PREDICTIVE:
                return
            closed = order.status in (WorkOrderStatus.COMPLETED, WorkOrderStatus.CANCELLED)
            if order.workorder_id not in self._orders and not closed:
                # an open order is a standing warning, until it is closed
                self._orders.add(order.workorder_id)
                at_ms = int(order.created_at.timestamp() * 1000)
                self.warnings.work_order(order.asset_id, at_ms, order.title, order.workorder_id)
            elif order.workorder_id in self._orders and closed:
                self._orders.discard(order.workorder_id)
                when = order.completed_at or order.updated_at or order.created_at
                at_ms = int(when.timestamp() * 1000)
                self.warnings.order_closed(order.asset_id, order.workorder_id, at_ms)

        async def on_twin(msg: Any) -> None:
            self.events += 1

        async def on_dead(msg: Any) -> None:
            self.dead_letters += 1

        await nc.subscribe(subjects.ANOMALY_ALL, cb=on_anomaly)
        await nc.subscribe(subjects.RUL_ALL, cb=on_rul)
        await nc.subscribe(subjects.WORKORDER_ALL, cb=on_workorder)
        await nc.subscribe(subjects.TWIN_ALL, cb=on_twin)
        await nc.subscribe(f"{subjects.PREFIX}.dlq.>", cb=on_dead)

    def report(self, top: int) -> list[str]:
        risky = sorted(
            self.rul.values(), key=lambda d: -float(d["failure_probability"].get("168", 0.0))
        )[:top]
        lines = [
            f"   twin events {self.events:,}; anomalies "
            + (", ".join(f"{n} {s}" for s, n in sorted(self.severity.items())) or "none")
            + f"; dead letters {self.dead_letters}"
        ]
        for d in risky:
            lines.append(
                f"   {d['machine_id']:8} P(fail 7 d) {float(d['failure_probability']['168']):.2f}"
                f"  RUL median {d['median_hours']:.0f} h "
                f"[{d['lower_hours']:.0f}, {d['upper_hours']:.0f}]  "
                f"{d.get('failure_mode') or '-'}  ({d['model_version']})"
            )
        return lines


def run_up(
    plant: Plant,
    data_dir: Path,
    *,
    days: float = 14.0,
    step_minutes: float = 10.0,
    seed: int = 7,
    worn: int = 6,
    machines_per_host: int = 1000,
    nats_port: int = 4222,
    leaf_port: int = 7422,
    mqtt_port: int = 1883,
    db_port: int = 5433,
    api_port: int = 8000,
    report_every_s: float = 5.0,
    top: int = 5,
    stay: bool = False,
    lives: int = 40,
    https: bool = False,
    retention: Retention = DEFAULT_RETENTION,
) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    address = os.environ.get("RAY_ADDRESS")
    if address is None:  # before Ray is imported: it reads some of these once, on import
        os.environ.update(local_head_env(data_dir))
    api_ca = _api_https(data_dir, address) if https else None
    import ray

    from actors.fleet import Fleet
    from twins.simulator import PlantSimulator

    def terminate(signum: int, frame: object) -> None:  # SIGTERM stops it like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    # A job a non-interactive shell starts in the background has SIGINT ignored, and
    # Python then leaves it ignored: Ctrl-C (or kill -INT) must stop it all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    nats_url = os.environ.get("NATS_URL")
    server = None
    database = None
    history = None
    maintenance = None
    fleet = None
    intake = None
    started_ray = False
    api_up = False
    if not port_is_free(api_port):
        raise ServiceError(f"port {api_port} is already taken; choose another with --api-port")
    try:
        if nats_url is None:
            for port, flag in ((leaf_port, "--leaf-port"), (mqtt_port, "--mqtt-port")):
                if not port_is_free(port):
                    raise ServiceError(f"port {port} is already taken; choose another with {flag}")
            server = hub_server(
                data_dir, port=nats_port, leaf_port=leaf_port, mqtt_port=mqtt_port
            ).start()
            nats_url = server.url
            tls = _trust_hub_ca(data_dir)
            gateways = asyncio.run(_prepare_hub(nats_url, data_dir, retention))
            print(
                f"nats-server with JetStream on {server.public_url} (data in "
                f"{data_dir / 'nats'}; user and password in its config), leaf nodes on port "
                f"{leaf_port} for {gateways} registered gateway(s)"
                + (f"; TLS on these and MQTT, certificates in {data_dir / 'pki'}" if tls else "")
                + f"; {describe(retention)}"
            )
        else:
            print(f"using NATS at {nats_url}")
        from bus.connect import NATS_PASSWORD_FILE_ENV, without_password
        from twinfleet.services import SECRET_FILE_ENV, api_secret

        actor_nats_url = nats_url
        if server is not None:  # the hub's password is read on the node, by each actor
            os.environ[NATS_PASSWORD_FILE_ENV] = str((data_dir / "nats-password").resolve())
            actor_nats_url = without_password(nats_url)
        api_secret(data_dir)  # made now: the replicas read it on their node
        os.environ[SECRET_FILE_ENV] = str((data_dir / "api-secret").resolve())
        database_url = os.environ.get("DATABASE_URL")
        if database_url is None:
            database = PostgresServer(data_dir, port=db_port).start()
            os.environ["PGPASSFILE"] = str(database.passfile().resolve())  # libpq reads it
            database_url = database.public_url
            print(f"PostgreSQL 15 on {database.public_url} (data in {database.cluster})")
        else:
            print("using the PostgreSQL at DATABASE_URL")
        sensors = _prepare_database(database_url, plant)
        print(f"   schema migrated; {len(plant.machines)} machines, {sensors} sensors registered")
        hour = 3_600_000
        start_ms = (int(time.time() * 1000) - int(days * 86_400_000)) // hour * hour
        _refuse_a_replay(database_url, start_ms, data_dir, days)
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        signal.signal(signal.SIGTERM, terminate)  # Ray's driver installs its own
        started_ray = address is None
        print("Ray: " + (f"connected to {address}" if address else "started a local head"))
        from actors.history import HistoryWriter

        # actors get the NATS URL without its password: each reads it on its node
        history = HistoryWriter.options(  # type: ignore[attr-defined]
            name="tf-history-writer"
        ).remote(actor_nats_url, database_url)
        ray.get(history.start.remote())
        print("history writer: JetStream -> PostgreSQL (a Ray actor, restarted if it dies)")
        if server is not None:
            intake = _start_mqtt(plant, data_dir, actor_nats_url, mqtt_port)
        print("RUL models (one per machine type):")
        models = load_or_train(plant, data_dir, seed=seed, lives=lives)
        step_s = step_minutes * 60.0
        machines, config = polled_plant(plant, step_minutes)
        fleet = Fleet(
            machines,
            actor_nats_url,
            machines_per_host=machines_per_host,
            models={t: m.to_bytes() for t, m in models.items()},
            config=dataclasses.asdict(config),
            name="plant",
            gateway_sites=registered_gateway_sites(data_dir),
        ).start()
        fleet.wait_ready()
        print(f"fleet: {len(machines)} machines on {len(fleet.hosts)} host actor(s)")
        from actors.maintenance import MaintenanceActor

        maintenance = MaintenanceActor.options(  # type: ignore[attr-defined]
            name="tf-maintenance"
        ).remote(polled_alerting(plant, step_minutes).model_dump_json(), actor_nats_url, fleet.name)
        ray.get(maintenance.start.remote())
        print(
            f"maintenance: alerts ({len(plant.alert_rules)} rules), predictive work orders and "
            f"the plan of {len(plant.technicians)} technicians (CP-SAT; a Ray actor)"
        )
        api_up = True
        _start_api(data_dir, actor_nats_url, database_url, fleet.name, machines, api_port, api_ca)
        print(f"simulating {days:g} days at {step_minutes:g}-minute scans")
        sim = PlantSimulator(
            plant, seed=seed, start_ms=start_ms, initial_wear=worn_start(plant, worn)
        )
        stored = Stored(database_url, _stored_readings(database_url))
        asyncio.run(
            _simulate(
                sim,
                fleet,
                history,
                maintenance,
                nats_url,
                days,
                step_s,
                report_every_s,
                top,
                stored,
            )
        )
        if stay:
            print("services stay up; Ctrl-C stops them")
            while True:
                time.sleep(1.0)
        return 0
    finally:
        if api_up:
            from ray import serve

            serve.shutdown()
        if fleet is not None:
            fleet.stop()
        if maintenance is not None:
            with contextlib.suppress(Exception):
                ray.get(maintenance.stop.remote(), timeout=30)
        if history is not None:
            with contextlib.suppress(Exception):
                ray.get(history.stop.remote(), timeout=30)
        if intake is not None:
            with contextlib.suppress(Exception):
                ray.get(intake.stop.remote(), timeout=30)
        if started_ray:
            ray.shutdown()
        # PostgreSQL (its shutdown checkpoint) and nats-server stop side by side: nothing
        # uses either once Ray is down
        servers = [s for s in (database, server) if s is not None]
        if servers:
            with ThreadPoolExecutor(len(servers)) as pool:
                list(pool.map(lambda s: s.stop(), servers))
        print(
            "stopped: API, fleet, maintenance, history writer, Ray, PostgreSQL and nats-server "
            "(those this command started)"
        )


def _api_https(data_dir: Path, address: str | None) -> Path:
    """``twinfleet up --https``: HAProxy, Serve's ingress, serves the API over HTTPS with
    the hub's server certificate (its wrapper adds ``ssl crt`` to the API frontend's bind,
    :data:`twinfleet.loopback.API_TLS_ENV`); returns the CA's file to check it with. Set
    before Ray starts: the wrapper runs in a process Ray starts."""
    from twinfleet.loopback import API_TLS_ENV
    from twinfleet.pki import pki_dir, tls_files, write_private

    if address is not None:
        raise ServiceError(
            "--https needs the local Ray head twinfleet up starts (RAY_ADDRESS is set): on "
            "a cluster, terminate TLS in front of the API"
        )
    tls = tls_files(data_dir)
    if tls is None:
        raise ServiceError(f"--https needs certificates in {pki_dir(data_dir)}: twinfleet pki init")
    pem = pki_dir(data_dir) / "api.pem"  # HAProxy wants the certificate and key in one file
    write_private(pem, tls.cert_file.read_bytes() + tls.key_file.read_bytes())
    os.environ[API_TLS_ENV] = str(pem.resolve())
    return tls.ca_file


def _trust_hub_ca(data_dir: Path) -> bool:
    """When the hub has TLS (``twinfleet pki init``): this process and those Ray starts
    from it trust the hub's CA (``TWINFLEET_NATS_CA_FILE``, and ``SSL_CERT_FILE`` naming
    the system's CAs plus the hub's, for clients given no context: :mod:`bus.connect`).
    Set before Ray starts, so its workers inherit them. Without TLS nothing changes."""
    from bus.connect import NATS_CA_FILE_ENV, trust_bundle
    from twinfleet.pki import pki_dir, tls_files

    tls = tls_files(data_dir)
    if tls is None:
        return False
    os.environ[NATS_CA_FILE_ENV] = str(tls.ca_file.resolve())
    bundle = trust_bundle(tls.ca_file, pki_dir(data_dir) / "trust-bundle.pem")
    os.environ["SSL_CERT_FILE"] = str(bundle.resolve())
    return True


def registered_gateway_sites(data_dir: Path) -> dict[str, list[str]]:
    """The sites of every gateway registered with this hub (``twinfleet gateway add``)."""
    from twinfleet.natsconf import gateways_dir, load_gateways

    return {g.gateway_id: list(g.sites) for g in load_gateways(gateways_dir(data_dir))}


def _start_mqtt(plant: Plant, data_dir: Path, nats_url: str, mqtt_port: int) -> Any:
    """The MQTT and Sparkplug B intake (a Ray actor) on the hub's MQTT listener."""
    import ray

    from actors.mqtt import MqttIntakeActor
    from twinfleet.natsconf import load_mqtt_devices, mqtt_devices_dir

    devices = load_mqtt_devices(mqtt_devices_dir(data_dir))
    intake = MqttIntakeActor.options(name="tf-mqtt-intake").remote(  # type: ignore[attr-defined]
        plant.model_dump_json(),
        nats_url,  # the user's name only: the actor reads the password on its node
        mqtt_port,
        [t for d in devices for t in d.topics],
    )
    ray.get(intake.start.remote())
    print(
        f"MQTT and Sparkplug B on 127.0.0.1:{mqtt_port} (nats-server's MQTT listener; "
        f"{len(devices)} registered device(s), twinfleet mqtt add): a Ray actor"
    )
    return intake


def _refuse_a_replay(database_url: str, start_ms: int, data_dir: Path, days: float) -> None:
    """A second run on the same data: the history already holds readings of the days this
    run would simulate (an earlier run), which its twins and writer have seen. Simulating
    them again would only be refused, every reading, as a repeat or out of order (a
    second run used to end with no twin events, nothing stored and tens of thousands of
    dead letters, without a word on why): say so and stop before starting anything else."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT greatest((SELECT max(ts) FROM readings), "
            "(SELECT max(last_ts) FROM reading_blocks))"
        ).fetchone()
    latest = row[0] if row else None
    if latest is None or latest.timestamp() * 1000 < start_ms:
        return
    until = iso_utc(latest.timestamp() * 1000)
    raise ServiceError(
        f"the history already holds this plant's readings up to {until}"
        f" (an earlier run on {data_dir}): the {days:g} days this run would simulate have "
        "been seen by its twins and stored, and replaying them would only have every reading "
        f"refused as a repeat. For a fresh run, remove {data_dir} or give another "
        "--data-dir."
    )


def _prepare_database(database_url: str, plant: Plant) -> int:
    """Migrate the schema and register the plant's assets, sensors and technicians."""
    import psycopg

    from store.migrations import migrate
    from store.registry import register_plant

    with psycopg.connect(database_url) as conn:
        migrate(conn)
        return register_plant(conn, plant)


async def _prepare_hub(nats_url: str, data_dir: Path, retention: Retention) -> int:
    """Create the streams, set the telemetry's retention, and let the hub source every
    registered gateway's edge store."""
    import nats

    from actors.bus import ensure_jetstream, source_gateways
    from bus.retention import apply_retention
    from twinfleet.natsconf import gateways_dir, load_gateways

    gateways = load_gateways(gateways_dir(data_dir))
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_jetstream(js)
        await apply_retention(js, retention)
        await source_gateways(js, gateways)
    finally:
        await nc.close()
    return len(gateways)


def _start_api(
    data_dir: Path,
    nats_url: str,
    database_url: str,
    fleet_name: str,
    machines: list[Any],
    port: int,
    https_ca: Path | None = None,
) -> None:
    """Deploy the Serve app, check that it answers, and print how to use it (over HTTPS,
    trusting ``https_ca``, when its frontend has TLS: :func:`_api_https`)."""
    import urllib.request

    import serve_app
    from api.auth import Authority, Role
    from twinfleet.services import api_secret
    from twinfleet.users import first_admin

    secret = api_secret(data_dir)
    settings = {  # no secret: the replicas read it on their node (serve_app.TwinApi)
        "nats_url": nats_url,
        "fleet_name": fleet_name,
        "database_url": database_url,
    }
    url = serve_app.deploy(settings, machines, port=port)
    context = None
    if https_ca is not None:
        from bus.connect import tls_context

        url = "https://" + url.removeprefix("http://")
        context = tls_context(https_ca)
    authority = Authority(secret)
    viewer = authority.issue("up-viewer", Role.VIEWER)
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": "{ fleetHealth { machines } }"}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {viewer}"},
    )
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        machines_seen = json.loads(answer.read())["data"]["fleetHealth"]["machines"]
    print(f"API: {url} (GraphQL and GraphiQL at /graphql, REST at /api/v1, OpenAPI at /docs)")
    print(
        f"   it answers for {machines_seen} machines; tokens valid 12 h "
        "(more: twinfleet token --role ...):"
    )
    print(f"   viewer:   {viewer}")
    print(f"   engineer: {authority.issue('up-engineer', Role.ENGINEER)}")
    first = first_admin(database_url)
    print(f"dashboard: {url}/ (people log in; twinfleet user add NAME --role ROLE adds them)")
    if first is not None:
        print(f"   first admin user: {first[0]}  password: {first[1]}  (shown only now)")


async def _simulate(
    sim: Any,
    fleet: Any,
    history: Any,
    maintenance: Any,
    url: str,
    days: float,
    step_s: float,
    report_every_s: float,
    top: int,
    stored: Stored | None = None,
) -> None:
    import nats

    from actors.bus import ensure_jetstream

    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_jetstream(js)
    watcher = Watcher(TimeOrderedLeadTimes(start_ms=sim.now_ms))
    await watcher.start(nc)
    steps = int(days * 86_400 / step_s)
    published = readings = 0
    failures_seen = repairs_seen = 0
    last_report = time.monotonic()
    began = time.monotonic()
    for _ in range(steps):
        acks = []
        for batch in sim.advance(step_s):
            machine = batch.readings.machine_id[0]
            acks.append(
                js.publish(
                    subjects.telemetry(batch.site_id, machine),
                    batch.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": f"{batch.gateway_id}-{batch.batch_id}"},
                )
            )
            readings += len(batch)
        await asyncio.gather(*acks)
        published += len(acks)
        for event in sim.failures[failures_seen:]:
            print(f"   X {iso_utc(event.timestamp_ms)} {event.machine_id} FAILED ({event.mode})")
            watcher.warnings.failure(event.machine_id, event.mode.value, event.timestamp_ms)
        failures_seen = len(sim.failures)
        repairs = sim.maintenance[repairs_seen:]
        if repairs:  # told once the twins have every reading before them
            await _applied(fleet, published)
            for job in repairs:
                host = fleet.host_of(job.machine_id)
                for mode in job.modes:
                    await host.record_repair.remote(job.machine_id, mode.value, job.timestamp_ms)
                watcher.warnings.repair(job.machine_id, job.timestamp_ms)
                print(
                    f"   + {iso_utc(job.timestamp_ms)} {job.machine_id} repaired "
                    f"({', '.join(m.value for m in job.modes)}); its twin was told"
                )
            repairs_seen = len(sim.maintenance)
        if time.monotonic() - last_report >= report_every_s:
            last_report = time.monotonic()
            print(f"== {iso_utc(sim.now_ms)}: {published:,} messages ({readings:,} readings) sent")
            for line in watcher.report(top):
                print(line)
            print(_history_line(await history.status.remote()))
            print(_maintenance_line(await maintenance.status.remote()))
    await _applied(fleet, published, timeout_s=300.0)
    await asyncio.sleep(0.5)  # the last events arrive
    took = time.monotonic() - began
    print(
        f"\n== summary: {readings:,} readings in {published:,} messages through NATS and Ray "
        f"in {took:.1f} s ({readings / max(took, 1e-9):,.0f} readings/s end to end)"
    )
    for line in watcher.report(top):
        print(line)
    print(f"   failures in the simulated plant: {len(sim.failures)}")
    for stats in fleet.stats():
        print(
            f"   host {stats['host_id']}: {stats['machines']} machines, "
            f"{stats['messages']:,} messages applied"
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = await history.status.remote()
        if status["pending_messages"].get("TELEMETRY", 1) == 0:
            break
        await asyncio.sleep(0.5)
    if stored is None:
        print(_history_line(status))
    else:
        total = await asyncio.to_thread(_stored_readings, stored.database_url)
        print(_history_line(status, (total - stored.before, total)))
    await asyncio.sleep(1.0)  # the last predictions reach the maintenance service
    await maintenance.replan.remote()
    status = await maintenance.status.remote()
    for line in _maintenance_report(status, top):
        print(line)
    print("\n== warnings before failures (simulated plant time)")
    for line in watcher.warnings.report(sim.now_ms).lines():
        print(f"   {line}")
    print("\n== alarms (plant time)")
    for line in status.get("alarm_kpis_text", []):
        print(f"   {line}")
    for advice in status.get("rule_advice", []):
        print(f"   advice: {advice}")
    await nc.drain()


async def _applied(fleet: Any, published: int, timeout_s: float = 120.0) -> None:
    """Wait until the fleet's hosts have applied ``published`` messages (or time out)."""
    deadline = time.monotonic() + timeout_s
    while sum(s["messages"] for s in fleet.stats()) < published and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def _maintenance_line(status: dict[str, Any]) -> str:
    return (
        f"   maintenance: {status['open_alerts']} open alerts "
        f"({status['critical_alerts']} critical), {status['open_work_orders']} open work "
        f"orders ({status['unscheduled']} not schedulable)"
    )


def _maintenance_report(status: dict[str, Any], top: int) -> list[str]:
    lines = [_maintenance_line(status).replace("   maintenance:", "\n== maintenance:")]
    for w in status["next"][: max(top, 5)]:
        due = f", due by {w['due_by'][:16]}" if w.get("due_by") else ""
        lines.append(
            f"   {w['workorder_id']} {w['asset_id']:7} {w['title'][:44]:44} "
            f"{w['start'][:16]} with {w['technician_id']}{due}"
        )
    for u in status["unscheduled_orders"][:top]:
        lines.append(f"   {u['workorder_id']} {u['asset_id']:7} NOT SCHEDULED: {u['reason']}")
    plan = status.get("plan_cost")
    if plan:
        lines.append(
            f"   plan cost {plan['total']:,.0f} (labour {plan['labor']:,.0f}, parts "
            f"{plan['parts']:,.0f}, downtime {plan['downtime']:,.0f}, risk {plan['risk']:,.0f}); "
            f"{status['solver']} {status['plan_status']} in {status['solve_seconds']:.1f} s"
        )
    return lines


@dataclasses.dataclass(frozen=True)
class Stored:
    """The database, and the readings it held before this run."""

    database_url: str
    before: int


def _stored_readings(database_url: str) -> int:
    """The readings PostgreSQL holds: raw rows and those compacted into blocks. Counted in
    the database, so the figure is true whatever restarted meanwhile (a history writer
    restarted by Ray starts its counters again)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings) "
            "+ (SELECT coalesce(sum(n), 0) FROM reading_blocks)"
        ).fetchone()
    return int(row[0]) if row else 0


def _history_line(status: dict[str, Any], stored: tuple[int, int] | None = None) -> str:
    """The history writer's progress; with ``stored`` (readings stored in this run, in
    all), the readings as PostgreSQL counts them rather than the writer's counters."""
    counters = status["counters"]
    refused = sum(status["refused_rows"].values())
    if stored is None:
        readings = (
            f"{counters.get('rows_written', 0):,} readings written by the writer process "
            "since it started"
        )
    else:
        readings = f"{stored[0]:,} readings stored in this run ({stored[1]:,} in PostgreSQL)"
    return (
        f"   history: {readings}, "
        f"{counters.get('events_stored', 0):,} events by the writer process, "
        f"{status['pending_messages'].get('TELEMETRY', 0):,} messages to go "
        f"(lag {status['lag_s']:.1f} s), {refused:,} rows refused"
    ) + "".join(f"\n   ! {w}" for w in status.get("storage_warnings", []))
