"""The history writer against real nats-server and PostgreSQL: rollups and query
statistics equal numpy, late data merges, redelivery writes nothing twice, bad input is
refused with its reason and the rest is stored."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from schemas import subjects
from schemas.plant import Plant
from store.queries import timeseries
from store.writer import Writer, WriterConfig
from tests.store.conftest import SITE, batch_json, numpy_groups, publish, run_writer, stored
from twinfleet.services import NatsServer

FAST = WriterConfig(flush_interval_s=0.2, hour_rollup_every_s=0.1, maintenance_every_s=3600.0)


def _random_telemetry(
    plant: Plant, rng: np.random.Generator, n_msgs: int, per_msg: int, start_ms: int, span_ms: int
) -> tuple[list[tuple[str, bytes]], list[str], np.ndarray, np.ndarray, np.ndarray]:
    machine = plant.machines[0]
    sensors = machine.sensor_ids()[:4]
    msgs, all_s, all_t, all_v, all_q = [], [], [], [], []
    for i in range(n_msgs):
        s = rng.choice(sensors, per_msg).tolist()
        t = (start_ms + rng.integers(0, span_ms, per_msg)).tolist()
        v = (rng.normal(50, 10, per_msg) + rng.normal(0, 1e-3, per_msg)).tolist()
        q = rng.choice([0, 0, 0, 1, 2], per_msg).tolist()
        msgs.append(
            (subjects.telemetry(SITE, machine.id), batch_json(f"b-{start_ms}-{i}", s, t, v, q))
        )
        all_s += s
        all_t += t
        all_v += v
        all_q += q
    return msgs, sensors, np.array(all_s), np.array(all_t), np.array(all_v), np.array(all_q)


def _rollups(database: str, table: str) -> dict[tuple[str, int], tuple]:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            f"SELECT s.sensor_id, (extract(epoch FROM r.bucket) * 1000)::bigint, r.count, "
            f"r.mean, r.m2, r.vmin, r.vmax, r.n_uncertain, r.n_bad FROM {table} r "
            "JOIN sensors s USING (sensor_key)"
        ).fetchall()
    return {(r[0], int(r[1])): r[2:] for r in rows}


def _check_rollups(database, table, bucket_ms, s, t, v, q) -> None:
    got = _rollups(database, table)
    codes = {name: i for i, name in enumerate(sorted(set(s.tolist())))}
    keys = np.array([codes[x] for x in s])
    want = numpy_groups(keys, t, v, q, bucket_ms)
    names = {i: name for name, i in codes.items()}
    with_values = {(names[k], b): w for (k, b), w in want.items()}
    assert {k for k, g in got.items() if g[0] > 0} == set(with_values)
    for key, (n, mean, std, lo, hi) in with_values.items():
        count, g_mean, m2, g_lo, g_hi, _unc, _bad = got[key]
        assert count == n
        assert g_mean == pytest.approx(mean, rel=1e-9, abs=1e-9)
        assert np.sqrt(m2 / count) == pytest.approx(std, rel=1e-6, abs=1e-9)
        assert (g_lo, g_hi) == (pytest.approx(lo), pytest.approx(hi))
    # qualities are counted per bucket
    buckets = t // bucket_ms * bucket_ms
    for (name, b), g in got.items():
        sel = (s == name) & (buckets == b)
        assert (g[5], g[6]) == (int((q[sel] == 1).sum()), int((q[sel] == 2).sum()))


def test_rollups_and_query_statistics_equal_numpy(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    rng = np.random.default_rng(7)
    now = int(time.time() * 1000)
    start = (now - 4 * 3_600_000) // 3_600_000 * 3_600_000
    msgs, sensors, s, t, v, q = _random_telemetry(plant, rng, 24, 500, start, 3 * 3_600_000)
    asyncio.run(publish(nats_server.url, msgs))
    writer = run_writer(nats_server.url, registered, stored(len(msgs)), config=FAST)
    assert writer.stats["rows_written"] == len(t)
    with psycopg.connect(registered) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == len(t)
        assert conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 0
        # every partition written to has planner statistics (a sensor's rows are found
        # through the BRIN index, not by reading the day)
        unanalysed = conn.execute(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname LIKE 'readings_p%%' "
            "AND last_analyze IS NULL"
        ).fetchone()[0]
        assert unanalysed == 0
    _check_rollups(registered, "rollup_1m", 60_000, s, t, v, q)
    _check_rollups(registered, "rollup_1h", 3_600_000, s, t, v, q)

    async def ask(sensor: str, aggregation: str) -> dict:
        async with await psycopg.AsyncConnection.connect(registered) as conn:
            return await timeseries(
                conn,
                sensor,
                datetime.fromtimestamp(start / 1000, UTC),
                datetime.fromtimestamp(start / 1000, UTC) + timedelta(hours=3),
                aggregation,
            )

    for sensor in sensors:
        sel = (s == sensor) & (q < 2)
        x = v[sel].astype(np.float32).astype(np.float64)
        for aggregation in ("raw", "1m", "1h"):
            answer = asyncio.run(ask(sensor, aggregation))
            stats = answer["statistics"]
            assert stats["count"] == len(x)
            assert stats["overall_avg"] == pytest.approx(x.mean(), rel=1e-9)
            assert stats["overall_stddev"] == pytest.approx(x.std(), rel=1e-6)
            assert stats["overall_min"] == pytest.approx(x.min())
            assert stats["overall_max"] == pytest.approx(x.max())
        raw = asyncio.run(ask(sensor, "raw"))
        assert raw["data_points"] == int((s == sensor).sum())
        stamps = [p["timestamp"] for p in raw["data"]]
        assert stamps == sorted(stamps)


def test_late_readings_merge_into_existing_buckets(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    rng = np.random.default_rng(11)
    start = (int(time.time() * 1000) - 2 * 3_600_000) // 60_000 * 60_000
    first = _random_telemetry(plant, rng, 5, 300, start, 600_000)
    asyncio.run(publish(nats_server.url, first[0]))
    run_writer(nats_server.url, registered, stored(5), config=FAST)
    second = _random_telemetry(plant, rng, 5, 300, start, 600_000)
    second_msgs = [(subj, data.replace(b'"b-', b'"late-')) for subj, data in second[0]]
    asyncio.run(publish(nats_server.url, second_msgs))
    run_writer(nats_server.url, registered, stored(5), config=FAST)
    s, t, v, q = (np.concatenate([a, b]) for a, b in zip(first[2:], second[2:], strict=True))
    _check_rollups(registered, "rollup_1m", 60_000, s, t, v, q)
    _check_rollups(registered, "rollup_1h", 3_600_000, s, t, v, q)


def test_redelivered_messages_are_not_written_twice(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    """The consumer is deleted after the writer stored everything, so a new writer gets
    every message again: all are recognised and acknowledged, none written."""
    rng = np.random.default_rng(3)
    start = int(time.time() * 1000) - 3_600_000
    msgs = _random_telemetry(plant, rng, 10, 200, start, 1_800_000)[0]
    asyncio.run(publish(nats_server.url, msgs))
    run_writer(nats_server.url, registered, stored(10), config=FAST)

    async def forget_consumer() -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        await nc.jetstream().delete_consumer("TELEMETRY", FAST.durable)
        await nc.close()

    asyncio.run(forget_consumer())
    again = run_writer(
        nats_server.url, registered, lambda w: w.stats["redelivered_skipped"] >= 10, config=FAST
    )
    assert again.stats["rows_written"] == 0
    with psycopg.connect(registered) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 2000
        assert conn.execute("SELECT sum(count + n_bad) FROM rollup_1m").fetchone()[0] == 2000


def test_bad_input_is_refused_with_its_reason_and_the_rest_is_stored(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    import nats

    machine = plant.machines[0]
    good = machine.sensor_ids()[0]
    now = int(time.time() * 1000)
    subject = subjects.telemetry(SITE, machine.id)
    msgs = [
        # one unknown sensor among good rows: the good rows are stored
        (
            subject,
            batch_json(
                "mixed",
                [good, f"{machine.id}.nope", good],
                [now - 2000, now - 1000, now],
                [1.0, 2.0, 3.0],
            ),
        ),
        # wrong types: refused whole
        (
            subject,
            json.dumps(
                {
                    "gateway_id": "gw-test",
                    "site_id": SITE,
                    "batch_id": "bad-types",
                    "sent_at": now,
                    "readings": {
                        "machine_id": [machine.id],
                        "sensor_id": [good],
                        "timestamp": ["yesterday"],
                        "value": [1.0],
                    },
                }
            ).encode(),
        ),
        (subject, b"this is not json"),
        # beyond a 4-byte float, and older than the raw retention
        (subject, batch_json("big", [good, good], [now - 500, now - 400], [1e39, 4.0])),
        (subject, batch_json("old", [good, good], [now - 100 * 86_400_000, now - 300], [5.0, 6.0])),
    ]
    dead: list[dict] = []

    async def go() -> None:
        nc = await nats.connect(nats_server.url)

        async def on_dead(msg) -> None:
            dead.append(json.loads(msg.data))

        await nc.subscribe(subjects.dead_letter("store"), cb=on_dead)
        await publish(nats_server.url, msgs)
        await asyncio.to_thread(
            run_writer, nats_server.url, registered, stored(len(msgs)), config=FAST
        )
        await asyncio.sleep(0.2)
        await nc.close()

    asyncio.run(go())
    with psycopg.connect(registered) as conn:
        values = sorted(r[0] for r in conn.execute("SELECT value FROM readings"))
        reasons = [r[0] for r in conn.execute("SELECT reason FROM rejected ORDER BY seq")]
        messages = conn.execute("SELECT count(*) FROM stored_messages").fetchone()[0]
    assert values == [1.0, 3.0, 4.0, 6.0]
    assert messages == len(msgs)
    assert len(reasons) == 5
    assert reasons[0] == f"unknown sensor: {machine.id}.nope is not registered"
    assert reasons[1].startswith("invalid telemetry batch: readings.timestamp.0")
    assert reasons[2].startswith("invalid telemetry batch")
    assert reasons[3] == "value out of range: beyond a 4-byte float"
    assert reasons[4] == "older than the raw retention (90 days)"
    assert sorted(d["reason"] for d in dead) == sorted(reasons)


def test_the_status_warns_once_when_telemetry_nears_its_disk_budget(
    nats_server: NatsServer, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import nats

    from actors.bus import ensure_jetstream
    from bus.retention import Retention, apply_retention

    statuses: list[dict[str, Any]] = []

    async def status_twice(writer: Writer) -> None:
        statuses.append(await writer.status())
        statuses.append(await writer.status())

    def started(writer: Writer) -> bool:
        return getattr(writer, "_js", None) is not None

    run_writer(nats_server.url, database, started, after=status_twice)
    assert [s["storage_warnings"] for s in statuses] == [[], []]  # no budget: nothing to say

    async def fill() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_jetstream(js)
        await apply_retention(js, Retention(telemetry_max_bytes=1024 * 1024))
        for _ in range(45):  # 900 KB of a 1 MiB budget (the writer refuses the bodies)
            await js.publish(subjects.telemetry(SITE, "P-201"), b"x" * 20_000)
        await nc.close()

    asyncio.run(fill())
    statuses.clear()
    with caplog.at_level(logging.WARNING, logger="twinfleet.store"):
        run_writer(nats_server.url, database, started, after=status_twice)
    first, second = (s["storage_warnings"] for s in statuses)
    assert first == second and len(first) == 1 and "TELEMETRY" in first[0]
    logged = [r for r in caplog.records if "budget" in r.getMessage()]
    assert len(logged) == 1  # once per crossing, not once per status
