"""A websocket opened with a dashboard session ends when the session does (issue 18,
finding 6): logging out closes it (4401), not only the session's expiry."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from api.app import Settings
from tests.api.conftest import LiveApi, pick_machines
from tests.api.test_sessions import SECRET, Browser, add_users, socket
from twinfleet.services import NatsServer


@pytest.fixture
def api(nats_server: NatsServer, database: str) -> Iterator[LiveApi]:
    add_users(database, ("vera", "viewer"))
    settings = Settings(
        nats_server.url,
        SECRET,
        rate_per_s=1000.0,
        rate_burst=1000.0,
        database_url=database,
        ws_session_recheck_s=0.5,
    )
    with LiveApi(settings, pick_machines()) as live:
        yield live


def test_logging_out_closes_the_sessions_websockets(api: LiveApi) -> None:
    from websockets.exceptions import ConnectionClosed

    browser = Browser(api.url)
    assert browser.login("vera")[0] == 200

    async def go() -> tuple[int | None, str, float]:
        ws = await socket(api, browser, api.url, {"csrf_token": browser.csrf})
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        query = "subscription { fleetHealthChanged { machines } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "next"
        status, _ = await asyncio.to_thread(
            browser.call, "DELETE", "/api/v1/session", with_csrf=True
        )
        assert status == 200
        t = time.monotonic()
        try:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        except ConnectionClosed:
            pass
        except TimeoutError:
            await ws.close()
            raise AssertionError("the websocket stayed open after logging out") from None
        return ws.close_code, ws.close_reason or "", time.monotonic() - t

    code, reason, seconds = asyncio.run(go())
    assert code == 4401 and "logged out" in reason, (code, reason)
    assert seconds < 5, seconds
