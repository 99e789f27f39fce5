"""What-if clones are bounded and private (issue 18, finding 7): a user holds at most
``max_clones_per_user`` clones and everyone together ``max_clones`` (each clone is a
process); only the engineer who made a clone, or an admin, may run a what-if on it or
retire it. Against the real stack: nats-server, the machine actors on a local Ray, the
Serve application."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from api.auth import Role
from schemas.plant import MachineSpec
from tests.api.conftest import Stack, pick_machines, serve_stack

pytestmark = [pytest.mark.slow]

CLONE = "mutation($a: ID!) { cloneTwin(assetId: $a, ttlSeconds: 600) { id assetId } }"
WHAT_IF = """mutation($c: ID!) { runWhatIf(cloneId: $c, scenario: {horizonDays: 2, paths: 20}) {
    assetId paths } }"""
RETIRE = "mutation($c: ID!) { retireClone(cloneId: $c) }"


@pytest.fixture(scope="module")
def stack(
    local_ray: None,
    tmp_path_factory: pytest.TempPathFactory,
    toy_model: Callable[[MachineSpec, float], bytes],
) -> Iterator[Stack]:
    with serve_stack(
        tmp_path_factory,
        toy_model,
        pick_machines()[:1],
        "clones",
        max_clones_per_user=1,
        max_clones=2,
    ) as s:
        yield s


def _ask(stack: Stack, query: str, token: str, **variables: Any) -> dict[str, Any]:
    status, answer = stack.graphql(query, token, variables)
    assert status == 200, answer
    return dict(answer)


def _code(answer: dict[str, Any]) -> str | None:
    errors = answer.get("errors") or [{}]
    return (errors[0].get("extensions") or {}).get("code")


def test_clones_are_capped_and_belong_to_their_maker(stack: Stack) -> None:
    machine = stack.machines[0].id
    alice = stack.token(Role.ENGINEER, "alice")
    bob = stack.token(Role.ENGINEER, "bob")
    carol = stack.token(Role.ENGINEER, "carol")
    admin = stack.token(Role.ADMIN, "root")

    made = _ask(stack, CLONE, alice, a=machine)
    assert "errors" not in made, made
    mine = made["data"]["cloneTwin"]["id"]
    again = _ask(stack, CLONE, stack.token(Role.ENGINEER, "alice"), a=machine)
    assert _code(again) == "too_many_clones", again
    assert "1" in again["errors"][0]["message"]

    # another engineer may neither use nor retire alice's clone
    for query in (WHAT_IF, RETIRE):
        refused = _ask(stack, query, bob, c=mine)
        assert _code(refused) == "forbidden", refused
    theirs = _ask(stack, CLONE, bob, a=machine)
    assert "errors" not in theirs, theirs
    # two clones in all: a third user is refused until one is retired
    full = _ask(stack, CLONE, carol, a=machine)
    assert _code(full) == "too_many_clones", full

    # the maker and an admin may
    ran = _ask(stack, WHAT_IF, alice, c=mine)
    assert "errors" not in ran and ran["data"]["runWhatIf"]["paths"] == 20, ran
    ran = _ask(stack, WHAT_IF, admin, c=mine)
    assert "errors" not in ran, ran
    assert _ask(stack, RETIRE, admin, c=theirs["data"]["cloneTwin"]["id"])["data"] == {
        "retireClone": True
    }
    assert _ask(stack, RETIRE, alice, c=mine)["data"] == {"retireClone": True}
    made = _ask(stack, CLONE, carol, a=machine)
    assert "errors" not in made, made
    assert _ask(stack, RETIRE, carol, c=made["data"]["cloneTwin"]["id"])["data"] == {
        "retireClone": True
    }
