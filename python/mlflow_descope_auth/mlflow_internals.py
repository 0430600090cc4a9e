"""Every use this package makes of MLflow's private names and undocumented internals, in one place.

MLflow's plugin API (``mlflow.app``, ``authorization_function``, request auth/header providers) does
not reach everything the plugin needs: which server runs the workers, the auth DB bootstrap, the
static prefix, the permission checks' run and user lookups, the route table. Each item below is one
small function or constant with the reason it is needed; ``tests_py/test_mlflow_internals.py`` holds
a contract test per item (the name exists, with the shape relied on), run against every supported
MLflow, and a test that no other module of the package touches an MLflow private name.

``SUPPORTED_MLFLOW`` names the versions these were checked against; the server refuses to start on
any other (``check_mlflow_version``). MLflow is imported lazily: ``mlflow.server.auth`` reads its
config file at import, so nothing here may import it before ``bootstrap.prepare`` has written it,
and the client plugins must not pull in the server.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

# --- The supported versions -----------------------------------------------------------------------

# The MLflow releases whose internals (below) were read and found as this module expects.
SUPPORTED_MLFLOW = "3.17.x and 3.18.0"


def mlflow_version_supported(version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    if parsed.is_prerelease or parsed.is_devrelease:
        return False
    return parsed.release[:2] == (3, 17) or parsed.release in ((3, 18), (3, 18, 0))


def unsupported_mlflow_message(version: str) -> str | None:
    """The one paragraph the server stops with on an MLflow it was not checked against; None on a
    supported one."""
    if mlflow_version_supported(version):
        return None
    from mlflow_descope_auth import __version__

    return (
        f"mlflow-descope-auth {__version__} supports MLflow {SUPPORTED_MLFLOW}, and MLflow {version} "
        "is installed. The server plugin relies on parts of MLflow's auth server that are not a "
        "public API (its permission checks' user and run lookups, its start-up environment), checked "
        "against those versions only, so it does not start on another rather than guess. Install a "
        "supported MLflow (pip install 'mlflow>=3.17,<3.18.1'), or upgrade mlflow-descope-auth to a "
        f"release that supports MLflow {version}."
    )


def installed_mlflow_version() -> str:
    import mlflow

    return str(mlflow.__version__)


class UnsupportedMlflowError(RuntimeError):
    """Raised by ``check_mlflow_version`` (a worker that creates the app on an unsupported MLflow)."""


def check_mlflow_version() -> None:
    message = unsupported_mlflow_message(installed_mlflow_version())
    if message is not None:
        raise UnsupportedMlflowError(message)


# --- MLflow's start-up environment ----------------------------------------------------------------

# `mlflow server` sets this in each worker's environment to the server it runs ("uvicorn",
# "gunicorn", "waitress"), and its auth app returns a FastAPI app only under "uvicorn": the plugin
# must wrap the same kind of app. Unset in the `mlflow server` process itself, before any worker.
SGI_NAME_VARIABLE = "_MLFLOW_SGI_NAME"


def server_runner(environ: Mapping[str, str] | None = None) -> str | None:
    """ "uvicorn", "gunicorn" or "waitress" in a server worker; None in the ``mlflow server`` process."""
    return (os.environ if environ is None else environ).get(SGI_NAME_VARIABLE) or None


# MLflow's auth app skips its own admin bootstrap (creating the admin, migrating the DB, the legacy
# password check) when this is "true"; `mlflow server` sets it after doing that once. The plugin
# does the bootstrap itself under its locks (bootstrap.prepare), so workers only connect.
ADMIN_BOOTSTRAPPED_VARIABLE = "_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED"


def mark_auth_admin_bootstrapped() -> None:
    os.environ[ADMIN_BOOTSTRAPPED_VARIABLE] = "true"


# `mlflow server --static-prefix /p` passes the prefix to its workers here; MLflow serves every
# route under it, so the login routes and the route table must use it too.
STATIC_PREFIX_VARIABLE = "_MLFLOW_STATIC_PREFIX"


def static_prefix(environ: Mapping[str, str]) -> str:
    return environ.get(STATIC_PREFIX_VARIABLE, "").rstrip("/")


# MLflow's server-side jobs send this token (as the Basic-auth password, with the job's user) on
# their calls to the server's AI Gateway; MLflow's CLI creates it only for its basic-auth app
# (`_run_server`), so the plugin creates it (server/internal_credential.py). The variable, not
# MLflow's private object: only the name is relied on.
INTERNAL_GATEWAY_CREDENTIAL_VARIABLE = "_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"
# MLflow 3.18's Assistant delegation signing key: a credential signed with it acts as any user on
# any route. The plugin never issues one and removes an inherited one.
ASSISTANT_DELEGATION_KEY = "_MLFLOW_ASSISTANT_DELEGATION_SIGNING_KEY"


def expose_username_to_handlers(username: str) -> None:
    """MLflow's scorer and evaluation handlers read the job's user from ``request.authorization.
    username`` (which only a Basic header fills) and pass it to the job, which then calls the
    gateway as that user with the internal token; without it the job calls anonymously. Sets the
    parsed header of this request (werkzeug caches it per request) to carry the verified
    username, keeping the scheme and token the client sent."""
    from flask import has_request_context, request
    from werkzeug.datastructures import Authorization

    if not has_request_context():
        return
    sent = request.authorization
    if sent is not None and sent.username == username:
        return
    scheme = sent.type if sent is not None else "bearer"
    token = sent.token if sent is not None else None
    request.authorization = Authorization(scheme, {"username": username}, token=token)


def mlflow_favicon() -> Path:
    """MLflow's favicon, shown on the login page: where MLflow's UI build keeps it."""
    import mlflow.server

    return Path(mlflow.server.__file__).with_name("js") / "build" / "favicon.ico"


# --- The client's tracking and registry URIs ------------------------------------------------------


@functools.cache
def _uri_modules() -> tuple[Any, Any]:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils, registry_utils


def tracking_uri_set_in_process() -> str | None:
    """What ``mlflow.set_tracking_uri`` stored, read directly: ``mlflow.get_tracking_uri()`` costs a
    few µs and the client plugin asks on every request."""
    return getattr(_uri_modules()[0], "_tracking_uri", None) or None


def registry_uri_set_in_process() -> str | None:
    """What ``mlflow.set_registry_uri`` stored: ``mlflow.get_registry_uri()`` costs ~100 µs (it
    probes for a Spark session) and the client plugin asks on every request."""
    return getattr(_uri_modules()[1], "_registry_uri", None) or None


# --- The server's tracking store ------------------------------------------------------------------


def tracking_store() -> Any:
    """The tracking store the server's handlers use (one per worker, built on first use)."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store()


# --- MLflow's run lookup under its permission checks ----------------------------------------------

# sha256 of the source of MLflow's `mlflow.server.auth._run_requirement`, `_fetch_or_none` and the
# SQL tracking store's `_get_run` (`run_requirement_digest`), the functions that
# `permission_lookups.fast_run_requirement` reproduces: MLflow 3.17.2 and 3.18.0.
KNOWN_RUN_LOOKUPS = frozenset({"d1964d14265b1849990b75c59d3a33d36930913cafe7bfce565713dc9a57f8e2"})


def mlflow_run_requirement() -> Callable[[str, str], Any] | None:
    """MLflow's own ``_run_requirement`` (run id, action) -> (anchor, requirements): its run
    validators read a run's experiment through it, loading the whole run (permission_lookups)."""
    import mlflow.server.auth as mlflow_auth

    current = getattr(mlflow_auth, "_run_requirement", None)
    return getattr(current, "__wrapped__", current)


def run_requirement_digest(run_requirement: Callable[[str, str], Any]) -> str | None:
    """What ``run_requirement`` does, as a digest of its source and of the two functions it reads a
    run with; None when a source cannot be read."""
    import mlflow.server.auth as mlflow_auth
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    functions: tuple[Any, ...] = (
        run_requirement,
        getattr(mlflow_auth, "_fetch_or_none", None),  # None (a TypeError below) when it is gone
        getattr(SqlAlchemyStore, "_get_run", None),
    )
    return _source_digest(functions)


def replace_run_requirement(make: Callable[[Callable[[str, str], Any]], Callable[[str, str], Any]]) -> bool:
    """Puts ``make(original)`` in place of MLflow's ``_run_requirement``, only over a version of it
    that was checked (``KNOWN_RUN_LOOKUPS``); idempotent. Whether the replacement is in place."""
    import mlflow.server.auth as mlflow_auth

    current = getattr(mlflow_auth, "_run_requirement", None)
    if getattr(current, "descope_fast", False):
        return True
    if current is None or run_requirement_digest(current) not in KNOWN_RUN_LOOKUPS:
        return False
    mlflow_auth._run_requirement = make(current)  # type: ignore[assignment]
    return True


# --- MLflow's admin check -------------------------------------------------------------------------

# sha256 of the source of MLflow's `mlflow.server.auth.sender_is_admin` (the request's user read
# from the auth DB for its admin flag): MLflow 3.17.2 and 3.18.0.
KNOWN_ADMIN_CHECKS = frozenset({"7a9ed36212d57ad60c8fc364947142d2ee82003c2897a0a4c8e5363249db70f6"})


def sender_is_admin_digest() -> str | None:
    import mlflow.server.auth as mlflow_auth

    current = getattr(mlflow_auth, "sender_is_admin", None)
    return _source_digest((getattr(current, "__wrapped__", current),))


def answer_admin_checks_from(verified_admin: Callable[[], bool | None]) -> bool:
    """MLflow's ``sender_is_admin``, which its ``_before_request`` asks on every request (and its
    admin-only validators), reads the user from the auth DB for the admin flag. ``verified_admin()``
    answers it from the request's verified identity instead (``authz.provision`` has just made the
    DB's flag equal to it); where it answers None, MLflow's own check runs. Installed only over the
    checked version (``KNOWN_ADMIN_CHECKS``); idempotent. Whether it is in place."""
    import mlflow.server.auth as mlflow_auth

    current = getattr(mlflow_auth, "sender_is_admin", None)
    if getattr(current, "descope_identity", False):
        return True
    if current is None or sender_is_admin_digest() not in KNOWN_ADMIN_CHECKS:
        return False
    original: Callable[[], bool] = current

    @functools.wraps(original)
    def sender_is_admin() -> bool:
        answer = verified_admin()
        return original() if answer is None else answer

    sender_is_admin.descope_identity = True  # type: ignore[attr-defined]
    mlflow_auth.sender_is_admin = sender_is_admin
    # MLflow's admin-only routes name the function itself in its validator tables (module-level
    # dicts): without this they would still read the DB's flag, which a demoted admin's older token
    # writes back on its own requests.
    for table in vars(mlflow_auth).values():
        if isinstance(table, dict):
            for route, validator in list(table.items()):
                if validator is original:
                    table[route] = sender_is_admin
    return True


def admin_checks_left_in_validator_tables() -> int:
    """How many entries of MLflow's validator tables still name MLflow's own ``sender_is_admin``
    (0 once ``answer_admin_checks_from`` is in place)."""
    import mlflow.server.auth as mlflow_auth

    current = getattr(mlflow_auth, "sender_is_admin", None)
    original = getattr(current, "__wrapped__", current)
    return sum(
        1
        for table in vars(mlflow_auth).values()
        if isinstance(table, dict)
        for validator in table.values()
        if validator is original
    )


# --- The user record, read lean and memoized for one request --------------------------------------

# The auth store's methods that write its `users` table: they drop the request's memo.
USER_WRITES = ("create_user", "update_user", "delete_user")
_USER_MEMO = "descope_users"  # the flask.g attribute: username -> MLflow User


def memoize_users_per_request(store: Any) -> None:
    """The auth store's ``get_user`` answers from a memo kept in ``flask.g`` (one request only: a
    grant or admin flag changed elsewhere applies to the next request); the store's user writes
    drop it. MLflow's checks read the same user several times per request (~1 ms of ORM each)."""
    from flask import g, has_request_context

    if getattr(store.get_user, "descope_memo", False):
        return
    original_get_user = store.get_user

    def get_user(username: str) -> Any:
        if not has_request_context():
            return original_get_user(username)
        memo: dict[str, Any] = g.setdefault(_USER_MEMO, {})
        if username not in memo:
            memo[username] = original_get_user(username)
        return memo[username]

    get_user.descope_memo = True  # type: ignore[attr-defined]
    store.get_user = get_user
    for name in USER_WRITES:
        setattr(store, name, _dropping_user_memo(getattr(store, name)))


def _dropping_user_memo(method: Callable[..., Any]) -> Callable[..., Any]:
    from flask import g, has_request_context

    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        if has_request_context():
            g.pop(_USER_MEMO, None)
        return method(*args, **kwargs)

    return write


def user_and_roles(store: Any, username: str, role_prefix: str) -> tuple[Any | None, dict[str, int]]:
    """The user's MLflow record (as ``store.get_user`` returns it; None when there is none) and the
    user's roles whose name starts with ``role_prefix`` (name -> id, as ``store.list_user_roles``
    answers, filtered): one prepared statement on the auth store's primary engine, about a tenth of
    the CPU of ``get_user``'s ORM query alone. The record goes into the request's user memo, so
    MLflow's own checks in this request do not read it again."""
    if any(c in role_prefix for c in "%_\\"):
        raise ValueError(f"a LIKE wildcard in the role prefix {role_prefix!r}")
    with store.engine.connect() as conn:
        rows = conn.execute(
            _user_and_roles_statement(), {"username": username, "pattern": role_prefix + "%"}
        ).all()
    if not rows:
        return None, {}
    from mlflow.server.auth.entities import User

    user_id, password_hash, is_admin = rows[0][:3]
    user = User(id_=user_id, username=username, password_hash=password_hash, is_admin=is_admin)  # type: ignore[no-untyped-call]
    _remember_user(user)
    return user, {str(name): int(role_id) for *_, name, role_id in rows if name is not None}


def _remember_user(user: Any) -> None:
    from flask import g, has_request_context

    if has_request_context():
        g.setdefault(_USER_MEMO, {})[user.username] = user


@functools.cache
def _user_and_roles_statement() -> Any:
    """users LEFT JOIN the user's role assignments LEFT JOIN the roles named like the pattern: one
    row per assignment (the role columns NULL where the name does not match), one with NULLs for a
    user without roles, none for an unknown user."""
    import sqlalchemy as sa
    from mlflow.server.auth.db.models import SqlRole, SqlUser, SqlUserRoleAssignment

    return (
        sa.select(SqlUser.id, SqlUser.password_hash, SqlUser.is_admin, SqlRole.name, SqlRole.id)
        .outerjoin(SqlUserRoleAssignment, SqlUserRoleAssignment.user_id == SqlUser.id)
        .outerjoin(
            SqlRole,
            sa.and_(SqlRole.id == SqlUserRoleAssignment.role_id, SqlRole.name.like(sa.bindparam("pattern"))),
        )
        .where(SqlUser.username == sa.bindparam("username"))
    )


# --- The served routes ----------------------------------------------------------------------------


def flask_route_matcher(flask_app: Any) -> Any:
    """Werkzeug's matcher over the Flask app's ``url_map``: ``.match(path, method, return_rule=True)``
    resolves a request as Flask will dispatch it (the route policy judges that route)."""
    return flask_app.url_map.bind("localhost")


def fastapi_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path prefix, route) for every route of a FastAPI app in dispatch order, including those of
    routers FastAPI keeps unflattened (``include_router`` into a router it includes lazily: an
    ``include_context`` over the ``original_router``, whose low-priority routes come last)."""
    for route in routes:
        context = getattr(route, "include_context", None)
        if context is not None:
            sub = route.original_router
            yield from fastapi_routes(
                [*sub.routes, *getattr(sub, "_low_priority_routes", [])], prefix + context.prefix
            )
        else:
            yield prefix, route


def _source_digest(functions: Iterable[Any]) -> str | None:
    digest = hashlib.sha256()
    for function in functions:
        try:
            digest.update(textwrap.dedent(inspect.getsource(function)).encode())
        except (OSError, TypeError):
            return None
    return digest.hexdigest()
