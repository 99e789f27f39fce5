"""Alert rules (written in the plant file) and alerts (what the alert manager raised).

A rule names a condition; an alert is one open occurrence of that condition on one
machine. Repeats of the same condition on the same machine while its alert is open add to
the alert's ``count`` instead of raising another.

>>> AlertRule(id="hot-bearing", kind="threshold", sensor="bearing_temp", above=80,
...     severity="high").kind
<RuleKind.THRESHOLD: 'threshold'>
>>> AlertRule(id="x", kind="threshold", sensor="bearing_temp")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for AlertRule
  Value error, rule 'x' (threshold) needs 'above' or 'below' ...
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.anomaly import Severity
from schemas.common import Identifier, UtcDatetime

# Alert ids are NATS subject tokens (tf.event.alert.<id>): ASCII only, bounded.
AlertId = Annotated[str, Field(pattern=r"^AL-[0-9a-f]{16}$")]


class RuleKind(StrEnum):
    ANOMALY = "anomaly"
    """A detector's anomaly of at least ``min_severity``."""
    THRESHOLD = "threshold"
    """A sensor's value ``above`` or ``below`` a limit (checked on every twin update)."""
    NO_DATA = "no_data"
    """No reading from the machine for ``minutes``."""
    RUL_BELOW = "rul_below"
    """Median remaining useful life below ``hours``."""
    FAILURE_PROBABILITY = "failure_probability"
    """P(failure within ``horizon_hours``) above ``probability``."""
    SCHEDULE = "schedule"
    """A work order the planner could not place before its latest safe finish (built in)."""


class AlertRule(BaseModel):
    """One rule of the plant's alerting (``alert_rules`` in the plant file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    kind: RuleKind
    severity: Severity = Severity.HIGH
    machine_types: list[Identifier] = Field(
        default_factory=list, description="applies to these machine types; empty: all"
    )
    machines: list[Identifier] = Field(
        default_factory=list, description="applies to these machines; empty: all"
    )
    sensor: Identifier | None = Field(None, description="threshold: the sensor's name")
    above: Annotated[float, Field(allow_inf_nan=False)] | None = None
    below: Annotated[float, Field(allow_inf_nan=False)] | None = None
    minutes: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    hours: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    horizon_hours: Annotated[int, Field(gt=0)] | None = None
    probability: Annotated[float, Field(gt=0, lt=1)] | None = None
    min_severity: Severity = Severity.HIGH
    clear_after_minutes: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None,
        description="anomaly/threshold: resolve the alert (return to normal) when the "
        "condition has not repeated for this long; None: people resolve it",
    )
    escalate_after_minutes: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None,
        description="escalate a critical alert nobody acknowledged after this long "
        "(default: the plant's alerting.escalate_after_minutes)",
    )

    @model_validator(mode="after")
    def _complete(self) -> Self:
        need = {
            RuleKind.THRESHOLD: ("sensor",),
            RuleKind.NO_DATA: ("minutes",),
            RuleKind.RUL_BELOW: ("hours",),
            RuleKind.FAILURE_PROBABILITY: ("horizon_hours", "probability"),
        }.get(self.kind, ())
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"rule {self.id!r} ({self.kind.value}) needs {', '.join(missing)}")
        if self.kind is RuleKind.THRESHOLD and self.above is None and self.below is None:
            raise ValueError(f"rule {self.id!r} (threshold) needs 'above' or 'below'")
        return self

    def applies_to(self, machine_id: str, machine_type: str) -> bool:
        return (not self.machines or machine_id in self.machines) and (
            not self.machine_types or machine_type in self.machine_types
        )


def default_rules() -> list[AlertRule]:
    """What a plant file without ``alert_rules`` gets."""
    return [
        AlertRule(
            id="anomaly", kind=RuleKind.ANOMALY, min_severity=Severity.HIGH, clear_after_minutes=60
        ),
        AlertRule(id="no-data", kind=RuleKind.NO_DATA, minutes=10, severity=Severity.MEDIUM),
        AlertRule(id="rul-low", kind=RuleKind.RUL_BELOW, hours=240, severity=Severity.HIGH),
        AlertRule(
            id="failure-7d",
            kind=RuleKind.FAILURE_PROBABILITY,
            horizon_hours=168,
            probability=0.3,
            severity=Severity.CRITICAL,
        ),
    ]


class Alerting(BaseModel):
    """Plant-wide alerting settings (``alerting`` in the plant file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    escalate_after_minutes: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0
    webhook_url: str | None = Field(None, description="notify alerts to this URL (JSON POST)")
    webhook_retries: Annotated[int, Field(ge=0, le=20)] = 5
    cmms_webhook_url: str | None = Field(
        None, description="send every work order change to a CMMS (JSON POST)"
    )


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FALSE_POSITIVE = "false_positive"

    @property
    def closed(self) -> bool:
        return self in (AlertStatus.RESOLVED, AlertStatus.FALSE_POSITIVE)


class Alert(BaseModel):
    """One condition on one machine, with how often it repeated and who handled it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: AlertId
    machine_id: Identifier
    rule_id: Identifier
    kind: RuleKind
    subject: str = Field("", description="what on the machine: a sensor, a failure mode")
    severity: Severity
    status: AlertStatus = AlertStatus.OPEN
    message: Annotated[str, Field(min_length=1)]
    count: Annotated[int, Field(ge=1)] = 1
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    first_raised_at: UtcDatetime
    last_raised_at: UtcDatetime
    acknowledged_at: UtcDatetime | None = None
    acknowledged_by: str | None = None
    resolved_at: UtcDatetime | None = None
    resolved_by: str | None = None
    note: str = ""
    escalation_level: Annotated[int, Field(ge=0)] = 0
    escalated_at: UtcDatetime | None = None
    workorder_id: str | None = None
    revision: Annotated[int, Field(ge=0)] = Field(
        0, description="counts the stored changes: the newest record has the highest"
    )
