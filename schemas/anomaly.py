"""Anomaly records: what a detector found on a machine, in the plant's words.

>>> a = AnomalyRecord(machine_id="P-101", sensor_id="P-101.bearing_temp",
...     timestamp=1_700_000_000_000, type="threshold", severity="critical", score=0.97,
...     value=101.2, expected_value=70.0, reason="above critical limit 95.0",
...     detector="threshold")
>>> a.anomaly_id
'P-101:P-101.bearing_temp:1700000000000:threshold'
>>> a.model_dump(mode="json")["timestamp"]
'2023-11-14T22:13:20.000Z'
>>> AnomalyRecord.model_validate_json(a.model_dump_json()) == a
True
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    computed_field,
    model_validator,
)

from schemas.common import EpochMs, Identifier, SensorId


class AnomalyType(StrEnum):
    THRESHOLD = "threshold"
    SPIKE = "spike"
    FLATLINE = "flatline"
    STALE = "stale"
    STATISTICAL = "statistical"
    MULTIVARIATE = "multivariate"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @classmethod
    def from_score(cls, score: float) -> Severity:
        """Detector scores are 0..1 with 0.5 as the alarm boundary (see twins.detectors)."""
        if score >= 0.95:
            return cls.CRITICAL
        if score >= 0.8:
            return cls.HIGH
        if score >= 0.65:
            return cls.MEDIUM
        return cls.LOW

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class AnomalyRecord(BaseModel):
    """One anomaly on a machine (``sensor_id`` is None for machine-level findings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_id: Identifier
    sensor_id: SensorId | None = None
    timestamp: EpochMs = Field(description="time of the reading that raised it")
    type: AnomalyType
    severity: Severity
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    expected_value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    reason: Annotated[str, Field(min_length=1)]
    detector: Annotated[str, Field(min_length=1)]
    contributing_sensors: list[SensorId] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def anomaly_id(self) -> str:
        """Deterministic: the same finding always gets the same id (idempotent storage)."""
        return f"{self.machine_id}:{self.sensor_id or '-'}:{self.timestamp}:{self.type.value}"

    @model_validator(mode="wrap")
    @classmethod
    def _derived_id(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """A dumped record carries its computed ``anomaly_id``: accept it back when it
        matches the record, refuse it when it does not."""
        given = None
        if isinstance(data, dict) and "anomaly_id" in data:
            data = dict(data)
            given = data.pop("anomaly_id")
        record = handler(data)
        if given is not None and given != record.anomaly_id:
            raise ValueError(
                f"anomaly_id {given!r} does not match the record ({record.anomaly_id!r})"
            )
        return record

    @model_validator(mode="after")
    def _sensors_on_machine(self) -> Self:
        prefix = f"{self.machine_id}."
        if self.sensor_id is not None and not self.sensor_id.startswith(prefix):
            raise ValueError(
                f"sensor_id: {self.sensor_id!r} does not belong to machine {self.machine_id!r}"
            )
        for i, s in enumerate(self.contributing_sensors):
            if not s.startswith(prefix):
                raise ValueError(
                    f"contributing_sensors.{i}: {s!r} does not belong to machine "
                    f"{self.machine_id!r}"
                )
        return self
