"""Training data for the RUL model, made by the twins' own code.

Run-to-failure histories are replayed, reading by reading, through a
:class:`~twins.machine.MachineTwin` (detection off, everything else as live), and at
every landmark age the twin's :meth:`~twins.machine.MachineTwin.rul_features` are taken
as one training row: the features the live twin will hand the model are, by
construction, the features it was trained on.

A history is anything with ``hours`` (n,), ``values`` (n, sensors, in the machine's
sensor order), ``failure_hours`` (end of the history) and ``failure_mode`` (None when the
history ends without a failure: a censored row).
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
    cfg = TwinConfig(**{**cfg.__dict__, "detect": False})
    rows: list[dict[str, object]] = []
    for unit, life in enumerate(histories):
        values = np.asarray(life.values, dtype=np.float64)
        hours = np.asarray(life.hours, dtype=np.float64)
        if values.ndim != 2 or values.shape != (len(hours), len(spec.sensors)):
            raise ValueError(
                f"history {unit}: values must be (len(hours), {len(spec.sensors)}), got {values.shape}"
            )
        twin = MachineTwin(spec.model_copy(update={"installed_hours": 0.0}), config=cfg)
        next_mark = cfg.rul_min_hours
        mode = life.failure_mode
        event = mode is not None
        mode_name = getattr(mode, "value", mode)
        for h, row in zip(hours, values, strict=True):
            ts = EPOCH_MS + int(round(h * 3_600_000))
            present = ~np.isnan(row)
            twin.apply_arrays(np.full(int(present.sum()), ts), row[present], np.flatnonzero(present))
            if h >= next_mark and h < life.failure_hours:
                feats = twin.rul_features()
                if all(np.isfinite(v) for v in feats.values()):
                    rows.append(
                        {
                            **feats,
                            "unit": unit,
                            "entry": float(h),
                            "duration": float(life.failure_hours),
                            "event": event,
                            "mode": mode_name,
                        }
                    )
                next_mark = h + every_hours
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
