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

from flask import Response, g, has_request_context, request
from werkzeug.datastructures import Authorization

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth._core import (
    DescopeAuthError,
    DescopeClient,
    DescopeUnreachableError,
    ExpiredTokenError,
    Identity,
)
from mlflow_descope_auth.clients import get_descope_client
from mlflow_descope_auth.server import display_names
from mlflow_descope_auth.server.bootstrap import BOOTSTRAP_ADMIN
from mlflow_descope_auth.server.http import parse_cookies
from mlflow_descope_auth.server.internal_credential import InternalCredential

_log = logging.getLogger(__name__)

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
    "skill",  # MLflow 3.18; skipped where MLflow does not know the type or the level
)
# The baseline lives in MLflow roles of its own (one per level), never in a user's own grants: an
# admin's grant on "*" in MLflow's admin page and the role-derived baseline do not overwrite each
# other. Descope roles decide which baseline role a user holds; nothing else does.
BASELINE_ROLE_PREFIX = "descope-baseline-"
# MLflow stores no NO_PERMISSIONS grant (no grant means the default); a role mapped below
# DESCOPE_DEFAULT_PERMISSION therefore cannot lower it (README, permission model).
BASELINE_LEVELS = ("READ", "USE", "EDIT", "MANAGE")

# The client the server was built with (set by app.create_app, so the per-request path does not
# re-read the environment); get_descope_client() when this module is used on its own.
_client: DescopeClient | None = None


def use_client(client: DescopeClient) -> None:
    global _client
    _client = client


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
    job_user = _job_user()
    if job_user is not None:
        return job_user
    token = _credential()
    if token is None:
        return _json_error(401, "UNAUTHENTICATED", "sign in with Descope")
    try:
        # A session the gate let in just before it expired is still this request's.
        identity = (_client or get_descope_client()).validate_admitted(token)
    except ExpiredTokenError:
        return _json_error(401, "UNAUTHENTICATED", "the Descope session expired; refresh it and retry")
    except DescopeUnreachableError as exc:
        return _json_error(503, "TEMPORARILY_UNAVAILABLE", f"cannot verify the session right now: {exc}")
    except DescopeAuthError as exc:
        return _json_error(401, "UNAUTHENTICATED", str(exc))
    if identity.username == BOOTSTRAP_ADMIN or identity.username.startswith("__"):
        return _json_error(403, "PERMISSION_DENIED", f"the username '{identity.username}' is reserved")
    provision(identity)
    display_names.remember_quietly(identity)
    g._descope_identity = identity
    # MLflow hands this user to the jobs the request starts, so they call the gateway as this user.
    mlflow_internals.expose_username_to_handlers(identity.username)
    return Authorization("bearer", {"username": identity.username})


# This server start's internal credential (set by app.create_app; disabled when used on its own).
_internal: InternalCredential = InternalCredential(None, "")


def use_internal_credential(credential: InternalCredential) -> None:
    global _internal
    _internal = credential


def _job_user() -> Authorization | Response | None:
    """A server job's gateway call (server/internal_credential.py), checked again here, as the gate
    did: the user it names, who must be a user of this server already; None when the request
    does not carry the internal credential."""
    username = _internal.username(request.method, request.path, request.headers.get("Authorization"))
    if username is None:
        return None
    from mlflow.server.auth import store

    if username == BOOTSTRAP_ADMIN or username.startswith("__") or not store.has_user(username):
        return _json_error(403, "PERMISSION_DENIED", "a server job may act only as a user of this server")
    return Authorization("basic", {"username": username})


def verified_admin() -> bool | None:
    """Whether this request's user is an admin, from the identity ``authorize`` verified and
    provisioned (the auth DB's flag was just made equal to it); None before that, or outside a
    request. MLflow's ``sender_is_admin`` answers with it (permission_lookups.install)."""
    if not has_request_context():
        return None
    identity: Identity | None = g.get("_descope_identity")
    return None if identity is None else identity.is_admin


def provision(identity: Identity) -> None:
    """Brings the user's MLflow record in line with the verified token: created on first sight,
    ``is_admin`` and the baseline role as Descope's roles say. Compared with the database's current
    state on every request (read once per request; MLflow reads the user anyway), never with a memo
    of this process: another worker or replica may have written something else since."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
    from mlflow.server.auth import auth_config, store
    from sqlalchemy.exc import IntegrityError

    username = identity.username
    # The user record and the baseline roles held, in one lean read; MLflow's own checks in this
    # request take the record from the per-request memo it fills.
    user, held = mlflow_internals.user_and_roles(store, username, BASELINE_ROLE_PREFIX)
    if user is None:
        try:
            # A random password nobody knows: this plugin never authenticates with passwords.
            store.create_user(username, secrets.token_urlsafe(32), is_admin=identity.is_admin)
            _log.info("Provisioned Descope user %s (admin=%s)", username, identity.is_admin)
        except MlflowException:
            pass  # another worker created it a moment ago
        user, held = mlflow_internals.user_and_roles(store, username, BASELINE_ROLE_PREFIX)
        if user is None:
            raise MlflowException(f"User with username={username} not found", RESOURCE_DOES_NOT_EXIST)
    if bool(user.is_admin) != identity.is_admin:
        store.update_user(username, is_admin=identity.is_admin)
        _log.info("MLflow admin flag of %s set to %s from the Descope roles", username, identity.is_admin)
    level = identity.permission
    baseline = not identity.is_admin and level != auth_config.default_permission and level in BASELINE_LEVELS
    wanted = f"{BASELINE_ROLE_PREFIX}{level}" if baseline else None
    for name, role_id in held.items():
        if name != wanted:
            with contextlib.suppress(MlflowException):  # another worker did it a moment ago
                store.unassign_role_from_user(user.id, role_id)
    if wanted is not None and wanted not in held:
        # A browser's parallel first requests race here; the loser's insert hits the unique key.
        with contextlib.suppress(MlflowException, IntegrityError):
            store.assign_role_to_user(user.id, baseline_role_id(wanted))


def baseline_role_id(name: str) -> int:
    from mlflow.server.auth import store
    from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

    return int(store.get_role_by_name(DEFAULT_WORKSPACE_NAME, name).id)


def baseline_roles_exist() -> bool:
    from mlflow.server.auth import store

    return any(r.name.startswith(BASELINE_ROLE_PREFIX) for r in store.list_roles())


def ensure_baseline_roles() -> None:
    """The baseline roles with exactly their wildcard grants (an edit in the admin page is undone
    here, at start-up). Runs under bootstrap's locks."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import store
    from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

    for level in BASELINE_LEVELS:
        name = f"{BASELINE_ROLE_PREFIX}{level}"
        try:
            role = store.get_role_by_name(DEFAULT_WORKSPACE_NAME, name)
        except MlflowException:
            role = store.create_role(
                name,
                DEFAULT_WORKSPACE_NAME,
                f"Baseline from Descope roles ({level}); managed by mlflow-descope-auth",
            )
        have = {(p.resource_type, p.resource_pattern): p for p in store.list_role_permissions(role.id)}
        for key, grant in have.items():
            if key[0] not in BASELINE_RESOURCE_TYPES or key[1] != "*" or grant.permission != level:
                store.remove_role_permission(grant.id)
        for resource_type in BASELINE_RESOURCE_TYPES:
            current = have.get((resource_type, "*"))
            if current is None or current.permission != level:
                with contextlib.suppress(MlflowException):  # a type or level this MLflow lacks
                    store.add_role_permission(role.id, resource_type, "*", level)


def forget_legacy_baseline_grants() -> None:
    """Versions before 0.2 wrote the baseline as each user's own wildcard grants on every baseline
    type at one level. Such a complete set is removed once (when the baseline roles are first
    created), so it does not outlive a change of the user's Descope roles; any other grant on "*"
    is a person's and stays."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import store

    legacy_types = set(BASELINE_RESOURCE_TYPES) - {"skill"}
    for user in store.list_users():
        for role in store.list_user_roles(user.id):
            if not role.name.startswith("__user_"):
                continue
            wildcard = [p for p in store.list_role_permissions(role.id) if p.resource_pattern == "*"]
            levels = {p.permission for p in wildcard if p.resource_type in legacy_types}
            if {p.resource_type for p in wildcard} >= legacy_types and len(levels) == 1:
                for grant in wildcard:
                    if grant.resource_type in legacy_types:
                        with contextlib.suppress(MlflowException):
                            store.remove_role_permission(grant.id)
