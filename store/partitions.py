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
    """Knows which partitions exist (asks the catalog once) and makes missing ones."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._loaded = False

    def _load(self, conn: Any) -> None:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(%s)",
            (list(GRAIN),),
        ).fetchall()
        self._known = {r[0] for r in rows}
        self._loaded = True

    def forget(self) -> None:
        """Ask the catalog again next time (after a reconnect, or partitions dropped)."""
        self._loaded = False

    def ensure(self, conn: Any, table: str, times: Iterable[datetime]) -> list[str]:
        """Make the partitions of ``table`` that hold ``times``; returns those created.
        Runs in the caller's transaction."""
        if not self._loaded:
            self._load(conn)
        wanted = {partition_name(table, t): period_start(table, t) for t in times}
        missing = {n: s for n, s in wanted.items() if n not in self._known}
        if not missing:
            return []
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        created = []
        for name, start in sorted(missing.items()):
            end = _next(GRAIN[table], start)
            exists = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]
            if exists is None:
                conn.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(name),
                        sql.Identifier(table),
                        sql.Literal(start),
                        sql.Literal(end),
                    )
                )
                if table == "reading_blocks":  # already compressed: no TOAST compression
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ALTER COLUMN data SET STORAGE EXTERNAL").format(
                            sql.Identifier(name)
                        )
                    )
                created.append(name)
            self._known.add(name)
        return created

    def existing(self, conn: Any, table: str) -> list[str]:
        self._load(conn)
        return sorted(n for n in self._known if n.rpartition("_p")[0] == table)


def retention(conn: Any) -> dict[str, timedelta]:
    return {tier: keep for tier, keep in conn.execute("SELECT tier, keep FROM retention")}


def apply_retention(conn: Any, now: datetime, partitions: Partitions) -> dict[str, int]:
    """Drop expired partitions and delete expired rows; returns what went, per table
    (partitions dropped + rows deleted). One transaction."""
    gone: dict[str, int] = {}
    with conn.transaction():
        for tier, keep in retention(conn).items():
            cut = now - keep
            for table in TIERS[tier]:
                dropped = 0
                for name in partitions.existing(conn, table):
                    start, end = bounds(name)
                    if end <= cut:
                        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                        dropped += 1
                    elif start < cut:
                        column = sql.Identifier(_TIME_COLUMN[table])
                        cur = conn.execute(
                            sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                                sql.Identifier(name), column
                            ),
                            (cut,),
                        )
                        dropped += cur.rowcount
                gone[table] = dropped
    partitions.forget()
    return gone
