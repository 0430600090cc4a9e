"""The production topology as real processes: `mlflow server --app-name descope` replicas sharing a
PostgreSQL backend store and auth DB, artifacts and the state directory on a shared folder, and nginx
round-robin in front. Used by the replica, fault and load tests and by `benchmarks/soak.py`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_descope_auth.emulator import Emulator

from .descope_server import DescopeServer, server_env
from .nginx import nginx_proxy
from .postgres import Postgres, postgres_server
from .servers import free_port, wait_http


@dataclass
class Replica:
    """One `mlflow server --app-name descope` process (its workers in its process group)."""

    cmd: list[str]
    env: dict[str, str]
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def launch(self) -> None:
        """Starts the process without waiting for it (so several can start at the same moment)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 240.0) -> None:
        wait_http(f"{self.url}/health", timeout=timeout, proc=self.proc)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, grace: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def worker_pids(self) -> list[int]:
        """The server's worker processes (children of the uvicorn supervisor)."""
        if self.proc is None:
            return []
        return _descendants(self.proc.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_kib(pid: int) -> int | None:
    """Resident memory of one process in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Cluster:
    """Replicas behind nginx; `url` is nginx."""

    url: str
    replicas: list[Replica]
    postgres: Postgres
    shared: Path
    emulator: Emulator
    tracking_uri: str
    auth_db_uri: str

    def via(self, replica: int | None = None) -> DescopeServer:
        """The server as a test client sees it: through nginx, or one replica directly."""
        url = self.url if replica is None else self.replicas[replica].url
        return DescopeServer(url, self.emulator, self.shared)


def replica_command(port: int, tracking_uri: str, artifacts: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--app-name", "descope",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--backend-store-uri", tracking_uri, "--artifacts-destination", str(artifacts)]  # fmt: skip


@contextmanager
def cluster(
    emu: Emulator,
    workdir: Path,
    *,
    replicas: int = 2,
    workers: int = 2,
    postgres: Postgres | None = None,
    shared_state: bool = True,
    **env: str,
) -> Iterator[Cluster]:
    """`replicas` servers on fresh PostgreSQL databases (a new cluster unless `postgres` is given),
    all started at the same moment, then nginx in front of them. Everything is stopped afterwards.

    The tracking DB is created first with `mlflow db upgrade` (MLflow migrates it in the CLI process,
    before any plugin runs, and not safely when two servers start together: the documented
    deployment does this once, as an init step). The auth DB is left empty: the replicas create it.
    `shared_state=False` gives each replica its own state directory (hosts with nothing shared but
    the databases) and the Flask secret key through the environment."""
    with ExitStack() as stack:
        pg = postgres if postgres is not None else stack.enter_context(postgres_server())
        suffix = uuid.uuid4().hex[:8]
        tracking_uri = pg.create_database(f"mlflow_{suffix}")
        auth_db_uri = pg.create_database(f"auth_{suffix}")
        subprocess.run(
            [sys.executable, "-m", "mlflow", "db", "upgrade", tracking_uri], check=True, capture_output=True
        )
        shared = workdir / "shared"
        (shared / "artifacts").mkdir(parents=True, exist_ok=True)
        if not shared_state:
            env = {"MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex, **env}
        nodes = []
        for i in range(replicas):
            node_dir = workdir / f"replica-{i}"
            state = shared / "state" if shared_state else node_dir / "state"
            node_env = server_env(
                emu, node_dir, DESCOPE_AUTH_DB_URI=auth_db_uri, DESCOPE_AUTH_STATE_DIR=str(state), **env
            )
            port = free_port()
            cmd = replica_command(port, tracking_uri, shared / "artifacts", workers)
            nodes.append(Replica(cmd, node_env, node_dir, port))
        for node in nodes:
            stack.callback(node.kill, signal.SIGTERM)
        barrier = threading.Barrier(len(nodes))

        def go(node: Replica) -> None:
            barrier.wait()
            node.launch()

        threads = [threading.Thread(target=go, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n in nodes:
            try:
                n.wait_ready()
            except Exception as exc:
                raise RuntimeError(f"replica {n.url} did not start:\n{n.log_text()[-4000:]}") from exc
        url = stack.enter_context(nginx_proxy([n.url for n in nodes]))
        yield Cluster(url, nodes, pg, shared, emu, tracking_uri, auth_db_uri)
