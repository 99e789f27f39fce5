"""The smoothed PCA monitor: its cross-validated limits step by step against numpy, and
how its baseline follows slow change but not a fault."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from twins.detectors.base import ALARM, Scan
from twins.detectors.smoothed import ALARM_SLOWDOWN, SPREAD_FLOOR, SmoothedPCAMonitor
from twins.snapshot import pack, unpack

SMALL: dict[str, Any] = {"n_fit": 90, "n_calibrate": 30, "slow_block": 15, "hold": 3, "window": 5}
LEARN = SMALL["n_fit"] + SMALL["n_calibrate"]


def readings(rows: int, seed: int = 7) -> np.ndarray:
    """Four sensors: two that move together, a noisy one, and one warming up (slow drift,
    so not steady)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=rows)
    return np.column_stack(
        [
            10.0 + common + 0.3 * rng.normal(size=rows),
            5.0 + 0.8 * common + 0.3 * rng.normal(size=rows),
            rng.normal(size=rows),
            60.0 + 0.2 * np.arange(rows) + 0.05 * rng.normal(size=rows),
        ]
    )


def feed(det: SmoothedPCAMonitor, values: np.ndarray, start: int = 0) -> np.ndarray:
    """process_one every row; returns the machine score of each."""
    return np.array(
        [det.process_one(Scan.from_values(v, float(start + i))).max() for i, v in enumerate(values)]
    )


def ewma(values: np.ndarray, weight: float) -> np.ndarray:
    out = values.copy()
    for i in range(1, len(values)):
        out[i] = out[i - 1] + weight * (values[i] - out[i - 1])
    return out


def pca(rows: np.ndarray, variance: float, k: int | None = None) -> tuple[Any, ...]:
    mean = rows.mean(axis=0)
    cov = np.cov(rows, rowvar=False)
    std = np.sqrt(np.diag(cov))
    w, v = np.linalg.eigh(cov / np.outer(std, std))
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    if k is None:
        k = max(min(int(np.searchsorted(np.cumsum(w) / w.sum(), variance)) + 1, len(w) - 1), 1)
    return mean, std, v[:, :k], w[:k], k


def t2_q(rows: np.ndarray, model: tuple[Any, ...]) -> np.ndarray:
    mean, std, vectors, eigenvalues, _ = model
    z = (rows - mean) / std
    t = z @ vectors
    residual = z - t @ vectors.T
    return np.column_stack([(t**2 / eigenvalues).sum(axis=1), (residual**2).sum(axis=1)])


def test_the_fit_and_its_cross_validated_limits_match_numpy() -> None:
    values = readings(LEARN)
    det = SmoothedPCAMonitor(4, **SMALL)
    for i, v in enumerate(values):
        det.learn_one(Scan.from_values(v, float(i)))
    assert det.fitted

    # Steady sensors: total variance against the variance of 15-reading block means.
    blocks = values.reshape(-1, 15, 4).mean(axis=1).var(axis=0)
    steady = blocks < 0.5 * values.var(axis=0)
    assert steady.tolist() == [True, True, True, False]  # the warming sensor is left out
    assert det.steady_sensors.tolist() == [0, 1, 2]

    x = ewma(values, 0.2)[:, steady]
    full = pca(x, 0.9)
    k = full[-1]
    held_out = []
    for start in range(0, LEARN, 30):
        rest = np.ones(LEARN, dtype=bool)
        rest[start : start + 30] = False
        held_out.append(t2_q(x[~rest], pca(x[rest], 0.9, k)))
    stats = np.concatenate(held_out)
    t2_limit, q_limit = np.quantile(stats, 0.99, axis=0)
    # Both limits raised by one factor: 1 % of held-out scans have *either* over.
    either = np.maximum(stats[:, 0] / t2_limit, stats[:, 1] / q_limit)
    factor = np.quantile(either, 0.99)
    assert factor > 1.0  # each statistic's own 1 % do not coincide: 1 % each is too many
    t2_limit, q_limit = factor * t2_limit, factor * q_limit
    assert det._t2_limit == pytest.approx(t2_limit, rel=1e-9)
    assert det._q_limit == pytest.approx(q_limit, rel=1e-9)
    np.testing.assert_allclose(det._baseline[:3], full[0], rtol=1e-12)
    np.testing.assert_allclose(det._scale[:3], full[1], rtol=1e-12)
    assert det._kept == k

    # After the fit a scan's statistics are those of its smoothed state against the model.
    nxt = readings(LEARN + 1)[-1]
    smoothed = det._smooth + 0.2 * (nxt - det._smooth)
    expected = t2_q(smoothed[None, :3], full)[0]
    ratio = max(expected[0] / t2_limit, expected[1] / q_limit)
    score = det.score_one(Scan.from_values(nxt, float(LEARN)))
    assert score == pytest.approx(min(ratio / (ratio + 1), np.nextafter(ALARM, 0)), rel=1e-9)


def test_the_learning_scans_are_freed_at_the_fit_and_snapshots_round_trip() -> None:
    det = SmoothedPCAMonitor(4, **SMALL)
    feed(det, readings(LEARN - 1))
    assert det.state_dict()["learned"].shape == (LEARN, 4)
    feed(det, readings(LEARN + 40)[LEARN - 1 :], start=LEARN - 1)
    state = det.state_dict()
    assert state["learned"].shape == (0, 4)
    restored = SmoothedPCAMonitor(4, **SMALL)
    restored.load_state_dict(unpack(pack(state)))
    assert pack(restored.state_dict()) == pack(state)
    later = readings(300, seed=8)[200:]
    assert np.array_equal(feed(det, later, 500), feed(restored, later, 500))


def test_a_slow_drift_is_followed_where_a_fixed_model_alarms() -> None:
    rows = LEARN + 2000
    values = readings(rows)
    values[:, 3] = 60.0  # only the steady sensors matter here
    drift = np.clip(np.arange(rows) - LEARN, 0, None) * 0.003  # 6 units over 2000 scans
    values[:, 0] += drift
    values[:, 1] += 0.8 * drift
    following = SmoothedPCAMonitor(4, **SMALL)
    fixed = SmoothedPCAMonitor(4, **SMALL, level_rate=0.0, spread_rate=0.0)
    follows = feed(following, values)[LEARN:] >= ALARM
    stays = feed(fixed, values)[LEARN:] >= ALARM
    assert stays[-500:].all(), "a model that does not follow alarms once the level has moved"
    assert follows.mean() < 0.05
    # the baseline lags a ramp by its slope over level_rate (0.003 / 0.001 = 3 units)
    assert following.expected(Scan.from_values(values[-1], 0.0))[0] > 12.5
    assert np.isnan(following.expected(Scan.from_values(values[-1], 0.0))[3])


def test_a_fault_is_not_learned_away_and_the_level_before_it_judges_the_recovery() -> None:
    values = readings(LEARN + 900)
    values[:, 3] = 60.0
    fault = slice(LEARN + 300, LEARN + 700)
    values[fault, 0] += 3.0  # sensor 0 leaves its partner: the correlation breaks
    det = SmoothedPCAMonitor(4, **SMALL)
    assert not (feed(det, values[: fault.start]) >= ALARM)[LEARN:].any()
    before = det._baseline.copy()
    scores = feed(det, values[fault], fault.start)
    assert (scores[10:] >= ALARM).all(), "the whole fault is in alarm"
    moved = det._baseline[0] - before[0]
    # the baseline went towards the fault at a tenth of its rate at most
    assert 0 < moved < 3.5 * (1 - (1 - det.level_rate / ALARM_SLOWDOWN) ** 400)
    after = feed(det, values[fault.stop :], fault.stop)
    assert not (after[10:] >= ALARM).any(), "the fault cleared: so did the alarm"


def test_a_lasting_change_is_eventually_accepted() -> None:
    values = readings(LEARN + 3000)
    values[:, 3] = 60.0
    values[LEARN + 100 :, 0] += 3.0
    quick = feed(SmoothedPCAMonitor(4, **SMALL, level_rate=0.05), values)[LEARN:] >= ALARM
    assert quick[110:200].all() and not quick[400:].any()
    # at the default rate the same change is still reported after 2,900 scans
    assert (feed(SmoothedPCAMonitor(4, **SMALL), values)[LEARN:] >= ALARM)[110:].all()


def test_the_spread_follows_a_noisier_regime_but_not_below_its_floor() -> None:
    rows = LEARN + 3000
    values = readings(rows)
    values[:, 3] = 60.0
    rng = np.random.default_rng(3)
    louder = np.clip((np.arange(rows) - LEARN) / 1000.0, 0.0, 1.0)[:, None]  # over 1000 scans
    values[:, :3] += louder * 1.2 * rng.normal(size=(rows, 3))  # noise up to ~2.5 times
    det = SmoothedPCAMonitor(4, **SMALL)
    fixed = SmoothedPCAMonitor(4, **SMALL, spread_rate=0.0)
    assert (feed(det, values)[-1000:] >= ALARM).mean() < 0.05
    assert (feed(fixed, values)[-1000:] >= ALARM).mean() > 0.2
    # A sensor that goes quiet: its variance is taken no lower than the floor.
    quiet = SmoothedPCAMonitor(4, **SMALL)
    calm = readings(LEARN + 2000)
    calm[LEARN:, 2] = 0.0
    feed(quiet, calm)
    learned = quiet._floor / SPREAD_FLOOR
    assert quiet._scale[2] ** 2 == pytest.approx(SPREAD_FLOOR * learned[2], rel=1e-9)
    assert quiet._spread[2, 2] < SPREAD_FLOOR * learned[2]


def test_learning_a_scan_just_scored_reuses_its_numbers_exactly() -> None:
    """process_one hands the statistics of the score to the learning; learning alone
    computes them again: the two must agree bit for bit, ticks included."""
    values = readings(LEARN + 200)
    values[:, 3] = 60.0
    values[LEARN + 100 :, 0] += 3.0
    scored, learned = SmoothedPCAMonitor(4, **SMALL), SmoothedPCAMonitor(4, **SMALL)
    for i, v in enumerate(values):
        scan = Scan.from_values(v, float(i))
        scored.process_one(scan)
        learned.learn_one(scan)
        if i % 50 == 49:  # a tick: nothing new, the state as it was
            tick = Scan(np.full(4, np.nan), np.full(4, np.nan), v, float(i) + 0.5)
            scored.process_one(tick)
            learned.learn_one(tick)
        assert pack(scored.state_dict()) == pack(learned.state_dict()), i


def test_refit_forgets_the_model() -> None:
    det = SmoothedPCAMonitor(4, **SMALL)
    feed(det, readings(LEARN + 5))
    assert det.fitted
    det.refit()
    assert not det.fitted and det.state_dict()["count"] == 0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"level_rate": -0.1}, "level_rate"),
        ({"level_rate": 1.0}, "level_rate"),
        ({"spread_rate": -0.01}, "spread_rate"),
        ({"spread_rate": 1.5}, "spread_rate"),
    ],
)
def test_bad_rates_raise_value_error_naming_them(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        SmoothedPCAMonitor(4, **kwargs)
