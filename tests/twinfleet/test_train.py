"""``twinfleet train``: from simulated lives or a CSV of recorded ones, with a held-out
summary and an artifact the twins load; and the CSV's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.plant import load_plant
from twinfleet.cli import _example_plant_path, main
from twinfleet.histories import HistoryFileError, read_histories
from twinfleet.models import representative
from twins.machine import MachineTwin
from twins.rul import load_rul_model
from twins.simulator import run_to_failure

TYPE = "pump-75kw"


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    return representative(load_plant(_example_plant_path()))[TYPE]


def lives_csv(spec, path: Path, lives: int = 10, every: int = 6) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Simulated lives written in the documented CSV format (every 6th sample)."""
    frames = []
    for unit, life in enumerate(run_to_failure(spec, n_lives=lives, seed=3)):
        keep = slice(None, None, every)
        frame = pd.DataFrame(life.values[keep], columns=[s.name for s in spec.sensors])
        frame.insert(0, "hours", life.hours[keep])
        frame.insert(0, "unit", f"P-{unit}")
        frame["failure_mode"] = life.failure_mode.value if life.failure_mode else ""
        frames.append(frame)
    out = pd.concat(frames)
    out.to_csv(path, index=False)
    return out


@pytest.mark.slow
def test_train_from_a_csv_writes_an_artifact_twins_load(
    spec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "lives.csv"
    lives_csv(spec, csv)
    code = main(["train", "--type", TYPE, "--histories", str(csv), "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 lives from" in out
    assert "held-out: concordance" in out
    assert "P(fail within 7 days) predicted" in out
    artifacts = list((tmp_path / "models").glob("*.json"))
    assert len(artifacts) == 1
    model = load_rul_model(artifacts[0].read_bytes())
    assert model.version_ in out
    twin = MachineTwin(spec, rul_model=model)
    assert twin.rul_model is model


def test_csv_errors_name_the_file_row_and_column(spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = lives_csv(spec, tmp_path / "good.csv", lives=2, every=50)
    assert len(read_histories(tmp_path / "good.csv", spec)) == 2

    def broken(name: str, frame: pd.DataFrame) -> Path:
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return path

    sensor = spec.sensors[0].name
    cases = {
        "missing columns": good.drop(columns=[sensor]),
        "row 4, column 'hours'": good.assign(
            hours=np.where(np.arange(len(good)) == 2, np.nan, good["hours"])
        ),
        "is not one of": good.assign(failure_mode="gremlins"),
        "no unit failed": good.assign(failure_mode=""),
        "must be >= 0 and increasing": good.assign(hours=good["hours"][::-1].to_numpy()),
        "are not consecutive": pd.concat([good.iloc[:5], good.iloc[-5:], good.iloc[5:10]]),
    }
    text = good.astype(object)
    text.iloc[3, 2] = "broken"
    cases[f"row 5, column '{text.columns[2]}'"] = text
    for i, (message, frame) in enumerate(cases.items()):
        with pytest.raises(HistoryFileError, match=message):
            read_histories(broken(f"bad{i}.csv", frame), spec)
    with pytest.raises(HistoryFileError, match="no such file"):
        read_histories(tmp_path / "absent.csv", spec)


def test_train_refuses_bad_requests_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--type", "no-such-type"]) == 2
    assert "no machine type" in capsys.readouterr().err
    assert main(["train", "--histories", str(tmp_path / "x.csv")]) == 2
    assert "exactly one --type" in capsys.readouterr().err
    assert main(["train", "--type", TYPE, "--histories", str(tmp_path / "x.csv")]) == 2
    assert "x.csv: no such file" in capsys.readouterr().err
