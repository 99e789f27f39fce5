"""nats-server configurations the CLI writes: the hub's and each edge gateway's.

The hub (``twinfleet up``) runs JetStream in the domain ``hub`` and accepts leaf nodes.
Every client needs a user:

* ``twinfleet``: the hub's own services (actors, API); full access;
* ``gw-<id>``: a gateway publishing straight to the hub ("direct" mode); it may publish
  only ``tf.telemetry.<site>.>`` for its own sites and its dead-letter subject;
* ``leaf-<id>``: a gateway's leaf node. Its telemetry reaches the hub only through the
  hub's stream *sourcing* from the leaf's JetStream domain (``edge-<id>``), filtered to
  its sites. The leaf user may not publish application subjects, KV or JetStream API
  requests into the hub (a deny list: the sourcing protocol itself uses inbox and
  ``$JS`` reply subjects, so those stay open).

A gateway's own leaf node (started by ``twinfleet edge``) has one user for the gateway
process, allowed to publish only its sites' telemetry, its dead-letter subject and its
local alerts, so the gateway cannot write outside its subjects at either server.

Permissions on leafnode users need them in the main ``authorization`` block: nats-server
2.9 refuses ``permissions`` inside ``leafnodes.authorization``.

>>> creds = GatewayCredentials.new("gw-1", ["plant-north"])
>>> creds.edge_domain
'edge-gw-1'
>>> "tf.telemetry.plant-north.>" in creds.publish_subjects()
True
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from schemas.subjects import (
    PREFIX,
    dead_letter,
    edge_alert_all,
    telemetry_site,
)
from twinfleet.services import NatsServer

HUB_DOMAIN = "hub"
INTERNAL_USER = "twinfleet"
_LEAF_DENY = [f"{PREFIX}.>", "$KV.>", "$OBJ.>", "$JS.API.>", f"$JS.{HUB_DOMAIN}.API.>"]


def _q(value: object) -> str:
    """A value as nats-server config accepts it (JSON strings and lists are valid)."""
    return json.dumps(value)


def edge_domain(gateway_id: str) -> str:
    return f"edge-{gateway_id}"


@dataclass(frozen=True)
class GatewayCredentials:
    """A gateway's identity at the hub: its sites and two passwords (direct and leaf)."""

    gateway_id: str
    sites: tuple[str, ...]
    direct_password: str
    leaf_password: str

    @classmethod
    def new(cls, gateway_id: str, sites: list[str]) -> GatewayCredentials:
        if not sites:
            raise ValueError(f"gateway {gateway_id!r} needs at least one site")
        for site in sites:
            telemetry_site(site)  # validates the token
        dead_letter(gateway_id)  # validates the gateway id as a subject token
        return cls(gateway_id, tuple(sites), secrets.token_urlsafe(24), secrets.token_urlsafe(24))

    @property
    def direct_user(self) -> str:
        return f"gw-{self.gateway_id}"

    @property
    def leaf_user(self) -> str:
        return f"leaf-{self.gateway_id}"

    @property
    def edge_domain(self) -> str:
        return edge_domain(self.gateway_id)

    @staticmethod
    def telemetry_subject(site_id: str) -> str:
        """Every telemetry subject of one site (the permission, stream and source filter)."""
        return telemetry_site(site_id).removesuffix("*") + ">"

    def publish_subjects(self) -> list[str]:
        """What the gateway process may publish (at the hub, or at its own leaf node)."""
        telemetry = [self.telemetry_subject(s) for s in self.sites]
        return [*telemetry, dead_letter(self.gateway_id)]

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.gateway_id}.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps({**asdict(self), "sites": list(self.sites)}, indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> GatewayCredentials:
        data = json.loads(path.read_text())
        return cls(
            data["gateway_id"],
            tuple(data["sites"]),
            data["direct_password"],
            data["leaf_password"],
        )


def load_gateways(directory: Path) -> list[GatewayCredentials]:
    """Every gateway registered in ``directory`` (``<id>.json`` files), sorted by id."""
    if not directory.is_dir():
        return []
    return [GatewayCredentials.load(p) for p in sorted(directory.glob("*.json"))]


def internal_password(data_dir: Path) -> str:
    """The hub services' NATS password (``<data_dir>/nats-password``, mode 0600)."""
    path = data_dir / "nats-password"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    password = secrets.token_urlsafe(24)
    path.write_text(password)
    return password


def hub_config(
    *,
    port: int,
    leaf_port: int,
    store_dir: Path,
    internal_password: str,
    gateways: list[GatewayCredentials],
    host: str = "127.0.0.1",
) -> str:
    """The hub's nats-server configuration."""
    users = [f"    {{user: {_q(INTERNAL_USER)}, password: {_q(internal_password)}}}"]
    for gw in gateways:
        users.append(
            f"    {{user: {_q(gw.direct_user)}, password: {_q(gw.direct_password)}, "
            f"permissions: {{publish: {{allow: {_q(gw.publish_subjects())}}}, "
            f'subscribe: {{allow: ["_INBOX.>"]}}}}}}'
        )
        users.append(
            f"    {{user: {_q(gw.leaf_user)}, password: {_q(gw.leaf_password)}, "
            f"permissions: {{publish: {{deny: {_q(_LEAF_DENY)}}}, "
            f'subscribe: {{allow: ["$JS.{gw.edge_domain}.API.>", "_INBOX.>", "$JS.FC.>", '
            f'"$JS.ACK.>"]}}}}}}'
        )
    return "\n".join(
        [
            "# written by twinfleet (twinfleet/natsconf.py); regenerated on every start",
            f"listen: {_q(f'{host}:{port}')}",
            'server_name: "twinfleet-hub"',
            f"jetstream {{ store_dir: {_q(str(store_dir))}, domain: {_q(HUB_DOMAIN)} }}",
            # no_advertise: leaf nodes dial only the URL they were given (else they learn
            # and reconnect to the listen address itself, bypassing proxies and NAT).
            f"leafnodes {{ listen: {_q(f'{host}:{leaf_port}')}, no_advertise: true }}",
            "authorization { users = [",
            *users,
            "] }",
            "",
        ]
    )


def edge_config(
    *,
    creds: GatewayCredentials,
    port: int,
    store_dir: Path,
    gateway_password: str,
    hub_leaf_url: str | None,
    max_store_bytes: int,
) -> str:
    """The nats-server configuration of a gateway's own leaf node.

    ``hub_leaf_url`` is ``nats-leaf://host:port`` of the hub's leafnode listener (the
    leaf user and password are added here); None runs the edge store alone.
    """
    gateway_user = f"{{user: {_q(creds.direct_user)}, password: {_q(gateway_password)}, "
    allowed = [*creds.publish_subjects(), edge_alert_all(creds.gateway_id), "$JS.API.>"]
    # local tools at the edge may watch the alerts and the refused values
    local_watch = ["_INBOX.>", edge_alert_all(creds.gateway_id), dead_letter(creds.gateway_id)]
    lines = [
        "# written by twinfleet edge (twinfleet/natsconf.py); regenerated on every start",
        f"listen: {_q(f'127.0.0.1:{port}')}",
        f"server_name: {_q(creds.edge_domain)}",
        f"jetstream {{ store_dir: {_q(str(store_dir))}, domain: {_q(creds.edge_domain)}, "
        f"max_file_store: {int(max_store_bytes * 1.1) + (64 << 20)} }}",
        "authorization { users = [",
        f"    {gateway_user}permissions: {{publish: {{allow: {_q(allowed)}}}, "
        f"subscribe: {{allow: {_q(local_watch)}}}}}}}",
        "] }",
    ]
    if hub_leaf_url is not None:
        scheme, _, rest = hub_leaf_url.partition("://")
        url = f"{scheme}://{creds.leaf_user}:{creds.leaf_password}@{rest}"
        lines.append(f"leafnodes {{ reconnect: 1, remotes = [ {{ url: {_q(url)} }} ] }}")
    lines.append("")
    return "\n".join(lines)


def gateways_dir(data_dir: Path) -> Path:
    """Where ``twinfleet gateway add`` keeps the gateways' credentials."""
    return data_dir / "gateways"


def hub_server(data_dir: Path, port: int, leaf_port: int) -> NatsServer:
    """The hub's nats-server (not started), configured for the registered gateways."""
    nats_dir = data_dir / "nats"
    password = internal_password(data_dir)
    config = hub_config(
        port=port,
        leaf_port=leaf_port,
        store_dir=nats_dir / "jetstream",
        internal_password=password,
        gateways=load_gateways(gateways_dir(data_dir)),
    )
    return NatsServer(nats_dir, port=port, config=config, credentials=(INTERNAL_USER, password))
