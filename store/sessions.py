"""Dashboard sessions (table ``sessions``, migration 0003): which user a session is for,
until when, and whether it was revoked. The API hands the browser a signed token naming
the session (:mod:`api.sessions`) and looks the session up here on every request, so a
logout, or a user disabled, counts at once on every replica.

Ended sessions are kept for :data:`KEPT_AFTER_END` (who logged in from where, when), then
deleted when someone next logs in.

>>> from datetime import UTC, datetime, timedelta
>>> t = datetime(2026, 11, 29, tzinfo=UTC)
>>> alice = User("alice", "operator", t, disabled=False)
>>> s = Session("s1", alice, t, t + timedelta(hours=12), revoked_at=None)
>>> s.ended(t + timedelta(hours=1)), s.ended(t + timedelta(hours=13))
(None, 'expired')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from store.users import User

KEPT_AFTER_END = timedelta(days=7)


@dataclass(frozen=True)
class Session:
    session_id: str
    user: User
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def ended(self, now: datetime) -> str | None:
        """Why the session no longer counts (``None``: it does)."""
        if self.user.disabled:
            return "ended (the user is disabled)"
        if self.revoked_at is not None:
            return "ended (logged out)"
        if self.expires_at <= now:
            return "expired"
        return None


async def open_session(
    conn: Any, session_id: str, user_name: str, expires_at: datetime, client: str | None
) -> None:
    """Record a new session; sessions ended more than :data:`KEPT_AFTER_END` ago go."""
    await conn.execute(
        "DELETE FROM sessions WHERE expires_at < now() - %s OR revoked_at < now() - %s",
        (KEPT_AFTER_END, KEPT_AFTER_END),
    )
    await conn.execute(
        "INSERT INTO sessions (session_id, user_name, expires_at, client) VALUES (%s, %s, %s, %s)",
        (session_id, user_name, expires_at, client),
    )


async def find_session(conn: Any, session_id: str) -> Session | None:
    """The session with its user as they are now, or ``None`` if there is no such one."""
    cur = await conn.execute(
        "SELECT s.session_id, s.created_at, s.expires_at, s.revoked_at, "
        "u.name, u.role, u.created_at, u.disabled "
        "FROM sessions s JOIN users u ON u.name = s.user_name WHERE s.session_id = %s",
        (session_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Session(row[0], User(*row[4:]), row[1], row[2], row[3])


async def end_session(conn: Any, session_id: str) -> bool:
    """Revoke a session (logout); ``False`` if it had ended already."""
    cur = await conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE session_id = %s AND revoked_at IS NULL",
        (session_id,),
    )
    return bool(cur.rowcount)
