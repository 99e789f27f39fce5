"""Issue 18, finding 3: who may read and answer on reply subjects at the hub.

A gateway's direct user may subscribe only to its own inbox prefix
(``_INBOX.gw-<id>.>``), so it cannot read other gateways' or the hub services' replies
(JetStream deliveries, acknowledgements, request/reply answers). The leaf user works
only as a leaf-node connection; through it, the gateway's own server (which its owner
controls entirely) receives only what sourcing needs, and can send the hub only
JetStream API replies and source deliveries: no inbox traffic, no acknowledgements.

Real nats-server throughout: the hub as ``twinfleet up`` configures it and, for the
leaf tests, an attacker's leaf node with no local permissions at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from twinfleet.natsconf import GatewayCredentials, gateways_dir, hub_server
from twinfleet.services import NatsServer, free_port

SITES = {"gw-north": "plant-north", "gw-south": "plant-south"}
SECRET = b"someone else's reply"


@dataclass
class Bus:
    server: NatsServer
    leaf_port: int
    gateways: dict[str, GatewayCredentials]

    def direct_url(self, gateway: str) -> str:
        creds = self.gateways[gateway]
        return f"nats://{creds.direct_user}:{creds.direct_password}@127.0.0.1:{self.server.port}"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    data_dir = tmp_path / "hub"
    gateways = {g: GatewayCredentials.new(g, [s]) for g, s in SITES.items()}
    for creds in gateways.values():
        creds.save(gateways_dir(data_dir))
    leaf_port = free_port()
    with hub_server(data_dir, port=free_port(), leaf_port=leaf_port) as server:
        asyncio.run(_prepare(server.url))
        yield Bus(server, leaf_port, gateways)


async def _prepare(url: str) -> None:
    import nats

    from actors.bus import ensure_jetstream

    nc = await nats.connect(url)
    await ensure_jetstream(nc.jetstream())
    await nc.close()


async def _until(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_a_gateway_reads_only_its_own_inbox(bus: Bus) -> None:
    """gw-north subscribes to every inbox and to gw-south's: both are refused and nothing
    reaches it, while its own inbox works (its JetStream acknowledgements arrive)."""
    import nats

    north = bus.gateways["gw-north"]
    own_prefix = f"_INBOX.{north.direct_user}"
    south_prefix = f"_INBOX.{bus.gateways['gw-south'].direct_user}"

    async def scenario() -> tuple[list[str], list[bytes], Any]:
        errors: list[str] = []
        stolen: list[bytes] = []
        control: list[bytes] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        async def steal(msg: Any) -> None:
            stolen.append(msg.data)

        async def own(msg: Any) -> None:
            control.append(msg.data)

        gw = await nats.connect(
            bus.direct_url("gw-north"), inbox_prefix=own_prefix, error_cb=on_error
        )
        await gw.subscribe("_INBOX.>", cb=steal)
        await gw.subscribe(f"{south_prefix}.>", cb=steal)
        await gw.subscribe(f"{own_prefix}.>", cb=own)
        await gw.flush()
        hub = await nats.connect(bus.server.url)  # a hub service (full access)
        for victim in (f"{south_prefix}.r1", "_INBOX.host-fleet-0.r2", "_INBOX.r3"):
            await hub.publish(victim, SECRET)
        await hub.publish(f"{own_prefix}.control", b"control")  # after the secrets
        await hub.flush()
        # one publisher's messages reach a connection in order: once the control is
        # here, every secret that was going to arrive has arrived
        await _until(lambda: control, "the control message on the gateway's own inbox")
        with contextlib.suppress(AssertionError):  # asserted below, with what was stolen
            await _until(lambda: len(errors) >= 2, "the two refusals", timeout_s=5.0)
        ack = await gw.jetstream().publish(
            "tf.telemetry.plant-north.M-101", b"{}", headers={"Nats-Msg-Id": "gw-north:t-1"}
        )
        await hub.close()
        await gw.close()
        return errors, stolen, ack

    errors, stolen, ack = asyncio.run(scenario())
    assert stolen == [], "a gateway read other inboxes"
    refused = [e for e in errors if "permissions violation for subscription" in e.lower()]
    assert any('"_inbox.>"' in e.lower() for e in refused), errors
    assert any(f'"{south_prefix.lower()}.>"' in e.lower() for e in refused), errors
    assert ack.stream == "TELEMETRY"  # its own inbox carries its acknowledgements
    assert north.inbox_prefix == own_prefix


def test_the_leaf_user_cannot_log_in_as_a_client(bus: Bus) -> None:
    import nats
    import nats.errors
    from nats.aio.client import Client

    creds = bus.gateways["gw-north"]

    async def connect() -> None:
        nc = Client()
        try:
            await nc.connect(
                f"nats://{creds.leaf_user}:{creds.leaf_password}@127.0.0.1:{bus.server.port}",
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
        finally:
            await nc.close()

    with pytest.raises((nats.errors.Error, OSError)) as refused:
        asyncio.run(connect())
    assert "authorization" in str(refused.value).lower()


def _attacker_leaf(tmp_path: Path, bus: Bus, port: int) -> NatsServer:
    """A leaf node under the gateway owner's control: no local authorization at all,
    connected to the hub with the gateway's leaf credentials."""
    creds = bus.gateways["gw-north"]
    url = f"nats-leaf://{creds.leaf_user}:{creds.leaf_password}@127.0.0.1:{bus.leaf_port}"
    config = "\n".join(
        [
            f'listen: "127.0.0.1:{port}"',
            'server_name: "attacker"',
            f'leafnodes {{ reconnect: 1, remotes = [ {{ url: "{url}" }} ] }}',
            "",
        ]
    )
    return NatsServer(tmp_path / "attacker", port=port, config=config)


def test_a_leaf_node_can_neither_read_nor_forge_replies_at_the_hub(
    tmp_path: Path, bus: Bus
) -> None:
    """From its own leaf node, the gateway's owner subscribes to every inbox and every
    acknowledgement subject of the hub, and publishes forged replies and acks: nothing
    crosses either way, while what sourcing uses still does."""
    import nats

    domain_api = bus.gateways["gw-north"].edge_domain

    async def scenario(leaf_url: str) -> tuple[list[str], list[str]]:
        stolen: list[str] = []
        forged: list[str] = []
        seen: dict[str, int] = {"down": 0, "up": 0}

        async def steal(msg: Any) -> None:
            if msg.data == SECRET:
                stolen.append(msg.subject)

        async def receive_forged(msg: Any) -> None:
            if msg.data == b"forged":
                forged.append(msg.subject)

        async def control_down(msg: Any) -> None:
            seen["down"] += 1

        async def control_up(msg: Any) -> None:
            seen["up"] += 1

        attacker = await nats.connect(leaf_url)
        await attacker.subscribe("_INBOX.>", cb=steal)
        await attacker.subscribe("$JS.ACK.>", cb=steal)
        # hub -> leaf: what sourcing needs (JetStream API requests to the edge domain)
        await attacker.subscribe(f"$JS.{domain_api}.API.control", cb=control_down)
        await attacker.flush()

        hub = await nats.connect(bus.server.url)
        await hub.subscribe("_INBOX.host-fleet-0.>", cb=receive_forged)
        await hub.subscribe("$JS.ACK.>", cb=receive_forged)
        # leaf -> hub: what sourcing needs (a source's deliveries)
        await hub.subscribe("$JS.S.control", cb=control_up)
        await hub.flush()

        async def hub_sends() -> None:
            await hub.publish("_INBOX.host-fleet-0.reply", SECRET)
            await hub.publish("$JS.ACK.TELEMETRY.host-fleet-0.1.9.9.1.0", SECRET)
            await hub.publish(f"$JS.{domain_api}.API.control", b"control")
            await hub.flush()

        async def attacker_sends() -> None:
            await attacker.publish("_INBOX.host-fleet-0.reply", b"forged")
            await attacker.publish("$JS.ACK.TELEMETRY.host-fleet-0.1.9.9.1.0", b"forged")
            await attacker.publish("$JS.S.control", b"control")
            await attacker.flush()

        # until the leaf link is up and both sides' interest has crossed it
        deadline = time.monotonic() + 30
        while not (seen["down"] and seen["up"]):
            if time.monotonic() > deadline:
                raise AssertionError(f"the leaf link never carried the controls: {seen}")
            await hub_sends()
            await attacker_sends()
            await asyncio.sleep(0.1)
        # once more, now that every subscription is known across the link: each control
        # follows its secrets on the same path, so when it arrives they would have too
        down, up = seen["down"], seen["up"]
        await hub_sends()
        await attacker_sends()
        await _until(lambda: seen["down"] > down and seen["up"] > up, "the last controls")
        await attacker.close()
        await hub.close()
        return stolen, forged

    with _attacker_leaf(tmp_path, bus, free_port()) as leaf:
        stolen, forged = asyncio.run(scenario(f"nats://127.0.0.1:{leaf.port}"))
    assert stolen == [], "hub replies or acknowledgements reached a gateway's leaf node"
    assert forged == [], "a gateway's leaf node published replies or acks into the hub"
