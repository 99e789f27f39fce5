"""Dashboard logins against the real app: ``create_app`` over ``start_services`` (no Ray)
under uvicorn in a thread, a real nats-server and a real PostgreSQL with the users in it,
asked over HTTP and websockets as a browser would (the cookie kept and sent back)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from http.cookies import SimpleCookie
from typing import Any

import psycopg
import pytest

from api import sessions
from api.app import Settings
from api.auth import Role
from schemas.anomaly import AnomalyRecord
from store.users import add_user, disable_user
from tests.api.conftest import LiveApi, pick_machines, wait_for
from tests.api.test_maintenance_api import publish_anomaly
from twinfleet.services import NatsServer

SECRET = "sessions-secret-" + "x" * 32
PASSWORD = "correct horse"
WORK_ORDER = {
    "asset_id": "M-101",
    "type": "inspection",
    "priority": "low",
    "title": "Look at it",
    "estimated_duration_hours": 1,
}


class Browser:
    """HTTP to the live API as a browser does it: the ``tf_session`` cookie the API sets
    is kept and sent back; ``csrf`` is sent as ``X-CSRF-Token`` when ``with_csrf``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookie: str | None = None
        self.csrf: str | None = None
        self.set_cookie: SimpleCookie = SimpleCookie()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        with_csrf: bool = False,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        h = {"content-type": "application/json", **(headers or {})}
        if self.cookie is not None:
            h["cookie"] = f"{sessions.COOKIE}={self.cookie}"
        if with_csrf and self.csrf is not None:
            h[sessions.CSRF_HEADER] = self.csrf
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, h, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, text, got = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as e:
            status, text, got = e.code, e.read(), e.headers
            e.close()
        self._keep(got)
        return status, json.loads(text)

    def _keep(self, headers: Message) -> None:
        for header in headers.get_all("set-cookie") or []:
            self.set_cookie.load(header)
            morsel = self.set_cookie[sessions.COOKIE]
            self.cookie = None if morsel["max-age"] == "0" else morsel.value

    def login(self, name: str, password: str = PASSWORD, **kw: Any) -> tuple[int, Any]:
        status, body = self.call(
            "POST", "/api/v1/session", {"username": name, "password": password}, **kw
        )
        if status == 200:
            self.csrf = body["csrf_token"]
        return status, body

    def graphql(self, query: str, variables: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.call("POST", "/graphql", {"query": query, "variables": variables}, **kw)


def add_users(url: str, *people: tuple[str, str]) -> None:
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for name, role in people:
                await add_user(conn, name, role, PASSWORD)

    asyncio.run(go())


def disable(url: str, name: str) -> int:
    async def go() -> int:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await disable_user(conn, name)

    return asyncio.run(go())


@pytest.fixture
def api(nats_server: NatsServer, database: str) -> Iterator[LiveApi]:
    add_users(database, ("olga", "operator"), ("vera", "viewer"))
    settings = Settings(
        nats_server.url, SECRET, rate_per_s=1000.0, rate_burst=1000.0, database_url=database
    )
    with LiveApi(settings, pick_machines()) as live:
        yield live


def counters(api: LiveApi) -> Any:
    assert api.services is not None
    return api.services.counters


# -- logging in ---------------------------------------------------------------------------------
def test_login_sets_an_httponly_strict_cookie_and_get_answers_the_session(api: LiveApi) -> None:
    browser = Browser(api.url)
    status, body = browser.call("GET", "/api/v1/session")
    assert (status, body["error"]["message"]) == (401, sessions.NOT_LOGGED_IN)
    status, body = browser.login("olga")
    assert status == 200, body
    assert set(body) == {"user", "role", "csrf_token", "expires_at"}
    assert (body["user"], body["role"]) == ("olga", "operator") and len(body["csrf_token"]) >= 32
    left = time.mktime(time.strptime(body["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(left - time.mktime(time.gmtime()) - 12 * 3600) < 60
    cookie = browser.set_cookie[sessions.COOKIE]
    assert cookie["httponly"] is True and cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/" and cookie["max-age"] == str(12 * 3600)
    assert not cookie["secure"]  # plain http here
    assert PASSWORD not in json.dumps(body) + (browser.cookie or "")
    assert browser.call("GET", "/api/v1/session") == (200, body)
    # over https (a proxy in front says so) the cookie is Secure
    https = Browser(api.url)
    assert https.login("vera", headers={"x-forwarded-proto": "https"})[0] == 200
    assert https.set_cookie[sessions.COOKIE]["secure"] is True


def test_the_cookie_reads_rest_and_graphql(api: LiveApi) -> None:
    browser = Browser(api.url)
    browser.login("vera")
    machine = pick_machines()[0].id
    status, asset = browser.call("GET", f"/api/v1/assets/{machine}")
    assert status == 200 and asset["id"] == machine, asset
    status, answer = browser.graphql("{ fleetHealth { machines } }")  # a read needs no CSRF
    assert status == 200 and answer["data"]["fleetHealth"]["machines"] == len(pick_machines())
    # the role is the user's: a viewer may not place work orders
    status, refused = browser.call(
        "POST", "/api/v1/maintenance/workorders", WORK_ORDER, with_csrf=True
    )
    assert status == 403 and "operator role" in refused["error"]["message"]


def test_changes_with_the_cookie_need_the_csrf_header(
    api: LiveApi, nats_server: NatsServer
) -> None:
    machine = pick_machines()[0]
    publish_anomaly(
        nats_server.url,
        AnomalyRecord(
            machine_id=machine.id,
            sensor_id=f"{machine.id}.vibration",
            timestamp=int(time.time() * 1000),
            type="threshold",
            severity="critical",
            score=0.99,
            value=30.0,
            reason="above critical limit",
            detector="threshold",
        ),
    )
    browser = Browser(api.url)
    browser.login("olga")
    listed = "query($a: ID) { anomalies(filter: {assetId: $a}) { id } }"
    found = wait_for(
        lambda: browser.graphql(listed, {"a": machine.id})[1]["data"]["anomalies"],
        30,
        "the anomaly in the view",
    )
    ack = "mutation($id: ID!) { acknowledgeAnomaly(anomalyId: $id) { acknowledgedBy } }"
    variables = {"id": found[0]["id"]}
    status, refused = browser.graphql(ack, variables)
    assert status == 403 and refused["error"]["code"] == "csrf_missing"
    assert "X-CSRF-Token" in refused["error"]["message"]
    status, refused = browser.graphql(ack, variables, headers={"X-CSRF-Token": "guess"})
    assert status == 403 and refused["error"]["code"] == "csrf_mismatch"
    status, done = browser.graphql(ack, variables, with_csrf=True)
    assert status == 200 and done["data"]["acknowledgeAnomaly"]["acknowledgedBy"] == "olga"
    # REST: refused without the header; with it, the request gets past the login (to the
    # maintenance service, which is not running here: 503)
    status, refused = browser.call("POST", "/api/v1/maintenance/workorders", WORK_ORDER)
    assert status == 403 and refused["error"]["code"] == "csrf_missing"
    status, answer = browser.call(
        "POST", "/api/v1/maintenance/workorders", WORK_ORDER, with_csrf=True
    )
    assert status == 503, answer


def test_logout_revokes_the_session(api: LiveApi) -> None:
    browser = Browser(api.url)
    browser.login("olga")
    old = browser.cookie
    status, refused = browser.call("DELETE", "/api/v1/session")
    assert status == 403 and refused["error"]["code"] == "csrf_missing"
    assert browser.call("DELETE", "/api/v1/session", with_csrf=True) == (
        200,
        {"user": "olga", "logged_out": True},
    )
    assert browser.cookie is None  # cleared
    browser.cookie = old  # someone kept it: it no longer works anywhere
    status, body = browser.call("GET", "/api/v1/session")
    assert status == 401 and "the session has ended (logged out)" in body["error"]["message"]
    status, body = browser.call("GET", f"/api/v1/assets/{pick_machines()[0].id}")
    assert status == 401 and "logged out" in body["error"]["message"]
    assert browser.call("DELETE", "/api/v1/session") == (200, {"user": None, "logged_out": False})
    # an expired session is refused too
    browser.login("olga")
    assert api.settings.database_url is not None
    with psycopg.connect(api.settings.database_url) as conn:
        conn.execute("UPDATE sessions SET expires_at = now() WHERE revoked_at IS NULL")
    status, body = browser.call("GET", "/api/v1/session")
    assert status == 401 and "the session has expired; log in again" in body["error"]["message"]


# -- refusals -----------------------------------------------------------------------------------
def test_a_wrong_password_is_one_401_for_both_counted_then_429(api: LiveApi) -> None:
    browser = Browser(api.url)
    wrong_password = browser.login("olga", "not the password")
    unknown_user = browser.login("nobody", PASSWORD)
    assert (
        wrong_password
        == unknown_user
        == (401, {"error": {"code": "unauthorized", "message": sessions.WRONG}})
    )
    assert browser.cookie is None
    assert counters(api)["login_failures"] == 2
    for _ in range(4):  # five failures for one name are let through
        assert browser.login("olga", "not the password")[0] == 401
    status, body = browser.login("olga", PASSWORD)  # even the right one must wait now
    assert status == 429 and "too many failed logins for this user name" in body["error"]["message"]
    wait = float(re.search(r"retry after ([0-9.]+) s", body["error"]["message"])[1])  # type: ignore[index]
    assert 20 < wait <= 30  # one more every 30 s
    assert counters(api)["login_failures"] == 6 and counters(api)["login_rate_limited"] == 1
    assert browser.login("vera")[0] == 200  # another name is not held up


def test_failures_are_limited_per_client_address_too(
    nats_server: NatsServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "FAILURES_PER_CLIENT", (1 / 60, 3.0))
    add_users(database, ("olga", "operator"))
    settings = Settings(nats_server.url, SECRET, database_url=database)
    with LiveApi(settings, pick_machines()[:1]) as api:
        browser = Browser(api.url)
        for name in ("anna", "boris", "carl"):
            assert browser.login(name, "guess guess")[0] == 401
        status, body = browser.login("olga")
        assert status == 429 and "for this client address" in body["error"]["message"]


def test_a_bearer_token_still_works_and_wins_over_the_cookie(api: LiveApi) -> None:
    browser = Browser(api.url)
    browser.login("vera")
    operator = {"authorization": f"Bearer {api.token(Role.OPERATOR)}"}
    status, _ = browser.call("POST", "/api/v1/maintenance/workorders", WORK_ORDER, headers=operator)
    assert status == 503  # the operator's token, no CSRF needed: on to the service
    status, answer = api.get(f"/api/v1/assets/{pick_machines()[0].id}")  # bearer only
    assert status == 200, answer
    # the cookie's token is not a bearer token
    assert browser.cookie is not None
    status, body = api.get("/api/v1/session", token=browser.cookie)
    assert status == 401
    stolen = {"authorization": f"Bearer {browser.cookie}"}
    status, body = Browser(api.url).call("GET", "/api/v1/maintenance/alerts", headers=stolen)
    assert status == 401 and "a session cookie is not a bearer token" in body["error"]["message"]


def test_a_disabled_user_cannot_log_in_and_its_sessions_end(api: LiveApi) -> None:
    browser = Browser(api.url)
    browser.login("olga")
    assert api.settings.database_url is not None
    assert disable(api.settings.database_url, "olga") == 1
    status, body = browser.call("GET", "/api/v1/session")
    assert status == 401 and "ended (the user is disabled)" in body["error"]["message"]
    status, body = browser.login("olga")
    assert (
        status == 403
        and body["error"]["message"] == "user 'olga' is disabled; ask an administrator"
    )
    status, body = browser.login("olga", "not the password")
    assert (status, body["error"]["message"]) == (401, sessions.WRONG)  # tells nothing


def test_bad_logins_and_cookies_get_clear_errors(api: LiveApi) -> None:
    browser = Browser(api.url)
    cases: list[tuple[Any, str]] = [
        ({"username": "olga"}, "password: Field required"),
        ({"username": "olga", "password": ""}, "password: String should have at least 1"),
        ({"username": "olga", "password": PASSWORD, "remember": True}, "remember: Extra inputs"),
        ([PASSWORD], "Input should be a valid dictionary"),
    ]
    for body, message in cases:
        status, answer = browser.call("POST", "/api/v1/session", body)
        assert status == 422 and message in answer["error"]["message"], answer
    for cookie, message in [
        ("garbage", "the session cookie is not a well-formed JWT"),
        (api.token(Role.ADMIN), "the session cookie does not hold a session; log in again"),
    ]:
        browser.cookie = cookie
        status, answer = browser.call("GET", "/api/v1/session")
        assert (status, answer["error"]["message"]) == (401, message)
    assert counters(api)["http_500"] == 0


def test_without_a_database_the_session_routes_answer_503(nats_server: NatsServer) -> None:
    with LiveApi(Settings(nats_server.url, SECRET), pick_machines()[:1]) as api:
        status, body = Browser(api.url).login("olga")
    assert (status, body["error"]["message"]) == (503, sessions.NO_USERS)


# -- websockets ---------------------------------------------------------------------------------
async def socket(
    api: LiveApi, browser: Browser, origin: str | None, payload: Any, **headers: str
) -> Any:
    """A graphql-transport-ws connection with the browser's cookie, initialised."""
    from websockets.asyncio.client import connect

    ws = await connect(
        api.url.replace("http", "ws") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        origin=origin,  # type: ignore[arg-type]
        additional_headers={"cookie": f"{sessions.COOKIE}={browser.cookie}", **headers},
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    return ws


def test_a_websocket_takes_the_cookie_only_from_this_servers_pages(api: LiveApi) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    browser = Browser(api.url)
    browser.login("vera")
    here = api.url
    same_origin = {"sec-fetch-site": "same-origin"}

    async def refused(origin: str | None, payload: Any, **headers: str) -> tuple[int | None, str]:
        ws = await socket(api, browser, origin, payload, **headers)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code, ws.close_reason or ""

    async def accepted(origin: str | None, payload: Any) -> tuple[Any, Any]:
        ws = await socket(api, browser, origin, payload)
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        query = "subscription { fleetHealthChanged { machines } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.close()
        return first["type"], first["payload"]["data"]["fleetHealthChanged"]["machines"]

    # another site's page is refused at the handshake, before any credentials are read
    with pytest.raises(InvalidStatus, match="HTTP 403"):
        asyncio.run(socket(api, browser, "http://evil.example", {"csrf_token": browser.csrf}))
    # past strawberry's check (a header only a browser sets says same-origin), the session
    # check refuses the foreign Origin itself
    code, reason = asyncio.run(
        refused("http://evil.example", {"csrf_token": browser.csrf}, **same_origin)
    )
    assert code == 4403 and "Origin 'http://evil.example' is not this server" in reason
    # this server's page must send the session's csrf_token
    code, reason = asyncio.run(refused(here, {}))
    assert code == 4403 and "csrf_token" in reason
    code, reason = asyncio.run(refused(here, {"csrf_token": "guess"}))
    assert code == 4403 and "does not match" in reason
    machines = len(pick_machines())
    assert asyncio.run(accepted(here, {"csrf_token": browser.csrf})) == ("next", machines)
    # a cookie that holds no session is refused
    browser.cookie = "garbage"
    code, reason = asyncio.run(refused(here, {"csrf_token": browser.csrf}))
    assert code == 4401 and "not a well-formed JWT" in reason
    # a program (no Origin) with a bearer token in the payload works as before
    bearer = {"Authorization": f"Bearer {api.token(Role.VIEWER)}"}
    assert asyncio.run(accepted(None, bearer)) == ("next", machines)
