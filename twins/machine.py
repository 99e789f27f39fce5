"""The machine twin: one machine's live state, rolling features, detectors and RUL.

``MachineTwin.apply(batch)`` takes a telemetry batch and returns what changed: the
sensors updated, new anomalies, the health score, and a new RUL prediction when one is
due. The twin does no I/O; an actor owns it and publishes what ``apply`` returns.

Ordering rules (deliberate, documented, counted):

* Readings for another machine or an unknown sensor are **rejected** with a reason.
* Readings of **bad** quality update the sensor's quality and last-seen time but not its
  value, features or detectors (the value cannot be trusted). **Uncertain** readings are
  applied.
* Within a batch readings are taken in time order per sensor, whatever order they came in.
* A reading whose time equals the sensor's last applied reading, with the same value, or
  that repeats an earlier reading of the same batch, is a **duplicate**: dropped.
* A reading older than the sensor's last applied reading (or as old, with a different
  value) is **late**: it is not applied (streaming features and detectors only move
  forward) and its index is reported in ``ApplyResult.late`` so that history can still
  store it.

Several readings of one sensor in a batch are applied in *rounds*: round ``k`` holds the
``k``-th reading of every sensor, so one scan of a 100-sensor machine is one vectorised
round however its timestamps jitter.

RUL is predicted from *trend features*: hourly means of every sensor while the machine
runs (an idle machine's readings say nothing about its wear, and a weekend at standstill
would look like a healthy machine), kept in a second rolling window (``trend_window``
running hours), as mean and slope per sensor. A prediction is
due every ``rul_every_hours`` of machine time once ``rul_min_hours`` of trend exist.

>>> from schemas.plant import MachineSpec, SensorSpec
>>> from schemas.telemetry import TelemetryBatch
>>> spec = MachineSpec(id="M-1", type="motor", kind="motor", site="s", line="l",
...     sensors=[SensorSpec(name="temp", kind="temperature", unit="degC",
...                         normal_high=80, critical_high=100)])
>>> twin = MachineTwin(spec)
>>> def batch(i, v):
...     return TelemetryBatch.model_validate({"gateway_id": "g", "site_id": "s",
...         "batch_id": f"b{i}", "sent_at": 1_700_000_000_000 + i * 1000,
...         "readings": {"machine_id": ["M-1"], "sensor_id": ["M-1.temp"],
...                      "timestamp": [1_700_000_000_000 + i * 1000], "value": [v]}},
...         context={"now_ms": 1_700_000_000_000 + i * 1000})
>>> twin.apply(batch(0, 60.0)).applied
1
>>> twin.apply(batch(1, 101.0)).anomalies  # one reading beyond a limit: the on-delay
[]
>>> result = twin.apply(batch(2, 102.0))
>>> [(a.type.value, a.severity.value) for a in result.anomalies]
[('threshold', 'critical')]
>>> twin.apply(batch(2, 102.0)).duplicates
1
>>> clone = twin.clone(); _ = clone.apply(batch(3, 50.0))
>>> twin.version, clone.version
(3, 4)
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np

from schemas.anomaly import AnomalyRecord, AnomalyType
from schemas.common import Quality, SensorKind
from schemas.plant import MachineSpec, SensorSpec
from schemas.rul import ContributingFactor, RulPrediction, SurvivalPoint
from schemas.telemetry import TelemetryBatch
from schemas.twin import MachineStatus, SensorState, TwinState
from twins.baseline import WEEK_S, RegimeBaseline
from twins.condition import IDLE, OperatingCondition
from twins.detectors.base import ALARM, Scan, SensorDetector
from twins.detectors.ensemble import DetectorSet, Finding
from twins.detectors.multivariate import PCAMonitor
from twins.detectors.robust import RobustZScore
from twins.detectors.rules import FlatlineRule, RateOfChangeRule, StaleRule, ThresholdRule
from twins.detectors.smoothed import SmoothedPCAMonitor
from twins.features import FEATURE_NAMES, RollingFeatures
from twins.health import RISK_HORIZON_H, HealthModel
from twins.regimes import OperatingRegimes
from twins.rul import RulModel
from twins.snapshot import SnapshotError, pack, prefixed, section, unpack

SNAPSHOT_FORMAT = 4
_HOUR_S = 3600.0
IDLE_FRACTION = 0.1
"""Below this fraction of its rated speed (or, without a speed sensor, rated current) a
machine is idle: learned detectors pause and low limits do not apply."""


def _shares(mode_probability: dict[str, float]) -> dict[str, float]:
    """Failure-mode shares rounded for the record, still summing to 1 (empty for one mode)."""
    total = sum(mode_probability.values())
    if len(mode_probability) < 2 or total <= 0:
        return {}
    return {m: round(p / total, 6) for m, p in mode_probability.items()}


def running_indicator(spec: MachineSpec) -> tuple[int, float] | None:
    """(sensor index, threshold) telling running from idle, or None if nothing tells."""
    for kind, unit, machine_rated in (
        (SensorKind.SPEED, "rpm", spec.rated.rpm),
        (SensorKind.CURRENT, "A", spec.rated.current_a),
    ):
        for i, s in enumerate(spec.sensors):
            if s.kind == kind:
                rated = s.rated or (machine_rated if s.unit == unit else None)
                if rated:
                    return i, IDLE_FRACTION * rated
    return None


@dataclass(frozen=True)
class TwinConfig:
    """Hyper-parameters of a twin (shared by all twins of a fleet)."""

    windows: tuple[int, ...] = (8, 32)
    trend_window: int = 48
    zscore_threshold: float = 6.0
    zscore_warmup: int = 30
    pca_fit_scans: int = 200
    rul_every_hours: float = 1.0
    rul_min_hours: float = 24.0
    """Trend a twin needs before its first prediction: a day, so that the slopes of the
    hourly means are not the plant's daily load cycle (night shift, breaks)."""
    stale_periods: float = 5.0
    multivariate: bool = True
    smoothed_pca: bool = False
    """True watches the sensors together with :class:`SmoothedPCAMonitor` (EWMA-smoothed
    PCA, empirical limits, alarm hold) instead of :class:`PCAMonitor`."""
    zscore: bool = True
    """False leaves out the per-sensor robust z-score (for rigs whose levels drift)."""
    detect: bool = True
    """False runs features, trend and RUL only (used to replay histories for training)."""
    persist_s: float = 3600.0
    """A learned detector's anomaly rises a severity level after this long in alarm."""
    baseline_warmup: int = 30
    """Settled readings of a sensor in an operating regime before it has a normal there."""
    baseline_adapt_s: float = WEEK_S
    """Time constant of the slow adaptation of each regime's normal (running time)."""

    def __post_init__(self) -> None:
        if self.trend_window < 2:
            raise ValueError(f"trend_window must be at least 2 hours, got {self.trend_window}")
        if self.rul_every_hours <= 0:
            raise ValueError(f"rul_every_hours must be positive, got {self.rul_every_hours}")
        if self.rul_min_hours < 2:
            raise ValueError(f"rul_min_hours must be at least 2, got {self.rul_min_hours}")
        if not self.persist_s >= 0:
            raise ValueError(f"persist_s must be >= 0, got {self.persist_s}")
        if self.baseline_warmup < 3:
            raise ValueError(f"baseline_warmup must be at least 3, got {self.baseline_warmup}")
        if not self.baseline_adapt_s > 0:
            raise ValueError(f"baseline_adapt_s must be positive, got {self.baseline_adapt_s}")


@dataclass(frozen=True)
class Rejected:
    index: int
    reason: str


@dataclass
class ApplyResult:
    """What one ``apply`` changed. Indices refer to the batch's readings."""

    machine_id: str
    version: int
    applied: int = 0
    duplicates: int = 0
    late: list[int] = field(default_factory=list)
    bad_quality: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    sensor_ids: tuple[str, ...] = ()
    changed_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    anomalies: list[AnomalyRecord] = field(default_factory=list)
    rul: RulPrediction | None = None
    health_score: float = 100.0
    status: MachineStatus = MachineStatus.UNKNOWN
    scan_times_ms: list[int] = field(default_factory=list)
    scan_scores: list[float] = field(default_factory=list)
    """Overall anomaly score of each scan (round) applied, 0..1, alarm at 0.5."""

    @property
    def changed_sensors(self) -> list[str]:
        """Ids of the sensors whose value this batch updated."""
        return [self.sensor_ids[i] for i in self.changed_index.tolist()]

    @property
    def changed(self) -> bool:
        return (
            self.applied > 0 or self.bad_quality > 0 or bool(self.anomalies) or self.rul is not None
        )


def default_detectors(spec: MachineSpec, config: TwinConfig) -> list[SensorDetector]:
    """Rules from the plant file's limits, a robust z-score, and PCA over the sensors."""
    n = len(spec.sensors)
    detectors: list[SensorDetector] = [
        ThresholdRule.for_machine(spec),
        RateOfChangeRule.for_machine(spec),
        FlatlineRule.for_machine(spec),
        StaleRule.for_machine(spec, periods=config.stale_periods),
    ]
    if config.zscore:
        detectors.append(
            RobustZScore(n, threshold=config.zscore_threshold, warmup=config.zscore_warmup)
        )
    if config.multivariate and n >= 2 and config.smoothed_pca:
        detectors.append(SmoothedPCAMonitor(n))
    elif config.multivariate and n >= 2:
        detectors.append(PCAMonitor(n, n_fit=max(config.pca_fit_scans, n + 2)))
    return detectors


def operating_condition(
    spec: MachineSpec, regimes: OperatingRegimes | None = None
) -> OperatingCondition:
    """The machine's operating regimes as its plant file describes them (one running
    regime, settling at once, when it names no condition sensors)."""
    oc = spec.operating_condition
    if oc is None:
        if regimes is not None:
            raise ValueError(
                f"regimes were given but machine {spec.id} names no operating_condition sensors"
            )
        return OperatingCondition([], settle_s=0.0)
    index = spec.condition_indices()
    scale = [_scale(spec.sensors[i]) for i in index]
    return OperatingCondition(
        index,
        scale,
        width=oc.regime_width,
        settle_s=oc.settle_minutes * 60.0,
        max_regimes=oc.max_regimes,
        regimes=regimes,
    )


def _scale(sensor: SensorSpec) -> float | None:
    """The unit a condition sensor's regimes are measured in: its rated value, else its
    normal range (None: learned from its first reading)."""
    if sensor.rated:
        return abs(sensor.rated)
    lo, hi = sensor.normal_low, sensor.normal_high
    if lo is not None and hi is not None and hi > lo:
        return hi - lo
    return None


class MachineTwin:
    """The digital twin of one machine (see the module docstring for its rules)."""

    def __init__(
        self,
        spec: MachineSpec,
        rul_model: RulModel | None = None,
        config: TwinConfig | None = None,
        detectors: list[SensorDetector] | None = None,
        regimes: OperatingRegimes | None = None,
    ) -> None:
        self.spec = spec
        self.config = config or TwinConfig()
        self.rul_model = rul_model
        self.machine_id = spec.id
        self.sensor_ids = tuple(spec.sensor_ids())
        self._index = {s: i for i, s in enumerate(self.sensor_ids)}
        self._index_cache: dict[tuple[str, ...], np.ndarray] = {}
        n = len(self.sensor_ids)
        self.n_sensors = n
        self.features = RollingFeatures(n, self.config.windows)
        self.trend = RollingFeatures(n, (self.config.trend_window,))
        self.detectors = (
            DetectorSet(
                detectors or default_detectors(spec, self.config),
                persist_s=self.config.persist_s,
            )
            if self.config.detect
            else None
        )
        self.condition = operating_condition(spec, regimes)
        self.baseline = RegimeBaseline(
            n,
            self.condition.max_regimes + 1,
            warmup=self.config.baseline_warmup,
            adapt_s=self.config.baseline_adapt_s,
        )
        self._condition_mask = np.zeros(n, dtype=bool)
        self._condition_mask[self.condition.condition] = True
        self._has_condition = bool(self._condition_mask.any())
        self._columns = np.arange(n)  # every sensor, in column order (never changed)
        self._columns.flags.writeable = False
        # What people accepted as normal (an alarm marked a false positive) on a machine
        # without condition sensors: subtracted before its learned detectors judge it.
        self._offset = np.zeros(n)
        self._alarm_regime = np.full(n, -1, dtype=np.int64)  # of each sensor's last learned
        # anomaly: where a false positive people mark applies
        self.health = HealthModel(spec)
        self._vibration = np.array(
            [i for i, s in enumerate(spec.sensors) if s.kind == "vibration"], dtype=np.int64
        )
        self._spec_hash = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]
        # Versioned state (replaced, not patched, by apply).
        self.version = 0
        self.last_update_ms: int | None = None
        self._value = np.full(n, np.nan)
        self._prev_value = np.full(n, np.nan)  # the reading before, for debounced limits
        self._running_by = running_indicator(spec)
        self._running = True
        self._time_ms = np.full(n, -1, dtype=np.int64)  # last applied reading per sensor
        self._seen_ms = np.full(n, -1, dtype=np.int64)  # last reading of any quality
        self._quality = np.zeros(n, dtype=np.uint8)
        self._stale = np.zeros(n, dtype=bool)
        self._bucket_hour = -1  # the hour whose readings are being averaged for the trend
        self._bucket_sum = np.zeros(n)
        self._bucket_count = np.zeros(n)
        self._life_sum = np.zeros(n)  # sums of hourly means since installation or repair
        self._life_count = np.zeros(n)
        self._first_ms: int | None = None
        self._trend_start_ms: int | None = None  # set by a repair: the trend starts again
        self._repaired_ms: dict[str, int] = {}
        self._last_rul_ms: int | None = None
        self._rul: RulPrediction | None = None
        self._open_anomalies = 0
        self._health = 100.0
        self._beyond_critical = False
        self.counters = {
            "applied": 0,
            "duplicates": 0,
            "late": 0,
            "bad_quality": 0,
            "rejected": 0,
            "anomalies": 0,
            "predictions": 0,
        }

    # -- ingest --------------------------------------------------------------------------
    def apply(self, batch: TelemetryBatch) -> ApplyResult:
        """Apply a batch's readings for this machine (others are rejected)."""
        arr = batch.readings.arrays()
        result = ApplyResult(self.machine_id, self.version, sensor_ids=self.sensor_ids)
        n_rows = len(arr.value)
        if n_rows == 0:
            return self._finish(result)
        idx = self._sensor_indices(batch.readings.sensor_id)
        ok = idx >= 0
        if not ok.all():
            for i in np.flatnonzero(~ok).tolist():
                machine = arr.machine_id[i]
                reason = (
                    f"reading is for machine {machine!r}, not {self.machine_id!r}"
                    if machine != self.machine_id
                    else f"unknown sensor {arr.sensor_id[i]!r} on machine {self.machine_id!r}"
                )
                result.rejected.append(Rejected(i, reason))
        return self._ingest(
            ok if result.rejected else None, idx, arr.timestamp, arr.value, arr.quality, result
        )

    def apply_arrays(
        self,
        timestamps_ms: np.ndarray,
        values: np.ndarray,
        sensors: np.ndarray | None = None,
        quality: np.ndarray | None = None,
    ) -> ApplyResult:
        """Apply readings already decoded into columns: ``sensors`` are column indices
        (default: one reading of every sensor, in the machine's sensor order). The same
        rules as :meth:`apply` hold; used to replay histories and by benchmarks."""
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float64)
        idx = self._columns if sensors is None else np.asarray(sensors, dtype=np.int64)
        q = (
            np.zeros(len(vals), dtype=np.uint8)
            if quality is None
            else np.asarray(quality, np.uint8)
        )
        if not (ts.shape == vals.shape == idx.shape == q.shape) or ts.ndim != 1:
            raise ValueError(
                "timestamps_ms, values, sensors and quality must be 1-D and equally long"
            )
        if sensors is not None and ((idx < 0) | (idx >= self.n_sensors)).any():
            raise ValueError(f"sensors must be column indices in 0..{self.n_sensors - 1}")
        if not np.isfinite(vals).all():
            raise ValueError("values must be finite")
        result = ApplyResult(self.machine_id, self.version, sensor_ids=self.sensor_ids)
        return self._ingest(None, idx, ts, vals, q, result)

    def _ingest(
        self,
        ok: np.ndarray | None,
        sensors: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray,
        result: ApplyResult,
    ) -> ApplyResult:
        """Apply the ``ok`` rows (None: all): bad quality noted, the rest applied in order.
        The arrays may be the caller's: they are read, never written."""
        bad = quality == Quality.BAD
        if ok is not None:
            bad &= ok
        if bad.any():
            self._note_bad(sensors[bad], ts[bad])
            result.bad_quality = int(bad.sum())
        elif ok is None:  # every row is to be applied
            if len(sensors):
                self._apply_rows(np.arange(len(sensors)), sensors, ts, values, quality, result)
            return self._finish(result)
        rows = np.flatnonzero(~bad if ok is None else ok & ~bad)
        if rows.size:
            self._apply_rows(rows, sensors[rows], ts[rows], values[rows], quality[rows], result)
        return self._finish(result)

    def _sensor_indices(self, sensor_ids: list[str]) -> np.ndarray:
        """Column index of each reading's sensor (-1: not ours). Gateways send the same
        sensor list batch after batch, so the last few mappings are remembered."""
        key = tuple(sensor_ids)
        idx = self._index_cache.get(key)
        if idx is None:
            idx = np.fromiter((self._index.get(s, -1) for s in key), dtype=np.int64, count=len(key))
            if len(self._index_cache) >= 8:
                self._index_cache.pop(next(iter(self._index_cache)))
            self._index_cache[key] = idx
        return idx

    def _note_bad(self, sensors: np.ndarray, ts: np.ndarray) -> None:
        order = np.argsort(ts, kind="stable")
        sensors, ts = sensors[order], ts[order]
        self._quality[sensors] = Quality.BAD
        self._seen_ms[sensors] = np.maximum(self._seen_ms[sensors], ts)

    def _apply_rows(
        self,
        rows: np.ndarray,
        sensors: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray,
        result: ApplyResult,
    ) -> None:
        """Apply readings (``rows``: their indices in the batch) in time order per sensor.
        The arrays may be the caller's: they are read, never written."""
        # Readings of distinct sensors in column order (a scan, as gateways send it) are
        # already in the order sorting by sensor, then time, gives.
        one_each = sensors is self._columns or bool((sensors[1:] > sensors[:-1]).all())
        if not one_each:
            order = np.lexsort((ts, sensors))  # by sensor, then time
            rows, sensors, ts, values, quality = (
                a[order] for a in (rows, sensors, ts, values, quality)
            )
            new_sensor = sensors[1:] != sensors[:-1]
            one_each = bool(new_sensor.all())
        last_t = self._time_ms[sensors]
        if not (one_each and (ts > last_t).all()):  # some repeat or come late
            new_sensor = sensors[1:] != sensors[:-1]
            prev_same = np.zeros(len(rows), dtype=bool)
            prev_same[1:] = ~new_sensor & (ts[1:] == ts[:-1])
            duplicate = prev_same | ((ts == last_t) & (values == self._value[sensors]))
            late = ~duplicate & (ts <= last_t)
            keep = ~(duplicate | late)
            result.duplicates = int(duplicate.sum())
            if late.any():
                result.late = sorted(rows[late].tolist())
            if not keep.any():
                return
            sensors, ts, values, quality = sensors[keep], ts[keep], values[keep], quality[keep]
            new_sensor = sensors[1:] != sensors[:-1]
            one_each = bool(new_sensor.all())
        n = len(sensors)
        if self._first_ms is None:
            self._first_ms = int(ts.min())
        # Sorted and distinct, n readings of the machine's n sensors are every sensor in
        # column order.
        if one_each:  # one reading per sensor: a single round
            self._apply_round(sensors, ts, values, quality, result, n == self.n_sensors)
            result.changed_index = sensors.copy()
        else:  # round k holds the k-th reading of each sensor
            starts = np.flatnonzero(np.concatenate(([True], new_sensor)))
            rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
            for k in range(int(rank.max()) + 1):
                sel = rank == k
                s = sensors[sel]
                self._apply_round(
                    s, ts[sel], values[sel], quality[sel], result, len(s) == self.n_sensors
                )
            result.changed_index = sensors[np.concatenate(([True], new_sensor))]
        result.applied = n

    def _apply_round(
        self,
        sensors: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray,
        result: ApplyResult,
        complete: bool = False,
    ) -> None:
        """Apply one reading of each of ``sensors`` (distinct, ascending; ``complete``: every
        sensor) as one scan."""
        times_s = ts / 1000.0
        if complete:  # the indexed updates below, on whole arrays
            self._prev_value[:] = self._value
            self._value[:] = values
            self._time_ms[:] = ts
            np.maximum(self._seen_ms, ts, out=self._seen_ms)
            self._quality[:] = quality
            self._stale[:] = False
            scan_values = np.array(values, dtype=np.float64)
            scan_times = times_s
        else:
            self._prev_value[sensors] = self._value[sensors]
            self._value[sensors] = values
            self._time_ms[sensors] = ts
            self._seen_ms[sensors] = np.maximum(self._seen_ms[sensors], ts)
            self._quality[sensors] = quality
            self._stale[sensors] = False
            scan_values = np.full(self.n_sensors, np.nan)
            scan_values[sensors] = values
            scan_times = np.full(self.n_sensors, np.nan)
            scan_times[sensors] = times_s
        if self._running_by is not None:
            i, threshold = self._running_by
            self._running = not (self._value[i] < threshold)  # unknown (NaN) counts as running
        now_ms = int(ts.max())
        now_s = now_ms / 1000.0
        scan = Scan(scan_values, scan_times, self._value.copy(), now_s, self._running)
        self.features.update(sensors, times_s, values)
        if self._running:  # an idle machine's readings say nothing about its wear
            self._accumulate_trend(sensors, values, now_ms)
        else:
            self._roll_bucket(now_ms)
        if self.detectors is not None:
            regime, settled = self.condition.update(self._value, now_s, self._running)
            normalised = self._normalised(scan, regime, settled)
            verdict = self.detectors.process(scan, normalised)
            if settled:  # what the machine reads here now is its normal, unless in alarm
                self.baseline.learn(regime, scan_values, now_s, hold=verdict.sensor_scores >= ALARM)
            result.scan_times_ms.append(now_ms)
            result.scan_scores.append(verdict.score)
            if verdict.findings:
                result.anomalies.extend(self._records(verdict.findings, scan, now_ms))
        self.last_update_ms = (
            now_ms if self.last_update_ms is None else max(self.last_update_ms, now_ms)
        )

    def _normalised(self, scan: Scan, regime: int, settled: bool) -> Scan | None:
        """The scan as the learned detectors see it: every sensor against its normal in the
        machine's operating regime (NaN while it has none there), the condition sensors
        only in the state (they say which regime, not how the machine is), judged only
        once the machine has settled in a running regime. None (the raw scan) for a
        machine without condition sensors."""
        if not self._has_condition:
            if not self._offset.any():
                return None
            return Scan(
                scan.values - self._offset,
                scan.times_s,
                scan.state - self._offset,
                scan.now_s,
                scan.running,
            )
        if regime <= IDLE:
            nan = np.full(self.n_sensors, np.nan)
            return Scan(nan, scan.times_s, nan, scan.now_s, False)
        state = self.baseline.normalise(regime, scan.state)
        values = np.where(
            self._condition_mask, np.nan, self.baseline.normalise(regime, scan.values)
        )
        return Scan(values, scan.times_s, state, scan.now_s, scan.running and settled)

    def mark_false_positive(self, sensor: str | None, at_ms: int) -> None:
        """People judged an alarm of ``sensor`` (its name, e.g. ``"vibration"``; None: the
        machine-level monitor) a false positive at ``at_ms``: what the sensor reads now is
        normal for this machine.

        The sensor's level becomes its normal in the operating regime of its last learned
        anomaly (else the one the machine runs or last ran in), so the condition stops
        alarming there, and alarms again only when the sensor moves materially (as far as
        the detectors' own thresholds) from it; other regimes keep their normal. A
        machine-level false positive makes the multivariate monitor learn the machine
        afresh. Limits are never silenced. A mark older than the machine's last repair is
        ignored (it was about the old part).
        """
        index = None
        if sensor is not None:
            names = [s.name for s in self.spec.sensors]
            if sensor not in names:
                raise ValueError(f"machine {self.machine_id} has no sensor {sensor!r}")
            index = names.index(sensor)
        if self._repaired_ms and at_ms < max(self._repaired_ms.values()):
            return
        self.counters["false_positives"] = self.counters.get("false_positives", 0) + 1
        if index is None:
            for d in self.detectors.detectors if self.detectors is not None else []:
                refit = getattr(d, "refit", None)
                if d.machine_level and callable(refit):
                    refit()
            return
        regime = int(self._alarm_regime[index])
        if regime <= IDLE:  # no learned anomaly of it seen: where it runs (or last ran)
            regime = max(self.condition.last_running, 1)
        # The latest reading where it runs now (the hour's average may still be catching
        # up); the recent level of another regime.
        level = (
            self._value[index]
            if regime == self.condition.regime
            else self.baseline.recent(regime)[index]
        )
        if not math.isfinite(level):
            return
        if self._has_condition:
            self.baseline.accept(regime, index, level)
        else:
            normal = self.baseline.expected(regime)[index]
            if math.isfinite(normal):
                self._offset[index] = level - normal

    def _accumulate_trend(self, sensors: np.ndarray, values: np.ndarray, now_ms: int) -> None:
        self._roll_bucket(now_ms)
        self._bucket_sum[sensors] += values
        self._bucket_count[sensors] += 1

    def _close_bucket(self) -> None:
        have = np.flatnonzero(self._bucket_count > 0)
        if have.size:
            means = self._bucket_sum[have] / self._bucket_count[have]
            mid = np.full(have.size, (self._bucket_hour + 0.5) * _HOUR_S)
            self.trend.update(have, mid, means)
            self._life_sum[have] += means
            self._life_count[have] += 1
            self._bucket_sum[:] = 0.0
            self._bucket_count[:] = 0.0

    def tick(self, now_ms: int) -> ApplyResult:
        """Let time pass without readings: finds sensors that went stale."""
        result = ApplyResult(self.machine_id, self.version, sensor_ids=self.sensor_ids)
        if self._first_ms is None or self.detectors is None:
            return self._finish(result)
        state = self._value.copy()
        empty = Scan(
            np.full(self.n_sensors, np.nan),
            np.full(self.n_sensors, np.nan),
            state,
            now_ms / 1000.0,
            self._running,
        )
        regime, settled = self.condition.update(state, empty.now_s, self._running)
        normalised = self._normalised(empty, regime, settled)
        verdict = self.detectors.tick(empty.now_s, state, self._running, normalised)
        result.anomalies.extend(self._records(verdict.findings, empty, now_ms))
        return self._finish(result, now_ms=now_ms)

    # -- findings ------------------------------------------------------------------------
    def _records(self, findings: list[Finding], scan: Scan, now_ms: int) -> list[AnomalyRecord]:
        out = []
        for f in findings:
            if f.anomaly_type is AnomalyType.STALE:
                self._stale[f.sensor] = True
            if f.sensor >= 0:
                value = scan.values[f.sensor]
                when = int(scan.times_s[f.sensor] * 1000) if not math.isnan(value) else now_ms
                sensor_id: str | None = self.sensor_ids[f.sensor]
            else:
                value, when, sensor_id = math.nan, now_ms, None
            expected = f.expected
            if f.anomaly_type is AnomalyType.STATISTICAL:
                regime = self.condition.regime  # detectors judged it against this normal
                self._alarm_regime[f.sensor] = regime
                if self._has_condition:
                    expected = float(self.baseline.expected(max(regime, 0))[f.sensor])
                    f = replace(f, expected=expected)
            out.append(
                AnomalyRecord(
                    machine_id=self.machine_id,
                    sensor_id=sensor_id,
                    timestamp=when,
                    type=f.anomaly_type,
                    severity=f.severity,
                    score=round(min(max(f.score, 0.0), 1.0), 6),
                    value=None if math.isnan(value) else float(value),
                    expected_value=None if math.isnan(expected) else float(expected),
                    reason=self._reason(f, value, now_ms),
                    detector=f.detector,
                    contributing_sensors=[self.sensor_ids[i] for i in f.contributing],
                )
            )
        return out

    def _reason(self, f: Finding, value: float, now_ms: int) -> str:
        also = f" (also {', '.join(f.also)})" if f.also else ""
        if f.sensor < 0:
            names = ", ".join(self.spec.sensors[i].name for i in f.contributing)
            return f"sensors no longer move together as learned; largest deviations: {names}"
        s = self.spec.sensors[f.sensor]
        if f.anomaly_type is AnomalyType.STALE:
            age = (now_ms - self._seen_ms[f.sensor]) / 1000.0
            return f"no reading from {s.name} for {age:.0f} s{also}"
        if f.anomaly_type is AnomalyType.THRESHOLD:
            limit = next(
                (
                    f"{label} {lim:g}"
                    for label, lim, above in (
                        ("critical_high", s.critical_high, True),
                        ("normal_high", s.normal_high, True),
                        ("critical_low", s.critical_low, False),
                        ("normal_low", s.normal_low, False),
                    )
                    if lim is not None and (value >= lim if above else value <= lim)
                ),
                "its limits",
            )
            side = "above" if "high" in limit else "below" if "low" in limit else "outside"
            return f"{s.name} {value:.4g} {s.unit} is {side} {limit}{also}"
        if f.anomaly_type is AnomalyType.FLATLINE:
            return f"{s.name} stuck at {value:.4g} {s.unit} for {s.stuck_after} readings{also}"
        if f.anomaly_type is AnomalyType.SPIKE:
            rate = f"{s.max_rate_per_s:g} {s.unit}/s"
            return f"{s.name} jumped to {value:.4g} {s.unit} faster than {rate}{also}"
        return (
            f"{s.name} {value:.4g} {s.unit} is far from its usual {f.expected:.4g}"
            f"{self._operating_point()}{also}"
        )

    def _operating_point(self) -> str:
        """Where the machine runs, for people: the condition sensors' current values."""
        if not self._has_condition:
            return ""
        parts = [
            f"{self.spec.sensors[i].name} {self._value[i]:.3g} {self.spec.sensors[i].unit}"
            for i in np.flatnonzero(self._condition_mask).tolist()
        ]
        return f" at this operating point ({', '.join(parts)})"

    # -- health, RUL, state --------------------------------------------------------------
    def _finish(self, result: ApplyResult, now_ms: int | None = None) -> ApplyResult:
        if result.applied or result.bad_quality:
            self.version += 1
        self.counters["applied"] += result.applied
        self.counters["duplicates"] += result.duplicates
        self.counters["late"] += len(result.late)
        self.counters["bad_quality"] += result.bad_quality
        self.counters["rejected"] += len(result.rejected)
        self.counters["anomalies"] += len(result.anomalies)
        clock = now_ms if now_ms is not None else self.last_update_ms
        if clock is not None and self.rul_model is not None and self._rul_due(clock):
            self._roll_bucket(clock)
            prediction = self.predict_rul(clock)
            if prediction is not None:
                result.rul = prediction
                self.counters["predictions"] += 1
        risk = self._rul.failure_probability.get(RISK_HORIZON_H, 0.0) if self._rul else 0.0
        self._health, self._beyond_critical = self.health.assess(
            self._value, self._prev_value, self._running, failure_risk=risk
        )
        self._open_anomalies = (
            int(np.count_nonzero(self.detectors.open_severity)) if self.detectors is not None else 0
        )
        result.version = self.version
        result.health_score = self._health
        result.status = self.status()
        return result

    def _roll_bucket(self, clock_ms: int) -> None:
        """Once the clock has left the bucket's hour, its means go into the trend."""
        hour = int(clock_ms // 3_600_000)
        if hour > self._bucket_hour:
            self._close_bucket()
            self._bucket_hour = hour

    def _rul_due(self, clock_ms: int) -> bool:
        since = self._first_ms if self._trend_start_ms is None else self._trend_start_ms
        if since is None or (clock_ms - since) < self.config.rul_min_hours * 3_600_000:
            return False
        return self._last_rul_ms is None or (
            clock_ms - self._last_rul_ms >= self.config.rul_every_hours * 3_600_000
        )

    def age_hours(self, now_ms: int | None = None) -> dict[str, float]:
        """Operating age per failure mode (a repair restarts its mode's clock)."""
        clock = now_ms if now_ms is not None else (self.last_update_ms or 0)
        base = self.spec.installed_hours
        since_first = 0.0 if self._first_ms is None else max(clock - self._first_ms, 0) / 3_600_000
        modes = [m.value for m in self.spec.failure_modes] or ["machine"]
        out = {}
        for m in modes:
            repaired = self._repaired_ms.get(m)
            out[m] = (
                max(clock - repaired, 0) / 3_600_000 if repaired is not None else base + since_first
            )
        return out

    def record_repair(self, failure_mode: str | None, at_ms: int) -> None:
        """A repair of ``failure_mode`` (None: overhaul of everything) finished at ``at_ms``."""
        modes = (
            [m.value for m in self.spec.failure_modes] if failure_mode is None else [failure_mode]
        )
        known = {m.value for m in self.spec.failure_modes}
        unknown = [m for m in modes if known and m not in known]
        if unknown:
            raise ValueError(f"failure_mode {unknown[0]!r} is not one of {sorted(known)}")
        for m in modes:
            self._repaired_ms[m] = int(at_ms)
        # The condition trend before the repair describes the old part: start it again,
        # and predict once enough of the new trend exists.
        self.trend = RollingFeatures(self.n_sensors, (self.config.trend_window,))
        self._bucket_hour = -1
        self._bucket_sum[:] = 0.0
        self._bucket_count[:] = 0.0
        self._life_sum[:] = 0.0
        self._life_count[:] = 0.0
        self._trend_start_ms = int(at_ms)
        self._last_rul_ms = None
        self._rul = None
        # The repaired machine reads differently: its normal in every regime is learned
        # again, and what people accepted about the old part no longer applies.
        self.baseline.relearn()
        self._offset[:] = 0.0
        self._alarm_regime[:] = -1

    def rul_features(self) -> dict[str, float]:
        """Condition features a RUL model reads, per sensor (NaN while unknown):

        ``mean``/``slope``: mean and slope (per hour) of its hourly means over the trend
        window (NaN until ``rul_min_hours`` running hours of them exist since installation
        or the last repair); ``mean_w<w>``: mean of its last ``w`` readings, for each
        rolling window; ``drift``: the shortest window's mean minus the mean of all its
        hourly means since installation or the last repair (how far it has moved from its
        own baseline)."""
        trend = self.trend.compute(self.config.trend_window)
        recent = {w: self.features.compute(w)["mean"] for w in self.config.windows}
        with np.errstate(invalid="ignore", divide="ignore"):
            life = np.where(self._life_count > 0, self._life_sum / self._life_count, np.nan)
        drift = recent[self.config.windows[0]] - life
        # A trend of a few running hours (a machine that mostly stands) is no trend yet.
        short = self._life_count < self.config.rul_min_hours
        out: dict[str, float] = {}
        for i, s in enumerate(self.spec.sensors):
            out[f"{s.name}.mean"] = math.nan if short[i] else float(trend["mean"][i])
            out[f"{s.name}.slope"] = math.nan if short[i] else float(trend["slope"][i])
            for w, values in recent.items():
                out[f"{s.name}.mean_w{w}"] = float(values[i])
            out[f"{s.name}.drift"] = float(drift[i])
        return out

    def predict_rul(self, now_ms: int) -> RulPrediction | None:
        """Predict now (None without a model or while any needed feature is unknown)."""
        if self.rul_model is None:
            return None
        feats = self.rul_features()
        needed = [feats.get(f, math.nan) for f in self.rul_model.features]
        if not all(math.isfinite(v) for v in needed):
            return None
        ages = self.age_hours(now_ms)
        ages = {m: a for m, a in ages.items() if m in self.rul_model.modes_}
        estimate = self.rul_model.predict(needed, age=ages or max(self.age_hours(now_ms).values()))
        self._last_rul_ms = now_ms
        self._rul = RulPrediction(
            machine_id=self.machine_id,
            component=estimate.failure_mode or "machine",
            failure_mode=estimate.failure_mode,
            median_hours=round(estimate.median, 3),
            lower_hours=round(estimate.lower, 3),
            upper_hours=round(estimate.upper, 3),
            confidence=estimate.confidence,
            survival_curve=[
                SurvivalPoint(hours=round(float(h), 3), survival_probability=round(float(p), 6))
                for h, p in zip(estimate.curve_hours, estimate.curve_survival, strict=True)
            ],
            failure_probability={h: round(p, 6) for h, p in estimate.failure_probability.items()},
            contributing_factors=[
                ContributingFactor(
                    factor=name, importance=round(imp, 6), current_value=val, threshold=thr
                )
                for name, imp, val, thr in estimate.factors
            ],
            failure_mode_shares=_shares(estimate.mode_probability),
            model_version=self.rul_model.version_,
            predicted_at=now_ms,
            age_hours=round(max(ages.values(), default=0.0), 3),
        )
        return self._rul

    def set_rul_model(self, model: RulModel) -> None:
        """Swap in a new model version; the next batch predicts with it."""
        self.rul_model = model
        self._last_rul_ms = None

    @property
    def health_score(self) -> float:
        return self._health

    @property
    def rul(self) -> RulPrediction | None:
        return self._rul

    def in_alarm(self) -> list[str]:
        """The subjects of the twin's open anomaly conditions: sensor names, and
        ``"machine"`` for a machine-level one. An anomaly is reported once, when its
        condition starts (or worsens); this says which conditions are still on, so that an
        alert on one does not return to normal while it lasts."""
        if self.detectors is None:
            return []
        open_ = self.detectors.open_severity
        if not open_.any():
            return []
        names = [self.spec.sensors[i].name for i in np.flatnonzero(open_[:-1]).tolist()]
        return [*names, "machine"] if open_[-1] else names

    def status(self) -> MachineStatus:
        if self._first_ms is None:
            return MachineStatus.UNKNOWN
        if self._stale.all():
            return MachineStatus.OFFLINE
        worst = int(self.detectors.open_severity.max()) if self.detectors is not None else 0
        if worst >= 3 or self._beyond_critical:
            return MachineStatus.ALARM
        if worst > 0 or self._health < 60:
            return MachineStatus.WARNING
        return MachineStatus.RUNNING if self._running else MachineStatus.IDLE

    def derived_metrics(self) -> dict[str, float | None]:
        return self.health.metrics(self._value)

    def feature_table(self) -> dict[str, dict[str, float]]:
        """Rolling features per sensor id (all windows, plus spectral for vibration)."""
        out: dict[str, dict[str, float]] = {s: {} for s in self.sensor_ids}
        for w in self.features.windows:
            feats = self.features.compute(w)
            for name in FEATURE_NAMES:
                for i, sid in enumerate(self.sensor_ids):
                    v = float(feats[name][i])
                    if math.isfinite(v):
                        out[sid][f"{name}_{w}"] = v
        if self._vibration.size:
            spectral = self.features.spectral(self._vibration)
            for name, vals in spectral.items():
                for j, i in enumerate(self._vibration.tolist()):
                    if math.isfinite(vals[j]):
                        out[self.sensor_ids[i]][name] = float(vals[j])
        return out

    def readings(self, index: np.ndarray) -> dict[str, list[float | int | None]]:
        """``{sensor id: [value, timestamp ms, quality]}`` of the sensors at ``index`` (as
        in :attr:`ApplyResult.changed_index`); a value never seen is None."""
        ids = self.sensor_ids
        return {
            ids[i]: [None if v != v else v, None if t < 0 else t, q]  # v != v: NaN
            for i, v, t, q in zip(
                index.tolist(),
                self._value[index].tolist(),
                self._seen_ms[index].tolist(),
                self._quality[index].tolist(),
                strict=True,
            )
        }

    def state(self) -> TwinState:
        """The twin's state as an immutable, versioned record."""
        sensors = {
            sid: SensorState(
                value=None if math.isnan(self._value[i]) else float(self._value[i]),
                timestamp=None if self._seen_ms[i] < 0 else int(self._seen_ms[i]),
                quality=Quality(int(self._quality[i])),
                stale=bool(self._stale[i]),
            )
            for i, sid in enumerate(self.sensor_ids)
        }
        return TwinState(
            machine_id=self.machine_id,
            version=self.version,
            last_update=self.last_update_ms,
            health_score=min(max(self._health, 0.0), 100.0),
            status=self.status(),
            sensors=sensors,
            derived_metrics=self.derived_metrics(),
            features=self.feature_table(),
            active_anomalies=self._open_anomalies,
            rul=self._rul,
        )

    # -- copies and snapshots ------------------------------------------------------------
    def clone(self) -> MachineTwin:
        """An independent twin with the same state (the fitted RUL model is shared)."""
        memo = {id(self.rul_model): self.rul_model, id(self.spec): self.spec}
        return copy.deepcopy(self, memo)

    def snapshot(self) -> bytes:
        """The whole mutable state as bytes (see :mod:`twins.snapshot`)."""
        meta = {
            "format": SNAPSHOT_FORMAT,
            "machine_id": self.machine_id,
            "spec_hash": self._spec_hash,
            "version": self.version,
            "last_update_ms": self.last_update_ms,
            "first_ms": self._first_ms,
            "trend_start_ms": self._trend_start_ms,
            "bucket_hour": self._bucket_hour,
            "repaired_ms": dict(sorted(self._repaired_ms.items())),
            "last_rul_ms": self._last_rul_ms,
            "rul": None if self._rul is None else self._rul.model_dump(mode="json"),
            "health": self._health,
            "running": self._running,
            "open_anomalies": self._open_anomalies,
            "counters": dict(self.counters),
        }
        arrays = {
            "value": self._value,
            "prev_value": self._prev_value,
            "time_ms": self._time_ms,
            "seen_ms": self._seen_ms,
            "quality": self._quality,
            "stale": self._stale,
            "bucket_sum": self._bucket_sum,
            "bucket_count": self._bucket_count,
            "life_sum": self._life_sum,
            "life_count": self._life_count,
            "offset": self._offset,
            "alarm_regime": self._alarm_regime,
        }
        return pack(
            {
                **prefixed("twin", {**meta, **arrays}),
                **prefixed("features", self.features.state_dict()),
                **prefixed("trend", self.trend.state_dict()),
                **prefixed("detectors", self.detectors.state_dict() if self.detectors else {}),
                **prefixed("condition", self.condition.state_dict()),
                **prefixed("baseline", self.baseline.state_dict()),
            }
        )

    def restore(self, blob: bytes) -> None:
        """Replace this twin's state with a snapshot of a twin of the same machine."""
        state = unpack(blob)
        twin = section("twin", state)
        if twin.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(f"unsupported twin snapshot format {twin.get('format')!r}")
        if twin["machine_id"] != self.machine_id:
            raise SnapshotError(
                f"snapshot is of machine {twin['machine_id']!r}, not {self.machine_id!r}"
            )
        if twin["spec_hash"] != self._spec_hash:
            raise SnapshotError(
                f"snapshot of {self.machine_id} was taken with a different machine description"
            )
        self.features.load_state_dict(section("features", state))
        self.trend.load_state_dict(section("trend", state))
        if self.detectors is not None:
            self.detectors.load_state_dict(section("detectors", state))
        self.condition.load_state_dict(section("condition", state))
        self.baseline.load_state_dict(section("baseline", state))
        self.version = int(twin["version"])
        self.last_update_ms = twin["last_update_ms"]
        self._first_ms = twin["first_ms"]
        self._trend_start_ms = twin["trend_start_ms"]
        self._bucket_hour = int(twin["bucket_hour"])
        self._repaired_ms = {k: int(v) for k, v in twin["repaired_ms"].items()}
        self._last_rul_ms = twin["last_rul_ms"]
        self._rul = None if twin["rul"] is None else RulPrediction.model_validate(twin["rul"])
        self._health = float(twin["health"])
        self._running = bool(twin["running"])
        self._open_anomalies = int(twin["open_anomalies"])
        self.counters = {k: int(v) for k, v in twin["counters"].items()}
        for key in (
            "value",
            "prev_value",
            "time_ms",
            "seen_ms",
            "quality",
            "stale",
            "bucket_sum",
            "bucket_count",
            "life_sum",
            "life_count",
            "offset",
            "alarm_regime",
        ):
            current = getattr(self, "_" + key)
            restored = np.asarray(twin[key], dtype=current.dtype)
            if restored.shape != current.shape:
                raise SnapshotError(f"{key}: shape {restored.shape} != {current.shape}")
            setattr(self, "_" + key, restored.copy())
        _, self._beyond_critical = self.health.assess(self._value, self._prev_value, self._running)

    def nbytes(self) -> int:
        """Bytes of this twin's own state (the shared RUL model excluded)."""
        return len(self.snapshot())

    def __repr__(self) -> str:
        return (
            f"MachineTwin({self.machine_id}, {self.n_sensors} sensors, v{self.version}, "
            f"health {self._health:.1f}, {self.status().value})"
        )
