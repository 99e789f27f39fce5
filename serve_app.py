"""The Ray Serve application: GraphQL (queries, mutations, subscriptions) and REST over
the fleet of twins (the routes and schema are in :mod:`api`).

Each replica of :class:`TwinApi` holds its own :class:`api.view.FleetView`, fed by the
NATS subjects the machine actors publish, and answers twin queries from it; a consistent
read, clones and what-if go to the actors (:class:`actors.access.FleetAccess`). Replicas
share nothing but NATS and Ray, so they can be added freely.

Started by ``twinfleet up`` (see :func:`deploy`), by the tests and by the API benchmark;
``serve run serve_app:app nats_url=... plant=... secret=... [database_url=...]`` works as
well. The settings are those of :class:`api.app.Settings` (``database_url`` turns on the
history routes).

Secrets do not travel in the settings (deployment arguments are readable by any client of
the cluster): without ``secret`` the replica reads the signing secret on its node
(:func:`twinfleet.services.api_secret_on_node`), a NATS URL with a user and no password
gets it there (:func:`bus.connect.nats_url_on_node`) and a database URL without a
password uses libpq's ``PGPASSFILE``. The replica's inter-deployment gRPC server listens
on the node's address (:func:`twinfleet.loopback.serve_replica_on_node_address`), not on
every interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from ray import serve

CLONE_SWEEP_S = 30.0


@serve.deployment(
    name="TwinApi",
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=5000,
    health_check_period_s=10,
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
)
@serve.ingress()
class TwinApi:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self, settings: dict[str, Any], machines: list[str]
    ) -> None:
        from actors.access import FleetAccess
        from api.app import Settings, start_services
        from bus.connect import nats_url_on_node
        from schemas.plant import MachineSpec
        from twinfleet.loopback import serve_replica_on_node_address
        from twinfleet.services import api_secret_on_node

        serve_replica_on_node_address()  # before Serve starts the replica's gRPC server

        on_node = dict(settings, nats_url=nats_url_on_node(settings["nats_url"]))
        if not on_node.get("secret"):
            on_node["secret"] = api_secret_on_node()
        config = Settings(**on_node)
        specs = [MachineSpec.model_validate_json(m) for m in machines]
        self.services = await start_services(config, specs, access=FleetAccess(config.fleet_name))
        self.services.access.keep_spare()  # the first clone need not wait for a worker
        self._sweeper = asyncio.create_task(self._sweep_clones())

    async def _sweep_clones(self) -> None:
        """Retire clones whose time to live is over (any replica may; the registry
        hands each expired clone to one of them)."""
        while True:
            await asyncio.sleep(CLONE_SWEEP_S)
            with contextlib.suppress(Exception):  # the fleet may be stopping
                await self.services.access.expire_clones()

    async def __del__(self) -> None:
        """Serve awaits this when the replica stops: close the history pool and NATS."""
        if hasattr(self, "_sweeper"):
            self._sweeper.cancel()
        if hasattr(self, "services"):
            await self.services.stop()

    def __serve_build_asgi_app__(self) -> Any:
        from api.app import create_app

        return create_app(self.services)

    async def check_health(self) -> None:
        nc = self.services.view.nc
        if nc is None or not nc.is_connected:
            raise RuntimeError("not connected to NATS")


def build(settings: dict[str, Any], machines: list[Any], replicas: int = 1) -> Any:
    """The application, for :func:`ray.serve.run`."""
    return TwinApi.options(num_replicas=replicas).bind(  # type: ignore[attr-defined]
        settings, [m.model_dump_json() for m in machines]
    )


def deploy(
    settings: dict[str, Any],
    machines: list[Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
) -> str:
    """Start Serve's HTTP proxy on ``host:port`` and the application; returns its URL."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(settings, machines, replicas), name="twinfleet", route_prefix="/")
    return f"http://{host}:{port}"


def app(args: dict[str, str]) -> Any:
    """For ``serve run serve_app:app nats_url=nats://... plant=FILE secret=...``."""
    from schemas.plant import load_plant

    plant = load_plant(Path(args["plant"]))
    settings = {
        "nats_url": args["nats_url"],
        "secret": args["secret"],
        "fleet_name": args.get("fleet", "plant"),
        "database_url": args.get("database_url"),
    }
    return build(settings, list(plant.machines), int(args.get("replicas", 1)))
