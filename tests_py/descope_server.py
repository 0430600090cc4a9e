"""`mlflow server --app-name descope` as a real subprocess against an emulator, for the server tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from mlflow_descope_auth.emulator import Emulator

from .servers import mlflow_server

# The demo mapping: editors may create, readers read (DESCOPE_DEFAULT_PERMISSION stays READ).
ROLE_PERMISSIONS = "editor=EDIT,reader=READ"


@dataclass
class DescopeServer:
    url: str
    emulator: Emulator
    workdir: Path

    def session(self, login_id: str) -> dict[str, str]:
        """Signs `login_id` in at the emulator: {'sessionJwt': ..., 'refreshJwt': ...}."""
        return self.emulator.login(login_id)

    def bearer(self, login_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session(login_id)['sessionJwt']}"}

    def api(self, method: str, path: str, login_id: str | None = None, **kwargs: object) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if login_id is not None:
            headers.update(self.bearer(login_id))
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def server_env(emu: Emulator, workdir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DESCOPE_", "MLFLOW_TRACKING_", "MLFLOW_AUTH"))
    }
    env.update(
        {
            "DESCOPE_PROJECT_ID": emu.project_id,
            "DESCOPE_BASE_URI": emu.base_url,
            "DESCOPE_ROLE_PERMISSIONS": ROLE_PERMISSIONS,
            # The emulator's stand-in flow component, so the login page works offline in a browser.
            "DESCOPE_WEB_COMPONENT_URL": f"{emu.base_url}/emulator/web-component.js",
            "DESCOPE_AUTH_DB_URI": f"sqlite:///{workdir / 'auth.db'}",
            "DESCOPE_AUTH_STATE_DIR": str(workdir / "state"),
        }
    )
    env.update(extra)
    return env


@contextmanager
def descope_server(
    emu: Emulator, workdir: Path, *, extra_args: tuple[str, ...] = ("--workers", "2"), **env: str
) -> Iterator[DescopeServer]:
    with mlflow_server(
        workdir, extra_args=("--app-name", "descope", *extra_args), env=server_env(emu, workdir, **env)
    ) as url:
        yield DescopeServer(url, emu, workdir)
