"""The NAB benchmark (Numenta Anomaly Benchmark) run through one-sensor machine twins.

NAB's series (``timestamp,value`` CSV files in groups such as ``realKnownCause/``) each
go, row by row and in time order, into a fresh :class:`~twins.machine.MachineTwin` of a
machine with one sensor (kind ``other``, no limits) that reports once per the file's usual
sampling interval, with ``apply_arrays``: each row is judged when it arrives, before the
next one exists, exactly as a live twin judges readings.

**What counts as a detection.** A row on which the twin *reports a new anomaly* (an
``AnomalyRecord`` in ``ApplyResult.anomalies``): the onset of a condition, or its rise to
a higher severity, which is what the product shows a person and what reaches the alert
manager. A condition that lasts is one detection, not one per reading; that is also how
NAB wants detectors to behave (only a window's first detection counts, every detection
outside windows costs).

The twin runs :func:`nab_detectors`: the product's default detectors for the machine
(the plant-file rules and the robust z-score) plus the
:class:`~twins.detectors.drift.DriftDetector` for slow drifts and level shifts, with the
configuration :data:`NAB_CONFIG`.

**Scoring.** :mod:`twinfleet.benchmarks.nab_scoring` (NAB v1.1's scorer, checked against
NAB's own per-file and per-row scores in the tests): windows from
``combined_windows.json``, the three profiles of ``config/profiles.json``, normalised over
all files together. The published results of HTM (``results/numenta``) and ARTime
(``results/ARTime``) are scored by the same code on the same files, a row being a
detection when its ``anomaly_score`` reaches the detector's published threshold for the
profile (``config/thresholds.json``, chosen by NAB on the *full* corpus, so per profile;
the twin has one alarm boundary for all three).

Rows that repeat the previous row's time stamp (a daylight-saving artefact in a few AWS
files) are given times 1 ms apart, so that every row reaches the twin as NAB feeds every
row to its detectors.

    twinfleet bench anomaly --nab ../shared/data/nab
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.plant import MachineSpec, SensorSpec
from twinfleet.benchmarks.nab_scoring import NabScore, Profile, score_file
from twins.detectors.base import SensorDetector
from twins.detectors.drift import DriftDetector
from twins.machine import MachineTwin, TwinConfig, default_detectors

DEFAULT_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nab"
"""``../shared/data/nab`` next to the repository."""

WINDOWS_FILE = "combined_windows.json"
PUBLISHED = {"numenta": "HTM", "ARTime": "ARTime"}
"""Published detectors scored side by side: results folder (and thresholds key) → label."""

STUCK_AFTER_S = 86_400.0
"""A NAB series counts as stuck (flatline) after an unchanged value for a whole day."""

NAB_CONFIG = TwinConfig(zscore=False)
"""The product's default twin configuration except the robust z-score, which is left out.
Its scale is now floored at the sensor's resolution (so a quantised series that mostly
repeats one value no longer has a scale of 0), but a point-wise z-score against one slowly
moving median still fits NAB's series badly: bursty, heavy-tailed server metrics and daily
cycles (on ``art_daily_no_noise``, a clean daily cycle, it alarms 24 times) put ordinary
readings many MADs from the median, and it calls thousands of them anomalies
(``--with-zscore`` shows the cost). A one-sensor twin has no PCA anyway."""


class NabFormatError(ValueError):
    """A folder or file is not NAB data this benchmark can score (the message says why)."""


@dataclass(frozen=True)
class NabSeries:
    """One NAB data file: its key (``group/file.csv``), epoch-millisecond times as fed to
    the twin (strictly increasing), readings, and anomaly windows as first/last row."""

    key: str
    times_ms: np.ndarray
    values: np.ndarray
    windows: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    @property
    def group(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def sample_period_s(self) -> float:
        """The usual interval between readings (the median one)."""
        return float(np.median(np.diff(self.times_ms))) / 1000.0 if len(self) > 1 else 1.0


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NabFormatError(f"{path}: missing (is {path.parent} a NAB folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NabFormatError(f"{path}: cannot be read as JSON ({exc})") from None


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise NabFormatError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise NabFormatError(f"{path}: cannot be read as a CSV ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise NabFormatError(f"{path}: missing column(s) {', '.join(map(repr, missing))}")
    if len(frame) < 2:
        raise NabFormatError(f"{path}: {len(frame)} rows; at least 2 are needed")
    return frame


def _timestamps(path: Path, column: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(column, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna())[0])
        raise NabFormatError(
            f"{path}: bad time stamp {column.iloc[row]!r} on data row {row + 1} "
            "(expected YYYY-MM-DD hh:mm:ss)"
        )
    return stamps.to_numpy(dtype="datetime64[ms]").astype(np.int64)


def _window_rows(key: str, stamps_ms: np.ndarray, limits: object) -> np.ndarray:
    """Window limits (time stamps) as first and last row; NAB needs both to be rows."""
    if not isinstance(limits, list):
        raise NabFormatError(f"{WINDOWS_FILE}: {key!r} must map to a list of [start, end]")
    rows = []
    for pair in limits:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise NabFormatError(f"{WINDOWS_FILE}: {key!r}: window {pair!r} is not [start, end]")
        found = []
        for text in pair:
            try:
                ms = pd.Timestamp(text).to_datetime64().astype("datetime64[ms]").astype(np.int64)
            except ValueError:
                raise NabFormatError(f"{WINDOWS_FILE}: {key!r}: bad time {text!r}") from None
            hit = np.flatnonzero(stamps_ms == ms)
            if not hit.size:
                raise NabFormatError(f"{key}: window limit {text} is not the time of any row")
            found.append(int(hit[0]))
        rows.append(found)
    w = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    if w.size and ((w[:, 1] < w[:, 0]).any() or (w[1:, 0] <= w[:-1, 1]).any()):
        raise NabFormatError(f"{key}: windows must be ordered and must not overlap")
    return w


def load_corpus(root: str | Path, keys: Sequence[str] | None = None) -> list[NabSeries]:
    """The data files listed in ``root/combined_windows.json`` (or only ``keys``), in the
    order listed, with their windows."""
    root = Path(root)
    labels = _read_json(root / WINDOWS_FILE)
    if not isinstance(labels, dict) or not labels:
        raise NabFormatError(f"{root / WINDOWS_FILE}: must map 'group/file.csv' to windows")
    wanted = list(labels) if keys is None else list(keys)
    unknown = [k for k in wanted if k not in labels]
    if unknown:
        raise NabFormatError(f"{root / WINDOWS_FILE}: no windows for {', '.join(unknown)}")
    out = []
    for key in wanted:
        path = root / key
        frame = _read_csv(path, ("timestamp", "value"))
        values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise NabFormatError(
                f"{path}: non-numeric value {frame['value'].iloc[row]!r} on data row {row + 1}"
            )
        stamps = _timestamps(path, frame["timestamp"])
        if (np.diff(stamps) < 0).any():
            row = int(np.flatnonzero(np.diff(stamps) < 0)[0]) + 2
            raise NabFormatError(f"{path}: time stamps go back on data row {row}")
        windows = _window_rows(key, stamps, labels[key])
        times = stamps + _repeats_rank(stamps)  # equal stamps: 1 ms apart
        out.append(NabSeries(key, times, values, windows))
    return out


def _repeats_rank(stamps: np.ndarray) -> np.ndarray:
    """0 for a row with a new time stamp, k for the k-th repeat of the previous one."""
    new = np.concatenate(([True], np.diff(stamps) != 0))
    starts = np.flatnonzero(new)
    return np.arange(len(stamps)) - np.repeat(starts, np.diff(np.append(starts, len(stamps))))


def load_profiles(root: str | Path) -> tuple[Profile, ...]:
    """The scoring profiles of ``root/config/profiles.json``."""
    path = Path(root) / "config" / "profiles.json"
    data = _read_json(path)
    if not isinstance(data, dict):
        raise NabFormatError(f"{path}: must map profile names to cost matrices")
    try:
        return tuple(Profile.from_cost_matrix(n, p["CostMatrix"]) for n, p in data.items())
    except (KeyError, TypeError, ValueError) as exc:
        raise NabFormatError(f"{path}: {exc}") from None


def load_thresholds(root: str | Path, detector: str) -> dict[str, float]:
    """A published detector's threshold per profile (``root/config/thresholds.json``)."""
    path = Path(root) / "config" / "thresholds.json"
    data = _read_json(path)
    try:
        entry = data[detector]  # type: ignore[index]
        return {name: float(p["threshold"]) for name, p in entry.items()}
    except (KeyError, TypeError, ValueError):
        raise NabFormatError(f"{path}: no thresholds for detector {detector!r}") from None


def published_scores(root: str | Path, detector: str, series: NabSeries) -> np.ndarray:
    """A published detector's ``anomaly_score`` per row of ``series``
    (``root/results/<detector>/<group>/<detector>_<file>``), checked row for row."""
    group, name = series.key.split("/", 1)
    path = Path(root) / "results" / detector / group / f"{detector}_{name}"
    frame = _read_csv(path, ("timestamp", "anomaly_score"))
    stamps = _timestamps(path, frame["timestamp"])
    if len(stamps) != len(series) or not np.array_equal(
        stamps + _repeats_rank(stamps), series.times_ms
    ):
        raise NabFormatError(f"{path}: its rows are not those of {series.key}")
    scores = pd.to_numeric(frame["anomaly_score"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(scores).any():
        raise NabFormatError(f"{path}: non-numeric anomaly_score")
    return scores


# -- the twin -----------------------------------------------------------------------------


def nab_machine(series: NabSeries) -> MachineSpec:
    """A machine with one sensor, no limits, reporting at the series' usual interval."""
    period = series.sample_period_s
    return MachineSpec(
        id="NAB-1",
        name=f"NAB {series.key}",
        type="nab-series",
        kind="motor",
        site="nab",
        line="nab",
        sensors=[
            SensorSpec(
                name="value",
                kind="other",
                unit="1",
                sample_period_s=period,
                stuck_after=max(round(STUCK_AFTER_S / period), 1),
            )
        ],
    )


def nab_detectors(spec: MachineSpec, config: TwinConfig) -> list[SensorDetector]:
    """The twin's detectors: the product defaults plus the drift detector with its default
    settings, seasonal (daily) rows included (one line to drop once
    :func:`twins.machine.default_detectors` includes it)."""
    return [*default_detectors(spec, config), DriftDetector(len(spec.sensors))]


@dataclass(frozen=True)
class TwinRun:
    """What the twin made of one series: the rows where it reported a new anomaly, the rows
    whose scan score reached the alarm, and the seconds spent inside the twin."""

    key: str
    reported: np.ndarray
    alarmed: np.ndarray
    twin_seconds: float


def run_twin(series: NabSeries, config: TwinConfig = NAB_CONFIG) -> TwinRun:
    """Replay a series into a fresh one-sensor twin, one reading per ``apply_arrays``."""
    spec = nab_machine(series)
    twin = MachineTwin(spec, config=config, detectors=nab_detectors(spec, config))
    n = len(series)
    reported = np.zeros(n, dtype=bool)
    alarmed = np.zeros(n, dtype=bool)
    times = series.times_ms.reshape(-1, 1)
    values = series.values.reshape(-1, 1)
    spent = 0.0
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        result = twin.apply_arrays(times[i], values[i])
        spent += clock() - start
        if len(result.scan_scores) != 1:
            raise RuntimeError(f"{series.key}: row {i + 1} was not applied as one scan")
        reported[i] = bool(result.anomalies)
        alarmed[i] = result.scan_scores[0] >= 0.5
    return TwinRun(series.key, reported, alarmed, spent)


# -- scoring and the table ----------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One detector's NAB scores: per profile, one :class:`NabScore` per file."""

    label: str
    files: dict[str, list[NabScore]]

    def total(self, profile: str, keys: Sequence[int] | None = None) -> NabScore:
        scores = self.files[profile]
        picked = scores if keys is None else [scores[i] for i in keys]
        return sum(picked[1:], start=picked[0])


def score_twin(
    label: str, series: Sequence[NabSeries], runs: Sequence[TwinRun], profiles: Sequence[Profile]
) -> Scored:
    """The twin's reported rows scored as detections (the same rows for every profile)."""
    return Scored(
        label,
        {
            p.name: [
                score_file(r.reported, s.windows, p) for s, r in zip(series, runs, strict=True)
            ]
            for p in profiles
        },
    )


def score_published(
    root: str | Path, detector: str, series: Sequence[NabSeries], profiles: Sequence[Profile]
) -> Scored:
    """A published detector, thresholded at its threshold for each profile."""
    thresholds = load_thresholds(root, detector)
    missing = [p.name for p in profiles if p.name not in thresholds]
    if missing:
        raise NabFormatError(f"no {detector} threshold for profile(s) {', '.join(missing)}")
    scores = [published_scores(root, detector, s) for s in series]
    return Scored(
        PUBLISHED.get(detector, detector),
        {
            p.name: [
                score_file(a >= thresholds[p.name], s.windows, p)
                for s, a in zip(series, scores, strict=True)
            ]
            for p in profiles
        },
    )


def _cell(value: float) -> str:
    return f"{value:>9.1f}" if math.isfinite(value) else f"{'-':>9}"


def report(
    series: Sequence[NabSeries],
    results: Sequence[Scored],
    profiles: Sequence[Profile],
    per_file: bool = False,
) -> list[str]:
    """The side-by-side table (as lines of text)."""
    head = f"{'':<22}" + "".join(f"{r.label:>9}" for r in results)
    windows = sum(len(s.windows) for s in series)
    lines = [
        f"NAB: {len(series)} files, {windows} anomaly windows; every detector scored by the same "
        "NAB v1.1 scorer on the same files",
        "normalised score (0 = a detector that never alarms, 100 = perfect):",
        head,
    ]
    for p in profiles:
        lines.append(f"{p.name:<22}" + "".join(_cell(r.total(p.name).normalised) for r in results))
    lines.append("windows detected of scored windows, false alarms, per profile:")
    lines.append(f"{'':<22}" + "".join(f"{r.label:>16}" for r in results))
    for p in profiles:
        cells = "".join(
            f"{f'{t.detected}/{t.scored_windows}, {t.false_alarms}':>16}"
            for t in (r.total(p.name) for r in results)
        )
        lines.append(f"{p.name:<22}{cells}")
    standard = profiles[0].name
    lines.append(f"by group ({standard} profile, normalised over the group's files):")
    lines.append(
        f"{'group':<22}{'files':>6}{'windows':>8}" + "".join(f"{r.label:>9}" for r in results)
    )
    groups = sorted({s.group for s in series})
    for g in groups:
        idx = [i for i, s in enumerate(series) if s.group == g]
        n_win = sum(len(series[i].windows) for i in idx)
        cells = "".join(_cell(r.total(standard, idx).normalised) for r in results)
        lines.append(f"{g:<22}{len(idx):>6}{n_win:>8}{cells}")
    if per_file:
        lines.append(f"per file ({standard} profile): raw score, windows detected, false alarms")
        for i, s in enumerate(series):
            cells = "".join(
                f"{f'{f.raw:.2f} {f.detected}/{f.scored_windows} {f.false_alarms}':>18}"
                for f in (r.files[standard][i] for r in results)
            )
            lines.append(f"{s.key[-44:]:<44}{cells}")
    return lines


def is_nab_root(path: str | Path) -> bool:
    """Whether ``path`` is a NAB folder (it holds ``combined_windows.json``)."""
    return (Path(path) / WINDOWS_FILE).is_file()


def main(argv: list[str] | None = None) -> int:
    """``twinfleet bench anomaly --nab [NAB_DIR]``: the NAB table."""
    parser = argparse.ArgumentParser(
        prog="twinfleet bench anomaly --nab",
        description=(
            "Replay every NAB series listed in NAB_DIR/combined_windows.json through a "
            "fresh one-sensor machine twin, row by row; score the rows where the twin "
            "reports a new anomaly with NAB's scorer (standard, low-FP and low-FN "
            "profiles from NAB_DIR/config/profiles.json), and score the published HTM "
            "(results/numenta) and ARTime (results/ARTime) anomaly scores at their "
            "published thresholds (config/thresholds.json) with the same scorer on the "
            "same files. Prints the normalised scores side by side, windows detected and "
            "false alarms, scores by group, and the time spent in the twin per reading."
        ),
    )
    parser.add_argument(
        "root",
        nargs="?",
        default=str(DEFAULT_ROOT),
        metavar="NAB_DIR",
        help=f"the NAB folder (default {DEFAULT_ROOT})",
    )
    parser.add_argument("--files", nargs="+", metavar="GROUP/FILE.csv", help="only these series")
    parser.add_argument("--per-file", action="store_true", help="also print each file's scores")
    parser.add_argument(
        "--with-zscore",
        action="store_true",
        help="also run a twin with the robust z-score on (today's TwinConfig() default)",
    )
    args = parser.parse_args(argv)
    try:
        series = load_corpus(args.root, args.files)
        profiles = load_profiles(args.root)
        published = [score_published(args.root, d, series, profiles) for d in PUBLISHED]
    except NabFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = [run_twin(s) for s in series]
    results = [score_twin("twin", series, runs, profiles), *published]
    if args.with_zscore:
        config = TwinConfig()
        with_z = [run_twin(s, config) for s in series]
        results.append(score_twin("twin+z", series, with_z, profiles))
    for line in report(series, results, profiles, per_file=args.per_file):
        print(line)
    rows = sum(len(s) for s in series)
    seconds = sum(r.twin_seconds for r in runs)
    names = ", ".join(d.name for d in nab_detectors(nab_machine(series[0]), NAB_CONFIG))
    print(
        f"twin: {1e6 * seconds / rows:.1f} us per reading ({rows} readings, one sensor; "
        f"detectors: {names})"
    )
    return 0
