"""Technician scheduling: CP-SAT (:func:`maintenance.schedule.plan`) against the
earliest-due-date baseline (:func:`maintenance.schedule.plan_edd`).

For every combination of ``--orders`` open work orders and ``--technicians`` technicians,
builds a deterministic random instance (``--seed``) over one week from a Monday 00:00 in
Europe/Berlin: technicians with 2-4 of 8 skills, day shifts Monday to Friday (early or
late), some on nights or weekends (shifts through :func:`maintenance.shifts.shift_intervals`),
hourly rates 40-90; orders of 1-8 h needing 1-2 skills, a third with a deadline from a
RUL lower bound (12-160 h), failure costs 5K-250K with a Weibull CDF, downtime costs
200-5,000 per hour, some production windows, releases, precedences and pinned technicians.
Both plans are checked against every hard constraint (:func:`maintenance.schedule.check_plan`).

Prints per instance: orders, technicians, placed/unplaced by CP-SAT and by the baseline,
CP-SAT's status and wall time (model building included, limit ``--time-limit``), both
total costs (:attr:`maintenance.schedule.Plan.costs`: labour, downtime, parts and risk of
the placements, plus each unplaced order's work deferred past the horizon and its risk
over it, :func:`maintenance.schedule.unplaced_costs`) and CP-SAT's saving on the baseline.

    python bench/schedule.py [--orders 50,200,1000] [--technicians 10,30,100]
                             [--time-limit 10] [--seed 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import time
from datetime import UTC, datetime

import numpy as np

from maintenance.schedule import Crew, Order, check_plan, plan, plan_edd
from maintenance.shifts import shift_intervals
from schemas.maintenance import Shift

HORIZON_H = 168.0
TIMEZONE = "Europe/Berlin"
START = datetime(2026, 11, 1, 23, 0, tzinfo=UTC)  # Monday 2 November 2026, 00:00 in Berlin
SKILLS = (
    "bearings",
    "alignment",
    "electrical",
    "hydraulics",
    "lubrication",
    "welding",
    "vibration",
    "plc",
)
WEEKDAYS = [0, 1, 2, 3, 4]
PATTERNS = (  # (probability, shifts)
    (0.45, (Shift(start="06:00", end="14:00", days=WEEKDAYS),)),
    (0.25, (Shift(start="14:00", end="22:00", days=WEEKDAYS),)),
    (0.15, (Shift(start="22:00", end="06:00", days=[6, 0, 1, 2, 3]),)),
    (
        0.15,
        (
            Shift(start="07:00", end="15:00", days=[1, 2, 3]),
            Shift(start="08:00", end="20:00", days=[5, 6]),
        ),
    ),
)


def technicians(n: int, rng: np.random.Generator) -> list[Crew]:
    crews = []
    weights = np.array([p for p, _ in PATTERNS])
    for t in range(n):
        skills = rng.choice(len(SKILLS), int(rng.integers(2, 5)), replace=False)
        pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=weights))][1]
        shifts = sorted(
            iv for shift in pattern for iv in shift_intervals(shift, TIMEZONE, START, HORIZON_H)
        )
        crews.append(
            Crew(
                id=f"T-{t:03d}",
                skills=frozenset(SKILLS[int(s)] for s in skills),
                hourly_rate=float(round(rng.uniform(40, 90), 1)),
                shifts=tuple(shifts),
            )
        )
    return crews


def weibull_cdf(eta: float, beta: float) -> tuple[tuple[float, float], ...]:
    times = (12.0, 24.0, 48.0, 72.0, 96.0, 120.0, 144.0, 168.0)
    return tuple((t, round(1 - math.exp(-((t / eta) ** beta)), 6)) for t in times)


def work_orders(n: int, crews: list[Crew], rng: np.random.Generator) -> list[Order]:
    orders: list[Order] = []
    n_assets = max(1, int(n * 0.75))
    for k in range(n):
        asset = f"M-{int(rng.integers(n_assets)):04d}"
        needs = frozenset(
            SKILLS[int(s)] for s in rng.choice(len(SKILLS), int(rng.integers(1, 3)), replace=False)
        )
        duration = float(rng.integers(2, 17)) / 2  # 1-8 h in half hours
        beta = float(rng.uniform(1.5, 3.0))
        due = None
        if rng.random() < 1 / 3:
            due = float(round(rng.uniform(12, 160), 1))  # RUL lower bound
            eta = due / (-math.log(0.9)) ** (1 / beta)  # 10 % failed by the lower bound
            priority = "critical" if due < 36 else "high" if due < 96 else "medium"
        else:
            eta = float(rng.uniform(150, 1500))
            priority = str(rng.choice(["low", "medium", "medium", "high"]))
        windows = None
        if rng.random() < 0.2:  # stops only at night (17:00-05:00 local)
            windows = tuple((24.0 * d + 17, 24.0 * d + 29) for d in range(-1, 7))
        elif rng.random() < 0.1:  # or at the weekend
            windows = ((112.0, 168.0),)
        release = float(rng.integers(0, 48)) if rng.random() < 0.15 else 0.0
        after: tuple[str, ...] = ()
        if orders and rng.random() < 0.05:
            after = (orders[int(rng.integers(max(0, len(orders) - 20), len(orders)))].id,)
        pinned = None
        if rng.random() < 0.03:
            able = [c.id for c in crews if needs <= c.skills]
            if able:
                pinned = able[int(rng.integers(len(able)))]
        orders.append(
            Order(
                id=f"WO-2026-11-{k + 1:04d}",
                asset_id=asset,
                duration_h=duration,
                skills=needs,
                due_h=due,
                release_h=release,
                windows=windows,
                after=after,
                downtime_cost_per_h=float(round(rng.uniform(200, 5000))),
                failure_cost=float(round(math.exp(rng.uniform(math.log(5e3), math.log(2.5e5))))),
                failure_cdf=weibull_cdf(eta, beta),
                parts_cost=float(round(rng.uniform(50, 3000))),
                technician_id=pinned,
                priority=priority,
            )
        )
    return orders


def instance(n_orders: int, n_technicians: int, seed: int) -> tuple[list[Order], list[Crew]]:
    rng = np.random.default_rng([seed, n_orders, n_technicians])
    crews = technicians(n_technicians, rng)
    return work_orders(n_orders, crews, rng), crews


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", default="50,200,1000", help="comma-separated counts")
    parser.add_argument("--technicians", default="10,30,100", help="comma-separated counts")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per CP-SAT plan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    order_counts = [int(x) for x in args.orders.split(",")]
    technician_counts = [int(x) for x in args.technicians.split(",")]

    header = (
        f"{'orders':>6} {'techs':>5} | {'cp-sat placed/unpl':>18} {'status':>8} {'time s':>6} "
        f"{'cost':>12} | {'edd placed/unpl':>15} {'time s':>6} {'cost':>12} | {'saving':>7}"
    )
    print(
        f"one week from Monday 00:00 {TIMEZONE}; time limit {args.time_limit:g} s, "
        f"{args.workers} workers, seed {args.seed}"
    )
    print(header)
    print("-" * len(header))
    for n_orders in order_counts:
        for n_technicians in technician_counts:
            orders, crews = instance(n_orders, n_technicians, args.seed)
            began = time.perf_counter()
            base = plan_edd(orders, crews, HORIZON_H)
            edd_s = time.perf_counter() - began
            began = time.perf_counter()
            best = plan(
                orders,
                crews,
                HORIZON_H,
                time_limit_s=args.time_limit,
                workers=args.workers,
                seed=args.seed,
            )
            cp_s = time.perf_counter() - began
            for name, p in (("cp-sat", best), ("edd", base)):
                broken = check_plan(orders, crews, p, HORIZON_H)
                if broken:
                    raise SystemExit(f"{name} plan breaks constraints: {broken[:5]}")
            saving = (base.costs.total - best.costs.total) / base.costs.total * 100
            print(
                f"{n_orders:>6} {n_technicians:>5} | "
                f"{len(best.placements):>8}/{len(best.unplaced):<9} {best.status:>8} "
                f"{cp_s:>6.2f} {best.costs.total:>12,.0f} | "
                f"{len(base.placements):>6}/{len(base.unplaced):<8} {edd_s:>6.2f} "
                f"{base.costs.total:>12,.0f} | {saving:>6.1f}%"
            )


if __name__ == "__main__":
    main()
