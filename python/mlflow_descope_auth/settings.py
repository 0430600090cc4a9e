"""The old name of :mod:`mlflow_descope_auth.clients` (the process-wide client and session), kept
while modules still import it from here."""

from mlflow_descope_auth.clients import (
    CLIENT_VARIABLES,
    CREDENTIAL_VARIABLES,
    descope_configured,
    get_client_session,
    get_descope_client,
    reset,
)

__all__ = [
    "CLIENT_VARIABLES",
    "CREDENTIAL_VARIABLES",
    "descope_configured",
    "get_client_session",
    "get_descope_client",
    "reset",
]
