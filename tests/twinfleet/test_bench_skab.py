"""The SKAB benchmark: its metrics on hand-made cases, its loader's errors, and a run of
the whole bench on a small synthetic recording in SKAB's format (no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twinfleet.benchmarks.anomaly_metrics import AlarmCounts
from twinfleet.benchmarks.skab import (
    FIT_ROWS,
    SENSORS,
    SkabFormatError,
    flag_rows,
    load_recording,
    main,
    recording_paths,
)

# -- metrics ----------------------------------------------------------------------------------


def test_counts_of_a_hand_made_case() -> None:
    flagged = [0, 1, 1, 0, 0, 1, 1, 0]
    anomalous = [0, 0, 1, 1, 1, 1, 0, 0]
    c = AlarmCounts.of(np.array(flagged, bool), np.array(anomalous, bool))
    assert c == AlarmCounts(tp=2, fp=2, fn=2, tn=2)
    assert c.f1 == 0.5  # 2*2 / (2*2 + 2 + 2)
    assert c.false_alarm_rate == 0.5  # 2 / (2 + 2)
    assert c.missed_alarm_rate == 0.5


def test_perfect_and_silent_detectors() -> None:
    labels = [False, True, True, False]
    perfect = AlarmCounts.of(labels, labels)
    assert (perfect.f1, perfect.false_alarm_rate, perfect.missed_alarm_rate) == (1.0, 0.0, 0.0)
    silent = AlarmCounts.of([False] * 4, labels)
    assert (silent.f1, silent.false_alarm_rate, silent.missed_alarm_rate) == (0.0, 0.0, 1.0)
    always = AlarmCounts.of([True] * 4, labels)
    assert always.f1 == pytest.approx(2 / 3)  # 2*2 / (2*2 + 2 + 0)
    assert (always.false_alarm_rate, always.missed_alarm_rate) == (1.0, 0.0)


def test_summed_over_files_adds_counts_before_the_ratios() -> None:
    a = AlarmCounts.of([True, False, False, False], [True, True, True, True])  # MAR 3/4
    b = AlarmCounts.of([True, True], [True, True])  # MAR 0
    total = a + b
    assert total == AlarmCounts(tp=3, fp=0, fn=3, tn=0)
    assert total.missed_alarm_rate == 0.5  # 3 / 6, not the mean of 0.75 and 0
    assert total.f1 == pytest.approx(6 / 9)
    c = AlarmCounts.of([True, False, False], [False, False, False])  # FAR 1/3
    assert (total + c).false_alarm_rate == pytest.approx(1 / 3)
    assert (total + c).rows == 9


def test_empty_denominators_give_zero_and_bad_shapes_raise() -> None:
    nothing = AlarmCounts()
    assert (nothing.f1, nothing.false_alarm_rate, nothing.missed_alarm_rate) == (0, 0, 0)
    with pytest.raises(ValueError, match="equally long"):
        AlarmCounts.of([True, False], [True])


# -- synthetic SKAB files ---------------------------------------------------------------------

HEADER = ";".join(["datetime", *(c for c, *_ in SENSORS), "anomaly", "changepoint"])
ANOMALY = slice(560, 760)


def synthetic_rig(
    rows: int = 900, seed: int = 11, fault: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Readings like the rig's (noisy vibration, current and voltage, a flow meter reading
    whole litres, temperatures drifting) and labels; the flow drops by 1.5 L/min and the
    pressure rises while the 'valve' is closed (rows 560..759), if there is a ``fault``."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    values = np.column_stack(
        [
            0.0265 + 0.0003 * rng.normal(size=rows),
            0.040 + 0.0005 * rng.normal(size=rows),
            1.0 + 0.25 * rng.normal(size=rows),
            0.1 + 0.2 * rng.normal(size=rows),
            75.0 + 2.0 * np.sin(t / 150.0),  # slow drift
            25.8 + 0.001 * t,
            230.0 + 8.0 * rng.normal(size=rows),
            np.round(32.0 + 0.4 * rng.normal(size=rows)),
        ]
    )
    anomalous = np.zeros(rows, dtype=bool)
    if not fault:
        return values, anomalous
    anomalous[ANOMALY] = True
    values[ANOMALY, 7] = np.round(30.5 + 0.4 * rng.normal(size=anomalous[ANOMALY].size))
    values[ANOMALY, 3] += 0.3
    return values, anomalous


def write_skab(
    path: Path, values: np.ndarray, anomalous: np.ndarray, labelled: bool = True
) -> Path:
    """A SKAB CSV; without labels like SKAB's anomaly-free recording (no 'anomaly' and
    'changepoint' columns)."""
    start = np.datetime64("2020-03-09T10:14:33")
    lines = [HEADER if labelled else HEADER.rsplit(";", 2)[0]]
    for i, (row, label) in enumerate(zip(values, anomalous, strict=True)):
        stamp = str(start + np.timedelta64(i, "s")).replace("T", " ")
        cells = ";".join(f"{v:.6g}" for v in row)
        lines.append(f"{stamp};{cells};{float(label)};0.0" if labelled else f"{stamp};{cells}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_loader_reads_a_skab_file(tmp_path: Path) -> None:
    values, anomalous = synthetic_rig()
    rec = load_recording(write_skab(tmp_path / "0.csv", values, anomalous))
    assert rec.values.shape == (900, 8) and len(rec) == 900
    np.testing.assert_allclose(
        rec.values, np.array([[float(f"{v:.6g}") for v in r] for r in values])
    )
    assert np.array_equal(rec.anomalous, anomalous)
    assert (np.diff(rec.times_ms) == 1000).all()


def test_the_twin_flags_the_closed_valve_and_not_the_normal_running(tmp_path: Path) -> None:
    values, anomalous = synthetic_rig()
    flagged, seconds = flag_rows(load_recording(write_skab(tmp_path / "0.csv", values, anomalous)))
    assert seconds > 0
    assert not flagged[:FIT_ROWS].any(), "nothing flagged while learning"
    scored = AlarmCounts.of(flagged[FIT_ROWS:], anomalous[FIT_ROWS:])
    assert scored.missed_alarm_rate < 0.1
    assert scored.false_alarm_rate < 0.1
    # no look-ahead: the alarm starts after the valve closes, never before
    first = int(np.flatnonzero(flagged)[0])
    assert ANOMALY.start <= first < ANOMALY.start + 15


def test_main_prints_per_file_and_summed_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values, anomalous = synthetic_rig()
    folder = tmp_path / "valve"
    folder.mkdir()
    write_skab(folder / "1.csv", values, anomalous)
    write_skab(folder / "0.csv", *synthetic_rig(seed=12))
    (folder / "notes.txt").write_text("not read")
    assert [p.name for p in recording_paths([folder])] == ["0.csv", "1.csv"]
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "0.csv" in out and "1.csv" in out and "all 2 file(s)" in out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summed: F1 ")
    f1 = float(summary.split("F1 ")[1].split(",")[0])
    assert f1 > 0.9
    assert "us per reading" in summary


def test_a_recording_without_labels_is_normal_running_and_its_flagged_share_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like SKAB's anomaly-free file: no label columns, every row normal. The rig's level
    moves after the learning rows (vibration by ten of its spreads, current by two, over
    1,200 s): a drift the twin follows (a model fixed at the fit flags nearly every row
    after it)."""
    values, _ = synthetic_rig(rows=2000, seed=14, fault=False)
    ramp = np.clip((np.arange(2000) - FIT_ROWS) / 1200.0, 0.0, 1.0)
    values[:, 0] += 0.003 * ramp
    values[:, 2] += 0.5 * ramp
    path = write_skab(tmp_path / "anomaly-free.csv", values, np.zeros(2000, bool), False)
    rec = load_recording(path)
    assert not rec.anomalous.any() and len(rec) == 2000
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summed: F1 -, FAR ")
    share = float(summary.split("flagged ")[1].split(" %")[0])
    assert f"of {2000 - FIT_ROWS} scored rows" in summary
    flagged, _ = flag_rows(rec)
    assert share == pytest.approx(round(100 * flagged[FIT_ROWS:].mean(), 1))
    assert share < 5.0


# -- bad input --------------------------------------------------------------------------------


def _bad(tmp_path: Path, edit: str) -> Path:
    values, anomalous = synthetic_rig(rows=450)
    path = write_skab(tmp_path / "bad.csv", values, anomalous)
    lines = path.read_text().splitlines()
    if edit == "missing column":
        lines = [";".join(line.split(";")[:-3] + line.split(";")[-2:]) for line in lines]
    elif edit == "non-numeric":
        cells = lines[7].split(";")
        cells[3] = "n/a"
        lines[7] = ";".join(cells)
    elif edit == "too short":
        lines = lines[:FIT_ROWS]
    elif edit == "bad label":
        lines[9] = lines[9].rsplit(";", 2)[0] + ";2.0;0.0"
    elif edit == "time goes back":
        lines[20] = lines[10].split(";")[0] + ";" + lines[20].split(";", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing column", "missing column(s) 'Volume Flow RateRMS'"),
        ("non-numeric", "non-numeric value 'n/a' in column 'Current' on data row 7"),
        ("too short", "399 rows; at least 401 are needed"),
        ("bad label", "column 'anomaly' must be 0 or 1, got 2 on data row 9"),
        ("time goes back", "time stamps must increase; data row 20 does not"),
    ],
)
def test_bad_files_exit_2_naming_file_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, message: str
) -> None:
    path = _bad(tmp_path, edit)
    with pytest.raises(SkabFormatError, match="^" + str(path)):
        load_recording(path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: " in err and message in err
    assert "Traceback" not in err


def test_missing_paths_empty_folders_and_empty_files_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "nowhere.csv")]) == 2
    assert "nowhere.csv: no such file or folder" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "folder holds no .csv files" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main([str(empty)]) == 2
    assert "empty.csv: file is empty" in capsys.readouterr().err
