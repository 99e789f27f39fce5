"""MachineHost routes readings to the right twin, in order, and rejects the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actors.host import MachineHost
from schemas.plant import MachineSpec, SensorSpec
from schemas.telemetry import TelemetryBatch
from twins.survival import SurvivalRulModel

T0 = 1_700_000_000_000


def spec(machine_id: str, machine_type: str = "motor-15kw") -> MachineSpec:
    return MachineSpec(
        id=machine_id,
        type=machine_type,
        kind="motor",
        site="s",
        line="l",
        sensors=[
            SensorSpec(name="rpm", kind="speed", unit="rpm"),
            SensorSpec(name="temp", kind="temperature", unit="degC"),
        ],
    )


def batch(rows: list[tuple[str, str, int, float]]) -> TelemetryBatch:
    return TelemetryBatch.model_validate(
        {
            "gateway_id": "g",
            "site_id": "s",
            "batch_id": "b",
            "sent_at": T0,
            "readings": {
                "machine_id": [r[0] for r in rows],
                "sensor_id": [f"{r[0]}.{r[1]}" for r in rows],
                "timestamp": [r[2] for r in rows],
                "value": [r[3] for r in rows],
            },
        },
        context={"now_ms": T0 + 10**9},
    )


def test_mixed_batch_is_split_per_machine_in_order() -> None:
    host = MachineHost([spec("M-1"), spec("M-2")])
    out = host.apply(
        batch(
            [
                ("M-1", "rpm", T0, 1.0),
                ("M-2", "rpm", T0, 2.0),
                ("M-1", "rpm", T0 + 1, 3.0),
                ("M-3", "rpm", T0, 4.0),
                ("M-2", "temp", T0, 50.0),
            ]
        )
    )
    assert out.results["M-1"].applied == 2 and out.results["M-2"].applied == 2
    assert out.rejected == [(3, "machine 'M-3' is not held by this host")]
    assert host.twins["M-1"].state().sensors["M-1.rpm"].value == 3.0
    assert host.twins["M-2"].state().sensors["M-2.temp"].value == 50.0


def test_machines_join_and_leave_at_runtime() -> None:
    host = MachineHost([spec("M-1")])
    host.add(spec("M-2"))
    with pytest.raises(ValueError, match="already held"):
        host.add(spec("M-2"))
    assert host.remove("M-1").machine_id == "M-1"
    with pytest.raises(KeyError, match="not held"):
        host.remove("M-1")
    assert list(host.twins) == ["M-2"]


def test_a_new_model_reaches_every_twin_of_its_type() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "rpm.mean": rng.normal(size=50),
            "entry": 0.0,
            "duration": rng.weibull(2, 50) * 100 + 1,
            "event": True,
            "mode": "bearing_wear",
        }
    )
    model = SurvivalRulModel(["rpm.mean"]).fit(frame)
    host = MachineHost([spec("M-1"), spec("M-2"), spec("P-1", "pump-75kw")])
    assert host.set_model("motor-15kw", model) == 2
    assert host.twins["M-1"].rul_model is model and host.twins["P-1"].rul_model is None
    assert host.add(spec("M-3")).rul_model is model
