"""Rolling features per sensor over count-based windows, updated incrementally.

For every sensor of a machine and every window length ``w`` (the last ``w`` readings):

=============  ===================================================================
``mean``       arithmetic mean
``std``        population standard deviation (``numpy.std`` with ``ddof=0``)
``min``/``max`` extremes
``rms``        root mean square, ``sqrt(mean(x**2))``
``slope``      least-squares slope of value against time, in units per hour
``kurtosis``   excess (Fisher) kurtosis, ``m4 / m2**2 - 3`` (``scipy.stats.kurtosis``)
=============  ===================================================================

Mean, std, RMS, slope and kurtosis come from running power sums that are updated in O(1)
per reading (add the new reading, subtract the one leaving the window). The sums are kept
relative to a per-sensor reference value and time, and are recomputed exactly from the
ring buffer every ``recompute_every`` readings, so rounding error cannot accumulate. Min
and max are read from the ring buffer when asked for. All operations are vectorised over
the machine's sensors: one call updates one reading of many sensors.

Spectral features (for vibration sensors): from the last ``max(windows)`` readings,
detrended, the dominant frequency, the spectral centroid and the share of energy in the
upper half of the band (``high_band_ratio``). For a vibration channel that delivers
waveform samples these are its spectrum; for a sensor reporting an RMS value every few
seconds they describe how that value oscillates.

>>> import numpy as np
>>> f = RollingFeatures(n_sensors=2, windows=(4,))
>>> for i, (a, b) in enumerate([(1.0, 10.0), (2.0, 10.0), (3.0, 10.0), (4.0, 10.0), (5.0, 10.0)]):
...     f.update(np.array([0, 1]), np.array([i * 3600.0] * 2), np.array([a, b]))
>>> feats = f.compute(4)
>>> feats["mean"].tolist(), feats["slope"].tolist(), feats["max"].tolist()
([3.5, 10.0], [1.0, 0.0], [5.0, 10.0])
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from twins.snapshot import StateDict

FEATURE_NAMES: tuple[str, ...] = ("mean", "std", "min", "max", "rms", "slope", "kurtosis")
SPECTRAL_NAMES: tuple[str, ...] = ("dominant_freq_hz", "spectral_centroid_hz", "high_band_ratio")

# Rows of the power-sum array: sums over the window of y, y^2, y^3, y^4, tau, tau^2, tau*y,
# where y = value - reference value and tau = time - reference time (seconds).
_Y, _Y2, _Y3, _Y4, _T, _T2, _TY = range(7)


class RollingFeatures:
    """Rolling window features for ``n_sensors`` sensors.

    Parameters
    ----------
    n_sensors: how many sensors (columns) are tracked.
    windows: window lengths in readings, each >= 2.
    recompute_every: exact recomputation period in readings per sensor (default: the
        longest window).
    """

    def __init__(
        self,
        n_sensors: int,
        windows: tuple[int, ...] = (16, 64),
        recompute_every: int | None = None,
    ) -> None:
        if n_sensors < 1:
            raise ValueError(f"n_sensors must be at least 1, got {n_sensors}")
        if not windows or any(int(w) < 2 for w in windows):
            raise ValueError(f"windows must be non-empty lengths >= 2, got {windows!r}")
        if len(set(windows)) != len(windows):
            raise ValueError(f"windows must be distinct, got {windows!r}")
        self.n_sensors = int(n_sensors)
        self.windows = tuple(sorted(int(w) for w in windows))
        if recompute_every is not None and int(recompute_every) < 1:
            raise ValueError(f"recompute_every must be at least 1, got {recompute_every}")
        self.recompute_every = int(recompute_every or max(self.windows))
        self._built = False

    # -- state ---------------------------------------------------------------------------
    def _build(self) -> None:
        s, cap, nw = self.n_sensors, max(self.windows), len(self.windows)
        self._values = np.zeros((s, cap))
        self._times = np.zeros((s, cap))
        self._head = np.zeros(s, dtype=np.int64)  # total readings written per sensor
        self._since = np.zeros(s, dtype=np.int64)  # readings since the last recomputation
        self._ref_value = np.zeros(s)
        self._ref_time = np.zeros(s)
        self._sums = np.zeros((7, nw, s))
        self._win = np.asarray(self.windows, dtype=np.int64)[:, None]  # (nw, 1)
        self._built = True

    @property
    def capacity(self) -> int:
        return max(self.windows)

    def counts(self) -> np.ndarray:
        """Readings seen per sensor (since creation)."""
        if not self._built:
            return np.zeros(self.n_sensors, dtype=np.int64)
        return self._head.copy()

    # -- updates -------------------------------------------------------------------------
    def update(self, sensors: np.ndarray, times_s: np.ndarray, values: np.ndarray) -> None:
        """Add one reading for each of ``sensors`` (distinct indices), at ``times_s``."""
        if not self._built:
            self._build()
        cap = self.capacity
        if (
            len(sensors) == self.n_sensors
            and self._head[0] == self._head[-1]
            and (self._head == self._head[0]).all()
            and (sensors == np.arange(self.n_sensors)).all()
        ):
            self._update_aligned(times_s, values)
            return
        head = self._head[sensors]
        first = head == 0
        if first.any():  # anchor the references at each sensor's first reading
            self._ref_value[sensors[first]] = values[first]
            self._ref_time[sensors[first]] = times_s[first]
        # The reading that leaves each window: the one written w readings ago.
        old_pos = (head[None, :] - self._win) % cap  # (nw, k)
        rows = np.broadcast_to(sensors, old_pos.shape)
        leaving = head[None, :] >= self._win  # (nw, k)
        self._add(
            sensors,
            values - self._ref_value[sensors],
            times_s - self._ref_time[sensors],
            np.where(leaving, self._values[rows, old_pos] - self._ref_value[sensors], 0.0),
            np.where(leaving, self._times[rows, old_pos] - self._ref_time[sensors], 0.0),
        )
        pos = head % cap
        self._values[sensors, pos] = values
        self._times[sensors, pos] = times_s
        self._head[sensors] = head + 1
        since = self._since[sensors] + 1
        self._since[sensors] = since
        due = since >= self.recompute_every
        if due.any():
            self._recompute(sensors[due])

    def _update_aligned(self, times_s: np.ndarray, values: np.ndarray) -> None:
        """The common case: every sensor reports and all have seen as many readings."""
        cap = self.capacity
        head = int(self._head[0])
        if head == 0:
            self._ref_value[:] = values
            self._ref_time[:] = times_s
        y = values - self._ref_value
        tau = times_s - self._ref_time
        old_pos = (head - self._win[:, 0]) % cap  # (nw,)
        if head >= self.windows[-1]:
            oy = self._values[:, old_pos].T - self._ref_value  # (nw, S)
            ot = self._times[:, old_pos].T - self._ref_time
        else:
            leaving = head >= self._win  # (nw, 1)
            oy = np.where(leaving, self._values[:, old_pos].T - self._ref_value, 0.0)
            ot = np.where(leaving, self._times[:, old_pos].T - self._ref_time, 0.0)
        self._add(slice(None), y, tau, oy, ot)
        pos = head % cap
        self._values[:, pos] = values
        self._times[:, pos] = times_s
        self._head += 1
        self._since += 1
        if self._since[0] >= self.recompute_every:
            self._recompute(np.arange(self.n_sensors))

    def _add(
        self,
        sel: np.ndarray | slice,
        y: np.ndarray,
        tau: np.ndarray,
        oy: np.ndarray,
        ot: np.ndarray,
    ) -> None:
        """Add the new readings' power sums and remove those of the readings leaving."""
        new = _powers(y, tau, np.empty((7, *y.shape)))  # (7, k)
        old = _powers(oy, ot, np.empty((7, *oy.shape)))  # (7, nw, k)
        old -= new[:, None, :]
        self._sums[:, :, sel] -= old

    def _window_view(
        self, sensors: np.ndarray, w: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values, times and validity of the last ``w`` readings, oldest first: (k, w)."""
        cap = self.capacity
        head = self._head[sensors][:, None]
        back = np.arange(w, 0, -1)[None, :]  # w .. 1 readings ago
        pos = (head - back) % cap
        valid = head - back >= 0
        rows = sensors[:, None]
        return self._values[rows, pos], self._times[rows, pos], valid

    def _recompute(self, sensors: np.ndarray) -> None:
        """Exact sums from the buffer; references move to the latest reading."""
        last = (self._head[sensors] - 1) % self.capacity
        self._ref_value[sensors] = self._values[sensors, last]
        self._ref_time[sensors] = self._times[sensors, last]
        for i, w in enumerate(self.windows):
            vals, times, valid = self._window_view(sensors, w)
            y = np.where(valid, vals - self._ref_value[sensors, None], 0.0)
            tau = np.where(valid, times - self._ref_time[sensors, None], 0.0)
            self._sums[:, i, sensors] = _powers(y, tau, np.empty((7, *y.shape))).sum(axis=2)
        self._since[sensors] = 0

    # -- reading features -----------------------------------------------------------------
    def compute(self, window: int, sensors: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Features over the last ``window`` readings, one value per sensor.

        NaN where a sensor has fewer than two readings (one for mean/min/max/rms).
        """
        if window not in self.windows:
            raise ValueError(f"window must be one of {self.windows}, got {window}")
        if sensors is None:
            sensors = np.arange(self.n_sensors)
        if not self._built:
            return {name: np.full(len(sensors), np.nan) for name in FEATURE_NAMES}
        i = self.windows.index(window)
        sums = self._sums[:, i, sensors]
        n = np.minimum(self._head[sensors], window).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = sums[_Y] / n
            m2 = np.maximum(sums[_Y2] / n - mu * mu, 0.0)
            m4 = sums[_Y4] / n - 4 * mu * sums[_Y3] / n + 6 * mu * mu * sums[_Y2] / n - 3 * mu**4
            ref = self._ref_value[sensors]
            mean = ref + mu
            rms = np.sqrt(np.maximum((sums[_Y2] + 2 * ref * sums[_Y]) / n + ref * ref, 0.0))
            tmu = sums[_T] / n
            tvar = sums[_T2] / n - tmu * tmu
            slope = (sums[_TY] / n - tmu * mu) / tvar * 3600.0
            # Relative to the scale of the times involved, a tiny variance means "no spread".
            slope = np.where(tvar > 1e-12 * np.maximum(sums[_T2] / n, 1.0), slope, np.nan)
            kurt = m4 / (m2 * m2) - 3.0
        vals, _, valid = self._window_view(sensors, window)
        lo = np.where(valid, vals, np.inf).min(axis=1)
        hi = np.where(valid, vals, -np.inf).max(axis=1)
        # A flat window has no spread, whatever rounding is left in the running sums.
        flat = lo == hi
        m2 = np.where(flat, 0.0, m2)
        with np.errstate(invalid="ignore", divide="ignore"):
            tiny = m2 <= 1e-12 * np.maximum(sums[_Y2] / n, 1e-300)
        kurt = np.where(flat | tiny, np.nan, kurt)
        empty = n < 1
        two = n < 2
        return {
            "mean": np.where(empty, np.nan, mean),
            "std": np.where(two, np.nan, np.sqrt(m2)),
            "min": np.where(empty, np.nan, lo),
            "max": np.where(empty, np.nan, hi),
            "rms": np.where(empty, np.nan, rms),
            "slope": np.where(two, np.nan, slope),
            "kurtosis": np.where(two, np.nan, kurt),
        }

    def spectral(self, sensors: np.ndarray) -> dict[str, np.ndarray]:
        """Spectral features over the longest window; NaN until the window is full."""
        k = len(sensors)
        out = {name: np.full(k, np.nan) for name in SPECTRAL_NAMES}
        if not self._built or k == 0:
            return out
        w = self.capacity
        full = self._head[sensors] >= w
        if not full.any():
            return out
        idx = np.asarray(sensors)[full]
        vals, times, _ = self._window_view(idx, w)
        dt = (times[:, -1] - times[:, 0]) / (w - 1)  # mean sampling interval, s
        # Remove each window's least-squares line (a level climbing with wear is a trend,
        # not a low frequency).
        x = np.arange(w) - (w - 1) / 2.0
        slope = (vals * x).sum(axis=1, keepdims=True) / (x * x).sum()
        detrended = vals - vals.mean(axis=1, keepdims=True) - slope * x
        power = np.abs(np.fft.rfft(detrended, axis=1)) ** 2
        power[:, 0] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            freqs = np.fft.rfftfreq(w)[None, :] / dt[:, None]  # Hz, per sensor
            total = power.sum(axis=1)
            dominant = freqs[np.arange(len(idx)), power.argmax(axis=1)]
            centroid = (power * freqs).sum(axis=1) / total
            half = power.shape[1] // 2
            high = power[:, half:].sum(axis=1) / total
        flat = total <= 0
        out["dominant_freq_hz"][full] = np.where(flat, np.nan, dominant)
        out["spectral_centroid_hz"][full] = np.where(flat, np.nan, centroid)
        out["high_band_ratio"][full] = np.where(flat, np.nan, high)
        return out

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        if not self._built:
            return {"built": False}
        return {
            "built": True,
            "values": self._values,
            "times": self._times,
            "head": self._head,
            "since": self._since,
            "ref_value": self._ref_value,
            "ref_time": self._ref_time,
            "sums": self._sums,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state.get("built"):
            self._built = False
            return
        self._build()
        for key in ("values", "times", "head", "since", "ref_value", "ref_time", "sums"):
            current = getattr(self, "_" + key)
            arr = np.asarray(state[key], dtype=current.dtype)
            if arr.shape != current.shape:
                raise ValueError(f"features.{key}: shape {arr.shape} != expected {current.shape}")
            setattr(self, "_" + key, arr.copy())

    def clone(self) -> RollingFeatures:
        return copy.deepcopy(self)

    def nbytes(self) -> int:
        if not self._built:
            return 0
        return sum(a.nbytes for a in self.state_dict().values() if isinstance(a, np.ndarray))


def _powers(y: np.ndarray, tau: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The seven summed quantities, written into ``out`` (shape ``(7, *y.shape)``)."""
    out[_Y] = y
    np.multiply(y, y, out=out[_Y2])
    np.multiply(out[_Y2], y, out=out[_Y3])
    np.multiply(out[_Y2], out[_Y2], out=out[_Y4])
    out[_T] = tau
    np.multiply(tau, tau, out=out[_T2])
    np.multiply(tau, y, out=out[_TY])
    return out
