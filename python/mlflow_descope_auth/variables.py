"""Every environment variable the package reads: the public configuration interface.

One list, used by ``mlflow-descope-auth doctor`` (which shows each with its value or default, secrets
masked) and checked against the README's configuration reference and the code by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["client", "server", "both"]
Kind = Literal["plain", "secret", "url"]


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    scope: Scope
    help: str
    kind: Kind = "plain"


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "DESCOPE_PROJECT_ID", "(required)", "both", "your Descope project id (console: Project settings)"
    ),
    Variable(
        "DESCOPE_BASE_URI",
        "https://api.descope.com (regional host for 32+ character project ids)",
        "both",
        "Descope API base URL; the emulator's URL for offline work",
    ),
    Variable("DESCOPE_ACCESS_KEY", "unset", "client", "access key exchanged for sessions", "secret"),
    Variable("DESCOPE_SESSION_TOKEN", "unset", "client", "a session JWT", "secret"),
    Variable("DESCOPE_REFRESH_TOKEN", "unset", "client", "the refresh JWT that renews it", "secret"),
    Variable("DESCOPE_ALLOWED_HOSTS", "unset", "client", "more hosts that may receive the token"),
    Variable("DESCOPE_ADMIN_ROLES", "admin,mlflow-admin", "both", "project roles that make an MLflow admin"),
    Variable("DESCOPE_DEFAULT_PERMISSION", "READ", "both", "level of users with no mapped role"),
    Variable("DESCOPE_ROLE_PERMISSIONS", "unset", "both", "role=LEVEL pairs, e.g. editor=EDIT,viewer=READ"),
    Variable("DESCOPE_USERNAME_CLAIM", "sub", "both", "claim used as the MLflow username"),
    Variable("DESCOPE_JWT_LEEWAY", "5", "both", "seconds of clock skew allowed on exp/nbf"),
    Variable("DESCOPE_AUDIENCE", "unset", "both", "accepted aud values, comma-separated"),
    Variable("DESCOPE_HTTP_TIMEOUT", "5", "both", "seconds for each call to Descope"),
    Variable(
        "DESCOPE_KEY_REFETCH_INTERVAL", "10", "both", "minimum seconds between refetches for unknown kids"
    ),
    Variable("DESCOPE_KEY_TTL", "600", "both", "seconds before cached keys are refetched"),
    Variable("DESCOPE_TOKEN_CACHE_SIZE", "10000", "both", "validated sessions kept in memory (0: off)"),
    Variable("DESCOPE_FLOW_ID", "sign-up-or-in", "server", "the Descope flow the login page runs"),
    Variable("DESCOPE_REDIRECT_URL", "/", "server", "where to go after sign-in (a path on this server)"),
    Variable("DESCOPE_WEB_COMPONENT_VERSION", "3.54.0", "server", "version of @descope/web-component"),
    Variable(
        "DESCOPE_WEB_COMPONENT_URL", "the CDN URL of that version", "server", "the flow component's script"
    ),
    Variable("DESCOPE_COOKIE_SECURE", "auto", "server", "Secure cookies: auto (when HTTPS), true, false"),
    Variable(
        "DESCOPE_AUTH_DB_URI",
        "sqlite:///<cwd>/descope_auth.db",
        "server",
        "MLflow's user and permission database",
        "url",
    ),
    Variable(
        "DESCOPE_AUTH_STATE_DIR",
        "<cwd>/.mlflow-descope",
        "server",
        "auth config, Flask secret, start-up lock, refresh results",
    ),
    Variable("MLFLOW_TRACKING_URI", "unset", "client", "the MLflow server to log to"),
    Variable("MLFLOW_TRACKING_AUTH", "unset", "client", "set to descope to send the Descope session"),
)

BY_NAME = {v.name: v for v in VARIABLES}
