"""The credential this server issues for its own jobs' gateway calls (server/internal_credential.py),
in-process: the start-up step in the ``mlflow server`` process, what the check accepts (exactly a
job's gateway call with this start's token), and the gate with it. A real job is in
tests_py/test_server_jobs.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import Response as FlaskResponse
from werkzeug.datastructures import Authorization

from mlflow_descope_auth import DescopeClient, mlflow_internals
from mlflow_descope_auth.server import authz
from mlflow_descope_auth.server.bootstrap import BOOTSTRAP_ADMIN
from mlflow_descope_auth.server.gate import Gate
from mlflow_descope_auth.server.internal_credential import InternalCredential, issue_for_server_start

from .inprocess import make_settings, unit_request

TOKEN = "0123456789abcdef" * 4
CHAT = "/gateway/mlflow/v1/chat/completions"


def basic(user_and_password: str) -> str:
    return "Basic " + base64.b64encode(user_and_password.encode()).decode()


def test_each_server_start_issues_a_new_token_and_no_delegation_key() -> None:
    inherited = {
        mlflow_internals.INTERNAL_GATEWAY_CREDENTIAL_VARIABLE: TOKEN,
        mlflow_internals.ASSISTANT_DELEGATION_KEY: "inherited-signing-key",
        "OTHER": "kept",
    }
    first = dict(inherited)
    issue_for_server_start(first)
    second = dict(inherited)
    issue_for_server_start(second)
    tokens = [env[mlflow_internals.INTERNAL_GATEWAY_CREDENTIAL_VARIABLE] for env in (first, second)]
    assert tokens[0] != tokens[1]
    assert TOKEN not in tokens
    assert all(len(t) == 64 and int(t, 16) >= 0 for t in tokens)
    for env in (first, second):
        assert mlflow_internals.ASSISTANT_DELEGATION_KEY not in env
        assert env["OTHER"] == "kept"


def test_a_jobs_gateway_call_names_its_user() -> None:
    credential = InternalCredential(TOKEN, "")
    assert credential.enabled
    assert credential.username("POST", CHAT, basic(f"U2editor:{TOKEN}")) == "U2editor"
    assert credential.username("post", "/gateway/openai/v1/embeddings", basic(f"a@b.c:{TOKEN}")) == "a@b.c"
    # The scheme is case-insensitive, as HTTP has it.
    assert credential.username("POST", CHAT, "basic " + basic(f"u:{TOKEN}")[6:]) == "u"


@pytest.mark.parametrize(
    ("method", "path", "authorization"),
    [
        ("GET", CHAT, basic(f"u:{TOKEN}")),  # jobs only post to the gateway
        ("POST", "/api/2.0/mlflow/experiments/create", basic(f"u:{TOKEN}")),
        ("POST", "/ajax-api/3.0/mlflow/gateway/endpoints/create", basic(f"u:{TOKEN}")),
        ("POST", "/gatewayx/mlflow/v1/chat/completions", basic(f"u:{TOKEN}")),
        ("POST", "/v1/traces", basic(f"u:{TOKEN}")),
        ("POST", CHAT, basic("u:wrong")),
        ("POST", CHAT, basic(f"u:{TOKEN}x")),
        ("POST", CHAT, basic(f"u:{TOKEN[:-1]}")),
        ("POST", CHAT, basic(f":{TOKEN}")),  # no user
        ("POST", CHAT, basic(TOKEN)),  # no colon
        ("POST", CHAT, f"Bearer {TOKEN}"),
        ("POST", CHAT, "Basic not-base64!"),
        ("POST", CHAT, "Basic " + base64.b64encode(b"u:\xff\xfe").decode()),
        ("POST", CHAT, "Basic"),
        ("POST", CHAT, None),
    ],
)
def test_anything_else_is_not_a_jobs_call(method: str, path: str, authorization: str | None) -> None:
    assert InternalCredential(TOKEN, "").username(method, path, authorization) is None


def test_without_a_token_of_this_start_nothing_is_accepted() -> None:
    for credential in (
        InternalCredential(None, ""),
        InternalCredential("", ""),
        InternalCredential("short-token", ""),  # not one `issue_for_server_start` made
        InternalCredential.from_env({}, ""),
    ):
        assert not credential.enabled
        assert credential.username("POST", CHAT, basic("u:")) is None
        assert credential.username("POST", CHAT, basic("u:short-token")) is None
    from_env = InternalCredential.from_env({mlflow_internals.INTERNAL_GATEWAY_CREDENTIAL_VARIABLE: TOKEN}, "")
    assert from_env.username("POST", CHAT, basic(f"u:{TOKEN}")) == "u"


def test_the_gateway_is_found_under_the_static_prefix_only() -> None:
    credential = InternalCredential(TOKEN, "/mlflow")
    assert credential.username("POST", f"/mlflow{CHAT}", basic(f"u:{TOKEN}")) == "u"
    assert credential.username("POST", CHAT, basic(f"u:{TOKEN}")) is None


def test_the_gate_lets_a_jobs_call_through_for_mlflows_gateway_check(
    client: DescopeClient, tmp_path: Path
) -> None:
    gate = Gate(client, make_settings(tmp_path), internal=InternalCredential(TOKEN, ""))
    spoofed = {"x-mlflow-authorization": "Bearer gateway", "x-descope-roles": "admin"}
    job = unit_request("POST", CHAT, headers={"authorization": basic(f"U2editor:{TOKEN}"), **spoofed})
    verdict = gate.check(job)
    assert verdict.response is None
    # No Descope identity: MLflow's gateway check judges the job's user (authz checks it again).
    assert verdict.identity is None
    assert verdict.header_changes == {"x-mlflow-authorization": None, "x-descope-roles": None}
    assert gate.check_cached(job) is None  # not a session: always the full check


@pytest.mark.parametrize(
    ("path", "authorization"),
    [
        (CHAT, basic("U2editor:guessed")),
        ("/api/2.0/mlflow/experiments/search", basic(f"U2editor:{TOKEN}")),
    ],
)
def test_the_gate_refuses_the_token_elsewhere_and_a_wrong_one(
    client: DescopeClient, tmp_path: Path, path: str, authorization: str
) -> None:
    gate = Gate(client, make_settings(tmp_path), internal=InternalCredential(TOKEN, ""))
    verdict = gate.check(unit_request("POST", path, headers={"authorization": authorization}))
    assert verdict.response is not None
    assert verdict.response.status == 401
    assert json.loads(verdict.response.body)["error_code"] == "UNAUTHENTICATED"
    assert TOKEN not in verdict.response.body.decode()


@pytest.fixture
def job_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """MLflow's auth store on a temporary database with one signed-in user, and the authorization
    function with this start's credential."""
    from mlflow.server.auth import store

    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")  # type: ignore[no-untyped-call]
    store.create_user("U2editor", "unused-password", is_admin=False)
    store.create_user(BOOTSTRAP_ADMIN, "unused-password", is_admin=True)
    monkeypatch.setattr(authz, "_internal", InternalCredential(TOKEN, ""))
    return Flask("internal-credential")


def authorize_job(app: Flask, username: str, path: str = CHAT, token: str = TOKEN) -> Any:
    headers = {"Authorization": basic(f"{username}:{token}")}
    with app.test_request_context(path, method="POST", headers=headers):
        return authz.authorize()


def test_mlflow_hears_the_jobs_user(job_app: Flask) -> None:
    result = authorize_job(job_app, "U2editor")
    assert isinstance(result, Authorization)
    assert result.username == "U2editor"


@pytest.mark.parametrize("username", ["U2neverSignedIn", BOOTSTRAP_ADMIN, "__system"])
def test_a_job_cannot_act_as_someone_who_is_not_a_user_here(job_app: Flask, username: str) -> None:
    result = authorize_job(job_app, username)
    assert isinstance(result, FlaskResponse)
    assert result.status_code == 403
    assert json.loads(result.get_data())["error_code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    ("path", "token"),
    [(CHAT, "0" * 64), ("/api/2.0/mlflow/experiments/search", TOKEN)],
)
def test_the_authorization_function_checks_the_token_and_the_route_again(
    job_app: Flask, path: str, token: str
) -> None:
    """What the gate let through is not trusted: elsewhere, or with another token, the Basic header
    is no credential at all."""
    result = authorize_job(job_app, "U2editor", path, token)
    assert isinstance(result, FlaskResponse)
    assert result.status_code == 401
