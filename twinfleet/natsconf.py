"""nats-server configurations the CLI writes: the hub's and each edge gateway's.

The hub (``twinfleet up``) runs JetStream in the domain ``hub`` and accepts leaf nodes.
Every client needs a user:

* ``twinfleet``: the hub's own services (actors, API); full access;
* ``gw-<id>``: a gateway publishing straight to the hub ("direct" mode), as an ordinary
  client only; it may publish only ``tf.telemetry.<site>.>`` for its own sites and its
  dead-letter subject, and subscribe only to its own inbox prefix
  (``_INBOX.gw-<id>.>``, :attr:`GatewayCredentials.inbox_prefix`, which it must pass to
  ``nats.connect(inbox_prefix=...)``): other gateways' and the hub services' replies
  (JetStream deliveries and acknowledgements, request/reply answers) stay out of reach;
* ``leaf-<id>``: a gateway's leaf node, usable only as a leaf-node connection. Its
  telemetry reaches the hub only through the hub's stream *sourcing* from the leaf's
  JetStream domain (``edge-<id>``), filtered to its sites. The owner of a gateway
  controls its leaf node entirely, so the leaf user is held to what sourcing needs:
  towards the hub, JetStream API replies (``$JSC.R.>``) and the source's deliveries
  (``$JS.S.>``); from the hub, its own domain's JetStream API (``$JS.edge-<id>.API.>``)
  and flow-control replies of its own streams. No inbox, acknowledgement or application
  subject crosses the leaf connection either way.

A gateway's own leaf node (started by ``twinfleet edge``) has one user for the gateway
process, allowed to publish only its sites' telemetry, its dead-letter subject and its
local alerts, so the gateway cannot write outside its subjects at either server.

* ``mqtt-<name>``: an MQTT device or Sparkplug edge node (MQTT connections only). A
  Sparkplug edge node may publish only its own node's and devices' messages
  (``spBv1.0/<group>/N*|D*/<node>[/...]``) and read only its commands and the host
  applications' STATE; a plain device only its own topics.

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
from typing import TYPE_CHECKING

from schemas.subjects import (
    dead_letter,
    edge_alert_all,
    edge_stream,
    inbox,
    telemetry_site,
)
from twinfleet.services import NatsServer, secret_file

if TYPE_CHECKING:
    from twinfleet.pki import TlsFiles

HUB_DOMAIN = "hub"
INTERNAL_USER = "twinfleet"
_LEAF_PUBLISH = ["$JSC.R.>", "$JS.S.>"]
"""What a leaf node sends the hub for sourcing: API replies and the source's deliveries."""


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
    hub_ca: str | None = None
    """The PEM certificate of the CA the hub's TLS certificate is issued by (``twinfleet
    pki init``): with it the gateway reaches the hub over TLS only, trusting that CA."""

    @classmethod
    def new(
        cls, gateway_id: str, sites: list[str], hub_ca: str | None = None
    ) -> GatewayCredentials:
        if not sites:
            raise ValueError(f"gateway {gateway_id!r} needs at least one site")
        for site in sites:
            telemetry_site(site)  # validates the token
        dead_letter(gateway_id)  # validates the gateway id as a subject token
        return cls(
            gateway_id,
            tuple(sites),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            hub_ca,
        )

    @property
    def direct_user(self) -> str:
        return f"gw-{self.gateway_id}"

    @property
    def leaf_user(self) -> str:
        return f"leaf-{self.gateway_id}"

    @property
    def edge_domain(self) -> str:
        return edge_domain(self.gateway_id)

    @property
    def inbox_prefix(self) -> str:
        """The only reply subjects (``<prefix>.>``) the gateway may subscribe to."""
        return inbox(self.direct_user)

    def leaf_subscribe_subjects(self) -> list[str]:
        """What the hub may send the gateway's leaf node: JetStream API requests to its
        own domain and flow-control replies of its own source streams."""
        streams = [f"$JS.FC.{edge_stream(s)}.>" for s in self.sites]
        return [f"$JS.{self.edge_domain}.API.>", f"$JS.FC.{self.edge_domain}.>", *streams]

    @staticmethod
    def telemetry_subject(site_id: str) -> str:
        """Every telemetry subject of one site (the permission, stream and source filter)."""
        return telemetry_site(site_id).removesuffix("*") + ">"

    def publish_subjects(self) -> list[str]:
        """What the gateway process may publish (at the hub, or at its own leaf node)."""
        telemetry = [self.telemetry_subject(s) for s in self.sites]
        return [*telemetry, dead_letter(self.gateway_id)]

    def save(self, directory: Path) -> Path:
        """``<directory>/<id>.json``, readable by its owner only (mode 0600 from the moment
        it exists, also when it replaces an older file): :meth:`load` refuses any other."""
        from twinfleet.pki import write_private

        path = directory / f"{self.gateway_id}.json"
        data = {**asdict(self), "sites": list(self.sites)}
        if self.hub_ca is None:
            del data["hub_ca"]  # the file of a hub without TLS is as before
        write_private(path, json.dumps(data, indent=2).encode())
        return path

    @classmethod
    def load(cls, path: Path) -> GatewayCredentials:
        """The credentials in ``path``, refused (:class:`bus.connect.SecretFileUnsafe`,
        naming the file and ``chmod 600``) when another user owns the file or others may
        read or write it: it holds the gateway's passwords."""
        from bus.connect import private_text

        data = json.loads(private_text(Path(path)))
        return cls(
            data["gateway_id"],
            tuple(data["sites"]),
            data["direct_password"],
            data["leaf_password"],
            data.get("hub_ca"),
        )


def load_gateways(directory: Path) -> list[GatewayCredentials]:
    """Every gateway registered in ``directory`` (``<id>.json`` files), sorted by id."""
    if not directory.is_dir():
        return []
    return [GatewayCredentials.load(p) for p in sorted(directory.glob("*.json"))]


@dataclass(frozen=True)
class MqttDevice:
    """An MQTT client of the hub's broker: a Sparkplug edge node (``group`` and
    ``edge_node``) or a plain device (``topics``)."""

    name: str
    password: str
    group: str | None = None
    edge_node: str | None = None
    topics: tuple[str, ...] = ()

    @classmethod
    def new(
        cls,
        name: str,
        *,
        sparkplug: tuple[str, str] | None = None,
        topics: list[str] | None = None,
    ) -> MqttDevice:
        from pydantic import ValidationError

        from schemas.mqtt import MqttAddress, SparkplugAddress

        dead_letter(name)  # validates the name as a subject token
        if (sparkplug is None) == (not topics):
            raise ValueError("an MQTT device is a Sparkplug edge node or has plain topics")
        try:
            if sparkplug is not None:
                SparkplugAddress(metric="m", group=sparkplug[0], edge_node=sparkplug[1])
                return cls(name, secrets.token_urlsafe(24), sparkplug[0], sparkplug[1])
            for topic in topics or []:
                MqttAddress(topic=topic)  # a concrete topic: no wildcards, no placeholders
                if "{" in topic:
                    raise ValueError(f"{topic!r}: a device's topic is concrete (no placeholders)")
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return cls(name, secrets.token_urlsafe(24), topics=tuple(topics or ()))

    @property
    def user(self) -> str:
        return f"mqtt-{self.name}"

    def publish_subjects(self) -> list[str]:
        from edge.mqtt_plain import subject_of

        if self.group is None:
            return [subject_of(t) for t in self.topics]
        base = subject_of("spBv1.0")
        node = [f"{base}.{self.group}.{kind}.{self.edge_node}" for kind in _NODE_MESSAGES]
        device = [f"{base}.{self.group}.{kind}.{self.edge_node}.*" for kind in _DEVICE_MESSAGES]
        return node + device

    def subscribe_subjects(self) -> list[str]:
        if self.group is None:
            return []
        base = "spBv1//0"
        return [
            f"{base}.{self.group}.NCMD.{self.edge_node}",
            f"{base}.{self.group}.DCMD.{self.edge_node}.*",
            f"{base}.STATE.*",
        ]

    def save(self, directory: Path) -> Path:
        """``<directory>/<name>.json``, readable by its owner only (it holds the device's
        password): :meth:`load` refuses any other."""
        from twinfleet.pki import write_private

        path = directory / f"{self.name}.json"
        data = {**asdict(self), "topics": list(self.topics)}
        write_private(path, json.dumps(data, indent=2).encode())
        return path

    @classmethod
    def load(cls, path: Path) -> MqttDevice:
        """The device in ``path``, refused (:class:`bus.connect.SecretFileUnsafe`) when
        another user owns the file or others may read or write it."""
        from bus.connect import private_text

        d = json.loads(private_text(Path(path)))
        return cls(d["name"], d["password"], d.get("group"), d.get("edge_node"), tuple(d["topics"]))


_NODE_MESSAGES = ("NBIRTH", "NDATA", "NDEATH")
_DEVICE_MESSAGES = ("DBIRTH", "DDATA", "DDEATH")


def load_mqtt_devices(directory: Path) -> list[MqttDevice]:
    """Every MQTT device registered in ``directory``, sorted by name."""
    if not directory.is_dir():
        return []
    return [MqttDevice.load(p) for p in sorted(directory.glob("*.json"))]


def mqtt_devices_dir(data_dir: Path) -> Path:
    """Where ``twinfleet mqtt add`` keeps the MQTT devices' credentials."""
    return data_dir / "mqtt-devices"


def internal_password(data_dir: Path) -> str:
    """The hub services' NATS password (``<data_dir>/nats-password``, mode 0600)."""
    return secret_file(data_dir / "nats-password", lambda: secrets.token_urlsafe(24))


BCRYPT_ROUNDS = 10
"""The cost of the password hashes in a server's configuration (about 0.1 s a hash, and
as long for the server to check a client's password when it connects)."""


def hashed(password: str) -> str:
    """``password`` as nats-server keeps it in its configuration: a bcrypt hash, so the
    file gives nobody who reads it a password (nats-server checks a client against it).

    >>> import bcrypt
    >>> h = hashed("s3cret")
    >>> h.startswith("$2b$10$"), bcrypt.checkpw(b"s3cret", h.encode())
    (True, True)
    """
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def hub_config(
    *,
    port: int,
    leaf_port: int,
    store_dir: Path,
    internal_password: str,
    gateways: list[GatewayCredentials],
    host: str = "127.0.0.1",
    mqtt_port: int | None = None,
    mqtt_devices: list[MqttDevice] | None = None,
    tls: TlsFiles | None = None,
) -> str:
    """The hub's nats-server configuration (with an MQTT listener on ``mqtt_port``).

    With ``tls`` (:func:`twinfleet.pki.tls_files`) the client port and the leaf-node
    listener accept TLS connections only, presenting ``tls.cert_file``; clients are not
    asked for certificates (they log in with their users and passwords, over TLS). So
    does the MQTT listener (with ``mqtt_port``): MQTT over TLS only, devices trusting the
    CA. The client port also takes clients that open with the TLS handshake
    (:func:`_tls_block`)."""
    users = [f"    {{user: {_q(INTERNAL_USER)}, password: {_q(hashed(internal_password))}}}"]
    for gw in gateways:
        users.append(
            f"    {{user: {_q(gw.direct_user)}, password: {_q(hashed(gw.direct_password))}, "
            f'allowed_connection_types: ["STANDARD"], '
            f"permissions: {{publish: {{allow: {_q(gw.publish_subjects())}}}, "
            f"subscribe: {{allow: {_q([gw.inbox_prefix + '.>'])}}}}}}}"
        )
        users.append(
            f"    {{user: {_q(gw.leaf_user)}, password: {_q(hashed(gw.leaf_password))}, "
            f'allowed_connection_types: ["LEAFNODE"], '
            f"permissions: {{publish: {{allow: {_q(_LEAF_PUBLISH)}}}, "
            f"subscribe: {{allow: {_q(gw.leaf_subscribe_subjects())}}}}}}}"
        )
    for dev in mqtt_devices or []:
        users.append(
            f"    {{user: {_q(dev.user)}, password: {_q(hashed(dev.password))}, "
            f'allowed_connection_types: ["MQTT"], '
            f"permissions: {{publish: {{allow: {_q(dev.publish_subjects())}}}, "
            f"subscribe: {{allow: {_q(dev.subscribe_subjects() or ['_INBOX.none'])}}}}}}}"
        )
    tls_block = "" if tls is None else _tls_block(tls)
    mqtt = []
    if mqtt_port is not None:
        mqtt_tls = "" if tls is None else f", {tls_block}"
        mqtt = [f"mqtt {{ listen: {_q(f'{host}:{mqtt_port}')}{mqtt_tls} }}"]
    return "\n".join(
        [
            "# written by twinfleet (twinfleet/natsconf.py); regenerated on every start",
            f"listen: {_q(f'{host}:{port}')}",
            'server_name: "twinfleet-hub"',
            *([] if tls is None else [_tls_block(tls, handshake_first=True)]),
            f"jetstream {{ store_dir: {_q(str(store_dir))}, domain: {_q(HUB_DOMAIN)} }}",
            # no_advertise: leaf nodes dial only the URL they were given (else they learn
            # and reconnect to the listen address itself, bypassing proxies and NAT).
            f"leafnodes {{ listen: {_q(f'{host}:{leaf_port}')}, no_advertise: true"
            + ("" if tls is None else f", {tls_block}")
            + " }",
            *mqtt,
            "authorization { users = [",
            *users,
            "] }",
            "",
        ]
    )


TLS_HANDSHAKE_TIMEOUT_S = 2.0
"""nats-server's default (0.5 s) is short for a busy two-core machine."""


def _tls_block(tls: TlsFiles, *, handshake_first: bool = False) -> str:
    """A listener's ``tls { }``. ``handshake_first`` (the client port): a client may open
    with its TLS handshake before the server's INFO (a direct-mode gateway does, so it
    sends nothing before the hub's certificate is checked); others get the INFO after
    nats-server's short wait for that (``auto``: 50 ms) and upgrade as before."""
    files = {
        "cert_file": str(tls.cert_file),
        "key_file": str(tls.key_file),
        "ca_file": str(tls.ca_file),
    }
    inner = ", ".join(f"{k}: {_q(v)}" for k, v in files.items())
    first = ', handshake_first: "auto"' if handshake_first else ""
    return f"tls {{ {inner}, timeout: {TLS_HANDSHAKE_TIMEOUT_S}{first} }}"


def edge_config(
    *,
    creds: GatewayCredentials,
    port: int,
    store_dir: Path,
    gateway_password: str,
    hub_leaf_url: str | None,
    max_store_bytes: int,
    hub_ca_file: Path | None = None,
) -> str:
    """The nats-server configuration of a gateway's own leaf node.

    ``hub_leaf_url`` is ``nats-leaf://host:port`` of the hub's leafnode listener (the
    leaf user and password are added here); None runs the edge store alone. With
    ``hub_ca_file`` the leaf connection is TLS (``tls://``), trusting only that CA and
    checking the hub's certificate names the URL's host.
    """
    gateway_user = f"{{user: {_q(creds.direct_user)}, password: {_q(hashed(gateway_password))}, "
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
        rest = rest.rpartition("@")[2]  # any user in the URL is replaced by the leaf user
        remote_tls = ""
        if hub_ca_file is not None:
            scheme = "tls"
            remote_tls = f", tls: {{ ca_file: {_q(str(hub_ca_file))}, timeout: 2.0 }}"
        url = f"{scheme}://{creds.leaf_user}:{creds.leaf_password}@{rest}"
        lines.append(
            f"leafnodes {{ reconnect: 1, remotes = [ {{ url: {_q(url)}{remote_tls} }} ] }}"
        )
    lines.append("")
    return "\n".join(lines)


def gateways_dir(data_dir: Path) -> Path:
    """Where ``twinfleet gateway add`` keeps the gateways' credentials."""
    return data_dir / "gateways"


def hub_server(
    data_dir: Path, port: int, leaf_port: int, mqtt_port: int | None = None
) -> NatsServer:
    """The hub's nats-server (not started), configured for the registered gateways (and
    MQTT devices, with an MQTT listener on ``mqtt_port``); with TLS on its client,
    leaf-node and MQTT ports when ``<data_dir>/pki/server.pem`` exists (``twinfleet pki
    init``)."""
    from twinfleet.pki import tls_files

    nats_dir = data_dir / "nats"
    password = internal_password(data_dir)
    config = hub_config(
        port=port,
        leaf_port=leaf_port,
        store_dir=nats_dir / "jetstream",
        internal_password=password,
        gateways=load_gateways(gateways_dir(data_dir)),
        mqtt_port=mqtt_port,
        mqtt_devices=load_mqtt_devices(mqtt_devices_dir(data_dir)),
        tls=tls_files(data_dir),
    )
    return NatsServer(nats_dir, port=port, config=config, credentials=(INTERNAL_USER, password))
