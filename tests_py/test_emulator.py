"""The offline Descope emulator, checked over real HTTP on loopback with the official descope SDK.

No mocks: every test starts a real emulator and talks to it with ``requests`` or ``DescopeClient``.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from descope import AuthException, DescopeClient

from mlflow_descope_auth.emulator import (
    DEMO_ACCESS_KEYS,
    DEMO_PROJECT_ID,
    DEMO_TENANT_ID,
    Emulator,
    EmulatorConfig,
    SigningKey,
    demo_users,
    load_users_file,
    run_forever,
)

TIMEOUT = 10


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


@pytest.fixture(params=["RS256", "ES256"])
def any_emu(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    with Emulator(algorithm=request.param) as running:
        yield running


def sdk(emu: Emulator) -> DescopeClient:
    # A new client has an empty key cache, so it fetches the emulator's key set again.
    return DescopeClient(project_id=emu.project_id, base_url=emu.base_url)


def http_login(emu: Emulator, login_id: str) -> dict[str, Any]:
    resp = requests.post(f"{emu.base_url}/emulator/login", json={"loginId": login_id}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def bearer(emu: Emulator, secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.project_id}:{secret}"}


def refresh_http(emu: Emulator, refresh_jwt: str, body: Any = None) -> requests.Response:
    return requests.post(
        f"{emu.base_url}/v1/auth/refresh", headers=bearer(emu, refresh_jwt), json=body or {}, timeout=TIMEOUT
    )


def wait_until(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def refused(emu: Emulator) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", emu.port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


# -- the official SDK accepts the emulator ----------------------------------------------------------


def test_published_keys_have_exactly_descopes_members(any_emu: Emulator) -> None:
    resp = requests.get(f"{any_emu.base_url}/v2/keys/{any_emu.project_id}", timeout=TIMEOUT)
    assert resp.status_code == 200
    keys = resp.json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert key["kid"] == any_emu.signing_key.kid
    assert key["use"] == "sig"
    if any_emu.config.algorithm == "RS256":
        assert set(key) == {"alg", "e", "kid", "kty", "n", "use"}
        assert (key["alg"], key["kty"], key["e"]) == ("RS256", "RSA", "AQAB")
    else:
        assert set(key) == {"alg", "crv", "kid", "kty", "x", "y", "use"}
        assert (key["alg"], key["kty"], key["crv"]) == ("ES256", "EC", "P-256")
        assert len(key["x"]) == len(key["y"]) == 43  # 32 bytes, base64url without padding
    # The published key really verifies what the emulator signs.
    token = http_login(any_emu, "reader")["sessionJwt"]
    public = jwt.PyJWK(key).key
    claims = jwt.decode(token, public, algorithms=[key["alg"]])
    assert claims["sub"] == any_emu.user("reader").user_id


def test_ec_coordinates_keep_their_full_length() -> None:
    # About 1 key in 128 has a coordinate with a leading zero byte; it must still be 32 bytes long.
    for _ in range(5000):
        key = SigningKey.generate("ES256")
        assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
        point = key.private_key.public_key().public_numbers()
        if min(point.x, point.y) < 2**248:
            break
    else:
        pytest.fail("no P-256 key with a short coordinate in 5000 tries")
    jwk = key.public_jwk()
    assert len(jwk["x"]) == len(jwk["y"]) == 43
    assert jwt.PyJWK(jwk).key.public_numbers() == point


def test_es384_keys_are_published_as_p384() -> None:
    with Emulator(algorithm="ES384") as emu:
        key = emu.jwks()[0]
        assert (key["alg"], key["crv"], len(key["x"])) == ("ES384", "P-384", 64)
        claims = sdk(emu).validate_session(emu.login("admin")["sessionJwt"])
        assert claims["roles"] == ["admin"]


def test_sdk_validates_a_session_with_descopes_claims(any_emu: Emulator) -> None:
    tokens = http_login(any_emu, "reader")
    header = jwt.get_unverified_header(tokens["sessionJwt"])
    assert header["alg"] == any_emu.config.algorithm
    assert header["kid"] == any_emu.signing_key.kid

    claims = sdk(any_emu).validate_session(tokens["sessionJwt"])
    reader = any_emu.user("reader")
    assert claims["sub"] == reader.user_id == claims["userId"]
    assert claims["iss"] == f"{any_emu.base_url}/{DEMO_PROJECT_ID}"
    assert claims["projectId"] == DEMO_PROJECT_ID
    assert claims["drn"] == "DS"
    assert claims["amr"] == ["pwd"]
    assert claims["roles"] == ["reader"]
    assert claims["permissions"] == ["read"]
    assert claims["tenants"] == {DEMO_TENANT_ID: {"roles": ["reader"], "permissions": ["read"]}}
    assert (claims["email"], claims["name"]) == ("reader@example.com", "Rita Reader")
    assert claims["exp"] - claims["iat"] == 600


def test_sdk_refreshes_against_the_emulator(any_emu: Emulator) -> None:
    tokens = http_login(any_emu, "editor")
    client = sdk(any_emu)
    refreshed = client.refresh_session(tokens["refreshJwt"])
    assert refreshed["sessionToken"]["sub"] == any_emu.user("editor").user_id
    assert refreshed["sessionToken"]["drn"] == "DS"
    # Without rotation the SDK keeps the refresh token it sent, as Descope leaves refreshJwt out.
    assert refreshed["refreshSessionToken"]["jwt"] == tokens["refreshJwt"]
    assert refreshed["refreshSessionToken"]["drn"] == "DSR"
    assert refreshed["user"]["email"] == "editor@example.com"
    assert refreshed["firstSeen"] is False
    assert refreshed["cookieData"]["path"] == "/"
    assert refreshed["cookieData"]["maxAge"] > 29 * 24 * 3600

    raw = refresh_http(any_emu, tokens["refreshJwt"])
    assert raw.status_code == 200
    assert "refreshJwt" not in raw.json()
    assert raw.json()["sessionJwt"].count(".") == 2


def test_sdk_exchanges_an_access_key(any_emu: Emulator) -> None:
    key = any_emu.access_key_for("editor")
    assert key == DEMO_ACCESS_KEYS["editor"] == "K2demo-editor-access-key-0000000000"
    result = sdk(any_emu).exchange_access_key(key)
    session = result["sessionToken"]
    editor = any_emu.user("editor")
    assert session["sub"] == editor.user_id
    assert session["amr"] == ["accesskey"]
    assert session["roles"] == ["editor"]
    assert session["tenants"][DEMO_TENANT_ID]["roles"] == ["editor"]
    assert (session["email"], session["name"]) == ("editor@example.com", "Eddie Editor")

    raw = requests.post(
        f"{any_emu.base_url}/v1/auth/accesskey/exchange",
        headers=bearer(any_emu, key),
        json={"loginOptions": {}},
        timeout=TIMEOUT,
    )
    assert raw.status_code == 200
    body = raw.json()
    assert set(body) == {"sessionJwt", "keyId", "expiration"}
    assert body["keyId"].startswith("K2")
    assert body["expiration"] == jwt.decode(body["sessionJwt"], options={"verify_signature": False})["exp"]

    with pytest.raises(AuthException) as err:
        sdk(any_emu).exchange_access_key("K2not-a-real-access-key-000")
    assert err.value.status_code == 401


def test_sdk_validate_and_refresh_replaces_an_expired_session(any_emu: Emulator) -> None:
    tokens = http_login(any_emu, "reader")
    client = sdk(any_emu)
    same = client.validate_and_refresh_session(tokens["sessionJwt"], tokens["refreshJwt"])
    assert same["sessionToken"]["jwt"] == tokens["sessionJwt"]

    claims = any_emu.session_claims("reader")
    claims.update(iat=int(time.time()) - 1000, exp=int(time.time()) - 600)
    expired = any_emu.sign(claims)
    with pytest.raises(AuthException):
        client.validate_session(expired)
    renewed = client.validate_and_refresh_session(expired, tokens["refreshJwt"])
    assert renewed["sessionToken"]["jwt"] != expired
    assert renewed["sessionToken"]["exp"] > time.time()
    assert client.validate_session(renewed["sessionToken"]["jwt"])["sub"] == any_emu.user("reader").user_id


def test_sdk_logout_revokes_the_refresh_token(any_emu: Emulator) -> None:
    tokens = http_login(any_emu, "admin")
    client = sdk(any_emu)
    client.refresh_session(tokens["refreshJwt"])
    assert client.logout(tokens["refreshJwt"]).status_code == 200
    with pytest.raises(AuthException) as err:
        client.refresh_session(tokens["refreshJwt"])
    assert err.value.status_code == 401
    with pytest.raises(AuthException) as err:
        client.me(tokens["refreshJwt"])
    assert err.value.status_code == 401
    assert refresh_http(any_emu, tokens["refreshJwt"]).json()["errorCode"] == "E061301"


def test_sdk_me_returns_the_user(any_emu: Emulator) -> None:
    tokens = http_login(any_emu, "reader")
    me = sdk(any_emu).me(tokens["refreshJwt"])
    assert me["userId"] == any_emu.user("reader").user_id
    assert me["loginIds"] == ["reader"]
    assert (me["email"], me["name"], me["verifiedEmail"], me["status"]) == (
        "reader@example.com",
        "Rita Reader",
        True,
        "enabled",
    )
    assert me["roleNames"] == ["reader"]
    assert me["userTenants"] == [
        {"tenantId": DEMO_TENANT_ID, "roleNames": ["reader"], "tenantName": "Demo Tenant"}
    ]


def test_in_process_login_matches_the_http_route(emu: Emulator) -> None:
    direct = emu.login("editor")
    over_http = http_login(emu, "editor")
    assert set(direct) == set(over_http)
    assert direct["user"] == over_http["user"]
    assert sdk(emu).validate_session(direct["sessionJwt"])["roles"] == ["editor"]
    with pytest.raises(KeyError):
        emu.login("nobody")


# -- key rotation -----------------------------------------------------------------------------------


def test_rotation_without_old_keys_invalidates_old_tokens(any_emu: Emulator) -> None:
    old = any_emu.login("reader")
    old_kid = any_emu.signing_key.kid
    assert sdk(any_emu).validate_session(old["sessionJwt"])["sub"]

    new_key = any_emu.rotate_keys(keep_old=False)
    assert new_key.kid != old_kid
    assert [k["kid"] for k in any_emu.jwks()] == [new_key.kid]
    fresh = sdk(any_emu)
    with pytest.raises(AuthException):
        fresh.validate_session(old["sessionJwt"])
    # The old refresh token was signed with the dropped key too.
    assert refresh_http(any_emu, old["refreshJwt"]).status_code == 401

    new = any_emu.login("reader")
    assert jwt.get_unverified_header(new["sessionJwt"])["kid"] == new_key.kid
    assert fresh.validate_session(new["sessionJwt"])["sub"] == any_emu.user("reader").user_id


def test_rotation_over_http_keeping_old_keys(emu: Emulator) -> None:
    old = emu.login("reader")
    resp = requests.post(f"{emu.base_url}/emulator/keys/rotate", json={"keepOld": True}, timeout=TIMEOUT)
    assert resp.status_code == 200
    body = resp.json()
    assert len(body["keys"]) == 2
    assert body["kid"] == emu.signing_key.kid == body["keys"][-1]["kid"]
    fresh = sdk(emu)
    assert fresh.validate_session(old["sessionJwt"])["roles"] == ["reader"]
    assert refresh_http(emu, old["refreshJwt"]).status_code == 200
    new_session = emu.login("reader")["sessionJwt"]
    assert jwt.get_unverified_header(new_session)["kid"] == body["kid"]
    assert fresh.validate_session(new_session)["roles"] == ["reader"]


# -- refresh-token rotation, role changes, revocation -----------------------------------------------


def test_rotating_refresh_tokens_rejects_a_used_one() -> None:
    with Emulator(rotate_refresh_tokens=True) as emu:
        first = emu.login("editor")["refreshJwt"]
        resp = refresh_http(emu, first)
        assert resp.status_code == 200
        second = resp.json()["refreshJwt"]
        assert second != first
        assert jwt.decode(second, options={"verify_signature": False})["drn"] == "DSR"

        reused = refresh_http(emu, first)
        assert reused.status_code == 401
        assert reused.json()["errorCode"] == "E061301"

        via_sdk = sdk(emu).refresh_session(second)
        third = via_sdk["refreshSessionToken"]["jwt"]
        assert third not in (first, second)
        assert refresh_http(emu, second).status_code == 401
        assert refresh_http(emu, third).status_code == 200


def test_role_change_shows_up_at_the_next_refresh(emu: Emulator) -> None:
    tokens = emu.login("editor")
    resp = requests.patch(
        f"{emu.base_url}/emulator/users/editor",
        json={
            "roles": ["admin"],
            "tenants": {DEMO_TENANT_ID: {"roles": ["admin"], "permissions": ["manage"]}},
        },
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200
    assert resp.json()["user"]["roleNames"] == ["admin"]

    client = sdk(emu)
    assert client.validate_session(tokens["sessionJwt"])["roles"] == ["editor"]  # issued before the change
    refreshed = client.refresh_session(tokens["refreshJwt"])
    assert refreshed["sessionToken"]["roles"] == ["admin"]
    assert refreshed["sessionToken"]["tenants"] == {
        DEMO_TENANT_ID: {"roles": ["admin"], "permissions": ["manage"]}
    }
    assert refreshed["sessionToken"]["sub"] == emu.user("editor").user_id

    emu.set_user_roles("editor", ["reader"])
    assert client.refresh_session(tokens["refreshJwt"])["roles"] == ["reader"]


def test_bad_role_updates_are_rejected_cleanly(emu: Emulator) -> None:
    url = f"{emu.base_url}/emulator/users"
    assert requests.patch(f"{url}/editor", json={"roles": "admin"}, timeout=TIMEOUT).status_code == 400
    assert requests.patch(f"{url}/editor", json={"role": ["x"]}, timeout=TIMEOUT).status_code == 400
    missing = requests.patch(f"{url}/nobody", json={"roles": []}, timeout=TIMEOUT)
    assert missing.status_code == 404
    assert missing.json()["errorCode"]
    assert emu.user("editor").roles == ["editor"]


def test_revoking_a_users_sessions_and_access_keys(emu: Emulator) -> None:
    one, two = emu.login("reader"), emu.login("reader")
    other = emu.login("editor")
    resp = requests.post(f"{emu.base_url}/emulator/users/reader/revoke", timeout=TIMEOUT)
    assert resp.json() == {"revoked": 2}
    assert refresh_http(emu, one["refreshJwt"]).status_code == 401
    assert refresh_http(emu, two["refreshJwt"]).status_code == 401
    assert refresh_http(emu, other["refreshJwt"]).status_code == 200

    key = emu.access_key_for("reader")
    assert emu.exchange_access_key(key)["sessionJwt"]
    resp = requests.post(f"{emu.base_url}/emulator/users/reader/access-keys/revoke", timeout=TIMEOUT)
    assert resp.json() == {"revoked": 1}
    exchanged = requests.post(
        f"{emu.base_url}/v1/auth/accesskey/exchange", headers=bearer(emu, key), json={}, timeout=TIMEOUT
    )
    assert exchanged.status_code == 401
    assert exchanged.json()["errorCode"] == "E062803"


# -- faults -----------------------------------------------------------------------------------------


def test_error_fault_answers_the_configured_status_on_its_routes_only(emu: Emulator) -> None:
    tokens = emu.login("reader")
    resp = requests.post(
        f"{emu.base_url}/emulator/faults",
        json={"mode": "error", "status": 500, "routes": ["refresh"]},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200
    faulted = refresh_http(emu, tokens["refreshJwt"])
    assert faulted.status_code == 500
    assert faulted.json()["errorCode"] == "E019999"
    keys = requests.get(f"{emu.base_url}/v2/keys/{emu.project_id}", timeout=TIMEOUT)
    assert keys.status_code == 200
    assert requests.get(f"{emu.base_url}/emulator/health", timeout=TIMEOUT).status_code == 200

    assert requests.delete(f"{emu.base_url}/emulator/faults", timeout=TIMEOUT).status_code == 200
    assert refresh_http(emu, tokens["refreshJwt"]).status_code == 200


def test_error_fault_on_all_routes_and_its_expiry(emu: Emulator) -> None:
    emu.set_fault("error", status=503, seconds=1.0, retry_after=7)
    keys = requests.get(f"{emu.base_url}/v2/keys/{emu.project_id}", timeout=TIMEOUT)
    assert keys.status_code == 503
    assert keys.headers["Retry-After"] == "7"
    me = requests.get(f"{emu.base_url}/v1/auth/me", headers=bearer(emu, "x"), timeout=TIMEOUT)
    assert me.status_code == 503
    login = requests.post(f"{emu.base_url}/emulator/login", json={"loginId": "reader"}, timeout=TIMEOUT)
    assert login.status_code == 503  # the flow sign-in is part of Descope
    users = requests.get(f"{emu.base_url}/emulator/users", timeout=TIMEOUT)
    assert users.status_code == 200  # control routes are never faulted
    assert wait_until(
        lambda: requests.get(f"{emu.base_url}/v2/keys/{emu.project_id}", timeout=TIMEOUT).status_code == 200
    )


def test_delay_fault_delays_answers(emu: Emulator) -> None:
    resp = requests.post(
        f"{emu.base_url}/emulator/faults",
        json={"mode": "delay", "delay": 1.0, "routes": ["keys"]},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200
    started = time.monotonic()
    keys = requests.get(f"{emu.base_url}/v2/keys/{emu.project_id}", timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    assert keys.status_code == 200
    assert elapsed >= 1.0
    faults = requests.get(f"{emu.base_url}/emulator/faults", timeout=TIMEOUT).json()["faults"]
    assert faults == [{"mode": "delay", "routes": ["keys"], "delay": 1.0}]


def test_outage_refuses_connections_until_cleared(emu: Emulator) -> None:
    port, base_url = emu.port, emu.base_url
    tokens = emu.login("reader")
    emu.set_fault("outage")
    assert refused(emu)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/emulator/health", timeout=TIMEOUT)
    with pytest.raises(httpx.ConnectError):
        sdk(emu).validate_session(tokens["sessionJwt"])  # the SDK's key fetch cannot connect

    emu.clear_faults()
    assert emu.port == port
    assert emu.base_url == base_url
    assert requests.get(f"{base_url}/emulator/health", timeout=TIMEOUT).status_code == 200
    assert sdk(emu).validate_session(tokens["sessionJwt"])["roles"] == ["reader"]


def test_outage_set_over_http_ends_by_itself_on_the_same_port(emu: Emulator) -> None:
    port = emu.port
    resp = requests.post(
        f"{emu.base_url}/emulator/faults", json={"mode": "outage", "seconds": 1.0}, timeout=TIMEOUT
    )
    assert resp.status_code == 202
    assert wait_until(lambda: refused(emu), seconds=5)
    assert wait_until(lambda: not refused(emu), seconds=10)
    assert emu.port == port
    assert requests.get(f"{emu.base_url}/emulator/health", timeout=TIMEOUT).json()["status"] == "ok"
    no_seconds = requests.post(f"{emu.base_url}/emulator/faults", json={"mode": "outage"}, timeout=TIMEOUT)
    assert no_seconds.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "explode"},
        {"mode": "error", "status": 200},
        {"mode": "error", "routes": ["nope"]},
        {"mode": "delay", "delay": -1},
        {"mode": "error", "seconds": "soon"},
        {"mode": "error", "colour": "red"},
    ],
)
def test_bad_fault_requests_are_400(emu: Emulator, body: dict[str, Any]) -> None:
    resp = requests.post(f"{emu.base_url}/emulator/faults", json=body, timeout=TIMEOUT)
    assert resp.status_code == 400
    assert resp.json()["errorCode"] == "E011004"
    assert requests.get(f"{emu.base_url}/emulator/faults", timeout=TIMEOUT).json() == {"faults": []}


# -- stats ------------------------------------------------------------------------------------------


def test_stats_count_real_key_fetches(emu: Emulator) -> None:
    requests.post(f"{emu.base_url}/emulator/stats/reset", timeout=TIMEOUT)
    tokens = emu.login("reader")
    client = sdk(emu)
    client.validate_session(tokens["sessionJwt"])
    client.validate_session(tokens["sessionJwt"])
    assert emu.stats()["keys"] == 1  # the SDK caches the key set

    sdk(emu).validate_session(tokens["sessionJwt"])
    assert emu.stats()["keys"] == 2

    # An unknown kid makes the SDK fetch the key set again before it gives up.
    with pytest.raises(AuthException):
        client.validate_session(emu.sign(emu.session_claims("reader"), headers={"kid": "SK2unknown"}))
    stats = requests.get(f"{emu.base_url}/emulator/stats", timeout=TIMEOUT).json()
    assert stats == {"keys": 3, "refresh": 0, "exchange": 0, "logout": 0, "me": 0, "login": 0}

    client.refresh_session(tokens["refreshJwt"])
    assert emu.stats()["refresh"] == 1
    reset = requests.post(f"{emu.base_url}/emulator/stats/reset", timeout=TIMEOUT).json()
    assert set(reset.values()) == {0}


# -- bad input: clean 4xx, Descope-style body, no token echoed or logged ----------------------------

SECRET = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1uZXZlci1sZWFr.c2ln"


def _bad_requests(emu: Emulator) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    p = emu.project_id
    keys_path = f"/v2/keys/{p}"
    return [
        ("POST", "/v1/auth/refresh", {}, b"{}"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Basic {SECRET}"}, b"{}"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer {SECRET}"}, b"{}"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer P2otherProject:{SECRET}"}, b"{}"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer {p}:{SECRET}"}, b"{}"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer {p}:{SECRET}"}, b"{not json"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer {p}:{SECRET}"}, b"[1, 2]"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer {p}:{SECRET}"}, b"\xff\xfe"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer {p}:{SECRET * 150}"}, b"{}"),
        ("POST", "/v1/auth/refresh", {"Authorization": f"Bearer {p}:{SECRET}"}, b"[" * 50_000),
        ("POST", "/v1/auth/accesskey/exchange", {"Authorization": f"Bearer {p}:{SECRET}"}, b"{}"),
        ("POST", "/v1/auth/accesskey/exchange", {"Authorization": f"Bearer {SECRET}"}, b"{}"),
        (
            "POST",
            "/v1/auth/accesskey/exchange",
            {"Authorization": f"Bearer {p}:{SECRET}"},
            b'{"loginOptions": 1}',
        ),
        ("POST", "/v1/auth/logout", {"Authorization": f"Bearer {p}:{SECRET}"}, b"{}"),
        ("GET", "/v1/auth/me", {"Authorization": f"Bearer {p}:{SECRET}"}, None),
        ("GET", "/v1/auth/me", {"Authorization": f"Bearer {p}:"}, None),
        ("GET", f"/v2/keys/{SECRET}", {}, None),
        ("GET", keys_path + "x", {}, None),
        ("POST", keys_path, {}, b"{}"),
        ("GET", "/v1/auth/nothing-here", {"Authorization": f"Bearer {p}:{SECRET}"}, None),
        ("POST", "/emulator/login", {}, b'{"loginId": 42}'),
        ("POST", "/emulator/login", {}, b"{}"),
    ]


def test_bad_input_gets_a_clean_4xx_that_never_echoes_the_token(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for method, path, headers, body in _bad_requests(emu):
        resp = requests.request(method, emu.base_url + path, headers=headers, data=body, timeout=TIMEOUT)
        where = f"{method} {path[:40]} {list(headers.values())[:1]!s:.40}"
        assert 400 <= resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:200]}"
        error = resp.json()
        assert set(error) == {"errorCode", "errorDescription", "errorMessage", "message"}, where
        assert error["errorCode"].startswith("E"), where
        assert "c2VjcmV0" not in resp.text, where
        assert "c2VjcmV0" not in json.dumps(dict(resp.headers)), where
    # The server side logged the rejections (so this check is not vacuous), but never the token. The
    # client's own urllib3 lines are left out: one request above puts the token in the URL on purpose.
    server_lines = [
        f"{r.name} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith(("mlflow_descope_auth", "uvicorn"))
    ]
    assert any("refresh rejected" in line for line in server_lines)
    assert not [line for line in server_lines if "c2VjcmV0" in line]


def test_adversarial_refresh_tokens_are_rejected(emu: Emulator) -> None:
    reader = emu.user("reader")
    good = emu.login("reader")
    good_claims = jwt.decode(good["refreshJwt"], options={"verify_signature": False})
    now = int(time.time())
    foreign = SigningKey.generate("RS256", kid=emu.signing_key.kid)
    cases = {
        "session token as refresh token": good["sessionJwt"],
        "expired": emu.sign({**good_claims, "iat": now - 100, "exp": now - 50}),
        "unknown jti": emu.sign({**good_claims, "jti": "R2forged"}),
        "other project": emu.sign({**good_claims, "iss": "https://api.descope.com/P2someoneElse"}),
        "foreign key, same kid": emu.sign(good_claims, key=foreign),
        "no kid": emu.sign(good_claims, headers={"kid": None}),
        "alg none": emu.sign(good_claims, headers={"alg": "none"}),
        "alg mismatch": emu.sign(good_claims, headers={"alg": "RS384"}),
        "no alg": emu.sign(good_claims, headers={"alg": None}),
        "tampered": good["refreshJwt"][:-6]
        + ("AAAAAA" if not good["refreshJwt"].endswith("AAAAAA") else "BBBBBB"),
    }
    for name, token in cases.items():
        resp = refresh_http(emu, token)
        assert resp.status_code == 401, f"{name}: {resp.status_code} {resp.text}"
        assert resp.json()["errorCode"] == "E061301", name
        assert token not in resp.text, name
    # The genuine token still works, and belongs to the reader.
    assert refresh_http(emu, good["refreshJwt"]).status_code == 200
    assert good_claims["sub"] == reader.user_id


def test_the_dsr_cookie_is_accepted_in_place_of_a_bearer_token(emu: Emulator) -> None:
    tokens = emu.login("reader")
    resp = requests.post(
        f"{emu.base_url}/v1/auth/refresh",
        headers={"Authorization": f"Bearer {emu.project_id}", "Cookie": f"DSR={tokens['refreshJwt']}"},
        json={"dcs": "t", "dct": DEMO_TENANT_ID},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200
    claims = sdk(emu).validate_session(resp.json()["sessionJwt"])
    assert claims["dct"] == DEMO_TENANT_ID


# -- users, configuration, run_forever --------------------------------------------------------------


def test_demo_users_are_documented_values() -> None:
    users = {u.login_id: u for u in demo_users()}
    assert set(users) == {"admin", "editor", "reader"}
    assert (users["admin"].email, users["admin"].name, users["admin"].roles) == (
        "admin@example.com",
        "Ada Admin",
        ["admin"],
    )
    assert users["editor"].name == "Eddie Editor"
    assert users["reader"].name == "Rita Reader"
    assert all(u.user_id.startswith("U2") for u in users.values())
    assert len({u.user_id for u in users.values()}) == 3
    assert all(u.tenants[DEMO_TENANT_ID]["roles"] == u.roles for u in users.values())
    assert {k: v.access_keys for k, v in users.items()} == {k: [v] for k, v in DEMO_ACCESS_KEYS.items()}


def test_a_users_file_replaces_the_demo_users(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "login_id": "alice",
                        "email": "alice@example.com",
                        "name": "Alice",
                        "roles": ["mlflow-admin"],
                        "tenants": {"T2acme": {"roles": ["editor"], "name": "Acme"}},
                        "access_keys": ["K2alice-local-key-0001"],
                    }
                ]
            }
        )
    )
    with Emulator(users_file=path) as emu:
        assert [u.login_id for u in emu.users] == ["alice"]
        claims = sdk(emu).exchange_access_key("K2alice-local-key-0001")["sessionToken"]
        assert claims["roles"] == ["mlflow-admin"]
        assert claims["tenants"] == {"T2acme": {"roles": ["editor"], "permissions": []}}
        me = sdk(emu).me(emu.login("alice")["refreshJwt"])
        assert me["userTenants"] == [{"tenantId": "T2acme", "roleNames": ["editor"], "tenantName": "Acme"}]
        with pytest.raises(KeyError):
            emu.login("admin")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"people": []}, "users"),
        ({"users": [{"email": "x@example.com"}]}, "users[0].login_id"),
        ({"users": [{"login_id": "a", "roles": "admin"}]}, "users[0].roles"),
        ({"users": [{"login_id": "a", "tenants": ["T1"]}]}, "users[0].tenants"),
        ({"users": [{"login_id": "a", "access_keys": ["has:colon-key"]}]}, "users[0].access_keys[0]"),
        ({"users": [{"login_id": "a", "rolez": []}]}, "users[0].rolez"),
        ({"users": [{"login_id": "a"}, {"login_id": "a"}]}, "login_id"),
    ],
)
def test_bad_users_files_name_the_field(tmp_path: Path, document: Any, field: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_users_file(path)


def test_unreadable_users_files_are_value_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"users": [')
    with pytest.raises(ValueError, match="not JSON"):
        load_users_file(broken)
    with pytest.raises(ValueError, match="cannot be read"):
        load_users_file(tmp_path / "missing.json")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="host"):
        EmulatorConfig(host="0.0.0.0")
    assert EmulatorConfig(host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    with pytest.raises(ValueError, match="project_id"):
        EmulatorConfig(project_id="P2 with spaces")
    with pytest.raises(ValueError, match="algorithm"):
        EmulatorConfig(algorithm="HS256")
    with pytest.raises(ValueError, match="session_ttl"):
        EmulatorConfig(session_ttl=0)
    assert len(DEMO_PROJECT_ID) < 32
    assert DEMO_PROJECT_ID.startswith("P2")
    assert DEMO_PROJECT_ID.isalnum()


def test_lifetimes_are_configurable() -> None:
    with Emulator(session_ttl=60, refresh_ttl=3600) as emu:
        tokens = emu.login("reader")
        session = jwt.decode(tokens["sessionJwt"], options={"verify_signature": False})
        refresh = jwt.decode(tokens["refreshJwt"], options={"verify_signature": False})
        assert session["exp"] - session["iat"] == 60
        assert refresh["exp"] - refresh["iat"] == 3600
        assert tokens["cookieExpiration"] == refresh["exp"]


def test_run_forever_serves_until_stopped() -> None:
    out = io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, kwargs={"port": 0, "out": out, "stop": stop}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: "Ctrl-C" in out.getvalue())
        text = out.getvalue()
        base_url = next(line.split()[-1] for line in text.splitlines() if "base URL" in line)
        assert (
            requests.get(f"{base_url}/emulator/health", timeout=TIMEOUT).json()["projectId"]
            == DEMO_PROJECT_ID
        )
        assert DEMO_ACCESS_KEYS["reader"] in text
        assert f"DESCOPE_BASE_URI={base_url}" in text
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert "stopped" in out.getvalue()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/emulator/health", timeout=TIMEOUT)


def test_stand_in_web_component_is_served_with_the_real_element_name(emu: Emulator) -> None:
    resp = requests.get(f"{emu.base_url}/emulator/web-component.js", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/javascript")
    assert 'customElements.define("descope-wc"' in resp.text
    for event in ('"success"', '"error"', '"ready"'):
        assert event in resp.text


def test_the_login_page_origin_may_call_the_flow_routes(emu: Emulator) -> None:
    """The login page runs on the MLflow server's origin: the browser sends a CORS preflight first."""
    preflight = requests.options(
        f"{emu.base_url}/emulator/login",
        headers={
            "Origin": "http://127.0.0.1:5000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-descope-project-id",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert "x-descope-project-id" in preflight.headers["access-control-allow-headers"].lower()
    users = requests.get(f"{emu.base_url}/emulator/users", headers={"Origin": "http://x.test"}, timeout=10)
    assert users.headers["access-control-allow-origin"] == "*"
    # Never with credentials: no page can make the emulator act on cookies.
    assert "access-control-allow-credentials" not in users.headers


def test_flow_sign_in_checks_the_project_the_page_names(emu: Emulator) -> None:
    url = f"{emu.base_url}/emulator/login"
    wrong = requests.post(
        url, json={"loginId": "reader"}, headers={"x-descope-project-id": "P2other"}, timeout=10
    )
    assert wrong.status_code == 400 and "project" in wrong.json()["errorMessage"]
    right = requests.post(
        url, json={"loginId": "reader"}, headers={"x-descope-project-id": emu.project_id}, timeout=10
    )
    assert right.status_code == 200 and right.json()["sessionJwt"]


def test_a_fault_on_login_breaks_the_flow_sign_in(emu: Emulator) -> None:
    emu.set_fault("error", status=503, routes=["login"])
    assert (
        requests.post(f"{emu.base_url}/emulator/login", json={"loginId": "reader"}, timeout=10).status_code
        == 503
    )
    emu.clear_faults()
    assert (
        requests.post(f"{emu.base_url}/emulator/login", json={"loginId": "reader"}, timeout=10).status_code
        == 200
    )
