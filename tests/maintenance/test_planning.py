"""From the books to the solver and back (pure, no servers, no solver): technicians'
shifts as crews, open work orders as the solver's orders (visits, dependencies, windows,
risk), failure curves conditioned on the time since the prediction, and a plan turned
back into the API's view and the orders whose placement changed. Values by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maintenance.planning import (
    WAITING_COST_PER_H,
    apply,
    crews,
    failure_cdf,
    next_minute,
    orders,
    visit_id,
    visits,
)
from maintenance.schedule import Costs, Crew, Order, Placement, Plan, Unplaced
from schemas.common import datetime_to_ms
from schemas.maintenance import CostEstimate, WorkOrder, WorkOrderStatus
from schemas.maintenance_api import PlanCost, ScheduledWork, UnscheduledWork
from schemas.plant import Plant, parse_plant
from schemas.rul import RulPrediction, SurvivalPoint

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; Berlin is at +01:00
NOW = START - timedelta(seconds=30)
HORIZON = 48.0
S = WorkOrderStatus


@cache
def plant() -> Plant:
    """North (UTC): P-1 on L1, stoppable 10:00-12:00 Monday and Tuesday; P-2 on L2. East
    (Berlin): E-1. T-1 works 06-14 weekdays at north, T-2 the Monday night at north, T-3
    06-10 weekdays wherever needed, T-4 06-16 weekdays at east."""
    return parse_plant(
        {
            "name": "planning-test",
            "machine_types": {
                "pump": {
                    "kind": "pump",
                    "sensors": [{"name": "vibration", "kind": "vibration", "unit": "mm/s"}],
                    "policy": {"failure_cost": 20000, "downtime_cost_per_hour": 800},
                }
            },
            "sites": [
                {
                    "id": "north",
                    "lines": [
                        {
                            "id": "L1",
                            "maintenance_windows": [
                                {"start": "10:00", "end": "12:00", "days": [0, 1]}
                            ],
                            "machines": [{"id": "P-1", "type": "pump"}],
                        },
                        {"id": "L2", "machines": [{"id": "P-2", "type": "pump"}]},
                    ],
                },
                {
                    "id": "east",
                    "timezone": "Europe/Berlin",
                    "lines": [{"id": "E1", "machines": [{"id": "E-1", "type": "pump"}]}],
                },
            ],
            "technicians": [
                {
                    "id": "T-1",
                    "name": "Ann",
                    "skills": ["mechanical"],
                    "site_id": "north",
                    "hourly_rate": 50,
                },
                {
                    "id": "T-2",
                    "name": "Bob",
                    "skills": ["mechanical"],
                    "site_id": "north",
                    "hourly_rate": 60,
                    "shift": {"start": "22:00", "end": "06:00", "days": [0]},
                },
                {
                    "id": "T-3",
                    "name": "Cy",
                    "skills": ["electrical"],
                    "hourly_rate": 90,
                    "shift": {"start": "06:00", "end": "10:00"},
                },
                {
                    "id": "T-4",
                    "name": "Di",
                    "skills": ["mechanical"],
                    "site_id": "east",
                    "hourly_rate": 70,
                    "shift": {"start": "06:00", "end": "16:00"},
                },
            ],
        }
    )


def work_order(n: int, asset: str = "P-1", **fields: object) -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "workorder_id": f"WO-2026-01-{n:04d}",
            "asset_id": asset,
            "type": "corrective",
            "title": f"order {n}",
            "created_at": START - timedelta(days=1),
            "required_skills": ["mechanical"],
            **fields,
        }
    )


def prediction(
    curve: list[tuple[float, float]], at: datetime = START, machine: str = "E-1"
) -> RulPrediction:
    return RulPrediction(
        machine_id=machine,
        median_hours=100,
        lower_hours=50,
        upper_hours=200,
        survival_curve=[SurvivalPoint(hours=h, survival_probability=s) for h, s in curve],
        failure_probability={24: 0.1, 72: 0.3, 168: 0.6, 336: 0.8, 720: 0.9},
        model_version="v1",
        predicted_at=datetime_to_ms(at),
    )


# -- small helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "want"),
    [
        (
            datetime(2026, 1, 5, 20, 50, 13, 100_000, tzinfo=UTC),
            datetime(2026, 1, 5, 20, 51, tzinfo=UTC),
        ),
        (datetime(2026, 1, 5, 20, 50, 0, 1, tzinfo=UTC), datetime(2026, 1, 5, 20, 51, tzinfo=UTC)),
        (datetime(2026, 1, 5, 20, 50, tzinfo=UTC), datetime(2026, 1, 5, 20, 50, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_the_plan_starts_on_the_next_whole_minute(t: datetime, want: datetime) -> None:
    assert next_minute(t) == want


@pytest.mark.parametrize(
    ("duration", "longest", "want"),
    [(8, 8, 1), (8.0001, 8, 2), (16, 8, 2), (17, 8, 3), (24, 8, 3), (2, None, 1), (30, 0, 1)],
)
def test_visits(duration: float, longest: float | None, want: int) -> None:
    assert visits(duration, longest) == want


@settings(max_examples=100, deadline=None)
@given(st.floats(0.1, 500), st.floats(1, 24))
def test_visits_fit_a_shift_and_are_as_few_as_possible(duration: float, longest: float) -> None:
    n = visits(duration, longest)
    assert duration / n <= longest * (1 + 1e-9)
    assert n == 1 or duration / (n - 1) > longest


def test_visit_ids() -> None:
    assert visit_id("WO-2026-01-0001", 1, 1) == "WO-2026-01-0001"
    assert visit_id("WO-2026-01-0001", 2, 3) == "WO-2026-01-0001/2"


# -- failure_cdf -----------------------------------------------------------------------------


def test_the_failure_curve_from_the_plan_start() -> None:
    p = prediction([(0, 1.0), (24, 0.9), (96, 0.5)])
    got = failure_cdf(p, START)
    assert [h for h, _ in got] == [24.0, 96.0]
    assert [f for _, f in got] == pytest.approx([0.1, 0.5])


def test_the_failure_curve_is_conditioned_on_surviving_since_the_prediction() -> None:
    # 50 h after the prediction, S(50) = 1 - 0.2 x 50/100 = 0.9 (linear between points);
    # then F(h | alive at 50) = 1 - S(50 + h) / 0.9.
    p = prediction([(0, 1.0), (100, 0.8), (200, 0.4)], at=START - timedelta(hours=50))
    got = failure_cdf(p, START)
    assert [h for h, _ in got] == [50.0, 150.0]
    assert [f for _, f in got] == pytest.approx([1 - 0.8 / 0.9, 1 - 0.4 / 0.9])


def test_a_prediction_made_after_the_plan_start_counts_from_itself() -> None:
    p = prediction([(0, 1.0), (10, 0.5)], at=START + timedelta(hours=5))
    assert failure_cdf(p, START) == ((10.0, 0.5),)


def test_a_curve_that_starts_later_interpolates_from_certain_survival() -> None:
    # No point at 0: S goes from 1 at 0 to 0.8 at 20, so S(10) = 0.9.
    p = prediction([(20, 0.8), (40, 0.6)], at=START - timedelta(hours=10))
    got = failure_cdf(p, START)
    assert [h for h, _ in got] == [10.0, 30.0]
    assert [f for _, f in got] == pytest.approx([1 - 0.8 / 0.9, 1 - 0.6 / 0.9])


def test_a_machine_already_past_certain_failure_fails_now() -> None:
    p = prediction([(0, 1.0), (10, 0.0)], at=START - timedelta(hours=20))
    assert failure_cdf(p, START) == ((0.0, 1.0),)


def test_no_curve_no_risk() -> None:
    assert failure_cdf(prediction([]), START) == ()


@st.composite
def survival_curves(draw: st.DrawFn) -> list[tuple[float, float]]:
    hours = sorted(set(draw(st.lists(st.integers(0, 500), min_size=1, max_size=8))))
    drops = draw(st.lists(st.floats(0, 0.3), min_size=len(hours), max_size=len(hours)))
    s, out = 1.0, []
    for h, d in zip(hours, drops, strict=True):
        s = max(s - d, 0.0)
        out.append((float(h), s))
    return out


@settings(max_examples=100, deadline=None)
@given(survival_curves(), st.integers(0, 600 * 60))
def test_a_conditioned_failure_curve_is_a_distribution_function(
    curve: list[tuple[float, float]], minutes: int
) -> None:
    since = minutes / 60  # whole minutes: no rounding to milliseconds on the way
    got = failure_cdf(prediction(curve, at=START - timedelta(hours=since)), START)
    hours = [h for h, _ in got]
    probs = [f for _, f in got]
    assert all(h >= 0 for h in hours) and hours == sorted(hours)
    assert all(0.0 <= f <= 1.0 for f in probs)
    assert all(b >= a - 1e-12 for a, b in pairwise(probs))
    # Every point still ahead of the plan start is kept, shifted by the time since.
    ahead = [h - since for h, _ in curve if h > since]
    assert hours == pytest.approx(ahead) or got == ((0.0, 1.0),)


# -- crews -------------------------------------------------------------------------------------


def test_crews_work_their_shifts_in_their_sites_time_zone() -> None:
    got = {c.id: c for c in crews(plant(), START, HORIZON, {})}
    assert got["T-1"] == Crew(
        "T-1", frozenset({"mechanical", "site:north"}), 50.0, ((6.0, 14.0), (30.0, 38.0))
    )
    assert got["T-2"].shifts == ((22.0, 30.0),)  # Monday night, into Tuesday
    assert got["T-3"].skills == frozenset({"electrical", "site:north", "site:east"})
    assert got["T-3"].shifts == ((6.0, 10.0), (30.0, 34.0))  # no site: UTC
    assert got["T-4"].shifts == ((5.0, 15.0), (29.0, 39.0))  # 06:00 in Berlin is 05:00 UTC
    assert got["T-4"].skills == frozenset({"mechanical", "site:east"})


@pytest.mark.parametrize(
    ("busy", "want"),
    [
        (0.0, ((6.0, 14.0), (30.0, 38.0))),
        (3.0, ((6.0, 14.0), (30.0, 38.0))),
        (10.0, ((10.0, 14.0), (30.0, 38.0))),
        (14.0, ((30.0, 38.0),)),
        (35.5, ((35.5, 38.0),)),
        (60.0, ()),
    ],
)
def test_work_in_progress_takes_a_technicians_time(
    busy: float, want: tuple[tuple[float, float], ...]
) -> None:
    got = {c.id: c for c in crews(plant(), START, HORIZON, {"T-1": busy})}
    assert got["T-1"].shifts == want
    assert got["T-2"].shifts == ((22.0, 30.0),)  # the others are not affected


def test_a_naive_plan_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
        crews(plant(), START.replace(tzinfo=None), HORIZON, {})


# -- orders ------------------------------------------------------------------------------------


def test_a_corrective_order_waits_at_the_cost_of_downtime_inside_the_line_windows() -> None:
    o = work_order(1, "P-1", estimated_cost={"parts": 40})
    got, busy = orders(plant(), [o], {}, START, HORIZON)
    assert busy == {}
    assert got == [
        Order(
            id="WO-2026-01-0001",
            asset_id="P-1",
            duration_h=1.0,
            skills=frozenset({"mechanical", "site:north"}),
            windows=((10.0, 12.0), (34.0, 36.0)),
            downtime_cost_per_h=800.0,
            failure_cost=800.0 * HORIZON,
            failure_cdf=((HORIZON, 1.0),),
            parts_cost=40.0,
            priority="medium",
        )
    ]


@pytest.mark.parametrize("priority", ["low", "medium", "high", "critical"])
def test_other_orders_without_a_prediction_wait_at_the_cost_of_their_priority(
    priority: str,
) -> None:
    rate = {"low": 1.0, "medium": 5.0, "high": 25.0, "critical": 100.0}[priority]
    assert WAITING_COST_PER_H[priority] == rate
    o = work_order(1, "P-2", type="preventive", priority=priority)
    (got,), _ = orders(plant(), [o], {}, START, HORIZON)
    assert (got.failure_cost, got.failure_cdf, got.windows) == (rate * 48, ((48.0, 1.0),), None)


def test_a_predicted_failure_costs_the_policy_failure_cost_by_the_conditioned_curve() -> None:
    fp = {"probability": 0.5, "rul_hours": 80}
    o = work_order(1, "E-1", type="predictive", failure_prediction=fp)
    p = prediction([(0, 1.0), (100, 0.8), (200, 0.4)], at=START - timedelta(hours=50))
    (got,), _ = orders(plant(), [o], {"E-1": p}, START, HORIZON)
    assert got.failure_cost == 20000.0
    assert [h for h, _ in got.failure_cdf] == [50.0, 150.0]
    assert [f for _, f in got.failure_cdf] == pytest.approx([1 - 0.8 / 0.9, 1 - 0.4 / 0.9])
    # The order's own prediction alone is not a curve: without the machine's, it waits.
    (alone,), _ = orders(plant(), [o], {}, START, HORIZON)
    assert (alone.failure_cost, alone.failure_cdf) == (5.0 * 48, ((48.0, 1.0),))
    # And a machine's prediction does not make an order without one a predicted failure.
    (plain,), _ = orders(plant(), [work_order(2, "E-1")], {"E-1": p}, START, HORIZON)
    assert plain.failure_cost == 800.0 * 48


def test_dates_pinning_and_dependencies() -> None:
    first = work_order(1, "P-2")
    second = work_order(
        2,
        "P-2",
        due_by=START + timedelta(hours=30),
        not_before=START + timedelta(hours=5, minutes=30),
        assigned_technician_id="T-1",
        technician_pinned=True,
        after=["WO-2026-01-0001", "WO-2026-01-0099"],  # the other is not open
    )
    third = work_order(
        3,
        "P-2",
        not_before=START - timedelta(hours=5),  # already passed
        assigned_technician_id="T-2",  # assigned by the last plan, not pinned
    )
    got, _ = orders(plant(), [first, second, third], {}, START, HORIZON)
    by_id = {o.id: o for o in got}
    assert (by_id["WO-2026-01-0002"].due_h, by_id["WO-2026-01-0002"].release_h) == (30.0, 5.5)
    assert by_id["WO-2026-01-0002"].technician_id == "T-1"
    assert by_id["WO-2026-01-0002"].after == ("WO-2026-01-0001",)
    assert (by_id["WO-2026-01-0003"].release_h, by_id["WO-2026-01-0003"].technician_id) == (
        0.0,
        None,
    )
    assert by_id["WO-2026-01-0001"].due_h is None


def test_a_job_longer_than_the_sites_longest_shift_is_consecutive_visits() -> None:
    # The longest shift at north is 8 h (T-1, T-2): a 20 h job is 3 visits of 6 h 40 min.
    long = work_order(
        2,
        "P-2",
        estimated_duration_hours=20,
        estimated_cost={"parts": 900},
        after=["WO-2026-01-0001"],
    )
    waits = work_order(3, "P-2", after=["WO-2026-01-0002"])
    got, _ = orders(plant(), [work_order(1, "P-2"), long, waits], {}, START, HORIZON)
    visits_ = [o for o in got if o.id.startswith("WO-2026-01-0002")]
    assert [o.id for o in visits_] == [f"WO-2026-01-0002/{k}" for k in (1, 2, 3)]
    assert [o.duration_h for o in visits_] == pytest.approx([20 / 3] * 3)
    assert [o.after for o in visits_] == [
        ("WO-2026-01-0001",),
        ("WO-2026-01-0002/1",),
        ("WO-2026-01-0002/2",),
    ]
    # Only the first visit carries the risk and the parts.
    assert [o.failure_cost for o in visits_] == [800.0 * 48, 0.0, 0.0]
    assert [o.failure_cdf for o in visits_] == [((48.0, 1.0),), (), ()]
    assert [o.parts_cost for o in visits_] == [900.0, 0.0, 0.0]
    # An order that waits for it waits for its last visit.
    assert next(o for o in got if o.id == "WO-2026-01-0003").after == ("WO-2026-01-0002/3",)
    # At east the longest shift is 10 h: 20 h is two visits.
    east, _ = orders(plant(), [work_order(4, "E-1", estimated_duration_hours=20)], {}, START, 48)
    assert [o.id for o in east] == ["WO-2026-01-0004/1", "WO-2026-01-0004/2"]


def test_work_in_progress_is_not_planned_but_keeps_its_technician_busy() -> None:
    doing = [
        work_order(
            1,
            status="in_progress",
            assigned_technician_id="T-1",
            scheduled_end=START + timedelta(hours=3),
        ),
        work_order(
            2,
            status="in_progress",
            assigned_technician_id="T-1",
            scheduled_end=START + timedelta(hours=7, minutes=15),
        ),
        work_order(
            3,
            status="in_progress",
            assigned_technician_id="T-2",
            scheduled_end=START - timedelta(hours=1),
        ),
        work_order(4, status="in_progress", assigned_technician_id="T-4"),  # no end known
        work_order(5, status="in_progress", scheduled_end=START + timedelta(hours=9)),
    ]
    got, busy = orders(plant(), doing, {}, START, HORIZON)
    assert got == []
    assert busy == {"T-1": 7.25, "T-2": 0.0}


def test_an_order_waiting_for_work_in_progress_starts_after_it_ends() -> None:
    doing = work_order(
        1,
        "P-2",
        status="in_progress",
        assigned_technician_id="T-2",
        scheduled_end=START + timedelta(hours=5),
    )
    waits = work_order(2, "P-2", after=["WO-2026-01-0001"])
    (got,), _ = orders(plant(), [doing, waits], {}, START, HORIZON)
    assert got.release_h == pytest.approx(5.0) and got.after == ()


# -- apply -------------------------------------------------------------------------------------


def costs(labour: float, downtime: float = 0.0, parts: float = 0.0, risk: float = 0.0) -> Costs:
    return Costs(labour=labour, downtime=downtime, parts=parts, risk=risk)


def book() -> list[WorkOrder]:
    return [
        work_order(1, "P-1", due_by=START + timedelta(hours=40)),
        work_order(2, "P-2", estimated_duration_hours=18),
        work_order(3, "E-1", assigned_technician_id="T-4", scheduled_end=START),
        work_order(4, "E-1", assigned_technician_id="T-4", technician_pinned=True),
        work_order(5, "P-2", estimated_duration_hours=16),
    ]


def plan() -> Plan:
    return Plan(
        placements=(
            Placement("WO-2026-01-0001", "T-1", 10.0, 11.0, costs(50.004, 800, 40, 12.345)),
            Placement("WO-2026-01-0002/2", "T-2", 30.0, 36.0, costs(360, 4800)),
            Placement("WO-2026-01-0002/1", "T-1", 6.0, 12.0, costs(300, 4800, 100, 7.5)),
            Placement("WO-2026-01-0002/3", "T-1", 36.0, 42.0, costs(300, 4800)),
            Placement("WO-2026-01-0005/1", "T-1", 30.0, 38.0, costs(400, 6400)),
        ),
        unplaced=(
            Unplaced(
                "WO-2026-01-0003",
                "waits for WO-2026-01-0002/3",
                123.456,
                costs(70, 800, 0, 123.456),
            ),
            Unplaced("WO-2026-01-0004", "pinned technician T-4 is busy", 0.0, costs(70, 800)),
            Unplaced(
                "WO-2026-01-0005/2",
                "no technician on shift before WO-2026-01-0005/1 ends",
                9.999,
                costs(560, 6400, 0, 9.999),
            ),
        ),
        costs=Costs(),
        status="optimal",
        solve_seconds=0.12345,
        solver="cp-sat",
    )


def test_the_plan_as_the_api_shows_it() -> None:
    view, _ = apply(plan(), book(), START, HORIZON, NOW)
    at = lambda h: START + timedelta(hours=h)  # noqa: E731
    assert (view.planned_at, view.start, view.horizon_hours) == (NOW, START, 48.0)
    assert (view.status, view.solver, view.solve_seconds) == ("optimal", "cp-sat", 0.123)
    # One line per visit, in time order; an order with an unplaced visit is not shown.
    assert view.scheduled == [
        ScheduledWork(
            workorder_id="WO-2026-01-0002",
            asset_id="P-2",
            technician_id="T-1",
            start=at(6),
            end=at(12),
            cost=CostEstimate(labor=300, downtime=4800, parts=100, risk=7.5),
        ),
        ScheduledWork(
            workorder_id="WO-2026-01-0001",
            asset_id="P-1",
            technician_id="T-1",
            start=at(10),
            end=at(11),
            due_by=at(40),
            cost=CostEstimate(labor=50.0, downtime=800, parts=40, risk=12.35),
        ),
        ScheduledWork(
            workorder_id="WO-2026-01-0002",
            asset_id="P-2",
            technician_id="T-2",
            start=at(30),
            end=at(36),
            cost=CostEstimate(labor=360, downtime=4800),
        ),
        ScheduledWork(
            workorder_id="WO-2026-01-0002",
            asset_id="P-2",
            technician_id="T-1",
            start=at(36),
            end=at(42),
            cost=CostEstimate(labor=300, downtime=4800),
        ),
    ]
    assert view.unscheduled == [
        UnscheduledWork(
            workorder_id="WO-2026-01-0003",
            asset_id="E-1",
            reason="waits for WO-2026-01-0002",
            risk=123.46,
        ),
        UnscheduledWork(
            workorder_id="WO-2026-01-0004",
            asset_id="E-1",
            reason="pinned technician T-4 is busy",
            risk=0.0,
        ),
        UnscheduledWork(
            workorder_id="WO-2026-01-0005",
            asset_id="P-2",
            reason="visit 2 of 2: no technician on shift before WO-2026-01-0005 ends",
            risk=10.0,
        ),
    ]
    # Placed orders' costs plus the unplaced ones' deferred work and risk (not the placed
    # visit of a half-placed order).
    labor = 50.0 + 300 + 360 + 300 + 70 + 70 + 560
    downtime = 800 + 4800 * 3 + 800 + 800 + 6400
    parts = 40 + 100
    risk = 12.35 + 7.5 + 123.46 + 10.0
    assert (labor, downtime, parts) == (1710, 23200, 140)
    want = {"labor": labor, "parts": parts, "downtime": downtime, "risk": risk}
    assert view.cost.model_dump() == pytest.approx(
        {**want, "total": labor + parts + downtime + risk}, abs=0.005
    )


def test_the_orders_whose_placement_changed() -> None:
    _, changed = apply(plan(), book(), START, HORIZON, NOW)
    by_id = {o.workorder_id: o for o in changed}
    assert sorted(by_id) == [f"WO-2026-01-000{n}" for n in (1, 2, 3, 4, 5)]
    one, two = by_id["WO-2026-01-0001"], by_id["WO-2026-01-0002"]
    assert (one.scheduled_date, one.scheduled_end, one.assigned_technician_id) == (
        START + timedelta(hours=10),
        START + timedelta(hours=11),
        "T-1",
    )
    assert one.estimated_cost == CostEstimate(labor=50.0, downtime=800, parts=40, risk=12.35)
    # Several visits: from the first's start to the last's end, the first's technician.
    assert (two.scheduled_date, two.scheduled_end, two.assigned_technician_id) == (
        START + timedelta(hours=6),
        START + timedelta(hours=42),
        "T-1",
    )
    assert two.estimated_cost == CostEstimate(labor=960, downtime=14400, parts=100, risk=7.5)
    # Unplaced: the reason, no dates; the planner's technician goes, a pinned one stays.
    three, four, five = (by_id[f"WO-2026-01-000{n}"] for n in (3, 4, 5))
    assert (three.unplaced_reason, three.scheduled_date, three.scheduled_end) == (
        "waits for WO-2026-01-0002",
        None,
        None,
    )
    assert three.assigned_technician_id is None
    assert (four.assigned_technician_id, four.technician_pinned) == ("T-4", True)
    assert (
        five.unplaced_reason == "visit 2 of 2: no technician on shift before WO-2026-01-0005 ends"
    )
    assert all(o.updated_at == NOW for o in changed)
    assert all(o.status is S.SCHEDULED for o in changed)


def test_applying_the_same_plan_again_changes_nothing() -> None:
    _, changed = apply(plan(), book(), START, HORIZON, NOW)
    updated = {o.workorder_id: o for o in book()} | {o.workorder_id: o for o in changed}
    view, again = apply(plan(), list(updated.values()), START, HORIZON, NOW + timedelta(hours=1))
    assert again == []
    assert len(view.scheduled) == 4 and len(view.unscheduled) == 3


def test_an_empty_plan() -> None:
    empty = Plan((), (), Costs(), "optimal", 0.0, "cp-sat")
    view, changed = apply(empty, [], START, HORIZON, NOW)
    assert (view.scheduled, view.unscheduled, view.cost, changed) == ([], [], PlanCost(), [])
