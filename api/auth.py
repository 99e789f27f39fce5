"""Bearer tokens (JWT, HS256) and roles.

People get one of four roles, each including the ones before it: ``viewer`` (read and
subscribe), ``operator`` (acknowledge anomalies), ``engineer`` (clones and what-if),
``admin``. Gateways get a ``gateway`` token bound to their gateway id and sites; it may
only send telemetry, and only for those sites.

>>> authority = Authority("x" * 32)
>>> token = authority.issue("alice", Role.OPERATOR, ttl_s=60)
>>> p = authority.verify(f"Bearer {token}")
>>> p.subject, p.role.value, p.allows(Role.VIEWER), p.allows(Role.ENGINEER)
('alice', 'operator', True, False)
>>> authority.verify("Bearer not-a-jwt")
Traceback (most recent call last):
...
api.errors.ApiError: the bearer token is not a well-formed JWT
>>> Authority("y" * 32).verify(f"Bearer {token}")
Traceback (most recent call last):
...
api.errors.ApiError: the token's signature does not verify (not issued by this server)

A dashboard session (:mod:`api.sessions`) is a token of its own kind, held in a cookie: it
names its session (``jti``) and carries the session's CSRF value; it is no bearer token.

>>> cookie = authority.issue_session("olga", Role.OPERATOR, "s-1", csrf="c-1", ttl_s=60)
>>> s = authority.verify_session(cookie)
>>> s.subject, s.token_id, s.csrf
('olga', 's-1', 'c-1')
>>> authority.verify(f"Bearer {cookie}")
Traceback (most recent call last):
...
api.errors.ApiError: a session cookie is not a bearer token: get a token with 'twinfleet token'
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import jwt

from api.errors import ApiError, forbidden, unauthorized

ISSUER = "twinfleet"
AUDIENCE = "twinfleet-api"
"""The ``aud`` claim: a token signed with this secret for anything else is refused."""
ALGORITHM = "HS256"
MAX_TTL_S = {"person": 30 * 86_400.0, "gateway": 366 * 86_400.0}
"""The longest a token may live: 30 days for people and programs acting for them, a year
for a gateway (its token sits in the gateway's configuration; rotate it before then)."""
MIN_SECRET_BYTES = 32
SESSION_USE = "session"
"""The ``use`` claim of a dashboard session's token."""


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"
    GATEWAY = "gateway"


_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ENGINEER: 3, Role.ADMIN: 4}


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    role: Role
    token_id: str
    expires_at: int
    gateway_id: str | None = None
    sites: frozenset[str] = field(default_factory=frozenset)
    csrf: str | None = None
    """Set for a dashboard session: what its state-changing requests must send in
    ``X-CSRF-Token``. ``None`` for a bearer token."""
    issued_at: int = 0

    def allows(self, needed: Role) -> bool:
        """People's roles are ordered; a gateway token allows nothing but ingest."""
        if self.role is Role.GATEWAY or needed is Role.GATEWAY:
            return self.role is needed
        return _RANK[self.role] >= _RANK[needed]

    def require(self, needed: Role, doing: str) -> None:
        if not self.allows(needed):
            raise forbidden(f"{doing} needs the {needed.value} role; this token is {self.role}")


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def max_ttl_s(role: Role) -> float:
    return MAX_TTL_S["gateway" if role is Role.GATEWAY else "person"]


def _claims(subject: str, role: Role, ttl_s: float, token_id: str) -> dict[str, Any]:
    if not subject:
        raise ValueError("a token needs a subject (who it is for)")
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    if ttl_s > max_ttl_s(role):
        raise ValueError(
            f"ttl_s: {ttl_s / 86_400:g} days is over the longest a {role.value} token may "
            f"live ({max_ttl_s(role) / 86_400:g} days)"
        )
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "role": role.value,
        "iat": now,
        "exp": now + int(ttl_s),
        "jti": token_id,
    }


class Authority:
    """Issues and verifies tokens with one shared secret (every replica holds it)."""

    def __init__(self, secret: str) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def issue(
        self,
        subject: str,
        role: Role | str,
        *,
        ttl_s: float = 12 * 3600,
        gateway_id: str | None = None,
        sites: list[str] | None = None,
    ) -> str:
        role = Role(role)
        if (role is Role.GATEWAY) != (gateway_id is not None):
            raise ValueError("a gateway token needs a gateway id, and only a gateway token has one")
        if role is Role.GATEWAY and not sites:
            raise ValueError("a gateway token needs the sites it may send telemetry for")
        claims = _claims(subject, role, ttl_s, secrets.token_hex(8))
        if gateway_id is not None:
            claims["gateway_id"] = gateway_id
            claims["sites"] = sorted(sites or [])
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def issue_session(
        self, subject: str, role: Role | str, session_id: str, *, csrf: str, ttl_s: float
    ) -> str:
        """The token of a dashboard session ``session_id`` (its ``jti``), with its CSRF
        value; only :meth:`verify_session` accepts it."""
        role = Role(role)
        if role is Role.GATEWAY:
            raise ValueError("a gateway cannot have a dashboard session")
        if not session_id or not csrf:
            raise ValueError("a session token needs a session_id and a csrf value")
        claims = _claims(subject, role, ttl_s, session_id)
        claims.update(use=SESSION_USE, csrf=csrf)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify_session(self, token: str) -> Principal:
        """The principal of a session cookie's token (its ``token_id`` is the session id,
        its ``csrf`` set); a 401 :class:`ApiError` saying what is wrong otherwise."""
        claims = self._decode(token, "session", "the session cookie", "log in again")
        if claims.get("use") != SESSION_USE or not claims.get("jti") or not claims.get("csrf"):
            raise unauthorized("the session cookie does not hold a session; log in again")
        return replace(self._principal(claims, token, "session"), csrf=str(claims["csrf"]))

    def verify(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value (``Bearer <jwt>``); a 401
        :class:`ApiError` saying what is wrong otherwise."""
        if not authorization:
            raise unauthorized("no bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        claims = self._decode(token.strip(), "token", "the bearer token", "ask for a new one")
        if claims.get("use") == SESSION_USE:
            raise unauthorized(
                "a session cookie is not a bearer token: get a token with 'twinfleet token'"
            )
        return self._principal(claims, token, "token")

    def _decode(self, token: str, noun: str, whole: str, renew: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                audience=AUDIENCE,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized(f"the {noun} has expired; {renew}") from None
        except jwt.InvalidSignatureError:
            raise unauthorized(
                f"the {noun}'s signature does not verify (not issued by this server)"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the {noun} has no {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise unauthorized(f"the {noun} was not issued by {ISSUER}") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"the {noun} is not for {AUDIENCE} (its 'aud' claim)") from None
        except jwt.DecodeError:
            raise unauthorized(f"{whole} is not a well-formed JWT") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"the {noun} is not valid: {exc}") from None
        return claims

    @staticmethod
    def _principal(claims: dict[str, Any], token: str, noun: str) -> Principal:
        try:
            role = Role(str(claims.get("role")))
        except ValueError:
            raise unauthorized(f"the {noun}'s role {claims.get('role')!r} is unknown") from None
        lifetime = int(claims["exp"]) - int(claims["iat"])
        if lifetime > max_ttl_s(role):
            raise unauthorized(
                f"the {noun} lives {lifetime / 86_400:.4g} days, over the longest a "
                f"{role.value} token may ({max_ttl_s(role) / 86_400:g} days); ask for a new one"
            )
        gateway_id = claims.get("gateway_id")
        sites = claims.get("sites") or []
        if role is Role.GATEWAY and (not isinstance(gateway_id, str) or not sites):
            raise unauthorized("a gateway token must name its gateway_id and sites")
        token_id = str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest()[:16])
        return Principal(
            subject=str(claims["sub"]),
            role=role,
            token_id=token_id,
            expires_at=int(claims["exp"]),
            issued_at=int(claims["iat"]),
            gateway_id=gateway_id,
            sites=frozenset(str(s) for s in sites),
        )


__all__ = ["ApiError", "Authority", "Principal", "Role", "new_secret"]
