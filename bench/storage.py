"""History storage: ingest through the writer, bytes per reading, query latency.

Starts a nats-server (JetStream) and a PostgreSQL 15 cluster in a temporary directory,
registers ``--sensors`` sensors (10 per machine), and prints:

1. sustained ingest through the writer (:mod:`store.writer`): ``--readings`` readings in
   messages of 1,000 (one machine, 10 sensors x 100 s at 1 Hz, from yesterday 00:00 UTC)
   are published to JetStream first; then the writer is started and timed from its start
   to the commit of the last message (decode, validate, sort, binary COPY, 1-minute
   rollups, stored sequences, acknowledgements);
2. bytes per reading: raw rows (the ``readings`` partitions, indexes included), and
   compacted blocks, for the ingested data (a random walk) after compacting its day, for
   real sensor data (SKAB, ``--skab``, 8 sensors at 1 Hz; encoded in memory by the same
   code), and for the plant simulator's values;
3. query latency for one sensor (``store.queries.timeseries``, p50/p99 of ``--repeat``
   runs): 1 day at 1-minute resolution, 30 days at 1-hour resolution (a sensor with 30
   days of history), 1 hour raw from the hot partition and 1 hour raw from blocks.

    python bench/storage.py [--readings 5000000] [--sensors 1000] [--skab ../shared/data/skab]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from actors.bus import STREAM, ensure_jetstream
from schemas import subjects
from store import blocks
from store.compaction import compact_closed_days
from store.migrations import migrate
from store.queries import timeseries
from store.writer import Writer, WriterConfig
from twinfleet.postgres import PostgresServer
from twinfleet.services import NatsServer, free_port

SITE = "bench"
PER_MACHINE = 10
SECONDS_PER_MESSAGE = 100
DAY = 86_400_000


def register(url: str, sensors: int) -> list[str]:
    machines = sensors // PER_MACHINE
    with psycopg.connect(url) as conn:
        migrate(conn)
        with conn.cursor() as cur:
            with cur.copy(
                "COPY assets (asset_id, type, kind, site_id, line_id, spec) FROM STDIN"
            ) as cp:
                for m in range(machines):
                    cp.write_row((f"M-{m:05d}", "bench", "motor", SITE, "line-1", "{}"))
            with cur.copy(
                "COPY sensors (sensor_id, asset_id, name, kind, unit, sample_period_s) FROM STDIN"
            ) as cp:
                for m in range(machines):
                    for s in range(PER_MACHINE):
                        cp.write_row(
                            (f"M-{m:05d}.s{s}", f"M-{m:05d}", f"s{s}", "vibration", "mm/s", 1.0)
                        )
        conn.commit()
    return [f"M-{m:05d}" for m in range(machines)]


def messages(
    machines: list[str], readings: int, start_ms: int, seed: int = 1
) -> list[tuple[str, bytes]]:
    """Messages of one machine's 10 sensors over 100 s, in time order across the fleet."""
    rng = np.random.default_rng(seed)
    per_message = PER_MACHINE * SECONDS_PER_MESSAGE
    rounds = max(1, readings // (per_message * len(machines)))
    level = rng.normal(50, 10, (len(machines), PER_MACHINE))
    out = []
    sent_at = int(time.time() * 1000)
    for r in range(rounds):
        t0 = start_ms + r * SECONDS_PER_MESSAGE * 1000
        times = [t0 + i * 1000 for i in range(SECONDS_PER_MESSAGE)]
        for m, machine in enumerate(machines):
            walk = level[m][:, None] + np.cumsum(
                rng.normal(0, 0.05, (PER_MACHINE, SECONDS_PER_MESSAGE)), axis=1
            )
            level[m] = walk[:, -1]
            values = np.round(walk + rng.normal(0, 0.02, walk.shape), 3)
            sensor_ids = [f"{machine}.s{s}" for s in range(PER_MACHINE) for _ in times]
            doc = {
                "gateway_id": "bench",
                "site_id": SITE,
                "batch_id": f"b-{r}-{m}",
                "sent_at": sent_at,
                "readings": {
                    "machine_id": [machine] * per_message,
                    "sensor_id": sensor_ids,
                    "timestamp": times * PER_MACHINE,
                    "value": values.reshape(-1).tolist(),
                    "quality": [0] * per_message,
                },
            }
            out.append((subjects.telemetry(SITE, machine), json.dumps(doc).encode()))
    return out


async def publish(url: str, msgs: list[tuple[str, bytes]]) -> tuple[float, int]:
    """Publish every message; the seconds it took and the bytes JetStream's ``TELEMETRY``
    stream holds afterwards (what its disk budget counts, :mod:`bus.retention`)."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_jetstream(js)
    began = time.perf_counter()
    for i in range(0, len(msgs), 500):
        await asyncio.gather(*(js.publish(s, d) for s, d in msgs[i : i + 500]))
    took = time.perf_counter() - began
    stored = int((await js.stream_info(STREAM)).state.bytes)
    await nc.close()
    return took, stored


async def ingest(nats_url: str, db_url: str, n_messages: int) -> tuple[float, float, Writer]:
    writer = Writer(
        nats_url, db_url, WriterConfig(maintenance_every_s=1e9, hour_rollup_every_s=1e9)
    )
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    task = asyncio.create_task(writer.run())
    while writer.stats["messages_stored"] < n_messages:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    took = time.perf_counter() - began
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    writer.stop()
    await task
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return took, cpu, writer


def percentiles(samples: list[float]) -> str:
    s = sorted(samples)
    return (
        f"p50 {statistics.median(s) * 1000:.1f} ms, p99 {s[int(0.99 * (len(s) - 1))] * 1000:.1f} ms"
    )


async def query_latency(
    url: str, sensor: str, start: datetime, span: timedelta, aggregation: str, repeat: int
) -> tuple[str, int]:
    times = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for _ in range(repeat):
            began = time.perf_counter()
            answer = await timeseries(conn, sensor, start, start + span, aggregation)
            times.append(time.perf_counter() - began)
    return percentiles(times), answer["data_points"]


def skab_bytes(folder: Path) -> tuple[float, int]:
    import pandas as pd

    frames = [pd.read_csv(f, sep=";") for f in sorted(folder.rglob("*.csv"))]
    data = pd.concat(frames, ignore_index=True)
    columns = [c for c in data.columns if c not in ("datetime", "anomaly", "changepoint")]
    total = n = 0
    for c in columns:
        values = data[c].to_numpy(dtype=np.float32)
        for h in range(0, len(values), 3600):
            v = values[h : h + 3600]
            t = 1_700_000_000_000 + (h + np.arange(len(v))) * 1000
            total += len(blocks.encode(t, v, np.zeros(len(v), np.int8)))
            n += len(v)
    return total / n, n


def simulator_bytes() -> tuple[float, int]:
    from schemas.plant import load_plant
    from twins.simulator import PlantSimulator

    plant = load_plant(Path(__file__).parents[1] / "twinfleet" / "plants" / "example.yaml")
    sim = PlantSimulator(plant, seed=1, start_ms=1_700_000_000_000)
    series: dict[str, list[tuple[int, float]]] = {}
    for _ in range(360):
        for batch in sim.advance(10.0):
            a = batch.readings.arrays()
            for s, t, v in zip(
                batch.readings.sensor_id, a.timestamp.tolist(), a.value.tolist(), strict=True
            ):
                series.setdefault(s, []).append((t, v))
    total = n = 0
    for points in series.values():
        t = np.array([p[0] for p in points])
        v = np.array([p[1] for p in points], np.float32)
        total += len(blocks.encode(t, v, np.zeros(len(v), np.int8)))
        n += len(v)
    return total / n, n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=5_000_000)
    parser.add_argument("--sensors", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument(
        "--skab", type=Path, default=Path(__file__).parents[2] / "shared" / "data" / "skab"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tf-bench-storage-") as tmp:
        nats = NatsServer(Path(tmp) / "nats", port=free_port()).start()
        pg = PostgresServer(Path(tmp), port=free_port()).start()
        try:
            machines = register(pg.url, args.sensors)
            day = (int(time.time() * 1000) // DAY - 1) * DAY  # yesterday 00:00 UTC
            msgs = messages(machines, args.readings, day)
            n_readings = len(msgs) * PER_MACHINE * SECONDS_PER_MESSAGE
            took, stored = asyncio.run(publish(nats.url, msgs))
            print(
                f"published {n_readings:,} readings in {len(msgs):,} messages to JetStream "
                f"in {took:.1f} s "
                f"({sum(len(d) for _, d in msgs) / n_readings:.0f} bytes of JSON per reading)"
            )
            per_reading = stored / n_readings
            print(
                f"JetStream TELEMETRY stream: {per_reading:.1f} bytes per reading stored, "
                f"{per_reading * 1000 * 86_400 / 1e9:.2f} GB per day per 1,000 sensors at 1 Hz "
                f"({SECONDS_PER_MESSAGE} s of {PER_MACHINE} sensors per message)"
            )

            took, cpu, writer = asyncio.run(ingest(nats.url, pg.url, len(msgs)))
            print(
                f"\n1. ingest through the writer: {n_readings:,} readings in {took:.2f} s = "
                f"{n_readings / took:,.0f} readings/s ({writer.stats['flushes']} flushes; "
                f"writer process CPU {cpu / took * 100:.0f} % of one core)"
            )

            with psycopg.connect(pg.url) as conn:
                raw_bytes = conn.execute(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i JOIN pg_class c "
                    "ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass"
                ).fetchone()[0]
            hour = datetime.fromtimestamp(day / 1000, UTC)
            hot, points = asyncio.run(
                query_latency(
                    pg.url, f"{machines[0]}.s0", hour, timedelta(hours=1), "raw", args.repeat
                )
            )
            print(
                f"\n2. bytes per reading\n   raw rows (heap + BRIN): {raw_bytes / n_readings:.1f}"
            )

            async def compact() -> tuple[int, float]:
                async with await psycopg.AsyncConnection.connect(pg.url) as conn:
                    began = time.perf_counter()
                    moved = await compact_closed_days(conn, datetime.now(UTC))
                    return moved, time.perf_counter() - began

            moved, took = asyncio.run(compact())
            with psycopg.connect(pg.url) as conn:
                data, n, whole = conn.execute(
                    "SELECT sum(length(data)), sum(n), "
                    "pg_total_relation_size('reading_blocks_p' || "
                    "to_char(min(hour), 'YYYYMM')) FROM reading_blocks"
                ).fetchone()
            print(
                f"   compacted blocks, ingested data (random walk, 3 decimals): {data / n:.2f} "
                f"in the "
                f"block, {whole / n:.2f} with row and index overhead ({moved:,} readings "
                f"compacted in {took:.1f} s, {moved / took:,.0f}/s)"
            )
            skab, skab_n = skab_bytes(args.skab)
            print(
                f"   compacted blocks, SKAB real sensor data: {skab:.2f} "
                f"({skab_n:,} readings, 8 sensors at 1 Hz)"
            )
            sim, sim_n = simulator_bytes()
            print(
                f"   compacted blocks, plant simulator values (unrounded float noise): {sim:.2f} "
                f"({sim_n:,} readings)"
            )

            # one sensor with 30 days of history, through the writer
            now = int(time.time() * 1000) // 60_000 * 60_000
            long_sensor = f"{machines[1]}.s1"
            docs = []
            for d in range(30):
                t = [now - (30 - d) * DAY + i * 60_000 for i in range(1440)]
                v = (50 + np.sin(np.arange(1440) / 100)).round(3).tolist()
                docs.append(
                    (
                        subjects.telemetry(SITE, machines[1]),
                        json.dumps(
                            {
                                "gateway_id": "bench",
                                "site_id": SITE,
                                "batch_id": f"long-{d}",
                                "sent_at": now,
                                "readings": {
                                    "machine_id": [machines[1]] * 1440,
                                    "sensor_id": [long_sensor] * 1440,
                                    "timestamp": t,
                                    "value": v,
                                },
                            }
                        ).encode(),
                    )
                )
            asyncio.run(publish(nats.url, docs))

            async def store_long() -> None:
                writer = Writer(
                    nats.url, pg.url, WriterConfig(maintenance_every_s=1e9, hour_rollup_every_s=1e9)
                )
                task = asyncio.create_task(writer.run())
                while writer.stats["messages_stored"] < len(docs):
                    await asyncio.sleep(0.02)
                writer.stop()
                await task  # a clean stop computes the 1-hour rollups

            asyncio.run(store_long())
            end = datetime.fromtimestamp(now / 1000, UTC)
            print(f"\n3. query latency for one sensor ({args.repeat} runs each)")
            for label, start, span, agg in (
                ("1 day at 1-minute", end - timedelta(days=1), timedelta(days=1), "1m"),
                ("30 days at 1-hour", end - timedelta(days=30), timedelta(days=30), "1h"),
            ):
                result, pts = asyncio.run(
                    query_latency(pg.url, long_sensor, start, span, agg, args.repeat)
                )
                print(f"   {label}: {result} ({pts} points)")
            print(
                f"   1 hour raw, hot partition ({args.sensors:,} sensors' rows, BRIN): {hot} "
                f"({points} points)"
            )
            cold, pts = asyncio.run(
                query_latency(
                    pg.url, f"{machines[0]}.s0", hour, timedelta(hours=1), "raw", args.repeat
                )
            )
            print(f"   1 hour raw, compacted blocks: {cold} ({pts} points)")
        finally:
            pg.stop()
            nats.stop()


if __name__ == "__main__":
    main()
