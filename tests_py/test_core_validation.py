"""The Rust core through its Python API, against the emulator's really signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import mlflow_descope_auth as mda
from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator


def b64(obj: object) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "ES384"])
def test_emulator_sessions_validate_for_every_algorithm(algorithm: str) -> None:
    with Emulator(algorithm=algorithm) as emu:
        client = DescopeClient(emu.project_id, base_url=emu.base_url)
        tokens = emu.login("editor")
        identity = client.validate_session(tokens["sessionJwt"])
    assert identity.username == identity.user_id
    assert identity.email == "editor@example.com"
    assert identity.roles == ["editor"]
    assert identity.permission == "READ"
    assert not identity.is_admin
    assert identity.claims["drn"] == "DS"
    assert identity.expires_at > time.time()


def test_identity_mapping_follows_the_settings(emulator: Emulator) -> None:
    client = DescopeClient(
        emulator.project_id,
        base_url=emulator.base_url,
        username_claim="email",
        default_permission="NO_PERMISSIONS",
        role_permissions="editor=EDIT",
    )
    editor = client.validate_session(emulator.login("editor")["sessionJwt"])
    reader = client.validate_session(emulator.login("reader")["sessionJwt"])
    admin = client.validate_session(emulator.login("admin")["sessionJwt"])
    assert (editor.username, editor.permission) == ("editor@example.com", "EDIT")
    assert (reader.username, reader.permission) == ("reader@example.com", "NO_PERMISSIONS")
    assert (admin.is_admin, admin.permission) == (True, "MANAGE")
    assert editor.to_dict()["tenants"] == editor.tenants
    assert "sessionJwt" not in repr(editor) and "eyJ" not in repr(editor)


def test_sdk_fixture_shaped_tokens_validate(emulator: Emulator, client: DescopeClient) -> None:
    # The descope SDK's own test tokens use a bare project id as issuer, `dsub`-less `sub`, and
    # tenants with roles and permissions; the core must accept that shape as well as the URL issuer.
    now = int(time.time())
    claims = {
        "drn": "DS",
        "exp": now + 300,
        "iat": now,
        "iss": emulator.project_id,
        "sub": "U2xyz",
        "permissions": ["foo", "bar"],
        "roles": ["abc"],
        "tenants": {"T1": {"permissions": ["foo"], "roles": ["abc"]}, "T2": {}},
    }
    identity = client.validate_session(emulator.sign(claims))
    assert identity.tenants == {
        "T1": {"roles": ["abc"], "permissions": ["foo"]},
        "T2": {"roles": [], "permissions": []},
    }
    assert identity.has_role("abc", "T1") and not identity.has_role("abc", "T2")


def test_repeated_tokens_hit_the_cache_not_the_key_endpoint(
    emulator: Emulator, client: DescopeClient
) -> None:
    token = emulator.login("reader")["sessionJwt"]
    first = client.validate_session(token)
    for _ in range(100):
        assert client.validate_session(token) == first
    assert client.key_fetch_count == 1
    assert client.cached_sessions == 1


def public_pem(emulator: Emulator) -> bytes:
    """The current signing key's public key as PEM: the HMAC secret of the classic confusion attack."""
    return emulator.signing_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256(header: dict[str, str], claims: dict[str, object], secret: bytes) -> str:
    """A token MACed with HS256 by hand: PyJWT refuses to use a PEM public key as an HMAC secret."""
    signing_input = f"{b64(header)}.{b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _forge(emulator: Emulator) -> dict[str, tuple[str, type[mda.DescopeAuthError], str]]:
    now = int(time.time())
    base = emulator.session_claims("admin")
    kid = emulator.signing_key.kid
    good = emulator.sign(base)
    h, p, s = good.split(".")
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign_pem = foreign.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cases: dict[str, tuple[str, type[mda.DescopeAuthError], str]] = {
        "alg none": (f"{b64({'alg': 'none', 'kid': kid})}.{p}.", mda.InvalidTokenError, "token_malformed"),
        "alg none, signature kept": (
            f"{b64({'alg': 'none', 'kid': kid})}.{p}.{s}",
            mda.InvalidTokenError,
            "token_algorithm",
        ),
        "unknown kid": (
            f"{b64({'alg': 'RS256', 'kid': 'not-a-key'})}.{p}.{s}",
            mda.InvalidTokenError,
            "token_unknown_key",
        ),
        "foreign key reusing kid": (
            jwt.encode(base, foreign_pem, algorithm="RS256", headers={"kid": kid}),
            mda.InvalidTokenError,
            "token_signature",
        ),
        "expired": (emulator.sign({**base, "exp": now - 60}), mda.ExpiredTokenError, "token_expired"),
        "nbf in the future": (
            emulator.sign({**base, "nbf": now + 600}),
            mda.InvalidTokenError,
            "token_not_yet_valid",
        ),
        "other project": (
            emulator.sign({**base, "iss": "https://api.descope.com/P2other"}),
            mda.InvalidTokenError,
            "token_issuer",
        ),
        "refresh token as session": (
            emulator.login("reader")["refreshJwt"],
            mda.InvalidTokenError,
            "token_kind",
        ),
        "tampered payload": (
            f"{h}.{b64({**base, 'roles': ['admin', 'x']})}.{s}",
            mda.InvalidTokenError,
            "token_signature",
        ),
        "tampered header": (
            f"{b64({'alg': 'RS256', 'kid': kid, 'x': 1})}.{p}.{s}",
            mda.InvalidTokenError,
            "token_signature",
        ),
        "truncated": (good[:-12], mda.InvalidTokenError, "token_malformed"),
        "not base64": (f"{h}.{p}.%%%", mda.InvalidTokenError, "token_malformed"),
        "header not JSON": (f"{b64(b'nope')}.{p}.{s}", mda.InvalidTokenError, "token_malformed"),
        "payload not JSON": (f"{h}.{b64(b'nope')}.{s}", mda.InvalidTokenError, "token_signature"),
        "1 MB": (f"{h}.{'A' * (1 << 20)}.{s}", mda.InvalidTokenError, "token_too_long"),
        "empty": ("", mda.InvalidTokenError, "token_malformed"),
        "HS256 signed with the public key": (
            hs256({"alg": "HS256", "kid": kid, "typ": "JWT"}, base, public_pem(emulator)),
            mda.InvalidTokenError,
            "token_algorithm",
        ),
    }
    return cases


def test_adversarial_tokens_are_rejected_with_the_right_exception(
    emulator: Emulator, client: DescopeClient
) -> None:
    assert emulator.config.algorithm == "RS256"
    for name, (token, exc_type, code) in _forge(emulator).items():
        with pytest.raises(exc_type) as info:
            client.validate_session(token)
        message = str(info.value)
        assert info.value.code == code, f"{name}: {info.value.code}: {message}"
        assert token[:40] not in message or not token, f"{name}: the message leaks the token"


def test_hs256_signed_with_the_public_key_is_refused(emulator: Emulator, client: DescopeClient) -> None:
    # Algorithm confusion: a verifier that lets the token pick HS256 would use the public key (as PEM,
    # as the JWK, or its modulus) as the HMAC secret.
    jwk = next(k for k in emulator.jwks() if k["kid"] == emulator.signing_key.kid)
    header = {"alg": "HS256", "kid": jwk["kid"], "typ": "JWT"}
    claims = emulator.session_claims("admin")
    for secret in (public_pem(emulator), json.dumps(jwk).encode(), jwk["n"].encode()):
        token = hs256(header, claims, secret)
        with pytest.raises(mda.InvalidTokenError) as info:
            client.validate_session(token)
        assert info.value.code == "token_algorithm"


def test_a_flood_of_random_kids_hits_the_key_endpoint_a_bounded_number_of_times(emulator: Emulator) -> None:
    client = DescopeClient(emulator.project_id, base_url=emulator.base_url, key_refetch_interval=30)
    client.validate_session(emulator.login("reader")["sessionJwt"])
    before = emulator.stats()["keys"]
    payload = b64(emulator.session_claims("reader"))
    for i in range(2000):
        with pytest.raises(mda.InvalidTokenError):
            client.validate_session(f"{b64({'alg': 'RS256', 'kid': f'forged-{i}'})}.{payload}.c2ln")
    assert emulator.stats()["keys"] - before <= 1


def test_refresh_exchange_me_and_logout(client: DescopeClient) -> None:
    with Emulator(rotate_refresh_tokens=True) as emu:
        client = DescopeClient(emu.project_id, base_url=emu.base_url)
        tokens = emu.login("editor")
        refreshed = client.refresh_session(tokens["refreshJwt"])
        assert refreshed.refreshed and refreshed.identity.email == "editor@example.com"
        assert refreshed.refresh_token and refreshed.refresh_token != tokens["refreshJwt"], "rotated"
        assert "eyJ" not in repr(refreshed)
        with pytest.raises(mda.RefreshFailedError) as refused:
            client.refresh_session(tokens["refreshJwt"])  # the rotated-out token is revoked
        assert refused.value.code == "refresh_failed"
        me = client.me(refreshed.refresh_token)
        assert me["email"] == "editor@example.com"
        exchanged = client.exchange_access_key(emu.access_key_for("reader"))
        assert exchanged.identity.email == "reader@example.com" and exchanged.refresh_token is None
        with pytest.raises(mda.AccessKeyExchangeError) as info:
            client.exchange_access_key("K2not-a-real-key-000000000000000000000")
        assert "K2not" not in str(info.value)
        assert info.value.code == "access_key_rejected"
        client.logout(refreshed.refresh_token)
        with pytest.raises(mda.RefreshFailedError):
            client.refresh_session(refreshed.refresh_token)


def test_validate_and_refresh_returns_the_rotated_refresh_token() -> None:
    """With rotation on, the refresh token sent is dead after the call: the result carries its
    successor, and `validate_session` takes no refresh token (it would have to drop the successor)."""
    with Emulator(rotate_refresh_tokens=True) as emu:
        client = DescopeClient(emu.project_id, base_url=emu.base_url, http_timeout=5)
        tokens = emu.login("reader")
        expired = emu.sign({**emu.session_claims("reader"), "exp": int(time.time()) - 30})
        with pytest.raises(mda.ExpiredTokenError):
            client.validate_session(expired)
        with pytest.raises(TypeError):
            client.validate_session(expired, tokens["refreshJwt"])  # type: ignore[call-arg]
        result = client.validate_and_refresh_session(expired, tokens["refreshJwt"])
        assert result.refreshed and result.session_token != expired
        assert result.identity.email == "reader@example.com"
        assert result.refresh_token is not None and result.refresh_token != tokens["refreshJwt"]
        with pytest.raises(mda.RefreshFailedError):
            client.refresh_session(tokens["refreshJwt"])  # rotated away
        again = client.validate_and_refresh_session(expired, result.refresh_token)
        assert again.refreshed and again.refresh_token not in (None, result.refresh_token)
        same = client.validate_and_refresh_session(again.session_token, again.refresh_token)
        assert not same.refreshed and same.session_token == again.session_token


def test_descope_unreachable_is_its_own_error_and_bounded_by_the_timeout() -> None:
    from .servers import free_port

    client = DescopeClient("P2nowhere", base_url=f"http://127.0.0.1:{free_port()}", http_timeout=0.5)
    token = f"{b64({'alg': 'RS256', 'kid': 'k'})}.{b64({'sub': 'x'})}.c2ln"
    start = time.monotonic()
    with pytest.raises(mda.DescopeUnreachableError) as info:
        client.validate_session(token)
    assert info.value.code == "descope_unreachable"
    assert time.monotonic() - start < 10  # generous: the point is "not hanging", not speed


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "DESCOPE_PROJECT_ID"),
        ({"DESCOPE_PROJECT_ID": "P2 bad!"}, "DESCOPE_PROJECT_ID"),
        ({"DESCOPE_PROJECT_ID": "P2x", "DESCOPE_DEFAULT_PERMISSION": "ROOT"}, "DESCOPE_DEFAULT_PERMISSION"),
        ({"DESCOPE_PROJECT_ID": "P2x", "DESCOPE_BASE_URI": "api.descope.com"}, "DESCOPE_BASE_URI"),
        (
            {"DESCOPE_PROJECT_ID": "P2x", "DESCOPE_ROLE_PERMISSIONS": "editor:EDIT"},
            "DESCOPE_ROLE_PERMISSIONS",
        ),
    ],
)
def test_configuration_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(mda.ConfigurationError) as info:
        DescopeClient.from_env(env)
    assert info.value.variable == variable


def test_get_descope_client_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    monkeypatch.setenv("DESCOPE_PROJECT_ID", emulator.project_id)
    monkeypatch.setenv("DESCOPE_BASE_URI", emulator.base_url)
    monkeypatch.setenv("DESCOPE_ADMIN_ROLES", "editor")
    client = mda.get_descope_client()
    assert client is mda.get_descope_client(), "one client per process"
    identity = client.validate_session(emulator.login("editor")["sessionJwt"])
    assert identity.is_admin
    monkeypatch.setenv("DESCOPE_ADMIN_ROLES", "")
    assert not mda.get_descope_client().validate_session(emulator.login("editor")["sessionJwt"]).is_admin


@pytest.mark.parametrize(
    "username", ["", " ", " ada@example.com", "ada@example.com\n", "a\u0000b", "a" * 256]
)
def test_a_username_claim_that_could_pass_for_another_user_is_refused(
    emulator: Emulator, username: str
) -> None:
    """The username claim keys a user's grants and runs in MLflow: missing, blank, padded, with
    control characters or longer than MLflow stores, the session is refused, never altered."""
    client = DescopeClient(emulator.project_id, base_url=emulator.base_url, username_claim="email")
    token = emulator.sign({**emulator.session_claims("editor"), "email": username})
    with pytest.raises(mda.InvalidTokenError):
        client.validate_session(token)
    fine = emulator.sign({**emulator.session_claims("editor"), "email": "ada@example.com"})
    assert client.validate_session(fine).username == "ada@example.com"
