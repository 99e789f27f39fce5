"""Model drift (twins/drift.py): machines against their RUL model's training data, the
reference saved with the model, and the alert book's drift alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from maintenance.alerts import DRIFT_SUBJECT, AlertBook
from schemas.alerts import AlertRule, AlertStatus, RuleKind
from schemas.anomaly import Severity
from schemas.plant import load_plant
from twins.drift import (
    IDLE,
    MIN_READINGS,
    DriftReference,
    MachineWindow,
    OwnBaseline,
    daily_deviations,
    evaluate,
    regimes_of,
)
from twins.survival import SurvivalRulModel


def reference(seed: int = 0) -> DriftReference:
    rng = np.random.default_rng(seed)
    daily = rng.normal(0.0, 1.0, (4000, 2))
    regimes = rng.integers(7, 9, 4000)
    return DriftReference.fit(
        ["pressure", "temp"], daily, regimes, condition=["load"], scale=[100.0], width=0.1
    )


def window(shift: tuple[float, float], regime: int = 8, n: int = 24) -> MachineWindow:
    w = MachineWindow(2)
    w.add(np.tile(np.array(shift), (n, 1)), np.full(n, regime))
    return w


def test_the_band_holds_99_percent_of_the_training_days() -> None:
    ref = reference()
    lo, hi = ref.bands[(8, "pressure")]
    assert -3.2 < lo < -2.3 and 2.3 < hi < 3.2


def test_a_fleet_inside_the_band_has_not_drifted() -> None:
    fleet = {f"P-{i}": window((0.5 * (-1) ** i, 0.0)) for i in range(14)}
    verdict = evaluate(reference(), fleet)
    assert verdict.compared and verdict.drifted == [] and verdict.machine is None


def test_half_the_machines_moved_on_one_sensor_drift_and_name_it() -> None:
    fleet = {f"P-{i:02d}": window((0.0, 0.0)) for i in range(14)}
    fleet.update({f"P-{i:02d}": window((6.0 + i, 0.0)) for i in range(0, 14, 2)})
    verdict = evaluate(reference(), fleet)
    assert verdict.drifted == ["pressure"]
    assert verdict.machine == "P-12"  # the farthest beyond the band
    assert verdict.describe() == "pressure (7 of 14 machines)"


def test_one_or_two_machines_out_of_the_band_are_machines_not_drift() -> None:
    fleet = {f"P-{i:02d}": window((0.0, 0.0)) for i in range(14)}
    fleet.update({"P-00": window((9.0, 9.0)), "P-01": window((9.0, 9.0))})
    assert evaluate(reference(), fleet).drifted == []
    fleet["P-02"] = window((9.0, 9.0))  # three of 14 is under a quarter
    assert evaluate(reference(), fleet).drifted == []
    fleet["P-03"] = window((9.0, 9.0))
    assert evaluate(reference(), fleet).drifted == ["pressure", "temp"]


def test_a_window_with_too_few_readings_or_an_unknown_regime_is_not_compared() -> None:
    fleet = {f"P-{i}": window((9.0, 0.0), n=MIN_READINGS - 1) for i in range(8)}
    assert not evaluate(reference(), fleet).compared
    fleet = {f"P-{i}": window((9.0, 0.0), regime=3) for i in range(8)}
    assert not evaluate(reference(), fleet).compared


def test_windows_merge_by_adding_sums_and_counts() -> None:
    a, b = window((1.0, 2.0), n=4), window((3.0, 4.0), n=4)
    assert np.allclose(a.merge(b).means()[8], [2.0, 3.0])
    with pytest.raises(ValueError, match="cannot be merged"):
        a.merge(MachineWindow(3))


def test_regimes_bin_the_set_point_and_leave_out_a_stopped_machine() -> None:
    r = regimes_of(np.array([[85.0], [0.0], [np.nan], [100.0]]), [100.0], 0.1)
    assert r.tolist() == [8, IDLE, IDLE, 10]


def test_own_baseline_learns_then_gives_deviations_and_learns_again_after_reset() -> None:
    b = OwnBaseline(1, hours=2.0, horizon=10.0, min_readings=2)
    d = b.deviations(np.array([[10.0], [12.0], [20.0]]), np.array([8, 8, 8]), np.array([0, 1, 3]))
    assert np.isnan(d[:2]).all() and d[2, 0] == 9.0
    assert np.isnan(b.deviations(np.array([[20.0]]), np.array([7]), np.array([4.0]))).all()
    b.reset()
    assert np.isnan(b.deviations(np.array([[20.0]]), np.array([8]), np.array([5.0]))).all()


def test_daily_deviations_average_per_regime_and_day() -> None:
    hours = np.arange(48.0)
    dev = np.where(hours < 24, 1.0, 3.0)[:, None]
    daily, regimes = daily_deviations(dev, np.full(48, 8), hours)
    assert daily[:, 0].tolist() == [1.0, 3.0] and regimes.tolist() == [8, 8]


def fitted_model() -> SurvivalRulModel:
    rng = np.random.default_rng(0)
    life = 1000 * rng.weibull(3.0, 200)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=200),
            "entry": 0.3 * life,
            "duration": life,
            "event": True,
            "mode": "bearing_wear",
        }
    )
    return SurvivalRulModel(["x"]).fit(frame)


def test_the_reference_travels_with_the_model_and_an_older_artifact_has_none() -> None:
    model = fitted_model()
    old_blob = model.to_bytes()
    model.drift_reference_ = reference()
    blob = model.to_bytes()
    loaded = SurvivalRulModel.from_bytes(blob)
    assert loaded.version_ == model.version_  # not part of the version
    assert loaded.drift_reference_ is not None
    assert loaded.drift_reference_.to_dict() == reference().to_dict()
    assert "drift_reference" not in json.loads(old_blob)
    assert SurvivalRulModel.from_bytes(old_blob).drift_reference_ is None


def test_a_drift_rule_is_low_by_default() -> None:
    rule = AlertRule(id="drift", kind="model_drift")
    assert rule.kind is RuleKind.MODEL_DRIFT and rule.severity is Severity.LOW


def test_the_alert_book_raises_one_drift_alert_per_type_and_clears_it() -> None:
    example = load_plant("twinfleet/plants/example.yaml")
    rule = AlertRule(id="model-drift", kind="model_drift")  # low by default
    book = AlertBook(example.model_copy(update={"alert_rules": [*example.alert_rules, rule]}))
    t0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    assert book.on_drift("pump-75kw", [], None, "", t0) == []
    raised = book.on_drift(
        "pump-75kw", ["discharge_pressure"], "P-203", "discharge_pressure (7 of 14 machines)", t0
    )
    assert [(r.new, r.alert.machine_id, r.alert.subject, r.alert.severity) for r in raised] == [
        (True, "P-203", DRIFT_SUBJECT + "pump-75kw", Severity.LOW)
    ]
    assert "discharge_pressure" in raised[0].alert.message
    again = book.on_drift(
        "pump-75kw", ["discharge_pressure"], "P-207", "...", t0 + timedelta(hours=6)
    )
    assert [(r.new, r.alert.machine_id, r.alert.count) for r in again] == [(False, "P-203", 2)]
    cleared = book.on_drift("pump-75kw", [], None, "", t0 + timedelta(hours=12))
    assert [r.alert.status for r in cleared] == [AlertStatus.RESOLVED]
