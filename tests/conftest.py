"""Shared fixtures: a real nats-server (JetStream) per test, one local Ray per session,
and a small fitted RUL model for a machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.plant import MachineSpec
from twinfleet.services import NatsServer, free_port
from twins.survival import SurvivalRulModel
from twins.training import rul_feature_names


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats", port=free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        namespace="twinfleet-tests",
        configure_logging=False,
    )
    yield
    ray.shutdown()


def fit_toy_model(spec: MachineSpec, penalizer: float = 0.1) -> bytes:
    """A RUL model fitted on random features (enough to make predictions, not good ones)."""
    rng = np.random.default_rng(0)
    names = rul_feature_names(spec)
    x = rng.normal(size=(200, len(names)))
    frame = pd.DataFrame(x, columns=names)
    frame["entry"] = rng.uniform(0, 100, 200)
    frame["duration"] = frame["entry"] + 1000 * np.exp(0.2 * x[:, 0]) * rng.weibull(2, 200)
    frame["event"] = True
    frame["mode"] = spec.failure_modes[0].value if spec.failure_modes else "bearing_wear"
    return SurvivalRulModel(names, penalizer=penalizer).fit(frame).to_bytes()


@pytest.fixture(scope="session")
def toy_model() -> Callable[[MachineSpec, float], bytes]:
    return fit_toy_model
