"""The emulator's clock and session ``jti``: what lets tests get distinct and expired tokens without
waiting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth._core import ExpiredTokenError
from mlflow_descope_auth.emulator import Clock, Emulator

# The emulator's clock stands still at this moment (whole seconds, as in tokens), so times in
# tokens are known exactly.
NOW = float(int(time.time()))


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """An emulator of the test's own (moving its clock must not touch the shared one), its clock
    standing still at NOW."""
    with Emulator(clock=Clock(source=lambda: NOW)) as emulator:
        yield emulator


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def refresh(emu: Emulator, refresh_jwt: str) -> requests.Response:
    auth = {"Authorization": f"Bearer {emu.project_id}:{refresh_jwt}"}
    return requests.post(f"{emu.base_url}/v1/auth/refresh", headers=auth, json={}, timeout=10)


def test_every_session_token_has_its_own_jti(emu: Emulator) -> None:
    sessions = [emu.login("reader")["sessionJwt"] for _ in range(5)]
    sessions.append(emu.exchange_access_key(emu.access_key_for("reader"))["sessionJwt"])
    sessions.append(refresh(emu, emu.login("reader")["refreshJwt"]).json()["sessionJwt"])
    jtis = [claims(s)["jti"] for s in sessions]
    assert len(set(jtis)) == len(sessions), jtis
    assert len(set(sessions)) == len(sessions)


def test_a_jti_in_login_options_cannot_override_the_emulators(emu: Emulator) -> None:
    key = emu.access_key_for("editor")
    auth = {"Authorization": f"Bearer {emu.project_id}:{key}"}
    body = {"loginOptions": {"customClaims": {"jti": "chosen", "team": "ml"}}}
    resp = requests.post(f"{emu.base_url}/v1/auth/accesskey/exchange", headers=auth, json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    issued = claims(resp.json()["sessionJwt"])
    assert issued["team"] == "ml" and issued["jti"] != "chosen"


def test_an_offset_clock_issues_tokens_as_of_then(emu: Emulator) -> None:
    emu.clock.set_offset(-3600)
    tokens = emu.login("reader")
    emu.clock.set_offset(0)
    session, refresh_claims = claims(tokens["sessionJwt"]), claims(tokens["refreshJwt"])
    assert session["iat"] == NOW - 3600
    assert session["exp"] == session["iat"] + emu.config.session_ttl
    assert refresh_claims["exp"] == refresh_claims["iat"] + emu.config.refresh_ttl
    assert tokens["sessionExpiration"] == session["exp"]
    # The core, on the real clock, sees an expired session next to a live refresh token.
    validating = DescopeClient(emu.project_id, base_url=emu.base_url, http_timeout=5)
    with pytest.raises(ExpiredTokenError):
        validating.validate_session(tokens["sessionJwt"])
    assert validating.validate_refresh_token(tokens["refreshJwt"]) == refresh_claims["exp"]


def test_refresh_tokens_expire_on_the_emulators_clock(emu: Emulator) -> None:
    tokens = emu.login("reader")
    emu.clock.advance(emu.config.refresh_ttl + 1)
    late = refresh(emu, tokens["refreshJwt"])
    assert late.status_code == 401, late.text
    assert late.json()["errorMessage"] == "the refresh token has expired"
    emu.clock.set_offset(0)
    assert refresh(emu, tokens["refreshJwt"]).status_code == 200


def test_the_clock_is_moved_over_http(emu: Emulator) -> None:
    url = f"{emu.base_url}/emulator/clock"
    moved = requests.post(url, json={"offset": -700}, timeout=10)
    assert moved.status_code == 200, moved.text
    assert moved.json()["offset"] == -700
    assert moved.json()["now"] == NOW - 700
    assert requests.get(url, timeout=10).json()["offset"] == -700
    assert emu.clock.offset == -700
    assert claims(emu.login("reader")["sessionJwt"])["iat"] == NOW - 700
    assert requests.post(url, json={"offset": 0}, timeout=10).json()["offset"] == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"offset": "soon"}, {"offset": True}, {"offset": 1e12}, {"offset": 5, "extra": 1}, {"offset": None}],
)
def test_a_bad_clock_request_is_a_400_and_changes_nothing(emu: Emulator, body: dict[str, Any]) -> None:
    resp = requests.post(f"{emu.base_url}/emulator/clock", json=body, timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errorCode"] == "E011004"
    assert emu.clock.offset == 0


def test_a_clock_runs_from_its_source() -> None:
    clock = Clock(source=lambda: 1000.0)
    assert clock.now() == 1000.0
    assert clock.advance(30) == 30 and clock.now() == 1030.0
    assert clock.advance(-40) == -10 and clock.now() == 990.0
    with pytest.raises(ValueError, match="offset"):
        clock.set_offset(float("nan"))
