"""Training data for the RUL model, made by the twins' own code.

Run-to-failure histories are replayed, reading by reading, through a
:class:`~twins.machine.MachineTwin` (detection off, everything else as live), and at
every landmark age the twin's :meth:`~twins.machine.MachineTwin.rul_features` are taken
as one training row: the features the live twin will hand the model are, by
construction, the features it was trained on.

A history is anything with ``hours`` (n,), ``values`` (n, sensors, in the machine's
sensor order; NaN for a missing reading), ``failure_hours`` and ``failure_mode`` (None
when the history ends without a failure: it is then censored at its last sample).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from schemas.plant import MachineSpec
from twins.boosted import BoostedRulModel
from twins.drift import DriftReference, OwnBaseline, daily_deviations, regimes_of
from twins.machine import MachineTwin, TwinConfig, _scale
from twins.rul import RulModel
from twins.survival import RulEstimate, SurvivalRulModel

EPOCH_MS = 1_600_000_000_000  # histories are replayed from this (arbitrary) instant


class History(Protocol):
    @property
    def hours(self) -> np.ndarray: ...
    @property
    def values(self) -> np.ndarray: ...
    @property
    def failure_hours(self) -> float: ...
    @property
    def failure_mode(self) -> object: ...


def replay_features(
    spec: MachineSpec,
    hours: np.ndarray,
    values: np.ndarray,
    marks: Sequence[float] | np.ndarray,
    config: TwinConfig | None = None,
) -> list[dict[str, float]]:
    """Feed one history through a fresh twin (detection off) and take its
    :meth:`~twins.machine.MachineTwin.rul_features` at each of ``marks`` (ascending
    hours), after every reading up to and including that hour has been applied."""
    cfg = TwinConfig(**{**(config or TwinConfig()).__dict__, "detect": False})
    values = np.asarray(values, dtype=np.float64)
    hours = np.asarray(hours, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(hours), len(spec.sensors)):
        raise ValueError(f"values must be (len(hours), {len(spec.sensors)}), got {values.shape}")
    marks = np.asarray(marks, dtype=np.float64)
    if marks.size and np.any(np.diff(marks) < 0):
        raise ValueError("marks must be ascending")
    twin = MachineTwin(spec.model_copy(update={"installed_hours": 0.0}), config=cfg)
    cuts = np.searchsorted(hours, marks, side="right")
    out = []
    start = 0
    for cut in cuts:
        if cut > start:  # everything up to the mark, in one call (many scans)
            chunk = values[start:cut]
            present = ~np.isnan(chunk)
            ts = EPOCH_MS + np.round(hours[start:cut] * 3_600_000).astype(np.int64)
            twin.apply_arrays(
                np.broadcast_to(ts[:, None], chunk.shape)[present],
                chunk[present],
                np.broadcast_to(np.arange(chunk.shape[1]), chunk.shape)[present],
            )
            start = cut
        out.append(twin.rul_features())
    return out


def landmark_frame(
    spec: MachineSpec,
    histories: Iterable[History],
    *,
    every_hours: float = 12.0,
    config: TwinConfig | None = None,
) -> pd.DataFrame:
    """One row per history per landmark: features, ``entry`` (age), ``duration`` (end of
    life), ``event`` and ``mode``; ``unit`` numbers the history."""
    if every_hours <= 0:
        raise ValueError(f"every_hours must be positive, got {every_hours}")
    cfg = config or TwinConfig()
    rows: list[dict[str, object]] = []
    for unit, life in enumerate(histories):
        mode = life.failure_mode
        event = mode is not None
        mode_name = getattr(mode, "value", mode)
        hours = np.asarray(life.hours, dtype=np.float64)
        # A history that ends without failing is censored where observation stopped.
        end = float(life.failure_hours) if event else float(hours[-1])
        marks = np.arange(cfg.rul_min_hours, end, every_hours)
        try:
            taken = replay_features(spec, hours, life.values, marks, cfg)
        except ValueError as exc:
            raise ValueError(f"history {unit}: {exc}") from None
        for mark, feats in zip(marks, taken, strict=True):
            if all(np.isfinite(v) for v in feats.values()):
                rows.append(
                    {
                        **feats,
                        "unit": unit,
                        "entry": float(mark),
                        "duration": end,
                        "event": event,
                        "mode": mode_name,
                    }
                )
    if not rows:
        raise ValueError("no landmark rows: histories are shorter than the trend warm-up")
    return pd.DataFrame(rows)


def rul_feature_names(spec: MachineSpec, sensors: Sequence[str] | None = None) -> list[str]:
    """The trend features a model for this machine type reads (mean and slope per sensor)."""
    names = [s.name for s in spec.sensors] if sensors is None else list(sensors)
    return [f"{n}.{stat}" for n in names for stat in ("mean", "slope")]


MODEL_KINDS = ("aft", "boosted")
"""``aft``: cause-specific Weibull AFT (:class:`~twins.survival.SurvivalRulModel`);
``boosted``: boosted health index (:class:`~twins.boosted.BoostedRulModel`)."""


def new_rul_model(
    spec: MachineSpec, kind: str = "aft", penalizer: float = 0.05
) -> SurvivalRulModel | BoostedRulModel:
    """An unfitted model of ``kind`` for machines like ``spec``."""
    if kind == "aft":
        return SurvivalRulModel(
            rul_feature_names(spec), penalizer=penalizer, name=f"{spec.type}-aft"
        )
    if kind == "boosted":
        names = rul_feature_names(spec) + [f"{s.name}.drift" for s in spec.sensors]
        return BoostedRulModel(names, name=f"{spec.type}-boosted")
    raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")


def assess(model: RulModel, frame: pd.DataFrame, horizon: float = 168.0) -> dict[str, float]:
    """How well ``model`` does on landmark rows it was not fitted on.

    ``concordance``: Harrell's C of the predicted median against the remaining life
    (0.5 is chance, 1 is a perfect ranking). ``interval_coverage``: share of failed rows
    whose remaining life lies inside the model's interval. Calibration at ``horizon``,
    over rows whose outcome at the horizon is known (failed within it, or seen running
    past it): ``predicted_p`` (mean predicted probability of failing within the horizon)
    against ``observed_p`` (the share that did), and the Brier score.
    """
    from lifelines.utils import concordance_index

    if frame.empty:
        raise ValueError("frame has no rows to assess on")
    x = frame[list(model.features)].to_numpy(dtype=np.float64)
    entry = frame["entry"].to_numpy(dtype=np.float64)
    remaining = frame["duration"].to_numpy(dtype=np.float64) - entry
    event = frame["event"].to_numpy(dtype=bool)
    estimates = [model.predict(row, age=float(a)) for row, a in zip(x, entry, strict=True)]
    median = np.array([e.median for e in estimates])
    lower = np.array([e.lower for e in estimates])
    upper = np.array([e.upper for e in estimates])
    p = np.array([_probability_within(e, horizon) for e in estimates])
    known = (event & (remaining <= horizon)) | (remaining > horizon)
    failed = (event & (remaining <= horizon))[known]
    inside = (lower <= remaining) & (remaining <= upper)
    return {
        "rows": float(len(frame)),
        "concordance": float(concordance_index(remaining, median, event)),
        "interval_coverage": float(inside[event].mean()) if event.any() else math.nan,
        "predicted_p": float(p[known].mean()) if known.any() else math.nan,
        "observed_p": float(failed.mean()) if known.any() else math.nan,
        "brier": float(np.mean((p[known] - failed) ** 2)) if known.any() else math.nan,
    }


def _probability_within(estimate: RulEstimate, horizon: float) -> float:
    """P(fail within ``horizon``) from the estimate's survival curve (its own horizons
    when ``horizon`` is one of them)."""
    probs = estimate.failure_probability
    if int(horizon) == horizon and int(horizon) in probs:
        return probs[int(horizon)]
    survival = np.interp(horizon, estimate.curve_hours, estimate.curve_survival)
    return float(1.0 - survival)


def drift_reference(spec: MachineSpec, histories: Iterable[History]) -> DriftReference:
    """What a model's training data looks like, for drift detection (:mod:`twins.drift`):
    per operating regime, each sensor's daily mean deviation from its own level in that
    regime over the first hours of its history (:class:`~twins.drift.OwnBaseline`), while
    running, the condition sensors left out."""
    condition = spec.condition_indices()
    features = [i for i in range(len(spec.sensors)) if i not in condition]
    scale = []
    for i in condition:
        s = _scale(spec.sensors[i])
        if s is None:
            raise ValueError(f"condition sensor {spec.sensors[i].name!r} has no rated value")
        scale.append(s)
    width = spec.operating_condition.regime_width if spec.operating_condition else 0.1
    values, regimes = [], []
    for life in histories:
        hours = np.asarray(life.hours, dtype=np.float64)
        v = np.asarray(life.values, dtype=np.float64)
        r = regimes_of(v[:, condition], scale, width) if condition else np.zeros(len(v), int)
        d = OwnBaseline(len(features)).deviations(v[:, features], r, hours)
        daily, regs = daily_deviations(d, r, hours)
        values.append(daily)
        regimes.append(regs)
    if not values:
        raise ValueError("no histories to take a drift reference from")
    return DriftReference.fit(
        [spec.sensors[i].name for i in features],
        np.concatenate(values),
        np.concatenate(regimes),
        condition=[spec.sensors[i].name for i in condition],
        scale=scale,
        width=width,
    )


def train_rul_model(
    spec: MachineSpec,
    histories: Iterable[History],
    *,
    every_hours: float = 12.0,
    penalizer: float = 0.05,
    config: TwinConfig | None = None,
) -> SurvivalRulModel:
    """Fit a survival RUL model for machines like ``spec`` from their histories; the
    young part of the histories' readings is kept with it as its drift reference."""
    histories = list(histories)
    frame = landmark_frame(spec, histories, every_hours=every_hours, config=config)
    model = SurvivalRulModel(rul_feature_names(spec), penalizer=penalizer, name=f"{spec.type}-aft")
    model.fit(frame)
    model.drift_reference_ = drift_reference(spec, histories)
    return model
