"""Alerts and work orders from the maintenance service into PostgreSQL (stored once, the
latest state winning), and completed repairs cutting the recorded lives the survival
model can be trained on."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import psycopg

from actors.maintenance import MaintenanceService
from schemas import subjects
from schemas.plant import Plant
from store.lives import recorded_lives
from store.partitions import Partitions
from store.writer import WriterConfig
from tests.maintenance.test_service import T0, Clock, prediction
from tests.store.conftest import publish, run_writer
from twinfleet.services import NatsServer

FAST = WriterConfig(flush_interval_s=0.2, maintenance_every_s=3600.0)


def test_alerts_and_work_orders_reach_the_history_with_their_latest_state(
    nats_server: NatsServer, registered: str, plant: Plant
) -> None:
    async def service_work() -> str:
        import nats

        svc = await MaintenanceService(plant, nats_server.url, clock=Clock(), tick_s=3600).start()
        nc = await nats.connect(nats_server.url)
        try:
            p = prediction("P-205", T0, median=150, lower=70)
            await publish(nats_server.url, [(subjects.rul("P-205"), p.model_dump_json().encode())])
            while not svc.orders.orders:
                await asyncio.sleep(0.05)
            order = next(iter(svc.orders.orders.values()))
            for status in ("in_progress", "completed"):
                msg = await nc.request(
                    subjects.maintenance("workorders.update"),
                    json.dumps(
                        {"workorder_id": order.workorder_id, "actor": "dana", "status": status}
                    ).encode(),
                    20,
                )
                assert json.loads(msg.data)["ok"]["status"] == status
            return order.workorder_id
        finally:
            await nc.close()
            await svc.stop()

    wo = asyncio.run(service_work())
    # created, in progress, completed; two alerts raised then resolved by the completion
    run_writer(nats_server.url, registered, lambda w: w.stats["events_stored"] >= 8, config=FAST)
    with psycopg.connect(registered) as conn:
        orders = conn.execute(
            "SELECT workorder_id, status, failure_mode, completed_at IS NOT NULL FROM work_orders"
        ).fetchall()
        alerts = conn.execute(
            "SELECT rule_id, status, workorder_id FROM alerts ORDER BY rule_id"
        ).fetchall()
    assert orders == [(wo, "completed", "bearing_wear", True)]
    assert alerts == [("failure-7d", "resolved", wo), ("rul-low", "resolved", wo)]


def test_completed_repairs_cut_the_recorded_lives(registered: str, plant: Plant) -> None:
    """P-201 ran 30 hours: bearings replaced preventively after 10 h (censored), failed of
    a seal leak after 25 h (a corrective order), and has run 5 h since (still running)."""
    spec = plant.machine("P-201")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with psycopg.connect(registered) as conn:
        keys = dict(
            conn.execute(
                "SELECT name, sensor_key FROM sensors WHERE asset_id = %s", (spec.id,)
            ).fetchall()
        )
        hours = [start + timedelta(hours=h) for h in range(30)]
        Partitions().ensure(conn, "rollup_1h", hours)
        for h in range(30):
            for key in keys.values():
                conn.execute(
                    "INSERT INTO rollup_1h (sensor_key, bucket, count, mean, m2) "
                    "VALUES (%s, %s, 60, %s, 0)",
                    (key, start + timedelta(hours=h), float(h)),
                )
        for n, (at, kind, mode) in enumerate(
            [(10.5, "preventive", "bearing_wear"), (25.2, "corrective", "seal_leak")], start=1
        ):
            record = {"failure_mode": mode}
            conn.execute(
                "INSERT INTO work_orders (workorder_id, asset_id, type, priority, status, title, "
                "created_at, completed_at, record, failure_mode) VALUES "
                "(%s, %s, %s, 'high', 'completed', 'x', %s, %s, %s, %s)",
                (
                    f"WO-2026-11-000{n}",
                    spec.id,
                    kind,
                    start,
                    start + timedelta(hours=at),
                    json.dumps(record),
                    mode,
                ),
            )

    async def read():  # type: ignore[no-untyped-def]
        async with await psycopg.AsyncConnection.connect(registered) as conn:
            return await recorded_lives(conn, [spec])

    frame = asyncio.run(read())
    lives = frame.groupby("unit", sort=False)
    assert list(lives.size()) == [11, 15, 4]  # hours 0-10, 11-25, 26-29
    assert list(lives["failure_mode"].last()) == ["", "seal_leak", ""]
    assert list(frame.columns[:3]) == ["unit", "hours", "failure_mode"]
    assert {s.name for s in spec.sensors} <= set(frame.columns)
    first, second = (frame[frame.unit == u] for u in ("P-201#0", "P-201#1"))
    # hours at the end of each hourly bucket: 01:00 in the first life; 12:00 is 1.5 h
    # after the repair at 10:30
    assert first.hours.iloc[0] == spec.installed_hours + 1 and second.hours.iloc[0] == 1.5
    assert list(second["vibration"])[:2] == [11.0, 12.0]  # the hourly means
