"""MachineTwin: ordering rules, rejection, snapshots, clones, RUL and state."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from schemas.anomaly import AnomalyType
from schemas.common import Quality
from schemas.plant import MachineSpec, RatedValues, SensorSpec
from schemas.telemetry import TelemetryBatch
from schemas.twin import MachineStatus, TwinState
from twins.machine import MachineTwin, TwinConfig
from twins.snapshot import SnapshotError
from twins.survival import SurvivalRulModel

T0 = 1_700_000_000_000
SENSORS = [
    SensorSpec(
        name="vibration",
        kind="vibration",
        unit="mm/s",
        normal_high=7.1,
        critical_high=11.0,
        max_rate_per_s=5.0,
        stuck_after=20,
    ),
    SensorSpec(
        name="bearing_temp",
        kind="temperature",
        unit="degC",
        normal_high=85.0,
        critical_high=100.0,
        stuck_after=20,
    ),
    SensorSpec(
        name="current",
        kind="current",
        unit="A",
        normal_high=110.0,
        critical_high=125.0,
        stuck_after=20,
    ),
    SensorSpec(
        name="rpm", kind="speed", unit="rpm", normal_low=1400.0, normal_high=1520.0, stuck_after=0
    ),
]
SPEC = MachineSpec(
    id="M-7",
    type="motor-15kw",
    kind="motor",
    site="s",
    line="l",
    rated=RatedValues(rpm=1480, current_a=100, voltage_v=400),
    failure_modes=["bearing_wear", "winding_insulation"],
    sensors=SENSORS,
)
IDS = SPEC.sensor_ids()


def scans(n: int, seed: int = 0, start: int = 0, hours: float = 1 / 3600) -> np.ndarray:
    """n scans of plausible healthy values (rows), deterministic."""
    rng = np.random.default_rng(seed + start)
    base = np.array([2.0, 60.0, 80.0, 1470.0])
    sigma = np.array([0.1, 0.5, 1.0, 2.0])
    return base + rng.normal(size=(n, 4)) * sigma


def batch(
    rows: list[tuple[str, int, float]] | list[tuple[str, int, float, int]],
    n: int = 0,
    machine: str = "M-7",
) -> TelemetryBatch:
    return TelemetryBatch.model_validate(
        {
            "gateway_id": "gw",
            "site_id": "s",
            "batch_id": f"b{n}",
            "sent_at": T0,
            "readings": {
                "machine_id": [
                    machine if r[0].startswith("M-7") else r[0].split(".")[0] for r in rows
                ],
                "sensor_id": [r[0] for r in rows],
                "timestamp": [r[1] for r in rows],
                "value": [r[2] for r in rows],
                "quality": [r[3] if len(r) > 3 else 0 for r in rows],  # type: ignore[misc]
            },
        },
        context={"now_ms": T0 + 10**12},
    )


def scan_batch(values: np.ndarray, t_ms: int, n: int = 0) -> TelemetryBatch:
    return batch([(sid, t_ms, float(v)) for sid, v in zip(IDS, values, strict=True)], n)


def feed(twin: MachineTwin, data: np.ndarray, start_ms: int = T0, step_ms: int = 1000) -> list:
    return [twin.apply(scan_batch(row, start_ms + i * step_ms, i)) for i, row in enumerate(data)]


def test_apply_reports_what_changed_and_bumps_the_version() -> None:
    twin = MachineTwin(SPEC)
    result = twin.apply(scan_batch(scans(1)[0], T0))
    assert result.applied == 4
    assert result.changed_sensors == IDS
    assert result.version == twin.version == 1
    assert twin.state().sensors["M-7.rpm"].timestamp == T0


def test_a_resent_batch_is_a_duplicate_and_changes_nothing() -> None:
    twin = MachineTwin(SPEC)
    b = scan_batch(scans(1)[0], T0)
    twin.apply(b)
    before = twin.snapshot()
    again = twin.apply(b)
    assert (again.applied, again.duplicates, again.version) == (0, 4, 1)
    assert twin.counters["duplicates"] == 4
    # Only the duplicate counter moved.
    twin.counters["duplicates"] = 0
    assert twin.snapshot() == before


def test_late_readings_are_reported_not_applied() -> None:
    twin = MachineTwin(SPEC)
    twin.apply(batch([("M-7.current", T0 + 2000, 80.0)]))
    result = twin.apply(batch([("M-7.current", T0 + 1000, 95.0), ("M-7.rpm", T0 + 1000, 1470.0)]))
    assert result.late == [0]
    assert result.applied == 1
    assert twin.state().sensors["M-7.current"].value == 80.0
    # Same time, different value: late as well (the first reading stands).
    result = twin.apply(batch([("M-7.current", T0 + 2000, 81.0)]))
    assert result.late == [0] and twin.state().sensors["M-7.current"].value == 80.0


def test_order_within_a_batch_does_not_matter() -> None:
    rows = [
        (sid, T0 + k * 1000, float(v))
        for k, row in enumerate(scans(5))
        for sid, v in zip(IDS, row, strict=True)
    ]
    shuffled = [rows[i] for i in np.random.default_rng(3).permutation(len(rows))]
    a, b = MachineTwin(SPEC), MachineTwin(SPEC)
    a.apply(batch(rows))
    b.apply(batch(shuffled))
    assert a.snapshot() == b.snapshot()


def test_many_readings_per_sensor_in_one_batch_equal_one_scan_per_batch() -> None:
    data = scans(40)
    rows = [
        (sid, T0 + k * 1000, float(v))
        for k, row in enumerate(data)
        for sid, v in zip(IDS, row, strict=True)
    ]
    together, apart = MachineTwin(SPEC), MachineTwin(SPEC)
    together.apply(batch(rows))
    feed(apart, data)
    for name in ("features", "trend"):
        sa, sb = getattr(together, name).state_dict(), getattr(apart, name).state_dict()
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{name}.{key}")
    da, db = together.detectors.state_dict(), apart.detectors.state_dict()  # type: ignore[union-attr]
    assert da.keys() == db.keys()
    for key in da:
        np.testing.assert_array_equal(np.asarray(da[key]), np.asarray(db[key]), err_msg=key)


def test_foreign_and_unknown_readings_are_rejected_with_reasons_and_counted() -> None:
    twin = MachineTwin(SPEC)
    result = twin.apply(
        batch([("M-7.rpm", T0, 1470.0), ("M-7.oil_level", T0, 3.0), ("P-1.flow", T0, 9.0)])
    )
    assert result.applied == 1
    reasons = {r.index: r.reason for r in result.rejected}
    assert reasons[1] == "unknown sensor 'M-7.oil_level' on machine 'M-7'"
    assert reasons[2] == "reading is for machine 'P-1', not 'M-7'"
    assert twin.counters["rejected"] == 2


def test_bad_quality_updates_quality_but_not_the_value() -> None:
    twin = MachineTwin(SPEC)
    twin.apply(batch([("M-7.bearing_temp", T0, 60.0)]))
    result = twin.apply(batch([("M-7.bearing_temp", T0 + 1000, 999.0, int(Quality.BAD))]))
    assert result.bad_quality == 1 and result.applied == 0 and not result.anomalies
    state = twin.state().sensors["M-7.bearing_temp"]
    assert (state.value, state.quality, state.timestamp) == (60.0, Quality.BAD, T0 + 1000)


def test_critical_value_raises_one_critical_threshold_anomaly_while_it_lasts() -> None:
    twin = MachineTwin(SPEC)
    feed(twin, scans(40))
    hot = scans(5, start=40)
    hot[:, 1] = 104.0
    results = feed(twin, hot, start_ms=T0 + 40_000)
    found = [a for r in results for a in r.anomalies if a.sensor_id == "M-7.bearing_temp"]
    assert len(found) == 1
    assert found[0].type is AnomalyType.THRESHOLD and found[0].severity.value == "critical"
    assert "critical_high 100" in found[0].reason
    assert twin.status() is MachineStatus.ALARM
    assert twin.health_score == pytest.approx(100 * (1 - (0.7 * 1 + 0.3 * 0.25)))
    assert twin.in_alarm() == ["bearing_temp"]  # the condition is still open ...
    feed(twin, scans(2, start=45), start_ms=T0 + 45_000)
    assert twin.in_alarm() == []  # ... until the readings are back below the limits


def test_a_sensor_that_goes_silent_is_reported_once_as_stale() -> None:
    twin = MachineTwin(SPEC)
    feed(twin, scans(10))
    rows = [
        (sid, T0 + 10_000 + k * 1000, float(v))
        for k in range(100)
        for sid, v in zip(IDS[:3], scans(1, start=k)[0][:3], strict=True)
    ]
    result = twin.apply(batch(rows))  # rpm stops reporting; stale after 60 s
    stale = [a for a in result.anomalies if a.type is AnomalyType.STALE]
    # Reported once, when it starts: a data problem, low severity however long it lasts.
    assert [(a.sensor_id, a.severity.value) for a in stale] == [("M-7.rpm", "low")]
    assert "no reading from rpm for 60 s" in stale[0].reason
    assert twin.state().sensors["M-7.rpm"].stale
    assert not twin.state().sensors["M-7.current"].stale
    # Still silent, still the same condition: not reported again.
    later = twin.tick(T0 + 115_000)
    assert [a for a in later.anomalies if a.sensor_id == "M-7.rpm"] == []


def test_tick_finds_a_machine_gone_silent_and_calls_it_offline() -> None:
    twin = MachineTwin(SPEC)
    feed(twin, scans(10))
    result = twin.tick(T0 + 200_000)
    assert sorted(a.sensor_id for a in result.anomalies if a.type is AnomalyType.STALE) == sorted(
        IDS
    )
    assert all(a.severity.value == "low" for a in result.anomalies)  # data, not machine
    assert twin.status() is MachineStatus.OFFLINE


def test_an_idle_machine_is_not_called_low_stuck_or_unusual() -> None:
    twin = MachineTwin(SPEC)
    feed(twin, scans(60))
    idle = np.tile([0.3, 45.0, 0.5, 0.0], (80, 1))  # stopped: no speed, no current, cooling
    results = feed(twin, idle, start_ms=T0 + 60_000)
    assert [a for r in results for a in r.anomalies] == []
    assert twin.status() is MachineStatus.IDLE
    assert twin.health_score == 100.0
    hot = idle[:3].copy()
    hot[:, 1] = 101.0  # but a hot bearing at standstill is still reported
    results = feed(twin, hot, start_ms=T0 + 140_000)
    assert [a.type for r in results for a in r.anomalies] == [AnomalyType.THRESHOLD]


def test_one_spike_raises_an_anomaly_but_does_not_move_health() -> None:
    twin = MachineTwin(SPEC)
    feed(twin, scans(60))
    spike = scans(1, start=60)
    spike[0, 0] = 10.5  # vibration beyond critical for one reading
    result = feed(twin, spike, start_ms=T0 + 60_000)[0]
    (found,) = result.anomalies
    assert found.sensor_id == "M-7.vibration"
    # A jump beyond the critical limit faster than vibration can move: a glitch, low.
    assert found.detector == "rate_of_change" and "threshold" in found.reason
    assert found.severity.value == "low"
    assert twin.health_score == 100.0
    feed(twin, np.tile(spike, (2, 1)), start_ms=T0 + 61_000)  # it persists: now it counts
    assert twin.health_score == pytest.approx(100 * (1 - (0.7 + 0.3 / 4) * 3.4 / 3.9), abs=0.01)


def test_snapshot_restore_continues_exactly() -> None:
    data = scans(300)
    original = MachineTwin(SPEC)
    feed(original, data[:250])
    blob = original.snapshot()
    restored = MachineTwin(SPEC)
    restored.restore(blob)
    assert restored.snapshot() == blob
    ra = feed(original, data[250:], start_ms=T0 + 250_000)
    rb = feed(restored, data[250:], start_ms=T0 + 250_000)
    assert [r.anomalies for r in ra] == [r.anomalies for r in rb]
    assert [r.scan_scores for r in ra] == [r.scan_scores for r in rb]
    assert original.snapshot() == restored.snapshot()


def test_restore_refuses_another_machines_snapshot() -> None:
    other = MachineTwin(SPEC.model_copy(update={"id": "M-8"}))
    with pytest.raises(SnapshotError, match="machine 'M-8', not 'M-7'"):
        MachineTwin(SPEC).restore(other.snapshot())
    changed = MachineTwin(SPEC.model_copy(update={"sensors": SENSORS[:3]}))
    with pytest.raises(SnapshotError, match="different machine description"):
        MachineTwin(SPEC).restore(changed.snapshot())
    with pytest.raises(SnapshotError, match="magic"):
        MachineTwin(SPEC).restore(b"garbage")


def test_clone_is_independent() -> None:
    twin = MachineTwin(SPEC)
    feed(twin, scans(50))
    before = twin.snapshot()
    clone = twin.clone()
    assert clone.snapshot() == before
    feed(clone, scans(20, start=50) + 30, start_ms=T0 + 50_000)
    assert twin.snapshot() == before
    assert clone.version == twin.version + 20


def test_apply_arrays_rejects_bad_input() -> None:
    twin = MachineTwin(SPEC)
    with pytest.raises(ValueError, match="finite"):
        twin.apply_arrays(np.array([T0] * 4), np.array([1.0, np.inf, 2.0, 3.0]))
    with pytest.raises(ValueError, match="column indices"):
        twin.apply_arrays(np.array([T0]), np.array([1.0]), np.array([9]))
    with pytest.raises(ValueError, match="equally long"):
        twin.apply_arrays(np.array([T0, T0]), np.array([1.0]))
    assert twin.version == 0


def _toy_model() -> SurvivalRulModel:
    """A model whose life shortens as vibration rises (synthetic, known direction)."""
    rng = np.random.default_rng(0)
    feats = {
        f"{s.name}.{stat}": rng.normal(size=400) for s in SENSORS for stat in ("mean", "slope")
    }
    vib = rng.uniform(1.5, 8.0, 400)
    feats["vibration.mean"] = vib
    life = 2000 * np.exp(-0.3 * (vib - 2)) * rng.weibull(2.5, 400)
    frame = pd.DataFrame(
        {
            **feats,
            "entry": 0.0,
            "duration": life,
            "event": True,
            "mode": np.where(rng.uniform(size=400) < 0.7, "bearing_wear", "winding_insulation"),
        }
    )
    return SurvivalRulModel(list(feats), name="toy").fit(frame)


def test_rul_is_predicted_when_due_and_names_its_model_version() -> None:
    model = _toy_model()
    twin = MachineTwin(SPEC, rul_model=model, config=TwinConfig(rul_min_hours=3, rul_every_hours=2))
    predictions = []
    for k in range(24 * 6):  # one scan every 10 minutes for a day
        data = scans(1, start=k)[0]
        r = twin.apply(scan_batch(data, T0 + k * 600_000, k))
        if r.rul is not None:
            predictions.append((k, r.rul))
    hours = [k / 6 for k, _ in predictions]
    assert hours[0] >= 3 and all(b - a >= 2 for a, b in itertools.pairwise(hours))
    rul = predictions[-1][1]
    assert rul.model_version == model.version_
    probs = [rul.failure_probability[h] for h in sorted(rul.failure_probability)]
    assert probs == sorted(probs)
    assert rul.lower_hours <= rul.median_hours <= rul.upper_hours
    assert {f.factor for f in rul.contributing_factors}
    # both failure modes share the predicted failure, the likely one the most
    shares = rul.failure_mode_shares
    assert set(shares) == {"bearing_wear", "winding_insulation"}
    assert sum(shares.values()) == pytest.approx(1, abs=1e-5)
    assert max(shares, key=shares.__getitem__) == rul.failure_mode
    # A repair of the dominant mode restarts its clock: the next prediction is from age 0.
    repaired_at = T0 + 24 * 3_600_000
    twin.record_repair("bearing_wear", repaired_at)
    assert twin.age_hours(repaired_at)["bearing_wear"] == 0.0
    # The trend starts again: no prediction until rul_min_hours of new trend exist.
    assert twin.rul is None
    after = [
        twin.apply(scan_batch(scans(1, start=k)[0], repaired_at + k * 600_000, 1000 + k))
        for k in range(1, 30)
    ]
    first = next(k for k, r in enumerate(after, start=1) if r.rul is not None)
    assert first * 600_000 >= 3 * 3_600_000
    ages = twin.age_hours(repaired_at + first * 600_000)
    assert ages["bearing_wear"] == pytest.approx(first / 6) and ages["winding_insulation"] > 24
    with pytest.raises(ValueError, match="seal_leak"):
        twin.record_repair("seal_leak", T0)


def test_state_is_a_valid_record_that_round_trips_through_json() -> None:
    twin = MachineTwin(SPEC)
    feed(twin, scans(40))
    state = twin.state()
    again = TwinState.model_validate_json(state.model_dump_json())
    assert again == state
    assert state.derived_metrics["load_fraction"] == pytest.approx(
        twin.state().sensors["M-7.current"].value / 100
    )
    assert "mean_32" in state.features["M-7.vibration"]
    assert "dominant_freq_hz" in state.features["M-7.vibration"]


def test_rul_features_give_recent_means_trend_and_drift_from_the_machine_baseline() -> None:
    """Hourly scans: temperature flat at 60 for 20 h, then 70. Drift is the last 8
    readings' mean minus the mean of all hourly means so far; a repair resets it."""
    cfg = TwinConfig(windows=(8, 32), trend_window=48, detect=False)
    twin = MachineTwin(SPEC, config=cfg)
    data = scans(30)
    data[:, 1] = np.where(np.arange(30) < 20, 60.0, 70.0)
    feed(twin, data, step_ms=3_600_000)
    feats = twin.rul_features()
    assert feats["bearing_temp.mean_w8"] == pytest.approx(70.0)
    assert feats["bearing_temp.mean_w32"] == pytest.approx((20 * 60 + 10 * 70) / 30)
    # hourly means close when the next hour starts: 29 of the 30 are in the trend
    life = (20 * 60 + 9 * 70) / 29
    assert feats["bearing_temp.mean"] == pytest.approx(life)
    assert feats["bearing_temp.drift"] == pytest.approx(70.0 - life)
    assert feats["bearing_temp.slope"] > 0
    restored = MachineTwin(SPEC, config=cfg)
    restored.restore(twin.snapshot())
    assert restored.rul_features() == feats
    twin.record_repair("bearing_wear", T0 + 30 * 3_600_000)
    assert np.isnan(twin.rul_features()["bearing_temp.drift"])
