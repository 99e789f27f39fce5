"""Users and sessions against a real PostgreSQL (a fresh migrated database per test)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from store import sessions, users
from store.users import UserError

T = TypeVar("T")


def run(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(conn)`` on a new connection (committed when it returns)."""

    async def go() -> T:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await work(conn)

    return asyncio.run(go())


def test_a_user_is_added_listed_and_known_by_the_password_only(database: str) -> None:
    added = run(database, lambda c: users.add_user(c, "olga", "operator", "correct horse"))
    assert (added.name, added.role, added.disabled) == ("olga", "operator", False)
    assert run(database, users.list_users) == [added]
    assert run(database, lambda c: users.authenticate(c, "olga", "correct horse")) == added
    assert run(database, lambda c: users.authenticate(c, "olga", "correct horsE")) is None
    assert run(database, lambda c: users.authenticate(c, "nobody", "correct horse")) is None
    with psycopg.connect(database) as conn:
        (digest,) = conn.execute("SELECT password_hash FROM users").fetchone() or ("",)
    assert digest.startswith("$argon2id$") and "correct horse" not in digest


def test_bad_users_are_refused_naming_what_is_wrong(database: str) -> None:
    run(database, lambda c: users.add_user(c, "olga", "operator", "correct horse"))
    cases = [
        ("olga", "viewer", "another one", "a user named 'olga' already exists"),
        ("viktor", "root", "long enough", "unknown role 'root': choose viewer, operator"),
        ("viktor", "gateway", "long enough", "unknown role 'gateway'"),
        ("viktor", "viewer", "", "the password is empty"),
        ("viktor", "viewer", "seven77", "the password has 7 characters; it needs at least 8"),
        ("", "viewer", "long enough", "user name '': use 1 to 64 letters"),
        ("a b", "viewer", "long enough", "user name 'a b'"),
        ("x" * 65, "viewer", "long enough", "use 1 to 64 letters"),
    ]
    for name, role, password, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            run(database, lambda c, n=name, r=role, p=password: users.add_user(c, n, r, p))
    assert [u.name for u in run(database, users.list_users)] == ["olga"]


def test_disabling_keeps_the_user_marks_it_and_ends_its_sessions(database: str) -> None:
    run(database, lambda c: users.add_user(c, "olga", "admin", "correct horse"))
    assert run(database, users.has_admin)
    later = datetime.now(UTC) + timedelta(hours=1)
    for sid in ("s1", "s2"):
        run(database, lambda c, s=sid: sessions.open_session(c, s, "olga", later, "127.0.0.1"))
    run(database, lambda c: sessions.end_session(c, "s2"))
    assert run(database, lambda c: users.disable_user(c, "olga")) == 1  # s1; s2 had ended
    assert run(database, lambda c: users.disable_user(c, "olga")) == 0
    olga = run(database, lambda c: users.authenticate(c, "olga", "correct horse"))
    assert olga is not None and olga.disabled  # the caller refuses it
    assert not run(database, users.has_admin)
    found = run(database, lambda c: sessions.find_session(c, "s1"))
    assert found is not None and found.ended(datetime.now(UTC)) == "ended (the user is disabled)"
    with pytest.raises(UserError, match="no user named 'nobody'"):
        run(database, lambda c: users.disable_user(c, "nobody"))


def test_a_session_counts_until_it_expires_or_is_ended(database: str) -> None:
    run(database, lambda c: users.add_user(c, "olga", "viewer", "correct horse"))
    now = datetime.now(UTC)
    run(database, lambda c: sessions.open_session(c, "s1", "olga", now + timedelta(hours=12), "x"))
    found = run(database, lambda c: sessions.find_session(c, "s1"))
    assert found is not None and found.user.name == "olga" and found.ended(now) is None
    assert found.ended(now + timedelta(hours=13)) == "expired"
    assert run(database, lambda c: sessions.find_session(c, "nope")) is None
    assert run(database, lambda c: sessions.end_session(c, "s1"))
    assert not run(database, lambda c: sessions.end_session(c, "s1"))  # once
    found = run(database, lambda c: sessions.find_session(c, "s1"))
    assert found is not None and found.ended(now) == "ended (logged out)"
    # a session of a user who does not exist is refused by the database
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        run(database, lambda c: sessions.open_session(c, "s2", "ghost", now, None))


def test_sessions_ended_long_ago_are_forgotten_at_the_next_login(database: str) -> None:
    run(database, lambda c: users.add_user(c, "olga", "viewer", "correct horse"))
    long_ago = datetime.now(UTC) - sessions.KEPT_AFTER_END - timedelta(hours=1)
    recently = datetime.now(UTC) - timedelta(hours=1)
    run(database, lambda c: sessions.open_session(c, "old", "olga", long_ago, None))
    run(database, lambda c: sessions.open_session(c, "recent", "olga", recently, None))
    run(database, lambda c: sessions.open_session(c, "new", "olga", recently + timedelta(1), None))
    with psycopg.connect(database) as conn:
        kept = {r[0] for r in conn.execute("SELECT session_id FROM sessions").fetchall()}
    assert kept == {"recent", "new"}
