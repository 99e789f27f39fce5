"""The main job: a simulated plant where some machines degrade and the twins flag them
before they fail (the whole pipeline, deterministic by seed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinfleet.cli import _plant
from twinfleet.demo import run

pytestmark = pytest.mark.slow

SETTINGS = {
    "step_minutes": 10,
    "report_hours": 48,
    "seed": 7,
    "worn": 6,
    "top": 5,
    "lives": 40,
    "echo": False,
}


def test_twins_flag_degrading_machines_before_they_fail(tmp_path: Path) -> None:
    outcome = run(_plant(None), tmp_path, days=14, **SETTINGS)
    text = "\n".join(outcome.lines)
    assert "52 machines" in text
    assert len(outcome.failures) >= 2, text
    warned = [f for f in outcome.failures if f.lead_hours is not None and f.lead_hours >= 12]
    # Most failures were flagged at least half a day ahead ...
    assert len(warned) >= 0.6 * len(outcome.failures), text
    # ... without flagging the whole fleet.
    assert len(outcome.flagged_not_failed) <= 10, text
    # Models were trained once and are reused on the next start.
    assert sorted(p.name.split("-seed")[0] for p in (tmp_path / "models").glob("*.json")) == [
        "compressor-110kw",
        "conveyor-drive",
        "motor-15kw",
        "pump-75kw",
    ]
    again = run(_plant(None), tmp_path, days=0.1, **SETTINGS)
    assert sum("loaded" in line for line in again.lines) == 4
