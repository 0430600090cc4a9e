"""``X-Descope-*`` request headers describing the signed-in user.

For information only (logging, proxies): the server plugin never trusts them, it reads the identity
from the verified token.
"""

from __future__ import annotations

from urllib.parse import quote

from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from mlflow_descope_auth._core import DescopeAuthError, Identity
from mlflow_descope_auth.client.identity_fields import identity_fields
from mlflow_descope_auth.clients import descope_configured, get_client_session

HEADER_NAMES = {
    "user_id": "X-Descope-User-ID",
    "username": "X-Descope-Username",
    "email": "X-Descope-Email",
    "roles": "X-Descope-Roles",
    "permissions": "X-Descope-Permissions",
    "tenants": "X-Descope-Tenants",
}


def _header_value(value: str) -> str:
    # HTTP/1.1 header values are Latin-1 on the wire: percent-encode anything else (a name like
    # "李" would otherwise make the whole request fail inside http.client).
    return value if value.isascii() and value.isprintable() else quote(value, safe=" ,@.-_:+/")


def identity_headers(identity: Identity) -> dict[str, str]:
    fields = identity_fields(identity)
    return {HEADER_NAMES[k]: _header_value(v) for k, v in fields.items() if k in HEADER_NAMES}


class DescopeHeaderProvider(RequestHeaderProvider):
    """Registered under ``mlflow.request_header_provider`` as ``descope``."""

    def __init__(self) -> None:
        # Called on every request: rebuild the headers only when the session token changes.
        self._token: str | None = None
        self._headers: dict[str, str] = {}

    def in_context(self) -> bool:
        return descope_configured()

    def request_headers(self) -> dict[str, str]:
        try:
            session = get_client_session()
            token = session.token()
        except DescopeAuthError:
            # The auth plugin reports it, in one line that says what to fix; MLflow would log this
            # one as an "unexpected error" first.
            return {}
        if token != self._token:
            self._headers = identity_headers(session.identity())
            self._token = token
        return dict(self._headers)
