"""The deployment example stays runnable: its `mlflow server` command parses with MLflow's own CLI,
it uses only real settings, and its proxy keeps what the plugin needs. (No Docker daemon runs here;
the same topology is exercised with real processes by the replica tests.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import yaml
from mlflow.cli import server as mlflow_server_command

from mlflow_descope_auth.variables import BY_NAME

COMPOSE = Path(__file__).resolve().parent.parent / "examples" / "docker-compose.yml"
VALUES = {"DESCOPE_PROJECT_ID": "P2example", "POSTGRES_PASSWORD": "pw", "MLFLOW_PUBLIC_HOST": "mlflow.test"}


def interpolate(text: str) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, and `$$` for a literal `$`."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in VALUES:
            return VALUES[name]
        assert op != ":?", f"{name} is required: {arg}"
        return arg if op == ":-" else ""

    text = re.sub(r"\$\{([A-Z_]+)(?:(:-|:\?)([^}]*))?\}", one, text)
    return text.replace("$$", "$")


def compose() -> dict[str, Any]:
    document = yaml.safe_load(interpolate(COMPOSE.read_text()))
    assert isinstance(document, dict)
    return document


def test_every_replica_command_parses_with_mlflows_cli() -> None:
    services = compose()["services"]
    replicas = [s for s in services.values() if s.get("command", [None])[:2] == ["mlflow", "server"]]
    assert len(replicas) == 2
    for service in replicas:
        ctx = mlflow_server_command.make_context("server", list(service["command"][2:]))
        assert ctx.params["app_name"] == "descope"
        assert ctx.params["backend_store_uri"].startswith("postgresql+psycopg2://")
        assert "mlflow.test" in ctx.params["allowed_hosts"].split(",")
    try:
        mlflow_server_command.make_context("server", ["--no-such-option"])
    except click.UsageError:
        pass
    else:
        raise AssertionError("MLflow's CLI accepted an unknown option: this check would prove nothing")


def test_the_replicas_share_the_auth_db_and_state_dir_and_use_real_settings() -> None:
    services = compose()["services"]
    envs = [
        s["environment"]
        for s in services.values()
        if "environment" in s and "DESCOPE_PROJECT_ID" in s["environment"]
    ]
    assert len(envs) == 2 and envs[0] == envs[1]
    env = envs[0]
    assert env["DESCOPE_AUTH_DB_URI"].startswith("postgresql+psycopg2://") and env[
        "DESCOPE_AUTH_STATE_DIR"
    ].startswith("/shared")
    unknown = sorted(name for name in env if name not in BY_NAME)
    assert unknown == []


def test_the_tracking_store_is_migrated_once_before_the_replicas_start() -> None:
    services = compose()["services"]
    upgrade = services["mlflow-db-upgrade"]["command"]
    assert upgrade[:3] == ["mlflow", "db", "upgrade"]
    replicas = [s for s in services.values() if s.get("command", [None])[:2] == ["mlflow", "server"]]
    backend = {
        c.split("=", 1)[1] for s in replicas for c in s["command"] if c.startswith("--backend-store-uri=")
    }
    assert backend == {upgrade[3]}
    for service in replicas:
        assert service["depends_on"]["mlflow-db-upgrade"]["condition"] == "service_completed_successfully"


def test_the_proxy_keeps_the_host_and_forwards_the_scheme() -> None:
    nginx = compose()["configs"]["nginx"]["content"]
    assert "proxy_set_header Host $http_host;" in nginx
    assert "X-Forwarded-Proto $scheme" in nginx
    assert nginx.count("server mlflow-") == 2
