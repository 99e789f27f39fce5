"""``twinfleet user add|list|disable``: the people who log in to the dashboard
(:mod:`store.users`), and the first admin ``twinfleet up`` makes.

The database is ``--database-url``, else ``$DATABASE_URL``, else the PostgreSQL ``twinfleet
up`` runs in the data directory (``--db-port``, 5433 by default). Its schema is migrated
first (safe to repeat). A password is asked twice on the terminal, or read as one line from
standard input with ``--password-stdin`` (scripts, tests); it is never echoed, logged or
stored in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

FIRST_ADMIN = "admin"


class CommandError(Exception):
    """What to tell the person at the terminal (exit status 2)."""


def add_commands(sub: Any) -> None:
    """Add ``user`` and its sub-commands to the ``twinfleet`` parser."""
    user = sub.add_parser(
        "user",
        help="manage the people who log in to the dashboard",
        description="Users log in to the dashboard with a name and password (POST "
        "/api/v1/session; docs/dashboard-login.md). Roles: viewer, operator, engineer, admin.",
    )
    actions = user.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user (the password is asked twice)")
    add.add_argument("name", help="1 to 64 letters, digits and . _ @ -")
    add.add_argument("--role", required=True, help="viewer, operator, engineer or admin")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    listing = actions.add_parser("list", help="list the users")
    disable = actions.add_parser("disable", help="disable a user and end its sessions")
    disable.add_argument("name")
    for parser in (add, listing, disable):
        parser.add_argument("--database-url", help="default $DATABASE_URL or twinfleet up's")
        parser.add_argument("--db-port", type=int, default=5433, help="twinfleet up's (5433)")
        parser.add_argument("--data-dir", help="default $TWINFLEET_DATA or ./data")
        parser.set_defaults(func=run)


def database_url(args: argparse.Namespace) -> str:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if url:
        return str(url)
    from twinfleet.postgres import PostgresServer

    data_dir = Path(args.data_dir or os.environ.get("TWINFLEET_DATA", "data")).resolve()
    server = PostgresServer(data_dir, port=args.db_port)
    if not (data_dir / "postgres-password").exists():
        raise CommandError(
            f"no database: give --database-url, set DATABASE_URL, or start twinfleet up "
            f"(its PostgreSQL lives in {server.cluster})"
        )
    return server.url


def read_password(name: str, from_stdin: bool, stdin: TextIO | None = None) -> str:
    """One line of standard input, or asked twice on the terminal."""
    stdin = stdin or sys.stdin
    if from_stdin:
        return stdin.readline().rstrip("\r\n")
    if not stdin.isatty():
        raise CommandError("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("the same again: ") != first:
        raise CommandError("the two passwords differ; nothing was changed")
    return first


def run(args: argparse.Namespace) -> int:
    from store.users import UserError, check_name, check_password, check_role

    action: Callable[[Any], Awaitable[list[str]]]
    try:
        if args.action == "add":
            check_name(args.name)
            check_role(args.role)
            password = check_password(read_password(args.name, args.password_stdin))
            action = _add(args.name, args.role, password)
        elif args.action == "list":
            action = _list
        else:
            action = _disable(args.name)
        for line in _with_database(database_url(args), action):
            print(line)
    except (CommandError, UserError) as exc:
        print(f"twinfleet user {args.action}: {exc}", file=sys.stderr)
        return 2
    return 0


def _with_database(url: str, action: Callable[[Any], Awaitable[list[str]]]) -> list[str]:
    import psycopg

    from store.migrations import migrate

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            migrate(conn)

        async def go() -> list[str]:
            async with await psycopg.AsyncConnection.connect(url, connect_timeout=10) as conn:
                return await action(conn)

        return asyncio.run(go())
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"the database does not answer: {first}") from None


def _add(name: str, role: str, password: str) -> Callable[[Any], Awaitable[list[str]]]:
    async def add(conn: Any) -> list[str]:
        from store.users import add_user

        user = await add_user(conn, name, role, password)
        return [f"added user {user.name!r} ({user.role})"]

    return add


async def _list(conn: Any) -> list[str]:
    from store.users import list_users

    found = await list_users(conn)
    if not found:
        return ["no users yet (twinfleet user add NAME --role ROLE)"]
    width = max(len(u.name) for u in found)
    return [
        f"{u.name:{width}}  {u.role:8}  since {u.created_at:%Y-%m-%d %H:%M}"
        + ("  DISABLED" if u.disabled else "")
        for u in found
    ]


def _disable(name: str) -> Callable[[Any], Awaitable[list[str]]]:
    async def disable(conn: Any) -> list[str]:
        from store.users import disable_user

        ended = await disable_user(conn, name)
        return [f"disabled user {name!r}; {ended} open session(s) ended"]

    return disable


def first_admin(url: str) -> tuple[str, str] | None:
    """For ``twinfleet up``: when no admin may log in and the name ``admin`` is free, add
    it with a random password; returns (name, password) to print once, else ``None``."""
    import psycopg

    from store.users import UserError, add_user, find_user, has_admin

    password = secrets.token_urlsafe(12)

    async def go() -> bool:
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=10) as conn:
            if await has_admin(conn) or await find_user(conn, FIRST_ADMIN) is not None:
                return False
            try:
                await add_user(conn, FIRST_ADMIN, "admin", password)
            except UserError:  # another process made it just now
                return False
            return True

    return (FIRST_ADMIN, password) if asyncio.run(go()) else None
