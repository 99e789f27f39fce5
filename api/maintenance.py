"""The API's client of the maintenance service, which is reached only over NATS
request/reply (:mod:`schemas.maintenance_api`), and the JSON shapes of its answers.

Each operation sends the JSON of its request model to ``tf.maintenance.<operation>`` and
reads ``{"ok": <result>}`` (validated into the schema's models) or ``{"error": {"code",
"message", "field"?}}``, raised as :class:`~api.errors.ApiError` with that status. No
responder, no answer within ``timeout_s`` or no NATS connection: 503 "maintenance service
unavailable".

The client also follows what the service publishes on every change of an alert
(``tf.event.alert.<id>``) and of a work order (``tf.event.workorder.<id>``) and hands it
to the GraphQL subscriptions through a :class:`~api.view.Broadcaster` (bounded queues: a
subscriber that falls behind loses its oldest updates, counted in ``dropped``). Topics:
``alert.*`` and ``alert.<machine>``; ``workorder.*`` and ``workorder.<asset>``.

>>> error_code(404), error_code(409), error_code(418)
('not_found', 'conflict', 'error')
>>> ApiError(422, "invalid_request", "x").status
422
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from api.auth import Principal
from api.errors import ApiError
from api.view import Broadcaster
from schemas import subjects
from schemas.alerts import Alert
from schemas.maintenance import Technician, WorkOrder
from schemas.maintenance_api import (
    AlarmKpis,
    AlertAction,
    AlertFilter,
    CreateWorkOrder,
    KpiRequest,
    MaintenancePlan,
    PlanCalendar,
    ScheduleRequest,
    ShelveAlert,
    UpdateWorkOrder,
    WorkOrderCreated,
    WorkOrderFilter,
)
from schemas.problems import first_problem

log = logging.getLogger("twinfleet.api")

UNAVAILABLE = "maintenance service unavailable"
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}
ALERT_ALL_TOPIC = "alert.*"
WORKORDER_ALL_TOPIC = "workorder.*"

M = TypeVar("M")
_WORK_ORDERS = TypeAdapter(list[WorkOrder])
_ALERTS = TypeAdapter(list[Alert])
_TEXT = TypeAdapter(str)


def error_code(status: int) -> str:
    """The API's error code for an HTTP status the service answered."""
    return ERROR_CODES.get(status, "error")


def unavailable() -> ApiError:
    return ApiError(503, "unavailable", UNAVAILABLE)


def invalid(exc: ValidationError, prefix: str = "") -> ApiError:
    """A 422 naming the first field pydantic refused (``prefix`` + its path)."""
    path, what = first_problem(exc)
    where = prefix + path
    return ApiError(422, "invalid_request", f"{where}: {what}", where or None)


def valid(model: type[M], prefix: str = "", **values: Any) -> M:
    """``model(**values)``, a refusal raised as a 422 :class:`ApiError`."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise invalid(exc, prefix) from None


class MaintenanceClient:
    """One per API replica, on the replica's NATS connection (``nc``; ``None``: every
    call answers 503)."""

    def __init__(self, nc: Any, timeout_s: float = 15.0, *, queue_size: int = 256) -> None:
        self.nc = nc
        self.timeout_s = timeout_s
        self.events = Broadcaster(queue_size)
        self.counters: Counter[str] = Counter()
        self._subs: list[Any] = []

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> MaintenanceClient:
        """Follow the alert and work-order events (core NATS: what happens from now on)."""
        if self.nc is not None and not self._subs:
            self._subs.append(await self.nc.subscribe(subjects.ALERT_ALL, cb=self._on_alert))
            self._subs.append(
                await self.nc.subscribe(subjects.WORKORDER_ALL, cb=self._on_workorder)
            )
        return self

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @property
    def dropped(self) -> int:
        return self.events.dropped

    async def _on_alert(self, msg: Any) -> None:
        try:
            alert = Alert.model_validate_json(msg.data)
        except ValueError:
            self.counters["bad_alert_events"] += 1
            return
        self.counters["alert_events"] += 1
        self.events.publish(ALERT_ALL_TOPIC, alert)
        self.events.publish(f"alert.{alert.machine_id}", alert)

    async def _on_workorder(self, msg: Any) -> None:
        try:
            order = WorkOrder.model_validate_json(msg.data)
        except ValueError:
            self.counters["bad_workorder_events"] += 1
            return
        self.counters["workorder_events"] += 1
        self.events.publish(WORKORDER_ALL_TOPIC, order)
        self.events.publish(f"workorder.{order.asset_id}", order)

    # -- request/reply --------------------------------------------------------------------
    async def call(self, operation: str, request: BaseModel) -> Any:
        """The ``ok`` of the service's reply to ``request`` on ``operation``."""
        nc = self.nc
        if nc is None or not nc.is_connected:
            self.counters["unavailable"] += 1
            raise unavailable()
        import nats.errors

        try:
            msg = await nc.request(
                subjects.maintenance(operation),
                request.model_dump_json().encode(),
                timeout=self.timeout_s,
            )
        except (TimeoutError, nats.errors.Error) as exc:
            self.counters["unavailable"] += 1
            log.warning("maintenance %s: no answer (%s)", operation, type(exc).__name__)
            raise unavailable() from None
        try:
            reply = json.loads(msg.data)
        except (ValueError, UnicodeDecodeError):
            reply = None
        if isinstance(reply, dict) and "ok" in reply:
            return reply["ok"]
        error = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(error, dict):
            try:
                status = int(error.get("code", 502))
            except (TypeError, ValueError):
                status = 502
            if not 400 <= status <= 599:
                status = 502
            field = error.get("field")
            raise ApiError(
                status,
                error_code(status),
                str(error.get("message") or "the maintenance service refused the request"),
                None if field is None else str(field),
            )
        raise self._bad_reply(operation, "neither ok nor error")

    def _bad_reply(self, operation: str, why: str) -> ApiError:
        self.counters["bad_replies"] += 1
        log.error("maintenance %s: unexpected reply (%s)", operation, why)
        return ApiError(502, "bad_gateway", f"the maintenance service answered {why}")

    async def _typed(self, operation: str, request: BaseModel, adapter: Any) -> Any:
        result = await self.call(operation, request)
        try:
            return adapter(result)
        except ValidationError as exc:
            where, what = first_problem(exc)
            why = f"an invalid result: {where}: {what}"
            raise self._bad_reply(operation, why) from None

    # -- operations -----------------------------------------------------------------------
    async def list_workorders(self, filter: WorkOrderFilter | None = None) -> list[WorkOrder]:
        result: list[WorkOrder] = await self._typed(
            "workorders.list", filter or WorkOrderFilter(), _WORK_ORDERS.validate_python
        )
        return result

    async def create_workorder(self, request: CreateWorkOrder) -> WorkOrderCreated:
        result: WorkOrderCreated = await self._typed(
            "workorders.create", request, WorkOrderCreated.model_validate
        )
        return result

    async def update_workorder(self, request: UpdateWorkOrder) -> WorkOrder:
        result: WorkOrder = await self._typed(
            "workorders.update", request, WorkOrder.model_validate
        )
        return result

    async def list_alerts(self, filter: AlertFilter | None = None) -> list[Alert]:
        result: list[Alert] = await self._typed(
            "alerts.list", filter or AlertFilter(), _ALERTS.validate_python
        )
        return result

    async def acknowledge_alert(self, action: AlertAction) -> Alert:
        result: Alert = await self._typed("alerts.acknowledge", action, Alert.model_validate)
        return result

    async def resolve_alert(self, action: AlertAction) -> Alert:
        result: Alert = await self._typed("alerts.resolve", action, Alert.model_validate)
        return result

    async def shelve_alert(self, request: ShelveAlert) -> Alert:
        result: Alert = await self._typed("alerts.shelve", request, Alert.model_validate)
        return result

    async def unshelve_alert(self, action: AlertAction) -> Alert:
        result: Alert = await self._typed("alerts.unshelve", action, Alert.model_validate)
        return result

    async def alarm_kpis(self, request: KpiRequest | None = None) -> AlarmKpis:
        result: AlarmKpis = await self._typed(
            "alerts.kpis", request or KpiRequest(), AlarmKpis.model_validate
        )
        return result

    async def schedule(self, request: ScheduleRequest | None = None) -> MaintenancePlan:
        result: MaintenancePlan = await self._typed(
            "schedule", request or ScheduleRequest(), MaintenancePlan.model_validate
        )
        return result

    async def replan(self, request: ScheduleRequest | None = None) -> MaintenancePlan:
        result: MaintenancePlan = await self._typed(
            "replan", request or ScheduleRequest(), MaintenancePlan.model_validate
        )
        return result

    async def calendar(self, request: ScheduleRequest | None = None) -> PlanCalendar:
        result: PlanCalendar = await self._typed(
            "calendar", request or ScheduleRequest(), PlanCalendar.model_validate
        )
        return result

    async def export_csv(self, filter: WorkOrderFilter | None = None) -> str:
        result: str = await self._typed(
            "export.csv", filter or WorkOrderFilter(), _TEXT.validate_python
        )
        return result


# -- the JSON shapes of the REST answers (shared/API.md) ---------------------------------------
def technician_doc(technician: Technician | None, technician_id: str | None) -> Any:
    """``{id, name, skills}``; only the id when the service did not say who it is."""
    if technician is not None:
        return {"id": technician.id, "name": technician.name, "skills": list(technician.skills)}
    if technician_id is not None:
        return {"id": technician_id, "name": None, "skills": []}
    return None


def workorder_doc(order: WorkOrder, technician: Technician | None = None) -> dict[str, Any]:
    """A work order as the API answers it: every field of :class:`WorkOrder`, with
    ``assigned_technician {id, name, skills}`` and ``estimated_cost.total``."""
    doc = order.model_dump(mode="json")
    doc["estimated_cost"]["total"] = order.estimated_cost.total
    doc["assigned_technician"] = technician_doc(technician, order.assigned_technician_id)
    return doc


def created_doc(created: WorkOrderCreated) -> dict[str, Any]:
    """The answer of ``POST /maintenance/workorders``."""
    doc = workorder_doc(created.work_order, created.technician)
    doc["created"] = created.created
    return doc


def alert_doc(alert: Alert) -> dict[str, Any]:
    return alert.model_dump(mode="json")


def plan_doc(plan: MaintenancePlan) -> dict[str, Any]:
    doc = plan.model_dump(mode="json")
    for work, item in zip(plan.scheduled, doc["scheduled"], strict=True):
        item["cost"]["total"] = work.cost.total
    return doc


async def replan_and_audit(services: Any, who: Principal, horizon_hours: float) -> MaintenancePlan:
    """Plan the open work orders again and commit it, then audit it: the one command
    behind ``POST /api/v1/maintenance/replan`` and the ``replan`` mutation."""
    from api import audit

    request = valid(ScheduleRequest, horizon_hours=horizon_hours, actor=who.subject)
    plan: MaintenancePlan = await services.require_maintenance().replan(request)
    await audit.record(
        services,
        who,
        "replan",
        None,
        {
            "horizon_hours": horizon_hours,
            "scheduled": len(plan.scheduled),
            "unscheduled": len(plan.unscheduled),
        },
    )
    return plan
