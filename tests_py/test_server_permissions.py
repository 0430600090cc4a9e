"""Descope roles decide what each user may do, through MLflow's own permission system."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from mlflow_descope_auth.emulator import Emulator

from .descope_server import DescopeServer, descope_server, server_env


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_experiment(server: DescopeServer, login_id: str) -> str:
    resp = server.api("POST", "/api/2.0/mlflow/experiments/create", login_id, json={"name": unique("exp")})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["experiment_id"])


def test_a_reader_can_read_but_not_create_update_or_delete(descope: DescopeServer) -> None:
    exp = create_experiment(descope, "editor")
    assert (
        descope.api("GET", f"/api/2.0/mlflow/experiments/get?experiment_id={exp}", "reader").status_code
        == 200
    )
    search = descope.api("GET", "/api/2.0/mlflow/experiments/search?max_results=1000", "reader")
    assert exp in {e["experiment_id"] for e in search.json()["experiments"]}

    refused = [
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": unique("r")}),
        ("POST", "/api/2.0/mlflow/registered-models/create", {"name": unique("m")}),
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp}),
        ("POST", "/api/2.0/mlflow/experiments/update", {"experiment_id": exp, "new_name": unique("x")}),
        (
            "POST",
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            {"experiment_id": exp, "key": "k", "value": "v"},
        ),
        ("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": exp}),
    ]
    for method, path, body in refused:
        resp = descope.api(method, path, "reader", json=body)
        assert resp.status_code == 403, f"{path}: {resp.status_code} {resp.text[:200]}"
    assert (
        descope.api("GET", f"/api/2.0/mlflow/experiments/get?experiment_id={exp}", "reader").json()[
            "experiment"
        ]["lifecycle_stage"]
        == "active"
    )


def test_an_editor_creates_and_manages_what_it_created(descope: DescopeServer) -> None:
    exp = create_experiment(descope, "editor")
    run = descope.api("POST", "/api/2.0/mlflow/runs/create", "editor", json={"experiment_id": exp})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    logged = descope.api(
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        "editor",
        json={"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 0, "step": 0},
    )
    assert logged.status_code == 200, logged.text
    model = descope.api(
        "POST", "/api/2.0/mlflow/registered-models/create", "editor", json={"name": unique("m")}
    )
    assert model.status_code == 200, model.text
    # The creator got MANAGE: it may grant others, and delete.
    granted = descope.api(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        "editor",
        json={
            "username": reader_username(descope),
            "resource_type": "experiment",
            "resource_id": exp,
            "permission": "EDIT",
        },
    )
    assert granted.status_code == 200, granted.text
    assert descope.api("POST", "/api/2.0/mlflow/experiments/delete", "editor", json={"experiment_id": exp}).ok


def reader_username(server: DescopeServer) -> str:
    return str(server.api("GET", "/auth/user", "reader").json()["username"])


def test_an_admin_manages_permissions_and_grants_take_precedence(descope: DescopeServer) -> None:
    exp = create_experiment(descope, "editor")
    reader = reader_username(descope)
    grant = {"username": reader, "resource_type": "experiment", "resource_id": exp}
    assert (
        descope.api("POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": exp}).status_code
        == 403
    )
    # A reader cannot grant itself anything.
    refused = descope.api(
        "POST", "/api/3.0/mlflow/users/permissions/grant", "reader", json={**grant, "permission": "EDIT"}
    )
    assert refused.status_code == 403
    ok = descope.api(
        "POST", "/api/3.0/mlflow/users/permissions/grant", "admin", json={**grant, "permission": "EDIT"}
    )
    assert ok.status_code == 200, ok.text
    assert (
        descope.api("POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": exp}).status_code
        == 200
    )
    assert (
        descope.api("POST", "/api/3.0/mlflow/users/permissions/revoke", "admin", json=grant).status_code
        == 200
    )
    assert (
        descope.api("POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": exp}).status_code
        == 403
    )
    # Admin-only MLflow routes: the admin passes, the editor does not.
    assert descope.api("GET", "/api/2.0/mlflow/users/list", "admin").status_code == 200
    assert descope.api("GET", "/api/2.0/mlflow/webhooks", "admin").status_code == 200
    assert descope.api("GET", "/api/2.0/mlflow/webhooks", "editor").status_code == 403


def test_runs_carry_the_verified_identity_whatever_the_client_sent(descope: DescopeServer) -> None:
    exp = create_experiment(descope, "editor")
    forged = {
        "experiment_id": exp,
        "user_id": "mallory",
        "tags": [
            {"key": "mlflow.user", "value": "mallory"},
            {"key": "descope.email", "value": "m@evil"},
            {"key": "team", "value": "a"},
        ],
    }
    resp = descope.api("POST", "/api/2.0/mlflow/runs/create", "editor", json=forged)
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["run"]["info"]["run_id"]
    run = descope.api("GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}", "admin").json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    editor = descope.api("GET", "/auth/user", "editor").json()
    assert run["info"]["user_id"] == editor["username"]
    assert tags["mlflow.user"] == editor["username"]
    assert tags["descope.email"] == "editor@example.com"
    assert tags["descope.roles"] == "editor"
    assert tags["team"] == "a", "the client's own tags are kept"


def test_no_permissions_default_hides_experiments(server_emulator: Emulator, tmp_path: Path) -> None:
    with descope_server(
        server_emulator,
        tmp_path,
        DESCOPE_DEFAULT_PERMISSION="NO_PERMISSIONS",
        DESCOPE_ROLE_PERMISSIONS="editor=EDIT",
    ) as server:
        exp = create_experiment(server, "editor")
        search = server.api("GET", "/api/2.0/mlflow/experiments/search?max_results=1000", "reader")
        assert search.status_code == 200
        assert search.json().get("experiments", []) == [], "the reader sees no experiment at all"
        assert (
            server.api("GET", f"/api/2.0/mlflow/experiments/get?experiment_id={exp}", "reader").status_code
            == 403
        )
        editor_view = server.api(
            "GET", "/api/2.0/mlflow/experiments/search?max_results=1000", "editor"
        ).json()
        assert exp in {e["experiment_id"] for e in editor_view["experiments"]}


def test_removing_the_admin_role_in_descope_revokes_admin_after_refresh(tmp_path: Path) -> None:
    with Emulator() as emu, descope_server(emu, tmp_path, extra_args=("--workers", "1")) as server:
        tokens = emu.login("editor")
        emu.set_user_roles("editor", ["editor", "admin"])
        promoted = refresh(emu, tokens["refreshJwt"])
        headers = {"Authorization": f"Bearer {promoted}"}
        assert (
            requests.get(f"{server.url}/api/2.0/mlflow/webhooks", headers=headers, timeout=30).status_code
            == 200
        )
        emu.set_user_roles("editor", ["editor"])
        demoted = refresh(emu, tokens["refreshJwt"])
        headers = {"Authorization": f"Bearer {demoted}"}
        assert (
            requests.get(f"{server.url}/api/2.0/mlflow/webhooks", headers=headers, timeout=30).status_code
            == 403
        )
        assert (
            requests.get(f"{server.url}/auth/user", headers=headers, timeout=30).json()["is_admin"] is False
        )


def refresh(emu: Emulator, refresh_token: str) -> str:
    # What the client plugin or the browser gate does when a session runs out. The new session
    # differs from the old one even within the same second (the emulator's jti).
    resp = requests.post(
        f"{emu.base_url}/v1/auth/refresh",
        headers={"Authorization": f"Bearer {emu.project_id}:{refresh_token}"},
        json={},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["sessionJwt"])


def start_server_expecting_refusal(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "descope", "--port", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}"]  # fmt: skip
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DESCOPE_PROJECT_ID", None),
        ("DESCOPE_DEFAULT_PERMISSION", "ROOT"),
        ("DESCOPE_REDIRECT_URL", "https://evil.example/"),
    ],
)
def test_the_server_refuses_to_start_without_a_valid_configuration(
    tmp_path: Path, server_emulator: Emulator, variable: str, value: str | None
) -> None:
    env = server_env(server_emulator, tmp_path)
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    out = start_server_expecting_refusal(env, tmp_path)
    assert out.returncode != 0
    assert variable in out.stderr
    assert "Traceback" not in out.stderr
