"""The route policy in-process (fast): every route the installed MLflow registers is classified, a
request resolves to the route that serves it, a route a new MLflow adds is refused to non-admins, and
the request bodies the server judges are decoded as MLflow decodes them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from mlflow_descope_auth import DescopeClient, Identity
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server import body_rules
from mlflow_descope_auth.server.route_policy import (
    CLASSES,
    Access,
    RoutePolicy,
    RouteTable,
    Target,
    classify,
    normalise,
)

from ..mlflow_routes import concrete, enumerate_routes

JSON = "application/json"


def mlflow_apps() -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow.server
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(mlflow.server.app), mlflow.server.app


@pytest.fixture(scope="module")
def table() -> RouteTable:
    """MLflow's routes, plus the user/role routes `mlflow.server.auth.create_app` adds (not run
    in-process: it opens its store), in a Flask app of their own."""
    fastapi_app, mlflow_flask = mlflow_apps()
    flask_app = Flask("mlflow-with-auth-routes")
    for i, rule in enumerate(mlflow_flask.url_map.iter_rules()):
        flask_app.add_url_rule(rule.rule, f"r{i}", lambda **_: "", methods=rule.methods)
    auth_methods: dict[str, set[str]] = {}
    for template, method in enumerate_routes().auth:
        auth_methods.setdefault(template, set()).add(method)
    for i, (template, methods) in enumerate(sorted(auth_methods.items())):
        flask_app.add_url_rule(template, f"a{i}", lambda **_: "", methods=sorted(methods))
    return RouteTable(fastapi_app.routes, flask_app)


def identity(emulator: Emulator, client: DescopeClient, login_id: str, **claims: object) -> Identity:
    token = emulator.sign({**emulator.session_claims(login_id), **claims})
    return client.validate_session(token)


def test_every_route_mlflow_registers_is_classified() -> None:
    routes = enumerate_routes()
    pairs = [*routes.flask, *routes.fastapi, *routes.auth]
    assert len(pairs) > 500  # the enumeration itself works
    unclassified = sorted({f"{m} {t}" for t, m in pairs if classify(m, t) is Access.UNCLASSIFIED})
    assert unclassified == [], "classify these in route_policy._TABLE:\n" + "\n".join(unclassified)


def test_the_table_names_only_routes_some_supported_mlflow_serves() -> None:
    """Nothing stale: each line is a route of the installed MLflow, or of the other supported
    version (the 3.18-only Skill Registry and issue schedule under 3.17, nothing the other way)."""
    routes = enumerate_routes()
    served = {(m, normalise(t)) for t, m in [*routes.flask, *routes.fastapi, *routes.auth]}
    stale = sorted(
        f"{m} {t}"
        for m, t in CLASSES
        if (m, t) not in served
        and not (t.startswith("API/3.0/mlflow/skills") or t.endswith("schedule/state"))
    )
    assert stale == []


def test_every_route_resolves_to_a_route_of_the_same_class(table: RouteTable) -> None:
    routes = enumerate_routes()
    wrong = []
    for template, method in [*routes.flask, *routes.fastapi]:
        if method == "WEBSOCKET":
            continue
        judged = table.judge(method, concrete(template))
        if judged is None or judged[0] is not classify(method, template):
            wrong.append(f"{method} {template} -> {judged}")
    assert wrong == []


def test_fastapi_routes_win_over_flask_as_in_mlflow(table: RouteTable) -> None:
    route = table.resolve("PUT", "/api/2.0/mlflow-artifacts/artifacts/a/b.txt")
    assert route is not None and route.source == "fastapi"
    route = table.resolve("GET", "/api/2.0/mlflow/experiments/get")
    assert route is not None and route.source == "flask"
    assert table.resolve("GET", "/no/such/route") is None
    assert table.resolve("DELETE", "/api/2.0/mlflow/experiments/get") is None  # 405 in Flask


def test_a_route_a_new_mlflow_adds_is_refused_to_everyone_but_admins(
    emulator: Emulator, client: DescopeClient
) -> None:
    from fastapi import FastAPI

    flask_app = Flask("new-mlflow")
    flask_app.add_url_rule("/api/2.0/mlflow/brand-new/create", "new", lambda: "", methods=["POST"])
    fastapi_app = FastAPI()
    fastapi_app.add_api_route("/ajax-api/3.0/mlflow/new-registry/{name}", lambda name: name, methods=["POST"])
    policy = RoutePolicy(RouteTable.for_app(fastapi_app, flask_app))
    editor = identity(emulator, client, "editor")
    admin = identity(emulator, client, "admin")
    assert admin.is_admin and not editor.is_admin
    for path in ("/api/2.0/mlflow/brand-new/create", "/ajax-api/3.0/mlflow/new-registry/x"):
        refusal, target = policy.check("POST", path, editor)
        assert refusal is not None and refusal.status == 403, path
        assert target is not None and classify("POST", target.template) is Access.UNCLASSIFIED
        assert policy.check("POST", path, admin) == (None, target)


@pytest.mark.parametrize(
    ("login_id", "claims", "expected"),
    [
        ("reader", {"roles": []}, 403),  # the default, READ
        ("reader", {"roles": ["nobody"]}, 403),
        ("editor", {"roles": ["reader", "editor"]}, None),  # the highest role counts
    ],
)
def test_creates_need_a_baseline_of_edit(
    emulator: Emulator, login_id: str, claims: dict[str, object], expected: int | None, table: RouteTable
) -> None:
    client = DescopeClient(
        emulator.project_id, base_url=emulator.base_url, role_permissions="editor=EDIT,reader=READ"
    )
    policy = RoutePolicy(table)
    who = identity(emulator, client, login_id, **claims)
    for path in (
        "/api/2.0/mlflow/experiments/create",
        "/ajax-api/3.0/mlflow/demo/generate",
        "/ajax-api/3.0/mlflow/mcp-servers/team/tool/versions",
        "/ajax-api/3.0/jobs/",
    ):
        refusal, _ = policy.check("POST", path, who)
        assert (refusal.status if refusal else None) == expected, path
        if refusal is not None:
            assert "EDIT" in json.loads(refusal.body)["message"]


def test_refused_routes_are_refused_even_to_admins(
    emulator: Emulator, client: DescopeClient, table: RouteTable
) -> None:
    policy = RoutePolicy(table)
    admin = identity(emulator, client, "admin")
    for method, path in (
        ("PATCH", "/api/2.0/mlflow/users/update-admin"),
        ("POST", "/ajax-api/2.0/mlflow/users/create"),
        ("PATCH", "/api/2.0/mlflow/users/update-password"),
    ):
        refusal, _ = policy.check(method, path, admin)
        assert refusal is not None and refusal.status == 403
    assert policy.check("GET", "/no/such/route", admin)[0] is None
    reader = identity(emulator, client, "reader")
    refusal, _ = policy.check("GET", "/no/such/route", reader)
    assert refusal is not None and refusal.status == 404


def test_the_assistant_is_admin_only(emulator: Emulator, client: DescopeClient, table: RouteTable) -> None:
    policy = RoutePolicy(table)
    editor = identity(emulator, client, "editor")
    for method, path in (
        ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
        ("POST", "/ajax-api/3.0/mlflow/assistant/skills/install"),
    ):
        refusal, _ = policy.check(method, path, editor)
        assert refusal is not None and refusal.status == 403
        assert policy.check(method, path, identity(emulator, client, "admin"))[0] is None


# -- bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "decoded"),
    [
        (b'{"name": "m"}', {"name": "m"}),
        (json.dumps(json.dumps({"name": "*"})).encode(), {"name": "*"}),  # legacy double encoding
        (b"", {}),
        (b"not json", {}),  # Flask's get_json(silent=True)
        ('{"name": "m"}'.encode("utf-16"), {"name": "m"}),  # json.loads detects UTF-16/32, as Flask does
    ],
)
def test_bodies_are_decoded_as_mlflow_decodes_them(body: bytes, decoded: object) -> None:
    assert body_rules.mlflow_json(body) == decoded


def test_a_body_too_deep_to_decode_is_a_400(emulator: Emulator, client: DescopeClient) -> None:
    editor = identity(emulator, client, "editor")
    for template in (
        "API/2.0/mlflow/registered-models/create",
        "API/2.0/mlflow/experiments/search",
        "/graphql",
    ):
        target = Target(template, "flask")
        assert body_rules.needs_body("POST", target)
        judged = body_rules.judge("POST", "", target, b"[" * 100_000, JSON, editor)
        assert not isinstance(judged, bytes) and judged.status == 400


@pytest.mark.parametrize(
    ("template", "path", "body", "refused"),
    [
        ("API/2.0/mlflow/registered-models/create", "", {"name": "*"}, True),
        ("API/2.0/mlflow/registered-models/create", "", {"name": "**"}, False),
        ("API/2.0/mlflow/registered-models/rename", "", {"name": "a", "newName": "*"}, True),
        ("API/3.0/mlflow/skills/bulk-register", "", {"skills": [{"name": "ok"}, {"name": "*"}]}, True),
        ("API/3.0/mlflow/scorers/register", "", {"experiment_id": "1", "name": "*"}, True),
        ("API/3.0/mlflow/mcp-servers/{}/versions", "/api/3.0/mlflow/mcp-servers/*/versions", {}, True),
        ("API/3.0/mlflow/mcp-servers/{}/versions", "/api/3.0/mlflow/mcp-servers/a*/versions", {}, False),
        ("API/2.0/mlflow/runs/set-tag", "", {"run_id": "r", "key": "mlflow.user", "value": "x"}, True),
        ("API/2.0/mlflow/runs/set-tag", "", {"run_id": "r", "key": "descope.email", "value": "x"}, True),
        ("API/2.0/mlflow/runs/set-tag", "", {"run_id": "r", "key": "mlflow.runName", "value": "x"}, False),
        ("API/2.0/mlflow/runs/log-batch", "", {"tags": [{"key": "a"}, {"key": "descope.roles"}]}, True),
        ("API/2.0/mlflow/runs/delete-tag", "", {"run_id": "r", "key": "mlflow.user"}, True),
    ],
)
def test_judged_bodies(
    emulator: Emulator, client: DescopeClient, template: str, path: str, body: object, refused: bool
) -> None:
    raw = json.dumps(body).encode()
    for encoded in (raw, json.dumps(raw.decode()).encode()):
        judged = body_rules.judge(
            "POST", path, Target(template, "flask"), encoded, JSON, identity(emulator, client, "editor")
        )
        assert (not isinstance(judged, bytes) and judged.status == 400) is refused
        if not refused:
            assert judged == encoded


def test_create_run_is_rewritten_with_the_verified_user(emulator: Emulator, client: DescopeClient) -> None:
    editor = identity(emulator, client, "editor")
    sent = {"experiment_id": "1", "userId": "mallory", "tags": [{"key": "mlflow.user", "value": "mallory"}]}
    for encoded in (json.dumps(sent).encode(), json.dumps(json.dumps(sent)).encode()):
        judged = body_rules.judge("POST", "", Target(body_rules.CREATE_RUN, "flask"), encoded, JSON, editor)
        assert isinstance(judged, bytes)
        message = json.loads(judged)
        assert message["user_id"] == editor.username and "userId" not in message
        assert {"key": "mlflow.user", "value": editor.username} in message["tags"]
        assert {"key": "mlflow.user", "value": "mallory"} not in message["tags"]


def test_a_promptlab_run_is_attributed_like_any_run(emulator: Emulator, client: DescopeClient) -> None:
    editor = identity(emulator, client, "editor")
    sent = {"experiment_id": "1", "user_id": "mallory", "tags": [{"key": "descope.email", "value": "m@x"}]}
    target = Target("API/2.0/mlflow/runs/create-promptlab-run", "flask")
    judged = body_rules.judge("POST", "", target, json.dumps(sent).encode(), JSON, editor)
    assert not isinstance(judged, bytes) and judged.status == 400  # a reserved tag
    sent["tags"] = []
    judged = body_rules.judge("POST", "", target, json.dumps(sent).encode(), JSON, editor)
    assert isinstance(judged, bytes)
    assert json.loads(judged) == {**sent, "user_id": editor.username}


def test_the_gate_drops_mlflow_credential_headers_a_client_sends(
    emulator: Emulator, client: DescopeClient, tmp_path: Path
) -> None:
    """MLflow 3.18 honours an Assistant delegation token before the authorization function, and its
    internal gateway token on /gateway/: a client's copies must never reach MLflow."""
    from mlflow_descope_auth.server.gate import Gate
    from mlflow_descope_auth.server.http import Request
    from mlflow_descope_auth.server.settings import ServerSettings

    settings = ServerSettings(
        flow_id="sign-up-or-in",
        redirect_url="/",
        web_component_url="http://127.0.0.1/unused.js",
        cookie_secure="auto",
        auth_db_uri=f"sqlite:///{tmp_path / 'auth.db'}",
        state_dir=tmp_path / "state",
        static_prefix="",
    )
    gate = Gate(client, settings)
    headers = {
        "authorization": f"Bearer {emulator.login('reader')['sessionJwt']}",
        "x-mlflow-assistant-delegation": "someone-else's-token",
        "x-mlflow-authorization": "Basic aW50ZXJuYWw6dG9rZW4=",
        "x-descope-roles": "admin",
        "x-mlflow-workspace": "default",
    }
    for check in (gate.check, gate.check_cached):
        verdict = check(
            Request("GET", "/gateway/x/mlflow/invocations", query_string="", headers=headers, scheme="http")
        )
        assert verdict is not None and verdict.identity is not None
        dropped = {h for h, v in verdict.header_changes.items() if v is None}
        assert dropped == {"x-mlflow-assistant-delegation", "x-mlflow-authorization", "x-descope-roles"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"run_uuid": "mine", "runId": "yours", "key": "k"},
            {"run_uuid": "mine", "run_id": "yours", "key": "k"},
        ),
        ({"experimentIds": ["1"], "maxResults": 5}, {"experiment_ids": ["1"], "maxResults": 5}),
        ({"name": "m", "newName": "n"}, {"name": "m", "new_name": "n"}),
        ({"run_id": "a", "runId": "b"}, None),  # both spellings: refused, as MLflow refuses them
    ],
)
def test_identifiers_reach_mlflow_in_the_spelling_its_validators_read(
    emulator: Emulator, client: DescopeClient, body: dict[str, object], expected: dict[str, object] | None
) -> None:
    target = Target("API/2.0/mlflow/runs/set-tag", "flask")
    judged = body_rules.judge(
        "POST", "", target, json.dumps(body).encode(), JSON, identity(emulator, client, "editor")
    )
    if expected is None:
        assert not isinstance(judged, bytes) and judged.status == 400
    else:
        assert isinstance(judged, bytes) and json.loads(judged) == expected


def test_a_body_that_is_not_json_is_refused_on_mlflow_api_routes(
    emulator: Emulator, client: DescopeClient
) -> None:
    """On DELETE, MLflow 3.17's validator reads the query string unless the body is JSON, while its
    handler reads the body whatever its type: the two must not name different resources."""
    editor = identity(emulator, client, "editor")
    target = Target("API/2.0/mlflow/registered-models/delete", "flask")
    for content_type in ("text/plain", None, "application/x-www-form-urlencoded"):
        judged = body_rules.judge("DELETE", "", target, b'{"name": "theirs"}', content_type, editor)
        assert not isinstance(judged, bytes) and judged.status == 400
    for content_type in (JSON, "application/json; charset=utf-8", "application/merge-patch+json"):
        assert (
            body_rules.judge("DELETE", "", target, b'{"name": "theirs"}', content_type, editor)
            == b'{"name": "theirs"}'
        )
    assert body_rules.judge("DELETE", "", target, b"", None, editor) == b""
    # A file upload is not JSON, and is not read by the gate at all.
    for template in ("API/2.0/mlflow-artifacts/artifacts/{}", "API/2.0/mlflow/upload-artifact"):
        assert not body_rules.needs_body("PUT", Target(template, "flask"))
    assert not body_rules.needs_body("POST", Target("API/3.0/mlflow/traces", "fastapi"))
