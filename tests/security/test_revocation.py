"""Revoking bearer tokens (issue 18, finding 12): one by its id, or every token of a user;
every replica refuses them within moments and closes their subscriptions. Against a real
nats-server (the shared tf_revoked bucket) and two API replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from api.app import Settings
from api.auth import Role
from schemas.plant import load_plant
from tests.api.conftest import LiveApi, subscribe, wait_for
from tests.security.test_api_websocket import closed
from twinfleet.cli import main as cli_main
from twinfleet.services import NatsServer, free_port

SECRET = "revocation-secret-" + "x" * 32
REVOKE_TOKEN = "mutation($id: String!) { revokeToken(tokenId: $id) }"
REVOKE_USER = "mutation($u: String!) { revokeUserTokens(user: $u) }"
READ = "{ fleetHealth { machines } }"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApi, LiveApi, str]]:
    plant = load_plant("twinfleet/plants/example.yaml")
    machines = list(plant.machines)[:4]
    with NatsServer(tmp_path_factory.mktemp("nats"), port=free_port()) as server:
        settings = Settings(
            nats_url=server.url,
            secret=SECRET,
            rate_per_s=100,
            rate_burst=200,
            ws_session_recheck_s=0.5,
        )
        with LiveApi(settings, machines) as one, LiveApi(settings, machines) as two:
            yield one, two, server.url


def status(api: LiveApi, token: str) -> int:
    return api._request("POST", "/graphql", {"query": READ}, token)[0]


def test_a_revoked_token_is_refused_by_every_replica(
    replicas: tuple[LiveApi, LiveApi, str],
) -> None:
    one, two, _ = replicas
    admin = one.authority.issue("root", Role.ADMIN)
    kept = one.authority.issue("vera", Role.VIEWER)
    doomed = one.authority.issue("vera", Role.VIEWER)
    doomed_id = one.authority.verify(f"Bearer {doomed}").token_id
    assert status(one, doomed) == status(two, doomed) == 200
    # a viewer may not revoke; a bad id is refused with the field named
    refused = one.graphql(REVOKE_TOKEN, {"id": doomed_id}, token=kept)
    assert refused["errors"][0]["extensions"]["code"] == "forbidden"
    bad = one.graphql(REVOKE_TOKEN, {"id": "no such id!"}, token=admin)
    assert bad["errors"][0]["message"].startswith("tokenId: token id 'no such id!' is not")

    async def watch_it() -> tuple[int | None, str, list[object]]:
        ws = await subscribe(two.url, doomed, "subscription { fleetHealthChanged { machines } }")
        await asyncio.sleep(0)  # subscribed; now revoke it through the other replica
        assert one.graphql(REVOKE_TOKEN, {"id": doomed_id}, token=admin)["data"] == {
            "revokeToken": True
        }
        return await closed(ws, 10)

    code, reason, _ = asyncio.run(watch_it())
    assert code == 4401 and f"the token {doomed_id} was revoked" in reason
    wait_for(lambda: status(one, doomed) == 401 and status(two, doomed) == 401, 5, "refusal")
    body = two._request("POST", "/graphql", {"query": READ}, doomed)[1]
    assert body["error"]["message"] == f"the token {doomed_id} was revoked; ask for a new one"
    assert status(one, kept) == status(two, kept) == 200  # the user's other token still works


def test_revoking_a_user_refuses_every_token_issued_until_then(
    replicas: tuple[LiveApi, LiveApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    one, two, nats_url = replicas
    old = [one.authority.issue("olga", Role.OPERATOR) for _ in range(2)]
    other = one.authority.issue("ivan", Role.OPERATOR)
    # the command line does it as well as the admin's mutation
    assert cli_main(["revoke", "--user", "olga", "--nats-url", nats_url]) == 0
    revoked_by = time.time()
    assert "revoked every token of 'olga'" in capsys.readouterr().out
    wait_for(lambda: all(status(a, t) == 401 for a in (one, two) for t in old), 5, "refusal")
    assert status(two, other) == 200
    # a token is stamped to the second: the next one is issued in a later second
    wait_for(lambda: int(time.time()) > revoked_by, 5, "the next second")
    fresh = one.authority.issue("olga", Role.OPERATOR)
    assert status(one, fresh) == status(two, fresh) == 200
    assert cli_main(["revoke", "--nats-url", nats_url]) == 2  # neither --token-id nor --user
    assert "give --token-id or --user" in capsys.readouterr().err
