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

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from schemas.plant import MachineSpec
from twins.machine import MachineTwin, TwinConfig
from twins.survival import SurvivalRulModel

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


def train_rul_model(
    spec: MachineSpec,
    histories: Iterable[History],
    *,
    every_hours: float = 12.0,
    penalizer: float = 0.05,
    config: TwinConfig | None = None,
) -> SurvivalRulModel:
    """Fit a survival RUL model for machines like ``spec`` from their histories."""
    frame = landmark_frame(spec, histories, every_hours=every_hours, config=config)
    model = SurvivalRulModel(rul_feature_names(spec), penalizer=penalizer, name=f"{spec.type}-aft")
    return model.fit(frame)
