"""The maintenance service: alerts, predictive work orders and the technicians' plan.

One service per plant (in ``twinfleet up``, the Ray actor :class:`MaintenanceActor`,
restarted by Ray). It

* consumes anomaly and RUL events from the ``EVENTS`` stream with durable pull consumers
  (``maintenance-anomaly``, ``maintenance-rul``), acknowledging each after its effects are
  stored; the last applied stream sequence of each is stored too, so a redelivered event
  is recognised and not applied twice;
* follows twin updates (``tf.twin.*``) for threshold and "no data" rules;
* keeps its alerts, work orders and each machine's latest RUL in the JetStream key-value
  bucket ``tf_maintenance`` (the durable state it reloads on start), and publishes every
  change on ``tf.event.alert.<id>`` / ``tf.event.workorder.<id>`` (stored by the history
  writer, followed by the API's subscriptions);
* notifies new and escalated alerts on ``tf.notify.alert`` and to the plant's webhook, and
  every work order change to the CMMS webhook (:mod:`maintenance.cmms`);
* answers the request/reply API of :mod:`schemas.maintenance_api` on
  ``tf.maintenance.>`` (queue group ``maintenance``);
* re-plans (CP-SAT, :mod:`maintenance.schedule`) when an order is created or changes,
  when a prediction moves an order's latest safe finish, and every ``replan_every_s``;
* on a completed work order, tells the machine's twin (``repairs``: in ``twinfleet up``,
  the fleet's host actor) so its wear for that failure mode starts again;
* on an anomaly alert marked false positive, tells the machine's twin
  (``false_positives``: the host actor's ``mark_false_positive``) so that the condition
  stops alarming; kept in the bucket (``fp.<alert id>``) and retried each tick until the
  twin has it, once. Other alerts marked false positive are only recorded (the
  ``alerts`` table): a threshold rule is the plant's own limit, "no data" is a fact about
  arrival, and a prediction's feedback is the training data of the RUL model;
* answers the alarm KPIs (:mod:`maintenance.kpis`) over a period, and over the alerts
  raised since it started in :meth:`MaintenanceService.status`.

Time is the plant's (:class:`maintenance.alerts.PlantClock`): the wall clock held back to
the data's time in a replay, so that raising, clearing, escalation, shelving and "no data"
run on the plant's minutes, not the replay's. Its offset is stored in the bucket
(``clock.offset``) so a restart keeps it. The clock is injectable (``clock``: a plain
clock replaces the plant clock, a :class:`PlantClock` over a test's wall clock keeps it) so
escalation is tested without sleeping; ``tick`` runs one round of the periodic work by
hand. The re-plan cadence (``replan_every_s``) counts wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import ray
from pydantic import BaseModel, ValidationError

from actors.bus import EVENTS, MAINTENANCE, ensure_bucket, ensure_jetstream
from actors.calendar import plan_calendar
from actors.notify import Webhook
from bus.connect import nats_url_on_node
from bus.fetch import fetch
from maintenance import cmms, planning
from maintenance.alerts import AlertBook, PlantClock, Raised
from maintenance.errors import Invalid, MaintenanceError
from maintenance.kpis import alarm_kpis
from maintenance.orders import WorkOrderBook
from maintenance.policy import condition_crossed
from maintenance.schedule import plan as solve
from schemas import subjects
from schemas.alerts import Alert, AlertRule, AlertStatus, RuleKind
from schemas.anomaly import AnomalyRecord, Severity
from schemas.common import datetime_to_ms
from schemas.maintenance import Priority, WorkOrder, WorkOrderStatus
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
from schemas.plant import Plant
from schemas.problems import first_problem
from schemas.rul import RulPrediction
from schemas.twin import TwinChanged

log = logging.getLogger("twinfleet.maintenance")

Repairs = Callable[[str, str | None, int], Awaitable[Any]]
FalsePositives = Callable[[str, str | None, int], Awaitable[Any]]
"""``(machine_id, sensor name or None, at_ms)``: tell the twin a condition was wrong."""
KPI_SPAN = timedelta(hours=24)
"""The alarm KPIs' default period: the day before now."""
SCHEDULE_RULE = AlertRule(id="schedule", kind=RuleKind.SCHEDULE, severity=Severity.HIGH)
"""Built in: an order the planner cannot place before its latest safe finish. High, not
critical: it is a consequence of the prediction that made the order (a failure likely
inside the repair lead time raises the critical ``failure-lead-time`` alert by itself) and
asks the planner, not the operator, to act (ISA-18.2: one critical alarm per abnormal
situation)."""


PREVIEW_TTL_S = 60.0
"""How long a preview of the plan over another horizon is answered again unchanged."""
MAX_PREVIEWS = 8
"""Previews kept at once (one per horizon)."""
PREVIEW_TIME_LIMIT_S = 2.0
"""A preview's solver time (one worker): a reader cannot take the planner's cores."""

MAX_DELIVERIES = 5
"""An event whose handling fails this many times goes to ``tf.dlq.maintenance``."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class MaintenanceService:
    def __init__(
        self,
        plant: Plant,
        nats_url: str,
        *,
        clock: Callable[[], datetime] | None = None,
        repairs: Repairs | None = None,
        false_positives: FalsePositives | None = None,
        tick_s: float = 5.0,
        plan_time_limit_s: float = 5.0,
        horizon_h: float = 168.0,
        replan_every_s: float = 900.0,
        keep_closed_days: float = 40.0,
    ):
        self.plant = plant
        self.nats_url = nats_url
        self.clock: Callable[[], datetime] = clock if clock is not None else PlantClock(utc_now)
        self.plant_clock = self.clock if isinstance(self.clock, PlantClock) else None
        self._wall = self.plant_clock.wall if self.plant_clock is not None else self.clock
        self.repairs = repairs
        self.false_positives = false_positives
        self.tick_s = tick_s
        self.plan_time_limit_s = plan_time_limit_s
        self.horizon_h = horizon_h
        self.replan_every_s = replan_every_s
        self.keep_closed_days = keep_closed_days
        self.alerts = AlertBook(plant)
        self.orders = WorkOrderBook(plant)
        self.predictions: dict[str, RulPrediction] = {}
        self.plan: MaintenancePlan | None = None
        self.counters: Counter[str] = Counter()
        self._seq: dict[str, int] = {"anomaly": 0, "rul": 0}
        self._lock = asyncio.Lock()
        self._preview_lock = asyncio.Lock()
        self._previews: dict[Any, tuple[datetime, MaintenancePlan]] = {}
        self._replan_due = False
        self._last_plan: datetime | None = None
        self._pending_repairs: dict[str, tuple[str, str | None, int]] = {}
        """Completed work orders whose repair the twin has not been told yet (also in the
        bucket under ``repair.<id>``, so a restart does not forget them)."""
        self._pending_feedback: dict[str, tuple[str, str | None, int]] = {}
        """Alerts marked false positive the twin has not been told yet (``fp.<id>``)."""
        self.last_feedback_refusal: str | None = None
        self._stored_offset: int | None = None
        self._since: datetime | None = None
        """The alarm KPIs of :meth:`status` count the alerts raised since then."""
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        self._nc: Any = None
        self._kv: Any = None
        self._js: Any = None
        self.alert_hook: Webhook | None = None
        self.cmms_hook: Webhook | None = None
        self.stopping = False

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> MaintenanceService:
        import nats

        self._nc = await nats.connect(
            nats_url_on_node(self.nats_url),  # the password is read on this node
            max_reconnect_attempts=-1,
            inbox_prefix=subjects.inbox("maintenance"),
        )
        self._js = self._nc.jetstream()
        await ensure_jetstream(self._js)
        self._kv = await ensure_bucket(self._js, MAINTENANCE)
        await self._load()
        if self.plant_clock is None or self.plant_clock.offset_ms is not None:
            self._since = self.clock()
        for rule in self.plant.alert_rules:
            advice = rule.advice()
            if advice:
                log.warning("alert rules: %s", advice)
        alerting = self.plant.alerting
        if alerting.webhook_url:
            self.alert_hook = Webhook(alerting.webhook_url, alerting.webhook_retries).start()
        if alerting.cmms_webhook_url:
            self.cmms_hook = Webhook(alerting.cmms_webhook_url, alerting.webhook_retries).start()
        self._subs.append(
            await self._nc.subscribe(
                f"{subjects.MAINTENANCE}.>", queue="maintenance", cb=self._on_request
            )
        )
        self._subs.append(await self._nc.subscribe(subjects.TWIN_ALL, cb=self._on_twin))
        for kind, subject in (("anomaly", subjects.ANOMALY_ALL), ("rul", subjects.RUL_ALL)):
            sub = await self._js.pull_subscribe(
                subject, durable=f"maintenance-{kind}", stream=EVENTS
            )
            self._subs.append(sub)
            self._tasks.append(asyncio.create_task(self._consume(kind, sub)))
        self._tasks.append(asyncio.create_task(self._ticking()))
        return self

    async def stop(self) -> None:
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for hook in (self.alert_hook, self.cmms_hook):
            if hook is not None:
                await hook.stop()
        if self._nc is not None:
            # Every JetStream publish was acknowledged already; flush the core ones. (No
            # drain: it waits 30 s on a pull subscription whose fetch was cancelled.)
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=5)
            await self._nc.close()

    async def _load(self) -> None:
        from nats.js.errors import NoKeysError

        try:
            keys = await self._kv.keys()
        except NoKeysError:
            keys = []
        alerts, orders = [], []
        for key in keys:
            entry = await self._kv.get(key)
            kind, _, name = key.partition(".")
            if kind == "alert":
                alerts.append(Alert.model_validate_json(entry.value))
            elif kind == "wo":
                orders.append(WorkOrder.model_validate_json(entry.value))
            elif kind == "rul":
                self.predictions[name] = RulPrediction.model_validate_json(entry.value)
            elif kind == "seq":
                self._seq[name] = int(entry.value)
            elif kind == "repair":
                machine, mode, at_ms = json.loads(entry.value)
                self._pending_repairs[name] = (machine, mode, int(at_ms))
            elif kind == "fp":
                machine, sensor, at_ms = json.loads(entry.value)
                self._pending_feedback[name] = (machine, sensor, int(at_ms))
            elif key == "clock.offset" and self.plant_clock is not None:
                self._stored_offset = int(entry.value)
                if self.plant_clock.offset_ms is None:
                    self.plant_clock.offset_ms = self._stored_offset
        self.alerts = AlertBook(self.plant, alerts)
        self.orders = WorkOrderBook(self.plant, orders)
        self._replan_due = bool(self.orders.open_orders())

    # -- storing and telling ---------------------------------------------------------------

    async def _save_alert(self, alert: Alert, event: str | None) -> Alert:
        alert = self.alerts.keep(alert.model_copy(update={"revision": alert.revision + 1}))
        data = alert.model_dump_json().encode()
        await self._kv.put(f"alert.{alert.alert_id}", data)
        msg_id = f"{alert.alert_id}:{alert.revision}"
        await self._js.publish(
            subjects.alert(alert.alert_id), data, headers={"Nats-Msg-Id": msg_id}
        )
        if event is not None:
            body = {"event": event, "alert": alert.model_dump(mode="json")}
            await self._nc.publish(subjects.NOTIFY_ALERT, json.dumps(body).encode())
            if self.alert_hook is not None:
                self.alert_hook.send(body, {"Idempotency-Key": msg_id})
            self.counters[f"alerts_{event}"] += 1
        return alert

    async def _raised(self, raised: list[Raised]) -> None:
        """Store each; notify the new ones, those whose severity went up (unless shelved)
        and those an observation returned to normal (data back, a prediction clear)."""
        for r in raised:
            event = None
            if r.new:
                event = "raised"
            elif r.alert.status.closed:
                event = "resolved"
            elif r.worse and not r.alert.shelved:
                event = "severity_raised"
            await self._save_alert(r.alert, event)
            if not r.new and not r.alert.status.closed:
                self.counters["alerts_repeated"] += 1

    async def _save_order(self, order: WorkOrder, event: str) -> WorkOrder:
        order = self.orders.keep(order.model_copy(update={"revision": order.revision + 1}))
        data = order.model_dump_json().encode()
        await self._kv.put(f"wo.{order.workorder_id}", data)
        key = cmms.idempotency_key(order)
        await self._js.publish(
            subjects.workorder(order.workorder_id), data, headers={"Nats-Msg-Id": key}
        )
        if self.cmms_hook is not None:
            self.cmms_hook.send(
                cmms.webhook_body(event, order, self._wall()), {"Idempotency-Key": key}
            )
        self.counters[f"workorders_{event}"] += 1
        return order

    # -- events ----------------------------------------------------------------------------

    async def _consume(self, kind: str, sub: Any) -> None:
        name = f"maintenance-{kind}"
        while not self.stopping:
            msgs = await fetch(sub, 100, 1.0, name=name, counters=self.counters, backoff_s=1.0)
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq <= self._seq[kind]:
                    self.counters["events_redelivered"] += 1
                    await msg.ack()
                    continue
                try:
                    async with self._lock:
                        await self._apply_event(kind, msg.data)
                        self._seq[kind] = seq
                        await self._kv.put(f"seq.{kind}", str(seq).encode())
                except Exception as exc:
                    # Not applied (the bucket unreachable...): JetStream delivers it again
                    # after the ack wait; one that keeps failing is set aside.
                    log.exception("maintenance %s event %d failed", kind, seq)
                    self.counters[f"{kind}_failed"] += 1
                    if msg.metadata.num_delivered < MAX_DELIVERIES:
                        await msg.nak(delay=1.0)
                        continue
                    await self._nc.publish(
                        subjects.dead_letter("maintenance"),
                        msg.data,
                        headers={"Tf-Reason": f"{kind} event failed: {exc!r}"[:1000]},
                    )
                await msg.ack()

    def _observe(self, data_ms: int | None) -> None:
        """An event's data time moves the plant clock (see :class:`PlantClock`)."""
        if self.plant_clock is None or data_ms is None:
            return
        self.plant_clock.observe(data_ms)
        if self._since is None and self.plant_clock.offset_ms is not None:
            self._since = self.clock()  # the data time of the first event

    async def _apply_event(self, kind: str, data: bytes) -> None:
        try:
            if kind == "anomaly":
                anomaly = AnomalyRecord.model_validate_json(data)
                self._observe(anomaly.timestamp)
                await self._on_anomaly(anomaly, self.clock())
            else:
                prediction = RulPrediction.model_validate_json(data)
                self._observe(prediction.predicted_at)
                await self._on_rul(prediction, self.clock())
            self.counters[f"{kind}_events"] += 1
        except ValidationError as exc:
            self.counters[f"{kind}_rejected"] += 1
            where, what = first_problem(exc)
            reason = f"{kind} event refused: {where}: {what}"
            log.warning(reason)
            await self._nc.publish(
                subjects.dead_letter("maintenance"),
                data,
                headers={"Tf-Reason": reason[:1000]},
            )

    async def _on_anomaly(self, anomaly: AnomalyRecord, now: datetime) -> None:
        """An anomaly: its alert, and a condition-based order when it calls for one; the
        alerts a condition raises point at the machine's predictive order."""
        raised = self.alerts.on_anomaly(anomaly, now)
        spec = self.orders.machines.get(anomaly.machine_id)
        if spec is not None and condition_crossed(spec, anomaly):
            latest = self.predictions.get(anomaly.machine_id)
            order = self.orders.consider_condition(anomaly, latest, now)
            if order is not None:
                await self._save_order(order, "created")
                self._replan_due = True
            else:
                order = self.orders.open_predictive(spec.id)
            if order is not None:
                raised = [
                    Raised(self.alerts.link(r.alert.alert_id, order.workorder_id), r.new)
                    for r in raised
                ]
        await self._raised(raised)

    async def _on_rul(self, p: RulPrediction, now: datetime) -> None:
        if p.machine_id not in self.orders.machines:
            self.counters["rul_unknown_machine"] += 1
            return
        self.predictions[p.machine_id] = p
        await self._kv.put(f"rul.{p.machine_id}", p.model_dump_json().encode())
        raised = self.alerts.on_rul(p, now)
        considered = self.orders.consider(p, now)
        if considered is not None:
            order, created = considered
            await self._save_order(order, "created" if created else "updated")
            self._replan_due = True
            # The alerts this prediction raised point at the order that answers them.
            raised = [
                Raised(self.alerts.link(r.alert.alert_id, order.workorder_id), r.new)
                for r in raised
            ]
        await self._raised(raised)

    async def _on_twin(self, msg: Any) -> None:
        """A twin applied readings (the compact event of the host actors)."""
        try:
            event = TwinChanged.model_validate_json(msg.data)
        except ValidationError:
            self.counters["twin_rejected"] += 1
            return
        async with self._lock:
            self._observe(event.last_update)
            await self._raised(self.alerts.on_twin(event, self.clock()))

    # -- periodic work ---------------------------------------------------------------------

    async def _ticking(self) -> None:
        while not self.stopping:
            try:
                await self.tick()
            except Exception:
                log.exception("maintenance tick failed")
                self.counters["tick_errors"] += 1
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        """One round: "no data" alerts, alerts back to normal, escalations, repairs not yet
        told to the twin, forgetting old closed records, and a re-plan when one is due."""
        now = self.clock()
        async with self._lock:
            await self._raised(self.alerts.check_no_data(now))
            for alert, active in self.alerts.unshelve_due(now):
                self.counters["shelves_expired"] += 1
                await self._save_alert(alert, "unshelved" if active else None)
            for alert in self.alerts.clear_quiet(now):
                await self._save_alert(alert, "resolved")
            for alert in self.alerts.escalate_due(now):
                await self._save_alert(alert, "escalated")
            await self._tell_repairs()
            await self._tell_false_positives()
            await self._prune(now)
            await self._store_clock()
            stale = self._last_plan is None or self._wall() - self._last_plan > timedelta(
                seconds=self.replan_every_s
            )
            if self._replan_due or (stale and self.orders.open_orders()):
                await self._replan(self.horizon_h)

    async def _tell_repairs(self) -> None:
        for workorder_id, (machine_id, mode, at_ms) in list(self._pending_repairs.items()):
            if self.repairs is not None:
                try:
                    await self.repairs(machine_id, mode, at_ms)
                except Exception as exc:  # the twin's host is restarting: at the next tick
                    log.warning("could not tell %s's twin about its repair: %s", machine_id, exc)
                    self.counters["repairs_retried"] += 1
                    continue
                self.counters["repairs_told"] += 1
            del self._pending_repairs[workorder_id]
            await self._kv.delete(f"repair.{workorder_id}")

    async def _tell_false_positives(self) -> None:
        """Tell the twins the conditions marked false positive; a host that is restarting
        is asked again at the next tick, one that refuses (an unknown machine or sensor, a
        twin without the method) is not asked again: logged and counted."""
        for alert_id, (machine_id, sensor, at_ms) in list(self._pending_feedback.items()):
            if self.false_positives is not None:
                try:
                    await self.false_positives(machine_id, sensor, at_ms)
                except (ValueError, KeyError, AttributeError, TypeError) as exc:
                    log.error(
                        "%s's twin refused the false positive of %s (%s): %s",
                        machine_id,
                        alert_id,
                        sensor,
                        exc,
                    )
                    self.counters["false_positives_refused"] += 1
                    self.last_feedback_refusal = f"{alert_id} on {machine_id}: {exc!r}"[:1000]
                except Exception as exc:  # the twin's host is restarting: at the next tick
                    log.warning(
                        "could not tell %s's twin about a false positive: %s", machine_id, exc
                    )
                    self.counters["false_positives_retried"] += 1
                    continue
                else:
                    self.counters["false_positives_told"] += 1
            del self._pending_feedback[alert_id]
            await self._kv.delete(f"fp.{alert_id}")

    async def _store_clock(self) -> None:
        """Keep the plant clock's offset in the bucket (when it moved)."""
        clock = self.plant_clock
        if (
            clock is not None
            and clock.offset_ms is not None
            and clock.offset_ms != self._stored_offset
        ):
            await self._kv.put("clock.offset", str(clock.offset_ms).encode())
            self._stored_offset = clock.offset_ms

    async def _prune(self, now: datetime) -> None:
        """Forget alerts and work orders closed more than ``keep_closed_days`` ago (they
        stay in PostgreSQL), so the bucket and the start-up load stay small. Longer than
        a month, so a month's work order numbers are never reused."""
        cut = now - timedelta(days=self.keep_closed_days)
        for alert in list(self.alerts.alerts.values()):
            if alert.status.closed and (alert.resolved_at or now) < cut:
                self.alerts.forget(alert.alert_id)
                await self._kv.delete(f"alert.{alert.alert_id}")
                self.counters["alerts_pruned"] += 1
        for order in list(self.orders.orders.values()):
            closed = order.status in (WorkOrderStatus.COMPLETED, WorkOrderStatus.CANCELLED)
            if closed and (order.updated_at or order.created_at) < cut:
                del self.orders.orders[order.workorder_id]
                await self._kv.delete(f"wo.{order.workorder_id}")
                self.counters["workorders_pruned"] += 1

    async def _solve(
        self, horizon_h: float, time_limit_s: float | None = None, workers: int = 2
    ) -> tuple[MaintenancePlan, list[WorkOrder], datetime]:
        """Plan every open order from the next whole minute: the plan, the orders whose
        placement it changes and the time it was made. Changes nothing."""
        limit = self.plan_time_limit_s if time_limit_s is None else time_limit_s
        now = self.clock()
        start = planning.next_minute(now)
        open_orders = self.orders.open_orders()
        orders, busy = planning.orders(self.plant, open_orders, self.predictions, start, horizon_h)
        crews = planning.crews(self.plant, start, horizon_h, busy)
        result = await asyncio.to_thread(solve, orders, crews, horizon_h, limit, workers)
        view, changed = planning.apply(result, open_orders, start, horizon_h, now)
        return view, changed, now

    async def _replan(self, horizon_h: float) -> MaintenancePlan:
        """Plan every open order and commit it: the orders' new dates, the "cannot be
        scheduled" alerts (call with the lock held)."""
        view, changed, now = await self._solve(horizon_h)
        for order in changed:
            self.orders.keep(order)
            await self._save_order(order, "scheduled")
        placed = {s.workorder_id for s in view.scheduled}
        for alert in list(self.alerts.alerts.values()):
            if (
                alert.rule_id == SCHEDULE_RULE.id
                and alert.workorder_id in placed
                and not alert.status.closed
            ):
                closed = self.alerts.resolve(alert.alert_id, "system", "now scheduled", now)
                await self._save_alert(closed, "resolved")
        for u in view.unscheduled:
            order = self.orders.get(u.workorder_id)
            if order.due_by is not None:
                message = f"{u.workorder_id} on {u.asset_id} cannot be scheduled: {u.reason}"
                r = self.alerts.raise_condition(
                    u.asset_id,
                    SCHEDULE_RULE,
                    u.workorder_id,
                    message,
                    now,
                    workorder_id=u.workorder_id,
                )
                await self._raised([r])
        self.plan = view
        self._last_plan = self._wall()
        self._replan_due = False
        self.counters["replans"] += 1
        return view

    # -- requests --------------------------------------------------------------------------

    async def _on_request(self, msg: Any) -> None:
        operation = msg.subject[len(subjects.MAINTENANCE) + 1 :]
        try:
            handler = self._handlers.get(operation)
            if handler is None:
                raise Invalid(f"unknown operation {operation!r}", "operation")
            model, method = handler
            try:
                request = model.model_validate_json(msg.data or b"{}")
            except ValidationError as exc:
                field, what = first_problem(exc)
                raise Invalid(f"{field}: {what}", field) from None
            result = await method(self, request)
            reply: dict[str, Any] = {"ok": _jsonable(result)}
            self.counters[f"requests_{operation}"] += 1
        except MaintenanceError as exc:
            self.counters["requests_refused"] += 1
            reply = exc.as_reply()
        except Exception as exc:  # never crash the service on one request
            log.exception("maintenance request %s failed", operation)
            self.counters["requests_failed"] += 1
            reply = {"error": {"code": 500, "message": f"internal error: {type(exc).__name__}"}}
        if msg.reply:
            await msg.respond(json.dumps(reply).encode())

    async def list_orders(self, f: WorkOrderFilter) -> list[WorkOrder]:
        return self.orders.select(f)

    async def create_order(self, req: CreateWorkOrder) -> WorkOrderCreated:
        async with self._lock:
            now = self.clock()
            key = None
            if req.idempotency_key is not None:
                digest = hashlib.sha256(f"{req.actor}\0{req.idempotency_key}".encode()).hexdigest()[
                    :40
                ]
                key = f"idem.{digest}"
                from nats.js.errors import KeyNotFoundError

                try:
                    earlier = (await self._kv.get(key)).value.decode()
                except KeyNotFoundError:
                    earlier = None
                if earlier is not None:
                    order = self.orders.get(earlier)
                    return self._created(order, created=False)
            order = self.orders.create(req.request, now)
            await self._save_order(order, "created")
            if key is not None:
                await self._kv.put(key, order.workorder_id.encode())
            await self._replan(self.horizon_h)
            return self._created(self.orders.get(order.workorder_id), created=True)

    def _created(self, order: WorkOrder, created: bool) -> WorkOrderCreated:
        tech = self.orders.technicians.get(order.assigned_technician_id or "")
        return WorkOrderCreated(work_order=order, technician=tech, created=created)

    async def update_order(self, change: UpdateWorkOrder) -> WorkOrder:
        async with self._lock:
            now = self.clock()
            order, completed = self.orders.update(change, now)
            await self._save_order(order, "updated")
            if completed:
                at = order.completed_at or now
                repair = (
                    order.asset_id,
                    order.failure_mode.value if order.failure_mode else None,
                    datetime_to_ms(at),
                )
                self._pending_repairs[order.workorder_id] = repair
                await self._kv.put(f"repair.{order.workorder_id}", json.dumps(repair).encode())
                await self._tell_repairs()
                for alert in list(self.alerts.alerts.values()):
                    if alert.workorder_id == order.workorder_id and not alert.status.closed:
                        closed = self.alerts.resolve(
                            alert.alert_id, change.actor, f"{order.workorder_id} completed", now
                        )
                        await self._save_alert(closed, "resolved")
            if (
                order.status in (WorkOrderStatus.SCHEDULED,)
                or completed
                or (order.status is WorkOrderStatus.CANCELLED)
            ):
                self._replan_due = True
            if change.priority in (Priority.CRITICAL, Priority.HIGH):
                await self._replan(self.horizon_h)
            return self.orders.get(order.workorder_id)

    async def list_alerts(self, f: AlertFilter) -> list[Alert]:
        return self.alerts.select(f)

    async def acknowledge(self, a: AlertAction) -> Alert:
        async with self._lock:
            alert = self.alerts.acknowledge(a.alert_id, a.actor, a.note, self.clock())
            return await self._save_alert(alert, "acknowledged")

    async def resolve(self, a: AlertAction) -> Alert:
        async with self._lock:
            alert = self.alerts.resolve(
                a.alert_id, a.actor, a.note, self.clock(), false_positive=a.false_positive
            )
            false = alert.status is AlertStatus.FALSE_POSITIVE
            alert = await self._save_alert(alert, "false_positive" if false else "resolved")
            if false:
                await self._feedback(alert)
            return alert

    async def _feedback(self, alert: Alert) -> None:
        """An anomaly alert marked false positive goes to the machine's twin: the sensor's
        short name (None for a machine-level condition) and when it was marked."""
        if alert.kind is not RuleKind.ANOMALY:
            self.counters["false_positives_recorded_only"] += 1
            return
        sensor = None if alert.subject in ("", "machine") else alert.subject
        at = alert.resolved_at or self.clock()
        feedback = (alert.machine_id, sensor, datetime_to_ms(at))
        self._pending_feedback[alert.alert_id] = feedback
        await self._kv.put(f"fp.{alert.alert_id}", json.dumps(feedback).encode())
        await self._tell_false_positives()

    async def shelve(self, s: ShelveAlert) -> Alert:
        async with self._lock:
            alert = self.alerts.shelve(s.alert_id, s.actor, s.reason, s.minutes, self.clock())
            return await self._save_alert(alert, "shelved")

    async def unshelve(self, a: AlertAction) -> Alert:
        async with self._lock:
            alert = self.alerts.unshelve(a.alert_id, a.actor, a.note, self.clock())
            return await self._save_alert(alert, "unshelved")

    def kpis(self, start: datetime | None = None, end: datetime | None = None) -> AlarmKpis:
        """The alarm KPIs over ``[start, end)`` (default: the day before the plant's now)
        of the alerts the service holds (closed ones for ``keep_closed_days``)."""
        end = end if end is not None else self.clock()
        start = start if start is not None else end - KPI_SPAN
        site_of = {m.id: m.site for m in self.plant.machines}
        return alarm_kpis(self.alerts.alerts.values(), site_of, start, end)

    async def alarm_kpis(self, r: KpiRequest) -> AlarmKpis:
        end = r.end if r.end is not None else self.clock()
        start = r.start if r.start is not None else end - KPI_SPAN
        if start >= end:
            raise Invalid(
                f"start ({start.isoformat()}) must be before end ({end.isoformat()})", "start"
            )
        if end - start > timedelta(days=self.keep_closed_days):
            raise Invalid(
                f"the period is at most {self.keep_closed_days:g} days (what the service "
                "keeps of closed alerts)",
                "start",
            )
        return self.kpis(start, end)

    async def schedule(self, r: ScheduleRequest) -> MaintenancePlan:
        """The current plan; over another horizon (or before the first plan), a preview
        that is not committed: reading the schedule never moves an order or raises an
        alert (that is :meth:`replan`). Previews are solved one at a time and kept while
        nothing they depend on changes (:data:`PREVIEW_TTL_S` at most)."""
        if self.plan is not None and self.plan.horizon_hours == r.horizon_hours:
            return self.plan
        async with self._preview_lock:
            key = (
                r.horizon_hours,
                self._last_plan,
                tuple((o.workorder_id, o.revision) for o in self.orders.open_orders()),
                max((p.predicted_at for p in self.predictions.values()), default=0),
            )
            wall = self._wall()
            kept = self._previews.get(key)
            if kept is not None and (wall - kept[0]).total_seconds() < PREVIEW_TTL_S:
                return kept[1]
            view, _changed, _now = await self._solve(
                r.horizon_hours, min(self.plan_time_limit_s, PREVIEW_TIME_LIMIT_S), workers=1
            )
            self._previews = {k: v for k, v in self._previews.items() if k[1:] == key[1:]}
            if len(self._previews) >= MAX_PREVIEWS:
                self._previews.pop(next(iter(self._previews)))
            self._previews[key] = (wall, view)
            self.counters["schedule_previews"] += 1
            return view

    async def replan(self, r: ScheduleRequest) -> MaintenancePlan:
        async with self._lock:
            return await self._replan(r.horizon_hours)

    async def export_csv(self, f: WorkOrderFilter) -> str:
        return cmms.to_csv(self.orders.select(f))

    async def calendar(self, r: ScheduleRequest) -> PlanCalendar:
        """The shifts and windows over the horizon of the current plan (from its start),
        else from the next minute."""
        plan = self.plan
        if plan is not None and plan.horizon_hours == r.horizon_hours:
            start = plan.start
        else:
            start = planning.next_minute(self.clock())
        return plan_calendar(self.plant, start, r.horizon_hours)

    _handlers: ClassVar[dict[str, tuple[type[BaseModel], Callable[..., Awaitable[Any]]]]] = {
        "workorders.list": (WorkOrderFilter, list_orders),
        "workorders.create": (CreateWorkOrder, create_order),
        "workorders.update": (UpdateWorkOrder, update_order),
        "alerts.list": (AlertFilter, list_alerts),
        "alerts.acknowledge": (AlertAction, acknowledge),
        "alerts.resolve": (AlertAction, resolve),
        "alerts.shelve": (ShelveAlert, shelve),
        "alerts.unshelve": (AlertAction, unshelve),
        "alerts.kpis": (KpiRequest, alarm_kpis),
        "schedule": (ScheduleRequest, schedule),
        "replan": (ScheduleRequest, replan),
        "export.csv": (WorkOrderFilter, export_csv),
        "calendar": (ScheduleRequest, calendar),
    }

    async def status(self) -> dict[str, Any]:
        """Counts, the next scheduled work, what could not be scheduled, the plan's cost,
        the alarm KPIs of the alerts raised since the service started (``alarm_kpis``, and
        as text ``alarm_kpis_text``), the plant clock and advice on the alert rules."""
        open_alerts = [a for a in self.alerts.alerts.values() if not a.status.closed]
        plan = self.plan
        titles = {o.workorder_id: o.title for o in self.orders.orders.values()}
        now = self.clock()
        since = self._since if self._since is not None else now
        kpis = self.kpis(since, now) if since < now else None
        clock = self.plant_clock
        return {
            "open_alerts": len(open_alerts),
            "critical_alerts": sum(a.severity is Severity.CRITICAL for a in open_alerts),
            "shelved_alerts": sum(a.shelved for a in open_alerts),
            "plant_time": now.isoformat(),
            "plant_clock_offset_s": (
                None if clock is None or clock.offset_ms is None else min(clock.offset_ms, 0) / 1000
            ),
            "alarm_kpis": kpis.model_dump(mode="json") if kpis else None,
            "alarm_kpis_text": kpis.lines() if kpis else [],
            "rule_advice": [a for r in self.plant.alert_rules if (a := r.advice())],
            "last_feedback_refusal": self.last_feedback_refusal,
            "open_work_orders": len(self.orders.open_orders()),
            "unscheduled": len(plan.unscheduled) if plan else 0,
            "next": [
                {**s.model_dump(mode="json"), "title": titles.get(s.workorder_id, "")}
                for s in (plan.scheduled if plan else [])
            ],
            "unscheduled_orders": [u.model_dump(mode="json") for u in plan.unscheduled]
            if plan
            else [],
            "plan_cost": plan.cost.model_dump() if plan else None,
            "plan_status": plan.status if plan else None,
            "solver": plan.solver if plan else None,
            "solve_seconds": plan.solve_seconds if plan else 0.0,
            "counters": dict(self.counters),
        }


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [_jsonable(r) for r in result]
    return result


def fleet_false_positives(access: Any) -> FalsePositives:
    """Tell a false positive to the machine's host actor (``access``: an
    :class:`actors.access.FleetAccess`), whose ``mark_false_positive`` writes the twin's state
    and checkpoint. An actor Ray cannot find now (the registry or the host restarting) is a
    ``ConnectionError``, retried, not a refusal."""

    async def false_positive(machine_id: str, sensor: str | None, at_ms: int) -> str:
        try:
            host = await access.host_of(machine_id)
        except ValueError as exc:  # ray.get_actor: no such actor (yet)
            raise ConnectionError(str(exc)) from exc
        return str(await host.mark_false_positive.remote(machine_id, sensor, at_ms))

    return false_positive


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class MaintenanceActor:
    """The service in ``twinfleet up``: it tells completed repairs to the fleet's twins;
    if its process dies, Ray starts it again and it reloads its state from the key-value
    bucket and resumes its durable consumers."""

    def __init__(self, plant_json: str, nats_url: str, fleet_name: str = "plant"):
        from actors.access import FleetAccess

        access = FleetAccess(fleet_name)
        self.service = MaintenanceService(
            Plant.model_validate_json(plant_json),
            nats_url,
            repairs=access.record_repair,
            false_positives=fleet_false_positives(access),
        )
        self.started: asyncio.Task[MaintenanceService] | None = None

    async def start(self) -> bool:
        if self.started is None:
            self.started = asyncio.create_task(self.service.start())
        await self.started
        return True

    async def status(self) -> dict[str, Any]:
        await self.start()
        return await self.service.status()

    async def replan(self) -> dict[str, Any]:
        await self.start()
        plan = await self.service.replan(ScheduleRequest())
        return plan.model_dump(mode="json")

    async def stop(self) -> None:
        await self.service.stop()
