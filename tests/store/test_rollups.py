"""Rollup partials per sensor and minute (pure, no servers): hand-computed buckets, the
quality rules, and the law the writer's SQL upsert relies on: partials of any split of the
readings, merged in any order with Chan's formula, equal the aggregate of all of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.rollups import Partials, partials

MINUTE = 60_000
T0 = 1_764_400_020_000  # a minute boundary (2025-11-29T07:07:00Z)


def columns(
    readings: Sequence[tuple[int, int, float, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(sensor, ts_ms, value, quality)`` tuples as the writer's columns, in the order
    given (callers sort them by sensor and time)."""
    sensor = np.array([r[0] for r in readings], np.int32)
    ts = np.array([r[1] for r in readings], np.int64)
    value = np.array([r[2] for r in readings], np.float32)
    quality = np.array([r[3] for r in readings], np.int8)
    return sensor, ts, value, quality


def roll(readings: Sequence[tuple[int, int, float, int]], bucket_ms: int = MINUTE) -> Partials:
    return partials(*columns(sorted(readings, key=lambda r: (r[0], r[1]))), bucket_ms)


@dataclass(frozen=True)
class Bucket:
    """One (sensor, bucket) aggregate as plain Python values."""

    count: int
    mean: float
    m2: float
    vmin: float
    vmax: float
    n_uncertain: int
    n_bad: int


def buckets(p: Partials) -> dict[tuple[int, int], Bucket]:
    out = {}
    for i in range(len(p)):
        key = (int(p.sensor[i]), int(p.bucket_ms[i]))
        assert key not in out, f"two partials for {key}"
        out[key] = Bucket(
            int(p.count[i]),
            float(p.mean[i]),
            float(p.m2[i]),
            float(p.vmin[i]),
            float(p.vmax[i]),
            int(p.n_uncertain[i]),
            int(p.n_bad[i]),
        )
    return out


def reference(
    readings: Sequence[tuple[int, int, float, int]], bucket_ms: int = MINUTE
) -> dict[tuple[int, int], Bucket]:
    """The definition, one bucket at a time in plain Python over float32 values."""
    groups: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for s, t, v, q in readings:
        groups.setdefault((s, t // bucket_ms * bucket_ms), []).append((float(np.float32(v)), q))
    out = {}
    for key, rows in groups.items():
        good = [v for v, q in rows if q < 2]
        n = len(good)
        mean = math.fsum(good) / n if n else math.nan
        m2 = math.fsum((v - mean) ** 2 for v in good) if n else math.nan
        out[key] = Bucket(
            n,
            mean,
            m2,
            min(good) if n else math.nan,
            max(good) if n else math.nan,
            sum(q == 1 for _, q in rows),
            sum(q >= 2 for _, q in rows),
        )
    return out


def merge(a: Bucket, b: Bucket) -> Bucket:
    """Chan, Golub and LeVeque, as the writer's ``RAW_MERGE`` upsert writes it (an empty
    side keeps the other's mean and m2; LEAST/GREATEST ignore NULL)."""
    n = a.count + b.count
    if b.count == 0:
        mean, m2 = a.mean, a.m2
    elif a.count == 0:
        mean, m2 = b.mean, b.m2
    else:
        delta = b.mean - a.mean
        mean = a.mean + delta * b.count / n
        m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / n
    return Bucket(
        n,
        mean,
        m2,
        float(np.fmin(a.vmin, b.vmin)),
        float(np.fmax(a.vmax, b.vmax)),
        a.n_uncertain + b.n_uncertain,
        a.n_bad + b.n_bad,
    )


def assert_same(got: dict[tuple[int, int], Bucket], want: dict[tuple[int, int], Bucket]) -> None:
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        # Exact: counts, extremes (float32 values, no arithmetic).
        assert (g.count, g.n_uncertain, g.n_bad) == (w.count, w.n_uncertain, w.n_bad), key
        assert g.vmin == w.vmin or (math.isnan(g.vmin) and math.isnan(w.vmin)), key
        assert g.vmax == w.vmax or (math.isnan(g.vmax) and math.isnan(w.vmax)), key
        if w.count == 0:
            assert math.isnan(g.mean) and math.isnan(g.m2), key
            continue
        scale = max(abs(w.vmin), abs(w.vmax), 1.0)
        assert g.mean == pytest.approx(w.mean, rel=1e-9, abs=1e-9 * scale), key
        assert g.m2 == pytest.approx(w.m2, rel=1e-7, abs=1e-9 * scale * scale * w.count), key


# -- hand-computed cases ---------------------------------------------------------------------


def test_no_readings_give_no_partials_with_the_stored_types() -> None:
    p = partials(
        np.empty(0, np.int32),
        np.empty(0, np.int64),
        np.empty(0, np.float32),
        np.empty(0, np.int8),
        MINUTE,
    )
    assert len(p) == 0
    dtypes = [a.dtype for a in (p.sensor, p.bucket_ms, p.count, p.mean, p.m2, p.vmin, p.vmax)]
    assert dtypes == [np.int32, np.int64, np.int32, np.float64, np.float64, np.float32, np.float32]
    assert (p.n_uncertain.dtype, p.n_bad.dtype) == (np.int32, np.int32)


def test_one_bucket_by_hand() -> None:
    # 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations 9+1+1+1+0+0+4+16 = 32
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    p = roll([(3, T0 + 1000 * i, v, 0) for i, v in enumerate(values)])
    assert buckets(p) == {(3, T0): Bucket(8, 5.0, 32.0, 2.0, 9.0, 0, 0)}
    assert math.sqrt(p.m2[0] / p.count[0]) == 2.0  # population standard deviation


def test_buckets_start_on_the_minute_and_a_new_sensor_starts_a_new_partial() -> None:
    p = roll(
        [
            (1, T0 - 1, 10.0, 0),  # the last millisecond of the minute before
            (1, T0, 1.0, 0),  # the first of this one
            (1, T0 + MINUTE - 1, 3.0, 0),
            (1, T0 + MINUTE, 8.0, 0),
            (2, T0 + 5, 6.0, 0),
        ]
    )
    assert p.sensor.tolist() == [1, 1, 1, 2]
    assert p.bucket_ms.tolist() == [T0 - MINUTE, T0, T0 + MINUTE, T0]
    assert p.count.tolist() == [1, 2, 1, 1]
    assert p.mean.tolist() == [10.0, 2.0, 8.0, 6.0]
    assert p.m2.tolist() == [0.0, 2.0, 0.0, 0.0]


def test_other_bucket_sizes() -> None:
    hour = 3_600_000
    p = roll([(1, 0, 1.0, 0), (1, hour - 1, 2.0, 0), (1, hour, 4.0, 0)], bucket_ms=hour)
    assert p.bucket_ms.tolist() == [0, hour]
    assert p.count.tolist() == [2, 1]


def test_uncertain_values_count_bad_ones_do_not() -> None:
    p = roll([(1, T0, 1.0, 0), (1, T0 + 1, 3.0, 1), (1, T0 + 2, 1000.0, 2), (1, T0 + 3, -5.0, 2)])
    assert buckets(p) == {(1, T0): Bucket(2, 2.0, 2.0, 1.0, 3.0, 1, 2)}


def test_a_bucket_of_only_bad_values_has_no_statistics_but_counts_them() -> None:
    p = roll([(1, T0, 1.0, 2), (1, T0 + 1, 2.0, 2), (2, T0, 4.0, 0)])
    assert p.count.tolist() == [0, 1]
    assert p.n_bad.tolist() == [2, 0]
    for column in (p.mean, p.m2, p.vmin, p.vmax):
        assert math.isnan(column[0])
    assert (p.mean[1], p.vmin[1], p.vmax[1]) == (4.0, 4.0, 4.0)


def test_values_are_aggregated_as_stored_float32() -> None:
    # 0.1 is not a float32: the stored value is 0.100000001490116..., and so are the
    # statistics (what a query over the stored rows computes).
    p = roll([(1, T0, 0.1, 0), (1, T0 + 1, 0.1, 0)])
    stored = float(np.float32(0.1))
    assert stored != 0.1
    assert (p.mean[0], p.vmin[0], p.vmax[0], p.m2[0]) == (stored, stored, stored, 0.0)


def test_extremes_of_float32() -> None:
    big = float(np.finfo(np.float32).max)
    p = roll([(1, T0, big, 0), (1, T0 + 1, -big, 0)])
    assert (p.vmin[0], p.vmax[0], p.mean[0]) == (-big, big, 0.0)
    assert p.m2[0] == pytest.approx(2 * big * big)  # float64 holds what float32 cannot


def test_the_docstring_example_against_the_definition() -> None:
    readings = [(1, 0, 1.0, 0), (1, 1_000, 3.0, 0), (1, 61_000, 5.0, 0), (2, 0, 7.0, 2)]
    assert_same(buckets(roll(readings)), reference(readings))


# -- laws --------------------------------------------------------------------------------------

reading = st.tuples(
    st.integers(0, 3),  # sensor key
    st.integers(T0 - 2 * MINUTE, T0 + 3 * MINUTE),  # five minutes or so
    st.one_of(
        st.integers(-1000, 1000).map(float),
        st.floats(-1e6, 1e6, allow_nan=False, width=32),
    ),
    st.sampled_from([0, 0, 0, 1, 2]),  # mostly good
)
readings_st = st.lists(reading, min_size=1, max_size=60)


@settings(max_examples=100, deadline=None)
@given(readings_st)
def test_partials_equal_the_definition(readings: list[tuple[int, int, float, int]]) -> None:
    assert_same(buckets(roll(readings)), reference(readings))


@settings(max_examples=75, deadline=None)
@given(readings_st, st.data())
def test_partials_of_any_split_merged_in_any_order_equal_the_whole(
    readings: list[tuple[int, int, float, int]], data: st.DataObject
) -> None:
    # Split the readings into batches (as the writer's flushes do), aggregate each batch,
    # and merge the batches' partials per (sensor, bucket) in an arbitrary order.
    labels = data.draw(st.lists(st.integers(0, 4), min_size=len(readings), max_size=len(readings)))
    batches = [[r for r, b in zip(readings, labels, strict=True) if b == k] for k in range(5)]
    pieces = [
        (key, part) for batch in batches if batch for key, part in buckets(roll(batch)).items()
    ]
    pieces = data.draw(st.permutations(pieces))
    merged: dict[tuple[int, int], Bucket] = {}
    for key, part in pieces:
        merged[key] = merge(merged[key], part) if key in merged else part
    assert_same(merged, reference(readings))


@settings(max_examples=50, deadline=None)
@given(st.lists(reading.map(lambda r: (0, T0, *r[2:])), min_size=3, max_size=30), st.data())
def test_merging_is_associative_and_commutative(
    readings: list[tuple[int, int, float, int]], data: st.DataObject
) -> None:
    cut = sorted(data.draw(st.lists(st.integers(0, len(readings)), min_size=2, max_size=2)))
    thirds = [readings[: cut[0]], readings[cut[0] : cut[1]], readings[cut[1] :]]
    empty = Bucket(0, math.nan, math.nan, math.nan, math.nan, 0, 0)
    a, b, c = (buckets(roll(t)).get((0, T0), empty) if t else empty for t in thirds)
    want = reference(readings)
    for grouped in (merge(merge(a, b), c), merge(a, merge(b, c)), merge(c, merge(b, a))):
        assert_same({(0, T0): grouped}, want)


@settings(max_examples=50, deadline=None)
@given(readings_st)
def test_partials_of_unsorted_readings_still_merge_to_the_whole(
    readings: list[tuple[int, int, float, int]],
) -> None:
    # Unsorted input breaks a bucket into one partial per run; each run is still a correct
    # partial, so merging them gives the bucket (the caller is asked to sort, but nothing
    # is lost when it does not).
    p = partials(*columns(readings), MINUTE)
    merged: dict[tuple[int, int], Bucket] = {}
    for i in range(len(p)):
        one = Partials(*(getattr(p, f)[i : i + 1] for f in Partials.__dataclass_fields__))
        ((key, part),) = buckets(one).items()
        merged[key] = merge(merged[key], part) if key in merged else part
    assert_same(merged, reference(readings))
    assert int(p.count.sum() + p.n_bad.sum()) == len(readings)  # every reading counted once
