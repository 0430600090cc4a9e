"""Server settings from the environment, validated and defaulted by the core's settings table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth._core import ConfigurationError, check_setting


def _text(name: str, env: Mapping[str, str]) -> str:
    """The variable's value, or its default, as the core's settings table validates it."""
    value = check_setting(name, env.get(name), environ=env)
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a text setting in the core's table")
    return value


@dataclass(frozen=True)
class ServerSettings:
    flow_id: str
    redirect_url: str
    web_component_url: str
    cookie_secure: str
    auth_db_uri: str
    state_dir: Path
    static_prefix: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        if not env.get("DESCOPE_PROJECT_ID", "").strip():
            missing = ConfigurationError(
                "configuration error in DESCOPE_PROJECT_ID: not set; the server needs your Descope project "
                "id (Descope console, Project settings), e.g. DESCOPE_PROJECT_ID=P2... mlflow server "
                "--app-name descope"
            )
            missing.code, missing.variable = "config_missing", "DESCOPE_PROJECT_ID"
            raise missing
        prefix = mlflow_internals.static_prefix(env)
        return cls(
            flow_id=_text("DESCOPE_FLOW_ID", env),
            redirect_url=_text("DESCOPE_REDIRECT_URL", env),
            web_component_url=_text("DESCOPE_WEB_COMPONENT_URL", env),
            cookie_secure=_text("DESCOPE_COOKIE_SECURE", env),
            auth_db_uri=_text("DESCOPE_AUTH_DB_URI", env),
            state_dir=Path(_text("DESCOPE_AUTH_STATE_DIR", env)),
            static_prefix=prefix,
        )


def is_local_path(target: str) -> bool:
    """A same-site relative path: starts with one '/', no scheme, no '//' or '/\\' (browsers read
    both as another host), no control characters. The same rule as the core's check of
    DESCOPE_REDIRECT_URL (a test keeps them equal); this one runs per request, on `next`."""
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    return not any(ord(c) < 0x20 or c == "\\" for c in target)
