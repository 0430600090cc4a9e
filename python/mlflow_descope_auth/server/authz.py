"""The bridge to MLflow's permission system (``mlflow.server.auth``): its ``authorization_function``.

It does not trust anything the gate or the client put in headers: it validates the request's own
credential again (a cache hit in the Rust core), provisions the Descope identity into MLflow's user
store, keeps ``is_admin`` and the role-derived baseline grants in step with the token, and returns
the username for MLflow's validators to judge.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading

from flask import Response, g, request
from werkzeug.datastructures import Authorization

from mlflow_descope_auth._core import (
    DescopeAuthError,
    DescopeClient,
    DescopeUnreachableError,
    ExpiredTokenError,
    Identity,
)
from mlflow_descope_auth.server.bootstrap import BOOTSTRAP_ADMIN
from mlflow_descope_auth.server.gate import admissions
from mlflow_descope_auth.server.http import parse_cookies
from mlflow_descope_auth.settings import get_descope_client

_log = logging.getLogger(__name__)

LEVELS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
# Resource types whose wildcard grant carries a user's role-derived baseline level: the top-level ones
# only. Child types (runs, traces, scorers, ...) fall back to their experiment in MLflow, and a grant
# on a child type would override that fallback (MLflow's "tier override").
BASELINE_RESOURCE_TYPES = (
    "experiment",
    "registered_model",
    "prompt",
    "gateway_secret",
    "gateway_endpoint",
    "gateway_model_definition",
    "mcp_server",
)
# Creating a top-level resource needs a baseline of EDIT: MLflow alone lets any user create.
_TOP_LEVEL_CREATE_SUFFIXES = (
    "/mlflow/experiments/create",
    "/mlflow/registered-models/create",
    "/mlflow/gateway/secrets/create",
    "/mlflow/gateway/endpoints/create",
    "/mlflow/gateway/model-definitions/create",
)
_MCP_SERVERS_ROOT = ("/api/3.0/mlflow/mcp-servers", "/ajax-api/3.0/mlflow/mcp-servers")

# The client the server was built with (set by app.create_app, so the per-request path does not
# re-read the environment); get_descope_client() when this module is used on its own.
_client: DescopeClient | None = None


def use_client(client: DescopeClient) -> None:
    global _client
    _client = client


# username -> (is_admin, permission) last written to the user store by this process.
_synced: dict[str, tuple[bool, str]] = {}
_sync_lock = threading.Lock()


def _json_error(status: int, code: str, message: str) -> Response:
    import json

    return Response(
        json.dumps({"error_code": code, "message": message}), status=status, mimetype="application/json"
    )


def _credential() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    # On MLflow's FastAPI routes this runs in a synthetic request built from the headers, where the
    # Cookie header is the only way to the cookies.
    return parse_cookies(request.headers.get("Cookie", "")).get("DS") or None


def authorize() -> Authorization | Response:
    """MLflow calls this several times per request: decide once per request."""
    cached: Authorization | Response | None = g.get("_descope_authorization")
    if cached is None:
        cached = _authorize()
        g._descope_authorization = cached
    return cached


def _authorize() -> Authorization | Response:
    token = _credential()
    if token is None:
        return _json_error(401, "UNAUTHENTICATED", "sign in with Descope")
    try:
        identity = (_client or get_descope_client()).validate_session(token)
    except ExpiredTokenError:
        # Expired since the gate admitted this request (see gate.Admissions): still this request's.
        admitted = admissions.identity(token)
        if admitted is None:
            return _json_error(401, "UNAUTHENTICATED", "the Descope session expired; refresh it and retry")
        identity = admitted
    except DescopeUnreachableError as exc:
        return _json_error(503, "TEMPORARILY_UNAVAILABLE", f"cannot verify the session right now: {exc}")
    except DescopeAuthError as exc:
        return _json_error(401, "UNAUTHENTICATED", str(exc))
    if identity.username == BOOTSTRAP_ADMIN or identity.username.startswith("__"):
        return _json_error(403, "PERMISSION_DENIED", f"the username '{identity.username}' is reserved")
    provision(identity)
    read_only = LEVELS.index(identity.permission) < LEVELS.index("EDIT")
    if not identity.is_admin and read_only and _creates_top_level(request.method, request.path):
        return _json_error(
            403,
            "PERMISSION_DENIED",
            f"your Descope roles give {identity.permission} access; creating needs EDIT "
            "(DESCOPE_ROLE_PERMISSIONS, DESCOPE_DEFAULT_PERMISSION)",
        )
    return Authorization("bearer", {"username": identity.username})


def _creates_top_level(method: str, path: str) -> bool:
    if method != "POST":
        return False
    path = path.rstrip("/")
    return path.endswith(_TOP_LEVEL_CREATE_SUFFIXES) or path.endswith(_MCP_SERVERS_ROOT)


def provision(identity: Identity) -> None:
    """Creates the user on first sight and brings ``is_admin`` and the baseline grants in line with
    the token. Writes only when something changed since this process last wrote."""
    state = (identity.is_admin, identity.permission)
    if _synced.get(identity.username) == state:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import auth_config, store

    with _sync_lock:
        if _synced.get(identity.username) == state:
            return
        username = identity.username
        if not store.has_user(username, use_primary=True):
            try:
                # A random password nobody knows: this plugin never authenticates with passwords.
                store.create_user(username, secrets.token_urlsafe(32), is_admin=identity.is_admin)
                _log.info("Provisioned Descope user %s (admin=%s)", username, identity.is_admin)
            except MlflowException:
                pass  # another worker created it a moment ago
        store.update_user(username, is_admin=identity.is_admin)
        baseline = identity.permission if not identity.is_admin else None
        for resource_type in BASELINE_RESOURCE_TYPES:
            if baseline is None or baseline == auth_config.default_permission:
                _revoke_quietly(store, username, resource_type)
            else:
                store.grant_user_permission(username, resource_type, "*", baseline)
        _synced[username] = state


def _revoke_quietly(store: object, username: str, resource_type: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # no wildcard grant to remove
        store.revoke_user_resource_permission(username, resource_type, "*")  # type: ignore[attr-defined]
