"""What a person sees when a script cannot use MLflow: one line saying what to fix, not a traceback
through MLflow and requests. Real scripts in subprocesses against the real server and emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .descope_server import DescopeServer
from .servers import RecordingProxy

SET_EXPERIMENT = "import mlflow; mlflow.set_experiment('one-line-errors')"


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESCOPE_", "MLFLOW_"))}
    env.update(extra)
    return env


def run_python(
    code: str, env: dict[str, str], *args: str, ipython: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "IPython", "--no-banner", "-c"] if ipython else [sys.executable, "-c"]
    return subprocess.run([*command, code, *args], capture_output=True, text=True, timeout=180, env=env)


def last_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines, out
    return lines[-1]


def assert_one_line(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    line = last_line(out)
    assert line.startswith("mlflow-descope-auth: "), out.stderr
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def client_env(server: DescopeServer, **extra: str) -> dict[str, str]:
    emu = server.emulator
    settings = {
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_AUTH": "descope",
        "DESCOPE_PROJECT_ID": emu.project_id,
        "DESCOPE_BASE_URI": emu.base_url,
    }
    return script_env(**{**settings, **extra})


def test_a_wrong_project_id_says_the_project_is_unknown(descope: DescopeServer) -> None:
    key = descope.emulator.access_key_for("editor")
    env = client_env(descope, DESCOPE_ACCESS_KEY=key, DESCOPE_PROJECT_ID="P2notThisProject")
    out = run_python(SET_EXPERIMENT, env)
    assert_one_line(out, "DESCOPE_PROJECT_ID", "does not know the project 'P2notThisProject'")
    # Not the old advice, which sent people after a key that was fine.
    assert "check DESCOPE_ACCESS_KEY" not in out.stderr
    assert key not in out.stderr


def test_a_bad_access_key_names_the_key(descope: DescopeServer) -> None:
    out = run_python(SET_EXPERIMENT, client_env(descope, DESCOPE_ACCESS_KEY="K2notAKeyThatExists000000000"))
    assert_one_line(out, "exchanging the access key failed", "DESCOPE_ACCESS_KEY")


def test_no_credential_at_all_says_to_sign_in(descope: DescopeServer, tmp_path: Path) -> None:
    env = client_env(descope, XDG_CONFIG_HOME=str(tmp_path))
    assert_one_line(run_python(SET_EXPERIMENT, env), "mlflow-descope-auth login", "DESCOPE_ACCESS_KEY")


def test_a_refusal_by_the_server_is_one_line(descope: DescopeServer) -> None:
    env = client_env(descope, DESCOPE_ACCESS_KEY=descope.emulator.access_key_for("reader"))
    out = run_python("import mlflow; mlflow.create_experiment('readers-may-not')", env)
    assert_one_line(out, "the MLflow server refused", "PERMISSION_DENIED", "EDIT")


def test_other_errors_keep_their_traceback(descope: DescopeServer) -> None:
    env = client_env(descope, DESCOPE_ACCESS_KEY=descope.emulator.access_key_for("editor"))
    out = run_python(SET_EXPERIMENT + "; raise ValueError('the script itself failed')", env)
    assert out.returncode != 0
    assert "Traceback" in out.stderr and last_line(out) == "ValueError: the script itself failed"
    # `python -X dev` shows the whole story for ours too.
    env["DESCOPE_PROJECT_ID"] = "P2notThisProject"
    dev = subprocess.run(
        [sys.executable, "-X", "dev", "-c", SET_EXPERIMENT],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert "Traceback" in dev.stderr and "DESCOPE_PROJECT_ID" in dev.stderr


def test_a_notebook_cell_shows_the_one_line_too(descope: DescopeServer) -> None:
    key = descope.emulator.access_key_for("editor")
    env = client_env(descope, DESCOPE_ACCESS_KEY=key, DESCOPE_PROJECT_ID="P2notThisProject")
    out = run_python(SET_EXPERIMENT, env, ipython=True)
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert "mlflow-descope-auth: configuration error in DESCOPE_PROJECT_ID" in out.stderr


# -- a client built for a URI that is not the tracking server ------------------------------------------


@pytest.fixture
def front(descope: DescopeServer) -> Iterator[RecordingProxy]:
    """The same server under another address, recording what arrives."""
    proxy = RecordingProxy(descope.url).start()
    yield proxy
    proxy.stop()


SEARCH_WITH_A_CLIENT = (
    "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
)


def test_a_client_for_another_uri_sends_no_token_and_says_what_to_set(
    descope: DescopeServer, front: RecordingProxy
) -> None:
    emu = descope.emulator
    env = script_env(
        MLFLOW_TRACKING_AUTH="descope",
        DESCOPE_PROJECT_ID=emu.project_id,
        DESCOPE_BASE_URI=emu.base_url,
        DESCOPE_ACCESS_KEY=emu.access_key_for("editor"),
    )
    out = run_python(SEARCH_WITH_A_CLIENT, env, front.url)
    line = assert_one_line(out, "UNAUTHENTICATED", "MLFLOW_TRACKING_URI", front.url, "DESCOPE_ALLOWED_HOSTS")
    assert "not sent" in line
    assert front.requests and not any("Authorization" in r.headers for r in front.requests)

    # The documented fix works.
    front.requests.clear()
    port = front.url.rsplit(":", 1)[1]
    allowed = run_python(
        SEARCH_WITH_A_CLIENT, {**env, "DESCOPE_ALLOWED_HOSTS": f"127.0.0.1:{port}"}, front.url
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert all(r.headers.get("Authorization", "").startswith("Bearer ") for r in front.requests)
