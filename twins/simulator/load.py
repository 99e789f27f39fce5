"""How hard a machine works over the week: shifts, weekends, idle blocks and noise.

The load is a fraction of rated duty (0 = stopped, 1 = rated, up to 1.2 = overload). A
:class:`LoadProfile` is a pure function of time: the load in any hour depends only on the
profile's settings, its ``seed`` and the hour, so a profile can be asked about any time in
any order (the simulator, a twin's what-if clone and a test all see the same loads).

The clock of a profile is *hours since a Monday 00:00* (plant local time). Within an hour
the load is constant.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import numpy.typing as npt

from schemas.common import MachineKind
from twins.simulator._checks import finite
from twins.simulator._random import FloatArray, hashed_normal, hashed_uniform

HOURS_PER_WEEK = 168.0
MAX_LOAD = 1.2
MIN_RUNNING_LOAD = 0.2

# (morning 06-14, afternoon 14-22, night 22-06) load, weekend factor, idle fraction
_KIND_DEFAULTS: dict[MachineKind, tuple[tuple[float, float, float], float, float]] = {
    MachineKind.MOTOR: ((0.85, 0.8, 0.55), 0.5, 0.04),
    MachineKind.PUMP: ((0.9, 0.85, 0.75), 0.8, 0.02),
    MachineKind.COMPRESSOR: ((0.9, 0.85, 0.6), 0.5, 0.04),
    MachineKind.CONVEYOR: ((0.85, 0.8, 0.0), 0.0, 0.05),
}

_STREAM_NOISE = 11
_STREAM_IDLE = 23
_STREAM_LEVEL = 37
_WEEK = 168
_CACHE_WEEKS = 16


class LoadProfile:
    """The load of one machine at any time: three shifts, lower weekends, idle blocks, noise.

    Parameters
    ----------
    kind
        Machine kind; chooses the default shift loads (pumps run round the clock, conveyors
        stop at night and at weekends).
    seed
        Seeds the hour-to-hour noise, the idle blocks and (when ``level`` is not given) the
        machine's own duty level.
    shift_loads
        Load in the morning (06-14), afternoon (14-22) and night (22-06) shift on weekdays;
        0 means the machine is stopped in that shift.
    weekend_factor
        Saturday and Sunday loads are the weekday loads times this factor.
    idle_fraction
        Share of ``idle_block_hours``-long blocks (whole hours) in which the machine stands
        idle (load 0).
    noise
        Relative standard deviation of the hour-to-hour load variation.
    level
        Multiplies every load (this machine's duty relative to its type); drawn from
        ``seed`` in [0.9, 1.05] when not given.

    >>> profile = LoadProfile(kind="pump", seed=3)
    >>> week = profile.load_at(np.arange(168.0))
    >>> week.shape, bool(week.min() >= 0.0), bool(week.max() <= 1.2)
    ((168,), True, True)
    >>> profile.load_at(10.5) == profile.load_at(10.0)
    True
    >>> LoadProfile(kind="pump", seed=3, noise=-1)
    Traceback (most recent call last):
    ...
    ValueError: noise must be >= 0, got -1
    """

    def __init__(
        self,
        kind: MachineKind | str = MachineKind.MOTOR,
        *,
        seed: int = 0,
        shift_loads: tuple[float, float, float] | None = None,
        weekend_factor: float | None = None,
        idle_fraction: float | None = None,
        idle_block_hours: float = 4.0,
        noise: float = 0.04,
        level: float | None = None,
    ) -> None:
        try:
            self.kind = MachineKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in MachineKind)
            raise ValueError(f"kind must be one of {known}, got {kind!r}") from None
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        default_shifts, default_weekend, default_idle = _KIND_DEFAULTS[self.kind]
        shifts = default_shifts if shift_loads is None else tuple(shift_loads)
        if len(shifts) != 3 or not all(finite(x) and 0.0 <= x <= MAX_LOAD for x in shifts):
            raise ValueError(f"shift_loads must be three loads in [0, {MAX_LOAD}], got {shifts}")
        weekend = default_weekend if weekend_factor is None else weekend_factor
        if not (finite(weekend) and 0.0 <= weekend <= 1.0):
            raise ValueError(f"weekend_factor must be in [0, 1], got {weekend_factor}")
        idle = default_idle if idle_fraction is None else idle_fraction
        if not (finite(idle) and 0.0 <= idle < 1.0):
            raise ValueError(f"idle_fraction must be in [0, 1), got {idle_fraction}")
        if not (finite(idle_block_hours) and idle_block_hours > 0):
            raise ValueError(f"idle_block_hours must be > 0, got {idle_block_hours}")
        if not (finite(noise) and noise >= 0):
            raise ValueError(f"noise must be >= 0, got {noise}")
        if level is None:
            level = 0.9 + 0.15 * float(hashed_uniform(int(seed), 0, _STREAM_LEVEL)[0])
        if not (finite(level) and 0.0 < level <= 1.5):
            raise ValueError(f"level must be in (0, 1.5], got {level}")
        self.seed = int(seed)
        self.shift_loads: tuple[float, float, float] = (shifts[0], shifts[1], shifts[2])
        self.weekend_factor = float(weekend)
        self.idle_fraction = float(idle)
        self.idle_block_hours = float(idle_block_hours)
        self.noise = float(noise)
        self.level = float(level)
        self._shift_table = np.array(self.shift_loads, dtype=np.float64)
        # Loads are a pure function of the hour; whole weeks are computed once and kept.
        self._cache: dict[int, FloatArray] = {}

    def __repr__(self) -> str:
        return (
            f"LoadProfile(kind={self.kind.value!r}, seed={self.seed}, "
            f"shift_loads={self.shift_loads}, weekend_factor={self.weekend_factor}, "
            f"idle_fraction={self.idle_fraction}, level={self.level:.3f})"
        )

    @overload
    def load_at(self, hours: float) -> float: ...

    @overload
    def load_at(self, hours: npt.NDArray[np.floating]) -> FloatArray: ...

    def load_at(self, hours: float | npt.NDArray[np.floating]) -> float | FloatArray:
        """The load at ``hours`` on the profile's clock (hours since a Monday 00:00)."""
        if isinstance(hours, (float, int)) and not isinstance(hours, bool):
            if not math.isfinite(hours):
                raise ValueError("hours must be finite")
            hour = math.floor(hours)
            week, offset = divmod(hour, _WEEK)
            return float(self._week(week)[offset])
        t = np.asarray(hours, dtype=np.float64)
        if not np.isfinite(t).all():
            raise ValueError("hours must be finite")
        hour_index = np.floor(t).astype(np.int64)
        if t.ndim == 0:
            week, offset = divmod(int(hour_index), _WEEK)
            return float(self._week(week)[offset])
        if hour_index.size == 0:
            return np.zeros(hour_index.shape)
        weeks = np.floor_divide(hour_index, _WEEK)
        first, last = int(weeks.min()), int(weeks.max())
        if last - first <= 8:  # the common case: a few weeks, served from the cache
            table = np.concatenate([self._week(w) for w in range(first, last + 1)])
            return table[hour_index - first * _WEEK]
        return self._hourly(hour_index)

    def _week(self, week: int) -> FloatArray:
        cached = self._cache.get(week)
        if cached is None:
            if len(self._cache) >= _CACHE_WEEKS:
                self._cache.pop(next(iter(self._cache)))
            cached = self._hourly(np.arange(week * _WEEK, (week + 1) * _WEEK, dtype=np.int64))
            self._cache[week] = cached
        return cached

    def _hourly(self, hour_index: npt.NDArray[np.int64]) -> FloatArray:
        """Loads of whole hours (the load is constant within an hour)."""
        hour_of_day = np.mod(hour_index, 24)
        # shift 0: 06-14, shift 1: 14-22, shift 2: 22-06
        shift = np.where(
            (hour_of_day >= 6) & (hour_of_day < 14),
            0,
            np.where((hour_of_day >= 14) & (hour_of_day < 22), 1, 2),
        )
        day = np.mod(np.floor_divide(hour_index, 24), 7)
        base = self._shift_table[shift] * np.where(day >= 5, self.weekend_factor, 1.0)
        z = hashed_normal(self.seed, hour_index, _STREAM_NOISE)
        load = base * self.level * (1.0 + self.noise * z)
        block = np.floor(hour_index / self.idle_block_hours).astype(np.int64)
        idle = hashed_uniform(self.seed, block, _STREAM_IDLE) < self.idle_fraction
        running = (base > 0.0) & ~idle
        out: FloatArray = np.where(running, np.clip(load, MIN_RUNNING_LOAD, MAX_LOAD), 0.0)
        return out

    def mean_load(self) -> float:
        """The average load over a week (idle blocks and noise included, by sampling)."""
        return float(self.load_at(np.arange(0.0, 4 * HOURS_PER_WEEK)).mean())
