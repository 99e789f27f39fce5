"""The installed ``twinfleet`` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from twinfleet.cli import main


def test_the_entry_point_is_installed_and_answers_help() -> None:
    exe = shutil.which("twinfleet") or str(Path(sys.executable).parent / "twinfleet")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True, timeout=60)
    assert "demo" in out.stdout and "plant" in out.stdout and "train" in out.stdout


def test_plant_validates_the_bundled_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plant"]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "machines: 52" in out


def test_a_broken_plant_file_exits_2_naming_file_path_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "plant.yaml"
    bad.write_text(
        "machine_types:\n"
        "  m: {kind: motor, sensors: [{name: rpm, kind: speed, unit: rpm}]}\n"
        "sites:\n"
        "  - id: s\n"
        "    lines: [{id: l, machines: [{id: M-1, type: mm}]}]\n"
    )
    assert main(["plant", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: sites[0].lines[0].machines[0].type: unknown machine type 'mm'" in err


def test_bad_numbers_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--days", "-1"])
    assert exc.value.code == 2
    assert "must be positive" in capsys.readouterr().err
