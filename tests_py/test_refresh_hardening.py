"""Hardening of the session refresh and sign-out paths, against a real `mlflow server --app-name
descope` (uvicorn, 2 workers) and the offline Descope emulator, over real HTTP:

* a forged, tampered, expired or mistyped ``DSR`` cookie is refused locally, without any call to
  Descope's refresh endpoint (it used to cost one call each, and a worker thread while Descope answered);
* signing out ends the refresh token in every worker's refresh cache at once (it used to keep renewing
  from the cache for the grace period, in whichever worker had the result);
* a cross-site ``GET /auth/logout`` (a link, a redirect, an ``<img>`` on a foreign page) no longer
  signs the user out: it gets a page asking to confirm, which POSTs;
* deeply nested JSON on ``/auth/session`` is a 400, not a 500 with a RecursionError traceback.

No assertion message ever shows a token: comparisons on tokens are reduced to booleans first.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from html import unescape
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, expect

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.emulator.keys import SigningKey
from mlflow_descope_auth.server.gate import PERSON_SESSION_ENDED
from mlflow_descope_auth.server.http import MAX_AUTH_BODY

from .browser import screenshot
from .descope_server import DescopeServer, descope_server
from .test_server_sessions import (
    SEARCH,
    TIMEOUT,
    burst,
    emulator_refresh,
    expired_session,
    make_routes,
    revoked_refresh,
    unit_request,
    wait_for_all_workers,
)

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
JSON = {"Accept": "application/json"}
CONFIRM_TEXT = "Sign out of MLflow?"
SIGNED_OUT = "/auth/login?message=logged_out"
UI_TIMEOUT_MS = 60_000
KEEP_ALIVE = 300  # seconds the server keeps an idle connection open


# -- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """Refresh tokens do not rotate (the shape of the sign-out issue: the same DSR keeps working)."""
    with Emulator() as e:
        yield e


@pytest.fixture(scope="module")
def server(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    """Two workers, both up (each has fetched the signing keys). Idle connections are kept long
    enough for the pinned connections of a test (uvicorn's default is 5 s)."""
    workdir = tmp_path_factory.mktemp("refresh-hardening")
    args = ("--workers", "2", "--uvicorn-opts", f"--timeout-keep-alive {KEEP_ALIVE}")
    with descope_server(emu, workdir, extra_args=args) as s:
        wait_for_all_workers(s)
        yield s


def jar(ds: str | None, dsr: str | None) -> dict[str, str]:
    parts = [f"{name}={value}" for name, value in (("DS", ds), ("DSR", dsr)) if value is not None]
    return {"Cookie": "; ".join(parts)}


def same_origin(server: DescopeServer) -> dict[str, str]:
    return {"Origin": server.url}


def get(server: DescopeServer, path: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(server.url + path, headers=headers, timeout=TIMEOUT, allow_redirects=False)


@dataclass
class Answer:
    """A response read off a pinned connection."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def set_cookie_headers(resp: requests.Response | Answer) -> list[str]:
    if isinstance(resp, Answer):
        return resp.headers.get_all("Set-Cookie") or []
    return list(resp.raw.headers.getlist("Set-Cookie"))


def cookies_set(resp: requests.Response | Answer) -> dict[str, tuple[str, dict[str, str]]]:
    """Set-Cookie headers by name: (value, lower-case attributes; flags map to "")."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for header in set_cookie_headers(resp):
        first, *rest = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        attrs = {k.lower(): v for k, _, v in (a.partition("=") for a in rest)}
        found[name] = (value, attrs)
    return found


def assert_cookies_cleared(resp: requests.Response | Answer, label: str) -> None:
    cookies = cookies_set(resp)
    for name in ("DS", "DSR"):
        assert name in cookies, f"{label}: {name} not cleared (Set-Cookie names: {sorted(cookies)})"
        value, attrs = cookies[name]
        emptied = value == ""
        assert emptied and attrs.get("max-age") == "0", f"{label}: {name} not cleared ({attrs})"


def sign_in(server: DescopeServer, login_id: str) -> tuple[str, str]:
    """Signs in through POST /auth/session; the (DS, DSR) the server set as cookies."""
    tokens = server.emulator.login(login_id)
    resp = requests.post(
        server.url + "/auth/session",
        json={"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"]},
        headers=same_origin(server),
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    cookies = cookies_set(resp)
    return cookies["DS"][0], cookies["DSR"][0]


def refresh_claims(emu: Emulator, login_id: str, **changes: Any) -> dict[str, Any]:
    """Claims shaped like the emulator's refresh tokens (drn DSR, its issuer), with `changes`."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": emu.user(login_id).user_id,
        "iss": emu.issuer,
        "iat": now,
        "exp": now + 3600,
        "drn": "DSR",
        "amr": ["pwd"],
        "jti": "R2" + uuid.uuid4().hex,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def tampered(token: str, **changes: Any) -> str:
    """`token` with its payload changed and its original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    new_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{new_payload}.{signature}"


def forged_refresh_tokens(emu: Emulator) -> dict[str, str]:
    """Refresh cookies that are well-shaped JWTs but must never be honoured."""
    same_kid = SigningKey.generate(emu.signing_key.alg, kid=emu.signing_key.kid)
    now = int(time.time())
    return {
        "signed with another key (the project's kid)": emu.sign(refresh_claims(emu, "editor"), key=same_kid),
        "signed with another key (unknown kid)": emu.sign(
            refresh_claims(emu, "editor"), key=SigningKey.generate(emu.signing_key.alg)
        ),
        "unsigned (alg none)": emu.sign(refresh_claims(emu, "editor"), headers={"alg": "none"}),
        "tampered (subject changed)": tampered(
            emu.login("reader")["refreshJwt"], sub=emu.user("admin").user_id
        ),
        "tampered (expiry extended)": tampered(emu.login("reader")["refreshJwt"], exp=now + 10**6),
        "expired": emu.sign(refresh_claims(emu, "editor", iat=now - 7200, exp=now - 3600)),
        "another project's issuer": emu.sign(
            refresh_claims(emu, "editor", iss=emu.base_url + "/P2someOtherProject0000000000")
        ),
        "no drn": emu.sign(refresh_claims(emu, "editor", drn=None)),
        "a session token used as DSR": emu.login("editor")["sessionJwt"],
    }


def summary(results: list[requests.Response | BaseException]) -> list[str]:
    return [repr(r) if isinstance(r, BaseException) else f"{r.status_code} {r.text[:120]}" for r in results]


def replay_burst(
    server: DescopeServer, headers: dict[str, str], count: int = 8
) -> list[requests.Response | BaseException]:
    """`count` concurrent requests, each on a new connection (the workers take them between them)."""
    sessions = [requests.Session() for _ in range(count)]
    try:
        return burst(server, sessions, SEARCH, headers)
    finally:
        for s in sessions:
            s.close()


class Pinned:
    """A keep-alive HTTP connection that never reconnects by itself, so every request on it is
    served by the worker process that accepted it (a closed connection is an error, not a silent
    move to another worker). The server keeps idle connections KEEP_ALIVE seconds."""

    def __init__(self, server: DescopeServer) -> None:
        url = urlsplit(server.url)
        self._conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=TIMEOUT)
        self._conn.connect()
        self._conn.auto_open = 0

    def request(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        self._conn.request(method, path, headers=headers)
        resp = self._conn.getresponse()
        return Answer(resp.status, resp.headers, resp.read())

    def close(self) -> None:
        self._conn.close()


def _open_concurrently(server: DescopeServer, count: int) -> list[Pinned]:
    """`count` connections opened at once, each busy with a first request (a first-seen session
    token, verified in a worker thread): while one worker is busy the other accepts some."""
    emu = server.emulator
    tokens = [emu.login("reader")["sessionJwt"] for _ in range(count)]
    barrier = threading.Barrier(count)
    opened: list[Pinned | BaseException] = [RuntimeError("not run")] * count

    def open_one(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            conn = Pinned(server)
            opened[i] = conn
            answer = conn.request("GET", SEARCH, {"Authorization": f"Bearer {tokens[i]}"})
            assert answer.status == 200, answer.text
        except BaseException as exc:  # reported below
            opened[i] = exc

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    failed = [repr(c) for c in opened if isinstance(c, BaseException)]
    assert not failed, failed
    return [c for c in opened if isinstance(c, Pinned)]


def _same_worker(server: DescopeServer, reference: Pinned, conn: Pinned) -> bool:
    """Whether `conn` is served by `reference`'s worker. A refresh token Descope refused is
    remembered (for the grace period) by the worker that asked, and by no other: after `reference`
    was refused a new revoked token, `conn` asks Descope again only on the other worker."""
    emu = server.emulator
    probe = revoked_refresh(emu, "reader")
    headers = {**jar(expired_session(emu, "reader"), probe), **JSON}
    start = emu.stats()["refresh"]
    assert reference.request("GET", SEARCH, headers).status == 401
    assert emu.stats()["refresh"] == start + 1
    assert conn.request("GET", SEARCH, headers).status == 401
    asked = emu.stats()["refresh"] - start - 1
    assert asked in (0, 1), asked
    return asked == 0


def pin_to_both_workers(
    server: DescopeServer, per_worker: int = 3, timeout: float = 180.0
) -> tuple[list[Pinned], list[Pinned]]:
    """At least `per_worker` pinned connections on each of the two workers."""
    first: list[Pinned] = []
    second: list[Pinned] = []
    deadline = time.monotonic() + timeout
    while len(first) < per_worker or len(second) < per_worker:
        assert time.monotonic() < deadline, f"connections reached the workers {len(first)}:{len(second)}"
        for conn in _open_concurrently(server, 8):
            if not first or _same_worker(server, first[0], conn):
                first.append(conn)
            else:
                second.append(conn)
    return first, second


@pytest.fixture
def pinned(server: DescopeServer) -> Iterator[tuple[list[Pinned], list[Pinned]]]:
    first, second = pin_to_both_workers(server)
    yield first, second
    for conn in first + second:
        conn.close()


# -- (a) a refresh token is checked locally before Descope is asked ----------------------------------


def test_forged_refresh_tokens_are_refused_without_calling_descope(server: DescopeServer) -> None:
    emu = server.emulator
    stale = expired_session(emu, "editor")
    forged = forged_refresh_tokens(emu)
    before = emu.stats()
    for label, dsr in forged.items():
        for ds in (stale, None):
            case = f"{label}, {'expired DS' if ds else 'no DS'}"
            api = get(server, SEARCH, {**jar(ds, dsr), **JSON})
            assert api.status_code == 401, (case, api.text)
            assert api.json()["error_code"] == "UNAUTHENTICATED", case
            assert_cookies_cleared(api, case)
            page = get(server, "/?tab=runs", {**jar(ds, dsr), **HTML})
            assert page.status_code == 302, (case, page.status_code)
            location = urlsplit(page.headers["Location"])
            assert location.path == "/auth/login" and not location.netloc, case
            assert_cookies_cleared(page, case)
    after = emu.stats()
    assert after["refresh"] == before["refresh"], (before, after)

    # The hostile review's count: ten forged cookies, ten requests, no refresh call.
    for _ in range(10):
        dsr = emu.sign(refresh_claims(emu, "admin"), key=SigningKey.generate(kid=emu.signing_key.kid))
        assert get(server, SEARCH, {**jar(stale, dsr), **JSON}).status_code == 401
    assert emu.stats()["refresh"] == before["refresh"], emu.stats()

    # A genuine refresh token next to the same expired session still renews, with one call.
    genuine = get(server, SEARCH, jar(stale, emu.login("editor")["refreshJwt"]))
    assert genuine.status_code == 200, genuine.text
    renewed = cookies_set(genuine)["DS"][0] not in ("", stale)
    assert renewed, "the session was not renewed"
    assert emu.stats()["refresh"] == before["refresh"] + 1, emu.stats()


def test_sign_out_with_a_forged_refresh_token_does_not_call_descope(server: DescopeServer) -> None:
    emu = server.emulator
    before = emu.stats()
    for label, dsr in forged_refresh_tokens(emu).items():
        resp = get(
            server, "/auth/logout", {**jar(expired_session(emu, "reader"), dsr), "Sec-Fetch-Site": "none"}
        )
        assert resp.status_code == 302 and resp.headers["Location"] == SIGNED_OUT, (label, resp.status_code)
        assert_cookies_cleared(resp, label)
    after = emu.stats()
    assert (after["logout"], after["refresh"]) == (before["logout"], before["refresh"]), (before, after)


def test_forged_burst_with_a_slow_descope_is_answered_without_waiting_on_it(server: DescopeServer) -> None:
    """45 concurrent forged cookies while Descope's refresh endpoint takes 4 s: none of them reaches
    Descope, each is refused (cookies cleared, not "try again later"), and a signed-in user is
    served alongside."""
    emu = server.emulator
    stale = expired_session(emu, "reader")
    sessions = [requests.Session() for _ in range(45)]
    for s in sessions:
        s.headers.update(jar(stale, emu.sign(refresh_claims(emu, "reader"), key=SigningKey.generate())))
        s.headers.update(JSON)
    before = emu.stats()
    emu.set_fault("delay", delay=4, routes=["refresh"], seconds=120)
    try:
        results = burst(server, sessions, SEARCH, {})
        user = server.api("GET", SEARCH, "reader")
    finally:
        emu.clear_faults()
        for s in sessions:
            s.close()
    refused = [isinstance(r, requests.Response) and r.status_code == 401 for r in results]
    assert all(refused), summary(results)
    for r in results:
        assert isinstance(r, requests.Response)
        assert_cookies_cleared(r, "forged burst")
    assert user.status_code == 200, user.text
    assert emu.stats()["refresh"] == before["refresh"], (before, emu.stats())


# -- (b) sign-out ends the refresh token in every worker ---------------------------------------------


def test_signed_out_refresh_token_stops_renewing_in_every_worker(
    server: DescopeServer, pinned: tuple[list[Pinned], list[Pinned]]
) -> None:
    """Sign in, the session expires, the browser's requests renew it (one refresh; the worker that
    refreshed keeps the result in memory, the other finds it in the shared store), the user signs out
    with that same DSR on the other worker; then the old DSR with an expired DS, replayed on both
    workers, must be refused every time, without asking Descope again. Both ways round."""
    emu = server.emulator
    first, second = pinned
    everywhere = first + second
    for round_, (refresher, signer_out) in enumerate(((first, second), (second, first))):
        dsr = emu.login("editor")["refreshJwt"]
        stale = expired_session(emu, "editor")
        before = emu.stats()
        renewal = refresher[0].request("GET", SEARCH, jar(stale, dsr))
        assert renewal.status == 200, (round_, renewal.text)
        renewed_ds = cookies_set(renewal)["DS"][0]
        # Straggling requests with the old pair, on both workers: served from the refresh cache.
        for conn in everywhere:
            straggler = conn.request("GET", SEARCH, jar(stale, dsr))
            assert straggler.status == 200, (round_, straggler.text)
        assert emu.stats()["refresh"] == before["refresh"] + 1, (round_, before, emu.stats())

        out = signer_out[0].request("POST", "/auth/logout", {**jar(renewed_ds, dsr), **same_origin(server)})
        assert out.status == 302 and out.headers["Location"] == SIGNED_OUT, (round_, out.text)
        assert_cookies_cleared(out, f"round {round_} sign-out")
        signed_out = emu.stats()
        assert signed_out["logout"] == before["logout"] + 1, (round_, before, signed_out)
        assert emulator_refresh(emu, dsr).status_code == 401, "Descope still honours the token"

        for attempt in range(3):
            for i, conn in enumerate(everywhere):
                label = f"round {round_}, replay {attempt} on {'first' if conn in first else 'second'} worker"
                replay = conn.request("GET", SEARCH, {**jar(stale, dsr), **JSON})
                assert replay.status == 401, (label, i, replay.text[:200])
                assert_cookies_cleared(replay, label)
                assert "signed out" in replay.json()["detail"], (label, replay.text)
                assert replay.json()["message"] == PERSON_SESSION_ENDED, (label, replay.text)
        fresh = replay_burst(server, {**jar(stale, dsr), **JSON})
        refused = [isinstance(r, requests.Response) and r.status_code == 401 for r in fresh]
        assert all(refused), (round_, summary(fresh))
        page = refresher[0].request("GET", "/", {**jar(stale, dsr), **HTML})
        assert page.status == 302 and page.headers["Location"].startswith("/auth/login"), round_
        # The tombstone answered: Descope was not asked to refresh the signed-out token again
        # (the emulator_refresh above is this test's own call).
        assert emu.stats()["refresh"] == signed_out["refresh"] + 1, (round_, signed_out, emu.stats())


def test_signing_out_with_a_rotated_token_ends_its_predecessors_cached_renewal(
    server: DescopeServer, pinned: tuple[list[Pinned], list[Pinned]]
) -> None:
    """With rotation, the renewal cached under the old DSR hands out the new one: signing out with
    the new DSR (what the browser holds) must stop that cached renewal too, on both workers."""
    emu = server.emulator
    first, second = pinned
    emu.state.rotate_refresh_tokens = True
    try:
        old_dsr = emu.login("reader")["refreshJwt"]
        stale = expired_session(emu, "reader")
        renewal = first[0].request("GET", SEARCH, jar(stale, old_dsr))
        assert renewal.status == 200, renewal.text
        cookies = cookies_set(renewal)
        new_ds, new_dsr = cookies["DS"][0], cookies["DSR"][0]
        rotated = new_dsr not in ("", old_dsr)
        assert rotated, "the refresh token was not rotated"
        for conn in first + second:
            assert conn.request("GET", SEARCH, jar(stale, old_dsr)).status == 200

        before = emu.stats()
        out = second[0].request("POST", "/auth/logout", {**jar(new_ds, new_dsr), **same_origin(server)})
        assert out.status == 302, out.text
        assert emu.stats()["logout"] == before["logout"] + 1

        for conn in first + second:
            label = f"replay on {'first' if conn in first else 'second'} worker"
            replay = conn.request("GET", SEARCH, {**jar(stale, old_dsr), **JSON})
            assert replay.status == 401, (label, replay.text[:200])
            assert "signed out" in replay.json()["detail"], (label, replay.text)
        assert emu.stats()["refresh"] == before["refresh"], (before, emu.stats())
    finally:
        emu.state.rotate_refresh_tokens = False


def test_sign_out_tombstone_is_private_and_temporary(server: DescopeServer) -> None:
    """The tombstone lives in the state directory, mode 0600, named by the token's SHA-256 (never the
    token), and lasts as long as the refresh token itself: a sign-out holds here even when Descope's
    logout did not go through (the token would otherwise renew again once the tombstone expired)."""
    ds, dsr = sign_in(server, "reader")
    out = requests.post(
        server.url + "/auth/logout",
        headers={**jar(ds, dsr), **same_origin(server)},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    assert out.status_code == 302, out.text
    refresh_dir = server.workdir / "state" / "refresh"
    tomb = refresh_dir / f"{hashlib.sha256(dsr.encode()).hexdigest()}.revoked"
    assert tomb.exists(), sorted(p.name for p in refresh_dir.iterdir())
    assert tomb.stat().st_mode & 0o777 == 0o600, oct(tomb.stat().st_mode)
    (expires,) = struct.unpack_from(">d", tomb.read_bytes())
    refresh_exp = json.loads(base64.urlsafe_b64decode(dsr.split(".")[1] + "=="))["exp"]
    assert abs(expires - refresh_exp) < 5, (expires, refresh_exp)
    token_on_disk = dsr.encode() in tomb.read_bytes()
    assert not token_on_disk, "the tombstone holds the refresh token itself"


# -- (c) GET /auth/logout only from this site --------------------------------------------------------

CROSS_SITE_GETS = {
    "Sec-Fetch-Site cross-site": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
    "Sec-Fetch-Site same-site (another port, same host)": {
        "Sec-Fetch-Site": "same-site",
        "Sec-Fetch-Mode": "no-cors",
    },
    "cross-site beats a same-origin Referer": {"Sec-Fetch-Site": "cross-site", "Referer": "SELF/"},
    "foreign Referer": {"Referer": "https://evil.example/page"},
    "foreign Origin": {"Origin": "https://evil.example"},
    "lookalike Referer": {"Referer": "SELF.evil.example/"},
    "no Fetch Metadata, Origin or Referer": {},
}


def _headers(server: DescopeServer, extra: dict[str, str]) -> dict[str, str]:
    return {k: v.replace("SELF", server.url) for k, v in extra.items()}


def _confirm_form_action(html: str) -> str:
    match = re.search(r'<form method="post" action="([^"]*)">', html)
    assert match is not None, html
    return unescape(match.group(1))


@pytest.mark.parametrize("case", list(CROSS_SITE_GETS))
def test_cross_site_get_of_logout_asks_to_confirm_and_signs_nobody_out(
    server: DescopeServer, case: str
) -> None:
    emu = server.emulator
    ds, dsr = sign_in(server, "reader")
    before = emu.stats()
    resp = get(server, "/auth/logout", {**jar(ds, dsr), **HTML, **_headers(server, CROSS_SITE_GETS[case])})
    assert resp.status_code == 200, (case, resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("text/html"), case
    assert resp.headers["Cache-Control"] == "no-store", case
    assert resp.headers["X-Frame-Options"] == "DENY", case
    assert "Set-Cookie" not in resp.headers, case
    assert CONFIRM_TEXT in resp.text, case
    assert _confirm_form_action(resp.text) == "/auth/logout", case
    assert '<button type="submit"' in resp.text, case
    leaked = ds in resp.text or dsr in resp.text
    assert not leaked, case
    after = emu.stats()
    # Descope was not asked anything: no logout, no refresh.
    assert (after["logout"], after["refresh"]) == (before["logout"], before["refresh"]), (case, after)
    # Still signed in, and the refresh token still works at Descope.
    user = get(server, "/auth/user", jar(ds, dsr))
    assert user.status_code == 200, (case, user.text)
    assert user.json()["email"] == "reader@example.com", case
    assert emulator_refresh(emu, dsr).status_code == 200, case


def test_cross_site_get_of_logout_asks_first_for_any_live_session(server: DescopeServer) -> None:
    """A valid session cookie alone, or an expired one next to a good refresh token, is a session a
    foreign page must not end."""
    emu = server.emulator
    tokens = emu.login("reader")
    cases = {
        "valid DS, no DSR": jar(tokens["sessionJwt"], None),
        "expired DS, genuine DSR": jar(expired_session(emu, "reader"), tokens["refreshJwt"]),
        "genuine DSR only": jar(None, tokens["refreshJwt"]),
    }
    before = emu.stats()
    for case, cookies in cases.items():
        resp = get(server, "/auth/logout", {**cookies, **HTML, "Sec-Fetch-Site": "cross-site"})
        assert resp.status_code == 200 and CONFIRM_TEXT in resp.text, (case, resp.status_code)
        assert "Set-Cookie" not in resp.headers, case
    after = emu.stats()
    assert (after["logout"], after["refresh"]) == (before["logout"], before["refresh"]), after
    assert emulator_refresh(emu, tokens["refreshJwt"]).status_code == 200


NO_LIVE_SESSION: dict[str, Callable[[Emulator], dict[str, str]]] = {
    "no cookies": lambda emu: {},
    "garbage DS": lambda emu: jar("not.a.jwt", None),
    "expired DS, no DSR": lambda emu: jar(expired_session(emu, "reader"), None),
    "expired DS, forged DSR": lambda emu: jar(
        expired_session(emu, "reader"), emu.sign(refresh_claims(emu, "reader"), key=SigningKey.generate())
    ),
}


@pytest.mark.parametrize("case", list(NO_LIVE_SESSION))
def test_cross_site_get_of_logout_without_a_live_session_just_clears(
    server: DescopeServer, case: str
) -> None:
    """Nothing for a foreign page to end: the stale cookies go, no question asked, Descope not asked."""
    emu = server.emulator
    before = emu.stats()
    headers = {**NO_LIVE_SESSION[case](emu), **HTML, "Sec-Fetch-Site": "cross-site"}
    resp = get(server, "/auth/logout", headers)
    assert resp.status_code == 302 and resp.headers["Location"] == SIGNED_OUT, (case, resp.status_code)
    assert_cookies_cleared(resp, case)
    after = emu.stats()
    assert (after["logout"], after["refresh"]) == (before["logout"], before["refresh"]), (case, after)


OWN_GETS = {
    "Sec-Fetch-Site same-origin (the Sign out link)": {"Sec-Fetch-Site": "same-origin"},
    "Sec-Fetch-Site none (typed URL, bookmark)": {"Sec-Fetch-Site": "none"},
    "same-origin Referer, no Fetch Metadata": {"Referer": "SELF/#/experiments"},
    "same Origin, no Fetch Metadata": {"Origin": "SELF"},
}


@pytest.mark.parametrize("case", list(OWN_GETS))
def test_own_get_of_logout_signs_out(server: DescopeServer, case: str) -> None:
    emu = server.emulator
    ds, dsr = sign_in(server, "reader")
    before = emu.stats()
    resp = get(server, "/auth/logout", {**jar(ds, dsr), **HTML, **_headers(server, OWN_GETS[case])})
    assert resp.status_code == 302, (case, resp.status_code, resp.text)
    assert resp.headers["Location"] == SIGNED_OUT, case
    assert_cookies_cleared(resp, case)
    assert emu.stats()["logout"] == before["logout"] + 1, case
    assert emulator_refresh(emu, dsr).status_code == 401, case


def test_confirm_page_post_signs_out(server: DescopeServer) -> None:
    emu = server.emulator
    ds, dsr = sign_in(server, "editor")
    page = get(server, "/auth/logout", {**jar(ds, dsr), **HTML, "Sec-Fetch-Site": "cross-site"})
    assert page.status_code == 200 and CONFIRM_TEXT in page.text, page.text
    action = _confirm_form_action(page.text)

    before = emu.stats()
    # What the browser sends when the button on that page (this origin) is pressed.
    form_post = {
        **jar(ds, dsr),
        "Origin": server.url,
        "Referer": server.url + "/auth/logout",
        "Sec-Fetch-Site": "same-origin",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    resp = requests.post(server.url + action, headers=form_post, timeout=TIMEOUT, allow_redirects=False)
    assert resp.status_code == 302, resp.text
    assert resp.headers["Location"] == SIGNED_OUT
    assert_cookies_cleared(resp, "confirmed sign-out")
    assert emu.stats()["logout"] == before["logout"] + 1
    assert emulator_refresh(emu, dsr).status_code == 401

    # A foreign page's form POST is still refused, whatever it claims in Sec-Fetch-Site.
    ds2, dsr2 = sign_in(server, "editor")
    foreign = {**form_post, **jar(ds2, dsr2), "Origin": "https://evil.example", "Referer": ""}
    refused = requests.post(server.url + action, headers=foreign, timeout=TIMEOUT, allow_redirects=False)
    assert refused.status_code == 403, refused.text
    assert "Set-Cookie" not in refused.headers
    assert emulator_refresh(emu, dsr2).status_code == 200


def test_confirm_page_follows_the_static_prefix(
    client: DescopeClient, emulator: Emulator, tmp_path: Path
) -> None:
    routes = make_routes(client, tmp_path, prefix="/mlflow")
    tokens = emulator.login("reader")
    headers = {
        "Cookie": f"DS={tokens['sessionJwt']}; DSR={tokens['refreshJwt']}",
        "Sec-Fetch-Site": "cross-site",
    }
    resp = routes.dispatch(unit_request("GET", "/mlflow/auth/logout", headers=headers), None)
    assert resp.status == 200, resp.body
    html = resp.body.decode()
    assert _confirm_form_action(html) == "/mlflow/auth/logout"
    assert 'href="/mlflow/"' in html  # "Stay signed in" goes back into MLflow, under the prefix
    assert 'href="/mlflow/auth/static/mlflow.ico"' in html
    assert not any(k.lower() == "set-cookie" for k, _ in resp.headers)


# -- (c) in real Chromium: a foreign page cannot sign the user out -----------------------------------


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def foreign_site(tmp_path: Path, server: DescopeServer) -> Iterator[int]:
    """Another web site on another loopback port: a page embedding the sign-out URL as an image, and
    one linking to it. Reached as 127.0.0.1:<port> (same site as the server, other origin: Lax
    cookies go along even on the image) and as localhost:<port> (another site altogether)."""
    logout = server.url + "/auth/logout"
    (tmp_path / "img.html").write_text(
        f'<!doctype html><title>cat pictures</title><img id="cat" src="{logout}" alt="a cat">'
    )
    (tmp_path / "link.html").write_text(
        f'<!doctype html><title>news</title><a id="go" href="{logout}">Read the story</a>'
    )
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_foreign_page_cannot_sign_the_user_out_in_chromium(
    server: DescopeServer, context: BrowserContext, foreign_site: int
) -> None:
    emu = server.emulator
    page = context.new_page()
    page.goto(server.url + "/auth/login")
    page.get_by_role("button", name="Sign in as Rita Reader").click()
    page.wait_for_url(lambda url: "/auth/" not in url)

    def session_cookies() -> dict[str, str]:
        return {c["name"]: c["value"] for c in context.cookies(server.url) if c["name"] in ("DS", "DSR")}

    signed_in = session_cookies()
    assert set(signed_in) == {"DS", "DSR"}, sorted(signed_in)
    before = emu.stats()

    # 1. An <img> on a page of another origin of the same host: the request carries the cookies
    # (Sec-Fetch-Site same-site). Chromium then blocks the HTML answer for the image (ORB); cookies
    # a response sets would have been stored by then.
    with page.expect_request(server.url + "/auth/logout"):
        page.goto(f"http://127.0.0.1:{foreign_site}/img.html")
    page.wait_for_function("document.getElementById('cat').complete")
    kept = session_cookies() == signed_in
    assert kept, "the <img> changed the session cookies"
    assert emu.stats()["logout"] == before["logout"]

    # 2. A link on a page of another site, followed at the top level: the confirm page.
    page.goto(f"http://localhost:{foreign_site}/link.html")
    page.locator("#go").click()
    page.wait_for_url(server.url + "/auth/logout")
    expect(page.get_by_role("heading", name=CONFIRM_TEXT)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    screenshot(page, "10-logout-confirm")
    kept = session_cookies() == signed_in
    assert kept, "following the foreign link changed the session cookies"
    assert emu.stats()["logout"] == before["logout"]
    user = page.request.get(server.url + "/auth/user")
    assert user.status == 200 and user.json()["email"] == "reader@example.com", user.status

    # 3. The user means it: the button signs out (a same-origin POST).
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: "/auth/login" in url)
    expect(page.locator("#message")).to_have_text("You have signed out.")
    assert session_cookies() == {}
    assert emu.stats()["logout"] == before["logout"] + 1


# -- (d) malformed JSON on /auth/session -------------------------------------------------------------


def _nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


NESTED_BODIES = {
    "[ x 100000 (over the body limit)": b"[" * 100_000,
    "[ x 60000, unterminated": b"[" * 60_000,
    "[ x 5000, balanced": _nested(5_000),
    '{"a": x 8000': b'{"a":' * 8_000,
    "[ x 2000 inside an object": b'{"sessionJwt": ' + _nested(2_000) + b"}",
    "integer with 5000 digits": b'{"sessionJwt": ' + b"9" * 5_000 + b"}",
    "not UTF-8": b'{"sessionJwt": "\xff\xfe"}',
}


def test_nested_or_hostile_json_on_session_is_a_client_error(server: DescopeServer) -> None:
    log = server.workdir / "server.log"
    for case, body in NESTED_BODIES.items():
        resp = requests.post(
            server.url + "/auth/session",
            data=body,
            headers={"Content-Type": "application/json", **same_origin(server)},
            timeout=TIMEOUT,
        )
        expected = 413 if len(body) > MAX_AUTH_BODY else 400
        assert resp.status_code == expected, (case, resp.status_code, resp.text[:300])
        payload = resp.json()
        assert payload["error_code"] == "INVALID_PARAMETER_VALUE", (case, payload)
        assert "Traceback" not in resp.text and "RecursionError" not in resp.text, case
        assert "Set-Cookie" not in resp.headers, case
    deep = requests.post(
        server.url + "/auth/session",
        data=_nested(5_000),
        headers={"Content-Type": "application/json", **same_origin(server)},
        timeout=TIMEOUT,
    )
    assert deep.json()["message"] == "the body must be JSON, and not nested this deeply", deep.text
    logged = log.read_text(errors="replace")
    assert "RecursionError" not in logged, "the server logged a RecursionError"
    # And the endpoint still signs people in.
    sign_in(server, "reader")
