"""``token`` and ``whoami``: the credentials in this shell's environment, turned into a session and
into the identity (and MLflow permission) the server will see."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import click
import requests

from mlflow_descope_auth._core import DescopeAuthError, SessionResult
from mlflow_descope_auth.client import stored_login
from mlflow_descope_auth.client.errors import diagnose
from mlflow_descope_auth.clients import CREDENTIAL_VARIABLES, get_client_session, get_descope_client


@contextmanager
def user_errors() -> Iterator[None]:
    """Descope and configuration errors are the user's to fix: one line on stderr, exit code 1."""
    try:
        yield
    except DescopeAuthError as exc:
        client = None
        if os.environ.get("DESCOPE_PROJECT_ID"):
            with contextlib.suppress(DescopeAuthError):
                client = get_descope_client()
        raise click.ClickException(str(diagnose(exc, client))) from None


def expiry_text(expires_at: int) -> str:
    when = datetime.fromtimestamp(expires_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    left = expires_at - int(time.time())
    return f"{when} (in {left // 60} min {left % 60} s)" if left >= 0 else f"{when} ({-left} s ago)"


@click.command("token")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of export lines.")
def token(as_json: bool) -> None:
    """Get a session token from DESCOPE_ACCESS_KEY, or refresh DESCOPE_REFRESH_TOKEN, and print it as
    `export DESCOPE_SESSION_TOKEN=...` lines for `eval "$(mlflow-descope-auth token)"`.

    The output is a credential: do not paste it into tickets or chat.
    """
    env = os.environ
    access_key, refresh_token = env.get("DESCOPE_ACCESS_KEY"), env.get("DESCOPE_REFRESH_TOKEN")
    if not access_key and not refresh_token:
        raise click.ClickException(
            "set DESCOPE_ACCESS_KEY (Descope console: Access Keys) or DESCOPE_REFRESH_TOKEN first"
        )
    with user_errors():
        client = get_descope_client()
        result: SessionResult = (
            client.exchange_access_key(access_key)
            if access_key
            else client.refresh_session(refresh_token or "")
        )
    identity = result.identity
    source = "DESCOPE_ACCESS_KEY" if access_key else "DESCOPE_REFRESH_TOKEN"
    if as_json:
        payload = {
            "sessionJwt": result.session_token,
            "refreshJwt": result.refresh_token,
            "expiresAt": identity.expires_at,
            "user": identity.username,
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(f"export DESCOPE_SESSION_TOKEN={shlex.quote(result.session_token)}")
        if result.refresh_token and result.refresh_token != refresh_token:
            # Descope rotated the refresh token: the old one no longer works.
            click.echo(f"export DESCOPE_REFRESH_TOKEN={shlex.quote(result.refresh_token)}")
    click.echo(
        f"Session for {identity.username} from {source}, expires {expiry_text(identity.expires_at)}.",
        err=True,
    )


def level_text(who: Mapping[str, Any]) -> str:
    if who.get("is_admin"):
        return "admin (manages everything, including permissions)"
    return str(who.get("permission"))


def identity_lines(who: Mapping[str, Any], mapped_by: str) -> list[str]:
    tenants = ", ".join(
        f"{tid} (roles: {', '.join(t.get('roles', [])) or '-'})"
        for tid, t in (who.get("tenants") or {}).items()
    )
    level = level_text(who)
    return [
        f"user          {who.get('username')}",
        f"user id       {who.get('user_id')}",
        f"email         {who.get('email') or '-'}",
        f"name          {who.get('name') or '-'}",
        f"roles         {', '.join(who.get('roles') or []) or '-'}",
        f"permissions   {', '.join(who.get('permissions') or []) or '-'}",
        f"tenants       {tenants or '-'}",
        f"MLflow        {level}  ({mapped_by})",
        f"expires       {expiry_text(int(who.get('expires_at', 0)))}",
    ]


def server_view(token: str) -> tuple[dict[str, Any], str] | None:
    """How the MLflow server at MLFLOW_TRACKING_URI sees this session: its role mapping is the one
    that counts, and this shell may not have the server's DESCOPE_ROLE_PERMISSIONS."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        resp = requests.get(
            f"{uri.rstrip('/')}/auth/user", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None
    try:
        who = resp.json()
    except ValueError:
        return None
    return (who, f"as the server {uri} maps it") if isinstance(who, dict) else None


@click.command("whoami")
@click.option("--json", "as_json", is_flag=True, help="Print the identity as JSON.")
def whoami(as_json: bool) -> None:
    """Who the Descope credentials in this environment (DESCOPE_ACCESS_KEY, DESCOPE_SESSION_TOKEN or
    DESCOPE_REFRESH_TOKEN) belong to, and the MLflow permission they map to: as the server at
    MLFLOW_TRACKING_URI maps it when it runs the Descope plugin, else by this shell's settings."""
    env = os.environ
    stored = env.get("MLFLOW_TRACKING_URI", "").startswith("http") and stored_login.exists(
        env["MLFLOW_TRACKING_URI"]
    )
    if not stored and not any(env.get(n) for n in CREDENTIAL_VARIABLES):
        raise click.ClickException(
            "no credentials: run `mlflow-descope-auth login`, or set DESCOPE_ACCESS_KEY, or "
            "DESCOPE_SESSION_TOKEN (and DESCOPE_REFRESH_TOKEN)"
        )
    with user_errors():
        token, identity = get_client_session().token_and_identity()
    view = server_view(token)
    who, mapped_by = view if view else (identity.to_dict(), "by this shell's DESCOPE_* settings")
    if as_json:
        click.echo(json.dumps({**who, "mapped_by": mapped_by}, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(identity_lines(who, mapped_by)))
