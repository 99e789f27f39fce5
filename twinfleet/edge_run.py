"""``twinfleet edge``, ``twinfleet sim`` and ``twinfleet gateway add``: the edge side of
the command line (the commands parse arguments in :mod:`twinfleet.cli`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from schemas.plant import Plant


def run_edge(config_path: Path, status_every_s: float = 10.0) -> int:
    """Run a gateway until Ctrl-C or SIGTERM, printing its status now and then."""
    from bus.connect import SecretFileUnsafe
    from edge.config import GatewayConfigError, load_gateway_config
    from edge.gateway import Gateway
    from schemas.plant import load_plant
    from twinfleet.natsconf import GatewayCredentials

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for chatty in ("asyncua", "pymodbus", "nats"):  # per-message INFO lines
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        cfg = load_gateway_config(config_path)
        creds = GatewayCredentials.load(cfg.hub.credentials)  # refused unless mode 0600
        gateway = Gateway(cfg, load_plant(cfg.plant), creds)
    except (GatewayConfigError, OSError, ValueError, KeyError, SecretFileUnsafe) as exc:
        print(f"twinfleet edge: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(gateway.run(stop))
        while not task.done():
            await asyncio.wait({task}, timeout=status_every_s)
            if not task.done() and gateway.ready.is_set():
                st = gateway.status()
                c = st["counts"]
                print(
                    f"edge {cfg.gateway_id}: read {c.get('received', 0)}, refused "
                    f"{c.get('rejected', 0)}, forwarded {c.get('readings_forwarded', 0)} "
                    f"readings + {c.get('aggregates_forwarded', 0)} aggregates in "
                    f"{c.get('batches', 0)} batches, alerts {c.get('alerts', 0)}, "
                    f"stored {st['store']['messages']} msgs / {st['store']['bytes']} bytes, "
                    f"discarded by budget {st['store']['discarded_by_budget']}, detection "
                    f"p99 {st['detection_ms']['p99']:.2f} ms",
                    flush=True,
                )
        task.result()

    asyncio.run(main())
    print(f"edge {cfg.gateway_id}: stopped; status in {cfg.store.dir / 'status.json'}")
    return 0


def run_sim(
    protocol: str,
    plant: Plant,
    host: str,
    port: int,
    seed: int,
    speed: float,
    tick_s: float = 1.0,
    *,
    user: str | None = None,
    password: str | None = None,
    only: tuple[str, str] | None = None,
) -> int:
    """Serve the simulated plant over OPC UA or Modbus TCP, or publish it as Sparkplug B
    edge nodes to the MQTT broker at ``host:port``, until Ctrl-C. Sparkplug goes over TLS,
    trusting only the hub's CA, when ``TWINFLEET_NATS_CA_FILE`` names it (a hub with TLS,
    ``twinfleet pki init``, takes MQTT over TLS only: its ``DATA_DIR/pki/ca.pem``)."""

    async def main() -> None:
        if protocol == "sparkplug":
            from bus.connect import nats_tls_on_node
            from drivers.sparkplug_sim import serve_sparkplug

            serving = serve_sparkplug(
                plant,
                host,
                port,
                seed,
                tick_s=tick_s,
                speed=speed,
                user=user,
                password=password,
                only=only,
                tls=nats_tls_on_node(),
            )
        elif protocol == "opcua":
            from drivers.opcua_sim import serve_opcua

            serving = serve_opcua(
                plant, host=host, port=port, seed=seed, speed=speed, tick_s=tick_s
            )
        else:
            from drivers.modbus_sim import serve_modbus

            serving = serve_modbus(
                plant, host=host, port=port, seed=seed, speed=speed, tick_s=tick_s
            )
        task = asyncio.ensure_future(serving)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        where = "to the MQTT broker at" if protocol == "sparkplug" else "on"
        print(f"simulated {protocol} plant {plant.name!r} {where} {host}:{port}; Ctrl-C stops it")
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


def add_gateway(data_dir: Path, gateway_id: str, sites: list[str], plant: Plant) -> int:
    """Register a gateway with the hub: its NATS users and the sites it may publish for."""
    from twinfleet.natsconf import GatewayCredentials, gateways_dir
    from twinfleet.pki import hub_ca_pem

    known = {s.id for s in plant.sites}
    unknown = [s for s in sites if s not in known]
    if unknown:
        print(
            f"twinfleet gateway add: sites not in plant {plant.name!r}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})",
            file=sys.stderr,
        )
        return 2
    path = gateways_dir(data_dir) / f"{gateway_id}.json"
    if path.exists():
        print(f"twinfleet gateway add: {path} exists (remove it to re-issue)", file=sys.stderr)
        return 2
    try:
        creds = GatewayCredentials.new(gateway_id, sites, hub_ca=hub_ca_pem(data_dir))
    except ValueError as exc:
        print(f"twinfleet gateway add: {exc}", file=sys.stderr)
        return 2
    creds.save(gateways_dir(data_dir))
    print(f"gateway {gateway_id} may publish for {', '.join(sites)}")
    print(f"credentials: {path} (mode 0600; copy it to the gateway, point hub.credentials at it)")
    print("the hub loads gateways when it starts: restart 'twinfleet up' to let it in")
    return 0
