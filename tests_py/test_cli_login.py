"""`mlflow-descope-auth login` / `logout` end to end: the CLI as a subprocess, the real `mlflow server
--app-name descope` and its login page in real Chromium, the emulator as Descope, then a real MLflow
client that has no credential but the stored session. And the hand-off's refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, expect

from mlflow_descope_auth._core import DescopeClient, RefreshFailedError
from mlflow_descope_auth.client import stored_login

from .browser import screenshot
from .descope_server import DescopeServer
from .unit.inprocess import expired_session

COMMAND = [sys.executable, "-m", "mlflow_descope_auth.cli"]

LOG_A_RUN = textwrap.dedent(
    """
    import mlflow
    mlflow.set_experiment("cli-login")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.5)
    print(run.info.run_id)
    """
)


def user_env(config: Path, **extra: str) -> dict[str, str]:
    """A person's shell: no DESCOPE_* variables, a private config directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESCOPE_", "MLFLOW_"))}
    env["XDG_CONFIG_HOME"] = str(config)
    env.update(extra)
    return env


def start_login(server: DescopeServer, config: Path) -> tuple[subprocess.Popen[str], str]:
    """Runs `login --no-browser`; returns the process and the URL it printed."""
    proc = subprocess.Popen(
        [*COMMAND, "login", "--tracking-uri", server.url, "--no-browser", "--timeout", "180"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=user_env(config),
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.strip().startswith(server.url + "/auth/login?"):
            return proc, line.strip()
    proc.kill()
    raise AssertionError(f"login printed no URL (exit {proc.wait()})")


def finish(proc: subprocess.Popen[str]) -> str:
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest
    return rest


def run_script(server: DescopeServer, config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "log_a_run.py"
    script.write_text(LOG_A_RUN)
    env = user_env(config, MLFLOW_TRACKING_URI=server.url, MLFLOW_TRACKING_AUTH="descope")
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
    )


def stored_file(config: Path) -> Path:
    files = list((config / "mlflow-descope-auth" / "sessions").glob("*.json"))
    assert len(files) == 1, files
    return files[0]


def run_user(server: DescopeServer, run_id: str) -> str:
    got = server.api("GET", "/api/2.0/mlflow/runs/get", "admin", params={"run_id": run_id})
    assert got.status_code == 200, got.text
    return str(got.json()["run"]["info"]["user_id"])


def test_login_in_the_browser_then_a_script_logs_a_run_then_logout(
    descope: DescopeServer, browser: Browser, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    proc, url = start_login(descope, config)
    page = browser.new_page()
    try:
        page.goto(url)
        expect(page.locator("#cli-notice")).to_be_visible()
        screenshot(page, "cli-login-01-login-page")
        page.get_by_role("button", name="Sign in as Eddie Editor").click()
        page.wait_for_url(lambda u: u.startswith("http://127.0.0.1:") and "/callback?" in u)
        expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        screenshot(page, "cli-login-02-handed-over")
    finally:
        page.close()
    output = finish(proc)
    assert "Signed in to" in output and "editor@example.com" in output

    path = stored_file(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())
    assert saved["tracking_uri"] == descope.url
    assert saved["session_token"] not in output and saved["refresh_token"] not in output

    # A script with no DESCOPE_* variable at all: the stored session is what it sends.
    out = run_script(descope, config, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    editor = DescopeClient(descope.emulator.project_id, base_url=descope.emulator.base_url)
    assert (
        run_user(descope, out.stdout.split()[-1]) == editor.validate_session(saved["session_token"]).username
    )

    out = subprocess.run(
        [*COMMAND, "logout", "--tracking-uri", descope.url],
        capture_output=True, text=True, timeout=60, env=user_env(config),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert not path.exists()
    # Ended at Descope too, not just forgotten here.
    with pytest.raises(RefreshFailedError):
        editor.refresh_session(saved["refresh_token"])

    after = run_script(descope, config, tmp_path)
    assert after.returncode != 0
    assert "mlflow-descope-auth login" in after.stderr.strip().splitlines()[-1]


def test_a_stored_session_that_expired_is_renewed_and_written_back(
    descope: DescopeServer, tmp_path: Path
) -> None:
    emu = descope.emulator
    config = tmp_path / "config"
    os.environ["XDG_CONFIG_HOME"] = str(config)  # for stored_login.save below; the conftest restores it
    try:
        stored_login.save(
            stored_login.StoredLogin(
                tracking_uri=descope.url,
                project_id=emu.project_id,
                base_url=emu.base_url,
                session_token=expired_session(emu, "editor"),
                refresh_token=emu.login("editor")["refreshJwt"],
                user="editor",
            )
        )
    finally:
        del os.environ["XDG_CONFIG_HOME"]
    before = json.loads(stored_file(config).read_text())
    out = run_script(descope, config, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    after = json.loads(stored_file(config).read_text())
    assert after["session_token"] != before["session_token"]
    identity = DescopeClient(emu.project_id, base_url=emu.base_url).validate_session(after["session_token"])
    assert identity.email == "editor@example.com"


def test_a_notebook_uses_the_stored_session_for_the_uri_it_sets(
    descope: DescopeServer, tmp_path: Path
) -> None:
    """The README's notebook cell, in IPython: the tracking URI set in the notebook, not the shell."""
    emu = descope.emulator
    config = tmp_path / "config"
    os.environ["XDG_CONFIG_HOME"] = str(config)
    try:
        stored_login.save(
            stored_login.StoredLogin(
                tracking_uri=descope.url + "/",  # spelled differently from the notebook's: one server
                project_id=emu.project_id,
                base_url=emu.base_url,
                session_token=emu.login("editor")["sessionJwt"],
                refresh_token=None,
                user="editor",
            )
        )
    finally:
        del os.environ["XDG_CONFIG_HOME"]
    cell = textwrap.dedent(
        f"""
        import os
        os.environ["MLFLOW_TRACKING_AUTH"] = "descope"
        import mlflow
        mlflow.set_tracking_uri("{descope.url}")
        mlflow.set_experiment("from-a-notebook")
        with mlflow.start_run() as run:
            mlflow.log_param("where", "notebook")
        print("RUN", run.info.run_id)
        """
    )
    out = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "-c", cell],
        capture_output=True, text=True, timeout=180, env=user_env(config), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = out.stdout.split("RUN", 1)[1].split()[0]
    assert (
        run_user(descope, run_id)
        == DescopeClient(emu.project_id, base_url=emu.base_url)
        .exchange_access_key(emu.access_key_for("editor"))
        .identity.username
    )


# -- the hand-off's refusals ---------------------------------------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_in_for_cli(server: DescopeServer, cli: dict[str, str]) -> requests.Response:
    """What the login page posts after the person signed in, for a CLI sign-in."""
    tokens = server.session("editor")
    return requests.post(
        f"{server.url}/auth/session",
        json={**tokens, "cli": cli},
        headers={"Origin": server.url},
        timeout=30,
    )


def issue_code(server: DescopeServer, challenge: str, port: int = 40000) -> str:
    resp = sign_in_for_cli(server, {"cli": str(port), "state": "s" * 32, "challenge": challenge})
    assert resp.status_code == 200, resp.text
    redirect = urlsplit(resp.json()["redirect"])
    assert (redirect.scheme, redirect.netloc, redirect.path) == ("http", f"127.0.0.1:{port}", "/callback")
    query = parse_qs(redirect.query)
    assert query["state"] == ["s" * 32]
    return str(query["code"][0])


def redeem(server: DescopeServer, code: str, verifier: str) -> requests.Response:
    return requests.post(
        f"{server.url}/auth/cli/token", json={"code": code, "verifier": verifier}, timeout=30
    )


@pytest.mark.parametrize("port", ["evil.example:80", "evil.example", "127.0.0.1:9", "80", "-1", "99999", ""])
def test_a_callback_anywhere_but_a_loopback_port_is_refused(descope: DescopeServer, port: str) -> None:
    _, challenge = pkce()
    fields = {"cli": port, "state": "s" * 32, "challenge": challenge}
    page = requests.get(f"{descope.url}/auth/login", params=fields, timeout=30)
    assert page.status_code == 400, page.text
    assert "mlflow-descope-auth login" in page.json()["message"]
    posted = sign_in_for_cli(descope, fields)
    assert posted.status_code == 400, posted.text
    assert "sessionJwt" not in posted.text


def test_a_code_works_once_with_its_verifier(descope: DescopeServer) -> None:
    verifier, challenge = pkce()
    code = issue_code(descope, challenge)
    first = redeem(descope, code, verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    client = DescopeClient(tokens["projectId"], base_url=tokens["baseUrl"])
    assert client.validate_session(tokens["sessionJwt"]).email == "editor@example.com"
    assert first.headers["Cache-Control"] == "no-store"

    again = redeem(descope, code, verifier)
    assert again.status_code == 400 and "already used" in again.json()["message"]


def test_a_wrong_verifier_is_refused_and_spends_the_code(descope: DescopeServer) -> None:
    verifier, challenge = pkce()
    code = issue_code(descope, challenge)
    other, _ = pkce()
    wrong = redeem(descope, code, other)
    assert wrong.status_code == 400 and "verifier does not match" in wrong.json()["message"]
    assert "sessionJwt" not in wrong.text
    # A stolen code tried with a guess cannot be tried again, not even with the right verifier.
    assert redeem(descope, code, verifier).status_code == 400


@pytest.mark.parametrize(
    "body",
    [{}, {"code": 5, "verifier": "x"}, {"code": "a" * 43}, [1], {"code": "a" * 43, "verifier": "b" * 43}],
)
def test_bad_code_exchanges_are_clear_400s(descope: DescopeServer, body: Any) -> None:
    resp = requests.post(f"{descope.url}/auth/cli/token", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_the_cli_refuses_a_callback_with_another_state_and_keeps_waiting(
    descope: DescopeServer, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    proc, url = start_login(descope, config)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    callback = f"http://127.0.0.1:{query['cli']}/callback"

    forged = requests.get(callback, params={"code": "a" * 43, "state": "not-the-cli-state-000"}, timeout=30)
    assert forged.status_code == 400 and "not started by" in forged.text
    assert proc.poll() is None

    # The genuine hand-off still completes, as the login page would do it.
    resp = sign_in_for_cli(descope, query)
    assert resp.status_code == 200, resp.text
    assert requests.get(resp.json()["redirect"], timeout=30).status_code == 200
    finish(proc)
    assert stat.S_IMODE(stored_file(config).stat().st_mode) == 0o600
