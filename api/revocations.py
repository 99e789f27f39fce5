"""Revoked bearer tokens: one by its id, or every token of a user issued up to a moment.

Kept in the JetStream key-value bucket ``tf_revoked`` (:data:`actors.bus.REVOKED`), so every
API replica refuses a revoked token within moments of its revocation, whichever replica
or tool revoked it: each replica's view follows the bucket (:mod:`api.view`), and
``twinfleet token revoke`` and the admin's ``revokeToken`` / ``revokeUserTokens``
mutations write it. Keys: ``token.<id>`` and ``user.<base64url of the name>``, each
holding the moment (epoch seconds) of the revocation. A token lives at most a year
(:data:`api.auth.MAX_TTL_S`), so an entry older than that refuses nothing more.

>>> r = Revocations()
>>> r.apply(token_key("ab12"), b"1700000000")
>>> r.apply(user_key("olga@plant"), b"1700000100.5")
>>> r.refusal("ab12", "vera", issued_at=1_699_999_000)
'the token ab12 was revoked; ask for a new one'
>>> r.refusal("cd34", "olga@plant", issued_at=1_700_000_100)
"every token of 'olga@plant' issued before 2023-11-14T22:15:00Z was revoked; ask for a new one"
>>> r.refusal("cd34", "olga@plant", issued_at=1_700_000_101) is None
True
>>> r.apply(token_key("ab12"), None)  # deleted: allowed again
>>> r.refusal("ab12", "vera", issued_at=1_699_999_000) is None
True
"""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime
from typing import Any

_TOKEN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def token_key(token_id: str) -> str:
    if not _TOKEN_ID.match(token_id):
        raise ValueError(
            f"token id {token_id!r} is not one this server issues (1 to 128 letters, digits, "
            "_ or -)"
        )
    return f"token.{token_id}"


def user_key(subject: str) -> str:
    if not subject:
        raise ValueError("a user name is needed to revoke a user's tokens")
    return "user." + base64.urlsafe_b64encode(subject.encode()).decode().rstrip("=")


def _subject_of(key: str) -> str:
    coded = key.removeprefix("user.")
    return base64.urlsafe_b64decode(coded + "=" * (-len(coded) % 4)).decode()


class Revocations:
    """What a replica knows has been revoked (fed by the bucket's watcher)."""

    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}
        self.users: dict[str, float] = {}

    def apply(self, key: str, value: bytes | None) -> None:
        """One entry of the bucket (``None``: deleted)."""
        if key.startswith("token."):
            book, name = self.tokens, key.removeprefix("token.")
        elif key.startswith("user."):
            book, name = self.users, _subject_of(key)
        else:
            raise ValueError(f"{key!r} is not a revocation key")
        if not value:
            book.pop(name, None)
        else:
            book[name] = float(value.decode())

    def refusal(self, token_id: str, subject: str, issued_at: float) -> str | None:
        """Why a token is refused (``None``: it is not revoked)."""
        if token_id in self.tokens:
            return f"the token {token_id} was revoked; ask for a new one"
        before = self.users.get(subject)
        if before is not None and issued_at <= before:
            at = datetime.fromtimestamp(before, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return f"every token of {subject!r} issued before {at} was revoked; ask for a new one"
        return None


async def revoke(js: Any, *, token_id: str | None = None, subject: str | None = None) -> str:
    """Revoke one token (by id) or every token of ``subject`` issued until now; returns
    the key written."""
    from actors.bus import REVOKED, ensure_bucket

    if (token_id is None) == (subject is None):
        raise ValueError("revoke either one token (its id) or a user's tokens (the user)")
    key = token_key(token_id) if token_id is not None else user_key(subject or "")
    bucket = await ensure_bucket(js, REVOKED, 256)
    await bucket.put(key, repr(time.time()).encode())
    return key
