"""The `mlflow-descope-auth` command, run as a user would run it: a subprocess with a clean environment."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlflow_descope_auth._core import DescopeClient
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.variables import VARIABLES

from .descope_server import DescopeServer
from .servers import free_port
from .unit.inprocess import expired_session

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "mlflow_descope_auth.cli"]
SUBCOMMANDS = ["demo", "login", "logout", "doctor", "token", "whoami", "verify-plugin", "emulator"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESCOPE_", "MLFLOW_TRACKING_"))}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=180, env=env or clean_env()
    )


def assert_user_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    for needle in needles:
        assert needle in out.stderr + out.stdout, (needle, out.stdout, out.stderr)


def client_env(emu: Emulator, **extra: str) -> dict[str, str]:
    return clean_env(DESCOPE_PROJECT_ID=emu.project_id, DESCOPE_BASE_URI=emu.base_url, **extra)


# -- help, plugins, emulator ---------------------------------------------------------------------------


def test_verify_plugin_lists_every_entry_point() -> None:
    out = run("verify-plugin")
    assert out.returncode == 0, out.stdout + out.stderr
    for group in (
        "mlflow.request_auth_provider",
        "mlflow.request_header_provider",
        "mlflow.run_context_provider",
        "mlflow.app",
    ):
        assert f"OK       {group}: descope" in out.stdout


def test_the_console_script_is_installed_and_lists_every_subcommand() -> None:
    out = subprocess.run(["mlflow-descope-auth", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for sub in SUBCOMMANDS:
        assert f"  {sub} " in out.stdout, sub


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_has_help(sub: str) -> None:
    out = run(sub, "--help")
    assert out.returncode == 0 and "Usage:" in out.stdout


def test_emulator_rejects_a_bad_users_file_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "users.json"
    bad.write_text('{"users": [{"email": 5}]}')
    assert_user_error(run("emulator", "--port", "0", "--users-file", str(bad)), "users")


# -- demo ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], list[str], Path]]:
    """`mlflow-descope-auth demo` as a user starts it; yields the process and what it printed."""
    workdir = tmp_path_factory.mktemp("demo")
    port, emulator_port = free_port(), free_port()
    args = ["--port", str(port), "--emulator-port", str(emulator_port), "--workdir", str(workdir / "data")]
    proc = subprocess.Popen(
        ["mlflow-descope-auth", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(DESCOPE_PROJECT_ID="P2someoneElsesRealProject", DESCOPE_ADMIN_ROLES="nobody"),
        start_new_session=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops the demo.") or time.monotonic() > deadline:
            break
    try:
        assert lines and lines[-1].startswith("Ctrl-C"), "\n".join(lines)
        yield proc, lines, workdir / "data"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def exports(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        m = re.fullmatch(r"export ([A-Z_]+)=(\S+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_demo_prints_the_url_the_users_and_the_client_environment(
    demo: tuple[subprocess.Popen[str], list[str], Path],
) -> None:
    _, lines, workdir = demo
    text = "\n".join(lines)
    env = exports(lines)
    assert set(env) >= {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_AUTH",
        "DESCOPE_PROJECT_ID",
        "DESCOPE_BASE_URI",
        "DESCOPE_ACCESS_KEY",
    }
    assert env["MLFLOW_TRACKING_AUTH"] == "descope"
    assert f"Open {env['MLFLOW_TRACKING_URI']}" in text
    # The demo's own settings win over a real project's in the user's shell.
    assert env["DESCOPE_PROJECT_ID"] != "P2someoneElsesRealProject"
    assert re.search(r"admin +roles: admin +-> MLflow admin", text), text
    assert re.search(r"editor +roles: editor +-> MLflow EDIT", text), text
    assert re.search(r"reader +roles: reader +-> MLflow READ", text), text
    assert str(workdir) in text
    assert requests.get(env["MLFLOW_TRACKING_URI"] + "/auth/health", timeout=10).status_code == 200


def test_the_printed_lines_make_the_example_script_log_a_run(
    demo: tuple[subprocess.Popen[str], list[str], Path],
) -> None:
    _, lines, _ = demo
    env = exports(lines)
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "log_a_run.py")],
        capture_output=True,
        text=True,
        timeout=180,
        env=clean_env(**env),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = re.search(r"Logged run ([0-9a-f]{32}) as (\S+)", out.stdout)
    assert run_id, out.stdout

    # Checked independently, as the demo admin signed in at the demo's emulator.
    project, base = env["DESCOPE_PROJECT_ID"], env["DESCOPE_BASE_URI"]
    admin = requests.post(f"{base}/emulator/login", json={"loginId": "admin"}, timeout=10).json()
    editor = DescopeClient(project, base_url=base).exchange_access_key(env["DESCOPE_ACCESS_KEY"]).identity
    got = requests.get(
        env["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/get",
        params={"run_id": run_id.group(1)},
        headers={"Authorization": f"Bearer {admin['sessionJwt']}"},
        timeout=30,
    )
    assert got.status_code == 200, got.text
    logged = got.json()["run"]
    assert logged["info"]["user_id"] == editor.username == run_id.group(2)
    assert {m["key"] for m in logged["data"]["metrics"]} == {"loss"}
    tags = {t["key"]: t["value"] for t in logged["data"]["tags"]}
    assert tags["descope.email"] == "editor@example.com"


def test_ctrl_c_stops_the_demo_cleanly(demo: tuple[subprocess.Popen[str], list[str], Path]) -> None:
    proc, lines, workdir = demo
    uri = exports(lines)["MLFLOW_TRACKING_URI"]
    emulator = exports(lines)["DESCOPE_BASE_URI"]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    assert "Demo stopped" in stderr and "Traceback" not in stderr
    for url in (uri + "/health", emulator + "/emulator/health"):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
    assert (workdir / "mlflow.db").exists() and (workdir / "server.log").exists()


def test_demo_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert_user_error(run("demo", "--port", port), f"port {port}", "--port")


# -- doctor --------------------------------------------------------------------------------------------


def test_doctor_passes_for_a_working_setup_and_masks_secrets(descope: DescopeServer) -> None:
    emu = descope.emulator
    key = emu.access_key_for("editor")
    env = client_env(
        emu, DESCOPE_ACCESS_KEY=key, MLFLOW_TRACKING_URI=descope.url, MLFLOW_TRACKING_AUTH="descope"
    )
    out = run("doctor", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All checks passed." in out.stdout
    assert "FAIL" not in out.stdout
    assert key not in out.stdout + out.stderr
    # The level is the server's (DESCOPE_ROLE_PERMISSIONS there maps editor to EDIT; none here).
    assert f"{descope.url} accepts this session: " in out.stdout
    assert re.search(r"MLflow EDIT \(as the server maps it\)", out.stdout), out.stdout
    # Every variable is shown, with its default when unset.
    for var in VARIABLES:
        assert var.name in out.stdout
    assert re.search(r"DESCOPE_JWT_LEEWAY +\(default\) 5", out.stdout)


def future_token(emu: Emulator) -> str:
    claims = emu.session_claims("reader")
    now = int(time.time())
    claims.update(iat=now + 600, nbf=now + 600, exp=now + 1200)
    return emu.sign(claims)


def other_project_token(emu: Emulator) -> str:
    claims = emu.session_claims("reader")
    claims["iss"] = claims["iss"].replace(emu.project_id, "P2anotherProject")
    return emu.sign(claims)


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("no project", ["FAIL", "DESCOPE_PROJECT_ID is not set", "Project settings"]),
        ("bad value", ["FAIL", "DESCOPE_JWT_LEEWAY"]),
        ("unreachable", ["FAIL", "cannot reach Descope", "DESCOPE_BASE_URI"]),
        ("unknown project", ["FAIL", "key fetch failed", "does not know this project"]),
        ("expired", ["FAIL", "DESCOPE_SESSION_TOKEN expired", "mlflow-descope-auth token"]),
        ("clock", ["FAIL", "not valid yet", "check the clock"]),
        ("wrong project", ["FAIL", "another Descope project", "DESCOPE_PROJECT_ID"]),
        ("bad access key", ["FAIL", "DESCOPE_ACCESS_KEY", "exchanging the access key failed"]),
        ("server refuses", ["FAIL", "refuses this session (401)"]),
        ("no tracking uri", ["FAIL", "MLFLOW_TRACKING_URI is not set", "export MLFLOW_TRACKING_URI="]),
        ("not a server", ["FAIL", "not the http(s) URL of an MLflow server"]),
        (
            "auth unset",
            ["FAIL", "MLFLOW_TRACKING_AUTH is not descope", "export MLFLOW_TRACKING_AUTH=descope"],
        ),
        ("no credentials", ["FAIL", "no credentials", "mlflow-descope-auth login", "DESCOPE_ACCESS_KEY"]),
    ],
)
def test_doctor_explains_each_failure_in_one_line(
    descope: DescopeServer, case: str, needles: list[str]
) -> None:
    emu = descope.emulator
    secrets: list[str] = []
    # Every case but the one under test is a working setup: its one failure is the only FAIL line.
    server = {"MLFLOW_TRACKING_URI": descope.url, "MLFLOW_TRACKING_AUTH": "descope"}
    key = emu.access_key_for("reader")
    if case == "no project":
        env = clean_env(**server)
    elif case == "bad value":
        env = client_env(emu, DESCOPE_JWT_LEEWAY="soon", **server)
    elif case == "unreachable":
        env = clean_env(
            DESCOPE_PROJECT_ID=emu.project_id, DESCOPE_BASE_URI=f"http://127.0.0.1:{free_port()}", **server
        )
    elif case == "unknown project":
        env = clean_env(
            DESCOPE_PROJECT_ID="P2notThisEmulatorsProject", DESCOPE_BASE_URI=emu.base_url, **server
        )
    elif case == "bad access key":
        secrets.append("K2notAKeyThatExists000000000000")
        env = client_env(emu, DESCOPE_ACCESS_KEY=secrets[-1], **server)
    elif case == "no tracking uri":
        env = client_env(emu, DESCOPE_ACCESS_KEY=key, MLFLOW_TRACKING_AUTH="descope")
    elif case == "not a server":
        env = client_env(
            emu, DESCOPE_ACCESS_KEY=key, MLFLOW_TRACKING_AUTH="descope", MLFLOW_TRACKING_URI="./mlruns"
        )
    elif case == "auth unset":
        env = client_env(emu, DESCOPE_ACCESS_KEY=key, MLFLOW_TRACKING_URI=descope.url)
    elif case == "no credentials":
        env = client_env(emu, **server)
    elif case == "server refuses":
        # A session the shell's project accepts but the server's does not.
        with Emulator() as other:
            secrets.append(other.access_key_for("editor"))
            out = run("doctor", env=client_env(
                other, DESCOPE_ACCESS_KEY=secrets[-1], MLFLOW_TRACKING_URI=descope.url,
                MLFLOW_TRACKING_AUTH="descope"))  # fmt: skip
    else:
        token = {
            "expired": lambda e: expired_session(e, "reader"),
            "clock": future_token,
            "wrong project": other_project_token,
        }[case](emu)
        secrets.append(token)
        env = client_env(emu, DESCOPE_SESSION_TOKEN=token, **server)
    if case != "server refuses":
        out = run("doctor", env=env)
    assert_user_error(out, *needles)
    fail_lines = [line for line in out.stdout.splitlines() if line.strip().startswith("FAIL")]
    assert len(fail_lines) == 1, out.stdout
    for secret in secrets:
        assert secret not in out.stdout + out.stderr


# -- token and whoami -------------------------------------------------------------------------------------


def test_token_from_an_access_key_prints_an_export_line_that_validates(descope: DescopeServer) -> None:
    emu = descope.emulator
    out = run("token", env=client_env(emu, DESCOPE_ACCESS_KEY=emu.access_key_for("reader")))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("export DESCOPE_SESSION_TOKEN=")
    token = lines[0].split("=", 1)[1]
    identity = DescopeClient(emu.project_id, base_url=emu.base_url).validate_session(token)
    assert identity.email == "reader@example.com"
    assert "from DESCOPE_ACCESS_KEY" in out.stderr and token not in out.stderr


def test_token_json_from_a_refresh_token(descope: DescopeServer) -> None:
    emu = descope.emulator
    refresh = emu.login("editor")["refreshJwt"]
    out = run("token", "--json", env=client_env(emu, DESCOPE_REFRESH_TOKEN=refresh))
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    identity = DescopeClient(emu.project_id, base_url=emu.base_url).validate_session(payload["sessionJwt"])
    assert payload["user"] == identity.username and payload["expiresAt"] == identity.expires_at


def test_doctor_reports_the_servers_level_not_this_shells(descope: DescopeServer) -> None:
    emu = descope.emulator
    # This shell maps editor to READ; the server maps it to EDIT, and the server is what counts.
    env = client_env(
        emu,
        DESCOPE_ACCESS_KEY=emu.access_key_for("editor"),
        DESCOPE_ROLE_PERMISSIONS="editor=READ",
        MLFLOW_TRACKING_URI=descope.url,
        MLFLOW_TRACKING_AUTH="descope",
    )
    doctor = run("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    whoami = run("whoami", env=env)
    assert f"MLflow        EDIT  (as the server {descope.url} maps it)" in whoami.stdout
    assert "MLflow EDIT (as the server maps it)" in doctor.stdout
    assert "READ" not in doctor.stdout.split("Checks:")[1]


@pytest.mark.parametrize("command", ["token", "whoami"])
def test_token_and_whoami_without_credentials_say_what_to_set(descope: DescopeServer, command: str) -> None:
    assert_user_error(run(command, env=client_env(descope.emulator)), "DESCOPE_ACCESS_KEY")


def test_token_with_a_revoked_refresh_token_fails_cleanly(descope: DescopeServer) -> None:
    emu = descope.emulator
    refresh = emu.login("reader")["refreshJwt"]
    DescopeClient(emu.project_id, base_url=emu.base_url).logout(refresh)
    out = run("token", env=client_env(emu, DESCOPE_REFRESH_TOKEN=refresh))
    assert_user_error(out, "refreshing the session failed")
    assert refresh not in out.stderr


def test_whoami_reports_the_servers_mapping(descope: DescopeServer) -> None:
    emu = descope.emulator
    env = client_env(emu, DESCOPE_ACCESS_KEY=emu.access_key_for("editor"), MLFLOW_TRACKING_URI=descope.url)
    out = run("whoami", env=env)
    assert out.returncode == 0, out.stderr
    assert "email         editor@example.com" in out.stdout
    # The server maps editor to EDIT (DESCOPE_ROLE_PERMISSIONS there); this shell has no mapping.
    assert f"MLflow        EDIT  (as the server {descope.url} maps it)" in out.stdout

    alone = run("whoami", "--json", env=client_env(emu, DESCOPE_ACCESS_KEY=emu.access_key_for("admin")))
    payload = json.loads(alone.stdout)
    assert payload["is_admin"] is True and payload["mapped_by"] == "by this shell's DESCOPE_* settings"
