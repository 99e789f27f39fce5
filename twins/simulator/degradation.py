"""How a machine wears out: one gamma process per failure mode, accelerated by load and heat.

The model
---------
Each failure mode ``m`` of a machine carries a wear level ``w`` (0 = new, 1 = failed). Wear
grows as a **gamma process** (the standard stochastic model of monotone degradation, van
Noortwijk 2009) run on an *operational clock*: over ``dt`` hours the increment is

    Δw ~ Gamma(shape = (r_m / b) · A_m(load, ambient) · exp(c · w) · dt,  scale = b)

so its mean is ``r_m · A_m · exp(c·w) · dt`` and its variance ``b`` times that.

- ``r_m`` is the base wear rate (per hour) of mode ``m`` at rated load and 25 °C. It is set
  so that the *mean path* of the mode from new reaches failure after ``L_m`` hours:
  ``r_m = (1 - exp(-c)) / (c · L_m)``, with ``L_m = k · mtbf_hours · life_ratio[m]``.
  ``life_ratio`` splits the MTBF across the modes (a smaller ratio, a more frequent mode);
  the common factor ``k`` is calibrated so that a *new* machine (all wear 0) run at rated
  load and 25 °C has its first failure, whichever mode it is, after ``mtbf_hours`` on
  average.
- ``exp(c · w)`` makes wear feed on itself: slow at first, fast near the end (the P-F curve).
  With the default ``c = 4`` the wear rate at ``w = 1`` is 55 times the rate when new, and
  a part at ``w = 0.7`` has about 4 % of its life left.
- ``A_m`` is the acceleration factor (1 at rated load and 25 °C):

  - bearing_wear: ``load ** 3`` (ISO 281 bearing life ~ (C/P)³) times
    ``2 ** ((ambient - 25) / 15)`` (grease life halves every +15 °C);
  - seal_leak: ``load ** 1.5``;
  - misalignment: ``load ** 1``;
  - winding_insulation: ``2 ** ((T_w - T_ref) / 10)`` with winding temperature
    ``T_w = ambient + 45 · load²`` and ``T_ref = 25 + 45`` (Montsinger's rule: insulation life
    halves for every +10 °C).

- ``b`` (``dispersion``, wear units) sets how rough the paths are and how much lives vary:
  the variance of the wear accumulated over one mean life is about ``b``.

A machine fails when any mode's wear reaches 1. Installed machines start with some wear
(drawn uniformly in ``[0, initial_wear_high)`` per mode, unit-to-unit variation), which
shortens their first life at rated load to about 0.5-0.6 × ``mtbf_hours``; under a real load
profile (partial load, idle time) lives are longer again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from schemas.common import FailureMode, MachineKind
from schemas.plant import MachineSpec
from twins.simulator._checks import failure_mode, finite
from twins.simulator._random import FloatArray, as_generator
from twins.simulator.load import LoadProfile
from twins.simulator.projection import PlannedReset, Projection, first_crossing, simulate_paths
from twins.simulator.scenario import Scenario
from twins.simulator.state import DegradationState

DEFAULT_FAILURE_MODES: dict[MachineKind, tuple[FailureMode, ...]] = {
    MachineKind.MOTOR: (
        FailureMode.BEARING_WEAR,
        FailureMode.WINDING_INSULATION,
        FailureMode.MISALIGNMENT,
    ),
    MachineKind.PUMP: (FailureMode.BEARING_WEAR, FailureMode.SEAL_LEAK, FailureMode.MISALIGNMENT),
    MachineKind.COMPRESSOR: (
        FailureMode.BEARING_WEAR,
        FailureMode.SEAL_LEAK,
        FailureMode.WINDING_INSULATION,
    ),
    MachineKind.CONVEYOR: (FailureMode.BEARING_WEAR, FailureMode.MISALIGNMENT),
}
"""The failure modes of each machine kind (a machine type's own list overrides these)."""

DEFAULT_LIFE_RATIO: dict[FailureMode, float] = {
    FailureMode.BEARING_WEAR: 0.8,
    FailureMode.SEAL_LEAK: 1.2,
    FailureMode.WINDING_INSULATION: 0.6,
    FailureMode.MISALIGNMENT: 2.0,
}
"""Relative mean life of each mode at rated load and 25 °C (scaled to the machine's MTBF)."""

DEFAULT_LOAD_EXPONENT: dict[FailureMode, float] = {
    FailureMode.BEARING_WEAR: 3.0,
    FailureMode.SEAL_LEAK: 1.5,
    FailureMode.WINDING_INSULATION: 0.0,  # its load effect goes through winding temperature
    FailureMode.MISALIGNMENT: 1.0,
}

REFERENCE_AMBIENT_C = 25.0
"""Ambient temperature of the rated conditions."""

WINDING_RISE_AT_RATED_C = 45.0
"""Winding temperature rise over ambient at rated load (it grows with load squared)."""

DEFAULT_MTBF_HOURS = 5000.0


def failure_modes_for(machine: MachineSpec | MachineKind | str) -> tuple[FailureMode, ...]:
    """The failure modes of a machine: its spec's list when given, else its kind's default.

    >>> failure_modes_for("conveyor")
    (<FailureMode.BEARING_WEAR: 'bearing_wear'>, <FailureMode.MISALIGNMENT: 'misalignment'>)
    """
    if isinstance(machine, MachineSpec):
        if machine.failure_modes:
            return tuple(dict.fromkeys(machine.failure_modes))
        return DEFAULT_FAILURE_MODES[machine.kind]
    try:
        return DEFAULT_FAILURE_MODES[MachineKind(machine)]
    except ValueError:
        known = ", ".join(k.value for k in MachineKind)
        raise ValueError(f"machine kind must be one of {known}, got {machine!r}") from None


@functools.lru_cache(maxsize=128)
def _mean_first_failure(life_ratio: tuple[float, ...], c: float, b: float) -> float:
    """Mean time to the first failure of competing modes, new and at rated conditions, when
    each mode's mean-path life is ``life_ratio`` (in units of that life).

    Time scales exactly with the mode lives, so one run per (ratios, c, b) calibrates every
    MTBF. The run is a fixed-seed Monte-Carlo integral with adaptive steps (deterministic,
    about 50 ms, within about 1 % of the exact value).
    """
    ratios = np.asarray(life_ratio, dtype=np.float64)
    base_rate = ((1.0 - math.exp(-c)) / c if c > 0 else 1.0) / ratios
    longest_step = float(ratios.min()) / 50.0
    n_paths = 2000
    rng = np.random.default_rng(20_240_611)
    wear = np.zeros((n_paths, ratios.size))
    alive = np.ones(n_paths, dtype=bool)
    first = np.full(n_paths, np.inf)
    clock = np.zeros(n_paths)  # each path takes steps of its own length
    while alive.any() and clock.max() < 100.0 * float(ratios.max()):
        idx = np.flatnonzero(alive)
        w = wear[idx]
        rate = base_rate * np.exp(c * w)
        # short steps where wear grows fast: at most ~0.01 wear per step on average
        dt = np.minimum(longest_step, 0.01 / rate.max(axis=1))
        new = w + rng.gamma(rate / b * dt[:, None], b)
        crossed, _, fraction = first_crossing(w, new)
        first[idx[crossed]] = clock[idx[crossed]] + fraction[crossed] * dt[crossed]
        clock[idx] += dt
        wear[idx] = new
        alive[idx[crossed]] = False
    return float(np.mean(np.where(np.isfinite(first), first, clock)))


class DegradationModel:
    """The wear of one machine's failure modes as gamma processes (see the module notes).

    Parameters
    ----------
    kind_or_modes
        A machine kind (``"pump"``) for its default failure modes, or the modes themselves.
    mtbf_hours
        Mean time to the first failure of a new machine at rated load and 25 °C.
    life_ratio
        Relative mean life of each mode (defaults: :data:`DEFAULT_LIFE_RATIO`); the modes'
        lives are these ratios scaled to match ``mtbf_hours``.
    load_exponent
        Power of the load in each mode's acceleration (defaults: bearings 3, seals 1.5,
        alignment 1, windings 0 since they age through temperature).
    dispersion
        Gamma scale ``b`` in wear units (path roughness and life spread), > 0.
    wear_acceleration
        ``c`` in ``exp(c · wear)``: how much faster worn parts wear (>= 0; 0 = linear).
    thermal_doubling_c
        Winding insulation ageing doubles for this many °C of extra winding temperature.
    grease_doubling_c
        Bearing wear doubles for this many °C of extra ambient temperature.
    initial_wear_high
        New machines start with wear drawn uniformly in ``[0, initial_wear_high)``.

    >>> model = DegradationModel("pump", mtbf_hours=3000)
    >>> [m.value for m in model.modes]
    ['bearing_wear', 'seal_leak', 'misalignment']
    >>> rng = np.random.default_rng(0)
    >>> state = model.initial_state(rng, wear={"bearing_wear": 0.7})
    >>> later = model.step(state, load=1.0, ambient_c=25.0, dt_hours=24.0, rng=rng)
    >>> later.wear[FailureMode.BEARING_WEAR] > 0.7, later.age_hours
    (True, 24.0)
    >>> DegradationModel("pump", dispersion=0)
    Traceback (most recent call last):
    ...
    ValueError: dispersion must be a finite number > 0, got 0
    """

    def __init__(
        self,
        kind_or_modes: MachineKind | str | Sequence[FailureMode | str],
        *,
        mtbf_hours: float = DEFAULT_MTBF_HOURS,
        life_ratio: Mapping[FailureMode, float] | None = None,
        load_exponent: Mapping[FailureMode, float] | None = None,
        dispersion: float = 0.04,
        wear_acceleration: float = 4.0,
        thermal_doubling_c: float = 10.0,
        grease_doubling_c: float = 15.0,
        initial_wear_high: float = 0.3,
    ) -> None:
        if isinstance(kind_or_modes, str) and kind_or_modes not in set(FailureMode):
            try:
                modes = DEFAULT_FAILURE_MODES[MachineKind(kind_or_modes)]
            except ValueError:
                known = ", ".join(k.value for k in MachineKind)
                raise ValueError(
                    f"kind_or_modes must be a machine kind ({known}) or a list of failure "
                    f"modes, got {kind_or_modes!r}"
                ) from None
        elif isinstance(kind_or_modes, str):
            modes = (failure_mode(kind_or_modes, "kind_or_modes"),)
        else:
            modes = tuple(
                dict.fromkeys(
                    failure_mode(m, f"kind_or_modes[{i}]") for i, m in enumerate(kind_or_modes)
                )
            )
            if not modes:
                raise ValueError("kind_or_modes must name at least one failure mode")
        if not finite(mtbf_hours) or mtbf_hours <= 0:
            raise ValueError(f"mtbf_hours must be a finite number > 0, got {mtbf_hours!r}")
        ratios = {
            **DEFAULT_LIFE_RATIO,
            **{failure_mode(k, "life_ratio"): v for k, v in (life_ratio or {}).items()},
        }
        exponents = {
            **DEFAULT_LOAD_EXPONENT,
            **{failure_mode(k, "load_exponent"): v for k, v in (load_exponent or {}).items()},
        }
        for m in modes:
            if not finite(ratios[m]) or ratios[m] <= 0:
                raise ValueError(
                    f"life_ratio[{m.value}] must be a finite number > 0, got {ratios[m]!r}"
                )
            if not finite(exponents[m]) or not 0 <= exponents[m] <= 10:
                raise ValueError(
                    f"load_exponent[{m.value}] must be in [0, 10], got {exponents[m]!r}"
                )
        if not finite(dispersion) or dispersion <= 0:
            raise ValueError(f"dispersion must be a finite number > 0, got {dispersion!r}")
        if not finite(wear_acceleration) or not 0 <= wear_acceleration <= 20:
            raise ValueError(f"wear_acceleration must be in [0, 20], got {wear_acceleration!r}")
        if not finite(thermal_doubling_c) or thermal_doubling_c <= 0:
            raise ValueError(
                f"thermal_doubling_c must be a finite number > 0, got {thermal_doubling_c!r}"
            )
        if not finite(grease_doubling_c) or grease_doubling_c <= 0:
            raise ValueError(
                f"grease_doubling_c must be a finite number > 0, got {grease_doubling_c!r}"
            )
        if not finite(initial_wear_high) or not 0 <= initial_wear_high < 1:
            raise ValueError(f"initial_wear_high must be in [0, 1), got {initial_wear_high!r}")

        self.modes: tuple[FailureMode, ...] = modes
        self.mtbf_hours = float(mtbf_hours)
        self.dispersion = float(dispersion)
        self.wear_acceleration = float(wear_acceleration)
        self.thermal_doubling_c = float(thermal_doubling_c)
        self.grease_doubling_c = float(grease_doubling_c)
        self.initial_wear_high = float(initial_wear_high)
        self.life_ratio: dict[FailureMode, float] = {m: float(ratios[m]) for m in modes}
        self.load_exponent: dict[FailureMode, float] = {m: float(exponents[m]) for m in modes}
        c = self.wear_acceleration
        # Competing modes: scale the mode lives so the first failure comes after mtbf_hours.
        first_failure = _mean_first_failure(
            tuple(self.life_ratio[m] for m in modes), c, self.dispersion
        )
        self.mode_life_hours: dict[FailureMode, float] = {
            m: self.mtbf_hours * self.life_ratio[m] / first_failure for m in modes
        }
        # Mean-path life from wear 0 to 1 at rate r·exp(c·w) is (1 - exp(-c)) / (c·r).
        life_factor = (1.0 - math.exp(-c)) / c if c > 0 else 1.0
        self._rate = np.array([life_factor / self.mode_life_hours[m] for m in modes])
        self._shape_rate = self._rate / self.dispersion
        self._exponent = np.array([self.load_exponent[m] for m in modes])
        self._winding = np.array([m is FailureMode.WINDING_INSULATION for m in modes])
        self._bearing = np.array([m is FailureMode.BEARING_WEAR for m in modes])

    def mean_path_wear(
        self,
        mode: FailureMode | str,
        *,
        after_hours: float = math.nan,
        remaining_hours: float = math.nan,
    ) -> float:
        """Wear of ``mode`` on the mean path at rated load and 25 °C: after ``after_hours``
        from new, or with ``remaining_hours`` left until it reaches 1 (give one of them).

        The mean path solves ``dw/dt = r · exp(c · w)``: from new, ``exp(-c w) = 1 - c r t``;
        with ``R`` hours left, ``exp(-c w) = c r R + exp(-c)``. Results are clipped to
        ``[0, 0.999]``.

        >>> m = DegradationModel("pump", mtbf_hours=8000)
        >>> w = m.mean_path_wear("bearing_wear", after_hours=3000)
        >>> left = m.mean_path_wear("bearing_wear", remaining_hours=1000)
        >>> 0 < w < left < 1
        True
        """
        i = self.modes.index(failure_mode(mode, "mode"))
        c, r = self.wear_acceleration, float(self._rate[i])
        given = [math.isfinite(after_hours), math.isfinite(remaining_hours)]
        if given.count(True) != 1:
            raise ValueError("give exactly one of after_hours and remaining_hours")
        if given[0]:
            if after_hours < 0:
                raise ValueError(f"after_hours must be >= 0, got {after_hours}")
            inner = 1.0 - c * r * after_hours if c > 0 else -r * after_hours
        else:
            if remaining_hours < 0:
                raise ValueError(f"remaining_hours must be >= 0, got {remaining_hours}")
            inner = c * r * remaining_hours + math.exp(-c) if c > 0 else r * remaining_hours
        if c <= 0:
            wear = -inner if given[0] else 1.0 - inner
        else:
            wear = -math.log(inner) / c if inner > 0 else 1.0
        return float(min(max(0.0, wear), 0.999))

    @classmethod
    def for_machine(cls, spec: MachineSpec, **options: object) -> DegradationModel:
        """The model of a machine from its spec: its failure modes and rated MTBF."""
        mtbf = spec.rated.mtbf_hours or DEFAULT_MTBF_HOURS
        kwargs: dict[str, object] = {"mtbf_hours": mtbf, **options}
        return cls(failure_modes_for(spec), **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        modes = ", ".join(m.value for m in self.modes)
        return (
            f"DegradationModel([{modes}], mtbf_hours={self.mtbf_hours:g}, "
            f"dispersion={self.dispersion:g}, wear_acceleration={self.wear_acceleration:g})"
        )

    @property
    def base_rate(self) -> dict[FailureMode, float]:
        """Mean wear per hour of each mode when new, at rated load and 25 °C."""
        return {m: float(r) for m, r in zip(self.modes, self._rate, strict=True)}

    # -- the physics --------------------------------------------------------------------

    def acceleration(self, load: npt.ArrayLike, ambient_c: npt.ArrayLike) -> FloatArray:
        """Acceleration factor of each mode, shape ``load.shape + (n_modes,)``."""
        lo = np.asarray(load, dtype=np.float64)[..., None]
        amb = np.asarray(ambient_c, dtype=np.float64)[..., None]
        power = np.power(lo, self._exponent)
        winding_excess = amb - REFERENCE_AMBIENT_C + WINDING_RISE_AT_RATED_C * (lo * lo - 1.0)
        thermal = np.where(
            self._winding,
            np.exp2(winding_excess / self.thermal_doubling_c),
            np.where(
                self._bearing, np.exp2((amb - REFERENCE_AMBIENT_C) / self.grease_doubling_c), 1.0
            ),
        )
        out: FloatArray = power * thermal
        return out

    def mean_rate(
        self, wear: npt.ArrayLike, load: npt.ArrayLike, ambient_c: npt.ArrayLike
    ) -> FloatArray:
        """Expected wear per hour of each mode at the given wear (``(..., n_modes)``)."""
        w = np.minimum(np.asarray(wear, dtype=np.float64), 1.0)
        out: FloatArray = (
            self._rate * self.acceleration(load, ambient_c) * np.exp(self.wear_acceleration * w)
        )
        return out

    # -- one machine ------------------------------------------------------------------

    def initial_state(
        self,
        rng: np.random.Generator | int,
        *,
        wear: Mapping[FailureMode, float] | Mapping[str, float] | None = None,
        age_hours: float = 0.0,
        initial_wear_high: float | None = None,
    ) -> DegradationState:
        """A machine as installed: wear drawn in ``[0, initial_wear_high)`` per mode, except
        the modes given in ``wear``."""
        gen = as_generator(rng)
        high = self.initial_wear_high if initial_wear_high is None else initial_wear_high
        if not finite(high) or not 0 <= high < 1:
            raise ValueError(f"initial_wear_high must be in [0, 1), got {high!r}")
        drawn = (
            gen.uniform(0.0, high, size=len(self.modes)) if high > 0 else np.zeros(len(self.modes))
        )
        values = {m: float(w) for m, w in zip(self.modes, drawn, strict=True)}
        for key, value in (wear or {}).items():
            mode = failure_mode(key, "wear")
            if mode not in values:
                raise ValueError(f"wear: {mode.value} is not a failure mode of this machine")
            if not finite(value) or not 0 <= value < 1:
                raise ValueError(f"wear[{mode.value}] must be in [0, 1), got {value!r}")
            values[mode] = float(value)
        return DegradationState(values, age_hours=age_hours)

    def step(
        self,
        state: DegradationState,
        *,
        load: float,
        ambient_c: float,
        dt_hours: float,
        rng: np.random.Generator,
    ) -> DegradationState:
        """The state after ``dt_hours`` at ``load`` and ``ambient_c`` (a failed machine does
        not change). Operating hours only accrue while the load is above 0."""
        if not finite(load) or load < 0:
            raise ValueError(f"load must be a finite number >= 0, got {load!r}")
        if not finite(dt_hours) or dt_hours < 0:
            raise ValueError(f"dt_hours must be a finite number >= 0, got {dt_hours!r}")
        if not finite(ambient_c):
            raise ValueError(f"ambient_c must be finite, got {ambient_c!r}")
        if state.is_failed:
            return state
        before = state.as_array(self.modes)
        shape = (
            self._shape_rate
            * dt_hours
            * self.acceleration(load, ambient_c)
            * np.exp(self.wear_acceleration * np.minimum(before, 1.0))
        )
        after = before + rng.gamma(shape, self.dispersion)
        failed = None
        if after.max() >= 1.0:
            _, mode_index, _ = first_crossing(before[None, :], after[None, :])
            failed = self.modes[int(mode_index[0])]
            after = np.minimum(after, 1.0)
        wear = {m: float(w) for m, w in zip(self.modes, after.tolist(), strict=True)}
        age = state.age_hours + (dt_hours if load > 0 else 0.0)
        return DegradationState(wear, age_hours=age, failed_mode=failed)

    # -- many paths -------------------------------------------------------------------

    def step_paths(
        self,
        wear: FloatArray,
        load: npt.ArrayLike,
        ambient_c: npt.ArrayLike,
        dt_hours: float,
        rng: np.random.Generator,
    ) -> FloatArray:
        """One step for many paths at once: ``wear`` is ``(n_paths, n_modes)``; ``load`` and
        ``ambient_c`` are scalars or ``(n_paths,)``. Returns the new wear (a new array)."""
        w = np.asarray(wear, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != len(self.modes):
            raise ValueError(
                f"wear must have shape (n_paths, {len(self.modes)}), got {tuple(w.shape)}"
            )
        if not finite(dt_hours) or dt_hours < 0:
            raise ValueError(f"dt_hours must be a finite number >= 0, got {dt_hours!r}")
        lo = np.asarray(load, dtype=np.float64)
        if lo.ndim > 1 or (lo.ndim == 1 and lo.shape[0] != w.shape[0]):
            raise ValueError(f"load must be a scalar or have shape ({w.shape[0]},)")
        if not np.isfinite(lo).all() or (lo < 0).any():
            raise ValueError("load must be finite and >= 0")
        amb = np.asarray(ambient_c, dtype=np.float64)
        if not np.isfinite(amb).all():
            raise ValueError("ambient_c must be finite")
        accel = self.acceleration(lo, amb)
        shape = (
            self._shape_rate
            * dt_hours
            * accel
            * np.exp(self.wear_acceleration * np.minimum(w, 1.0))
        )
        out: FloatArray = w + rng.gamma(shape, self.dispersion)
        return out

    def project(
        self,
        state: DegradationState,
        scenario: Scenario | None = None,
        *,
        horizon_hours: float,
        step_hours: float = 1.0,
        n_paths: int = 500,
        rng: np.random.Generator | int,
        load_profile: LoadProfile | float | None = None,
        start_hours: float = 0.0,
        quantiles: tuple[float, ...] = (0.05, 0.5, 0.95),
    ) -> Projection:
        """Simulate ``n_paths`` futures of the machine over ``horizon_hours``.

        The load in each step is ``load_profile`` (a :class:`LoadProfile` read from
        ``start_hours`` on its clock, or a constant; rated load 1.0 when ``None``) times
        ``scenario.load_factor``. Components in ``scenario.replaced`` start new; planned
        actions apply at the first step at or after their time, to paths still running.
        A path stops at its first failure.
        """
        scenario = Scenario() if scenario is None else scenario
        if not isinstance(scenario, Scenario):
            raise ValueError(f"scenario must be a Scenario, got {type(scenario).__name__}")
        if not finite(horizon_hours) or horizon_hours <= 0:
            raise ValueError(f"horizon_hours must be a finite number > 0, got {horizon_hours!r}")
        if not finite(step_hours) or step_hours <= 0:
            raise ValueError(f"step_hours must be a finite number > 0, got {step_hours!r}")
        if not isinstance(n_paths, (int, np.integer)) or isinstance(n_paths, bool) or n_paths < 1:
            raise ValueError(f"n_paths must be an int >= 1, got {n_paths!r}")
        if not finite(start_hours):
            raise ValueError(f"start_hours must be finite, got {start_hours!r}")
        if not quantiles or not all(finite(q) and 0 <= q <= 1 for q in quantiles):
            raise ValueError(f"quantiles must be numbers in [0, 1], got {quantiles!r}")
        gen = as_generator(rng)
        for i, action in enumerate(scenario.actions):
            if action.component is not None and action.component not in self.modes:
                raise ValueError(
                    f"scenario.actions[{i}].component: {action.component.value} is not a "
                    "failure mode of this machine"
                )
        for i, mode in enumerate(scenario.replaced):
            if mode not in self.modes:
                raise ValueError(
                    f"scenario.replaced[{i}]: {mode.value} is not a failure mode of this machine"
                )

        n_steps = max(1, math.ceil(horizon_hours / step_hours - 1e-9))
        hours = np.minimum(np.arange(n_steps + 1, dtype=np.float64) * step_hours, horizon_hours)
        loads = self._loads(load_profile, start_hours + hours[:-1]) * scenario.load_factor
        accel = self.acceleration(loads, scenario.ambient_c)  # (n_steps, n_modes)
        start = state.as_array(self.modes)
        for mode in scenario.replaced:
            start[self.modes.index(mode)] = 0.0
        down = state.failed_mode if state.failed_mode not in scenario.replaced else None
        everything = tuple(range(len(self.modes)))
        return simulate_paths(
            modes=self.modes,
            start=start,
            hours=hours,
            growth=self._shape_rate * accel * np.diff(hours)[:, None],
            wear_acceleration=self.wear_acceleration,
            dispersion=self.dispersion,
            n_paths=int(n_paths),
            rng=gen,
            resets=[
                PlannedReset(
                    a.at_hours,
                    everything if a.component is None else (self.modes.index(a.component),),
                    a.restore_to,
                )
                for a in scenario.actions
            ],
            failed_mode_index=None if down is None else self.modes.index(down),
            quantiles=tuple(float(q) for q in quantiles),
        )

    @staticmethod
    def _loads(profile: LoadProfile | float | None, at_hours: FloatArray) -> FloatArray:
        if profile is None:
            return np.ones_like(at_hours)
        if isinstance(profile, LoadProfile):
            return profile.load_at(at_hours)
        if finite(profile) and 0 <= float(profile) <= 2.0:
            return np.full_like(at_hours, float(profile))
        raise ValueError(f"load_profile must be a LoadProfile or a load in [0, 2], got {profile!r}")
