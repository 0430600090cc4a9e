"""The `mlflow-descope-auth` command, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMAND = [sys.executable, "-m", "mlflow_descope_auth.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120)


def test_verify_plugin_lists_every_entry_point() -> None:
    out = run("verify-plugin")
    assert out.returncode == 0, out.stdout + out.stderr
    for group in (
        "mlflow.request_auth_provider",
        "mlflow.request_header_provider",
        "mlflow.run_context_provider",
    ):
        assert f"OK       {group}: descope" in out.stdout


def test_the_console_script_is_installed() -> None:
    out = subprocess.run(["mlflow-descope-auth", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "verify-plugin" in out.stdout and "emulator" in out.stdout


@pytest.mark.parametrize("sub", ["verify-plugin", "emulator"])
def test_every_subcommand_has_help(sub: str) -> None:
    out = run(sub, "--help")
    assert out.returncode == 0 and "Usage:" in out.stdout


def test_emulator_rejects_a_bad_users_file_without_a_traceback(tmp_path: object) -> None:
    import pathlib

    bad = pathlib.Path(str(tmp_path)) / "users.json"
    bad.write_text('{"users": [{"email": 5}]}')
    out = run("emulator", "--port", "0", "--users-file", str(bad))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    assert "users" in (out.stderr + out.stdout).lower()
