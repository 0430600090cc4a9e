"""The bridge to MLflow's permission system in-process: MLflow's own auth store on a temporary SQLite
database, the authorization function run in a Flask request context, tokens from the emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask, Response
from werkzeug.datastructures import Authorization

from mlflow_descope_auth import DescopeClient, Identity
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server import authz
from mlflow_descope_auth.server.bootstrap import BOOTSTRAP_ADMIN

from .inprocess import issued_in_the_past


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """MLflow's auth store (the module-level one its validators read), on a database of this module."""
    from mlflow.server.auth import store as auth_store

    auth_store.init_db(f"sqlite:///{tmp_path_factory.mktemp('authz') / 'auth.db'}")  # type: ignore[no-untyped-call]
    authz.ensure_baseline_roles()
    return auth_store


@pytest.fixture
def client(emulator: Emulator) -> DescopeClient:
    """As the servers of the system tests are configured: editors EDIT, readers READ (the default)."""
    return DescopeClient(
        emulator.project_id,
        base_url=emulator.base_url,
        http_timeout=5,
        role_permissions="editor=EDIT,reader=READ",
    )


@pytest.fixture
def app(client: DescopeClient, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setattr(authz, "_client", client)
    return Flask("authz-unit")


def identity_of(emu: Emulator, client: DescopeClient, login_id: str, **claims: object) -> Identity:
    return client.validate_session(emu.sign({**emu.session_claims(login_id), **claims}))


def baseline_roles(store: Any, username: str) -> set[str]:
    user = store.get_user(username)
    return {r.name for r in store.list_user_roles(user.id) if r.name.startswith(authz.BASELINE_ROLE_PREFIX)}


def authorize(app: Flask, headers: dict[str, str]) -> Authorization | Response:
    with app.test_request_context("/api/2.0/mlflow/experiments/search", headers=headers):
        return authz.authorize()


def refusal(result: Authorization | Response) -> tuple[int, str]:
    assert isinstance(result, Response), result
    body: dict[str, str] = json.loads(result.get_data())
    return result.status_code, body["error_code"]


def test_the_baseline_roles_carry_exactly_their_level(store: Any) -> None:
    for level in authz.BASELINE_LEVELS:
        role = store.get_role_by_name("default", f"{authz.BASELINE_ROLE_PREFIX}{level}")
        grants = store.list_role_permissions(role.id)
        assert {g.permission for g in grants} == {level}
        assert {g.resource_pattern for g in grants} == {"*"}
        assert {g.resource_type for g in grants} <= set(authz.BASELINE_RESOURCE_TYPES)
        assert "experiment" in {g.resource_type for g in grants}


def test_a_user_is_provisioned_on_first_sight_with_the_baseline_of_their_roles(
    store: Any, emulator: Emulator, client: DescopeClient
) -> None:
    editor = identity_of(emulator, client, "editor", sub="U2authzEditor")
    authz.provision(editor)
    user = store.get_user(editor.username)
    assert user.is_admin is False
    assert baseline_roles(store, editor.username) == {f"{authz.BASELINE_ROLE_PREFIX}EDIT"}


def test_a_role_change_at_descope_moves_the_user_between_baselines_and_admin(
    store: Any, emulator: Emulator, client: DescopeClient
) -> None:
    sub = "U2authzMover"
    authz.provision(identity_of(emulator, client, "editor", sub=sub))
    assert baseline_roles(store, sub) == {f"{authz.BASELINE_ROLE_PREFIX}EDIT"}
    authz.provision(identity_of(emulator, client, "admin", sub=sub))
    assert store.get_user(sub).is_admin is True
    assert baseline_roles(store, sub) == set(), "an admin needs no baseline"
    authz.provision(identity_of(emulator, client, "reader", sub=sub, roles=[], permissions=[], tenants={}))
    assert store.get_user(sub).is_admin is False
    assert baseline_roles(store, sub) == set(), "no role: MLflow's default permission, no baseline role"


def test_a_valid_bearer_token_is_authorized_as_its_user(
    store: Any, app: Flask, emulator: Emulator, client: DescopeClient
) -> None:
    tokens = emulator.login("reader")
    result = authorize(app, {"Authorization": f"Bearer {tokens['sessionJwt']}"})
    assert isinstance(result, Authorization)
    assert result.username == emulator.user("reader").user_id
    assert store.get_user(result.username).is_admin is False


def test_the_session_cookie_is_a_credential_too(store: Any, app: Flask, emulator: Emulator) -> None:
    tokens = emulator.login("editor")
    result = authorize(app, {"Cookie": f"DS={tokens['sessionJwt']}; theme=dark"})
    assert isinstance(result, Authorization)
    assert result.username == emulator.user("editor").user_id


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic YWRtaW46cGFzc3dvcmQ="}, 401),
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        ({"Cookie": "DSR=only-a-refresh-token"}, 401),
    ],
)
def test_requests_without_a_valid_session_are_refused(
    store: Any, app: Flask, headers: dict[str, str], status: int
) -> None:
    assert refusal(authorize(app, headers)) == (status, "UNAUTHENTICATED")


def test_an_expired_session_is_refused(store: Any, app: Flask, emulator: Emulator) -> None:
    stale = issued_in_the_past(emulator, "reader", 3600)["sessionJwt"]
    assert refusal(authorize(app, {"Authorization": f"Bearer {stale}"})) == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize("username", [BOOTSTRAP_ADMIN, "__system"])
def test_reserved_usernames_are_refused(store: Any, app: Flask, emulator: Emulator, username: str) -> None:
    # The username comes from the token (the sub claim by default): a token naming the server's
    # bootstrap admin or an internal "__" name must not act as that account.
    token = emulator.sign({**emulator.session_claims("reader"), "sub": username})
    assert refusal(authorize(app, {"Authorization": f"Bearer {token}"})) == (403, "PERMISSION_DENIED")
