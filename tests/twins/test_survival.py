"""The survival RUL model: lifelines agreement, competing risks, intervals, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import WeibullAFTFitter

from twins.survival import SurvivalRulModel


def weibull_fleet(
    n: int, seed: int, modes: tuple[str, ...] = ("bearing_wear",), landmarks: bool = True
) -> pd.DataFrame:
    """Lives whose scale shrinks with load; with two modes, the first to fail ends a life.
    Each life is seen at one landmark age (0 with ``landmarks=False``)."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(0.5, 1.5, n)
    lives = np.stack(
        [
            s * np.exp(-0.9 * (load - 1)) * rng.weibull(k, n)
            for s, k in zip((1000.0, 1600.0), (3.0, 2.0), strict=False)
        ][: len(modes)]
    )
    first = lives.argmin(axis=0)
    life = lives.min(axis=0)
    age = rng.uniform(0, 0.9, n) * life if landmarks else np.zeros(n)
    return pd.DataFrame(
        {
            "load": load,
            "entry": age,
            "duration": life,
            "event": True,
            "mode": np.array(modes)[first],
        }
    )


def test_predictions_agree_with_lifelines_on_the_remaining_life() -> None:
    frame = weibull_fleet(300, 0)
    model = SurvivalRulModel(["load"], penalizer=0.01).fit(frame)
    mean, scale = model.feature_mean_, model.feature_scale_
    z = (frame[["load", "entry"]].to_numpy() - mean) / scale
    fitter = WeibullAFTFitter(penalizer=0.01).fit(
        pd.DataFrame(
            {
                "z0": z[:, 0],
                "z1": z[:, 1],
                "remaining": frame["duration"] - frame["entry"],
                "event": 1,
            }
        ),
        "remaining",
        "event",
    )
    for load, age in ((0.7, 0.0), (1.2, 300.0), (1.4, 900.0)):
        x = pd.DataFrame({"z0": [(load - mean[0]) / scale[0]], "z1": [(age - mean[1]) / scale[1]]})
        est = model.predict([load], age=age)
        assert est.median == pytest.approx(float(fitter.predict_median(x).iloc[0]), rel=2e-3)
        surv = fitter.predict_survival_function(x, times=[168.0]).iloc[0, 0]
        assert est.failure_probability[168] == pytest.approx(1 - surv, abs=1e-6)


def test_fit_returns_self_and_older_or_heavier_machines_have_less_life_left() -> None:
    model = SurvivalRulModel(["load"])
    assert model.fit(weibull_fleet(400, 1)) is model
    assert model.predict([1.4], 100).median < model.predict([0.6], 100).median
    assert model.predict([1.0], 800).median < model.predict([1.0], 100).median
    est = model.predict([1.0], 200)
    probs = [est.failure_probability[h] for h in sorted(est.failure_probability)]
    assert probs == sorted(probs) and probs[0] >= 0 and probs[-1] <= 1
    assert np.all(np.diff(est.curve_survival) <= 1e-12) and est.curve_survival[0] == pytest.approx(
        1.0
    )


def test_ninety_percent_intervals_cover_about_ninety_percent() -> None:
    # Well specified (Weibull lives seen from new), so the intervals must be calibrated.
    model = SurvivalRulModel(["load"]).fit(weibull_fleet(600, 2, landmarks=False))
    test = weibull_fleet(400, 3, landmarks=False)
    inside = [
        model.predict([x], 0).lower <= t <= model.predict([x], 0).upper
        for x, t in zip(test["load"], test["duration"], strict=True)
    ]
    assert 0.85 <= float(np.mean(inside)) <= 0.95


def test_competing_modes_multiply_survival_and_name_the_likely_mode() -> None:
    frame = weibull_fleet(800, 4, modes=("bearing_wear", "seal_leak"), landmarks=False)
    model = SurvivalRulModel(["load"]).fit(frame)
    assert set(model.modes_) == {"bearing_wear", "seal_leak"}
    est = model.predict([1.0], 0)
    assert est.failure_mode == "bearing_wear"  # scale 1000 with k=3 fails first mostly
    assert sum(est.mode_probability.values()) == pytest.approx(1.0)
    # The product of cause-specific survivals, checked at one horizon by hand.
    h = 500.0
    total = 0.0
    for mm in model.modes_.values():
        lam = np.exp(
            mm.intercept
            + mm.coef @ ((np.array([1.0]) - model.feature_mean_) / model.feature_scale_)
        )
        total += (h / lam) ** mm.rho
    assert 1 - np.exp(-total) == pytest.approx(
        np.interp(h, est.curve_hours, 1 - est.curve_survival), abs=0.01
    )


def test_age_per_mode_restarts_a_repaired_component() -> None:
    model = SurvivalRulModel(["load"]).fit(
        weibull_fleet(800, 5, modes=("bearing_wear", "seal_leak"))
    )
    worn = model.predict([1.0], age={"bearing_wear": 900.0, "seal_leak": 900.0})
    repaired = model.predict([1.0], age={"bearing_wear": 0.0, "seal_leak": 900.0})
    assert repaired.median > worn.median
    with pytest.raises(ValueError, match="does not know"):
        model.predict([1.0], age={"gearbox": 1.0})


def test_a_feature_beyond_the_training_range_is_read_at_its_edge() -> None:
    """A linear model extrapolates without bound: a load no training life had (a faulty
    gauge, say) predicts what the heaviest load seen predicts, also after a round trip."""
    frame = weibull_fleet(300, 0)
    model = SurvivalRulModel(["load"], penalizer=0.01).fit(frame)
    edge = float(frame["load"].max())
    at_edge = model.predict([edge], age=100.0)
    beyond = model.predict([edge * 10], age=100.0)
    assert beyond.median == pytest.approx(at_edge.median)
    assert model.predict([edge * 0.9], age=100.0).median > at_edge.median  # inside: as fitted
    again = SurvivalRulModel.from_bytes(model.to_bytes())
    assert again.predict([edge * 10], age=100.0).median == pytest.approx(at_edge.median)


def test_artifact_round_trips_and_detects_tampering() -> None:
    model = SurvivalRulModel(["load"]).fit(weibull_fleet(200, 6))
    blob = model.to_bytes()
    again = SurvivalRulModel.from_bytes(blob)
    assert again.version_ == model.version_ and again.to_bytes() == blob
    assert again.predict([1.1], 100).median == model.predict([1.1], 100).median
    assert json.loads(blob)["format"] == "twinfleet.survival/2"
    doc = json.loads(blob)
    doc["modes"]["bearing_wear"]["rho"] *= 1.01
    with pytest.raises(ValueError, match="altered"):
        SurvivalRulModel.from_bytes(json.dumps(doc).encode())
    with pytest.raises(ValueError, match="not a survival model artifact"):
        SurvivalRulModel.from_bytes(b"{}")
    assert "bearing_wear" in repr(model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": []}, "features"),
        ({"features": ["a", "a"]}, "unique"),
        ({"features": ["a"], "penalizer": -1}, "penalizer"),
        ({"features": ["a"], "confidence": 1.0}, "confidence"),
        ({"features": ["a"], "horizons": [0]}, "horizons"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SurvivalRulModel(**kwargs)


def test_bad_fit_and_predict_input_is_refused() -> None:
    model = SurvivalRulModel(["load"])
    with pytest.raises(ValueError, match="not fitted"):
        model.predict([1.0], 0)
    frame = weibull_fleet(50, 7)
    with pytest.raises(ValueError, match="missing columns: \\['load'\\]"):
        model.fit(frame.drop(columns="load"))
    with pytest.raises(ValueError, match="NaN or infinite values: \\['load'\\]"):
        model.fit(frame.assign(load=np.where(frame.index == 3, np.nan, frame["load"])))
    with pytest.raises(ValueError, match="entry < duration"):
        model.fit(frame.assign(entry=frame["duration"] + 1))
    model.fit(frame)
    with pytest.raises(ValueError, match="1 values"):
        model.predict([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="age"):
        model.predict([1.0], -5)
    with pytest.raises(ValueError, match="missing 'load'"):
        model.predict({"speed": 1.0}, 0)
