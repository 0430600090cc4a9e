"""Contracts of the MLflow internals this package uses (``mlflow_descope_auth.mlflow_internals``): one
test per item, in-process, against the installed MLflow (3.17.2 here; 3.18.0 in .venv-mlflow318,
scripts/test.sh). A failure names the item to re-read in the new MLflow. And the rule that keeps
them in one place: no other module of the package touches an MLflow private name."""

from __future__ import annotations

import ast
import inspect
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g

from mlflow_descope_auth import mlflow_internals as mi

PACKAGE = Path(mi.__file__).parent


@pytest.fixture
def auth_store(tmp_path: Path) -> Any:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")  # type: ignore[no-untyped-call]
    return store


@pytest.fixture
def restore_mlflow_auth() -> Iterator[Any]:
    """MLflow's auth module with the functions the door replaces put back afterwards."""
    import mlflow.server.auth as mlflow_auth

    saved = {name: getattr(mlflow_auth, name) for name in ("sender_is_admin", "_run_requirement")}
    tables = {name: dict(t) for name, t in vars(mlflow_auth).items() if isinstance(t, dict)}
    yield mlflow_auth
    for name, value in saved.items():
        setattr(mlflow_auth, name, value)
    for name, table in tables.items():
        getattr(mlflow_auth, name).update(table)


# --- The supported versions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("3.17.0", True),
        ("3.17.2", True),
        ("3.17.9", True),
        ("3.18.0", True),
        ("3.18", True),
        ("3.16.2", False),
        ("3.18.1", False),
        ("3.19.0", False),
        ("4.0.0", False),
        ("3.18.0rc1", False),
        ("3.17.3.dev0", False),
        ("not a version", False),
    ],
)
def test_the_supported_range(version: str, supported: bool) -> None:
    assert mi.mlflow_version_supported(version) is supported
    assert (mi.unsupported_mlflow_message(version) is None) is supported


def test_the_installed_mlflow_is_supported() -> None:
    import mlflow

    assert mi.installed_mlflow_version() == mlflow.__version__
    assert mi.unsupported_mlflow_message(mlflow.__version__) is None
    mi.check_mlflow_version()


def test_the_refusal_says_what_is_installed_what_is_supported_and_what_to_do() -> None:
    message = mi.unsupported_mlflow_message("3.19.0")
    assert message is not None
    assert "MLflow 3.19.0 is installed" in message
    assert mi.SUPPORTED_MLFLOW in message
    assert "pip install 'mlflow>=3.17,<3.18.1'" in message
    assert "\n" not in message


def test_mlflow_server_stops_before_any_worker_on_an_unsupported_mlflow(tmp_path: Path) -> None:
    """The start-up path of `mlflow server --app-name descope` (the app module imported by the server
    process) with MLflow reporting a version outside the range: it exits with the message."""
    script = (
        "import sys, mlflow\n"
        "mlflow.__version__ = '3.19.0'\n"
        "sys.argv = ['mlflow', 'server']\n"
        "import mlflow_descope_auth.server.app\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]),
        "DESCOPE_PROJECT_ID": "P2bench",
        "DESCOPE_AUTH_STATE_DIR": str(tmp_path),
    }
    env.pop(mi.SGI_NAME_VARIABLE, None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("mlflow-descope-auth "), done.stderr
    assert "MLflow 3.19.0 is installed" in done.stderr


# --- MLflow's start-up environment ----------------------------------------------------------------


def test_sgi_name_is_the_variable_mlflow_server_sets_for_each_runner() -> None:
    import mlflow.server
    import mlflow.server.auth
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    assert _MLFLOW_SGI_NAME.name == mi.SGI_NAME_VARIABLE
    server_source = inspect.getsource(mlflow.server)
    for runner in ("uvicorn", "waitress", "gunicorn"):
        assert f'env_map[_MLFLOW_SGI_NAME.name] = "{runner}"' in server_source
    # MLflow's auth app returns its FastAPI app exactly when this says uvicorn.
    assert '_MLFLOW_SGI_NAME.get() == "uvicorn"' in inspect.getsource(mlflow.server.auth.create_app)
    assert mi.server_runner({}) is None
    assert mi.server_runner({mi.SGI_NAME_VARIABLE: "uvicorn"}) == "uvicorn"


def test_admin_bootstrapped_makes_mlflows_auth_app_only_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.server.auth as mlflow_auth
    from mlflow.environment_variables import _MLFLOW_AUTH_ADMIN_BOOTSTRAPPED

    assert _MLFLOW_AUTH_ADMIN_BOOTSTRAPPED.name == mi.ADMIN_BOOTSTRAPPED_VARIABLE
    source = inspect.getsource(mlflow_auth._init_store_for_app)
    assert "if _MLFLOW_AUTH_ADMIN_BOOTSTRAPPED.get():" in source
    assert "bootstrap_admin_user()" in source.split("else:", 1)[1]
    monkeypatch.delenv(mi.ADMIN_BOOTSTRAPPED_VARIABLE, raising=False)
    assert not _MLFLOW_AUTH_ADMIN_BOOTSTRAPPED.get()  # type: ignore[no-untyped-call]
    mi.mark_auth_admin_bootstrapped()
    assert _MLFLOW_AUTH_ADMIN_BOOTSTRAPPED.get() is True  # type: ignore[no-untyped-call]


def test_static_prefix_is_the_variable_mlflows_handlers_read() -> None:
    import mlflow.server
    from mlflow.server import handlers

    assert handlers.STATIC_PREFIX_ENV_VAR == mi.STATIC_PREFIX_VARIABLE
    assert "STATIC_PREFIX_ENV_VAR" in inspect.getsource(mlflow.server)  # set for the workers
    assert mi.static_prefix({mi.STATIC_PREFIX_VARIABLE: "/mlflow/"}) == "/mlflow"
    assert mi.static_prefix({}) == ""


def test_mlflows_favicon_is_where_the_login_page_takes_it_from() -> None:
    favicon = mi.mlflow_favicon()
    assert favicon.is_file()
    assert favicon.read_bytes()[:4] == b"\x00\x00\x01\x00"  # an ICO file


def test_the_internal_gateway_token_is_the_one_mlflows_jobs_send_to_the_gateway() -> None:
    """The jobs that call the server's gateway as their user send this variable's value as the
    Basic-auth password, and MLflow's CLI sets it only for basic-auth (so the plugin does)."""
    import mlflow.genai.evaluation.job
    import mlflow.genai.scorers.job
    import mlflow.server
    from mlflow.environment_variables import _MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN

    assert _MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN.name == mi.INTERNAL_GATEWAY_CREDENTIAL_VARIABLE
    for job in (mlflow.genai.scorers.job, mlflow.genai.evaluation.job):
        source = inspect.getsource(job)
        assert 'os.environ["MLFLOW_TRACKING_USERNAME"] = username' in source
        assert 'os.environ["MLFLOW_TRACKING_PASSWORD"] = internal_token' in source
    assert 'if app_name == "basic-auth"' in inspect.getsource(mlflow.server._run_server)


def test_any_assistant_delegation_key_mlflow_reads_is_the_one_removed() -> None:
    """MLflow 3.18 verifies Assistant delegation credentials with this key (3.17 has none): the
    start-up step removes it, so no worker can verify one."""
    import mlflow.environment_variables as variables

    keys = {
        v.name
        for v in vars(variables).values()
        if "DELEGATION" in str(getattr(v, "name", "")) and "KEY" in str(getattr(v, "name", ""))
    }
    assert keys <= {mi.ASSISTANT_DELEGATION_KEY}


def test_the_scorer_and_evaluation_handlers_take_the_jobs_user_from_the_parsed_header() -> None:
    from mlflow.server import handlers

    source = inspect.getsource(handlers)
    assert source.count("username = request.authorization.username if request.authorization else None") == 2
    app = Flask(__name__)
    with app.test_request_context("/", headers={"Authorization": "Bearer a.session.token"}):
        from flask import request

        mi.expose_username_to_handlers("U2editor")
        assert request.authorization is not None
        assert request.authorization.username == "U2editor"
        assert request.authorization.type == "bearer"
        assert request.authorization.token == "a.session.token"
    with app.test_request_context("/"):  # a browser: the session is in a cookie
        mi.expose_username_to_handlers("U2reader")
        assert request.authorization is not None and request.authorization.username == "U2reader"
    mi.expose_username_to_handlers("outside a request")  # nothing to set


# --- The client's tracking and registry URIs ------------------------------------------------------


def test_the_uris_set_in_process_are_read_where_mlflow_keeps_them() -> None:
    import mlflow

    before = (mi.tracking_uri_set_in_process(), mi.registry_uri_set_in_process())
    try:
        mlflow.set_tracking_uri("http://tracking.example:5000")
        mlflow.set_registry_uri("http://registry.example:5001")
        assert mi.tracking_uri_set_in_process() == "http://tracking.example:5000"
        assert mi.registry_uri_set_in_process() == "http://registry.example:5001"
    finally:
        tracking_utils, registry_utils = mi._uri_modules()
        tracking_utils._tracking_uri = before[0]
        registry_utils._registry_uri = before[1]


# --- The server's tracking store ------------------------------------------------------------------


def test_the_tracking_store_is_the_one_mlflows_handlers_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server import handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    assert not [
        p for p in inspect.signature(handlers._get_tracking_store).parameters.values() if p.default is p.empty
    ]
    store = SqlAlchemyStore(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))  # type: ignore[no-untyped-call]
    monkeypatch.setattr(handlers, "_tracking_store", store)
    assert mi.tracking_store() is store


# --- MLflow's run lookup --------------------------------------------------------------------------


def test_the_run_lookup_was_checked_against_this_mlflow() -> None:
    """The fast run lookup reproduces MLflow's private `_run_requirement`: every supported MLflow must
    have a version of it that was read and found the same. A new one fails here: read its source
    (and `_fetch_or_none`, `SqlAlchemyStore._get_run`), then add its digest to KNOWN_RUN_LOOKUPS."""
    import mlflow

    original = mi.mlflow_run_requirement()
    assert original is not None
    assert list(inspect.signature(original).parameters) == ["run_id", "action"]
    digest = mi.run_requirement_digest(original)
    assert digest in mi.KNOWN_RUN_LOOKUPS, f"MLflow {mlflow.__version__}: unchecked run lookup {digest}"


def test_the_run_lookup_is_replaced_only_over_a_checked_one(restore_mlflow_auth: Any) -> None:
    mlflow_auth = restore_mlflow_auth
    original = mi.mlflow_run_requirement()

    def other(run_id: str, action: str) -> Any:
        return None

    def make(current: Any) -> Any:
        def fast(run_id: str, action: str) -> Any:
            return current(run_id, action)

        fast.descope_fast = True  # type: ignore[attr-defined]
        fast.__wrapped__ = current  # type: ignore[attr-defined]
        return fast

    mlflow_auth._run_requirement = other
    assert not mi.replace_run_requirement(make)
    assert mlflow_auth._run_requirement is other
    mlflow_auth._run_requirement = original
    assert mi.replace_run_requirement(make)
    assert mlflow_auth._run_requirement.__wrapped__ is original
    assert mi.replace_run_requirement(make)  # idempotent
    assert mlflow_auth._run_requirement.__wrapped__ is original
    assert mi.mlflow_run_requirement() is original


# --- MLflow's admin check -------------------------------------------------------------------------


def test_the_admin_check_was_checked_against_this_mlflow() -> None:
    """`sender_is_admin` reads the request's user for its admin flag, and MLflow's `_before_request`
    (its validators skipped for admins) looks it up by name when it runs. A new version fails here:
    read it, then add its digest to KNOWN_ADMIN_CHECKS."""
    import mlflow
    import mlflow.server.auth as mlflow_auth

    assert inspect.signature(mlflow_auth.sender_is_admin).parameters == {}
    source = inspect.getsource(mlflow_auth.sender_is_admin)
    assert "store.get_user(username).is_admin" in source
    digest = mi.sender_is_admin_digest()
    assert digest in mi.KNOWN_ADMIN_CHECKS, f"MLflow {mlflow.__version__}: unchecked admin check {digest}"
    before_request = inspect.getsource(mlflow_auth._before_request)
    assert "if sender_is_admin():" in before_request
    assert before_request.index("authenticate_request()") < before_request.index("sender_is_admin()")


def test_the_admin_check_answers_from_the_verified_identity(
    restore_mlflow_auth: Any, auth_store: Any
) -> None:
    mlflow_auth = restore_mlflow_auth
    original = mlflow_auth.sender_is_admin
    answers: list[bool | None] = []
    assert mi.answer_admin_checks_from(lambda: answers[-1])
    assert mi.answer_admin_checks_from(lambda: None)  # idempotent: the first stays
    assert mlflow_auth.sender_is_admin.__wrapped__ is original
    # MLflow's admin-only routes (webhooks, workspaces, gateway policies, ...) name the function in
    # its validator tables: they answer from the identity too.
    assert mi.admin_checks_left_in_validator_tables() == 0
    answers.append(True)
    assert mlflow_auth.sender_is_admin() is True
    answers.append(False)
    assert mlflow_auth.sender_is_admin() is False

    # None: MLflow's own check runs (the user read from the auth DB).
    from werkzeug.datastructures import Authorization

    answers.append(None)
    auth_store.create_user("ada", secrets.token_urlsafe(16), is_admin=True)
    saved = (mlflow_auth.store, mlflow_auth.authenticate_request)
    try:
        mlflow_auth.store = auth_store
        mlflow_auth.authenticate_request = lambda: Authorization("bearer", {"username": "ada"})
        assert mlflow_auth.sender_is_admin() is True
    finally:
        mlflow_auth.store, mlflow_auth.authenticate_request = saved


# --- The user record ------------------------------------------------------------------------------


def test_the_users_table_is_written_only_by_the_user_writes() -> None:
    """The per-request user memo is dropped by USER_WRITES: no other method of MLflow's auth store may
    write the `users` table (a new one fails here: add it to USER_WRITES)."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    markers = ("SqlUser(", ".is_admin =", ".password_hash =", "session.delete(user)", "query(SqlUser).update")
    writers = set()
    for name, function in inspect.getmembers(SqlAlchemyStore, inspect.isfunction):
        source = inspect.getsource(function)
        if any(marker in source for marker in markers):
            writers.add(name)
    assert writers == set(mi.USER_WRITES)


def test_users_are_memoized_per_request_and_writes_drop_the_memo(auth_store: Any) -> None:
    auth_store.create_user("ada", "a-Long-password-1", is_admin=False)
    mi.memoize_users_per_request(auth_store)
    mi.memoize_users_per_request(auth_store)  # idempotent
    app = Flask(__name__)
    with app.test_request_context("/"):
        first = auth_store.get_user("ada")
        assert auth_store.get_user("ada") is first
        auth_store.update_user("ada", is_admin=True)
        assert auth_store.get_user("ada").is_admin, "a write in the request drops the memo"
    with app.test_request_context("/"):
        assert auth_store.get_user("ada").is_admin
    # Outside a request nothing is memoized.
    assert auth_store.get_user("ada") is not auth_store.get_user("ada")


def test_user_and_roles_answers_like_get_user_and_list_user_roles(auth_store: Any) -> None:
    from mlflow.server.auth.entities import User

    assert list(inspect.signature(User).parameters) == ["id_", "username", "password_hash", "is_admin"]
    alice = auth_store.create_user("alice", secrets.token_urlsafe(16), is_admin=True)
    bob = auth_store.create_user("bob", secrets.token_urlsafe(16))
    for name in ("descope-baseline-READ", "descope-baseline-EDIT", "team", "descope_baseline_x"):
        role = auth_store.create_role(name, "default")
        auth_store.assign_role_to_user(alice.id, role.id)
    auth_store.grant_user_permission("alice", "experiment", "1", "EDIT")  # alice's own grants: a role too
    app = Flask(__name__)
    for user in (alice, bob):
        expected = {
            r.name: r.id
            for r in auth_store.list_user_roles(user.id)
            if r.name.startswith("descope-baseline-")
        }
        with app.test_request_context("/"):
            record, held = mi.user_and_roles(auth_store, user.username, "descope-baseline-")
            assert held == expected
            orm = auth_store.get_user(user.username)
            assert record is not None
            assert (record.to_json(), record.password_hash) == (orm.to_json(), orm.password_hash)
            assert type(record.is_admin) is type(orm.is_admin)
            assert g.descope_users == {user.username: record}, "the record is kept for this request"
    _, held = mi.user_and_roles(auth_store, "alice", "descope-baseline-")
    assert set(held) == {"descope-baseline-READ", "descope-baseline-EDIT"}
    assert mi.user_and_roles(auth_store, "nobody", "descope-baseline-") == (None, {})
    with pytest.raises(ValueError, match="wildcard"):
        mi.user_and_roles(auth_store, "alice", "descope_")


# --- The served routes ----------------------------------------------------------------------------


def test_the_flask_route_matcher_resolves_as_flask_dispatches() -> None:
    app = Flask(__name__)
    app.add_url_rule("/api/2.0/mlflow/runs/get", "get_run", lambda: "", methods=["GET"])
    rule, args = mi.flask_route_matcher(app).match("/api/2.0/mlflow/runs/get", "GET", return_rule=True)
    assert rule.rule == "/api/2.0/mlflow/runs/get"
    assert args == {}


def test_fastapi_routes_walks_routers_fastapi_keeps_unflattened() -> None:
    from fastapi import APIRouter, FastAPI
    from starlette.routing import Mount

    inner = APIRouter(prefix="/inner")
    inner.add_api_route("/leaf/{name}", lambda name: name, methods=["GET"])
    outer = APIRouter(prefix="/outer")
    outer.include_router(inner)
    app = FastAPI()
    app.include_router(outer, prefix="/api")
    app.mount("/static", FastAPI())
    found = [(prefix + route.path, type(route)) for prefix, route in mi.fastapi_routes(app.routes)]
    assert [path for path, _ in found if "leaf" in path] == ["/api/outer/inner/leaf/{name}"]
    assert ("/static", Mount) in found


def test_the_served_mlflow_app_has_every_classified_route_kind() -> None:
    """The walk over MLflow's own FastAPI app finds its gateway and tracing routes (a FastAPI change
    that hid them would leave them unclassified, and refused to non-admins)."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    app = create_fastapi_app(flask_app)
    paths = {prefix + getattr(route, "path", "") for prefix, route in mi.fastapi_routes(app.routes)}
    assert "/v1/traces" in paths
    assert any(p.startswith("/gateway/") for p in paths)


# --- The rule -------------------------------------------------------------------------------------

# Framework internals the route table needs, kept behind the door as well.
FRAMEWORK_INTERNALS = frozenset({"url_map", "include_context", "original_router", "_low_priority_routes"})


def _private_uses(path: Path) -> list[str]:
    """MLflow private names used in one module: imports of private mlflow modules or names, attributes
    starting with "_" read off a name bound to something imported from mlflow, getattr/setattr with
    such a name, string literals naming a private MLflow variable, and the framework internals."""
    tree = ast.parse(path.read_text(), str(path))
    mlflow_names: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlflow":
                    if _private_module(alias.name):
                        found.append(f"line {node.lineno}: import {alias.name}")
                    mlflow_names.add(alias.asname or "mlflow")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            module = node.module or ""
            if _private_module(module):
                found.append(f"line {node.lineno}: from {module}")
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"line {node.lineno}: from {module} import {alias.name}")
                mlflow_names.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if use := _private_use(node, mlflow_names):
            found.append(f"line {getattr(node, 'lineno', 0)}: {use}")
    return found


def _private_module(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def _private_use(node: ast.AST, mlflow_names: set[str]) -> str | None:
    if isinstance(node, ast.Attribute):
        root: ast.expr = node.value
        while isinstance(root, ast.Attribute):
            root = root.value
        on_mlflow = isinstance(root, ast.Name) and root.id in mlflow_names
        if on_mlflow and node.attr.startswith("_") and not node.attr.startswith("__"):
            return f"attribute {node.attr}"
        if node.attr in FRAMEWORK_INTERNALS:
            return f"attribute {node.attr}"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr")
    ):
        target, name = [*node.args, None, None][:2]
        on_mlflow = isinstance(target, ast.Name) and target.id in mlflow_names
        if on_mlflow and isinstance(name, ast.Constant) and str(name.value).startswith("_"):
            return f"{node.func.id} {name.value!r}"
    text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
    if text.startswith("_MLFLOW") or text in FRAMEWORK_INTERNALS:
        return f"string {text!r}"
    return None


def test_no_other_module_uses_an_mlflow_private_name() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(mi.__file__):
            continue
        if uses := _private_uses(path):
            offenders[str(path.relative_to(PACKAGE))] = uses
    assert offenders == {}, "MLflow internals outside mlflow_internals.py"


def test_the_rule_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    module = tmp_path / "sample.txt"
    module.write_text(
        "import os\n"
        "import mlflow.server.auth as mlflow_auth\n"
        "from mlflow.server.handlers import _get_tracking_store\n"
        "from mlflow.tracking._tracking_service import utils\n"
        "from mlflow.server.auth import store\n"
        "mlflow_auth._run_requirement = None\n"
        "store._get_user\n"
        "getattr(mlflow_auth, '_fetch_or_none', None)\n"
        "os.environ['_MLFLOW_SGI_NAME']\n"
        "app.url_map.bind('x')\n"
        "store.get_user\n"
        "os._exit\n"
    )
    lines = [int(use.split(":")[0].split()[1]) for use in _private_uses(module)]
    assert sorted(set(lines)) == [3, 4, 6, 7, 8, 9, 10]
    assert _private_uses(Path(mi.__file__)), "the door itself holds them"
