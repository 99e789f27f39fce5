"""Anomalies, RUL predictions, work orders and twin snapshots from NATS into PostgreSQL:
stored once under their natural keys, bad events refused with the reason, and read back
as a machine's history."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import psycopg

from schemas import subjects
from schemas.plant import Plant
from store.queries import history
from store.writer import WriterConfig
from tests.store.conftest import publish, run_writer
from twinfleet.services import NatsServer

FAST = WriterConfig(flush_interval_s=0.2, maintenance_every_s=3600.0, snapshot_every_s=0.3)


def _counts(database: str) -> tuple[int, ...]:
    with psycopg.connect(database) as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("anomalies", "rul_predictions", "work_orders", "audit_log", "rejected")
        )


def test_events_are_stored_once_and_read_back_as_history(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    import nats

    machine = plant.machines[0]
    sensor = machine.sensor_ids()[0]
    now = int(time.time() * 1000) - 60_000
    anomaly = {
        "machine_id": machine.id,
        "sensor_id": sensor,
        "timestamp": now,
        "type": "threshold",
        "severity": "high",
        "score": 0.9,
        "value": 97.0,
        "reason": "above 95",
        "detector": "limits",
    }
    rul = {
        "machine_id": machine.id,
        "failure_mode": "bearing_wear",
        "median_hours": 400,
        "lower_hours": 150,
        "upper_hours": 900,
        "survival_curve": [
            {"hours": 0, "survival_probability": 1.0},
            {"hours": 400, "survival_probability": 0.5},
        ],
        "failure_probability": {24: 0.01, 72: 0.03, 168: 0.08, 336: 0.2, 720: 0.6},
        "model_version": "bearing-v1",
        "predicted_at": now,
    }
    order = {
        "workorder_id": "WO-2026-11-0001",
        "asset_id": machine.id,
        "type": "predictive",
        "title": "Replace bearing",
        "created_at": "2026-11-29T10:00:00Z",
    }
    messages = [
        (subjects.anomaly(machine.id), json.dumps(anomaly).encode()),
        (subjects.rul(machine.id), json.dumps(rul).encode()),
        (subjects.workorder("WO-2026-11-0001"), json.dumps(order).encode()),
        (
            subjects.workorder("WO-2026-11-0001"),
            json.dumps({**order, "status": "in_progress"}).encode(),
        ),
        (subjects.anomaly(machine.id), json.dumps({**anomaly, "score": 7}).encode()),
        (
            subjects.audit("clone_twin"),
            json.dumps(
                {
                    "audit_id": "0" * 32,
                    "at": now,
                    "actor": "erin",
                    "role": "engineer",
                    "action": "clone_twin",
                    "target": machine.id,
                    "detail": {"ttl_seconds": 600},
                }
            ).encode(),
        ),
    ]
    twin_event = {
        "machine_id": machine.id,
        "version": 3,
        "status": "warning",
        "health_score": 71.5,
        "last_update": now,
        "anomalies": 1,
    }

    async def twins_then_wait(writer) -> None:
        nc = await nats.connect(nats_server.url)
        for _ in range(10):  # the writer takes one snapshot per interval
            await nc.publish(subjects.twin(machine.id), json.dumps(twin_event).encode())
            await asyncio.sleep(0.1)
        await nc.close()
        while not writer.stats["snapshots_stored"]:
            await asyncio.sleep(0.05)

    asyncio.run(publish(nats_server.url, messages))
    run_writer(
        nats_server.url,
        registered,
        lambda w: w.stats["events_stored"] >= 4,
        config=FAST,
        after=twins_then_wait,
    )
    assert _counts(registered) == (1, 1, 1, 1, 1)
    with psycopg.connect(registered) as conn:
        status = conn.execute("SELECT status FROM work_orders").fetchone()[0]
        reason = conn.execute("SELECT reason FROM rejected").fetchone()[0]
    assert status == "in_progress"  # the later state of the work order wins
    assert reason.startswith("invalid anomaly event: score")

    # the same events again (a new consumer reads the stream from the start): no new rows
    async def forget() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().delete_consumer("EVENTS", FAST.events_durable)
        await nc.close()

    asyncio.run(forget())
    run_writer(nats_server.url, registered, lambda w: w.stats["events_stored"] >= 5, config=FAST)
    assert _counts(registered)[:4] == (1, 1, 1, 1)
    with psycopg.connect(registered) as conn:
        audit = conn.execute("SELECT actor, role, action, target, detail FROM audit_log").fetchone()
    assert audit == ("erin", "engineer", "clone_twin", machine.id, {"ttl_seconds": 600})

    async def ask() -> dict:
        async with await psycopg.AsyncConnection.connect(registered) as conn:
            start = datetime.fromtimestamp(now / 1000, UTC) - timedelta(hours=1)
            return await history(conn, machine.id, start, start + timedelta(hours=2))

    answer = asyncio.run(ask())
    assert [s["status"] for s in answer["states"]] == ["warning"]
    assert answer["states"][0]["health_score"] == 71.5
    assert [r["median_hours"] for r in answer["rul"]] == [400]
    assert answer["rul"][0]["failure_probability_7d"] == 0.08
    assert [a["sensor_id"] for a in answer["anomalies"]] == [sensor]
