"""Alert rules (written in the plant file) and alerts (what the alert manager raised).

A rule names a condition; an alert is one open occurrence of that condition on one
machine. Repeats of the same condition on the same machine while its alert is open add to
the alert's ``count`` instead of raising another.

Severity means something (ISA-18.2, EEMUA 191): ``critical`` is for a condition that needs
action now, a sensor beyond its critical limit (a twin's threshold anomaly of severity
critical) or a predicted failure inside its lead time. An alert on a statistical anomaly
(:data:`STATISTICAL_TYPES`) starts at its rule's ``severity`` (low by default) and goes up
only when the condition persists (``persist_minutes``) or is corroborated
(``corroborate_minutes``), never above ``escalate_to`` (at most high).

>>> AlertRule(id="hot-bearing", kind="threshold", sensor="bearing_temp", above=80,
...     severity="high").kind
<RuleKind.THRESHOLD: 'threshold'>
>>> AlertRule(id="x", kind="threshold", sensor="bearing_temp")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for AlertRule
  Value error, rule 'x' (threshold) needs 'above' or 'below' ...
>>> r = AlertRule(id="anomaly", kind="anomaly")
>>> r.severity.value, r.escalate_to.value, r.on_delay_minutes, r.persist_minutes
('low', 'high', 5.0, 30.0)
>>> AlertRule(id="y", kind="anomaly", escalate_to="critical")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for AlertRule
  Value error, rule 'y' (anomaly): escalate_to cannot be critical...
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.anomaly import AnomalyType, Severity
from schemas.common import Identifier, UtcDatetime

# Alert ids are NATS subject tokens (tf.event.alert.<id>): ASCII only, bounded.
AlertId = Annotated[str, Field(pattern=r"^AL-[0-9a-f]{16}$")]
Minutes = Annotated[float, Field(gt=0, allow_inf_nan=False)]

STATISTICAL_TYPES = frozenset(
    {
        AnomalyType.STATISTICAL,
        AnomalyType.MULTIVARIATE,
        AnomalyType.SPIKE,
        AnomalyType.FLATLINE,
        AnomalyType.STALE,
    }
)
"""Anomalies a detector inferred (rather than a limit crossed): their alerts start low and
go up only by persistence or corroboration."""

MAX_PLANNING_HORIZON_H = 72
"""A failure_probability rule over a longer horizon is for planning work, not critical."""


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
    """P(failure within ``horizon_hours``, or within the repair lead time) above
    ``probability``."""
    SCHEDULE = "schedule"
    """A work order the planner could not place before its latest safe finish (built in)."""
    MODEL_DRIFT = "model_drift"
    """The machines of a type no longer read like their RUL model's training data
    (:mod:`twins.drift`): for the reliability engineer, low by default."""


_ONLY = {
    "anomaly_types": (RuleKind.ANOMALY,),
    "escalate_to": (RuleKind.ANOMALY,),
    "persist_minutes": (RuleKind.ANOMALY,),
    "corroborate_minutes": (RuleKind.ANOMALY,),
    "on_delay_minutes": (RuleKind.ANOMALY, RuleKind.THRESHOLD),
    "deadband": (RuleKind.THRESHOLD,),
    "within_repair_lead_time": (RuleKind.FAILURE_PROBABILITY,),
    "planning_lead_hours": (RuleKind.FAILURE_PROBABILITY,),
}
"""The rule kinds each of the chattering and severity settings means something for (set
to anything but its default on another kind of rule, it is refused)."""


class AlertRule(BaseModel):
    """One rule of the plant's alerting (``alert_rules`` in the plant file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    kind: RuleKind
    severity: Severity = Field(
        Severity.HIGH,
        description="the alert's severity; anomaly rules: where an alert on a statistical "
        "anomaly starts (default low; a threshold anomaly keeps the detector's severity, "
        "critical only beyond a critical limit)",
    )
    machine_types: list[Identifier] = Field(
        default_factory=list, description="applies to these machine types; empty: all"
    )
    machines: list[Identifier] = Field(
        default_factory=list, description="applies to these machines; empty: all"
    )
    sensor: Identifier | None = Field(None, description="threshold: the sensor's name")
    above: Annotated[float, Field(allow_inf_nan=False)] | None = None
    below: Annotated[float, Field(allow_inf_nan=False)] | None = None
    minutes: Minutes | None = None
    hours: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    horizon_hours: Annotated[int, Field(gt=0)] | None = None
    probability: Annotated[float, Field(gt=0, lt=1)] | None = None
    min_severity: Severity = Severity.HIGH
    clear_after_minutes: Minutes | None = Field(
        None,
        description="anomaly/threshold: resolve the alert (return to normal) when the "
        "condition has not repeated for this long (the off-delay); None: people resolve it",
    )
    escalate_after_minutes: Minutes | None = Field(
        None,
        description="escalate a critical alert nobody acknowledged after this long "
        "(default: the plant's alerting.escalate_after_minutes)",
    )
    anomaly_types: list[AnomalyType] = Field(
        default_factory=list, description="anomaly: only anomalies of these types; empty: all"
    )
    escalate_to: Severity = Field(
        Severity.HIGH,
        description="anomaly: the highest severity persistence and corroboration raise an "
        "alert on a statistical anomaly to (not critical)",
    )
    persist_minutes: Minutes | None = Field(
        30.0,
        description="anomaly: an alert on a statistical anomaly goes up one severity for "
        "each such period its condition has kept repeating; None: never by persistence",
    )
    corroborate_minutes: Minutes | None = Field(
        15.0,
        description="anomaly: an alert on a statistical anomaly goes up one severity when "
        "another sensor or detector of the machine was in alarm within this long, or its "
        "RUL prediction is worsening; None: never by corroboration",
    )
    on_delay_minutes: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        0.0,
        description="anomaly/threshold: raise an alert only once its condition has kept "
        "repeating for this long (a critical condition is raised at once); default 5 for "
        "anomaly rules, 0 for threshold rules",
    )
    deadband: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        0.0,
        description="threshold: once crossed, the condition lasts until the value is back "
        "past the limit by this much (the sensor's unit)",
    )
    within_repair_lead_time: bool = Field(
        False,
        description="failure_probability: the horizon is the repair lead time, the "
        "catalogue's duration of the predicted failure mode's repair plus "
        "planning_lead_hours (instead of horizon_hours)",
    )
    planning_lead_hours: Annotated[float, Field(ge=0, le=720, allow_inf_nan=False)] = Field(
        24.0, description="failure_probability: the planning part of the repair lead time"
    )

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        """An anomaly rule's alerts start low and wait 5 minutes unless the rule says so;
        a model drift rule's alerts are low unless it says so."""
        if isinstance(data, dict) and data.get("kind") in (RuleKind.ANOMALY, "anomaly"):
            data = {"severity": Severity.LOW, "on_delay_minutes": 5.0, **data}
        if isinstance(data, dict) and data.get("kind") in (RuleKind.MODEL_DRIFT, "model_drift"):
            data = {"severity": Severity.LOW, **data}
        return data

    @model_validator(mode="after")
    def _complete(self) -> Self:
        need = {
            RuleKind.THRESHOLD: ("sensor",),
            RuleKind.NO_DATA: ("minutes",),
            RuleKind.RUL_BELOW: ("hours",),
            RuleKind.FAILURE_PROBABILITY: ("probability",),
        }.get(self.kind, ())
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"rule {self.id!r} ({self.kind.value}) needs {', '.join(missing)}")
        where = f"rule {self.id!r} ({self.kind.value})"
        if self.kind is RuleKind.THRESHOLD and self.above is None and self.below is None:
            raise ValueError(f"rule {self.id!r} (threshold) needs 'above' or 'below'")
        for name, kinds in _ONLY.items():
            default = type(self).model_fields[name].get_default(call_default_factory=True)
            if self.kind not in kinds and getattr(self, name) != default:
                allowed = " and ".join(k.value for k in kinds)
                raise ValueError(f"{where}: {name} applies to {allowed} rules only")
        if self.kind is RuleKind.FAILURE_PROBABILITY:
            if self.horizon_hours is None and not self.within_repair_lead_time:
                raise ValueError(f"{where} needs horizon_hours or within_repair_lead_time: true")
            if self.horizon_hours is not None and self.within_repair_lead_time:
                raise ValueError(
                    f"{where}: give horizon_hours or within_repair_lead_time, not both"
                )
        if self.kind is RuleKind.ANOMALY:
            if self.escalate_to is Severity.CRITICAL:
                raise ValueError(
                    f"{where}: escalate_to cannot be critical: critical is reserved for a "
                    "sensor beyond its critical limit (a threshold anomaly) or a predicted "
                    "failure inside its lead time"
                )
            if self.severity is Severity.CRITICAL:
                raise ValueError(
                    f"{where}: severity (where an alert on a statistical anomaly starts) "
                    "cannot be critical; a threshold anomaly beyond a critical limit is "
                    "critical whatever the rule says"
                )
            if self.escalate_to.rank < self.severity.rank:
                raise ValueError(
                    f"{where}: escalate_to ({self.escalate_to.value}) is below severity "
                    f"({self.severity.value})"
                )
        return self

    def applies_to(self, machine_id: str, machine_type: str) -> bool:
        return (not self.machines or machine_id in self.machines) and (
            not self.machine_types or machine_type in self.machine_types
        )

    def advice(self) -> str | None:
        """What contradicts the severity policy without being an error (yet): a critical
        failure-probability rule over a planning horizon."""
        if (
            self.kind is RuleKind.FAILURE_PROBABILITY
            and self.severity is Severity.CRITICAL
            and self.horizon_hours is not None
            and self.horizon_hours > MAX_PLANNING_HORIZON_H
        ):
            return (
                f"rule {self.id!r}: P(failure within {self.horizon_hours} h) is a reason to "
                "plan work (high), not an emergency; critical is for a failure inside its "
                f"lead time (within_repair_lead_time: true, or horizon_hours <= "
                f"{MAX_PLANNING_HORIZON_H})"
            )
        return None


def default_rules() -> list[AlertRule]:
    """What a plant file without ``alert_rules`` gets."""
    return [
        AlertRule(
            id="anomaly",
            kind=RuleKind.ANOMALY,
            min_severity=Severity.MEDIUM,
            clear_after_minutes=60,
        ),
        AlertRule(id="no-data", kind=RuleKind.NO_DATA, minutes=10, severity=Severity.MEDIUM),
        AlertRule(id="rul-low", kind=RuleKind.RUL_BELOW, hours=240, severity=Severity.MEDIUM),
        AlertRule(
            id="failure-7d",
            kind=RuleKind.FAILURE_PROBABILITY,
            horizon_hours=168,
            probability=0.3,
            severity=Severity.HIGH,
        ),
        AlertRule(
            id="failure-lead-time",
            kind=RuleKind.FAILURE_PROBABILITY,
            within_repair_lead_time=True,
            probability=0.2,
            severity=Severity.CRITICAL,
            escalate_after_minutes=15,
        ),
    ]


class Alerting(BaseModel):
    """Plant-wide alerting settings (``alerting`` in the plant file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    escalate_after_minutes: Minutes = 30.0
    webhook_url: str | None = Field(None, description="notify alerts to this URL (JSON POST)")
    webhook_retries: Annotated[int, Field(ge=0, le=20)] = 5
    cmms_webhook_url: str | None = Field(
        None, description="send every work order change to a CMMS (JSON POST)"
    )
    max_shelve_minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60, allow_inf_nan=False)] = Field(
        24 * 60.0, description="the longest an operator may shelve an alert"
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
    """One condition on one machine, with how often it repeated and who handled it.

    A shelved alert (``shelved_until`` set) notifies nothing and does not escalate; it
    comes back by itself at ``shelved_until``."""

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
    first_seen_at: UtcDatetime | None = Field(
        None,
        description="when its condition was first seen, if before first_raised_at (an on-delay)",
    )
    acknowledged_at: UtcDatetime | None = None
    acknowledged_by: str | None = None
    resolved_at: UtcDatetime | None = None
    resolved_by: str | None = None
    note: str = ""
    escalation_level: Annotated[int, Field(ge=0)] = 0
    escalated_at: UtcDatetime | None = None
    escalation_from: UtcDatetime | None = Field(
        None,
        description="escalation periods count from here (default first_raised_at; when "
        "it became critical later, then; moved on by the time the alert spent shelved)",
    )
    shelved_until: UtcDatetime | None = Field(
        None, description="shelved (no notifications, no escalation) until then"
    )
    shelved_at: UtcDatetime | None = None
    shelved_by: str | None = None
    shelve_reason: str = ""
    workorder_id: str | None = None
    revision: Annotated[int, Field(ge=0)] = Field(
        0, description="counts the stored changes: the newest record has the highest"
    )

    @property
    def shelved(self) -> bool:
        return self.shelved_until is not None and not self.status.closed

    @property
    def condition_since(self) -> UtcDatetime:
        """When the condition began: first seen, else first raised."""
        return self.first_seen_at or self.first_raised_at
