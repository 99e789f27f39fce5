"""Operating regimes: found from settings, sensors normalised per regime."""

from __future__ import annotations

import numpy as np
import pytest

from twins.regimes import OperatingRegimes

POINTS = np.array(
    [[0, 0, 100], [10, 0.25, 100], [20, 0.7, 100], [25, 0.62, 60], [35, 0.84, 100], [42, 0.84, 100]]
)


def fleet(rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, len(POINTS), rows)
    settings = POINTS[regime] + rng.normal(0, 0.002, (rows, 3))
    level = np.array([500, 550, 520, 480, 600, 610.0])[regime]
    values = np.column_stack(
        [level + rng.normal(0, 2, rows), np.full(rows, 14.62), 0.5 * level + rng.normal(0, 1, rows)]
    )
    return settings, values, regime


def test_six_regimes_like_fd002_are_found_and_normalised() -> None:
    settings, values, regime = fleet()
    regimes = OperatingRegimes().fit(settings, values)
    assert regimes.n_regimes_ == 6
    found = regimes.regime(settings)
    # the same partition as the truth (labels may be permuted)
    for r in range(6):
        assert len(np.unique(found[regime == r])) == 1
    z = regimes.transform(settings, values)
    for r in range(6):
        block = z[found == r]
        assert np.allclose(block[:, [0, 2]].mean(axis=0), 0, atol=1e-9)
        assert np.allclose(block[:, [0, 2]].std(axis=0), 1, atol=1e-9)
    assert regimes.constant_.tolist() == [False, True, False]


def test_settings_that_only_jitter_are_one_regime() -> None:
    rng = np.random.default_rng(1)
    settings = rng.normal(0, 0.002, (1000, 3))
    values = rng.normal(640, 0.5, (1000, 2))
    regimes = OperatingRegimes().fit(settings, values)
    assert regimes.n_regimes_ == 1
    z = regimes.transform(settings, values)
    assert abs(z.mean()) < 1e-9


def test_per_regime_normalisation_removes_what_a_global_one_leaves() -> None:
    settings, values, _ = fleet()
    z = OperatingRegimes().fit(settings, values).transform(settings, values)
    global_z = (values[:, 0] - values[:, 0].mean()) / values[:, 0].std()
    # within-regime noise is 2, the regime levels spread ~45: per-regime z is pure noise
    assert np.corrcoef(z[:, 0], global_z)[0, 1] < 0.2


def test_a_sensor_read_at_its_resolution_gives_no_spikes_and_is_left_out() -> None:
    # Like C-MAPSS sensor 10 on FD002: two decimals, and within each regime it only
    # flips between two neighbouring values (a few rows of one regime at the other).
    settings, values, regime = fleet()
    rng = np.random.default_rng(2)
    base = np.array([1.02, 1.3, 0.94, 1.08, 1.26, 1.02])[regime]
    flips = np.where(rng.random(len(regime)) < 0.002, -0.01, 0.0)
    quantised = np.round(base + flips, 2)
    # and a coarse sensor that does vary: whole degrees, spread of several degrees
    coarse = np.round(300 + 5 * regime + rng.normal(0, 3, len(regime)))
    values = np.column_stack([values, quantised, coarse])
    regimes = OperatingRegimes().fit(settings, values)
    assert regimes.resolution_[3] == pytest.approx(0.01)
    assert regimes.resolution_[4] == pytest.approx(1.0)
    assert regimes.constant_.tolist() == [False, True, False, True, False]
    z = regimes.transform(settings, values)
    # one step is at most about one unit, not the dozens a z-score against the flips gives
    assert np.abs(z[:, 3]).max() <= 1.01
    # what the floor prevents: against its own spread in a regime, a flip is a spike
    one = regime == regime[np.flatnonzero(flips)[0]]
    naive = (quantised[one] - quantised[one].mean()) / quantised[one].std()
    assert np.abs(naive).max() > 10
    assert np.allclose(z[:, 4].std(), 1, atol=0.05)
    assert regimes.to_dict()["resolution"][3] == pytest.approx(0.01)


def test_a_continuous_sensor_has_no_resolution_floor() -> None:
    settings, values, _ = fleet()
    regimes = OperatingRegimes().fit(settings, values)
    assert regimes.resolution_[0] < 1e-3
    assert regimes.resolution_[1] == 0.0  # a single value: no step at all


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_regimes": 0}, "max_regimes"),
        ({"min_silhouette": 1.5}, "min_silhouette"),
        ({"sample": 3}, "sample"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OperatingRegimes(**kwargs)  # type: ignore[arg-type]


def test_bad_data_is_refused() -> None:
    settings, values, _ = fleet(rows=100)
    with pytest.raises(ValueError, match="same rows"):
        OperatingRegimes().fit(settings, values[:50])
    bad = values.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        OperatingRegimes().fit(settings, bad)
    with pytest.raises(ValueError, match="not fitted"):
        OperatingRegimes().transform(settings, values)
    regimes = OperatingRegimes().fit(settings, values)
    with pytest.raises(ValueError, match="3 sensors"):
        regimes.transform(settings, values[:, :2])
