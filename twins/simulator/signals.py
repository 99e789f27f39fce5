"""What a machine's sensors read, given its load, the ambient temperature and its wear.

A :class:`SignalModel` turns (load, ambient, wear per failure mode) into the noiseless
*steady* value of every sensor of a machine, lets temperatures follow their steady value
with a first-order lag, and adds Gaussian measurement noise. Sensor faults (spikes, drift,
stuck values, dropouts) are added afterwards by :mod:`twins.simulator.faults`.

A sensor is modelled by its *name* when the name is one of :data:`KNOWN_SENSORS`, else by
its :class:`~schemas.common.SensorKind`. With ``L`` the load (0..1.2), ``T_a`` the ambient
temperature and ``w_b, w_s, w_i, w_m`` the wear of bearing_wear, seal_leak,
winding_insulation and misalignment (0 for modes the machine does not have):

=====================  ================================================================
vibration (mm/s RMS)   ``v0·(0.6 + 0.4·L) + 8·w_b² + 7·w_m² + 0.5·w_i`` (v0 = 2.0)
bearing_temp (°C)      ``T_a + 20·L + 30·w_b^1.5 + 5·w_m``
winding_temp (°C)      ``T_a + 45·L² + 40·w_i^1.5``
discharge_temp (°C)    ``T_a + 60·L + 40·w_s^1.5`` (compressor)
seal_temp (°C)         ``T_a + 15·L + 45·w_s^1.5`` (mechanical seal face, pumps)
current (A)            ``I_r·(0.35 + 0.65·L)·(1 + 0.15·w_i + 0.06·w_m + 0.05·w_b)``
rpm                    ``n_r·(1 + 0.024·(1 - L))·(1 - 0.004·(w_b + w_m))``
discharge_pressure     ``p_r·(0.6 + 0.4·L)·(1 - 0.35·w_s)`` (bar)
flow (m³/h)            ``q_r·L·(1 - 0.3·w_s)``
belt_speed (m/s)       ``v_r·(1 + 0.024·(1 - L))·(1 - 0.004·(w_b + w_m))`` (v_r = 2.0)
power (kW)             ``P_r·(0.05 + 0.95·L)·(1 + 0.08·w_i + 0.05·w_m + 0.04·w_b)``
voltage (V)            ``U_r`` (supply; present when stopped)
ambient_temp (°C)      ``T_a``
load_setpoint (%)      ``100·L`` (the controller's duty set-point: exact, no noise, no
                       sensor faults, 0 when stopped)
=====================  ================================================================

Rated values (``I_r``, ``n_r``, ...) come from the sensor's ``rated`` field, else the
machine's rated values. Other sensors fall back on their kind: vibration, speed, current,
pressure, flow, power and voltage as above, temperature as ``T_a + 20·L + 25·w_max^1.5``,
anything else a constant (the sensor's ``rated`` value or the middle of its normal range).

When the machine is stopped (load 0 or failed) every rotating or process signal drops to 0
and temperatures relax towards ambient. The rated-load healthy values sit inside the
normal ranges of the example plant; near failure (wear ~0.9) the mode's key sensor
(:data:`KEY_SENSORS`) is above its ``normal_high`` and at failure close to critical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from schemas.common import FailureMode, SensorKind
from schemas.plant import MachineSpec, SensorSpec
from twins.simulator._checks import finite
from twins.simulator._random import FloatArray, as_generator
from twins.simulator.degradation import WINDING_RISE_AT_RATED_C, failure_modes_for

KNOWN_SENSORS: tuple[str, ...] = (
    "vibration",
    "bearing_temp",
    "winding_temp",
    "discharge_temp",
    "seal_temp",
    "current",
    "rpm",
    "discharge_pressure",
    "flow",
    "belt_speed",
    "power",
    "voltage",
    "ambient_temp",
    "load_setpoint",
)
"""Sensor names with a dedicated signal model."""

SETPOINTS: tuple[str, ...] = ("load_setpoint",)
"""Sensors that are the controller's own values, not measurements: read exactly."""

KEY_SENSORS: dict[FailureMode, tuple[str, ...]] = {
    FailureMode.BEARING_WEAR: ("vibration", "bearing_temp"),
    FailureMode.MISALIGNMENT: ("vibration",),
    FailureMode.WINDING_INSULATION: ("winding_temp", "current"),
    FailureMode.SEAL_LEAK: ("seal_temp", "discharge_temp"),
}
"""The sensors that show each failure mode first (in order of preference)."""

NOISE_FRACTION: dict[SensorKind, float] = {
    SensorKind.VIBRATION: 0.04,
    SensorKind.TEMPERATURE: 0.01,
    SensorKind.PRESSURE: 0.015,
    SensorKind.FLOW: 0.02,
    SensorKind.CURRENT: 0.015,
    SensorKind.SPEED: 0.002,
    SensorKind.VOLTAGE: 0.005,
    SensorKind.POWER: 0.015,
    SensorKind.OTHER: 0.01,
}
"""Measurement noise: standard deviation as a fraction of the value, by sensor kind."""

NOISE_FLOOR = 0.003
"""Noise floor as a fraction of the sensor's rated-load value (so a stopped machine's
sensors still show a little noise rather than a flat zero)."""

_SIGNED_KINDS = {SensorKind.TEMPERATURE, SensorKind.OTHER}


@dataclass(frozen=True, slots=True)
class _Inputs:
    load: FloatArray
    ambient: FloatArray
    run: FloatArray  # 1.0 running, 0.0 stopped
    wear: dict[FailureMode, FloatArray]

    def w(self, mode: FailureMode) -> FloatArray:
        return self.wear[mode]


Formula = Callable[[_Inputs], FloatArray]

_B = FailureMode.BEARING_WEAR
_S = FailureMode.SEAL_LEAK
_I = FailureMode.WINDING_INSULATION
_M = FailureMode.MISALIGNMENT


def _pos(x: FloatArray, p: float) -> FloatArray:
    out: FloatArray = np.power(np.maximum(x, 0.0), p)
    return out


def _vibration(base: float) -> Formula:
    return lambda i: (
        i.run
        * (
            base * (0.6 + 0.4 * i.load)
            + 8.0 * _pos(i.w(_B), 2)
            + 7.0 * _pos(i.w(_M), 2)
            + 0.5 * i.w(_I)
        )
    )


def _bearing_temp(i: _Inputs) -> FloatArray:
    return i.ambient + i.run * (20.0 * i.load + 30.0 * _pos(i.w(_B), 1.5) + 5.0 * i.w(_M))


def _winding_temp(i: _Inputs) -> FloatArray:
    return i.ambient + i.run * (WINDING_RISE_AT_RATED_C * i.load**2 + 40.0 * _pos(i.w(_I), 1.5))


def _discharge_temp(i: _Inputs) -> FloatArray:
    return i.ambient + i.run * (60.0 * i.load + 40.0 * _pos(i.w(_S), 1.5))


def _seal_temp(i: _Inputs) -> FloatArray:
    return i.ambient + i.run * (15.0 * i.load + 45.0 * _pos(i.w(_S), 1.5))


def _generic_temp(i: _Inputs) -> FloatArray:
    worst = np.max(np.stack([i.w(m) for m in FailureMode]), axis=0)
    return i.ambient + i.run * (20.0 * i.load + 25.0 * _pos(worst, 1.5))


def _current(rated: float) -> Formula:
    return lambda i: (
        i.run
        * (
            rated
            * (0.35 + 0.65 * i.load)
            * (1.0 + 0.15 * i.w(_I) + 0.06 * i.w(_M) + 0.05 * i.w(_B))
        )
    )


def _speed(rated: float) -> Formula:
    return lambda i: (
        i.run * (rated * (1.0 + 0.024 * (1.0 - i.load)) * (1.0 - 0.004 * (i.w(_B) + i.w(_M))))
    )


def _pressure(rated: float) -> Formula:
    return lambda i: i.run * (rated * (0.6 + 0.4 * i.load) * (1.0 - 0.35 * i.w(_S)))


def _flow(rated: float) -> Formula:
    return lambda i: i.run * (rated * i.load * (1.0 - 0.3 * i.w(_S)))


def _power(rated: float) -> Formula:
    return lambda i: (
        i.run
        * (
            rated
            * (0.05 + 0.95 * i.load)
            * (1.0 + 0.08 * i.w(_I) + 0.05 * i.w(_M) + 0.04 * i.w(_B))
        )
    )


def _constant(value: float) -> Formula:
    return lambda i: np.full_like(i.load, value)


def _ambient(i: _Inputs) -> FloatArray:
    return i.ambient + 0.0 * i.load


def _load_setpoint(i: _Inputs) -> FloatArray:
    return 100.0 * i.load * i.run


def _rated_current(spec: MachineSpec) -> float:
    r = spec.rated
    if r.current_a:
        return r.current_a
    if r.power_kw and r.voltage_v:
        return r.power_kw * 1000.0 / (math.sqrt(3.0) * r.voltage_v * r.power_factor * 0.92)
    return 30.0


def _midpoint(sensor: SensorSpec) -> float:
    lo, hi = sensor.normal_low, sensor.normal_high
    if lo is not None and hi is not None:
        return (lo + hi) / 2.0
    return lo if lo is not None else (hi if hi is not None else 0.0)


def _formula(sensor: SensorSpec, spec: MachineSpec) -> Formula:
    r = spec.rated
    own = sensor.rated
    by_name: dict[str, Callable[[], Formula]] = {
        "vibration": lambda: _vibration(own or 2.0),
        "bearing_temp": lambda: _bearing_temp,
        "winding_temp": lambda: _winding_temp,
        "discharge_temp": lambda: _discharge_temp,
        "seal_temp": lambda: _seal_temp,
        "current": lambda: _current(own or _rated_current(spec)),
        "rpm": lambda: _speed(own or r.rpm or 1480.0),
        "discharge_pressure": lambda: _pressure(own or r.pressure_bar or 6.0),
        "flow": lambda: _flow(own or r.flow_m3h or 100.0),
        "belt_speed": lambda: _speed(own or 2.0),
        "power": lambda: _power(own or r.power_kw or 15.0),
        "voltage": lambda: _constant(own or r.voltage_v or 400.0),
        "ambient_temp": lambda: _ambient,
        "load_setpoint": lambda: _load_setpoint,
    }
    if sensor.name in by_name:
        return by_name[sensor.name]()
    by_kind: dict[SensorKind, Callable[[], Formula]] = {
        SensorKind.VIBRATION: by_name["vibration"],
        SensorKind.TEMPERATURE: lambda: _generic_temp,
        SensorKind.PRESSURE: by_name["discharge_pressure"],
        SensorKind.FLOW: by_name["flow"],
        SensorKind.CURRENT: by_name["current"],
        SensorKind.SPEED: by_name["rpm"],
        SensorKind.VOLTAGE: by_name["voltage"],
        SensorKind.POWER: by_name["power"],
    }
    if sensor.kind in by_kind:
        return by_kind[sensor.kind]()
    return _constant(own if own is not None else _midpoint(sensor))


class SignalModel:
    """The sensors of one machine as functions of load, ambient temperature and wear.

    Parameters
    ----------
    spec
        The machine; its sensors (in order) are the columns of every value array.
    modes
        Order of the columns of wear arrays (default: the machine's failure modes).
    noise_scale
        Multiplies the per-kind noise fractions (:data:`NOISE_FRACTION`); 0 = no noise.
    thermal_time_constant_hours
        Time constant of the first-order lag of temperature sensors (> 0).

    >>> from schemas.plant import MachineSpec, SensorSpec
    >>> spec = MachineSpec(id="P-1", type="pump", kind="pump", site="s", line="l",
    ...     sensors=[SensorSpec(name="vibration", kind="vibration", unit="mm/s"),
    ...              SensorSpec(name="seal_temp", kind="temperature", unit="degC")])
    >>> model = SignalModel(spec)
    >>> model.sensor_names, [m.value for m in model.modes]
    (('vibration', 'seal_temp'), ['bearing_wear', 'seal_leak', 'misalignment'])
    >>> model.steady(1.0, 25.0, [0.0, 0.0, 0.0]).round(2).tolist()
    [2.0, 40.0]
    >>> model.steady(1.0, 25.0, [0.0, 0.9, 0.0]).round(1).tolist()   # leaking seal runs hot
    [2.0, 78.4]
    >>> model.steady(0.0, 25.0, [0.0, 0.0, 0.0]).tolist()            # stopped
    [0.0, 25.0]
    """

    def __init__(
        self,
        spec: MachineSpec,
        *,
        modes: Sequence[FailureMode] | None = None,
        noise_scale: float = 1.0,
        thermal_time_constant_hours: float = 0.5,
    ) -> None:
        if not isinstance(spec, MachineSpec):
            raise ValueError(f"spec must be a MachineSpec, got {type(spec).__name__}")
        self.modes: tuple[FailureMode, ...] = (
            failure_modes_for(spec) if modes is None else tuple(FailureMode(m) for m in modes)
        )
        if not self.modes:
            raise ValueError("modes must name at least one failure mode")
        if not finite(noise_scale) or noise_scale < 0:
            raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}")
        if not finite(thermal_time_constant_hours) or thermal_time_constant_hours <= 0:
            raise ValueError(
                "thermal_time_constant_hours must be a finite number > 0, "
                f"got {thermal_time_constant_hours!r}"
            )
        self.spec = spec
        self.noise_scale = float(noise_scale)
        self.thermal_time_constant_hours = float(thermal_time_constant_hours)
        self.sensor_names: tuple[str, ...] = tuple(s.name for s in spec.sensors)
        self._formulas = [_formula(s, spec) for s in spec.sensors]
        self._thermal = np.array(
            [s.kind is SensorKind.TEMPERATURE and s.name != "ambient_temp" for s in spec.sensors]
        )
        self._signed = np.array([s.kind in _SIGNED_KINDS for s in spec.sensors])
        self._exact = np.array([s.name in SETPOINTS for s in spec.sensors])
        self._noise_fraction = self.noise_scale * np.array(
            [0.0 if s.name in SETPOINTS else NOISE_FRACTION[s.kind] for s in spec.sensors]
        )
        self.reference: FloatArray = self.steady(1.0, 25.0, np.zeros(len(self.modes)))
        """Healthy values at rated load and 25 °C (the scale of noise and sensor faults)."""
        self._noise_floor = np.where(
            self._exact,
            0.0,
            self.noise_scale * NOISE_FLOOR * np.maximum(np.abs(self.reference), 1e-3),
        )

    def __repr__(self) -> str:
        return f"SignalModel({self.spec.id!r}, sensors={list(self.sensor_names)})"

    @property
    def exact(self) -> npt.NDArray[np.bool_]:
        """Which columns are set-points (:data:`SETPOINTS`): read without noise or faults."""
        return self._exact.copy()

    @property
    def thermal(self) -> npt.NDArray[np.bool_]:
        """Which columns are temperatures that lag behind their steady value."""
        return self._thermal.copy()

    def key_sensor(self, mode: FailureMode | str) -> str | None:
        """The machine's sensor that shows ``mode`` first, if it has one."""
        for name in KEY_SENSORS[FailureMode(mode)]:
            if name in self.sensor_names:
                return name
        return None

    def steady(
        self,
        load: npt.ArrayLike,
        ambient_c: npt.ArrayLike,
        wear: npt.ArrayLike,
        *,
        running: npt.ArrayLike | None = None,
        overrides: Mapping[str, float] | None = None,
    ) -> FloatArray:
        """Noiseless settled sensor values.

        ``load`` and ``ambient_c`` are scalars or ``(n,)``; ``wear`` is ``(n_modes,)`` or
        ``(n, n_modes)`` in :attr:`modes` order; ``running`` (default: ``load > 0``) is
        False for a stopped or failed machine. ``overrides`` pins sensors (by name) to fixed
        values. Returns ``(n_sensors,)`` for a single point, else ``(n, n_sensors)``.
        """
        lo = np.asarray(load, dtype=np.float64)
        amb = np.asarray(ambient_c, dtype=np.float64)
        w = np.asarray(wear, dtype=np.float64)
        if w.shape[-1:] != (len(self.modes),) or w.ndim > 2:
            raise ValueError(
                f"wear must have shape ({len(self.modes)},) or (n, {len(self.modes)}), "
                f"got {tuple(w.shape)}"
            )
        run_in = None if running is None else np.asarray(running, dtype=bool)
        single = lo.ndim == 0 and amb.ndim == 0 and w.ndim == 1
        single = single and (run_in is None or run_in.ndim == 0)
        n = max(
            lo.size if lo.ndim else 1,
            amb.size if amb.ndim else 1,
            w.shape[0] if w.ndim == 2 else 1,
            run_in.size if run_in is not None and run_in.ndim else 1,
        )
        lo = lo.reshape(1) if lo.ndim == 0 else lo
        amb = amb.reshape(1) if amb.ndim == 0 else amb
        if lo.shape not in ((1,), (n,)) or amb.shape not in ((1,), (n,)):
            raise ValueError(f"load and ambient_c must be scalars or have shape ({n},)")
        if run_in is not None and run_in.shape not in ((), (1,), (n,)):
            raise ValueError(f"running must be a scalar or have shape ({n},)")
        if not np.isfinite(lo).all() or (lo < 0).any():
            raise ValueError("load must be finite and >= 0")
        if run_in is None:
            run = (lo > 0).astype(np.float64)
        else:
            run = run_in.astype(np.float64).reshape(-1)
        if n > 1:
            lo, amb, run = (np.broadcast_to(x, (n,)) for x in (lo, amb, run))
        w2 = np.minimum(w.reshape(-1, len(self.modes)), 1.0)
        zeros = np.zeros(n)
        worn = {m: zeros for m in FailureMode}
        worn.update({m: np.broadcast_to(w2[:, j], (n,)) for j, m in enumerate(self.modes)})
        inputs = _Inputs(load=lo * run, ambient=amb, run=run, wear=worn)
        out = np.empty((n, len(self._formulas)))
        for col, formula in enumerate(self._formulas):
            out[:, col] = formula(inputs)
        if overrides:
            for name, value in overrides.items():
                if name not in self.sensor_names:
                    raise ValueError(f"overrides: machine {self.spec.id} has no sensor {name!r}")
                out[:, self.sensor_names.index(name)] = float(value)
        return out[0] if single else out

    def follow(self, previous: FloatArray, target: FloatArray, dt_hours: float) -> FloatArray:
        """Sensor values after ``dt_hours``: temperatures move from ``previous`` towards
        ``target`` with the thermal time constant; other signals jump to ``target``.

        ``target`` may also be ``(n, n_sensors)``: the targets of ``n`` successive steps of
        ``dt_hours`` each; the values after the last step are returned.
        """
        if not finite(dt_hours) or dt_hours < 0:
            raise ValueError(f"dt_hours must be a finite number >= 0, got {dt_hours!r}")
        steps = np.asarray(target, dtype=np.float64)
        steps = steps[None, :] if steps.ndim == 1 else steps
        if steps.ndim != 2 or steps.shape[1] != len(self.sensor_names) or not steps.shape[0]:
            raise ValueError(f"target must have shape ([n,] {len(self.sensor_names)})")
        keep = math.exp(-dt_hours / self.thermal_time_constant_hours)
        n = steps.shape[0]
        # y_n = keep^n·y_0 + sum_k (1 - keep)·keep^(n-1-k)·x_k  (the recursion, unrolled)
        weights = (1.0 - keep) * keep ** np.arange(n - 1, -1, -1, dtype=np.float64)
        lagged = keep**n * np.asarray(previous, dtype=np.float64) + weights @ steps
        out: FloatArray = np.where(self._thermal, lagged, steps[-1])
        return out

    def follow_series(self, targets: FloatArray, dt_hours: float) -> FloatArray:
        """:meth:`follow` along a series of targets ``(n, n_sensors)`` sampled every
        ``dt_hours``, starting settled at ``targets[0]``."""
        if targets.ndim != 2 or targets.shape[1] != len(self.sensor_names):
            raise ValueError(f"targets must have shape (n, {len(self.sensor_names)})")
        out = targets.copy()
        if not self._thermal.any() or targets.shape[0] < 2:
            return out
        keep = math.exp(-dt_hours / self.thermal_time_constant_hours)
        x = targets[:, self._thermal]
        lagged, _ = lfilter([1.0 - keep], [1.0, -keep], x, axis=0, zi=keep * x[:1])
        out[:, self._thermal] = lagged
        return out

    def add_noise(self, values: FloatArray, rng: np.random.Generator | int) -> FloatArray:
        """Measured values: ``values`` plus Gaussian noise of ``fraction·|value| + floor``
        per sensor (non-negative quantities stay non-negative)."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape[-1:] != (len(self.sensor_names),):
            raise ValueError(f"values must end in a sensor axis of {len(self.sensor_names)}")
        sigma = self._noise_fraction * np.abs(v) + self._noise_floor
        noisy = v + sigma * as_generator(rng).standard_normal(v.shape)
        out: FloatArray = np.where(self._signed, noisy, np.abs(noisy))
        return out
