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
from datetime import UTC, datetime
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
    """The maintenance service on ``nats_url`` until the block is left."""

    def __init__(self, plant: Plant, nats_url: str) -> None:
        self.plant = plant
        self.nats_url = nats_url
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
            service = MaintenanceService(self.plant, self.nats_url, clock=lambda: datetime.now(UTC))
            await service.start()
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


def test_graphql_alerts_can_be_acknowledged_and_resolved(
    live: LiveApi, nats_server: NatsServer
) -> None:
    record = AnomalyRecord(
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
