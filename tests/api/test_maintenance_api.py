"""The maintenance routes and GraphQL fields against the real maintenance service: a real
nats-server, :class:`actors.maintenance.MaintenanceService` in a thread (with its own
event loop), and the API (``create_app`` over ``start_services``, no Ray) under uvicorn in
another thread, asked over HTTP and websockets."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.app import Settings
from api.auth import Role
from api.maintenance import UNAVAILABLE
from schemas import subjects
from schemas.anomaly import AnomalyRecord
from schemas.plant import Plant, load_plant
from tests.api.conftest import LiveApi as SharedLiveApi
from tests.api.conftest import next_data, subscribe, wait_for
from twinfleet.services import NatsServer

pytestmark = [pytest.mark.slow]

SECRET = "maintenance-secret-" + "x" * 32
PLANT_FILE = "twinfleet/plants/example.yaml"
MOTOR = "M-107"  # motor-15kw on the packaging line (no maintenance windows)
BEARING_JOB = {
    "asset_id": MOTOR,
    "type": "corrective",
    "priority": "high",
    "title": "Replace the drive-end bearing",
    "description": "noise on the drive end",
    "estimated_duration_hours": 4,
    "required_skills": ["mechanical", "bearings"],
    "parts_required": [{"part_number": "BRG-6309-2Z", "quantity": 1, "description": "bearing"}],
}


# -- the service and the API, each in a thread with its own event loop ------------------------
class LiveService:
    """The maintenance service on ``nats_url`` until the block is left (``service_kw``:
    more arguments of the service, e.g. its clock)."""

    def __init__(self, plant: Plant, nats_url: str, **service_kw: Any) -> None:
        self.plant = plant
        self.nats_url = nats_url
        self.service_kw: dict[str, Any] = {"clock": lambda: datetime.now(UTC), **service_kw}
        self.service: Any = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        import nats

        from actors.bus import ensure_jetstream
        from actors.maintenance import MaintenanceService

        try:
            nc = await nats.connect(self.nats_url)
            try:
                await ensure_jetstream(nc.jetstream())
            finally:
                await nc.close()
            service = MaintenanceService(self.plant, self.nats_url, **self.service_kw)
            await service.start()
            self.service = service
            try:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self._started.set()
                await self._stop.wait()
            finally:
                await service.stop()
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()

    def __enter__(self) -> LiveService:
        self._thread.start()
        assert self._started.wait(60), "the maintenance service did not start in 60 s"
        if self.error is not None:
            raise AssertionError(f"the maintenance service did not start: {self.error!r}")
        return self

    def run(self, coroutine: Any, timeout_s: float = 60.0) -> Any:
        """Run ``coroutine`` (of the service, e.g. ``tick()``) on the service's loop."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the maintenance service did not stop"
        if self.error is not None:
            raise self.error


class LiveApi(SharedLiveApi):
    """The shared live API (tests/api/conftest.py) with this file's request helpers."""

    def __init__(self, plant: Plant, nats_url: str) -> None:
        settings = Settings(nats_url=nats_url, secret=SECRET, maintenance_timeout_s=15.0)
        super().__init__(settings, list(plant.machines))

    def token(self, role: Role = Role.VIEWER) -> str:
        return self.authority.issue(f"{role.value}-user", role)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        role: Role | None = Role.VIEWER,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON or text body, headers) of a real HTTP request."""
        h = {"content-type": "application/json", **(headers or {})}
        if role is not None:
            h["authorization"] = f"Bearer {self.token(role)}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, h, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, text, got = answer.status, answer.read().decode(), dict(answer.headers)
        except urllib.error.HTTPError as e:
            with contextlib.closing(e):
                status, text, got = e.code, e.read().decode(), dict(e.headers)
        try:
            return status, json.loads(text), got
        except ValueError:
            return status, text, got

    def get(self, path: str, role: Role = Role.VIEWER, **params: Any) -> tuple[int, Any]:
        query = ("?" + urllib.parse.urlencode(params, doseq=True)) if params else ""
        status, body, _ = self.call("GET", path + query, role=role)
        return status, body

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, role: Role = Role.VIEWER
    ) -> dict[str, Any]:
        status, body, _ = self.call(
            "POST", "/graphql", {"query": query, "variables": variables}, role
        )
        assert status == 200, body
        assert isinstance(body, dict)
        return body


@pytest.fixture
def plant() -> Plant:
    return load_plant(PLANT_FILE)


@pytest.fixture
def live(nats_server: NatsServer, plant: Plant) -> Iterator[LiveApi]:
    """The maintenance service and the API on one nats-server."""
    with (
        LiveService(plant, nats_server.url),
        LiveApi(plant, nats_server.url) as api,
    ):
        yield api


async def _last_audit(nats_url: str, action: str) -> dict[str, Any] | None:
    """The newest audit record of ``action`` kept in the EVENTS stream."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(nats_url)
    try:
        msg = await nc.jetstream().get_last_msg("EVENTS", subjects.audit(action))
    except NotFoundError:
        return None
    finally:
        await nc.close()
    return dict(json.loads(msg.data))


def last_audit(nats_url: str, action: str) -> dict[str, Any] | None:
    return asyncio.run(_last_audit(nats_url, action))


def count_audits(nats_url: str, action: str) -> int:
    async def count() -> int:
        import nats

        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(
                "EVENTS", subjects_filter=subjects.audit(action)
            )
        finally:
            await nc.close()
        return int((info.state.subjects or {}).get(subjects.audit(action), 0))

    return asyncio.run(count())


def publish_anomaly(nats_url: str, record: AnomalyRecord) -> None:
    async def send() -> None:
        import nats

        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish(
                subjects.anomaly(record.machine_id), record.model_dump_json().encode()
            )
        finally:
            await nc.close()

    asyncio.run(send())


# -- REST ---------------------------------------------------------------------------------------
def test_rest_work_orders_schedule_and_export(live: LiveApi, nats_server: NatsServer) -> None:
    status, made, _ = live.call(
        "POST",
        "/api/v1/maintenance/workorders",
        BEARING_JOB,
        Role.OPERATOR,
        headers={"Idempotency-Key": "job-1"},
    )
    assert status == 201, made
    for key in (
        "workorder_id",
        "status",
        "asset_id",
        "scheduled_date",
        "assigned_technician",
        "parts_reserved",
        "estimated_cost",
        "created_at",
        "due_by",
        "unplaced_reason",
    ):
        assert key in made, key
    assert made["workorder_id"].startswith("WO-") and made["asset_id"] == MOTOR
    assert made["status"] == "scheduled" and made["created"] is True
    technician = made["assigned_technician"]
    assert technician is not None, f"not placed: {made['unplaced_reason']}"
    assert set(technician) >= {"id", "name", "skills"} and technician["name"]
    assert {"mechanical", "bearings"} <= set(technician["skills"])
    assert made["scheduled_date"] is not None and made["unplaced_reason"] is None
    cost = made["estimated_cost"]
    assert set(cost) >= {"labor", "parts", "total", "downtime", "risk"}
    assert cost["total"] == pytest.approx(cost["labor"] + cost["parts"])
    assert cost["labor"] > 0
    record = last_audit(nats_server.url, "create_workorder")
    assert record is not None and record["target"] == made["workorder_id"]
    assert record["actor"] == "operator-user" and record["role"] == "operator"

    # the same key: the same order, 200, no second order and no second audit record
    status, again, _ = live.call(
        "POST",
        "/api/v1/maintenance/workorders",
        BEARING_JOB,
        Role.OPERATOR,
        headers={"Idempotency-Key": "job-1"},
    )
    assert status == 200, again
    assert again["workorder_id"] == made["workorder_id"] and again["created"] is False
    status, listed = live.get("/api/v1/maintenance/workorders", asset_id=MOTOR)
    assert status == 200, listed
    assert [o["workorder_id"] for o in listed["workorders"]] == [made["workorder_id"]]
    assert listed["count"] == 1
    one = listed["workorders"][0]
    assert one["assigned_technician"]["id"] == technician["id"]
    assert one["estimated_cost"]["total"] == pytest.approx(cost["total"])
    assert count_audits(nats_server.url, "create_workorder") == 1

    # bad bodies: 422 naming the field
    status, refused, _ = live.call(
        "POST", "/api/v1/maintenance/workorders", {**BEARING_JOB, "type": "bogus"}, Role.OPERATOR
    )
    assert status == 422 and refused["error"]["field"] == "type", refused
    assert refused["error"]["code"] == "invalid_request"
    body = {k: v for k, v in BEARING_JOB.items() if k != "title"}
    status, refused, _ = live.call("POST", "/api/v1/maintenance/workorders", body, Role.OPERATOR)
    assert status == 422 and refused["error"]["field"] == "title", refused
    status, refused, _ = live.call(
        "POST",
        "/api/v1/maintenance/workorders",
        {**BEARING_JOB, "estimated_duration_hours": -1},
        Role.OPERATOR,
    )
    assert status == 422 and refused["error"]["field"] == "estimated_duration_hours", refused
    status, refused, _ = live.call(
        "POST", "/api/v1/maintenance/workorders", raw=b"{not json", role=Role.OPERATOR
    )
    assert status == 422, refused
    status, refused, _ = live.call(
        "POST",
        "/api/v1/maintenance/workorders",
        BEARING_JOB,
        Role.OPERATOR,
        headers={"Idempotency-Key": "k" * 201},
    )
    assert status == 422 and refused["error"]["field"] == "Idempotency-Key", refused

    # an unknown asset: the service answers 404, and so does the API
    status, refused, _ = live.call(
        "POST",
        "/api/v1/maintenance/workorders",
        {**BEARING_JOB, "asset_id": "NOPE-1"},
        Role.OPERATOR,
    )
    assert status == 404 and refused["error"]["code"] == "not_found", refused
    assert "NOPE-1" in refused["error"]["message"]

    # a viewer may read, not write; no token: 401
    status, refused, _ = live.call(
        "POST", "/api/v1/maintenance/workorders", BEARING_JOB, Role.VIEWER
    )
    assert status == 403 and refused["error"]["code"] == "forbidden", refused
    status, refused, _ = live.call("POST", "/api/v1/maintenance/workorders", BEARING_JOB, None)
    assert status == 401, refused
    assert live.get("/api/v1/maintenance/workorders", asset_id="M-102")[1]["workorders"] == []

    # status filter, repeated or comma-separated
    status, listed = live.get("/api/v1/maintenance/workorders", status="scheduled,in_progress")
    assert status == 200 and made["workorder_id"] in [
        o["workorder_id"] for o in listed["workorders"]
    ]
    status, listed = live.get("/api/v1/maintenance/workorders", status=["completed"])
    assert status == 200 and made["workorder_id"] not in [
        o["workorder_id"] for o in listed["workorders"]
    ]
    status, refused = live.get("/api/v1/maintenance/workorders", status="bogus")
    assert status == 422 and refused["error"]["field"].startswith("status"), refused

    # the schedule places the order with its technician
    status, plan = live.get("/api/v1/maintenance/schedule", horizon_hours=168)
    assert status == 200, plan
    assert plan["horizon_hours"] == 168 and plan["status"] and plan["solver"]
    assert set(plan["cost"]) == {"labor", "parts", "downtime", "risk", "total"}
    placed = {w["workorder_id"]: w for w in plan["scheduled"]}
    assert placed[made["workorder_id"]]["technician_id"] == technician["id"]
    assert placed[made["workorder_id"]]["cost"]["total"] == pytest.approx(cost["total"])
    status, refused = live.get("/api/v1/maintenance/schedule", horizon_hours=-5)
    assert status == 422 and refused["error"]["field"] == "horizon_hours", refused

    # the CMMS export
    status, text, headers = live.call("GET", "/api/v1/maintenance/workorders?format=csv")
    assert status == 200, text
    assert headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) >= 2 and rows[0], rows
    assert any(made["workorder_id"] in row for row in rows[1:]), rows
    status, refused = live.get("/api/v1/maintenance/workorders", format="xml")
    assert status == 422 and refused["error"]["field"] == "format"

    # alerts: a list (none raised yet on this machine)
    status, alerts = live.get("/api/v1/maintenance/alerts", machine_id=MOTOR, status="open")
    assert status == 200 and isinstance(alerts["alerts"], list), alerts


# -- GraphQL ------------------------------------------------------------------------------------
ALERT_FIELDS = "alertId machineId ruleId kind severity status message count acknowledgedBy note"
WORK_ORDER_FIELDS = """workorderId assetId type priority status title scheduledDate dueBy
  assignedTechnician { id name skills } estimatedCost { labor parts downtime risk total }
  partsReserved { partNumber quantity } unplacedReason created"""


def critical_bearing_anomaly() -> AnomalyRecord:
    """The motor's bearing temperature beyond its critical limit, now."""
    return AnomalyRecord(
        machine_id=MOTOR,
        sensor_id=f"{MOTOR}.bearing_temp",
        timestamp=int(time.time() * 1000),
        type="threshold",
        severity="critical",
        score=0.99,
        value=101.0,
        expected_value=70.0,
        reason="above critical limit 95.0",
        detector="threshold",
    )


def test_graphql_alerts_can_be_acknowledged_and_resolved(
    live: LiveApi, nats_server: NatsServer
) -> None:
    record = critical_bearing_anomaly()
    services = live.services
    assert services is not None and services.maintenance is not None
    events = services.maintenance.events

    async def subscribed() -> dict[str, Any]:
        """The alert raised by the anomaly, as the alertRaised subscription delivers it."""
        ws = await subscribe(
            live.url,
            live.token(Role.VIEWER),
            f'subscription {{ alertRaised(machineId: "{MOTOR}") {{ {ALERT_FIELDS} }} }}',
        )
        try:
            deadline = time.monotonic() + 10
            while f"alert.{MOTOR}" not in events.topics:
                assert time.monotonic() < deadline, "the subscription did not start"
                await asyncio.sleep(0.02)
            await asyncio.to_thread(publish_anomaly, nats_server.url, record)
            while True:
                data = (await next_data(ws, 20))["alertRaised"]
                assert data["machineId"] == MOTOR
                if data["kind"] == "anomaly":
                    return dict(data)
        finally:
            await ws.close()

    pushed = asyncio.run(subscribed())
    assert pushed["status"] == "open" and pushed["severity"] == "critical"
    query = f"""query($m: ID) {{ alerts(filter: {{machineId: $m, status: ["open"]}}) {{
        {ALERT_FIELDS} }} }}"""

    def raised() -> list[dict[str, Any]]:
        answer = live.graphql(query, {"m": MOTOR})
        assert "errors" not in answer, answer
        return [a for a in answer["data"]["alerts"] if a["kind"] == "anomaly"]

    alert = wait_for(raised, 20, "the anomaly's alert")[0]
    assert alert["machineId"] == MOTOR and alert["severity"] == "critical"
    assert alert["alertId"] == pushed["alertId"]
    status, rest = live.get("/api/v1/maintenance/alerts", machine_id=MOTOR)
    assert status == 200 and alert["alertId"] in [a["alert_id"] for a in rest["alerts"]]

    ack = (
        "mutation($id: ID!, $note: String) { acknowledgeAlert(alertId: $id, note: $note) { "
        + ALERT_FIELDS
        + " } }"
    )
    refused = live.graphql(ack, {"id": alert["alertId"], "note": "on it"}, Role.VIEWER)
    assert refused["errors"][0]["extensions"]["code"] == "forbidden", refused
    answer = live.graphql(ack, {"id": alert["alertId"], "note": "on it"}, Role.OPERATOR)
    assert "errors" not in answer, answer
    acked = answer["data"]["acknowledgeAlert"]
    assert acked["status"] == "acknowledged" and acked["acknowledgedBy"] == "operator-user"
    audit = last_audit(nats_server.url, "acknowledge_alert")
    assert audit is not None and audit["target"] == alert["alertId"]

    resolve = (
        'mutation($id: ID!) { resolveAlert(alertId: $id, note: "replaced", falsePositive: false) '
        "{ " + ALERT_FIELDS + " } }"
    )
    answer = live.graphql(resolve, {"id": alert["alertId"]}, Role.OPERATOR)
    assert "errors" not in answer, answer
    assert answer["data"]["resolveAlert"]["status"] == "resolved"
    audit = last_audit(nats_server.url, "resolve_alert")
    assert audit is not None and audit["target"] == alert["alertId"]
    assert raised() == []

    # an unknown alert: the service's 404 as a GraphQL error
    answer = live.graphql(ack, {"id": "AL-0000000000000000", "note": None}, Role.OPERATOR)
    assert answer["errors"][0]["extensions"]["code"] == "not_found", answer


def test_graphql_work_orders_and_their_changes_over_a_subscription(
    live: LiveApi, nats_server: NatsServer
) -> None:
    create = (
        "mutation($input: WorkOrderInput!, $key: String) { "
        "createWorkOrder(input: $input, idempotencyKey: $key) { " + WORK_ORDER_FIELDS + " } }"
    )
    job = {
        "assetId": MOTOR,
        "type": "corrective",
        "priority": "medium",
        "title": "Check the alignment",
        "requiredSkills": ["alignment"],
        "estimatedDurationHours": 2,
        "partsRequired": [{"partNumber": "SHIM-KIT", "quantity": 1}],
    }
    refused = live.graphql(create, {"input": job, "key": "gql-1"}, Role.VIEWER)
    assert refused["errors"][0]["extensions"]["code"] == "forbidden", refused
    bad = live.graphql(create, {"input": {**job, "type": "bogus"}}, Role.OPERATOR)
    assert bad["errors"][0]["extensions"]["field"] == "input.type", bad
    answer = live.graphql(create, {"input": job, "key": "gql-1"}, Role.OPERATOR)
    assert "errors" not in answer, answer
    order = answer["data"]["createWorkOrder"]
    assert order["created"] is True and order["assetId"] == MOTOR
    assert order["assignedTechnician"] is not None, order["unplacedReason"]
    assert "alignment" in order["assignedTechnician"]["skills"]
    cost = order["estimatedCost"]
    assert cost["total"] == pytest.approx(cost["labor"] + cost["parts"])
    again = live.graphql(create, {"input": job, "key": "gql-1"}, Role.OPERATOR)
    assert again["data"]["createWorkOrder"]["workorderId"] == order["workorderId"]
    assert again["data"]["createWorkOrder"]["created"] is False

    listed = live.graphql(
        "query($a: ID) { workOrders(filter: {assetId: $a}) { workorderId status "
        "assignedTechnicianId estimatedCost { total } } }",
        {"a": MOTOR},
    )
    assert "errors" not in listed, listed
    assert [o["workorderId"] for o in listed["data"]["workOrders"]] == [order["workorderId"]]
    asset = live.graphql(
        "query($a: ID!) { asset(id: $a) { maintenanceSchedule { nextScheduled lastCompleted "
        "workOrderId } } }",
        {"a": MOTOR},
    )
    assert "errors" not in asset, asset
    schedule = asset["data"]["asset"]["maintenanceSchedule"]
    assert schedule["workOrderId"] == order["workorderId"]
    assert schedule["nextScheduled"] == order["scheduledDate"]
    assert schedule["lastCompleted"] is None

    plan = live.graphql(
        "{ schedule(horizonHours: 72) { horizonHours status solver scheduled { workorderId "
        "technicianId start end cost { total } } unscheduled { workorderId reason risk } "
        "cost { labor parts downtime risk total } } }"
    )
    assert "errors" not in plan, plan
    assert plan["data"]["schedule"]["horizonHours"] == 72
    replanned = live.graphql(
        "mutation { replan(horizonHours: 168) { horizonHours scheduled { workorderId } } }",
        role=Role.OPERATOR,
    )
    assert "errors" not in replanned, replanned
    assert order["workorderId"] in [
        w["workorderId"] for w in replanned["data"]["replan"]["scheduled"]
    ]
    assert last_audit(nats_server.url, "replan") is not None

    update = """mutation($input: UpdateWorkOrderInput!) { updateWorkOrder(input: $input) {
        workorderId status priority } }"""
    services = live.services
    assert services is not None and services.maintenance is not None
    events = services.maintenance.events

    async def scenario() -> None:
        ws = await subscribe(
            live.url,
            live.token(Role.VIEWER),
            f'subscription {{ workOrderChanged(assetId: "{MOTOR}") '
            "{ workorderId status priority } }",
        )
        try:
            deadline = time.monotonic() + 10
            while f"workorder.{MOTOR}" not in events.topics:
                assert time.monotonic() < deadline, "the subscription did not start"
                await asyncio.sleep(0.02)
            changed = await asyncio.to_thread(
                live.graphql,
                update,
                {"input": {"workorderId": order["workorderId"], "priority": "critical"}},
                Role.OPERATOR,
            )
            assert "errors" not in changed, changed
            assert changed["data"]["updateWorkOrder"]["priority"] == "critical"
            while True:
                data = (await next_data(ws, 10))["workOrderChanged"]
                assert data["workorderId"] == order["workorderId"]
                if data["priority"] == "critical":
                    break
        finally:
            await ws.close()

    asyncio.run(scenario())
    audit = last_audit(nats_server.url, "update_workorder")
    assert audit is not None and audit["target"] == order["workorderId"]
    assert audit["detail"] == {"priority": "critical"}

    # a change the life cycle refuses is the service's 409, as a GraphQL error
    done = live.graphql(
        update,
        {"input": {"workorderId": order["workorderId"], "status": "completed"}},
        Role.OPERATOR,
    )
    assert "errors" not in done, done
    assert done["data"]["updateWorkOrder"]["status"] == "completed"
    back = live.graphql(
        update,
        {"input": {"workorderId": order["workorderId"], "status": "scheduled"}},
        Role.OPERATOR,
    )
    assert back["errors"][0]["extensions"]["code"] == "conflict", back
    asset = live.graphql(
        "query($a: ID!) { asset(id: $a) { maintenanceSchedule { lastCompleted workOrderId } } }",
        {"a": MOTOR},
    )
    assert asset["data"]["asset"]["maintenanceSchedule"]["lastCompleted"] is not None


# -- shelving -----------------------------------------------------------------------------------
T0 = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)


class Clock:
    """The service's clock, moved by the test (no sleeping for minutes)."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def hot_bearing(at: datetime, machine: str = MOTOR) -> AnomalyRecord:
    """A sensor beyond its critical limit: a critical alert at once."""
    return AnomalyRecord(
        machine_id=machine,
        sensor_id=f"{machine}.bearing_temp",
        timestamp=int(at.timestamp() * 1000),
        type="threshold",
        severity="critical",
        score=0.99,
        value=101.0,
        reason="above critical limit 95.0",
        detector="threshold",
    )


def test_a_shelved_alert_neither_notifies_nor_escalates_and_returns_at_expiry(
    nats_server: NatsServer, plant: Plant
) -> None:
    clock = Clock()
    with (
        LiveService(plant, nats_server.url, clock=clock, tick_s=3600) as live_service,
        LiveApi(plant, nats_server.url) as api,
    ):
        svc = live_service.service

        def the_alert() -> dict[str, Any]:
            status, body = api.get("/api/v1/maintenance/alerts", machine_id=MOTOR)
            assert status == 200, body
            (alert,) = [a for a in body["alerts"] if a["kind"] == "anomaly"]
            return dict(alert)

        def tick_at(minutes: float) -> dict[str, Any]:
            clock.t = T0 + timedelta(minutes=minutes)
            live_service.run(svc.tick())
            return the_alert()

        publish_anomaly(nats_server.url, hot_bearing(T0))
        wait_for(lambda: svc.counters["anomaly_events"] == 1, 20, "the anomaly")
        alert = the_alert()
        assert alert["severity"] == "critical" and svc.counters["alerts_raised"] == 1
        path = f"/api/v1/maintenance/alerts/{alert['alert_id']}/shelve"
        body = {"minutes": 60, "reason": "bearing sensor being recalibrated"}

        # refused: a viewer, too long, nothing, no reason, an unknown alert
        status, refused, _ = api.call("POST", path, body, Role.VIEWER)
        assert status == 403 and refused["error"]["code"] == "forbidden", refused
        for bad, field in (
            ({**body, "minutes": 24 * 60 + 1}, "minutes"),
            ({**body, "minutes": 0}, "minutes"),
            ({"minutes": 60}, "reason"),
            ({**body, "reason": ""}, "reason"),
        ):
            status, refused, _ = api.call("POST", path, bad, Role.OPERATOR)
            assert status == 422 and refused["error"]["field"] == field, (bad, refused)
        status, refused, _ = api.call(
            "POST", "/api/v1/maintenance/alerts/AL-0000000000000000/shelve", body, Role.OPERATOR
        )
        assert status == 404, refused

        status, shelved, _ = api.call("POST", path, body, Role.OPERATOR)
        assert status == 200, shelved
        assert shelved["shelved_until"] == "2026-11-30T06:00:00.000Z"
        assert (shelved["shelved_by"], shelved["shelve_reason"]) == (
            "operator-user",
            "bearing sensor being recalibrated",
        )
        record = last_audit(nats_server.url, "shelve_alert")
        assert record is not None and record["target"] == alert["alert_id"]
        assert record["detail"] == body
        status, listed = api.get("/api/v1/maintenance/alerts", shelved="true")
        assert [a["alert_id"] for a in listed["alerts"]] == [alert["alert_id"]]

        # 45 minutes: unshelved it would have escalated at 30; shelved, nothing
        assert tick_at(45)["escalation_level"] == 0
        assert svc.counters["alerts_escalated"] == 0
        clock.t = T0 + timedelta(minutes=50)  # the condition is still there
        publish_anomaly(nats_server.url, hot_bearing(clock.t))
        wait_for(lambda: svc.counters["anomaly_events"] == 2, 20, "the repeat")
        assert svc.counters["alerts_raised"] == 1 and svc.counters["alerts_unshelved"] == 0
        # at expiry it comes back by itself, notified, and escalates 30 minutes later
        assert tick_at(59)["shelved_until"] is not None
        back = tick_at(61)
        assert back["shelved_until"] is None and back["escalation_level"] == 0
        assert back["escalation_from"] == "2026-11-30T06:00:00.000Z"
        assert svc.counters["alerts_unshelved"] == 1
        assert tick_at(89)["escalation_level"] == 0
        assert tick_at(90)["escalation_level"] == 1 and svc.counters["alerts_escalated"] == 1

        # GraphQL: shelveAlert / unshelveAlert
        shelve = (
            "mutation($id: ID!, $m: Float!, $r: String!) { shelveAlert(alertId: $id, "
            "minutes: $m, reason: $r) { alertId shelved shelvedUntil shelvedBy shelveReason } }"
        )
        variables = {"id": alert["alert_id"], "m": 30, "r": "night shift knows"}
        refused_gql = api.graphql(shelve, variables, Role.VIEWER)
        assert refused_gql["errors"][0]["extensions"]["code"] == "forbidden", refused_gql
        too_long = api.graphql(shelve, {**variables, "m": 5000}, Role.OPERATOR)
        assert too_long["errors"][0]["extensions"]["field"] == "minutes", too_long
        answer = api.graphql(shelve, variables, Role.OPERATOR)
        assert "errors" not in answer, answer
        assert answer["data"]["shelveAlert"]["shelved"] is True
        assert answer["data"]["shelveAlert"]["shelvedUntil"] == "2026-11-30T07:00:00.000Z"
        unshelve = 'mutation($id: ID!) { unshelveAlert(alertId: $id, note: "back") { shelved } }'
        answer = api.graphql(unshelve, {"id": alert["alert_id"]}, Role.OPERATOR)
        assert answer["data"]["unshelveAlert"] == {"shelved": False}, answer
        record = last_audit(nats_server.url, "unshelve_alert")
        assert record is not None and record["target"] == alert["alert_id"]
        again = api.graphql(unshelve, {"id": alert["alert_id"]}, Role.OPERATOR)
        assert again["errors"][0]["extensions"]["code"] == "conflict", again
        status, refused, _ = api.call("DELETE", path, role=Role.OPERATOR)
        assert status == 409, refused


def test_alarm_kpis_over_rest_and_graphql(nats_server: NatsServer, plant: Plant) -> None:
    clock = Clock()
    with (
        LiveService(plant, nats_server.url, clock=clock, tick_s=3600) as live_service,
        LiveApi(plant, nats_server.url) as api,
    ):
        svc = live_service.service
        for machine in (MOTOR, "C-301"):
            publish_anomaly(nats_server.url, hot_bearing(T0, machine))
        wait_for(lambda: svc.counters["anomaly_events"] == 2, 20, "the anomalies")
        clock.t = T0 + timedelta(hours=1)  # raised at 05:00; the KPIs asked at 06:00
        status, kpis = api.get("/api/v1/maintenance/alerts/kpis")  # the day before now
        assert status == 200, kpis
        assert kpis["end"] == "2026-11-30T06:00:00.000Z" and kpis["hours"] == 24
        assert kpis["raised"] == 2 and kpis["peak_10min"] == 2
        assert kpis["by_severity"][0] == {"severity": "critical", "raised": 2, "share": 1.0}
        sites = {s["site_id"]: s["raised"] for s in kpis["sites"]}
        assert sum(sites.values()) == 2
        assert sorted(b["source"] for b in kpis["bad_actors"]) == sorted(
            [f"{MOTOR}.bearing_temp", "C-301.bearing_temp"]
        )
        status, later = api.get(
            "/api/v1/maintenance/alerts/kpis",
            start="2026-11-30T05:30:00Z",
            end="2026-11-30T06:00:00Z",
        )
        assert status == 200 and later["raised"] == 0, later
        for params, field in (
            ({"start": "yesterday"}, "start"),
            ({"start": "2026-11-30T06:00:00"}, "start"),  # no zone
            ({"start": "2026-11-30T06:00:00Z", "end": "2026-11-30T05:00:00Z"}, "end"),
        ):
            status, refused = api.get("/api/v1/maintenance/alerts/kpis", **params)
            assert status == 422 and refused["error"]["field"] == field, (params, refused)
        status, refused, _ = api.call("GET", "/api/v1/maintenance/alerts/kpis", role=None)
        assert status == 401, refused
        answer = api.graphql(
            '{ alarmKpis(start: "2026-11-30T04:00:00Z", end: "2026-11-30T06:00:00Z") { raised '
            "perHour peak10min bySeverity { severity raised share } sites { siteId raised "
            "standing24h } badActors { source raised repeats } text } }"
        )
        assert "errors" not in answer, answer
        got = answer["data"]["alarmKpis"]
        assert (got["raised"], got["perHour"], got["peak10min"]) == (2, 1.0, 2)
        assert any("2 alerts raised" in line for line in got["text"])


# -- false positives reach the twin -------------------------------------------------------------
TWIN_CONFIG = {"pca_fit_scans": 50, "zscore_warmup": 20, "multivariate": False}
PUMP_LEVELS = {
    "vibration": 2.0,
    "bearing_temp": 45.0,
    "seal_temp": 40.0,
    "discharge_pressure": 8.0,
    "flow": 180.0,
    "current": 130.0,
    "load_setpoint": 80.0,  # steady: one operating regime
}


def pump_batches(
    spec: Any, start: datetime, minutes: range, vibration: Any, rng: Any
) -> list[tuple[str, bytes]]:
    """Telemetry of a pump every minute, 10 minutes a message, with 1 % noise;
    ``vibration(minute)`` its vibration level."""
    out = []
    for m0 in range(minutes.start, minutes.stop, 10):
        ids, times, values = [], [], []
        for m in range(m0, min(m0 + 10, minutes.stop)):
            t = int((start + timedelta(minutes=m)).timestamp() * 1000)
            for s in spec.sensors:
                level = vibration(m) if s.name == "vibration" else PUMP_LEVELS[s.name]
                ids.append(f"{spec.id}.{s.name}")
                times.append(t)
                values.append(float(level * (1 + 0.01 * rng.standard_normal())))
        body = {
            "gateway_id": "gw-1",
            "site_id": spec.site,
            "batch_id": f"{spec.id}-{m0}",
            "sent_at": times[-1],
            "readings": {
                "machine_id": [spec.id] * len(ids),
                "sensor_id": ids,
                "timestamp": times,
                "value": values,
            },
        }
        out.append((subjects.telemetry(spec.site, spec.id), json.dumps(body).encode()))
    return out


def publish_telemetry(nats_url: str, items: list[tuple[str, bytes]]) -> None:
    async def send() -> None:
        import nats

        from actors.bus import ensure_jetstream

        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_jetstream(js)
            for subject, data in items:
                await js.publish(subject, data)
        finally:
            await nc.close()

    asyncio.run(send())


@pytest.mark.usefixtures("local_ray")
def test_a_false_positive_marked_through_the_api_silences_that_condition_in_the_twin(
    nats_server: NatsServer, plant: Plant
) -> None:
    """Two identical pumps on a real fleet (Ray, JetStream): both vibrate more from minute
    600 and their twins raise statistical anomalies. An operator marks P-201's alert a false
    positive through GraphQL; the service tells P-201's host actor (machine, sensor, time),
    which tells the twin. The same data then keeps P-202 (unmarked) alarming on vibration,
    and P-201 not."""
    import numpy as np
    import ray

    from actors.access import FleetAccess
    from actors.fleet import Fleet
    from actors.maintenance import fleet_false_positives, utc_now
    from maintenance.alerts import PlantClock
    from schemas.alerts import AlertRule
    from schemas.common import datetime_to_ms

    pumps = [plant.machine("P-201"), plant.machine("P-202")]
    # every statistical anomaly raises an alert at once (the test watches the twin)
    rules = [AlertRule(id="anomaly", kind="anomaly", min_severity="low", on_delay_minutes=0)]
    watched = plant.model_copy(update={"alert_rules": rules})
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)

    def step(m: int) -> float:
        return 2.0 if m < 600 else 3.0

    def telemetry(minutes: range) -> list[tuple[str, bytes]]:
        items = []
        for spec in pumps:  # the same noise for both pumps
            items += pump_batches(spec, start, minutes, step, rngs[spec.id])
        return items

    rngs = {spec.id: np.random.default_rng(7) for spec in pumps}
    fleet = Fleet(pumps, nats_server.url, config=TWIN_CONFIG, state_every_s=0.1, name="fp")
    fleet.start()
    calls: list[tuple[str, str | None, int]] = []
    to_host = fleet_false_positives(FleetAccess("fp"))

    async def false_positives(machine: str, sensor: str | None, at_ms: int) -> str:
        calls.append((machine, sensor, at_ms))
        return await to_host(machine, sensor, at_ms)

    def applied_until(minute: int) -> bool:
        for spec in pumps:
            state_json, _ = ray.get(fleet.host_of(spec.id).state.remote(spec.id))
            last = json.loads(state_json).get("last_update")
            if last is None or last < (start + timedelta(minutes=minute)).isoformat()[:19]:
                return False
        return True

    try:
        fleet.wait_ready()
        with (
            LiveService(
                watched,
                nats_server.url,
                clock=PlantClock(utc_now),
                false_positives=false_positives,
                tick_s=3600,
            ) as live_service,
            LiveApi(watched, nats_server.url) as api,
        ):
            svc = live_service.service
            publish_telemetry(nats_server.url, telemetry(range(0, 660)))
            wait_for(lambda: applied_until(659), 120, "the first 11 hours applied")

            def vibration_alerts(machine: str) -> list[dict[str, Any]]:
                status, body = api.get("/api/v1/maintenance/alerts", machine_id=machine)
                assert status == 200, body
                return [a for a in body["alerts"] if a["subject"] == "vibration"]

            alert = wait_for(lambda: vibration_alerts("P-201"), 30, "P-201's vibration alert")[0]
            control = wait_for(lambda: vibration_alerts("P-202"), 30, "P-202's alert")[0]
            assert alert["message"].startswith("statistical anomaly on P-201.vibration")
            resolve = (
                'mutation($id: ID!) { resolveAlert(alertId: $id, note: "new baseline after '
                'the impeller change", falsePositive: true) { status resolvedAt } }'
            )
            answer = api.graphql(resolve, {"id": alert["alert_id"]}, Role.OPERATOR)
            assert "errors" not in answer, answer
            resolved = answer["data"]["resolveAlert"]
            assert resolved["status"] == "false_positive"
            wait_for(lambda: svc.counters["false_positives_told"] == 1, 30, "the twin told")
            at_ms = datetime_to_ms(datetime.fromisoformat(resolved["resolvedAt"]))
            assert calls == [("P-201", "vibration", at_ms)]
            # on plant time: the data's time (two days ago), not the wall clock's
            assert abs(at_ms - (start + timedelta(minutes=659)).timestamp() * 1000) < 3_600_000
            assert svc.counters["false_positives_refused"] == 0, svc.last_feedback_refusal

            publish_telemetry(nats_server.url, telemetry(range(660, 1260)))
            wait_for(lambda: applied_until(1259), 120, "the next 10 hours applied")
            # P-202 kept alarming: its alert counts the repeats (once the service has read
            # the anomalies the twins published while applying that data)
            (still,) = wait_for(
                lambda: [a for a in vibration_alerts("P-202") if a["count"] > control["count"]],
                30,
                "P-202's alert counting new anomalies",
            )
            assert still["alert_id"] == control["alert_id"]
            assert [a["alert_id"] for a in vibration_alerts("P-201")] == [alert["alert_id"]]
    finally:
        fleet.stop()


# -- without the service --------------------------------------------------------------------------
def test_without_the_service_the_routes_answer_503(nats_server: NatsServer, plant: Plant) -> None:
    with LiveApi(plant, nats_server.url) as api:
        for path in (
            "/api/v1/maintenance/schedule",
            "/api/v1/maintenance/workorders",
            "/api/v1/maintenance/workorders?format=csv",
            "/api/v1/maintenance/alerts",
        ):
            status, body, _ = api.call("GET", path)
            assert status == 503, (path, body)
            assert body["error"] == {"code": "unavailable", "message": UNAVAILABLE}
        status, body, _ = api.call(
            "POST", "/api/v1/maintenance/workorders", BEARING_JOB, Role.OPERATOR
        )
        assert status == 503 and body["error"]["message"] == UNAVAILABLE, body
        answer = api.graphql("{ workOrders { workorderId } }")
        assert answer["errors"][0]["extensions"]["code"] == "unavailable", answer
        answer = api.graphql(
            'query { asset(id: "M-101") { id maintenanceSchedule { workOrderId } } }'
        )
        assert answer["data"]["asset"] == {"id": "M-101", "maintenanceSchedule": None}
        assert answer["errors"][0]["extensions"]["code"] == "unavailable", answer
