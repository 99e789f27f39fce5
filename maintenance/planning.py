"""From the books to the solver and back: open work orders and the plant's technicians
become :class:`~maintenance.schedule.Order` and :class:`~maintenance.schedule.Crew`, and
the solver's plan becomes a :class:`~schemas.maintenance_api.MaintenancePlan` and the
work orders' new dates and technicians (pure).

* A technician works only at their own site: the site is an extra skill of both.
* Orders in progress are not moved: their technician is busy until their scheduled end.
* An order's latest safe finish is its ``due_by``; its risk of failing before the repair
  comes from the machine's latest survival curve, conditioned on the time since that
  prediction; its failure and downtime costs from the machine type's policy.
* An order's ``not_before`` (a manual order's requested date) is its earliest start.
* An order without a prediction has no failure risk, but waiting has a cost, so the plan
  does it early rather than anywhere in the horizon: a corrective order (the machine is
  already impaired) costs its downtime rate per hour of waiting, others
  :data:`WAITING_COST_PER_H` by priority. That cost is reported as the order's risk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from maintenance.schedule import Crew, Order, Plan
from maintenance.shifts import shift_intervals
from schemas.common import ms_to_datetime
from schemas.maintenance import CostEstimate, WorkOrder, WorkOrderStatus, WorkOrderType
from schemas.maintenance_api import (
    MaintenancePlan,
    PlanCost,
    ScheduledWork,
    UnscheduledWork,
)
from schemas.plant import Plant
from schemas.rul import RulPrediction

WAITING_COST_PER_H = {"low": 1.0, "medium": 5.0, "high": 25.0, "critical": 100.0}


def _hours(t: datetime, start: datetime) -> float:
    return (t - start).total_seconds() / 3600


def failure_cdf(p: RulPrediction, start: datetime) -> tuple[tuple[float, float], ...]:
    """P(failed by ``start`` + h | running at ``start``), from the survival curve."""
    elapsed = max(_hours(start, ms_to_datetime(p.predicted_at)), 0.0)  # since the prediction
    curve = [(pt.hours, pt.survival_probability) for pt in p.survival_curve]
    if not curve:
        return ()
    s_now = _survival(curve, elapsed)
    if s_now <= 0:
        return ((0.0, 1.0),)
    return tuple((h - elapsed, min(max(1 - s / s_now, 0.0), 1.0)) for h, s in curve if h > elapsed)


def _survival(curve: list[tuple[float, float]], h: float) -> float:
    prev_h, prev_s = 0.0, 1.0
    for ch, cs in curve:
        if h <= ch:
            return prev_s if ch == prev_h else prev_s + (cs - prev_s) * (h - prev_h) / (ch - prev_h)
        prev_h, prev_s = ch, cs
    return prev_s


def crews(plant: Plant, start: datetime, horizon_h: float, busy: dict[str, float]) -> list[Crew]:
    """Every technician's shifts over the horizon (in their site's time zone), less the
    time ``busy`` (hours from ``start``) their work in progress still takes."""
    out = []
    sites = {s.id: s for s in plant.sites}
    for t in plant.technicians:
        tz = sites[t.site_id].timezone if t.site_id in sites else "UTC"
        shifts = shift_intervals(t.shift, tz, start, horizon_h)
        until = busy.get(t.id, 0.0)
        if until > 0:
            shifts = tuple((max(a, until), b) for a, b in shifts if b > until)
        where = [t.site_id] if t.site_id else list(sites)
        out.append(
            Crew(
                id=t.id,
                skills=frozenset(t.skills) | {f"site:{s}" for s in where},
                hourly_rate=t.hourly_rate,
                shifts=shifts,
            )
        )
    return out


def orders(
    plant: Plant,
    open_orders: Sequence[WorkOrder],
    predictions: dict[str, RulPrediction],
    start: datetime,
    horizon_h: float,
) -> tuple[list[Order], dict[str, float]]:
    """The orders to place, and how long (hours) each technician is still busy."""
    machines = {m.id: m for m in plant.machines}
    sites = {s.id: s for s in plant.sites}
    planned = {o.workorder_id for o in open_orders if o.status is WorkOrderStatus.SCHEDULED}
    busy: dict[str, float] = {}
    out = []
    for o in open_orders:
        if o.status is WorkOrderStatus.IN_PROGRESS:
            if o.assigned_technician_id and o.scheduled_end is not None:
                until = max(_hours(o.scheduled_end, start), 0.0)
                busy[o.assigned_technician_id] = max(busy.get(o.assigned_technician_id, 0), until)
            continue
        spec = machines[o.asset_id]
        windows = None
        if spec.maintenance_windows:
            tz = sites[spec.site].timezone
            windows = tuple(
                sorted(
                    iv
                    for w in spec.maintenance_windows
                    for iv in shift_intervals(w, tz, start, horizon_h)
                )
            )
        p = predictions.get(o.asset_id)
        if o.failure_prediction is not None and p is not None:
            failure_cost, cdf = spec.policy.failure_cost, failure_cdf(p, start)
        else:  # the cost of waiting, linear in the start time
            rate = (
                spec.policy.downtime_cost_per_hour
                if o.type is WorkOrderType.CORRECTIVE
                else WAITING_COST_PER_H[o.priority.value]
            )
            failure_cost, cdf = rate * horizon_h, ((horizon_h, 1.0),)
        out.append(
            Order(
                id=o.workorder_id,
                asset_id=o.asset_id,
                duration_h=o.estimated_duration_hours,
                skills=frozenset(o.required_skills) | {f"site:{spec.site}"},
                due_h=_hours(o.due_by, start) if o.due_by is not None else None,
                release_h=max(_hours(o.not_before, start), 0.0) if o.not_before else 0.0,
                windows=windows,
                after=tuple(a for a in o.after if a in planned),
                downtime_cost_per_h=spec.policy.downtime_cost_per_hour,
                failure_cost=failure_cost,
                failure_cdf=cdf,
                parts_cost=o.estimated_cost.parts,
                technician_id=o.assigned_technician_id if o.technician_pinned else None,
                priority=o.priority.value,
            )
        )
    return out, busy


def apply(
    plan: Plan,
    open_orders: Sequence[WorkOrder],
    start: datetime,
    horizon_h: float,
    now: datetime,
) -> tuple[MaintenancePlan, list[WorkOrder]]:
    """The plan as the API shows it, and the orders whose placement changed."""
    by_id = {o.workorder_id: o for o in open_orders}
    at = lambda h: start + timedelta(hours=h)  # noqa: E731
    scheduled, changed = [], []
    for p in plan.placements:
        o = by_id[p.order_id]
        cost = CostEstimate(
            labor=round(p.costs.labour, 2),
            parts=round(p.costs.parts, 2),
            downtime=round(p.costs.downtime, 2),
            risk=round(p.costs.risk, 2),
        )
        scheduled.append(
            ScheduledWork(
                workorder_id=o.workorder_id,
                asset_id=o.asset_id,
                technician_id=p.technician_id,
                start=at(p.start_h),
                end=at(p.end_h),
                due_by=o.due_by,
                cost=cost,
            )
        )
        new = {
            "scheduled_date": at(p.start_h),
            "scheduled_end": at(p.end_h),
            "assigned_technician_id": p.technician_id,
            "estimated_cost": cost,
            "unplaced_reason": None,
        }
        if any(getattr(o, k) != v for k, v in new.items()):
            changed.append(o.model_copy(update={**new, "updated_at": now}))
    unscheduled = []
    for u in plan.unplaced:
        o = by_id[u.order_id]
        unscheduled.append(
            UnscheduledWork(
                workorder_id=o.workorder_id, asset_id=o.asset_id, reason=u.reason, risk=u.risk
            )
        )
        if o.unplaced_reason != u.reason or o.scheduled_end is not None:
            changed.append(
                o.model_copy(
                    update={
                        "unplaced_reason": u.reason,
                        "scheduled_end": None,
                        "assigned_technician_id": o.assigned_technician_id
                        if o.technician_pinned
                        else None,
                        "updated_at": now,
                    }
                )
            )
    c = plan.costs
    view = MaintenancePlan(
        planned_at=now,
        start=start,
        horizon_hours=horizon_h,
        scheduled=sorted(scheduled, key=lambda s: (s.start, s.workorder_id)),
        unscheduled=unscheduled,
        cost=PlanCost(
            labor=round(c.labour, 2),
            parts=round(c.parts, 2),
            downtime=round(c.downtime, 2),
            risk=round(c.risk, 2),
            total=round(c.total, 2),
        ),
        status=plan.status,
        solver=plan.solver,
        solve_seconds=round(plan.solve_seconds, 3),
    )
    return view, changed
