"""How good the twins' RUL model is on simulated fleets it was not trained on.

For each machine type of the example plant: train exactly as the demo does (40 lives
from new plus 20 starting with a worn component), then score landmarks of 30 held-out
lives (20 + 10, other seeds) and print the RMSE of the median remaining life, the share
of true remaining lives inside the 90 % interval, and how well P(fail within 7 days)
separates landmarks in the last week of a life from the others (ROC AUC; recall and
false-alarm rate at the demo's flag threshold of 0.3).

    python bench/rul_simulated.py [machine types...]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from schemas.plant import load_plant
from twinfleet.cli import _example_plant_path
from twinfleet.models import representative, training_histories
from twins.survival import SurvivalRulModel
from twins.training import landmark_frame, rul_feature_names


def main() -> None:
    plant = load_plant(_example_plant_path())
    specs = representative(plant)
    types = sys.argv[1:] or sorted(specs)
    print("type              rows  RMSE_h  cover90  AUC_P7d  recall@0.3  false@0.3  seconds")
    for machine_type in types:
        spec = specs[machine_type]
        started = time.perf_counter()
        train = landmark_frame(spec, training_histories(spec, seed=7, lives=40))
        test = landmark_frame(spec, training_histories(spec, seed=99, lives=20))
        model = SurvivalRulModel(rul_feature_names(spec), penalizer=0.05).fit(train)
        rows = []
        for feats, age, end in zip(
            test[model.features].to_numpy(), test["entry"], test["duration"], strict=True
        ):
            est = model.predict(feats, age=float(age))
            rows.append((end - age, est.median, est.lower, est.upper, est.failure_probability[168]))
        a = np.array(rows)
        truth, p7 = a[:, 0], a[:, 4]
        last_week = truth <= 168
        print(
            f"{machine_type:16} {len(a):5d} {np.sqrt(np.mean((a[:, 1] - truth) ** 2)):7.0f} "
            f"{np.mean((a[:, 2] <= truth) & (truth <= a[:, 3])):8.3f} "
            f"{roc_auc_score(last_week, p7):8.3f} {np.mean(p7[last_week] >= 0.3):11.3f} "
            f"{np.mean(p7[~last_week] >= 0.3):10.3f} {time.perf_counter() - started:8.1f}"
        )


if __name__ == "__main__":
    main()
