"""Helpers for the history tests: the example plant registered in a fresh database,
telemetry published to a real JetStream, and a writer run until it has stored it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from schemas.plant import Plant, load_plant
from store.registry import register_plant
from store.writer import Writer, WriterConfig

PLANT_FILE = Path(__file__).parents[2] / "twinfleet" / "plants" / "example.yaml"
SITE = "plant-north"


@pytest.fixture(scope="session")
def plant() -> Plant:
    return load_plant(PLANT_FILE)


@pytest.fixture
def registered(database: str, plant: Plant) -> str:
    with psycopg.connect(database) as conn:
        register_plant(conn, plant)
    return database


def batch_json(
    batch_id: str,
    sensors: list[str],
    ts_ms: list[int],
    values: list[float],
    quality: list[int] | None = None,
    **extra: Any,
) -> bytes:
    return json.dumps(
        {
            "gateway_id": "gw-test",
            "site_id": SITE,
            "batch_id": batch_id,
            "sent_at": int(time.time() * 1000),
            "readings": {
                "machine_id": [s.split(".")[0] for s in sensors],
                "sensor_id": sensors,
                "timestamp": ts_ms,
                "value": values,
                "quality": quality if quality is not None else [0] * len(sensors),
            },
            **extra,
        }
    ).encode()


async def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``(subject, payload)`` to JetStream (streams made as the hub makes them)."""
    import nats

    from actors.bus import ensure_jetstream

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_jetstream(js)
        for i in range(0, len(messages), 200):
            await asyncio.gather(
                *(js.publish(subject, data) for subject, data in messages[i : i + 200])
            )
    finally:
        await nc.close()


def run_writer(
    nats_url: str,
    database: str,
    until: Callable[[Writer], bool],
    timeout_s: float = 60.0,
    config: WriterConfig | None = None,
    after: Callable[[Writer], Any] | None = None,
) -> Writer:
    """Run a writer in this process until ``until(writer)`` holds (checked every 50 ms),
    then stop it; fails the test on timeout."""
    cfg = config or WriterConfig(flush_interval_s=0.2, maintenance_every_s=3600.0)
    writer = Writer(nats_url, database, cfg)

    async def go() -> None:
        task = asyncio.create_task(writer.run())
        deadline = time.monotonic() + timeout_s
        try:
            while not until(writer):
                if task.done():
                    task.result()
                    raise AssertionError("the writer stopped on its own")
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"writer did not get there in {timeout_s} s: {writer.stats}"
                    )
                await asyncio.sleep(0.05)
            if after is not None:
                await after(writer)
        finally:
            writer.stop()
            await task

    asyncio.run(go())
    return writer


def stored(n: int) -> Callable[[Writer], bool]:
    """Until this writer has stored ``n`` new messages."""
    return lambda w: w.stats["messages_stored"] >= n


def numpy_groups(
    keys: np.ndarray, ts_ms: np.ndarray, values: np.ndarray, quality: np.ndarray, bucket_ms: int
) -> dict[tuple[int, int], tuple[int, float, float, float, float]]:
    """The numpy reference: per (sensor, bucket start) count, mean, population std, min, max
    over values of good or uncertain quality (as float32, as stored)."""
    out = {}
    v32 = values.astype(np.float32).astype(np.float64)
    buckets = ts_ms // bucket_ms * bucket_ms
    for k in np.unique(keys):
        for b in np.unique(buckets[keys == k]):
            sel = (keys == k) & (buckets == b) & (quality < 2)
            x = v32[sel]
            if len(x):
                out[(int(k), int(b))] = (len(x), x.mean(), x.std(), x.min(), x.max())
    return out
