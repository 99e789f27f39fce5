"""Drift detector: level shifts and slow drifts of single sensors, against a learned band.

A sensor without configured limits still has a *normal band*: how far its level usually
strays from its baseline. This detector learns that band for each sensor and calls an
anomaly when the level leaves it by a margin, so it needs no limits and raises few false
alarms by construction (an alarm means "further from normal than anything seen in normal
running, by ``margin``").

**Levels at several time scales.** Each reading updates exponentially weighted moving
averages of the sensor with spans ``spans`` (weights ``1 / span``: span 1 is the reading
itself, span 100 averages about the last hundred). A big step shows at once in the short
spans; a small lasting shift or a slow drift only in the long ones, once averaging has
taken the noise out (span 2 keeps a large one-reading excursion in alarm for the reading
after it too). Each level's *deviation* is its distance from the **baseline**, a
slow moving average of the readings (weight ``adapt_rate``) that follows legitimate change
(seasons, wear-in) but not a shift of a few hundred readings.

**Against the same time a season ago.** Many sensors follow a daily cycle (load, shifts,
ambient temperature), and a change *within* the cycle's range (a flat day, a missing
peak, a jump at the wrong hour) never leaves the band of the slow baseline. So each
span's level is also compared with its own level one season (``season_s``, a day by
default) earlier, with a band of its own learned the same way (its *seasonal rows*). The
detector keeps the levels of the last season at ``season_bins`` points (one per
``season_s / season_bins`` seconds, the level at the first reading in each), so its memory
does not grow with the scan rate. While a sensor is in alarm it remembers what was normal a
season ago instead of the faulty level, so that a fault does not come back as "normal" a
season later; a change accepted as the new normal (below) clears the sensor's seasonal
memory. The seasonal rows score only once a sensor has had ``warmup`` readings with a level
a season earlier; for a sensor without a cycle their band is simply wide, and
``season_s=None`` leaves them out.

**The band.** For every span and each side (above, below the baseline) the band is the
largest deviation seen while the sensor was normal. During the warm-up it takes in every
deviation at once; afterwards it widens by at most ``widen_rate`` of itself per reading,
so a drift, which grows faster than that, stands out instead of being taken in, while
slowly growing normal variation still is. It forgets very slowly (it shrinks by
``1 / memory`` per reading), so a sensor that became quieter tightens its band again. The
score of a span is ``r / (1 + r)`` with ``r = |deviation| / (margin * band)``: 0.5
exactly at ``margin`` times the band; the sensor's score is its largest span score.

**Learning, alarms and acceptance.**

* The first ``warmup`` readings of a sensor only learn (baseline and band); its score is
  0 until then.
* While a sensor is in alarm its baseline and band stand still: a fault is not learned
  away while it lasts.
* An alarm that ends by itself (the sensor came back) widens the band to the excursion it
  saw, so a harmless pattern that recurs (a daily peak, a periodic purge) is reported
  once, not every time; a *larger* excursion still is.
* A change that lasts ``accept_after`` readings in alarm is accepted as the new normal
  (a repair, a new set point): the baseline jumps to the longest span's level and the
  alarm ends. A fault that keeps developing is already beyond the accepted level, so it
  stays in alarm (or alarms again): it is never silently learned away.

Per scan the work is a fixed handful of numpy operations on ``(rows, sensors)`` arrays
(two rows per span with the seasonal rows); the seasonal memory holds ``season_bins`` levels
per span and sensor.
Inputs may have any scale (raw readings or z-scores against an operating regime): the band
is learned in the sensor's own units. A sensor constant through its warm-up has an empty
band, so its first change is an alarm (relative to ``1e-9`` of its level).

>>> import numpy as np
>>> det = DriftDetector(n_sensors=1, warmup=50)
>>> rng = np.random.default_rng(0)
>>> for i in range(400):
...     det.learn_one(Scan.from_values([20.0 + rng.normal()], now_s=float(i)))
>>> det.score_one(Scan.from_values([20.5], now_s=400.0)) < 0.5
True
>>> scores = [float(det.process_one(Scan.from_values([23.0 + rng.normal()], 401.0 + i))[0])
...           for i in range(30)]  # the level rose by three standard deviations
>>> min(i for i, s in enumerate(scores) if s >= 0.5) < 15
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from schemas.anomaly import AnomalyType
from twins.detectors.base import ALARM, Scan, SensorDetector

_TINY = 1e-12
_SIDES = np.array([1.0, -1.0])[:, None, None]  # deviation above, below the baseline


class DriftDetector(SensorDetector):
    """Level shifts and drifts of each sensor against its learned normal band (see the
    module docstring)."""

    name = "drift"
    anomaly_type = AnomalyType.STATISTICAL
    _state_keys: ClassVar[tuple[str, ...]] = (
        "seen",
        "baseline",
        "level",
        "band",
        "limit",
        "peak",
        "alarm",
        "held",
        "history",
        "stamp",
        "bin",
        "lag",
        "lag_seen",
    )

    def __init__(
        self,
        n_sensors: int,
        margin: float = 1.5,
        spans: Sequence[float] = (1.0, 2.0, 3.0, 10.0, 30.0, 100.0),
        adapt_rate: float = 0.002,
        memory: float = 50_000.0,
        warmup: int = 600,
        accept_after: int = 300,
        widen_rate: float = 0.003,
        season_s: float | None = 86_400.0,
        season_bins: int = 288,
    ) -> None:
        super().__init__(n_sensors)
        if not margin > 1:
            raise ValueError(f"margin must be above 1, got {margin}")
        span = np.asarray(spans, dtype=np.float64)
        if span.ndim != 1 or span.size == 0 or not (span >= 1).all():
            raise ValueError(f"spans must be a non-empty list of numbers >= 1, got {spans!r}")
        if not 0 < adapt_rate < 1:
            raise ValueError(f"adapt_rate must be in (0, 1), got {adapt_rate}")
        if not memory > 1:
            raise ValueError(f"memory must be above 1 reading, got {memory}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2 readings, got {warmup}")
        if accept_after < 1:
            raise ValueError(f"accept_after must be at least 1 reading, got {accept_after}")
        if not 0 < widen_rate < 1:
            raise ValueError(f"widen_rate must be in (0, 1), got {widen_rate}")
        if season_s is not None and not season_s > 0:
            raise ValueError(f"season_s must be positive (or None), got {season_s}")
        if season_bins < 2:
            raise ValueError(f"season_bins must be at least 2, got {season_bins}")
        self.season_s = None if season_s is None else float(season_s)
        self.season_bins = int(season_bins)
        self._bin_s = None if season_s is None else float(season_s) / self.season_bins
        self.margin = float(margin)
        self.spans = tuple(float(s) for s in span)
        self.adapt_rate = float(adapt_rate)
        self.memory = float(memory)
        self.warmup = int(warmup)
        self.accept_after = int(accept_after)
        self.widen_rate = float(widen_rate)
        self._weight = (1.0 / span)[:, None]  # (spans, 1)
        self._slowest = int(np.argmax(span))
        self._keep = 1.0 - 1.0 / self.memory
        self._wider = 1.0 + self.widen_rate
        self._settled = int(np.ceil(1.0 / self.adapt_rate))  # readings until rate is fixed
        self._rows = 2 * span.size if self.season_s is not None else span.size

    def _build(self) -> None:
        k, s, r = len(self.spans), self.n_sensors, self._rows
        self._seen = np.zeros(s, dtype=np.int64)
        self._baseline = np.full(s, np.nan)  # NaN until the sensor's first reading
        self._level = np.full((k, s), np.nan)
        # Per side (0: above the reference, 1: below), row (each span against the baseline,
        # then each span against its level one season ago) and sensor: the band, the
        # deviation that alarms (margin * band), and the largest deviation of the alarm.
        self._band = np.zeros((2, r, s))
        self._limit = np.full((2, r, s), _TINY)
        self._peak = np.zeros((2, r, s))
        # The seasonal memory: the levels at the start of each bin of the last season, the
        # bin number each slot holds (-1: none), the current bin and the levels one season
        # before it (NaN: unknown), and the readings that had a level a season ago.
        bins = self.season_bins if self.season_s is not None else 0
        self._history = np.full((bins, k, s), np.nan)
        self._stamp = np.full((bins, s), -1, dtype=np.int64)
        self._bin = np.full(1, -1, dtype=np.int64)
        self._lag = np.full((k, s), np.nan)
        self._lag_seen = np.zeros(s, dtype=np.int64)
        self._alarm = np.zeros(s, dtype=bool)
        self._held = np.zeros(s, dtype=np.int64)  # readings the current alarm has lasted
        super()._build()

    def _lagged(self, now_s: float) -> tuple[int, np.ndarray]:
        """The bin of ``now_s`` and each span's level one season before it (NaN: unknown)."""
        assert self._bin_s is not None
        b = int(np.floor(now_s / self._bin_s))
        if b == int(self._bin[0]):
            return b, self._lag
        slot = b % self.season_bins
        known = self._stamp[slot] == b - self.season_bins
        return b, np.where(known, self._history[slot], np.nan)

    def _deviation(self, level: np.ndarray, baseline: np.ndarray, lag: np.ndarray | None):
        """Deviation of every row, per side: ``(2, rows, sensors)``."""
        if lag is None:
            return (level - baseline) * _SIDES
        seasonal = np.where(np.isnan(lag), 0.0, level - lag)
        return np.concatenate((level - baseline, seasonal))[None] * _SIDES

    def _score(self, scan: Scan) -> np.ndarray:
        level = self._level + self._weight * (scan.values - self._level)
        lag = None if self._bin_s is None else self._lagged(scan.now_s)[1]
        ratio = self._deviation(level, self._baseline, lag) / self._limit
        if lag is not None:
            k = len(self.spans)
            ratio[:, k:] = np.where(self._lag_seen >= self.warmup, ratio[:, k:], 0.0)
        ratio = ratio.max(axis=(0, 1))
        score = ratio / (1.0 + ratio)
        return np.where(self._seen >= self.warmup, np.fmax(score, 0.0), 0.0)  # NaN -> 0

    def _learn(self, scan: Scan, scores: np.ndarray | None) -> None:
        p = scan.present
        if not p.any():
            return
        if scores is None:
            scores = self._score(scan)
        x = scan.values
        everyone = bool(p.all())
        youngest = int(self._seen.min())
        if youngest == 0:  # first readings start the baseline and levels
            start = p & (self._seen == 0)
            self._baseline = np.where(start, x, self._baseline)
            self._level = np.where(start, x, self._level)
        level = self._level + self._weight * (x - self._level)
        if not everyone:
            x = np.where(p, x, self._baseline)
            level = np.where(p, level, self._level)
        seen = self._seen + p
        alarm = scores >= ALARM  # an absent reading scores 0
        quiet = everyone and not alarm.any()
        calm = p if quiet else p & ~alarm
        if youngest < self._settled:
            rate = np.maximum(1.0 / np.maximum(seen, 1), self.adapt_rate)
        else:
            rate = self.adapt_rate
        moved = self._baseline + rate * (x - self._baseline)
        baseline = moved if quiet else np.where(calm, moved, self._baseline)
        lag = None
        if self._bin_s is not None:
            b, lag = self._lagged(scan.now_s)
            lag_seen = self._lag_seen + (p & ~np.isnan(lag[0]))
        deviation = self._deviation(level, baseline, lag)
        # The band takes in what it sees: at once while warming up, afterwards widening by
        # at most widen_rate per reading (a drift grows faster than that and shows).
        taken = np.minimum(deviation, self._band * self._wider)
        if youngest < self.warmup:
            taken[:, : len(self.spans)] = np.where(
                seen > self.warmup, taken[:, : len(self.spans)], deviation[:, : len(self.spans)]
            )
        if lag is not None and int(self._lag_seen.min()) < self.warmup:
            k = len(self.spans)
            taken[:, k:] = np.where(lag_seen > self.warmup, taken[:, k:], deviation[:, k:])
        band = np.maximum(self._band * self._keep, taken)
        if not quiet:
            band = np.where(calm, band, self._band)
        if alarm.any() or self._alarm.any():
            # An alarm that ended by itself: the excursion it saw becomes part of the band.
            band = np.where(calm & self._alarm, np.maximum(band, self._peak), band)
            peak = np.where(alarm, np.maximum(self._peak, deviation), 0.0)
            # A change that has lasted accept_after readings is the new normal.
            held = np.where(alarm, self._held + 1, 0)
            accept = held >= self.accept_after
            if accept.any():
                baseline = np.where(accept, level[self._slowest], baseline)
                peak = np.where(accept, 0.0, peak)
                held = np.where(accept, 0, held)
                alarm = alarm & ~accept
                if lag is not None:  # the last season no longer says what is normal
                    self._stamp[:, accept] = -1
                    lag = np.where(accept, np.nan, lag)
                    lag_seen = np.where(accept, 0, lag_seen)
            self._peak, self._held, self._alarm = peak, held, alarm
        if lag is not None:
            if b != int(self._bin[0]):
                # Entering a bin: remember the level for a season on (while in alarm, what
                # was normal a season ago instead, so a fault does not come back as normal).
                slot = b % self.season_bins
                keep = np.where(self._alarm & ~np.isnan(lag), lag, level)
                self._history[slot] = np.where(p, keep, self._history[slot])
                self._stamp[slot] = np.where(p, b, self._stamp[slot])
                self._bin[0] = b
                self._lag = lag
            self._lag_seen = lag_seen
        floor = 1e-9 * np.abs(baseline) + _TINY  # a constant sensor: any change alarms
        self._limit = self.margin * np.maximum(band, floor)
        self._band, self._baseline, self._level, self._seen = band, baseline, level, seen

    def expected(self, scan: Scan) -> np.ndarray:
        return self._baseline.copy() if self._built else super().expected(scan)
