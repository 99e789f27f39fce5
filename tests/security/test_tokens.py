"""Bearer tokens carry an audience and a bounded lifetime (issue 18, finding 12)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt
import pytest

from api.auth import AUDIENCE, Authority, Role
from api.errors import ApiError

SECRET = "s" * 40


def signed(**claims: object) -> str:
    now = int(time.time())
    base = {"iss": "twinfleet", "aud": AUDIENCE, "sub": "x", "role": "viewer", "iat": now}
    return jwt.encode({**base, "exp": now + 60, **claims}, SECRET, "HS256")


def refusal(token: str) -> str:
    with pytest.raises(ApiError) as e:
        Authority(SECRET).verify(f"Bearer {token}")
    assert e.value.status == 401
    return e.value.message


def test_a_token_names_this_api_as_its_audience() -> None:
    token = Authority(SECRET).issue("alice", Role.VIEWER)
    assert jwt.decode(token, SECRET, ["HS256"], audience=AUDIENCE)["aud"] == AUDIENCE
    assert Authority(SECRET).verify(f"Bearer {signed()}").subject == "x"
    assert refusal(signed(aud="another-service")) == (
        "the token is not for twinfleet-api (its 'aud' claim)"
    )
    no_audience = signed()
    claims = jwt.decode(no_audience, SECRET, ["HS256"], audience=AUDIENCE)
    del claims["aud"]
    assert refusal(jwt.encode(claims, SECRET, "HS256")) == "the token has no 'aud' claim"


def test_no_token_lives_longer_than_its_role_allows() -> None:
    authority = Authority(SECRET)
    with pytest.raises(ValueError, match="31 days is over the longest a viewer token may live"):
        authority.issue("alice", Role.VIEWER, ttl_s=31 * 86_400)
    authority.issue("alice", Role.ADMIN, ttl_s=30 * 86_400)  # the longest for people
    year = authority.issue("gw", Role.GATEWAY, ttl_s=366 * 86_400, gateway_id="gw", sites=["s"])
    assert authority.verify(f"Bearer {year}").gateway_id == "gw"
    # one signed by hand (a leaked secret's forger, or an old tool) is refused all the same
    now = int(time.time())
    assert refusal(signed(iat=now, exp=now + 40 * 86_400)) == (
        "the token lives 40 days, over the longest a viewer token may (30 days); ask for a new one"
    )


def test_a_secret_file_others_can_read_or_another_user_owns_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bus.connect import SecretFileUnsafe, read_secret
    from twinfleet.services import api_secret

    monkeypatch.delenv("TWINFLEET_API_SECRET", raising=False)
    path = tmp_path / "api-secret"
    first = api_secret(tmp_path)  # made mode 0600
    assert api_secret(tmp_path) == first and (path.stat().st_mode & 0o777) == 0o600
    path.chmod(0o644)
    with pytest.raises(SecretFileUnsafe, match=r"api-secret has mode 644: others may read"):
        api_secret(tmp_path)
    path.chmod(0o600)
    monkeypatch.setenv("TF_TEST_SECRET_FILE", str(path))
    assert read_secret("TF_TEST_SECRET_UNSET", "TF_TEST_SECRET_FILE") == first
    # another user's file (as if this process ran as uid 4242)
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    owned = r"is owned by uid \d+, not by this user \(uid 4242\)"
    with pytest.raises(SecretFileUnsafe, match=owned):
        read_secret("TF_TEST_SECRET_UNSET", "TF_TEST_SECRET_FILE")
