"""Plan work orders onto technicians: OR-Tools CP-SAT, and an earliest-due-date baseline.

Hard constraints (both planners): an order runs on one technician who has all its skills
(the pinned one if ``technician_id`` is set), without interruption inside ONE of that
technician's shift intervals and inside one of the order's production windows (if any),
starting at or after ``release_h`` and finishing by ``due_h`` (if any) and by the horizon;
a technician and an asset take one order at a time; an order starts after every order in
its ``after`` has finished (and is not done if one of those is not done). Times are whole
minutes inside the planners (durations rounded up, windows rounded inwards).

Cost of a placed order (:func:`order_costs`, the one cost function of both planners and
the bench): labour = duration x hourly rate; downtime = duration x ``downtime_cost_per_h``;
parts = ``parts_cost``; risk = ``failure_cost`` x F(start), F the probability that the
machine fails before the repair starts (:func:`failure_probability`). An order that is
not placed still has to be done after the horizon (:func:`unplaced_costs`): it costs that
deferred work (labour at the rate of the cheapest qualified technician, or of the pinned
one, else the mean rate; downtime; parts) plus ``failure_cost`` x F(horizon). So placing an
order changes the cost only by the risk it avoids and the labour rate it pays above the
cheapest, and :attr:`Plan.costs` (placements plus unplaced orders) compares plans that place
different orders like for like.

:func:`plan` maximises the orders placed, weighted by priority (:data:`PRIORITY_WEIGHT`),
then minimises cost: each placed order earns its weight times a constant larger than the
largest possible difference in cost between two plans, so the solver never drops an order
to save money. Costs are integer cents in the model. Risk inside one candidate slot is
linear in the start: the secant of F between the slot's earliest and latest start (exact
at both ends; F is piecewise linear and smooth over a shift, so the error inside is small
and both planners report the exact cost of what they return).

The model only holds candidate options: (technician, shift intersected with a production
window, release, due and horizon) that can hold the order, each an optional fixed-size
interval, with NoOverlap per technician shift and per asset; an order with more than
:data:`MAX_OPTIONS` of them (fewer with many orders, :data:`OPTION_BUDGET`) keeps the
cheapest ones by cost at their earliest start, plus the slot of its incumbent placement.
The baseline plan (:func:`plan_edd`) is the first incumbent and a complete solution hint.

* Small problems (up to :data:`FULL_MODEL_OPTIONS` options) are one model of all orders,
  solved for up to :data:`FULL_MODEL_SHARE` of the time; if CP-SAT proves it optimal, that
  is the plan (``status="optimal"``).
* Otherwise, and with the rest of the time, a large-neighbourhood search with CP-SAT as the
  solver: a few technicians alike in skills, over the week or over one or two days, have
  their placements there freed and get unplaced orders they could do (the most valuable
  per hour first, shuffled); everything else stays as in the incumbent (its placements are
  fixed intervals on the same shifts and assets, precedences with it become bounds). Each
  such sub-model (tens of orders) is built and solved in a fraction of a second
  (:data:`LNS_STEP_S`), with the incumbent as hint and a constraint that it costs no more
  than the incumbent there; its result is kept if it places at least the same weight at no
  higher exact cost. The neighbourhood size adapts to how often CP-SAT proves it optimal.
  So on large problems the plan never places less weight nor costs more than the baseline.

``time_limit_s`` bounds the whole call (model building included). :func:`plan` returns the
baseline itself (``status="baseline"``) if the search found nothing better, so it is never
worse than :func:`plan_edd`. Above :data:`PROBING_ABOVE` options presolve probing is off.

>>> crew = Crew("T-1", frozenset({"bearings"}), 50.0, ((0.0, 8.0),))
>>> wo = Order("WO-2026-11-0001", "M-1", 2.0, frozenset({"bearings"}), due_h=6.0)
>>> p = plan([wo], [crew], horizon_h=24, time_limit_s=1)
>>> p.status, p.placements[0].technician_id, p.placements[0].start_h, p.costs.total
('optimal', 'T-1', 0.0, 100.0)
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = [
    "FULL_MODEL_OPTIONS",
    "FULL_MODEL_SHARE",
    "LNS_MAX_SIZE",
    "LNS_MIN_SIZE",
    "LNS_MIN_STEP_S",
    "LNS_SIZE",
    "LNS_STEP_S",
    "MAX_OPTIONS",
    "MIN_OPTIONS",
    "OPTION_BUDGET",
    "PRIORITY_WEIGHT",
    "PROBING_ABOVE",
    "Costs",
    "Crew",
    "Order",
    "Placement",
    "Plan",
    "Unplaced",
    "check_plan",
    "failure_probability",
    "order_costs",
    "plan",
    "plan_edd",
    "unplaced_costs",
]

PRIORITY_WEIGHT: dict[str, int] = {"low": 1, "medium": 2, "high": 4, "critical": 8}
"""Weight of placing an order, by priority; each unit outweighs any difference in cost."""

MAX_OPTIONS = 40
"""Most candidate (technician, slot) options per order in the CP-SAT model (the cheapest
at their earliest start; the incumbent's slot is always kept as well)..."""

OPTION_BUDGET = 20_000
"""... and at most about this many in all: with many orders each keeps fewer (down to
:data:`MIN_OPTIONS`), so 1,000 orders would keep 20 each (only a model of all orders,
up to :data:`FULL_MODEL_OPTIONS`, can come near)."""

MIN_OPTIONS = 8

PROBING_ABOVE = 2_000
"""Above this many options CP-SAT's presolve probing is switched off: it costs seconds on
large models and rarely pays for itself within the time limit."""

FULL_MODEL_OPTIONS = 3_000
"""Up to this many options :func:`plan` first solves one model of all orders (for
:data:`FULL_MODEL_SHARE` of the time); larger problems go straight to neighbourhoods."""

FULL_MODEL_SHARE = 0.5

LNS_SIZE = 40
"""Orders per neighbourhood at first; it grows while CP-SAT proves neighbourhoods optimal
and shrinks while it does not, between :data:`LNS_MIN_SIZE` and :data:`LNS_MAX_SIZE`."""

LNS_MIN_SIZE = 8
LNS_MAX_SIZE = 400

LNS_STEP_S = 0.3
"""Most seconds CP-SAT spends on one neighbourhood."""

LNS_MIN_STEP_S = 0.05

_RESERVE_S = 0.05  # of the time limit, for building the returned plan
_RESERVE_SHARE = 0.02
_CENTS = 100.0

_EPS = 1e-6


# -- interface ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    id: str
    asset_id: str
    duration_h: float
    skills: frozenset[str] = frozenset()
    due_h: float | None = None
    release_h: float = 0.0
    windows: tuple[tuple[float, float], ...] | None = None
    after: tuple[str, ...] = ()
    downtime_cost_per_h: float = 0.0
    failure_cost: float = 0.0
    failure_cdf: tuple[tuple[float, float], ...] = ()
    parts_cost: float = 0.0
    technician_id: str | None = None
    priority: str = "medium"


@dataclass(frozen=True)
class Crew:
    """One technician's availability: on-shift intervals in hours from the plan start."""

    id: str
    skills: frozenset[str]
    hourly_rate: float
    shifts: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Costs:
    labour: float = 0.0
    downtime: float = 0.0
    parts: float = 0.0
    risk: float = 0.0

    @property
    def total(self) -> float:
        return self.labour + self.downtime + self.parts + self.risk

    def __add__(self, other: Costs) -> Costs:
        return Costs(
            self.labour + other.labour,
            self.downtime + other.downtime,
            self.parts + other.parts,
            self.risk + other.risk,
        )


@dataclass(frozen=True)
class Placement:
    order_id: str
    technician_id: str
    start_h: float
    end_h: float
    costs: Costs


@dataclass(frozen=True)
class Unplaced:
    order_id: str
    reason: str
    risk: float  # failure_cost x P(fail within the horizon), also in costs
    costs: Costs = Costs()  # the deferred work and the risk (:func:`unplaced_costs`)


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...]
    unplaced: tuple[Unplaced, ...]
    costs: Costs  # the placements' costs plus the unplaced orders' (deferred work and risk)
    status: str  # "optimal" | "feasible" | "baseline"
    solve_seconds: float
    solver: str  # "cp-sat" | "edd"


# -- costs ----------------------------------------------------------------------------------


def failure_probability(cdf: Sequence[tuple[float, float]], t_h: float) -> float:
    """F(t) from ``(hours, P(failed by then))`` points: linear between points, clamped
    after the last, and from 0 at t=0 to the first point before it.

    >>> cdf = ((10.0, 0.1), (20.0, 0.5))
    >>> [round(failure_probability(cdf, t), 6) for t in (0, 5, 10, 15, 20, 99)]
    [0.0, 0.05, 0.1, 0.3, 0.5, 0.5]
    """
    if not cdf:
        return 0.0
    t0, p0 = cdf[0]
    if t_h <= t0:
        return p0 if t0 <= 0 else p0 * max(t_h, 0.0) / t0
    if t_h >= cdf[-1][0]:
        return cdf[-1][1]
    j = bisect.bisect_left(cdf, t_h, key=lambda point: point[0])
    (ta, pa), (tb, pb) = cdf[j - 1], cdf[j]
    return pa + (pb - pa) * (t_h - ta) / (tb - ta)


def order_costs(order: Order, crew: Crew, start_h: float) -> Costs:
    """The cost of doing ``order`` with ``crew`` from ``start_h`` (hours from plan start)."""
    return Costs(
        labour=order.duration_h * crew.hourly_rate,
        downtime=order.duration_h * order.downtime_cost_per_h,
        parts=order.parts_cost,
        risk=order.failure_cost * failure_probability(order.failure_cdf, start_h),
    )


def unplaced_costs(order: Order, crews: Sequence[Crew], horizon_h: float) -> Costs:
    """The cost of leaving ``order`` undone in a plan of ``horizon_h`` hours: it still has to
    be done after the horizon, so its labour (at the rate of the technician it is pinned to,
    else of the cheapest technician with its skills, else the mean rate of all), downtime and
    parts, plus its risk over the horizon, ``failure_cost`` x F(horizon).

    >>> o = Order("WO-1", "M-1", 2.0, frozenset({"plc"}), downtime_cost_per_h=100.0,
    ...           parts_cost=30.0, failure_cost=1000.0, failure_cdf=((10.0, 0.5),))
    >>> crews = [Crew("T-1", frozenset({"plc"}), 60.0, ()), Crew("T-2", frozenset(), 20.0, ())]
    >>> unplaced_costs(o, crews, 5.0)
    Costs(labour=120.0, downtime=200.0, parts=30.0, risk=250.0)
    >>> unplaced_costs(o, crews[1:], 5.0).labour  # nobody has the skills: the mean rate
    40.0
    """
    skilled = [c for c in crews if frozenset(order.skills) <= frozenset(c.skills)]
    pinned = [c for c in skilled if c.id == order.technician_id]
    rates = [c.hourly_rate for c in pinned or skilled] or [c.hourly_rate for c in crews]
    rate = (min if pinned or skilled else statistics.fmean)(rates) if rates else 0.0
    return Costs(
        labour=order.duration_h * rate,
        downtime=order.duration_h * order.downtime_cost_per_h,
        parts=order.parts_cost,
        risk=order.failure_cost * failure_probability(order.failure_cdf, horizon_h),
    )


# -- validation -----------------------------------------------------------------------------


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_order(o: Order) -> None:
    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"order {o.id!r}: {field} {why}")

    if not isinstance(o.id, str) or not o.id:
        raise ValueError(f"order {o.id!r}: id must be a non-empty string")
    if not _finite(o.duration_h) or o.duration_h <= 0:
        raise bad("duration_h", f"must be a positive finite number of hours, got {o.duration_h!r}")
    if not _finite(o.release_h) or o.release_h < 0:
        raise bad("release_h", f"must be a finite number >= 0, got {o.release_h!r}")
    if o.due_h is not None and not _finite(o.due_h):
        raise bad("due_h", f"must be a finite number or None, got {o.due_h!r}")
    for name in ("downtime_cost_per_h", "failure_cost", "parts_cost"):
        value = getattr(o, name)
        if not _finite(value) or value < 0:
            raise bad(name, f"must be a finite number >= 0, got {value!r}")
    if o.windows is not None:
        for w in o.windows:
            if len(w) != 2 or not (_finite(w[0]) and _finite(w[1])) or w[0] >= w[1]:
                raise bad("windows", f"has an invalid window {w!r} (finite start < end)")
    last_t, last_p = -math.inf, 0.0
    for point in o.failure_cdf:
        if len(point) != 2 or not (_finite(point[0]) and _finite(point[1])):
            raise bad("failure_cdf", f"has an invalid point {point!r}")
        t, p = point
        if t < 0 or t <= last_t:
            raise bad("failure_cdf", f"times must be >= 0 and increasing, got {t!r}")
        if not 0 <= p <= 1 or p < last_p:
            raise bad("failure_cdf", f"probabilities must be in [0, 1] and non-decreasing at {t!r}")
        last_t, last_p = t, p
    if o.priority not in PRIORITY_WEIGHT:
        raise bad("priority", f"must be one of {', '.join(PRIORITY_WEIGHT)}, got {o.priority!r}")
    if isinstance(o.after, str):
        raise bad("after", "must be a tuple of order ids, not a string")


def _check_crew(c: Crew) -> None:
    if not _finite(c.hourly_rate) or c.hourly_rate < 0:
        raise ValueError(f"technician {c.id!r}: hourly_rate must be finite >= 0")
    for s in c.shifts:
        if len(s) != 2 or not (_finite(s[0]) and _finite(s[1])) or s[0] >= s[1]:
            raise ValueError(f"technician {c.id!r}: shifts has an invalid interval {s!r}")


# -- the shared preparation -----------------------------------------------------------------


def _ceil_min(h: float) -> int:
    return math.ceil(h * 60 - _EPS)


def _floor_min(h: float) -> int:
    return math.floor(h * 60 + _EPS)


def _intersect(
    a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """Pieces of sorted, disjoint ``a`` intersected with sorted ``b``: (index in a, lo, hi)."""
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((i, lo, hi))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return out


@dataclass(frozen=True, slots=True)
class _Option:
    crew: int
    group: int  # NoOverlap group of the crew (its shift, or the crew if shifts overlap)
    lo: int  # earliest start, minutes
    hi: int  # latest start, minutes


def _names(skills: Iterable[str]) -> str:
    return ", ".join(sorted(skills))


class _Problem:
    """Validated input, integer minutes, candidate options and pre-solve reasons."""

    def __init__(self, orders: Sequence[Order], crews: Sequence[Crew], horizon_h: float):
        if not _finite(horizon_h) or horizon_h <= 0:
            raise ValueError(f"horizon_h must be a positive finite number, got {horizon_h!r}")
        self.orders = list(orders)
        self.crews = list(crews)
        self.horizon_h = float(horizon_h)
        self.horizon = _floor_min(horizon_h)
        index: dict[str, int] = {}
        for i, o in enumerate(self.orders):
            _check_order(o)
            if o.id in index:
                raise ValueError(f"order {o.id!r}: id is a duplicate")
            index[o.id] = i
        self.index = index
        crew_index: dict[str, int] = {}
        for k, c in enumerate(self.crews):
            _check_crew(c)
            if c.id in crew_index:
                raise ValueError(f"technician {c.id!r}: id is a duplicate")
            crew_index[c.id] = k
        self.crew_index = crew_index
        self.preds: list[list[int]] = []
        for o in self.orders:
            ps = []
            for p in o.after:
                if p not in index:
                    raise ValueError(f"order {o.id!r}: after names an unknown order {p!r}")
                if p == o.id:
                    raise ValueError(f"order {o.id!r}: after names the order itself")
                ps.append(index[p])
            self.preds.append(ps)
        self.topo = self._topological()

        # crews in minutes; NoOverlap groups are shifts, unless a crew's shifts overlap
        self.crew_shifts: list[list[tuple[int, int]]] = []
        self.crew_groups: list[list[int]] = []
        n_groups = 0
        for c in self.crews:
            shifts = sorted(
                (max(_ceil_min(a), 0), min(_floor_min(b), self.horizon)) for a, b in c.shifts
            )
            shifts = [(a, b) for a, b in shifts if b > a]
            overlap = any(s[1] > t[0] for s, t in pairwise(shifts))
            if overlap:
                groups = [n_groups] * len(shifts)
                n_groups += 1
            else:
                groups = list(range(n_groups, n_groups + len(shifts)))
                n_groups += len(shifts)
            self.crew_shifts.append(shifts)
            self.crew_groups.append(groups)
        self.n_groups = n_groups
        self.duration = [_ceil_min(o.duration_h) for o in self.orders]
        self.options: list[list[_Option]] = [[] for _ in self.orders]
        self.reason: dict[int, str] = {}
        for i in self.topo:
            self._enumerate(i)
        self.unplaced_costs = [unplaced_costs(o, self.crews, self.horizon_h) for o in self.orders]

    def _topological(self) -> list[int]:
        n = len(self.orders)
        succ: list[list[int]] = [[] for _ in range(n)]
        indegree = [len(set(ps)) for ps in self.preds]
        for i, ps in enumerate(self.preds):
            for p in set(ps):
                succ[p].append(i)
        ready = [i for i in range(n) if indegree[i] == 0]
        out = []
        while ready:
            i = ready.pop()
            out.append(i)
            for s in succ[i]:
                indegree[s] -= 1
                if indegree[s] == 0:
                    ready.append(s)
        if len(out) < n:
            stuck = sorted(self.orders[i].id for i in range(n) if indegree[i] > 0)
            raise ValueError(f"order {stuck[0]!r}: after forms a cycle (among {', '.join(stuck)})")
        self.succ = succ
        return out

    def _enumerate(self, i: int) -> None:
        o = self.orders[i]
        d = self.duration[i]
        skills = frozenset(o.skills)
        skilled = [k for k, c in enumerate(self.crews) if skills <= frozenset(c.skills)]
        if not skilled:
            self.reason[i] = (
                f"no technician has the skills {_names(skills)}"
                if skills
                else "no technician is available"
            )
            return
        if o.technician_id is not None:
            k = self.crew_index.get(o.technician_id)
            if k is None:
                self.reason[i] = f"pinned technician {o.technician_id} is unknown"
                return
            if k not in skilled:
                missing = skills - frozenset(self.crews[k].skills)
                self.reason[i] = (
                    f"pinned technician {o.technician_id} lacks skills {_names(missing)}"
                )
                return
            skilled = [k]
        longest = max((b - a for k in skilled for a, b in self.crew_shifts[k]), default=0)
        if longest == 0:
            self.reason[i] = "no technician with the skills has a shift within the horizon"
            return
        if longest < d:
            self.reason[i] = (
                f"takes {o.duration_h:g} h, longer than any shift of a technician with the skills"
            )
            return
        earliest = max(_ceil_min(o.release_h), 0)
        latest = self.horizon if o.due_h is None else min(self.horizon, _floor_min(o.due_h))
        allowed = [(earliest, latest)] if latest > earliest else []
        if o.windows is not None:
            windows = sorted((_ceil_min(a), _floor_min(b)) for a, b in o.windows)
            pieces = [(lo, hi) for _, lo, hi in _intersect(windows, allowed) if hi > lo]
            allowed = _merge(pieces)
        options = []
        for k in skilled:
            groups = self.crew_groups[k]
            for s, lo, hi in _intersect(self.crew_shifts[k], allowed):
                if hi - lo >= d:
                    options.append(_Option(k, groups[s], lo, hi - d))
        if not options:
            where = " inside a production window" if o.windows is not None else ""
            after = f" after the release at +{o.release_h:g} h" if o.release_h > 0 else ""
            by = (
                "within the horizon"
                if o.due_h is None or o.due_h >= self.horizon_h
                else f"before the latest safe finish at +{o.due_h:g} h"
            )
            self.reason[i] = f"no shift of a qualified technician{where}{after} ends {by}"
            return
        for p in self.preds[i]:
            if p in self.reason:
                self.reason[i] = f"waits for {self.orders[p].id}, which could not be placed"
                return
        options.sort(key=lambda op: (op.lo, self.crews[op.crew].hourly_rate, op.crew))
        self.options[i] = options

    def weight(self, i: int) -> int:
        return PRIORITY_WEIGHT[self.orders[i].priority]

    def booked_reason(self, i: int, placed: set[int]) -> str:
        for p in self.preds[i]:
            if p not in placed:
                return f"waits for {self.orders[p].id}, which could not be placed"
        due = self.orders[i].due_h
        if due is None or due >= self.horizon_h:
            return "qualified technicians are fully booked within the horizon"
        return f"qualified technicians are fully booked before the latest safe finish at +{due:g} h"

    def result(
        self,
        chosen: dict[int, tuple[_Option, int]],
        status: str,
        solver: str,
        began: float,
    ) -> Plan:
        """A plan from chosen (option, start minute) per order, with exact costs."""
        placements = []
        total = Costs()
        for i in sorted(chosen, key=lambda i: (chosen[i][1], self.orders[i].id)):
            option, start = chosen[i]
            o, crew = self.orders[i], self.crews[option.crew]
            costs = order_costs(o, crew, start / 60)
            total += costs
            placements.append(
                Placement(o.id, crew.id, start / 60, start / 60 + o.duration_h, costs)
            )
        unplaced = []
        placed = set(chosen)
        for i in self.topo:
            if i in placed:
                continue
            reason = self.reason.get(i) or self.booked_reason(i, placed)
            costs = self.unplaced_costs[i]
            total += costs
            unplaced.append(Unplaced(self.orders[i].id, reason, costs.risk, costs))
        unplaced.sort(key=lambda u: self.index[u.order_id])
        return Plan(
            tuple(placements),
            tuple(unplaced),
            total,
            status,
            time.perf_counter() - began,
            solver,
        )


def _merge(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(pieces):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


# -- the baseline ---------------------------------------------------------------------------


class _Busy:
    """Sorted, disjoint busy intervals [start, end) in minutes."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def conflict_end(self, t: int, d: int) -> int | None:
        """The end of the first busy interval that overlaps [t, t + d), if any."""
        j = bisect.bisect_right(self.ends, t)
        if j < len(self.ends) and self.starts[j] < t + d:
            return self.ends[j]
        return None

    def add(self, t: int, d: int) -> None:
        j = bisect.bisect_left(self.starts, t)
        self.starts.insert(j, t)
        self.ends.insert(j, t + d)


def _earliest(t: int, d: int, latest: int, busy: tuple[_Busy, _Busy]) -> int | None:
    while t <= latest:
        moved = False
        for b in busy:
            end = b.conflict_end(t, d)
            if end is not None:
                t, moved = end, True
        if not moved:
            return t
    return None


def _edd(problem: _Problem) -> dict[int, tuple[_Option, int]]:
    """Earliest (effective) due date first, each order in its earliest feasible slot
    (ties: the cheapest technician, then the technician's id)."""
    orders = problem.orders
    # a predecessor is as urgent as the most urgent order waiting for it
    due = [math.inf if o.due_h is None else o.due_h for o in orders]
    for i in reversed(problem.topo):
        for s in problem.succ[i]:
            due[i] = min(due[i], due[s])
    waiting = [len(set(ps)) for ps in problem.preds]

    def key(i: int) -> tuple[float, int, float, str]:
        return (due[i], -problem.weight(i), orders[i].release_h, orders[i].id)

    heap = [(key(i), i) for i in range(len(orders)) if waiting[i] == 0]
    heapq.heapify(heap)
    crew_busy = [_Busy() for _ in problem.crews]
    asset_busy: dict[str, _Busy] = {}
    chosen: dict[int, tuple[_Option, int]] = {}
    while heap:
        _, i = heapq.heappop(heap)
        for s in problem.succ[i]:
            waiting[s] -= 1
            if waiting[s] == 0:
                heapq.heappush(heap, (key(s), s))
        if i in problem.reason or any(p not in chosen for p in problem.preds[i]):
            continue
        d = problem.duration[i]
        ready = max(
            (chosen[p][1] + problem.duration[p] for p in problem.preds[i]),
            default=0,
        )
        asset = asset_busy.setdefault(orders[i].asset_id, _Busy())
        best: tuple[int, float, str, _Option] | None = None
        for option in problem.options[i]:  # sorted by earliest start
            lo = max(option.lo, ready)
            if best is not None and lo > best[0]:
                break
            t = _earliest(lo, d, option.hi, (crew_busy[option.crew], asset))
            if t is None:
                continue
            crew = problem.crews[option.crew]
            candidate = (t, crew.hourly_rate, crew.id, option)
            if best is None or candidate[:3] < best[:3]:
                best = candidate
        if best is not None:
            t, _, _, option = best
            chosen[i] = (option, t)
            crew_busy[option.crew].add(t, d)
            asset.add(t, d)
    return chosen


def plan_edd(orders: Sequence[Order], crews: Sequence[Crew], horizon_h: float = 168.0) -> Plan:
    """The baseline: earliest due date first (an order waited for inherits the due date of
    the order waiting), each order to the earliest feasible slot, ties to the cheapest
    technician. No solver."""
    began = time.perf_counter()
    problem = _Problem(orders, crews, horizon_h)
    return problem.result(_edd(problem), "baseline", "edd", began)


# -- CP-SAT ---------------------------------------------------------------------------------

_Chosen = dict[int, tuple[_Option, int]]


def _clip(option: _Option, lo: int, hi: int) -> _Option | None:
    """``option`` with its start range cut to [lo, hi], or None if nothing is left."""
    lo, hi = max(option.lo, lo), min(option.hi, hi)
    if lo > hi:
        return None
    if lo == option.lo and hi == option.hi:
        return option
    return _Option(option.crew, option.group, lo, hi)


class _Search:
    """CP-SAT on the whole problem or on a neighbourhood of an incumbent plan."""

    def __init__(
        self, problem: _Problem, incumbent: _Chosen, deadline: float, workers: int, seed: int
    ):
        self.problem = problem
        self.incumbent: _Chosen = dict(incumbent)
        self.deadline = deadline
        self.workers = workers
        self.seed = seed
        self.active = [i for i in range(len(problem.orders)) if i not in problem.reason]
        self.by_asset: dict[str, list[int]] = {}
        for i in self.active:
            self.by_asset.setdefault(problem.orders[i].asset_id, []).append(i)
        self.qualified: list[list[int]] = [[] for _ in problem.crews]  # orders per crew
        for i in self.active:
            for k in sorted({op.crew for op in problem.options[i]}):
                self.qualified[k].append(i)
        self.on_crew: list[set[int]] = [set() for _ in problem.crews]  # incumbent per crew
        for i, (op, _) in self.incumbent.items():
            self.on_crew[op.crew].add(i)
        self.build_s = 0.0  # Python seconds to build the last model
        # how much placing an order is worth: its weight per hour, more if it saves a lot
        saving = [0.0] * len(problem.orders)
        for i in self.active:
            cheapest = min(self.option_cents(i, op)[0] for op in problem.options[i]) / _CENTS
            saving[i] = max(problem.unplaced_costs[i].total - cheapest, 0.0)
        most = max(saving, default=0.0) or 1.0
        self.appeal = [
            problem.weight(i) / math.sqrt(problem.orders[i].duration_h) * (1 + saving[i] / most)
            for i in range(len(problem.orders))
        ]

    # exact values -------------------------------------------------------------------------

    def value(self, i: int, chosen: _Chosen) -> tuple[int, float]:
        """(weight placed, exact cost) of order ``i`` in ``chosen``."""
        p = self.problem
        if i not in chosen:
            return 0, p.unplaced_costs[i].total
        option, start = chosen[i]
        return p.weight(i), order_costs(p.orders[i], p.crews[option.crew], start / 60).total

    def option_cents(self, i: int, option: _Option) -> tuple[float, float]:
        """The model's cost of ``option`` at its earliest and at its latest start (cents)."""
        o = self.problem.orders[i]
        rate = self.problem.crews[option.crew].hourly_rate
        base = o.duration_h * (rate + o.downtime_cost_per_h) + o.parts_cost
        r_lo = o.failure_cost * failure_probability(o.failure_cdf, option.lo / 60)
        r_hi = o.failure_cost * failure_probability(o.failure_cdf, option.hi / 60)
        return (base + r_lo) * _CENTS, (base + r_hi) * _CENTS

    # one CP-SAT model ---------------------------------------------------------------------

    def solve(
        self,
        options: dict[int, list[_Option]],
        forced: set[int],
        window: tuple[int, int],
        time_limit_s: float,
        most: int | None = None,
        capped: bool = False,
    ) -> tuple[bool, _Chosen | None]:
        """Re-plan the orders in ``options`` (each on one of its options, or not at all; those
        in ``forced`` placed) around the incumbent's other placements in ``window``.
        Returns (proved optimal, new choice for those orders), or (False, None)."""
        from ortools.sat.python import cp_model

        entered = time.perf_counter()
        p = self.problem
        members = set(options)
        model = cp_model.CpModel()
        kept: dict[int, list[_Option]] = {}
        static: dict[int, list[int]] = {}
        slope: dict[int, list[int]] = {}
        big = 1
        for i, ops in options.items():
            hint = self.incumbent.get(i)
            rows = [(*self.option_cents(i, op), op) for op in ops]
            if most is not None and len(rows) > most:
                rows.sort(key=lambda row: (row[0], row[2].lo))
                rows = rows[:most] + [row for row in rows[most:] if self.holds(row[2], hint)]
            kept[i] = [row[2] for row in rows]
            static[i] = [round(row[0]) for row in rows]
            slope[i] = [
                round((row[1] - row[0]) / (row[2].hi - row[2].lo)) if row[2].hi > row[2].lo else 0
                for row in rows
            ]
            worst = max((math.ceil(max(row[0], row[1])) + 1 for row in rows), default=1)
            big += max(worst, math.ceil(p.unplaced_costs[i].total * _CENTS) + 1)

        w0, w1 = window
        groups: dict[int, list[cp_model.IntervalVar]] = {}
        assets: dict[str, list[cp_model.IntervalVar]] = {}
        presence: dict[int, list[cp_model.IntVar]] = {}
        starts: dict[int, list[cp_model.IntVar]] = {}
        placed: dict[int, cp_model.IntVar] = {}
        terms: list[cp_model.IntVar] = []  # the cost (less the cost of leaving all undone)
        coefs: list[int] = []
        rewards: list[cp_model.IntVar] = []  # the weight placed, each unit worth ``big``
        weights: list[int] = []
        for i, ops in kept.items():
            d = p.duration[i]
            asset = assets.setdefault(p.orders[i].asset_id, [])
            xs, ss = [], []
            for k, option in enumerate(ops):
                x = model.new_bool_var(f"x{i}_{k}")
                if option.hi > option.lo:
                    s = model.new_int_var(option.lo, option.hi, f"s{i}_{k}")
                    model.add(s == option.lo).only_enforce_if(~x)
                    if slope[i][k]:
                        terms.append(s)
                        coefs.append(slope[i][k])
                else:
                    s = model.new_constant(option.lo)
                iv = model.new_optional_fixed_size_interval_var(s, d, x, f"iv{i}_{k}")
                groups.setdefault(option.group, []).append(iv)
                asset.append(iv)
                xs.append(x)
                ss.append(s)
                terms.append(x)
                coefs.append(static[i][k])
            y = model.new_bool_var(f"placed{i}")
            model.add(sum(xs) == y)
            if i in forced:
                model.add(y == 1)
            placed[i], presence[i], starts[i] = y, xs, ss
            # placing earns its weight and saves the cost of leaving the order undone
            terms.append(y)
            coefs.append(-round(p.unplaced_costs[i].total * _CENTS))
            rewards.append(y)
            weights.append(-p.weight(i) * big)

        # the incumbent's other placements in the window, as fixed intervals
        for j, (op, start) in self.incumbent.items():
            if j in members or start >= w1 or start + p.duration[j] <= w0:
                continue
            lanes = [groups.get(op.group), assets.get(p.orders[j].asset_id)]
            if lanes[0] is None and lanes[1] is None:
                continue
            iv = model.new_fixed_size_interval_var(start, p.duration[j], f"fixed{j}")
            for lane in lanes:
                if lane is not None:
                    lane.append(iv)
        for lane in (*groups.values(), *assets.values()):
            if len(lane) > 1:
                model.add_no_overlap(lane)

        # precedence among the members, through one start variable per order involved
        linked = {i for i in kept for q in p.preds[i] if q in members}
        linked |= {q for i in kept for q in p.preds[i] if q in members}
        start_of: dict[int, cp_model.IntVar] = {}
        for i in linked:
            lo = min((op.lo for op in kept[i]), default=0)
            hi = max((op.hi for op in kept[i]), default=0)
            start_of[i] = model.new_int_var(lo, hi, f"start{i}")
            for x, s in zip(presence[i], starts[i], strict=True):
                model.add(start_of[i] == s).only_enforce_if(x)
        for i in kept:
            for q in set(p.preds[i]):
                if q in members:
                    model.add_implication(placed[i], placed[q])
                    model.add(start_of[q] + p.duration[q] <= start_of[i]).only_enforce_if(placed[i])

        cost = cp_model.LinearExpr.weighted_sum(terms, coefs)
        model.minimize(cost + cp_model.LinearExpr.weighted_sum(rewards, weights))
        if capped:  # no dearer than the incumbent
            hinted = 0
            for i, ops in kept.items():
                hint = self.incumbent.get(i)
                at = next((k for k, op in enumerate(ops) if self.holds(op, hint)), None)
                for k, op in enumerate(ops):
                    if hint is not None and k == at:
                        hinted += static[i][k] + slope[i][k] * hint[1]
                    else:
                        hinted += slope[i][k] * op.lo
                if at is not None:
                    hinted -= round(p.unplaced_costs[i].total * _CENTS)
            model.add(cost <= hinted)

        # the incumbent as a complete hint
        for i, ops in kept.items():
            hint = self.incumbent.get(i)
            at = next((k for k, op in enumerate(ops) if self.holds(op, hint)), None)
            model.add_hint(placed[i], at is not None)
            for k, (x, s) in enumerate(zip(presence[i], starts[i], strict=True)):
                model.add_hint(x, k == at)
                if ops[k].hi > ops[k].lo:
                    model.add_hint(s, hint[1] if hint is not None and k == at else ops[k].lo)
            if i in start_of:
                first = min((op.lo for op in ops), default=0)
                model.add_hint(
                    start_of[i], hint[1] if hint is not None and at is not None else first
                )

        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.01, time_limit_s)
        solver.parameters.num_workers = self.workers
        solver.parameters.random_seed = self.seed
        if sum(len(ops) for ops in kept.values()) > PROBING_ABOVE:
            solver.parameters.cp_model_probing_level = 0
        self.build_s = time.perf_counter() - entered
        code = solver.solve(model)
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return False, None
        chosen: _Chosen = {}
        for i, ops in kept.items():
            if solver.boolean_value(placed[i]):
                for op, x, s in zip(ops, presence[i], starts[i], strict=True):
                    if solver.boolean_value(x):
                        chosen[i] = (op, solver.value(s))
                        break
        return code == cp_model.OPTIMAL, chosen

    @staticmethod
    def holds(option: _Option, hint: tuple[_Option, int] | None) -> bool:
        return (
            hint is not None
            and option.crew == hint[0].crew
            and option.group == hint[0].group
            and option.lo <= hint[1] <= option.hi
        )

    # neighbourhoods -----------------------------------------------------------------------

    def neighbourhood(
        self, rng: random.Random, size: int
    ) -> tuple[dict[int, list[_Option]], set[int], tuple[int, int]]:
        """Technicians alike in skills over the week or over one or two days: their orders
        there are freed, with unplaced orders they could do (the most important first,
        shuffled a little); everything else stays where the incumbent has it."""
        p = self.problem
        horizon = p.horizon
        if rng.random() < 0.5 or horizon <= 1440:
            w0, w1 = 0, horizon
        else:
            length = rng.choice((1440, 2880))
            w0 = rng.randrange(0, max(horizon - length, 0) + 1, 60)
            w1 = min(horizon, w0 + length)
        usable = [k for k in range(len(p.crews)) if self.qualified[k]]
        if not usable:
            return {}, set(), (w0, w1)
        first = rng.choice(usable)
        skills = frozenset(p.crews[first].skills)

        def alike(k: int) -> float:
            other = frozenset(p.crews[k].skills)
            return len(skills & other) / max(len(skills | other), 1) + rng.random()

        def inside(k: int) -> set[int]:
            return {
                i
                for i in self.on_crew[k]
                if self.incumbent[i][1] >= w0 and self.incumbent[i][1] + p.duration[i] <= w1
            }

        crews = [first]
        freed = inside(first)
        for k in sorted((k for k in usable if k != first), key=alike, reverse=True):
            if len(freed) >= size // 2:
                break
            crews.append(k)
            freed |= inside(k)
        chosen_crews = set(crews)
        seen: set[int] = set()
        candidates = []
        for k in crews:
            for i in self.qualified[k]:
                if i in seen or i in self.incumbent:
                    continue
                seen.add(i)
                if all(q in self.incumbent for q in p.preds[i]):
                    candidates.append((self.appeal[i] * (0.5 + rng.random()), i))
        candidates.sort(reverse=True)
        room = max(size - len(freed), size // 3)
        members = freed | {i for _, i in candidates[:room]}

        options: dict[int, list[_Option]] = {}
        forced: set[int] = set()
        for i in members:
            d = p.duration[i]
            lo, hi = w0, w1 - d
            for q in p.preds[i]:
                if q not in members:
                    lo = max(lo, self.incumbent[q][1] + p.duration[q])
            for s in p.succ[i]:
                if s not in members and s in self.incumbent:
                    forced.add(i)
                    hi = min(hi, self.incumbent[s][1] - d)
            ops = []
            for op in p.options[i]:
                if op.crew in chosen_crews:
                    cut = _clip(op, lo, hi)
                    if cut is not None:
                        ops.append(cut)
            if ops or i in self.incumbent:
                options[i] = ops
        return options, forced, (w0, w1)

    def improve(self, until: float, rng: random.Random) -> None:
        """Re-optimise neighbourhoods of the incumbent with CP-SAT until ``until``: each
        step places at least the weight the incumbent has there at no higher cost."""
        size = float(LNS_SIZE)
        build = 0.05  # expected seconds to pick and build a neighbourhood
        while True:
            started = time.perf_counter()
            if until - started < build + LNS_MIN_STEP_S:
                break
            options, forced, window = self.neighbourhood(rng, int(size))
            if not options:
                continue
            old = [self.value(i, self.incumbent) for i in options]
            picked = time.perf_counter() - started
            limit = min(LNS_STEP_S, until - time.perf_counter() - 1.5 * self.build_s - 0.01)
            if limit < LNS_MIN_STEP_S:
                break
            optimal, chosen = self.solve(options, forced, window, limit, MAX_OPTIONS, True)
            build = max(build, 1.5 * (picked + self.build_s))
            if chosen is None:
                size = max(LNS_MIN_SIZE, size * 0.8)
                continue
            size = min(LNS_MAX_SIZE, size * 1.1) if optimal else max(LNS_MIN_SIZE, size * 0.9)
            new = [self.value(i, chosen) for i in options]
            weight_old, weight_new = sum(w for w, _ in old), sum(w for w, _ in new)
            cost_old, cost_new = sum(c for _, c in old), sum(c for _, c in new)
            if weight_new < weight_old or cost_new > cost_old + 1e-6:
                continue  # the model's risk is a secant: the exact cost may be a little higher
            for i in options:
                if i in self.incumbent:
                    self.on_crew[self.incumbent.pop(i)[0].crew].discard(i)
                if i in chosen:
                    self.incumbent[i] = chosen[i]
                    self.on_crew[chosen[i][0].crew].add(i)


def _score(problem: _Problem, plan_: Plan) -> tuple[int, float]:
    """(weighted placed orders, -total cost): larger is better."""
    weight = sum(problem.weight(problem.index[p.order_id]) for p in plan_.placements)
    return weight, -plan_.costs.total


def plan(
    orders: Sequence[Order],
    crews: Sequence[Crew],
    horizon_h: float = 168.0,
    time_limit_s: float = 10.0,
    workers: int = 2,
    seed: int = 0,
) -> Plan:
    """Place orders with CP-SAT (see the module docstring): one model of all orders if the
    problem is small, else (or if that is not proved optimal in time) CP-SAT on a sequence
    of neighbourhoods of the incumbent. ``time_limit_s`` bounds the whole call, model
    building included. ``status`` is ``"optimal"`` or ``"feasible"``, or ``"baseline"`` when
    the solver did not beat the earliest-due-date plan (returned then)."""
    began = time.perf_counter()
    problem = _Problem(orders, crews, horizon_h)
    baseline = _edd(problem)
    baseline_plan = problem.result(baseline, "baseline", "edd", began)
    active = [i for i in range(len(problem.orders)) if i not in problem.reason]
    if not active:
        return problem.result({}, "optimal", "cp-sat", began)

    until = began + time_limit_s - _RESERVE_S - _RESERVE_SHARE * time_limit_s
    search = _Search(problem, baseline, until, workers, seed)
    optimal = False
    if sum(len(problem.options[i]) for i in active) <= FULL_MODEL_OPTIONS:
        most = max(MIN_OPTIONS, min(MAX_OPTIONS, OPTION_BUDGET // len(active)))
        limit = FULL_MODEL_SHARE * (until - time.perf_counter())
        everything = {i: problem.options[i] for i in active}
        optimal, chosen = search.solve(everything, set(), (0, problem.horizon), limit, most)
        if chosen is not None:
            search.incumbent = chosen
            search.on_crew = [set() for _ in problem.crews]
            for i, (op, _) in chosen.items():
                search.on_crew[op.crew].add(i)
    if not optimal:
        search.improve(until, random.Random(seed))
    status = "optimal" if optimal else "feasible"
    result = problem.result(search.incumbent, status, "cp-sat", began)
    base_score, score = _score(problem, baseline_plan), _score(problem, result)
    if base_score > score or (base_score == score and not optimal):
        return _with_time(baseline_plan, began)
    return result


def _with_time(p: Plan, began: float) -> Plan:
    return Plan(p.placements, p.unplaced, p.costs, p.status, time.perf_counter() - began, p.solver)


# -- checking a plan ------------------------------------------------------------------------


def check_plan(
    orders: Sequence[Order], crews: Sequence[Crew], result: Plan, horizon_h: float = 168.0
) -> list[str]:
    """Every hard constraint the plan breaks (an empty list for a valid plan)."""
    tol = 1e-6
    problems: list[str] = []
    by_id = {o.id: o for o in orders}
    crew_by_id = {c.id: c for c in crews}
    where: dict[str, Placement] = {}
    for p in result.placements:
        o, c = by_id.get(p.order_id), crew_by_id.get(p.technician_id)
        if o is None or c is None:
            problems.append(f"{p.order_id}: unknown order or technician {p.technician_id}")
            continue
        if p.order_id in where:
            problems.append(f"{p.order_id}: placed twice")
        where[p.order_id] = p
        if abs(p.end_h - p.start_h - o.duration_h) > tol:
            problems.append(f"{o.id}: runs {p.end_h - p.start_h} h, not {o.duration_h} h")
        if not frozenset(o.skills) <= frozenset(c.skills):
            problems.append(f"{o.id}: {c.id} lacks skills")
        if o.technician_id is not None and o.technician_id != c.id:
            problems.append(f"{o.id}: pinned to {o.technician_id}, placed on {c.id}")
        if not any(a - tol <= p.start_h and p.end_h <= b + tol for a, b in c.shifts):
            problems.append(f"{o.id}: not inside one shift of {c.id}")
        if o.windows is not None and not any(
            a - tol <= p.start_h and p.end_h <= b + tol for a, b in o.windows
        ):
            problems.append(f"{o.id}: not inside a production window")
        if p.start_h < o.release_h - tol:
            problems.append(f"{o.id}: starts before its release")
        if o.due_h is not None and p.end_h > o.due_h + tol:
            problems.append(f"{o.id}: finishes after its due time")
        if p.start_h < -tol or p.end_h > horizon_h + tol:
            problems.append(f"{o.id}: outside the horizon")
    for key in ("technician", "asset"):
        lanes: dict[str, list[Placement]] = {}
        for p in where.values():
            lane = p.technician_id if key == "technician" else by_id[p.order_id].asset_id
            lanes.setdefault(lane, []).append(p)
        for lane, ps in lanes.items():
            ps.sort(key=lambda p: p.start_h)
            for a, b in pairwise(ps):
                if b.start_h < a.end_h - tol:
                    problems.append(f"{a.order_id} and {b.order_id} overlap on {key} {lane}")
    for p in where.values():
        for q in by_id[p.order_id].after:
            if q not in where:
                problems.append(f"{p.order_id}: placed, but {q} it waits for is not")
            elif where[q].end_h > p.start_h + tol:
                problems.append(f"{p.order_id}: starts before {q} finishes")
    unplaced = {u.order_id for u in result.unplaced}
    for o in orders:
        if (o.id in where) == (o.id in unplaced):
            problems.append(f"{o.id}: must be either placed or unplaced, exactly once")
    return problems
