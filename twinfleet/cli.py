"""The ``twinfleet`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.plant import Plant, PlantFileError, load_plant
from twinfleet.users import add_commands as add_user_commands

if TYPE_CHECKING:
    from twins.training import History

EXAMPLE_PLANT = "example.yaml"


def _example_plant_path() -> Path:
    return Path(str(resources.files("twinfleet") / "plants" / EXAMPLE_PLANT))


def _plant(path: str | None) -> Plant:
    return load_plant(path or _example_plant_path())


def _data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("TWINFLEET_DATA", "data")).resolve()


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def cmd_demo(args: argparse.Namespace) -> int:
    from twinfleet.demo import run

    run(
        _plant(args.plant),
        _data_dir(args.data_dir),
        days=args.days,
        step_minutes=args.step_minutes,
        report_hours=args.report_hours,
        seed=args.seed,
        worn=args.worn,
        top=args.top,
        lives=args.lives,
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from bus.retention import Retention
    from twinfleet.services import ServiceError
    from twinfleet.up import run_up

    budget = args.telemetry_budget_mb
    try:
        retention = Retention(args.telemetry_days, None if budget is None else budget << 20)
    except ValueError as exc:
        print(f"twinfleet up: {exc}", file=sys.stderr)
        return 2
    try:
        return run_up(
            _plant(args.plant),
            _data_dir(args.data_dir),
            days=args.days,
            step_minutes=args.step_minutes,
            seed=args.seed,
            worn=args.worn,
            machines_per_host=args.machines_per_host,
            nats_port=args.nats_port,
            leaf_port=args.leaf_port,
            mqtt_port=args.mqtt_port,
            db_port=args.db_port,
            api_port=args.api_port,
            stay=args.stay,
            lives=args.lives,
            https=args.https,
            retention=retention,
        )
    except ServiceError as exc:
        print(f"twinfleet up: {exc}", file=sys.stderr)
        return 2


def cmd_token(args: argparse.Namespace) -> int:
    from api.auth import Authority, Role
    from twinfleet.services import api_secret

    role = Role(args.role)
    if role is Role.GATEWAY and not (args.gateway_id and args.site):
        print("twinfleet token: a gateway token needs --gateway-id and --site", file=sys.stderr)
        return 2
    if role is not Role.GATEWAY and (args.gateway_id or args.site):
        print("twinfleet token: --gateway-id and --site are for --role gateway", file=sys.stderr)
        return 2
    authority = Authority(api_secret(_data_dir(args.data_dir)))
    try:
        token = authority.issue(
            args.subject or (args.gateway_id if role is Role.GATEWAY else f"local-{role.value}"),
            role,
            ttl_s=args.ttl_hours * 3600.0,
            gateway_id=args.gateway_id,
            sites=args.site,
        )
    except ValueError as exc:
        print(f"twinfleet token: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"token id: {authority.verify(f'Bearer {token}').token_id}", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke one API token (by id) or every token of a user, at every replica."""
    import asyncio

    import nats

    from api.revocations import revoke
    from twinfleet.natsconf import INTERNAL_USER, internal_password

    if (args.token_id is None) == (args.user is None):
        print("twinfleet revoke: give --token-id or --user (one of them)", file=sys.stderr)
        return 2
    from bus.connect import nats_tls_options, tls_context
    from twinfleet.pki import tls_files

    url = args.nats_url or os.environ.get("NATS_URL")
    tls = nats_tls_options()  # $TWINFLEET_NATS_CA_FILE, else the local hub's CA if it has TLS
    if url is None:
        password = internal_password(_data_dir(args.data_dir))
        url = f"nats://{INTERNAL_USER}:{password}@127.0.0.1:{args.nats_port}"
        hub_tls = tls_files(_data_dir(args.data_dir))
        if hub_tls is not None and not tls:
            tls = {"tls": tls_context(hub_tls.ca_file)}

    async def run() -> str:
        nc = await nats.connect(url, max_reconnect_attempts=0, connect_timeout=5, **tls)
        try:
            return await revoke(nc.jetstream(), token_id=args.token_id, subject=args.user)
        finally:
            await nc.drain()

    try:
        key = asyncio.run(run())
    except ValueError as exc:
        print(f"twinfleet revoke: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        print(f"twinfleet revoke: the hub's NATS is not reachable ({exc!r})", file=sys.stderr)
        return 1
    what = f"token {args.token_id}" if args.token_id else f"every token of {args.user!r}"
    print(f"revoked {what} ({key}); every API replica refuses it within seconds")
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    from twinfleet.edge_run import run_edge

    return run_edge(Path(args.config))


def cmd_sim(args: argparse.Namespace) -> int:
    from twinfleet.edge_run import run_sim

    port = args.port or {"opcua": 4840, "modbus": 5020, "sparkplug": 1883}[args.protocol]
    user = password = None
    only = None
    if args.protocol == "sparkplug" and args.device:
        from twinfleet.natsconf import MqttDevice, mqtt_devices_dir

        path = mqtt_devices_dir(_data_dir(args.data_dir)) / f"{args.device}.json"
        if not path.exists():
            print(f"twinfleet sim: no MQTT device {args.device!r} ({path})", file=sys.stderr)
            return 2
        device = MqttDevice.load(path)
        user, password = device.user, device.password
        if device.group is not None and device.edge_node is not None:
            only = (device.group, device.edge_node)
    return run_sim(
        args.protocol,
        _plant(args.plant),
        args.host,
        port,
        args.seed,
        args.speed,
        args.tick,
        user=user,
        password=password,
        only=only,
    )


def cmd_mqtt_add(args: argparse.Namespace) -> int:
    from twinfleet.natsconf import MqttDevice, mqtt_devices_dir

    path = mqtt_devices_dir(_data_dir(args.data_dir)) / f"{args.name}.json"
    if path.exists():
        print(f"twinfleet mqtt add: {path} exists (remove it to re-issue)", file=sys.stderr)
        return 2
    sparkplug = None
    if args.sparkplug:
        group, _, node = args.sparkplug.partition("/")
        if not group or not node or "/" in node:
            print("twinfleet mqtt add: --sparkplug is GROUP/EDGE_NODE", file=sys.stderr)
            return 2
        sparkplug = (group, node)
    try:
        device = MqttDevice.new(args.name, sparkplug=sparkplug, topics=args.topic)
    except ValueError as exc:
        print(f"twinfleet mqtt add: {exc}", file=sys.stderr)
        return 2
    device.save(path.parent)
    topics = ", ".join(device.topics)
    what = f"Sparkplug edge node {args.sparkplug}" if sparkplug else f"topics {topics}"
    print(f"MQTT device {args.name} ({what}) saved in {path}")
    print(f"   user {device.user}, password {device.password}")
    print("   the hub accepts it from its next start (twinfleet up)")
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from twinfleet.edge_run import add_gateway

    return add_gateway(_data_dir(args.data_dir), args.gateway_id, args.site, _plant(args.plant))


def cmd_pki(args: argparse.Namespace) -> int:
    from twinfleet.pki import PkiError, init_hub

    opt = {k: Path(v) if v else None for k, v in vars(args).items() if k.startswith("own_")}
    try:
        lines = init_hub(_data_dir(args.data_dir), args.host or [], **opt)
    except PkiError as exc:
        print(f"twinfleet pki init: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def cmd_plant(args: argparse.Namespace) -> int:
    plant = _plant(args.file)
    kinds: dict[str, int] = {}
    for m in plant.machines:
        kinds[m.kind.value] = kinds.get(m.kind.value, 0) + 1
    sensors = sum(len(m.sensors) for m in plant.machines)
    print(f"{args.file or _example_plant_path()}: plant {plant.name!r} is valid")
    print(
        f"  sites: {len(plant.sites)}, lines: {sum(len(s.lines) for s in plant.sites)}, "
        f"machines: {len(plant.machines)} "
        f"({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}), "
        f"sensors: {sensors}, technicians: {len(plant.technicians)}"
    )
    return 0


def cmd_lives(args: argparse.Namespace) -> int:
    """Write the lives the history database recorded for one machine type (CSV)."""
    import asyncio

    import psycopg

    from store.lives import recorded_lives

    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("twinfleet lives: give --database-url or set DATABASE_URL", file=sys.stderr)
        return 2
    plant = _plant(args.plant)
    machines = [m for m in plant.machines if m.type == args.type]
    if not machines:
        known = ", ".join(sorted(plant.machine_types))
        print(
            f"twinfleet lives: no machine of type {args.type!r} (types: {known})", file=sys.stderr
        )
        return 2

    async def read() -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await recorded_lives(conn, machines)

    frame = asyncio.run(read())
    frame.to_csv(args.out, index=False)
    lives = frame["unit"].nunique()
    failed = frame.groupby("unit")["failure_mode"].last().astype(bool).sum() if lives else 0
    print(f"{args.out}: {lives} lives ({failed} ended in a failure), {len(frame)} hourly rows")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Print each model version's live accuracy on each machine type (twins/accuracy.py)."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    import psycopg

    from store.accuracy import live_accuracy
    from twins.accuracy import WEEK_H, describe

    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("twinfleet models: give --database-url or set DATABASE_URL", file=sys.stderr)
        return 2
    since = None if args.days is None else datetime.now(UTC) - timedelta(days=args.days)

    async def read() -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await live_accuracy(conn, since)

    found = asyncio.run(read())
    if not found:
        print("no stored prediction has an outcome yet (a failure, a repair or later data)")
        return 0
    for a in found:
        print(describe(a))
        for b in a.calibration.get(WEEK_H, []):
            print(
                f"  P(fail 7 d) {b.low:.1f}-{b.high:.1f}: {b.count} predictions, "
                f"mean {b.mean_predicted:.2f}, observed {b.observed_rate:.2f}"
            )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from twinfleet.histories import HistoryFileError, read_histories
    from twinfleet.models import (
        TRAINING_RECIPE,
        artifact_path,
        describe,
        fit_and_assess,
        representative,
        training_histories,
    )

    plant = _plant(args.plant)
    specs = representative(plant)
    unknown = sorted(set(args.type or []) - set(specs))
    if unknown:
        print(f"twinfleet train: no machine type {unknown} in the plant", file=sys.stderr)
        return 2
    if args.histories and len(args.type or []) != 1:
        print("twinfleet train: --histories needs exactly one --type", file=sys.stderr)
        return 2
    data_dir = _data_dir(args.data_dir)
    histories: Sequence[History]
    for i, (machine_type, spec) in enumerate(sorted(specs.items())):
        if args.type and machine_type not in args.type:
            continue
        if args.histories:
            try:
                histories = read_histories(args.histories, spec)
            except HistoryFileError as exc:
                print(f"twinfleet train: {exc}", file=sys.stderr)
                return 2
            source = f"{len(histories)} lives from {args.histories}"
        else:
            histories = training_histories(spec, seed=args.seed + 1000 * i, lives=args.lives)
            source = f"{len(histories)} simulated lives (seed {args.seed})"
        kind = {"aft": "Weibull AFT", "boosted": "boosted-index"}[args.model]
        print(f"{machine_type}: training a {kind} model on {source}")
        model, quality = fit_and_assess(spec, histories, kind=args.model)
        if args.model == "aft" and not args.histories:
            path = artifact_path(data_dir, machine_type, args.seed, args.lives)  # the demo's
        else:
            path = data_dir / "models" / f"{model.version_}-r{TRAINING_RECIPE}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(model.to_bytes())
        tmp.replace(path)
        row = [0.0] * len(model.features)
        started = time.perf_counter()
        for _ in range(200):
            model.predict(row, age=1000.0)
        per_call = (time.perf_counter() - started) / 200
        print(f"  {describe(quality)}")
        print(f"  one prediction takes {per_call * 1e6:.0f} us")
        print(f"  wrote {model!r}\n    to {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.benchmark == "rul":
        from twinfleet.benchmarks.cmapss import main as rul_main

        return rul_main(args.args)
    from twinfleet.benchmarks import nab

    rest = list(args.args)
    if rest and rest[0] == "--nab":
        return nab.main(rest[1:])
    if len(rest) == 1 and nab.is_nab_root(rest[0]):  # a NAB folder given as the only PATH
        return nab.main(rest)
    from twinfleet.benchmarks.skab import main as anomaly_main

    return anomaly_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinfleet",
        description="Digital twins of industrial machines: which will fail, when, and what to do.",
    )
    parser.add_argument("--version", action="version", version="twinfleet 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate a plant and watch its twins (the main job)")
    demo.add_argument("--plant", help="plant file (default: the bundled example, 52 machines)")
    demo.add_argument("--days", type=_positive(float), default=14.0, help="simulated days (14)")
    demo.add_argument(
        "--step-minutes",
        type=_positive(float),
        default=10.0,
        help="minutes between scans of every sensor (10)",
    )
    demo.add_argument(
        "--report-hours",
        type=_positive(float),
        default=48.0,
        help="simulated hours between fleet reports (48)",
    )
    demo.add_argument("--seed", type=int, default=7, help="simulation seed (7)")
    demo.add_argument("--worn", type=int, default=6, help="machines that start worn (6)")
    demo.add_argument("--top", type=_positive(int), default=8, help="machines per report (8)")
    demo.add_argument(
        "--lives",
        type=_positive(int),
        default=40,
        help="simulated run-to-failure lives per machine type to train on (40)",
    )
    demo.add_argument(
        "--data-dir", help="where models are kept (default $TWINFLEET_DATA or ./data)"
    )
    demo.set_defaults(func=cmd_demo)

    up = sub.add_parser(
        "up",
        help="the whole system: nats-server, Ray, machine actors, a simulated plant publishing",
    )
    up.add_argument("--plant", help="plant file (default: the bundled example, 52 machines)")
    up.add_argument("--days", type=_positive(float), default=14.0, help="simulated days (14)")
    up.add_argument(
        "--step-minutes", type=_positive(float), default=10.0, help="minutes between scans (10)"
    )
    up.add_argument("--seed", type=int, default=7, help="simulation seed (7)")
    up.add_argument("--worn", type=int, default=6, help="machines that start worn (6)")
    up.add_argument(
        "--machines-per-host",
        type=_positive(int),
        default=1000,
        help="machines per Ray host actor (1: every machine its own actor)",
    )
    up.add_argument(
        "--nats-port", type=_positive(int), default=4222, help="port of the nats-server (4222)"
    )
    up.add_argument(
        "--leaf-port",
        type=_positive(int),
        default=7422,
        help="port for edge gateways' leaf nodes (7422)",
    )
    up.add_argument(
        "--mqtt-port",
        type=_positive(int),
        default=1883,
        help="port of the hub's MQTT listener for MQTT and Sparkplug B devices (1883)",
    )
    up.add_argument(
        "--db-port",
        type=_positive(int),
        default=5433,
        help="port of the embedded PostgreSQL, unless DATABASE_URL is set (5433)",
    )
    up.add_argument("--api-port", type=_positive(int), default=8000, help="port of the API (8000)")
    up.add_argument("--stay", action="store_true", help="keep the services up until Ctrl-C")
    up.add_argument(
        "--telemetry-days",
        type=_positive(float),
        default=7.0,
        help="days the hub's JetStream keeps telemetry (7; docs/history.md)",
    )
    up.add_argument(
        "--telemetry-budget-mb",
        type=_positive(int),
        default=None,
        help="disk budget of the hub's telemetry stream in MiB (none); at the budget new "
        "messages are refused (gateways keep them), never old ones dropped",
    )
    up.add_argument(
        "--https",
        action="store_true",
        help="serve the API over HTTPS with DATA_DIR/pki's certificate (twinfleet pki init)",
    )
    up.add_argument(
        "--lives", type=_positive(int), default=40, help="simulated lives per type to train on"
    )
    up.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
    up.set_defaults(func=cmd_up)

    token = sub.add_parser(
        "token",
        help="issue an API bearer token (signed with DATA_DIR/api-secret)",
        description="Prints a JWT for the API: viewer (read, subscribe), operator (+ "
        "acknowledge anomalies), engineer (+ clones and what-if), admin, or gateway (send "
        "telemetry for its --site(s) only). Use it as 'Authorization: Bearer <token>'.",
    )
    token.add_argument(
        "--role", required=True, choices=["viewer", "operator", "engineer", "admin", "gateway"]
    )
    token.add_argument("--subject", help="who the token is for (shown as who acknowledged)")
    token.add_argument("--gateway-id", help="the gateway's id (gateway tokens)")
    token.add_argument("--site", action="append", help="a site the gateway may send for")
    token.add_argument("--ttl-hours", type=_positive(float), default=12.0, help="(12)")
    token.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
    token.set_defaults(func=cmd_token)

    revoke = sub.add_parser(
        "revoke",
        help="revoke an API token (by its id) or every token of a user",
        description="Writes the revocation to the hub's tf_revoked bucket; every API replica "
        "refuses the token(s) within seconds and closes their subscriptions. A token's id "
        "is printed by 'twinfleet token' (on stderr).",
    )
    revoke.add_argument("--token-id", help="the token's id (its jti)")
    revoke.add_argument("--user", help="every token of this subject issued until now")
    revoke.add_argument("--nats-url", help="default $NATS_URL, else the local hub's")
    revoke.add_argument("--nats-port", type=_positive(int), default=4222, help="(4222)")
    revoke.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
    revoke.set_defaults(func=cmd_revoke)

    edge = sub.add_parser(
        "edge",
        help="run an edge gateway: OPC UA / Modbus -> validate -> detect -> NATS",
        description="Reads the machines of its configuration file over OPC UA and Modbus, "
        "validates and checks every value at the edge, and forwards aggregates (and full "
        "resolution around anomalies) through its own leaf node, which keeps everything on "
        "disk while the hub is unreachable. The file format is in edge/config.py.",
    )
    edge.add_argument("--config", required=True, help="gateway configuration (YAML)")
    edge.set_defaults(func=cmd_edge)

    sim = sub.add_parser(
        "sim", help="serve the simulated plant over OPC UA or Modbus TCP, or as Sparkplug B"
    )
    sim.add_argument("protocol", choices=["opcua", "modbus", "sparkplug"])
    sim.add_argument("--plant", help="plant file (default: the bundled example)")
    sim.add_argument("--host", default="127.0.0.1", help="(127.0.0.1)")
    sim.add_argument(
        "--port",
        type=_positive(int),
        help="(opcua 4840, modbus 5020; sparkplug: the MQTT broker's, 1883)",
    )
    sim.add_argument(
        "--device",
        help="sparkplug: the MQTT device (twinfleet mqtt add) to connect as",
    )
    sim.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--speed", type=_positive(float), default=1.0, help="simulated s per s (1)")
    sim.add_argument(
        "--tick", type=_positive(float), default=1.0, help="seconds between value updates (1)"
    )
    sim.set_defaults(func=cmd_sim)

    gateway = sub.add_parser("gateway", help="register an edge gateway with the hub")
    gateway_sub = gateway.add_subparsers(dest="action", required=True)
    gateway_add = gateway_sub.add_parser(
        "add",
        help="issue a gateway's NATS users (it may publish only for its --site(s))",
    )
    gateway_add.add_argument("gateway_id")
    gateway_add.add_argument("--site", action="append", required=True, help="repeatable")
    gateway_add.add_argument("--plant", help="plant file (default: the bundled example)")
    gateway_add.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
    gateway_add.set_defaults(func=cmd_gateway)

    pki = sub.add_parser("pki", help="TLS for the hub's NATS client and leaf-node ports")
    pki_sub = pki.add_subparsers(dest="action", required=True)
    pki_init = pki_sub.add_parser(
        "init",
        help="make (or keep) a CA and the hub's server certificate in DATA_DIR/pki",
        description="Makes an EC P-256 CA and a server certificate for localhost, 127.0.0.1, "
        "::1 and every --host; an existing CA is kept. Or uses your own CA (--ca-cert with "
        "--ca-key, or with the --cert and --key it issued). twinfleet up turns TLS on when "
        "DATA_DIR/pki/server.pem exists (docs/security.md).",
    )
    pki_init.add_argument("--host", action="append", help="a name or address (repeatable)")
    pki_init.add_argument("--ca-cert", dest="own_ca_cert", help="your CA's certificate (PEM)")
    pki_init.add_argument("--ca-key", dest="own_ca_key", help="your CA's key (PEM)")
    pki_init.add_argument("--cert", dest="own_cert", help="a server certificate your CA issued")
    pki_init.add_argument("--key", dest="own_key", help="that certificate's key (PEM)")
    pki_init.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
    pki_init.set_defaults(func=cmd_pki)

    mqtt = sub.add_parser("mqtt", help="register MQTT and Sparkplug B devices with the hub")
    mqtt_sub = mqtt.add_subparsers(dest="action", required=True)
    mqtt_add = mqtt_sub.add_parser(
        "add",
        help="issue an MQTT user for a Sparkplug edge node or a plain device",
        description="The user may publish only in its own namespace: a Sparkplug edge "
        "node's messages (--sparkplug GROUP/EDGE_NODE), or the given plain topics.",
    )
    mqtt_add.add_argument("name")
    mqtt_add.add_argument("--sparkplug", metavar="GROUP/EDGE_NODE")
    mqtt_add.add_argument("--topic", action="append", help="a plain topic (repeatable)")
    mqtt_add.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
    mqtt_add.set_defaults(func=cmd_mqtt_add)

    plant = sub.add_parser("plant", help="validate a plant file and summarise it")
    plant.add_argument("file", nargs="?", help="plant file (default: the bundled example)")
    plant.set_defaults(func=cmd_plant)

    train = sub.add_parser(
        "train",
        help="train RUL models from simulated or recorded run-to-failure histories",
        description="Fits a survival RUL model per machine type, assesses it on held-out "
        "lives (concordance, interval coverage, calibration of P(fail within 7 days)) and "
        "writes a versioned JSON artifact into DATA_DIR/models. Histories come from the "
        "plant simulator, or from a CSV file (format: twinfleet/histories.py).",
    )
    train.add_argument("--plant", help="plant file (default: the bundled example)")
    train.add_argument(
        "--type", action="append", help="machine type to train (repeatable; default: all)"
    )
    train.add_argument("--histories", help="CSV of recorded lives (needs one --type)")
    train.add_argument("--model", choices=["aft", "boosted"], default="aft", help="(aft)")
    train.add_argument("--lives", type=_positive(int), default=40, help="simulated lives per type")
    train.add_argument("--seed", type=int, default=7)
    train.add_argument(
        "--data-dir", help="where models are kept (default $TWINFLEET_DATA or ./data)"
    )
    train.set_defaults(func=cmd_train)

    lives = sub.add_parser(
        "lives",
        help="export the machine lives the history database recorded (for train --histories)",
        description="Cuts each machine's hourly history at its completed work orders into "
        "lives (store/lives.py) and writes them as CSV in the format of train --histories.",
    )
    lives.add_argument("--type", required=True, help="machine type")
    lives.add_argument("--out", required=True, help="CSV file to write")
    lives.add_argument("--plant", help="plant file (default: the bundled example)")
    lives.add_argument("--database-url", help="default $DATABASE_URL")
    lives.set_defaults(func=cmd_lives)

    models = sub.add_parser(
        "models",
        help="live accuracy of the RUL models: predictions scored against recorded outcomes",
        description="Pairs every stored RUL prediction with how its machine's life ended "
        "(a failure, a repair before failure, or still running) and prints, per model version "
        "and machine type: interval coverage, median error, concordance, Brier score and "
        "calibration of P(fail within 7 days), and P(fail 7 d) a week before each failure.",
    )
    models.add_argument("--database-url", help="default $DATABASE_URL")
    models.add_argument(
        "--days", type=_positive(float), help="only predictions of the last DAYS days"
    )
    models.set_defaults(func=cmd_models)

    bench = sub.add_parser(
        "bench",
        help="public benchmarks: rul (NASA C-MAPSS) or anomaly (SKAB, NAB)",
        description="rul TRAIN TEST RUL [--cap 125] | anomaly PATH... (SKAB files or folders) "
        "| anomaly --nab [NAB_DIR] (NAB; a NAB folder, one holding combined_windows.json, "
        "given as the only PATH also runs NAB) "
        "(each reads only the files it is given; add -h after the name for details)",
    )
    bench.add_argument("benchmark", choices=["rul", "anomaly"])
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    bench.set_defaults(func=cmd_bench)

    add_user_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PlantFileError as exc:
        print(f"twinfleet: invalid plant file\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("twinfleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
