"""MLflow's own admin page (user menu -> Manage) made true under Descope sign-in.

The page reads and writes MLflow's user, role and grant REST API. Under Descope some of what it
shows cannot be true as MLflow means it, so this module, as Flask hooks on MLflow's app (after
MLflow's own authentication and validators ran):

- keeps ``descope-bootstrap-admin`` out of it: the account exists only because MLflow's auth layer
  insists on an admin user; nobody can sign in as it, so it is left out of the user list and any
  request that names it is refused;
- refuses changes to the ``descope-baseline-*`` roles and their assignments: they carry each user's
  level from their Descope roles and are reassigned from the token on the user's next request, so
  an edit here would be silently undone;
- adds to each user of the user list, for admins, what their Descope roles give them
  (``descope_access``), which the page's own columns cannot show: a user whose roles map to the
  default permission holds no MLflow role or grant, and the page says "No roles" for someone who
  can read everything. ``static/admin-page.js`` shows it.

Creating users, the admin switch and passwords are refused before MLflow sees the request
(``route_policy``: ``REFUSED``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, request

from mlflow_descope_auth._core import DescopeClient
from mlflow_descope_auth.server import authz
from mlflow_descope_auth.server.bootstrap import BOOTSTRAP_ADMIN

# Routes whose request may name a user (``username``): refused when it names the bootstrap admin.
_NAMING_A_USER = (
    "GET_USER",
    "DELETE_USER",
    "UPDATE_USER_ADMIN",
    "UPDATE_USER_PASSWORD",
    "LIST_USER_ROLES",
    "LIST_USER_PERMISSIONS",
    "GRANT_USER_PERMISSION",
    "REVOKE_USER_PERMISSION",
    "GET_USER_PERMISSION",
    "ASSIGN_ROLE",
    "UNASSIGN_ROLE",
)
# Routes that change a role named by ``role_id``, or one of its grants by ``role_permission_id``.
_CHANGING_A_ROLE = (
    "ASSIGN_ROLE",
    "UNASSIGN_ROLE",
    "UPDATE_ROLE",
    "DELETE_ROLE",
    "ADD_ROLE_PERMISSION",
)
_CHANGING_A_ROLE_GRANT = ("REMOVE_ROLE_PERMISSION", "UPDATE_ROLE_PERMISSION")
_LISTING_USERS = ("LIST_USERS",)


def _rules(names: Sequence[str]) -> frozenset[str]:
    """The Flask rules of MLflow's auth routes named ``names``: the REST and the UI's ajax path."""
    from mlflow.server.auth import routes

    return frozenset(getattr(routes, prefix + name) for name in names for prefix in ("", "AJAX_"))


def _refusal(status: int, code: str, message: str) -> Response:
    return Response(
        json.dumps({"error_code": code, "message": message}), status=status, mimetype="application/json"
    )


BOOTSTRAP_ADMIN_REFUSAL = (
    f"'{BOOTSTRAP_ADMIN}' is an internal account of mlflow-descope-auth (MLflow requires an admin "
    "user to exist); nobody can sign in as it, and it cannot be viewed or changed"
)
BASELINE_ROLE_REFUSAL = (
    "the descope-baseline-* roles carry what users' Descope roles give them and are assigned from "
    "those roles at each user's next request: change the user's roles in Descope, or grant access "
    "on specific resources with 'Edit access' (a direct permission) or with a role of your own"
)


class AdminPage:
    def __init__(self, client: DescopeClient) -> None:
        settings = client.settings()
        self.default_permission: str = settings["default_permission"]
        self.admin_roles: list[str] = list(settings["admin_roles"])
        self.role_permissions: list[tuple[str, str]] = [tuple(p) for p in settings["role_permissions"]]
        self._naming_a_user = _rules(_NAMING_A_USER)
        self._changing_a_role = _rules(_CHANGING_A_ROLE)
        self._changing_a_role_grant = _rules(_CHANGING_A_ROLE_GRANT)
        self._listing_users = _rules(_LISTING_USERS)

    def install(self, app: Flask) -> None:
        # Registered after MLflow's auth app's hooks: the user is authenticated and MLflow's
        # validator has judged the request by the time `refuse` runs.
        app.before_request(self.refuse)
        app.after_request(self.rewrite)

    def refuse(self) -> Response | None:
        rule = request.url_rule.rule if request.url_rule is not None else None
        if rule is None:
            return None
        if rule in self._naming_a_user and BOOTSTRAP_ADMIN in _params(request_param_values("username")):
            return _refusal(403, "PERMISSION_DENIED", BOOTSTRAP_ADMIN_REFUSAL)
        if rule in self._changing_a_role:
            if _is_baseline_role(request_param_values("role_id")):
                return _refusal(403, "PERMISSION_DENIED", BASELINE_ROLE_REFUSAL)
        elif rule in self._changing_a_role_grant and _is_baseline_role_grant(
            request_param_values("role_permission_id")
        ):
            return _refusal(403, "PERMISSION_DENIED", BASELINE_ROLE_REFUSAL)
        return None

    def rewrite(self, response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else None
        if rule not in self._listing_users or response.status_code != 200:
            return response
        body = response.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("users"), list):
            return response
        users = [
            u for u in body["users"] if not (isinstance(u, dict) and u.get("username") == BOOTSTRAP_ADMIN)
        ]
        # What a user's Descope roles give them is an admin's business, like their grants.
        if authz.verified_admin():
            users = [{**u, "descope_access": self.access(u)} if isinstance(u, dict) else u for u in users]
        response.set_data(json.dumps({**body, "users": users}))
        return response

    def access(self, user: dict[str, Any]) -> dict[str, Any]:
        """What the user's Descope roles gave them at their last request: ``level`` (an MLflow
        permission, or ``ADMIN``), the Descope ``roles`` configured to give that level, whether it is
        the ``default`` every signed-in user gets, and a ``summary`` for a person."""
        if user.get("is_admin"):
            return {
                "level": "ADMIN",
                "roles": self.admin_roles,
                "default": False,
                "summary": f"Admin: everything (Descope role {_either(self.admin_roles)})",
            }
        roles = user.get("roles")
        if not isinstance(roles, list):
            roles = []
        held = [
            str(r["name"])[len(authz.BASELINE_ROLE_PREFIX) :]
            for r in roles
            if isinstance(r, dict) and str(r.get("name", "")).startswith(authz.BASELINE_ROLE_PREFIX)
        ]
        level = held[0] if held else self.default_permission
        mapped = [role for role, permission in self.role_permissions if permission == level]
        default = not held
        shown = "No access" if level == "NO_PERMISSIONS" else level
        if default and mapped:
            source = f"Descope role {_either(mapped)}, or the default for everyone"
        elif default:
            source = "the default for everyone"
        elif mapped:
            source = f"Descope role {_either(mapped)}"
        else:
            source = "Descope roles"
        scope = "" if level == "NO_PERMISSIONS" else " everywhere"
        return {"level": level, "roles": mapped, "default": default, "summary": f"{shown}{scope} ({source})"}


def _either(names: Sequence[str]) -> str:
    return " or ".join(f"'{n}'" for n in names) if names else "(none configured)"


def request_param_values(name: str) -> list[Any]:
    """Every value of ``name`` in the query string and in a JSON object body: MLflow's handlers
    read one or the other depending on the method, so both are judged."""
    values: list[Any] = list(request.args.getlist(name))
    body = request.get_json(silent=True)
    if isinstance(body, dict) and name in body:
        values.append(body[name])
    return values


def _params(values: list[Any]) -> set[str]:
    return {v for v in values if isinstance(v, str)}


def _ids(values: list[Any]) -> list[int]:
    ids = []
    for value in values:
        with contextlib.suppress(TypeError, ValueError):  # MLflow answers a malformed id itself
            ids.append(int(value))
    return ids


def _is_baseline_role(values: list[Any]) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import store

    for role_id in _ids(values):
        try:
            if store.get_role(role_id).name.startswith(authz.BASELINE_ROLE_PREFIX):
                return True
        except MlflowException:
            pass  # no such role: MLflow says so
    return False


def _is_baseline_role_grant(values: list[Any]) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import store

    for grant_id in _ids(values):
        try:
            role_id = store.get_role_permission(grant_id).role_id
        except MlflowException:
            continue
        if _is_baseline_role([role_id]):
            return True
    return False
