"""Browser sessions on `mlflow server --app-name descope`: cookies, transparent refresh, logout,
open redirects, CSRF and spoofed identity headers. Real server subprocesses, real HTTP, no mocks."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth._core import ConfigurationError
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.gate import Gate
from mlflow_descope_auth.server.http import Request
from mlflow_descope_auth.server.routes import AuthRoutes
from mlflow_descope_auth.server.settings import ServerSettings

from .descope_server import DescopeServer, descope_server

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
CREATE = "/api/2.0/mlflow/experiments/create"
GET_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"
SHORT_TTL = 5  # seconds a session lives on the `short` server
WORKERS = 2  # descope_server's default --workers
REFRESH_TTL = 30 * 24 * 3600  # the emulator's default refresh token lifetime
GATE_CSRF_MESSAGE = "cross-origin request with a session cookie refused"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TIMEOUT = 60


# -- helpers -----------------------------------------------------------------------------------------


@dataclass
class SetCookie:
    name: str
    value: str
    attrs: dict[str, str] = field(default_factory=dict)  # lower-case attribute names
    flags: set[str] = field(default_factory=set)  # lower-case valueless attributes

    @property
    def max_age(self) -> int:
        return int(self.attrs["max-age"])


def set_cookies(resp: requests.Response) -> dict[str, SetCookie]:
    """Every Set-Cookie header of the response, by cookie name (a name set twice fails the test)."""
    found: dict[str, SetCookie] = {}
    for header in resp.raw.headers.getlist("Set-Cookie"):
        first, *rest = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        cookie = SetCookie(name, value)
        for attr in rest:
            key, eq, val = attr.partition("=")
            if eq:
                cookie.attrs[key.lower()] = val
            else:
                cookie.flags.add(key.lower())
        assert name not in found, f"cookie {name} set twice: {resp.raw.headers.getlist('Set-Cookie')}"
        found[name] = cookie
    return found


def assert_session_cookie(cookie: SetCookie, *, secure: bool = False) -> None:
    assert cookie.value, cookie
    assert "httponly" in cookie.flags, cookie
    assert cookie.attrs.get("samesite", "").lower() == "lax", cookie
    assert cookie.attrs.get("path") == "/", cookie
    assert ("secure" in cookie.flags) is secure, cookie
    assert "domain" not in cookie.attrs, cookie


def assert_cleared(cookies: dict[str, SetCookie], *names: str) -> None:
    for name in names:
        assert name in cookies, f"{name} not cleared; Set-Cookie: {cookies}"
        cookie = cookies[name]
        assert cookie.value == "", cookie
        assert cookie.max_age == 0, cookie
        assert cookie.attrs.get("path") == "/", cookie
        assert "httponly" in cookie.flags, cookie


def origin(server: DescopeServer) -> dict[str, str]:
    return {"Origin": server.url}


def cookie_header(ds: str | None, dsr: str | None = None) -> dict[str, str]:
    parts = [f"DS={ds}"] if ds is not None else []
    if dsr is not None:
        parts.append(f"DSR={dsr}")
    return {"Cookie": "; ".join(parts)}


def post_session(
    server: DescopeServer,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> requests.Response:
    hdrs = {"Content-Type": "application/json", **origin(server)} if headers is None else headers
    payload = data if data is not None else json.dumps(body).encode()
    return requests.post(server.url + "/auth/session", data=payload, headers=hdrs, timeout=TIMEOUT)


def sign_in(server: DescopeServer, login_id: str, next_path: str | None = None) -> tuple[str, str]:
    """Signs in through POST /auth/session; returns the (DS, DSR) cookie values the server set."""
    tokens = server.session(login_id)
    body = {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"]}
    if next_path is not None:
        body["next"] = next_path
    resp = post_session(server, body)
    assert resp.status_code == 200, resp.text
    cookies = set_cookies(resp)
    return cookies["DS"].value, cookies["DSR"].value


def get(server: DescopeServer, path: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.get(server.url + path, headers=headers, timeout=TIMEOUT, allow_redirects=False, **kwargs)


def wait_until_expired(session_jwt: str, leeway: float = 0.0) -> None:
    exp = jwt.decode(session_jwt, options={"verify_signature": False})["exp"]
    delay = exp + leeway + 1.5 - time.time()
    if delay > 0:
        time.sleep(delay)


def expired_session(emu: Emulator, login_id: str) -> str:
    """A session token of `login_id`, signed with the emulator's real key, that expired a minute ago."""
    claims = emu.session_claims(login_id)
    now = int(time.time())
    claims.update(iat=now - 120, exp=now - 60)
    return emu.sign(claims)


def emulator_refresh(emu: Emulator, refresh_jwt: str) -> requests.Response:
    return requests.post(
        f"{emu.base_url}/v1/auth/refresh",
        headers={"Authorization": f"Bearer {emu.project_id}:{refresh_jwt}"},
        json={},
        timeout=TIMEOUT,
    )


def experiment_exists(server: DescopeServer, name: str) -> bool:
    resp = server.api("GET", GET_BY_NAME, "admin", params={"experiment_name": name})
    assert resp.status_code in (200, 404), resp.text
    return resp.status_code == 200


def login_page_next(html: str) -> str:
    """The `next` value the login page posts after sign-in (its `data-next` attribute)."""
    match = re.search(r'\bdata-next="([^"]*)"', html)
    assert match is not None, html
    return unescape(match.group(1))


def assert_same_site_path(value: str, server_url: str) -> None:
    """A target a browser resolves to this very server: one leading '/', no scheme, no '//' or '/\\'."""
    assert value.startswith("/"), value
    assert not value.startswith(("//", "/\\")), value
    assert "\\" not in value, value
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value), value
    resolved = urlsplit(urljoin(server_url + "/auth/login", value))
    assert (resolved.scheme, resolved.netloc) == ("http", urlsplit(server_url).netloc), value


# -- fixtures ----------------------------------------------------------------------------------------


def burst(
    server: DescopeServer, sessions: list[requests.Session], path: str, headers: dict[str, str]
) -> list[requests.Response | BaseException]:
    """One request per session, all released at once; an exception stands in for a failed request."""
    barrier = threading.Barrier(len(sessions))
    results: list[requests.Response | BaseException] = [RuntimeError("not run")] * len(sessions)

    def hit(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = sessions[i].get(
                server.url + path, headers=headers, timeout=TIMEOUT, allow_redirects=False
            )
        except BaseException as exc:  # reported by the caller's assertions
            results[i] = exc

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def wait_for_all_workers(server: DescopeServer, timeout: float = 180.0) -> None:
    """`mlflow server` answers /health as soon as one worker is up; the others boot one after the
    other (a file lock). Every worker fetches the signing keys once, on its first validation: send
    concurrent first-seen tokens until the emulator has served the keys to WORKERS processes."""
    emu = server.emulator
    deadline = time.monotonic() + timeout
    while emu.stats()["keys"] < WORKERS:
        assert time.monotonic() < deadline, f"only {emu.stats()['keys']} of {WORKERS} workers came up"
        sessions = [requests.Session() for _ in range(8)]
        for s in sessions:
            s.headers["Authorization"] = f"Bearer {emu.login('reader')['sessionJwt']}"
        burst(server, sessions, SEARCH, {})
        for s in sessions:
            s.close()
        time.sleep(0.5)


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    """A server whose sessions live SHORT_TTL seconds, refresh tokens rotating on every use, and no
    clock-skew leeway, so a session is expired one second after its `exp`. All its workers are up."""
    with (
        Emulator(session_ttl=SHORT_TTL, rotate_refresh_tokens=True) as emu,
        descope_server(emu, tmp_path_factory.mktemp("descope-short"), DESCOPE_JWT_LEEWAY="0") as server,
    ):
        wait_for_all_workers(server)
        yield server


def make_routes(
    client: DescopeClient, state_dir: Path, *, cookie_secure: str = "auto", prefix: str = ""
) -> AuthRoutes:
    settings = ServerSettings(
        flow_id="sign-up-or-in",
        redirect_url="/",
        web_component_url="https://cdn.invalid/web-component.js",
        cookie_secure=cookie_secure,
        auth_db_uri="sqlite://",
        state_dir=state_dir,
        static_prefix=prefix,
    )
    return AuthRoutes(Gate(client, settings), client)


def unit_request(
    method: str, path: str, *, scheme: str = "http", body: Any = None, headers: dict[str, str] | None = None
) -> Request:
    host = "mlflow.example:5000"
    base = {"host": host, "origin": f"{scheme}://{host}", "content-type": "application/json"}
    return Request(
        method=method,
        path=path,
        query_string="",
        headers={**base, **{k.lower(): v for k, v in (headers or {}).items()}},
        scheme=scheme,
        body=json.dumps(body).encode() if body is not None else b"",
    )


def response_cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Set-Cookie header values by cookie name."""
    return {v.split("=", 1)[0]: v for k, v in headers if k.lower() == "set-cookie"}


# -- 1. sign-in sets the cookies ---------------------------------------------------------------------


def test_sign_in_sets_httponly_lax_cookies_that_authenticate(descope: DescopeServer) -> None:
    tokens = descope.session("editor")
    resp = post_session(descope, {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["redirect"] == "/"
    assert tokens["sessionJwt"] not in resp.text and tokens["refreshJwt"] not in resp.text
    cookies = set_cookies(resp)
    assert set(cookies) == {"DS", "DSR"}
    ds, dsr = cookies["DS"], cookies["DSR"]
    assert_session_cookie(ds, secure=False)
    assert_session_cookie(dsr, secure=False)
    assert ds.value == tokens["sessionJwt"] and dsr.value == tokens["refreshJwt"]
    session_left = jwt.decode(tokens["sessionJwt"], options={"verify_signature": False})["exp"] - time.time()
    assert session_left - 5 <= ds.max_age <= session_left + 1, (ds.max_age, session_left)
    assert REFRESH_TTL - 60 <= dsr.max_age <= REFRESH_TTL, dsr.max_age

    jar = cookie_header(ds.value, dsr.value)
    search = get(descope, SEARCH, jar)
    assert search.status_code == 200, search.text
    assert "experiments" in search.json()
    assert "Set-Cookie" not in search.headers  # a valid session is not re-issued

    user = get(descope, "/auth/user", jar)
    assert user.status_code == 200, user.text
    assert user.json()["email"] == "editor@example.com"
    assert ds.value not in user.text and dsr.value not in user.text
    assert "Set-Cookie" not in user.headers


def test_sign_in_without_refresh_token_sets_only_ds(descope: DescopeServer) -> None:
    tokens = descope.session("reader")
    resp = post_session(descope, {"sessionJwt": tokens["sessionJwt"]})
    assert resp.status_code == 200, resp.text
    assert set(set_cookies(resp)) == {"DS"}


@pytest.mark.parametrize(
    ("cookie_secure", "scheme", "secure"),
    [("true", "http", True), ("auto", "https", True), ("auto", "http", False), ("false", "https", False)],
)
def test_secure_flag_follows_descope_cookie_secure(
    client: DescopeClient, emulator: Emulator, tmp_path: Path, cookie_secure: str, scheme: str, secure: bool
) -> None:
    routes = make_routes(client, tmp_path, cookie_secure=cookie_secure)
    tokens = emulator.login("reader")
    body = {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"]}
    resp = routes.dispatch(unit_request("POST", "/auth/session", scheme=scheme, body=body), None)
    assert resp.status == 200, resp.body
    cookies = response_cookies(resp.headers)
    assert set(cookies) == {"DS", "DSR"}
    for value in cookies.values():
        assert ("; Secure" in value) is secure, value
        assert "; HttpOnly" in value and "; SameSite=Lax" in value and "; Path=/" in value, value

    # Clearing at logout carries the same attributes, or the browser would keep the Secure cookies.
    out = routes.dispatch(unit_request("GET", "/auth/logout", scheme=scheme), None)
    assert out.status == 302
    cleared = response_cookies(out.headers)
    assert set(cleared) == {"DS", "DSR"}
    for value in cleared.values():
        assert ("; Secure" in value) is secure and "Max-Age=0" in value, value

    # So do the cookies of a transparently refreshed session.
    stale = expired_session(emulator, "reader")
    jar = cookie_header(stale, tokens["refreshJwt"])
    req = unit_request("GET", "/api/2.0/mlflow/experiments/search", scheme=scheme, headers=jar)
    verdict = routes.gate.check(req)
    assert verdict.response is None and verdict.identity is not None
    renewed = response_cookies(verdict.set_cookies)
    assert "DS" in renewed
    assert ("; Secure" in renewed["DS"]) is secure, renewed


def test_cookie_secure_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESCOPE_PROJECT_ID", "P2test")
    monkeypatch.setenv("DESCOPE_COOKIE_SECURE", " TRUE ")
    assert ServerSettings.from_env().cookie_secure == "true"
    monkeypatch.delenv("DESCOPE_COOKIE_SECURE")
    assert ServerSettings.from_env().cookie_secure == "auto"
    monkeypatch.setenv("DESCOPE_COOKIE_SECURE", "yes")
    with pytest.raises(ConfigurationError) as info:
        ServerSettings.from_env()
    assert (info.value.code, info.value.variable) == ("config_invalid", "DESCOPE_COOKIE_SECURE")


def test_cookies_and_default_redirect_follow_the_static_prefix(
    client: DescopeClient, emulator: Emulator, tmp_path: Path
) -> None:
    routes = make_routes(client, tmp_path, prefix="/mlflow")
    tokens = emulator.login("reader")
    body = {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"], "next": "//evil.com"}
    resp = routes.dispatch(unit_request("POST", "/mlflow/auth/session", body=body), None)
    assert resp.status == 200, resp.body
    assert json.loads(resp.body)["redirect"] == "/mlflow/"
    for value in response_cookies(resp.headers).values():
        assert "; Path=/mlflow/" in value, value


# -- 2. POST /auth/session refusals ------------------------------------------------------------------


def _refusal_cases(
    tokens: dict[str, str], server: DescopeServer
) -> list[tuple[str, int, dict[str, str], bytes]]:
    json_headers = {"Content-Type": "application/json"}
    good = json.dumps({"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"]}).encode()
    same = {**json_headers, **origin(server)}

    def body(**fields: Any) -> bytes:
        return json.dumps(fields).encode()

    return [
        ("no Origin", 403, json_headers, good),
        ("cross Origin", 403, {**json_headers, "Origin": "https://evil.example"}, good),
        ("Origin null", 403, {**json_headers, "Origin": "null"}, good),
        ("cross Referer", 403, {**json_headers, "Referer": "https://evil.example/login"}, good),
        ("lookalike Origin", 403, {**json_headers, "Origin": server.url + ".evil.example"}, good),
        ("garbage session", 401, same, body(sessionJwt="garbage-not-a-jwt", refreshJwt=tokens["refreshJwt"])),
        ("garbage jwt shape", 401, same, body(sessionJwt="eyJhbGciOiJIUzI1NiJ9.e30.c2ln")),
        (
            "refresh as session",
            401,
            same,
            body(sessionJwt=tokens["refreshJwt"], refreshJwt=tokens["refreshJwt"]),
        ),
        (
            "garbage refresh",
            401,
            same,
            body(sessionJwt=tokens["sessionJwt"], refreshJwt="garbage.refresh.token"),
        ),
        (
            "session as refresh",
            401,
            same,
            body(sessionJwt=tokens["sessionJwt"], refreshJwt=tokens["sessionJwt"]),
        ),
        ("not JSON", 400, same, b"sessionJwt=" + tokens["sessionJwt"].encode()),
        ("JSON array", 400, same, json.dumps([tokens["sessionJwt"]]).encode()),
        ("non-string token", 400, same, body(sessionJwt=12345)),
        ("missing token", 400, same, body(refreshJwt=tokens["refreshJwt"])),
    ]


def test_session_endpoint_refusals(descope: DescopeServer) -> None:
    tokens = descope.session("reader")
    for case, status, headers, data in _refusal_cases(tokens, descope):
        resp = post_session(descope, headers=headers, data=data)
        assert resp.status_code == status, (case, resp.status_code, resp.text)
        assert "Set-Cookie" not in resp.headers, case
        assert tokens["sessionJwt"] not in resp.text and tokens["refreshJwt"] not in resp.text, case
        assert resp.json()["error_code"], case


def test_session_endpoint_accepts_same_origin_referer(descope: DescopeServer) -> None:
    tokens = descope.session("reader")
    headers = {"Content-Type": "application/json", "Referer": descope.url + "/auth/login?next=/"}
    resp = post_session(descope, {"sessionJwt": tokens["sessionJwt"]}, headers=headers)
    assert resp.status_code == 200, resp.text


# -- 3. transparent refresh --------------------------------------------------------------------------


def test_expired_session_is_refreshed_transparently(short: DescopeServer) -> None:
    emu = short.emulator
    ds0, dsr0 = sign_in(short, "editor")
    first = get(short, SEARCH, cookie_header(ds0, dsr0))
    assert first.status_code == 200, first.text
    wait_until_expired(ds0)

    before = emu.stats()
    resp = get(short, SEARCH, cookie_header(ds0, dsr0))
    assert resp.status_code == 200, resp.text
    after = emu.stats()
    assert after["refresh"] == before["refresh"] + 1, (before, after)
    assert after["logout"] == before["logout"]

    cookies = set_cookies(resp)
    assert set(cookies) == {"DS", "DSR"}, cookies
    ds1, dsr1 = cookies["DS"].value, cookies["DSR"].value
    assert_session_cookie(cookies["DS"])
    assert_session_cookie(cookies["DSR"])
    assert ds1 != ds0 and dsr1 != dsr0
    assert 1 <= cookies["DS"].max_age <= SHORT_TTL, cookies["DS"]
    assert REFRESH_TTL - 60 <= cookies["DSR"].max_age <= REFRESH_TTL, cookies["DSR"]

    # The new pair is a plain valid session: served as is, nothing refreshed again.
    user = get(short, "/auth/user", cookie_header(ds1, dsr1))
    assert user.status_code == 200, user.text
    assert user.json()["email"] == "editor@example.com"
    assert "Set-Cookie" not in user.headers
    assert emu.stats()["refresh"] == after["refresh"]

    # Rotation consumed the old refresh token at Descope.
    assert emulator_refresh(emu, dsr0).status_code == 401


def test_concurrent_requests_with_one_stale_pair_all_succeed(short: DescopeServer) -> None:
    """A browser's burst of requests after the session expired, all with the same (DS, DSR), spread
    over both workers: with rotation only one refresh of that DSR can succeed at Descope, yet no
    request may fail (a 401 here logs the user out)."""
    emu = short.emulator
    # Keep-alive connections opened concurrently with requests that take a moment (first-seen
    # tokens): the workers accept them between them, and each later request stays on its worker.
    sessions = [requests.Session() for _ in range(8)]
    warm = burst(short, sessions, SEARCH, {"Authorization": f"Bearer {emu.login('reader')['sessionJwt']}"})
    assert all(isinstance(r, requests.Response) and r.status_code == 200 for r in warm), warm
    ds, dsr = sign_in(short, "editor")
    wait_until_expired(ds)
    before = emu.stats()
    try:
        results = burst(short, sessions, SEARCH, cookie_header(ds, dsr))
        # Stragglers within the grace period, one after another on the same connections.
        results += [
            s.get(short.url + SEARCH, headers=cookie_header(ds, dsr), timeout=TIMEOUT) for s in sessions
        ]
    finally:
        for s in sessions:
            s.close()
    after = emu.stats()

    summary = [
        repr(r)
        if isinstance(r, BaseException)
        else r.status_code
        if r.ok
        else f"{r.status_code} {r.text[:160]}"
        for r in results
    ]
    assert all(isinstance(r, requests.Response) and r.status_code == 200 for r in results), summary
    refreshes = after["refresh"] - before["refresh"]
    assert 1 <= refreshes <= WORKERS, (before, after)
    assert after["logout"] == before["logout"], (before, after)
    new_sessions: set[str] = set()
    for r in results:
        assert isinstance(r, requests.Response)
        cookies = set_cookies(r)
        assert cookies["DS"].value not in ("", ds), cookies
        assert cookies["DS"].max_age > 0, cookies
        assert "DSR" in cookies and cookies["DSR"].value not in ("", dsr), cookies  # rotated
        new_sessions.add(cookies["DS"].value)
    # Every session handed out came from one of the counted refreshes, and works.
    assert len(new_sessions) <= refreshes, len(new_sessions)
    for new in new_sessions:
        user = get(short, "/auth/user", cookie_header(new))
        assert user.status_code == 200, user.text
        assert user.json()["email"] == "editor@example.com"


# -- 4. a session that cannot be renewed -------------------------------------------------------------


def revoked_refresh(emu: Emulator, login_id: str) -> str:
    dsr: str = emu.login(login_id)["refreshJwt"]
    resp = requests.post(
        f"{emu.base_url}/v1/auth/logout",
        headers={"Authorization": f"Bearer {emu.project_id}:{dsr}"},
        json={},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    return dsr


@pytest.mark.parametrize("refresh", ["garbage", "revoked", "absent", "session token"])
def test_unrenewable_session_is_refused_and_cookies_cleared(short: DescopeServer, refresh: str) -> None:
    emu = short.emulator
    stale = expired_session(emu, "reader")
    dsr: str | None = None
    if refresh == "garbage":
        dsr = "not-a-refresh-token"
    elif refresh == "revoked":
        dsr = revoked_refresh(emu, "reader")
    elif refresh == "session token":
        dsr = emu.login("reader")["sessionJwt"]
    jar = cookie_header(stale, dsr)

    api = get(short, SEARCH, {**jar, "Accept": "application/json"})
    assert api.status_code == 401, api.text
    assert api.json()["error_code"] == "UNAUTHENTICATED"
    assert stale not in api.text
    assert_cleared(set_cookies(api), "DS", "DSR")

    page = get(short, "/?tab=runs", {**jar, **HTML})
    assert page.status_code == 302, page.text
    location = urlsplit(page.headers["Location"])
    assert location.path == "/auth/login" and not location.netloc
    assert parse_qs(location.query)["next"] == ["/?tab=runs"]
    assert_cleared(set_cookies(page), "DS", "DSR")

    navigate = get(short, "/", {**jar, "Sec-Fetch-Mode": "navigate", "Accept": "*/*"})
    assert navigate.status_code == 302
    fetch = get(short, "/", {**jar, "Sec-Fetch-Mode": "cors", **HTML})
    assert fetch.status_code == 401  # a script's fetch, however it asks, gets 401, not a page


# -- 5. logout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_revokes_the_refresh_token_and_clears_cookies(descope: DescopeServer, method: str) -> None:
    emu = descope.emulator
    ds, dsr = sign_in(descope, "reader")
    # The shared emulator does not rotate: the refresh token works before logout...
    assert emulator_refresh(emu, dsr).status_code == 200
    before = emu.stats()
    resp = requests.request(
        method,
        descope.url + "/auth/logout",
        headers={**cookie_header(ds, dsr), **origin(descope)},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    assert resp.status_code == 302, resp.text
    assert resp.headers["Location"] == "/auth/login?message=logged_out"
    assert_cleared(set_cookies(resp), "DS", "DSR")
    after = emu.stats()
    assert after["logout"] == before["logout"] + 1, (before, after)
    # ...and not after.
    refused = emulator_refresh(emu, dsr)
    assert refused.status_code == 401, refused.text

    page = requests.get(descope.url + resp.headers["Location"], timeout=TIMEOUT)
    assert page.status_code == 200
    assert "You have signed out." in page.text


def test_logout_without_cookies_still_redirects(descope: DescopeServer) -> None:
    before = descope.emulator.stats()
    resp = get(descope, "/auth/logout", {})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/auth/login?message=logged_out"
    assert_cleared(set_cookies(resp), "DS", "DSR")
    assert descope.emulator.stats()["logout"] == before["logout"]


# -- 6. open redirects -------------------------------------------------------------------------------

HOSTILE_NEXT = [
    "//evil.com",
    "//evil.com/path",
    "https://evil.com",
    "http:evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    " //evil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.com",
    "/%2F%2Fevil.com",
    "/%5Cevil.com",
    "/auth/logout",
    "",
]


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_session_redirect_stays_on_this_site(descope: DescopeServer, hostile: str) -> None:
    tokens = descope.session("reader")
    resp = post_session(descope, {"sessionJwt": tokens["sessionJwt"], "next": hostile})
    assert resp.status_code == 200, resp.text
    redirect = resp.json()["redirect"]
    assert_same_site_path(redirect, descope.url)
    assert redirect in ("/", hostile), redirect
    if redirect == hostile:
        # Passed through as a path (e.g. /%2F%2Fevil.com): the server must not bounce it off-site.
        ds = set_cookies(resp)["DS"].value
        landing = get(descope, redirect, {**cookie_header(ds), **HTML})
        if landing.is_redirect:
            assert_same_site_path(landing.headers["Location"], descope.url)


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_login_page_embeds_only_same_site_next(descope: DescopeServer, hostile: str) -> None:
    resp = get(descope, "/auth/login", HTML, params={"next": hostile})
    assert resp.status_code == 200, resp.text
    assert '<descope-wc id="descope-wc" project-id="' + descope.emulator.project_id + '"' in resp.text
    assert 'flow-id="sign-up-or-in"' in resp.text
    embedded = login_page_next(resp.text)
    assert_same_site_path(embedded, descope.url)
    assert embedded in ("/", hostile), embedded


@pytest.mark.parametrize("target", ["/#/experiments/1?x=1", "/?x=1&y=a%20b", "/static-files/index.html"])
def test_safe_next_is_kept(descope: DescopeServer, target: str) -> None:
    tokens = descope.session("reader")
    resp = post_session(descope, {"sessionJwt": tokens["sessionJwt"], "next": target})
    assert resp.status_code == 200, resp.text
    assert resp.json()["redirect"] == target
    page = get(descope, "/auth/login", HTML, params={"next": target})
    assert login_page_next(page.text) == target


@pytest.mark.parametrize("path", ["/?x=1&y=a%20b", "/experiments/1?tab=runs&q=a%2Fb", "/"])
def test_unauthenticated_navigation_goes_to_login_with_next(descope: DescopeServer, path: str) -> None:
    resp = get(descope, path, HTML)
    assert resp.status_code == 302, resp.text
    location = urlsplit(resp.headers["Location"])
    assert not location.scheme and not location.netloc and location.path == "/auth/login"
    assert parse_qs(location.query)["next"] == [path]
    # The login page hands the same path back after sign-in.
    page = get(descope, resp.headers["Location"], HTML)
    assert page.status_code == 200
    assert login_page_next(page.text) == path
    assert "Please sign in to continue." in page.text

    api = get(descope, path, {"Accept": "application/json"})
    assert api.status_code == 401
    assert "Location" not in api.headers


def test_encoded_slashes_in_an_unauthenticated_path_stay_on_site(descope: DescopeServer) -> None:
    # The server sees /%2F%2Fevil.com decoded (///evil.com); whatever it makes of it, the way back
    # after sign-in must stay on this site.
    resp = get(descope, "/%2F%2Fevil.com", HTML)
    assert resp.status_code == 302, resp.text
    assert_same_site_path(resp.headers["Location"], descope.url)
    page = get(descope, resp.headers["Location"], HTML)
    assert page.status_code == 200
    assert_same_site_path(login_page_next(page.text), descope.url)


# -- 7. CSRF -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api", "/ajax-api"])
def test_cookie_post_needs_same_origin(descope: DescopeServer, prefix: str) -> None:
    ds, dsr = sign_in(descope, "admin")
    jar = cookie_header(ds, dsr)
    create = prefix + CREATE.removeprefix("/api")

    def post(name: str, extra: dict[str, str]) -> requests.Response:
        return requests.post(
            descope.url + create, json={"name": name}, headers={**jar, **extra}, timeout=TIMEOUT
        )

    refused = {
        "cross Origin": {"Origin": "https://evil.example"},
        "null Origin": {"Origin": "null"},
        "lookalike Origin": {"Origin": descope.url + ".evil.example"},
        "userinfo Origin": {"Origin": "http://evil.example@" + urlsplit(descope.url).netloc},
        "cross Referer": {"Referer": "https://evil.example/page"},
        "no Origin or Referer": {},
    }
    for case, extra in refused.items():
        name = f"csrf-{uuid.uuid4().hex}"
        resp = post(name, extra)
        assert resp.status_code == 403, (case, resp.text)
        assert GATE_CSRF_MESSAGE in resp.json()["message"], (case, resp.text)
        assert not experiment_exists(descope, name), case

    for case, extra in {
        "same Origin": origin(descope),
        "same Referer": {"Referer": descope.url + "/"},
    }.items():
        name = f"csrf-ok-{uuid.uuid4().hex}"
        resp = post(name, extra)
        assert resp.status_code == 200, (case, resp.text)
        assert experiment_exists(descope, name), case


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_state_changing_methods_need_same_origin(descope: DescopeServer, method: str) -> None:
    ds, dsr = sign_in(descope, "admin")
    resp = requests.request(
        method,
        descope.url + "/api/2.0/mlflow/registered-models/update",
        headers={**cookie_header(ds, dsr), "Origin": "https://evil.example"},
        json={"name": "x"},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 403, resp.text
    assert GATE_CSRF_MESSAGE in resp.json()["message"]


def test_bearer_post_needs_no_origin(descope: DescopeServer) -> None:
    name = f"bearer-{uuid.uuid4().hex}"
    resp = descope.api("POST", CREATE, "editor", json={"name": name})
    assert resp.status_code == 200, resp.text
    assert experiment_exists(descope, name)


def test_cross_site_post_does_not_spend_the_refresh_token(short: DescopeServer) -> None:
    emu = short.emulator
    tokens = emu.login("editor")
    jar = cookie_header(expired_session(emu, "editor"), tokens["refreshJwt"])
    name = f"csrf-stale-{uuid.uuid4().hex}"
    before = emu.stats()
    resp = requests.post(
        short.url + CREATE,
        json={"name": name},
        headers={**jar, "Origin": "https://evil.example"},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 403, resp.text
    assert "Set-Cookie" not in resp.headers
    assert emu.stats()["refresh"] == before["refresh"]
    assert not experiment_exists(short, name)
    # The same pair from the server's own page renews and creates.
    ok = requests.post(
        short.url + CREATE, json={"name": name}, headers={**jar, **origin(short)}, timeout=TIMEOUT
    )
    assert ok.status_code == 200, ok.text
    assert emu.stats()["refresh"] == before["refresh"] + 1
    assert "DS" in set_cookies(ok)
    assert experiment_exists(short, name)


# -- 8. identity headers from clients are ignored ----------------------------------------------------

SPOOFED = {
    "X-Descope-Roles": "admin",
    "X-Descope-Username": "admin",
    "X-Descope-User-Id": "U2demoAdmin00000000000000000",
    "X-Descope-Email": "admin@example.com",
    "X-Descope-Permission": "MANAGE",
    "X-Descope-Is-Admin": "true",
}


def test_spoofed_identity_headers_are_ignored(descope: DescopeServer) -> None:
    ds, dsr = sign_in(descope, "reader")
    credentials = {
        "bearer": descope.bearer("reader"),
        "cookie": {**cookie_header(ds, dsr), **origin(descope)},
    }
    for kind, creds in credentials.items():
        name = f"spoof-{uuid.uuid4().hex}"
        resp = requests.post(
            descope.url + CREATE, json={"name": name}, headers={**creds, **SPOOFED}, timeout=TIMEOUT
        )
        assert resp.status_code == 403, (kind, resp.text)
        assert not experiment_exists(descope, name), kind

        user = requests.get(descope.url + "/auth/user", headers={**creds, **SPOOFED}, timeout=TIMEOUT)
        assert user.status_code == 200, (kind, user.text)
        body = user.json()
        assert body["email"] == "reader@example.com", (kind, body)
        assert body["is_admin"] is False and body["roles"] == ["reader"], (kind, body)

    anonymous = requests.get(descope.url + "/auth/user", headers=SPOOFED, timeout=TIMEOUT)
    assert anonymous.status_code == 401
    search = requests.get(descope.url + SEARCH, headers=SPOOFED, timeout=TIMEOUT)
    assert search.status_code == 401


def test_a_foreign_page_cannot_sign_users_out(descope: DescopeServer) -> None:
    emu = descope.emulator
    ds, dsr = sign_in(descope, "reader")
    before = emu.stats()["logout"]
    resp = requests.post(
        descope.url + "/auth/logout",
        headers={**cookie_header(ds, dsr), "Origin": "https://evil.example"},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    assert resp.status_code == 403
    assert "Set-Cookie" not in resp.headers
    assert emu.stats()["logout"] == before
    assert emulator_refresh(emu, dsr).status_code == 200, "the session still works"
