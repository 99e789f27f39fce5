"""Run-to-failure histories of one machine type: training data for remaining-useful-life
models.

:func:`run_to_failure` simulates independent *lives* of a machine, each from installation
(new, with a little initial wear) to its first failure, sampling every sensor every
``sample_hours``. All lives advance together as paths of the degradation model (vectorised
over lives), and each life's sensor series is then computed at once (vectorised over time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.common import FailureMode
from schemas.plant import MachineSpec
from twins.simulator._checks import finite
from twins.simulator._random import FloatArray, child_seed
from twins.simulator.degradation import DegradationModel
from twins.simulator.faults import FaultState, SensorFaults
from twins.simulator.load import HOURS_PER_WEEK, LoadProfile
from twins.simulator.projection import gamma_step
from twins.simulator.signals import SignalModel


@dataclass(frozen=True, slots=True)
class Life:
    """One machine's history from installation to failure.

    ``hours[k]`` is the time since installation of sample ``k``; ``values[k, j]`` the
    reading of ``sensor_names[j]`` then (``NaN`` for a dropout); ``loads[k]`` the load;
    ``wear[k, i]`` the true wear of ``modes[i]`` (ground truth); ``faults[k, j]`` the
    :class:`~twins.simulator.faults.SensorFault` code of each reading. The machine failed
    by ``failure_mode`` at ``failure_hours`` (after the last sample); a life still running
    at the simulation's ``max_hours`` is *censored*: ``failure_mode`` is ``None`` and
    ``failure_hours`` is ``inf``.

    >>> from schemas.plant import MachineSpec, SensorSpec
    >>> spec = MachineSpec(id="CV-1", type="conveyor-drive", kind="conveyor", site="s",
    ...     line="l", rated={"mtbf_hours": 800},
    ...     sensors=[SensorSpec(name="vibration", kind="vibration", unit="mm/s")])
    >>> life = run_to_failure(spec, n_lives=1, seed=4)[0]
    >>> life.machine_id, life.values.shape[1], life.failed
    ('CV-1-life0', 1, True)
    >>> bool(life.failure_hours > life.hours[-1]), bool(life.rul_hours[-1] > 0)
    (True, True)
    """

    machine_id: str
    hours: FloatArray
    values: FloatArray
    sensor_names: tuple[str, ...]
    failure_mode: FailureMode | None
    failure_hours: float
    loads: FloatArray
    modes: tuple[FailureMode, ...]
    wear: FloatArray
    faults: npt.NDArray[np.int8]

    @property
    def failed(self) -> bool:
        return self.failure_mode is not None

    @property
    def n_samples(self) -> int:
        return int(self.hours.shape[0])

    @property
    def rul_hours(self) -> FloatArray:
        """Remaining useful life at each sample (``inf`` for a censored life)."""
        out: FloatArray = self.failure_hours - self.hours
        return out

    def column(self, sensor_name: str) -> FloatArray:
        """The series of one sensor."""
        try:
            return self.values[:, self.sensor_names.index(sensor_name)]
        except ValueError:
            raise ValueError(f"sensor_name: this life has no sensor {sensor_name!r}") from None


def run_to_failure(
    spec: MachineSpec,
    *,
    n_lives: int,
    seed: int,
    sample_hours: float = 1.0,
    max_hours: float = 50_000.0,
    initial_wear_high: float = 0.3,
    ambient_c: float = 25.0,
    faults: SensorFaults | None = None,
    noise_scale: float = 1.0,
    model: DegradationModel | None = None,
) -> list[Life]:
    """Simulate ``n_lives`` independent lives of machine ``spec`` up to their first failure.

    Each life has its own load profile (the machine kind's shifts, own seed, random weekly
    phase) and initial wear drawn in ``[0, initial_wear_high)`` per mode. Sensor noise is
    included; sensor faults only when ``faults`` is given. ``model`` overrides the
    degradation model built from ``spec`` (its failure modes and MTBF).
    """
    if not isinstance(spec, MachineSpec):
        raise ValueError(f"spec must be a MachineSpec, got {type(spec).__name__}")
    if not isinstance(n_lives, (int, np.integer)) or isinstance(n_lives, bool) or n_lives < 1:
        raise ValueError(f"n_lives must be an int >= 1, got {n_lives!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not finite(sample_hours) or sample_hours <= 0:
        raise ValueError(f"sample_hours must be a finite number > 0, got {sample_hours!r}")
    if not finite(max_hours) or max_hours < sample_hours:
        raise ValueError(f"max_hours must be a finite number >= sample_hours, got {max_hours!r}")
    if not finite(initial_wear_high) or not 0 <= initial_wear_high < 1:
        raise ValueError(f"initial_wear_high must be in [0, 1), got {initial_wear_high!r}")
    if not finite(ambient_c) or not -60 <= ambient_c <= 80:
        raise ValueError(f"ambient_c must be a temperature in [-60, 80] °C, got {ambient_c!r}")
    if faults is not None and not isinstance(faults, SensorFaults):
        raise ValueError(f"faults must be SensorFaults or None, got {type(faults).__name__}")
    model = DegradationModel.for_machine(spec) if model is None else model
    if not isinstance(model, DegradationModel):
        raise ValueError(f"model must be a DegradationModel, got {type(model).__name__}")
    signals = SignalModel(spec, modes=model.modes, noise_scale=noise_scale)

    setup_ss, wear_ss, noise_ss, fault_ss = np.random.SeedSequence(int(seed)).spawn(4)
    setup = np.random.default_rng(setup_ss)
    profiles = [LoadProfile(spec.kind, seed=child_seed(setup)) for _ in range(n_lives)]
    phase = setup.uniform(0.0, HOURS_PER_WEEK, size=n_lives)
    n_modes = len(model.modes)
    wear = (
        setup.uniform(0.0, initial_wear_high, size=(n_lives, n_modes))
        if initial_wear_high > 0
        else np.zeros((n_lives, n_modes))
    )

    # -- degradation, all lives together, in chunks of steps ------------------------------
    rng = np.random.default_rng(wear_ss)
    max_steps = max(1, math.floor(max_hours / sample_hours + 1e-9))
    chunk = 1024
    alive = np.ones(n_lives, dtype=bool)
    n_samples = np.zeros(n_lives, dtype=np.int64)  # samples taken before failure
    failure_hours = np.full(n_lives, np.inf)
    failure_mode = np.full(n_lives, -1, dtype=np.int64)
    wear_chunks: list[FloatArray] = []
    load_chunks: list[FloatArray] = []
    c, b = model.wear_acceleration, model.dispersion
    step = 0
    while alive.any() and step < max_steps:
        size = min(chunk, max_steps - step)
        times = (step + np.arange(size)) * sample_hours
        loads = np.stack([p.load_at(phase[i] + times) for i, p in enumerate(profiles)], axis=1)
        # gamma shape per unit exp(c·w): (size, n_lives, n_modes)
        growth = model.mean_rate(0.0, loads, ambient_c) * (sample_hours / b)
        history = np.empty((size, n_lives, n_modes))
        for k in range(size):
            history[k] = wear
            n_samples += alive
            new, crossed, mode_index, fraction = gamma_step(wear, growth[k], alive, c, b, rng)
            if crossed.any():
                failure_hours[crossed] = times[k] + fraction[crossed] * sample_hours
                failure_mode[crossed] = mode_index[crossed]
                alive &= ~crossed
            wear = new
            if not alive.any():
                history = history[: k + 1]
                loads = loads[: k + 1]
                break
        wear_chunks.append(history)
        load_chunks.append(loads)
        step += size
    all_wear = np.concatenate(wear_chunks, axis=0)
    all_loads = np.concatenate(load_chunks, axis=0)

    # -- sensors, one life at a time, vectorised over time -------------------------------
    noise_rng = np.random.default_rng(noise_ss)
    fault_rng = np.random.default_rng(fault_ss)
    lives: list[Life] = []
    n_sensors = len(signals.sensor_names)
    for i in range(n_lives):
        n = int(n_samples[i])
        hours = np.arange(n, dtype=np.float64) * sample_hours
        life_wear = np.minimum(all_wear[:n, i, :], 1.0)
        life_loads = all_loads[:n, i]
        targets = signals.steady(life_loads, ambient_c, life_wear)
        values = signals.add_noise(signals.follow_series(targets, sample_hours), noise_rng)
        codes = np.zeros((n, n_sensors), dtype=np.int8)
        if faults is not None and faults.enabled:
            state = FaultState.clear(n_sensors)
            for k in range(n):
                values[k], codes[k], state = faults.apply(
                    values[k],
                    state,
                    scale=signals.reference,
                    dt_hours=sample_hours,
                    rng=fault_rng,
                )
            exact = signals.exact  # set-points: no sensor faults (and never lag or noise)
            values[:, exact] = targets[:, exact]
            codes[:, exact] = 0
        mode = int(failure_mode[i])
        lives.append(
            Life(
                machine_id=f"{spec.id}-life{i}",
                hours=hours,
                values=values,
                sensor_names=signals.sensor_names,
                failure_mode=model.modes[mode] if mode >= 0 else None,
                failure_hours=float(failure_hours[i]),
                loads=life_loads.copy(),
                modes=model.modes,
                wear=life_wear,
                faults=codes,
            )
        )
    return lives
