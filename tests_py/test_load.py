"""A short form of the load run (benchmarks/soak.py is the long one): several users with five-second
sessions and rotating refresh tokens read and write at once through a 2-worker server for half a
minute. Zero 5xx, zero wrong decisions, every acknowledged metric stored, renewals all along."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlflow_descope_auth.emulator import Emulator

from .descope_server import server_env
from .load import run_load
from .replicas import Replica, replica_command
from .servers import free_port

SECONDS = 30


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Emulator]]:
    workdir = tmp_path_factory.mktemp("load")
    with Emulator(session_ttl=5, rotate_refresh_tokens=True) as emu:
        port = free_port()
        cmd = replica_command(port, f"sqlite:///{workdir / 'mlflow.db'}", workdir / "artifacts", workers=2)
        server = Replica(cmd, server_env(emu, workdir, DESCOPE_JWT_LEEWAY="0"), workdir, port)
        server.start()
        try:
            yield server, emu
        finally:
            server.kill(grace=10)


def test_mixed_load_with_short_sessions(loaded: tuple[Replica, Emulator]) -> None:
    server, emu = loaded
    before = emu.stats()
    report = run_load(server.url, emu, SECONDS, agents_per_user=1)
    after = emu.stats()
    summary = report.summary()
    assert report.passed, "\n".join([str(summary), *report.server_errors, *report.wrong, *report.exceptions])
    assert {200, 403} <= set(report.statuses), summary  # allowed and refused requests both ran
    assert report.metrics, summary
    # Sessions ran out all along: the server renewed browsers' cookies, API agents their own.
    assert after["refresh"] - before["refresh"] >= SECONDS // 5, (before, after)
    assert server.alive()
    assert "Traceback" not in server.log_text()
