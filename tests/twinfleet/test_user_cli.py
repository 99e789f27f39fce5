"""``twinfleet user add|list|disable`` and ``twinfleet up``'s first admin, against a real
PostgreSQL (a fresh migrated database per test)."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from store.users import User, authenticate
from twinfleet.cli import main
from twinfleet.users import first_admin


def check(url: str, name: str, password: str) -> User | None:
    async def go() -> User | None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await authenticate(conn, name, password)

    return asyncio.run(go())


def user(
    args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "", url: str | None = None
) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["user", *args, *(["--database-url", url] if url else [])])


def test_the_installed_command_adds_a_user_with_the_password_on_stdin(database: str) -> None:
    exe = shutil.which("twinfleet") or str(Path(sys.executable).parent / "twinfleet")
    done = subprocess.run(
        [exe, "user", "add", "olga", "--role", "operator", "--password-stdin"],
        input="correct horse\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={"DATABASE_URL": database, "PATH": str(Path(sys.executable).parent)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "added user 'olga' (operator)"
    assert "correct horse" not in done.stdout + done.stderr
    found = check(database, "olga", "correct horse")
    assert found is not None and found.role == "operator"


def test_list_and_disable(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert user(["list"], monkeypatch, url=database) == 0
    assert "no users yet" in capsys.readouterr().out
    for name, role in (("olga", "operator"), ("adam", "admin")):
        add = ["add", name, "--role", role, "--password-stdin"]
        assert user(add, monkeypatch, "long enough\n", database) == 0
    assert user(["disable", "olga"], monkeypatch, url=database) == 0
    assert "disabled user 'olga'; 0 open session(s) ended" in capsys.readouterr().out
    assert user(["list"], monkeypatch, url=database) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["adam", "admin"], ["olga", "operator"]]
    assert lines[1].endswith("DISABLED") and not lines[0].endswith("DISABLED")


ADD = ["add", "viktor", "--role", "viewer", "--password-stdin"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["add", "olga", "--role", "viewer", "--password-stdin"],
            "another one\n",
            "a user named 'olga' already exists",
        ),
        (["add", "viktor", "--role", "root"], "", "unknown role 'root': choose viewer"),
        (ADD, "\n", "the password is empty"),
        (ADD, "seven77\n", "the password has 7 characters; it needs at least 8"),
        (["add", "a b", "--role", "viewer"], "", "user name 'a b': use 1 to 64 letters"),
        (["disable", "nobody"], "", "no user named 'nobody'"),
    ],
)
def test_bad_input_exits_2_saying_what_is_wrong(
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    stdin: str,
    message: str,
) -> None:
    add = ["add", "olga", "--role", "viewer", "--password-stdin"]
    assert user(add, monkeypatch, "long enough\n", database) == 0
    capsys.readouterr()
    assert user(args, monkeypatch, stdin, database) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"twinfleet user {args[0]}: ") and message in err
    assert check(database, "olga", "long enough") is not None  # unchanged
    assert check(database, "viktor", stdin.strip()) is None  # nobody added


def test_without_a_terminal_or_a_database_the_command_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert user(["add", "olga", "--role", "viewer"], monkeypatch) == 2
    assert "no terminal to ask the password on: use --password-stdin" in capsys.readouterr().err
    assert user(["list", "--data-dir", str(tmp_path)], monkeypatch) == 2
    assert "no database: give --database-url, set DATABASE_URL" in capsys.readouterr().err


def test_up_makes_a_first_admin_once(database: str) -> None:
    made = first_admin(database)
    assert made is not None and made[0] == "admin" and len(made[1]) >= 16
    found = check(database, *made)
    assert found is not None and found.role == "admin"
    assert first_admin(database) is None  # there is one now
