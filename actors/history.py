"""The history writer (:mod:`store.writer`) as a Ray actor, restarted by Ray if it dies.

``twinfleet up`` starts one :class:`HistoryWriter` and asks its status every few seconds.
Its writer runs as a task on the actor's event loop, started by the first call (``start``
or ``status``); if the actor's process dies, Ray starts it again (``max_restarts=-1``),
the next status call starts its writer, and the new writer resumes from the durable
consumers: messages the dead one had not acknowledged come back after the ack wait and
are recognised if they had been stored. If the writer itself stops with an error, the
actor exits so Ray restarts it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import ray


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class HistoryWriter:
    def __init__(self, nats_url: str, database_url: str, config: dict[str, Any] | None = None):
        from store.writer import Writer, WriterConfig

        self.writer = Writer(nats_url, database_url, WriterConfig(**(config or {})))
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        if self.task is None:
            self.task = asyncio.create_task(self._run())
        return True

    async def _run(self) -> None:
        try:
            await self.writer.run()
        except Exception:  # a broken writer: let Ray start a fresh process
            import logging

            logging.getLogger("twinfleet.store").exception("history writer failed; restarting")
            os._exit(1)

    async def status(self) -> dict[str, Any]:
        await self.start()
        return await self.writer.status()

    async def stop(self) -> None:
        self.writer.stop()
        if self.task is not None:
            await self.task
