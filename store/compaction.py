"""Compaction: closed days of raw readings into per-sensor-hour blocks.

A ``readings`` partition whose day ended before ``before`` is compacted in one transaction:
it is locked against writers (``SHARE``: reads go on, a writer routing a late reading to
that day waits, then finds the partition gone and makes a new one), read sensor by sensor
range in (sensor, time) order, encoded into one block per sensor and hour
(:mod:`store.blocks`), merged with a block already there (late readings of a day compacted
before), written to ``reading_blocks`` and the partition is dropped. So every reading is
in exactly one of ``readings`` and ``reading_blocks``, never both, never neither.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import sql

from store import blocks
from store.copy import PG_EPOCH_MS
from store.partitions import Partitions, bounds, existing

SENSORS_PER_CHUNK = 2_000
"""Sensors read at a time: bounds memory to a chunk's readings of one day."""

_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l1", ">i4"),
        ("k", ">i4"),
        ("l2", ">i4"),
        ("ts", ">i8"),
        ("l3", ">i4"),
        ("v", ">f4"),
        ("l4", ">i4"),
        ("q", ">i2"),
    ]
)


def parse_copy(buf: bytes) -> np.ndarray:
    """Rows of ``COPY (SELECT sensor_key, ts, value, quality ...) TO STDOUT (FORMAT BINARY)``
    (fixed width, no NULLs) as a structured array."""
    header = 19
    ext = int.from_bytes(buf[15:19], "big")  # header extension length
    body = buf[header + ext : len(buf) - 2]
    return np.frombuffer(body, dtype=_ROW)


async def compact_closed_days(conn: Any, before: datetime) -> int:
    """Compact every raw day that ended before ``before``; returns the readings moved."""
    moved = 0
    for name in await existing(conn, "readings"):
        start, end = bounds(name)
        if end <= before:
            moved += await compact_day(conn, name, start)
    return moved


async def compact_day(conn: Any, partition: str, day: datetime) -> int:
    """Move one day's raw readings into blocks and drop its partition (one transaction)."""
    table = sql.Identifier(partition)
    moved = 0
    async with conn.transaction():
        await conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(table))
        cur = await conn.execute(
            sql.SQL("SELECT min(sensor_key), max(sensor_key) FROM {}").format(table)
        )
        lo, hi = await cur.fetchone()
        if lo is not None:
            await Partitions().ensure_async(conn, "reading_blocks", [day])
            for first in range(lo, hi + 1, SENSORS_PER_CHUNK):
                last = first + SENSORS_PER_CHUNK - 1
                moved += await _compact_chunk(conn, table, day, first, last)
        await conn.execute(sql.SQL("DROP TABLE {}").format(table))
    return moved


async def _compact_chunk(
    conn: Any, table: sql.Identifier, day: datetime, first: int, last: int
) -> int:
    out = bytearray()
    query = sql.SQL(
        "COPY (SELECT sensor_key, ts, value, quality FROM {} WHERE sensor_key BETWEEN {} AND {} "
        "ORDER BY sensor_key, ts) TO STDOUT (FORMAT BINARY)"
    ).format(table, sql.Literal(first), sql.Literal(last))
    async with conn.cursor() as cur, cur.copy(query) as copy:
        async for data in copy:
            out += data
    if len(out) <= 21:
        return 0
    rows = parse_copy(bytes(out))
    key = rows["k"].astype(np.int64)
    ts_ms = rows["ts"].astype(np.int64) // 1000 + PG_EPOCH_MS
    hour = ts_ms // 3_600_000
    change = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]) | (hour[1:] != hour[:-1])])
    ends = np.r_[change[1:], len(rows)]
    groups = [
        (int(key[a]), int(hour[a]) * 3_600_000, a, b) for a, b in zip(change, ends, strict=True)
    ]
    old = await _existing_blocks(conn, day, [(k, h) for k, h, _, _ in groups])
    records = []
    merged: list[tuple[int, int]] = []
    for k, hour_ms, a, b in groups:
        t = ts_ms[a:b]
        v = rows["v"][a:b].astype(np.float32)
        q = rows["q"][a:b].astype(np.int8)
        if (k, hour_ms) in old:  # late readings of a day compacted before
            ot, ov, oq = blocks.decode(old[(k, hour_ms)])
            t, v, q = np.concatenate([ot, t]), np.concatenate([ov, v]), np.concatenate([oq, q])
            order = np.argsort(t, kind="stable")
            t, v, q = t[order], v[order], q[order]
            merged.append((k, hour_ms))
        records.append(
            (
                k,
                _dt(hour_ms),
                len(t),
                _dt(int(t[0])),
                _dt(int(t[-1])),
                float(v.min()),
                float(v.max()),
                blocks.encode(t, v, q),
            )
        )
    if merged:
        await conn.execute(
            "DELETE FROM reading_blocks WHERE hour >= %s AND hour < %s AND sensor_key BETWEEN "
            "%s AND %s AND (sensor_key, hour) IN (SELECT k, to_timestamp(h / 1000.0) FROM "
            "unnest(%s::int[], %s::bigint[]) AS x(k, h))",
            (
                day,
                day + timedelta(days=1),
                first,
                last,
                [k for k, _ in merged],
                [h for _, h in merged],
            ),
        )
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY reading_blocks (sensor_key, hour, n, first_ts, last_ts, vmin, vmax, data) "
            "FROM STDIN"
        ) as copy,
    ):
        for record in records:
            await copy.write_row(record)
    return len(rows)


async def _existing_blocks(
    conn: Any, day: datetime, wanted: list[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The blocks already stored for these (sensor key, hour ms) pairs of ``day``."""
    cur = await conn.execute(
        "SELECT b.sensor_key, (extract(epoch FROM b.hour) * 1000)::bigint, b.data "
        "FROM unnest(%s::int[], %s::bigint[]) AS w(k, h) JOIN reading_blocks b "
        "ON b.sensor_key = w.k AND b.hour = to_timestamp(w.h / 1000.0) "
        "WHERE b.hour >= %s AND b.hour < %s",
        ([k for k, _ in wanted], [h for _, h in wanted], day, day + timedelta(days=1)),
    )
    return {(int(k), int(h)): bytes(d) for k, h, d in await cur.fetchall()}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
