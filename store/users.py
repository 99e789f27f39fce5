"""People who log in to the dashboard: name, role, an argon2id password hash, disabled or
not (table ``users``, migration 0003). Passwords are never stored or logged: only their
hash is, made by ``argon2-cffi`` with its default parameters (RFC 9106's low-memory
profile), each with its own salt. Hashing and checking take a fraction of a second of one
core and 64 MiB on purpose; they run in a worker thread so an event loop goes on.

Every function takes an open psycopg ``AsyncConnection`` (from the API's pool, or one the
command line opened); bad input raises :class:`UserError` naming what is wrong.

>>> check_name("olga.k"), check_role("operator"), check_password("correct horse")
('olga.k', 'operator', 'correct horse')
>>> check_role("gateway")
Traceback (most recent call last):
...
store.users.UserError: unknown role 'gateway': choose viewer, operator, engineer or admin
>>> check_password("short")
Traceback (most recent call last):
...
store.users.UserError: the password has 5 characters; it needs at least 8
>>> check_name("olga k")
Traceback (most recent call last):
...
store.users.UserError: user name 'olga k': use 1 to 64 letters, digits and . _ @ - ...
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("viewer", "operator", "engineer", "admin")
"""The roles a person may have (``api.auth.Role`` without ``gateway``), least first."""
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASHER = PasswordHasher()
_COLUMNS = "name, role, created_at, disabled"


class UserError(ValueError):
    """A user could not be added, found or changed; the message says why."""


@dataclass(frozen=True)
class User:
    """A person who may log in (what the table holds, without the hash)."""

    name: str
    role: str
    created_at: datetime
    disabled: bool


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(
            f"user name {name!r}: use 1 to 64 letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: choose {', '.join(ROLES[:-1])} or {ROLES[-1]}")
    return role


def check_password(password: str) -> str:
    if not password:
        raise UserError("the password is empty")
    if len(password) < MIN_PASSWORD:
        raise UserError(
            f"the password has {len(password)} characters; it needs at least {MIN_PASSWORD}"
        )
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password is longer than {MAX_PASSWORD} characters")
    return password


def _matches(digest: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(digest, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _stand_in() -> str:
    """A hash checked for an unknown name, so it takes as long as a known one."""
    return _HASHER.hash("not anybody's password")


async def add_user(conn: Any, name: str, role: str, password: str) -> User:
    """A new user; :class:`UserError` for a bad name, role or password, or a name taken."""
    check_name(name)
    check_role(role)
    check_password(password)
    digest = await asyncio.to_thread(_HASHER.hash, password)
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"INSERT INTO users (name, role, password_hash) VALUES (%s, %s, %s) "
                f"RETURNING {_COLUMNS}",
                (name, role, digest),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise UserError(f"a user named {name!r} already exists") from None
    return User(*row)


async def authenticate(conn: Any, name: str, password: str) -> User | None:
    """The user ``name`` if ``password`` is theirs (disabled or not: the caller decides),
    else ``None``, without telling an unknown name from a wrong password, also in time.
    A hash made with older parameters is replaced by one with the current ones."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, password_hash FROM users WHERE name = %s", (name,)
    )
    row = await cur.fetchone()
    if row is None:
        await asyncio.to_thread(_matches, _stand_in(), password)
        return None
    digest = row[-1]
    if not await asyncio.to_thread(_matches, digest, password):
        return None
    if _HASHER.check_needs_rehash(digest):
        new = await asyncio.to_thread(_HASHER.hash, password)
        await conn.execute("UPDATE users SET password_hash = %s WHERE name = %s", (new, name))
    return User(*row[:-1])


async def find_user(conn: Any, name: str) -> User | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM users WHERE name = %s", (name,))
    row = await cur.fetchone()
    return None if row is None else User(*row)


async def list_users(conn: Any) -> list[User]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM users ORDER BY name")
    return [User(*row) for row in await cur.fetchall()]


async def disable_user(conn: Any, name: str) -> int:
    """Disable ``name`` (it can no longer log in) and end its open sessions; returns how
    many were ended. Disabling a disabled user changes nothing."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE users SET disabled = true WHERE name = %s RETURNING name", (name,)
        )
        if await cur.fetchone() is None:
            raise UserError(f"no user named {name!r}")
        cur = await conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE user_name = %s "
            "AND revoked_at IS NULL AND expires_at > now()",
            (name,),
        )
        return int(cur.rowcount)


async def has_admin(conn: Any) -> bool:
    """Whether some user may administer (an admin who is not disabled)."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND NOT disabled)"
    )
    row = await cur.fetchone()
    return bool(row[0])
