"""The ``mlflow.app`` entry point ``descope``: ``mlflow server --app-name descope``.

MLflow calls ``create_app`` in every worker. Under uvicorn (the default) it returns an ASGI app, under
gunicorn or waitress a WSGI app; both put the Descope gate in front of MLflow's own auth app.
"""

from __future__ import annotations

import sys
from typing import Any

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth._core import ConfigurationError, DescopeClient, RefreshCoordinator
from mlflow_descope_auth.server.settings import ServerSettings


def create_app() -> Any:
    from mlflow_descope_auth.clients import get_descope_client
    from mlflow_descope_auth.server import authz, bootstrap
    from mlflow_descope_auth.server.gate import Gate
    from mlflow_descope_auth.server.refresh_store import open_refresh_store
    from mlflow_descope_auth.server.route_policy import RoutePolicy, RouteTable
    from mlflow_descope_auth.server.routes import AuthRoutes

    mlflow_internals.check_mlflow_version()
    settings = ServerSettings.from_env()
    client = get_descope_client()
    bootstrap.prepare(settings, client.settings()["default_permission"])
    authz.use_client(client)

    # Imported only after `prepare`: mlflow.server.auth reads its config file at import.
    from mlflow.server import app as flask_app
    from mlflow.server.auth import auth_config
    from mlflow.server.auth import create_app as create_mlflow_auth_app

    inner = create_mlflow_auth_app(flask_app)
    from mlflow_descope_auth.server.admin_page import AdminPage

    AdminPage(client).install(flask_app)
    from mlflow_descope_auth.server import permission_lookups

    permission_lookups.install(authz.verified_admin)
    # Refresh results are shared where the workers and replicas already meet: the auth DB when it is
    # PostgreSQL, else the state directory; sealed with a key only servers holding the secret derive.
    store = open_refresh_store(auth_config.database_uri, settings.state_dir)
    refresher = RefreshCoordinator(client, bootstrap.flask_secret_key(settings), store)
    gate = Gate(client, settings, refresher)
    routes = AuthRoutes(gate, client)
    policy = RoutePolicy(RouteTable.for_app(inner, flask_app, settings.static_prefix))
    if mlflow_internals.server_runner() == "uvicorn":
        from mlflow_descope_auth.server.asgi import DescopeASGIMiddleware

        return DescopeASGIMiddleware(inner, gate, routes, policy)
    from mlflow_descope_auth.server.wsgi import DescopeWSGIMiddleware

    return DescopeWSGIMiddleware(inner, gate, routes, policy)


def _refuse_to_start_without_config() -> None:
    """``mlflow server`` imports this module in its own process (to see that ``create_app`` is a
    factory) before it starts any worker: the one place to stop with a clear message, rather than
    workers that fail, restart and fail again."""
    if mlflow_internals.server_runner() or sys.argv[1:2] != ["server"]:
        return
    if unsupported := mlflow_internals.unsupported_mlflow_message(
        mlflow_internals.installed_mlflow_version()
    ):
        sys.exit(unsupported)  # it names the package already
    try:
        ServerSettings.from_env()
        DescopeClient.from_env()
    except ConfigurationError as exc:
        sys.exit(f"mlflow-descope-auth: {exc}")


_refuse_to_start_without_config()
