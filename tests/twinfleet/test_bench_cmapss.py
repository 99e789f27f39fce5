"""The C-MAPSS benchmark end to end on small synthetic subsets in the NASA file format
(CI has no copy of the real data), and its refusal of files in the wrong format."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from twinfleet.benchmarks.cmapss import (
    CmapssFormatError,
    evaluate,
    load_engines,
    load_true_rul,
    main,
)
from twinfleet.cli import main as cli_main

REGIME_POINTS = np.array(
    [[0, 0, 100], [10, 0.25, 100], [20, 0.7, 100], [25, 0.62, 60], [35, 0.84, 100], [42, 0.84, 100]]
)


def engine_rows(unit: int, life: int, cut: int, regimes: int, rng: np.random.Generator) -> list:
    """``cut`` cycles of an engine that fails after ``life``: 21 sensors, 4 of them show
    wear that grows over the last ~60 cycles, the rest are noise or constant."""
    rows = []
    offset = rng.normal(0, 0.3, 21)  # manufacturing variation
    for cycle in range(1, cut + 1):
        r = rng.integers(0, regimes)
        settings = REGIME_POINTS[r] + rng.normal(0, 0.001, 3)
        level = 100.0 * (1 + r) + np.arange(21)  # set by the operating point
        wear = np.exp((cycle - life) / 20.0)
        sensors = level + offset + rng.normal(0, 0.3, 21)
        sensors[[1, 5, 9]] = 7.0 + r  # constant within a regime
        sensors[[2, 3, 6, 10]] += np.array([8.0, 6.0, -7.0, 5.0]) * wear
        rows.append([unit, cycle, *settings, *sensors])
    return rows


def write_subset(folder: Path, regimes: int, seed: int = 0) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    train, test, truth = [], [], []
    for unit in range(1, 31):
        life = int(rng.integers(90, 170))
        train += engine_rows(unit, life, life, regimes, rng)
    for unit in range(1, 21):
        life = int(rng.integers(90, 170))
        cut = int(rng.integers(35, life - 5))
        test += engine_rows(unit, life, cut, regimes, rng)
        truth.append(life - cut)
    paths = folder / "train_FDX.txt", folder / "test_FDX.txt", folder / "RUL_FDX.txt"
    np.savetxt(paths[0], np.array(train), fmt="%.4f")
    np.savetxt(paths[1], np.array(test), fmt="%.4f")
    np.savetxt(paths[2], np.array(truth), fmt="%d")
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("regimes", [1, 6])
def test_runs_end_to_end_and_predicts_wear(tmp_path: Path, regimes: int) -> None:
    paths = write_subset(tmp_path, regimes)
    out = evaluate(*paths, log=False)
    truth = np.loadtxt(paths[2])
    # wear is plain in four sensors: a working pipeline predicts far better than the
    # spread of the true RULs (20-36 cycles with these seeds)
    assert out.rmse < 15
    assert out.rmse < 0.65 * truth.std()
    assert 0.5 <= out.coverage <= 1.0
    assert np.all(out.lower <= out.median) and np.all(out.median <= out.upper)
    # regimes were found, the constant sensors left out, the wear index is a channel
    assert out.model.features[0].startswith("s1.")
    assert not any(f.startswith(("s2.", "s6.", "s10.")) for f in out.model.features)
    assert "wear_index.drift" in out.model.features
    # what a median that stops at the cap could reach, from the truth and the cap alone
    capped = np.minimum(truth, 125.0)
    assert out.beyond_cap == int(np.sum(truth > 125))
    assert out.rmse_floor == pytest.approx(float(np.sqrt(np.mean((capped - truth) ** 2))))
    # and the figures against the capped truth, from the medians and the truth alone
    assert out.rmse_capped_truth == pytest.approx(
        float(np.sqrt(np.mean((out.median - capped) ** 2)))
    )
    d = out.median - capped
    assert out.score_capped_truth == pytest.approx(
        float(np.sum(np.where(d < 0, np.exp(-d / 13) - 1, np.exp(d / 10) - 1)))
    )


@pytest.mark.slow
def test_main_and_the_cli_print_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in write_subset(tmp_path, 1)]
    assert cli_main(["bench", "rul", *paths, "--cap", "100"]) == 0
    text = capsys.readouterr().out
    assert "capped at 100" in text
    assert "operating regimes: 1" in text
    for figure in ("RMSE", "PHM'08 score", "90 % interval", "mean interval width"):
        assert figure in text
    assert "and the wear index" in text
    assert re.search(r"true RUL above the cap \(100\) for \d+ of 20 test engines", text)
    assert re.search(
        r"against the true RUL capped at 100 as well .*: RMSE \d+\.\d+ \| PHM'08", text
    )
    rmse = float(re.search(r"RMSE (\d+\.\d+)", text).group(1))  # type: ignore[union-attr]
    assert rmse < 15


def test_wrong_files_get_an_error_naming_file_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("1 1 0 0 100 5 5\n")
    with pytest.raises(CmapssFormatError, match=r"short\.txt: expected 26 columns, found 7"):
        load_engines(short)
    words = tmp_path / "words.txt"
    words.write_text("unit cycle\n")
    with pytest.raises(CmapssFormatError, match=r"words\.txt: not numeric"):
        load_engines(words)
    backwards = tmp_path / "backwards.txt"
    np.savetxt(backwards, [[1, 2, *[0] * 24], [1, 1, *[0] * 24]])
    with pytest.raises(CmapssFormatError, match="unit 1 are not increasing"):
        load_engines(backwards)
    split = tmp_path / "split.txt"
    np.savetxt(split, [[1, 1, *[0] * 24], [2, 1, *[0] * 24], [1, 2, *[0] * 24]])
    with pytest.raises(CmapssFormatError, match="unit 1 are not contiguous"):
        load_engines(split)
    rul = tmp_path / "rul.txt"
    rul.write_text("10\n20\n")
    with pytest.raises(CmapssFormatError, match="expected 3 values"):
        load_true_rul(rul, 3)
    with pytest.raises(CmapssFormatError, match="cannot read"):
        load_engines(tmp_path / "absent.txt")
    # through main: exit code 2, the message on stderr, no traceback
    assert main([str(short), str(short), str(rul)]) == 2
    err = capsys.readouterr().err
    assert "short.txt: expected 26 columns" in err
    assert "Traceback" not in err
