"""A what-if scenario as the API and the actors receive it.

>>> s = WhatIfRequest.model_validate({"load_factor": 1.2, "maintenance": [
...     {"component": "bearing_wear", "delay_days": 7}]})
>>> s.maintenance[0].delay_days, s.horizon_days
(7.0, 30.0)
>>> WhatIfRequest.model_validate({"load_factor": -1})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for WhatIfRequest
load_factor
  Input should be greater than 0 ...
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import FailureMode


class PlannedMaintenance(BaseModel):
    """Restore ``component`` (every component when omitted) after ``delay_days``."""

    model_config = ConfigDict(extra="forbid")
    component: FailureMode | None = None
    delay_days: Annotated[float, Field(ge=0, le=365)] = 0.0
    restore_to: Annotated[float, Field(ge=0, lt=1)] = 0.05


class WhatIfRequest(BaseModel):
    """How the machine would be run and maintained, and how far to look ahead."""

    model_config = ConfigDict(extra="forbid")
    load_factor: Annotated[float, Field(gt=0, le=3)] = 1.0
    ambient_c: Annotated[float, Field(ge=-60, le=80)] = 25.0
    maintenance: list[PlannedMaintenance] = Field(default_factory=list, max_length=50)
    replaced: list[FailureMode] = Field(default_factory=list)
    sensor_overrides: dict[str, float] = Field(default_factory=dict)
    horizon_days: Annotated[float, Field(gt=0, le=365)] = 30.0
    paths: Annotated[int, Field(ge=10, le=5000)] = 500
    seed: int = 0
