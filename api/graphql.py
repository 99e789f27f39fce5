"""The GraphQL schema (strawberry): assets, anomalies, clones and what-if, and live
subscriptions fed by the view (which NATS feeds).

A machine's sensors (``Asset.sensors``, ``Asset.sensor(name)``) have their time series
(``Sensor.timeseries(start, end, aggregation)``), and a machine its history
(``Asset.history(start, end)``), read from PostgreSQL (:mod:`api.history`); times are
``DateTime`` with a zone, the range defaults to the 24 hours before now.

Work orders, alerts and the technicians' plan (``workOrders``, ``alerts``, ``alarmKpis``,
``schedule``, ``Asset.maintenanceSchedule``; the mutations ``createWorkOrder``,
``updateWorkOrder``, ``acknowledgeAlert``, ``resolveAlert``, ``shelveAlert``,
``unshelveAlert``, ``replan``) come from the maintenance service over NATS
(:mod:`api.maintenance`); ``alertRaised`` and ``workOrderChanged`` deliver every change it
publishes.

The operations dashboard's own fields (``fleetTable``, ``sensorLimits``,
``recommendedActions``, ``sensorTrends``, ``planCalendar``, the subscription
``fleetChanged``) are in
:mod:`api.board`, merged into this schema by :func:`make_schema`.

Every operation needs a bearer token (HTTP: the ``Authorization`` header; websocket: the
``connection_init`` payload). Reading and subscribing need ``viewer``; acknowledging an
anomaly, changing work orders and alerts, and replanning ``operator``; clones and what-if
``engineer``. Documents larger than
:mod:`api.query_limits` allows, queries deeper than :data:`MAX_DEPTH` or costlier than
:data:`MAX_COST` are refused before they are validated.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any

import strawberry
from graphql import GraphQLError
from pydantic import ValidationError
from strawberry.extensions import ValidationCache
from strawberry.scalars import JSON
from strawberry.tools import merge_types
from strawberry.types import Info
from strawberry.types.execution import PreExecutionError

from api import audit, board, maintenance, present
from api.auth import Principal, Role
from api.errors import ApiError
from api.history import aware, time_range
from api.query_limits import DEFAULT_LIST, document_limits
from api.view import FLEET, AssetView
from schemas.anomaly import AnomalyRecord, Severity
from schemas.maintenance import WorkOrderStatus
from schemas.maintenance_api import (
    AlertAction,
    AlertFilter,
    CreateWorkOrder,
    KpiRequest,
    ScheduleRequest,
    ShelveAlert,
    UpdateWorkOrder,
    WorkOrderFilter,
    WorkOrderRequest,
)
from schemas.plant import SensorSpec
from schemas.problems import first_problem
from schemas.whatif import WhatIfRequest

MAX_DEPTH = 8
MAX_COST = 5_000
MAX_ALIASES = 30
MAX_LIST = 1_000
MAX_NOTE = 500
QUERY_CACHE = 1024
"""Distinct query texts whose validation is kept."""


# -- access ---------------------------------------------------------------------------------
def _services(info: Info) -> Any:
    return info.context["services"]


def _need(info: Info, role: Role, doing: str) -> Principal:
    principal: Principal | None = info.context.get("principal")
    if principal is None:
        raise GraphQLError(
            "no bearer token: send 'Authorization: Bearer <token>'",
            extensions={"code": "unauthorized"},
        )
    if not principal.allows(role):
        raise GraphQLError(
            f"{doing} needs the {role.value} role; this token is {principal.role}",
            extensions={"code": "forbidden"},
        )
    return principal


def _error(exc: ApiError) -> GraphQLError:
    extensions: dict[str, Any] = {"code": exc.code}
    if exc.field:
        extensions["field"] = exc.field
    return GraphQLError(exc.message, extensions=extensions)


def _limit(limit: int) -> int:
    if not 0 < limit <= MAX_LIST:
        raise GraphQLError(
            f"limit must be between 1 and {MAX_LIST}, got {limit}",
            extensions={"code": "bad_request", "field": "limit"},
        )
    return limit


# -- types ----------------------------------------------------------------------------------
@strawberry.type
class SensorReading:
    sensor_id: strawberry.ID
    name: str | None
    kind: str | None
    unit: str | None
    value: float | None
    timestamp: str | None
    quality: str | None
    stale: bool | None


@strawberry.type
class CurrentState:
    last_update: str | None
    sensors: list[SensorReading]


@strawberry.type
class Metric:
    name: str
    value: float | None


@strawberry.type
class SensorFeatures:
    sensor_id: strawberry.ID
    features: list[Metric]


@strawberry.type
class SurvivalPoint:
    hours: float
    survival_probability: float


@strawberry.type
class FailureProbability:
    horizon_hours: int
    probability: float


@strawberry.type
class ContributingFactor:
    factor: str
    importance: float
    current_value: float | None
    threshold: float | None


@strawberry.type
class ConfidenceInterval:
    lower: float
    upper: float
    confidence: float


@strawberry.type
class FailureModeShare:
    failure_mode: str
    share: float


@strawberry.type
class Rul:
    component: str
    median_hours: float
    confidence_interval: ConfidenceInterval
    failure_mode: str | None
    failure_mode_shares: list[FailureModeShare]
    model_version: str
    prediction_timestamp: str | None
    age_hours: float
    survival_curve: list[SurvivalPoint]
    failure_probabilities: list[FailureProbability]
    contributing_factors: list[ContributingFactor]


@strawberry.type
class PredictedFailure:
    probability: float | None
    horizon_hours: int
    time_to_failure_hours: float
    failure_mode: str | None
    confidence: float


@strawberry.type
class Anomaly:
    id: strawberry.ID
    asset_id: strawberry.ID
    sensor_id: strawberry.ID | None
    timestamp: str
    type: str
    severity: str
    anomaly_score: float
    value: float | None
    expected_value: float | None
    reason: str
    detector: str
    contributing_sensors: list[str]
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: str | None
    note: str | None

    @classmethod
    def of(cls, record: AnomalyRecord, ack: dict[str, Any] | None) -> Anomaly:
        return cls(**present.anomaly_row(record, ack))


def _anomalies(info: Info, records: list[AnomalyRecord]) -> list[Anomaly]:
    acks = _services(info).view.acks
    return [Anomaly.of(r, acks.get(r.anomaly_id)) for r in records]


# -- history ------------------------------------------------------------------------------
@strawberry.type
class TimeseriesPoint:
    """One reading (``aggregation`` raw: ``value``, ``quality``) or one bucket (1m, 1h:
    ``avg``, ``min``, ``max``, ``stddev`` (population), ``count`` of good and uncertain
    values, ``uncertain``, ``bad``); the fields of the other kind are null."""

    timestamp: str
    value: float | None = None
    quality: str | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    stddev: float | None = None
    count: int | None = None
    uncertain: int | None = None
    bad: int | None = None


@strawberry.type
class TimeseriesStatistics:
    """Over the same values as the points (bad-quality values left out)."""

    overall_avg: float | None
    overall_min: float | None
    overall_max: float | None
    overall_stddev: float | None
    count: int


@strawberry.type
class SensorAnomaly:
    timestamp: str
    value: float | None
    anomaly_score: float
    severity: str
    type: str
    reason: str


@strawberry.type
class Timeseries:
    sensor_id: strawberry.ID
    unit: str
    aggregation: str
    start: str
    end: str
    data_points: int
    data: list[TimeseriesPoint]
    anomalies: list[SensorAnomaly]
    statistics: TimeseriesStatistics

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Timeseries:
        return cls(
            sensor_id=strawberry.ID(doc["sensor_id"]),
            unit=doc["unit"],
            aggregation=doc["aggregation"],
            start=doc["start"],
            end=doc["end"],
            data_points=doc["data_points"],
            data=[TimeseriesPoint(**p) for p in doc["data"]],
            anomalies=[SensorAnomaly(**a) for a in doc["anomalies"]],
            statistics=TimeseriesStatistics(**doc["statistics"]),
        )


@strawberry.type
class StateRecord:
    """The twin's state as snapshotted at ``timestamp``."""

    timestamp: str
    status: str
    health_score: float
    active_anomalies: int


@strawberry.type
class RulRecord:
    """A remaining-useful-life prediction as made at ``timestamp``."""

    timestamp: str
    component: str
    failure_mode: str | None
    median_hours: float
    lower_hours: float
    upper_hours: float
    failure_probability_7d: float | None
    model_version: str


@strawberry.type
class RecordedAnomaly:
    anomaly_id: strawberry.ID
    timestamp: str
    sensor_id: strawberry.ID | None
    type: str
    severity: str
    anomaly_score: float
    value: float | None
    reason: str
    source: str


@strawberry.type
class AssetHistory:
    asset_id: strawberry.ID
    start: str
    end: str
    states: list[StateRecord]
    rul: list[RulRecord]
    anomalies: list[RecordedAnomaly]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> AssetHistory:
        return cls(
            asset_id=strawberry.ID(doc["asset_id"]),
            start=doc["start"],
            end=doc["end"],
            states=[StateRecord(**r) for r in doc["states"]],
            rul=[RulRecord(**r) for r in doc["rul"]],
            anomalies=[RecordedAnomaly(**r) for r in doc["anomalies"]],
        )


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    return time_range(
        None if start is None else aware(start, "start"),
        None if end is None else aware(end, "end"),
    )


@strawberry.type
class Sensor:
    """One sensor of a machine (from the plant file) and its recorded values."""

    _machine_id: strawberry.Private[str]
    _spec: strawberry.Private[SensorSpec]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(f"{self._machine_id}.{self._spec.name}")

    @strawberry.field
    def name(self) -> str:
        return self._spec.name

    @strawberry.field(description="What it measures (the same as kind).")
    def type(self) -> str:
        return self._spec.kind.value

    @strawberry.field
    def kind(self) -> str:
        return self._spec.kind.value

    @strawberry.field
    def unit(self) -> str:
        return self._spec.unit

    @strawberry.field
    def sample_period_s(self) -> float:
        return self._spec.sample_period_s

    @strawberry.field
    async def timeseries(
        self,
        info: Info,
        start: datetime | None = None,
        end: datetime | None = None,
        aggregation: str = "auto",
    ) -> Timeseries:
        """Values in [start, end) (the 24 hours before now by default) with their
        statistics and anomalies. aggregation: raw, 1m, 1h or auto (raw up to 2 hours,
        1m up to 3 days, else 1h)."""
        _need(info, Role.VIEWER, "reading the history")
        sensor_id = f"{self._machine_id}.{self._spec.name}"
        try:
            lo, hi = _range(start, end)
            history = _services(info).require_history()
            doc = await history.timeseries(sensor_id, lo, hi, aggregation)
        except ApiError as exc:
            raise _error(exc) from None
        return Timeseries.of(doc)


# -- model accuracy -------------------------------------------------------------------------
@strawberry.type
class HorizonScore:
    """The Brier score of P(fail within ``horizonHours``) over the predictions whose outcome
    at that horizon is known."""

    horizon_hours: int
    brier: float
    known_outcomes: int


@strawberry.type
class CalibrationBin:
    """Predictions whose P(fail within ``horizonHours``) fell in [low, high): how many, their
    mean probability and how often the machine did fail within the horizon."""

    horizon_hours: int
    low: float
    high: float
    count: int
    mean_predicted: float
    observed_rate: float


@strawberry.type
class WeekAheadWarning:
    """A failure and P(fail within 7 days) of the last prediction a week or more before it
    (null: none was made that early)."""

    machine_id: strawberry.ID
    failed_at: str
    p_fail_7d: float | None


@strawberry.type
class ModelAccuracy:
    """How one model version's predictions came true on one machine type
    (``twins/accuracy.py``): interval coverage and median error over the lives that failed,
    concordance, and the Brier score and calibration of P(fail) per horizon."""

    model_version: str
    machine_type: str
    predictions: int
    failures: int
    interval_coverage: float | None
    median_abs_error_hours: float | None
    concordance: float | None
    brier: list[HorizonScore]
    calibration: list[CalibrationBin]
    week_ahead: list[WeekAheadWarning]

    @classmethod
    def of(cls, a: Any) -> ModelAccuracy:
        return cls(
            model_version=a.model_version,
            machine_type=a.machine_type,
            predictions=a.predictions,
            failures=a.failures,
            interval_coverage=a.interval_coverage,
            median_abs_error_hours=a.median_abs_error_hours,
            concordance=a.concordance,
            brier=[
                HorizonScore(horizon_hours=h, brier=b, known_outcomes=a.known_outcomes[h])
                for h, b in sorted(a.brier.items())
            ],
            calibration=[
                CalibrationBin(
                    horizon_hours=h,
                    low=b.low,
                    high=b.high,
                    count=b.count,
                    mean_predicted=b.mean_predicted,
                    observed_rate=b.observed_rate,
                )
                for h, bins in sorted(a.calibration.items())
                for b in bins
            ],
            week_ahead=[
                WeekAheadWarning(
                    machine_id=strawberry.ID(w.machine_id),
                    failed_at=present.iso(w.failed_at_ms) or "",
                    p_fail_7d=w.p_fail_7d,
                )
                for w in a.week_ahead
            ],
        )


# -- maintenance ----------------------------------------------------------------------------
@strawberry.type
class CostEstimate:
    """Labour and parts (``total`` is their sum), and what the planner weighs besides:
    the downtime and the risk of failing before the work is done. A plan's cost is the
    sum over its work (its ``total`` adds downtime and risk as the planner counts them)."""

    labor: float
    parts: float
    downtime: float
    risk: float
    total: float

    @classmethod
    def of(cls, doc: dict[str, Any], total: float | None = None) -> CostEstimate:
        labor, parts = float(doc.get("labor", 0.0)), float(doc.get("parts", 0.0))
        return cls(
            labor=labor,
            parts=parts,
            downtime=float(doc.get("downtime", 0.0)),
            risk=float(doc.get("risk", 0.0)),
            total=float(doc["total"]) if "total" in doc else labor + parts,
        )


@strawberry.type
class Technician:
    """``name`` and ``skills`` are known when the answer came with the technician
    (``createWorkOrder``); elsewhere only the id."""

    id: strawberry.ID
    name: str | None
    skills: list[str]


@strawberry.type
class PartRequirement:
    part_number: str
    quantity: int
    description: str


@strawberry.type
class FailurePrediction:
    probability: float
    rul_hours: float
    failure_mode: str | None


@strawberry.type
class WorkOrder:
    id: strawberry.ID
    workorder_id: strawberry.ID
    asset_id: strawberry.ID
    type: str
    priority: str
    title: str
    description: str
    status: str
    scheduled_date: str | None
    scheduled_end: str | None
    due_by: str | None
    estimated_duration_hours: float
    required_skills: list[str]
    parts_required: list[PartRequirement]
    parts_reserved: list[PartRequirement]
    failure_prediction: FailurePrediction | None
    failure_mode: str | None
    assigned_technician_id: strawberry.ID | None
    assigned_technician: Technician | None
    estimated_cost: CostEstimate
    unplaced_reason: str | None
    after: list[str]
    source: str
    created_at: str
    updated_at: str | None
    completed_at: str | None
    created: bool | None = strawberry.field(
        default=None,
        description="createWorkOrder: false when the idempotency key had made it before; "
        "null elsewhere",
    )

    @classmethod
    def of(cls, order: Any, technician: Any = None, created: bool | None = None) -> WorkOrder:
        doc = order.model_dump(mode="json")
        tech = maintenance.technician_doc(technician, order.assigned_technician_id)
        prediction = doc["failure_prediction"]
        return cls(
            id=strawberry.ID(order.workorder_id),
            workorder_id=strawberry.ID(order.workorder_id),
            asset_id=strawberry.ID(order.asset_id),
            type=doc["type"],
            priority=doc["priority"],
            title=doc["title"],
            description=doc["description"],
            status=doc["status"],
            scheduled_date=doc["scheduled_date"],
            scheduled_end=doc["scheduled_end"],
            due_by=doc["due_by"],
            estimated_duration_hours=doc["estimated_duration_hours"],
            required_skills=doc["required_skills"],
            parts_required=[PartRequirement(**p) for p in doc["parts_required"]],
            parts_reserved=[PartRequirement(**p) for p in doc["parts_reserved"]],
            failure_prediction=None if prediction is None else FailurePrediction(**prediction),
            failure_mode=doc["failure_mode"],
            assigned_technician_id=(
                None
                if order.assigned_technician_id is None
                else strawberry.ID(order.assigned_technician_id)
            ),
            assigned_technician=(
                None
                if tech is None
                else Technician(
                    id=strawberry.ID(tech["id"]), name=tech["name"], skills=tech["skills"]
                )
            ),
            estimated_cost=CostEstimate.of(doc["estimated_cost"]),
            unplaced_reason=doc["unplaced_reason"],
            after=doc["after"],
            source=doc["source"],
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            completed_at=doc["completed_at"],
            created=created,
        )


@strawberry.type
class Alert:
    """One condition on one machine (a rule of the plant's alerting), with how often it
    repeated and who handled it."""

    id: strawberry.ID
    alert_id: strawberry.ID
    machine_id: strawberry.ID
    rule_id: str
    kind: str
    subject: str
    severity: str
    status: str
    message: str
    count: int
    value: float | None
    first_raised_at: str
    last_raised_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    resolved_at: str | None
    resolved_by: str | None
    note: str
    escalation_level: int
    escalated_at: str | None
    workorder_id: strawberry.ID | None
    first_seen_at: str | None
    shelved: bool
    shelved_until: str | None
    shelved_at: str | None
    shelved_by: str | None
    shelve_reason: str

    @classmethod
    def of(cls, alert: Any) -> Alert:
        doc = alert.model_dump(mode="json")
        return cls(
            id=strawberry.ID(alert.alert_id),
            alert_id=strawberry.ID(alert.alert_id),
            machine_id=strawberry.ID(alert.machine_id),
            rule_id=doc["rule_id"],
            kind=doc["kind"],
            subject=doc["subject"],
            severity=doc["severity"],
            status=doc["status"],
            message=doc["message"],
            count=doc["count"],
            value=doc["value"],
            first_raised_at=doc["first_raised_at"],
            last_raised_at=doc["last_raised_at"],
            acknowledged_at=doc["acknowledged_at"],
            acknowledged_by=doc["acknowledged_by"],
            resolved_at=doc["resolved_at"],
            resolved_by=doc["resolved_by"],
            note=doc["note"],
            escalation_level=doc["escalation_level"],
            escalated_at=doc["escalated_at"],
            workorder_id=None
            if doc["workorder_id"] is None
            else strawberry.ID(doc["workorder_id"]),
            first_seen_at=doc["first_seen_at"],
            shelved=alert.shelved,
            shelved_until=doc["shelved_until"],
            shelved_at=doc["shelved_at"],
            shelved_by=doc["shelved_by"],
            shelve_reason=doc["shelve_reason"],
        )


@strawberry.type
class SeverityShare:
    severity: str
    raised: int
    share: float


@strawberry.type
class SiteAlarmKpis:
    site_id: str
    raised: int
    per_hour: float
    peak_10min: int
    peak_10min_at: str | None
    standing_24h: int


@strawberry.type
class BadActor:
    """A source of many alerts: ``machine.sensor`` or ``machine/subject``."""

    source: str
    machine_id: strawberry.ID
    site_id: str
    raised: int
    repeats: int


@strawberry.type
class AlarmKpis:
    """Alarm KPIs (ISA-18.2, EEMUA 191) of the alerts raised in a period; ``text``: the
    same for people."""

    start: str
    end: str
    hours: float
    raised: int
    per_hour: float
    peak_10min: int
    peak_10min_at: str | None
    by_severity: list[SeverityShare]
    sites: list[SiteAlarmKpis]
    standing_24h: int
    bad_actors: list[BadActor]
    text: list[str]

    @classmethod
    def of(cls, kpis: Any) -> AlarmKpis:
        doc = kpis.model_dump(mode="json")
        return cls(
            start=doc["start"],
            end=doc["end"],
            hours=doc["hours"],
            raised=doc["raised"],
            per_hour=doc["per_hour"],
            peak_10min=doc["peak_10min"],
            peak_10min_at=doc["peak_10min_at"],
            by_severity=[SeverityShare(**s) for s in doc["by_severity"]],
            sites=[SiteAlarmKpis(**s) for s in doc["sites"]],
            standing_24h=doc["standing_24h"],
            bad_actors=[
                BadActor(
                    source=b["source"],
                    machine_id=strawberry.ID(b["machine_id"]),
                    site_id=b["site_id"],
                    raised=b["raised"],
                    repeats=b["repeats"],
                )
                for b in doc["bad_actors"]
            ],
            text=kpis.lines(),
        )


@strawberry.type
class ScheduledWork:
    workorder_id: strawberry.ID
    asset_id: strawberry.ID
    technician_id: strawberry.ID
    start: str
    end: str
    due_by: str | None
    cost: CostEstimate


@strawberry.type
class UnscheduledWork:
    workorder_id: strawberry.ID
    asset_id: strawberry.ID
    reason: str
    risk: float


@strawberry.type
class MaintenancePlan:
    """The technicians' plan over a horizon with its expected cost."""

    planned_at: str
    start: str
    horizon_hours: float
    scheduled: list[ScheduledWork]
    unscheduled: list[UnscheduledWork]
    cost: CostEstimate
    status: str
    solver: str
    solve_seconds: float

    @classmethod
    def of(cls, plan: Any) -> MaintenancePlan:
        doc = maintenance.plan_doc(plan)
        return cls(
            planned_at=doc["planned_at"],
            start=doc["start"],
            horizon_hours=doc["horizon_hours"],
            scheduled=[
                ScheduledWork(
                    workorder_id=strawberry.ID(w["workorder_id"]),
                    asset_id=strawberry.ID(w["asset_id"]),
                    technician_id=strawberry.ID(w["technician_id"]),
                    start=w["start"],
                    end=w["end"],
                    due_by=w["due_by"],
                    cost=CostEstimate.of(w["cost"]),
                )
                for w in doc["scheduled"]
            ],
            unscheduled=[
                UnscheduledWork(
                    workorder_id=strawberry.ID(w["workorder_id"]),
                    asset_id=strawberry.ID(w["asset_id"]),
                    reason=w["reason"],
                    risk=w["risk"],
                )
                for w in doc["unscheduled"]
            ],
            cost=CostEstimate.of(doc["cost"]),
            status=doc["status"],
            solver=doc["solver"],
            solve_seconds=doc["solve_seconds"],
        )


@strawberry.type
class MaintenanceSchedule:
    """An asset's next open work order (scheduled or in progress) and its last
    completed one."""

    next_scheduled: str | None
    last_completed: str | None
    work_order_id: strawberry.ID | None


def _maintenance(info: Info) -> Any:
    """The maintenance client; a GraphQL error (unavailable) without one."""
    try:
        return _services(info).require_maintenance()
    except ApiError as exc:
        raise _error(exc) from None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _model(model: type[Any], prefix: str = "", **values: Any) -> Any:
    """``model(**values)``; a refusal is a GraphQL error naming the (camelCase) field."""
    try:
        return model(**values)
    except ValidationError as exc:
        path, what = first_problem(exc, name=_camel)
        where = prefix + path
        raise GraphQLError(
            f"{where}: {what}", extensions={"code": "bad_request", "field": where}
        ) from None


async def _asked(pending: Any) -> Any:
    """The result of a call of the maintenance client; its refusal as a GraphQL error."""
    try:
        return await pending
    except ApiError as exc:
        raise _error(exc) from None


@strawberry.type
class Asset:
    """A machine and its twin. Answered from the replica's view (``source: "view"``,
    current to the last twin event, ``lastUpdate``) unless read with ``consistent: true``
    (``source: "actor"``)."""

    _view: strawberry.Private[AssetView]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self._view.spec.id)

    @strawberry.field
    def name(self) -> str:
        return self._view.spec.name or self._view.spec.id

    @strawberry.field
    def type(self) -> str:
        return self._view.spec.type

    @strawberry.field
    def kind(self) -> str:
        return self._view.spec.kind.value

    @strawberry.field
    def site(self) -> str:
        return self._view.spec.site

    @strawberry.field
    def line(self) -> str:
        return self._view.spec.line

    @strawberry.field
    def critical(self) -> bool:
        return self._view.spec.critical

    @strawberry.field
    def status(self) -> str:
        return self._view.status

    @strawberry.field
    def health_score(self) -> float | None:
        return self._view.health_score

    @strawberry.field
    def version(self) -> int | None:
        return None if self._view.state is None else self._view.state.version

    @strawberry.field
    def source(self) -> str:
        return self._view.source

    @strawberry.field
    def last_update(self) -> str | None:
        state = self._view.state
        return None if state is None else present.iso(state.last_update)

    @strawberry.field
    def current_state(self) -> CurrentState:
        state = self._view.state
        return CurrentState(
            last_update=None if state is None else present.iso(state.last_update),
            sensors=[SensorReading(**row) for row in present.sensor_rows(self._view)],
        )

    @strawberry.field
    def derived_metrics(self) -> list[Metric]:
        state = self._view.state
        if state is None:
            return []
        return [Metric(name=k, value=v) for k, v in sorted(state.derived_metrics.items())]

    @strawberry.field
    def features(self) -> list[SensorFeatures]:
        state = self._view.state
        if state is None:
            return []
        return [
            SensorFeatures(
                sensor_id=strawberry.ID(sid),
                features=[Metric(name=k, value=v) for k, v in sorted(feats.items())],
            )
            for sid, feats in sorted(state.features.items())
        ]

    @strawberry.field
    def predicted_failure(self) -> PredictedFailure | None:
        doc = present.predicted_failure(self._view.rul)
        return None if doc is None else PredictedFailure(**doc)

    @strawberry.field
    def rul(self) -> Rul | None:
        rul = self._view.rul
        if rul is None:
            return None
        doc = present.rul_prediction(rul)
        return Rul(
            component=rul.component,
            median_hours=doc["median_hours"],
            confidence_interval=ConfidenceInterval(**doc["confidence_interval"]),
            failure_mode=doc["failure_mode"],
            failure_mode_shares=[FailureModeShare(**m) for m in doc["failure_mode_shares"]],
            model_version=doc["model_version"],
            prediction_timestamp=doc["prediction_timestamp"],
            age_hours=doc["age_hours"],
            survival_curve=[SurvivalPoint(**p) for p in doc["survival_curve"]],
            failure_probabilities=[FailureProbability(**p) for p in doc["failure_probabilities"]],
            contributing_factors=[
                ContributingFactor(**f.model_dump()) for f in rul.contributing_factors
            ],
        )

    @strawberry.field
    def sensors(self) -> list[Sensor]:
        """The machine's sensors, in the order of the plant file."""
        spec = self._view.spec
        return [Sensor(_machine_id=spec.id, _spec=s) for s in spec.sensors]

    @strawberry.field
    def sensor(self, name: str) -> Sensor | None:
        """One sensor by its name on the machine (``vibration``), or null."""
        spec = self._view.spec
        found = next((s for s in spec.sensors if s.name == name), None)
        return None if found is None else Sensor(_machine_id=spec.id, _spec=found)

    @strawberry.field
    async def history(
        self, info: Info, start: datetime | None = None, end: datetime | None = None
    ) -> AssetHistory:
        """States, RUL predictions and anomalies recorded in [start, end) (the 24 hours
        before now by default), each in time order."""
        _need(info, Role.VIEWER, "reading the history")
        try:
            lo, hi = _range(start, end)
            history = _services(info).require_history()
            doc = await history.asset_history(self._view.spec.id, lo, hi)
        except ApiError as exc:
            raise _error(exc) from None
        return AssetHistory.of(doc)

    @strawberry.field
    def anomalies(
        self, info: Info, limit: int = DEFAULT_LIST, acknowledged: bool | None = None
    ) -> list[Anomaly]:
        """The machine's recent anomalies, newest first."""
        acks = _services(info).view.acks
        records = list(reversed(_services(info).view.anomalies.get(self._view.spec.id, ())))
        if acknowledged is not None:
            records = [r for r in records if (r.anomaly_id in acks) == acknowledged]
        return _anomalies(info, records[: _limit(limit)])

    @strawberry.field
    async def maintenance_schedule(self, info: Info) -> MaintenanceSchedule | None:
        """The next open work order (scheduled or in progress) and the last completed one,
        from the maintenance service."""
        _need(info, Role.VIEWER, "reading maintenance")
        client = _maintenance(info)
        orders = await _asked(client.list_workorders(WorkOrderFilter(asset_id=self._view.spec.id)))
        upcoming = [
            o
            for o in orders
            if o.status in (WorkOrderStatus.SCHEDULED, WorkOrderStatus.IN_PROGRESS)
            and o.scheduled_date is not None
        ]
        done = [o for o in orders if o.completed_at is not None]
        nxt = min(upcoming, key=lambda o: o.scheduled_date, default=None)
        last = max(done, key=lambda o: o.completed_at, default=None)
        return MaintenanceSchedule(
            next_scheduled=None if nxt is None else nxt.model_dump(mode="json")["scheduled_date"],
            last_completed=None if last is None else last.model_dump(mode="json")["completed_at"],
            work_order_id=None if nxt is None else strawberry.ID(nxt.workorder_id),
        )


@strawberry.type
class StatusCount:
    status: str
    count: int


@strawberry.type
class FleetHealth:
    machines: int
    reporting: int
    mean_health: float | None
    min_health: float | None
    at_risk: int
    by_status: list[StatusCount]
    at: str

    @classmethod
    def of(cls, doc: dict[str, Any]) -> FleetHealth:
        return cls(
            machines=doc["machines"],
            reporting=doc["reporting"],
            mean_health=doc["mean_health"],
            min_health=doc["min_health"],
            at_risk=doc["at_risk"],
            by_status=[StatusCount(status=s, count=n) for s, n in doc["by_status"].items()],
            at=present.iso(doc["at"]) or "",
        )


@strawberry.type
class AssetUpdate:
    """What one telemetry message changed on a twin."""

    asset_id: strawberry.ID
    version: int
    health_score: float
    status: str
    last_update: str | None
    changed_sensors: list[SensorReading]
    anomalies: int
    received_at: str | None


@strawberry.type
class Clone:
    id: strawberry.ID
    asset_id: strawberry.ID
    expires_at: float


@strawberry.type
class WhatIfStep:
    hours: float
    health_score: float
    failure_probability: float
    rul_median: float | None
    rul_lower: float | None
    rul_upper: float | None


@strawberry.type
class WhatIfResult:
    clone_id: strawberry.ID
    asset_id: strawberry.ID
    steps: list[WhatIfStep]
    rul_median_hours: float | None
    rul_lower_hours: float | None
    rul_upper_hours: float | None
    failure_probabilities: list[FailureProbability]
    failure_mode_share: JSON
    start_wear: JSON
    paths: int
    seconds: float


# -- inputs ---------------------------------------------------------------------------------
@strawberry.input
class AssetFilter:
    type: str | None = None
    site_id: str | None = None
    line: str | None = None
    status: str | None = None


@strawberry.input
class AnomalyFilter:
    asset_id: strawberry.ID | None = None
    min_severity: str | None = None
    type: str | None = None
    acknowledged: bool | None = None
    since: str | None = None


@strawberry.input
class MaintenanceInput:
    component: str | None = None
    delay_days: float = 0.0
    restore_to: float = 0.05


@strawberry.input
class SensorOverride:
    sensor: str
    value: float


@strawberry.input
class WhatIfScenario:
    load_factor: float = 1.0
    ambient_c: float = 25.0
    maintenance: list[MaintenanceInput] = strawberry.field(default_factory=list)
    replaced: list[str] = strawberry.field(default_factory=list)
    sensor_overrides: list[SensorOverride] = strawberry.field(default_factory=list)
    horizon_days: float = 30.0
    paths: int = 500
    seed: int = 0


@strawberry.input
class WorkOrderFilterInput:
    asset_id: strawberry.ID | None = None
    status: list[str] | None = None
    type: str | None = None
    technician_id: strawberry.ID | None = None


@strawberry.input
class AlertFilterInput:
    machine_id: strawberry.ID | None = None
    status: list[str] | None = None
    min_severity: str | None = None
    rule_id: str | None = None
    shelved: bool | None = None


@strawberry.input
class PartInput:
    part_number: str
    quantity: int = 1
    description: str = ""


@strawberry.input
class FailurePredictionInput:
    probability: float
    rul_hours: float
    failure_mode: str | None = None


@strawberry.input
class WorkOrderInput:
    """A new work order (the body of ``POST /api/v1/maintenance/workorders``); what is
    left out comes from the machine type's maintenance catalogue."""

    asset_id: strawberry.ID
    type: str
    title: str
    priority: str = "medium"
    description: str = ""
    scheduled_date: datetime | None = None
    estimated_duration_hours: float | None = None
    required_skills: list[str] | None = None
    parts_required: list[PartInput] | None = None
    failure_prediction: FailurePredictionInput | None = None
    after: list[str] = strawberry.field(default_factory=list)


@strawberry.input
class UpdateWorkOrderInput:
    """A change to one work order; fields left out are unchanged."""

    workorder_id: strawberry.ID
    status: str | None = None
    priority: str | None = None
    title: str | None = None
    description: str | None = None
    assigned_technician_id: strawberry.ID | None = None
    estimated_duration_hours: float | None = None
    completed_at: datetime | None = None


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- root types -----------------------------------------------------------------------------
def _matches(view: Any, machine_id: str, spec: Any, f: AssetFilter | None) -> bool:
    if f is None:
        return True
    if f.type is not None and f.type not in (spec.type, spec.kind.value):
        return False
    if f.site_id is not None and spec.site != f.site_id:
        return False
    if f.line is not None and spec.line != f.line:
        return False
    return f.status is None or view.summary(machine_id)[0] == f.status


@strawberry.type
class Query:
    @strawberry.field
    async def asset(self, info: Info, id: strawberry.ID, consistent: bool = False) -> Asset | None:
        """One machine; ``consistent: true`` reads it from its actor (slower, exact)."""
        _need(info, Role.VIEWER, "reading assets")
        services = _services(info)
        try:
            view = await services.asset(str(id), consistent)
        except ApiError as exc:
            raise _error(exc) from None
        return None if view is None else Asset(_view=view)

    @strawberry.field
    def assets(
        self, info: Info, filter: AssetFilter | None = None, limit: int = 100, offset: int = 0
    ) -> list[Asset]:
        _need(info, Role.VIEWER, "reading assets")
        view = _services(info).view
        ids = [m for m, spec in view.machines.items() if _matches(view, m, spec, filter)]
        picked = ids[max(offset, 0) : max(offset, 0) + _limit(limit)]
        return [Asset(_view=view.asset(m)) for m in picked]

    @strawberry.field
    def assets_by_health(
        self, info: Info, min_score: float = 0.0, max_score: float = 100.0, limit: int = 100
    ) -> list[Asset]:
        """Machines whose health lies in [minScore, maxScore], least healthy first."""
        _need(info, Role.VIEWER, "reading assets")
        view = _services(info).view
        scored = []
        for m in view.machines:
            health = view.summary(m)[1]
            if health is not None and min_score <= health <= max_score:
                scored.append((health, m))
        scored.sort()
        return [Asset(_view=view.asset(m)) for _, m in scored[: _limit(limit)]]

    @strawberry.field
    def anomalies(
        self, info: Info, filter: AnomalyFilter | None = None, limit: int = 50
    ) -> list[Anomaly]:
        """Recent anomalies across the fleet (or one asset), newest first."""
        _need(info, Role.VIEWER, "reading anomalies")
        view = _services(info).view
        f = filter or AnomalyFilter()
        records = (
            list(view.anomalies.get(str(f.asset_id), ()))
            if f.asset_id is not None
            else list(view.recent)
        )
        floor = _severity(f.min_severity)
        since = _since(f.since)
        out = []
        for r in reversed(records):
            if since is not None and r.timestamp < since:
                break
            if floor is not None and r.severity.rank < floor.rank:
                continue
            if f.type is not None and r.type.value != f.type:
                continue
            if f.acknowledged is not None and (r.anomaly_id in view.acks) != f.acknowledged:
                continue
            out.append(r)
            if len(out) >= _limit(limit):
                break
        return _anomalies(info, out)

    @strawberry.field
    def fleet_health(self, info: Info) -> FleetHealth:
        _need(info, Role.VIEWER, "reading fleet health")
        return FleetHealth.of(_services(info).view.fleet_health())

    @strawberry.field
    async def work_orders(
        self, info: Info, filter: WorkOrderFilterInput | None = None, limit: int = 100
    ) -> list[WorkOrder]:
        """Work orders from the maintenance service (filter: asset, statuses, type,
        technician)."""
        _need(info, Role.VIEWER, "reading work orders")
        f = filter or WorkOrderFilterInput()
        wanted = _model(
            WorkOrderFilter,
            "filter.",
            **_present(
                {
                    "asset_id": f.asset_id,
                    "status": f.status,
                    "type": f.type,
                    "technician_id": f.technician_id,
                }
            ),
            limit=_limit(limit),
        )
        orders = await _asked(_maintenance(info).list_workorders(wanted))
        return [WorkOrder.of(o) for o in orders]

    @strawberry.field
    async def alerts(
        self, info: Info, filter: AlertFilterInput | None = None, limit: int = 100
    ) -> list[Alert]:
        """Alerts from the alert manager (filter: machine, statuses, minimum severity,
        rule)."""
        _need(info, Role.VIEWER, "reading alerts")
        f = filter or AlertFilterInput()
        wanted = _model(
            AlertFilter,
            "filter.",
            **_present(
                {
                    "machine_id": f.machine_id,
                    "status": f.status,
                    "min_severity": f.min_severity,
                    "rule_id": f.rule_id,
                    "shelved": f.shelved,
                }
            ),
            limit=_limit(limit),
        )
        alerts = await _asked(_maintenance(info).list_alerts(wanted))
        return [Alert.of(a) for a in alerts]

    @strawberry.field
    async def alarm_kpis(
        self, info: Info, start: datetime | None = None, end: datetime | None = None
    ) -> AlarmKpis:
        """Alarm KPIs of the alerts raised in ``[start, end)`` (default: the 24 hours
        before the plant's now)."""
        _need(info, Role.VIEWER, "reading alarm KPIs")
        try:
            lo = None if start is None else aware(start, "start")
            hi = None if end is None else aware(end, "end")
        except ApiError as exc:
            raise _error(exc) from None
        request = _model(KpiRequest, **_present({"start": lo, "end": hi}))
        return AlarmKpis.of(await _asked(_maintenance(info).alarm_kpis(request)))

    @strawberry.field
    async def model_accuracy(
        self, info: Info, days: float | None = None, limit: int = 10
    ) -> list[ModelAccuracy]:
        """How each model version's RUL predictions came true on each machine type: stored
        predictions scored against the lives completed repairs cut (a corrective repair
        ends a life in a failure; any other, or the life still running, censors it). Only
        predictions of the last ``days`` days when given; the first ``limit`` (model
        version, machine type) pairs in that order."""
        _need(info, Role.VIEWER, "reading model accuracy")
        if days is not None and not (0 < days <= 3650):
            raise GraphQLError("days: must be above 0 and at most 3650")
        if not 1 <= limit <= 100:
            raise GraphQLError("limit: must be between 1 and 100")
        since = None if days is None else datetime.now(UTC) - timedelta(days=days)
        try:
            doc = await _services(info).require_history().model_accuracy(since)
        except ApiError as exc:
            raise _error(exc) from None
        return [ModelAccuracy.of(a) for a in doc["models"][:limit]]

    @strawberry.field
    async def schedule(self, info: Info, horizon_hours: float = 168.0) -> MaintenancePlan:
        """The technicians' current plan; over another ``horizonHours`` than its own, a
        preview that is not committed (reading never changes anything: the mutation
        ``replan`` does)."""
        _need(info, Role.VIEWER, "reading the maintenance schedule")
        request = _model(ScheduleRequest, horizon_hours=horizon_hours)
        return MaintenancePlan.of(await _asked(_maintenance(info).schedule(request)))


def _severity(value: str | None) -> Severity | None:
    if value is None:
        return None
    try:
        return Severity(value)
    except ValueError:
        raise GraphQLError(
            f"minSeverity must be one of {[s.value for s in Severity]}, got {value!r}",
            extensions={"code": "bad_request", "field": "minSeverity"},
        ) from None


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    from schemas.common import datetime_to_ms

    try:
        from datetime import datetime

        return datetime_to_ms(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise GraphQLError(
            f"since must be an ISO 8601 time, got {value!r}",
            extensions={"code": "bad_request", "field": "since"},
        ) from None


async def _revoke(info: Info, what: str, value: str) -> bool:
    from api.revocations import revoke

    who = _need(info, Role.ADMIN, "revoking tokens")
    try:
        key = await revoke(_services(info).view.js, **{what: value})
    except ValueError as exc:
        field = "tokenId" if what == "token_id" else "user"
        raise GraphQLError(
            f"{field}: {exc}", extensions={"code": "bad_request", "field": field}
        ) from None
    await audit.record(_services(info), who, "revoke_tokens", key)
    return True


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def acknowledge_anomaly(
        self, info: Info, anomaly_id: strawberry.ID, note: str | None = None
    ) -> Anomaly:
        """Mark an anomaly as seen (once; acknowledging again returns the first record)."""
        who = _need(info, Role.OPERATOR, "acknowledging an anomaly")
        view = _services(info).view
        if note is not None and len(note) > MAX_NOTE:
            raise GraphQLError(
                f"note is longer than {MAX_NOTE} characters",
                extensions={"code": "bad_request", "field": "note"},
            )
        try:
            ack, made = await view.acknowledge(str(anomaly_id), who.subject, note)
        except KeyError:
            raise GraphQLError(
                f"no anomaly {anomaly_id!r} among the recent ones",
                extensions={"code": "not_found", "field": "anomalyId"},
            ) from None
        record = view.find_anomaly(str(anomaly_id))
        assert record is not None
        if made:
            await audit.record(
                _services(info), who, "acknowledge_anomaly", str(anomaly_id), {"note": note}
            )
        return Anomaly.of(record, ack)

    @strawberry.mutation
    async def clone_twin(
        self, info: Info, asset_id: strawberry.ID, ttl_seconds: int = 900
    ) -> Clone:
        """An independent copy of the twin for what-if (expires after ``ttlSeconds``).
        Only its maker (or an admin) may use or retire it; a user holds at most
        ``max_clones_per_user`` clones, everyone together ``max_clones``."""
        who = _need(info, Role.ENGINEER, "cloning a twin")
        if not 0 < ttl_seconds <= 86_400:
            raise GraphQLError(
                f"ttlSeconds must be between 1 and 86400, got {ttl_seconds}",
                extensions={"code": "bad_request", "field": "ttlSeconds"},
            )
        services = _services(info)
        if str(asset_id) not in services.view.machines:
            raise GraphQLError(
                f"no asset {asset_id!r}", extensions={"code": "not_found", "field": "assetId"}
            )
        from actors.access import CloneLimit

        try:
            made = await services.access.clone(
                str(asset_id),
                float(ttl_seconds),
                owner=who.subject,
                max_per_owner=services.settings.max_clones_per_user,
                max_total=services.settings.max_clones,
            )
        except CloneLimit as exc:
            raise GraphQLError(str(exc), extensions={"code": "too_many_clones"}) from None
        await audit.record(
            services,
            who,
            "clone_twin",
            str(asset_id),
            {"clone_id": made["clone_id"], "ttl_seconds": ttl_seconds},
        )
        return Clone(
            id=strawberry.ID(made["clone_id"]),
            asset_id=strawberry.ID(made["machine_id"]),
            expires_at=made["expires_at"],
        )

    @strawberry.mutation
    async def run_what_if(
        self, info: Info, clone_id: strawberry.ID, scenario: WhatIfScenario | None = None
    ) -> WhatIfResult:
        """Project the clone forward under the scenario; the live twin is not touched."""
        from actors.access import CloneGone, NotYourClone

        who = _need(info, Role.ENGINEER, "running a what-if")
        s = scenario or WhatIfScenario()
        try:
            request = WhatIfRequest.model_validate(
                {
                    "load_factor": s.load_factor,
                    "ambient_c": s.ambient_c,
                    "maintenance": [
                        {
                            "component": m.component,
                            "delay_days": m.delay_days,
                            "restore_to": m.restore_to,
                        }
                        for m in s.maintenance
                    ],
                    "replaced": s.replaced,
                    "sensor_overrides": {o.sensor: o.value for o in s.sensor_overrides},
                    "horizon_days": s.horizon_days,
                    "paths": s.paths,
                    "seed": s.seed,
                }
            )
        except ValidationError as exc:
            where, what = first_problem(exc)
            raise GraphQLError(
                f"scenario.{where}: {what}",
                extensions={"code": "bad_request", "field": f"scenario.{where}"},
            ) from None
        try:
            out = await _services(info).access.what_if(
                str(clone_id), request.model_dump_json(), _clone_owner(who)
            )
        except CloneGone as exc:
            raise GraphQLError(
                str(exc.args[0]), extensions={"code": "not_found", "field": "cloneId"}
            ) from None
        except NotYourClone as exc:
            raise GraphQLError(
                str(exc), extensions={"code": "forbidden", "field": "cloneId"}
            ) from None
        except Exception as exc:  # the clone refused (expired) or failed
            raise GraphQLError(_cause(exc), extensions={"code": "conflict"}) from None
        await audit.record(
            _services(info),
            who,
            "run_what_if",
            str(clone_id),
            {"asset_id": out["machine_id"], "scenario": request.model_dump(mode="json")},
        )
        return WhatIfResult(
            clone_id=clone_id,
            asset_id=strawberry.ID(out["machine_id"]),
            steps=[
                WhatIfStep(
                    hours=h,
                    health_score=hs,
                    failure_probability=p,
                    rul_median=r[0],
                    rul_lower=r[1],
                    rul_upper=r[2],
                )
                for h, hs, p, r in zip(
                    out["hours"],
                    out["health"],
                    out["failure_probability"],
                    out["rul_by_step"],
                    strict=True,
                )
            ],
            rul_median_hours=out["rul_median_hours"],
            rul_lower_hours=out["rul_lower_hours"],
            rul_upper_hours=out["rul_upper_hours"],
            failure_probabilities=[
                FailureProbability(horizon_hours=int(h), probability=p)
                for h, p in sorted(out["failure_probability_by"].items())
            ],
            failure_mode_share=out["failure_mode_share"],
            start_wear=out["start_wear"],
            paths=out["n_paths"],
            seconds=out["seconds"],
        )

    @strawberry.mutation
    async def retire_clone(self, info: Info, clone_id: strawberry.ID) -> bool:
        from actors.access import CloneGone, NotYourClone

        who = _need(info, Role.ENGINEER, "retiring a clone")
        try:
            await _services(info).access.retire_clone(str(clone_id), _clone_owner(who))
        except CloneGone as exc:
            raise GraphQLError(
                str(exc.args[0]), extensions={"code": "not_found", "field": "cloneId"}
            ) from None
        except NotYourClone as exc:
            raise GraphQLError(
                str(exc), extensions={"code": "forbidden", "field": "cloneId"}
            ) from None
        await audit.record(_services(info), who, "retire_clone", str(clone_id))
        return True

    @strawberry.mutation
    async def revoke_token(self, info: Info, token_id: str) -> bool:
        """Revoke one bearer token by its id (its ``jti``; ``twinfleet token`` prints it):
        every replica refuses it within moments, its open subscriptions are closed."""
        return await _revoke(info, "token_id", token_id)

    @strawberry.mutation
    async def revoke_user_tokens(self, info: Info, user: str) -> bool:
        """Revoke every bearer token of ``user`` (the token's subject) issued until now;
        tokens issued afterwards work."""
        return await _revoke(info, "subject", user)

    @strawberry.mutation
    async def create_work_order(
        self, info: Info, input: WorkOrderInput, idempotency_key: str | None = None
    ) -> WorkOrder:
        """A work order, placed by the planner. The same ``idempotencyKey`` again returns
        the order it made (``created: false``) and makes no other."""
        who = _need(info, Role.OPERATOR, "creating a work order")
        body = _model(
            WorkOrderRequest,
            "input.",
            **_present(
                {
                    "asset_id": input.asset_id,
                    "type": input.type,
                    "priority": input.priority,
                    "title": input.title,
                    "description": input.description,
                    "scheduled_date": input.scheduled_date,
                    "estimated_duration_hours": input.estimated_duration_hours,
                    "required_skills": input.required_skills,
                    "parts_required": None
                    if input.parts_required is None
                    else [
                        {
                            "part_number": p.part_number,
                            "quantity": p.quantity,
                            "description": p.description,
                        }
                        for p in input.parts_required
                    ],
                    "failure_prediction": None
                    if input.failure_prediction is None
                    else {
                        "probability": input.failure_prediction.probability,
                        "rul_hours": input.failure_prediction.rul_hours,
                        "failure_mode": input.failure_prediction.failure_mode,
                    },
                    "after": input.after,
                }
            ),
        )
        request = _model(
            CreateWorkOrder, request=body, actor=who.subject, idempotency_key=idempotency_key
        )
        made = await _asked(_maintenance(info).create_workorder(request))
        order = made.work_order
        if made.created:
            await audit.record(
                _services(info),
                who,
                "create_workorder",
                order.workorder_id,
                {"asset_id": order.asset_id, "type": order.type.value, "key": idempotency_key},
            )
        return WorkOrder.of(order, made.technician, made.created)

    @strawberry.mutation
    async def update_work_order(self, info: Info, input: UpdateWorkOrderInput) -> WorkOrder:
        """Change a work order's status, priority, text, technician or duration (what the
        life cycle allows; else a conflict)."""
        who = _need(info, Role.OPERATOR, "changing a work order")
        changes = _present(
            {
                "status": input.status,
                "priority": input.priority,
                "title": input.title,
                "description": input.description,
                "assigned_technician_id": input.assigned_technician_id,
                "estimated_duration_hours": input.estimated_duration_hours,
                "completed_at": input.completed_at,
            }
        )
        request = _model(
            UpdateWorkOrder,
            "input.",
            workorder_id=str(input.workorder_id),
            actor=who.subject,
            **changes,
        )
        order = await _asked(_maintenance(info).update_workorder(request))
        await audit.record(
            _services(info),
            who,
            "update_workorder",
            order.workorder_id,
            request.model_dump(mode="json", exclude={"workorder_id", "actor"}, exclude_none=True),
        )
        return WorkOrder.of(order)

    @strawberry.mutation
    async def acknowledge_alert(
        self, info: Info, alert_id: strawberry.ID, note: str | None = None
    ) -> Alert:
        """Someone has seen the alert (stops its escalation)."""
        who = _need(info, Role.OPERATOR, "acknowledging an alert")
        action = _model(AlertAction, alert_id=str(alert_id), actor=who.subject, note=note or "")
        alert = await _asked(_maintenance(info).acknowledge_alert(action))
        await audit.record(
            _services(info), who, "acknowledge_alert", alert.alert_id, {"note": note}
        )
        return Alert.of(alert)

    @strawberry.mutation
    async def resolve_alert(
        self,
        info: Info,
        alert_id: strawberry.ID,
        note: str | None = None,
        false_positive: bool = False,
    ) -> Alert:
        """Close the alert (``falsePositive``: it was wrong)."""
        who = _need(info, Role.OPERATOR, "resolving an alert")
        action = _model(
            AlertAction,
            alert_id=str(alert_id),
            actor=who.subject,
            note=note or "",
            false_positive=false_positive,
        )
        alert = await _asked(_maintenance(info).resolve_alert(action))
        await audit.record(
            _services(info),
            who,
            "resolve_alert",
            alert.alert_id,
            {"note": note, "false_positive": false_positive},
        )
        return Alert.of(alert)

    @strawberry.mutation
    async def shelve_alert(
        self, info: Info, alert_id: strawberry.ID, minutes: float, reason: str
    ) -> Alert:
        """Shelve the alert for ``minutes`` (at most the plant's
        ``alerting.max_shelve_minutes``) saying why: no notifications and no escalation
        until it comes back by itself."""
        who = _need(info, Role.OPERATOR, "shelving an alert")
        request = _model(
            ShelveAlert, alert_id=str(alert_id), actor=who.subject, minutes=minutes, reason=reason
        )
        alert = await _asked(_maintenance(info).shelve_alert(request))
        await audit.record(
            _services(info),
            who,
            "shelve_alert",
            alert.alert_id,
            {"minutes": minutes, "reason": reason},
        )
        return Alert.of(alert)

    @strawberry.mutation
    async def unshelve_alert(
        self, info: Info, alert_id: strawberry.ID, note: str | None = None
    ) -> Alert:
        """Bring a shelved alert back before its time is up."""
        who = _need(info, Role.OPERATOR, "unshelving an alert")
        action = _model(AlertAction, alert_id=str(alert_id), actor=who.subject, note=note or "")
        alert = await _asked(_maintenance(info).unshelve_alert(action))
        await audit.record(_services(info), who, "unshelve_alert", alert.alert_id, {"note": note})
        return Alert.of(alert)

    @strawberry.mutation
    async def replan(self, info: Info, horizon_hours: float = 168.0) -> MaintenancePlan:
        """Plan the open work orders again over the next ``horizonHours``."""
        who = _need(info, Role.OPERATOR, "replanning maintenance")
        plan = await _asked(maintenance.replan_and_audit(_services(info), who, horizon_hours))
        return MaintenancePlan.of(plan)


def _clone_owner(who: Principal) -> str | None:
    """Whose clones ``who`` may use: their own, or (an admin) anyone's (``None``)."""
    return None if who.allows(Role.ADMIN) else who.subject


def _cause(exc: BaseException) -> str:
    """The message of the error an actor raised (Ray wraps it)."""
    cause = getattr(exc, "cause", None) or exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def asset_state_changed(
        self, info: Info, asset_id: strawberry.ID
    ) -> AsyncGenerator[AssetUpdate, None]:
        """Every change of one twin (one per telemetry message it applies)."""
        _need(info, Role.VIEWER, "subscribing")
        view = _services(info).view
        spec = view.machines.get(str(asset_id))
        if spec is None:
            raise GraphQLError(
                f"no asset {asset_id!r}", extensions={"code": "not_found", "field": "assetId"}
            )
        units = {f"{spec.id}.{s.name}": s for s in spec.sensors}
        async for event in view.broadcast.listen(f"state.{asset_id}"):
            yield _update(event, units)

    @strawberry.subscription
    async def anomaly_detected(
        self, info: Info, asset_id: strawberry.ID | None = None
    ) -> AsyncGenerator[Anomaly, None]:
        """New anomalies on one asset, or on every asset when none is given."""
        _need(info, Role.VIEWER, "subscribing")
        view = _services(info).view
        if asset_id is not None and str(asset_id) not in view.machines:
            raise GraphQLError(
                f"no asset {asset_id!r}", extensions={"code": "not_found", "field": "assetId"}
            )
        topic = "anomaly.*" if asset_id is None else f"anomaly.{asset_id}"
        async for record in view.broadcast.listen(topic):
            yield Anomaly.of(record, view.acks.get(record.anomaly_id))

    @strawberry.subscription
    async def fleet_health_changed(self, info: Info) -> AsyncGenerator[FleetHealth, None]:
        """The fleet's health after the twin events that changed it (at most every
        half second)."""
        _need(info, Role.VIEWER, "subscribing")
        view = _services(info).view
        yield FleetHealth.of(view.fleet_health())
        async for doc in view.broadcast.listen(FLEET):
            yield FleetHealth.of(doc)

    @strawberry.subscription
    async def alert_raised(
        self, info: Info, machine_id: str | None = None
    ) -> AsyncGenerator[Alert, None]:
        """Every change of an alert (raised, repeated, acknowledged, escalated, resolved)
        on one machine, or on every machine when none is given."""
        _need(info, Role.VIEWER, "subscribing")
        services = _services(info)
        if machine_id is not None and machine_id not in services.view.machines:
            raise GraphQLError(
                f"no asset {machine_id!r}",
                extensions={"code": "not_found", "field": "machineId"},
            )
        client = _maintenance(info)
        topic = maintenance.ALERT_ALL_TOPIC if machine_id is None else f"alert.{machine_id}"
        async for alert in client.events.listen(topic):
            yield Alert.of(alert)

    @strawberry.subscription
    async def work_order_changed(
        self, info: Info, asset_id: str | None = None
    ) -> AsyncGenerator[WorkOrder, None]:
        """Every change of a work order on one asset, or on every asset."""
        _need(info, Role.VIEWER, "subscribing")
        services = _services(info)
        if asset_id is not None and asset_id not in services.view.machines:
            raise GraphQLError(
                f"no asset {asset_id!r}", extensions={"code": "not_found", "field": "assetId"}
            )
        client = _maintenance(info)
        topic = maintenance.WORKORDER_ALL_TOPIC if asset_id is None else f"workorder.{asset_id}"
        async for order in client.events.listen(topic):
            yield WorkOrder.of(order)


def _update(event: dict[str, Any], units: dict[str, Any]) -> AssetUpdate:
    sensors = []
    for sid, (value, ts, quality) in (event.get("sensors") or {}).items():
        spec = units.get(sid)
        sensors.append(
            SensorReading(
                sensor_id=strawberry.ID(sid),
                name=None if spec is None else spec.name,
                kind=None if spec is None else spec.kind.value,
                unit=None if spec is None else spec.unit,
                value=value,
                timestamp=present.iso(ts),
                quality=present.QUALITY[int(quality)],
                stale=False,
            )
        )
    return AssetUpdate(
        asset_id=strawberry.ID(event["machine_id"]),
        version=int(event["version"]),
        health_score=float(event["health_score"]),
        status=str(event["status"]),
        last_update=present.iso(event.get("last_update")),
        changed_sensors=sensors,
        anomalies=int(event.get("anomalies", 0)),
        received_at=present.iso(event.get("_received_ms")),
    )


class Schema(strawberry.Schema):
    async def _prepare_operation_async(self, context: Any, extensions_runner: Any) -> Any:
        """A document refused while it is parsed or checked (:mod:`api.query_limits`,
        or a syntax error) is the operation's error on every transport: strawberry
        catches its hooks' errors over HTTP, not over websockets."""
        try:
            return await super()._prepare_operation_async(context, extensions_runner)
        except GraphQLError as error:
            context.pre_execution_errors = [error]
            return PreExecutionError(data=None, errors=[error])

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Refusals the API means to give (bad input, roles) are not logged as failures;
        anything else is, with its traceback."""
        for error in errors:
            if error.original_error is not None and not isinstance(
                error.original_error, GraphQLError
            ):
                super().process_errors([error], execution_context)


def make_schema(
    max_depth: int = MAX_DEPTH, max_cost: int = MAX_COST, max_aliases: int = MAX_ALIASES
) -> Schema:
    """The schema with its limits (:mod:`api.query_limits`: the document's size and
    shape, the operation's depth, aliases and cost, checked before validation). Parses
    and validations are cached per query text (validating is most of the cost of a
    small query)."""
    limits = document_limits(max_depth, max_cost, max_aliases)
    return Schema(
        query=merge_types("Query", (Query, board.BoardQuery)),
        mutation=Mutation,
        subscription=merge_types("Subscription", (Subscription, board.BoardSubscription)),
        extensions=[limits, lambda: ValidationCache(maxsize=QUERY_CACHE)],
    )


schema = make_schema()

__all__ = ["make_schema", "schema"]
