"""What the operations dashboard asks of GraphQL beyond the twin and maintenance fields of
:mod:`api.graphql` (merged into the same schema there):

* ``fleetTable(site, line)``: every machine's row of the fleet page in one value (status,
  health, RUL median and interval, P(fail within 7 days), failure mode, version), and the
  subscription ``fleetChanged(everyMs)``: the rows of the machines whose twin event or
  RUL prediction arrived, at most one message every ``everyMs`` (the first change goes at
  once; later ones in the same window are coalesced). ``rows`` is a JSON list of flat
  objects rather than a list of GraphQL objects: a plant of 2,000 machines is 2,000 rows
  of 16 scalars, which the cost limit would refuse as 32,000 fields, and which strawberry
  resolves field by field in about 160 ms here (the same rows as one value: 5 ms); a
  row's names are those of the ``Asset`` fields with the same meaning.
* ``sensorLimits(assetId)``: each sensor's normal and critical limits from the plant file.
* ``recommendedActions(assetId)``: what ``GET /api/v1/assets/{id}/rul`` recommends.
* ``planCalendar(horizonHours)``: the technicians' shifts and the lines' maintenance
  windows the plan works within (the maintenance service's ``calendar``).
* ``sensorTrends(assetId, start, end)``: every sensor's series of the machine over the
  range, from the history (as ``GET /api/v1/sensors/{id}/timeseries``, same resolution
  rule), in one answer and by columns: ``{sensor: {aggregation, unit, dataPoints, time,
  value | avg, min, max, anomalies: [{timestamp, value, severity, type, reason}],
  statistics}}`` (or ``{sensor: {error}}``). The machine page asked the REST route once
  per sensor: 20 sensors of 30 days cost 20 requests of 116 KB, each half of its time
  spent in FastAPI's generic encoder; one answer by columns is a third of the bytes.

Reading and subscribing need the viewer role, as everywhere in the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from api import present
from api.auth import Principal, Role
from api.errors import ApiError
from api.history import aware, time_range
from api.view import CHANGED, FleetView
from schemas.common import now_ms
from schemas.maintenance_api import PlanCalendar as CalendarModel
from schemas.maintenance_api import ScheduleRequest

RISK_HORIZON_H = present.RISK_HORIZON_H
MIN_EVERY_MS, MAX_EVERY_MS = 50, 10_000


def _viewer(info: Info, doing: str) -> Any:
    """The services, once the caller is known to hold at least the viewer role."""
    principal: Principal | None = info.context.get("principal")
    if principal is None:
        raise GraphQLError(
            "no bearer token: send 'Authorization: Bearer <token>'",
            extensions={"code": "unauthorized"},
        )
    if not principal.allows(Role.VIEWER):
        raise GraphQLError(
            f"{doing} needs the viewer role; this token is {principal.role}",
            extensions={"code": "forbidden"},
        )
    return info.context["services"]


def _spec(services: Any, asset_id: str) -> Any:
    spec = services.view.machines.get(asset_id)
    if spec is None:
        raise GraphQLError(
            f"no asset {asset_id!r}", extensions={"code": "not_found", "field": "assetId"}
        )
    return spec


# -- the fleet table --------------------------------------------------------------------------
def fleet_row(view: FleetView, machine_id: str) -> dict[str, Any]:
    """One machine's row, from the view's compact state (no full twin state is built)."""
    spec = view.machines[machine_id]
    status, health = view.summary(machine_id)
    live = view.live.get(machine_id)
    state = view.states.get(machine_id)
    rul = view.rul.get(machine_id)
    if (
        state is not None
        and state.rul is not None
        and (rul is None or state.rul.predicted_at > rul.predicted_at)
    ):
        rul = state.rul
    return {
        "id": spec.id,
        "name": spec.name or spec.id,
        "site": spec.site,
        "line": spec.line,
        "type": spec.type,
        "kind": spec.kind.value,
        "critical": spec.critical,
        "status": status,
        "healthScore": health,
        "version": None if live is None else live.version,
        "lastUpdate": None if live is None else present.iso(live.last_update),
        "rulMedianHours": None if rul is None else rul.median_hours,
        "rulLowerHours": None if rul is None else rul.lower_hours,
        "rulUpperHours": None if rul is None else rul.upper_hours,
        "failProbability7d": None if rul is None else rul.failure_probability.get(RISK_HORIZON_H),
        "failureMode": None if rul is None else rul.failure_mode,
        "rulPredictedAt": None if rul is None else present.iso(rul.predicted_at),
    }


@strawberry.type
class FleetTable:
    """Machines' rows (see the module docstring for their fields), ``at`` when made."""

    machines: int
    at: str
    rows: JSON


def _table(view: FleetView, ids: list[str]) -> FleetTable:
    rows: Any = [fleet_row(view, m) for m in ids if m in view.machines]
    return FleetTable(machines=len(rows), at=present.iso(now_ms()) or "", rows=rows)


async def coalesced(changes: AsyncIterator[str], every_s: float) -> AsyncIterator[set[str]]:
    """The ids arriving on ``changes`` in sets: the first at once, then at most one set
    every ``every_s`` (what arrives meanwhile is gathered, each id once)."""
    pending: set[str] = set()
    arrived = asyncio.Event()

    async def gather() -> None:
        async for machine_id in changes:
            pending.add(machine_id)
            arrived.set()

    pump = asyncio.create_task(gather())
    loop = asyncio.get_running_loop()
    last = -float("inf")
    try:
        while True:
            await arrived.wait()
            wait = last + every_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            batch = set(pending)
            pending.clear()
            arrived.clear()
            last = loop.time()
            yield batch
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


# -- trends -----------------------------------------------------------------------------------
def columns(doc: dict[str, Any]) -> dict[str, Any]:
    """A time series answer (:func:`store.queries.timeseries`) by columns."""
    points = doc["data"]
    keys = ("value",) if doc["aggregation"] == "raw" else ("avg", "min", "max")
    return {
        "aggregation": doc["aggregation"],
        "unit": doc["unit"],
        "dataPoints": doc["data_points"],
        "time": [p["timestamp"] for p in points],
        **{k: [p[k] for p in points] for k in keys},
        "anomalies": [
            {k: a[k] for k in ("timestamp", "value", "severity", "type", "reason")}
            for a in doc["anomalies"]
        ],
        "statistics": doc["statistics"],
    }


async def _trends(
    services: Any, spec: Any, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    lo, hi = time_range(
        None if start is None else aware(start, "start"), None if end is None else aware(end, "end")
    )
    history = services.require_history()
    answers = await asyncio.gather(
        *(history.timeseries(f"{spec.id}.{s.name}", lo, hi, "auto") for s in spec.sensors),
        return_exceptions=True,
    )
    out: dict[str, Any] = {}
    for sensor, answer in zip(spec.sensors, answers, strict=True):
        if isinstance(answer, ApiError):
            out[sensor.name] = {"error": answer.message, "code": answer.code}
        elif isinstance(answer, BaseException):
            raise answer
        else:
            out[sensor.name] = columns(answer)
    return out


# -- limits, actions, calendar ----------------------------------------------------------------
@strawberry.type
class SensorLimits:
    """A sensor's limits from the plant file (null: none set)."""

    name: str
    kind: str
    unit: str
    normal_low: float | None
    normal_high: float | None
    critical_low: float | None
    critical_high: float | None
    rated: float | None


@strawberry.type
class RecommendedAction:
    priority: str
    action: str
    estimated_downtime_hours: float | None
    estimated_cost: float | None


@strawberry.type
class Period:
    start: str
    end: str


@strawberry.type
class TechnicianShifts:
    id: strawberry.ID
    name: str
    skills: list[str]
    site_id: str | None
    on_shift: list[Period]


@strawberry.type
class LineWindows:
    """When the line's machines may be stopped; ``windows`` null: at any time."""

    site_id: str
    line_id: str
    windows: list[Period] | None


@strawberry.type
class PlanCalendar:
    """The technicians' shifts and the lines' maintenance windows over the horizon of
    the plan (from its start), in UTC."""

    start: str
    horizon_hours: float
    technicians: list[TechnicianShifts]
    lines: list[LineWindows]

    @classmethod
    def of(cls, calendar: CalendarModel) -> PlanCalendar:
        doc = calendar.model_dump(mode="json")

        def periods(items: list[dict[str, str]]) -> list[Period]:
            return [Period(start=p["start"], end=p["end"]) for p in items]

        return cls(
            start=doc["start"],
            horizon_hours=doc["horizon_hours"],
            technicians=[
                TechnicianShifts(
                    id=strawberry.ID(t["technician"]["id"]),
                    name=t["technician"]["name"],
                    skills=t["technician"]["skills"],
                    site_id=t["technician"]["site_id"],
                    on_shift=periods(t["on_shift"]),
                )
                for t in doc["technicians"]
            ],
            lines=[
                LineWindows(
                    site_id=line["site_id"],
                    line_id=line["line_id"],
                    windows=None if line["windows"] is None else periods(line["windows"]),
                )
                for line in doc["lines"]
            ],
        )


# -- root fields ----------------------------------------------------------------------------
@strawberry.type
class BoardQuery:
    @strawberry.field
    def fleet_table(
        self, info: Info, site: str | None = None, line: str | None = None
    ) -> FleetTable:
        """Every machine's row (of a site, of a line), in the plant file's order."""
        view = _viewer(info, "reading assets").view
        ids = [
            m
            for m, spec in view.machines.items()
            if (site is None or spec.site == site) and (line is None or spec.line == line)
        ]
        return _table(view, ids)

    @strawberry.field
    def sensor_limits(self, info: Info, asset_id: strawberry.ID) -> list[SensorLimits]:
        """The machine's sensors in the plant file's order, with their limits."""
        spec = _spec(_viewer(info, "reading assets"), str(asset_id))
        return [
            SensorLimits(
                name=s.name,
                kind=s.kind.value,
                unit=s.unit,
                normal_low=s.normal_low,
                normal_high=s.normal_high,
                critical_low=s.critical_low,
                critical_high=s.critical_high,
                rated=s.rated,
            )
            for s in spec.sensors
        ]

    @strawberry.field
    def recommended_actions(self, info: Info, asset_id: strawberry.ID) -> list[RecommendedAction]:
        """What to do, from the latest RUL prediction and the maintenance catalogue
        (empty before the first prediction)."""
        services = _viewer(info, "reading assets")
        _spec(services, str(asset_id))
        view = services.view.asset(str(asset_id))
        if view is None or view.rul is None:
            return []
        return [RecommendedAction(**a) for a in present.recommended_actions(view.spec, view.rul)]

    @strawberry.field
    async def sensor_trends(
        self,
        info: Info,
        asset_id: strawberry.ID,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> JSON:
        """Every sensor's series over [start, end) (the 24 hours before now by default),
        by columns; see the module docstring."""
        services = _viewer(info, "reading the history")
        spec = _spec(services, str(asset_id))
        try:
            trends: Any = await _trends(services, spec, start, end)
        except ApiError as exc:
            raise GraphQLError(exc.message, extensions={"code": exc.code}) from None
        return trends

    @strawberry.field
    async def plan_calendar(self, info: Info, horizon_hours: float = 168.0) -> PlanCalendar:
        """Shifts and maintenance windows over the plan's horizon, from the maintenance
        service."""
        services = _viewer(info, "reading the maintenance schedule")
        try:
            request = ScheduleRequest(horizon_hours=horizon_hours)
        except ValueError:
            raise GraphQLError(
                f"horizonHours must be over 0 and at most 744, got {horizon_hours}",
                extensions={"code": "bad_request", "field": "horizonHours"},
            ) from None
        try:
            calendar = await services.require_maintenance().calendar(request)
        except ApiError as exc:
            raise GraphQLError(exc.message, extensions={"code": exc.code}) from None
        return PlanCalendar.of(calendar)


@strawberry.type
class BoardSubscription:
    @strawberry.subscription
    async def fleet_changed(
        self,
        info: Info,
        every_ms: int = 250,
        site: str | None = None,
        line: str | None = None,
        asset_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[FleetTable, None]:
        """The rows of the machines that changed (twin event or RUL prediction) of a
        site, a line or one asset (or all), at most one message every ``everyMs`` (50 to
        10,000)."""
        services = _viewer(info, "subscribing")
        view = services.view
        if asset_id is not None:
            _spec(services, str(asset_id))
        if not MIN_EVERY_MS <= every_ms <= MAX_EVERY_MS:
            raise GraphQLError(
                f"everyMs must be between {MIN_EVERY_MS} and {MAX_EVERY_MS}, got {every_ms}",
                extensions={"code": "bad_request", "field": "everyMs"},
            )

        def wanted(machine_id: str) -> bool:
            spec = view.machines.get(machine_id)
            return (
                spec is not None
                and (asset_id is None or machine_id == asset_id)
                and (site is None or spec.site == site)
                and (line is None or spec.line == line)
            )

        changes = view.broadcast.listen(CHANGED)
        async with contextlib.aclosing(changes):
            async for batch in coalesced(changes, every_ms / 1000):
                mine = sorted(m for m in batch if wanted(m))
                if mine:
                    yield _table(view, mine)


__all__ = ["BoardQuery", "BoardSubscription", "coalesced", "columns", "fleet_row"]
