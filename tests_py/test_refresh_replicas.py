"""Refreshes across replicas that share nothing but PostgreSQL: two `mlflow server --app-name descope`
replicas (2 workers each) with SEPARATE state directories behind round-robin nginx, the emulator
rotating refresh tokens, one MLFLOW_FLASK_SERVER_SECRET_KEY. Black box: HTTP through nginx (or to one
replica), counts at the emulator; a browser's burst and a real Chromium page, a replica killed in the
middle of a refresh, a sign-out seen by the other replica."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Response

from mlflow_descope_auth.emulator import Emulator

from .postgres import Postgres, postgres_server
from .replicas import Cluster, cluster
from .test_server_sessions import SEARCH, TIMEOUT, burst, cookie_header, set_cookies, sign_in

# The replicas' Descope timeout: long, so that a refresh the emulator holds back outlives the steps
# of the test that kills its replica meanwhile (the delay ends the moment its sender is gone).
HTTP_TIMEOUT = 120
DELAY = 110.0
BURST = 8
API_CALLS = (
    "/ajax-api/2.0/mlflow/experiments/search?max_results=1",
    "/ajax-api/2.0/mlflow/experiments/get?experiment_id=0",
    "/ajax-api/2.0/mlflow/registered-models/search?max_results=1",
    "/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=Default",
    "/auth/user",
)


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def separate(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with (
        Emulator(rotate_refresh_tokens=True) as emu,
        cluster(
            emu,
            tmp_path_factory.mktemp("separate"),
            postgres=pg,
            workers=2,
            shared_state=False,
            DESCOPE_HTTP_TIMEOUT=str(HTTP_TIMEOUT),
        ) as c,
    ):
        yield c


@pytest.fixture(autouse=True)
def _calm_emulator(separate: Cluster) -> Iterator[None]:
    separate.emulator.clear_faults()
    separate.emulator.reset_stats()
    yield
    separate.emulator.clear_faults()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT * 1000)
    yield ctx
    ctx.close()


def refreshes(emu: Emulator) -> dict[str, int]:
    """How the refreshes the emulator saw ended: HTTP status (as text) or "dropped" -> count."""
    ended: dict[str, int] = emu.traffic()["ended"].get("refresh", {})
    return ended


def works_everywhere(c: Cluster, ds: str) -> None:
    """The session is accepted by each replica on its own (no refresh needed)."""
    for i in range(len(c.replicas)):
        resp = requests.get(c.via(i).url + SEARCH, headers=cookie_header(ds), timeout=TIMEOUT)
        assert resp.status_code == 200, (i, resp.status_code, resp.text[:200])


def renewed_pair(results: list[requests.Response | BaseException], old_dsr: str) -> tuple[str, str]:
    """All requests succeeded and every one that set cookies set the same new pair; returns it."""
    summary = [r if isinstance(r, BaseException) else f"{r.status_code} {r.text[:120]}" for r in results]
    assert all(isinstance(r, requests.Response) and r.status_code == 200 for r in results), summary
    pairs = set()
    for r in results:
        assert isinstance(r, requests.Response)
        cookies = set_cookies(r)
        if cookies:
            pairs.add((cookies["DS"].value, cookies["DSR"].value))
    assert len(pairs) == 1, pairs
    ds, dsr = pairs.pop()
    assert dsr not in ("", old_dsr)
    return ds, dsr


def get_with_refresh_token(url: str, dsr: str) -> Callable[[], requests.Response]:
    """A browser's request whose session cookie is gone: only DSR."""
    return lambda: requests.get(
        url + SEARCH, headers=cookie_header(None, dsr), timeout=TIMEOUT + HTTP_TIMEOUT
    )


def test_a_burst_through_nginx_refreshes_once_and_nobody_is_signed_out(separate: Cluster) -> None:
    """Several renewals in a row: each time a burst of requests with only the refresh token goes
    through round-robin nginx to both replicas (and both workers of each): every request succeeds,
    all of them set the same renewed pair, Descope sees one refresh, and the new session works on
    both replicas."""
    emu, server = separate.emulator, separate.via()
    _, dsr = sign_in(server, "reader")
    for renewal in range(3):
        before = emu.stats()["refresh"]
        sessions = [requests.Session() for _ in range(BURST)]
        try:
            results = burst(server, sessions, SEARCH, cookie_header(None, dsr))
        finally:
            for s in sessions:
                s.close()
        old, (ds, dsr) = dsr, renewed_pair(results, dsr)
        assert emu.stats()["refresh"] == before + 1, renewal
        assert refreshes(emu) == {"200": renewal + 1}
        works_everywhere(separate, ds)
        assert ds and old != dsr
        assert_results_are_sealed(separate.auth_db_uri, [old, ds, dsr])


def assert_results_are_sealed(auth_db_uri: str, tokens: list[str]) -> None:
    """What the replicas shared in the auth DB: one row per refreshed token, keyed by its digest,
    holding neither that token nor the session and refresh token it renewed to (nor any piece of
    them long enough to matter)."""
    import hashlib

    import sqlalchemy

    engine = sqlalchemy.create_engine(auth_db_uri)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT key, sealed FROM descope_auth_refresh_results")).all()
    finally:
        engine.dispose()
    assert hashlib.sha256(tokens[0].encode()).hexdigest() in {key for key, _ in rows}
    for key, sealed in rows:
        blob = bytes(sealed)
        for token in tokens:
            for piece in (token, *token.split(".")):
                assert piece.encode() not in blob, f"row {key[:8]}... holds a token in the clear"


def test_chromium_loading_the_ui_with_only_a_refresh_token_stays_signed_in(
    separate: Cluster, context: BrowserContext
) -> None:
    """Real Chromium, through nginx: the MLflow UI loaded with only the refresh cookie, then the page's
    session cookie dropped again and parallel API calls fired from the page: never a 401 or the login
    page, one refresh per refresh token at Descope, one renewed refresh token for every response."""
    emu, base = separate.emulator, separate.url
    _, dsr = sign_in(separate.via(), "reader")
    context.add_cookies([{"name": "DSR", "value": dsr, "url": base}])
    page = context.new_page()
    seen: list[Response] = []
    page.on("response", lambda r: seen.append(r) if r.url.startswith(base) else None)

    page.goto(base + "/", wait_until="networkidle")
    assert "/auth/login" not in page.url, page.url
    assert refreshes(emu) == {"200": 1}

    context.clear_cookies(name="DS")
    statuses = page.evaluate(
        """async (paths) => {
            const answers = await Promise.all(paths.map((p) => fetch(p, {credentials: "same-origin"})));
            return answers.map((a) => a.status);
        }""",
        [*API_CALLS, *API_CALLS],
    )
    assert statuses == [200] * (2 * len(API_CALLS)), statuses
    assert refreshes(emu) == {"200": 2}

    refused = [(r.url, r.status) for r in seen if r.status == 401 or "/auth/login" in r.url]
    assert refused == []
    renewed = {
        cookie.split(";", 1)[0].removeprefix("DSR=")
        for r in seen
        for h in r.headers_array()
        if h["name"].lower() == "set-cookie"
        for cookie in h["value"].split("\n")
        if cookie.startswith("DSR=")
    }
    jar = {c["name"]: c["value"] for c in context.cookies(base)}
    assert len(renewed) == 2, renewed  # one renewal on the page load, one for the parallel calls
    assert jar["DSR"] in renewed and dsr not in renewed
    works_everywhere(separate, jar["DS"])


def auth_db_lock_waits(c: Cluster) -> int:
    """Sessions waiting for a lock in the auth DB right now."""
    conn = c.postgres.connect(c.auth_db_uri.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def wait_for(condition: Callable[[], bool], what: str, seconds: float = TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def test_a_replica_killed_in_the_middle_of_a_refresh_signs_nobody_out(separate: Cluster) -> None:
    """Replica 0 starts a refresh that Descope is slow to answer; requests with the same refresh
    token reach replica 1 meanwhile and wait for it (Descope sees no second refresh); replica 0 is
    killed (SIGKILL): replica 1 takes over once PostgreSQL releases the dead replica's lock, its
    requests succeed, and the browser's request that replica 0 never answered succeeds when retried
    through nginx. Descope: the dead replica's refresh dropped, exactly one refresh succeeded."""
    emu = separate.emulator
    holder_replica, other = separate.replicas[0], separate.via(1)
    _, dsr = sign_in(separate.via(), "reader")
    emu.set_fault("delay", delay=DELAY, routes=["refresh"])
    holder = in_parallel_later([get_with_refresh_token(holder_replica.url, dsr)])
    try:
        wait_for(lambda: emu.traffic()["inFlight"].get("refresh") == 1, "replica 0's refresh at Descope")
        waiting = in_parallel_later([get_with_refresh_token(other.url, dsr) for _ in range(4)])
        wait_for(
            lambda: auth_db_lock_waits(separate) >= 1 or emu.traffic()["inFlight"].get("refresh", 0) > 1,
            "replica 1 waiting for replica 0's refresh (or refreshing on its own)",
        )
        in_flight = emu.traffic()["inFlight"].get("refresh")
        assert in_flight == 1, "replica 1 asked Descope too, while replica 0's refresh was in flight"
        holder_replica.kill()
        emu.clear_faults()
        results = waiting.results()
        ds, new_dsr = renewed_pair(results, dsr)
        # The browser's request that died with replica 0, sent again: through nginx, to replica 1.
        lost = holder.results()
        assert isinstance(lost[0], requests.ConnectionError), lost
        retried = get_with_refresh_token(separate.url, dsr)()
        assert renewed_pair([retried], dsr) == (ds, new_dsr)
        assert refreshes(emu) == {"dropped": 1, "200": 1}
        resp = requests.get(other.url + SEARCH, headers=cookie_header(ds, new_dsr), timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
    finally:
        emu.clear_faults()
        if not holder_replica.alive():
            holder_replica.start()


def test_a_sign_out_on_one_replica_ends_the_refresh_token_on_the_other_at_once(separate: Cluster) -> None:
    """Replica 1 renewed a session (and remembers that result for a short while); the user signs out
    on replica 0: replica 1 refuses the refresh token at once, the old one and the one it rotated
    into, without asking Descope."""
    emu = separate.emulator
    one, zero = separate.via(1), separate.via(0)
    _, dsr = sign_in(zero, "reader")
    ds2, dsr2 = renewed_pair([get_with_refresh_token(one.url, dsr)()], dsr)
    signed_out = requests.post(
        zero.url + "/auth/logout",
        headers={**cookie_header(ds2, dsr2), "Origin": zero.url},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    assert signed_out.status_code == 302, signed_out.text
    assert emu.stats()["logout"] == 1
    for token in (dsr, dsr2):
        for _ in range(4):  # both workers of replica 1
            resp = get_with_refresh_token(one.url, token)()
            assert resp.status_code == 401, (resp.status_code, resp.text[:200])


class Later:
    def __init__(self, calls: list[Callable[[], requests.Response]]) -> None:
        self._results: list[requests.Response | BaseException] = [RuntimeError("not run")] * len(calls)
        self._threads = [
            threading.Thread(target=self._run, args=(c, i), daemon=True) for i, c in enumerate(calls)
        ]
        for t in self._threads:
            t.start()

    def _run(self, call: Callable[[], requests.Response], i: int) -> None:
        try:
            self._results[i] = call()
        except BaseException as exc:  # reported by the caller's assertions
            self._results[i] = exc

    def results(self) -> list[requests.Response | BaseException]:
        for t in self._threads:
            t.join()
        return self._results


def in_parallel_later(calls: list[Callable[[], requests.Response]]) -> Later:
    """Starts the calls, each on its own thread; `results()` waits for them."""
    return Later(calls)
