"""Transport security (issue 18, finding 11): ``twinfleet pki init`` makes a CA and the
hub's server certificate; with them the hub's NATS client and leaf-node ports accept TLS
only, clients trusting the CA connect, and a gateway's leaf node reaches the hub over TLS
with its own credentials. Real nats-servers on 127.0.0.1, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import http.server
import json
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from bus.connect import tls_context, trust_bundle
from edge.store import EdgeStore
from twinfleet import pki
from twinfleet.natsconf import (
    GatewayCredentials,
    edge_config,
    gateways_dir,
    hub_config,
    hub_server,
    load_gateways,
)
from twinfleet.services import NatsServer, free_port

SITE = "plant-north"


# -- pki.py ----------------------------------------------------------------------------


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_makes_a_ca_and_a_server_certificate_for_loopback_and_the_given_names(
    tmp_path: Path,
) -> None:
    done = pki.init(tmp_path, ["hub.example", "10.0.0.7"])
    files = pki.pki_files(tmp_path)
    ca, server = _cert(files.ca_file), _cert(files.cert_file)
    assert sorted(pki.san_names(server)) == sorted(
        ["localhost", "127.0.0.1", "::1", "hub.example", "10.0.0.7"]
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.issued_by(server, ca)
    server.verify_directly_issued_by(ca)  # raises when the signature is not the CA's
    assert server.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=700)
    assert any("made a new CA" in line for line in done), done


def test_a_certificate_of_another_ca_does_not_verify(tmp_path: Path) -> None:
    pki.init(tmp_path / "a")
    pki.init(tmp_path / "b")
    server_a = _cert(pki.pki_files(tmp_path / "a").cert_file)
    assert not pki.issued_by(server_a, _cert(pki.pki_files(tmp_path / "b").ca_file))
    assert pki.issued_by(server_a, _cert(pki.pki_files(tmp_path / "a").ca_file))


def test_private_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    pki.init(tmp_path)
    for key in (pki.ca_key_file(tmp_path), pki.pki_files(tmp_path).key_file):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(pki.pki_dir(tmp_path).stat().st_mode) == 0o700
    assert stat.S_IMODE(pki.pki_files(tmp_path).ca_file.stat().st_mode) == 0o644


def test_a_second_init_keeps_the_ca_and_a_new_name_reissues_only_the_server_cert(
    tmp_path: Path,
) -> None:
    pki.init(tmp_path, ["hub.example"])
    files = pki.pki_files(tmp_path)
    ca_before, key_before = files.ca_file.read_bytes(), pki.ca_key_file(tmp_path).read_bytes()
    server_before = files.cert_file.read_bytes()

    again = pki.init(tmp_path, ["hub.example"])
    assert any("kept the existing CA" in line for line in again), again
    assert any("kept the existing server certificate" in line for line in again), again
    assert files.cert_file.read_bytes() == server_before

    more = pki.init(tmp_path, ["plant-gw.example"])
    assert files.ca_file.read_bytes() == ca_before
    assert pki.ca_key_file(tmp_path).read_bytes() == key_before
    assert files.cert_file.read_bytes() != server_before
    names = pki.san_names(_cert(files.cert_file))
    assert {"hub.example", "plant-gw.example", "127.0.0.1"} <= set(names), more
    assert pki.issued_by(_cert(files.cert_file), _cert(files.ca_file))


def _own_ca(directory: Path) -> tuple[Path, Path]:
    key, cert = pki.make_ca("plant IT CA")
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "it-ca.pem", directory / "it-ca.key"
    cert_path.write_bytes(pki._cert_pem(cert))
    pki.write_private(key_path, pki._key_pem(key))
    return cert_path, key_path


def test_your_own_ca_signs_the_server_certificate(tmp_path: Path) -> None:
    ca_cert, ca_key = _own_ca(tmp_path / "it")
    done = pki.init(tmp_path / "data", ["hub.plant"], own_ca_cert=ca_cert, own_ca_key=ca_key)
    files = pki.pki_files(tmp_path / "data")
    assert _cert(files.ca_file) == _cert(ca_cert)
    assert pki.issued_by(_cert(files.cert_file), _cert(ca_cert))
    assert "hub.plant" in pki.san_names(_cert(files.cert_file))
    assert any("using your CA" in line for line in done), done


def test_your_own_server_certificate_is_checked_against_your_ca(tmp_path: Path) -> None:
    ca_cert, ca_key = _own_ca(tmp_path / "it")
    key, cert = pki.make_server_cert(pki.load_key(ca_key), _cert(ca_cert), ["hub.plant"])
    cert_path, key_path = tmp_path / "hub.pem", tmp_path / "hub.key"
    cert_path.write_bytes(pki._cert_pem(cert))
    pki.write_private(key_path, pki._key_pem(key))
    other_ca, _ = _own_ca(tmp_path / "other")

    with pytest.raises(pki.PkiError, match="not issued by"):
        pki.init(tmp_path / "bad", own_ca_cert=other_ca, own_cert=cert_path, own_key=key_path)
    pki.init(tmp_path / "good", own_ca_cert=ca_cert, own_cert=cert_path, own_key=key_path)
    files = pki.pki_files(tmp_path / "good")
    assert files.cert_file.read_bytes() == cert_path.read_bytes()
    assert not pki.ca_key_file(tmp_path / "good").exists()  # the CA's key never came here
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600


def test_tls_is_off_without_pki_and_a_half_made_pki_is_an_error(tmp_path: Path) -> None:
    assert pki.tls_files(tmp_path) is None
    pki.init(tmp_path)
    assert pki.tls_files(tmp_path) == pki.pki_files(tmp_path)
    pki.pki_files(tmp_path).key_file.unlink()
    with pytest.raises(pki.PkiError, match=r"server\.key"):
        pki.tls_files(tmp_path)


def test_pki_init_command_gives_registered_gateways_the_ca(tmp_path: Path) -> None:
    from twinfleet.cli import main

    GatewayCredentials.new("gw-north", [SITE]).save(gateways_dir(tmp_path))
    assert load_gateways(gateways_dir(tmp_path))[0].hub_ca is None
    assert main(["pki", "init", "--data-dir", str(tmp_path), "--host", "hub.example"]) == 0
    creds = load_gateways(gateways_dir(tmp_path))[0]
    assert creds.hub_ca == pki.pki_files(tmp_path).ca_file.read_text()
    path = gateways_dir(tmp_path) / "gw-north.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["pki", "init", "--data-dir", str(tmp_path), "--ca-key", "x"]) == 2


# -- configurations ---------------------------------------------------------------------


def test_the_hub_config_has_tls_on_the_client_and_leaf_ports_only_when_configured(
    tmp_path: Path,
) -> None:
    common: dict[str, Any] = dict(
        port=4222, leaf_port=7422, store_dir=tmp_path, internal_password="x", gateways=[]
    )
    assert "tls {" not in hub_config(**common) and "cert_file" not in hub_config(**common)
    pki.init(tmp_path)
    files = pki.tls_files(tmp_path)
    text = hub_config(**common, tls=files)
    assert text.count(f'cert_file: "{pki.pki_files(tmp_path).cert_file}"') == 2
    leaf_line = next(line for line in text.splitlines() if line.startswith("leafnodes"))
    assert "tls {" in leaf_line
    edge = edge_config(
        creds=GatewayCredentials.new("gw-1", [SITE]),
        port=4223,
        store_dir=tmp_path,
        gateway_password="p",
        hub_leaf_url="nats-leaf://hub.example:7422",
        max_store_bytes=1 << 30,
        hub_ca_file=tmp_path / "ca.pem",
    )
    assert '"tls://leaf-gw-1:' in edge and "@hub.example:7422" in edge
    assert f'ca_file: "{tmp_path / "ca.pem"}"' in edge


# -- real servers -------------------------------------------------------------------------


@dataclass
class TlsHub:
    server: NatsServer
    port: int
    leaf_port: int
    data_dir: Path
    creds: GatewayCredentials

    @property
    def ca_file(self) -> Path:
        return pki.pki_files(self.data_dir).ca_file


def _start_hub(data_dir: Path, *, tls: bool) -> tuple[NatsServer, int, int, GatewayCredentials]:
    if tls:
        pki.init(data_dir)
    creds = GatewayCredentials.new("gw-north", [SITE], hub_ca=pki.hub_ca_pem(data_dir))
    creds.save(gateways_dir(data_dir))
    port, leaf_port = free_port(), free_port()
    server = hub_server(data_dir, port=port, leaf_port=leaf_port).start()
    return server, port, leaf_port, creds


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[TlsHub]:
    data_dir = tmp_path / "hub"
    server, port, leaf_port, creds = _start_hub(data_dir, tls=True)
    try:
        yield TlsHub(server, port, leaf_port, data_dir, creds)
    finally:
        server.stop()


async def _connect(url: str, **options: Any) -> Any:
    import nats

    return await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5, **options
    )


def test_a_client_that_does_not_trust_the_hubs_ca_is_refused(
    tmp_path: Path, tls_hub: TlsHub
) -> None:
    pki.init(tmp_path / "elsewhere")  # a CA that did not issue the hub's certificate
    other = tls_context(pki.pki_files(tmp_path / "elsewhere").ca_file)

    async def connect(context: ssl.SSLContext) -> None:
        nc = await _connect(tls_hub.server.url, tls=context)
        await nc.close()

    for context in (other, ssl.create_default_context()):  # that CA, the system's CAs
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(connect(context))


def test_a_client_trusting_the_ca_connects_over_tls_and_publishes(tls_hub: TlsHub) -> None:
    async def main() -> tuple[bytes, bool]:
        nc = await _connect(tls_hub.server.url, tls=tls_context(tls_hub.ca_file))
        sub = await nc.subscribe("tls.check")
        await nc.publish("tls.check", b"over tls")
        msg = await sub.next_msg(timeout=5)
        writer = nc._transport._io_writer  # the socket nats-py writes to
        encrypted = writer.get_extra_info("ssl_object") is not None
        await nc.close()
        return msg.data, encrypted

    data, encrypted = asyncio.run(main())
    assert data == b"over tls"
    assert encrypted


def test_a_bundle_for_ssl_cert_file_trusts_the_hub(tmp_path: Path, tls_hub: TlsHub) -> None:
    """What ``twinfleet up`` gives the processes whose ``nats.connect`` has no ``tls=``."""
    bundle = trust_bundle(tls_hub.ca_file, tmp_path / "bundle.pem")
    context = ssl.create_default_context(cafile=str(bundle))

    async def main() -> bool:
        nc = await _connect(tls_hub.server.url, tls=context)
        ok = nc.is_connected
        await nc.close()
        return bool(ok)

    assert asyncio.run(main())
    assert bundle.read_text().rstrip().endswith(tls_hub.ca_file.read_text().rstrip())


def _plain_exchange(port: int, user: str, password: str) -> tuple[dict[str, Any], bytes]:
    """Speak the NATS protocol without TLS: the server's INFO, then what it answers a
    CONNECT and PING (until it closes, or 3 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        info_line = sock.makefile("rb").readline()
        info = json.loads(info_line.removeprefix(b"INFO "))
        connect = {"user": user, "pass": password, "verbose": False, "tls_required": False}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        sock.settimeout(3)
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
                if b"PONG" in answer:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return info, answer


@pytest.mark.parametrize("tls", [True, False], ids=["tls-hub", "plain-hub"])
def test_a_plain_connection_is_refused_when_the_hub_has_tls(tmp_path: Path, tls: bool) -> None:
    data_dir = tmp_path / "hub"
    server, port, leaf_port, _ = _start_hub(data_dir, tls=tls)
    try:
        from twinfleet.natsconf import internal_password

        info, answer = _plain_exchange(port, "twinfleet", internal_password(data_dir))
        with socket.create_connection(("127.0.0.1", leaf_port), timeout=5) as sock:
            leaf_info = json.loads(sock.makefile("rb").readline().removeprefix(b"INFO "))
    finally:
        server.stop()
    assert bool(info.get("tls_required")) is tls
    assert bool(leaf_info.get("tls_required")) is tls
    if tls:  # the hub never answers in the clear
        assert b"PONG" not in answer, answer
    else:  # the same exchange works on a hub without TLS (so the check above can fail)
        assert b"PONG" in answer, answer


def _wait_for_leaf(log: Path, timeout_s: float = 30.0) -> bool:
    """Whether the edge server's leaf connection to the hub came up (its log says when
    the two JetStream domains met across it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and "JetStream using domains" in log.read_text():
            return True
        time.sleep(0.1)
    return False


def test_a_gateways_leaf_node_reaches_the_tls_hub_and_its_telemetry_arrives(
    tmp_path: Path, tls_hub: TlsHub
) -> None:
    import nats

    from actors.bus import ensure_jetstream, source_gateways

    assert tls_hub.creds.hub_ca is not None  # the credentials file carries the hub's CA
    store = EdgeStore(
        tls_hub.creds,
        tmp_path / "edge",
        hub_leaf_url=f"nats-leaf://127.0.0.1:{tls_hub.leaf_port}",
        max_bytes=64 << 20,
    ).start()
    try:
        leaf_up = _wait_for_leaf(tmp_path / "edge" / "nats-server.log")

        async def main() -> tuple[int, bytes]:
            hub_nc = await _connect(tls_hub.server.url, tls=tls_context(tls_hub.ca_file))
            hub_js = hub_nc.jetstream()
            await ensure_jetstream(hub_js)
            edge_nc = await nats.connect(store.url)  # the gateway at its own leaf node
            await store.ensure_stream(edge_nc.jetstream())
            ack = await edge_nc.jetstream().publish(
                f"tf.telemetry.{SITE}.M-101", b"from the edge", headers={"Nats-Msg-Id": "e-1"}
            )
            await edge_nc.close()
            assert ack.stream == f"TF_EDGE_{SITE}"
            # the hub sources the edge stream across the leaf connection, as in twinfleet up
            # (set up once the link is live: a source tried before retries only after ~40 s)
            await source_gateways(hub_js, [tls_hub.creds])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while (info := await hub_js.stream_info("TELEMETRY")).state.messages < 1:
                if loop.time() > deadline:
                    break
                await asyncio.sleep(0.25)
            data = b""
            if info.state.messages:
                data = (await hub_js.get_msg("TELEMETRY", info.state.first_seq)).data or b""
            await hub_nc.close()
            return info.state.messages, data

        messages, data = asyncio.run(main())
    finally:
        store.stop()
    conf = (tmp_path / "edge" / "nats-server.conf").read_text()
    assert f"tls://leaf-gw-north:{tls_hub.creds.leaf_password}@127.0.0.1:" in conf
    assert leaf_up, "the gateway's leaf node did not connect to the TLS hub"
    assert messages == 1 and data == b"from the edge"


def test_a_leaf_node_without_the_hubs_ca_cannot_connect(tmp_path: Path, tls_hub: TlsHub) -> None:
    """The same gateway with credentials from before ``pki init`` (no CA: a plain leaf
    connection) never gets a link to the TLS hub."""
    import dataclasses

    plain = dataclasses.replace(tls_hub.creds, hub_ca=None)
    store = EdgeStore(
        plain,
        tmp_path / "edge",
        hub_leaf_url=f"nats-leaf://127.0.0.1:{tls_hub.leaf_port}",
        max_bytes=64 << 20,
    ).start()
    try:
        leaf_up = _wait_for_leaf(tmp_path / "edge" / "nats-server.log", timeout_s=4.0)
    finally:
        store.stop()
    assert not leaf_up
    assert "tls://" not in (tmp_path / "edge" / "nats-server.conf").read_text()


# -- the API's HTTPS (HAProxy, Serve's ingress) --------------------------------------------


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    """A plain HTTP server standing for the API replica behind HAProxy."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def _haproxy(tmp_path: Path, backend_port: int, tls_pem: Path | None) -> Iterator[int]:
    """The real HAProxy Serve runs, started through twinfleet's wrapper as Ray starts it
    (``python -m twinfleet.loopback HAPROXY -f CONFIG``) with ``TWINFLEET_API_TLS_PEM``
    set or not, on a configuration shaped like Ray's (``frontend http_frontend``)."""
    import os
    import subprocess
    import sys

    from twinfleet.loopback import API_TLS_ENV, real_haproxy

    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 100\n"
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 10s\n"
        "    timeout server 10s\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{port}\n    default_backend api\n"
        f"backend api\n    server replica 127.0.0.1:{backend_port}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != API_TLS_ENV}
    if tls_pem is not None:
        env[API_TLS_ENV] = str(tls_pem)
    log = (tmp_path / "haproxy.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "twinfleet.loopback", real_haproxy(), "-f", str(config), "-db"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _get(url: str, context: ssl.SSLContext | None = None) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10, context=context) as answer:
        return bytes(answer.read())


def test_the_api_frontend_serves_https_only_with_the_hubs_certificate(
    tmp_path: Path, backend: int
) -> None:
    import urllib.error

    pki.init(tmp_path / "data")
    tls = pki.pki_files(tmp_path / "data")
    pem = tmp_path / "api.pem"
    pki.write_private(pem, tls.cert_file.read_bytes() + tls.key_file.read_bytes())

    with _haproxy(tmp_path, backend, pem) as port:
        assert _get(f"https://127.0.0.1:{port}/", tls_context(tls.ca_file)) == b"ok"
        assert _get(f"https://localhost:{port}/", tls_context(tls.ca_file)) == b"ok"
        with pytest.raises(urllib.error.URLError) as untrusted:
            _get(f"https://127.0.0.1:{port}/", ssl.create_default_context())
        assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
        with pytest.raises((urllib.error.URLError, OSError, http.client.HTTPException)):
            _get(f"http://127.0.0.1:{port}/")  # no plain HTTP on the TLS port
    assert "ssl crt" in (tmp_path / "haproxy.cfg").read_text()


def test_without_the_option_the_api_frontend_stays_plain_http(tmp_path: Path, backend: int) -> None:
    with _haproxy(tmp_path, backend, None) as port:
        assert _get(f"http://127.0.0.1:{port}/") == b"ok"
    assert "ssl" not in (tmp_path / "haproxy.cfg").read_text()


def test_twinfleet_revoke_reaches_the_local_tls_hub(
    tls_hub: TlsHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bus.connect import NATS_CA_FILE_ENV
    from twinfleet.cli import main

    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.delenv(NATS_CA_FILE_ENV, raising=False)
    argv = ["revoke", "--user", "someone", "--data-dir", str(tls_hub.data_dir)]
    assert main([*argv, "--nats-port", str(tls_hub.port)]) == 0, capsys.readouterr().err


# -- twinfleet up -------------------------------------------------------------------------


def _twinfleet(*args: str, timeout: float = 900) -> Any:
    import os
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NATS_URL", "RAY_ADDRESS", "DATABASE_URL", "SSL_CERT_FILE")
    }
    return subprocess.run(
        [sys.executable, "-m", "twinfleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )


def test_up_https_without_certificates_says_what_to_run(tmp_path: Path) -> None:
    done = _twinfleet("up", "--https", "--data-dir", str(tmp_path), "--api-port", "1")
    assert done.returncode == 2, done.stderr
    assert "twinfleet pki init" in done.stderr
    assert not (tmp_path / "nats").exists()  # refused before anything started


@pytest.mark.slow
def test_up_with_pki_runs_everything_over_tls_and_serves_https(tmp_path: Path) -> None:
    """The whole main job with TLS on: every Ray actor reaches the TLS hub (the plant's
    telemetry is applied by the twins and written to PostgreSQL by the history writer),
    and the API answers over HTTPS (``up`` checks it before it prints the tokens)."""
    data_dir = tmp_path / "data"
    assert _twinfleet("pki", "init", "--data-dir", str(data_dir)).returncode == 0
    ports = [str(free_port()) for _ in range(5)]
    done = _twinfleet(
        "up", "--https", "--days", "1", "--lives", "6", "--data-dir", str(data_dir),
        "--nats-port", ports[0], "--api-port", ports[1], "--db-port", ports[2],
        "--leaf-port", ports[3], "--mqtt-port", ports[4],
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "; TLS on these and MQTT, certificates in" in out
    assert f"API: https://127.0.0.1:{ports[1]}" in out and "it answers for 52 machines" in out
    assert "dead letters 0" in out
    summary = out[out.index("== summary") :]
    history = next(line for line in summary.splitlines() if "history:" in line)
    assert "0 messages to go" in history and " 0 readings" not in history, history
