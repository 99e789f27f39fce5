"""Technicians and work orders (field names follow the public API, shared/API.md).

>>> Technician(id="T-01", name="Ana Silva", skills=["bearings", "alignment"]).skills
['bearings', 'alignment']
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import FailureMode, Identifier, SensorKind, UtcDatetime

HourOfDay = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class Shift(BaseModel):
    """A working shift, local time of the technician's site; may cross midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: HourOfDay = "06:00"
    end: HourOfDay = "14:00"
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], description="0 = Monday"
    )


class Technician(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    skills: list[Identifier] = Field(default_factory=list)
    site_id: Identifier | None = None
    shift: Shift = Shift()
    hourly_rate: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 60.0


class WorkOrderType(StrEnum):
    PREDICTIVE = "predictive"
    PREVENTIVE = "preventive"
    CORRECTIVE = "corrective"
    INSPECTION = "inspection"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class WorkOrderStatus(StrEnum):
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class PartRequirement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    part_number: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[int, Field(ge=1, strict=True)] = 1  # JSON's true is no count
    description: str = ""


class FailurePrediction(BaseModel):
    """The prediction that caused a predictive work order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: Annotated[float, Field(ge=0, le=1, strict=True)]
    rul_hours: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
    failure_mode: FailureMode | None = None


class MaintenancePolicy(BaseModel):
    """When a machine gets a predictive work order, and what its failing costs
    (``policy`` of a machine type in the plant file).

    A predictive work order is created when the median RUL falls below
    ``rul_median_below_hours`` or P(failure within ``failure_within_hours``) rises above
    ``failure_probability_above``, or (condition-based) when a sensor of one of the
    ``condition_kinds`` is confirmed beyond its critical limit; and not again while one is
    open for the machine.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rul_median_below_hours: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 240.0
    failure_within_hours: Annotated[int, Field(gt=0)] = 168
    failure_probability_above: Annotated[float, Field(gt=0, lt=1)] = 0.3
    failure_cost: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        50_000.0, description="cost of one unplanned failure (repair, scrap, lost output)"
    )
    downtime_cost_per_hour: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        1_000.0, description="cost of each hour the machine is stopped for planned work"
    )
    condition_kinds: tuple[SensorKind, ...] = Field(
        (SensorKind.VIBRATION, SensorKind.TEMPERATURE),
        description=(
            "kinds of sensor that measure the machine's condition: a limit alarm at or beyond "
            "the critical limit of one of them (ISO 20816 zone D for vibration) calls for a "
            "condition-based work order even when the RUL model does not; empty: predictions "
            "only"
        ),
    )


class CostEstimate(BaseModel):
    """A work order's estimated cost (shared/API.md ``estimated_cost``), plus what the
    planner weighs: downtime and the risk of failing before the repair."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labor: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    parts: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    downtime: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    risk: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @property
    def total(self) -> float:
        """Labour plus parts (the API's ``total``); downtime and risk are reported apart."""
        return self.labor + self.parts


class WorkOrder(BaseModel):
    """A planned or performed maintenance job on one machine (``asset_id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ASCII digits only (\d would take any Unicode digit) and at most 64 characters, so a
    # work order id is always a valid NATS subject token (schemas.subjects.workorder).
    workorder_id: Annotated[str, Field(pattern=r"^WO-[0-9]{4}-[0-9]{2}-[0-9]{4,}$", max_length=64)]
    asset_id: Identifier
    type: WorkOrderType
    priority: Priority = Priority.MEDIUM
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = ""
    status: WorkOrderStatus = WorkOrderStatus.SCHEDULED
    scheduled_date: UtcDatetime | None = None
    estimated_duration_hours: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    required_skills: list[Identifier] = Field(default_factory=list)
    parts_required: list[PartRequirement] = Field(default_factory=list)
    failure_prediction: FailurePrediction | None = None
    assigned_technician_id: Identifier | None = None
    technician_pinned: bool = Field(
        False, description="assigned by hand: the planner keeps this technician"
    )
    created_at: UtcDatetime
    completed_at: UtcDatetime | None = None
    scheduled_end: UtcDatetime | None = None
    not_before: UtcDatetime | None = Field(
        None, description="the earliest start asked for (scheduled_date of the request)"
    )
    due_by: UtcDatetime | None = Field(
        None, description="latest safe finish: the RUL interval's lower bound when predicted"
    )
    failure_mode: FailureMode | None = Field(None, description="what the work repairs")
    parts_reserved: list[PartRequirement] = Field(default_factory=list)
    estimated_cost: CostEstimate = CostEstimate()
    unplaced_reason: str | None = Field(
        None, description="why the last plan could not place it (None when placed)"
    )
    after: list[str] = Field(
        default_factory=list, description="work orders that must be finished before this one"
    )
    source: Annotated[str, Field(max_length=64)] = Field(
        "manual", description="'policy' for predictive orders the maintenance policy created"
    )
    updated_at: UtcDatetime | None = None
    revision: Annotated[int, Field(ge=0)] = Field(
        0, description="counts the stored changes: the newest record has the highest"
    )

    @model_validator(mode="after")
    def _completed_has_time(self) -> Self:
        if (self.status is WorkOrderStatus.COMPLETED) != (self.completed_at is not None):
            raise ValueError("completed_at is set exactly when status is completed")
        return self
