"""Crashes: the writer killed with SIGKILL inside a transaction, PostgreSQL restarted
under a running writer. Afterwards every reading is stored exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from schemas import subjects
from schemas.plant import Plant
from store.migrations import migrate
from store.registry import register_plant
from store.writer import WriterConfig
from tests.store.conftest import SITE, batch_json, publish, run_writer, stored
from twinfleet.postgres import PostgresServer
from twinfleet.services import NatsServer, free_port

PER_MESSAGE = 1_000


def _messages(plant: Plant, n: int) -> list[tuple[str, bytes]]:
    """``n`` messages of 1,000 readings (10 sensors x 100 scans 0.1 s apart), every
    (sensor, time) unique, so a duplicate row would show. All within the last hour: a day
    that has closed would be compacted by the writer's maintenance (which runs when each
    writer starts), moving readings out of ``readings`` mid-test, depending on the hour."""
    machine = plant.machines[0]
    sensors = (machine.sensor_ids() * 10)[:10]  # repeats are told apart by their times
    base = int(time.time() * 1000) - 3_600_000
    out = []
    for i in range(n):
        s, t, v = [], [], []
        for j in range(100):
            for k, sensor in enumerate(sensors):
                s.append(sensor)
                t.append(base + (i * 100 + j) * 100 + k)  # unique even for a repeated id
                v.append(float(i + j / 100))
        out.append((subjects.telemetry(SITE, machine.id), batch_json(f"c-{i}", s, t, v)))
    return out


def _totals(database: str) -> tuple[int, int, int, int]:
    with psycopg.connect(database) as conn:
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY sensor_key, ts "
            "HAVING count(*) > 1) d"
        ).fetchone()[0]
        rolled = conn.execute("SELECT coalesce(sum(count), 0) FROM rollup_1m").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM stored_messages").fetchone()[0]
    return readings, dupes, rolled, messages


def _writer_process(nats_url: str, database: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "store.writer",
                "--nats",
                nats_url,
                "--database",
                database,
                "--flush-rows",
                "20000",
                "--flush-interval",
                "0.5",
                "--ack-wait",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
        )


def _in_transaction(database: str) -> bool:
    """Whether a writer connection has a transaction open right now."""
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND query ILIKE '%%readings%%'"
        ).fetchone()
    return bool(row and row[0])


def test_killing_the_writer_inside_a_transaction_loses_and_repeats_nothing(
    nats_server: NatsServer, registered: str, plant: Plant, tmp_path: Path
) -> None:
    msgs = _messages(plant, 300)
    asyncio.run(publish(nats_server.url, msgs))
    kills_in_transaction = 0
    for _ in range(3):
        proc = _writer_process(nats_server.url, registered, tmp_path / "writer.log")
        try:
            deadline = time.monotonic() + 60
            while not _in_transaction(registered):
                assert time.monotonic() < deadline, "the writer never opened a transaction"
                assert proc.poll() is None, (tmp_path / "writer.log").read_text()[-3000:]
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            kills_in_transaction += 1
        finally:
            proc.kill()
            proc.wait()
    assert kills_in_transaction == 3
    before = _totals(registered)
    assert before[0] < len(msgs) * PER_MESSAGE  # the kills left work to do
    # the messages the killed writers held come back after the ack wait (2 s)
    writer = run_writer(
        nats_server.url,
        registered,
        stored(len(msgs) - before[3]),
        timeout_s=120,
        config=WriterConfig(flush_interval_s=0.2, maintenance_every_s=3600.0, ack_wait_s=2.0),
    )
    readings, dupes, rolled, messages = _totals(registered)
    assert (readings, dupes, rolled, messages) == (len(msgs) * PER_MESSAGE, 0, readings, len(msgs))
    assert writer.stats["rows_written"] == readings - before[0]


def test_restarting_postgresql_while_writing_loses_nothing(
    nats_server: NatsServer, plant: Plant, tmp_path: Path
) -> None:
    server = PostgresServer(tmp_path / "pg", port=free_port()).start()
    try:
        with psycopg.connect(server.url) as conn:
            migrate(conn)
            register_plant(conn, plant)
        msgs = _messages(plant, 200)
        restarted, finished = threading.Event(), threading.Event()

        def publish_and_restart() -> None:
            asyncio.run(publish(nats_server.url, msgs[:100]))
            while _totals(server.url)[3] < 20:
                time.sleep(0.01)
            server.stop()  # a fast shutdown under the writer
            asyncio.run(publish(nats_server.url, msgs[100:]))
            time.sleep(2.0)
            server.start()
            restarted.set()
            # the server's parent-death signal is tied to the thread that started it
            finished.wait()

        worker = threading.Thread(target=publish_and_restart)
        worker.start()
        try:
            writer = run_writer(
                nats_server.url,
                server.url,
                lambda w: restarted.is_set() and w.stats["messages_stored"] >= len(msgs),
                timeout_s=120,
            )
            readings, dupes, rolled, messages = _totals(server.url)
        finally:
            finished.set()
            worker.join()
        assert (readings, dupes, rolled, messages) == (200 * PER_MESSAGE, 0, readings, 200)
        assert writer.stats["flush_retries"] + writer.stats["db_reconnects"] > 0
    finally:
        server.stop()
