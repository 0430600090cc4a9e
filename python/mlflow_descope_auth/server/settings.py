"""Server settings from the environment (the token settings live in the Rust core's config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth._core import ConfigurationError

DEFAULT_WEB_COMPONENT_VERSION = "3.54.0"
COOKIE_SECURE_CHOICES = ("auto", "true", "false")


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
            raise ConfigurationError(
                "configuration error in DESCOPE_PROJECT_ID: not set; the server needs your Descope project "
                "id (Descope console, Project settings), e.g. DESCOPE_PROJECT_ID=P2... mlflow server "
                "--app-name descope"
            )
        version = env.get("DESCOPE_WEB_COMPONENT_VERSION", "").strip() or DEFAULT_WEB_COMPONENT_VERSION
        url = env.get("DESCOPE_WEB_COMPONENT_URL", "").strip() or (
            f"https://unpkg.com/@descope/web-component@{version}/dist/index.js"
        )
        secure = env.get("DESCOPE_COOKIE_SECURE", "auto").strip().lower() or "auto"
        if secure not in COOKIE_SECURE_CHOICES:
            raise ConfigurationError(
                f"configuration error in DESCOPE_COOKIE_SECURE: '{secure}' is not one of auto, true, false"
            )
        redirect = env.get("DESCOPE_REDIRECT_URL", "").strip() or "/"
        if not is_local_path(redirect):
            raise ConfigurationError(
                "configuration error in DESCOPE_REDIRECT_URL: must be a path on this server such as / "
                "(an absolute URL would make the login page an open redirect)"
            )
        state_dir = Path(env.get("DESCOPE_AUTH_STATE_DIR", "").strip() or Path.cwd() / ".mlflow-descope")
        db_uri = env.get("DESCOPE_AUTH_DB_URI", "").strip() or f"sqlite:///{Path.cwd() / 'descope_auth.db'}"
        prefix = mlflow_internals.static_prefix(env)
        return cls(
            flow_id=env.get("DESCOPE_FLOW_ID", "").strip() or "sign-up-or-in",
            redirect_url=redirect,
            web_component_url=url,
            cookie_secure=secure,
            auth_db_uri=db_uri,
            state_dir=state_dir,
            static_prefix=prefix,
        )


def is_local_path(target: str) -> bool:
    """A same-site relative path: starts with one '/', no scheme, no '//' or '/\\' (browsers read
    both as another host), no control characters."""
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    return not any(ord(c) < 0x20 or c == "\\" for c in target)
