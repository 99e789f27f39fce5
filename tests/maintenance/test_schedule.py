"""The technician scheduler on small hand-made instances: every hard constraint checked on
the returned plans (CP-SAT and the baseline), the cost function, each unplaced reason,
cases where earliest-due-date is clearly worse than CP-SAT, and the errors of bad input."""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace

import pytest

from maintenance import schedule
from maintenance.schedule import (
    PRIORITY_WEIGHT,
    Costs,
    Crew,
    Order,
    Plan,
    check_plan,
    failure_probability,
    order_costs,
    plan,
    plan_edd,
    unplaced_costs,
)

LIMIT = 2.0  # seconds per CP-SAT call; these instances are solved to optimality at once


def crew(
    id: str = "T-1",
    skills: tuple[str, ...] = ("mech",),
    rate: float = 50.0,
    shifts: tuple[tuple[float, float], ...] = ((0.0, 8.0),),
) -> Crew:
    return Crew(id, frozenset(skills), rate, shifts)


def order(id: str = "WO-2026-11-0001", asset: str = "M-1", hours: float = 2.0, **kw) -> Order:
    kw.setdefault("skills", frozenset({"mech"}))
    return Order(id, asset, hours, **kw)


def both(orders: list[Order], crews: list[Crew], horizon_h: float = 48.0) -> tuple[Plan, Plan]:
    """CP-SAT's and the baseline's plans, after checking both break no hard constraint."""
    best = plan(orders, crews, horizon_h, time_limit_s=LIMIT)
    base = plan_edd(orders, crews, horizon_h)
    for p in (best, base):
        assert check_plan(orders, crews, p, horizon_h) == []
        assert p.costs.total == pytest.approx(
            sum(x.costs.total for x in p.placements) + sum(u.costs.total for u in p.unplaced)
        )
        by_id = {o.id: o for o in orders}
        for u in p.unplaced:
            assert u.costs == unplaced_costs(by_id[u.order_id], crews, horizon_h)
            assert u.risk == u.costs.risk
    return best, base


def where(p: Plan) -> dict[str, tuple[str, float, float]]:
    return {x.order_id: (x.technician_id, x.start_h, x.end_h) for x in p.placements}


def reasons(p: Plan) -> dict[str, str]:
    return {u.order_id: u.reason for u in p.unplaced}


# -- hard constraints -----------------------------------------------------------------------


def test_the_technician_has_all_the_skills() -> None:
    crews = [
        crew("T-1", ("mech",), rate=10.0),
        crew("T-2", ("mech", "plc"), rate=90.0),
    ]
    orders = [order(skills=frozenset({"mech", "plc"}))]
    for p in both(orders, crews):
        assert where(p)["WO-2026-11-0001"][0] == "T-2"


def test_an_order_runs_inside_one_shift() -> None:
    # 3 h free before the break and 3 h after it: 5 h fit only in the long shift
    crews = [crew(shifts=((0.0, 3.0), (3.0, 6.0), (10.0, 18.0)))]
    for p in both([order(hours=5.0)], crews):
        assert where(p)["WO-2026-11-0001"] == ("T-1", 10.0, 15.0)


def test_one_order_at_a_time_per_technician() -> None:
    orders = [order(f"WO-2026-11-000{k}", asset=f"M-{k}", hours=3.0) for k in range(1, 4)]
    for p in both(orders, [crew(shifts=((0.0, 9.0),))]):
        assert len(p.placements) == 3
        spans = sorted((s, e) for _, s, e in where(p).values())
        assert spans == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]


def test_one_order_at_a_time_per_asset() -> None:
    risk = {"failure_cost": 1e4, "failure_cdf": ((8.0, 0.5),)}  # both would rather start at 0
    orders = [
        order("WO-2026-11-0001", hours=4.0, **risk),
        order("WO-2026-11-0002", hours=4.0, **risk),
    ]
    crews = [crew("T-1"), crew("T-2")]
    for p in both(orders, crews):
        spans = sorted((s, e) for _, s, e in where(p).values())
        assert spans == [(0.0, 4.0), (4.0, 8.0)]  # two technicians, still one after the other


def test_finishes_by_the_latest_safe_finish() -> None:
    orders = [
        order("WO-2026-11-0001", asset="M-1", hours=3.0),
        order("WO-2026-11-0002", asset="M-2", hours=3.0, due_h=3.5),
    ]
    for p in both(orders, [crew()]):
        assert where(p)["WO-2026-11-0002"][1:] == (0.0, 3.0)
        assert where(p)["WO-2026-11-0001"][1:] == (3.0, 6.0)


def test_inside_a_production_window_and_after_the_release() -> None:
    orders = [
        order("WO-2026-11-0001", asset="M-1", windows=((5.0, 7.5), (20.0, 30.0))),
        order("WO-2026-11-0002", asset="M-2", release_h=26.5),
    ]
    crews = [crew(shifts=((0.0, 8.0), (24.0, 32.0)))]
    for p in both(orders, crews):
        assert where(p)["WO-2026-11-0001"][1:] == (5.0, 7.0)
        assert where(p)["WO-2026-11-0002"][1:] == (26.5, 28.5)


def test_precedence() -> None:
    # the inspection has no deadline, the repair waiting for it does
    orders = [
        order("WO-2026-11-0002", asset="M-2", hours=2.0, due_h=6.0, after=("WO-2026-11-0001",)),
        order("WO-2026-11-0001", asset="M-1", hours=2.0),
        order("WO-2026-11-0003", asset="M-3", hours=2.0, due_h=2.0),
    ]
    for p in both(orders, [crew()]):
        w = where(p)
        assert w["WO-2026-11-0003"][1:] == (0.0, 2.0)
        assert w["WO-2026-11-0001"][1:] == (2.0, 4.0)
        assert w["WO-2026-11-0002"][1:] == (4.0, 6.0)


def test_pinned_technician() -> None:
    crews = [crew("T-1", rate=10.0), crew("T-2", rate=99.0)]
    for p in both([order(technician_id="T-2")], crews):
        assert where(p)["WO-2026-11-0001"][0] == "T-2"


def test_durations_in_fractions_of_an_hour() -> None:
    orders = [order(f"WO-2026-11-000{k}", asset=f"M-{k}", hours=0.7) for k in range(1, 4)]
    for p in both(orders, [crew(shifts=((0.0, 2.1),))]):
        assert len(p.placements) == 3
        assert max(e for _, _, e in where(p).values()) <= 2.1 + 1e-9


def test_an_empty_plan() -> None:
    best, base = both([], [crew()])
    assert best.placements == best.unplaced == () and best.costs.total == 0
    assert base.status == "baseline" and base.solver == "edd"


# -- costs ----------------------------------------------------------------------------------


def test_failure_probability_interpolates_and_clamps() -> None:
    cdf = ((10.0, 0.2), (30.0, 0.6))
    assert failure_probability((), 50.0) == 0.0
    assert failure_probability(cdf, 0.0) == 0.0
    assert failure_probability(cdf, 5.0) == pytest.approx(0.1)  # from 0 at t=0
    assert failure_probability(cdf, 20.0) == pytest.approx(0.4)
    assert failure_probability(cdf, 99.0) == pytest.approx(0.6)
    assert failure_probability(((0.0, 0.3), (10.0, 0.5)), 0.0) == pytest.approx(0.3)


def test_order_costs() -> None:
    o = order(
        hours=3.0,
        downtime_cost_per_h=200.0,
        parts_cost=150.0,
        failure_cost=10_000.0,
        failure_cdf=((10.0, 0.2), (30.0, 0.6)),
    )
    c = order_costs(o, crew(rate=40.0), 20.0)
    assert c == Costs(labour=120.0, downtime=600.0, parts=150.0, risk=pytest.approx(4000.0))
    assert c.total == pytest.approx(4870.0)


def test_unplaced_costs_are_the_deferred_work_and_the_risk() -> None:
    o = order(
        hours=3.0,
        downtime_cost_per_h=200.0,
        parts_cost=150.0,
        failure_cost=10_000.0,
        failure_cdf=((10.0, 0.2), (30.0, 0.6)),
    )
    crews = [
        crew("T-1", ("mech",), rate=70.0),
        crew("T-2", ("mech", "plc"), rate=40.0),
        crew("T-3", ("plc",), rate=10.0),
    ]
    c = unplaced_costs(o, crews, 20.0)
    # labour at the cheapest technician with the skills, risk over the whole horizon
    assert c == Costs(labour=120.0, downtime=600.0, parts=150.0, risk=pytest.approx(4000.0))
    assert unplaced_costs(o, crews, 40.0).risk == pytest.approx(6000.0)
    # pinned: the pinned technician's rate; nobody has the skills: the mean rate of all
    assert unplaced_costs(replace(o, technician_id="T-1"), crews, 20.0).labour == 210.0
    welding = replace(o, skills=frozenset({"welding"}))
    assert unplaced_costs(welding, crews, 20.0).labour == pytest.approx(120.0)
    assert unplaced_costs(welding, [], 20.0).labour == 0.0


def test_reported_costs_are_exact_and_unplaced_orders_count() -> None:
    cdf = ((10.0, 0.2), (30.0, 0.6))
    orders = [
        order("WO-2026-11-0001", hours=2.0, failure_cost=1000.0, failure_cdf=cdf),
        order(
            "WO-2026-11-0002",
            skills=frozenset({"plc"}),
            failure_cost=500.0,
            failure_cdf=cdf,
            downtime_cost_per_h=30.0,
            parts_cost=7.0,
        ),
    ]
    crews = [crew(shifts=((3.0, 8.0),))]
    for p in both(orders, crews, horizon_h=20.0):
        (x,) = p.placements
        assert x.costs == order_costs(orders[0], crews[0], 3.0)
        (u,) = p.unplaced
        assert u.risk == pytest.approx(500.0 * 0.4)  # F(20 h)
        # nobody has plc: labour at the mean rate (50) for its 2 h
        assert u.costs == Costs(labour=100.0, downtime=60.0, parts=7.0, risk=pytest.approx(200.0))
        assert p.costs == Costs(
            labour=x.costs.labour + 100.0,
            downtime=60.0,
            parts=7.0,
            risk=pytest.approx(x.costs.risk + u.risk),
        )


# -- CP-SAT beats earliest-due-date ---------------------------------------------------------


def test_cp_sat_waits_for_the_cheap_technician() -> None:
    crews = [
        crew("T-1", rate=200.0, shifts=((0.0, 8.0),)),
        crew("T-2", rate=40.0, shifts=((8.0, 16.0),)),
    ]
    best, base = both([order(hours=4.0)], crews)
    assert where(base)["WO-2026-11-0001"][0] == "T-1"  # earliest slot
    assert where(best)["WO-2026-11-0001"][0] == "T-2"
    assert best.costs.total < base.costs.total - 600
    assert best.status == "optimal" and best.solver == "cp-sat"


def test_cp_sat_repairs_the_risky_machine_first() -> None:
    orders = [
        order("WO-2026-11-0001", asset="M-1", hours=4.0, due_h=8.0),  # due, but no risk
        order(
            "WO-2026-11-0002",
            asset="M-2",
            hours=4.0,
            failure_cost=100_000.0,
            failure_cdf=((4.0, 0.5), (8.0, 0.9)),
        ),
    ]
    best, base = both(orders, [crew()])
    assert where(base)["WO-2026-11-0002"][1] == 4.0  # EDD serves the deadline first
    assert where(best)["WO-2026-11-0002"][1] == 0.0
    assert where(best)["WO-2026-11-0001"][1:] == (4.0, 8.0)
    assert best.costs.total == pytest.approx(base.costs.total - 50_000.0)


def test_placing_comes_before_saving() -> None:
    # the cheap technician has no shift in the horizon: placing the order costs far more
    # than leaving it for them (no risk at all); it is placed anyway
    crews = [crew("T-1", rate=5_000.0), crew("T-2", rate=10.0, shifts=((100.0, 108.0),))]
    best, _ = both([order()], crews)
    assert len(best.placements) == 1
    assert best.costs.total == 10_000.0 > unplaced_costs(order(), crews, 48.0).total == 20.0


def test_leaving_an_order_costs_its_deferred_work() -> None:
    # one slot for two orders of equal priority: placing the expensive job avoids more
    # risk, and leaving it would not save its work, only defer it
    everything = ((48.0, 1.0),)  # F(0) = 0, F(48 h) = 1
    cheap = order("WO-2026-11-0001", hours=6.0, failure_cost=1_000.0, failure_cdf=everything)
    dear = order(
        "WO-2026-11-0002",
        asset="M-2",
        hours=6.0,
        downtime_cost_per_h=8_000.0,
        parts_cost=1_700.0,
        failure_cost=10_000.0,
        failure_cdf=everything,
    )
    crews = [crew(shifts=((0.0, 6.0),))]
    best, base = both([cheap, dear], crews)
    assert list(where(base)) == [cheap.id]  # the first id
    assert base.costs.total == pytest.approx(300.0 + 50_000.0 + 10_000.0)
    assert list(where(best)) == [dear.id]
    (u,) = best.unplaced
    assert u.costs == Costs(labour=300.0, risk=1_000.0)
    assert best.costs.total == pytest.approx(50_000.0 + 300.0 + 1_000.0)


def test_priority_decides_who_gets_the_last_slot() -> None:
    orders = [
        order("WO-2026-11-0001", asset="M-1", hours=6.0, priority="low", failure_cost=9e5),
        order(
            "WO-2026-11-0002", asset="M-2", hours=6.0, priority="critical", downtime_cost_per_h=1e5
        ),
    ]
    best = plan(orders, [crew()], 48, time_limit_s=LIMIT)
    assert [x.order_id for x in best.placements] == ["WO-2026-11-0002"]
    assert reasons(best) == {
        "WO-2026-11-0001": "qualified technicians are fully booked within the horizon"
    }


def test_never_worse_than_the_baseline_on_a_mixed_instance() -> None:
    crews = [
        crew("T-1", ("mech", "plc"), 45.0, ((0.0, 8.0), (24.0, 32.0))),
        crew("T-2", ("mech",), 80.0, ((4.0, 12.0), (28.0, 36.0))),
        crew("T-3", ("plc",), 60.0, ((8.0, 16.0),)),
    ]
    orders = []
    for k in range(12):
        orders.append(
            order(
                f"WO-2026-11-{k + 1:04d}",
                asset=f"M-{k % 5}",
                hours=1.0 + k % 4,
                skills=frozenset({("mech", "plc")[k % 2]}),
                due_h=None if k % 3 else 20.0 + k,
                failure_cost=1000.0 * (k + 1),
                failure_cdf=((12.0, 0.05 * (k % 4)), (48.0, 0.5)),
                downtime_cost_per_h=100.0,
            )
        )
    best, base = both(orders, crews)
    assert len(best.placements) >= len(base.placements)
    assert best.costs.total <= base.costs.total + 1e-6


def test_the_neighbourhood_search_keeps_every_constraint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no model of all orders: CP-SAT only re-plans neighbourhoods of the incumbent, whose
    # other placements hold shifts, assets and precedences fixed around them
    monkeypatch.setattr(schedule, "FULL_MODEL_OPTIONS", 0)
    rng = random.Random(7)
    skills = ("mech", "plc", "weld")
    crews = [
        crew(
            f"T-{k}",
            tuple(rng.sample(skills, rng.randint(1, 2))),
            rng.uniform(40.0, 90.0),
            tuple((24.0 * d + 8 * (k % 3), 24.0 * d + 8 * (k % 3) + 8) for d in range(3)),
        )
        for k in range(6)
    ]
    orders: list[Order] = []
    for k in range(90):
        orders.append(
            order(
                f"WO-2026-11-{k + 1:04d}",
                asset=f"M-{rng.randrange(30)}",
                hours=rng.choice((1.0, 1.5, 2.0, 3.0, 5.0)),
                skills=frozenset(rng.sample(skills, 1)),
                due_h=rng.uniform(10.0, 72.0) if rng.random() < 0.3 else None,
                release_h=rng.choice((0.0, 0.0, 0.0, 12.5)),
                windows=((0.0, 20.0), (40.0, 60.0)) if rng.random() < 0.15 else None,
                after=(orders[rng.randrange(k)].id,) if k and rng.random() < 0.2 else (),
                technician_id=f"T-{rng.randrange(6)}" if rng.random() < 0.05 else None,
                priority=rng.choice(("low", "medium", "high", "critical")),
                downtime_cost_per_h=rng.uniform(100.0, 2000.0),
                failure_cost=rng.uniform(1e3, 1e5),
                failure_cdf=((24.0, rng.uniform(0.0, 0.3)), (72.0, rng.uniform(0.3, 0.9))),
            )
        )
    began = time.perf_counter()
    best = plan(orders, crews, 72.0, time_limit_s=LIMIT)
    assert time.perf_counter() - began <= LIMIT
    base = plan_edd(orders, crews, 72.0)
    assert check_plan(orders, crews, best, 72.0) == []
    priority = {o.id: PRIORITY_WEIGHT[o.priority] for o in orders}
    assert best.solver == "cp-sat" and best.status == "feasible"
    assert sum(priority[x.order_id] for x in best.placements) >= sum(
        priority[x.order_id] for x in base.placements
    )
    assert best.costs.total < base.costs.total  # never dearer, here strictly cheaper
    assert best.costs.total == pytest.approx(
        sum(x.costs.total for x in best.placements) + sum(u.costs.total for u in best.unplaced)
    )


# -- unplaced reasons -----------------------------------------------------------------------


def test_no_technician_has_the_skills() -> None:
    o = order(skills=frozenset({"welding", "plc"}))
    for p in both([o], [crew()]):
        assert reasons(p) == {o.id: "no technician has the skills plc, welding"}


def test_pinned_technician_unknown_or_unskilled() -> None:
    crews = [crew("T-1", ("mech", "plc")), crew("T-2", ("mech",))]
    orders = [
        order("WO-2026-11-0001", technician_id="T-9"),
        order(
            "WO-2026-11-0002", asset="M-2", skills=frozenset({"mech", "plc"}), technician_id="T-2"
        ),
    ]
    for p in both(orders, crews):
        assert reasons(p) == {
            "WO-2026-11-0001": "pinned technician T-9 is unknown",
            "WO-2026-11-0002": "pinned technician T-2 lacks skills plc",
        }


def test_longer_than_any_shift() -> None:
    crews = [crew("T-1", shifts=((0.0, 8.0),)), crew("T-2", ("plc",), shifts=((0.0, 12.0),))]
    for p in both([order(hours=9.5)], crews):
        assert reasons(p) == {
            "WO-2026-11-0001": "takes 9.5 h, longer than any shift of a technician with the skills"
        }


def test_no_shift_before_the_latest_safe_finish() -> None:
    orders = [
        order("WO-2026-11-0001", due_h=5.0),
        order("WO-2026-11-0002", asset="M-2", due_h=30.0, windows=((12.0, 20.0),)),
        order("WO-2026-11-0003", asset="M-3", windows=((40.0, 60.0),)),
        order("WO-2026-11-0004", asset="M-4", release_h=34.5),
    ]
    crews = [crew(shifts=((4.0, 12.0), (28.0, 36.0)))]
    for p in both(orders, crews, horizon_h=36.0):
        assert reasons(p) == {
            "WO-2026-11-0001": "no shift of a qualified technician ends before the latest "
            "safe finish at +5 h",
            "WO-2026-11-0002": "no shift of a qualified technician inside a production window "
            "ends before the latest safe finish at +30 h",
            "WO-2026-11-0003": "no shift of a qualified technician inside a production window "
            "ends within the horizon",
            "WO-2026-11-0004": "no shift of a qualified technician after the release at +34.5 h "
            "ends within the horizon",
        }


def test_waits_for_an_order_that_could_not_be_placed() -> None:
    orders = [
        order("WO-2026-11-0001", skills=frozenset({"welding"})),
        order("WO-2026-11-0002", after=("WO-2026-11-0001",)),
        order("WO-2026-11-0003", after=("WO-2026-11-0002",)),
    ]
    for p in both(orders, [crew()]):
        assert reasons(p) == {
            "WO-2026-11-0001": "no technician has the skills welding",
            "WO-2026-11-0002": "waits for WO-2026-11-0001, which could not be placed",
            "WO-2026-11-0003": "waits for WO-2026-11-0002, which could not be placed",
        }


def test_fully_booked() -> None:
    orders = [
        order("WO-2026-11-0001", asset="M-1", hours=5.0, due_h=8.0),
        order("WO-2026-11-0002", asset="M-2", hours=5.0, due_h=8.0),
        order("WO-2026-11-0003", asset="M-3", hours=5.0),
        order("WO-2026-11-0004", asset="M-4", hours=1.0, after=("WO-2026-11-0003",)),
    ]
    best, base = both(orders, [crew()], horizon_h=10.0)
    booked = "qualified technicians are fully booked"
    # the baseline serves a deadline first and leaves no room for the pair; CP-SAT places
    # the pair (two orders of equal priority rather than one)
    assert list(where(base)) == ["WO-2026-11-0001"]
    assert reasons(base) == {
        "WO-2026-11-0002": f"{booked} before the latest safe finish at +8 h",
        "WO-2026-11-0003": f"{booked} within the horizon",
        "WO-2026-11-0004": "waits for WO-2026-11-0003, which could not be placed",
    }
    assert where(best) == {
        "WO-2026-11-0003": ("T-1", 0.0, 5.0),
        "WO-2026-11-0004": ("T-1", 5.0, 6.0),
    }
    assert reasons(best) == {
        "WO-2026-11-0001": f"{booked} before the latest safe finish at +8 h",
        "WO-2026-11-0002": f"{booked} before the latest safe finish at +8 h",
    }


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orders", "match"),
    [
        ([order(hours=-1.0)], "WO-2026-11-0001.*duration_h"),
        ([order(hours=0.0)], "WO-2026-11-0001.*duration_h"),
        ([order(due_h=math.nan)], "WO-2026-11-0001.*due_h"),
        ([order(release_h=math.inf)], "WO-2026-11-0001.*release_h"),
        ([order(failure_cost=math.nan)], "WO-2026-11-0001.*failure_cost"),
        ([order(failure_cdf=((5.0, math.nan),))], "WO-2026-11-0001.*failure_cdf"),
        ([order(failure_cdf=((5.0, 0.5), (3.0, 0.6)))], "WO-2026-11-0001.*failure_cdf"),
        ([order(windows=((4.0, 2.0),))], "WO-2026-11-0001.*windows"),
        ([order(priority="urgent")], "WO-2026-11-0001.*priority"),
        ([order(after=("WO-2026-11-0404",))], "WO-2026-11-0001.*after.*WO-2026-11-0404"),
        ([order(), order(asset="M-2")], "WO-2026-11-0001.*duplicate"),
        (
            [
                order("WO-2026-11-0001", after=("WO-2026-11-0002",)),
                order("WO-2026-11-0002", after=("WO-2026-11-0001",)),
                order("WO-2026-11-0003"),
            ],
            "WO-2026-11-0001.*after.*cycle",
        ),
    ],
)
def test_bad_input_raises(orders: list[Order], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan(orders, [crew()], time_limit_s=LIMIT)
    with pytest.raises(ValueError, match=match):
        plan_edd(orders, [crew()])


def test_bad_technicians_and_horizon_raise() -> None:
    with pytest.raises(ValueError, match=r"T-1.*duplicate"):
        plan_edd([order()], [crew(), crew()])
    with pytest.raises(ValueError, match=r"T-1.*hourly_rate"):
        plan_edd([order()], [crew(rate=math.nan)])
    with pytest.raises(ValueError, match=r"T-1.*shifts"):
        plan_edd([order()], [crew(shifts=((8.0, 4.0),))])
    with pytest.raises(ValueError, match="horizon_h"):
        plan_edd([order()], [crew()], horizon_h=0.0)
