"""The work order book: creation (by hand or by the policy), life cycle, numbering (pure).

Life cycle: ``scheduled`` → ``in_progress`` → ``completed`` / ``cancelled`` (a scheduled
order may also be completed or cancelled directly). Completed and cancelled orders are
final. Ids are ``WO-<year>-<month>-<NNNN>``, numbered per month of creation.

A predictive order is created when a prediction crosses the machine's policy
(:mod:`maintenance.policy`), once: not again while the machine has an open predictive
order. It carries the prediction, the failure mode, the catalogue's skills, parts,
duration and parts cost, and its latest safe finish (``due_by``: prediction time plus
the RUL interval's lower bound). A condition-based predictive order is created the same
way, once, when a condition sensor (vibration, temperature) is confirmed beyond its
critical limit (:func:`~maintenance.policy.condition_crossed`; ``source`` "condition"):
the RUL model can miss what the limit alarm sees, and such a reading is the classical
trigger of condition-based maintenance. It is due within the policy's horizon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from maintenance.alerts import failure_within
from maintenance.errors import Conflict, Invalid, NotFound
from maintenance.policy import condition_crossed, policy_crossed, task_for, urgency
from schemas.anomaly import AnomalyRecord
from schemas.common import ms_to_datetime
from schemas.maintenance import (
    CostEstimate,
    FailurePrediction,
    PartRequirement,
    Priority,
    Technician,
    WorkOrder,
    WorkOrderStatus,
    WorkOrderType,
)
from schemas.maintenance_api import UpdateWorkOrder, WorkOrderFilter, WorkOrderRequest
from schemas.plant import MachineSpec, Plant
from schemas.rul import RulPrediction

OPEN = (WorkOrderStatus.SCHEDULED, WorkOrderStatus.IN_PROGRESS)
_NEXT: dict[WorkOrderStatus, set[WorkOrderStatus]] = {
    WorkOrderStatus.SCHEDULED: {
        WorkOrderStatus.IN_PROGRESS,
        WorkOrderStatus.COMPLETED,
        WorkOrderStatus.CANCELLED,
    },
    WorkOrderStatus.IN_PROGRESS: {WorkOrderStatus.COMPLETED, WorkOrderStatus.CANCELLED},
    WorkOrderStatus.COMPLETED: set(),
    WorkOrderStatus.CANCELLED: set(),
}
_PRIORITIES = [Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL]
CONDITION_SOURCE = "condition"
"""``source`` of the orders a critical condition alarm created."""
_ID = re.compile(r"^WO-([0-9]{4})-([0-9]{2})-([0-9]+)$")


class WorkOrderBook:
    def __init__(self, plant: Plant, orders: Iterable[WorkOrder] = ()):
        self.plant = plant
        self.machines: dict[str, MachineSpec] = {m.id: m for m in plant.machines}
        self.technicians: dict[str, Technician] = {t.id: t for t in plant.technicians}
        self.orders: dict[str, WorkOrder] = {}
        self._last: dict[str, int] = {}
        for o in orders:
            self.keep(o)

    def keep(self, order: WorkOrder) -> WorkOrder:
        self.orders[order.workorder_id] = order
        m = _ID.match(order.workorder_id)
        if m:
            month = f"{m[1]}-{m[2]}"
            self._last[month] = max(self._last.get(month, 0), int(m[3]))
        return order

    def next_id(self, now: datetime) -> str:
        month = f"{now.year:04d}-{now.month:02d}"
        n = self._last.get(month, 0) + 1
        self._last[month] = n
        return f"WO-{month}-{n:04d}"

    def get(self, workorder_id: str) -> WorkOrder:
        order = self.orders.get(workorder_id)
        if order is None:
            raise NotFound(f"work order {workorder_id!r} does not exist", "workorder_id")
        return order

    def open_orders(self, machine_id: str | None = None) -> list[WorkOrder]:
        return [
            o
            for o in self.orders.values()
            if o.status in OPEN and (machine_id is None or o.asset_id == machine_id)
        ]

    def open_predictive(self, machine_id: str) -> WorkOrder | None:
        """The machine's open predictive order (there is at most one)."""
        return next(
            (o for o in self.open_orders(machine_id) if o.type is WorkOrderType.PREDICTIVE), None
        )

    # -- creation -----------------------------------------------------------------------

    def create(self, req: WorkOrderRequest, now: datetime, source: str = "manual") -> WorkOrder:
        spec = self.machines.get(req.asset_id)
        if spec is None:
            raise NotFound(f"asset {req.asset_id!r} does not exist", "asset_id")
        for i, dep in enumerate(req.after):
            if dep not in self.orders:
                raise Invalid(f"work order {dep!r} does not exist", f"after[{i}]")
        mode = req.failure_prediction.failure_mode if req.failure_prediction else None
        task = task_for(spec, mode) if mode or req.type is WorkOrderType.PREDICTIVE else None
        skills = (
            req.required_skills
            if req.required_skills is not None
            else (list(task.skills) if task else [])
        )
        if not self._qualified(skills, spec.site):
            raise Invalid(
                f"no technician at site {spec.site} has the skills {', '.join(skills)}",
                "required_skills",
            )
        if req.parts_required is not None:
            parts = req.parts_required
            parts_cost = task.parts_cost if task else 0.0
        else:
            parts = [PartRequirement(part_number=p) for p in (task.parts if task else [])]
            parts_cost = task.parts_cost if task else 0.0
        duration = req.estimated_duration_hours or (task.duration_hours if task else 2.0)
        due_by = None
        if req.failure_prediction is not None:
            due_by = now + timedelta(hours=req.failure_prediction.rul_hours)
        order = WorkOrder(
            workorder_id=self.next_id(now),
            asset_id=req.asset_id,
            type=req.type,
            priority=req.priority,
            title=req.title,
            description=req.description,
            not_before=req.scheduled_date,
            estimated_duration_hours=duration,
            required_skills=skills,
            parts_required=parts,
            parts_reserved=parts,
            failure_prediction=req.failure_prediction,
            failure_mode=mode,
            due_by=due_by,
            after=req.after,
            created_at=now,
            updated_at=now,
            source=source,
            estimated_cost=CostEstimate(
                labor=self._labor(skills, spec.site, duration), parts=parts_cost
            ),
        )
        return self.keep(order)

    def consider(self, p: RulPrediction, now: datetime) -> tuple[WorkOrder, bool] | None:
        """Apply a prediction: a new predictive order when it crosses the policy and the
        machine has none open (``(order, True)``); or the open one, not yet started, for
        the same failure mode, brought up to date: its latest safe finish, prediction and
        urgency follow the newest prediction (``(order, False)``). None: nothing changed."""
        spec = self.machines.get(p.machine_id)
        if spec is None:
            return None
        task = task_for(spec, p.failure_mode)
        predicted = ms_to_datetime(p.predicted_at)
        mode = p.failure_mode or task.failure_mode
        prob = failure_within(p, spec.policy.failure_within_hours)
        due_by = predicted + timedelta(hours=p.lower_hours)
        prediction = FailurePrediction(
            probability=prob, rul_hours=p.median_hours, failure_mode=mode
        )
        current = self.open_predictive(p.machine_id)
        if current is not None:
            if current.status is not WorkOrderStatus.SCHEDULED or current.failure_mode != mode:
                return None
            priority = max(current.priority, urgency(spec, p), key=_PRIORITIES.index)
            update = {"due_by": due_by, "failure_prediction": prediction, "priority": priority}
            if current.source == CONDITION_SOURCE:
                # A condition-based order keeps its own deadline: the model did not see
                # what the limit alarm saw; only a sooner prediction brings it forward.
                update["due_by"] = min(due_by, current.due_by or due_by)
            if all(getattr(current, k) == v for k, v in update.items()):
                return None
            return self.keep(current.model_copy(update={**update, "updated_at": now})), False
        reason = policy_crossed(spec, p)
        if reason is None:
            return None
        req = WorkOrderRequest(
            asset_id=p.machine_id,
            type=WorkOrderType.PREDICTIVE,
            priority=urgency(spec, p),
            title=f"Repair {mode.value.replace('_', ' ')} on {spec.name or spec.id}",
            description=(
                f"{reason} (model {p.model_version}, predicted "
                f"{predicted.isoformat(timespec='minutes')}; RUL {p.lower_hours:.0f}-"
                f"{p.upper_hours:.0f} h at {p.confidence:.0%})"
            ),
            failure_prediction=prediction,
        )
        order = self.create(req, now, source="policy")
        return self.keep(order.model_copy(update={"due_by": due_by})), True

    def consider_condition(
        self, anomaly: AnomalyRecord, latest: RulPrediction | None, now: datetime
    ) -> WorkOrder | None:
        """Apply a limit alarm: a new condition-based predictive order when it crosses the
        policy (:func:`~maintenance.policy.condition_crossed`) and the machine has no
        predictive order open. The failure mode is the latest prediction's (the
        catalogue's task for it), the urgency high, and the latest safe finish the policy's
        horizon (``failure_within_hours``) from now. None: nothing changed."""
        spec = self.machines.get(anomaly.machine_id)
        if spec is None:
            return None
        reason = condition_crossed(spec, anomaly)
        if reason is None or self.open_predictive(spec.id) is not None:
            return None
        prediction, what = None, ""
        if latest is not None and latest.failure_mode is not None:
            prediction = FailurePrediction(
                probability=failure_within(latest, spec.policy.failure_within_hours),
                rul_hours=latest.median_hours,
                failure_mode=latest.failure_mode,
            )
            what = f"and repair {latest.failure_mode.value.replace('_', ' ')} on "
        req = WorkOrderRequest(
            asset_id=spec.id,
            type=WorkOrderType.PREDICTIVE,
            priority=Priority.HIGH,
            title=f"Inspect {what}{spec.name or spec.id}",
            description=f"condition-based: {reason}",
            failure_prediction=prediction,
        )
        order = self.create(req, now, source=CONDITION_SOURCE)
        due_by = now + timedelta(hours=spec.policy.failure_within_hours)
        return self.keep(order.model_copy(update={"due_by": due_by}))

    def _candidates(self, skills: list[str], site: str) -> list[Technician]:
        return [
            t
            for t in self.technicians.values()
            if set(skills) <= set(t.skills) and t.site_id in (None, site)
        ]

    def _qualified(self, skills: list[str], site: str) -> bool:
        return bool(self._candidates(skills, site)) or not self.technicians

    def _labor(self, skills: list[str], site: str, hours: float) -> float:
        rates = [t.hourly_rate for t in self._candidates(skills, site)]
        return round(hours * (sum(rates) / len(rates)), 2) if rates else 0.0

    # -- changes ------------------------------------------------------------------------

    def update(self, change: UpdateWorkOrder, now: datetime) -> tuple[WorkOrder, bool]:
        """Apply a change; returns the order and whether it was just completed."""
        order = self.get(change.workorder_id)
        fields: dict[str, object] = {"updated_at": now}
        completed = False
        if change.status is not None and change.status is not order.status:
            if change.status not in _NEXT[order.status]:
                raise Conflict(
                    f"work order {order.workorder_id} is {order.status.value}; it cannot "
                    f"become {change.status.value}",
                    "status",
                )
            fields["status"] = change.status
            if change.status is WorkOrderStatus.COMPLETED:
                fields["completed_at"] = change.completed_at or now
                completed = True
        elif order.status not in OPEN and any(
            v is not None
            for v in (
                change.priority,
                change.title,
                change.assigned_technician_id,
                change.estimated_duration_hours,
            )
        ):
            raise Conflict(f"work order {order.workorder_id} is {order.status.value}", "status")
        if change.assigned_technician_id is not None:
            tech = self.technicians.get(change.assigned_technician_id)
            if tech is None:
                raise NotFound(
                    f"technician {change.assigned_technician_id!r} does not exist",
                    "assigned_technician_id",
                )
            missing = set(order.required_skills) - set(tech.skills)
            if missing:
                raise Invalid(
                    f"technician {tech.id} lacks the skills {', '.join(sorted(missing))}",
                    "assigned_technician_id",
                )
            spec = self.machines.get(order.asset_id)
            if spec is not None and tech.site_id not in (None, spec.site):
                raise Invalid(
                    f"technician {tech.id} works at site {tech.site_id}, not at "
                    f"{order.asset_id}'s site {spec.site}",
                    "assigned_technician_id",
                )
            fields["assigned_technician_id"] = tech.id
            fields["technician_pinned"] = True
        for name in ("priority", "title", "description", "estimated_duration_hours"):
            value = getattr(change, name)
            if value is not None:
                fields[name] = value
        updated = order.model_copy(update=fields)
        return self.keep(WorkOrder.model_validate(updated.model_dump())), completed

    def select(self, f: WorkOrderFilter) -> list[WorkOrder]:
        out = [
            o
            for o in self.orders.values()
            if (f.asset_id is None or o.asset_id == f.asset_id)
            and (not f.status or o.status in f.status)
            and (f.type is None or o.type is f.type)
            and (f.technician_id is None or o.assigned_technician_id == f.technician_id)
        ]
        out.sort(key=lambda o: o.workorder_id, reverse=True)
        return out[: f.limit]
