"""The true condition of a machine: wear per failure mode, operating hours, failure.

A :class:`DegradationState` is a value: it is checked when built and never changed;
maintenance and degradation steps return new states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from schemas.common import FailureMode
from twins.simulator._checks import failure_mode, finite
from twins.simulator._random import FloatArray


@dataclass(frozen=True, slots=True)
class DegradationState:
    """The true condition of one machine: wear per failure mode, age, and failure.

    ``wear`` maps each failure mode to its wear (0 = new, 1 = failed); ``age_hours`` counts
    operating hours since installation; ``failed_mode`` is the mode that failed, if the
    machine is down. The state is a value: methods return new states.

    >>> s = DegradationState({"bearing_wear": 0.62, "seal_leak": 0.1})
    >>> s.worst_mode(), s.is_failed
    (<FailureMode.BEARING_WEAR: 'bearing_wear'>, False)
    >>> s.with_repair("bearing_wear").wear[FailureMode.BEARING_WEAR]
    0.05
    >>> DegradationState({"bearing_wear": -0.1})
    Traceback (most recent call last):
    ...
    ValueError: wear[bearing_wear] must be a finite number >= 0, got -0.1
    """

    wear: dict[FailureMode, float]
    age_hours: float = 0.0
    failed_mode: FailureMode | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.wear, Mapping) or not self.wear:
            raise ValueError("wear must be a non-empty mapping of failure mode to wear")
        wear: dict[FailureMode, float] = {}
        for key, value in self.wear.items():
            mode = failure_mode(key, "wear")
            if not finite(value) or value < 0:
                raise ValueError(f"wear[{mode.value}] must be a finite number >= 0, got {value!r}")
            wear[mode] = float(value)
        object.__setattr__(self, "wear", wear)
        if not finite(self.age_hours) or self.age_hours < 0:
            raise ValueError(f"age_hours must be a finite number >= 0, got {self.age_hours!r}")
        object.__setattr__(self, "age_hours", float(self.age_hours))
        if self.failed_mode is not None:
            failed = failure_mode(self.failed_mode, "failed_mode")
            if failed not in wear:
                raise ValueError(f"failed_mode {failed.value} is not one of the wear modes")
            object.__setattr__(self, "failed_mode", failed)

    @classmethod
    def new(cls, modes: Sequence[FailureMode], *, age_hours: float = 0.0) -> DegradationState:
        """A machine with new components (all wear 0)."""
        return cls({m: 0.0 for m in modes}, age_hours=age_hours)

    @property
    def modes(self) -> tuple[FailureMode, ...]:
        return tuple(self.wear)

    @property
    def is_failed(self) -> bool:
        return self.failed_mode is not None

    @property
    def worst_wear(self) -> float:
        return max(self.wear.values())

    def worst_mode(self) -> FailureMode:
        """The mode closest to failure."""
        return max(self.wear, key=lambda m: self.wear[m])

    def as_array(self, modes: Sequence[FailureMode]) -> FloatArray:
        """Wear in the order of ``modes``."""
        try:
            return np.array([self.wear[m] for m in modes], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"state has no wear for failure mode {exc.args[0]}") from None

    def with_repair(
        self, mode: FailureMode | str | None = None, *, restore_to: float = 0.05
    ) -> DegradationState:
        """The state after maintenance of ``mode`` (every mode when ``None``): its wear drops
        to ``restore_to`` (never raised), and the machine runs again if that mode had failed.
        """
        if not finite(restore_to) or not 0.0 <= restore_to < 1.0:
            raise ValueError(f"restore_to must be in [0, 1), got {restore_to!r}")
        targets = self.modes if mode is None else (failure_mode(mode, "mode"),)
        for m in targets:
            if m not in self.wear:
                raise ValueError(f"mode {m.value} is not a failure mode of this machine")
        wear = {m: (min(w, restore_to) if m in targets else w) for m, w in self.wear.items()}
        failed = None if self.failed_mode in targets else self.failed_mode
        return replace(self, wear=wear, failed_mode=failed)
