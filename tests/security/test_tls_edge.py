"""Transport security at the edge (issue 18, finding 11, continued): the hub's MQTT port
takes MQTT over TLS only when the hub has TLS; a direct-mode gateway reaches a TLS hub
trusting only the CA in its credentials and sends nothing (no password) before the hub's
certificate is checked; a gateway's credentials file is refused when others may read it.
Real nats-servers and MQTT clients (paho) on 127.0.0.1, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from bus.connect import SecretFileUnsafe, tls_context
from drivers.base import FieldValue
from edge.config import GatewayConfig
from edge.gateway import Gateway
from schemas import load_plant
from twinfleet import pki
from twinfleet.cli import _example_plant_path
from twinfleet.natsconf import (
    INTERNAL_USER,
    GatewayCredentials,
    MqttDevice,
    gateways_dir,
    hub_config,
    hub_server,
    internal_password,
    mqtt_devices_dir,
)
from twinfleet.services import NatsServer, free_port

SITE = "plant-north"
FAN_TOPIC = "plant-north/F-7/speed"


@dataclass
class Hub:
    server: NatsServer
    mqtt_port: int
    data_dir: Path
    creds: GatewayCredentials
    fan: MqttDevice

    @property
    def ca_file(self) -> Path:
        return pki.pki_files(self.data_dir).ca_file

    @property
    def nats_tls(self) -> dict[str, Any]:
        """The hub's own services' ``tls=`` (none on a hub without TLS)."""
        return {"tls": tls_context(self.ca_file)} if self.ca_file.exists() else {}


@contextlib.contextmanager
def _hub(data_dir: Path, *, tls: bool) -> Iterator[Hub]:
    """The hub as ``twinfleet up`` configures it (``hub_server``): one registered gateway
    and one plain MQTT device, an MQTT listener; TLS on every port after ``pki init``."""
    if tls:
        pki.init(data_dir)
    creds = GatewayCredentials.new("gw-north", [SITE], hub_ca=pki.hub_ca_pem(data_dir))
    creds.save(gateways_dir(data_dir))
    fan = MqttDevice.new("fan-7", topics=[FAN_TOPIC])
    fan.save(mqtt_devices_dir(data_dir))
    mqtt_port = free_port()
    server = hub_server(data_dir, port=free_port(), leaf_port=free_port(), mqtt_port=mqtt_port)
    with server:
        yield Hub(server, mqtt_port, data_dir, creds, fan)


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[Hub]:
    with _hub(tmp_path / "hub", tls=True) as hub:
        yield hub


# -- the MQTT port ------------------------------------------------------------------------


def test_the_hub_config_has_tls_on_the_mqtt_listener_only_when_configured(
    tmp_path: Path,
) -> None:
    common: dict[str, Any] = dict(
        port=4222, leaf_port=7422, store_dir=tmp_path, internal_password="x", gateways=[]
    )
    plain = hub_config(**common, mqtt_port=1883)
    assert 'mqtt { listen: "127.0.0.1:1883" }' in plain
    pki.init(tmp_path)
    text = hub_config(**common, mqtt_port=1883, tls=pki.tls_files(tmp_path))
    mqtt_line = next(line for line in text.splitlines() if line.startswith("mqtt"))
    files = pki.pki_files(tmp_path)
    for key, path in (
        ("cert_file", files.cert_file),
        ("key_file", files.key_file),
        ("ca_file", files.ca_file),
    ):
        assert f'{key}: "{path}"' in mqtt_line, mqtt_line
    assert 'listen: "127.0.0.1:1883", tls {' in mqtt_line
    assert text.count(f'cert_file: "{files.cert_file}"') == 3  # client, leaf node, MQTT


def _mqtt_client(hub: Hub, who: str, context: ssl.SSLContext | None) -> tuple[Any, list[int]]:
    """A paho client of the device ``who`` ("fan" or the internal user), not connected
    yet; the list collects the return codes of its CONNACKs."""
    client = mqtt.Client(client_id=f"tls-test-{who}-{time.monotonic_ns()}", clean_session=True)
    if who == "fan":
        client.username_pw_set(hub.fan.user, hub.fan.password)
    else:
        client.username_pw_set(INTERNAL_USER, internal_password(hub.data_dir))
    if context is not None:
        client.tls_set_context(context)
    acks: list[int] = []
    client.on_connect = lambda _c, _u, _f, rc: acks.append(rc)
    return client, acks


def _wait(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_mqtt_device_trusting_the_ca_connects_over_tls_and_publishes(tls_hub: Hub) -> None:
    import nats

    async def main() -> bytes:
        nc = await nats.connect(tls_hub.server.url, **tls_hub.nats_tls)
        sub = await nc.subscribe("plant-north.F-7.speed")  # the topic's NATS subject
        client, acks = _mqtt_client(tls_hub, "fan", tls_context(tls_hub.ca_file))
        client.connect("127.0.0.1", tls_hub.mqtt_port, keepalive=10)
        client.loop_start()
        try:
            assert await asyncio.to_thread(_wait, lambda: acks == [0], 10), acks
            encrypted = client.socket().version()  # the TLS version of the paho socket
            info = client.publish(FAN_TOPIC, b"42.5", qos=1)
            await asyncio.to_thread(info.wait_for_publish, 10)
            msg = await sub.next_msg(timeout=10)
        finally:
            client.disconnect()
            client.loop_stop()
            await nc.close()
        assert encrypted and encrypted.startswith("TLS"), encrypted
        return bytes(msg.data)

    assert asyncio.run(main()) == b"42.5"


@pytest.mark.parametrize("tls", [True, False], ids=["tls-hub", "plain-hub"])
def test_a_plain_mqtt_client_is_refused_when_the_hub_has_tls(tmp_path: Path, tls: bool) -> None:
    with _hub(tmp_path / "hub", tls=tls) as hub:
        client, acks = _mqtt_client(hub, "fan", None)
        try:
            client.connect("127.0.0.1", hub.mqtt_port, keepalive=10)
        except OSError:
            pass  # the TLS listener may close before paho has sent its CONNECT
        else:
            client.loop_start()
            _wait(lambda: bool(acks), 4.0)
            client.disconnect()
            client.loop_stop()
    if tls:  # no MQTT session in the clear
        assert acks == [], acks
    else:  # the same client gets its session from a hub without TLS (so the above can fail)
        assert acks == [0], acks


# paho 1.6 leaves the socket of a refused TLS handshake for the garbage collector
_PAHO_LEAKS_A_REFUSED_SOCKET = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


@_PAHO_LEAKS_A_REFUSED_SOCKET
def test_an_mqtt_client_that_does_not_trust_the_hubs_ca_is_refused(
    tmp_path: Path, tls_hub: Hub
) -> None:
    pki.init(tmp_path / "elsewhere")  # a CA that did not issue the hub's certificate
    other = tls_context(pki.pki_files(tmp_path / "elsewhere").ca_file)
    for context in (other, ssl.create_default_context()):  # that CA, the system's CAs
        client, acks = _mqtt_client(tls_hub, "fan", context)
        with pytest.raises(ssl.SSLCertVerificationError):
            client.connect("127.0.0.1", tls_hub.mqtt_port, keepalive=10)
        assert acks == []


@_PAHO_LEAKS_A_REFUSED_SOCKET
def test_the_simulated_sparkplug_edge_node_reaches_the_tls_hub(tls_hub: Hub) -> None:
    """``twinfleet sim sparkplug``'s edge node over TLS (``TWINFLEET_NATS_CA_FILE``) is
    born at the hub; without the CA it cannot connect."""
    import nats

    from drivers.sparkplug_sim import edge_nodes, with_default_rule
    from edge.sparkplug import SparkplugMap

    plant = load_plant(_example_plant_path())
    group, node_name = sorted(SparkplugMap.from_plant(with_default_rule(plant)).by_node)[0]
    login = {"user": INTERNAL_USER, "password": internal_password(tls_hub.data_dir)}

    def node(context: ssl.SSLContext | None) -> Any:
        args = (plant, "127.0.0.1", tls_hub.mqtt_port)
        return edge_nodes(*args, **login, only=(group, node_name), tls=context)[0]

    async def main() -> bytes:
        nc = await nats.connect(tls_hub.server.url, **tls_hub.nats_tls)
        sub = await nc.subscribe(f"spBv1//0.{group}.NBIRTH.{node_name}")
        edge = node(tls_context(tls_hub.ca_file))
        await asyncio.to_thread(edge.start)
        try:
            msg = await sub.next_msg(timeout=10)
        finally:
            edge.stop()
            await nc.close()
        return bytes(msg.data)

    assert asyncio.run(main())  # an NBIRTH arrived
    with pytest.raises(OSError):  # ssl.SSLError, or the listener closing on plain MQTT
        node(None).start(timeout_s=3)


# -- a gateway in direct mode -------------------------------------------------------------


def _direct_config(tmp_path: Path, hub_url: str, creds: GatewayCredentials) -> GatewayConfig:
    plant = load_plant(_example_plant_path())
    machine = next(m for m in plant.machines if m.site == SITE)
    creds_path = creds.save(tmp_path / "gw")
    return GatewayConfig.model_validate(
        {
            "gateway_id": creds.gateway_id,
            "plant": str(_example_plant_path()),
            "hub": {"url": hub_url, "credentials": str(creds_path)},
            "store": {"mode": "direct", "dir": str(tmp_path / "edge")},
            "forward": {"mode": "everything", "batch_max_delay_ms": 50},
            "modbus": [{"port": 1, "machines": {machine.id: 1}}],
        }
    )


async def _run_briefly(gw: Gateway, seconds: float) -> None:
    """Run the gateway for ``seconds`` (it keeps trying to connect), then cancel it."""
    task = asyncio.create_task(gw.run(asyncio.Event(), drivers=[]))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(gw.ready.wait()), seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    gc.collect()  # nats-py leaves the socket of a cancelled connect: collect it here


# the socket nats-py leaves when its connection attempts are cancelled
_NATS_LEAKS_A_CANCELLED_SOCKET = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


def test_a_direct_mode_gateway_reaches_the_tls_hub_and_its_batches_arrive(
    tmp_path: Path, tls_hub: Hub
) -> None:
    import nats

    from actors.bus import ensure_jetstream

    assert tls_hub.creds.hub_ca is not None
    cfg = _direct_config(tmp_path, tls_hub.server.public_url, tls_hub.creds)
    plant = load_plant(cfg.plant)
    creds = GatewayCredentials.load(cfg.hub.credentials)  # as twinfleet edge reads it
    machine = plant.machines[[m.id for m in plant.machines].index(cfg.machine_ids()[0])]
    sensor = machine.sensors[0].name

    async def main() -> tuple[Gateway, bool, int, list[str]]:
        hub_nc = await nats.connect(tls_hub.server.url, **tls_hub.nats_tls)
        hub_js = hub_nc.jetstream()
        await ensure_jetstream(hub_js)
        gw = Gateway(cfg, plant, creds)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop, drivers=[]))
        await asyncio.wait_for(gw.ready.wait(), 20)
        encrypted = gw._nc._transport._io_writer.get_extra_info("ssl_object") is not None
        now = int(time.time() * 1000)
        gw.receive([FieldValue(machine.id, sensor, 50.0 + k, now - 5000 + k) for k in range(3)])
        deadline = time.monotonic() + 20
        while gw.counts["batches"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 30)
        info = await hub_js.stream_info("TELEMETRY")
        ids: list[str] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await hub_js.get_msg("TELEMETRY", seq)
            ids.append(json.loads(raw.data or b"{}")["gateway_id"])
        await hub_nc.close()
        return gw, encrypted, info.state.messages, ids

    gw, encrypted, messages, ids = asyncio.run(main())
    assert encrypted, "the gateway's connection to the hub is not TLS"
    assert gw.counts["batches"] >= 1 and messages == gw.counts["batches"], dict(gw.counts)
    assert set(ids) == {"gw-north"}
    assert gw.counts["nats_errors"] == 0, dict(gw.counts)


@_NATS_LEAKS_A_CANCELLED_SOCKET
def test_a_direct_mode_gateway_trusts_only_the_ca_in_its_credentials(
    tmp_path: Path, tls_hub: Hub
) -> None:
    """Credentials carrying another CA: the real hub's certificate is not trusted, and the
    gateway never gets a connection (it keeps trying, counted)."""
    pki.init(tmp_path / "elsewhere")
    other_ca = pki.pki_files(tmp_path / "elsewhere").ca_file.read_text()
    creds = dataclasses.replace(tls_hub.creds, hub_ca=other_ca)
    cfg = _direct_config(tmp_path, tls_hub.server.public_url, creds)
    gw = Gateway(cfg, load_plant(cfg.plant), creds)
    asyncio.run(_run_briefly(gw, 3.0))
    assert not gw.ready.is_set()
    assert gw.counts["nats_errors"] >= 1, dict(gw.counts)


class _FakeHub:
    """A server that says it is a NATS server without TLS (as one in the middle would)
    and keeps every byte a client sends it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.received = bytearray()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        info = {
            "server_id": "FAKE",
            "version": "2.15.1",
            "proto": 1,
            "host": "127.0.0.1",
            "port": self.port,
            "max_payload": 1 << 20,
            "auth_required": True,
            "tls_required": False,
        }
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(1.0)
                with contextlib.suppress(OSError):
                    conn.sendall(b"INFO " + json.dumps(info).encode() + b"\r\n")
                    while chunk := conn.recv(4096):
                        self.received += chunk

    def close(self) -> None:
        self.sock.close()


@_NATS_LEAKS_A_CANCELLED_SOCKET
def test_a_direct_mode_gateway_sends_its_password_to_no_server_without_tls(
    tmp_path: Path,
) -> None:
    """The gateway's credentials carry the hub's CA: a server at the hub's address that
    offers no TLS (a hub set back to plain, or one in the middle) gets a TLS handshake and
    nothing else, never the CONNECT with the password."""
    pki.init(tmp_path / "hub")
    creds = GatewayCredentials.new("gw-north", [SITE], hub_ca=pki.hub_ca_pem(tmp_path / "hub"))
    fake = _FakeHub()
    try:
        cfg = _direct_config(tmp_path, f"nats://127.0.0.1:{fake.port}", creds)
        gw = Gateway(cfg, load_plant(cfg.plant), creds)
        asyncio.run(_run_briefly(gw, 3.0))
    finally:
        fake.close()
    assert fake.connections >= 1
    assert not gw.ready.is_set()
    assert creds.direct_password.encode() not in fake.received
    assert b"CONNECT" not in fake.received
    assert fake.received[:1] == b"\x16"  # a TLS handshake record: the ClientHello


def test_the_hubs_client_port_takes_a_tls_first_client_and_a_classic_one(tls_hub: Hub) -> None:
    """The hub's own services (INFO first, then the upgrade) and a direct-mode gateway
    (TLS from the first byte) both connect to the same client port."""
    import nats

    async def connect(first: bool) -> bool:
        nc = await nats.connect(
            tls_hub.server.url,
            tls=tls_context(tls_hub.ca_file),
            tls_handshake_first=first,
            allow_reconnect=False,
            connect_timeout=5,
        )
        ok = bool(nc.is_connected)
        await nc.close()
        return ok

    assert asyncio.run(connect(True)) and asyncio.run(connect(False))


# -- the gateway's credentials file -------------------------------------------------------


def test_saved_credentials_are_mode_0600_even_over_an_older_file(tmp_path: Path) -> None:
    creds = GatewayCredentials.new("gw-north", [SITE])
    old = tmp_path / "gw-north.json"
    old.write_text("{}")
    old.chmod(0o644)
    path = creds.save(tmp_path)
    assert path == old
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert GatewayCredentials.load(path) == creds


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o622], ids=lambda m: f"{m:o}")
def test_credentials_others_may_read_or_write_are_refused(tmp_path: Path, mode: int) -> None:
    path = GatewayCredentials.new("gw-north", [SITE]).save(tmp_path)
    path.chmod(mode)
    with pytest.raises(SecretFileUnsafe) as refused:
        GatewayCredentials.load(path)
    message = str(refused.value)
    assert str(path) in message and f"chmod 600 {path}" in message, message
    assert f"mode {mode:o}" in message


@pytest.mark.parametrize("mode", [0o644, 0o604], ids=lambda m: f"{m:o}")
def test_an_mqtt_devices_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    device = MqttDevice.new("fan-7", topics=[FAN_TOPIC])
    old = tmp_path / "fan-7.json"
    old.write_text("{}")
    old.chmod(0o644)
    path = device.save(tmp_path)  # over an older file: 0600 all the same
    assert path == old and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MqttDevice.load(path) == device
    path.chmod(mode)
    with pytest.raises(SecretFileUnsafe, match=f"chmod 600 {path}"):
        MqttDevice.load(path)


def test_credentials_another_user_owns_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = GatewayCredentials.new("gw-north", [SITE]).save(tmp_path)
    monkeypatch.setattr(os, "getuid", lambda: 4242)  # as if this process ran as uid 4242
    with pytest.raises(SecretFileUnsafe, match=r"is owned by uid \d+, not by this user"):
        GatewayCredentials.load(path)


def test_twinfleet_edge_refuses_credentials_others_may_read(tmp_path: Path) -> None:
    import subprocess
    import sys

    creds = GatewayCredentials.new("gw-north", [SITE])
    cfg = _direct_config(tmp_path, "nats://127.0.0.1:1", creds)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "gateway_id": cfg.gateway_id,
                "plant": str(cfg.plant),
                "hub": {"url": cfg.hub.url, "credentials": str(cfg.hub.credentials)},
                "store": {"mode": "direct", "dir": str(tmp_path / "edge")},
                "modbus": [{"port": 1, "machines": {cfg.machine_ids()[0]: 1}}],
            }
        )
    )
    Path(cfg.hub.credentials).chmod(0o644)
    try:  # a gateway that starts would run until stopped
        done = subprocess.run(
            [sys.executable, "-m", "twinfleet.cli", "edge", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("twinfleet edge started with a credentials file mode 644") from exc
    assert done.returncode == 2, done.stderr
    err = done.stderr
    assert f"chmod 600 {cfg.hub.credentials}" in err and "Traceback" not in err, err


def test_the_hub_refuses_a_registered_gateways_file_others_may_read(tmp_path: Path) -> None:
    path = GatewayCredentials.new("gw-north", [SITE]).save(gateways_dir(tmp_path))
    path.chmod(0o644)
    with pytest.raises(SecretFileUnsafe, match="chmod 600"):
        hub_server(tmp_path, port=free_port(), leaf_port=free_port())


def test_the_mqtt_intake_publishes_its_state_over_tls(
    tls_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Sparkplug host application's own MQTT session (retained STATE online) reaches
    a TLS hub when the node names the hub's CA, as ``twinfleet up`` does."""
    from edge.mqtt_intake import MqttIntake

    monkeypatch.setenv("TWINFLEET_NATS_CA_FILE", str(tls_hub.ca_file))
    plant = load_plant(_example_plant_path())

    async def main() -> bytes:
        intake = MqttIntake(
            plant,
            tls_hub.server.public_url,  # user and password given below
            user=INTERNAL_USER,
            password=internal_password(tls_hub.data_dir),
            mqtt_port=tls_hub.mqtt_port,
        )
        await intake.start()
        got: list[bytes] = []
        client, acks = _mqtt_client(tls_hub, "internal", tls_context(tls_hub.ca_file))
        client.on_message = lambda _c, _u, msg: got.append(msg.payload)
        try:
            client.connect("127.0.0.1", tls_hub.mqtt_port, keepalive=10)
            client.subscribe("spBv1.0/STATE/twinfleet", qos=1)
            client.loop_start()
            assert await asyncio.to_thread(_wait, lambda: bool(got), 15), acks
        finally:
            client.disconnect()
            client.loop_stop()
            await intake.stop()
        return got[0]

    assert json.loads(asyncio.run(main()))["online"] is True
