"""A real PostgreSQL 15 server for the tests (Debian's package), as a plain process on a free loopback port.

Started by the test itself: `initdb` into a fresh directory, `postgres` in its own process group
(so `kill()` takes the postmaster and every backend down at once, like a crash), removed afterwards
whatever happened. As root it runs as the `postgres` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from .servers import free_port

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the `postgres` system user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@dataclass
class Postgres:
    port: int
    root: Path
    log_path: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def uri(self, database: str) -> str:
        """SQLAlchemy URL of `database` (psycopg2 named: SQLAlchemy 2.1 would pick psycopg 3)."""
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database)

    def create_database(self, name: str) -> str:
        """Creates an empty database; returns its URL."""
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)

    def start(self) -> None:
        assert self._proc is None or self._proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child keeps its own descriptor)
        try:
            self._proc = subprocess.Popen(
                [
                    str(BIN / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=off",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_run_as(),
            )
        finally:
            log.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}; see {self.log_path}")
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the postmaster and all its backends: a crash, not a shutdown."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        # Backends in the group are gone too; wait until the port is free for the restart.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.connect().close()
            except psycopg2.OperationalError:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGINT)  # "fast" shutdown
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster, trust authentication on loopback only; removed afterwards."""
    # Not under pytest's tmp_path: its parents are root-only (0700) and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="mlflow-descope-pg-"))
    try:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        server = Postgres(port=free_port(), root=root, log_path=root / "postgres.log")
        subprocess.run(
            [str(BIN / "initdb"), "-D", str(server.datadir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            **_run_as(),
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()
            server.kill()
    finally:
        shutil.rmtree(root, ignore_errors=True)
