"""Technicians and work orders (field names follow the public API, shared/API.md).

>>> Technician(id="T-01", name="Ana Silva", skills=["bearings", "alignment"]).skills
['bearings', 'alignment']
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import FailureMode, Identifier, UtcDatetime

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
    quantity: Annotated[int, Field(ge=1)] = 1
    description: str = ""


class FailurePrediction(BaseModel):
    """The prediction that caused a predictive work order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: Annotated[float, Field(ge=0, le=1)]
    rul_hours: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    failure_mode: FailureMode | None = None


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
    created_at: UtcDatetime
    completed_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _completed_has_time(self) -> Self:
        if (self.status is WorkOrderStatus.COMPLETED) != (self.completed_at is not None):
            raise ValueError("completed_at is set exactly when status is completed")
        return self
