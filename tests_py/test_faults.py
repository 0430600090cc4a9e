"""Descope failing under a running `mlflow server --app-name descope`: outages after and before start,
a Descope slower than the timeout, key rotation. Real server subprocesses; faults are the emulator's
switches (an outage really closes its socket). No timing thresholds: a request that waited for a
slow Descope would have succeeded, so "refused, with the timeout's error" is the check."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.emulator.faults import MAX_DELAY_SECONDS

from .descope_server import DescopeServer, descope_server
from .test_server_sessions import (
    HTML,
    SEARCH,
    TIMEOUT,
    WORKERS,
    burst,
    cookie_header,
    emulator_refresh,
    expired_pair,
    get,
    set_cookies,
    wait_for_all_workers,
)

SHORT_TTL = 5
HTTP_TIMEOUT = 1  # DESCOPE_HTTP_TIMEOUT of the servers here
DELAY = 30.0  # a slow Descope: far longer than the timeout
API = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    """Short sessions, rotating refresh tokens, a one-second Descope timeout; all workers up."""
    with (
        Emulator(session_ttl=SHORT_TTL, rotate_refresh_tokens=True) as emu,
        descope_server(
            emu,
            tmp_path_factory.mktemp("faulty"),
            DESCOPE_JWT_LEEWAY="0",
            DESCOPE_HTTP_TIMEOUT=str(HTTP_TIMEOUT),
        ) as server,
    ):
        wait_for_all_workers(server)
        try:
            yield server
        finally:
            emu.clear_faults()


def all_ok(results: list[requests.Response | BaseException]) -> bool:
    return all(isinstance(r, requests.Response) and r.status_code == 200 for r in results)


def summary(results: list[requests.Response | BaseException]) -> list[str]:
    return [repr(r) if isinstance(r, BaseException) else f"{r.status_code} {r.text[:120]}" for r in results]


def bearer_burst(server: DescopeServer, token: str, n: int = 6) -> list[requests.Response | BaseException]:
    """The same Bearer request on `n` fresh connections at once (spread over the workers)."""
    sessions = [requests.Session() for _ in range(n)]
    try:
        return burst(server, sessions, SEARCH, {"Authorization": f"Bearer {token}"})
    finally:
        for s in sessions:
            s.close()


def assert_unrenewable_but_kept(server: DescopeServer, ds: str, dsr: str) -> None:
    """Descope cannot renew the session: API 401, a page load goes to the login page saying why; the
    cookies are kept (the refresh token is still good once Descope is back). Never a 5xx."""
    api = get(server, SEARCH, {**cookie_header(ds, dsr), **API})
    assert api.status_code == 401, api.text
    assert api.json()["error_code"] == "UNAUTHENTICATED"
    assert "cannot be renewed right now" in api.json()["message"]
    assert set_cookies(api) == {}
    page = get(server, "/#/experiments", {**cookie_header(ds, dsr), **HTML})
    assert page.status_code == 302, page.text
    location = urlsplit(page.headers["Location"])
    assert location.path == "/auth/login"
    assert parse_qs(location.query)["message"] == ["unavailable"]
    assert set_cookies(page) == {}
    login = get(server, page.headers["Location"], HTML)
    assert "Descope could not be reached" in login.text


def test_outage_after_start_cached_keys_keep_sessions_working(faulty: DescopeServer) -> None:
    emu = faulty.emulator
    seen = emu.login("reader")["sessionJwt"]
    assert all_ok(bearer_burst(faulty, seen))
    ds, dsr = expired_pair(emu, "editor")
    emu.set_fault("outage")
    try:
        # Validated before, and never seen before (signed with a key the workers hold): both served.
        assert all_ok(results := bearer_burst(faulty, seen)), summary(results)
        fresh = emu.login("reader")["sessionJwt"]
        assert all_ok(results := bearer_burst(faulty, fresh)), summary(results)
        health = get(faulty, "/auth/health", API)
        assert health.status_code == 503 and health.json()["descope_reachable"] is False, health.text

        assert_unrenewable_but_kept(faulty, ds, dsr)
    finally:
        emu.clear_faults()
    # Descope is back: the very same cookies renew (after the few seconds a failure is remembered).
    deadline = time.monotonic() + 60
    while (resp := get(faulty, SEARCH, cookie_header(ds, dsr))).status_code != 200:
        assert resp.status_code == 401, resp.text
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.5)
    assert set(set_cookies(resp)) == {"DS", "DSR"}


def test_slow_descope_is_cut_off_by_the_timeout_and_does_not_starve_workers(faulty: DescopeServer) -> None:
    """Descope answers after DELAY seconds, the server waits at most DESCOPE_HTTP_TIMEOUT per call:
    renewals fail with 401 instead of waiting, a burst of one browser's requests asks Descope at
    most once per worker, and sessions with cached keys are served throughout."""
    emu = faulty.emulator
    stale = [expired_pair(emu, "reader") for _ in range(6)]
    shared_ds, shared_dsr = expired_pair(emu, "editor")

    emu.set_fault("delay", delay=DELAY, routes=["keys", "refresh"])
    try:
        before = emu.stats()
        renewals: list[tuple[float, requests.Response | BaseException]] = []
        cached_results: list[requests.Response | BaseException] = []

        def renew(ds: str, dsr: str) -> None:
            start = time.monotonic()
            try:
                resp: requests.Response | BaseException = get(
                    faulty, SEARCH, {**cookie_header(ds, dsr), **API}
                )
            except requests.RequestException as exc:
                resp = exc
            renewals.append((time.monotonic() - start, resp))

        def keep_reading() -> None:
            # Sessions live SHORT_TTL seconds: new ones, all signed with the key the workers hold.
            for _ in range(5):
                cached_results.extend(bearer_burst(faulty, emu.login("reader")["sessionJwt"], 4))

        threads = [threading.Thread(target=renew, args=pair) for pair in stale]
        threads += [threading.Thread(target=renew, args=(shared_ds, shared_dsr)) for _ in range(6)]
        threads.append(threading.Thread(target=keep_reading))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        after = emu.stats()
    finally:
        emu.clear_faults()

    assert all_ok(cached_results), summary(cached_results)
    assert len(renewals) == len(stale) + 6
    for elapsed, resp in renewals:
        assert isinstance(resp, requests.Response), resp
        assert resp.status_code == 401, resp.text  # had the server waited for Descope, this would be 200
        assert elapsed < DELAY, elapsed
    # Different refresh tokens: one Descope call each. The shared one: at most one per worker.
    assert len(stale) < after["refresh"] - before["refresh"] <= len(stale) + WORKERS, (before, after)


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    """A one-worker server started while Descope is down (the outage lasts until a test clears it)."""
    with Emulator() as emu:
        emu.set_fault("outage")
        try:
            # No pause between key refetches for unknown key ids (default 10 s), so that a rotation
            # right after the start-up fetch is seen at once.
            with descope_server(
                emu,
                tmp_path_factory.mktemp("cold"),
                extra_args=("--workers", "1"),
                DESCOPE_KEY_REFETCH_INTERVAL="0",
            ) as server:
                yield server
        finally:
            emu.clear_faults()


def wait_until_served(server: DescopeServer, token: str, while_status: int) -> None:
    """Descope is back: the server serves `token` again by itself (answering `while_status` until then)."""
    deadline = time.monotonic() + 60
    while (
        resp := server.api("GET", SEARCH, headers={"Authorization": f"Bearer {token}"})
    ).status_code != 200:
        assert resp.status_code == while_status, resp.text
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.5)


def test_descope_unreachable_at_start_then_back(cold: DescopeServer) -> None:
    """The server started while Descope was down: protected routes answer 503 with a clear message
    while it has no keys, and it recovers by itself once Descope is back."""
    emu = cold.emulator
    token = emu.login("reader")["sessionJwt"]
    down = cold.api("GET", SEARCH, headers={"Authorization": f"Bearer {token}"})
    assert down.status_code == 503, down.text
    assert down.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "cannot verify the session right now" in down.json()["message"]
    assert down.headers["Retry-After"] == "5"
    assert token not in down.text
    # A person at a browser gets the login page saying Descope cannot be reached (with Try again).
    page = get(cold, "/", {**cookie_header(token), **HTML})
    assert page.status_code == 302, page.text
    assert page.headers["Location"] == "/auth/login?next=/&message=unavailable"
    assert cold.api("GET", "/auth/health").status_code == 503
    assert cold.api("GET", "/health").status_code == 200

    emu.clear_faults()
    wait_until_served(cold, token, while_status=503)
    # /auth/health asks Descope at most every few seconds: it turns 200 by itself too.
    deadline = time.monotonic() + 60
    while (health := cold.api("GET", "/auth/health")).status_code != 200:
        assert health.status_code == 503 and time.monotonic() < deadline, health.text
        time.sleep(0.5)


def test_key_rotation(cold: DescopeServer) -> None:
    """New tokens signed with a new key are accepted after one key refetch; tokens signed with a key
    Descope no longer publishes are refused, even ones validated (and cached) before."""
    emu = cold.emulator
    emu.clear_faults()  # when run on its own

    def status(token: str) -> int:
        return cold.api("GET", SEARCH, headers={"Authorization": f"Bearer {token}"}).status_code

    old = emu.login("reader")["sessionJwt"]
    wait_until_served(cold, old, while_status=503)
    fetched = emu.stats()["keys"]

    emu.rotate_keys(keep_old=True)
    new = emu.login("reader")["sessionJwt"]
    assert status(new) == 200
    assert emu.stats()["keys"] == fetched + 1
    assert status(old) == 200  # the old key is still published
    assert status(new) == 200 and emu.stats()["keys"] == fetched + 1  # no more fetches

    emu.rotate_keys(keep_old=False)
    newest = emu.login("reader")["sessionJwt"]
    assert status(newest) == 200
    assert emu.stats()["keys"] == fetched + 2
    refused = cold.api("GET", SEARCH, headers={"Authorization": f"Bearer {old}"})
    assert refused.status_code == 401, refused.text
    assert (
        "publish" in refused.json()["message"]
    )  # "... which Descope no longer publishes / does not publish"
    assert status(new) == 401
    assert status(newest) == 200


def test_a_delayed_request_whose_sender_vanished_is_never_processed() -> None:
    """The delay fault is a stall in the network before Descope: a refresh whose client disconnects
    meanwhile (a replica killed in the middle of a refresh) is dropped unprocessed, so its rotating
    refresh token stays unused; a client that waits gets its answer after the delay."""
    with Emulator(rotate_refresh_tokens=True) as emu:
        refresh_jwt = emu.login("reader")["refreshJwt"]
        emu.set_fault("delay", delay=MAX_DELAY_SECONDS, routes=["refresh"])
        request = (
            f"POST /v1/auth/refresh HTTP/1.1\r\nHost: {urlsplit(emu.base_url).netloc}\r\n"
            f"Authorization: Bearer {emu.project_id}:{refresh_jwt}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )
        with socket.create_connection((emu.config.host, emu.port)) as sender:
            sender.sendall(request.encode())
            wait_for(lambda: emu.traffic()["inFlight"].get("refresh") == 1, "the refresh in flight")
        wait_for(lambda: emu.traffic()["ended"].get("refresh") == {"dropped": 1}, "the refresh dropped")
        assert emu.traffic() == requests.get(f"{emu.base_url}/emulator/traffic", timeout=TIMEOUT).json()
        emu.set_fault("delay", delay=0.1, routes=["refresh"])
        resp = emulator_refresh(emu, refresh_jwt)
        assert resp.status_code == 200, resp.text  # the token was never used
        assert resp.json()["refreshJwt"] != refresh_jwt
        assert emu.traffic() == {"inFlight": {}, "ended": {"refresh": {"dropped": 1, "200": 1}}}
        assert emu.stats()["refresh"] == 2
        emu.reset_stats()
        assert emu.traffic() == {"inFlight": {}, "ended": {}}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)
