"""The history writer: JetStream telemetry and events into PostgreSQL.

Three loops, each with its own connection, each retrying with backoff when PostgreSQL goes
away (a restart, a crash) and carrying on with what it held:

* **telemetry**: a durable pull consumer on ``TELEMETRY``. Messages are decoded and
  validated as they arrive; every ``flush_rows`` readings or ``flush_interval_s`` they are
  written in **one transaction**: the readings by binary COPY (sorted by sensor and time,
  so the BRIN summaries stay narrow), their 1-minute rollup partials merged into
  ``rollup_1m``, gateways' own 1-minute aggregates, edge anomalies, the refused rows with
  their reasons, and the stream sequence of every message in ``stored_messages``. Only
  after the commit are the messages acknowledged. A message redelivered after a crash is
  found in ``stored_messages`` and acknowledged without writing anything again. While one
  flush is with PostgreSQL the next is being decoded. Between flushes the 1-hour rollups
  of the hours whose 1-minute rollups changed are recomputed from them.
* **events**: a durable pull consumer on ``EVENTS`` (anomalies, RUL predictions, work
  orders; each stored under its natural key, so a redelivery changes nothing), plus the
  twins' change events on core NATS, sampled to one snapshot per machine per
  ``snapshot_every_s`` (not durable: a snapshot missed while the writer is down is simply
  not taken).
* **maintenance**: compaction of closed days (:mod:`store.compaction`), retention
  (:mod:`store.partitions`), pruning of ``stored_messages`` below the consumer's
  acknowledgement floor, and a status report (lag) on ``tf.store.status``.

Refused input never stops the writer: a message that does not decode is refused whole; a
row whose sensor is not registered, or that is older than the raw retention, is refused
alone. A message outside its subject's site is refused whole, as the machine actors
refuse it (issue 18): its machine must be registered at the subject's site, the batch must
be of that site and hold only that machine's readings, aggregates and anomalies, and a
message id scoped to a gateway must be the batch's gateway's. Each refusal is counted
by reason, recorded in ``rejected`` in the same transaction, and published on
``tf.dlq.store`` with its reason. Nothing is ever half stored: a
message's accepted rows and its sequence commit together.

Run it with ``python -m store.writer --nats URL --database URL`` (``twinfleet up`` runs it
as a child process and restarts it if it dies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import sql
from pydantic import BaseModel, ValidationError

from bus.connect import nats_url_on_node
from bus.fetch import fetch
from bus.retention import budget_warnings, stream_usage
from schemas import subjects
from schemas.telemetry import scope_error
from store import compaction, intake
from store.copy import copy_buffer, ms_to_pg
from store.intake import Decoded, Refusal
from store.partitions import Partitions, apply_retention, partition_name
from store.rollups import Partials, partials

log = logging.getLogger("twinfleet.store")

STATUS_SUBJECT = f"{subjects.PREFIX}.store.status"
DLQ_SUBJECT = subjects.dead_letter("store")


class _Envelope(BaseModel):
    """The part of a telemetry batch that says where it comes from (decoded apart from
    :func:`store.intake.decode_telemetry`, which keeps only what is stored)."""

    gateway_id: str
    site_id: str


def _machines(d: Decoded) -> set[str]:
    """Every machine a decoded message has readings, aggregates or anomalies for."""
    found = {a.machine_id for a in d.anomalies}
    if d.rows is not None and len(d.rows):
        found |= {s.split(".", 1)[0] for s in np.unique(d.rows.sensor_id).tolist()}
    if d.aggregates is not None:
        found |= set(d.aggregates.machine_id)
    return found


def out_of_scope(d: Decoded, site_of: dict[str, str]) -> str | None:
    """Why a decoded telemetry message does not belong on its subject (None if it does):
    see the module. ``site_of``: registered machine -> its site (an unregistered machine
    is left to the sensor screening)."""
    msg = d.msg
    address = subjects.telemetry_address(msg.subject)
    if address is None:
        return f"subject {msg.subject!r} is not a machine's telemetry subject"
    site, machine = address
    home = site_of.get(machine)
    if home is not None and home != site:
        return f"machine {machine!r} is at site {home!r}, not at the subject's site {site!r}"
    foreign = sorted(_machines(d) - {machine})
    if foreign:
        return f"data of machine {foreign[0]!r} on the subject of {machine!r}"
    try:
        envelope = _Envelope.model_validate_json(msg.data)
    except ValidationError as exc:
        return intake.first_error(exc, "invalid telemetry batch")
    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
    return scope_error(site, envelope.site_id, envelope.gateway_id, msg_id)


def _retryable() -> tuple[type[BaseException], ...]:
    import psycopg

    return (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass
class WriterConfig:
    telemetry_stream: str = "TELEMETRY"
    events_stream: str = "EVENTS"
    durable: str = "store-writer"
    events_durable: str = "store-events"
    flush_rows: int = 200_000
    flush_interval_s: float = 1.0
    fetch_batch: int = 200
    max_ack_pending: int = 20_000
    ack_wait_s: float = 30.0
    stop_grace_s: float = 15.0
    hour_rollup_every_s: float = 30.0
    summarize_every_s: float = 5.0
    analyze_every_s: float = 600.0
    snapshot_every_s: float = 60.0
    maintenance_every_s: float = 300.0
    status_every_s: float = 5.0
    compact_grace: timedelta = timedelta(hours=2)
    max_backoff_s: float = 10.0


RAW_MERGE = """
INSERT INTO rollup_1m AS r (sensor_key, bucket, count, mean, m2, vmin, vmax, n_uncertain,
    n_bad, source)
SELECT sensor_key, bucket, count, NULLIF(mean, 'NaN'), NULLIF(m2, 'NaN'), NULLIF(vmin, 'NaN'),
    NULLIF(vmax, 'NaN'), n_uncertain, n_bad, 0 FROM stage_1m
ON CONFLICT (sensor_key, bucket) DO UPDATE SET
    mean = CASE WHEN EXCLUDED.count = 0 THEN r.mean WHEN r.count = 0 THEN EXCLUDED.mean
        ELSE r.mean + (EXCLUDED.mean - r.mean) * EXCLUDED.count / (r.count + EXCLUDED.count)
        END,
    m2 = CASE WHEN EXCLUDED.count = 0 THEN r.m2 WHEN r.count = 0 THEN EXCLUDED.m2
        ELSE r.m2 + EXCLUDED.m2 + (EXCLUDED.mean - r.mean) ^ 2 * r.count::float8
            * EXCLUDED.count / (r.count + EXCLUDED.count) END,
    count = r.count + EXCLUDED.count,
    vmin = LEAST(r.vmin, EXCLUDED.vmin),
    vmax = GREATEST(r.vmax, EXCLUDED.vmax),
    n_uncertain = r.n_uncertain + EXCLUDED.n_uncertain,
    n_bad = r.n_bad + EXCLUDED.n_bad
WHERE r.source = 0
"""
"""Merge partials computed from raw readings into the 1-minute rollups (Chan et al.); a
bucket that holds a gateway's own aggregate (source 1) already covers every value."""

EDGE_REPLACE = """
INSERT INTO rollup_1m AS r (sensor_key, bucket, count, mean, m2, vmin, vmax, n_uncertain,
    n_bad, source)
SELECT sensor_key, bucket, count, mean, m2, vmin, vmax, 0, 0, 1 FROM stage_1m
ON CONFLICT (sensor_key, bucket) DO UPDATE SET count = EXCLUDED.count, mean = EXCLUDED.mean,
    m2 = EXCLUDED.m2, vmin = EXCLUDED.vmin, vmax = EXCLUDED.vmax, n_uncertain = 0, n_bad = 0,
    source = 1
"""

HOUR_FROM_MINUTES = """
WITH m AS (
    SELECT r.sensor_key, d.hour, r.count, r.mean, r.m2, r.vmin, r.vmax, r.n_uncertain, r.n_bad
    FROM unnest(%s::timestamptz[]) AS d(hour)
    JOIN rollup_1m r ON r.bucket >= d.hour AND r.bucket < d.hour + interval '1 hour'
), t AS (
    SELECT sensor_key, hour, sum(count) AS n,
        sum(mean * count) FILTER (WHERE count > 0) / NULLIF(sum(count), 0) AS mu
    FROM m GROUP BY sensor_key, hour
)
INSERT INTO rollup_1h AS h (sensor_key, bucket, count, mean, m2, vmin, vmax, n_uncertain,
    n_bad)
SELECT m.sensor_key, m.hour, t.n, t.mu,
    sum(m.m2 + m.count * (m.mean - t.mu) ^ 2) FILTER (WHERE m.count > 0),
    min(m.vmin), max(m.vmax), sum(m.n_uncertain), sum(m.n_bad)
FROM m JOIN t USING (sensor_key, hour)
GROUP BY m.sensor_key, m.hour, t.n, t.mu
ON CONFLICT (sensor_key, bucket) DO UPDATE SET count = EXCLUDED.count, mean = EXCLUDED.mean,
    m2 = EXCLUDED.m2, vmin = EXCLUDED.vmin, vmax = EXCLUDED.vmax,
    n_uncertain = EXCLUDED.n_uncertain, n_bad = EXCLUDED.n_bad
"""
"""Recompute the 1-hour rollups of some hours from their 1-minute rollups (exactly: the
combined mean, and the within- plus between-bucket squared deviations)."""

INSERT_ANOMALY = (
    "INSERT INTO anomalies (anomaly_id, asset_id, sensor_id, ts, type, severity, score, value, "
    "expected_value, reason, detector, source, record) VALUES "
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
INSERT_RUL = (
    "INSERT INTO rul_predictions (asset_id, predicted_at, component, failure_mode, "
    "median_hours, lower_hours, upper_hours, p_fail_7d, model_version, record) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
UPSERT_WORKORDER = (
    "INSERT INTO work_orders (workorder_id, asset_id, type, priority, status, title, "
    "scheduled_date, technician_id, created_at, completed_at, record, failure_mode) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (workorder_id) DO UPDATE SET type = EXCLUDED.type, "
    "priority = EXCLUDED.priority, status = EXCLUDED.status, title = EXCLUDED.title, "
    "scheduled_date = EXCLUDED.scheduled_date, technician_id = EXCLUDED.technician_id, "
    "completed_at = EXCLUDED.completed_at, record = EXCLUDED.record, "
    "failure_mode = EXCLUDED.failure_mode, updated_at = now()"
)
UPSERT_ALERT = (
    "INSERT INTO alerts (alert_id, asset_id, rule_id, kind, subject, severity, status, count, "
    "first_raised_at, last_raised_at, resolved_at, escalation_level, workorder_id, record) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (alert_id) DO UPDATE SET severity = EXCLUDED.severity, "
    "status = EXCLUDED.status, count = EXCLUDED.count, last_raised_at = EXCLUDED.last_raised_at, "
    "resolved_at = EXCLUDED.resolved_at, escalation_level = EXCLUDED.escalation_level, "
    "workorder_id = EXCLUDED.workorder_id, record = EXCLUDED.record, updated_at = now()"
)
INSERT_SNAPSHOT = (
    "INSERT INTO twin_snapshots (asset_id, ts, version, status, health_score, "
    "active_anomalies, state) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
INSERT_AUDIT = (
    "INSERT INTO audit_log (audit_id, at, actor, role, action, target, detail) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
INSERT_REJECTED = (
    "INSERT INTO rejected (stream, seq, reason, rows, sample) VALUES (%s, %s, %s, %s, %s)"
)

_STAGE_COLUMNS = (
    "sensor_key int, bucket timestamptz, count int, mean float8, m2 float8, vmin real, "
    "vmax real, n_uncertain int, n_bad int"
)


def _address(d: Decoded) -> tuple[str, str] | None:
    return subjects.telemetry_address(d.msg.subject)


class Writer:
    """Writes the telemetry and events of a hub's JetStream into PostgreSQL."""

    def __init__(
        self, nats_url: str, database_url: str, config: WriterConfig | None = None
    ) -> None:
        self.nats_url = nats_url
        self.database_url = database_url
        self.config = config or WriterConfig()
        self.stats: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self._keys: dict[str, int] = {}
        self._sites: dict[str, str] = {}  # machine -> its site, as registered
        self._partitions = Partitions()
        self._raw_keep = timedelta(days=90)
        self._nc: Any = None
        self._js: Any = None
        self._stop = asyncio.Event()
        self._last_commit_stream_time = 0.0
        self._written_days: set[datetime] = set()
        self._analyzed: dict[str, float] = {}
        self._started = time.monotonic()
        self._budget_warned: set[str] = set()

    # -- connections ------------------------------------------------------------------

    async def _connect(self, what: str) -> Any:
        """A PostgreSQL connection, retried with backoff until it works or we stop."""
        import psycopg

        delay = 0.2
        while True:
            try:
                return await psycopg.AsyncConnection.connect(self.database_url)
            except psycopg.OperationalError as exc:
                self.stats["db_reconnects"] += 1
                log.warning("%s: PostgreSQL unreachable (%s); retrying in %.1f s", what, exc, delay)
                if await self._sleep(delay):
                    raise asyncio.CancelledError from exc
                delay = min(delay * 2, self.config.max_backoff_s)

    async def _until_stored(
        self, conn: Any, what: str, work: Any, prepare: bool = False
    ) -> tuple[Any, Any]:
        """``await work(conn)``, reconnecting with backoff while PostgreSQL is away;
        returns the connection (a new one after an outage) and the result."""
        delay = 0.2
        while True:
            try:
                return conn, await work(conn)
            except _retryable() as exc:
                self.stats[f"{what}_retries"] += 1
                log.warning("%s: PostgreSQL failed (%s); retrying in %.1f s", what, exc, delay)
                with contextlib.suppress(Exception):
                    await conn.close()
                if await self._sleep(delay):
                    raise asyncio.CancelledError from exc
                delay = min(delay * 2, self.config.max_backoff_s)
                conn = await self._connect(what)
                if prepare:
                    await self._prepare(conn)
                    self._partitions.forget()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    # -- main -------------------------------------------------------------------------

    async def run(self) -> None:
        import nats

        from actors.bus import ensure_jetstream

        self._nc = await nats.connect(
            nats_url_on_node(self.nats_url),  # the password is read on this node
            max_reconnect_attempts=-1,
            inbox_prefix=subjects.inbox(self.config.durable),
        )
        self._js = self._nc.jetstream()
        await ensure_jetstream(self._js)
        try:
            tasks = [
                asyncio.create_task(self._telemetry_loop(), name="telemetry"),
                asyncio.create_task(self._events_loop(), name="events"),
                asyncio.create_task(self._maintenance_loop(), name="maintenance"),
            ]
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            self._stop.set()  # the loops finish what they hold, then return
            _, late = await asyncio.wait(tasks, timeout=self.config.stop_grace_s)
            for task in [*late, stop]:
                task.cancel()
            results = await asyncio.gather(*tasks, stop, return_exceptions=True)
            for task, result in zip(tasks, results, strict=False):
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise RuntimeError(f"writer loop {task.get_name()} failed") from result
        finally:
            await self._nc.close()

    async def _subscribe(self, stream: str, durable: str) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        return await self._js.pull_subscribe(
            "",
            durable=durable,
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.config.ack_wait_s,
                max_ack_pending=self.config.max_ack_pending,
            ),
        )

    # -- telemetry --------------------------------------------------------------------

    async def _telemetry_loop(self) -> None:
        cfg = self.config
        sub = await self._subscribe(cfg.telemetry_stream, cfg.durable)
        conn = await self._connect("telemetry")
        await self._prepare(conn)
        pending: dict[int, Decoded] = {}
        rows = 0
        flushing: asyncio.Task[Any] | None = None
        deadline = time.monotonic() + cfg.flush_interval_s
        last_hours = last_summary = time.monotonic()
        try:
            while not self._stop.is_set():
                wait = max(0.01, min(0.25, deadline - time.monotonic()))
                for msg in await fetch(
                    sub, cfg.fetch_batch, wait, name=cfg.durable, counters=self.stats
                ):
                    meta = msg.metadata
                    decoded = intake.decode_telemetry(
                        meta.sequence.stream, msg.data, meta.timestamp.timestamp(), msg
                    )
                    if decoded.seq not in pending:  # a redelivery of one we still hold
                        pending[decoded.seq] = decoded
                        rows += decoded.count
                due = time.monotonic() >= deadline
                if pending and (rows >= cfg.flush_rows or due):
                    if flushing is not None:
                        conn = await flushing
                    batch, pending, rows = list(pending.values()), {}, 0
                    flushing = asyncio.create_task(self._flush_until_stored(conn, batch))
                    deadline = time.monotonic() + cfg.flush_interval_s
                elif due:
                    deadline = time.monotonic() + cfg.flush_interval_s
                now = time.monotonic()
                hours_due = now - last_hours >= cfg.hour_rollup_every_s
                if hours_due or now - last_summary >= cfg.summarize_every_s:
                    if flushing is not None:
                        conn = await flushing
                        flushing = None
                    work = self.hour_rollups if hours_due else self.summarize_new_ranges
                    conn, _ = await self._until_stored(conn, "telemetry", work, prepare=True)
                    last_summary = now
                    if hours_due:
                        last_hours = now
            # a clean stop: store and acknowledge what is held, and leave no hour behind
            if flushing is not None:
                conn = await flushing
                flushing = None
            if pending:
                conn = await self._flush_until_stored(conn, list(pending.values()))
            await self.hour_rollups(conn)
        finally:
            if flushing is not None and not flushing.done():
                flushing.cancel()
            await conn.close()

    async def _prepare(self, conn: Any) -> None:
        cur = await conn.execute("SELECT keep FROM retention WHERE tier = 'raw'")
        row = await cur.fetchone()
        if row is not None:
            self._raw_keep = row[0]
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS stage_1m ({_STAGE_COLUMNS}) ON COMMIT DELETE ROWS"
        )
        await conn.commit()

    async def _flush_until_stored(self, conn: Any, batch: list[Decoded]) -> Any:
        """Write ``batch`` (retrying through PostgreSQL outages), then acknowledge it.
        Returns the connection to use next (a new one after an outage).

        Should PostgreSQL refuse the data itself (not an outage), the messages are written
        one by one and the one it refuses is recorded as refused with PostgreSQL's reason,
        so one bad message can neither stop the writer nor hold back the others."""
        import psycopg

        refusals: list[Refusal] = []
        todo = [batch]
        while todo:
            part = todo[0]
            try:
                conn, done = await self._until_stored(
                    conn, "flush", lambda c, p=part: self._flush(c, p), prepare=True
                )
                refusals += done
                todo.pop(0)
            except psycopg.errors.CheckViolation as exc:
                self._partitions.forget()  # a partition dropped under us: make it again
                if "no partition" not in str(exc) or self.stats["partition_retries"] > 100:
                    self._split(todo, part, exc)
                self.stats["partition_retries"] += 1
            except psycopg.DatabaseError as exc:
                self._split(todo, part, exc)
        for decoded in batch:
            await decoded.msg.ack()
        self._last_commit_stream_time = max(d.stream_time for d in batch)
        for refusal in refusals:
            await self._dead_letter(self.config.telemetry_stream, refusal)
        return conn

    def _split(self, todo: list[list[Decoded]], part: list[Decoded], exc: Exception) -> None:
        """Replace ``todo[0]`` by its messages one by one; a single message that
        PostgreSQL refuses is marked refused with the reason."""
        todo.pop(0)
        if len(part) > 1:
            todo[:0] = [[d] for d in part]
            return
        only = part[0]
        log.warning("message %d refused by PostgreSQL: %s", only.seq, exc)
        only.refuse(f"refused by PostgreSQL: {str(exc).splitlines()[0]}")
        todo.insert(0, [only])

    async def _dead_letter(self, stream: str, refusal: Refusal) -> None:
        self.refusals[refusal.reason.split(":")[0]] += refusal.rows
        with contextlib.suppress(Exception):  # the record in PostgreSQL is what counts
            await self._nc.publish(
                DLQ_SUBJECT,
                json.dumps(
                    {
                        "stream": stream,
                        "seq": refusal.seq,
                        "reason": refusal.reason,
                        "rows": refusal.rows,
                        "sample": refusal.sample,
                    }
                ).encode(),
            )

    async def _sensor_keys(self, conn: Any, ids: list[str]) -> None:
        missing = [s for s in ids if s not in self._keys]
        if missing:
            cur = await conn.execute(
                "SELECT sensor_id, sensor_key FROM sensors WHERE sensor_id = ANY(%s)", (missing,)
            )
            self._keys.update(dict(await cur.fetchall()))

    async def _machine_sites(self, conn: Any, fresh: list[Decoded]) -> None:
        """Learn the registered sites of the machines ``fresh`` messages' subjects name."""
        named = {a[1] for d in fresh if d.msg is not None and (a := _address(d))}
        missing = sorted(named - self._sites.keys())
        if missing:
            cur = await conn.execute(
                "SELECT asset_id, site_id FROM assets WHERE asset_id = ANY(%s)", (missing,)
            )
            self._sites.update(dict(await cur.fetchall()))

    def _screen_scope(self, fresh: list[Decoded]) -> None:
        """Refuse, whole, every message outside its subject's site (see the module)."""
        for d in fresh:
            if d.refused is None and d.msg is not None:
                why = out_of_scope(d, self._sites)
                if why is not None:
                    self.stats["refused_out_of_scope"] += 1
                    d.refuse(why)

    async def _flush(self, conn: Any, batch: list[Decoded]) -> list[Refusal]:
        """One transaction: the messages of ``batch`` not stored before, their refusals
        and their sequences."""
        stream = self.config.telemetry_stream
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT seq FROM stored_messages WHERE stream = %s AND seq = ANY(%s)",
                (stream, [d.seq for d in batch]),
            )
            done = {r[0] for r in await cur.fetchall()}
            fresh = [d for d in batch if d.seq not in done]
            self.stats["redelivered_skipped"] += len(batch) - len(fresh)
            if not fresh:
                return []
            await self._machine_sites(conn, fresh)
            self._screen_scope(fresh)
            ids: set[str] = set()
            for d in fresh:
                if d.rows is not None:
                    ids.update(d.rows.sensor_id.tolist())
                if d.aggregates is not None:
                    ids.update(d.aggregates.sensor_id)
            await self._sensor_keys(conn, sorted(ids))
            oldest_ms = time.time() * 1000 - self._raw_keep.total_seconds() * 1000
            refusals: list[Refusal] = []
            kept: list[intake.Rows] = []
            for d in fresh:
                if d.refused is not None:
                    sample = d.msg.data[:200].decode("utf-8", "replace") if d.msg else ""
                    refusals.append(Refusal(d.seq, d.refused, 0, sample))
                elif d.rows is not None:
                    rows, why = intake.screen(
                        d.seq, d.rows, self._keys, oldest_ms, self._raw_keep.days
                    )
                    kept.append(rows)
                    refusals += why
            written = await self._write_rows(conn, kept)
            edge, why = intake.edge_partials(fresh, self._keys)
            refusals += why
            if edge is not None:
                await self._upsert_partials(conn, edge, EDGE_REPLACE)
                self.stats["edge_aggregates"] += len(edge)
            anomalies = [intake.edge_anomaly_row(a) for d in fresh for a in d.anomalies]
            async with conn.cursor() as c:
                if anomalies:
                    await c.executemany(INSERT_ANOMALY, anomalies)
                if refusals:
                    await c.executemany(
                        INSERT_REJECTED,
                        [(stream, r.seq, r.reason, r.rows, r.sample) for r in refusals],
                    )
            await conn.execute(
                "INSERT INTO stored_messages (stream, seq) SELECT %s, unnest(%s::bigint[])",
                (stream, [d.seq for d in fresh]),
            )
        self.stats["rows_written"] += written
        self.stats["messages_stored"] += len(fresh)
        self.stats["flushes"] += 1
        return refusals

    async def _write_rows(self, conn: Any, kept: list[intake.Rows]) -> int:
        """COPY the readings, sorted by (sensor, time), and merge their 1-minute partials."""
        if not kept or not sum(len(r) for r in kept):
            return 0
        k = np.concatenate([r.key for r in kept if r.key is not None])
        t = np.concatenate([r.ts_ms for r in kept])
        order = np.lexsort((t, k))
        k, t = k[order], t[order]
        v = np.concatenate([r.value for r in kept])[order]
        q = np.concatenate([r.quality for r in kept])[order]
        days = np.unique(t // 86_400_000 * 86_400_000).tolist()
        await self._ensure(conn, "readings", days)
        self._written_days |= {datetime.fromtimestamp(d / 1000, UTC) for d in days}
        buf = copy_buffer(
            [("ts", ">i8", ms_to_pg(t)), ("k", ">i4", k), ("v", ">f4", v), ("q", ">i2", q)]
        )
        async with (
            conn.cursor() as cur,
            cur.copy(
                "COPY readings (ts, sensor_key, value, quality) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            await copy.write(buf)
            rollup = partials(k, t, v, q, 60_000)  # while PostgreSQL takes the rows
        await self._upsert_partials(conn, rollup, RAW_MERGE)
        return len(k)

    async def _ensure(self, conn: Any, table: str, times_ms: list[int]) -> None:
        times = {datetime.fromtimestamp(ms / 1000, UTC) for ms in times_ms}
        await self._partitions.ensure_async(conn, table, times)

    async def _upsert_partials(self, conn: Any, p: Partials, statement: str) -> None:
        """Stage ``p`` by binary COPY, upsert it into ``rollup_1m`` with ``statement``, and
        mark its hours for the 1-hour rollups."""
        await self._ensure(conn, "rollup_1m", np.unique(p.bucket_ms).tolist())
        buf = copy_buffer(
            [
                ("k", ">i4", p.sensor),
                ("b", ">i8", ms_to_pg(p.bucket_ms)),
                ("n", ">i4", p.count),
                ("mean", ">f8", p.mean),
                ("m2", ">f8", p.m2),
                ("lo", ">f4", p.vmin),
                ("hi", ">f4", p.vmax),
                ("unc", ">i4", p.n_uncertain),
                ("bad", ">i4", p.n_bad),
            ]
        )
        await conn.execute("DELETE FROM stage_1m")
        async with (
            conn.cursor() as cur,
            cur.copy("COPY stage_1m FROM STDIN (FORMAT BINARY)") as copy,
        ):
            await copy.write(buf)
        await conn.execute(statement)
        hours = np.unique(p.bucket_ms // 3_600_000 * 3_600_000)
        await conn.execute(
            "INSERT INTO rollup_dirty (hour) SELECT to_timestamp(h / 1000.0) "
            "FROM unnest(%s::bigint[]) AS h ON CONFLICT DO NOTHING",
            (hours.tolist(),),
        )

    async def summarize_new_ranges(self, conn: Any) -> int:
        """Summarise the BRIN page ranges written since the last call, so queries skip
        them (an unsummarised range matches every query), and ANALYZE a partition first
        written to or not analysed for ``analyze_every_s`` (without statistics the planner
        reads a whole day for one sensor). Returns the ranges summarised."""
        days, self._written_days = self._written_days, set()
        if not days:
            return 0
        names = [partition_name("readings", d) for d in days]
        cur = await conn.execute(
            "SELECT coalesce(sum(brin_summarize_new_values(i.indexrelid)), 0) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = x.relam WHERE a.amname = 'brin' AND c.relname = ANY(%s)",
            (names,),
        )
        summarized = int((await cur.fetchone())[0])
        await conn.commit()
        now = time.monotonic()
        for name in names:
            if now - self._analyzed.get(name, -1e18) >= self.config.analyze_every_s:
                await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
                await conn.commit()
                self._analyzed[name] = now
        return summarized

    async def hour_rollups(self, conn: Any) -> int:
        """Recompute the 1-hour rollups of the hours marked dirty; returns how many hours."""
        await self.summarize_new_ranges(conn)
        async with conn.transaction():
            cur = await conn.execute("SELECT hour FROM rollup_dirty ORDER BY hour")
            hours = [r[0] for r in await cur.fetchall()]
            if not hours:
                return 0
            await self._partitions.ensure_async(conn, "rollup_1h", hours)
            await conn.execute(HOUR_FROM_MINUTES, (hours,))
            await conn.execute("DELETE FROM rollup_dirty WHERE hour = ANY(%s)", (hours,))
        self.stats["hour_rollups"] += len(hours)
        return len(hours)

    # -- events -----------------------------------------------------------------------

    async def _events_loop(self) -> None:
        cfg = self.config
        sub = await self._subscribe(cfg.events_stream, cfg.events_durable)
        latest: dict[str, dict[str, Any]] = {}

        async def on_twin(msg: Any) -> None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                doc = json.loads(msg.data)
                latest[str(doc["machine_id"])] = doc

        twins = await self._nc.subscribe(subjects.TWIN_ALL, cb=on_twin)
        conn = await self._connect("events")
        last_snapshot = time.monotonic()
        try:
            while not self._stop.is_set():
                msgs = await fetch(sub, 256, 0.5, name=cfg.events_durable, counters=self.stats)
                snapshots: dict[str, dict[str, Any]] = {}
                if time.monotonic() - last_snapshot >= cfg.snapshot_every_s:
                    snapshots, latest = latest, {}
                    last_snapshot = time.monotonic()
                if not msgs and not snapshots:
                    continue
                conn, refusals = await self._until_stored(
                    conn, "events", lambda c, m=msgs, s=snapshots: self._store_events(c, m, s)
                )
                for msg in msgs:
                    await msg.ack()
                for refusal in refusals:
                    await self._dead_letter(cfg.events_stream, refusal)
        finally:
            await twins.unsubscribe()
            await conn.close()

    async def _store_events(
        self, conn: Any, msgs: list[Any], snapshots: dict[str, dict[str, Any]]
    ) -> list[Refusal]:
        rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in intake.EVENT_KINDS}
        refusals = []
        to_row = {
            "anomaly": intake.anomaly_row,
            "rul": intake.rul_row,
            "workorder": intake.workorder_row,
            "audit": intake.audit_row,
            "alert": intake.alert_row,
        }
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            parts = msg.subject.split(".")
            kind = parts[2] if len(parts) > 3 else ""
            if kind not in intake.EVENT_KINDS:
                refusals.append(Refusal(seq, f"unknown event subject: {msg.subject}", 1, ""))
                continue
            try:
                event: Any = intake.EVENT_KINDS[kind].model_validate_json(msg.data)  # type: ignore[attr-defined]
            except ValidationError as exc:
                sample = msg.data[:200].decode("utf-8", "replace")
                refusals.append(
                    Refusal(seq, intake.first_error(exc, f"invalid {kind} event"), 1, sample)
                )
                continue
            rows[kind].append(to_row[kind](event))  # type: ignore[operator]
        snaps = [r for m, doc in snapshots.items() if (r := intake.snapshot_row(m, doc))]
        async with conn.transaction(), conn.cursor() as cur:
            for kind, statement in (
                ("anomaly", INSERT_ANOMALY),
                ("rul", INSERT_RUL),
                ("workorder", UPSERT_WORKORDER),
                ("audit", INSERT_AUDIT),
                ("alert", UPSERT_ALERT),
            ):
                if rows[kind]:
                    await cur.executemany(statement, rows[kind])
            if snaps:
                await cur.executemany(INSERT_SNAPSHOT, snaps)
            if refusals:
                await cur.executemany(
                    INSERT_REJECTED,
                    [
                        (self.config.events_stream, r.seq, r.reason, r.rows, r.sample)
                        for r in refusals
                    ],
                )
        self.stats["events_stored"] += sum(len(r) for r in rows.values())
        self.stats["snapshots_stored"] += len(snaps)
        return refusals

    # -- maintenance ------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        cfg = self.config
        conn = None
        last_maintenance = 0.0
        try:
            while not self._stop.is_set():
                await self._report()
                if time.monotonic() - last_maintenance >= cfg.maintenance_every_s:
                    if conn is None:
                        conn = await self._connect("maintenance")
                    conn, _ = await self._until_stored(conn, "maintenance", self.maintain)
                    last_maintenance = time.monotonic()
                if await self._sleep(cfg.status_every_s):
                    break
        finally:
            if conn is not None:
                await conn.close()

    async def maintain(self, conn: Any) -> dict[str, Any]:
        """Compact closed days, apply retention, prune the stored-message records."""
        now = datetime.now(UTC)
        done: dict[str, Any] = {}
        done["compacted"] = await compaction.compact_closed_days(
            conn, now - self.config.compact_grace
        )
        done["retention"] = await apply_retention(conn, now)
        floor = await self._ack_floor()
        if floor:
            await conn.execute(
                "DELETE FROM stored_messages WHERE stream = %s AND seq < %s",
                (self.config.telemetry_stream, floor),
            )
            await conn.commit()
        self._partitions.forget()
        self.stats["maintenance_runs"] += 1
        return done

    async def _ack_floor(self) -> int:
        with contextlib.suppress(Exception):
            info = await self._js.consumer_info(self.config.telemetry_stream, self.config.durable)
            return int(info.ack_floor.stream_seq)
        return 0

    async def status(self) -> dict[str, Any]:
        """Counters and lag: messages not yet stored, and how old the newest stored is."""
        pending = {}
        for stream, durable in (
            (self.config.telemetry_stream, self.config.durable),
            (self.config.events_stream, self.config.events_durable),
        ):
            try:
                info = await self._js.consumer_info(stream, durable)
                pending[stream] = int(info.num_pending) + int(info.num_ack_pending)
            except Exception:  # not created yet, or NATS away
                pending[stream] = -1
        behind = pending.get(self.config.telemetry_stream, 0) > 0
        lag_s = (
            max(0.0, time.time() - self._last_commit_stream_time)
            if behind and self._last_commit_stream_time
            else 0.0
        )
        return {
            "pending_messages": pending,
            "lag_s": round(lag_s, 3),
            "counters": dict(self.stats),
            "refused_rows": dict(self.refusals),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "storage_warnings": await self._storage_warnings(),
        }

    async def _storage_warnings(self) -> list[str]:
        """The streams past :data:`bus.retention.WARN_SHARE` of their disk budget, each
        logged once when it crosses (again after it went back below)."""
        streams = [self.config.telemetry_stream, self.config.events_stream]
        try:
            usages = await stream_usage(self._js, streams)
        except Exception:  # NATS away: nothing to say
            return []
        warnings = {u.name: w for u in usages for w in budget_warnings([u])}
        for name, line in warnings.items():
            if name not in self._budget_warned:
                log.warning("%s", line)
        self._budget_warned = set(warnings)
        return list(warnings.values())

    async def _report(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.publish(STATUS_SUBJECT, json.dumps(await self.status()).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store.writer", description=__doc__)
    parser.add_argument("--nats", required=True, help="NATS URL of the hub")
    parser.add_argument("--database", required=True, help="PostgreSQL URL")
    parser.add_argument("--flush-rows", type=int, default=WriterConfig.flush_rows)
    parser.add_argument("--flush-interval", type=float, default=WriterConfig.flush_interval_s)
    parser.add_argument("--ack-wait", type=float, default=WriterConfig.ack_wait_s)
    parser.add_argument("--maintenance-every", type=float, default=WriterConfig.maintenance_every_s)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = WriterConfig(
        flush_rows=args.flush_rows,
        flush_interval_s=args.flush_interval,
        ack_wait_s=args.ack_wait,
        maintenance_every_s=args.maintenance_every,
    )

    async def go() -> None:
        writer = Writer(args.nats, args.database, config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, writer.stop)
        await writer.run()

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
