"""Completing a work order resets the wear of the machine's twin: the maintenance service
tells the twin's host actor on a real local Ray, fed by a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from actors.access import FleetAccess
from actors.bus import ensure_jetstream
from actors.fleet import Fleet
from actors.host import MachineHost
from actors.maintenance import MaintenanceService
from schemas import subjects
from schemas.common import datetime_to_ms
from schemas.plant import load_plant
from twinfleet.cli import _example_plant_path
from twinfleet.services import NatsServer
from twins.machine import TwinConfig
from twins.simulator import DegradationModel
from twins.whatif import estimate_state

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

CONFIG = {"pca_fit_scans": 50, "zscore_warmup": 20}
NOW = datetime.now(UTC).replace(microsecond=0)


def test_completing_a_work_order_resets_the_twins_wear(nats_server: NatsServer) -> None:
    plant = load_plant(_example_plant_path())
    spec = next(m for m in plant.machines if m.id == "P-201")
    fleet = Fleet([spec], nats_server.url, config=CONFIG, state_every_s=0.1, name="wear").start()
    try:
        start = NOW - timedelta(days=2)
        scans = 120
        body = {
            "gateway_id": "gw-1",
            "site_id": spec.site,
            "batch_id": "b-1",
            "sent_at": datetime_to_ms(start + timedelta(minutes=scans)),
            "readings": {
                "machine_id": [spec.id] * (scans * len(spec.sensors)),
                "sensor_id": [f"{spec.id}.{s.name}" for _ in range(scans) for s in spec.sensors],
                "timestamp": [
                    datetime_to_ms(start + timedelta(minutes=k))
                    for k in range(scans)
                    for _ in spec.sensors
                ],
                "value": [float(s.rated or 40.0) for _ in range(scans) for s in spec.sensors],
            },
        }

        seen: dict[str, float] = {}

        def twin_now():  # type: ignore[no-untyped-def]
            host = MachineHost([spec], config=TwinConfig(**CONFIG))
            twin = host.twins[spec.id]
            twin.restore(fleet.snapshot(spec.id))
            return twin

        async def scenario() -> None:
            import nats

            nc = await nats.connect(nats_server.url)
            try:
                await steps(nc)
            finally:
                await nc.close()

        async def steps(nc) -> None:  # type: ignore[no-untyped-def]
            js = nc.jetstream()
            await ensure_jetstream(js)
            await js.publish(subjects.telemetry(spec.site, spec.id), json.dumps(body).encode())
            deadline = time.monotonic() + 60
            while twin_now().age_hours().get("bearing_wear", 0) < 1:
                assert time.monotonic() < deadline, "the twin never saw the readings"
                await asyncio.sleep(0.2)
            before = twin_now().age_hours()
            # The machine has run since installation: every mode is as old as it.
            assert before["bearing_wear"] == pytest.approx(before["seal_leak"])
            assert before["bearing_wear"] > 1
            seen.update(before)

            svc = await MaintenanceService(
                plant, nats_server.url, clock=lambda: NOW, repairs=FleetAccess("wear").record_repair
            ).start()
            try:
                created = await nc.request(
                    subjects.maintenance("workorders.create"),
                    json.dumps(
                        {
                            "actor": "dana",
                            "request": {
                                "asset_id": spec.id,
                                "type": "corrective",
                                "title": "Replace bearings",
                                "failure_prediction": {
                                    "probability": 0.4,
                                    "rul_hours": 100,
                                    "failure_mode": "bearing_wear",
                                },
                            },
                        }
                    ).encode(),
                    30,
                )
                wo = json.loads(created.data)["ok"]["work_order"]
                done = await nc.request(
                    subjects.maintenance("workorders.update"),
                    json.dumps(
                        {"workorder_id": wo["workorder_id"], "actor": "dana", "status": "completed"}
                    ).encode(),
                    30,
                )
                assert json.loads(done.data)["ok"]["status"] == "completed"
                assert svc.counters["repairs_told"] == 1
            finally:
                await svc.stop()

        asyncio.run(scenario())
        after = twin_now()
        ages = after.age_hours()
        assert ages["bearing_wear"] == 0  # repaired now; the twin's clock is before it
        assert ages["seal_leak"] == pytest.approx(seen["seal_leak"])  # only bearings repaired
        model = DegradationModel.for_machine(spec)
        wear = estimate_state(after, model).wear
        assert wear[next(m for m in wear if m.value == "bearing_wear")] == 0
        assert all(w > 0 for m, w in wear.items() if m.value != "bearing_wear")
    finally:
        fleet.stop()
