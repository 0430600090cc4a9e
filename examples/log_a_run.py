"""Log an MLflow run as a Descope user: a plain MLflow script, nothing Descope-specific in the code.

Start the offline demo (`mlflow-descope-auth demo`), paste the `export` lines it prints, then:

    python examples/log_a_run.py

Against your real server and Descope project only the environment changes (MLFLOW_TRACKING_URI,
DESCOPE_PROJECT_ID, DESCOPE_ACCESS_KEY; see the README).
"""

from __future__ import annotations

import math
import os
import sys

import mlflow
from mlflow import MlflowClient

EXPERIMENT = os.environ.get("EXAMPLE_EXPERIMENT", "descope-demo")


def main() -> None:
    if os.environ.get("MLFLOW_TRACKING_AUTH") != "descope":
        sys.exit(
            "MLFLOW_TRACKING_AUTH is not 'descope': paste the export lines `mlflow-descope-auth demo` prints"
        )
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.log_params({"learning_rate": 0.01, "epochs": 10})
        for step in range(10):
            mlflow.log_metric("loss", math.exp(-step / 3), step=step)
        mlflow.log_text("trained behind Descope sign-in", "notes.txt")

    client = MlflowClient()
    logged = client.get_run(run.info.run_id)
    uri = mlflow.get_tracking_uri().rstrip("/")
    print(f"Logged run {run.info.run_id} as {logged.info.user_id}")
    print(f"  metrics: {logged.data.metrics}")
    print(f"  artifacts: {[a.path for a in client.list_artifacts(run.info.run_id)]}")
    for key, value in sorted(logged.data.tags.items()):
        if key.startswith("descope."):
            print(f"  tag {key} = {value}")
    print(f"  view it at {uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")


if __name__ == "__main__":
    main()
