"""Migrations against a real PostgreSQL: applied once, safe to repeat, edits refused."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from store.migrations import DIRECTORY, MigrationError, available, migrate


def test_a_second_run_applies_nothing_and_records_each_version_once(database: str) -> None:
    with psycopg.connect(database) as conn:
        assert migrate(conn) == []  # the fixture applied them already
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [m.version for m in available()]


def test_an_edited_migration_is_refused(database: str, tmp_path: Path) -> None:
    for m in available():
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql + "\n-- edited\n")
    with psycopg.connect(database) as conn, pytest.raises(MigrationError, match="was changed"):
        migrate(conn, tmp_path)


def test_a_new_migration_is_applied_after_the_others(database: str, tmp_path: Path) -> None:
    for path in DIRECTORY.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "9999_extra.sql").write_text("CREATE TABLE extra (x int);")
    with psycopg.connect(database) as conn:
        assert migrate(conn, tmp_path) == [9999]
        assert migrate(conn, tmp_path) == []
        conn.execute("SELECT x FROM extra")


def test_misnamed_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        available(tmp_path)
