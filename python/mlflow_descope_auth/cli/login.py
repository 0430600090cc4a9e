"""``login`` and ``logout``: a person signs in at the tracking server's login page in a browser, and
the session is stored for that server, where the client plugins find it (no access key, no tokens
copied by hand).

The hand-off (SECURITY.md, "Signing in the command line"): a loopback listener on 127.0.0.1 and a
random port, a random ``state`` and a PKCE verifier; the browser brings back a one-time code, which
only the verifier turns into tokens, in the body of a POST.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import secrets
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import click
import requests

from mlflow_descope_auth._core import DescopeAuthError, DescopeClient, logout_login
from mlflow_descope_auth.cli.credentials import expiry_text, user_errors
from mlflow_descope_auth.client import stored_login

DEFAULT_TIMEOUT_SECONDS = 300


def _tracking_uri(option: str | None) -> str:
    uri = option or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise click.ClickException(
            "which MLflow server? pass --tracking-uri https://mlflow.example.com or set MLFLOW_TRACKING_URI"
        )
    try:
        return stored_login.normalize_uri(uri)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _page(title: str, text: str) -> bytes:
    return (
        "<!doctype html><meta charset='utf-8'><title>MLflow sign-in</title>"
        "<body style='font-family:sans-serif;max-width:36em;margin:4em auto;line-height:1.5'>"
        f"<h1 style='font-size:1.3em'>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    ).encode()


class _Callback:
    """The loopback listener: waits for ``/callback?code=..&state=..`` with our state."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.code: str | None = None
        self.done = threading.Event()
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path != "/callback":
                    self._answer(404, "Not found", "This address only receives the MLflow sign-in.")
                    return
                state, code = query.get("state", ""), query.get("code", "")
                # A page elsewhere could send the browser here too: only our own state is accepted.
                genuine = secrets.compare_digest(state.encode(), callback.state.encode())
                if callback.done.is_set() or not genuine or not code:
                    self._answer(
                        400,
                        "Sign-in not accepted",
                        "This sign-in was not started by the mlflow-descope-auth command waiting here.",
                    )
                    return
                callback.code = code
                callback.done.set()
                self._answer(
                    200,
                    "Signed in",
                    "The mlflow-descope-auth command has your session: scripts and notebooks on this "
                    "computer can use MLflow now. You can close this tab.",
                )

            def _answer(self, status: int, title: str, text: str) -> None:
                body = _page(title, text)
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # the request line holds the code

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])

    def wait(self, timeout: float) -> str | None:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            self.done.wait(timeout)
        finally:
            self.server.shutdown()
            self.server.server_close()
        return self.code


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@click.command("login")
@click.option("--tracking-uri", help="The MLflow server (default: MLFLOW_TRACKING_URI).")
@click.option("--no-browser", is_flag=True, help="Print the sign-in URL instead of opening a browser.")
@click.option(
    "--timeout",
    type=click.IntRange(10, 3600),
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for the sign-in.",
)
def login(tracking_uri: str | None, no_browser: bool, timeout: int) -> None:
    """Sign in at the MLflow server's login page in a browser and store the session for that server
    (a private file in your config directory). Scripts and notebooks with MLFLOW_TRACKING_AUTH=descope
    and no DESCOPE_ACCESS_KEY / DESCOPE_SESSION_TOKEN then use it, and renew it, by themselves."""
    uri = _tracking_uri(tracking_uri)
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    callback = _Callback(state)
    query = urlencode({"cli": callback.port, "state": state, "challenge": _challenge(verifier)})
    url = f"{uri}/auth/login?{query}"
    if no_browser or not webbrowser.open(url):
        click.echo(f"Open this URL in a browser on this computer to sign in:\n\n  {url}\n", err=True)
    else:
        click.echo(f"Opened your browser at {url}", err=True)
    click.echo(f"Waiting up to {timeout} s for the sign-in (Ctrl-C to give up)…", err=True)
    code = callback.wait(timeout)
    if not code:
        raise click.ClickException(f"no sign-in within {timeout} s; run `mlflow-descope-auth login` again")
    try:
        resp = requests.post(f"{uri}/auth/cli/token", json={"code": code, "verifier": verifier}, timeout=30)
    except requests.RequestException as exc:
        raise click.ClickException(
            f"the MLflow server {uri} cannot be reached ({type(exc).__name__})"
        ) from None
    tokens = _json(resp)
    if resp.status_code != 200 or not isinstance(tokens.get("sessionJwt"), str):
        message = tokens.get("message") or f"HTTP {resp.status_code}"
        raise click.ClickException(f"{uri} did not hand over the session: {message}")
    project_id = os.environ.get("DESCOPE_PROJECT_ID") or str(tokens.get("projectId") or "")
    base_url = str(tokens.get("baseUrl") or "") if not os.environ.get("DESCOPE_PROJECT_ID") else None
    with user_errors():
        client = DescopeClient(project_id, base_url=base_url or os.environ.get("DESCOPE_BASE_URI") or None)
        identity = client.validate_session(tokens["sessionJwt"])
    refresh = tokens.get("refreshJwt") if isinstance(tokens.get("refreshJwt"), str) else None
    path = stored_login.save(
        stored_login.StoredLogin(
            tracking_uri=uri,
            project_id=client.project_id,
            base_url=client.base_url,
            session_token=tokens["sessionJwt"],
            refresh_token=refresh,
            user=identity.username,
        )
    )
    renewal = "renewed automatically" if refresh else "not renewable (no refresh token): sign in again then"
    click.echo(f"Signed in to {uri} as {identity.email or identity.username}.", err=True)
    click.echo(f"Session stored in {path}; expires {expiry_text(identity.expires_at)}, {renewal}.", err=True)


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@click.command("logout")
@click.option("--tracking-uri", help="The MLflow server (default: MLFLOW_TRACKING_URI).")
def logout(tracking_uri: str | None) -> None:
    """Sign out of the MLflow server: ends the stored session at Descope (when reachable) and deletes
    the file `login` stored."""
    uri = _tracking_uri(tracking_uri)
    stored = stored_login.load(uri)
    if stored is None and not stored_login.exists(uri):
        click.echo(f"Not signed in to {uri}; nothing to do.", err=True)
        return
    if stored is not None and stored.renewable:
        try:
            client = DescopeClient(stored.project_id, base_url=stored.base_url)
            logout_login(str(stored_login.session_path(uri)), client)
        except DescopeAuthError as exc:
            click.echo(f"Could not end the session at Descope ({exc}); deleting it here anyway.", err=True)
    stored_login.delete(uri)
    click.echo(f"Signed out of {uri}.", err=True)
