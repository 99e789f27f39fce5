"""OPC UA boundaries (issue 18, finding 10), against real asyncua servers on 127.0.0.1:
no password over an unsecured channel, no server certificate taken on trust without an
explicit decision, and bounded messages and chunks from the server."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import pytest
from asyncua import Server, ua

from drivers.opcua import OpcUaAuthError, OpcUaDriver, OpcUaError, OpcUaSecurity
from drivers.opcua_sim import (
    CLIENT_APPLICATION_URI,
    SERVER_APPLICATION_URI,
    OpcUaPlantServer,
    make_certificate,
)
from edge.config import OpcUaSecurity as OpcUaSecurityConfig
from schemas.plant import Plant, load_plant
from twinfleet.services import free_port

EXAMPLE = Path(__file__).parents[2] / "twinfleet" / "plants" / "example.yaml"


def one_machine() -> Plant:
    plant = load_plant(EXAMPLE)
    return plant.model_copy(update={"machines": plant.machines[:1]})


async def certificates(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    made = {}
    for name, uri, server in (
        ("server", SERVER_APPLICATION_URI, True),
        ("impostor", SERVER_APPLICATION_URI, True),
        ("client", CLIENT_APPLICATION_URI, False),
    ):
        made[name] = await make_certificate(
            tmp_path / f"{name}.der", tmp_path / f"{name}.pem", application_uri=uri, server=server
        )
    return made


def test_a_password_is_refused_without_channel_security() -> None:
    """Before any connection: the password would cross the network in the clear."""
    plant = one_machine()
    with pytest.raises(ValueError, match=r"password: refusing .* without channel security"):
        OpcUaDriver(
            f"opc.tcp://127.0.0.1:{free_port()}/twinfleet/",
            plant.machines,
            username="operator",
            password="s3cret",
        )


def test_a_secured_session_needs_an_explicit_trust_decision(tmp_path: Path) -> None:
    """No pinned certificate and no ``trust_on_first_use``: refused, naming both
    settings (in the driver and in the gateway's configuration)."""
    with pytest.raises(ValueError, match=r"server_certificate.*trust_on_first_use"):
        OpcUaSecurity(tmp_path / "client.der", tmp_path / "client.pem")
    with pytest.raises(ValueError, match=r"server_certificate.*trust_on_first_use"):
        OpcUaSecurityConfig.model_validate(
            {"certificate": "gw.der", "private_key": "gw.pem", "username": "operator"}
        )
    decided = OpcUaSecurityConfig.model_validate(
        {"certificate": "gw.der", "private_key": "gw.pem", "trust_on_first_use": True}
    )
    assert decided.trust_on_first_use


def test_a_pinned_certificate_is_required_of_the_server(tmp_path: Path) -> None:
    """A server presenting another certificate than the pinned one is refused; the
    pinned one is accepted, and a password goes over that channel."""
    plant = one_machine()

    async def scenario() -> None:
        certs = await certificates(tmp_path)
        (cert, key), client = certs["server"], certs["client"]
        async with OpcUaPlantServer(
            plant, tick_s=0.2, certificate=cert, private_key=key, users={"operator": "s3cret"}
        ) as server:
            pinned_elsewhere = OpcUaDriver(
                server.endpoint,
                plant.machines,
                security=OpcUaSecurity(*client, server_certificate=certs["impostor"][0]),
                username="operator",
                password="s3cret",
            )
            with pytest.raises((OpcUaAuthError, OpcUaError, OSError)):
                await pinned_elsewhere.connect()
            await pinned_elsewhere.disconnect()
            pinned = OpcUaDriver(
                server.endpoint,
                plant.machines,
                security=OpcUaSecurity(*client, server_certificate=cert),
                username="operator",
                password="s3cret",
            )
            await pinned.connect()
            assert pinned.server_fingerprint == hashlib.sha256(cert.read_bytes()).hexdigest()
            await pinned.disconnect()

    asyncio.run(scenario())


def test_trust_on_first_use_is_logged_and_pinned_for_reconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The explicit insecure choice: the first certificate is logged with its
    fingerprint and pinned; a server with another certificate at the same address
    afterwards is refused."""
    plant = one_machine()
    port = free_port()

    async def scenario() -> None:
        certs = await certificates(tmp_path)
        client = certs["client"]
        security = OpcUaSecurity(*client, trust_on_first_use=True)
        cert, key = certs["server"]
        async with OpcUaPlantServer(
            plant, port=port, tick_s=0.2, certificate=cert, private_key=key, users={"op": "pw"}
        ) as server:
            driver = OpcUaDriver(
                server.endpoint, plant.machines, security=security, username="op", password="pw"
            )
            with caplog.at_level(logging.WARNING, logger="drivers.opcua"):
                await driver.connect()
            fingerprint = hashlib.sha256(cert.read_bytes()).hexdigest()
            assert driver.server_fingerprint == fingerprint
            logged = f"trusting on first use the certificate it presented (SHA-256 {fingerprint})"
            assert logged in caplog.text
            await driver.disconnect()
        other, other_key = certs["impostor"]
        async with OpcUaPlantServer(
            plant,
            port=port,
            tick_s=0.2,
            certificate=other,
            private_key=other_key,
            users={"op": "pw"},
        ):
            with pytest.raises((OpcUaAuthError, OpcUaError, OSError)):
                await driver.connect()
            await driver.disconnect()

    asyncio.run(scenario())


async def _server_with_a_large_value(port: int, size: int) -> tuple[Server, ua.NodeId]:
    server = Server()
    server.disable_clock()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/twinfleet/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    index = await server.register_namespace("urn:twinfleet:test:large")
    blob = await server.nodes.objects.add_variable(
        index, "Blob", ua.Variant(b"x" * size, ua.VariantType.ByteString)
    )
    await server.start()
    return server, blob.nodeid


def test_messages_from_the_server_are_bounded_in_size_and_chunks() -> None:
    """The driver announces and keeps its limits: a value larger than
    ``max_message_size`` is not received, a small one is; the defaults are bounded."""
    plant = one_machine()
    port = free_port()

    async def scenario() -> None:
        server, blob = await _server_with_a_large_value(port, 3 * 1024 * 1024)
        try:
            endpoint = f"opc.tcp://127.0.0.1:{port}/twinfleet/"
            default = OpcUaDriver(endpoint, plant.machines)
            assert 0 < default.max_message_size <= 64 * 1024 * 1024
            assert 0 < default.max_chunk_count <= 16_384
            bounded = OpcUaDriver(
                endpoint, plant.machines, max_message_size=1024 * 1024, max_chunk_count=64
            )
            await bounded.connect()
            assert bounded._client is not None
            limits = bounded._client.uaclient.protocol._connection._limits  # type: ignore[union-attr]
            assert (limits.max_message_size, limits.max_chunk_count) == (1024 * 1024, 64)
            with pytest.raises(Exception):  # noqa: B017  refused by either side
                await asyncio.wait_for(bounded._client.get_node(blob).read_value(), 10)
            await bounded.disconnect()
            with pytest.raises(ValueError, match="max_message_size"):
                OpcUaDriver(endpoint, plant.machines, max_message_size=0)
        finally:
            await server.stop()

    asyncio.run(scenario())
