"""RollingFeatures against numpy/scipy computed from scratch on the same readings.

The running power sums are checked against direct two-pass computations on random,
irregular streams (different counts per sensor, large offsets, both update paths), on a
long stream, and on the edge cases (too few readings, a stuck sensor, equal times).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from twins.features import FEATURE_NAMES, SPECTRAL_NAMES, RollingFeatures
from twins.snapshot import pack, unpack

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=30)
EPOCH = 1.7e9  # seconds: realistic absolute times stress the time sums too


def reference(times: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """The features of one window straight from numpy/scipy (NaN per the documented rules)."""
    n = len(values)
    nan = float("nan")
    if n == 0:
        return dict.fromkeys(FEATURE_NAMES, nan)
    out = {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "rms": float(np.sqrt(np.mean(values**2))),
        "std": nan,
        "slope": nan,
        "kurtosis": nan,
    }
    if n < 2:
        return out
    # std and kurtosis do not change with a shift; subtracting the first reading is exact
    # (Sterbenz) and spares numpy/scipy their own cancellation at offsets like 1e6 ± 0.01,
    # where scipy.stats.kurtosis on the raw values is only good to ~1e-5.
    shifted = values - values[0]
    out["std"] = float(np.std(shifted, ddof=0))
    # Hours since the window's first reading: the same slope as against absolute epoch
    # hours, without the rounding of dividing 1.7e9 s by 3600 (~2e-7 s) or polyfit's poor
    # conditioning with an intercept at ~4.7e5 h.
    hours = (times - times[0]) / 3600.0
    out["slope"] = float(np.polyfit(hours - hours.mean(), values - values.mean(), 1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's near-constant warning
        out["kurtosis"] = float(stats.kurtosis(shifted, fisher=True, bias=True))
    return out


def slope_scale(times: np.ndarray, values: np.ndarray) -> float:
    """The size of slope that matters for this window: spread of values per spread of hours."""
    return float(np.std(values) / max(np.std((times - times[0]) / 3600.0), 1e-300))


def assert_window_matches(
    got: dict[str, np.ndarray],
    idx: int,
    times: np.ndarray,
    values: np.ndarray,
    where: str,
    recent: np.ndarray | None = None,
) -> None:
    """``recent``: the sensor's readings since its reference value can have been set (the
    last ``recompute_every + max(windows)``); see the kurtosis tolerance."""
    ref = reference(times, values)
    for name in FEATURE_NAMES:
        g, r = float(got[name][idx]), ref[name]
        if np.isnan(r):
            assert np.isnan(g), f"{where} {name}: expected NaN, got {g!r}"
            continue
        assert not np.isnan(g), f"{where} {name}: got NaN, expected {r!r}"
        if name in ("min", "max"):
            assert g == r, f"{where} {name}: {g!r} != {r!r}"
            continue
        if name == "slope":
            tol = 1e-7 * (abs(r) + slope_scale(times, values))
        elif name == "std":
            tol = 1e-7 * r + 1e-9
        elif name == "kurtosis":
            # Relative to m4 / m2² (= kurtosis + 3), as the excess can be 0. Fourth powers
            # about a reference reading that may lie outside the window lose ~eps * cond⁴,
            # cond = (range of recent readings) / (window std): that much is inherent to
            # running power sums (a tight pair of readings in a short window, say).
            cond = np.ptp(values if recent is None else recent) / float(np.std(values))
            tol = (abs(r) + 3.0) * (1e-7 + 1e-13 * cond**4)
        else:
            tol = 1e-7 * abs(r) + 1e-9
        assert abs(g - r) <= tol, f"{where} {name}: {g!r} vs numpy {r!r} (tolerance {tol:.3g})"


class Stream:
    """Feeds a RollingFeatures and keeps every reading, to compare windows from scratch."""

    def __init__(self, feats: RollingFeatures) -> None:
        self.feats = feats
        self.times: list[list[float]] = [[] for _ in range(feats.n_sensors)]
        self.values: list[list[float]] = [[] for _ in range(feats.n_sensors)]

    def update(self, sensors: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        self.feats.update(sensors, times, values)
        for s, t, v in zip(sensors.tolist(), times.tolist(), values.tolist(), strict=True):
            self.times[s].append(t)
            self.values[s].append(v)

    def check(self, where: str) -> None:
        span = self.feats.recompute_every + max(self.feats.windows)
        for w in self.feats.windows:
            got = self.feats.compute(w)
            assert set(got) == set(FEATURE_NAMES)
            for s in range(self.feats.n_sensors):
                t = np.array(self.times[s][-w:])
                v = np.array(self.values[s][-w:])
                recent = np.array(self.values[s][-span:])
                assert_window_matches(got, s, t, v, f"{where} window {w} sensor {s}", recent)
        assert self.feats.counts().tolist() == [len(v) for v in self.values]


def signal(rng: np.random.Generator, n: int, offset: float, scale: float, drift: float) -> Any:
    """Readings of one sensor: an offset, a drift per reading and Gaussian noise."""
    return offset + drift * np.arange(n) + scale * rng.standard_normal(n)


@st.composite
def streams(draw: st.DrawFn) -> dict[str, Any]:
    n_sensors = draw(st.integers(1, 6))
    windows = tuple(draw(st.lists(st.integers(2, 48), min_size=1, max_size=3, unique=True)))
    return {
        "n_sensors": n_sensors,
        "windows": windows,
        "recompute_every": draw(st.sampled_from([None, 1, 7, 100, 10**6])),
        "updates": draw(st.integers(1, 300)),
        # all: every sensor every time (the aligned fast path); some: random subsets;
        # mixed: aligned first, then subsets.
        "mode": draw(st.sampled_from(["all", "some", "mixed"])),
        "offset": draw(st.sampled_from([0.0, 1e4, -1e4, 1e6])),
        "scale": draw(st.sampled_from([1e-2, 1.0, 30.0])),
        "drift": draw(st.sampled_from([0.0, 0.05, -3.0])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@PROPERTY
@given(streams())
def test_features_equal_numpy_and_scipy_on_random_streams(p: dict[str, Any]) -> None:
    rng = np.random.default_rng(p["seed"])
    n, s = p["updates"], p["n_sensors"]
    feats = RollingFeatures(s, windows=p["windows"], recompute_every=p["recompute_every"])
    stream = Stream(feats)
    data = np.stack([signal(rng, n, p["offset"], p["scale"], p["drift"]) for _ in range(s)], 1)
    data += rng.normal(0, 100, size=s)  # each sensor its own level
    now = EPOCH + rng.uniform(0, 1e6)
    checkpoints = set(rng.choice(n, size=min(n, 12), replace=False).tolist()) | {n - 1}
    for i in range(n):
        now += rng.exponential(20.0) + 0.5  # irregular scan times
        if p["mode"] == "all" or (p["mode"] == "mixed" and i < n // 2):
            mask = np.ones(s, dtype=bool)
        else:
            mask = rng.random(s) < rng.uniform(0.2, 0.9, size=s)
        sensors = np.flatnonzero(mask)
        times = now - rng.uniform(0, 0.4, size=len(sensors))  # readings a little before
        stream.update(sensors, times, data[i, sensors])
        if i in checkpoints:
            stream.check(f"after update {i}")


def test_both_update_paths_agree() -> None:
    """All sensors at once (aligned path) gives what one-at-a-time updates give."""
    rng = np.random.default_rng(3)
    aligned = RollingFeatures(3, windows=(5, 12), recompute_every=9)
    single = RollingFeatures(3, windows=(5, 12), recompute_every=9)
    for i in range(80):
        t = np.full(3, EPOCH + 10.0 * i)
        v = 1e4 + rng.normal(size=3)
        aligned.update(np.arange(3), t, v)
        for s in (2, 0, 1):
            single.update(np.array([s]), t[[s]], v[[s]])
    for w in (5, 12):
        a, b = aligned.compute(w), single.compute(w)
        for name in FEATURE_NAMES:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_doc_example_values() -> None:
    f = RollingFeatures(n_sensors=2, windows=(4,))
    for i, a in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        f.update(np.array([0, 1]), np.array([i * 3600.0] * 2), np.array([a, 10.0]))
    got = f.compute(4)
    assert got["mean"].tolist() == [3.5, 10.0]
    np.testing.assert_allclose(got["slope"], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(got["std"], [float(np.std([2, 3, 4, 5])), 0.0], atol=1e-12)


# -- NaN rules ---------------------------------------------------------------------------


def test_no_readings_give_nan_everywhere() -> None:
    f = RollingFeatures(2, windows=(3, 8))
    for w in (3, 8):
        got = f.compute(w)
        assert all(np.isnan(got[name]).all() and got[name].shape == (2,) for name in got)
    f.update(np.array([0]), np.array([EPOCH]), np.array([5.0]))
    got = f.compute(3)
    assert np.isnan([got[name][1] for name in FEATURE_NAMES]).all(), "sensor 1 has no reading"


def test_one_reading_gives_level_features_only() -> None:
    f = RollingFeatures(1, windows=(3,))
    f.update(np.array([0]), np.array([EPOCH]), np.array([-4.0]))
    got = {k: float(v[0]) for k, v in f.compute(3).items()}
    assert (got["mean"], got["min"], got["max"], got["rms"]) == (-4.0, -4.0, -4.0, 4.0)
    assert np.isnan(got["std"]) and np.isnan(got["slope"]) and np.isnan(got["kurtosis"])


def test_two_readings_give_every_feature() -> None:
    f = RollingFeatures(1, windows=(3,))
    f.update(np.array([0]), np.array([EPOCH]), np.array([1.0]))
    f.update(np.array([0]), np.array([EPOCH + 1800.0]), np.array([2.0]))
    got = {k: float(v[0]) for k, v in f.compute(3).items()}
    assert got["std"] == pytest.approx(0.5, abs=1e-12)
    assert got["slope"] == pytest.approx(2.0, rel=1e-9)  # 1 unit per half hour
    assert got["kurtosis"] == pytest.approx(-2.0, abs=1e-9)  # two distinct values: m4/m2² = 1


def test_readings_at_one_instant_have_no_slope() -> None:
    f = RollingFeatures(1, windows=(4,))
    for v in (1.0, 2.0, 4.0):
        f.update(np.array([0]), np.array([EPOCH]), np.array([v]))
    got = f.compute(4)
    assert np.isnan(got["slope"][0])
    assert got["mean"][0] == pytest.approx(7.0 / 3.0)


def test_stuck_sensor_has_zero_spread_and_no_kurtosis() -> None:
    """A sensor stuck on one value after a noisy stretch: std ~0 (as numpy) and kurtosis NaN
    (as scipy: the fourth moment over a zero variance is undefined)."""
    bad = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        f = RollingFeatures(1, windows=(4, 16, 64))
        t = EPOCH
        for i in range(230):  # stuck from 205: window 16 is constant, sums not recomputed
            t += rng.exponential(10.0) + 0.1
            v = 1e4 + 10.0 * rng.normal() if i < 205 else 1e4 + 3.3
            f.update(np.array([0]), np.array([t]), np.array([v]))
        for w in (4, 16):
            got = f.compute(w)
            std, kurt = float(got["std"][0]), float(got["kurtosis"][0])
            if not (std <= 1e-9 * 1e4 and np.isnan(kurt)):
                bad.append((seed, w, std, kurt))
    assert not bad, f"(seed, window, std, kurtosis) for constant windows: {bad[:5]}"


# -- spectral ------------------------------------------------------------------------------


def spectral_reference(times: np.ndarray, values: np.ndarray) -> dict[str, float]:
    w = len(values)
    dt = (times[-1] - times[0]) / (w - 1)
    idx = np.arange(w)
    line = np.polyval(np.polyfit(idx, values, 1), idx)  # detrended: least-squares line removed
    power = np.abs(np.fft.rfft(values - line)) ** 2
    power[0] = 0.0
    freqs = np.fft.rfftfreq(w, d=dt)
    return {
        "dominant_freq_hz": float(freqs[np.argmax(power)]),
        "spectral_centroid_hz": float((power * freqs).sum() / power.sum()),
        "high_band_ratio": float(power[len(power) // 2 :].sum() / power.sum()),
    }


@pytest.mark.parametrize(("w", "freq_hz", "dt"), [(64, 0.11, 1.0), (128, 3.3, 0.05), (50, 0.02, 4)])
def test_spectral_features_equal_numpy_fft_of_a_sine(w: int, freq_hz: float, dt: float) -> None:
    rng = np.random.default_rng(5)
    f = RollingFeatures(2, windows=(8, w))
    n = w + 37
    times = EPOCH + dt * np.arange(n)
    sine = 2.0 * np.sin(2 * np.pi * freq_hz * times + 0.3) + 500.0
    noise = rng.normal(size=n)
    for i in range(n):
        f.update(np.array([0, 1]), np.array([times[i]] * 2), np.array([sine[i], noise[i]]))
        if i == w - 2:
            before = f.spectral(np.array([0, 1]))
            assert all(np.isnan(before[k]).all() for k in SPECTRAL_NAMES), "window not full"
    got = f.spectral(np.array([0, 1]))
    assert set(got) == set(SPECTRAL_NAMES)
    for s, series in ((0, sine), (1, noise)):
        ref = spectral_reference(times[-w:], series[-w:])
        for name in SPECTRAL_NAMES:
            assert got[name][s] == pytest.approx(ref[name], rel=1e-9, abs=1e-12), (s, name)
    bin_hz = 1.0 / (w * dt)
    assert abs(got["dominant_freq_hz"][0] - freq_hz) <= bin_hz
    assert got["high_band_ratio"][0] < 0.05  # a slow sine has its energy low in the band


def test_spectral_features_of_a_flat_signal_are_nan() -> None:
    f = RollingFeatures(1, windows=(16,))
    for i in range(20):
        f.update(np.array([0]), np.array([EPOCH + i]), np.array([7.0]))
    got = f.spectral(np.array([0]))
    assert all(np.isnan(got[k][0]) for k in SPECTRAL_NAMES)


def test_spectral_features_are_detrended() -> None:
    """The module promises detrended spectra: a vibration level that oscillates while it
    climbs with wear must still show the oscillation as the dominant frequency, not the
    lowest bin (the ramp)."""
    w, freq_hz = 128, 0.1
    f = RollingFeatures(1, windows=(w,))
    for i in range(w):
        value = np.sin(2 * np.pi * freq_hz * i) + 0.05 * i  # ramp of 6.4 over the window
        f.update(np.array([0]), np.array([EPOCH + i]), np.array([value]))
    dominant = float(f.spectral(np.array([0]))["dominant_freq_hz"][0])
    assert abs(dominant - freq_hz) <= 1.0 / w, f"dominant {dominant} Hz, sine at {freq_hz} Hz"


# -- long streams and persistence ----------------------------------------------------------


def test_long_stream_stays_accurate() -> None:
    rng = np.random.default_rng(11)
    f = RollingFeatures(3, windows=(16, 64))
    stream = Stream(f)
    now = EPOCH
    for i in range(10_000):
        now += rng.exponential(5.0) + 0.1
        level = np.array([1e4, -2e3, 50.0]) + np.array([0.01, 0.0, -0.002]) * i
        values = level + rng.normal(0, [1.0, 0.1, 5.0])
        # sensor 1 misses a reading now and then
        sensors = np.array([0, 2]) if i % 7 == 3 else np.arange(3)
        stream.update(sensors, np.full(len(sensors), now), values[sensors])
        if i % 2500 == 2499:
            stream.check(f"after update {i}")


def test_state_round_trip_through_a_snapshot_is_exact() -> None:
    rng = np.random.default_rng(2)
    f = RollingFeatures(3, windows=(5, 16), recompute_every=11)
    fresh_blob = pack(f.state_dict())
    restored_fresh = RollingFeatures(3, windows=(5, 16), recompute_every=11)
    restored_fresh.load_state_dict(unpack(fresh_blob))
    assert pack(restored_fresh.state_dict()) == fresh_blob

    def feed(feats: RollingFeatures, start: int, stop: int) -> None:
        r = np.random.default_rng(start)
        for i in range(start, stop):
            sensors = np.flatnonzero(r.random(3) < 0.7)
            t = np.full(len(sensors), EPOCH + 3.0 * i)
            feats.update(sensors, t, 1e4 + r.normal(size=len(sensors)))

    feed(f, 0, 57)
    blob = pack(f.state_dict())
    g = RollingFeatures(3, windows=(5, 16), recompute_every=11)
    g.load_state_dict(unpack(blob))
    assert pack(g.state_dict()) == blob
    for feats_a, feats_b in ((f, g), (f.clone(), g.clone())):
        feed(feats_a, 57, 90)
        feed(feats_b, 57, 90)
        for w in (5, 16):
            a, b = feats_a.compute(w), feats_b.compute(w)
            for name in FEATURE_NAMES:
                assert np.array_equal(a[name], b[name], equal_nan=True), name
        assert pack(feats_a.state_dict()) == pack(feats_b.state_dict())
    del rng


def test_clone_is_independent() -> None:
    f = RollingFeatures(1, windows=(3,))
    f.update(np.array([0]), np.array([EPOCH]), np.array([1.0]))
    c = f.clone()
    c.update(np.array([0]), np.array([EPOCH + 1]), np.array([100.0]))
    assert f.compute(3)["mean"][0] == 1.0 and c.compute(3)["mean"][0] == 50.5


def test_update_does_not_change_its_inputs() -> None:
    f = RollingFeatures(3, windows=(2, 4), recompute_every=3)
    rng = np.random.default_rng(8)
    for i in range(12):
        sensors = np.arange(3) if i % 2 else np.array([2, 0])
        times = np.full(len(sensors), EPOCH + i)
        values = rng.normal(size=len(sensors))
        copies = sensors.copy(), times.copy(), values.copy()
        f.update(sensors, times, values)
        for a, b in zip((sensors, times, values), copies, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_sensors": 0}, "n_sensors"),
        ({"windows": ()}, "windows"),
        ({"windows": (1, 4)}, "windows"),
        ({"windows": (4, 4)}, "windows"),
        ({"recompute_every": -1}, "recompute_every"),
        ({"recompute_every": 0}, "recompute_every"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict[str, Any], name: str) -> None:
    args: dict[str, Any] = {"n_sensors": 2, "windows": (4, 8), **kwargs}
    with pytest.raises(ValueError, match=name):
        RollingFeatures(**args)


def test_unknown_window_raises() -> None:
    f = RollingFeatures(1, windows=(4, 8))
    with pytest.raises(ValueError, match="window"):
        f.compute(5)
