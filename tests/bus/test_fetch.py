"""bus.fetch: one pull fetch for every JetStream consumer loop.

Against a real nats-server (file-backed JetStream, so a stream survives a restart of the
server): idle fetches, order, a server restart in the middle of a loop, cancellation. And
with a fake subscription raising each kind of exception nats-py raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

import bus.fetch
from bus.fetch import FETCH_ERRORS, MAX_BACKOFF_S, fetch
from twinfleet.services import NatsServer

STREAM = "T"
SUBJECT = "t.x"


# -- a fake subscription -----------------------------------------------------------------


class FakeSub:
    """A pull subscription whose fetch raises ``error`` (or returns ``msgs``)."""

    def __init__(self, error: BaseException | None = None, msgs: list[Any] | None = None):
        self.error = error
        self.msgs = msgs or []
        self.calls: list[tuple[int, float | None]] = []

    async def fetch(self, batch: int, timeout: float | None = None) -> list[Any]:
        self.calls.append((batch, timeout))
        if self.error is not None:
            raise self.error
        return list(self.msgs)


IDLE = [
    nats.errors.TimeoutError(),
    nats.js.errors.FetchTimeoutError(),
    TimeoutError(),  # asyncio's, since Python 3.11 the builtin one
]

TRANSIENT = [
    nats.errors.OutboundBufferLimitError(),
    nats.errors.ConnectionReconnectingError(),
    nats.errors.StaleConnectionError(),
    nats.js.errors.APIError(code=409, description="consumer deleted"),
    nats.errors.Error("nats: something else"),
    ConnectionResetError("connection reset by peer"),
    RuntimeError("anything else"),
]

CLOSED = [nats.errors.ConnectionClosedError(), nats.errors.ConnectionDrainingError()]


def test_messages_are_returned_as_fetched() -> None:
    sub = FakeSub(msgs=["a", "b", "c"])
    counters: Counter[str] = Counter()
    got = asyncio.run(fetch(sub, 3, 0.5, name="fake", counters=counters))
    assert got == ["a", "b", "c"]
    assert sub.calls == [(3, 0.5)]
    assert counters[FETCH_ERRORS] == 0


@pytest.mark.parametrize("error", IDLE, ids=lambda e: type(e).__module__ + "." + type(e).__name__)
def test_either_timeout_is_an_idle_fetch(error: BaseException, caplog: Any) -> None:
    """nats-py's TimeoutError and asyncio's: [] at once, not counted, not logged."""
    counters: dict[str, int] = {}
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="twinfleet.bus"):
        got = asyncio.run(fetch(FakeSub(error), 10, 1.0, name="fake", counters=counters))
    assert got == []
    assert counters == {}
    assert time.monotonic() - began < 0.5  # no back-off
    assert not caplog.records


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_another_error_is_counted_logged_and_backed_off(error: BaseException, caplog: Any) -> None:
    counters: dict[str, int] = {}  # a plain dict works as well as a Counter
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="twinfleet.bus"):
        got = asyncio.run(
            fetch(FakeSub(error), 10, 1.0, name="the-consumer", counters=counters, backoff_s=0.2)
        )
    assert got == []
    assert counters == {FETCH_ERRORS: 1}
    assert time.monotonic() - began >= 0.2
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "the-consumer" in record.getMessage()
    assert type(error).__name__ in record.getMessage()


def test_errors_add_up_in_the_callers_counters() -> None:
    counters: Counter[str] = Counter({"other": 7})

    async def loop() -> None:
        for _ in range(3):
            await fetch(
                FakeSub(RuntimeError("x")), 1, 0.1, name="c", counters=counters, backoff_s=0
            )
        await fetch(FakeSub(TimeoutError()), 1, 0.1, name="c", counters=counters)

    asyncio.run(loop())
    assert counters == Counter({"other": 7, FETCH_ERRORS: 3})


def test_without_counters_an_error_is_still_survived() -> None:
    assert asyncio.run(fetch(FakeSub(RuntimeError("x")), 1, 0.1, name="c", backoff_s=0)) == []


def test_the_back_off_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_BACKOFF_S <= 5.0
    monkeypatch.setattr(bus.fetch, "MAX_BACKOFF_S", 0.1)
    began = time.monotonic()
    asyncio.run(fetch(FakeSub(RuntimeError("x")), 1, 0.1, name="c", backoff_s=3600))
    assert time.monotonic() - began < 2.0


@pytest.mark.parametrize("error", CLOSED, ids=lambda e: type(e).__name__)
def test_a_closed_connection_is_counted_and_raised(error: BaseException) -> None:
    """nats-py never reopens a closed connection: retrying could only spin."""
    counters: Counter[str] = Counter()
    with pytest.raises(type(error)):
        asyncio.run(fetch(FakeSub(error), 1, 0.1, name="c", counters=counters, backoff_s=0))
    assert counters[FETCH_ERRORS] == 1


def test_cancellation_raised_by_the_subscription_propagates() -> None:
    counters: Counter[str] = Counter()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(fetch(FakeSub(asyncio.CancelledError()), 1, 0.1, name="c", counters=counters))
    assert counters[FETCH_ERRORS] == 0


class ClosingOnCancel:
    """Waits for messages forever; cancelled, raises ConnectionClosedError as nats-py's
    ``next_msg`` does when the connection is closed by then."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()

    async def fetch(self, batch: int, timeout: float | None = None) -> list[Any]:
        self.waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise nats.errors.ConnectionClosedError from None
        return []


def test_cancellation_turned_into_connection_closed_is_still_cancellation() -> None:
    counters: Counter[str] = Counter()

    async def main() -> None:
        sub = ClosingOnCancel()
        task = asyncio.create_task(fetch(sub, 1, 0.1, name="c", counters=counters))
        await sub.waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert counters[FETCH_ERRORS] == 0


def test_cancellation_during_the_back_off_propagates() -> None:
    async def main() -> float:
        task = asyncio.create_task(fetch(FakeSub(RuntimeError("x")), 1, 0.1, name="c", backoff_s=5))
        await asyncio.sleep(0.1)  # it is backing off now
        began = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - began

    assert asyncio.run(main()) < 1.0


# -- against a real nats-server ------------------------------------------------------------


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.02)


async def connect(url: str, **options: Any) -> Any:
    async def quiet(_exc: Exception) -> None:  # nats-py prints every reconnect attempt
        return None

    return await nats.connect(url, error_cb=quiet, **options)


async def stream_and_consumer(nc: Any) -> tuple[Any, Any]:
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["t.>"])  # file storage: survives a restart
    return js, await js.pull_subscribe(SUBJECT, durable="d", stream=STREAM)


async def publish(js: Any, body: str, timeout_s: float = 10.0) -> None:
    """Publish and wait for the stream's ack, retrying while JetStream is not back yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.publish(SUBJECT, body.encode(), timeout=1.0)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 60))


@pytest.mark.parametrize("batch", [1, 10])
def test_an_idle_fetch_returns_nothing(nats_server: NatsServer, batch: int) -> None:
    async def main() -> None:
        nc = await connect(nats_server.url)
        try:
            _, sub = await stream_and_consumer(nc)
            with pytest.raises(TimeoutError):  # what the loops had to catch themselves
                await sub.fetch(batch, timeout=0.1)
            counters: Counter[str] = Counter()
            for timeout in (0.05, 0.1, 0.3):
                assert await fetch(sub, batch, timeout, name="idle", counters=counters) == []
            assert counters[FETCH_ERRORS] == 0
        finally:
            await nc.close()

    run(main)


def test_messages_come_back_in_stream_order(nats_server: NatsServer) -> None:
    async def main() -> None:
        nc = await connect(nats_server.url)
        try:
            js, sub = await stream_and_consumer(nc)
            sent = [f"m{i}" for i in range(25)]
            for body in sent:
                await publish(js, body)
            got: list[str] = []
            seqs: list[int] = []
            deadline = time.monotonic() + 10
            while len(got) < len(sent) and time.monotonic() < deadline:
                msgs = await fetch(sub, 10, 0.5, name="order")
                assert len(msgs) <= 10
                for msg in msgs:
                    got.append(msg.data.decode())
                    seqs.append(msg.metadata.sequence.stream)
                    await msg.ack()
            assert got == sent
            assert seqs == sorted(seqs)
            assert await fetch(sub, 10, 0.1, name="order") == []  # all acknowledged
        finally:
            await nc.close()

    run(main)


@pytest.mark.parametrize("buffered", [False, True], ids=["no-reconnect-buffer", "buffered"])
def test_a_loop_survives_a_restart_of_the_server(nats_server: NatsServer, buffered: bool) -> None:
    """Stopped and started again mid-loop: the loop goes on and gets what is published
    after the restart. Without nats-py's reconnect buffer every fetch fails while the
    server is away (``OutboundBufferLimitError``): those are counted; with it, the fetches
    only time out."""

    async def main() -> None:
        reconnected, disconnected = asyncio.Event(), asyncio.Event()

        async def on_reconnect() -> None:
            reconnected.set()

        async def on_disconnect() -> None:
            disconnected.set()

        options: dict[str, Any] = {} if buffered else {"pending_size": 0}
        nc = await connect(
            nats_server.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
            reconnected_cb=on_reconnect,
            disconnected_cb=on_disconnect,
            **options,
        )
        got: list[str] = []
        counters: Counter[str] = Counter()
        stop = asyncio.Event()

        async def consume(sub: Any) -> None:
            while not stop.is_set():
                for msg in await fetch(
                    sub, 10, 0.2, name="restart", counters=counters, backoff_s=0.05
                ):
                    got.append(msg.data.decode())
                    await msg.ack()

        try:
            js, sub = await stream_and_consumer(nc)
            loop = asyncio.create_task(consume(sub))
            before = [f"before{i}" for i in range(5)]
            for body in before:
                await publish(js, body)
            await until(lambda: got == before)
            await nc.flush()  # the acks are with the server

            await asyncio.to_thread(nats_server.stop)
            await asyncio.wait_for(disconnected.wait(), 15)  # the client saw it go
            if not buffered:  # every fetch fails while it is away, and is counted
                await until(lambda: counters[FETCH_ERRORS] > 0)
            assert not loop.done()
            await asyncio.to_thread(nats_server.start)
            await asyncio.wait_for(reconnected.wait(), 15)

            after = [f"after{i}" for i in range(5)]
            for body in after:
                await publish(js, body)
            await until(lambda: got == before + after, 15)
            assert not loop.done()
            stop.set()
            await asyncio.wait_for(loop, 5)  # it ends normally, raising nothing
        finally:
            stop.set()
            await nc.close()

    run(main)


def test_cancelling_a_waiting_fetch_propagates(nats_server: NatsServer) -> None:
    async def main() -> None:
        nc = await connect(nats_server.url)
        try:
            _, sub = await stream_and_consumer(nc)
            counters: Counter[str] = Counter()

            async def consume() -> None:
                while True:
                    await fetch(sub, 10, 5.0, name="cancel", counters=counters)

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.3)  # waiting in a fetch
            began = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - began < 1.0
            assert counters[FETCH_ERRORS] == 0
        finally:
            await nc.close()

    run(main)


def test_a_connection_closed_under_a_waiting_fetch_is_raised(nats_server: NatsServer) -> None:
    async def main() -> None:
        nc = await connect(nats_server.url)
        _, sub = await stream_and_consumer(nc)
        counters: Counter[str] = Counter()
        task = asyncio.create_task(fetch(sub, 1, 5.0, name="closing", counters=counters))
        await asyncio.sleep(0.3)  # waiting in the fetch
        await nc.close()
        with pytest.raises(nats.errors.ConnectionClosedError):
            await asyncio.wait_for(task, 5)
        assert counters[FETCH_ERRORS] == 1

    run(main)
