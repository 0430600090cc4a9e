"""The multi-replica deployment: two `mlflow server --app-name descope` replicas behind nginx
(round-robin), sharing a PostgreSQL backend store and auth DB, artifacts and the state directory on a
shared folder. Real PostgreSQL, real nginx, real server processes; the emulator plays Descope."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.bootstrap import BOOTSTRAP_ADMIN

from .postgres import Postgres, postgres_server
from .replicas import Cluster, cluster
from .test_server_sessions import SEARCH, burst, cookie_header, set_cookies, sign_in, wait_until_expired

SHORT_TTL = 5
TIMEOUT = 60
CREATE_EXPERIMENT = "/api/2.0/mlflow/experiments/create"
CREATE_RUN = "/api/2.0/mlflow/runs/create"
LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
METRIC_HISTORY = "/api/2.0/mlflow/metrics/get-history"
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def shared(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The documented topology; sessions live SHORT_TTL seconds and refresh tokens rotate."""
    with (
        Emulator(session_ttl=SHORT_TTL, rotate_refresh_tokens=True) as emu,
        cluster(
            emu, tmp_path_factory.mktemp("replicas"), postgres=pg, workers=1, DESCOPE_JWT_LEEWAY="0"
        ) as c,
    ):
        yield c


def bearer(emu: Emulator, login_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.login(login_id)['sessionJwt']}"}


def call(
    url: str, method: str, path: str, emu: Emulator, login_id: str, **kwargs: object
) -> requests.Response:
    return requests.request(method, url + path, headers=bearer(emu, login_id), timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


def username(url: str, emu: Emulator, login_id: str) -> str:
    """The MLflow username the server gives a Descope user (the token's `sub`)."""
    resp = call(url, "GET", "/auth/user", emu, login_id)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["username"])


def create_experiment(url: str, emu: Emulator, login_id: str) -> str:
    resp = call(url, "POST", CREATE_EXPERIMENT, emu, login_id, json={"name": f"exp-{uuid.uuid4().hex[:10]}"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["experiment_id"])


def create_run(url: str, emu: Emulator, login_id: str, experiment_id: str) -> requests.Response:
    return call(url, "POST", CREATE_RUN, emu, login_id, json={"experiment_id": experiment_id})


def test_a_session_from_one_replica_works_on_the_other(shared: Cluster) -> None:
    a, b = shared.via(0), shared.via(1)
    ds, dsr = sign_in(a, "editor")
    for server in (a, b):
        resp = requests.get(server.url + "/auth/user", headers=cookie_header(ds, dsr), timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        assert resp.json()["email"] == "editor@example.com"


def test_artifacts_written_through_one_replica_are_read_through_the_other(shared: Cluster) -> None:
    emu = shared.emulator
    experiment = create_experiment(shared.replicas[0].url, emu, "editor")
    run = create_run(shared.replicas[0].url, emu, "editor", experiment)
    assert run.status_code == 200, run.text
    artifact_uri = run.json()["run"]["info"]["artifact_uri"]
    path = artifact_uri.split("mlflow-artifacts:/", 1)[1] + "/notes.txt"
    put = requests.put(
        f"{shared.replicas[0].url}/api/2.0/mlflow-artifacts/artifacts/{path}",
        data=b"written on replica 0",
        headers=bearer(emu, "editor"),
        timeout=TIMEOUT,
    )
    assert put.status_code == 200, put.text
    got = requests.get(
        f"{shared.replicas[1].url}/api/2.0/mlflow-artifacts/artifacts/{path}",
        headers=bearer(emu, "editor"),
        timeout=TIMEOUT,
    )
    assert got.status_code == 200, got.text
    assert got.content == b"written on replica 0"


def test_a_grant_on_one_replica_applies_on_the_other_at_once(shared: Cluster) -> None:
    emu = shared.emulator
    one, two = shared.replicas[0].url, shared.replicas[1].url
    experiment = create_experiment(one, emu, "editor")
    assert create_run(two, emu, "reader", experiment).status_code == 403

    grant = {
        "username": username(two, emu, "reader"),
        "resource_type": "experiment",
        "resource_id": experiment,
        "permission": "EDIT",
    }
    resp = call(one, "POST", GRANT, emu, "admin", json=grant)
    assert resp.status_code == 200, resp.text
    ran = create_run(two, emu, "reader", experiment)
    assert ran.status_code == 200, ran.text

    revoke = {k: grant[k] for k in ("username", "resource_type", "resource_id")}
    resp = call(two, "POST", REVOKE, emu, "admin", json=revoke)
    assert resp.status_code == 200, resp.text
    assert create_run(one, emu, "reader", experiment).status_code == 403


def test_a_demoted_admins_old_token_gives_no_admin_rights_on_the_other_replica(shared: Cluster) -> None:
    """Admin status comes from the token and the auth DB's current state, never from what one
    process last wrote: an old admin token sent once to replica 0 (the user was admin when it was
    issued) must not leave the user admin for replica 1, which already saw the demoted session."""
    emu = shared.emulator
    one, two = shared.replicas[0].url, shared.replicas[1].url
    experiment = create_experiment(one, emu, "admin")
    now = int(time.time())
    # Signed by the emulator's real key, as Descope signed it while the editor still had the role.
    old_admin = {
        "Authorization": "Bearer "
        + emu.sign({**emu.session_claims("editor"), "roles": ["admin"], "iat": now, "exp": now + 120})
    }
    me = username(two, emu, "editor")  # replica 1 has now seen the current, non-admin session
    # Replica 0 provisions the user as the old token says: admin, in the shared auth DB.
    assert requests.get(f"{one}/auth/user", headers=old_admin, timeout=TIMEOUT).json()["is_admin"] is True

    grant = {"username": me, "resource_type": "experiment", "resource_id": experiment, "permission": "MANAGE"}
    resp = call(two, "POST", GRANT, emu, "editor", json=grant)
    assert resp.status_code == 403, resp.text
    resp = call(two, "GET", "/auth/user", emu, "editor")
    assert resp.json()["is_admin"] is False


def test_rotating_refresh_tokens_behind_round_robin_keep_the_browser_signed_in(shared: Cluster) -> None:
    """A browser's bursts of requests through nginx (round-robin over both replicas) every time its
    session has expired: each burst refreshes its one rotating refresh token exactly once across the
    replicas (shared state directory), and every request succeeds, for several renewals in a row."""
    emu = shared.emulator
    server = shared.via()
    ds, dsr = sign_in(server, "reader")
    for _renewal in range(3):
        wait_until_expired(ds)
        before = emu.stats()["refresh"]
        sessions = [requests.Session() for _ in range(6)]
        try:
            results = burst(server, sessions, SEARCH, cookie_header(ds, dsr))
        finally:
            for s in sessions:
                s.close()
        summary = [r if isinstance(r, BaseException) else f"{r.status_code} {r.text[:120]}" for r in results]
        assert all(isinstance(r, requests.Response) and r.status_code == 200 for r in results), summary
        assert emu.stats()["refresh"] == before + 1
        renewed = {
            (c["DS"].value, c["DSR"].value)
            for c in (set_cookies(r) for r in results if isinstance(r, requests.Response))
        }
        assert len(renewed) == 1, renewed  # every replica handed out the same renewed pair
        ds, dsr = renewed.pop()


def test_replicas_starting_together_on_a_fresh_auth_db(pg: Postgres, tmp_path: Path) -> None:
    """Two replicas on separate hosts (nothing shared but the databases) start at the same moment on
    an empty auth DB: both come up, the DB holds one bootstrap admin, and both serve requests."""
    with Emulator() as emu, cluster(emu, tmp_path, postgres=pg, workers=2, shared_state=False) as c:
        for replica in c.replicas:
            resp = call(replica.url, "GET", SEARCH, emu, "reader")
            assert resp.status_code == 200, resp.text
            assert "Traceback" not in replica.log_text(), replica.log_text()[-3000:]
        conn = pg.connect(c.auth_db_uri.rsplit("/", 1)[1])
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT username, is_admin FROM users ORDER BY username")
                users = cur.fetchall()
        finally:
            conn.close()
        assert (BOOTSTRAP_ADMIN, True) in users
        assert len([u for u in users if u[0] == BOOTSTRAP_ADMIN]) == 1


def test_auth_db_crash_under_load_recovers_without_restarting_mlflow(shared: Cluster) -> None:
    """PostgreSQL (backend store and auth DB) killed with SIGKILL under load and started again:
    requests in flight get errors (5xx, never a wrong 401/403), the replicas reconnect by themselves
    (same processes), and the grant made before the crash still decides."""
    emu = shared.emulator
    experiment = create_experiment(shared.url, emu, "editor")
    reader = username(shared.url, emu, "reader")
    grant = {
        "username": reader,
        "resource_type": "experiment",
        "resource_id": experiment,
        "permission": "EDIT",
    }
    assert call(shared.url, "POST", GRANT, emu, "admin", json=grant).status_code == 200
    pids = [r.proc.pid for r in shared.replicas if r.proc is not None]
    phase = ["before"]
    outcomes: list[tuple[str, int | str]] = []
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            started = phase[0]
            try:
                # The reader may log runs there only through the grant (its own baseline is READ).
                resp = session.post(
                    shared.url + CREATE_RUN,
                    json={"experiment_id": experiment},
                    headers=bearer(emu, "reader"),
                    timeout=TIMEOUT,
                )
                status: int | str = resp.status_code
            except requests.RequestException as exc:
                status = repr(exc)
            # A request that spans a phase change belongs to neither phase (in flight at the crash).
            outcomes.append((started if phase[0] == started else "between", status))

    def count(name: str, ok: bool = True) -> int:
        return len([o for o in outcomes if o[0] == name and (o[1] == 200) == ok])

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while count("before") < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        phase[0] = "down"
        shared.postgres.kill()
        while count("down", ok=False) < 5 and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        shared.postgres.start()
        phase[0] = "recovering"
        # Recovered: twenty answers in a row are 200 (requests sent while PostgreSQL was still
        # replaying its log may fail a moment after the first success).
        while not recovered(outcomes, 20) and time.monotonic() < deadline + 120:
            time.sleep(0.05)
        phase[0] = "after"
        while count("after") < 10 and time.monotonic() < deadline + 180:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    by_phase = {
        name: [o[1] for o in outcomes if o[0] == name] for name in ("before", "down", "recovering", "after")
    }
    assert set(by_phase["before"]) == {200}, by_phase["before"]
    between = [o[1] for o in outcomes if o[0] == "between"]
    errors = [s for s in by_phase["down"] + by_phase["recovering"] + between if s != 200]
    assert errors, "the crash went unnoticed: the test did not test anything"
    assert all(isinstance(s, int) and s >= 500 for s in errors), errors
    assert set(by_phase["after"]) == {200}, by_phase["after"]
    assert [r.proc.pid for r in shared.replicas if r.proc is not None] == pids
    assert all(r.alive() for r in shared.replicas)
    # The grant survived: the reader still logs runs there, through either replica.
    for replica in shared.replicas:
        assert create_run(replica.url, emu, "reader", experiment).status_code == 200


def recovered(outcomes: list[tuple[str, int | str]], run: int) -> bool:
    tail = [o for o in outcomes if o[0] == "recovering"][-run:]
    return len(tail) == run and all(status == 200 for _, status in tail)


def test_killing_a_replica_loses_no_acknowledged_write(shared: Cluster) -> None:
    """Metrics logged through nginx while one replica is killed (SIGKILL) mid-run: every write that
    was acknowledged (200) is in the store afterwards, and writes go on through the other replica."""
    emu = shared.emulator
    experiment = create_experiment(shared.url, emu, "editor")
    run = create_run(shared.url, emu, "editor", experiment)
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    acked: list[int] = []
    failed: list[str] = []
    after_kill: list[int] = []
    killed = threading.Event()
    stop = threading.Event()

    def writer() -> None:
        step = 0
        session = requests.Session()
        while not stop.is_set():
            step += 1
            body = {"run_id": run_id, "key": "loss", "value": step / 10, "timestamp": 0, "step": step}
            try:
                resp = session.post(
                    shared.url + LOG_METRIC, json=body, headers=bearer(emu, "editor"), timeout=TIMEOUT
                )
            except requests.RequestException as exc:
                failed.append(repr(exc))
                continue
            if resp.status_code == 200:
                acked.append(step)
                if killed.is_set():
                    after_kill.append(step)
            else:
                failed.append(f"{resp.status_code} {resp.text[:100]}")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        shared.replicas[0].kill()
        killed.set()
        while len(after_kill) < 20 and time.monotonic() < deadline + 60:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert len(after_kill) >= 20, (len(acked), failed[-5:])
    history = call(
        shared.url, "GET", METRIC_HISTORY, emu, "editor", params={"run_id": run_id, "metric_key": "loss"}
    )
    assert history.status_code == 200, history.text
    stored = {m["step"] for m in history.json()["metrics"]}
    missing = sorted(set(acked) - stored)
    assert not missing, f"acknowledged but lost: {missing}"
    # Anything refused was refused cleanly by nginx or the surviving replica, never a server error
    # from the survivor: 502 is nginx reporting the dead replica.
    assert all(f.startswith(("502", "ConnectionError")) or "Connection" in f for f in failed), failed
