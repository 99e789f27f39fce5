"""Dashboard logins: people log in with a name and password and get a session cookie;
every route and GraphQL accept it next to the bearer tokens programs use.

What the browser dashboard relies on:

- ``POST /api/v1/session`` with ``{"username", "password"}``: 200 ``{"user", "role",
  "csrf_token", "expires_at"}`` and the cookie ``tf_session`` (HttpOnly, SameSite=Strict,
  Path=/, 12 hours; Secure when the request came over https). A wrong name or password is
  one answer for both, 401 ``unknown user or wrong password``; failures are counted and
  limited per user name and per client address (429 with the wait). A disabled user gets
  403 once the password is right.
- ``GET /api/v1/session``: the same body for the cookie sent (401 without a live one).
- ``DELETE /api/v1/session``: logout. The session is revoked in the database (every
  replica refuses it at once) and the cookie cleared.
- A request authenticated by the cookie that changes something (POST, PUT, PATCH, DELETE;
  on ``/graphql`` an operation document holding a mutation) must send ``X-CSRF-Token:
  <csrf_token>``, else 403. A cross-site page can send the cookie but cannot read the
  token. Bearer-authenticated requests need no such header; a bearer token wins over a
  cookie.
- A GraphQL websocket authenticated by the cookie must come from this server's own pages
  (its ``Origin`` is this ``Host``) and send ``{"csrf_token": ...}`` in ``connection_init``;
  a refused one is closed with 4401/4403 and the reason. (strawberry itself refuses a
  websocket from a foreign ``Origin`` at the handshake, HTTP 403, for any credentials; the
  check here keeps the cookie to this server's pages should ``allowed_origins`` ever be
  widened for other programs.)

The cookie holds a token signed by the API's :class:`~api.auth.Authority`, of its own
kind (not usable as a bearer token), naming its session and carrying the CSRF value. The
session is looked up in PostgreSQL (:mod:`store.sessions`) on every request, so a logout
or a disabled user counts at once, and the role is the user's current one. Without a
database the session routes answer 503.

Client addresses are those the replica sees: behind Ray Serve's HAProxy every client has
HAProxy's address, so the per-address limit is then one limit for all failed logins of
the replica (it only counts failures, so people who type their password right are not
held up unless someone is guessing).

>>> has_mutation(b'{"query": "mutation { replan { horizonHours } }"}')
True
>>> has_mutation(b'{"query": "{ fleetHealth { machines } }"}'), has_mutation(b"not json")
(False, False)
"""

import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from api import audit
from api.auth import Principal, Role
from api.errors import ApiError, forbidden, unauthorized
from api.limits import RateLimiter
from schemas.common import iso_utc
from store import sessions as stored
from store import users

if TYPE_CHECKING:
    from api.app import Services

COOKIE = "tf_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_KEY = "csrf_token"
"""The key of the CSRF value in a websocket's ``connection_init`` payload."""
TTL_S = 12 * 3600
WRONG = "unknown user or wrong password"
FAILURES_PER_NAME = (1 / 30, 5.0)
"""Failed logins per user name: 5 at once, then one more every 30 s (rate/s, burst)."""
FAILURES_PER_CLIENT = (1 / 2, 30.0)
"""Failed logins per client address: 30 at once, then one more every 2 s."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_LOGGED_IN = f"not logged in: no {COOKIE} cookie; log in with POST /api/v1/session"
NO_USERS = "logins need the user database: this API runs without one (start it with database_url)"
NO_STORE = {"Cache-Control": "no-store"}

log = logging.getLogger("twinfleet.api")


class Login(BaseModel):
    """The body of ``POST /api/v1/session``."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=users.MAX_PASSWORD)


def has_mutation(body: bytes) -> bool:
    """Whether a GraphQL-over-HTTP body (one operation or a batch) holds a mutation. A
    body that is not JSON or not GraphQL counts as none: the GraphQL route refuses it
    before anything runs."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    for item in data if isinstance(data, list) else [data]:
        query = item.get("query") if isinstance(item, dict) else None
        if not isinstance(query, str):
            continue
        try:
            document = parse(query)
        except GraphQLError:
            continue
        if any(
            isinstance(d, OperationDefinitionNode) and d.operation is OperationType.MUTATION
            for d in document.definitions
        ):
            return True
    return False


def check_csrf(sent: Any, who: Principal, where: str = f"the header {CSRF_HEADER}") -> None:
    """A 403 unless ``sent`` is the session's CSRF value (bearer principals pass)."""
    if who.csrf is None:
        return
    if not sent or not isinstance(sent, str):
        raise ApiError(
            403,
            "csrf_missing",
            f"send the session's csrf_token in {where}: it is needed to change anything "
            "with the session cookie (the token is in POST or GET /api/v1/session)",
        )
    if not _same(sent, who.csrf):
        raise ApiError(
            403,
            "csrf_mismatch",
            f"{where} does not match this session's csrf_token (from POST or GET /api/v1/session)",
        )


def _same(sent: Any, csrf: str) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), csrf.encode())


def _possible(name: str, password: str) -> bool:
    """Whether ``name`` may be a user's and ``password`` anyone's: a name ``twinfleet user
    add`` refuses (a NUL byte, which PostgreSQL cannot even compare: 500) or text that is
    not UTF-8 (a lone surrogate) is a failed login without asking the database.

    >>> _possible("ada", "secret"), _possible("a\\x00da", "secret"), _possible("ada", "\\ud800")
    (True, False, False)
    """
    try:
        users.check_name(name)
        password.encode()
    except (users.UserError, UnicodeEncodeError):
        return False
    return True


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.lower() == "https"


def _answer(who: Principal) -> dict[str, Any]:
    return {
        "user": who.subject,
        "role": who.role.value,
        "csrf_token": who.csrf,
        "expires_at": iso_utc(who.expires_at * 1000),
    }


class Sessions:
    """The dashboard sessions of one app (one per replica): who is asking, by bearer token
    or session cookie, and the login routes (:meth:`router`). The failed-login limits are
    this replica's."""

    def __init__(
        self,
        services: "Services",
        per_name: tuple[float, float] | None = None,
        per_client: tuple[float, float] | None = None,
    ) -> None:
        """``per_name``, ``per_client``: (rate/s, burst) of failed logins, by default
        :data:`FAILURES_PER_NAME` and :data:`FAILURES_PER_CLIENT`."""
        self.services = services
        self.failures_by_name = RateLimiter(*(per_name or FAILURES_PER_NAME))
        self.failures_by_client = RateLimiter(*(per_client or FAILURES_PER_CLIENT))

    # -- who is asking ----------------------------------------------------------------------
    async def principal(self, request: Request) -> Principal:
        """For a REST route: the bearer token's principal, else the session cookie's; with
        the cookie, a request that changes something needs the CSRF header."""
        who = await self._bearer_or_session(request)
        if request.method not in SAFE_METHODS:
            check_csrf(request.headers.get(CSRF_HEADER), who)
        return who

    async def graphql_principal(self, connection: HTTPConnection) -> Principal:
        """For GraphQL over HTTP: as :meth:`principal`, the CSRF header needed only when
        the body holds a mutation (GET cannot run one)."""
        who = await self._bearer_or_session(connection)
        if (
            who.csrf is not None
            and isinstance(connection, Request)
            and connection.method == "POST"
            and not _same(connection.headers.get(CSRF_HEADER), who.csrf)
            and has_mutation(await connection.body())
        ):
            check_csrf(connection.headers.get(CSRF_HEADER), who)
        return who

    async def socket_principal(self, websocket: HTTPConnection, payload: Any) -> Principal:
        """For a websocket's ``connection_init``: a bearer token in the payload
        (``{"Authorization": "Bearer <jwt>"}`` or ``{"token": "<jwt>"}``), else the session
        cookie, from a page of this server, with ``{"csrf_token": ...}``."""
        payload = payload if isinstance(payload, dict) else {}
        header = payload.get("Authorization") or payload.get("authorization")
        if header is None and payload.get("token"):
            header = f"Bearer {payload['token']}"
        cookie = websocket.cookies.get(COOKIE)
        if header or not cookie:
            return self.services.principal(header)
        origin = websocket.headers.get("origin")
        host = websocket.headers.get("host", "")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            raise forbidden(
                f"Origin {origin[:40]!r} is not this server ({host[:40]}): "
                "cross-site websocket refused"
            )
        who = await self.session(cookie)
        check_csrf(payload.get(CSRF_KEY), who, "the connection_init payload {csrf_token: ...}")
        return who

    async def _bearer_or_session(self, connection: HTTPConnection) -> Principal:
        header = connection.headers.get("authorization")
        cookie = connection.cookies.get(COOKIE)
        if header or not cookie:
            return self.services.principal(header)
        return await self.session(cookie)

    async def session(self, cookie: str) -> Principal:
        """The principal of a live session (the user's current name and role); 401 when
        the cookie is not one, or its session has ended or expired."""
        token = self.services.authority.verify_session(cookie)
        self.services.limiter.check(token.token_id)
        async with self._database() as conn:
            found = await stored.find_session(conn, token.token_id)
        if found is None:
            raise unauthorized("the session is not known to this server; log in again")
        ended = found.ended(datetime.now(UTC))
        if ended is not None:
            raise unauthorized(f"the session has {ended}; log in again")
        return replace(token, subject=found.user.name, role=Role(found.user.role))

    @asynccontextmanager
    async def _database(self) -> AsyncIterator[Any]:
        history = self.services.history
        if history is None:
            raise ApiError(503, "unavailable", NO_USERS)
        try:
            async with history.pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise ApiError(
                503,
                "unavailable",
                f"the user database is not answering ({type(exc).__name__}); try again",
            ) from None

    # -- logging in and out -----------------------------------------------------------------
    def _not_too_many(self, name: str, client: str) -> None:
        for limiter, key, what in (
            (self.failures_by_name, name, "user name"),
            (self.failures_by_client, client, "client address"),
        ):
            wait = limiter.retry_after(key)
            if wait > 0:
                self.services.counters["login_rate_limited"] += 1
                raise ApiError(
                    429,
                    "rate_limited",
                    f"too many failed logins for this {what}; retry after {wait:g} s",
                )

    def _failed(self, name: str, client: str) -> ApiError:
        self.failures_by_name.allow(name)
        self.failures_by_client.allow(client)
        self.services.counters["login_failures"] += 1
        log.warning("failed login from %s", client)  # not the name: it may be a password
        return unauthorized(WRONG)

    async def login(self, body: Login, request: Request) -> JSONResponse:
        client = request.client.host if request.client else "unknown"
        name = body.username
        self._not_too_many(name, client)
        if not _possible(name, body.password):
            raise self._failed(name, client)
        async with self._database() as conn:
            user = await users.authenticate(conn, name, body.password)
            if user is None:
                raise self._failed(name, client)
            if user.disabled:
                raise forbidden(f"user {name!r} is disabled; ask an administrator")
            session_id, csrf = secrets.token_urlsafe(18), secrets.token_urlsafe(32)
            authority = self.services.authority
            token = authority.issue_session(
                user.name, user.role, session_id, csrf=csrf, ttl_s=TTL_S
            )
            who = authority.verify_session(token)
            expires = datetime.fromtimestamp(who.expires_at, UTC)
            await stored.open_session(conn, session_id, user.name, expires, client)
        self.services.counters["logins"] += 1
        await audit.record(self.services, who, "login", None, {"client": client})
        response = JSONResponse(_answer(who), headers=NO_STORE)
        response.set_cookie(
            COOKIE,
            token,
            max_age=TTL_S,
            path="/",
            secure=_https(request),
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> JSONResponse:
        """End the cookie's session (CSRF header needed) and clear the cookie; without a
        live session, only clear it."""
        cookie = request.cookies.get(COOKIE)
        ended: Principal | None = None
        if cookie:
            try:
                ended = await self.session(cookie)
            except ApiError as exc:
                if exc.status != 401:
                    raise
        if ended is not None:
            check_csrf(request.headers.get(CSRF_HEADER), ended)
            async with self._database() as conn:
                await stored.end_session(conn, ended.token_id)
            self.services.counters["logouts"] += 1
            await audit.record(self.services, ended, "logout", None)
        body = {"user": None if ended is None else ended.subject, "logged_out": ended is not None}
        response = JSONResponse(body, headers=NO_STORE)
        response.delete_cookie(
            COOKIE, path="/", secure=_https(request), httponly=True, samesite="strict"
        )
        return response

    def router(self) -> APIRouter:
        """``POST``, ``GET`` and ``DELETE /api/v1/session``."""
        router = APIRouter(prefix="/api/v1/session", tags=["session"])

        @router.post("", response_model=None)
        async def log_in(body: Login, request: Request) -> JSONResponse:
            """Log in to the dashboard: sets the ``tf_session`` cookie; the answer's
            ``csrf_token`` goes in ``X-CSRF-Token`` on every change."""
            return await self.login(body, request)

        @router.get("", response_model=None)
        async def current(request: Request) -> JSONResponse:
            """The session of the ``tf_session`` cookie (401 without a live one)."""
            cookie = request.cookies.get(COOKIE)
            if not cookie:
                raise unauthorized(NOT_LOGGED_IN)
            return JSONResponse(_answer(await self.session(cookie)), headers=NO_STORE)

        @router.delete("", response_model=None)
        async def log_out(request: Request) -> JSONResponse:
            """Log out: the session is revoked on the server and the cookie cleared."""
            return await self.logout(request)

        return router
