"""The history in PostgreSQL as the API answers it: a sensor's time series and a machine's
history (:mod:`store.queries`), over a small pool of connections per replica.

Times in a request are ISO 8601 with a zone (``2026-11-29T00:00:00Z``,
``2026-11-29T01:00:00+01:00``); a time without one is refused, not guessed. The range
defaults to the 24 hours before now. A :class:`store.queries.QueryError` becomes an
:class:`~api.errors.ApiError` with its status (404 unknown sensor or machine, 413 too many
raw readings, 422 a bad parameter); no database configured, or the database not
answering, is 503.

>>> parse_time("2026-11-29T01:00:00+01:00", "start").isoformat()
'2026-11-29T00:00:00+00:00'
>>> parse_time("2026-11-29T01:00:00", "end")
Traceback (most recent call last):
...
api.errors.ApiError: end: 2026-11-29T01:00:00 has no time zone; add one (Z for UTC, or +01:00)
>>> [t.isoformat() for t in time_range(None, parse_time("2026-11-29T00:00:00Z", "end"))]
['2026-11-28T00:00:00+00:00', '2026-11-29T00:00:00+00:00']
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.errors import ApiError
from store import queries
from store.accuracy import live_accuracy

DEFAULT_SPAN = timedelta(hours=24)
POOL_MIN = 1
POOL_MAX = 4
WAIT_S = 10.0
"""How long a request waits for a pooled connection before it is answered 503."""

_CODES = {404: "not_found", 413: "range_too_large", 422: "invalid_request"}

NO_DATABASE = (
    "the history is not available: this API runs without a database (start it with database_url)"
)


EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)
"""The times a request may name: a range and its default span stay within what Python's
``datetime`` holds (year 1 with an offset east of UTC, or a day before it, overflowed: 500)."""


def aware(t: datetime, field: str) -> datetime:
    """``t`` in UTC; a 422 naming ``field`` when it has no time zone or is out of range.

    >>> aware(datetime.fromisoformat("0001-01-01T00:00:00+05:00"), "start")
    Traceback (most recent call last):
    ...
    api.errors.ApiError: start: 0001-01-01T00:00:00+05:00 is out of range: ...
    """
    if t.tzinfo is None or t.utcoffset() is None:
        raise ApiError(
            422,
            "invalid_request",
            f"{field}: {t.isoformat()} has no time zone; add one (Z for UTC, or +01:00)",
            field,
        )
    try:
        utc: datetime | None = t.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ApiError(
            422,
            "invalid_request",
            f"{field}: {t.isoformat()} is out of range: a time from {EARLIEST:%Y-%m-%d} to "
            f"{LATEST:%Y-%m-%d}",
            field,
        )
    return utc


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO 8601 time with a zone, in UTC (``None`` stays ``None``)."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ApiError(
            422,
            "invalid_request",
            f"{field}: {value!r} is not an ISO 8601 time with a zone, for example "
            "2026-11-29T00:00:00Z (in a URL, write '+' as %2B)",
            field,
        ) from None
    return aware(t, field)


def time_range(
    start: datetime | None, end: datetime | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """``end`` defaults to now, ``start`` to :data:`DEFAULT_SPAN` before ``end``."""
    end = end if end is not None else (now or datetime.now(UTC))
    return (start if start is not None else end - DEFAULT_SPAN), end


MAX_ROLLUP_ROWS = 50_000
"""Buckets of a rolled-up series in one answer: 1-minute buckets over about 34 days, hourly
ones over 5 years (the longest range)."""
_BUCKET = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}


def rollup_rows(start: datetime, end: datetime, aggregation: str) -> int:
    """The buckets a rolled-up series over ``[start, end)`` has (0 for raw: that is
    bounded by its readings); a 413 over :data:`MAX_ROLLUP_ROWS`.

    >>> t = datetime(2026, 11, 1, tzinfo=UTC)
    >>> rollup_rows(t, t + timedelta(days=3), "auto"), rollup_rows(t, t + timedelta(days=300), "1h")
    (4320, 7200)
    >>> rollup_rows(t, t + timedelta(days=60), "1m")
    Traceback (most recent call last):
    ...
    api.errors.ApiError: the range holds 86,400 buckets of 1m, more than 50,000; ...
    """
    try:
        resolution = queries.check_range(start, end, aggregation)
    except queries.QueryError:
        return 0  # the query refuses it with its own message
    bucket = _BUCKET.get(resolution)
    if bucket is None:
        return 0
    rows = -(-(end - start) // bucket)
    if rows > MAX_ROLLUP_ROWS:
        raise ApiError(
            413,
            "range_too_large",
            f"the range holds {rows:,} buckets of {resolution}, more than {MAX_ROLLUP_ROWS:,}; "
            "ask for aggregation=1h or a shorter range",
            "end",
        )
    return int(rows)


class History:
    """The history database of one replica: a pool of ``POOL_MIN`` to ``POOL_MAX``
    connections, each request in one (read) transaction."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, url: str, min_size: int = POOL_MIN, max_size: int = POOL_MAX) -> History:
        """Opens the pool; connections are made in the background, so a database that
        is down when the API starts makes its requests 503 until it is up, not the API
        fail to start."""
        pool: AsyncConnectionPool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=WAIT_S,
            check=AsyncConnectionPool.check_connection,
            name="history",
            open=False,
        )
        await pool.open()
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def timeseries(
        self, sensor_id: str, start: datetime, end: datetime, aggregation: str
    ) -> dict[str, Any]:
        rollup_rows(start, end, aggregation)
        return await self._run(queries.timeseries, sensor_id, start, end, aggregation)

    async def asset_history(self, asset_id: str, start: datetime, end: datetime) -> dict[str, Any]:
        return await self._run(queries.history, asset_id, start, end)

    async def model_accuracy(self, since: datetime | None) -> dict[str, Any]:
        """Live accuracy per model version and machine type (:mod:`store.accuracy`)."""
        return await self._run(_accuracy, since)

    async def _run(
        self, query: Callable[..., Awaitable[dict[str, Any]]], *args: Any
    ) -> dict[str, Any]:
        try:
            async with self.pool.connection() as conn:
                return await query(conn, *args)
        except queries.QueryError as exc:
            code = _CODES.get(exc.status, "invalid_request")
            raise ApiError(exc.status, code, str(exc), exc.field) from None
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise ApiError(
                503,
                "unavailable",
                f"the history database is not answering ({type(exc).__name__}); try again",
            ) from None


async def _accuracy(conn: Any, since: datetime | None) -> dict[str, Any]:
    return {"models": await live_accuracy(conn, since)}
