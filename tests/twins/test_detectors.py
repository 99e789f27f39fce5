"""What each detector finds: scoring bands of the rules, the robust z-score's baseline and
false-alarm rate, and the PCA monitor's model checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from twins.detectors.base import ALARM, Scan, ScanBlock
from twins.detectors.multivariate import PCAMonitor
from twins.detectors.robust import RobustZScore
from twins.detectors.rules import FlatlineRule, RateOfChangeRule, StaleRule, ThresholdRule

T0 = 1.7e9


def one(values: list[float], now_s: float = T0) -> Scan:
    return Scan.from_values(values, now_s)


# -- ThresholdRule -----------------------------------------------------------------------------


@pytest.fixture
def threshold() -> ThresholdRule:
    """Normal 20..80, critical 0..100 (sensor 0); sensor 1 has no limits at all."""
    return ThresholdRule(
        2,
        normal_low=[20.0, None],
        normal_high=[80.0, None],
        critical_low=[0.0, None],
        critical_high=[100.0, None],
    )


@pytest.mark.parametrize("value", [20.0, 20.000001, 50.0, 79.99, 80.0])
def test_threshold_inside_normal_range_scores_zero(threshold: ThresholdRule, value: float) -> None:
    assert threshold.score_sensors(one([value, 1e9])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("value", "score"),
    [
        (80.0 + 1e-9, 0.5),
        (85.0, 0.5 + 0.45 * 0.25),
        (90.0, 0.725),
        (99.0, 0.5 + 0.45 * 0.95),
        (20.0 - 1e-9, 0.5),
        (15.0, 0.5 + 0.45 * 0.25),
        (10.0, 0.725),
        (1.0, 0.5 + 0.45 * 0.95),
    ],
)
def test_threshold_between_normal_and_critical_is_an_alarm_below_critical(
    threshold: ThresholdRule, value: float, score: float
) -> None:
    got = threshold.score_one(one([value, np.nan]))
    assert got == pytest.approx(score, abs=1e-9)
    assert ALARM <= got < 0.95


@pytest.mark.parametrize(
    ("value", "score"),
    [(100.0, 0.95), (110.0, 0.975), (120.0, 1.0), (1e6, 1.0), (0.0, 0.95), (-10.0, 0.975)],
)
def test_threshold_at_or_beyond_critical_is_critical(
    threshold: ThresholdRule, value: float, score: float
) -> None:
    got = threshold.score_one(one([value, np.nan]))
    assert got == pytest.approx(score, abs=1e-12)
    assert got >= 0.95


def test_threshold_scores_rise_with_distance_from_normal(threshold: ThresholdRule) -> None:
    high = [threshold.score_one(one([v, 0.0])) for v in np.linspace(80.5, 130, 60)]
    low = [threshold.score_one(one([v, 0.0])) for v in np.linspace(19.5, -30, 60)]
    assert np.all(np.diff(high) >= 0) and np.all(np.diff(low) >= 0)
    assert high[0] >= ALARM and low[0] >= ALARM


def test_threshold_missing_reading_scores_zero(threshold: ThresholdRule) -> None:
    assert threshold.score_sensors(one([np.nan, np.nan])).tolist() == [0.0, 0.0]


def test_threshold_with_only_critical_limits() -> None:
    rule = ThresholdRule(1, critical_low=[-5.0], critical_high=[5.0])
    assert [rule.score_one(one([v])) for v in (-4.9, 0.0, 4.9)] == [0.0, 0.0, 0.0]
    assert rule.score_one(one([5.0])) == pytest.approx(0.95)
    assert rule.score_one(one([-7.0])) >= 0.95


def test_threshold_expected_value_is_the_nearest_normal_value(threshold: ThresholdRule) -> None:
    got = threshold.expected(one([130.0, 7.0]))
    assert got[0] == 80.0
    assert np.isnan(got[1]), "no limits: no opinion"
    assert threshold.expected(one([-3.0, 7.0]))[0] == 20.0
    assert threshold.expected(one([50.0, 7.0]))[0] == 50.0


def test_threshold_expected_value_with_a_one_sided_limit() -> None:
    """Most limits are one-sided (a bearing temperature has only a high limit): a reading
    of 130 against normal_high 80 was expected to be at most 80, not 'no opinion' (NaN),
    which is what the finding's expected value and the anomaly record show."""
    rule = ThresholdRule(2, normal_high=[80.0, None], normal_low=[None, 5.0])
    got = rule.expected(one([130.0, -2.0]))
    assert got.tolist() == [80.0, 5.0]


# -- RateOfChangeRule ------------------------------------------------------------------------


def test_rate_of_change_flags_a_jump_and_not_a_slow_ramp() -> None:
    rule = RateOfChangeRule(2, max_rate_per_s=[1.0, 1.0])
    ramp_scores, jump_scores = [], []
    for i in range(30):
        ramp = 50.0 + 0.4 * 10.0 * i  # 0.4 per s, readings every 10 s
        level = 50.0 + (80.0 if i == 20 else 0.0)  # one reading jumps by 80
        s = rule.process_one(one([ramp, level], T0 + 10.0 * i))
        ramp_scores.append(s[0])
        jump_scores.append(s[1])
    assert max(ramp_scores) == pytest.approx(0.2)  # 0.5 * 0.4 / 1.0
    assert jump_scores[20] == 1.0 and jump_scores[21] == 1.0  # up, and back down
    assert max(jump_scores[:20] + jump_scores[22:]) == 0.0


def test_rate_of_change_is_exactly_at_the_alarm_at_max_rate() -> None:
    rule = RateOfChangeRule(1, max_rate_per_s=[2.0])
    rule.learn_one(one([10.0], T0))
    assert rule.score_one(one([30.0], T0 + 10.0)) == pytest.approx(0.5)
    assert rule.score_one(one([-10.0], T0 + 10.0)) == pytest.approx(0.5)  # either direction


def test_rate_of_change_uses_the_time_since_the_last_reading_of_that_sensor() -> None:
    rule = RateOfChangeRule(2, max_rate_per_s=[1.0, 1.0])
    rule.learn_one(one([0.0, 0.0], T0))
    rule.learn_one(one([np.nan, 0.0], T0 + 10.0))  # sensor 0 misses a reading
    s = rule.score_sensors(one([20.0, 20.0], T0 + 20.0))
    assert s[0] == pytest.approx(0.5 * 20.0 / 20.0) and s[1] == pytest.approx(1.0)


def test_rate_of_change_first_reading_and_unset_limit_score_zero() -> None:
    rule = RateOfChangeRule(2, max_rate_per_s=[1.0, None])
    assert rule.score_sensors(one([1e6, 1e6], T0)).tolist() == [0.0, 0.0]
    rule.learn_one(one([0.0, 0.0], T0))
    assert rule.score_sensors(one([1e6, 1e6], T0 + 1.0)).tolist() == [1.0, 0.0]


# -- FlatlineRule ------------------------------------------------------------------------------


def test_flatline_reaches_the_alarm_exactly_at_stuck_after_repeats() -> None:
    rule = FlatlineRule(1, stuck_after=[4])
    scores = [rule.process_one(one([v], T0 + i))[0] for i, v in enumerate([1, 2, 3, 3, 3, 3, 3])]
    # repeats: 0 0 0 1 2 3 4 -> 0.5 * repeats / 4
    assert scores == pytest.approx([0, 0, 0, 0.125, 0.25, 0.375, 0.5])
    assert rule.score_one(one([3.0], T0 + 10)) == pytest.approx(0.5)  # stuck is one condition


def test_flatline_resets_on_a_change_and_keeps_count_over_gaps() -> None:
    rule = FlatlineRule(1, stuck_after=[3])
    values = [5.0, 5.0, np.nan, 5.0, 5.0, 5.1, 5.1]
    scores = [rule.process_one(one([v], T0 + i))[0] for i, v in enumerate(values)]
    # repeats: 0 1 (absent: 0 score, count kept) 2 3 | change: 0 1
    assert scores == pytest.approx([0, 1 / 6, 0, 2 / 6, 0.5, 0, 1 / 6])


def test_flatline_tolerance_and_disabled_sensors() -> None:
    rule = FlatlineRule(2, stuck_after=[2, 0], tolerance=[0.01, None])
    for i, v in enumerate([1.0, 1.005, 0.996, 1.004]):
        s = rule.process_one(one([v, 7.0], T0 + i))
    assert s[0] >= ALARM  # within tolerance counts as the same
    assert s[1] == 0.0  # stuck_after 0: check off
    assert rule.score_sensors(one([1.5, 7.0], T0 + 9))[0] == 0.0


# -- StaleRule ---------------------------------------------------------------------------------


def test_stale_flags_a_sensor_that_stops_reporting_and_not_one_that_reports() -> None:
    rule = StaleRule(2, max_age_s=[60.0, 60.0])
    for i in range(11):  # both report every 10 s until T0 + 100
        rule.learn_one(one([1.0, 2.0], T0 + 10.0 * i))
    got = {}
    for t in (110.0, 130.0, 160.0, 200.0, 400.0):
        s = rule.process_one(one([1.0, np.nan], T0 + t))
        got[t] = s
    assert [got[t][1] for t in (130.0, 160.0, 200.0, 400.0)] == pytest.approx(
        [0.25, 0.5, StaleRule.MAX_SCORE, StaleRule.MAX_SCORE]  # 5/6 and 1.0, capped
    )
    assert all(got[t][0] == 0.0 for t in got), "sensor 0 keeps reporting"
    assert got[110.0][1] < ALARM


def test_stale_counts_a_sensor_never_heard_from_since_the_first_scan() -> None:
    rule = StaleRule(2, max_age_s=[30.0, None])
    rule.learn_one(one([np.nan, np.nan], T0))
    assert rule.score_one(one([np.nan, np.nan], T0 + 30.0)) == pytest.approx(0.5)
    assert rule.score_sensors(one([np.nan, np.nan], T0 + 90.0)).tolist() == [
        StaleRule.MAX_SCORE,
        0.0,
    ]


# -- RobustZScore ------------------------------------------------------------------------------


def test_robust_zscore_gives_zero_while_warming_up() -> None:
    det = RobustZScore(2, threshold=4.0, warmup=10)
    rng = np.random.default_rng(0)
    for i in range(10):
        outlier = one([1e6, -1e6], T0 + i)
        assert det.score_sensors(outlier).tolist() == [0.0, 0.0]
        det.learn_one(one(list(rng.normal(size=2)), T0 + i))
    assert det.score_one(one([1e6, 0.0], T0 + 11)) > ALARM


def test_robust_zscore_baseline_after_warm_up_is_numpys_median_and_mad() -> None:
    """Each sensor's baseline is set by its own first ``warmup`` readings (sensor 1 reports
    only every third scan, so it warms up later, while sensor 0 is already adapting)."""
    warmup = 25
    det = RobustZScore(2, threshold=6.0, warmup=warmup)
    rng = np.random.default_rng(42)
    seen: list[list[float]] = [[], []]
    checked = [False, False]
    for i in range(200):
        values = np.array([1e4 + 3.0 * rng.standard_normal(), -20.0 + rng.standard_cauchy()])
        if i % 3:
            values[1] = np.nan
        det.learn_one(one(list(values), T0 + i))
        for s in (0, 1):
            if not np.isnan(values[s]):
                seen[s].append(float(values[s]))
            if len(seen[s]) == warmup and not checked[s]:
                data = np.array(seen[s])
                med = np.median(data)
                state = det.state_dict()
                assert det.expected(one([0.0, 0.0]))[s] == med
                assert state["median"][s] == med
                assert state["mad"][s] == np.median(np.abs(data - med))
                checked[s] = True
            elif len(seen[s]) < warmup:
                assert np.isnan(det.expected(one([0.0, 0.0]))[s])
    assert checked == [True, True]


def test_robust_zscore_flags_a_ten_sigma_outlier() -> None:
    rng = np.random.default_rng(1)
    det = RobustZScore(3, threshold=6.0, warmup=30)
    sigma = np.array([1.0, 0.01, 250.0])
    level = np.array([0.0, 1e4, -3e3])
    for i in range(500):
        det.learn_one(one(list(level + sigma * rng.standard_normal(3)), T0 + i))
    for s in range(3):
        for sign in (1, -1):
            x = level.copy()
            x[s] += sign * 10 * sigma[s]
            scores = det.score_sensors(one(list(x), T0 + 600))
            assert scores[s] > ALARM, (s, sign, scores)
            assert scores[s] == pytest.approx(10 / 16, abs=0.06)  # |z| / (|z| + 6)
            assert np.all(np.delete(scores, s) < 0.3)


def test_robust_zscore_false_alarm_rate_on_gaussian_data() -> None:
    rng = np.random.default_rng(7)
    det = RobustZScore(4, threshold=6.0, warmup=30)
    data = np.array([5.0, 1e4, -40.0, 0.0]) + np.array([1.0, 2.0, 0.1, 30.0]) * (
        rng.standard_normal((5000, 4))
    )
    alarms = 0
    for i, row in enumerate(data):
        s = det.process_one(one(list(row), T0 + i))
        alarms += int((s >= ALARM).sum())
    rate = alarms / (data.shape[0] - 30) / 4
    assert rate < 0.001, f"false-alarm rate {rate:.4%}"


def test_robust_zscore_baseline_follows_a_lasting_change() -> None:
    """A repaired machine reads 3 sigma higher for good: the median walks to the new level
    (adapt_rate * MAD per reading) instead of alarming forever."""
    rng = np.random.default_rng(3)
    det = RobustZScore(1, threshold=6.0, warmup=30, adapt_rate=0.02)
    for i in range(300):
        det.learn_one(one([rng.standard_normal()], T0 + i))
    before = float(det.expected(one([0.0]))[0])
    for i in range(2000):
        det.learn_one(one([3.0 + rng.standard_normal()], T0 + 300 + i))
    after = float(det.expected(one([0.0]))[0])
    assert abs(before) < 0.3 and abs(after - 3.0) < 0.3
    assert det.state_dict()["mad"][0] == pytest.approx(0.6745, abs=0.15)


def test_robust_zscore_scale_is_floored_at_the_sensors_resolution() -> None:
    """A percentage in steps of 0.1 that mostly reads 2.0 has a MAD of 0: a change of one
    step is not an anomaly (about 9 steps are needed at threshold 6), a big jump is."""
    rng = np.random.default_rng(5)
    det = RobustZScore(1, threshold=6.0, warmup=30)
    readings = 2.0 + 0.1 * (rng.random(2000) < 0.1) * rng.choice([-1, 1], 2000)
    alarms = sum(
        float(det.process_one(one([float(v)], T0 + i))[0]) >= ALARM for i, v in enumerate(readings)
    )
    assert det.state_dict()["mad"][0] < 0.05  # below one step (0 after the warm-up)
    assert det.state_dict()["step"][0] == pytest.approx(0.1)
    assert alarms == 0
    assert det.score_one(one([2.3], T0 + 2000)) < ALARM
    assert det.score_one(one([3.5], T0 + 2000)) > ALARM


def test_robust_zscore_loads_a_snapshot_from_before_the_resolution_floor() -> None:
    rng = np.random.default_rng(6)
    det = RobustZScore(1, threshold=6.0, warmup=30)
    for i in range(100):
        det.learn_one(one([float(rng.normal())], T0 + i))
    state = {k: v for k, v in det.state_dict().items() if k not in ("last", "step")}
    fresh = RobustZScore(1, threshold=6.0, warmup=30)
    fresh.load_state_dict(state)
    assert fresh.score_one(one([0.1], T0 + 100)) == det.score_one(one([0.1], T0 + 100))
    assert np.isnan(fresh.state_dict()["step"][0])


# -- PCAMonitor --------------------------------------------------------------------------------


def correlated(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Five sensors: four driven by one load (a temperature, a current, a pressure, a
    flow) plus noise, and one independent; large offsets to stress the running mean."""
    load = rng.standard_normal(rows)
    noise = rng.standard_normal((rows, 5))
    return np.stack(
        [
            1e4 + 50.0 * (load + 0.1 * noise[:, 0]),
            300.0 + 2.0 * (load + 0.1 * noise[:, 1]),
            -7.0 + 0.5 * (-load + 0.1 * noise[:, 2]),
            60.0 + 8.0 * (load + 0.1 * noise[:, 3]),
            1e3 + 3.0 * noise[:, 4],
        ],
        axis=1,
    )


def fitted_pca(
    n_fit: int = 500, alpha: float = 0.001, seed: int = 11
) -> tuple[PCAMonitor, np.ndarray]:
    det = PCAMonitor(5, n_fit=n_fit, variance=0.9, alpha=alpha)
    fit = correlated(np.random.default_rng(seed), n_fit)
    det.learn_many(ScanBlock.from_matrix(fit, T0 + np.arange(n_fit)))
    assert det.fitted
    return det, fit


def test_pca_mean_and_scale_equal_numpy() -> None:
    det, fit = fitted_pca()
    state = det.state_dict()
    assert state["count"] == len(fit)
    np.testing.assert_allclose(state["mean"], fit.mean(axis=0), rtol=1e-12, atol=1e-9)
    # standardised by the sample standard deviation (ddof=1, as the covariance)
    np.testing.assert_allclose(state["scale"], fit.std(axis=0, ddof=1), rtol=1e-9)


def test_pca_learns_only_from_complete_scans() -> None:
    det = PCAMonitor(3, n_fit=20)
    rng = np.random.default_rng(4)
    data = rng.normal(size=(40, 3)) + np.array([100.0, 0.0, -3.0])
    state = data.copy()
    state[:5, 2] = np.nan  # sensor 2 unknown for the first five scans
    for i in range(40):
        det.learn_one(Scan(data[i], np.full(3, T0 + i), state[i], T0 + i))
    assert det.fitted
    used = data[5:25]
    np.testing.assert_allclose(det.state_dict()["mean"], used.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(det.state_dict()["scale"], used.std(axis=0, ddof=1), rtol=1e-9)


def test_pca_components_span_numpys_principal_subspace() -> None:
    det, fit = fitted_pca()
    state = det.state_dict()
    corr = np.corrcoef(fit, rowvar=False)
    eigenvalues, vectors = np.linalg.eigh(corr)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    k = state["components"].shape[0]
    explained = np.cumsum(eigenvalues) / eigenvalues.sum()
    assert k == int(np.searchsorted(explained, 0.9) + 1) == 2  # load + the independent sensor
    np.testing.assert_allclose(state["eigenvalues"], eigenvalues[:k], rtol=1e-9)
    ours = state["components"].T @ state["components"]
    theirs = vectors[:, :k] @ vectors[:, :k].T
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    # the same subspace from an SVD of the standardised data
    z = (fit - fit.mean(axis=0)) / fit.std(axis=0, ddof=1)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    np.testing.assert_allclose(ours, vt[:k].T @ vt[:k], atol=1e-9)
    np.testing.assert_allclose(state["components"] @ state["components"].T, np.eye(k), atol=1e-12)


def test_pca_false_alarm_rate_on_in_distribution_data_is_near_alpha() -> None:
    det, _ = fitted_pca(alpha=0.001)
    new = correlated(np.random.default_rng(12), 2000)
    scores = det.score_many(ScanBlock.from_matrix(new, T0 + 1e4 + np.arange(2000)))
    rate = float((scores >= ALARM).mean())
    assert rate < 0.02, f"false-alarm rate {rate:.2%} with alpha 0.001"


def test_pca_control_limits_are_calibrated() -> None:
    """With alpha 0.05 on both T² and Q, roughly 5-10% of in-distribution scans alarm
    (the upper bound above alone would pass a detector that never alarms)."""
    det, _ = fitted_pca(alpha=0.05)
    new = correlated(np.random.default_rng(13), 4000)
    scores = det.score_many(ScanBlock.from_matrix(new, T0 + 1e4 + np.arange(4000)))
    rate = float((scores >= ALARM).mean())
    assert 0.04 < rate < 0.14, f"alarm rate {rate:.2%} with alpha 0.05"


def test_pca_flags_a_correlation_breaking_scan_and_names_the_sensor() -> None:
    det, fit = fitted_pca()
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    # The load is high (+1.5 sigma) but sensor 3 reads as if it were low: each reading is
    # within its own normal range (|z| <= 1.5), only the combination is wrong.
    z = np.array([1.5, 1.5, -1.5, -1.5, 0.0])
    x = mean + z * std
    normal = mean + np.array([1.5, 1.5, -1.5, 1.5, 0.0]) * std
    scan, ok = Scan.from_values(x, T0 + 1e5), Scan.from_values(normal, T0 + 1e5)
    assert det.score_one(ok) < ALARM
    scores = det.score_sensors(scan)
    assert det.score_one(scan) > ALARM
    assert int(np.argmax(scores)) == 3
    assert scores[3] == pytest.approx(det.score_one(scan))
    assert np.all(np.delete(scores, 3) < scores[3])


def test_pca_needs_the_whole_state_to_score() -> None:
    det, fit = fitted_pca()
    x = fit.mean(axis=0)
    x[2] = np.nan
    assert det.score_one(Scan.from_values(x, T0 + 1e5)) == 0.0
    # a scan in which only some sensors reported is judged on the latest known values
    values = np.full(5, np.nan)
    values[0] = fit[0, 0]
    assert det.score_one(Scan(values, values, fit[0], T0 + 1e5)) < ALARM


def test_pca_is_not_fitted_before_n_fit_scans_and_scores_zero() -> None:
    det = PCAMonitor(5, n_fit=100)
    data = correlated(np.random.default_rng(0), 99)
    det.learn_many(ScanBlock.from_matrix(data, T0 + np.arange(99)))
    assert not det.fitted
    assert det.score_sensors(Scan.from_values(data[0] * 10, T0 + 200)).tolist() == [0.0] * 5


def test_pca_names_the_sensor_behind_a_t2_alarm() -> None:
    """The independent sensor 4 reads 8 sigma high: inside the model's plane (it is its own
    principal component), so T² alarms and Q does not. The per-sensor scores must point at
    sensor 4, not share out the alarm by the (tiny, irrelevant) residuals of the others -
    the ensemble names the top per-sensor score as the finding's main contributor."""
    det, fit = fitted_pca()
    x = fit.mean(axis=0) + np.array([0.0, 0.0, 0.0, 0.0, 8.0]) * fit.std(axis=0)
    scan = Scan.from_values(x, T0 + 1e5)
    assert det.score_one(scan) > ALARM
    scores = det.score_sensors(scan)
    assert int(np.argmax(scores)) == 4, f"per-sensor scores {np.round(scores, 3)}"
