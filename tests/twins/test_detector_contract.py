"""One contract, every detector: the checks of twins.detectors.base run against each
detector the twins use, built small (four sensors) and, for the learned ones, fitted."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from schemas.anomaly import AnomalyType
from twins.detectors.base import Detector, Scan, ScanBlock, SensorDetector
from twins.detectors.drift import DriftDetector
from twins.detectors.multivariate import PCAMonitor
from twins.detectors.robust import RobustZScore
from twins.detectors.rules import FlatlineRule, RateOfChangeRule, StaleRule, ThresholdRule
from twins.detectors.smoothed import SmoothedPCAMonitor
from twins.snapshot import pack, unpack

S = 4
T0 = 1.7e9
WARM_ROWS = 90  # > PCAMonitor n_fit and RobustZScore warmup even with gaps


def per_sensor(values: list[Any], n: int) -> list[Any]:
    """A per-sensor parameter for ``n`` sensors (the list repeated as needed)."""
    return [values[i % len(values)] for i in range(n)]


FACTORIES: dict[str, Callable[[int], SensorDetector]] = {
    "threshold": lambda n: ThresholdRule(
        n,
        normal_low=per_sensor([-1.5, None, 8.0, None], n),
        normal_high=per_sensor([1.5, 2.0, None, 60.0], n),
        critical_low=per_sensor([-3.0, None, 5.0, None], n),
        critical_high=per_sensor([3.0, None, None, 80.0], n),
    ),
    "rate_of_change": lambda n: RateOfChangeRule(n, per_sensor([0.2, 0.5, None, 1.0], n)),
    "flatline": lambda n: FlatlineRule(
        n, stuck_after=per_sensor([3, 5, 0, 4], n), tolerance=per_sensor([0.0, 1e-9, None, 0], n)
    ),
    "stale": lambda n: StaleRule(n, max_age_s=per_sensor([25.0, 60.0, None, 15.0], n)),
    "robust_zscore": lambda n: RobustZScore(n, threshold=4.0, warmup=20),
    "pca": lambda n: PCAMonitor(n, n_fit=50, variance=0.8, alpha=0.01),
    "drift": lambda n: DriftDetector(n, warmup=20, accept_after=30),
    "smoothed_pca": lambda n: SmoothedPCAMonitor(  # fitted before WARM's stuck run
        n, n_fit=20, n_calibrate=10, smoothing=0.5, hold=1, window=2, slow_block=4, slow_share=0.9
    ),
}
NAMES = list(FACTORIES)


def make_block(seed: int, rows: int, start_row: int = 0) -> ScanBlock:
    """Scans every 10 s of four correlated sensors with gaps, a stuck run and spikes.

    ``state`` is the latest known value of each sensor (NaN until first seen), as a twin
    builds it.
    """
    rng = np.random.default_rng(seed)
    common = rng.normal(size=rows)
    values = np.stack(
        [
            common + 0.3 * rng.normal(size=rows),
            0.8 * common + 0.3 * rng.normal(size=rows),
            10.0 - common + 0.3 * rng.normal(size=rows),
            50.0 + 5.0 * rng.normal(size=rows),
        ],
        axis=1,
    )
    values[rows // 3 : rows // 3 + 10, 1] = 0.25  # a stuck run
    values[rows // 2, 0] += 6.0  # a spike
    values[2 * rows // 3, 3] = 95.0  # beyond the critical limit
    gaps = rng.random((rows, S)) < 0.15
    gaps[rows // 4 : rows // 4 + 5, 3] = True  # sensor 3 silent for a while
    values[gaps] = np.nan
    now = T0 + 10.0 * (start_row + np.arange(rows))
    times = np.where(np.isnan(values), np.nan, now[:, None] - rng.uniform(0, 2, (rows, S)))
    state = values.copy()
    for i in range(1, rows):
        state[i] = np.where(np.isnan(state[i]), state[i - 1], state[i])
    return ScanBlock(values, times, state, now)


WARM = make_block(1, WARM_ROWS)
TEST = make_block(2, 40, start_row=WARM_ROWS)


def rows(block: ScanBlock) -> list[Scan]:
    return [block.row(i) for i in range(len(block))]


def fresh(name: str, n_sensors: int = S) -> SensorDetector:
    return FACTORIES[name](n_sensors)


def warmed(name: str, n_rows: int = WARM_ROWS) -> SensorDetector:
    det = fresh(name)
    for scan in rows(WARM)[:n_rows]:
        det.learn_one(scan)
    return det


STAGES: dict[str, Callable[[str], SensorDetector]] = {
    "fresh": fresh,
    "partial": lambda name: warmed(name, 12),  # warming up / accumulating
    "warm": warmed,
}


def frozen(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy: state_dict may hand out the detector's own arrays."""
    return copy.deepcopy(state)


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), key
        elif isinstance(x, float) and np.isnan(x):
            assert isinstance(y, float) and np.isnan(y), key
        else:
            assert x == y and type(x) is type(y), key


def scores_of(det: SensorDetector, block: ScanBlock = TEST) -> np.ndarray:
    return np.stack([det.score_sensors(scan) for scan in rows(block)])


# -- the protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_is_a_detector(name: str) -> None:
    det = fresh(name)
    assert isinstance(det, Detector)
    assert isinstance(det.name, str) and det.name
    assert isinstance(det.anomaly_type, AnomalyType)
    assert det.n_sensors == S


def test_detector_names_are_distinct() -> None:
    assert len({fresh(n).name for n in NAMES}) == len(NAMES)


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("name", NAMES)
def test_scores_lie_in_zero_one_with_one_per_sensor(name: str, stage: str) -> None:
    det = STAGES[stage](name)
    block_scores = det.score_many(TEST)
    assert block_scores.shape == (len(TEST),)
    for i, scan in enumerate(rows(TEST)):
        s = det.score_sensors(scan)
        assert isinstance(s, np.ndarray) and s.shape == (S,) and s.dtype == np.float64
        assert np.all((s >= 0.0) & (s <= 1.0)), s
        one = det.score_one(scan)
        assert isinstance(one, float) and 0.0 <= one <= 1.0
        assert one == pytest.approx(float(s.max()), abs=1e-12), "score_one is the top score"
        assert block_scores[i] == one
        assert det.expected(scan).shape == (S,)


@pytest.mark.parametrize("name", NAMES)
def test_warm_detectors_react_to_the_test_data(name: str) -> None:
    """Guards the other checks: every detector does score something in TEST above 0, and
    the stateful ones learn something from it (else 'nothing changed' proves nothing)."""
    det = warmed(name)
    other = det.clone()
    live = np.stack([other.process_one(scan) for scan in rows(TEST)])
    assert (live > 0).any()
    assert (live >= 0.5).any() or name == "robust_zscore", "some alarm in TEST"
    before = frozen(det.state_dict())
    det.learn_many(TEST)
    if name not in ("threshold", "pca"):  # no state / a fitted PCA model stays fixed
        # (the smoothed PCA's model is fixed too, but its average and alarm hold move)
        with pytest.raises(AssertionError):
            assert_same_state(before, det.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_learned_detectors_are_fitted_by_the_warm_up(name: str) -> None:
    det = warmed(name)
    if isinstance(det, PCAMonitor | SmoothedPCAMonitor):
        assert det.fitted
    if isinstance(det, RobustZScore):
        assert not np.isnan(det.expected(TEST.row(0))).any(), "every sensor warmed up"


# -- scoring leaves the detector alone --------------------------------------------------------


@pytest.mark.parametrize("stage", ["partial", "warm"])
@pytest.mark.parametrize("name", NAMES)
def test_scoring_does_not_change_the_detector(name: str, stage: str) -> None:
    det = STAGES[stage](name)
    before = frozen(det.state_dict())
    blob = pack(det.state_dict())
    for scan in rows(TEST):
        det.score_sensors(scan)
        det.score_one(scan)
        det.expected(scan)
    det.score_many(TEST)
    assert_same_state(before, det.state_dict())
    assert pack(det.state_dict()) == blob


@pytest.mark.parametrize("name", NAMES)
def test_scoring_a_fresh_detector_does_not_change_its_state(name: str) -> None:
    """'Scoring never changes a detector' holds from the very first scan too: scoring must
    not build the state (which changes state_dict() and the snapshot bytes)."""
    det = fresh(name)
    blob = pack(det.state_dict())
    det.score_sensors(TEST.row(0))
    assert pack(det.state_dict()) == blob, f"{det.state_dict().keys()}"


# -- clone ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["partial", "warm"])
@pytest.mark.parametrize("name", NAMES)
def test_clone_is_independent(name: str, stage: str) -> None:
    det = STAGES[stage](name)
    state = frozen(det.state_dict())
    scores = scores_of(det)
    twin = det.clone()
    assert type(twin) is type(det) and twin is not det
    assert np.array_equal(scores_of(twin), scores)
    twin.learn_many(TEST)
    twin.learn_many(make_block(3, 30, start_row=200))
    assert_same_state(state, det.state_dict())
    assert np.array_equal(scores_of(det), scores)
    # and the other way round
    twin_state = frozen(twin.state_dict())
    det.learn_many(make_block(4, 30, start_row=300))
    assert_same_state(twin_state, twin.state_dict())


# -- snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("name", NAMES)
def test_snapshot_round_trip_restores_the_detector_exactly(name: str, stage: str) -> None:
    det = STAGES[stage](name)
    blob = pack(det.state_dict())
    restored = fresh(name)
    restored.load_state_dict(unpack(blob))
    assert pack(restored.state_dict()) == blob
    later = make_block(5, 30, start_row=500)
    for scan in rows(TEST) + rows(later):
        a, b = det.process_one(scan), restored.process_one(scan)
        assert np.array_equal(a, b), "scores differ after restoring"
    assert pack(restored.state_dict()) == pack(det.state_dict())


@pytest.mark.parametrize("name", [n for n in NAMES if n != "threshold"])  # threshold: no state
def test_loading_the_state_of_a_detector_of_another_size_raises_value_error(name: str) -> None:
    """A snapshot of a 4-sensor detector must not load into a 5-sensor one (a machine whose
    description changed): it would fail later, far from the cause, or score nonsense."""
    state = unpack(pack(warmed(name).state_dict()))
    other = fresh(name, S + 1)
    with pytest.raises(ValueError):
        other.load_state_dict(state)


# -- bad input ------------------------------------------------------------------------------


def _bad_scans() -> dict[str, tuple[Scan, str]]:
    good = TEST.row(1)
    inf_values = good.values.copy()
    inf_values[2] = np.inf
    minus_inf = good.values.copy()
    minus_inf[0] = -np.inf
    return {
        "too few sensors": (Scan.from_values(good.values[:3], good.now_s), "sensors"),
        "too many sensors": (Scan.from_values(np.append(good.values, 1.0), good.now_s), "sensors"),
        "+inf": (Scan(inf_values, good.times_s, good.state, good.now_s), "finite"),
        "-inf": (Scan(minus_inf, good.times_s, good.state, good.now_s), "finite"),
    }


@pytest.mark.parametrize("bad", list(_bad_scans()))
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_value_error_naming_the_problem(name: str, bad: str) -> None:
    scan, message = _bad_scans()[bad]
    det = warmed(name)
    before = frozen(det.state_dict())
    for method in (det.score_sensors, det.score_one, det.learn_one, det.process_one):
        with pytest.raises(ValueError, match=message):
            method(scan)
    assert_same_state(before, det.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_bad_blocks_raise_value_error(name: str) -> None:
    det = warmed(name)
    narrow = ScanBlock.from_matrix(np.zeros((3, S - 1)), T0 + np.arange(3.0))
    for method in (det.score_many, det.learn_many):
        with pytest.raises(ValueError, match="sensors"):
            method(narrow)


# -- learning -------------------------------------------------------------------------------


def _copies(scan: Scan) -> tuple[np.ndarray, ...]:
    return scan.values.copy(), scan.times_s.copy(), scan.state.copy()


@pytest.mark.parametrize("name", NAMES)
def test_learning_and_scoring_do_not_change_their_input(name: str) -> None:
    det = warmed(name, 30)
    block = make_block(6, 60, start_row=WARM_ROWS)
    kept = ScanBlock(*(a.copy() for a in (block.values, block.times_s, block.state, block.now_s)))
    for scan in rows(block):
        before = _copies(scan)
        det.score_sensors(scan)
        det.process_one(scan)
        det.learn_one(scan)
        for a, b in zip(before, _copies(scan), strict=True):
            assert np.array_equal(a, b, equal_nan=True)
    det.learn_many(block)
    det.score_many(block)
    for a, b in zip(
        (block.values, block.times_s, block.state, block.now_s),
        (kept.values, kept.times_s, kept.state, kept.now_s),
        strict=True,
    ):
        assert np.array_equal(a, b, equal_nan=True)
    # Scans whose state is the values array itself (Scan.from_values) are not changed either.
    values = np.array([0.1, 0.2, np.nan, 55.0])
    det.process_one(Scan.from_values(values, T0 + 1e5))
    assert np.array_equal(values, [0.1, 0.2, np.nan, 55.0], equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_learn_many_equals_learn_one_row_by_row(name: str) -> None:
    a, b = fresh(name), fresh(name)
    for block in (WARM, TEST):
        a.learn_many(block)
        for scan in rows(block):
            b.learn_one(scan)
        assert pack(a.state_dict()) == pack(b.state_dict())
    assert np.array_equal(a.score_many(TEST), b.score_many(TEST))


@pytest.mark.parametrize("name", NAMES)
def test_process_one_equals_score_then_learn(name: str) -> None:
    a, b = fresh(name), fresh(name)
    for scan in rows(WARM) + rows(TEST):
        got = a.process_one(scan)
        expected = b.score_sensors(scan)
        b.learn_one(scan)
        assert np.array_equal(got, expected)
        assert pack(a.state_dict()) == pack(b.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_detectors_are_deterministic(name: str) -> None:
    a, b = fresh(name), fresh(name)
    got_a = [a.process_one(scan) for scan in rows(WARM) + rows(TEST)]
    got_b = [b.process_one(scan) for scan in rows(WARM) + rows(TEST)]
    assert np.array_equal(np.stack(got_a), np.stack(got_b))
    assert pack(a.state_dict()) == pack(b.state_dict())


# -- constructor arguments ------------------------------------------------------------------

BAD_ARGUMENTS: list[tuple[Callable[..., Any], dict[str, Any], str]] = [
    (ThresholdRule, {"n_sensors": 0}, "n_sensors"),
    (ThresholdRule, {"n_sensors": 2, "normal_high": [1.0]}, "normal_high"),
    (ThresholdRule, {"n_sensors": 1, "normal_low": [5.0], "normal_high": [4.0]}, "normal_high"),
    (
        ThresholdRule,
        {"n_sensors": 1, "normal_high": [5.0], "critical_high": [4.0]},
        "critical_high",
    ),
    (ThresholdRule, {"n_sensors": 1, "normal_low": [5.0], "critical_low": [6.0]}, "normal_low"),
    (RateOfChangeRule, {"n_sensors": 0}, "n_sensors"),
    (RateOfChangeRule, {"n_sensors": 2, "max_rate_per_s": [1.0, 0.0]}, "max_rate_per_s"),
    (RateOfChangeRule, {"n_sensors": 1, "max_rate_per_s": [-1.0]}, "max_rate_per_s"),
    (RateOfChangeRule, {"n_sensors": 2, "max_rate_per_s": [1.0]}, "max_rate_per_s"),
    (FlatlineRule, {"n_sensors": 0}, "n_sensors"),
    (FlatlineRule, {"n_sensors": 1, "stuck_after": [-1]}, "stuck_after"),
    (FlatlineRule, {"n_sensors": 1, "tolerance": [-0.1]}, "tolerance"),
    (FlatlineRule, {"n_sensors": 2, "stuck_after": [1, 2, 3]}, "stuck_after"),
    (StaleRule, {"n_sensors": 0}, "n_sensors"),
    (StaleRule, {"n_sensors": 1, "max_age_s": [0.0]}, "max_age_s"),
    (StaleRule, {"n_sensors": 1, "max_age_s": [-5.0]}, "max_age_s"),
    (RobustZScore, {"n_sensors": 0}, "n_sensors"),
    (RobustZScore, {"n_sensors": 1, "threshold": 0.0}, "threshold"),
    (RobustZScore, {"n_sensors": 1, "threshold": float("nan")}, "threshold"),
    (RobustZScore, {"n_sensors": 1, "warmup": 2}, "warmup"),
    (RobustZScore, {"n_sensors": 1, "adapt_rate": 0.0}, "adapt_rate"),
    (RobustZScore, {"n_sensors": 1, "adapt_rate": 1.0}, "adapt_rate"),
    (RobustZScore, {"n_sensors": 1, "min_scale": 0.0}, "min_scale"),
    (PCAMonitor, {"n_sensors": 0}, "n_sensors"),
    (PCAMonitor, {"n_sensors": 4, "n_fit": 9}, "n_fit"),
    (PCAMonitor, {"n_sensors": 12, "n_fit": 13}, "n_fit"),
    (PCAMonitor, {"n_sensors": 4, "variance": 1.0}, "variance"),
    (PCAMonitor, {"n_sensors": 4, "variance": 0.0}, "variance"),
    (PCAMonitor, {"n_sensors": 4, "alpha": 0.0}, "alpha"),
    (PCAMonitor, {"n_sensors": 4, "alpha": 0.5}, "alpha"),
    (SmoothedPCAMonitor, {"n_sensors": 0}, "n_sensors"),
    (SmoothedPCAMonitor, {"n_sensors": 12, "n_fit": 13}, "n_fit"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "n_calibrate": 9}, "n_calibrate"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "smoothing": 0.0}, "smoothing"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "smoothing": 1.5}, "smoothing"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "variance": 1.0}, "variance"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "quantile": 1.0}, "quantile"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "quantile": 0.2}, "quantile"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "window": 0}, "window"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "hold": 11, "window": 10}, "hold"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "hold": 0}, "hold"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "slow_block": 1}, "slow_block"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "n_fit": 40, "slow_block": 21}, "slow_block"),
    (SmoothedPCAMonitor, {"n_sensors": 4, "slow_share": 0.0}, "slow_share"),
    (DriftDetector, {"n_sensors": 0}, "n_sensors"),
    (DriftDetector, {"n_sensors": 1, "margin": 1.0}, "margin"),
    (DriftDetector, {"n_sensors": 1, "spans": [0.5]}, "spans"),
    (DriftDetector, {"n_sensors": 1, "warmup": 1}, "warmup"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "argument"),
    BAD_ARGUMENTS,
    ids=[f"{c.__name__}-{a}-{i}" for i, (c, _, a) in enumerate(BAD_ARGUMENTS)],
)
def test_out_of_range_arguments_raise_value_error_naming_them(
    cls: Callable[..., Any], kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        cls(**kwargs)


def test_every_detector_has_a_bad_argument_case() -> None:
    assert {type(fresh(n)) for n in NAMES} <= {c for c, _, _ in BAD_ARGUMENTS}
