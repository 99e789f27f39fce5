"""The twin's state as others see it: latest value per sensor, metrics, health.

>>> s = TwinState(machine_id="P-101", version=3, last_update=1_700_000_000_000,
...     health_score=87.5, status="running",
...     sensors={"P-101.flow": SensorState(value=41.2, timestamp=1_700_000_000_000)})
>>> s.sensors["P-101.flow"].quality
<Quality.GOOD: 0>
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import EpochMs, Identifier, Quality
from schemas.rul import RulPrediction

# NaN and infinities cannot be written to JSON (they would come back as null and fail), so
# a metric that cannot be computed is None, and a feature that cannot be computed is left out.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class MachineStatus(StrEnum):
    """``unknown`` until data arrives; ``offline`` when every sensor is stale."""

    UNKNOWN = "unknown"
    RUNNING = "running"
    IDLE = "idle"
    WARNING = "warning"
    ALARM = "alarm"
    OFFLINE = "offline"


class SensorState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: FiniteFloat | None = None
    timestamp: EpochMs | None = None
    quality: Quality = Quality.GOOD
    stale: bool = False


class TwinState(BaseModel):
    """A versioned, immutable picture of one machine's twin.

    ``version`` counts applied batches; ``features`` maps sensor id to rolling features
    (``mean_64``, ``slope_64``...); ``derived_metrics`` holds the documented formulas of
    :mod:`twins.health`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_id: Identifier
    version: Annotated[int, Field(ge=0)]
    last_update: EpochMs | None = None
    health_score: Annotated[float, Field(ge=0, le=100)]
    status: MachineStatus
    sensors: dict[str, SensorState] = Field(default_factory=dict)
    derived_metrics: dict[str, FiniteFloat | None] = Field(default_factory=dict)
    features: dict[str, dict[str, FiniteFloat]] = Field(default_factory=dict)
    active_anomalies: Annotated[int, Field(ge=0)] = 0
    rul: RulPrediction | None = None


class TwinChanged(BaseModel):
    """The compact "twin changed" event on ``tf.twin.<machine>``
    (:func:`actors.host_actor.twin_event`): the twin's data time and the new readings of
    the sensors the message changed, ``sensors: {sensor id: [value, timestamp ms,
    quality]}``, and which of its anomaly conditions are still open, ``in_alarm``. Fields
    added later are ignored by readers.

    >>> e = TwinChanged.model_validate_json('{"machine_id": "P-101", "version": 3, '
    ...     '"last_update": 1700000000000, "sensors": {"P-101.flow": [41.2, 1700000000000, 0]}}')
    >>> e.sensors["P-101.flow"].value
    41.2
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    class Reading(NamedTuple):
        value: FiniteFloat | None
        timestamp: EpochMs | None
        quality: Quality

    machine_id: Identifier
    version: Annotated[int, Field(ge=0)]
    last_update: EpochMs | None = None
    sensors: dict[str, Reading] = Field(default_factory=dict)
    in_alarm: list[str] = Field(
        default_factory=list,
        description="the subjects (sensor names; 'machine') of the twin's open anomaly "
        "conditions: an anomaly is published once, when it starts or worsens",
    )
