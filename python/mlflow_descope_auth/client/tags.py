"""``descope.*`` run tags: who started the run, as the verified session says."""

from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider

from mlflow_descope_auth._core import DescopeAuthError
from mlflow_descope_auth.client.identity_fields import identity_fields
from mlflow_descope_auth.clients import descope_configured, get_client_session

TAG_PREFIX = "descope."


class DescopeRunContextProvider(RunContextProvider):
    """Registered under ``mlflow.run_context_provider`` as ``descope``."""

    def in_context(self) -> bool:
        return descope_configured()

    def tags(self) -> dict[str, str]:
        try:
            identity = get_client_session().identity()
        except DescopeAuthError:
            return {}  # the auth plugin reports it, in one line that says what to fix
        return {TAG_PREFIX + k: v for k, v in identity_fields(identity).items()}
