"""Compaction of closed days into blocks, late readings merged into compacted days, and
retention per tier, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from schemas import subjects
from schemas.plant import Plant
from store.compaction import compact_closed_days
from store.partitions import apply_retention
from store.queries import raw_readings
from store.writer import WriterConfig
from tests.store.conftest import SITE, batch_json, publish, run_writer, stored
from twinfleet.services import NatsServer

FAST = WriterConfig(flush_interval_s=0.2, hour_rollup_every_s=0.1, maintenance_every_s=3600.0)
DAY = 86_400_000


def _day_start(days_ago: int) -> int:
    return (int(time.time() * 1000) // DAY - days_ago) * DAY


def _series(plant: Plant, tag: str, start_ms: int, seconds: int, step_s: int = 10):
    """Two sensors, one reading every ``step_s`` seconds (a smooth signal plus noise
    rounded as a 12-bit sensor would report it), in messages of one hour."""
    machine = plant.machines[0]
    sensors = machine.sensor_ids()[:2]
    rng = np.random.default_rng(len(tag))
    msgs = []
    for hour in range(0, seconds, 3600):
        s, t, v = [], [], []
        for sec in range(hour, min(hour + 3600, seconds), step_s):
            for k, sensor in enumerate(sensors):
                s.append(sensor)
                t.append(start_ms + sec * 1000)
                x = 50 + 5 * np.sin(sec / 3000 + k) + rng.normal(0, 0.2)
                v.append(round(float(x), 2))
        msgs.append((subjects.telemetry(SITE, machine.id), batch_json(f"{tag}-{hour}", s, t, v)))
    return msgs, sensors


async def _raw(database: str, sensor: str, start: datetime, end: datetime):
    async with await psycopg.AsyncConnection.connect(database) as conn:
        cur = await conn.execute("SELECT sensor_key FROM sensors WHERE sensor_id = %s", (sensor,))
        key = (await cur.fetchone())[0]
        return await raw_readings(conn, key, start, end)


async def _compact(database: str, before: datetime) -> int:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        return await compact_closed_days(conn, before)


def test_closed_days_move_into_blocks_and_read_back_the_same(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    old, sensors = _series(plant, "old", _day_start(3), 2 * 86_400)  # two whole days
    today, _ = _series(plant, "today", _day_start(0), 600)
    asyncio.run(publish(nats_server.url, old + today))
    run_writer(nats_server.url, registered, stored(len(old) + len(today)), config=FAST)
    start = datetime.fromtimestamp(_day_start(3) / 1000, UTC)
    end = start + timedelta(days=3)
    before = [asyncio.run(_raw(registered, s, start, end)) for s in sensors]
    with psycopg.connect(registered) as conn:
        raw_total = conn.execute("SELECT count(*) FROM readings").fetchone()[0]

    moved = asyncio.run(_compact(registered, datetime.now(UTC) - timedelta(hours=2)))

    with psycopg.connect(registered) as conn:
        left = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        n, size, blocks_ = conn.execute(
            "SELECT sum(n), sum(length(data)), count(*) FROM reading_blocks"
        ).fetchone()
        parts = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
    assert moved == n == 2 * 2 * 8640 and left == raw_total - moved
    assert blocks_ == 2 * 48  # one per sensor and hour
    assert size / n < 3.0, f"{size / n:.2f} bytes per reading"
    day3 = datetime.fromtimestamp(_day_start(3) / 1000, UTC).strftime("%Y%m%d")
    assert f"readings_p{day3}" not in parts
    after = [asyncio.run(_raw(registered, s, start, end)) for s in sensors]
    for b, a in zip(before, after, strict=True):
        for x, y in zip(b, a, strict=True):
            np.testing.assert_array_equal(x, y)

    # late readings of a compacted day land in a new partition and merge at the next run
    late_ms = _day_start(3) + 5 * 3_600_000 + 500  # between two readings of hour 5
    machine = plant.machines[0]
    late = batch_json("late", [sensors[0]], [late_ms], [99.5])
    asyncio.run(publish(nats_server.url, [(subjects.telemetry(SITE, machine.id), late)]))
    run_writer(nats_server.url, registered, stored(1), config=FAST)
    assert asyncio.run(_compact(registered, datetime.now(UTC) - timedelta(hours=2))) == 1
    t, v, _ = asyncio.run(_raw(registered, sensors[0], start, end))
    assert len(t) == len(before[0][0]) + 1
    assert v[np.searchsorted(t, late_ms)] == np.float32(99.5)
    assert (np.diff(t) > 0).all()
    with psycopg.connect(registered) as conn:
        assert conn.execute("SELECT count(*) FROM reading_blocks").fetchone()[0] == 2 * 48


def test_retention_drops_old_raw_data_and_keeps_the_rollups(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    msgs = []
    for days_ago in (40, 10, 1):
        msgs += _series(plant, f"d{days_ago}", _day_start(days_ago), 3600, step_s=60)[0]
    asyncio.run(publish(nats_server.url, msgs))
    run_writer(nats_server.url, registered, stored(len(msgs)), config=FAST)
    asyncio.run(_compact(registered, datetime.now(UTC)))
    with psycopg.connect(registered) as conn:
        conn.execute("UPDATE retention SET keep = '5 days' WHERE tier = 'raw'")
        conn.execute("UPDATE retention SET keep = '20 days' WHERE tier = '1m'")
        conn.commit()

    async def retain() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(registered) as conn:
            return await apply_retention(conn, datetime.now(UTC))

    gone = asyncio.run(retain())
    assert gone["reading_blocks"] > 0 and gone["rollup_1m"] > 0

    def days(table: str, column: str) -> list[int]:
        with psycopg.connect(registered) as conn:
            rows = conn.execute(
                f"SELECT DISTINCT (extract(epoch FROM {column}) * 1000)::bigint / {DAY} "
                f"FROM {table} ORDER BY 1"
            ).fetchall()
        return [int(time.time() * 1000) // DAY - r[0] for r in rows]

    assert days("reading_blocks", "hour") == [1]
    assert days("readings", "ts") == []
    assert days("rollup_1m", "bucket") == [10, 1]
    assert days("rollup_1h", "bucket") == [40, 10, 1]
