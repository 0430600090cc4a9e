"""The refresh stores, file and PostgreSQL, driven by real processes: the lock every process waits
for, a holder killed with SIGKILL, sign-out tombstones, expiry, bad keys, and a database that is gone.

Processes are started with "spawn" (fresh interpreters, nothing inherited but what is passed), and a
test knows that a process waits for the lock by asking the kernel (/proc/locks) or PostgreSQL
(pg_locks), never by sleeping."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import pytest

from mlflow_descope_auth.server.refresh_store import (
    FileRefreshStore,
    PostgresRefreshStore,
    RefreshStore,
    RefreshStoreError,
    open_refresh_store,
)

from .postgres import Postgres, postgres_server
from .servers import free_port
from .store_processes import (
    TTL,
    Spec,
    first_use_in_child,
    is_revoked_in_child,
    once_in_child,
    revoke_in_child,
)

SPAWN = multiprocessing.get_context("spawn")
WAIT = 60.0  # seconds a condition may take before the test gives up


def key_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass
class Setup:
    spec: Spec
    waiters: Callable[[], int]  # processes waiting for a lock of this store right now

    def open(self) -> RefreshStore:
        return self.spec.open()


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def file_lock_waiters(state_dir: Path) -> Callable[[], int]:
    def count() -> int:
        inodes = {f":{p.stat().st_ino} " for p in (state_dir / "refresh").glob("*.lock")}
        lines = Path("/proc/locks").read_text().splitlines()
        return sum(1 for line in lines if "-> FLOCK" in line and any(i in line for i in inodes))

    return count


def pg_lock_waiters(pg: Postgres, database: str) -> Callable[[], int]:
    def count() -> int:
        conn = pg.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                row = cur.fetchone()
                return int(row[0]) if row else 0
        finally:
            conn.close()

    return count


@pytest.fixture(params=["file", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    state_dir = tmp_path / "state"
    if request.param == "file":
        return Setup(Spec(f"sqlite:///{tmp_path / 'auth.db'}", str(state_dir)), file_lock_waiters(state_dir))
    pg: Postgres = request.getfixturevalue("pg")
    name = f"auth_{os.urandom(4).hex()}"
    return Setup(Spec(pg.create_database(name), str(state_dir)), pg_lock_waiters(pg, name))


@dataclass
class Child:
    proc: SpawnProcess
    out: Any

    def result(self) -> Any:
        kind, value = self.out.get(timeout=WAIT)
        self.proc.join(WAIT)
        assert kind == "ok", value
        return value


def child(target: Callable[..., None], *args: Any) -> Child:
    out = SPAWN.Queue()
    proc = SPAWN.Process(target=target, args=(*args, out), daemon=True)
    proc.start()
    return Child(proc, out)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def producers(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- both stores -------------------------------------------------------------------------------------


def test_one_process_produces_and_every_process_waiting_for_it_gets_its_blob(
    setup: Setup, tmp_path: Path
) -> None:
    key, produced = key_of("dsr-1"), tmp_path / "produced"
    inside, release = SPAWN.Event(), SPAWN.Event()
    first = child(once_in_child, setup.spec, key, b"sealed-first", str(produced), inside, release)
    assert inside.wait(WAIT), "the first process never reached produce()"
    others = [
        child(once_in_child, setup.spec, key, f"sealed-{i}".encode(), str(produced), None, None)
        for i in range(3)
    ]
    wait_until(lambda: setup.waiters() == 3, "three processes waiting for the lock")
    release.set()
    assert [c.result() for c in [first, *others]] == [b"sealed-first"] * 4
    assert producers(produced) == [str(first.proc.pid)]


def test_a_process_killed_inside_produce_blocks_nobody(setup: Setup, tmp_path: Path) -> None:
    key, produced = key_of("dsr-2"), tmp_path / "produced"
    inside, never = SPAWN.Event(), SPAWN.Event()
    holder = child(once_in_child, setup.spec, key, b"lost", str(produced), inside, never)
    assert inside.wait(WAIT)
    waiter = child(once_in_child, setup.spec, key, b"taken-over", str(produced), None, None)
    wait_until(lambda: setup.waiters() == 1, "the second process waiting for the lock")
    holder.proc.kill()  # SIGKILL
    assert waiter.result() == b"taken-over"
    assert producers(produced) == [str(holder.proc.pid), str(waiter.proc.pid)]
    # Saved for everyone else: nothing produced any more.
    assert setup.open().once(key, lambda: pytest.fail("produced again")) == b"taken-over"


def test_produce_raising_releases_the_lock_and_saves_nothing(setup: Setup, tmp_path: Path) -> None:
    store, key = setup.open(), key_of("dsr-3")

    def fails() -> tuple[bytes, float]:
        raise RuntimeError("descope said no")

    with pytest.raises(RuntimeError, match="descope said no"):
        store.once(key, fails)
    other = child(once_in_child, setup.spec, key, b"next", str(tmp_path / "produced"), None, None)
    assert other.result() == b"next"
    assert store.once(key, lambda: None) == b"next"


def test_produce_returning_none_saves_nothing(setup: Setup) -> None:
    store, key = setup.open(), key_of("dsr-4")
    assert store.once(key, lambda: None) is None
    assert store.once(key, lambda: (b"now", TTL)) == b"now"


def test_revoke_is_seen_by_another_process_at_once_and_deletes_the_blob(setup: Setup, tmp_path: Path) -> None:
    store, key, other_key = setup.open(), key_of("dsr-5"), key_of("dsr-6")
    assert store.once(key, lambda: (b"saved", TTL)) == b"saved"
    assert store.once(other_key, lambda: (b"other", TTL)) == b"other"
    assert not store.is_revoked(key)
    child(revoke_in_child, setup.spec, key).result()
    assert store.is_revoked(key)
    assert child(is_revoked_in_child, setup.spec, key).result() is True
    assert child(is_revoked_in_child, setup.spec, other_key).result() is False
    # The saved blob is gone, and nothing is saved for a revoked key.
    produced = tmp_path / "produced"
    assert child(once_in_child, setup.spec, key, b"after", str(produced), None, None).result() == b"after"
    assert store.once(key, lambda: (b"again", TTL)) == b"again"
    assert store.once(other_key, lambda: pytest.fail("the other key lost its blob")) == b"other"


def test_results_and_tombstones_expire(setup: Setup) -> None:
    store, key, revoked = setup.open(), key_of("dsr-7"), key_of("dsr-8")
    assert store.once(key, lambda: (b"short", 0.5)) == b"short"
    store.revoke(revoked, 0.5)
    assert store.is_revoked(revoked)
    calls: list[int] = []

    def produce_nothing() -> None:
        calls.append(1)

    wait_until(lambda: store.once(key, produce_nothing) is None, "the result to expire")
    assert calls == [1]
    wait_until(lambda: not store.is_revoked(revoked), "the tombstone to expire")
    # A tombstone is renewed, never shortened.
    short = key_of("dsr-8-short")
    store.revoke(revoked, TTL)
    store.revoke(revoked, 0.5)
    store.revoke(short, 0.5)
    wait_until(lambda: not store.is_revoked(short), "the short tombstone to expire")
    assert store.is_revoked(revoked)


@pytest.mark.parametrize(
    "key",
    ["", "0" * 63, "0" * 65, "A" * 64, "g" * 64, "../" + "0" * 61, "0" * 63 + "\n", " " + "0" * 63],
)
def test_bad_keys_are_refused(setup: Setup, key: str) -> None:
    store = setup.open()
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.once(key, lambda: pytest.fail("produced for a bad key"))
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.revoke(key, TTL)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.is_revoked(key)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True])
def test_bad_ttls_are_refused(setup: Setup, ttl: float) -> None:
    store, key = setup.open(), key_of("dsr-9")
    with pytest.raises(ValueError, match="ttl"):
        store.revoke(key, ttl)
    with pytest.raises(ValueError, match="ttl"):
        store.once(key, lambda: (b"blob", ttl))
    assert store.once(key, lambda: (b"blob", TTL)) == b"blob"  # nothing was saved or left locked


# -- the file store ----------------------------------------------------------------------------------


def test_file_store_keeps_its_files_private_and_cleans_up(tmp_path: Path) -> None:
    store = FileRefreshStore(tmp_path / "state")
    key, revoked = key_of("dsr-10"), key_of("dsr-11")
    store.once(key, lambda: (b"sealed", 0.5))
    store.revoke(revoked, 0.5)
    directory = store.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(p.name for p in directory.iterdir())
    assert f"{key}.result" in files
    assert f"{revoked}.revoked" in files
    assert not [f for f in files if ".tmp" in f], files
    assert {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {0o600}
    wait_until(lambda: store.once(key, lambda: None) is None, "the result to expire")
    wait_until(lambda: not store.is_revoked(revoked), "the tombstone to expire")
    FileRefreshStore(tmp_path / "state")  # sweeps at start-up
    assert sorted(p.suffix for p in directory.iterdir()) == [".lock"] * len(list(directory.iterdir()))


def test_file_store_cannot_tell_on_a_tombstone_it_cannot_read(tmp_path: Path) -> None:
    """Neither "revoked" (which would sign the user out) nor "not revoked" (which would renew a
    token that may be signed out): an error, on which the core renews nothing and keeps the cookies."""
    store = FileRefreshStore(tmp_path / "state")
    garbled, unreadable = key_of("dsr-12"), key_of("dsr-13")
    (store.directory / f"{garbled}.revoked").write_bytes(b"xyz")
    (store.directory / f"{unreadable}.revoked").mkdir()
    for key in (garbled, unreadable):
        with pytest.raises(RefreshStoreError, match="sign-out record"):
            store.is_revoked(key)
    assert not store.is_revoked(key_of("dsr-14"))


# -- the PostgreSQL store ----------------------------------------------------------------------------


def test_open_refresh_store_follows_the_auth_db(tmp_path: Path) -> None:
    uri = "postgresql+psycopg2://u@127.0.0.1:1/auth"
    assert isinstance(open_refresh_store(uri, tmp_path), PostgresRefreshStore)
    assert isinstance(open_refresh_store("postgresql://u@h/auth", tmp_path), PostgresRefreshStore)
    for other in (f"sqlite:///{tmp_path / 'a.db'}", "mysql+pymysql://u@127.0.0.1/auth"):
        assert isinstance(open_refresh_store(other, tmp_path), FileRefreshStore)


def test_postgres_tables_hold_only_keys_sealed_bytes_and_expiry(pg: Postgres) -> None:
    name = f"auth_{os.urandom(4).hex()}"
    store = PostgresRefreshStore(pg.create_database(name))
    key = key_of("dsr-15")
    store.once(key, lambda: (b"\x00sealed\xff", TTL))
    store.revoke(key_of("dsr-16"), TTL)
    conn = pg.connect(name)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_name LIKE 'descope_auth_refresh_%' ORDER BY table_name, ordinal_position"
            )
            columns = cur.fetchall()
            cur.execute("SELECT key, sealed FROM descope_auth_refresh_results")
            rows = [(k, bytes(s)) for k, s in cur.fetchall()]
    finally:
        conn.close()
    assert columns == [
        ("descope_auth_refresh_results", "key", "character varying"),
        ("descope_auth_refresh_results", "sealed", "bytea"),
        ("descope_auth_refresh_results", "expires", "timestamp with time zone"),
        ("descope_auth_refresh_revoked", "key", "character varying"),
        ("descope_auth_refresh_revoked", "expires", "timestamp with time zone"),
    ]
    assert rows == [(key, b"\x00sealed\xff")]


def test_postgres_expired_rows_are_swept(pg: Postgres) -> None:
    name = f"auth_{os.urandom(4).hex()}"
    store = PostgresRefreshStore(pg.create_database(name))
    key, revoked = key_of("dsr-17"), key_of("dsr-18")
    store.once(key, lambda: (b"short", 0.5))
    store.revoke(revoked, 0.5)
    wait_until(lambda: store.once(key, lambda: None) is None, "the result to expire")
    wait_until(lambda: not store.is_revoked(revoked), "the tombstone to expire")
    store.sweep()
    conn = pg.connect(name)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM descope_auth_refresh_results),"
                " (SELECT count(*) FROM descope_auth_refresh_revoked)"
            )
            assert cur.fetchone() == (0, 0)
    finally:
        conn.close()


def test_replicas_creating_the_tables_at_once(pg: Postgres) -> None:
    """Several processes' first use on a fresh database at the same moment: CREATE TABLE IF NOT
    EXISTS alone fails there in PostgreSQL (duplicate type); none of them may."""
    spec = Spec(pg.create_database(f"auth_{os.urandom(4).hex()}"), "/nonexistent")
    start = SPAWN.Event()
    children = [child(first_use_in_child, spec, key_of("dsr-19"), start) for _ in range(6)]
    start.set()
    outcomes = [c.result() for c in children]
    assert outcomes == [(False, b"x")] * 6


def test_a_wait_for_the_lock_is_bounded(pg: Postgres, tmp_path: Path) -> None:
    spec = Spec(pg.create_database(f"auth_{os.urandom(4).hex()}"), str(tmp_path))
    key = key_of("dsr-20")
    inside, release = SPAWN.Event(), SPAWN.Event()
    holder = child(once_in_child, spec, key, b"held", str(tmp_path / "produced"), inside, release)
    assert inside.wait(WAIT)
    impatient = PostgresRefreshStore(spec.auth_db_uri, lock_wait=0.5)
    with pytest.raises(RefreshStoreError, match=r"waited more than 0\.5 s for another process's refresh"):
        impatient.once(key, lambda: pytest.fail("produced without the lock"))
    release.set()
    assert holder.result() == b"held"
    assert impatient.once(key, lambda: pytest.fail("produced again")) == b"held"


def test_postgres_gone_fails_closed_and_never_hangs(tmp_path: Path) -> None:
    with postgres_server() as server:
        store = PostgresRefreshStore(server.create_database("auth"))
        key = key_of("dsr-21")
        assert store.once(key, lambda: (b"saved", TTL)) == b"saved"
        assert not store.is_revoked(key)
        server.kill()
        with pytest.raises(RefreshStoreError, match="PostgreSQL"):
            store.is_revoked(key)
        with pytest.raises(RefreshStoreError, match="PostgreSQL"):
            store.once(key, lambda: pytest.fail("produced without the lock"))
        with pytest.raises(RefreshStoreError, match="PostgreSQL"):
            store.revoke(key, TTL)
        server.start()
        # Back: the same store reconnects by itself.
        assert store.once(key, lambda: pytest.fail("produced again")) == b"saved"
        assert not store.is_revoked(key)


def test_postgres_never_reached_fails_closed() -> None:
    store = PostgresRefreshStore(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/auth")
    key = key_of("dsr-22")
    with pytest.raises(RefreshStoreError, match="unreachable"):
        store.is_revoked(key)
    with pytest.raises(RefreshStoreError, match="unreachable"):
        store.once(key, lambda: pytest.fail("produced without the lock"))
