"""Partial aggregates per sensor and time bucket that merge exactly.

A bucket keeps ``count`` (values of good or uncertain quality), their ``mean`` and ``m2``
(sum of squared deviations from the mean), ``min`` and ``max``, and how many values were
uncertain or bad. Two partials of one bucket merge without the values (Chan, Golub and
LeVeque): ``n = na + nb``, ``mean = ma + (mb - ma) nb / n``, ``m2 = m2a + m2b + (mb - ma)^2
na nb / n``; the same formula is written in SQL where the writer upserts a partial.
Population standard deviation is ``sqrt(m2 / count)``.

>>> p = partials(np.array([1, 1, 1, 2], np.int32), np.array([0, 1_000, 61_000, 0]),
...              np.array([1.0, 3.0, 5.0, 7.0], np.float32), np.array([0, 0, 0, 2], np.int8),
...              60_000)
>>> p.sensor.tolist(), p.bucket_ms.tolist(), p.count.tolist(), p.mean.tolist()[:3]
([1, 1, 2], [0, 60000, 0], [2, 1, 0], [2.0, 5.0, nan])
>>> p.m2.tolist()[:2], p.n_bad.tolist()
([2.0, 0.0], [0, 0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BAD = 2
UNCERTAIN = 1


@dataclass(frozen=True)
class Partials:
    sensor: np.ndarray  # int32
    bucket_ms: np.ndarray  # int64, bucket start (Unix ms)
    count: np.ndarray  # int32
    mean: np.ndarray  # float64, NaN when count == 0
    m2: np.ndarray  # float64, NaN when count == 0
    vmin: np.ndarray  # float32, NaN when count == 0
    vmax: np.ndarray  # float32
    n_uncertain: np.ndarray  # int32
    n_bad: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.sensor)


def partials(
    sensor: np.ndarray, ts_ms: np.ndarray, value: np.ndarray, quality: np.ndarray, bucket_ms: int
) -> Partials:
    """Aggregate readings sorted by (sensor, time) into per-(sensor, bucket) partials.

    Values are taken as stored (float32), so the partials equal what a query over the
    stored raw rows would compute."""
    bucket = ts_ms // bucket_ms * bucket_ms
    n = len(sensor)
    if n == 0:
        empty = np.empty(0)
        return Partials(
            *(empty.astype(t) for t in ("i4", "i8", "i4", "f8", "f8", "f4", "f4", "i4", "i4"))
        )
    change = np.empty(n, dtype=bool)
    change[0] = True
    change[1:] = (sensor[1:] != sensor[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(change)
    group = np.cumsum(change) - 1
    groups = len(starts)
    ok = quality < BAD
    x = value.astype(np.float64)
    count = np.bincount(group, weights=ok, minlength=groups)
    total = np.bincount(group, weights=np.where(ok, x, 0.0), minlength=groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    dev = np.where(ok, x - mean[group], 0.0)
    m2 = np.bincount(group, weights=dev * dev, minlength=groups)
    m2[count == 0] = np.nan
    lo = np.minimum.reduceat(np.where(ok, value, np.inf).astype(np.float32), starts)
    hi = np.maximum.reduceat(np.where(ok, value, -np.inf).astype(np.float32), starts)
    lo[count == 0] = np.nan
    hi[count == 0] = np.nan
    return Partials(
        sensor=sensor[starts].astype(np.int32),
        bucket_ms=bucket[starts].astype(np.int64),
        count=count.astype(np.int32),
        mean=mean,
        m2=m2,
        vmin=lo,
        vmax=hi,
        n_uncertain=np.bincount(group, weights=quality == UNCERTAIN, minlength=groups).astype(
            np.int32
        ),
        n_bad=np.bincount(group, weights=quality >= BAD, minlength=groups).astype(np.int32),
    )
