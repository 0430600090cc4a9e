"""Where the worker processes and replicas of one deployment coordinate refreshes.

With refresh-token rotation only the first refresh of a refresh token succeeds at Descope, yet a
browser sends several requests at once and round-robin spreads them over workers and replicas. The
Rust core runs the single flight among the threads of one process; a store makes the processes
(and hosts) take turns: the first one refreshes and saves the result for a short while, the others
wait for it and reuse it. Sign-out leaves a tombstone here that every process checks.

A store sees only opaque keys (the core's SHA-256 hex digest of a refresh token) and opaque sealed
bytes (encrypted by the core with a key derived from the server secret): nothing here can be turned
back into a token.

* ``FileRefreshStore``: files and ``flock`` in the state directory; the workers of one host.
* ``PostgresRefreshStore``: the auth DB on PostgreSQL, which replicas on several hosts share.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

_log = logging.getLogger(__name__)

_KEY = re.compile(r"[0-9a-f]{64}")

# How long a process waits for another one's refresh of the same token before it gives up with an
# error: a refresh is one call to Descope (DESCOPE_HTTP_TIMEOUT, 5 s by default), so a longer wait
# means the holder is stuck, and a worker thread must not hang on it.
DEFAULT_LOCK_WAIT_SECONDS = 15.0
# Expired results and tombstones are deleted at most this often per process (and at start-up).
SWEEP_EVERY_SECONDS = 60.0


class RefreshStoreError(RuntimeError):
    """The store cannot coordinate right now: its database is unreachable, or the wait for another
    process's refresh of the same token took too long."""


class RefreshStore(Protocol):
    """Where the worker processes and replicas of one deployment coordinate refreshes. Holds only
    opaque keys (the core's SHA-256 hex digest of a refresh token: 64 lowercase hex characters;
    anything else -> ValueError) and opaque sealed bytes (encrypted by the core)."""

    def once(self, key: str, produce: Callable[[], tuple[bytes, float] | None]) -> bytes | None:
        """Holding a lock on ``key`` that every process using this store waits for: the unexpired
        blob saved under ``key``, if any; else calls ``produce()`` and, when it returns
        ``(blob, ttl_seconds)``, saves blob for ttl seconds and returns blob; when it returns None,
        returns None and saves nothing. If produce raises, the lock is released and the exception
        propagates. A process that dies holding the lock does not block the others.

        A blob is neither reused nor saved while ``key`` is revoked. ``RefreshStoreError`` when the
        store cannot take the lock (produce is then not called)."""
        ...

    def revoke(self, key: str, ttl: float) -> None:
        """Marks ``key`` revoked for ttl seconds (atomically visible to every process) and deletes
        any saved blob. ``RefreshStoreError`` when the mark could not be recorded."""
        ...

    def is_revoked(self, key: str) -> bool:
        """Whether ``key`` is revoked now. ``RefreshStoreError`` when the store cannot tell: the core
        then renews nothing, without taking it for a sign-out (the browser keeps its cookies)."""
        ...


def open_refresh_store(
    auth_db_uri: str, state_dir: Path, *, lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS
) -> RefreshStore:
    """The store for this deployment, chosen by the auth DB (a SQLAlchemy URL): PostgreSQL, which
    replicas on several hosts share, or else files in ``state_dir`` (SQLite lives on one host; on
    MySQL the replicas of several hosts then need a state directory on a filesystem whose ``flock``
    works across them, as RELIABILITY.md describes)."""
    from sqlalchemy.engine import make_url

    if make_url(auth_db_uri).get_backend_name() == "postgresql":
        return PostgresRefreshStore(auth_db_uri, lock_wait=lock_wait)
    return FileRefreshStore(state_dir)


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("a refresh store key is a SHA-256 hex digest: 64 lowercase hex characters")
    return key


def _checked_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError("a refresh store ttl is a positive, finite number of seconds")
    return float(ttl)


def _checked_result(made: tuple[bytes, float]) -> tuple[bytes, float]:
    blob, ttl = made
    if not isinstance(blob, bytes):
        raise ValueError("a refresh store blob is bytes")
    return blob, _checked_ttl(ttl)


# -- files -------------------------------------------------------------------------------------------

_EXPIRY = struct.Struct(">d")  # every result and tombstone file starts with its expiry (Unix time)


class FileRefreshStore:
    """Files in ``<state_dir>/refresh`` (mode 0700; files 0600), for the processes of one host.

    ``<key>.result`` holds a saved blob and ``<key>.revoked`` a tombstone, each behind an 8-byte
    expiry and written atomically (temp file + rename), so a reader sees all of one or none. The
    locks are ``flock``s on 256 striped lock files (by the key's first two hex digits), never deleted:
    deleting a lock file someone waits on would let two processes hold "the" lock. The kernel drops
    a dead process's ``flock``, so it blocks nobody.
    """

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "refresh"
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir.chmod(0o700)  # one made by someone else (or an older umask) is made private too
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()
        self._sweep()  # what a previous run left behind

    @property
    def directory(self) -> Path:
        return self._dir

    def once(self, key: str, produce: Callable[[], tuple[bytes, float] | None]) -> bytes | None:
        check_key(key)
        result = self._dir / f"{key}.result"
        with self._locked(f"stripe-{key[:2]}.lock"):
            saved = _read_live(result)
            if saved is not None and not self.is_revoked(key):
                return saved
            made = produce()
            if made is None:
                return None
            blob, ttl = _checked_result(made)
            if not self.is_revoked(key):
                try:
                    _write_atomically(result, _EXPIRY.pack(time.time() + ttl) + blob)
                except OSError as exc:
                    # This request has its result; the other processes will not find it.
                    _log.warning("Could not save a refresh result in %s: %s", self._dir, exc)
        self._sweep_now_and_then()
        return blob

    def revoke(self, key: str, ttl: float) -> None:
        check_key(key)
        expires = time.time() + _checked_ttl(ttl)
        tomb = self._dir / f"{key}.revoked"
        try:
            # Under the tombstone stripe lock, so a sweep never deletes a tombstone just renewed.
            with self._locked(f"revoked-{key[:2]}.lock"):
                earlier = _read_expiry(tomb)
                _write_atomically(tomb, _EXPIRY.pack(max(expires, earlier or 0.0)))
        except OSError as exc:
            raise RefreshStoreError(f"could not record a sign-out in {self._dir}: {exc}") from exc
        finally:
            # The tombstone goes first: a process that finds no result afterwards also finds it.
            (self._dir / f"{key}.result").unlink(missing_ok=True)
        self._sweep_now_and_then()

    def is_revoked(self, key: str) -> bool:
        check_key(key)
        try:
            expires = _read_expiry(self._dir / f"{key}.revoked")
        except OSError as exc:
            raise RefreshStoreError(f"cannot read a sign-out record in {self._dir}: {exc}") from exc
        return expires is not None and expires > time.time()

    @contextlib.contextmanager
    def _locked(self, name: str, *, wait: bool = True) -> Iterator[bool]:
        fd = os.open(self._dir / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _sweep_now_and_then(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self._sweep()

    def _sweep(self) -> None:
        """Deletes results and tombstones past their expiry, each under its stripe lock so that none
        renewed meanwhile goes; a result whose stripe is busy (a refresh running) waits for next time."""
        if not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
            now = time.time()
            for path in self._dir.iterdir():
                key, _, kind = path.name.partition(".")
                if kind not in ("result", "revoked") or not _KEY.fullmatch(key):
                    continue
                stripe = f"stripe-{key[:2]}.lock" if kind == "result" else f"revoked-{key[:2]}.lock"
                try:
                    with self._locked(stripe, wait=kind == "revoked") as held:
                        expires = _read_expiry(path) if held else None
                        if expires is not None and expires <= now:
                            path.unlink(missing_ok=True)
                except (OSError, ValueError):
                    continue
        finally:
            self._sweep_lock.release()


def _read_expiry(path: Path) -> float | None:
    """The expiry a result or tombstone file starts with; None when there is no such file. A file
    too short to hold one was not written by this store (writes are atomic): OSError."""
    try:
        with open(path, "rb") as f:
            head = f.read(_EXPIRY.size)
    except FileNotFoundError:
        return None
    if len(head) != _EXPIRY.size:
        raise OSError(f"{path.name}: not a refresh store file")
    (expires,) = _EXPIRY.unpack(head)
    if not math.isfinite(expires):
        raise OSError(f"{path.name}: not a refresh store file")
    return float(expires)


def _read_live(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < _EXPIRY.size or not _EXPIRY.unpack_from(data)[0] > time.time():
        return None
    return data[_EXPIRY.size :]


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# -- PostgreSQL --------------------------------------------------------------------------------------

RESULTS_TABLE = "descope_auth_refresh_results"
REVOKED_TABLE = "descope_auth_refresh_revoked"

_CREATE = (
    """CREATE TABLE IF NOT EXISTS descope_auth_refresh_results (
        key varchar(64) PRIMARY KEY,
        sealed bytea NOT NULL,
        expires timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS descope_auth_refresh_revoked (
        key varchar(64) PRIMARY KEY,
        expires timestamptz NOT NULL
    )""",
)
# Expiry is judged by the database's clock, which every host shares. clock_timestamp(), not now():
# now() is the start of the transaction, which may have waited a while for the lock.
_IS_REVOKED = "SELECT 1 FROM descope_auth_refresh_revoked WHERE key = :key AND expires > clock_timestamp()"
_READ = """SELECT sealed FROM descope_auth_refresh_results r
    WHERE r.key = :key AND r.expires > clock_timestamp() AND NOT EXISTS (
        SELECT 1 FROM descope_auth_refresh_revoked t WHERE t.key = :key AND t.expires > clock_timestamp())"""
_SAVE = """INSERT INTO descope_auth_refresh_results (key, sealed, expires)
    SELECT :key, :sealed, clock_timestamp() + make_interval(secs => :ttl) WHERE NOT EXISTS (
        SELECT 1 FROM descope_auth_refresh_revoked t WHERE t.key = :key AND t.expires > clock_timestamp())
    ON CONFLICT (key) DO UPDATE SET sealed = excluded.sealed, expires = excluded.expires"""
_REVOKE = """INSERT INTO descope_auth_refresh_revoked AS t (key, expires)
    VALUES (:key, clock_timestamp() + make_interval(secs => :ttl))
    ON CONFLICT (key) DO UPDATE SET expires = greatest(t.expires, excluded.expires)"""
_FORGET = "DELETE FROM descope_auth_refresh_results WHERE key = :key"
_SWEEP = (
    "DELETE FROM descope_auth_refresh_results WHERE expires <= clock_timestamp()",
    "DELETE FROM descope_auth_refresh_revoked WHERE expires <= clock_timestamp()",
)
_TIMEOUTS = (
    "SELECT set_config('lock_timeout', :lock_ms, true), set_config('statement_timeout', :statement_ms, true)"
)
# Advisory lock ids: 64-bit numbers from a namespaced hash, so they cannot meet anyone else's.
_LOCK_NAMESPACE = b"mlflow-descope-auth/refresh-store/"
# Statements other than the lock wait are single-row reads and writes on a primary key.
_STATEMENT_SECONDS = 5.0
_CONNECT_SECONDS = 5


def advisory_lock_id(name: str) -> int:
    """The signed 64-bit advisory lock id PostgreSQL takes for ``name`` in this store's namespace."""
    digest = hashlib.sha256(_LOCK_NAMESPACE + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresRefreshStore:
    """The auth DB on PostgreSQL, shared by every replica (SQLAlchemy URL, as in DESCOPE_AUTH_DB_URI).

    The lock on a key is ``pg_advisory_xact_lock`` inside a transaction: PostgreSQL releases it when
    the transaction ends, and when the connection of a replica that died drops. A wait longer than
    ``lock_wait`` seconds ends in ``RefreshStoreError``. Saved blobs live in ``RESULTS_TABLE`` and
    tombstones in ``REVOKED_TABLE``, both created on first use (under an advisory lock: ``CREATE
    TABLE IF NOT EXISTS`` is not safe when several replicas run it at once) and swept now and then.
    """

    def __init__(self, db_uri: str, *, lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS) -> None:
        from sqlalchemy.engine import make_url

        url = make_url(db_uri)
        if url.get_backend_name() != "postgresql":
            raise ValueError("PostgresRefreshStore needs a postgresql:// database URL")
        self._url = url
        self._lock_wait = _checked_ttl(lock_wait)
        self._mutex = threading.Lock()
        # Two pools: `once` holds a connection (and the key's lock) while Descope answers, so the
        # short statements (is a token signed out, sign out) get their own and never queue behind it.
        self._engines: dict[bool, Any] = {}
        self._engine_pid = 0
        self._tables_ready = False
        self._next_sweep = 0.0

    def once(self, key: str, produce: Callable[[], tuple[bytes, float] | None]) -> bytes | None:
        from sqlalchemy.exc import SQLAlchemyError

        check_key(key)
        with self._connection() as conn:
            tx = conn.begin()
            try:
                self._run(
                    conn, _TIMEOUTS, lock_ms=_ms(self._lock_wait), statement_ms=_ms(self._lock_wait + 5)
                )
                self._run(conn, "SELECT pg_advisory_xact_lock(:id)", id=advisory_lock_id(key))
                self._run(
                    conn, _TIMEOUTS, lock_ms=_ms(_STATEMENT_SECONDS), statement_ms=_ms(_STATEMENT_SECONDS)
                )
                row = self._run(conn, _READ, key=key).first()
                if row is not None:
                    with contextlib.suppress(SQLAlchemyError):
                        tx.commit()
                    return bytes(row[0])
                made = produce()
                blob, ttl = (None, 0.0) if made is None else _checked_result(made)
            except BaseException:
                with contextlib.suppress(SQLAlchemyError):
                    tx.rollback()
                raise
            if blob is None:
                with contextlib.suppress(SQLAlchemyError):
                    tx.rollback()
                return None
            try:
                self._run(conn, _SAVE, key=key, sealed=blob, ttl=ttl)
                tx.commit()
            except (RefreshStoreError, SQLAlchemyError) as exc:
                # This request has its result; the other processes will not find it.
                _log.warning("Could not save a refresh result in PostgreSQL: %s", exc)
                with contextlib.suppress(SQLAlchemyError):
                    tx.rollback()
        self._sweep_now_and_then()
        return blob

    def revoke(self, key: str, ttl: float) -> None:
        check_key(key)
        ttl = _checked_ttl(ttl)
        with self._connection(short=True) as conn, self._transaction(conn):
            self._run(conn, _REVOKE, key=key, ttl=ttl)
            self._run(conn, _FORGET, key=key)
        self._sweep_now_and_then()

    def is_revoked(self, key: str) -> bool:
        check_key(key)
        with self._connection(short=True) as conn, self._transaction(conn):
            return self._run(conn, _IS_REVOKED, key=key).first() is not None

    def sweep(self) -> None:
        """Deletes expired results and tombstones."""
        with self._connection(short=True) as conn, self._transaction(conn):
            for statement in _SWEEP:
                self._run(conn, statement)

    def dispose(self) -> None:
        """Closes the pooled connections."""
        with self._mutex:
            engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.dispose()

    def _sweep_now_and_then(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
        try:
            self.sweep()
        except RefreshStoreError as exc:
            _log.info("Could not sweep expired refresh results: %s", exc)

    def _engine_here(self, short: bool) -> Any:
        import sqlalchemy

        with self._mutex:
            # A pool must not cross a fork: the child opens its own connections.
            if self._engine_pid != os.getpid():
                self._engines, self._engine_pid, self._tables_ready = {}, os.getpid(), False
            if short not in self._engines:
                driver = self._url.get_driver_name()
                connect_args = (
                    {"connect_timeout": _CONNECT_SECONDS} if driver in ("psycopg2", "psycopg") else {}
                )
                self._engines[short] = sqlalchemy.create_engine(
                    self._url,
                    pool_size=2,
                    max_overflow=2 if short else 8,
                    pool_timeout=_STATEMENT_SECONDS if short else self._lock_wait,
                    pool_pre_ping=True,
                    hide_parameters=True,  # errors must not quote the sealed bytes
                    connect_args=connect_args,
                )
            return self._engines[short]

    @contextlib.contextmanager
    def _connection(self, short: bool = False) -> Iterator[Any]:
        from sqlalchemy.exc import SQLAlchemyError

        engine = self._engine_here(short)
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise RefreshStoreError(
                f"the refresh store in PostgreSQL is unreachable: {_reason(exc)}"
            ) from exc
        try:
            if not self._tables_ready:
                self._create_tables(conn)
            yield conn
        finally:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()

    @contextlib.contextmanager
    def _transaction(self, conn: Any) -> Iterator[None]:
        from sqlalchemy.exc import SQLAlchemyError

        tx = conn.begin()
        try:
            self._run(conn, _TIMEOUTS, lock_ms=_ms(_STATEMENT_SECONDS), statement_ms=_ms(_STATEMENT_SECONDS))
            yield
        except BaseException:
            with contextlib.suppress(SQLAlchemyError):
                tx.rollback()
            raise
        try:
            tx.commit()
        except SQLAlchemyError as exc:
            raise RefreshStoreError(f"the refresh store in PostgreSQL failed: {_reason(exc)}") from exc

    def _create_tables(self, conn: Any) -> None:
        with self._transaction(conn):
            self._run(conn, "SELECT pg_advisory_xact_lock(:id)", id=advisory_lock_id("create tables"))
            for statement in _CREATE:
                self._run(conn, statement)
        self._tables_ready = True

    def _run(self, conn: Any, sql: str, **params: Any) -> Any:
        import sqlalchemy
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return conn.execute(sqlalchemy.text(sql), params)
        except SQLAlchemyError as exc:
            if _lock_timed_out(exc):
                raise RefreshStoreError(
                    f"waited more than {self._lock_wait:g} s for another process's refresh of the same token"
                ) from exc
            raise RefreshStoreError(f"the refresh store in PostgreSQL failed: {_reason(exc)}") from exc


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _lock_timed_out(exc: Exception) -> bool:
    """SQLSTATE 55P03, lock_not_available: the wait ran past lock_timeout (psycopg2 or psycopg 3)."""
    orig = getattr(exc, "orig", None)
    return (getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)) == "55P03"


def _reason(exc: Exception) -> str:
    """The driver's first line, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
