"""The wear index: one scale of wear across operating regimes, checked against numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twins.wear_index import WearIndex


def fleet(rows: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two sensors that respond to wear with a gain set by the regime, one pure noise."""
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, 3, rows)
    life = rng.uniform(0, 250, rows)
    wear = np.clip(1 - life / 125, 0, None)
    gain = np.array([1.0, 2.0, 3.0])[regime]
    z = np.column_stack(
        [
            gain * wear + rng.normal(0, 0.3, rows),
            -gain * wear + rng.normal(0, 0.3, rows),
            rng.normal(0, 1, rows),
        ]
    )
    return regime, z, life


def test_fit_returns_itself_and_matches_least_squares_without_shrinkage() -> None:
    regime, z, life = fleet()
    index = WearIndex(cap=125.0, ridge=0.0)
    assert index.fit(regime, z, life) is index
    for r in range(3):
        rows = regime == r
        design = np.column_stack([np.ones(rows.sum()), z[rows]])
        expected = np.linalg.lstsq(design, np.minimum(life[rows], 125.0), rcond=None)[0]
        assert np.allclose(index.coef_[r], expected, atol=1e-6)
    w = index.transform(regime, z)
    assert np.allclose(w, (index.coef_[regime] * np.column_stack([np.ones(len(z)), z])).sum(1))


def test_per_regime_weights_put_the_same_wear_on_one_scale() -> None:
    regime, z, life = fleet()
    per_regime = WearIndex().fit(regime, z, life).transform(regime, z)
    shared = WearIndex().fit(0 * regime, z, life).transform(0 * regime, z)
    near = life < 25
    spread = [per_regime[near & (regime == r)].mean() for r in range(3)]
    spread_shared = [shared[near & (regime == r)].mean() for r in range(3)]
    # near failure every regime reads about the same with its own weights
    assert np.ptp(spread) < 0.5 * np.ptp(spread_shared)
    target = np.minimum(life, 125.0)
    assert np.sqrt(np.mean((per_regime - target) ** 2)) < np.sqrt(np.mean((shared - target) ** 2))


def test_a_rare_regime_borrows_from_the_others_and_an_unknown_one_gets_the_shared_fit() -> None:
    regime, z, life = fleet()
    rare = np.flatnonzero(regime == 2)[:8]  # regime 3 seen 8 times
    keep = (regime != 2) | np.isin(np.arange(len(regime)), rare)
    loose = WearIndex(ridge=0.0).fit(regime[keep], z[keep], life[keep])
    shrunk = WearIndex(ridge=100.0).fit(regime[keep], z[keep], life[keep])
    # the sensor weights are shrunk (the regime's level, the intercept, is its own)
    gap = np.abs(loose.coef_[2, 1:] - loose.shared_[1:]).sum()
    assert np.abs(shrunk.coef_[2, 1:] - shrunk.shared_[1:]).sum() < 0.5 * gap
    unknown = shrunk.transform(np.array([7]), z[:1])
    assert unknown[0] == pytest.approx(shrunk.shared_[0] + shrunk.shared_[1:] @ z[0])


def test_censored_rows_count_only_past_the_cap() -> None:
    regime, z, life = fleet()
    event = np.ones(len(life), dtype=bool)
    base = WearIndex().fit(regime, z, life, event)
    # histories that stopped early (censored short of the cap) say nothing about min(R, cap)
    event[life < 125] = np.random.default_rng(1).random(int((life < 125).sum())) < 0.5
    censored = WearIndex().fit(regime, z, life, event)
    assert np.allclose(censored.coef_, base.coef_, rtol=0.2, atol=3.0)
    before = z.copy()
    censored.transform(regime, z)
    assert np.array_equal(z, before)  # input not mutated


def test_round_trips_through_json() -> None:
    regime, z, life = fleet(rows=600)
    index = WearIndex().fit(regime, z, life)
    again = WearIndex.from_dict(json.loads(json.dumps(index.to_dict())))
    assert np.array_equal(again.transform(regime, z), index.transform(regime, z))
    with pytest.raises(ValueError, match="malformed"):
        WearIndex.from_dict({"cap": 125.0})


@pytest.mark.parametrize(("kwargs", "match"), [({"cap": 0.0}, "cap"), ({"ridge": -1.0}, "ridge")])
def test_bad_hyper_parameters_are_named(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WearIndex(**kwargs)


def test_bad_data_is_refused() -> None:
    regime, z, life = fleet(rows=100)
    with pytest.raises(ValueError, match="not fitted"):
        WearIndex().transform(regime, z)
    with pytest.raises(ValueError, match="regime must be"):
        WearIndex().fit(regime[:50], z, life)
    with pytest.raises(ValueError, match="regime numbers"):
        WearIndex().fit(regime - 1, z, life)
    with pytest.raises(ValueError, match="remaining"):
        WearIndex().fit(regime, z, -life)
    bad = z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        WearIndex().fit(regime, bad, life)
    index = WearIndex().fit(regime, z, life)
    with pytest.raises(ValueError, match="3 sensors"):
        index.transform(regime, z[:, :2])
