"""Real processes for the tests: an `mlflow server` subprocess and a recording reverse proxy."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 240.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def mlflow_server(
    workdir: Path, *, extra_args: tuple[str, ...] = (), env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """`mlflow server` on a free loopback port with a SQLite store in `workdir`; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
           "--artifacts-destination", str(workdir / "artifacts"), *extra_args]  # fmt: skip
    with server_process(cmd, port, workdir, env) as url:
        yield url


@contextmanager
def server_process(
    cmd: list[str], port: int, workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Runs `cmd` (a server listening on `port`) until /health answers; kills its process group after."""
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = dict(env) if env is not None else dict(os.environ)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115  (closed below, after the process)
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stops a process started with `start_new_session=True` and everything it started (workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        proc.wait()
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class RecordingProxy:
    """Forwards every request to `upstream` unchanged and records what arrived."""

    upstream: str
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    reject_tokens: set[str] = field(default_factory=set)

    def start(self) -> RecordingProxy:
        proxy = self
        host, port = self.upstream.removeprefix("http://").split(":")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()}
                proxy.requests.append(Recorded(self.command, self.path, headers))
                auth = headers.get("Authorization", "")
                if auth.removeprefix("Bearer ") in proxy.reject_tokens:
                    # Plays a server that no longer accepts this session (revoked, key rotated).
                    self._answer(
                        401, b'{"error_code": "UNAUTHENTICATED"}', {"Content-Type": "application/json"}
                    )
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                skip = {"transfer-encoding", "connection", "content-length"}
                self._answer(resp.status, data, {k: v for k, v in resp.getheaders() if k.lower() not in skip})
                conn.close()

            def _answer(self, status: int, data: bytes, headers: Mapping[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
