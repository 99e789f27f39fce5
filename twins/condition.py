"""Operating regimes of a running machine, learned online, and when it has settled in one.

A machine that runs at several operating points (a pump's flow set-point, a motor's
load, an engine's altitude and throttle) reads differently at each: before a reading can
say anything about wear it must be compared with what is normal *at that operating
point*. The plant file names the sensors (or set-points) that define the operating point
(:class:`~schemas.plant.OperatingConditionSpec`); this module turns their values into a
*regime*:

* regime ``0`` is **idle** (the machine stands still);
* regimes ``1..max_regimes`` are operating points found as the machine runs: a reading
  joins the nearest known regime whose centre is within half a ``width`` of it (in units
  of each condition sensor's scale, the largest difference over the sensors counting), or
  founds a new one while there is room (else it joins the nearest). A regime's centre is
  the running mean of the readings it took. To keep a condition that wavers on the border
  of two regimes from flapping between them, the machine stays in its current regime
  while it is within ``hysteresis`` half-widths of its centre;
* given a type's regimes fitted on training data (:class:`~twins.regimes.OperatingRegimes`),
  those are used instead of learning (regime ``k + 1`` is the fitted cluster ``k``).

After every change of regime (a start-up is a change from idle) the machine is
**settling** for ``settle_s`` seconds: temperatures lag a load step, so readings are
transient and the learned detectors neither judge nor learn them (rules still do).

Regime *centres* drift with the readings they take, so slow drift of the condition
sensors within a regime does not found new regimes; a condition far from every known
regime when all ``max_regimes`` are taken joins the nearest one.

>>> import numpy as np
>>> cond = OperatingCondition([0], scale=[100.0], width=0.1, settle_s=600.0)
>>> cond.update(np.array([85.0, 3.1]), now_s=0.0, running=True)
(1, False)
>>> cond.update(np.array([86.0, 3.0]), now_s=900.0, running=True)  # same regime, settled
(1, True)
>>> cond.update(np.array([55.0, 2.4]), now_s=1200.0, running=True)  # a load step
(2, False)
>>> cond.update(np.array([0.0, 0.0]), now_s=1300.0, running=False)  # stopped
(0, False)
>>> cond.update(np.array([84.0, 3.1]), now_s=1400.0, running=True)  # start-up
(1, False)
>>> cond.n_regimes
2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from twins.regimes import OperatingRegimes
from twins.snapshot import StateDict

IDLE = 0
"""The regime of a machine that stands still."""

_CENTRE_MEMORY = 1000
"""A regime's centre is the mean of its readings, weighted as if it had seen at most this
many (so it keeps following a condition that drifts slowly)."""


class OperatingCondition:
    """Which operating regime a machine is in, and whether it has settled there.

    Parameters
    ----------
    condition: column indices (in the machine's sensor order) of the condition sensors;
        empty: the machine has one running regime (it is either idle or running).
    scale: per condition sensor, the unit in which ``width`` is measured (its rated value
        or normal range); None or NaN: the magnitude of its first running reading.
    width: regime width in units of ``scale``.
    settle_s: seconds after a regime change during which readings are transient.
    max_regimes: the most running regimes learned.
    hysteresis: the machine stays in its regime while within this many half-widths of it.
    regimes: a type's fitted regimes (used instead of learning them).
    """

    def __init__(
        self,
        condition: Sequence[int],
        scale: Sequence[float | None] | None = None,
        *,
        width: float = 0.1,
        settle_s: float = 5400.0,
        max_regimes: int = 8,
        hysteresis: float = 1.5,
        regimes: OperatingRegimes | None = None,
    ) -> None:
        cond = np.asarray(condition, dtype=np.int64).reshape(-1)
        if (cond < 0).any():
            raise ValueError(f"condition must be column indices, got {condition!r}")
        if len(set(cond.tolist())) != cond.size:
            raise ValueError(f"condition must not repeat a column, got {condition!r}")
        sc = np.full(cond.size, np.nan) if scale is None else _floats(scale)
        if sc.shape != cond.shape:
            raise ValueError(f"scale must have one entry per condition sensor ({cond.size})")
        if np.any(sc <= 0):
            raise ValueError("scale must be positive where given")
        if not (math.isfinite(width) and 0 < width <= 1):
            raise ValueError(f"width must be in (0, 1], got {width}")
        if not (math.isfinite(settle_s) and settle_s >= 0):
            raise ValueError(f"settle_s must be >= 0, got {settle_s}")
        if max_regimes < 1:
            raise ValueError(f"max_regimes must be at least 1, got {max_regimes}")
        if not (math.isfinite(hysteresis) and hysteresis >= 1):
            raise ValueError(f"hysteresis must be at least 1, got {hysteresis}")
        if regimes is not None and (cond.size == 0 or regimes.centres_.shape[1] != cond.size):
            raise ValueError(
                f"regimes were fitted on {regimes.centres_.shape[1]} settings, "
                f"the condition has {cond.size} sensors"
            )
        self.condition = cond
        self.width = float(width)
        self.settle_s = float(settle_s)
        self.max_regimes = int(
            regimes.n_regimes_ if regimes is not None else (max_regimes if cond.size else 1)
        )
        self.hysteresis = float(hysteresis)
        self.regimes = regimes
        self._scale = sc
        self._centres = np.full((self.max_regimes, cond.size), np.nan)
        self._counts = np.zeros(self.max_regimes)
        self._regime = -1  # none yet
        self._last_running = -1
        self._since_s = math.nan

    # -- the protocol --------------------------------------------------------------------
    def update(self, state: np.ndarray, now_s: float, running: bool) -> tuple[int, bool]:
        """The regime of a machine whose latest sensor values are ``state`` at ``now_s``,
        and whether it has been in that regime for ``settle_s`` (then readings are
        steady)."""
        regime = IDLE if not running else self._running_regime(state[self.condition])
        if regime != self._regime:
            self._regime = regime
            self._since_s = now_s
        if regime > IDLE:
            self._last_running = regime
        if regime < 0:
            return regime, False
        return regime, regime != IDLE and now_s - self._since_s >= self.settle_s

    @property
    def regime(self) -> int:
        """The current regime (-1 before the condition sensors were first read)."""
        return self._regime

    @property
    def last_running(self) -> int:
        """The running regime the machine is in or was last in (-1: it never ran)."""
        return self._last_running

    @property
    def n_regimes(self) -> int:
        """Running regimes known so far."""
        return int((self._counts > 0).sum()) if self.regimes is None else self.max_regimes

    def centres(self) -> np.ndarray:
        """The known regimes' centres, (n_regimes, condition sensors), regime 1 first."""
        if self.regimes is not None:
            r = self.regimes
            return np.asarray(r.centres_ * r.settings_scale_ + r.settings_centre_)
        return self._centres[self._counts > 0].copy()

    # -- learning ------------------------------------------------------------------------
    def _running_regime(self, c: np.ndarray) -> int:
        if c.size == 0:
            return 1
        if np.isnan(c).any():
            return self._regime if self._regime > IDLE else -1
        if self.regimes is not None:
            return int(self.regimes.regime(c[None, :])[0]) + 1
        scale = self._scale
        if np.isnan(scale).any():  # first sight: the magnitude is the unit
            scale = np.where(np.isnan(scale), np.maximum(np.abs(c), 1e-9), scale)
            self._scale = scale
        used = self._counts > 0
        half = 0.5 * self.width
        if used.any():
            dist = np.max(np.abs(self._centres - c) / scale, axis=1)
            dist = np.where(used, dist, np.inf)
            current = self._regime - 1
            if current >= 0 and dist[current] <= self.hysteresis * half:
                k = current
            else:
                k = int(np.argmin(dist))
                if dist[k] > half and not used.all():
                    k = int(np.argmin(used))  # the first free slot
        else:
            k = 0
        n = min(self._counts[k] + 1, _CENTRE_MEMORY)
        centre = self._centres[k]
        self._centres[k] = np.where(np.isnan(centre), c, centre + (c - centre) / n)
        self._counts[k] = n
        return k + 1

    # -- snapshots -----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        return {
            "scale": self._scale,
            "centres": self._centres,
            "counts": self._counts,
            "regime": self._regime,
            "last_running": self._last_running,
            "since_s": np.array([self._since_s]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        centres = np.asarray(state["centres"], dtype=np.float64)
        if centres.shape != self._centres.shape:
            raise ValueError(f"centres: shape {centres.shape} != {self._centres.shape}")
        self._scale = np.asarray(state["scale"], dtype=np.float64).copy()
        self._centres = centres.copy()
        self._counts = np.asarray(state["counts"], dtype=np.float64).copy()
        self._regime = int(state["regime"])
        self._last_running = int(state["last_running"])
        self._since_s = float(np.asarray(state["since_s"], dtype=np.float64).reshape(-1)[0])


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
