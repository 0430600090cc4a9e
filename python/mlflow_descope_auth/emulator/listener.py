"""uvicorn on a daemon thread, with a listening socket that can really be closed and reopened.

The socket is bound here, not by uvicorn, so that port 0 resolves to a known port before the server
starts, and so that an outage can close it and later bind the very same port again (SO_REUSEADDR).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

log = logging.getLogger("mlflow_descope_auth.emulator")


def bind_socket(host: str, port: int, *, retry_seconds: float = 0.0) -> socket.socket:
    """A bound TCP socket; with ``retry_seconds`` it keeps trying while the port is still busy."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    deadline = time.monotonic() + retry_seconds
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class ThreadedServer:
    """Serves one ASGI app on ``host:port``; ``start``/``stop`` may alternate, keeping the port."""

    def __init__(self, app: Any, host: str, port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        # Reopening after an outage: the old socket's port may linger briefly in the kernel.
        sock = bind_socket(self.host, self.port, retry_seconds=5.0 if self.port else 0.0)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,  # leave the host process's logging setup alone
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server, self._error = server, None

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported by start(); a dead thread must not fail silently
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"descope-emulator-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                where = f"{self.host}:{self.port}"
                raise RuntimeError(f"the emulator could not start on {where}: {self._error!r}")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Stops serving and closes the listening socket (the port stays recorded for ``start``)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None
