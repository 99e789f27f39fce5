"""Many simulated futures of one machine: failure probability over time, wear spread,
times to failure and which modes cause them.

:class:`Projection` is what :meth:`DegradationModel.project
<twins.simulator.degradation.DegradationModel.project>` returns; :func:`simulate_paths` is
the vectorised Monte-Carlo loop behind it (all paths advance together, one step at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.common import FailureMode
from twins.simulator._checks import failure_mode
from twins.simulator._random import FloatArray


@dataclass(frozen=True, slots=True)
class Projection:
    """Many simulated futures of one machine, summarised (arrays indexed by step).

    ``hours[k]`` is the time of step ``k`` after the start (``hours[0] = 0``);
    ``failure_probability[k]`` the share of paths failed by then (non-decreasing);
    ``mean_wear[k, j]`` and ``wear_quantiles[q, k, j]`` the wear of ``modes[j]`` across
    paths (capped at 1); ``time_to_failure_hours[p]`` when path ``p`` failed (``inf`` if it
    survived the horizon) and ``failure_mode_index[p]`` which mode (``-1`` if none);
    ``failure_mode_share[j]`` the share of failures caused by ``modes[j]``.

    >>> from twins.simulator import DegradationModel, DegradationState
    >>> model = DegradationModel("conveyor", mtbf_hours=2000)
    >>> state = DegradationState({"bearing_wear": 0.8, "misalignment": 0.1})
    >>> p = model.project(state, horizon_hours=720, n_paths=200, rng=1)
    >>> p.hours[:3].tolist(), p.failure_probability[0].item()
    ([0.0, 1.0, 2.0], 0.0)
    >>> p.probability_by(720) > 0.9, p.share("bearing_wear") > 0.9
    (True, True)
    >>> sorted(p.summary())
    ['failure_mode_share', 'failure_probability', 'horizon_hours', 'mean_wear_at_horizon',
     'median_time_to_failure_hours', 'n_paths']
    """

    modes: tuple[FailureMode, ...]
    hours: FloatArray
    failure_probability: FloatArray
    mean_wear: FloatArray
    quantiles: tuple[float, ...]
    wear_quantiles: FloatArray
    time_to_failure_hours: FloatArray
    failure_mode_index: npt.NDArray[np.int64]
    failure_mode_share: FloatArray

    @property
    def n_paths(self) -> int:
        return int(self.time_to_failure_hours.shape[0])

    @property
    def survival(self) -> FloatArray:
        """Probability of still running at each step time."""
        return 1.0 - self.failure_probability

    def probability_by(self, hours: float) -> float:
        """Share of paths failed within ``hours`` of the start."""
        return float(np.mean(self.time_to_failure_hours <= hours))

    def median_time_to_failure(self) -> float:
        """Median time to failure over the paths (``inf`` when fewer than half failed)."""
        return float(np.median(self.time_to_failure_hours))

    def summary(self) -> dict[str, object]:
        """The projection in a few numbers (for programs; plain Python values)."""
        return {
            "horizon_hours": float(self.hours[-1]),
            "n_paths": self.n_paths,
            "failure_probability": float(self.failure_probability[-1]),
            "median_time_to_failure_hours": self.median_time_to_failure(),
            "failure_mode_share": {
                m.value: float(x) for m, x in zip(self.modes, self.failure_mode_share, strict=True)
            },
            "mean_wear_at_horizon": {
                m.value: float(x) for m, x in zip(self.modes, self.mean_wear[-1], strict=True)
            },
        }

    def share(self, mode: FailureMode | str) -> float:
        """Share of the failures caused by ``mode`` (0 when no path failed)."""
        m = failure_mode(mode, "mode")
        if m not in self.modes:
            return 0.0
        return float(self.failure_mode_share[self.modes.index(m)])


def first_crossing(
    previous: FloatArray, current: FloatArray
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], FloatArray]:
    """Which rows of a (paths x modes) wear array crossed 1 between two steps.

    Returns ``(crossed, mode_index, fraction)``: the mode that crossed first (by linear
    interpolation within the step) and the fraction of the step at which it did.
    """
    over = current >= 1.0
    crossed: npt.NDArray[np.bool_] = np.asarray(over.any(axis=1), dtype=bool)
    fraction: FloatArray = np.full(current.shape, np.inf)
    if crossed.any():
        # where a mode is over 1 its increment is at least 1 - previous (or it was over already)
        increment = current[over] - previous[over]
        safe = np.where(increment > 0.0, increment, 1.0)
        fraction[over] = np.clip((1.0 - previous[over]) / safe, 0.0, 1.0)
    mode_index = np.argmin(fraction, axis=1).astype(np.int64)
    at = fraction[np.arange(fraction.shape[0]), mode_index]
    when: FloatArray = np.where(crossed, at, np.inf)
    return crossed, mode_index, when


def gamma_step(
    wear: FloatArray,
    growth: FloatArray,
    alive: npt.NDArray[np.bool_],
    acceleration: float,
    dispersion: float,
    rng: np.random.Generator,
) -> tuple[FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.int64], FloatArray]:
    """One gamma-process step of a (paths x modes) wear array: shape
    ``growth * exp(acceleration * wear)`` (0 on paths no longer alive), scale
    ``dispersion``. Returns the new wear and :func:`first_crossing` of living paths."""
    shape = growth * np.exp(acceleration * np.minimum(wear, 1.0))
    shape[~alive] = 0.0
    new: FloatArray = wear + rng.gamma(shape, dispersion)
    crossed, mode_index, fraction = first_crossing(wear, new)
    return new, crossed & alive, mode_index, fraction


@dataclass(frozen=True, slots=True)
class PlannedReset:
    """A maintenance action resolved to wear columns (input of :func:`simulate_paths`)."""

    at_hours: float
    columns: tuple[int, ...]
    restore_to: float


def simulate_paths(
    *,
    modes: tuple[FailureMode, ...],
    start: FloatArray,
    hours: FloatArray,
    growth: FloatArray,
    wear_acceleration: float,
    dispersion: float,
    n_paths: int,
    rng: np.random.Generator,
    resets: Sequence[PlannedReset] = (),
    failed_mode_index: int | None = None,
    quantiles: tuple[float, ...] = (0.05, 0.5, 0.95),
) -> Projection:
    """The Monte-Carlo loop behind :meth:`DegradationModel.project
    <twins.simulator.degradation.DegradationModel.project>`.

    ``start`` is the wear per mode at ``hours[0] = 0``; ``growth[k, j]`` the gamma shape of
    mode ``j`` over step ``k`` per unit of ``exp(c·w)`` (rate, acceleration and step length
    folded in). Planned resets apply to running paths at the first step at or after their
    time. ``failed_mode_index`` marks a machine that is already down (every path failed at 0).
    """
    n_steps, n_modes = growth.shape
    dts = np.diff(hours)
    wear = np.tile(start, (n_paths, 1))
    alive = np.ones(n_paths, dtype=bool)
    ttf = np.full(n_paths, np.inf)
    failed_index = np.full(n_paths, -1, dtype=np.int64)
    if failed_mode_index is not None:
        alive[:] = False
        ttf[:] = 0.0
        failed_index[:] = failed_mode_index

    q = np.asarray(quantiles, dtype=np.float64)
    failure_probability = np.empty(n_steps + 1)
    mean_wear = np.empty((n_steps + 1, n_modes))
    wear_quantiles = np.empty((q.size, n_steps + 1, n_modes))
    # wear of every path is kept for a chunk of steps, then reduced to quantiles
    chunk = max(1, min(n_steps + 1, 4_000_000 // (n_paths * n_modes)))
    buffer = np.empty((chunk, n_paths, n_modes), dtype=np.float32)
    filled, flushed = 0, 0

    def flush() -> None:
        nonlocal filled, flushed
        if filled:
            wear_quantiles[:, flushed : flushed + filled] = np.quantile(buffer[:filled], q, axis=1)
            flushed += filled
            filled = 0

    def record(k: int) -> None:
        nonlocal filled
        capped = np.minimum(wear, 1.0)
        failure_probability[k] = 1.0 - alive.mean()
        mean_wear[k] = capped.mean(axis=0)
        buffer[filled] = capped
        filled += 1
        if filled == chunk or k == n_steps:
            flush()

    pending = sorted(resets, key=lambda r: r.at_hours)
    c, b = wear_acceleration, dispersion
    for k in range(n_steps):
        while pending and pending[0].at_hours <= hours[k] + 1e-9:
            reset = pending.pop(0)
            for j in reset.columns:
                wear[alive, j] = np.minimum(wear[alive, j], reset.restore_to)
        record(k)
        if not alive.any():  # every path has failed: nothing changes any more
            flush()
            failure_probability[k + 1 :] = failure_probability[k]
            mean_wear[k + 1 :] = mean_wear[k]
            wear_quantiles[:, k + 1 :] = wear_quantiles[:, k : k + 1]
            break
        new, crossed, mode_index, fraction = gamma_step(wear, growth[k], alive, c, b, rng)
        if crossed.any():
            ttf[crossed] = hours[k] + fraction[crossed] * dts[k]
            failed_index[crossed] = mode_index[crossed]
            alive &= ~crossed
        wear = new
    else:
        record(n_steps)

    n_failed = int((failed_index >= 0).sum())
    counts = np.bincount(failed_index[failed_index >= 0], minlength=n_modes).astype(float)
    share = counts / n_failed if n_failed else np.zeros(n_modes)
    return Projection(
        modes=modes,
        hours=hours,
        failure_probability=failure_probability,
        mean_wear=mean_wear,
        quantiles=tuple(float(x) for x in q),
        wear_quantiles=wear_quantiles,
        time_to_failure_hours=ttf,
        failure_mode_index=failed_index,
        failure_mode_share=share,
    )
