"""``doctor``: checks the configuration and credentials in this environment, end to end, and says
in one line each what is wrong and how to fix it."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import click
import requests

from mlflow_descope_auth._core import (
    ClientSession,
    ConfigurationError,
    DescopeApiError,
    DescopeAuthError,
    DescopeClient,
    DescopeUnreachableError,
    ExpiredTokenError,
    Setting,
)
from mlflow_descope_auth.cli.credentials import expiry_text, level_text
from mlflow_descope_auth.cli.plugins import plugin_statuses
from mlflow_descope_auth.cli.progress import mask_secret, mask_url_password
from mlflow_descope_auth.client import stored_login
from mlflow_descope_auth.clients import CREDENTIAL_VARIABLES
from mlflow_descope_auth.variables import VARIABLES

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    status: Status
    text: str


def shown_value(setting: Setting, env: Mapping[str, str]) -> str:
    """The variable's value in ``env`` as a person may see it (secrets and URI passwords masked),
    or its default."""
    value = env.get(setting.name, "")
    if not value:
        return f"(default) {setting.default_shown}"
    if setting.kind == "secret":
        return mask_secret(value)
    if setting.kind in ("uri", "http_url"):
        return mask_url_password(value)
    return value


def configuration_lines(env: Mapping[str, str]) -> list[str]:
    """One line per row of the core's settings table: the value (masked) or the default."""
    width = max(len(v.name) for v in VARIABLES)
    return [f"  {var.name:<{width}}  {shown_value(var, env)}" for var in VARIABLES]


class Doctor:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.checks: list[Check] = []
        self.client: DescopeClient | None = None
        self.session_token: str | None = None
        self.stored: stored_login.StoredLogin | None = None
        uri = env.get("MLFLOW_TRACKING_URI", "")
        if uri.startswith(("http://", "https://")) and not any(env.get(n) for n in CREDENTIAL_VARIABLES):
            self.stored = stored_login.load(uri)
        if self.stored is not None and not env.get("DESCOPE_PROJECT_ID"):
            # As the client plugins do: the stored login names its project and Descope URL.
            stored = {"DESCOPE_PROJECT_ID": self.stored.project_id, "DESCOPE_BASE_URI": self.stored.base_url}
            env = {**env, **stored}
        self.env = env

    def report(self, status: Status, text: str) -> None:
        self.checks.append(Check(status, text))
        click.echo(f"  {status:<4}  {text}")

    def run(self) -> bool:
        self.plugins()
        if self.configuration():
            if self.keys():
                self.clock()
                self.credentials()
            self.tracking_server()
        return not any(c.status == "FAIL" for c in self.checks)

    def plugins(self) -> None:
        broken = [s for s in plugin_statuses() if not s.ok]
        if broken:
            for s in broken:
                self.report("FAIL", f"MLflow plugin {s.group}: {s.detail}")
        else:
            self.report("ok", "the four MLflow entry points named descope are registered")

    def configuration(self) -> bool:
        if not self.env.get("DESCOPE_PROJECT_ID", "").strip():
            self.report(
                "FAIL",
                "DESCOPE_PROJECT_ID is not set: copy it from the Descope console (Project settings) and "
                "`export DESCOPE_PROJECT_ID=P2...`",
            )
            return False
        try:
            self.client = DescopeClient.from_env(self.env)
        except ConfigurationError as exc:
            self.report("FAIL", f"{exc} (see the README's configuration reference)")
            return False
        from mlflow_descope_auth.server.settings import ServerSettings

        try:
            ServerSettings.from_env(self.env)
        except ConfigurationError as exc:
            self.report("FAIL", str(exc))
            return False
        self.report("ok", f"configuration is valid (project {self.client.project_id})")
        return True

    def keys(self) -> bool:
        assert self.client is not None
        url = f"{self.client.base_url}/v2/keys/{self.client.project_id}"
        click.echo(f"        fetching signing keys from {url} …", err=True)
        try:
            count = self.client.fetch_keys()
        except DescopeUnreachableError as exc:
            self.report(
                "FAIL",
                f"{exc}. Fix: check DESCOPE_BASE_URI, the network, and HTTPS_PROXY if you need a proxy",
            )
            return False
        except DescopeApiError as exc:
            self.report("FAIL", f"{exc} (Descope at {self.client.base_url} does not know this project)")
            return False
        self.report("ok", f"Descope is reachable at {self.client.base_url}: {count} signing key(s)")
        return True

    def clock(self) -> None:
        assert self.client is not None
        try:
            resp = requests.get(f"{self.client.base_url}/v2/keys/{self.client.project_id}", timeout=5)
            served = parsedate_to_datetime(resp.headers["Date"]).timestamp()
        except (requests.RequestException, KeyError, TypeError, ValueError):
            self.report("warn", "cannot compare this machine's clock with Descope's (no Date header)")
            return
        skew = time.time() - served
        leeway = float(self.client.settings()["leeway"])
        if abs(skew) <= max(leeway, 2.0):
            self.report("ok", f"clock within {abs(skew):.0f} s of Descope's")
        else:
            direction = "ahead of" if skew > 0 else "behind"
            self.report(
                "FAIL",
                f"this machine's clock is {abs(skew):.0f} s {direction} Descope's (over the {leeway:.0f} s "
                "leeway): sessions will look expired or not yet valid. Fix: sync the clock (NTP)",
            )

    def credentials(self) -> None:
        assert self.client is not None
        env = self.env
        access_key = env.get("DESCOPE_ACCESS_KEY")
        session, refresh = env.get("DESCOPE_SESSION_TOKEN"), env.get("DESCOPE_REFRESH_TOKEN")
        if not (access_key or session or refresh or self.stored):
            self.report(
                "FAIL",
                "no credentials: run `mlflow-descope-auth login` (a person), or set DESCOPE_ACCESS_KEY "
                "(CI, services) or DESCOPE_SESSION_TOKEN and DESCOPE_REFRESH_TOKEN",
            )
            return
        refresh_ok = False
        if self.stored is not None:
            self.stored_session()
            return
        if refresh:
            try:
                exp = self.client.validate_refresh_token(refresh)
                self.report("ok", f"DESCOPE_REFRESH_TOKEN is valid until {expiry_text(exp)}")
                refresh_ok = True
            except DescopeAuthError as exc:
                self.report("FAIL", f"DESCOPE_REFRESH_TOKEN: {exc}")
        if session:
            try:
                identity = self.client.validate_session(session)
                self.session_token = session
                self.report(
                    "ok",
                    f"DESCOPE_SESSION_TOKEN is valid: {identity.username}, "
                    f"expires {expiry_text(identity.expires_at)}",
                )
            except ExpiredTokenError:
                if refresh_ok or access_key:
                    self.report("warn", "DESCOPE_SESSION_TOKEN expired; the client plugin renews it itself")
                else:
                    self.report(
                        "FAIL",
                        'DESCOPE_SESSION_TOKEN expired. Fix: `eval "$(mlflow-descope-auth token)"` with '
                        "DESCOPE_ACCESS_KEY or DESCOPE_REFRESH_TOKEN set, or sign in again",
                    )
            except DescopeAuthError as exc:
                self.report("FAIL", f"DESCOPE_SESSION_TOKEN: {exc}")
        if access_key:
            try:
                result = self.client.exchange_access_key(access_key)
                self.session_token = result.session_token
                identity = result.identity
                self.report("ok", f"DESCOPE_ACCESS_KEY exchanges for a session of {identity.username}")
            except DescopeAuthError as exc:
                self.report("FAIL", f"DESCOPE_ACCESS_KEY: {exc}")

    def stored_session(self) -> None:
        """The session `mlflow-descope-auth login` stored, renewed as a script would renew it."""
        assert self.client is not None and self.stored is not None
        uri = self.stored.tracking_uri
        try:
            path = str(stored_login.session_path(uri))
            session = ClientSession(self.client, login_file=path, tracking_uri=uri)
            token, identity = session.token_and_identity()
        except DescopeAuthError as exc:
            self.report("FAIL", str(exc))
            return
        self.session_token = token
        self.report(
            "ok",
            f"signed in to {uri} with `mlflow-descope-auth login` as {identity.username}, "
            f"session expires {expiry_text(identity.expires_at)}",
        )

    def tracking_server(self) -> None:
        uri = self.env.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            self.report(
                "FAIL",
                "MLFLOW_TRACKING_URI is not set, so MLflow would log to local files, not to your server. "
                "Fix: `export MLFLOW_TRACKING_URI=https://mlflow.example.com`",
            )
            return
        if not uri.startswith(("http://", "https://")):
            self.report(
                "FAIL",
                f"MLFLOW_TRACKING_URI is {mask_url_password(uri)}, not the http(s) URL of an MLflow server "
                "running the Descope plugin",
            )
            return
        uri = uri.rstrip("/")
        if self.env.get("MLFLOW_TRACKING_AUTH") != "descope":
            self.report(
                "FAIL",
                "MLFLOW_TRACKING_AUTH is not descope, so MLflow will not send the Descope session. "
                "Fix: `export MLFLOW_TRACKING_AUTH=descope`",
            )
        try:
            health = requests.get(f"{uri}/auth/health", timeout=5)
        except requests.RequestException as exc:
            self.report("FAIL", f"the MLflow server {uri} cannot be reached ({type(exc).__name__})")
            return
        if health.status_code == 404:
            self.report("FAIL", f"{uri} answers, but not as `mlflow server --app-name descope`")
            return
        if health.status_code != 200:
            self.report(
                "warn", f"{uri}/auth/health answers {health.status_code}: the server cannot reach Descope"
            )
        else:
            self.report("ok", f"{uri} runs the Descope server plugin and reaches Descope")
        if self.session_token is not None:
            self.server_view(uri, self.session_token)

    def server_view(self, uri: str, token: str) -> None:
        """Who the server says this session is, and its level by the server's role mapping (this
        shell's DESCOPE_ROLE_PERMISSIONS may differ, or be unset): what `whoami` shows too."""
        try:
            resp = requests.get(f"{uri}/auth/user", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        except requests.RequestException as exc:
            self.report("FAIL", f"{uri} did not answer who this session is ({type(exc).__name__})")
            return
        if resp.status_code == 401:
            self.report(
                "FAIL",
                f"{uri} refuses this session (401): the server and this shell probably use different "
                "DESCOPE_PROJECT_ID / DESCOPE_BASE_URI",
            )
            return
        try:
            who = resp.json()
        except ValueError:
            who = None
        if resp.status_code != 200 or not isinstance(who, dict):
            self.report("FAIL", f"{uri} answered {resp.status_code} when asked who this session is")
            return
        self.report(
            "ok",
            f"{uri} accepts this session: {who.get('username')}, MLflow {level_text(who)} "
            "(as the server maps it)",
        )


@click.command("doctor")
def doctor() -> None:
    """Check the configuration, reach Descope, validate DESCOPE_SESSION_TOKEN / DESCOPE_REFRESH_TOKEN /
    DESCOPE_ACCESS_KEY (or the session `login` stored), check that MLFLOW_TRACKING_URI's server runs
    the plugin and accepts the session, and show the MLflow level the server gives it; exit 1 on any
    failure (MLFLOW_TRACKING_URI or MLFLOW_TRACKING_AUTH unset included)."""
    env = dict(os.environ)
    click.echo("Configuration (secrets masked):")
    click.echo("\n".join(configuration_lines(env)))
    click.echo("\nChecks:")
    ok = Doctor(env).run()
    if not ok:
        click.echo("\nSome checks failed; see the lines marked FAIL.", err=True)
        raise SystemExit(1)
    click.echo("\nAll checks passed.")
