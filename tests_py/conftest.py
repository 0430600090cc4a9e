from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlflow_descope_auth import DescopeClient, clients
from mlflow_descope_auth.emulator import Emulator

from .descope_server import DescopeServer, descope_server
from .servers import RecordingProxy, mlflow_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> DescopeClient:
    return DescopeClient(emulator.project_id, base_url=emulator.base_url, http_timeout=5)


@pytest.fixture(autouse=True)
def _clean_descope_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees DESCOPE_* or MLFLOW_TRACKING_* settings it did not set itself."""
    import os

    for name in list(os.environ):
        if name.startswith(("DESCOPE_", "MLFLOW_TRACKING_")):
            monkeypatch.delenv(name)
    clients.reset()
    yield
    clients.reset()


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (uvicorn, default app) on loopback."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), extra_args=("--workers", "1")) as url:
        yield url


@pytest.fixture
def proxy(tracking_server: str) -> Iterator[RecordingProxy]:
    p = RecordingProxy(tracking_server).start()
    yield p
    p.stop()


def pytest_configure(config: pytest.Config) -> None:
    Path(config.rootpath, "test-artifacts").mkdir(exist_ok=True)


UNIT_DIR = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier follows the directory, so a new test cannot be left without one."""
    for item in items:
        tier = "unit" if UNIT_DIR in item.path.parents else "system"
        item.add_marker(tier)


@pytest.fixture(scope="session")
def server_emulator() -> Iterator[Emulator]:
    """The emulator behind the shared descope server; tests must not change its users' roles."""
    with Emulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def descope(server_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    """`mlflow server --app-name descope` (uvicorn, 2 workers) against its own emulator."""
    with descope_server(server_emulator, tmp_path_factory.mktemp("descope-server")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module that asks for it (real Chromium, see browser.py)."""
    from .browser import chromium

    with chromium() as b:
        yield b
