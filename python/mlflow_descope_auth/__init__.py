"""Descope authentication and authorization for MLflow.

The token work (validation, keys, refresh, access keys, claim mapping) happens in the Rust core,
``mlflow_descope_auth._core``; this package adds the MLflow plugins, the CLI and the offline emulator.
"""

from mlflow_descope_auth._core import (
    AccessKeyExchangeError,
    ClientSession,
    ConfigurationError,
    DescopeApiError,
    DescopeAuthError,
    DescopeClient,
    DescopeUnreachableError,
    ExpiredTokenError,
    Identity,
    InvalidTokenError,
    RefreshFailedError,
    SessionResult,
    __version__,
)
from mlflow_descope_auth.clients import get_descope_client

__all__ = [
    "AccessKeyExchangeError",
    "ClientSession",
    "ConfigurationError",
    "DescopeApiError",
    "DescopeAuthError",
    "DescopeClient",
    "DescopeUnreachableError",
    "ExpiredTokenError",
    "Identity",
    "InvalidTokenError",
    "RefreshFailedError",
    "SessionResult",
    "__version__",
    "get_descope_client",
]
