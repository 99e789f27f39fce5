"""Notification channels: a NATS subject and a webhook with retries.

:class:`Webhook` posts JSON bodies in order from a bounded queue; a post that fails (a
connection error, a timeout, a 5xx or 429 answer) is tried again after 0.5, 1, 2, 4...
seconds (at most 30 s apart), ``retries`` times; a 4xx answer other than 429 is not
retried (the receiver refused the body). What was sent, retried, refused and given up is
counted in ``counters``; nothing raises into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from typing import Any

log = logging.getLogger("twinfleet.notify")


class Webhook:
    def __init__(
        self, url: str, retries: int = 5, timeout_s: float = 10.0, queue_size: int = 10_000
    ):
        self.url = url
        self.retries = retries
        self.timeout_s = timeout_s
        self.counters: Counter[str] = Counter()
        self._queue: asyncio.Queue[tuple[dict[str, Any], dict[str, str]]] = asyncio.Queue(
            queue_size
        )
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None

    def start(self) -> Webhook:
        self._task = asyncio.create_task(self._run())
        return self

    def send(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        try:
            self._queue.put_nowait((body, headers or {}))
        except asyncio.QueueFull:
            self.counters["dropped_queue_full"] += 1

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued was sent or given up."""
        await asyncio.wait_for(self._queue.join(), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        while True:
            body, headers = await self._queue.get()
            try:
                await self._post(body, headers)
            finally:
                self._queue.task_done()

    async def _post(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        import aiohttp

        data = json.dumps(body).encode()
        head = {"Content-Type": "application/json", **headers}
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters["retried"] += 1
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 30.0))
            try:
                async with self._session.post(self.url, data=data, headers=head) as resp:
                    if resp.status < 300:
                        self.counters["sent"] += 1
                        return
                    if 400 <= resp.status < 500 and resp.status != 429:
                        self.counters["refused"] += 1
                        log.warning("webhook %s refused a notification: %s", self.url, resp.status)
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("webhook %s: %s (attempt %d)", self.url, exc, attempt + 1)
        self.counters["given_up"] += 1
        log.warning("webhook %s: gave up after %d attempts", self.url, self.retries + 1)
