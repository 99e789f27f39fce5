"""The webhook channel against a real HTTP server (aiohttp): retries on 5xx and dead
ports, no retry on a refusal, and the service's alert and CMMS webhooks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from actors.maintenance import MaintenanceService
from actors.notify import Webhook
from schemas import subjects
from schemas.plant import load_plant
from tests.maintenance.test_service import Clock, anomaly, prediction, publish, until
from twinfleet.cli import _example_plant_path
from twinfleet.services import NatsServer, free_port


class Receiver:
    """An HTTP server that answers the queued statuses (then 200) and keeps the bodies."""

    def __init__(self, statuses: list[int] | None = None):
        self.statuses = list(statuses or [])
        self.bodies: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.bodies.append((request.path, await request.json(), dict(request.headers)))
        return web.Response(status=status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


def test_the_webhook_retries_failures_and_not_refusals() -> None:
    async def main() -> None:
        async with Receiver([503, 502, 400]) as rx:
            hook = Webhook(rx.url("alerts"), retries=3).start()
            try:
                hook.send({"n": 1})  # 503, 502, then 200
                hook.send({"n": 2})  # 400: refused, not retried
                await hook.drain(30)
            finally:
                await hook.stop()
            assert [b["n"] for _, b, _ in rx.bodies] == [1, 1, 1, 2]
            assert hook.counters == {"retried": 2, "sent": 1, "refused": 1}
        dead = Webhook(f"http://127.0.0.1:{free_port()}/", retries=2).start()
        try:
            dead.send({"n": 3})
            await dead.drain(30)
        finally:
            await dead.stop()
        assert dead.counters == {"retried": 2, "given_up": 1}

    asyncio.run(main())


def test_the_service_posts_alerts_and_work_orders_to_their_webhooks(
    nats_server: NatsServer,
) -> None:
    async def main() -> None:
        async with Receiver([500]) as rx:
            plant = load_plant(_example_plant_path())
            alerting = plant.alerting.model_copy(
                update={"webhook_url": rx.url("alerts"), "cmms_webhook_url": rx.url("cmms")}
            )
            plant = plant.model_copy(update={"alerting": alerting})
            svc = await MaintenanceService(plant, nats_server.url, clock=Clock()).start()
            try:
                await publish(
                    nats_server.url,
                    [
                        (
                            subjects.anomaly("M-101"),
                            anomaly("M-101", "vibration", Clock().t).model_dump_json().encode(),
                        ),
                        (
                            subjects.rul("P-206"),
                            prediction("P-206", Clock().t, 150, 70).model_dump_json().encode(),
                        ),
                    ],
                )
                await until(lambda: svc.counters["rul_events"] == 1, "the events")
                assert svc.alert_hook is not None and svc.cmms_hook is not None
                await svc.alert_hook.drain(30)
                await svc.cmms_hook.drain(30)
            finally:
                await svc.stop()
        by_path: dict[str, list[Any]] = {}
        for path, body, headers in rx.bodies:
            by_path.setdefault(path, []).append((body, headers["Idempotency-Key"]))
        raised = {b["alert"]["machine_id"] for b, _ in by_path["/alerts"]}
        assert raised == {"M-101", "P-206"}  # the first post failed (500) and was retried
        assert all(b["event"] == "raised" for b, _ in by_path["/alerts"])
        created_for = {
            b["work_order"]["asset_id"]: (b, k)
            for b, k in by_path["/cmms"]
            if b["event"] == "workorder.created"
        }
        # P-206's from its prediction; M-101's from its vibration beyond the critical limit
        # (a condition-based order).
        assert set(created_for) == {"M-101", "P-206"}
        assert created_for["M-101"][0]["work_order"]["source"] == "condition"
        created, key = created_for["P-206"]
        assert key == f"{created['work_order']['workorder_id']}:1"
        assert json.dumps(created)  # plain JSON, as documented in maintenance.cmms

    asyncio.run(main())
