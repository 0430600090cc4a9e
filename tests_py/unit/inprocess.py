"""The server's gate and ``/auth`` routes built in-process, and requests built by hand for them: what
the ASGI and WSGI adapters would hand over, without a server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.gate import Gate
from mlflow_descope_auth.server.http import Request
from mlflow_descope_auth.server.routes import AuthRoutes
from mlflow_descope_auth.server.settings import ServerSettings

HOST = "mlflow.example:5000"


def make_settings(state_dir: Path, *, cookie_secure: str = "auto", prefix: str = "") -> ServerSettings:
    return ServerSettings(
        flow_id="sign-up-or-in",
        redirect_url="/",
        web_component_url="https://cdn.invalid/web-component.js",
        cookie_secure=cookie_secure,
        auth_db_uri="sqlite://",
        state_dir=state_dir,
        static_prefix=prefix,
    )


def make_routes(
    client: DescopeClient, state_dir: Path, *, cookie_secure: str = "auto", prefix: str = ""
) -> AuthRoutes:
    settings = make_settings(state_dir, cookie_secure=cookie_secure, prefix=prefix)
    return AuthRoutes(Gate(client, settings), client)


def unit_request(
    method: str,
    path: str,
    *,
    scheme: str = "http",
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: str = "",
    same_origin: bool = True,
) -> Request:
    """A request to ``HOST``; ``same_origin`` adds an ``Origin`` naming it (as this site's pages do)."""
    base = {"host": HOST, "content-type": "application/json"}
    if same_origin:
        base["origin"] = f"{scheme}://{HOST}"
    return Request(
        method=method,
        path=path,
        query_string=query,
        headers={**base, **{k.lower(): v for k, v in (headers or {}).items()}},
        scheme=scheme,
        body=json.dumps(body).encode() if body is not None else b"",
    )


def response_cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Set-Cookie header values by cookie name."""
    return {v.split("=", 1)[0]: v for k, v in headers if k.lower() == "set-cookie"}


def expired_session(emu: Emulator, login_id: str) -> str:
    """A session token of `login_id`, signed with the emulator's real key, that expired a minute ago."""
    claims = emu.session_claims(login_id)
    now = int(time.time())
    claims.update(iat=now - 120, exp=now - 60)
    return emu.sign(claims)


def issued_in_the_past(emu: Emulator, login_id: str, seconds_ago: int) -> dict[str, Any]:
    """A sign-in of `login_id` as the emulator would have answered it `seconds_ago` seconds ago: with
    seconds_ago past the session lifetime, an expired session next to a live refresh token."""
    previous = emu.clock.offset
    emu.clock.set_offset(previous - seconds_ago)
    try:
        return emu.login(login_id)
    finally:
        emu.clock.set_offset(previous)
