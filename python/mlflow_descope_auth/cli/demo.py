"""``demo``: the whole product on loopback, offline: the Descope emulator plus
``mlflow server --app-name descope``, and the lines a client script needs."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from types import FrameType

import click
import requests

from mlflow_descope_auth._core import DescopeClient
from mlflow_descope_auth.cli.progress import wait_for
from mlflow_descope_auth.emulator import DEFAULT_PORT, Emulator

HOST = "127.0.0.1"  # emulator tokens must never be trusted beyond this machine
START_TIMEOUT = 180.0
# Demo roles -> MLflow permissions (admin is an admin role by default).
DEMO_ROLE_PERMISSIONS = "editor=EDIT,reader=READ"
PERMISSION_MEANING = {
    "MANAGE": "everything, including other users' permissions",
    "EDIT": "create and change experiments, runs and models",
    "READ": "view only",
    "NO_PERMISSIONS": "nothing until granted",
}


def _ensure_port_free(port: int, option: str) -> None:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise click.ClickException(
                f"port {port} on {HOST} is in use; stop what uses it or pick another with {option}"
            ) from None


def _server_env(emulator_url: str, project_id: str, workdir: Path) -> dict[str, str]:
    # The demo owns the Descope configuration: a real project's settings in the user's shell must not
    # leak into a server that trusts the emulator (and the other way round).
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCOPE_")}
    env.pop("MLFLOW_TRACKING_AUTH", None)
    env.update(
        {
            "DESCOPE_PROJECT_ID": project_id,
            "DESCOPE_BASE_URI": emulator_url,
            "DESCOPE_WEB_COMPONENT_URL": f"{emulator_url}/emulator/web-component.js",
            "DESCOPE_ROLE_PERMISSIONS": DEMO_ROLE_PERMISSIONS,
            "DESCOPE_AUTH_DB_URI": f"sqlite:///{workdir / 'auth.db'}",
            "DESCOPE_AUTH_STATE_DIR": str(workdir / "state"),
        }
    )
    return env


def _log_tail(log_path: Path, lines: int = 25) -> str:
    try:
        text = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        proc.wait()
    except subprocess.TimeoutExpired:
        # The group may have gone between the timeout and the kill.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@click.command("demo")
@click.option("--port", default=5000, show_default=True, type=int, help="Port of the MLflow server.")
@click.option(
    "--emulator-port", default=DEFAULT_PORT, show_default=True, type=int, help="Port of the Descope emulator."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("mlflow-descope-demo"),
    show_default=True,
    help="Folder for the MLflow database, artifacts, auth database and server log (kept between runs).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 8), help="Server workers.")
@click.option(
    "--session-ttl",
    default=600,
    show_default=True,
    type=click.IntRange(30, 86_400),
    help="Lifetime of demo sessions in seconds (short ones show the transparent refresh).",
)
def demo(port: int, emulator_port: int, workdir: Path, workers: int, session_ttl: int) -> None:
    """Run MLflow behind Descope sign-in on this machine, offline: the Descope emulator and
    `mlflow server --app-name descope`, until Ctrl-C.

    Prints the URL to open, the demo users, and the `export` lines that make any MLflow script log to
    the demo server as the demo editor.
    """
    _ensure_port_free(port, "--port")
    _ensure_port_free(emulator_port, "--emulator-port")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    emu = Emulator(host=HOST, port=emulator_port, session_ttl=session_ttl).start()
    env = _server_env(emu.base_url, emu.project_id, workdir)
    url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "descope",
           "--host", HOST, "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
           "--artifacts-destination", str(workdir / "artifacts")]  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    try:
        click.echo(f"Descope emulator on {emu.base_url} (project {emu.project_id}).", err=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = proc

        def healthy() -> bool:
            if server.poll() is not None:
                raise click.ClickException(
                    f"mlflow server exited with code {server.returncode}; the end of {log_path}:\n"
                    + _log_tail(log_path)
                )
            try:
                return requests.get(f"{url}/auth/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        if not wait_for(f"Starting mlflow server on {url} (log: {log_path})", healthy, timeout=START_TIMEOUT):
            raise click.ClickException(
                f"mlflow server did not become healthy within {START_TIMEOUT:.0f}s; see {log_path}"
            )
        client = DescopeClient.from_env(env)
        click.echo(_banner(url, emu, client, workdir))
        while proc.poll() is None:
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
        raise click.ClickException(
            f"mlflow server stopped unexpectedly (code {proc.returncode}); the end of {log_path}:\n"
            + _log_tail(log_path)
        )
    except KeyboardInterrupt:
        click.echo("\nStopping…", err=True)
    finally:
        if proc is not None:
            _stop(proc)
        emu.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    click.echo("Demo stopped. Its data stays in " + str(workdir), err=True)


def _banner(url: str, emu: Emulator, client: DescopeClient, workdir: Path) -> str:
    lines = [
        "",
        "MLflow with Descope sign-in is running (offline demo).",
        "",
        f"  Open {url} and sign in as one of the demo users:",
    ]
    for user in emu.users:
        # What the server will really make of each user: their session, validated by the same core.
        identity = client.validate_session(emu.login(user.login_id)["sessionJwt"])
        level = "admin" if identity.is_admin else identity.permission
        meaning = PERMISSION_MEANING["MANAGE" if identity.is_admin else identity.permission]
        roles = ", ".join(user.roles) or "no roles"
        lines.append(f"    {user.login_id:<8} roles: {roles:<8} -> MLflow {level}: {meaning}")
    lines.append(f"  Sign out (to switch users): {url}/auth/logout")
    exports = {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_AUTH": "descope",
        "DESCOPE_PROJECT_ID": emu.project_id,
        "DESCOPE_BASE_URI": emu.base_url,
        "DESCOPE_ACCESS_KEY": emu.access_key_for("editor"),
    }
    lines += [
        "",
        f"  Data: {workdir} (MLflow and auth databases, artifacts, server.log)",
        "",
        "Log runs from a script as the demo editor: paste these lines into a shell, then run any MLflow",
        "script, for example `python examples/log_a_run.py`:",
        "",
        *(f"export {name}={shlex.quote(value)}" for name, value in exports.items()),
        "",
        "Ctrl-C stops the demo.",
    ]
    return "\n".join(lines)
