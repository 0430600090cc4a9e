"""Log an MLflow run as a Descope user, fully offline.

Starts the bundled Descope emulator and a local `mlflow server`, then logs a run with
MLFLOW_TRACKING_AUTH=descope using the demo editor's access key, and prints what the server recorded.

    python examples/offline_quickstart.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import mlflow
from mlflow import MlflowClient

from mlflow_descope_auth.emulator import Emulator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310  (loopback URL we built)
                return
        except OSError:
            print(".", end="", flush=True)
            time.sleep(0.5)
    sys.exit(f"mlflow server did not answer at {url} within {timeout}s")


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="descope-quickstart-")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{workdir}/mlflow.db",
            "--artifacts-destination",
            f"{workdir}/artifacts",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Emulator() as emu:
            print(f"Descope emulator: {emu.base_url} (project {emu.project_id})")
            print(f"Starting mlflow server on port {port} (data in {workdir})", end="", flush=True)
            tracking_uri = f"http://127.0.0.1:{port}"
            wait_until_up(f"{tracking_uri}/health", server)
            print(" up.")

            # What a user puts in their shell; see the README's configuration reference.
            os.environ.update(
                {
                    "MLFLOW_TRACKING_AUTH": "descope",
                    "DESCOPE_PROJECT_ID": emu.project_id,
                    "DESCOPE_BASE_URI": emu.base_url,
                    "DESCOPE_ACCESS_KEY": emu.access_key_for("editor"),
                }
            )
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_experiment("descope-quickstart")
            with mlflow.start_run() as run:
                mlflow.log_param("alpha", 0.5)
                for step in range(5):
                    mlflow.log_metric("rmse", 1.0 / (step + 1), step=step)
                mlflow.log_text("trained offline against the Descope emulator", "notes.txt")

            logged = MlflowClient(tracking_uri).get_run(run.info.run_id)
            print(f"\nLogged run {run.info.run_id} as a Descope user. Its descope.* tags:")
            for key, value in sorted(logged.data.tags.items()):
                if key.startswith("descope."):
                    print(f"  {key} = {value}")
            print(
                f"Metrics: {logged.data.metrics}  Artifacts: "
                f"{[a.path for a in MlflowClient(tracking_uri).list_artifacts(run.info.run_id)]}"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
