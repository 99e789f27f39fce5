"""Survival models per machine type: trained on simulated run-to-failure histories,
stored as versioned artifacts in the data directory, loaded again on the next start."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from schemas.plant import MachineSpec, Plant
from twins.boosted import BoostedRulModel
from twins.rul import load_rul_model
from twins.simulator import Life, run_to_failure
from twins.survival import SurvivalRulModel
from twins.training import History, assess, landmark_frame, new_rul_model, train_rul_model

DEFAULT_LIVES = 40


def representative(plant: Plant) -> dict[str, MachineSpec]:
    """One machine of each type (the first listed) to train that type's model on."""
    out: dict[str, MachineSpec] = {}
    for machine in plant.machines:
        out.setdefault(machine.type, machine)
    return out


TRAINING_RECIPE = 8
"""Bumped whenever the way models are trained changes, so cached artifacts are retrained."""


def training_histories(spec: MachineSpec, *, seed: int, lives: int) -> list[Life]:
    """Simulated run-to-failure lives to train on: ``lives`` from new, and half as many
    again starting with a worn component (a refurbished part, a poor installation), so
    the model learns that condition, not age alone, tells how much life is left."""
    return run_to_failure(spec, n_lives=lives, seed=seed) + run_to_failure(
        spec, n_lives=max(lives // 2, 1), seed=seed + 500, initial_wear_high=0.85
    )


def artifact_path(data_dir: Path, machine_type: str, seed: int, lives: int) -> Path:
    name = f"{machine_type}-seed{seed}-lives{lives}-r{TRAINING_RECIPE}.json"
    return data_dir / "models" / name


def load_or_train(
    plant: Plant,
    data_dir: Path,
    *,
    seed: int = 7,
    lives: int = DEFAULT_LIVES,
    log: Callable[[str], None] = print,
) -> dict[str, SurvivalRulModel]:
    """The RUL model of every machine type in ``plant`` (trained once, then loaded)."""
    models: dict[str, SurvivalRulModel] = {}
    for i, (machine_type, spec) in enumerate(sorted(representative(plant).items())):
        path = artifact_path(data_dir, machine_type, seed, lives)
        if path.exists():
            try:
                loaded = load_rul_model(path.read_bytes())
                if not isinstance(loaded, SurvivalRulModel):
                    raise ValueError("it is not a Weibull AFT model")
                models[machine_type] = loaded
                log(f"  {machine_type}: loaded {models[machine_type].version_} from {path}")
                continue
            except ValueError as exc:
                log(f"  {machine_type}: {path} is unusable ({exc}); training again")
        started = time.perf_counter()
        histories = training_histories(spec, seed=seed + 1000 * i, lives=lives)
        model = train_rul_model(spec, histories)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(model.to_bytes())
        tmp.replace(path)
        models[machine_type] = model
        log(
            f"  {machine_type}: trained {model.version_} on {len(histories)} simulated lives "
            f"({model.n_failures_} failures, {model.n_rows_} landmark rows) "
            f"in {time.perf_counter() - started:.1f} s"
        )
    return models


def fit_and_assess(
    spec: MachineSpec,
    histories: Sequence[History],
    *,
    kind: str = "aft",
    holdout_every: int = 5,
    log: Callable[[str], None] = print,
) -> tuple[SurvivalRulModel | BoostedRulModel, dict[str, float]]:
    """Train a model of ``kind`` on ``histories`` and say how good it is.

    Every ``holdout_every``-th life is held out: a model fitted on the others is assessed
    on it (:func:`twins.training.assess`); then the model is fitted again on every life,
    and that one is returned with the held-out assessment.
    """
    started = time.perf_counter()
    log(f"  replaying {len(histories)} lives through a {spec.type} twin...")
    frame = landmark_frame(spec, histories)
    log(
        f"  {len(frame)} landmark rows from {frame['unit'].nunique()} lives "
        f"({int(frame.groupby('unit')['event'].first().sum())} failed) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    held = frame["unit"] % holdout_every == 0
    if held.all() or not held.any():
        raise ValueError("need at least two lives to hold one out")
    log(f"  fitting on {int((~held).sum())} rows, assessing on {int(held.sum())} held-out rows...")
    trial = new_rul_model(spec, kind).fit(frame[~held])
    quality = assess(trial, frame[held])
    log("  fitting on every life...")
    model = new_rul_model(spec, kind).fit(frame)
    log(f"  done in {time.perf_counter() - started:.1f} s")
    return model, quality


def describe(quality: dict[str, float]) -> str:
    """The held-out assessment for people."""
    return (
        f"held-out: concordance {quality['concordance']:.3f}; "
        f"{quality['interval_coverage']:.0%} of remaining lives inside the 90 % interval; "
        f"P(fail within 7 days) predicted {quality['predicted_p']:.3f} vs observed "
        f"{quality['observed_p']:.3f} (Brier {quality['brier']:.3f})"
    )
