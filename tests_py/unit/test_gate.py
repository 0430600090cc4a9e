"""The session gate in-process: ``Gate.check`` and ``Gate.check_cached`` decide on requests built by
hand, with tokens from the emulator (in-process, on loopback). Judged by what a client would see:
the verdict's response (status, body, headers), its identity, the cookies it sets and the headers it
strips before MLflow."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth._core import RefreshCoordinator
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.gate import PERSON_SIGNED_OUT, Gate, Verdict
from mlflow_descope_auth.server.http import Response
from mlflow_descope_auth.server.refresh_store import RefreshStoreError

from .inprocess import (
    HOST,
    expired_session,
    issued_in_the_past,
    make_settings,
    response_cookies,
    unit_request,
)

SEARCH = "/api/2.0/mlflow/experiments/search"
CREATE = "/api/2.0/mlflow/experiments/create"
HTML = {"accept": "text/html,application/xhtml+xml"}
SPOOFED = {
    "x-descope-roles": "admin",
    "x-descope-user-id": "U2someoneElse",
    "x-mlflow-authorization": "Bearer gateway",
    "x-mlflow-assistant-delegation": "someone",
}


@pytest.fixture
def gate(client: DescopeClient, tmp_path: Path) -> Gate:
    return Gate(client, make_settings(tmp_path))


@pytest.fixture(scope="module")
def rotating() -> Iterator[Emulator]:
    with Emulator(rotate_refresh_tokens=True) as emu:
        yield emu


def body(response: Response) -> dict[str, str]:
    payload: dict[str, str] = json.loads(response.body)
    return payload


def header(response: Response, name: str) -> str:
    values = [v for k, v in response.headers if k.lower() == name.lower()]
    assert len(values) == 1, response.headers
    return values[0]


def assert_401(verdict: Verdict, *, message: str) -> Response:
    assert verdict.response is not None and verdict.identity is None
    assert verdict.response.status == 401, verdict.response
    assert body(verdict.response)["error_code"] == "UNAUTHENTICATED"
    assert message in body(verdict.response)["message"], body(verdict.response)
    assert header(verdict.response, "WWW-Authenticate").startswith('Bearer realm="mlflow"')
    return verdict.response


def login_redirect(verdict: Verdict, login_page: str = "/auth/login") -> dict[str, list[str]]:
    """The query of the login-page redirect the verdict answers with."""
    assert verdict.response is not None and verdict.identity is None
    assert verdict.response.status == 302, verdict.response
    location = urlsplit(header(verdict.response, "Location"))
    assert (location.scheme, location.netloc, location.path) == ("", "", login_page)
    return parse_qs(location.query)


def cookie(login_id: str, emu: Emulator) -> dict[str, str]:
    tokens = emu.login(login_id)
    return {"cookie": f"DS={tokens['sessionJwt']}; DSR={tokens['refreshJwt']}"}


def assert_cleared(verdict_or_headers: list[tuple[str, str]]) -> None:
    cleared = response_cookies(verdict_or_headers)
    assert set(cleared) == {"DS", "DSR"}, cleared
    for value in cleared.values():
        assert "Max-Age=0" in value and "; Path=/" in value, value


# -- public paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/auth/health",
        "/auth/login",
        "/auth/session",
        "/auth/logout",
        "/auth/cli/token",
        "/auth/static/login.js",
    ],
)
def test_public_paths_pass_without_credentials_and_lose_spoofed_headers(gate: Gate, path: str) -> None:
    verdict = gate.check(unit_request("GET", path, headers=SPOOFED))
    assert verdict.response is None and verdict.identity is None
    assert verdict.header_changes == dict.fromkeys(SPOOFED)
    assert gate.check_cached(unit_request("GET", path)) is None


@pytest.mark.parametrize("path", ["/auth/user", "/auth/loginx", "/healthz", SEARCH, "/"])
def test_everything_else_needs_a_credential(gate: Gate, path: str) -> None:
    assert_401(gate.check(unit_request("GET", path)), message="sign in with Descope")


def test_public_paths_follow_the_static_prefix(client: DescopeClient, tmp_path: Path) -> None:
    gate = Gate(client, make_settings(tmp_path, prefix="/mlflow"))
    assert gate.check(unit_request("GET", "/mlflow/auth/login")).response is None
    assert gate.check(unit_request("GET", "/auth/login")).response is not None
    query = login_redirect(gate.check(unit_request("GET", "/mlflow/", headers=HTML)), "/mlflow/auth/login")
    assert query == {"next": ["/mlflow/"], "message": ["required"]}


# -- bearer tokens -----------------------------------------------------------------------------------


def test_a_valid_bearer_token_passes_with_its_identity(gate: Gate, emulator: Emulator) -> None:
    token = emulator.login("editor")["sessionJwt"]
    verdict = gate.check(unit_request("POST", CREATE, headers={"authorization": f"Bearer {token}"}))
    assert verdict.response is None
    assert verdict.identity is not None and verdict.identity.email == "editor@example.com"
    assert verdict.set_cookies == []


def test_a_bearer_post_needs_no_origin(gate: Gate, emulator: Emulator) -> None:
    token = emulator.login("editor")["sessionJwt"]
    req = unit_request("POST", CREATE, headers={"authorization": f"Bearer {token}"}, same_origin=False)
    verdict = gate.check(req)
    assert verdict.response is None and verdict.identity is not None


def test_a_token_checked_once_is_answered_without_io(gate: Gate, emulator: Emulator) -> None:
    token = emulator.login("reader")["sessionJwt"]
    req = unit_request("GET", SEARCH, headers={"authorization": f"Bearer {token}", **SPOOFED})
    assert gate.check_cached(req) is None, "never seen: check_cached defers to check"
    assert gate.check(req).identity is not None
    cached = gate.check_cached(req)
    assert cached is not None and cached.response is None
    assert cached.identity is not None and cached.identity.email == "reader@example.com"
    assert cached.header_changes == dict.fromkeys(SPOOFED)


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer", "expects 'Authorization: Bearer <Descope session token>'"),
        ("Bearer   ", "expects 'Authorization: Bearer <Descope session token>'"),
        ("Basic YWRtaW46cGFzc3dvcmQ=", "expects 'Authorization: Bearer <Descope session token>'"),
        ("Bearer not-a-jwt", "invalid session token"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "invalid session token"),
    ],
)
def test_a_bad_authorization_header_is_a_401_that_does_not_echo_it(
    gate: Gate, authorization: str, message: str
) -> None:
    response = assert_401(
        gate.check(unit_request("GET", SEARCH, headers={"authorization": authorization})), message=message
    )
    token = authorization.partition(" ")[2].strip()
    assert not token or token.encode() not in response.body


def test_a_refresh_token_is_not_a_bearer_session(gate: Gate, emulator: Emulator) -> None:
    refresh = emulator.login("reader")["refreshJwt"]
    response = assert_401(
        gate.check(unit_request("GET", SEARCH, headers={"authorization": f"Bearer {refresh}"})),
        message="invalid session token",
    )
    assert refresh.encode() not in response.body


def test_an_expired_bearer_token_is_a_401_saying_so(gate: Gate, emulator: Emulator) -> None:
    stale = issued_in_the_past(emulator, "reader", 3600)["sessionJwt"]
    req = unit_request("GET", SEARCH, headers={"authorization": f"Bearer {stale}"})
    assert gate.check_cached(req) is None
    assert_401(gate.check(req), message="the Descope session expired; refresh it and retry")
    # A person at a browser with such a token is sent to sign in again, told why.
    page = gate.check(unit_request("GET", "/", headers={"authorization": f"Bearer {stale}", **HTML}))
    assert login_redirect(page) == {"next": ["/"], "message": ["expired"]}


# -- no credential: redirect for a page load, 401 for everything else --------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "navigation"),
    [
        ("GET", HTML, True),
        ("GET", {"sec-fetch-mode": "navigate", "accept": "*/*"}, True),
        ("GET", {"sec-fetch-mode": "cors", **HTML}, False),  # a script's fetch, however it asks
        ("GET", {"accept": "application/json"}, False),
        ("POST", HTML, False),
        ("HEAD", HTML, False),
    ],
)
def test_navigation_is_redirected_and_the_rest_gets_401_json(
    gate: Gate, method: str, headers: dict[str, str], navigation: bool
) -> None:
    verdict = gate.check(unit_request(method, "/experiments/1", headers=headers, query="tab=runs&q=a%2Fb"))
    if navigation:
        assert login_redirect(verdict) == {
            "next": ["/experiments/1?tab=runs&q=a%2Fb"],
            "message": ["required"],
        }
    elif "sec-fetch-mode" in headers:  # a browser's script: words for the person at it
        assert_401(verdict, message=PERSON_SIGNED_OUT)
    else:
        assert_401(verdict, message="sign in with Descope")


# -- cookies -----------------------------------------------------------------------------------------


def test_a_session_cookie_passes_without_setting_cookies(gate: Gate, emulator: Emulator) -> None:
    verdict = gate.check(unit_request("GET", SEARCH, headers=cookie("reader", emulator)))
    assert verdict.response is None
    assert verdict.identity is not None and verdict.identity.email == "reader@example.com"
    assert verdict.set_cookies == []


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"origin": f"http://{HOST}"}, True),
        ({"referer": f"http://{HOST}/#/experiments"}, True),
        ({"origin": "https://proxy.example", "x-forwarded-host": "proxy.example"}, True),
        ({}, False),
        ({"origin": "https://evil.example"}, False),
        ({"origin": "null"}, False),
        ({"origin": f"http://{HOST}.evil.example"}, False),
        ({"origin": f"http://evil.example@{HOST}"}, False),
        ({"referer": "https://evil.example/page"}, False),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_state_changing_cookie_request_must_come_from_this_site(
    gate: Gate, emulator: Emulator, headers: dict[str, str], allowed: bool, method: str
) -> None:
    req = unit_request(method, CREATE, headers={**cookie("admin", emulator), **headers}, same_origin=False)
    assert gate.check_cached(req) is None, "the origin check is check's"
    verdict = gate.check(req)
    if allowed:
        assert verdict.response is None and verdict.identity is not None
    else:
        assert verdict.response is not None and verdict.identity is None
        assert verdict.response.status == 403
        assert body(verdict.response)["error_code"] == "PERMISSION_DENIED"
        assert "cross-origin request with a session cookie refused" in body(verdict.response)["message"]
        assert verdict.set_cookies == []


def test_an_expired_session_cookie_is_renewed_with_the_refresh_token(gate: Gate, emulator: Emulator) -> None:
    past = issued_in_the_past(emulator, "editor", 3600)
    jar = f"DS={past['sessionJwt']}; DSR={past['refreshJwt']}; theme=dark"
    before = emulator.stats()["refresh"]
    verdict = gate.check(unit_request("GET", SEARCH, headers={"cookie": jar, **SPOOFED}))
    assert verdict.response is None
    assert verdict.identity is not None and verdict.identity.email == "editor@example.com"
    assert emulator.stats()["refresh"] == before + 1
    set_cookies = response_cookies(verdict.set_cookies)
    assert set(set_cookies) == {"DS"}, "without rotation the refresh cookie stays as it is"
    renewed = set_cookies["DS"].split(";")[0].removeprefix("DS=")
    assert renewed != past["sessionJwt"]
    assert "; HttpOnly" in set_cookies["DS"] and "; SameSite=Lax" in set_cookies["DS"]
    # MLflow sees the renewed session in the request's cookies, the other cookies untouched, and no
    # header the client made up.
    assert verdict.header_changes == {
        "cookie": f"DS={renewed}; DSR={past['refreshJwt']}; theme=dark",
        **dict.fromkeys(SPOOFED),
    }


def test_a_rotated_refresh_token_is_set_as_the_new_cookie(
    client: DescopeClient, rotating: Emulator, tmp_path: Path
) -> None:
    rotating_client = DescopeClient(rotating.project_id, base_url=rotating.base_url, http_timeout=5)
    gate = Gate(rotating_client, make_settings(tmp_path))
    past = issued_in_the_past(rotating, "reader", 3600)
    verdict = gate.check(
        unit_request("GET", SEARCH, headers={"cookie": f"DS={past['sessionJwt']}; DSR={past['refreshJwt']}"})
    )
    assert verdict.response is None and verdict.identity is not None
    set_cookies = response_cookies(verdict.set_cookies)
    assert set(set_cookies) == {"DS", "DSR"}
    new_refresh = set_cookies["DSR"].split(";")[0].removeprefix("DSR=")
    assert new_refresh not in ("", past["refreshJwt"])
    # Rotation consumed the old refresh token at Descope; the new one works.
    refresh = f"{rotating.base_url}/v1/auth/refresh"

    def refresh_with(token: str) -> int:
        auth = {"Authorization": f"Bearer {rotating.project_id}:{token}"}
        return requests.post(refresh, headers=auth, json={}, timeout=10).status_code

    assert refresh_with(past["refreshJwt"]) == 401
    assert refresh_with(new_refresh) == 200


@pytest.mark.parametrize("refresh", ["absent", "garbage", "session token", "revoked", "expired"])
def test_a_session_that_cannot_be_renewed_is_refused_and_its_cookies_cleared(
    gate: Gate, emulator: Emulator, refresh: str
) -> None:
    stale = expired_session(emulator, "reader")
    refresh_cookie = {
        "absent": None,
        "garbage": "not-a-refresh-token",
        "session token": emulator.login("reader")["sessionJwt"],
        "revoked": emulator.login("reader")["refreshJwt"],
        # Issued 31 days ago: past the emulator's 30-day refresh lifetime.
        "expired": issued_in_the_past(emulator, "reader", 31 * 24 * 3600)["refreshJwt"],
    }[refresh]
    if refresh == "revoked":
        assert refresh_cookie is not None
        emulator.state.logout(refresh_cookie)
    jar = {"cookie": f"DS={stale}" + (f"; DSR={refresh_cookie}" if refresh_cookie else "")}
    api = gate.check(unit_request("GET", SEARCH, headers=jar))
    response = assert_401(api, message="")
    assert stale.encode() not in response.body
    assert_cleared(response.headers)
    page = gate.check(unit_request("GET", "/", headers={**jar, **HTML}))
    assert login_redirect(page)["next"] == ["/"]
    assert page.response is not None
    assert_cleared(page.response.headers)


def test_the_secure_flag_of_renewed_cookies_follows_the_scheme(
    client: DescopeClient, emulator: Emulator, tmp_path: Path
) -> None:
    gate = Gate(client, make_settings(tmp_path, cookie_secure="auto"))
    for scheme, secure in (("https", True), ("http", False)):
        past = issued_in_the_past(emulator, "reader", 3600)
        jar = {"cookie": f"DS={past['sessionJwt']}; DSR={past['refreshJwt']}"}
        verdict = gate.check(unit_request("GET", SEARCH, scheme=scheme, headers=jar))
        renewed = response_cookies(verdict.set_cookies)["DS"]
        assert ("; Secure" in renewed) is secure, renewed


# -- Descope out of reach ----------------------------------------------------------------------------


@pytest.fixture
def unreachable_gate(tmp_path: Path) -> Gate:
    """A gate whose Descope base URL is a loopback port nobody listens on (and no keys loaded)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = DescopeClient("P2unreachable", base_url=f"http://127.0.0.1:{port}", http_timeout=1)
    return Gate(client, make_settings(tmp_path))


def test_unreachable_descope_is_a_503_for_api_clients(unreachable_gate: Gate, emulator: Emulator) -> None:
    token = emulator.login("reader")["sessionJwt"]
    verdict = unreachable_gate.check(
        unit_request("GET", SEARCH, headers={"authorization": f"Bearer {token}"})
    )
    assert verdict.response is not None and verdict.identity is None
    assert verdict.response.status == 503
    assert body(verdict.response)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "cannot verify the session right now" in body(verdict.response)["message"]
    assert header(verdict.response, "Retry-After") == "5"
    assert token.encode() not in verdict.response.body


def test_unreachable_descope_sends_a_page_load_to_the_login_page(
    unreachable_gate: Gate, emulator: Emulator
) -> None:
    jar = {"cookie": f"DS={emulator.login('reader')['sessionJwt']}", **HTML}
    verdict = unreachable_gate.check(unit_request("GET", "/", headers=jar))
    assert login_redirect(verdict) == {"next": ["/"], "message": ["unavailable"]}


class _StoreThatCannotAnswer:
    """A refresh store whose database is gone: every call fails as the real stores then do."""

    def once(self, key: str, produce: object) -> bytes | None:
        raise RefreshStoreError("the refresh store in PostgreSQL is unreachable: db.internal:5432 refused")

    def revoke(self, key: str, ttl: float) -> None:
        raise RefreshStoreError("the refresh store in PostgreSQL is unreachable: db.internal:5432 refused")

    def is_revoked(self, key: str) -> bool:
        raise RefreshStoreError("the refresh store in PostgreSQL is unreachable: db.internal:5432 refused")


def test_a_refresh_store_that_cannot_answer_keeps_the_cookies_and_its_details(
    client: DescopeClient, emulator: Emulator, tmp_path: Path
) -> None:
    """Not a sign-out (which would clear a refresh token that is fine) and not a renewal either: the
    session cannot be renewed right now, and where the deployment's database lives stays in the log."""
    refresher = RefreshCoordinator(client, "a server secret of some length", _StoreThatCannotAnswer())
    gate = Gate(client, make_settings(tmp_path), refresher)
    past = issued_in_the_past(emulator, "editor", 3600)
    before = emulator.stats()["refresh"]
    jar = {"cookie": f"DS={past['sessionJwt']}; DSR={past['refreshJwt']}"}
    response = assert_401(
        gate.check(unit_request("GET", SEARCH, headers=jar)), message="try again in a moment"
    )
    assert "db.internal" not in body(response)["message"]
    assert not response_cookies(response.headers), "the cookies stay"
    page = gate.check(unit_request("GET", "/", headers={**jar, **HTML}))
    assert login_redirect(page)["message"] == ["unavailable"]
    assert page.response is not None and not response_cookies(page.response.headers)
    assert emulator.stats()["refresh"] == before
