"""The NAB benchmark: its scorer on hand-made cases (scores worked out by hand), the scorer
against NAB's own published per-file and per-row scores (needs the shared NAB folder),
the loader's errors, and a whole run on a small synthetic NAB folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twinfleet.benchmarks import nab
from twinfleet.benchmarks.nab_scoring import (
    LOW_FN,
    LOW_FP,
    PROFILES,
    STANDARD,
    NabScore,
    Profile,
    probationary_rows,
    row_scores,
    scaled_sigmoid,
    score_file,
)
from twinfleet.cli import main as cli_main

# -- the scorer by hand -----------------------------------------------------------------------
#
# One 200-row file, one window on rows 100..109 (width 10). Probation: floor(0.15 * 200) =
# 30 rows. sigma(p) = 2 / (1 + exp(5 p)) - 1; a detection in the window at row i has
# p = -(109 - i + 1) / 10 and is worth sigma(p) / sigma(-1), sigma(-1) = 0.9866143.

N, WINDOW = 200, [(100, 109)]


def hits(*rows: int, n: int = N) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(rows)] = True
    return out


def test_scaled_sigmoid_at_its_landmarks() -> None:
    got = scaled_sigmoid([-1.0, -0.5, 0.0, 1.0, 3.5])
    np.testing.assert_allclose(got, [0.9866143, 0.8482836, 0.0, -0.9866143, -1.0], atol=1e-7)


def test_probationary_period_is_15_percent_capped_at_750_rows() -> None:
    assert probationary_rows(200) == 30
    assert probationary_rows(4032) == 604  # floor(604.8)
    assert probationary_rows(18050) == 750


@pytest.mark.parametrize(
    ("row", "worth"),
    [
        (100, 1.0),  # first row of the window: p = -1, the full tpWeight
        (104, 0.9174287),  # p = -0.6: sigma = 0.9051483, / 0.9866143
        (109, 0.2482415),  # last row: p = -0.1: sigma = 0.2449187, / 0.9866143
    ],
)
def test_one_detection_in_the_window(row: int, worth: float) -> None:
    for profile in PROFILES:  # tpWeight is 1 in all three
        score = score_file(hits(row), WINDOW, profile)
        assert score.raw == pytest.approx(worth, abs=1e-7)
        assert (score.detected, score.false_alarms, score.missed) == (1, 0, 0)


def test_only_the_best_detection_of_a_window_counts() -> None:
    score = score_file(hits(100, 104, 109), WINDOW, STANDARD)
    assert score.raw == pytest.approx(1.0)
    assert score.detected == 1 and score.false_alarms == 0


def test_false_alarms_before_and_after_the_window() -> None:
    # Before any window: -fpWeight.
    assert score_file(hits(100, 50), WINDOW, STANDARD).raw == pytest.approx(1.0 - 0.11)
    assert score_file(hits(100, 50), WINDOW, LOW_FP).raw == pytest.approx(1.0 - 0.22)
    # Just after it (row 110): p = (110 - 109) / (10 - 1) = 0.1111, sigma = -0.2708471.
    assert score_file(hits(100, 110), WINDOW, STANDARD).raw == pytest.approx(
        1.0 - 0.11 * 0.2708471, abs=1e-7
    )
    # Far after it (row 150): p = 41 / 9 > 3, so -1: the full -fpWeight.
    far = score_file(hits(100, 150), WINDOW, STANDARD)
    assert far.raw == pytest.approx(1.0 - 0.11)
    assert far.false_alarms == 1


def test_a_missed_window_costs_fn_weight() -> None:
    nothing = hits(n=N) & False
    assert score_file(nothing, WINDOW, STANDARD).raw == -1.0
    assert score_file(nothing, WINDOW, LOW_FN).raw == -2.0
    missed = score_file(hits(50), WINDOW, STANDARD)
    assert missed.raw == pytest.approx(-1.0 - 0.11)
    assert (missed.detected, missed.missed, missed.false_alarms) == (0, 1, 1)


def test_the_probationary_period_is_not_scored() -> None:
    assert score_file(hits(20), WINDOW, STANDARD).raw == pytest.approx(-1.0)  # row 20 < 30
    early = [(5, 15), (100, 109)]  # the first window lies wholly in the probation
    score = score_file(hits(10, 100), early, STANDARD)
    assert score.raw == pytest.approx(1.0)
    assert (score.windows, score.scored_windows) == (2, 1)
    assert score_file(hits(n=N) & False, early, STANDARD).null == -1.0


def test_normalised_over_all_files_together() -> None:
    a = score_file(hits(104, 50), WINDOW, STANDARD)  # 0.9174287 - 0.11
    assert a.normalised == pytest.approx(100 * (0.8074287 + 1) / 2, abs=1e-5)  # 90.371
    b = score_file(hits(n=N) & False, WINDOW, STANDARD)  # missed: the null detector
    assert b.normalised == 0.0
    total = score_file(hits(100), WINDOW, STANDARD) + b  # raw 1 - 1 over two windows
    assert total.normalised == pytest.approx(100 * (0.0 + 2) / (2 + 2))  # 50
    assert math.isnan(score_file(hits(50), [], STANDARD).normalised)  # no window: undefined
    with pytest.raises(ValueError, match="profiles"):
        _ = a + score_file(hits(104), WINDOW, LOW_FP)


def test_row_scores_give_each_row_its_worth_and_window() -> None:
    worth, window_of = row_scores(N, WINDOW, STANDARD)
    assert worth[0] == -0.11 and worth[99] == -0.11 and window_of[99] == -1
    assert worth[100] == pytest.approx(1.0) and window_of[100] == 0
    assert worth[110] == pytest.approx(-0.11 * 0.2708471, abs=1e-7) and window_of[110] == -1


def test_bad_windows_and_profiles_raise() -> None:
    with pytest.raises(ValueError, match="windows"):
        score_file(hits(1), [(100, 90)], STANDARD)
    with pytest.raises(ValueError, match="windows"):
        score_file(hits(1), [(10, 20), (15, 30)], STANDARD)
    with pytest.raises(ValueError, match="windows"):
        score_file(hits(1), [(150, 250)], STANDARD)
    with pytest.raises(ValueError, match="fp_weight"):
        Profile("x", 1.0, -0.1, 1.0)
    with pytest.raises(ValueError, match="fnWeight"):
        Profile.from_cost_matrix("x", {"tpWeight": 1, "fpWeight": 0.1})


# -- the scorer against NAB's own numbers ------------------------------------------------------

needs_nab = pytest.mark.skipif(
    not nab.is_nab_root(nab.DEFAULT_ROOT), reason=f"no NAB data at {nab.DEFAULT_ROOT}"
)


@needs_nab
def test_htm_per_file_raw_scores_are_those_nab_published() -> None:
    """The numenta results files carry NAB v1.0's per-row score columns whose sum over a
    file is that file's raw score at the published threshold of the profile."""
    root = nab.DEFAULT_ROOT
    series = nab.load_corpus(root)
    thresholds = nab.load_thresholds(root, "numenta")
    for s in series:
        group, name = s.key.split("/")
        frame = pd.read_csv(root / "results" / "numenta" / group / f"numenta_{name}")
        for p in PROFILES:
            flagged = frame["anomaly_score"].to_numpy() >= thresholds[p.name]
            ours = score_file(flagged, s.windows, p).raw
            assert ours == pytest.approx(frame[f"S(t)_{p.name}"].sum(), abs=1e-9), (s.key, p)


@needs_nab
def test_artime_per_row_scores_are_those_nab_published() -> None:
    """The ARTime results files carry NAB v1.1's per-row sweep score of every row."""
    root = nab.DEFAULT_ROOT
    for s in nab.load_corpus(root):
        group, name = s.key.split("/")
        frame = pd.read_csv(root / "results" / "ARTime" / group / f"ARTime_{name}")
        for p in PROFILES:
            worth, _ = row_scores(len(s), s.windows, p)
            np.testing.assert_allclose(worth, frame[f"S(t)_{p.name}"], atol=1e-12)


# -- a synthetic NAB folder ---------------------------------------------------------------------

ROWS = 1600
T0 = pd.Timestamp("2024-03-01 00:00:00")


def _stamp(i: int) -> str:
    return str(T0 + pd.Timedelta(minutes=5 * i))


def write_nab(root: Path) -> None:
    """Two series (one steps up at row 1200, one is plain noise), their windows, the
    profiles, thresholds and two published detectors' results."""
    rng = np.random.default_rng(5)
    stamps = [_stamp(i) for i in range(ROWS)]
    step = 10.0 + rng.normal(size=ROWS)
    step[1200:] += 6.0
    series = {"g/step.csv": step, "g/noise.csv": 10.0 + rng.normal(size=ROWS)}
    windows = {
        "g/step.csv": [[_stamp(1150) + ".000000", _stamp(1250) + ".000000"]],
        "g/noise.csv": [],
    }
    (root / "g").mkdir(parents=True)
    for key, values in series.items():
        pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(root / key, index=False)
    (root / "combined_windows.json").write_text(json.dumps(windows))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_text(
        json.dumps(
            {
                p.name: {
                    "CostMatrix": {
                        "tpWeight": p.tp_weight,
                        "fpWeight": p.fp_weight,
                        "fnWeight": p.fn_weight,
                        "tnWeight": 1.0,
                    }
                }
                for p in PROFILES
            }
        )
    )
    thresholds = {
        d: {p.name: {"threshold": 0.5, "score": 0.0} for p in PROFILES} for d in nab.PUBLISHED
    }
    (root / "config" / "thresholds.json").write_text(json.dumps(thresholds))
    for d in nab.PUBLISHED:
        (root / "results" / d / "g").mkdir(parents=True)
        for key in series:
            score = np.zeros(ROWS)
            if key == "g/step.csv":
                score[1150] = 0.9  # a perfect published detector: the window's first row
            frame = pd.DataFrame(
                {"timestamp": stamps, "value": series[key], "anomaly_score": score}
            )
            frame.to_csv(root / "results" / d / "g" / f"{d}_{key.split('/')[1]}", index=False)


def test_loader_reads_rows_windows_and_sampling(tmp_path: Path) -> None:
    write_nab(tmp_path)
    series = nab.load_corpus(tmp_path)
    assert [s.key for s in series] == ["g/step.csv", "g/noise.csv"]
    step = series[0]
    assert step.windows.tolist() == [[1150, 1250]]
    assert step.sample_period_s == 300.0 and step.group == "g"
    assert nab.nab_machine(step).sensors[0].stuck_after == 288  # a day of 5-minute readings
    published = nab.published_scores(tmp_path, "numenta", step)
    assert published[1150] == 0.9


def test_repeated_time_stamps_are_spread_one_millisecond_apart(tmp_path: Path) -> None:
    write_nab(tmp_path)
    frame = pd.read_csv(tmp_path / "g/noise.csv")
    frame.loc[11:13, "timestamp"] = frame.loc[10, "timestamp"]  # a daylight-saving repeat
    frame.to_csv(tmp_path / "g/noise.csv", index=False)
    times = nab.load_corpus(tmp_path, ["g/noise.csv"])[0].times_ms
    assert (np.diff(times) > 0).all()
    assert times[11] - times[10] == 1 and times[13] - times[10] == 3


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("window", "not the time of any row"),
        ("timestamp", "bad time stamp"),
        ("column", "missing column"),
        ("results", "not those of"),
        ("thresholds", "no numenta threshold"),
    ],
)
def test_bad_nab_folders_give_an_error_naming_the_problem(
    tmp_path: Path, breakage: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_nab(tmp_path)
    if breakage == "window":
        (tmp_path / "combined_windows.json").write_text(
            json.dumps({"g/step.csv": [["2024-03-01 00:02:00", _stamp(5)]], "g/noise.csv": []})
        )
    elif breakage == "timestamp":
        frame = pd.read_csv(tmp_path / "g/step.csv")
        frame.loc[3, "timestamp"] = "yesterday"
        frame.to_csv(tmp_path / "g/step.csv", index=False)
    elif breakage == "column":
        pd.read_csv(tmp_path / "g/step.csv").rename(columns={"value": "v"}).to_csv(
            tmp_path / "g/step.csv", index=False
        )
    elif breakage == "results":
        path = tmp_path / "results/ARTime/g/ARTime_noise.csv"
        pd.read_csv(path).iloc[:-1].to_csv(path, index=False)
    else:
        (tmp_path / "config/thresholds.json").write_text(json.dumps({"numenta": {}}))
    assert nab.main([str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_whole_bench_on_a_synthetic_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_nab(tmp_path)
    series = nab.load_corpus(tmp_path)
    runs = [nab.run_twin(s) for s in series]
    step, noise = runs
    assert step.reported[1200:1215].any(), "the step is reported within 15 readings"
    assert not step.reported[:1200].any() and not noise.reported.any(), "no false alarm"
    assert step.reported.sum() <= 3
    twin = nab.score_twin("twin", series, runs, PROFILES)
    assert twin.total("standard").detected == 1 and twin.total("standard").false_alarms == 0
    # Through the command line: the NAB folder as the only PATH, and with --nab.
    assert cli_main(["bench", "anomaly", "--nab", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    standard = next(line.split()[1:] for line in out.splitlines() if line.startswith("standard"))
    assert standard[1:] == ["100.0", "100.0"], "HTM and ARTime: perfect here"
    assert 90.0 < float(standard[0]) < 100.0  # the twin: at the step, mid-window
    assert cli_main(["bench", "anomaly", str(tmp_path)]) == 0
    assert "reward_low_FN_rate" in capsys.readouterr().out


def test_scores_add_per_profile() -> None:
    a = NabScore(STANDARD, raw=1.0, windows=1, scored_windows=1, detected=1)
    b = NabScore(STANDARD, raw=-1.0, windows=2, scored_windows=2, false_alarms=3)
    total = a + b
    assert (total.raw, total.windows, total.detected, total.false_alarms) == (0.0, 3, 1, 3)
    assert total.null == -3.0 and total.perfect == 3.0
