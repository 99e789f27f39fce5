"""Sensor faults: spikes, drift, stuck values and dropouts, with their ground truth.

Faults are about the *sensor*, not the machine: the machine is fine, the reading is wrong.
:class:`SensorFaults` holds the rates and sizes; :class:`FaultState` carries the faults
that last (a drifting or stuck sensor) from one reading to the next;
:meth:`SensorFaults.apply` corrupts one reading of each sensor and says which readings it
corrupted, so detectors can be scored against the truth.

- **spike** (``spike_rate`` per reading): one reading 3-5 times its value (3-5 times a tenth
  of the sensor's scale above it when the value is near 0);
- **drift** (``drift_rate`` per sensor-hour, so it does not depend on how often a sensor is
  read): an additive bias that grows by ``drift_per_hour`` of the sensor's rated-load value
  per hour, up or down, for ``drift_hours``, then the sensor is recalibrated (bias 0);
- **stuck** (``stuck_rate`` per reading): the sensor repeats its last value for the next
  ``stuck_readings`` readings;
- **dropout** (``dropout_rate`` per reading): the reading is missing (``NaN`` in arrays,
  left out of telemetry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from twins.simulator._checks import finite, non_negative_int
from twins.simulator._random import FloatArray


class SensorFault(IntEnum):
    """What was wrong with one reading (ground truth; ``NONE`` for a correct reading).

    >>> SensorFault(3).name, SensorFault.DROPOUT.value
    ('STUCK', 4)
    """

    NONE = 0
    SPIKE = 1
    DRIFT = 2
    STUCK = 3
    DROPOUT = 4


@dataclass(frozen=True, slots=True)
class FaultState:
    """The lasting faults of a set of sensors (arrays with one entry per sensor).

    ``stuck_left`` readings still to repeat ``stuck_value``; ``drift_bias`` the current
    additive bias, growing by ``drift_slope`` per hour for ``drift_left_hours`` more hours.

    >>> FaultState.clear(3).stuck_left.tolist()
    [0, 0, 0]
    """

    stuck_left: npt.NDArray[np.int64]
    stuck_value: FloatArray
    drift_bias: FloatArray
    drift_slope: FloatArray
    drift_left_hours: FloatArray

    @classmethod
    def clear(cls, n_sensors: int) -> FaultState:
        """No ongoing fault on any of ``n_sensors`` sensors."""
        if n_sensors < 0:
            raise ValueError(f"n_sensors must be >= 0, got {n_sensors}")
        zeros = np.zeros(n_sensors)
        return cls(
            stuck_left=np.zeros(n_sensors, dtype=np.int64),
            stuck_value=zeros.copy(),
            drift_bias=zeros.copy(),
            drift_slope=zeros.copy(),
            drift_left_hours=zeros.copy(),
        )

    @property
    def n_sensors(self) -> int:
        return int(self.stuck_left.shape[0])


def _rate(value: float, name: str) -> float:
    if not finite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class SensorFaults:
    """Rates and sizes of sensor faults (rates per reading, except ``drift_rate`` which is
    per sensor-hour; see the module notes).

    >>> faults = SensorFaults(spike_rate=0.0, drift_rate=0.0, stuck_rate=0.0, dropout_rate=1.0)
    >>> rng = np.random.default_rng(0)
    >>> values, kinds, state = faults.apply(np.array([10.0, 20.0]), FaultState.clear(2),
    ...     scale=np.array([10.0, 20.0]), dt_hours=1.0, rng=rng)
    >>> values.tolist(), [SensorFault(k).name for k in kinds]
    ([nan, nan], ['DROPOUT', 'DROPOUT'])
    >>> spikes = SensorFaults(spike_rate=1.0, drift_rate=0.0, stuck_rate=0.0, dropout_rate=0.0)
    >>> values, kinds, state = spikes.apply(np.array([10.0, 20.0]), FaultState.clear(2),
    ...     scale=np.array([10.0, 20.0]), dt_hours=1.0, rng=rng)
    >>> bool((values >= [30.0, 60.0]).all()), [SensorFault(k).name for k in kinds]
    (True, ['SPIKE', 'SPIKE'])
    >>> SensorFaults(spike_rate=2)
    Traceback (most recent call last):
    ...
    ValueError: spike_rate must be a probability in [0, 1], got 2
    """

    spike_rate: float = 0.001
    drift_rate: float = 0.0002
    stuck_rate: float = 0.0001
    dropout_rate: float = 0.002
    spike_factor: tuple[float, float] = (3.0, 5.0)
    drift_per_hour: float = 0.01
    drift_hours: float = 24.0
    stuck_readings: int = 40

    def __post_init__(self) -> None:
        for name in ("spike_rate", "stuck_rate", "dropout_rate"):
            object.__setattr__(self, name, _rate(getattr(self, name), name))
        rate = self.drift_rate
        if not finite(rate) or rate < 0:
            raise ValueError(f"drift_rate must be a finite number >= 0 (per hour), got {rate!r}")
        object.__setattr__(self, "drift_rate", float(rate))
        try:
            lo, hi = self.spike_factor
        except (TypeError, ValueError):
            lo = hi = math.nan
        if not (finite(lo) and finite(hi) and 1.0 < lo <= hi):
            raise ValueError(
                f"spike_factor must be (low, high) with 1 < low <= high, got {self.spike_factor!r}"
            )
        if not finite(self.drift_per_hour) or self.drift_per_hour < 0:
            raise ValueError(
                f"drift_per_hour must be a finite number >= 0, got {self.drift_per_hour!r}"
            )
        if not finite(self.drift_hours) or self.drift_hours <= 0:
            raise ValueError(f"drift_hours must be a finite number > 0, got {self.drift_hours!r}")
        if not non_negative_int(self.stuck_readings) or self.stuck_readings < 1:
            raise ValueError(f"stuck_readings must be an int >= 1, got {self.stuck_readings!r}")

    @classmethod
    def none(cls) -> SensorFaults:
        """Perfect sensors: no faults at all."""
        return cls(spike_rate=0.0, drift_rate=0.0, stuck_rate=0.0, dropout_rate=0.0)

    @property
    def enabled(self) -> bool:
        return any((self.spike_rate, self.drift_rate, self.stuck_rate, self.dropout_rate))

    def apply(
        self,
        values: FloatArray,
        state: FaultState,
        *,
        scale: FloatArray,
        dt_hours: float,
        rng: np.random.Generator,
    ) -> tuple[FloatArray, npt.NDArray[np.int8], FaultState]:
        """Corrupt one reading per sensor.

        ``values`` are the true (noisy) readings, one per sensor; ``scale`` the typical size
        of each sensor's value (drift grows in units of it; spikes near 0 use it);
        ``dt_hours`` the time since the previous reading. Returns the reported values
        (``NaN`` for a dropout), the :class:`SensorFault` of each reading, and the new state.
        """
        v = np.asarray(values, dtype=np.float64)
        n = v.shape[0]
        if v.ndim != 1 or state.n_sensors != n or np.shape(scale) != (n,):
            raise ValueError(f"values, scale and state must all cover the same {n} sensors")
        if not finite(dt_hours) or dt_hours < 0:
            raise ValueError(f"dt_hours must be a finite number >= 0, got {dt_hours!r}")
        kinds = np.zeros(n, dtype=np.int8)
        if not self.enabled and not state.stuck_left.any() and not state.drift_slope.any():
            return v.copy(), kinds, state
        u = rng.random((5, n))

        # drift: grows while active, then the sensor is recalibrated
        active = state.drift_left_hours > 0
        bias = np.where(active, state.drift_bias + state.drift_slope * dt_hours, 0.0)
        left = np.where(active, state.drift_left_hours - dt_hours, 0.0)
        ended = active & (left <= 0)
        bias = np.where(ended, 0.0, bias)
        slope = np.where(active & ~ended, state.drift_slope, 0.0)
        left = np.where(ended, 0.0, left)
        start = ~active & (u[0] < -math.expm1(-self.drift_rate * dt_hours))
        sign = np.where(u[1] < 0.5, -1.0, 1.0)
        slope = np.where(start, sign * self.drift_per_hour * np.abs(scale), slope)
        left = np.where(start, self.drift_hours, left)
        drifting = (left > 0) & (bias != 0.0)
        out = v + bias
        kinds[drifting] = SensorFault.DRIFT

        # spike: a single outlier
        spike = u[2] < self.spike_rate
        lo, hi = self.spike_factor
        factor = lo + (hi - lo) * u[1]
        # x3-x5 of the value; near zero, x3-x5 of a tenth of the sensor's scale
        jump = (factor - 1.0) * np.maximum(np.abs(out), 0.1 * np.abs(scale))
        out = np.where(spike, out + jump, out)
        kinds[spike] = SensorFault.SPIKE

        # stuck: repeat the last value (takes precedence over drift and spikes)
        stuck_now = state.stuck_left > 0
        out = np.where(stuck_now, state.stuck_value, out)
        kinds[stuck_now] = SensorFault.STUCK
        stuck_left = np.where(stuck_now, state.stuck_left - 1, 0)
        begin = ~stuck_now & (u[3] < self.stuck_rate)
        stuck_left = np.where(begin, self.stuck_readings, stuck_left)
        stuck_value = np.where(begin | stuck_now, out, state.stuck_value)

        # dropout: the reading never arrives
        dropout = u[4] < self.dropout_rate
        out = np.where(dropout, np.nan, out)
        kinds[dropout] = SensorFault.DROPOUT

        new_state = replace(
            state,
            stuck_left=stuck_left.astype(np.int64),
            stuck_value=stuck_value,
            drift_bias=bias,
            drift_slope=slope,
            drift_left_hours=left,
        )
        return out, kinds, new_state
