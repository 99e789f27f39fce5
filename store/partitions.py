"""Time partitions, made on demand, and retention per tier.

Native declarative partitioning: ``readings`` by UTC day, ``reading_blocks`` and
``rollup_1m`` by month, ``rollup_1h`` by year. A partition is named after the period it
holds (``readings_p20261129``, ``rollup_1m_p202611``, ``rollup_1h_p2026``), so its bounds
are read off its name. Partitions are created when a writer first needs them (late data
from a gateway outage included); there is no default partition, whose presence would make
every new partition scan it.

Retention (table ``retention``): for the tier ``raw`` (readings and blocks), ``1m`` and
``1h``, every partition wholly older than ``now() - keep`` is dropped, and rows older
than that in the partition that straddles the cut are deleted.

>>> period_start("readings", datetime(2026, 11, 29, 13, 5, tzinfo=UTC))
datetime.datetime(2026, 11, 29, 0, 0, tzinfo=datetime.timezone.utc)
>>> partition_name("rollup_1m", datetime(2026, 11, 29, tzinfo=UTC))
'rollup_1m_p202611'
>>> [t.isoformat() for t in bounds("rollup_1h_p2026")]
['2026-01-01T00:00:00+00:00', '2027-01-01T00:00:00+00:00']
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

GRAIN = {"readings": "day", "reading_blocks": "month", "rollup_1m": "month", "rollup_1h": "year"}
TIERS = {"raw": ("readings", "reading_blocks"), "1m": ("rollup_1m",), "1h": ("rollup_1h",)}
_TIME_COLUMN = {
    "readings": "ts",
    "reading_blocks": "hour",
    "rollup_1m": "bucket",
    "rollup_1h": "bucket",
}
_FORMAT = {"day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}
_LOCK = 0x7477_7061  # "twpa": creating partitions


def period_start(table: str, t: datetime) -> datetime:
    t = t.astimezone(UTC)
    grain = GRAIN[table]
    if grain == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "month":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


def _next(grain: str, start: datetime) -> datetime:
    if grain == "day":
        return start + timedelta(days=1)
    if grain == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start.replace(year=start.year + 1)


def partition_name(table: str, t: datetime) -> str:
    return f"{table}_p{period_start(table, t).strftime(_FORMAT[GRAIN[table]])}"


def bounds(name: str) -> tuple[datetime, datetime]:
    table, _, stamp = name.rpartition("_p")
    grain = GRAIN[table]
    start = datetime.strptime(stamp, _FORMAT[grain]).replace(tzinfo=UTC)
    return start, _next(grain, start)


class Partitions:
    """Knows which partitions exist (asks the catalog once) and makes missing ones.

    ``ensure_async`` (psycopg ``AsyncConnection``) and ``ensure`` (a synchronous one) run
    in the caller's transaction."""

    _CATALOG = (
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(%s)"
    )

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._loaded = False

    def forget(self) -> None:
        """Ask the catalog again next time (after a reconnect, or partitions dropped)."""
        self._loaded = False

    def _missing(self, table: str, times: Iterable[datetime]) -> dict[str, datetime]:
        wanted = {partition_name(table, t): period_start(table, t) for t in times}
        return {n: s for n, s in sorted(wanted.items()) if n not in self._known}

    def _create(self, table: str, name: str, start: datetime) -> list[sql.Composed]:
        statements = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
            ).format(
                sql.Identifier(name),
                sql.Identifier(table),
                sql.Literal(start),
                sql.Literal(_next(GRAIN[table], start)),
            )
        ]
        if table == "reading_blocks":  # already compressed: no TOAST compression
            statements.append(
                sql.SQL("ALTER TABLE {} ALTER COLUMN data SET STORAGE EXTERNAL").format(
                    sql.Identifier(name)
                )
            )
        return statements

    async def ensure_async(self, conn: Any, table: str, times: Iterable[datetime]) -> list[str]:
        if not self._loaded:
            cur = await conn.execute(self._CATALOG, (list(GRAIN),))
            self._known = {r[0] for r in await cur.fetchall()}
            self._loaded = True
        missing = self._missing(table, times)
        if missing:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            for name, start in missing.items():
                for statement in self._create(table, name, start):
                    await conn.execute(statement)
                self._known.add(name)
        return list(missing)

    def ensure(self, conn: Any, table: str, times: Iterable[datetime]) -> list[str]:
        if not self._loaded:
            self._known = {r[0] for r in conn.execute(self._CATALOG, (list(GRAIN),))}
            self._loaded = True
        missing = self._missing(table, times)
        if missing:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            for name, start in missing.items():
                for statement in self._create(table, name, start):
                    conn.execute(statement)
                self._known.add(name)
        return list(missing)


async def existing(conn: Any, table: str) -> list[str]:
    """The partitions of ``table``, oldest first."""
    cur = await conn.execute(Partitions._CATALOG, ([table],))
    return sorted(r[0] for r in await cur.fetchall())


async def apply_retention(conn: Any, now: datetime) -> dict[str, int]:
    """Drop expired partitions and delete expired rows; returns, per table, partitions
    dropped plus rows deleted. One transaction."""
    gone: dict[str, int] = {}
    async with conn.transaction():
        cur = await conn.execute("SELECT tier, keep FROM retention")
        for tier, keep in await cur.fetchall():
            cut = now - keep
            for table in TIERS[tier]:
                dropped = 0
                for name in await existing(conn, table):
                    start, end = bounds(name)
                    if end <= cut:
                        await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                        dropped += 1
                    elif start < cut:
                        column = sql.Identifier(_TIME_COLUMN[table])
                        cur = await conn.execute(
                            sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                                sql.Identifier(name), column
                            ),
                            (cut,),
                        )
                        dropped += cur.rowcount
                gone[table] = dropped
    return gone
