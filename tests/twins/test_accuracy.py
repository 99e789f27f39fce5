"""Live accuracy of RUL predictions, on hand-made lives and predictions."""

from __future__ import annotations

import itertools

import pytest

from twins.accuracy import (
    H_MS,
    Life,
    Prediction,
    Scored,
    concordance,
    describe,
    pair,
    summarise,
)


def predicted(machine: str, at_h: float, median: float, lower: float, upper: float, **p: float):
    return Prediction(
        machine_id=machine,
        machine_type="pump",
        model_version="v1",
        predicted_at_ms=round(at_h * H_MS),
        median_hours=median,
        lower_hours=lower,
        upper_hours=upper,
        failure_probability={int(h[1:]): v for h, v in p.items()},
    )


# P-1 fails at 1,000 h, is repaired, and runs on (censored) until 1,500 h.
LIVES = [
    Life("P-1", 0, 1000 * H_MS, failed=True, failure_mode="seal_leak"),
    Life("P-1", 1000 * H_MS, 1500 * H_MS, failed=False),
]


def test_each_prediction_is_paired_with_the_life_it_was_made_in() -> None:
    made = [
        predicted("P-1", 800, 150, 100, 300),  # 200 h before the failure
        predicted("P-1", 1000, 900, 400, 2000),  # just after the repair: the second life
        predicted("P-1", 1600, 900, 400, 2000),  # after every known life: no outcome
        predicted("P-2", 10, 900, 400, 2000),  # no life known for P-2
    ]
    scored = pair(made, LIVES)
    assert [
        (s.prediction.predicted_at_ms // H_MS, s.remaining_hours, s.failed) for s in scored
    ] == [
        (800, 200.0, True),
        (1000, 500.0, False),
    ]


def test_an_outcome_is_known_only_when_the_machine_failed_or_outlived_the_horizon() -> None:
    failed = Scored(predicted("P-1", 0, 1, 0, 2), remaining_hours=100, failed=True)
    censored = Scored(predicted("P-1", 0, 1, 0, 2), remaining_hours=100, failed=False)
    assert failed.outcome_within(168) is True and failed.outcome_within(24) is False
    assert censored.outcome_within(24) is False  # still running 100 h later
    assert censored.outcome_within(168) is None  # stopped watching before 168 h


def test_coverage_error_and_brier_by_hand() -> None:
    made = [
        # failed life, true remaining 200, 100, 30 h
        predicted("P-1", 800, 150, 100, 300, h168=0.2),  # inside; error 50; outcome 0
        predicted("P-1", 900, 300, 150, 600, h168=0.1),  # outside (100 < 150); error 200; 1
        predicted("P-1", 970, 40, 10, 90, h168=0.9),  # inside; error 10; outcome 1
        # censored life: remaining 500 (known 0 at 168 h) and 100 h (unknown at 168 h)
        predicted("P-1", 1000, 900, 400, 2000, h168=0.05),
        predicted("P-1", 1400, 900, 400, 2000, h168=0.05),
    ]
    [a] = summarise(pair(made, LIVES))
    assert (a.model_version, a.machine_type, a.predictions, a.failures) == ("v1", "pump", 5, 1)
    assert a.interval_coverage == pytest.approx(2 / 3)
    assert a.median_abs_error_hours == pytest.approx(50.0)  # median of 50, 200, 10
    assert a.known_outcomes[168] == 4
    brier = ((0.2 - 0) ** 2 + (0.1 - 1) ** 2 + (0.9 - 1) ** 2 + (0.05 - 0) ** 2) / 4
    assert a.brier[168] == pytest.approx(brier)
    # bins [0, 0.1), [0.1, 0.3), [0.9, 1.0]: predicted mean against the observed rate
    assert [(b.low, b.count, b.mean_predicted, b.observed_rate) for b in a.calibration[168]] == [
        (0.0, 1, pytest.approx(0.05), 0.0),
        (0.1, 2, pytest.approx(0.15), 0.5),
        (0.9, 1, pytest.approx(0.9), 1.0),
    ]
    # the last prediction at least a week before the failure (800 h: 200 h ahead)
    [warning] = a.week_ahead
    assert (warning.machine_id, warning.failed_at_ms, warning.p_fail_7d) == (
        "P-1",
        1000 * H_MS,
        0.2,
    )
    line = describe(a)
    assert "5 predictions, 1 failures" in line and "interval coverage 67%" in line


def naive_concordance(scored: list[Scored]) -> float:
    """Harrell's C by its definition, pair by pair."""
    good = total = 0.0
    for a, b in itertools.permutations(scored, 2):
        if a.failed and a.remaining_hours < b.remaining_hours:
            total += 1
            m_a, m_b = a.prediction.median_hours, b.prediction.median_hours
            good += 1.0 if m_a < m_b else 0.5 if m_a == m_b else 0.0
    return good / total


def test_concordance_follows_its_definition() -> None:
    def s(remaining: float, median: float, failed: bool) -> Scored:
        return Scored(predicted("M", 0, median, 0, median * 2), remaining, failed)

    right = [s(10, 20, True), s(50, 60, True), s(90, 80, False)]
    assert concordance(right) == 1.0
    wrong = [s(10, 80, True), s(50, 60, True), s(90, 20, False)]
    assert concordance(wrong) == 0.0
    mixed = [s(10, 30, True), s(20, 25, False), s(30, 20, True), s(40, 40, True), s(35, 40, False)]
    assert concordance(mixed) == pytest.approx(naive_concordance(mixed))
    assert concordance([s(10, 20, False), s(20, 10, False)]) is None  # nothing failed
    assert concordance([]) is None


def test_a_failure_with_no_prediction_a_week_ahead_says_so() -> None:
    made = [predicted("P-1", 950, 40, 10, 90, h168=0.9)]  # 50 h before the failure only
    [a] = summarise(pair(made, LIVES))
    assert [w.p_fail_7d for w in a.week_ahead] == [None]


def test_versions_and_types_are_scored_apart() -> None:
    made = [predicted("P-1", 800, 150, 100, 300)]
    other = Prediction("P-1", "pump", "v2", 850 * H_MS, 100.0, 50.0, 140.0)
    out = summarise(pair([*made, other], LIVES))
    assert [(a.model_version, a.interval_coverage) for a in out] == [("v1", 1.0), ("v2", 0.0)]


def test_a_life_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match=r"life of P-1: end_ms \(1\) is before start_ms \(2\)"):
        Life("P-1", 2, 1, failed=False)
