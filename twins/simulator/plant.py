"""A whole simulated plant: every machine wearing out, failing, being repaired, and
reporting its sensors as the gateways would.

:class:`PlantSimulator` is pure and seeded: the same plant, seed and sequence of calls
give the same telemetry, failures and maintenance, bit for bit. Time only moves when
:meth:`PlantSimulator.advance` is called; nothing here sleeps, reads files or opens sockets.

Shift times follow the clock of ``start_ms`` in UTC (site time zones are not applied).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from schemas.common import EARLIEST_TIMESTAMP_MS, FailureMode, Quality, sensor_id
from schemas.maintenance import WorkOrderType
from schemas.plant import MachineSpec, Plant
from schemas.telemetry import TelemetryBatch
from twins.simulator._checks import finite
from twins.simulator._random import FloatArray
from twins.simulator.degradation import DegradationModel
from twins.simulator.events import FailureEvent, InjectedFault, MaintenanceEvent
from twins.simulator.faults import FaultState, SensorFault, SensorFaults
from twins.simulator.lives import Life, run_to_failure
from twins.simulator.load import LoadProfile
from twins.simulator.signals import SignalModel
from twins.simulator.state import DegradationState

__all__ = ["Life", "PlantSimulator", "run_to_failure"]

MS_PER_HOUR = 3_600_000
_UNIX_EPOCH_AFTER_MONDAY_H = 72.0  # 1970-01-01 was a Thursday


def profile_hours(timestamp_ms: int | float) -> float:
    """Hours on a load profile's clock (since a Monday 00:00 UTC) at ``timestamp_ms``."""
    return timestamp_ms / MS_PER_HOUR + _UNIX_EPOCH_AFTER_MONDAY_H


@dataclass(slots=True)
class _Machine:
    """The simulator's book on one machine; the state values it holds are replaced."""

    spec: MachineSpec
    model: DegradationModel
    profile: LoadProfile
    signals: SignalModel
    sensor_ids: list[str]
    state: DegradationState
    columns: slice  # this machine's sensors in the plant-wide sensor arrays
    values: FloatArray  # noiseless sensor values now (temperatures lag)
    wear_rng: np.random.Generator
    noise_rng: np.random.Generator
    repair_due_ms: int | None = None
    seq: int = 0


class PlantSimulator:
    """Every machine of a plant, simulated: wear, failures, repairs and sensor readings.

    Parameters
    ----------
    plant
        The validated plant (for example from ``schemas.load_plant``).
    seed
        Seeds everything: initial wear, load profiles, wear increments, noise and faults.
    start_ms
        Simulated time at the start (epoch milliseconds, after 2000).
    initial_wear
        Starting wear per machine and failure mode; modes not given are drawn in
        ``[0, initial_wear_high)``.
    faults
        Sensor fault rates; ``None`` means the small defaults of :class:`SensorFaults`
        (pass ``SensorFaults.none()`` for perfect sensors).
    repair_hours
        Time from a failure to the end of its corrective repair.
    restore_to
        Wear of a component after maintenance or repair.
    ambient_c, ambient_swing_c
        Mean ambient temperature and the half-amplitude of its daily cycle (warmest 15:00).
    max_step_hours
        Longest degradation step inside one :meth:`advance` call.
    degradation_options
        Extra keyword arguments for every :class:`DegradationModel` (e.g. ``dispersion``).

    >>> from schemas.plant import Plant, MachineSpec, SensorSpec, SiteSpec
    >>> spec = MachineSpec(id="M-1", type="motor-15kw", kind="motor", site="north",
    ...     line="l1", rated={"rpm": 1465, "current_a": 28.5, "mtbf_hours": 4000},
    ...     sensors=[SensorSpec(name="vibration", kind="vibration", unit="mm/s"),
    ...              SensorSpec(name="winding_temp", kind="temperature", unit="degC")])
    >>> plant = Plant(name="tiny", sites=[SiteSpec(id="north")], machine_types={},
    ...               machines=[spec], technicians=[])
    >>> sim = PlantSimulator(plant, seed=1, start_ms=1_700_000_000_000,
    ...                      faults=SensorFaults.none())
    >>> batches = sim.advance(3600)
    >>> [(b.gateway_id, b.batch_id, len(b)) for b in batches]
    [('sim-north', 'M-1-000000001', 2)]
    >>> sim.now_ms - 1_700_000_000_000
    3600000
    >>> PlantSimulator(plant, seed=1, start_ms=1_700_000_000_000, repair_hours=-1)
    Traceback (most recent call last):
    ...
    ValueError: repair_hours must be a finite number > 0, got -1
    """

    def __init__(
        self,
        plant: Plant,
        *,
        seed: int,
        start_ms: int,
        initial_wear: Mapping[str, Mapping[FailureMode, float] | Mapping[str, float]] | None = None,
        faults: SensorFaults | None = None,
        repair_hours: float = 8.0,
        restore_to: float = 0.05,
        ambient_c: float = 25.0,
        ambient_swing_c: float = 3.0,
        max_step_hours: float = 1.0,
        initial_wear_high: float = 0.3,
        noise_scale: float = 1.0,
        degradation_options: Mapping[str, object] | None = None,
    ) -> None:
        if not isinstance(plant, Plant):
            raise ValueError(f"plant must be a schemas.plant.Plant, got {type(plant).__name__}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if (
            not isinstance(start_ms, (int, np.integer))
            or isinstance(start_ms, bool)
            or start_ms < EARLIEST_TIMESTAMP_MS
        ):
            raise ValueError(f"start_ms must be epoch milliseconds after 2000, got {start_ms!r}")
        if faults is not None and not isinstance(faults, SensorFaults):
            raise ValueError(f"faults must be SensorFaults or None, got {type(faults).__name__}")
        for name, value, low, low_open in (
            ("repair_hours", repair_hours, 0.0, True),
            ("max_step_hours", max_step_hours, 0.0, True),
            ("ambient_swing_c", ambient_swing_c, 0.0, False),
            ("noise_scale", noise_scale, 0.0, False),
        ):
            if not finite(value) or value < low or (low_open and value <= low):
                op = ">" if low_open else ">="
                raise ValueError(f"{name} must be a finite number {op} {low:g}, got {value!r}")
        if not finite(restore_to) or not 0 <= restore_to < 1:
            raise ValueError(f"restore_to must be in [0, 1), got {restore_to!r}")
        if not finite(ambient_c) or not -60 <= ambient_c <= 80:
            raise ValueError(f"ambient_c must be a temperature in [-60, 80] °C, got {ambient_c!r}")
        if not finite(initial_wear_high) or not 0 <= initial_wear_high < 1:
            raise ValueError(f"initial_wear_high must be in [0, 1), got {initial_wear_high!r}")
        initial_wear = dict(initial_wear or {})
        known = {m.id for m in plant.machines}
        for machine_id in initial_wear:
            if machine_id not in known:
                raise ValueError(
                    f"initial_wear: plant {plant.name!r} has no machine {machine_id!r}"
                )

        self.plant = plant
        self.seed = int(seed)
        self.faults = SensorFaults() if faults is None else faults
        self.repair_hours = float(repair_hours)
        self.restore_to = float(restore_to)
        self.ambient_c = float(ambient_c)
        self.ambient_swing_c = float(ambient_swing_c)
        self.max_step_hours = float(max_step_hours)
        self._now_ms = int(start_ms)
        self._events: list[FailureEvent | MaintenanceEvent] = []
        self._injected: list[InjectedFault] = []
        self._machines: dict[str, _Machine] = {}

        options = dict(degradation_options or {})
        models: dict[tuple[object, ...], DegradationModel] = {}
        fault_ss, *children = np.random.SeedSequence(self.seed).spawn(len(plant.machines) + 1)
        hours = profile_hours(self._now_ms)
        column = 0
        for spec, child in zip(plant.machines, children, strict=True):
            wear_ss, noise_ss, profile_ss = child.spawn(3)
            key = (spec.type, spec.rated.mtbf_hours, tuple(spec.failure_modes))
            if key not in models:
                try:
                    models[key] = DegradationModel.for_machine(spec, **options)
                except TypeError as exc:
                    raise ValueError(f"degradation_options: {exc}") from None
            model = models[key]
            wear_rng = np.random.default_rng(wear_ss)
            try:
                state = model.initial_state(
                    wear_rng,
                    wear=initial_wear.get(spec.id),
                    age_hours=spec.installed_hours,
                    initial_wear_high=initial_wear_high,
                )
            except ValueError as exc:
                raise ValueError(f"initial_wear[{spec.id!r}]: {exc}") from None
            profile_seed = int(profile_ss.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)
            profile = LoadProfile(spec.kind, seed=profile_seed)
            signals = SignalModel(spec, modes=model.modes, noise_scale=noise_scale)
            load = profile.load_at(hours)
            values = signals.steady(load, self._ambient_at(hours), state.as_array(model.modes))
            self._machines[spec.id] = _Machine(
                spec=spec,
                model=model,
                profile=profile,
                signals=signals,
                sensor_ids=[sensor_id(spec.id, s.name) for s in spec.sensors],
                state=state,
                columns=slice(column, column + len(spec.sensors)),
                values=values,
                wear_rng=wear_rng,
                noise_rng=np.random.default_rng(noise_ss),
            )
            column += len(spec.sensors)
        # Sensor faults run over every sensor of the plant at once.
        self._fault_rng = np.random.default_rng(fault_ss)
        self._fault_state = FaultState.clear(column)
        self._sensor_ids = [sid for m in self._machines.values() for sid in m.sensor_ids]
        self._scale = np.concatenate([m.signals.reference for m in self._machines.values()])
        self._exact = np.concatenate([m.signals.exact for m in self._machines.values()])
        self._last_sample_ms = self._now_ms

    def __repr__(self) -> str:
        return (
            f"PlantSimulator({self.plant.name!r}, machines={len(self._machines)}, "
            f"seed={self.seed}, now_ms={self._now_ms})"
        )

    # -- what can be read -------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The simulated time now (epoch milliseconds)."""
        return self._now_ms

    @property
    def machine_ids(self) -> list[str]:
        return list(self._machines)

    @property
    def events(self) -> list[FailureEvent | MaintenanceEvent]:
        """Failures and maintenance so far, in time order (a copy)."""
        return list(self._events)

    @property
    def failures(self) -> list[FailureEvent]:
        return [e for e in self._events if isinstance(e, FailureEvent)]

    @property
    def maintenance(self) -> list[MaintenanceEvent]:
        return [e for e in self._events if isinstance(e, MaintenanceEvent)]

    @property
    def injected_faults(self) -> list[InjectedFault]:
        """Every reading corrupted on purpose so far (ground truth for detectors)."""
        return list(self._injected)

    def ground_truth(self, machine_id: str) -> DegradationState:
        """The true degradation state of a machine (for evaluation only)."""
        return self._machine(machine_id).state

    def is_running(self, machine_id: str) -> bool:
        """Whether the machine is running now (not failed and not idle)."""
        m = self._machine(machine_id)
        return not m.state.is_failed and m.profile.load_at(profile_hours(self._now_ms)) > 0

    def load_profile(self, machine_id: str) -> LoadProfile:
        """The load profile a machine follows (its clock: :func:`profile_hours`)."""
        return self._machine(machine_id).profile

    def degradation_model(self, machine_id: str) -> DegradationModel:
        return self._machine(machine_id).model

    # -- what can be done -------------------------------------------------------------

    def maintain(
        self,
        machine_id: str,
        component: FailureMode | str | None = None,
        *,
        restore_to: float | None = None,
    ) -> MaintenanceEvent:
        """Maintain ``component`` of a machine now (every component when ``None``).

        A failed machine whose failed component is maintained runs again at once.
        """
        m = self._machine(machine_id)
        restore = self.restore_to if restore_to is None else restore_to
        if not finite(restore) or not 0 <= restore < 1:
            raise ValueError(f"restore_to must be in [0, 1), got {restore_to!r}")
        if component is None:
            modes = m.model.modes
        else:
            try:
                mode = FailureMode(component)
            except ValueError:
                raise ValueError(f"component: {component!r} is not a failure mode") from None
            if mode not in m.model.modes:
                raise ValueError(
                    f"component: machine {machine_id} has no failure mode {mode.value!r}"
                )
            modes = (mode,)
        was_failed = m.state.is_failed
        return self._restore(m, modes, self._now_ms, restore, corrective=was_failed)

    def advance(self, seconds: float) -> list[TelemetryBatch]:
        """Move time on by ``seconds``: wear every machine over the interval (failures and
        due repairs included), then read every sensor once at the new time.

        Returns one :class:`~schemas.telemetry.TelemetryBatch` per machine (gateway
        ``sim-<site>``, batch id ``<machine>-<sequence>``). A failed machine keeps
        reporting its stopped-machine values with ``bad`` quality until repaired; readings
        lost to a dropout are left out.
        """
        if not finite(seconds) or seconds <= 0:
            raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
        step_ms = round(seconds * 1000)
        if step_ms < 1:
            raise ValueError(f"seconds must be at least 0.001, got {seconds!r}")
        start = self._now_ms
        end = start + step_ms
        n_sub = max(1, math.ceil(step_ms / (self.max_step_hours * MS_PER_HOUR) - 1e-9))
        bounds = [start + (step_ms * k) // n_sub for k in range(n_sub + 1)]
        at_hours = np.array([profile_hours(t) for t in bounds[:-1]])
        ambient = self._ambient_at(at_hours)
        dt_h = step_ms / n_sub / MS_PER_HOUR
        for m in self._machines.values():
            loads = m.profile.load_at(at_hours)
            wear = np.empty((n_sub, len(m.model.modes)))
            running = np.empty(n_sub, dtype=bool)
            for k in range(n_sub):
                self._wear(m, bounds[k], bounds[k + 1], float(loads[k]), float(ambient[k]))
                wear[k] = m.state.as_array(m.model.modes)
                running[k] = loads[k] > 0 and not m.state.is_failed
            targets = m.signals.steady(loads, ambient, wear, running=running)
            m.values = m.signals.follow(m.values, targets, dt_h)
            if m.repair_due_ms is not None and m.repair_due_ms <= end:
                self._repair_due(m)
        self._now_ms = end
        return self._sample(end)

    # -- inside -----------------------------------------------------------------------

    def _machine(self, machine_id: str) -> _Machine:
        try:
            return self._machines[machine_id]
        except (KeyError, TypeError):
            raise ValueError(
                f"machine_id: plant {self.plant.name!r} has no machine {machine_id!r}"
            ) from None

    def _ambient_at(self, hours: FloatArray | float) -> FloatArray:
        phase = 2.0 * np.pi * (np.mod(hours, 24.0) - 9.0) / 24.0
        out: FloatArray = self.ambient_c + self.ambient_swing_c * np.sin(phase)
        return out

    def _wear(self, m: _Machine, t0: int, t1: int, load: float, ambient: float) -> None:
        if m.repair_due_ms is not None and m.repair_due_ms <= t0:
            self._repair_due(m)
        dt_h = (t1 - t0) / MS_PER_HOUR
        if not m.state.is_failed:
            state = m.model.step(
                m.state, load=load, ambient_c=ambient, dt_hours=dt_h, rng=m.wear_rng
            )
            if state.failed_mode is not None:
                self._events.append(
                    FailureEvent(m.spec.id, state.failed_mode, t1, round(state.age_hours, 6))
                )
                m.repair_due_ms = t1 + round(self.repair_hours * MS_PER_HOUR)
            m.state = state

    def _repair_due(self, m: _Machine) -> None:
        due = m.repair_due_ms
        if due is None or m.state.failed_mode is None:
            m.repair_due_ms = None
            return
        self._restore(m, (m.state.failed_mode,), due, self.restore_to, corrective=True)

    def _restore(
        self,
        m: _Machine,
        modes: tuple[FailureMode, ...],
        at_ms: int,
        restore_to: float,
        *,
        corrective: bool,
    ) -> MaintenanceEvent:
        before = {mode: m.state.wear[mode] for mode in modes}
        state = m.state
        for mode in modes:
            state = state.with_repair(mode, restore_to=restore_to)
        m.state = state
        if not state.is_failed:
            m.repair_due_ms = None
        event = MaintenanceEvent(
            m.spec.id,
            modes,
            at_ms,
            WorkOrderType.CORRECTIVE if corrective else WorkOrderType.PREVENTIVE,
            before,
        )
        self._events.append(event)
        return event

    def _sample(self, now: int) -> list[TelemetryBatch]:
        machines = list(self._machines.values())
        true_values = np.concatenate([m.signals.add_noise(m.values, m.noise_rng) for m in machines])
        dt_h = (now - self._last_sample_ms) / MS_PER_HOUR
        self._last_sample_ms = now
        state = self._fault_state
        if self.faults.enabled or state.stuck_left.any() or state.drift_slope.any():
            reported, kinds, self._fault_state = self.faults.apply(
                true_values, state, scale=self._scale, dt_hours=dt_h, rng=self._fault_rng
            )
            # Set-points are the controller's own values: no sensor faults.
            reported = np.where(self._exact, true_values, reported)
            kinds = np.where(self._exact, 0, kinds)
            for col in np.flatnonzero(kinds).tolist():
                value = float(reported[col])
                self._injected.append(
                    InjectedFault(
                        self._sensor_ids[col],
                        now,
                        SensorFault(int(kinds[col])),
                        float(true_values[col]),
                        None if math.isnan(value) else value,
                    )
                )
        else:
            reported = true_values
        batches = []
        for m in machines:
            batch = self._batch(m, reported[m.columns], now)
            if batch is not None:
                batches.append(batch)
        return batches

    def _batch(self, m: _Machine, reported: FloatArray, now: int) -> TelemetryBatch | None:
        present = ~np.isnan(reported)
        n = int(present.sum())
        if n == 0:
            return None
        if n == len(m.sensor_ids):
            sensor_ids, values = m.sensor_ids, reported.tolist()
        else:
            sensor_ids = [sid for sid, ok in zip(m.sensor_ids, present.tolist(), strict=True) if ok]
            values = reported[present].tolist()
        quality = int(Quality.BAD if m.state.is_failed else Quality.GOOD)
        m.seq += 1
        return TelemetryBatch.model_validate(
            {
                "gateway_id": f"sim-{m.spec.site}",
                "site_id": m.spec.site,
                "batch_id": f"{m.spec.id}-{m.seq:09d}",
                "sent_at": now,
                "readings": {
                    "machine_id": [m.spec.id] * n,
                    "sensor_id": sensor_ids,
                    "timestamp": [now] * n,
                    "value": values,
                    "quality": [quality] * n,
                },
            },
            context={"now_ms": now},
        )
