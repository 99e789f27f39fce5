"""Run-to-failure histories from a CSV file, for ``twinfleet train --histories``.

The format (one file per machine type; a header row; comma-separated):

==================  ==================================================================
``unit``            which machine life the row belongs to (any text or number); a unit's
                    rows are consecutive
``hours``           operating hours since the machine (or the part) was installed,
                    increasing within a unit
``failure_mode``    the mode the unit failed of at its last row (``bearing_wear``,
                    ``seal_leak``, ``winding_insulation``, ``misalignment``), the same on
                    every row of the unit; empty if it had not failed when observation
                    stopped (it then counts as still running at its last row)
one column per      named as the sensor in the plant file (``vibration_de``...); a value,
sensor              or empty where the sensor did not report
==================  ==================================================================

Other columns are ignored. Errors name the file, the row and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.common import FailureMode
from schemas.plant import MachineSpec


class HistoryFileError(ValueError):
    """The histories file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class RecordedLife:
    """One unit's history (the :class:`twins.training.History` shape)."""

    unit: str
    hours: np.ndarray
    values: np.ndarray
    failure_hours: float
    failure_mode: FailureMode | None


def read_histories(path: str | Path, spec: MachineSpec) -> list[RecordedLife]:
    """The lives in ``path`` for machines like ``spec``."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"unit": str, "failure_mode": str})
    except FileNotFoundError:
        raise HistoryFileError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise HistoryFileError(f"{path}: not a readable CSV file: {exc}") from None
    sensors = [s.name for s in spec.sensors]
    missing = [c for c in ("unit", "hours", "failure_mode", *sensors) if c not in frame]
    if missing:
        raise HistoryFileError(f"{path}: missing columns {missing}")
    if frame.empty:
        raise HistoryFileError(f"{path}: no rows")
    for column in ("hours", *sensors):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & frame[column].notna()
        if column == "hours":
            bad |= frame[column].isna()
        bad |= ~np.isfinite(numbers.fillna(0.0))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise HistoryFileError(
                f"{path}: row {row + 2}, column {column!r}: "
                f"{frame[column].iloc[row]!r} is not a finite number"
            )
        frame[column] = numbers
    modes = {m.value: m for m in FailureMode}
    lives = []
    units = frame["unit"].astype(str)
    starts = np.flatnonzero(np.r_[True, units.to_numpy()[1:] != units.to_numpy()[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    seen: set[str] = set()
    for a, b in zip(starts, ends, strict=True):
        unit = units.iloc[a]
        if unit in seen:
            raise HistoryFileError(f"{path}: rows of unit {unit!r} are not consecutive")
        seen.add(unit)
        hours = frame["hours"].to_numpy(dtype=np.float64)[a:b]
        if (hours < 0).any() or np.any(np.diff(hours) <= 0):
            raise HistoryFileError(f"{path}: hours of unit {unit!r} must be >= 0 and increasing")
        named = frame["failure_mode"].iloc[a:b].fillna("").astype(str).str.strip().unique()
        if len(named) != 1:
            raise HistoryFileError(
                f"{path}: unit {unit!r} names more than one failure_mode: {sorted(named)}"
            )
        if named[0] and named[0] not in modes:
            raise HistoryFileError(
                f"{path}: unit {unit!r}: failure_mode {named[0]!r} is not one of {sorted(modes)}"
            )
        lives.append(
            RecordedLife(
                unit=unit,
                hours=hours,
                values=frame[sensors].to_numpy(dtype=np.float64)[a:b],
                failure_hours=float(hours[-1]),
                failure_mode=modes[named[0]] if named[0] else None,
            )
        )
    if not any(life.failure_mode is not None for life in lives):
        raise HistoryFileError(f"{path}: no unit failed (every failure_mode is empty)")
    return lives
