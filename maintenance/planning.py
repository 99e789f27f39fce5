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

import math
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from maintenance.schedule import Crew, Order, Plan, failure_probability
from maintenance.shifts import shift_hours, shift_intervals
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


def next_minute(t: datetime) -> datetime:
    """The plan's start: the solver counts whole minutes from it, so a shift that starts
    on the hour keeps its full length (from 20:50:13.1, an 8 h shift would be 479 minutes).

    >>> from datetime import UTC
    >>> next_minute(datetime(2026, 11, 29, 20, 50, 13, tzinfo=UTC)).time()
    datetime.time(20, 51)
    >>> next_minute(datetime(2026, 11, 29, 20, 50, tzinfo=UTC)).time()
    datetime.time(20, 50)
    """
    whole = t.replace(second=0, microsecond=0)
    return whole if whole == t else whole + timedelta(minutes=1)


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
    return 1.0 - failure_probability([(ch, 1.0 - cs) for ch, cs in curve], h)


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
    """The orders to place (a job longer than the longest shift at its site as that many
    visits, see :func:`visits`), and how long (hours) each technician is still busy."""
    machines = {m.id: m for m in plant.machines}
    sites = {s.id: s for s in plant.sites}
    longest = _longest_shift(plant)
    parts = {
        o.workorder_id: visits(o.estimated_duration_hours, longest.get(machines[o.asset_id].site))
        for o in open_orders
        if o.status is WorkOrderStatus.SCHEDULED
    }
    busy: dict[str, float] = {}
    # work in progress is not placed again: an order waiting for it starts after its end
    ending = {
        o.workorder_id: max(_hours(o.scheduled_end, start), 0.0)
        for o in open_orders
        if o.status is WorkOrderStatus.IN_PROGRESS and o.scheduled_end is not None
    }
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
        n = parts[o.workorder_id]
        release = max(_hours(o.not_before, start), 0.0) if o.not_before else 0.0
        release = max([release, *(ending[a] for a in o.after if a in ending)])
        for k in range(1, n + 1):
            first = k == 1
            out.append(
                Order(
                    id=visit_id(o.workorder_id, k, n),
                    asset_id=o.asset_id,
                    duration_h=o.estimated_duration_hours / n,
                    skills=frozenset(o.required_skills) | {f"site:{spec.site}"},
                    due_h=_hours(o.due_by, start) if o.due_by is not None else None,
                    release_h=release,
                    windows=windows,
                    after=tuple(visit_id(a, parts[a], parts[a]) for a in o.after if a in parts)
                    if first
                    else (visit_id(o.workorder_id, k - 1, n),),
                    downtime_cost_per_h=spec.policy.downtime_cost_per_hour,
                    failure_cost=failure_cost if first else 0.0,
                    failure_cdf=cdf if first else (),
                    parts_cost=o.estimated_cost.parts if first else 0.0,
                    technician_id=o.assigned_technician_id if o.technician_pinned else None,
                    priority=o.priority.value,
                )
            )
    return out, busy


def _longest_shift(plant: Plant) -> dict[str, float]:
    """The longest shift (hours) of any technician at each site."""
    out: dict[str, float] = {}
    for t in plant.technicians:
        hours = shift_hours(t.shift)
        for site in [t.site_id] if t.site_id else [s.id for s in plant.sites]:
            out[site] = max(out.get(site, 0.0), hours)
    return out


def visits(duration_h: float, longest_shift_h: float | None) -> int:
    """How many visits a job takes: one, or as many equal ones as needed for each to fit
    the site's longest shift (a 16 h rewind is two 8 h visits, one after the other; the
    machine stays stopped in between, which the downtime cost does not count).

    >>> visits(6, 8), visits(16, 8), visits(17, 8), visits(16, None)
    (1, 2, 3, 1)
    """
    if not longest_shift_h or duration_h <= longest_shift_h:
        return 1
    return math.ceil(duration_h / longest_shift_h - 1e-9)


_VISIT = re.compile(r"(WO-[0-9]{4}-[0-9]{2}-[0-9]+)/[0-9]+")


def visit_id(workorder_id: str, k: int, n: int) -> str:
    return workorder_id if n == 1 else f"{workorder_id}/{k}"


def _workorder_of(order_id: str) -> str:
    return order_id.split("/", 1)[0]


def apply(
    plan: Plan,
    open_orders: Sequence[WorkOrder],
    start: datetime,
    horizon_h: float,
    now: datetime,
) -> tuple[MaintenancePlan, list[WorkOrder]]:
    """The plan as the API shows it (one line per visit), and the orders whose placement
    changed. An order is placed when all its visits are; otherwise it is unscheduled
    with the reason of its first unplaced visit."""
    by_id = {o.workorder_id: o for o in open_orders}
    at = lambda h: start + timedelta(hours=h)  # noqa: E731
    placed: dict[str, list[Any]] = {}
    for p in plan.placements:
        placed.setdefault(_workorder_of(p.order_id), []).append(p)
    missing: dict[str, Any] = {}
    for u in plan.unplaced:
        wo = _workorder_of(u.order_id)
        if wo not in missing:
            missing[wo] = u
    scheduled, unscheduled, changed = [], [], []
    totals = PlanCost()
    for wo, visits_ in placed.items():
        if wo in missing:
            continue
        o = by_id[wo]
        visits_.sort(key=lambda p: p.start_h)
        cost = _sum_costs([p.costs for p in visits_])
        for p in visits_:
            scheduled.append(
                ScheduledWork(
                    workorder_id=wo,
                    asset_id=o.asset_id,
                    technician_id=p.technician_id,
                    start=at(p.start_h),
                    end=at(p.end_h),
                    due_by=o.due_by,
                    cost=_estimate(p.costs),
                )
            )
        new = {
            "scheduled_date": at(visits_[0].start_h),
            "scheduled_end": at(visits_[-1].end_h),
            "assigned_technician_id": visits_[0].technician_id,
            "estimated_cost": cost,
            "unplaced_reason": None,
        }
        totals = _add(totals, cost)
        if any(getattr(o, k) != v for k, v in new.items()):
            changed.append(o.model_copy(update={**new, "updated_at": now}))
    ids = [p.order_id for p in plan.placements] + [u.order_id for u in plan.unplaced]
    visit_count = Counter(_workorder_of(i) for i in ids)
    for wo, u in missing.items():
        o = by_id[wo]
        n = visit_count[wo]
        said = _VISIT.sub(r"\1", u.reason)  # "waits for WO-…/2": the order, not its visit
        reason = said if n == 1 else f"visit {u.order_id.split('/')[1]} of {n}: {said}"
        unscheduled.append(
            UnscheduledWork(
                workorder_id=wo, asset_id=o.asset_id, reason=reason, risk=round(u.risk, 2)
            )
        )
        deferred = getattr(u, "costs", None)
        totals = _add(
            totals, _estimate(deferred) if deferred is not None else CostEstimate(risk=u.risk)
        )
        if o.unplaced_reason != reason or o.scheduled_end is not None:
            changed.append(
                o.model_copy(
                    update={
                        "unplaced_reason": reason,
                        "scheduled_date": None,
                        "scheduled_end": None,
                        "assigned_technician_id": o.assigned_technician_id
                        if o.technician_pinned
                        else None,
                        "updated_at": now,
                    }
                )
            )
    view = MaintenancePlan(
        planned_at=now,
        start=start,
        horizon_hours=horizon_h,
        scheduled=sorted(scheduled, key=lambda s: (s.start, s.workorder_id)),
        unscheduled=unscheduled,
        cost=totals,
        status=plan.status,
        solver=plan.solver,
        solve_seconds=round(plan.solve_seconds, 3),
    )
    return view, changed


def _estimate(c: Any) -> CostEstimate:
    return CostEstimate(
        labor=round(c.labour, 2),
        parts=round(c.parts, 2),
        downtime=round(c.downtime, 2),
        risk=round(c.risk, 2),
    )


def _sum_costs(costs: list[Any]) -> CostEstimate:
    return CostEstimate(
        labor=round(sum(c.labour for c in costs), 2),
        parts=round(sum(c.parts for c in costs), 2),
        downtime=round(sum(c.downtime for c in costs), 2),
        risk=round(sum(c.risk for c in costs), 2),
    )


def _add(total: PlanCost, c: CostEstimate) -> PlanCost:
    labor, parts = total.labor + c.labor, total.parts + c.parts
    downtime, risk = total.downtime + c.downtime, total.risk + c.risk
    return PlanCost(
        labor=round(labor, 2),
        parts=round(parts, 2),
        downtime=round(downtime, 2),
        risk=round(risk, 2),
        total=round(labor + parts + downtime + risk, 2),
    )
