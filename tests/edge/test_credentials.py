"""Per-gateway NATS users, as ``twinfleet gateway add`` and the hub configuration make
them: a gateway may publish only its own sites' telemetry, at the hub and at its own leaf
node, and its leaf connection cannot inject anything into the hub."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.store import EdgeStore
from tests.edge.conftest import Hub

ROOT = Path(__file__).resolve().parents[2]


async def _publish_as(
    url: str, allowed: str, forbidden: str, inbox_prefix: str = "_INBOX"
) -> tuple[Any, list[str]]:
    """JetStream-publish to ``allowed`` (must be acknowledged) and to ``forbidden`` (must
    be refused by the server); returns the ack and the server's error messages."""
    import nats
    import nats.errors

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        url, error_cb=on_error, max_reconnect_attempts=0, inbox_prefix=inbox_prefix
    )
    js = nc.jetstream()
    ack = await js.publish(allowed, b"{}", headers={"Nats-Msg-Id": "ok-1"})
    with pytest.raises(nats.errors.TimeoutError):  # never stored, never acknowledged
        await js.publish(forbidden, b"{}", timeout=1.0)
    await asyncio.sleep(0.2)
    await nc.close()
    return ack, errors


async def _core_publish_errors(url: str, subjects: list[str]) -> list[str]:
    """Core-publish to each subject; the server's errors (permission violations)."""
    import nats

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, error_cb=on_error)
    for subject in subjects:
        await nc.publish(subject, b"{}")
    await nc.flush()
    await asyncio.sleep(0.2)
    await nc.close()
    return errors


def test_a_gateway_is_refused_outside_its_sites_at_the_hub(hub: Hub) -> None:
    creds = hub.creds
    url = f"nats://{creds.direct_user}:{creds.direct_password}@127.0.0.1:{hub.server.port}"
    ack, errors = asyncio.run(
        _publish_as(
            url,
            "tf.telemetry.plant-north.M-101",
            "tf.telemetry.plant-south.P-207",
            inbox_prefix=creds.inbox_prefix,  # the only replies a gateway may read
        )
    )
    assert ack.stream == "TELEMETRY"
    assert any("permissions violation for publish" in e.lower() for e in errors), errors

    forged = asyncio.run(_core_publish_errors(url, ["tf.twin.M-101"]))
    assert any("permissions violation" in e.lower() for e in forged)


def test_a_wrong_password_is_refused(hub: Hub) -> None:
    import nats
    import nats.errors
    from nats.aio.client import Client

    async def connect() -> None:
        nc = Client()
        try:
            await nc.connect(
                f"nats://{hub.creds.direct_user}:wrong@127.0.0.1:{hub.server.port}",
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
        finally:  # a refused client still holds its socket until closed
            await nc.close()

    with pytest.raises((nats.errors.Error, OSError)) as refused:
        asyncio.run(connect())
    assert "authorization" in str(refused.value).lower()


def test_a_gateway_is_refused_outside_its_sites_at_its_own_leaf_node(
    tmp_path: Path, hub: Hub
) -> None:
    store = EdgeStore(
        hub.creds, tmp_path / "edge", hub_leaf_url=hub.leaf_url, max_bytes=64 << 20
    ).start()
    try:

        async def main() -> tuple[Any, list[str], list[bytes]]:
            import nats

            nc = await nats.connect(store.url)
            await store.ensure_stream(nc.jetstream())
            await nc.close()
            # the leaf connection must not carry core messages into the hub either
            at_hub: list[bytes] = []
            hub_nc = await nats.connect(hub.url)

            async def seen(msg: Any) -> None:
                at_hub.append(msg.data)

            await hub_nc.subscribe("tf.>", cb=seen)
            await hub_nc.flush()
            ack, errors = await _publish_as(
                store.url, "tf.telemetry.plant-north.M-101", "tf.telemetry.plant-south.P-207"
            )
            leaf_admin = await nats.connect(store.url)
            await leaf_admin.publish("tf.edge.gw-north.alert.M-101", b"local only")
            await leaf_admin.flush()
            await asyncio.sleep(1.0)
            await leaf_admin.close()
            await hub_nc.close()
            return ack, errors, at_hub

        ack, errors, at_hub = asyncio.run(main())
    finally:
        store.stop()
    assert ack.stream == "TF_EDGE_plant-north"
    assert any("permissions violation for publish" in e.lower() for e in errors), errors
    assert at_hub == []  # the local alert and the refused publish stayed at the edge


def test_gateway_add_writes_private_credentials_and_the_hub_config_lets_it_in(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def twinfleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "twinfleet.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )

    done = twinfleet(
        "gateway", "add", "gw-south", "--site", "plant-south", "--data-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "gateways" / "gw-south.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = twinfleet(
        "gateway", "add", "gw-south", "--site", "plant-south", "--data-dir", str(tmp_path)
    )
    assert again.returncode == 2 and "exists" in again.stderr
    bad = twinfleet(
        "gateway", "add", "gw-x", "--site", "plant-nowhere", "--data-dir", str(tmp_path)
    )
    assert bad.returncode == 2 and "plant-nowhere" in bad.stderr and "Traceback" not in bad.stderr

    from twinfleet.natsconf import GatewayCredentials, hub_server
    from twinfleet.services import free_port

    creds = GatewayCredentials.load(path)
    with hub_server(tmp_path, port=free_port(), leaf_port=free_port()) as server:
        url = f"nats://{creds.direct_user}:{creds.direct_password}@127.0.0.1:{server.port}"

        subjects = ["tf.telemetry.plant-south.P-207", "tf.telemetry.plant-north.M-101"]
        errors = asyncio.run(_core_publish_errors(url, subjects))
    assert len(errors) == 1 and "plant-north" in errors[0].lower()
