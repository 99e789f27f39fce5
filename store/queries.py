"""What the API asks of the history: a sensor's time series, a machine's history.

Both are async (psycopg ``AsyncConnection``) and return plain dicts in the shapes of
``../shared/API.md`` (``GET /sensors/{id}/timeseries``), with times as ISO-8601 UTC.

Resolution: ``raw`` (the readings, from the hot partitions and the compacted blocks),
``1m`` and ``1h`` (the rollups), or ``auto``: raw up to :data:`AUTO_RAW_SPAN`, 1-minute
up to :data:`AUTO_MINUTE_SPAN`, else 1-hour. A bucket belongs to a range when its start
is inside ``[start, end)``. The statistics are over the same values as the points:
population standard deviation; values of bad quality are left out (they are counted).
A raw range with more than :data:`MAX_RAW_POINTS` readings is refused
(:class:`RangeTooLarge`): ask for a rollup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from schemas.common import iso_utc
from store import blocks

AGGREGATIONS = ("raw", "1m", "1h", "auto")
AUTO_RAW_SPAN = timedelta(hours=2)
AUTO_MINUTE_SPAN = timedelta(days=3)
MAX_RAW_POINTS = 200_000
MAX_SPAN = timedelta(days=5 * 366)


class QueryError(ValueError):
    """A query the history cannot answer; ``field`` names the parameter at fault."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class UnknownSensor(QueryError):
    def __init__(self, sensor_id: str) -> None:
        super().__init__(f"no sensor {sensor_id!r} in the history", "sensor_id", 404)


class UnknownAsset(QueryError):
    def __init__(self, asset_id: str) -> None:
        super().__init__(f"no asset {asset_id!r} in the history", "asset_id", 404)


class RangeTooLarge(QueryError):
    def __init__(self, count: int) -> None:
        super().__init__(
            f"the range holds {count:,} raw readings, more than {MAX_RAW_POINTS:,}; "
            "ask for aggregation=1m, 1h or auto",
            "aggregation",
            413,
        )


def check_range(start: datetime, end: datetime, aggregation: str) -> str:
    """Validate a range and resolve ``auto``; returns the resolution used."""
    if aggregation not in AGGREGATIONS:
        raise QueryError(
            f"aggregation must be one of {', '.join(AGGREGATIONS)}, not {aggregation!r}",
            "aggregation",
        )
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None or t.utcoffset() is None:
            raise QueryError(f"{name} needs a time zone (for example 2026-11-29T00:00:00Z)", name)
    if end <= start:
        raise QueryError(
            f"end ({end.isoformat()}) must be after start ({start.isoformat()})", "end"
        )
    if end - start > MAX_SPAN:
        raise QueryError("a range may span at most 5 years", "end")
    if aggregation != "auto":
        return aggregation
    span = end - start
    if span <= AUTO_RAW_SPAN:
        return "raw"
    return "1m" if span <= AUTO_MINUTE_SPAN else "1h"


@dataclass(frozen=True)
class Stats:
    count: int
    mean: float | None
    m2: float | None
    vmin: float | None
    vmax: float | None

    def as_json(self) -> dict[str, Any]:
        std = (
            None
            if self.m2 is None or not self.count
            else float(np.sqrt(max(self.m2, 0.0) / self.count))
        )
        return {
            "overall_avg": self.mean,
            "overall_min": self.vmin,
            "overall_max": self.vmax,
            "overall_stddev": std,
            "count": self.count,
        }


def combine(
    count: np.ndarray, mean: np.ndarray, m2: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> Stats:
    """Merge per-bucket partials exactly: the same as the statistics of all their values."""
    keep = count > 0
    n = int(count[keep].sum())
    if n == 0:
        return Stats(0, None, None, None, None)
    c = count[keep].astype(np.float64)
    mu = float((mean[keep] * c).sum() / n)
    total_m2 = float(m2[keep].sum() + (c * (mean[keep] - mu) ** 2).sum())
    return Stats(n, mu, total_m2, float(lo[keep].min()), float(hi[keep].max()))


async def _sensor(conn: Any, sensor_id: str) -> tuple[int, str]:
    cur = await conn.execute(
        "SELECT sensor_key, unit FROM sensors WHERE sensor_id = %s", (sensor_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownSensor(sensor_id)
    return int(row[0]), str(row[1])


async def raw_readings(
    conn: Any, key: int, start: datetime, end: datetime, limit: int = MAX_RAW_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts_ms, value, quality)`` of one sensor in ``[start, end)``, in time order, from
    the hot partitions and the compacted blocks (a reading is in exactly one of them)."""
    cur = await conn.execute(
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, value, quality FROM readings "
        "WHERE sensor_key = %s AND ts >= %s AND ts < %s LIMIT %s",
        (key, start, end, limit + 1),
    )
    hot = await cur.fetchall()
    parts_t = [np.array([r[0] for r in hot], dtype=np.int64)]
    parts_v = [np.array([r[1] for r in hot], dtype=np.float32)]
    parts_q = [np.array([r[2] for r in hot], dtype=np.int8)]
    # blocks are keyed by the UTC hour (a zone offset need not be whole hours: +05:30)
    first_hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    cur = await conn.execute(
        "SELECT data FROM reading_blocks WHERE sensor_key = %s AND hour >= %s AND hour < %s "
        "AND last_ts >= %s AND first_ts < %s ORDER BY hour",
        (key, first_hour, end, start, end),
    )
    lo, hi = _ms(start), _ms(end)
    async for (data,) in cur:
        t, v, q = blocks.decode(bytes(data))
        inside = (t >= lo) & (t < hi)
        parts_t.append(t[inside])
        parts_v.append(v[inside])
        parts_q.append(q[inside])
        if sum(len(p) for p in parts_t) > limit:
            break
    t = np.concatenate(parts_t)
    if len(t) > limit:
        raise RangeTooLarge(len(t))
    order = np.argsort(t, kind="stable")
    return t[order], np.concatenate(parts_v)[order], np.concatenate(parts_q)[order]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


async def _records(conn: Any, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Rows as dicts named by the query's columns, ``timestamp`` as ISO 8601 UTC."""
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows: list[dict[str, Any]] = await cur.fetchall()
    for row in rows:
        row["timestamp"] = iso_utc(_ms(row["timestamp"]))
    return rows


async def _anomalies(
    conn: Any, sensor_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    return await _records(
        conn,
        'SELECT ts AS "timestamp", value, score AS anomaly_score, severity, type, reason '
        "FROM anomalies WHERE sensor_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT 10000",
        (sensor_id, start, end),
    )


async def timeseries(
    conn: Any, sensor_id: str, start: datetime, end: datetime, aggregation: str = "auto"
) -> dict[str, Any]:
    """A sensor's series over ``[start, end)`` with its statistics and anomalies."""
    resolution = check_range(start, end, aggregation)
    key, unit = await _sensor(conn, sensor_id)
    data: list[dict[str, Any]]
    if resolution == "raw":
        t, v, q = await raw_readings(conn, key, start, end)
        data = [
            {"timestamp": iso_utc(int(ts)), "value": float(val), "quality": _QUALITY[int(qq)]}
            for ts, val, qq in zip(t.tolist(), v.tolist(), q.tolist(), strict=True)
        ]
        ok = q < 2
        x = v[ok].astype(np.float64)
        stats = (
            Stats(
                len(x),
                float(x.mean()),
                float(((x - x.mean()) ** 2).sum()),
                float(x.min()),
                float(x.max()),
            )
            if len(x)
            else Stats(0, None, None, None, None)
        )
    else:
        table = "rollup_1m" if resolution == "1m" else "rollup_1h"
        cur = await conn.execute(
            f"SELECT (extract(epoch FROM bucket) * 1000)::bigint, count, mean, m2, vmin, vmax, "
            f"n_uncertain, n_bad FROM {table} WHERE sensor_key = %s AND bucket >= %s AND "
            "bucket < %s ORDER BY bucket",
            (key, start, end),
        )
        rows = await cur.fetchall()
        data = [
            {
                "timestamp": iso_utc(int(b)),
                "avg": mean,
                "min": lo,
                "max": hi,
                "stddev": None if m2 is None or not n else float(np.sqrt(max(m2, 0.0) / n)),
                "count": n,
                "uncertain": unc,
                "bad": bad,
            }
            for b, n, mean, m2, lo, hi, unc, bad in rows
        ]
        if rows:
            cols = list(zip(*rows, strict=True))
            nan = float("nan")

            def col(i: int, dtype: str) -> np.ndarray:
                return np.array([nan if x is None else x for x in cols[i]], dtype=dtype)

            stats = combine(col(1, "i8"), col(2, "f8"), col(3, "f8"), col(4, "f8"), col(5, "f8"))
        else:
            stats = Stats(0, None, None, None, None)
    return {
        "sensor_id": sensor_id,
        "unit": unit,
        "aggregation": resolution,
        "start": iso_utc(_ms(start)),
        "end": iso_utc(_ms(end)),
        "data_points": len(data),
        "data": data,
        "anomalies": await _anomalies(conn, sensor_id, start, end),
        "statistics": stats.as_json(),
    }


_QUALITY = {0: "good", 1: "uncertain", 2: "bad"}


async def history(conn: Any, asset_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """A machine's history over ``[start, end)``: its state (status, health), its RUL
    predictions and its anomalies, each in time order."""
    check_range(start, end, "1h")
    cur = await conn.execute("SELECT 1 FROM assets WHERE asset_id = %s", (asset_id,))
    if await cur.fetchone() is None:
        raise UnknownAsset(asset_id)
    window = (asset_id, start, end)
    states = await _records(
        conn,
        'SELECT ts AS "timestamp", status, health_score, active_anomalies FROM twin_snapshots '
        "WHERE asset_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT 100000",
        window,
    )
    rul = await _records(
        conn,
        'SELECT predicted_at AS "timestamp", component, failure_mode, median_hours, '
        "lower_hours, upper_hours, p_fail_7d AS failure_probability_7d, model_version "
        "FROM rul_predictions WHERE asset_id = %s AND predicted_at >= %s AND predicted_at < %s "
        "ORDER BY predicted_at LIMIT 100000",
        window,
    )
    anomalies = await _records(
        conn,
        'SELECT anomaly_id, ts AS "timestamp", sensor_id, type, severity, '
        "score AS anomaly_score, value, reason, source FROM anomalies "
        "WHERE asset_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT 100000",
        window,
    )
    return {
        "asset_id": asset_id,
        "start": iso_utc(_ms(start)),
        "end": iso_utc(_ms(end)),
        "states": states,
        "rul": rul,
        "anomalies": anomalies,
    }
