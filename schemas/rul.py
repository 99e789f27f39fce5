"""Remaining-useful-life predictions: a survival distribution, not a point.

``median_hours`` is the median remaining life given the machine has survived to its
current age; ``lower_hours``/``upper_hours`` bound a central interval of ``confidence``
(0.9 by default: the 5th and 95th percentiles of remaining life).

>>> p = RulPrediction(machine_id="P-101", failure_mode="bearing_wear", median_hours=400,
...     lower_hours=150, upper_hours=900, survival_curve=[SurvivalPoint(hours=0,
...     survival_probability=1.0), SurvivalPoint(hours=400, survival_probability=0.5)],
...     failure_probability={24: 0.01, 72: 0.03, 168: 0.08, 336: 0.2, 720: 0.6},
...     model_version="bearing-v1", predicted_at=1_700_000_000_000, age_hours=1200)
>>> p.failure_probability[168]
0.08
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import EpochMs, FailureMode, Identifier

FAILURE_HORIZONS_H: tuple[int, ...] = (24, 72, 168, 336, 720)
"""Horizons (hours) at which every prediction states its probability of failure."""

Hours = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]
HorizonHours = Annotated[int, Field(gt=0)]

# Survival and failure probabilities come from numerical models; allow this much noise
# before calling a curve non-monotonic.
_MONOTONE_TOLERANCE = 1e-9


class SurvivalPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hours: Hours
    survival_probability: Probability


class ContributingFactor(BaseModel):
    """A feature that moves the prediction; ``importance`` is its share (0..1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: str
    importance: Probability
    current_value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    threshold: Annotated[float, Field(allow_inf_nan=False)] | None = None


class RulPrediction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_id: Identifier
    component: str = "machine"
    failure_mode: FailureMode | None = None
    median_hours: Hours
    lower_hours: Hours
    upper_hours: Hours
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.9
    survival_curve: list[SurvivalPoint]
    failure_probability: dict[HorizonHours, Probability] = Field(
        description="P(failure within h hours) for h in FAILURE_HORIZONS_H"
    )
    contributing_factors: list[ContributingFactor] = Field(default_factory=list)
    failure_mode_shares: dict[str, Probability] = Field(
        default_factory=dict,
        description="each failure mode's share of the predicted failure (they sum to 1; "
        "empty when the model does not tell modes apart)",
    )
    model_version: Annotated[str, Field(min_length=1)]
    predicted_at: EpochMs
    age_hours: Hours = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.lower_hours <= self.median_hours <= self.upper_hours:
            raise ValueError(
                f"median_hours ({self.median_hours}) must lie between lower_hours "
                f"({self.lower_hours}) and upper_hours ({self.upper_hours})"
            )
        for i, (before, point) in enumerate(pairwise(self.survival_curve), start=1):
            if point.hours < before.hours:
                raise ValueError(
                    f"survival_curve.{i}.hours ({point.hours}) comes before the previous "
                    f"point ({before.hours}); points must be in time order"
                )
            if point.survival_probability > before.survival_probability + _MONOTONE_TOLERANCE:
                raise ValueError(
                    f"survival_curve.{i}.survival_probability ({point.survival_probability}) "
                    f"rises above the previous point ({before.survival_probability}); "
                    "survival never increases with time"
                )
        missing = [h for h in FAILURE_HORIZONS_H if h not in self.failure_probability]
        if missing:
            raise ValueError(
                f"failure_probability has no entry for horizons {missing} (hours); every "
                f"prediction states {list(FAILURE_HORIZONS_H)}"
            )
        if self.failure_mode_shares and abs(sum(self.failure_mode_shares.values()) - 1) > 1e-3:
            raise ValueError(
                f"failure_mode_shares sum to {sum(self.failure_mode_shares.values()):.4f}; "
                "the shares of one predicted failure sum to 1"
            )
        horizons = sorted(self.failure_probability)
        for short, long in pairwise(horizons):
            p_short, p_long = self.failure_probability[short], self.failure_probability[long]
            if p_long < p_short - _MONOTONE_TOLERANCE:
                raise ValueError(
                    f"failure_probability.{long} ({p_long}) is below failure_probability."
                    f"{short} ({p_short}); failing within a longer horizon cannot be less likely"
                )
        return self
