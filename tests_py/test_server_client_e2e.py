"""The client plugins against `mlflow server --app-name descope`: a script logs a run as the Descope
user, and the server records the verified identity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .descope_server import DescopeServer
from .test_client_plugins import CLIENT_SCRIPT, run_client


def client_env(server: DescopeServer, login_id: str) -> dict[str, str]:
    emu = server.emulator
    return {
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_AUTH": "descope",
        "DESCOPE_PROJECT_ID": emu.project_id,
        "DESCOPE_BASE_URI": emu.base_url,
        "DESCOPE_ACCESS_KEY": emu.access_key_for(login_id),
    }


def test_a_script_logs_a_run_as_the_verified_user(descope: DescopeServer, tmp_path: Path) -> None:
    run_id, steps = run_client(client_env(descope, "editor"), 1, tmp_path)
    run = descope.api("GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}", "admin").json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    editor = descope.api("GET", "/auth/user", "editor").json()
    assert run["info"]["user_id"] == editor["username"]
    assert tags["mlflow.user"] == editor["username"]
    assert tags["descope.user_id"] == editor["user_id"]
    assert tags["descope.email"] == "editor@example.com"
    history = descope.api(
        "GET", f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss", "admin"
    ).json()
    assert len(history["metrics"]) == steps
    artifacts = descope.api(
        "GET", f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=notes", "admin"
    ).json()
    assert [f["path"] for f in artifacts["files"]] == ["notes/hello.txt"]


def test_a_reader_script_gets_a_clear_refusal(descope: DescopeServer, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESCOPE_", "MLFLOW_"))}
    env.update(client_env(descope, "reader"), E2E_EXPERIMENT="reader-wants-its-own")
    out = subprocess.run(
        [sys.executable, str(script), "0"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode != 0
    assert "creating needs EDIT" in out.stderr
    assert "eyJ" not in out.stderr, "no token in the error output"
    # In an experiment someone else owns, MLflow's own validators refuse the run.
    env["E2E_EXPERIMENT"] = "descope-e2e"
    descope.api("POST", "/api/2.0/mlflow/experiments/create", "editor", json={"name": "descope-e2e"})
    out = subprocess.run(
        [sys.executable, str(script), "0"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode != 0
    # One line a person can act on, not a traceback through MLflow.
    assert out.stderr.splitlines() == [
        "mlflow-descope-auth: the MLflow server refused: PERMISSION_DENIED: You do not have permission "
        "to do this: it needs EDIT access to this experiment. Ask an admin of this server to give you "
        "EDIT on it."
    ], out.stderr
