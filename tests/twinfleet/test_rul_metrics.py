"""The RUL scoring functions on hand-made cases with answers worked out by hand."""

from __future__ import annotations

import math

import pytest

from twinfleet.benchmarks.rul_metrics import interval_coverage, mean_width, phm08_score, rmse


def test_rmse_by_hand() -> None:
    # errors 3 and -4: sqrt((9 + 16) / 2)
    assert rmse([10, 20], [13, 16]) == pytest.approx(math.sqrt(12.5))
    assert rmse([5.0], [5.0]) == 0.0


def test_phm08_score_punishes_late_more_than_early() -> None:
    early = phm08_score([50], [37])  # d = -13: exp(1) - 1
    late = phm08_score([50], [60])  # d = +10: exp(1) - 1
    assert early == pytest.approx(math.e - 1)
    assert late == pytest.approx(math.e - 1)
    # same size of error, late costs more
    assert phm08_score([50], [60]) > phm08_score([50], [40])
    # summed over machines, and zero when exact
    assert phm08_score([50, 50, 10], [37, 60, 10]) == pytest.approx(2 * (math.e - 1))


def test_interval_coverage_and_width_by_hand() -> None:
    assert interval_coverage([10, 50, 30], lower=[5, 10, 30], upper=[15, 40, 31]) == 2 / 3
    assert mean_width([5, 10], [15, 40]) == 20.0


@pytest.mark.parametrize(
    ("true", "pred", "match"),
    [
        ([1, 2], [1], "one length"),
        ([], [], "non-empty"),
        ([1, float("nan")], [1, 2], "finite"),
    ],
)
def test_bad_input_is_refused(true: list[float], pred: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rmse(true, pred)


def test_inverted_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="lower bound"):
        interval_coverage([10], lower=[20], upper=[5])
