"""A hub as ``twinfleet up`` configures it (users, leafnode port, JetStream domain
``hub``) with one registered gateway, and helpers to read what reached the hub."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from twinfleet.natsconf import GatewayCredentials, gateways_dir, hub_server
from twinfleet.services import NatsServer, free_port

SITE = "plant-north"


@dataclass
class Hub:
    server: NatsServer
    leaf_port: int
    creds: GatewayCredentials
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://127.0.0.1:{self.leaf_port}"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    data_dir = tmp_path / "hub"
    creds = GatewayCredentials.new("gw-north", [SITE])
    creds.save(gateways_dir(data_dir))
    leaf_port = free_port()
    server = hub_server(data_dir, port=free_port(), leaf_port=leaf_port)
    with server:
        asyncio.run(_prepare(server.url, creds))
        yield Hub(server, leaf_port, creds, data_dir)


async def _prepare(url: str, creds: GatewayCredentials) -> None:
    import nats

    from actors.bus import ensure_jetstream, source_gateways

    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_jetstream(js)
    await source_gateways(js, [creds])
    await nc.close()


async def hub_batches(url: str, expect_batches: int = 0, timeout_s: float = 30.0) -> list[Any]:
    """Every TelemetryBatch in the hub's TELEMETRY stream, in stream order; waits until
    at least ``expect_batches`` are there (or the timeout)."""
    import nats
    from nats.js.api import DeliverPolicy

    from schemas.telemetry import TelemetryBatch

    nc = await nats.connect(url)
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        info = await js.stream_info("TELEMETRY")
        if info.state.messages < expect_batches and loop.time() < deadline:
            await asyncio.sleep(0.5)
            continue
        batches: list[Any] = []
        if info.state.messages:
            sub = await js.subscribe(
                "tf.telemetry.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
            while len(batches) < info.state.messages:
                msg = await sub.next_msg(timeout=10)
                batches.append(
                    TelemetryBatch.model_validate_json(msg.data, context={"now_ms": 2**62})
                )
            await sub.unsubscribe()
        await nc.close()
        return batches


def gateway_config(tmp_path: Path, hub: Hub, **overrides: Any) -> dict[str, Any]:
    from twinfleet.cli import _example_plant_path

    creds_path = hub.creds.save(tmp_path)  # tmp_path / "gw-north.json", mode 0600
    cfg: dict[str, Any] = {
        "gateway_id": "gw-north",
        "plant": str(_example_plant_path()),
        "hub": {
            "leaf_url": hub.leaf_url,
            "url": hub.server.public_url,
            "credentials": str(creds_path),
        },
        "store": {"dir": str(tmp_path / "edge")},
        "forward": {"mode": "everything", "batch_max_delay_ms": 100},
    }
    cfg.update(overrides)
    return cfg


class LinkProxy:
    """A TCP proxy standing for the network between a gateway and the hub: ``cut()``
    drops every connection and refuses new ones until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._writers -= {writer, up_w}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()
