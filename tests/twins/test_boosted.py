"""The boosted-index survival model: exported trees, survival around the index, artifact."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from twins.boosted import BoostedRulModel, TreeEnsemble


def landmarks(units: int = 40, seed: int = 0) -> pd.DataFrame:
    """Lives of 150-300 hours; a wear signal rises over the last 100 hours."""
    rng = np.random.default_rng(seed)
    rows = []
    for unit in range(units):
        life = rng.uniform(150, 300)
        for age in np.arange(0, life, 5.0):
            wear = max(age - (life - 100), 0) / 100
            rows.append(
                {
                    "unit": unit,
                    "entry": age,
                    "duration": life,
                    "event": True,
                    "mode": "bearing_wear",
                    "wear": wear + rng.normal(0, 0.05),
                    "noise": rng.normal(),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def model() -> BoostedRulModel:
    return BoostedRulModel(["wear", "noise"], cap=125.0, max_iter=80).fit(landmarks())


def test_exported_trees_predict_exactly_what_scikit_learn_predicts() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 4))
    y = np.sin(x[:, 0]) * 3 + x[:, 1] ** 2 + rng.normal(0, 0.1, 600)
    est = HistGradientBoostingRegressor(max_iter=50, max_leaf_nodes=9, random_state=0)
    est.fit(x, y)
    trees = TreeEnsemble.from_sklearn(est)
    fresh = rng.normal(size=(300, 4)) * 2  # also outside the training range
    assert np.allclose(trees.predict(fresh), est.predict(fresh), rtol=0, atol=1e-9)
    again = TreeEnsemble.from_dict(json.loads(json.dumps(trees.to_dict())))
    assert np.array_equal(again.predict(fresh), trees.predict(fresh))


def test_median_follows_wear_and_the_interval_holds_it(model: BoostedRulModel) -> None:
    new, worn = model.predict([0.0, 0.0], age=10.0), model.predict([0.8, 0.0], age=200.0)
    assert worn.median < 40 < 110 < new.median
    for est in (new, worn):
        assert est.lower < est.median < est.upper
        # the survival curve is the distribution the quantiles were read from
        assert np.interp(est.median, est.curve_hours, est.curve_survival) == pytest.approx(
            0.5, abs=0.03
        )
        assert np.all(np.diff(est.curve_survival) <= 1e-12)
        probs = [est.failure_probability[h] for h in sorted(est.failure_probability)]
        assert probs == sorted(probs)
    assert worn.failure_probability[24] > new.failure_probability[24]
    assert worn.failure_mode == "bearing_wear"
    assert {f[0] for f in worn.factors[:1]} == {"wear"}


def test_out_of_fold_summary_is_honest(model: BoostedRulModel) -> None:
    s = model.summary_
    assert 0.8 < s["concordance"] <= 1.0
    assert 0.8 <= s["interval_coverage"] <= 1.0
    assert s["rmse_within_cap"] < 30


def test_held_out_lives_are_covered_about_as_promised(model: BoostedRulModel) -> None:
    test = landmarks(units=30, seed=9)
    test = test[(test["duration"] - test["entry"]) <= 125]
    truth = (test["duration"] - test["entry"]).to_numpy()
    inside = []
    for row, r in zip(test[["wear", "noise"]].to_numpy(), truth, strict=True):
        est = model.predict(row, age=0.0)
        inside.append(est.lower <= r <= est.upper)
    assert 0.8 <= np.mean(inside) <= 0.99


def test_artifact_round_trips_and_refuses_tampering(model: BoostedRulModel) -> None:
    blob = model.to_bytes()
    again = BoostedRulModel.from_bytes(blob)
    assert again.version_ == model.version_
    a, b = model.predict([0.5, 0.1], age=50.0), again.predict([0.5, 0.1], age=50.0)
    assert (a.median, a.lower, a.upper) == (b.median, b.lower, b.upper)
    doc = json.loads(blob)
    doc["spread"][0] += 0.1
    with pytest.raises(ValueError, match="altered"):
        BoostedRulModel.from_bytes(json.dumps(doc).encode())
    del doc["trees"]
    with pytest.raises(ValueError, match="malformed"):
        BoostedRulModel.from_bytes(json.dumps(doc).encode())
    with pytest.raises(ValueError, match="not a boosted"):
        BoostedRulModel.from_bytes(b"{not json")


def test_bad_input_is_refused_with_its_name(model: BoostedRulModel) -> None:
    with pytest.raises(ValueError, match="2 values"):
        model.predict([0.1], age=1.0)
    with pytest.raises(ValueError, match="finite"):
        model.predict([math.nan, 0.0], age=1.0)
    with pytest.raises(ValueError, match="missing 'noise'"):
        model.predict({"wear": 0.1}, age=1.0)
    with pytest.raises(ValueError, match="age"):
        model.predict([0.1, 0.0], age=-1.0)
    with pytest.raises(ValueError, match="not fitted"):
        BoostedRulModel(["wear"]).predict([0.1], age=1.0)
    frame = landmarks(units=6)
    with pytest.raises(ValueError, match="missing columns"):
        BoostedRulModel(["wear", "absent"]).fit(frame)
    with pytest.raises(ValueError, match="folds=5 units"):
        BoostedRulModel(["wear"]).fit(frame[frame["unit"] < 3])
    frame.loc[0, "wear"] = math.inf
    with pytest.raises(ValueError, match="wear"):
        BoostedRulModel(["wear"]).fit(frame)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": []}, "features"),
        ({"features": ["a", "a"]}, "unique"),
        ({"cap": 0.0}, "cap"),
        ({"folds": 1}, "folds"),
        ({"max_iter": 0}, "max_iter"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"max_leaf_nodes": 1}, "max_leaf_nodes"),
        ({"min_samples_leaf": 0}, "min_samples_leaf"),
        ({"confidence": 1.0}, "confidence"),
        ({"horizons": [0]}, "horizons"),
    ],
)
def test_bad_hyper_parameters_are_named(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"features": ["wear"], **kwargs}
    with pytest.raises(ValueError, match=match):
        BoostedRulModel(**args)  # type: ignore[arg-type]


def test_beyond_the_cap_the_interval_follows_the_fleets_lives() -> None:
    # cap 60: early in life the index can only say "more than 60", the lives say how much
    frame = landmarks()
    model = BoostedRulModel(["wear", "noise"], cap=60.0, max_iter=80).fit(frame)
    assert model.tail_ is not None
    new = model.predict([0.0, 0.0], age=10.0)
    assert new.median <= 61
    assert new.upper > 150  # lives run 150-300 hours: far past the cap
    test = landmarks(units=30, seed=9)
    truth = (test["duration"] - test["entry"]).to_numpy()
    inside = []
    for row, age, r in zip(test[["wear", "noise"]].to_numpy(), test["entry"], truth, strict=True):
        est = model.predict(row, age=float(age))
        inside.append(est.lower <= r <= est.upper)
    assert 0.8 <= np.mean(inside) <= 0.97
    # the curve is one distribution: 0.5 at the median, the tails at the bounds, continuous
    h = np.linspace(0, new.upper * 1.25, 2001)
    s = model._survival(h, new.median)
    assert np.all(np.diff(s) <= 1e-12)
    junction = max(60.0, new.median)
    below, above = model._survival(np.array([junction - 1e-6, junction + 1e-6]), new.median)
    assert below == pytest.approx(above, abs=1e-6)
    for level, at in ((0.5, new.median), (0.95, new.lower), (0.05, new.upper)):
        assert float(model._survival(np.array([at]), new.median)[0]) == pytest.approx(
            level, abs=1e-6
        )


def test_the_spread_is_calibrated_out_of_fold(model: BoostedRulModel) -> None:
    s = model.summary_
    # the factor is chosen so the out-of-fold interval holds exactly `confidence`
    assert s["interval_coverage"] == pytest.approx(model.confidence, abs=0.01)
    assert 0.25 <= model.spread_factor_ <= 4.0
    assert s["spread_factor"] == model.spread_factor_


def test_an_artifact_from_before_the_tail_still_loads(model: BoostedRulModel) -> None:
    doc = json.loads(model.to_bytes())
    old = BoostedRulModel.from_bytes(model.to_bytes())
    old.tail_, old.spread_factor_ = None, 1.0  # what the first version fitted
    old.version_ = old._version()
    blob = old.to_bytes()
    assert "tail" not in json.loads(blob) and "spread_factor" not in json.loads(blob)
    again = BoostedRulModel.from_bytes(blob)
    assert again.tail_ is None and again.spread_factor_ == 1.0
    est = again.predict([0.5, 0.1], age=50.0)
    assert est.lower < est.median < est.upper
    assert doc["spread_factor"] == model.spread_factor_
