"""Argument checks shared by the simulator modules (private)."""

from __future__ import annotations

import math

import numpy as np

from schemas.common import FailureMode


def finite(x: object) -> bool:
    """Whether ``x`` is a real, finite number (bools are not numbers here)."""
    return (
        isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, bool)
        and math.isfinite(float(x))
    )


def non_negative_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and bool(x >= 0)


def failure_mode(value: object, name: str) -> FailureMode:
    """``value`` as a :class:`FailureMode`, or a ``ValueError`` naming ``name``."""
    try:
        return FailureMode(value)  # type: ignore[arg-type]
    except ValueError:
        known = ", ".join(m.value for m in FailureMode)
        raise ValueError(f"{name}: {value!r} is not a failure mode ({known})") from None
