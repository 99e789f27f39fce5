"""Cost of one RUL prediction for one machine, for each model kind.

Trains both model kinds for the example plant's pump on a few simulated lives, feeds a
twin 500 hours of another life, then times ``model.predict`` (the model alone) and
``MachineTwin.predict_rul`` (features, model and the validated prediction record).

    python bench/rul_predict.py
"""

from __future__ import annotations

import time

import numpy as np

from schemas.plant import load_plant
from twinfleet.cli import _example_plant_path
from twinfleet.models import representative, training_histories
from twins.machine import MachineTwin, TwinConfig
from twins.simulator import run_to_failure
from twins.training import landmark_frame, new_rul_model

REPEATS = 500


def main() -> None:
    spec = representative(load_plant(_example_plant_path()))["pump-75kw"]
    frame = landmark_frame(spec, training_histories(spec, seed=7, lives=12))
    life = run_to_failure(spec, n_lives=1, seed=99)[0]
    values = life.values[:500]
    ts = 1_600_000_000_000 + np.round(life.hours[:500] * 3_600_000).astype(np.int64)
    present = ~np.isnan(values)
    print("model      model.predict_us  twin.predict_rul_us")
    for kind in ("aft", "boosted"):
        model = new_rul_model(spec, kind).fit(frame)
        twin = MachineTwin(spec, rul_model=model, config=TwinConfig(detect=False))
        twin.apply_arrays(
            np.broadcast_to(ts[:, None], values.shape)[present],
            values[present],
            np.broadcast_to(np.arange(values.shape[1]), values.shape)[present],
        )
        feats = twin.rul_features()
        row = [feats[f] for f in model.features]
        started = time.perf_counter()
        for _ in range(REPEATS):
            model.predict(row, age=500.0)
        alone = (time.perf_counter() - started) / REPEATS
        started = time.perf_counter()
        for _ in range(REPEATS):
            twin.predict_rul(int(ts[-1]))
        whole = (time.perf_counter() - started) / REPEATS
        print(f"{kind:10} {alone * 1e6:16.0f} {whole * 1e6:20.0f}")


if __name__ == "__main__":
    main()
