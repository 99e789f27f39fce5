"""The drift detector: steps and ramps caught, stationary noise left alone, a fault held
while it lasts, a lasting step accepted, and the vectorised form equal to one detector per
sensor (the shared protocol checks are in test_detector_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from twins.detectors.base import Scan
from twins.detectors.drift import DriftDetector

LEARN = 2000  # normal readings before each change (well past the 600-reading warm-up)


def feed(det: DriftDetector, values: np.ndarray, t0: float = 0.0) -> np.ndarray:
    """Each row through ``process_one`` (score, then learn); the scores, rows x sensors."""
    rows = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return np.stack([det.process_one(Scan.from_values(r, t0 + i)) for i, r in enumerate(rows)])


def learned(
    seed: int, sensors: int = 1, **kwargs: float
) -> tuple[DriftDetector, np.random.Generator]:
    rng = np.random.default_rng(seed)
    det = DriftDetector(sensors, **kwargs)  # type: ignore[arg-type]
    feed(det, rng.normal(size=(LEARN, sensors)))
    return det, rng


def first_alarm(scores: np.ndarray) -> int | None:
    hits = np.flatnonzero(scores >= 0.5)
    return int(hits[0]) if hits.size else None


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_level_shift_of_three_standard_deviations_is_caught_within_fifteen_readings(
    seed: int, sign: float
) -> None:
    det, rng = learned(seed)
    scores = feed(det, sign * 3.0 + rng.normal(size=100), LEARN)[:, 0]
    at = first_alarm(scores)
    assert at is not None and at < 15, at


@pytest.mark.parametrize("seed", range(5))
def test_a_slow_ramp_is_caught_before_it_has_drifted_two_standard_deviations(seed: int) -> None:
    det, rng = learned(seed)
    slope = 0.01  # standard deviations per reading: 1 sigma after 100 readings
    drift = slope * np.arange(1000)
    scores = feed(det, drift + rng.normal(size=1000), LEARN)[:, 0]
    at = first_alarm(scores)
    assert at is not None and drift[at] < 2.0, at


NOISE = {
    "normal": lambda rng, shape: rng.normal(size=shape),
    "student-t, 3 dof": lambda rng, shape: rng.standard_t(3, size=shape),
    "laplace": lambda rng, shape: rng.laplace(size=shape),
    "uniform": lambda rng, shape: rng.uniform(size=shape),
    "lognormal": lambda rng, shape: rng.lognormal(size=shape),
    "quantised": lambda rng, shape: np.round(2 * rng.normal(size=shape)) / 2,
}


@pytest.mark.slow
@pytest.mark.parametrize("noise", list(NOISE))
def test_stationary_noise_raises_few_false_alarms(noise: str) -> None:
    """Bound: at most 1 % of the readings after warm-up at or above the alarm, and at most
    one alarm onset per 2,000 sensor-readings (measured: 0.0-0.3 % and 0-0.4 per 10,000)."""
    rng = np.random.default_rng(11)
    det = DriftDetector(8)
    scores = feed(det, NOISE[noise](rng, (12_000, 8)))[det.warmup :]
    alarm = scores >= 0.5
    onsets = int((alarm[1:] & ~alarm[:-1]).sum())
    assert alarm.mean() <= 0.01
    assert onsets <= alarm.size / 2000, onsets


def test_a_fault_is_not_learned_away_while_it_lasts() -> None:
    det, rng = learned(3)
    fault = 4.0 + rng.normal(size=det.accept_after)
    scores = feed(det, fault, LEARN)[:, 0]
    at = first_alarm(scores)
    assert at is not None and at < 10
    assert (scores[at:] >= 0.5).all(), "the alarm holds while the fault lasts"
    baseline = det.expected(Scan.from_values([0.0], 0.0))[0]
    assert baseline == pytest.approx(0.0, abs=0.3), "the baseline stood still"


def test_a_step_that_lasts_is_accepted_as_the_new_normal() -> None:
    det, rng = learned(4)
    step = 4.0 + rng.normal(size=2000)
    scores = feed(det, step, LEARN)[:, 0]
    at = first_alarm(scores)
    assert at is not None
    end = at + det.accept_after
    assert (scores[at:end] >= 0.5).all()
    assert (scores[end + 1 :] < 0.5).all(), "accepted: quiet at the new level"
    assert det.expected(Scan.from_values([0.0], 0.0))[0] == pytest.approx(4.0, abs=0.3)


def test_a_fault_that_keeps_developing_stays_in_alarm_past_acceptance() -> None:
    """Acceptance moves the baseline to the slow level, but a fault still developing is
    already further on: the alarm never drops while it grows."""
    det, rng = learned(5)
    ramp = 0.03 * np.arange(1500)
    scores = feed(det, ramp + rng.normal(size=1500), LEARN)[:, 0]
    at = first_alarm(scores)
    assert at is not None and at < 100
    assert (scores[at:] >= 0.5).all()
    baseline = det.expected(Scan.from_values([0.0], 0.0))[0]
    assert 0.0 < baseline < ramp[-1], "accepted levels lag the fault"


def test_an_excursion_that_recurs_is_reported_once() -> None:
    """A daily peak the band has not seen alarms the first time; once it has ended by
    itself it is part of the band, and the same peak again is not an anomaly."""
    det, rng = learned(6)
    peak = np.concatenate([6.0 + rng.normal(size=20), rng.normal(size=300)])
    first = feed(det, peak, LEARN)[:, 0]
    again = feed(det, peak, LEARN + len(peak))[:, 0]
    assert (first >= 0.5).any()
    assert (again < 0.5).all()
    bigger = feed(det, 2.0 * peak, LEARN + 2 * len(peak))[:, 0]
    assert (bigger >= 0.5).any(), "a larger excursion still is"


def test_nothing_is_scored_during_the_warm_up_and_a_constant_sensor_alarms_on_change() -> None:
    det = DriftDetector(1, warmup=50)
    scores = feed(det, np.full(50, 7.0))
    assert (scores == 0.0).all()
    assert det.score_one(Scan.from_values([7.0], 50.0)) < 0.5
    assert det.score_one(Scan.from_values([7.01], 50.0)) >= 0.5


def test_scale_free_the_same_alarms_in_any_unit() -> None:
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.normal(size=LEARN), 3.0 + rng.normal(size=200)])
    a = feed(DriftDetector(1), x)[:, 0] >= 0.5
    b = feed(DriftDetector(1), 1000.0 + 250.0 * x)[:, 0] >= 0.5
    assert a.any() and (a == b).mean() > 0.99


def test_sensors_are_independent_and_absent_readings_are_not_learned() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(LEARN + 300, 3))
    x[LEARN:, 1] += 3.0
    x[rng.random(x.shape) < 0.1] = np.nan  # gaps
    together = feed(DriftDetector(3), x)
    for s in range(3):
        alone = DriftDetector(1)
        col = [alone.process_one(Scan.from_values([v], float(i)))[0] for i, v in enumerate(x[:, s])]
        np.testing.assert_allclose(together[:, s], col)
    assert (together[LEARN:, 1] >= 0.5).any() and (together[LEARN:, [0, 2]] < 0.5).all()


FIVE_MIN = 300.0
DAY = 288  # readings of a day, one every five minutes


def daily(rng: np.random.Generator, days: int) -> np.ndarray:
    """A daily cycle (amplitude 10) with noise of 1, one reading every five minutes."""
    phase = 2.0 * np.pi * np.arange(days * DAY) / DAY
    return 10.0 * np.sin(phase) + rng.normal(size=days * DAY)


def feed_5min(det: DriftDetector, values: np.ndarray) -> np.ndarray:
    rows = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return np.stack(
        [det.process_one(Scan.from_values(r, FIVE_MIN * i)) for i, r in enumerate(rows)]
    )[:, 0]


@pytest.mark.parametrize("seed", range(3))
def test_a_missing_daily_cycle_inside_its_normal_range_is_caught_against_yesterday(
    seed: int,
) -> None:
    """A day that stays flat at the cycle's mean never leaves the band of the slow
    baseline, but it is far from the same time yesterday: only the seasonal rows see it."""
    x = daily(np.random.default_rng(seed), 10)
    flat = 6 * DAY + DAY // 8  # from shortly after the seventh day's peak starts rising
    x[flat : flat + DAY // 2] = np.random.default_rng(seed + 100).normal(size=DAY // 2)
    with_season = feed_5min(DriftDetector(1), x)
    without = feed_5min(DriftDetector(1, season_s=None), x)
    assert (with_season[:flat] >= 0.5).mean() < 0.02, "few false alarms over six normal days"
    assert (with_season[flat : flat + DAY // 4] >= 0.5).any()
    assert (without[flat : flat + DAY // 2] < 0.5).all()


def test_a_clean_daily_cycle_raises_few_false_alarms_and_a_fault_does_not_return() -> None:
    """A shift held in alarm is not remembered as normal: once the alarm is over, the
    seasonal rows do not call the following normal days an anomaly."""
    rng = np.random.default_rng(11)
    x = daily(rng, 12)
    start = 8 * DAY
    x[start : start + 60] += 30.0  # five hours far above the cycle
    scores = feed_5min(DriftDetector(1), x)
    assert (scores[:start] >= 0.5).mean() < 0.01
    assert (scores[start : start + 60] >= 0.5).all()
    after = scores[start:] >= 0.5
    ended = start + int(np.argmin(after))  # the first reading out of alarm
    assert ended < start + 2 * DAY
    assert (scores[ended:] < 0.5).all(), "the days after the fault are normal again"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"margin": 1.0}, "margin"),
        ({"spans": []}, "spans"),
        ({"spans": [0.5, 3.0]}, "spans"),
        ({"adapt_rate": 0.0}, "adapt_rate"),
        ({"memory": 1.0}, "memory"),
        ({"warmup": 1}, "warmup"),
        ({"accept_after": 0}, "accept_after"),
        ({"widen_rate": 0.0}, "widen_rate"),
        ({"season_s": 0.0}, "season_s"),
        ({"season_bins": 1}, "season_bins"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(
    kwargs: dict[str, object], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        DriftDetector(1, **kwargs)  # type: ignore[arg-type]


def test_the_cost_per_scan_is_a_fixed_number_of_array_operations() -> None:
    """Not a timing test: scoring and learning 8 sensors costs about what 1 does (the work
    is vectorised over sensors), measured as the same order of magnitude."""
    import time

    costs = {}
    for n in (1, 8):
        det, rng = learned(10, sensors=n)
        rows = rng.normal(size=(500, n))
        start = time.perf_counter()
        feed(det, rows, LEARN)
        costs[n] = time.perf_counter() - start
    assert costs[8] < 3.0 * costs[1]
