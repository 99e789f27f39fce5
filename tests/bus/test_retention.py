"""The hub's telemetry retention (bus.retention) against a real nats-server: an older
stream without limits gets them, a full byte budget refuses new messages and keeps every
accepted one (and is warned about first), and messages past their age are removed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.js.errors
import pytest

from actors.bus import STREAM, ensure_jetstream
from bus.retention import (
    DEFAULT,
    Retention,
    apply_retention,
    budget_warnings,
    stream_usage,
)
from schemas.subjects import TELEMETRY_ALL
from twinfleet.services import NatsServer


def run(server: NatsServer, body: Callable[[Any], Awaitable[None]]) -> None:
    async def main() -> None:
        nc = await nats.connect(server.url)
        try:
            await body(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(main())


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="telemetry_days must be > 0"):
        Retention(telemetry_days=0)
    with pytest.raises(ValueError, match="at least 1 MiB"):
        Retention(telemetry_max_bytes=1000)


def test_a_stream_made_before_retention_gets_its_limits_once(nats_server: NatsServer) -> None:
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig

    async def body(js: Any) -> None:
        # what ensure_jetstream made before retention existed: no age, no size limit
        await js.add_stream(
            StreamConfig(name=STREAM, subjects=[TELEMETRY_ALL], storage=StorageType.FILE)
        )
        assert (await js.stream_info(STREAM)).config.max_age in (None, 0, 0.0)
        assert await apply_retention(js, DEFAULT) is True
        config = (await js.stream_info(STREAM)).config
        assert config.max_age == pytest.approx(7 * 86_400.0)
        assert config.discard == DiscardPolicy.OLD and config.max_bytes in (None, -1)
        assert await apply_retention(js, DEFAULT) is False  # unchanged: not written again
        budget = Retention(telemetry_max_bytes=64 * 1024 * 1024)
        assert await apply_retention(js, budget) is True
        config = (await js.stream_info(STREAM)).config
        assert config.max_bytes == 64 * 1024 * 1024 and config.discard == DiscardPolicy.NEW

    run(nats_server, body)


def test_a_new_stream_is_made_with_the_default_week(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        await ensure_jetstream(js)
        assert (await js.stream_info(STREAM)).config.max_age == pytest.approx(7 * 86_400.0)
        assert await apply_retention(js, DEFAULT) is False

    run(nats_server, body)


def test_at_its_budget_the_stream_refuses_new_messages_and_keeps_every_accepted_one(
    nats_server: NatsServer,
) -> None:
    async def body(js: Any) -> None:
        await ensure_jetstream(js)
        await apply_retention(js, Retention(telemetry_max_bytes=1024 * 1024))
        payload = b"x" * 20_000
        accepted, refused, warned_at = 0, None, None
        for i in range(200):  # 4 MB offered to a 1 MiB budget
            try:
                await js.publish("tf.telemetry.s1.M-1", payload, headers={"Nats-Msg-Id": f"m{i}"})
            except nats.js.errors.APIError as exc:
                refused = exc
                break
            accepted += 1
            if warned_at is None and budget_warnings(await stream_usage(js, [STREAM])):
                warned_at = accepted
        assert refused is not None, "the budget refused nothing"
        assert "maximum bytes" in str(refused).lower()
        assert warned_at is not None and warned_at < accepted  # warned before it was full
        info = await js.stream_info(STREAM)
        assert info.state.messages == accepted and info.state.first_seq == 1  # none dropped
        (usage,) = await stream_usage(js, [STREAM, "NO_SUCH_STREAM"])
        assert usage.max_bytes == 1024 * 1024 and usage.share is not None and usage.share > 0.8
        (line,) = budget_warnings([usage])
        assert line.startswith("JetStream stream TELEMETRY holds ")

    run(nats_server, body)


def test_messages_past_their_age_are_removed(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        await ensure_jetstream(js)
        await apply_retention(js, Retention(telemetry_days=2 / 86_400))  # 2 seconds
        for i in range(5):
            await js.publish("tf.telemetry.s1.M-1", b"{}", headers={"Nats-Msg-Id": f"a{i}"})
        assert (await js.stream_info(STREAM)).state.messages == 5
        deadline = time.monotonic() + 15
        while (await js.stream_info(STREAM)).state.messages and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        assert (await js.stream_info(STREAM)).state.messages == 0

    run(nats_server, body)
