"""The maintenance service's request/reply API over NATS, and the plan it returns.

Every request goes to ``tf.maintenance.<operation>`` (:func:`schemas.subjects.maintenance`)
as JSON; the reply is ``{"ok": <result>}`` or ``{"error": {"code", "message", "field"?}}``
with the HTTP status the API should answer (404 unknown id, 409 a change the life cycle
does not allow, 422 bad input).

=========================  ====================================  ==========================
operation                  request                               ``ok``
=========================  ====================================  ==========================
``workorders.list``        :class:`WorkOrderFilter`              ``[WorkOrder]``
``workorders.create``      :class:`CreateWorkOrder`              :class:`WorkOrderCreated`
``workorders.update``      :class:`UpdateWorkOrder`              ``WorkOrder``
``alerts.list``            :class:`AlertFilter`                  ``[Alert]``
``alerts.acknowledge``     :class:`AlertAction`                  ``Alert``
``alerts.resolve``         :class:`AlertAction`                  ``Alert``
``alerts.shelve``          :class:`ShelveAlert`                  ``Alert``
``alerts.unshelve``        :class:`AlertAction`                  ``Alert``
``alerts.kpis``            :class:`KpiRequest`                   :class:`AlarmKpis`
``schedule``               :class:`ScheduleRequest`              :class:`MaintenancePlan`
``replan``                 :class:`ScheduleRequest`              :class:`MaintenancePlan`
``export.csv``             :class:`WorkOrderFilter`              ``str`` (CSV text)
``calendar``               :class:`ScheduleRequest`              :class:`PlanCalendar`
=========================  ====================================  ==========================
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from schemas.alerts import AlertStatus
from schemas.anomaly import Severity
from schemas.common import Identifier, UtcDatetime
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

Text = Annotated[str, Field(max_length=4000)]
Actor = Annotated[str, Field(min_length=1, max_length=200)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkOrderRequest(_Request):
    """The body of ``POST /api/v1/maintenance/workorders`` (shared/API.md)."""

    asset_id: Identifier
    type: WorkOrderType
    priority: Priority = Priority.MEDIUM
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Text = ""
    scheduled_date: UtcDatetime | None = Field(
        None, description="not before this time (the planner picks the slot)"
    )
    estimated_duration_hours: (
        Annotated[float, Field(gt=0, le=720, allow_inf_nan=False, strict=True)] | None
    ) = Field(None, description="default: the machine type's catalogue for the failure mode")
    required_skills: list[Identifier] | None = None
    parts_required: list[PartRequirement] | None = None
    failure_prediction: FailurePrediction | None = None
    after: list[str] = Field(default_factory=list, max_length=50)


class CreateWorkOrder(_Request):
    request: WorkOrderRequest
    actor: Actor
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="the same key again returns the order it created, not a new one"
    )


class WorkOrderCreated(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    work_order: WorkOrder
    technician: Technician | None = None
    created: bool = Field(True, description="False: an earlier request with the same key")


class UpdateWorkOrder(_Request):
    """A change to one work order; fields left out are unchanged."""

    workorder_id: str
    actor: Actor
    status: WorkOrderStatus | None = None
    priority: Priority | None = None
    title: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    description: Text | None = None
    assigned_technician_id: Identifier | None = Field(
        None, description="pin the order to this technician (the planner keeps it there)"
    )
    estimated_duration_hours: (
        Annotated[float, Field(gt=0, le=720, allow_inf_nan=False, strict=True)] | None
    ) = None
    completed_at: UtcDatetime | None = Field(
        None, description="when status becomes completed (default: now)"
    )


class WorkOrderFilter(_Request):
    asset_id: Identifier | None = None
    status: list[WorkOrderStatus] = Field(default_factory=list)
    type: WorkOrderType | None = None
    technician_id: Identifier | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 1_000


class AlertFilter(_Request):
    machine_id: Identifier | None = None
    status: list[AlertStatus] = Field(default_factory=list)
    min_severity: Severity | None = None
    rule_id: Identifier | None = None
    shelved: bool | None = Field(None, description="only shelved (true) or unshelved (false)")
    limit: Annotated[int, Field(ge=1, le=10_000)] = 1_000


class AlertAction(_Request):
    alert_id: str
    actor: Actor
    note: Text = ""
    false_positive: bool = Field(False, description="resolve: the alert was wrong")


class ShelveAlert(_Request):
    """Shelve an alert: no notifications and no escalation until it comes back by itself
    after ``minutes`` (at most the plant's ``alerting.max_shelve_minutes``)."""

    alert_id: str
    actor: Actor
    minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60, allow_inf_nan=False)]
    reason: Annotated[str, Field(min_length=1, max_length=500)] = Field(
        description="why it is shelved (kept with the alert and in the audit log)"
    )


class KpiRequest(_Request):
    """The alarm KPIs over ``[start, end)``; default: the 24 hours before the plant's now."""

    start: UtcDatetime | None = None
    end: UtcDatetime | None = None

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"must be after start ({start.isoformat()}), got {end.isoformat()}")
        return end


class SeverityShare(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity
    raised: int
    share: float = Field(description="of the alerts raised in the period, 0..1")


class SiteAlarmKpis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: str
    raised: int
    per_hour: float = Field(description="alerts raised per hour, averaged over the period")
    peak_10min: int = Field(description="most alerts raised in any 10 minutes")
    peak_10min_at: UtcDatetime | None = Field(None, description="when that window began")
    standing_24h: int = Field(description="alerts open at the end, raised over 24 h before it")


class BadActor(BaseModel):
    """A source that raises many alerts: ``machine.sensor``, or ``machine/subject``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    machine_id: str
    site_id: str
    raised: int = Field(description="alerts raised in the period")
    repeats: int = Field(description="repeats those alerts counted besides their first")


class AlarmKpis(BaseModel):
    """Alarm-management KPIs (ISA-18.2, EEMUA 191) over a period
    (:func:`maintenance.kpis.alarm_kpis`); :meth:`lines` for people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: UtcDatetime
    end: UtcDatetime
    hours: float
    raised: int
    per_hour: float
    peak_10min: int
    peak_10min_at: UtcDatetime | None = None
    by_severity: list[SeverityShare]
    sites: list[SiteAlarmKpis]
    standing_24h: int
    bad_actors: list[BadActor]

    def lines(self) -> list[str]:
        """A few lines of text with the targets beside the figures: per site at most one
        alert an hour on average, no 10 minutes with more than 10, critical at most 5 %
        of the alerts raised, at most 5 standing over 24 h (EEMUA 191's limits for an
        operator are looser: 6 an hour, 10 in the 10 minutes after an upset)."""

        def t(d: UtcDatetime) -> str:
            return d.strftime("%Y-%m-%d %H:%M")

        peak_at = f" at {t(self.peak_10min_at)}" if self.peak_10min_at else ""
        shares = ", ".join(
            f"{s.severity.value} {s.raised} ({s.share:.0%})" for s in self.by_severity
        )
        out = [
            f"alarm KPIs {t(self.start)} to {t(self.end)} UTC ({self.hours:.0f} h): "
            f"{self.raised} alerts raised, {self.per_hour:.2f} per hour",
            f"  peak: {self.peak_10min} in 10 minutes{peak_at} (target: 10 or fewer)",
            f"  by priority: {shares} (target: critical 5 % or less)",
            f"  standing over 24 h at the end: {self.standing_24h}",
        ]
        for s in self.sites:
            out.append(
                f"  {s.site_id}: {s.raised} raised, {s.per_hour:.2f}/h (target: 1 or fewer), "
                f"peak {s.peak_10min} in 10 min, {s.standing_24h} standing over 24 h "
                "(target: 5 or fewer)"
            )
        if self.bad_actors:
            out.append(
                "  bad actors: "
                + ", ".join(f"{b.source} {b.raised} ({b.repeats} repeats)" for b in self.bad_actors)
            )
        return out


class ScheduleRequest(_Request):
    horizon_hours: Annotated[float, Field(gt=0, le=24 * 31, allow_inf_nan=False)] = 168.0
    actor: Actor | None = None


class ScheduledWork(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workorder_id: str
    asset_id: Identifier
    technician_id: Identifier
    start: UtcDatetime
    end: UtcDatetime
    due_by: UtcDatetime | None = None
    cost: CostEstimate


class UnscheduledWork(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workorder_id: str
    asset_id: Identifier
    reason: str
    risk: float = Field(description="expected failure cost within the horizon if not done")


class PlanCost(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    labor: float = 0.0
    parts: float = 0.0
    downtime: float = 0.0
    risk: float = 0.0
    total: float = 0.0


class MaintenancePlan(BaseModel):
    """The technicians' plan over a horizon, with its expected cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    planned_at: UtcDatetime
    start: UtcDatetime
    horizon_hours: float
    scheduled: list[ScheduledWork] = Field(default_factory=list)
    unscheduled: list[UnscheduledWork] = Field(default_factory=list)
    cost: PlanCost = PlanCost()
    status: str = Field(description="the solver's status: optimal, feasible, ...")
    solver: str
    solve_seconds: float


class Period(BaseModel):
    """``[start, end)`` in UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: UtcDatetime
    end: UtcDatetime


class TechnicianCalendar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technician: Technician
    on_shift: list[Period] = Field(default_factory=list)


class LineCalendar(BaseModel):
    """When a line's machines may be stopped for planned work (``windows``; ``None``:
    at any time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: Identifier
    line_id: Identifier
    windows: list[Period] | None = None


class PlanCalendar(BaseModel):
    """What the planner works within over a horizon, in UTC: every technician's shifts
    (in the site's time zone) and every line's maintenance windows; the dashboard draws
    it behind the plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: UtcDatetime
    horizon_hours: float
    technicians: list[TechnicianCalendar] = Field(default_factory=list)
    lines: list[LineCalendar] = Field(default_factory=list)
