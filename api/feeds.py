"""Shared subscriptions: one GraphQL execution per update, however many subscribers.

Strawberry runs a subscription's selection for every subscriber and every update (about
80 µs each here): with 1,000 dashboards watching one machine that alone is 80 ms per
update. Subscribers asking for the same thing (same query text, variables and operation)
share a :class:`Feed` instead: the feed runs the subscription once, serialises each
result once, and hands the text to every subscriber's bounded queue (a subscriber that
falls behind loses its oldest updates, counted in ``dropped``; the others never wait for
it). A feed stops when its last subscriber leaves.

Only subscriptions whose every subscriber passes the same checks are shared: the
subscription resolvers check the viewer role only, so the API shares feeds among tokens
with at least that role (see :mod:`api.app`). A subscription listed in
:data:`CURRENT_VALUE_FIRST` starts with the current value; a subscriber joining its feed
later gets the latest result first, as it would from a feed of its own.

>>> key_of("subscription { fleetHealthChanged { machines } }", None, None)[0][:12]
'subscription'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from graphql import ExecutionResult
from strawberry.types.execution import PreExecutionError

CURRENT_VALUE_FIRST = ("fleetHealthChanged",)
END = object()


def key_of(query: str, variables: Any, operation_name: str | None) -> tuple[str, str, str]:
    return query, json.dumps(variables, sort_keys=True, default=str), operation_name or ""


class Feed:
    """One running subscription and the queues of its subscribers."""

    def __init__(self, feeds: Feeds, key: tuple[str, str, str], queue_size: int) -> None:
        self.feeds = feeds
        self.key = key
        self.queue_size = queue_size
        self.queues: set[asyncio.Queue[Any]] = set()
        self.latest: str | None = None
        self.replays = any(name in key[0] for name in CURRENT_VALUE_FIRST)
        self.task: asyncio.Task[None] | None = None

    def start(self, schema: Any, context: Any) -> None:
        self.task = asyncio.create_task(self._run(schema, context))

    async def _run(self, schema: Any, context: Any) -> None:
        query, variables, operation = self.key
        try:
            source = await schema.subscribe(
                query,
                variable_values=json.loads(variables),
                context_value=context,
                operation_name=operation or None,
            )
            if isinstance(source, ExecutionResult):  # refused before it ran
                self._put(("error", [e.formatted for e in source.errors or []]))
                return
            async with contextlib.aclosing(source):
                async for result in source:
                    if isinstance(result, PreExecutionError):  # refused before it ran
                        self._put(("error", [e.formatted for e in result.errors or []]))
                        return
                    payload: dict[str, Any] = {"data": result.data}
                    if result.errors:
                        payload["errors"] = [e.formatted for e in result.errors]
                    text = json.dumps(payload, separators=(",", ":"))
                    if self.replays:
                        self.latest = text
                    self._put(("next", text))
        finally:
            self._put(END)
            self.feeds.forget(self)

    def _put(self, item: Any) -> None:
        for queue in self.queues:
            if queue.full():
                queue.get_nowait()
                self.feeds.dropped += 1
            queue.put_nowait(item)
        if item is not END and item[0] == "next":
            self.feeds.sent += len(self.queues)

    def listen(self) -> AsyncIterator[Any]:
        """A subscriber's stream of ``("next", payload JSON)`` (or one ``("error",
        errors)``); its queue is registered now, before anything is published."""
        queue: asyncio.Queue[Any] = asyncio.Queue(self.queue_size)
        if self.latest is not None:
            queue.put_nowait(("next", self.latest))
        self.queues.add(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        try:
            while True:
                item = await queue.get()
                if item is END:
                    return
                yield item
        finally:
            self.queues.discard(queue)
            if not self.queues and self.task is not None:
                self.task.cancel()  # the last subscriber left
                self.feeds.forget(self)


class Feeds:
    """The running feeds of one replica, by subscription key."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self.running: dict[tuple[str, str, str], Feed] = {}
        self.dropped = 0
        self.sent = 0

    def join(self, schema: Any, context: Any, key: tuple[str, str, str]) -> AsyncIterator[Any]:
        feed = self.running.get(key)
        if feed is not None:
            return feed.listen()
        feed = self.running[key] = Feed(self, key, self.queue_size)
        listening = feed.listen()
        feed.start(schema, context)
        return listening

    def forget(self, feed: Feed) -> None:
        if self.running.get(feed.key) is feed:
            del self.running[feed.key]

    @property
    def subscribers(self) -> int:
        return sum(len(f.queues) for f in self.running.values())
