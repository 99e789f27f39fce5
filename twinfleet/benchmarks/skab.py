"""The SKAB anomaly benchmark run through a machine twin, as a live stream.

Each SKAB recording (a semicolon-separated CSV of the Skoltech water-circulation rig: eight
sensors, an ``anomaly`` label per row) is replayed row by row into a fresh
:class:`~twins.machine.MachineTwin` of the rig with ``apply_arrays``. The twin's detectors
learn on the first :data:`FIT_ROWS` rows (SKAB's protocol: those rows are taken as
normal); every later row is scored when it arrives, before the next one exists (no
look-ahead), and counts as flagged when the twin's score of that scan reaches the alarm
(0.5). Rows are scored with :mod:`twinfleet.benchmarks.anomaly_metrics` (F1, false- and
missed-alarm rate, counts summed over the recordings), and the share of scored rows
flagged is printed too. A recording without an ``anomaly`` column (SKAB's anomaly-free
one) is normal running throughout: every flagged row is a false alarm. The cost is the
time spent inside the twin only (``time.perf_counter`` around each ``apply_arrays``).

The twin runs the detectors of :data:`SKAB_CONFIG`: the plant-file rules (the rig has no
limits, and its quantised flow and pressure readings repeat legitimately, so flatline
checks are off) and the smoothed PCA monitor with its defaults (limits cross-validated on
the 400 learning rows, a baseline that follows slow drift but not a fault). The
per-sensor robust z-score is left out: on the quantised flow and pressure its MAD is 0,
so every change of one step is "infinitely" far from the median.

    python bench/anomaly_skab.py ../shared/data/skab/valve1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.plant import MachineSpec, SensorSpec
from twinfleet.benchmarks.anomaly_metrics import AlarmCounts
from twins.detectors.base import ALARM
from twins.detectors.smoothed import SmoothedPCAMonitor
from twins.machine import MachineTwin, TwinConfig

FIT_ROWS = 400
"""Rows of each recording the detectors learn from before anything is scored."""

TIME_COLUMN = "datetime"
LABEL_COLUMN = "anomaly"
SENSORS: tuple[tuple[str, str, str, str], ...] = (
    # SKAB column, sensor name on the twin, kind, unit
    ("Accelerometer1RMS", "accelerometer1_rms", "vibration", "g"),
    ("Accelerometer2RMS", "accelerometer2_rms", "vibration", "g"),
    ("Current", "current", "current", "A"),
    ("Pressure", "pressure", "pressure", "bar"),
    ("Temperature", "temperature", "temperature", "degC"),
    ("Thermocouple", "thermocouple", "temperature", "degC"),
    ("Voltage", "voltage", "voltage", "V"),
    ("Volume Flow RateRMS", "volume_flow_rate_rms", "flow", "L/min"),
)
SKAB_CONFIG = TwinConfig(smoothed_pca=True, zscore=False)
if SmoothedPCAMonitor(len(SENSORS)).n_learn != FIT_ROWS:  # pragma: no cover - a broken edit
    raise RuntimeError("the smoothed PCA monitor must learn on exactly FIT_ROWS rows")


class SkabFormatError(ValueError):
    """A file is not a SKAB recording this benchmark can score (the message says why)."""


@dataclass(frozen=True)
class SkabRecording:
    """One SKAB file: epoch-millisecond times, sensor readings (rows x 8), labels."""

    path: Path
    times_ms: np.ndarray
    values: np.ndarray
    anomalous: np.ndarray

    def __len__(self) -> int:
        return len(self.times_ms)


@dataclass(frozen=True)
class FileResult:
    """The score of one recording and the time the twin took for it."""

    path: Path
    counts: AlarmCounts
    rows: int
    twin_seconds: float


def skab_rig() -> MachineSpec:
    """The SKAB test rig (motor, pump, circulation loop) as a machine with eight sensors."""
    return MachineSpec(
        id="SKAB-rig",
        name="SKAB water-circulation test rig",
        type="skab-rig",
        kind="pump",
        site="skoltech",
        line="circulation-loop",
        sensors=[
            SensorSpec(name=name, kind=kind, unit=unit, stuck_after=0, sample_period_s=1.0)
            for _, name, kind, unit in SENSORS
        ],
    )


def recording_paths(paths: list[str | Path]) -> list[Path]:
    """The CSV files named, and the ``*.csv`` files directly inside the folders named
    (in numeric order of their names where they are numbers, like SKAB's ``0.csv``...)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.csv"), key=_natural)
            if not found:
                raise SkabFormatError(f"{p}: folder holds no .csv files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise SkabFormatError(f"{p}: no such file or folder")
    return out


def _natural(p: Path) -> tuple[int, int, str]:
    return (0, int(p.stem), p.name) if p.stem.isdigit() else (1, 0, p.name)


def load_recording(path: str | Path) -> SkabRecording:
    """Read one SKAB CSV, checking its format; :class:`SkabFormatError` says what is wrong."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise SkabFormatError(f"{path}: cannot be read as a SKAB CSV ({exc})") from None
    except pd.errors.EmptyDataError:
        raise SkabFormatError(f"{path}: file is empty") from None
    labelled = LABEL_COLUMN in frame.columns
    needed = [TIME_COLUMN, *(c for c, *_ in SENSORS)]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SkabFormatError(
            f"{path}: not SKAB format, missing column(s) {', '.join(map(repr, missing))} "
            "(expected ';'-separated columns "
            + ", ".join(needed)
            + f", and {LABEL_COLUMN} where rows are labelled)"
        )
    if len(frame) < FIT_ROWS + 1:
        raise SkabFormatError(
            f"{path}: {len(frame)} rows; at least {FIT_ROWS + 1} are needed "
            f"({FIT_ROWS} to learn, then rows to score)"
        )
    columns = [c for c, *_ in SENSORS] + ([LABEL_COLUMN] if labelled else [])
    numbers = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() | ~np.isfinite(numbers.to_numpy(dtype=np.float64))
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise SkabFormatError(
            f"{path}: non-numeric value {frame[columns[col]].iloc[row]!r} in column "
            f"{columns[col]!r} on data row {row + 1}"
        )
    labels = numbers[LABEL_COLUMN].to_numpy(dtype=np.float64) if labelled else np.zeros(len(frame))
    if not np.isin(labels, (0.0, 1.0)).all():
        row = int(np.flatnonzero(~np.isin(labels, (0.0, 1.0)))[0])
        raise SkabFormatError(
            f"{path}: column 'anomaly' must be 0 or 1, got {labels[row]:g} on data row {row + 1}"
        )
    stamps = pd.to_datetime(frame[TIME_COLUMN], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna())[0])
        raise SkabFormatError(
            f"{path}: bad time stamp {frame[TIME_COLUMN].iloc[row]!r} on data row {row + 1} "
            "(expected YYYY-MM-DD hh:mm:ss)"
        )
    times_ms = stamps.to_numpy(dtype="datetime64[ms]").astype(np.int64)
    if (np.diff(times_ms) <= 0).any():
        row = int(np.flatnonzero(np.diff(times_ms) <= 0)[0]) + 2
        raise SkabFormatError(f"{path}: time stamps must increase; data row {row} does not")
    return SkabRecording(
        path=path,
        times_ms=times_ms,
        values=numbers[[c for c, *_ in SENSORS]].to_numpy(dtype=np.float64),
        anomalous=labels == 1.0,
    )


def flag_rows(
    recording: SkabRecording, config: TwinConfig = SKAB_CONFIG
) -> tuple[np.ndarray, float]:
    """Replay a recording into a fresh twin of the rig, one row (scan) per call; return
    whether the twin flagged each row and the seconds spent inside the twin."""
    twin = MachineTwin(skab_rig(), config=config)
    n = len(recording)
    s = recording.values.shape[1]
    times = np.repeat(recording.times_ms[:, None], s, axis=1)
    flagged = np.zeros(n, dtype=bool)
    spent = 0.0
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        result = twin.apply_arrays(times[i], recording.values[i])
        spent += clock() - start
        if len(result.scan_scores) != 1:
            raise RuntimeError(f"{recording.path}: row {i + 1} was not applied as one scan")
        flagged[i] = result.scan_scores[0] >= ALARM
    return flagged, spent


def score_recording(recording: SkabRecording, config: TwinConfig = SKAB_CONFIG) -> FileResult:
    """Replay a recording and count its scored rows (those after the first FIT_ROWS)."""
    flagged, spent = flag_rows(recording, config)
    counts = AlarmCounts.of(flagged[FIT_ROWS:], recording.anomalous[FIT_ROWS:])
    return FileResult(recording.path, counts, len(recording), spent)


def flagged_share(c: AlarmCounts) -> float:
    """The share of scored rows flagged (on a recording of normal running only, every one
    of them a false alarm)."""
    return (c.tp + c.fp) / c.rows if c.rows else 0.0


def _ratio(value: float, c: AlarmCounts, digits: int, width: int) -> str:
    """F1 and MAR mean nothing where no row is anomalous: shown as '-'."""
    return f"{value:>{width}.{digits}f}" if c.tp + c.fn else f"{'-':>{width}}"


def _line(label: str, c: AlarmCounts, us_row: float, us_reading: float) -> str:
    return (
        f"{label:<28} {c.rows:>6} {c.tp:>6} {c.fp:>6} {c.fn:>6} {c.tn:>6} "
        f"{_ratio(c.f1, c, 3, 6)} {100 * c.false_alarm_rate:>6.1f} "
        f"{_ratio(100 * c.missed_alarm_rate, c, 1, 6)} {100 * flagged_share(c):>6.1f} "
        f"{us_row:>8.1f} {us_reading:>9.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    """``twinfleet bench anomaly PATH...``: score SKAB recordings, print the table."""
    parser = argparse.ArgumentParser(
        prog="twinfleet bench anomaly",
        description=(
            "Replay SKAB recordings (files, or folders of .csv files) through a machine "
            f"twin as live streams: the first {FIT_ROWS} rows of each file to learn, then "
            "every row scored as it arrives. Prints TP/FP/FN/TN, F1, false-alarm rate "
            "and missed-alarm rate (SKAB's point-wise definitions, counts summed over "
            "files), the share of scored rows flagged, and the time spent in the twin "
            "per row and per sensor reading. A file without an 'anomaly' column (SKAB's "
            "anomaly-free recording) is normal running throughout."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="SKAB CSV file or folder")
    args = parser.parse_args(argv)
    try:
        recordings = [load_recording(p) for p in recording_paths(args.paths)]
    except SkabFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = len(SENSORS)
    print(
        f"{'file':<28} {'scored':>6} {'TP':>6} {'FP':>6} {'FN':>6} {'TN':>6} "
        f"{'F1':>6} {'FAR%':>6} {'MAR%':>6} {'flag%':>6} {'us/row':>8} {'us/read':>9}"
    )
    total = AlarmCounts()
    rows = 0
    seconds = 0.0
    for rec in recordings:
        r = score_recording(rec)
        total, rows, seconds = total + r.counts, rows + r.rows, seconds + r.twin_seconds
        us = 1e6 * r.twin_seconds / r.rows
        print(_line(str(r.path)[-28:], r.counts, us, us / s))
    us = 1e6 * seconds / rows
    print(_line(f"all {len(recordings)} file(s)", total, us, us / s))
    print(
        f"summed: F1 {_ratio(total.f1, total, 3, 0)}, "
        f"FAR {100 * total.false_alarm_rate:.1f} %, "
        f"MAR {_ratio(100 * total.missed_alarm_rate, total, 1, 0)} %, "
        f"flagged {100 * flagged_share(total):.1f} % of {total.rows} scored rows; "
        f"twin cost {us:.1f} us per row ({s} readings), {us / s:.2f} us per reading"
    )
    return 0
