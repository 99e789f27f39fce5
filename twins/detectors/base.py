"""The one protocol every anomaly detector honours.

A detector watches one machine's ``S`` sensors. It is shown *scans*: one reading (or
none) per sensor, with each reading's time, plus the machine's latest known value of
every sensor. Rules, statistical and learned detectors all follow the same protocol, so a
twin or an ensemble can hold any of them.

**Scores** lie in ``[0, 1]``; higher means more anomalous, and **0.5 is the detector's own
alarm boundary** (a score at or above 0.5 means "this detector calls it an anomaly").
``score_sensors`` gives one score per sensor (0 where a sensor is not involved);
``score_one`` is the scan's score (the largest per-sensor score for per-sensor detectors,
the machine-level score for multivariate ones).

Scoring never changes a detector; ``learn_one`` does. ``process_one`` scores a scan and
then learns from it, which is what a live twin does for every scan (detectors may reuse
the scores while learning). Batch forms take a :class:`ScanBlock` and score every row
against the current state (``score_many``) or learn every row in order (``learn_many``).

>>> import numpy as np
>>> scan = Scan.from_values([1.0, np.nan], now_s=10.0)
>>> scan.present.tolist()
[True, False]
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from schemas.anomaly import AnomalyType
from twins.snapshot import StateDict

ALARM = 0.5
"""Score at or above which a detector calls an observation anomalous."""


@dataclass(frozen=True, slots=True)
class Scan:
    """One round of readings of a machine.

    ``values[s]``/``times_s[s]``: the reading of sensor ``s`` in this scan (NaN when the
    sensor did not report). ``state[s]``: the latest known value of sensor ``s`` including
    this scan (NaN if never seen). ``now_s``: the scan's time (seconds since the epoch).
    ``running``: False while the machine stands still (idle); detectors that model running
    behaviour neither score nor learn then.

    A scan is read by every detector of a machine, so which readings it holds is worked
    out once, on first use (:attr:`present`, read-only, and :attr:`complete`). The arrays
    are not to be changed once the scan exists.
    """

    values: np.ndarray
    times_s: np.ndarray
    state: np.ndarray
    now_s: float
    running: bool = True
    _present: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _complete: bool | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def present(self) -> np.ndarray:
        """Which sensors reported in this scan (a read-only array)."""
        present = self._present
        if present is None:
            present = ~np.isnan(self.values)
            present.flags.writeable = False
            object.__setattr__(self, "_present", present)
        return present

    @property
    def complete(self) -> bool:
        """Whether every sensor reported in this scan."""
        complete = self._complete
        if complete is None:
            complete = bool(self.present.all())
            object.__setattr__(self, "_complete", complete)
        return complete

    @classmethod
    def from_values(cls, values: Any, now_s: float, state: Any = None) -> Scan:
        """A scan where every present reading was taken at ``now_s``."""
        v = np.asarray(values, dtype=np.float64)
        times = np.where(np.isnan(v), np.nan, now_s)
        st = v if state is None else np.asarray(state, dtype=np.float64)
        return cls(values=v, times_s=times, state=st, now_s=float(now_s))


@dataclass(frozen=True, slots=True)
class ScanBlock:
    """Many scans of one machine, oldest first: arrays of shape (rows, sensors)."""

    values: np.ndarray
    times_s: np.ndarray
    state: np.ndarray
    now_s: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def row(self, i: int) -> Scan:
        return Scan(self.values[i], self.times_s[i], self.state[i], float(self.now_s[i]))

    @classmethod
    def from_matrix(cls, values: Any, times_s: Any) -> ScanBlock:
        """Rows of complete scans (no gaps), row ``i`` taken at ``times_s[i]``."""
        v = np.asarray(values, dtype=np.float64)
        t = np.asarray(times_s, dtype=np.float64)
        if v.ndim != 2 or t.shape != (v.shape[0],):
            raise ValueError(
                f"values must be (rows, sensors) and times_s (rows,), got {v.shape} and {t.shape}"
            )
        return cls(v, np.repeat(t[:, None], v.shape[1], axis=1), v, t)


@runtime_checkable
class Detector(Protocol):
    """What every detector offers (see the module docstring for the meaning of scores)."""

    name: str
    anomaly_type: AnomalyType
    n_sensors: int

    def learn_one(self, scan: Scan) -> None: ...
    def score_one(self, scan: Scan) -> float: ...
    def score_sensors(self, scan: Scan) -> np.ndarray: ...
    def process_one(self, scan: Scan) -> np.ndarray: ...
    def expected(self, scan: Scan) -> np.ndarray: ...
    def learn_many(self, block: ScanBlock) -> None: ...
    def score_many(self, block: ScanBlock) -> np.ndarray: ...
    def state_dict(self) -> StateDict: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def clone(self) -> Self: ...


class SensorDetector(ABC):
    """Shared behaviour: input checks, batch forms, cloning and state handling.

    Subclasses implement ``_score`` and ``_learn`` (called with checked scans) and list
    the names of their state attributes in ``_state_keys`` (built on first use by
    ``_build``).
    """

    name: ClassVar[str] = "detector"
    anomaly_type: ClassVar[AnomalyType] = AnomalyType.STATISTICAL
    machine_level: ClassVar[bool] = False
    while_idle: ClassVar[bool] = False
    """Whether the detector judges scans taken while the machine is idle."""
    _state_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_sensors: int) -> None:
        if n_sensors < 1:
            raise ValueError(f"n_sensors must be at least 1, got {n_sensors}")
        self.n_sensors = int(n_sensors)
        self._built = False

    def _build(self) -> None:
        """Create the state (subclasses add their arrays, then call this)."""
        self._built = True

    @property
    def normalised(self) -> bool:
        """Whether this detector judges scans normalised against the machine's operating
        regime (the learned, statistical and multivariate, detectors do; rules read the
        raw values their limits are written in)."""
        return self.anomaly_type in (AnomalyType.STATISTICAL, AnomalyType.MULTIVARIATE)

    def _check(self, scan: Scan) -> None:
        if scan.values.shape != (self.n_sensors,) or scan.state.shape != (self.n_sensors,):
            raise ValueError(
                f"{self.name}: scan has {scan.values.shape} values and {scan.state.shape} "
                f"state entries; this detector watches {self.n_sensors} sensors"
            )
        if np.isinf(scan.values).any():
            raise ValueError(f"{self.name}: scan values must be finite or NaN (absent)")

    def _ready(self) -> SensorDetector:
        """This detector, or, before its state exists, a built copy to score against (so
        that scoring never changes the detector, not even by building its state)."""
        if self._built:
            return self
        fresh = copy.deepcopy(self)
        fresh._build()
        return fresh

    def score_sensors(self, scan: Scan) -> np.ndarray:
        """One score per sensor for this scan, without changing the detector."""
        self._check(scan)
        return self.score_checked(scan)

    def score_checked(self, scan: Scan) -> np.ndarray:
        """``score_sensors`` for a scan already checked against this detector's size (an
        ensemble checks each scan once for all its detectors)."""
        if not (scan.running or self.while_idle):
            return np.zeros(self.n_sensors)
        return self._ready()._score(scan)

    def learn_one(self, scan: Scan) -> None:
        """Update the detector with this scan."""
        self._check(scan)
        self.learn_scored(scan, None)

    def learn_scored(self, scan: Scan, scores: np.ndarray | None) -> None:
        """``learn_one`` for a scan just scored by ``score_sensors`` (so already checked)."""
        if scan.running or self.while_idle:
            if not self._built:
                self._build()
            self._learn(scan, scores)

    @abstractmethod
    def _score(self, scan: Scan) -> np.ndarray:
        """``score_sensors`` for a checked scan."""

    @abstractmethod
    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        """``learn_one`` for a checked scan, given its scores when already computed."""

    def score_one(self, scan: Scan) -> float:
        scores = self.score_sensors(scan)
        return float(scores.max()) if scores.size else 0.0

    def process_one(self, scan: Scan) -> np.ndarray:
        scores = self.score_sensors(scan)
        self.learn_scored(scan, scores)
        return scores

    def expected(self, scan: Scan) -> np.ndarray:
        """What each sensor was expected to read (NaN where the detector has no opinion)."""
        return np.full(self.n_sensors, np.nan)

    def learn_many(self, block: ScanBlock) -> None:
        for i in range(len(block)):
            self.learn_one(block.row(i))

    def score_many(self, block: ScanBlock) -> np.ndarray:
        return np.array([self.score_one(block.row(i)) for i in range(len(block))])

    def clone(self) -> Self:
        return copy.deepcopy(self)

    def state_dict(self) -> StateDict:
        if not self._built:
            return {"built": False}
        return {"built": True, **{k: copy.copy(getattr(self, "_" + k)) for k in self._state_keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state.get("built"):
            self._built = False
            return
        self._build()
        for key in self._state_keys:
            current = getattr(self, "_" + key)
            if isinstance(current, np.ndarray):
                arr = np.asarray(state[key], dtype=current.dtype)
                if arr.shape != current.shape:
                    raise ValueError(
                        f"{self.name}.{key}: shape {arr.shape} != expected {current.shape}"
                    )
                setattr(self, "_" + key, arr.copy())
            else:
                setattr(self, "_" + key, type(current)(state[key]))


def limits(values: Any, n_sensors: int, name: str) -> np.ndarray:
    """A per-sensor parameter array (None/NaN = not set), checked for length."""
    if values is None:
        return np.full(n_sensors, np.nan)
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if arr.shape != (n_sensors,):
        raise ValueError(f"{name} must have one entry per sensor ({n_sensors}), got {arr.shape}")
    return arr
