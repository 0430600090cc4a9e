"""The ``mlflow.app`` entry point ``descope``: ``mlflow server --app-name descope``.

``create_app`` is one object that each of the servers MLflow offers loads as it is: uvicorn (the
default) as an ASGI app, gunicorn (``--gunicorn-opts``) and waitress (``--waitress-opts``) as a WSGI
app. It is not a function, so MLflow passes it to each server by name alone (MLflow 3.17 turns a
factory function into ``module:create_app()`` for waitress, which waitress rejects). It builds the
app on first use, in each worker: under uvicorn an ASGI app, under the others a WSGI app (MLflow
sets ``_MLFLOW_SGI_NAME`` for its workers), both with the Descope gate in front of MLflow's own auth
app.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth._core import ConfigurationError, DescopeClient, RefreshCoordinator
from mlflow_descope_auth.server import internal_credential
from mlflow_descope_auth.server.settings import ServerSettings

_log = logging.getLogger(__name__)


def build_app() -> Any:
    """The app for this worker's server: ASGI under uvicorn, WSGI otherwise."""
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
    internal = internal_credential.InternalCredential.from_env(os.environ, settings.static_prefix)
    authz.use_internal_credential(internal)
    gate = Gate(client, settings, refresher, internal)
    routes = AuthRoutes(gate, client)
    policy = RoutePolicy(RouteTable.for_app(inner, flask_app, settings.static_prefix))
    if mlflow_internals.server_runner() == "uvicorn":
        from mlflow_descope_auth.server.asgi import DescopeASGIMiddleware

        return DescopeASGIMiddleware(inner, gate, routes, policy)
    from mlflow_descope_auth.server.wsgi import DescopeWSGIMiddleware

    return DescopeWSGIMiddleware(inner, gate, routes, policy)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class DescopeApp:
    """ASGI and WSGI at once, by the call's shape: ``(environ, start_response)`` is WSGI;
    ``(scope)`` is ASGI 2, which uvicorn uses for an object whose ``__call__`` is not a coroutine
    function, ``(scope, receive, send)`` ASGI 3. Called with nothing it raises TypeError, which is
    how uvicorn tells an app from a factory."""

    def __init__(self, build: Callable[[], Any] = build_app) -> None:
        self._build = build
        self._app: Any = None
        self._failure: Exception | None = None
        self._lock = threading.Lock()

    def app(self) -> Any:
        """The built app (built now, once per process, if it was not yet). A build that failed is
        not tried again: it may have got as far as registering MLflow's request hooks, and a second
        set would run every check twice. The worker answers 503 until it is restarted."""
        if self._app is None:
            with self._lock:
                if self._failure is not None:
                    raise self._failure
                if self._app is None:
                    try:
                        self._app = self._build()
                    except Exception as exc:
                        self._failure = exc
                        _log.error("mlflow-descope-auth could not start; restart the server: %s", exc)
                        raise
        return self._app

    def __call__(self, *args: Any) -> Any:
        if len(args) == 2:
            _expect_runner(asgi=False)
            try:
                app = self.app()
            except Exception:
                return _unavailable(*args)
            return app(*args)
        if len(args) == 1:
            return functools.partial(self._asgi, args[0])
        if len(args) == 3:
            return self._asgi(*args)
        raise TypeError(
            "mlflow_descope_auth.server.app:create_app is the app itself (ASGI and WSGI), not a factory"
        )

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            _expect_runner(asgi=True)
            # Built in the event loop's thread: the first call is uvicorn's start-up (lifespan),
            # before it serves any request.
            app = self.app()
        except Exception as exc:
            if scope["type"] != "lifespan":
                raise
            # uvicorn stops this worker with the message, instead of serving without an app.
            await receive()
            await send({"type": "lifespan.startup.failed", "message": f"mlflow-descope-auth: {exc}"})
            return
        await app(scope, receive, send)


def _unavailable(environ: Any, start_response: Callable[..., Any]) -> list[bytes]:
    """What a WSGI worker whose app could not be built answers: the reason is in the server's log,
    not for whoever asks."""
    body = b"The MLflow server could not start. Its administrator can find the reason in its log.\n"
    start_response(
        "503 Service Unavailable",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _expect_runner(*, asgi: bool) -> None:
    """MLflow's auth app builds a FastAPI app exactly when its workers are told "uvicorn": the
    server that calls must be the one MLflow announced."""
    runner = mlflow_internals.server_runner()
    if asgi != (runner == "uvicorn"):
        announced = f"{mlflow_internals.SGI_NAME_VARIABLE}={runner}" if runner else "no server"
        served = "an ASGI server" if asgi else "a WSGI server"
        raise RuntimeError(
            f"the app is served by {served}, but MLflow announced {announced}: start it with "
            "mlflow server --app-name descope [--gunicorn-opts ... | --waitress-opts ...]"
        )


create_app = DescopeApp()


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
    # Still in `mlflow server`, before it starts the workers and the job runner: they inherit it.
    internal_credential.issue_for_server_start(os.environ)


_refuse_to_start_without_config()
