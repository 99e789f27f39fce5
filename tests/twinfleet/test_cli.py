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


def test_token_issues_verifiable_tokens_with_one_secret_per_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.auth import Authority, Role

    monkeypatch.delenv("TWINFLEET_API_SECRET", raising=False)
    assert (
        main(["token", "--role", "operator", "--subject", "olga", "--data-dir", str(tmp_path)]) == 0
    )
    token = capsys.readouterr().out.strip()
    secret = (tmp_path / "api-secret").read_text().strip()
    assert (tmp_path / "api-secret").stat().st_mode & 0o777 == 0o600
    who = Authority(secret).verify(f"Bearer {token}")
    assert (who.subject, who.role) == ("olga", Role.OPERATOR)
    args = ["token", "--role", "gateway", "--gateway-id", "gw-7", "--site", "plant-north"]
    assert main([*args, "--data-dir", str(tmp_path)]) == 0
    gateway = Authority(secret).verify("Bearer " + capsys.readouterr().out.strip())
    assert gateway.gateway_id == "gw-7" and gateway.sites == {"plant-north"}
    # a gateway token needs its gateway and sites; people's tokens have none
    assert main(["token", "--role", "gateway", "--data-dir", str(tmp_path)]) == 2
    assert "--gateway-id and --site" in capsys.readouterr().err
    assert main(["token", "--role", "viewer", "--site", "x", "--data-dir", str(tmp_path)]) == 2
