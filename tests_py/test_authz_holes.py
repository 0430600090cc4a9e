"""Authorization holes a hostile review found, each against a real `mlflow server --app-name descope`:
wildcard resource names, attribution tags rewritten after the fact, the role-derived baseline
destroying grants people made, and the admin switch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from mlflow_descope_auth.emulator import Emulator

from .descope_server import DescopeServer, descope_server

GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
CREATE_MODEL = "/api/2.0/mlflow/registered-models/create"
RENAME_MODEL = "/api/2.0/mlflow/registered-models/rename"
DELETE_MODEL = "/api/2.0/mlflow/registered-models/delete"
PROMPT_TAG = {"key": "mlflow.prompt.is_prompt", "value": "true"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    """Its own emulator: these tests change users' roles."""
    with Emulator() as emu, descope_server(emu, tmp_path_factory.mktemp("authz-holes")) as s:
        yield s


def username(server: DescopeServer, login_id: str) -> str:
    resp = server.api("GET", "/auth/user", login_id)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["username"])


def experiment_of(server: DescopeServer, login_id: str) -> str:
    resp = server.api("POST", "/api/2.0/mlflow/experiments/create", login_id, json={"name": unique("exp")})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["experiment_id"])


def run_of(server: DescopeServer, login_id: str, experiment: str) -> str:
    resp = server.api("POST", "/api/2.0/mlflow/runs/create", login_id, json={"experiment_id": experiment})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["run"]["info"]["run_id"])


def run_tags(server: DescopeServer, run_id: str) -> dict[str, str]:
    resp = server.api("GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}", "admin")
    assert resp.status_code == 200, resp.text
    return {t["key"]: t["value"] for t in resp.json()["run"]["data"].get("tags", [])}


# -- 1. wildcard names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"name": "*"},
        {"name": "*", "tags": [PROMPT_TAG]},  # a prompt
        json.dumps({"name": "*"}),  # a JSON string holding JSON: MLflow decodes it once more
        json.dumps(json.dumps({"name": "*", "tags": [PROMPT_TAG]})),
    ],
    ids=["model", "prompt", "double-encoded", "double-encoded-prompt"],
)
def test_nobody_creates_a_model_or_prompt_named_wildcard(server: DescopeServer, body: object) -> None:
    kwargs: dict[str, object] = (
        {"data": body, "headers": {"Content-Type": "application/json"}}
        if isinstance(body, str)
        else {"json": body}
    )
    for login_id in ("editor", "admin"):
        resp = server.api("POST", CREATE_MODEL, login_id, **kwargs)
        assert resp.status_code == 400, resp.text
        assert "'*'" in resp.json()["message"]
    listed = server.api("GET", "/api/2.0/mlflow/registered-models/search?max_results=1000", "admin")
    assert "*" not in {m["name"] for m in listed.json().get("registered_models", [])}


def test_an_editor_cannot_rename_a_model_to_wildcard_and_so_cannot_delete_an_admins_model(
    server: DescopeServer,
) -> None:
    admins = unique("admins-model")
    assert server.api("POST", CREATE_MODEL, "admin", json={"name": admins}).status_code == 200
    mine = unique("editors-model")
    assert server.api("POST", CREATE_MODEL, "editor", json={"name": mine}).status_code == 200
    for body in ({"name": mine, "new_name": "*"}, {"name": mine, "newName": "*"}):
        resp = server.api("POST", RENAME_MODEL, "editor", json=body)
        assert resp.status_code == 400, resp.text
    for tags in ([], [PROMPT_TAG]):
        resp = server.api("POST", CREATE_MODEL, "editor", json={"name": "*", "tags": tags})
        assert resp.status_code == 400, resp.text
    # The escalation the wildcard would have opened: MANAGE on every model.
    resp = server.api("DELETE", DELETE_MODEL, "editor", json={"name": admins})
    assert resp.status_code == 403, resp.text
    assert server.api("GET", f"/api/2.0/mlflow/registered-models/get?name={admins}", "admin").ok


# -- 2. creates through other routes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/ajax-api/3.0/mlflow/mcp-servers/team/helper/versions", "/ajax-api/3.0/mlflow/demo/generate"],
)
def test_a_reader_creates_nothing_through_routes_that_create_on_the_side(
    server: DescopeServer, path: str
) -> None:
    body = {"server_json": {"name": "team/helper", "version": "1.0.0"}}  # what MLflow accepts
    resp = server.api("POST", path, "reader", json=body)
    assert resp.status_code == 403, resp.text
    assert "EDIT" in resp.json()["message"]
    servers = server.api("GET", "/ajax-api/3.0/mlflow/mcp-servers", "admin")
    assert servers.status_code == 200, servers.text
    assert "helper" not in servers.text
    experiments = server.api("GET", "/api/2.0/mlflow/experiments/search?max_results=1000", "admin")
    assert all(
        e["name"] == "Default" or "demo" not in e["name"].lower() for e in experiments.json()["experiments"]
    )


def test_the_assistant_is_for_admins_only(server: DescopeServer) -> None:
    for login_id in ("reader", "editor"):
        resp = server.api("GET", "/ajax-api/3.0/mlflow/assistant/config", login_id)
        assert resp.status_code == 403, resp.text
        resp = server.api("POST", "/ajax-api/3.0/mlflow/assistant/skills/install", login_id, json={})
        assert resp.status_code == 403, resp.text
    assert server.api("GET", "/ajax-api/3.0/mlflow/assistant/config", "admin").status_code != 403


# -- 3. attribution --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/2.0/mlflow/runs/set-tag", {"key": "mlflow.user", "value": "someone-else"}),
        ("/api/2.0/mlflow/runs/set-tag", {"key": "descope.email", "value": "someone@else"}),
        ("/api/2.0/mlflow/runs/delete-tag", {"key": "mlflow.user"}),
        ("/api/2.0/mlflow/runs/delete-tag", {"key": "descope.user_id"}),
        (
            "/api/2.0/mlflow/runs/log-batch",
            {"tags": [{"key": "ok", "value": "1"}, {"key": "mlflow.user", "value": "x"}]},
        ),
    ],
    ids=["set-tag-user", "set-tag-descope", "delete-tag-user", "delete-tag-descope", "log-batch"],
)
@pytest.mark.parametrize("encoding", ["json", "double-encoded"])
def test_attribution_tags_cannot_be_changed_after_the_run_is_created(
    server: DescopeServer, path: str, body: dict[str, object], encoding: str
) -> None:
    experiment = experiment_of(server, "admin")
    run_id = run_of(server, "admin", experiment)
    before = run_tags(server, run_id)
    assert before["mlflow.user"] == username(server, "admin")
    payload = json.dumps({"run_id": run_id, **body})
    data = payload if encoding == "json" else json.dumps(payload)
    for login_id in ("admin", "editor"):
        resp = server.api("POST", path, login_id, data=data, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400, resp.text
        assert "is set by the server" in resp.json()["message"]
    assert run_tags(server, run_id) == before


def test_a_double_encoded_create_run_still_carries_the_verified_user(server: DescopeServer) -> None:
    experiment = experiment_of(server, "editor")
    body = {
        "experiment_id": experiment,
        "user_id": "somebody-else",
        "tags": [{"key": "mlflow.user", "value": "somebody-else"}, {"key": "descope.email", "value": "x@y"}],
    }
    camel = {k: v for k, v in body.items() if k != "user_id"} | {"userId": "somebody-else"}
    for data in (json.dumps(json.dumps(body)), json.dumps(camel)):
        resp = server.api(
            "POST",
            "/api/2.0/mlflow/runs/create",
            "editor",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 200, resp.text
        run = resp.json()["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert run["info"]["user_id"] == tags["mlflow.user"] == username(server, "editor")
        assert tags["descope.email"] == "editor@example.com"


def test_other_run_tags_still_work(server: DescopeServer) -> None:
    experiment = experiment_of(server, "editor")
    run_id = run_of(server, "editor", experiment)
    for path, body in (
        ("/api/2.0/mlflow/runs/set-tag", {"run_id": run_id, "key": "team", "value": "a"}),
        ("/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "tags": [{"key": "stage", "value": "b"}]}),
        ("/api/2.0/mlflow/runs/delete-tag", {"run_id": run_id, "key": "team"}),
    ):
        resp = server.api("POST", path, "editor", json=body)
        assert resp.status_code == 200, f"{path}: {resp.text}"
    tags = run_tags(server, run_id)
    assert tags["stage"] == "b" and "team" not in tags


# -- 5. baselines and grants people made -----------------------------------------------------------


def test_a_grant_on_every_experiment_survives_role_changes_and_new_sessions(server: DescopeServer) -> None:
    emu = server.emulator
    experiment = experiment_of(server, "admin")
    reader = username(server, "reader")
    assert (
        server.api(
            "POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": experiment}
        ).status_code
        == 403
    )
    grant = {"username": reader, "resource_type": "experiment", "resource_id": "*", "permission": "EDIT"}
    resp = server.api("POST", GRANT, "admin", json=grant)
    assert resp.status_code == 200, resp.text
    try:
        # The reader's Descope roles change back and forth; each new session brings the baseline in
        # line with them. The admin's grant is not the baseline's to change.
        for roles in ([], ["editor"], ["reader"]):
            emu.set_user_roles("reader", roles)
            assert server.api("GET", "/auth/user", "reader").status_code == 200
        resp = server.api("POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": experiment})
        assert resp.status_code == 200, resp.text
        later = experiment_of(server, "admin")  # "*" covers experiments made after the grant too
        resp = server.api("POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": later})
        assert resp.status_code == 200, resp.text
    finally:
        emu.set_user_roles("reader", ["reader"])
        revoke = {k: grant[k] for k in ("username", "resource_type", "resource_id")}
        assert server.api("POST", REVOKE, "admin", json=revoke).status_code == 200


def test_the_baseline_follows_the_descope_roles(server: DescopeServer) -> None:
    emu = server.emulator
    experiment = experiment_of(server, "admin")
    emu.set_user_roles("reader", ["editor"])
    try:
        ran = server.api("POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": experiment})
        assert ran.status_code == 200, ran.text
        emu.set_user_roles("reader", ["reader"])
        ran = server.api("POST", "/api/2.0/mlflow/runs/create", "reader", json={"experiment_id": experiment})
        assert ran.status_code == 403, ran.text
    finally:
        emu.set_user_roles("reader", ["reader"])


def test_the_admin_switch_is_refused_with_a_reason(server: DescopeServer) -> None:
    reader = username(server, "reader")
    for body in (
        {"username": reader, "is_admin": True},
        {"username": username(server, "admin"), "is_admin": False},
    ):
        resp = server.api("PATCH", "/api/2.0/mlflow/users/update-admin", "admin", json=body)
        assert resp.status_code == 403, resp.text
        assert "Descope" in resp.json()["message"]
    user = server.api("GET", f"/api/2.0/mlflow/users/get?username={reader}", "admin")
    assert user.status_code == 200, user.text
    assert user.json()["user"]["is_admin"] is False
    for method, path, who in (
        ("POST", "/api/2.0/mlflow/users/create", unique("pw")),
        ("PATCH", "/api/2.0/mlflow/users/update-password", reader),
    ):
        resp = server.api(method, path, "admin", json={"username": who, "password": "x" * 16})
        assert resp.status_code == 403, resp.text


def test_a_reader_cannot_grant_itself_anything(server: DescopeServer) -> None:
    experiment = experiment_of(server, "admin")
    grant = {"username": username(server, "reader"), "resource_type": "experiment", "resource_id": experiment}
    for permission in ("EDIT", "MANAGE"):
        resp = server.api("POST", GRANT, "reader", json={**grant, "permission": permission})
        assert resp.status_code == 403, resp.text


# -- parameters MLflow's validator and handler could read from different places --------------------


def test_a_camel_case_run_id_cannot_steer_a_write_to_another_users_run(server: DescopeServer) -> None:
    """MLflow 3.17's validator reads `run_id` (else `run_uuid`) while its handler also takes
    `runId`: the reader's own run was checked and the admin's run written."""
    theirs = run_of(server, "admin", experiment_of(server, "admin"))
    shared = experiment_of(server, "admin")
    grant = {"username": username(server, "reader"), "resource_type": "experiment", "resource_id": shared}
    assert server.api("POST", GRANT, "admin", json={**grant, "permission": "EDIT"}).status_code == 200
    mine = run_of(server, "reader", shared)
    before = server.api("GET", f"/api/2.0/mlflow/runs/get?run_id={theirs}", "admin").json()["run"]
    for path, body in (
        ("/api/2.0/mlflow/runs/set-tag", {"key": "pwned", "value": "by-reader"}),
        ("/api/2.0/mlflow/runs/log-parameter", {"key": "p", "value": "x"}),
        ("/api/2.0/mlflow/runs/update", {"status": "FAILED", "run_name": "renamed-by-reader"}),
        ("/api/2.0/mlflow/runs/delete", {}),
    ):
        resp = server.api("POST", path, "reader", json={"run_uuid": mine, "runId": theirs, **body})
        assert resp.status_code == 403, f"{path}: {resp.status_code} {resp.text[:200]}"
    mine_too = run_of(server, "editor", experiment_of(server, "editor"))
    resp = server.api(
        "POST", "/api/2.0/mlflow/runs/delete", "editor", json={"run_uuid": mine_too, "runId": theirs}
    )
    assert resp.status_code == 403, resp.text
    after = server.api("GET", f"/api/2.0/mlflow/runs/get?run_id={theirs}", "admin").json()["run"]
    assert after == before
    # The camelCase spelling alone still works for what the user may do.
    resp = server.api(
        "POST", "/api/2.0/mlflow/runs/set-tag", "reader", json={"runId": mine, "key": "ok", "value": "1"}
    )
    assert resp.status_code == 200, resp.text


def test_a_delete_names_its_resource_in_one_place_only(server: DescopeServer) -> None:
    """MLflow 3.17's validator reads a DELETE's query string unless the body is JSON; its handler
    reads the body whatever its type."""
    admins, mine = unique("adm-model"), unique("ed-model")
    assert server.api("POST", CREATE_MODEL, "admin", json={"name": admins}).status_code == 200
    assert server.api("POST", CREATE_MODEL, "editor", json={"name": mine}).status_code == 200
    resp = server.api(
        "DELETE",
        f"{DELETE_MODEL}?name={mine}",
        "editor",
        data=json.dumps({"name": admins}),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 400, resp.text
    assert "JSON" in resp.json()["message"]
    for name in (admins, mine):
        assert server.api("GET", f"/api/2.0/mlflow/registered-models/get?name={name}", "admin").ok
    assert server.api("DELETE", DELETE_MODEL, "editor", json={"name": mine}).status_code == 200


def test_a_promptlab_run_is_the_signed_in_users(server: DescopeServer) -> None:
    experiment = experiment_of(server, "editor")
    body = {
        "experiment_id": experiment,
        "run_name": "promptlab",
        "prompt_template": "Say {{ word }}",
        "prompt_parameters": [{"key": "word", "value": "hello"}],
        "model_route": "chat",
        "model_parameters": [],
        "model_input": "Say hello",
        "model_output": "hello",
        "mlflow_version": "3.17.2",
        "user_id": "somebody-else",
    }
    resp = server.api("POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run", "editor", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["run"]["info"]["user_id"] == username(server, "editor")
    tagged = {**body, "tags": [{"key": "mlflow.user", "value": "somebody-else"}]}
    resp = server.api("POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run", "editor", json=tagged)
    assert resp.status_code == 400, resp.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/2.0/mlflow/experiments/search",
        "/api/2.0/mlflow/runs/search",
        "/graphql",
    ],
)
def test_a_body_nested_too_deeply_is_a_client_error_everywhere(server: DescopeServer, path: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    resp = server.api("POST", path, "reader", data=deep, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text[:200]
