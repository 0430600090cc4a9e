"""``MLFLOW_TRACKING_AUTH=descope``: every MLflow request carries ``Authorization: Bearer <session>``.

The session comes from ``DESCOPE_ACCESS_KEY`` or ``DESCOPE_SESSION_TOKEN`` (+ ``DESCOPE_REFRESH_TOKEN``)
and is renewed ahead of expiry by the Rust core; a 401 from the server triggers one renewal and one
retry. The token goes only to the tracking (and registry) server's host and to hosts listed in
``DESCOPE_ALLOWED_HOSTS``: never to artifact stores or presigned URLs.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import requests
from mlflow.tracking import get_tracking_uri
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from requests.auth import AuthBase

from mlflow_descope_auth._core import DescopeAuthError, DescopeClient
from mlflow_descope_auth.client.errors import diagnose, install_excepthook
from mlflow_descope_auth.clients import get_client_session, get_descope_client
from mlflow_descope_auth.mlflow_internals import registry_uri_set_in_process, tracking_uri_set_in_process

_log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, int] | None:
    # Runs on every request: split off "scheme://netloc" cheaply and parse each netloc only once.
    parts = url.split("/", 3)
    if len(parts) < 3 or parts[1] != "":
        return None
    return _parse_origin(parts[0], parts[2])


@functools.lru_cache(maxsize=256)
def _parse_origin(scheme: str, netloc: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"{scheme}//{netloc}")
        port = parts.port
    except ValueError:  # a malformed port
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def _registry_uri() -> str:
    # mlflow.get_registry_uri() costs ~100 µs (it probes for a Spark session) and runs on every
    # request here; the URI is either set in-process (set_registry_uri) or in the environment.
    return registry_uri_set_in_process() or os.environ.get("MLFLOW_REGISTRY_URI", "")


def _tracking_uri() -> str:
    # What mlflow.get_tracking_uri() answers, its two common cases read directly (it costs a few µs
    # on every request otherwise): set in-process, or in the environment.
    return tracking_uri_set_in_process() or os.environ.get("MLFLOW_TRACKING_URI") or get_tracking_uri()


def _allowed_origins() -> frozenset[tuple[str, int]]:
    return _origins_for(_tracking_uri(), _registry_uri(), os.environ.get("DESCOPE_ALLOWED_HOSTS", ""))


@functools.lru_cache(maxsize=16)
def _origins_for(tracking_uri: str, registry_uri: str, allowed_hosts: str) -> frozenset[tuple[str, int]]:
    """The tracking and registry servers, plus ``DESCOPE_ALLOWED_HOSTS`` (``host`` or ``host:port``)."""
    origins: set[tuple[str, int]] = set()
    for uri in (tracking_uri, registry_uri):
        origin = _origin(uri) if uri else None
        if origin:
            origins.add(origin)
    for item in allowed_hosts.split(","):
        item = item.strip().lower()
        if not item:
            continue
        host, _, port = item.rpartition(":") if item.rsplit(":", 1)[-1].isdigit() else (item, "", "")
        if port:
            origins.add((host, int(port)))
        else:
            origins.update((item, p) for p in _DEFAULT_PORTS.values())
    return frozenset(origins)


@functools.lru_cache(maxsize=64)
def _warn_not_allowed(origin: tuple[str, int] | None) -> None:
    """Once per host: a request to a host that is not the tracking server goes without the token."""
    where = f"{origin[0]}:{origin[1]}" if origin else "a non-HTTP URL"
    _log.warning(
        "Not sending the Descope session to %s: it is not the MLflow tracking server "
        "(MLFLOW_TRACKING_URI) nor listed in DESCOPE_ALLOWED_HOSTS. If it is your tracking server, "
        "set MLFLOW_TRACKING_URI (or mlflow.set_tracking_uri) to it, or add it to DESCOPE_ALLOWED_HOSTS.",
        where,
    )


def _diagnosis_client() -> DescopeClient | None:
    if not os.environ.get("DESCOPE_PROJECT_ID"):
        return None
    try:
        return get_descope_client()
    except DescopeAuthError:
        return None


def explained(exc: DescopeAuthError) -> DescopeAuthError:
    """The error to raise for ``exc``, found out once a session could not be had: it then ends the
    script in one line (``errors.install_excepthook``), naming what to fix."""
    install_excepthook()
    return diagnose(exc, _diagnosis_client())


def _explain_unsent_401(response: requests.Response, **kwargs: Any) -> requests.Response:
    """A 401 to a request that went without the session because its host is not the tracking server:
    the server's "sign in" alone would not tell the user that the fix is on their side."""
    if response.status_code != 401:
        return response
    origin = _origin(response.request.url or "")
    where = f"{origin[0]}:{origin[1]}" if origin else "this server"
    hint = (
        f"the Descope session was not sent to {where} because it is not the MLflow tracking server: "
        f"set MLFLOW_TRACKING_URI (or call mlflow.set_tracking_uri) to "
        f"{_base_url(response.request.url or '')}, or add {where} to DESCOPE_ALLOWED_HOSTS"
    )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error_code" not in body:
        return response  # not an MLflow server's answer (an artifact store's, say): left as it is
    server_says = body.get("message")
    body["message"] = f"{server_says} ({hint})" if isinstance(server_says, str) and server_says else hint
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    response.headers.pop("Content-Length", None)
    return response


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class DescopeAuth(AuthBase):
    """A ``requests`` auth hook: adds the Bearer token and retries once after a 401."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        origin = _origin(request.url or "")
        if origin is None or origin not in _allowed_origins():
            _warn_not_allowed(origin)
            request.register_hook("response", _explain_unsent_401)
            return request
        try:
            token = get_client_session().token()
        except DescopeAuthError as exc:
            raise explained(exc) from None
        request.headers["Authorization"] = f"Bearer {token}"
        body_position = _body_position(request)
        request.register_hook("response", _RetryOnce(token, body_position))
        return request


def _body_position(request: requests.PreparedRequest) -> int | None:
    tell = getattr(request.body, "tell", None)
    if tell is None:
        return None
    try:
        return int(tell())
    except OSError:
        return None


class _RetryOnce:
    """After a 401 to ``token``: renew the session once and send the request again."""

    def __init__(self, token: str, body_position: int | None) -> None:
        self.token = token
        self.body_position = body_position
        self.done = False

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or self.done:
            return response
        self.done = True
        request = response.request
        body = request.body
        if body is not None and not isinstance(body, (bytes, str)):
            # A streamed upload can be sent again only if it can be rewound.
            seek = getattr(body, "seek", None)
            if seek is None or self.body_position is None:
                return response
            seek(self.body_position)
        try:
            new_token = get_client_session().renew_after_rejection(self.token)
        except DescopeAuthError as exc:
            raise explained(exc) from None
        retry = request.copy()
        retry.headers["Authorization"] = f"Bearer {new_token}"
        response.content  # noqa: B018  (drain, so the connection can be reused)
        response.close()
        connection = response.connection
        new_response: requests.Response = connection.send(retry, **kwargs)
        new_response.history.append(response)
        new_response.request = retry
        _log.debug("Descope session renewed after a 401 from %s", urlsplit(request.url or "").netloc)
        return new_response


class DescopeAuthProvider(RequestAuthProvider):
    """Registered under ``mlflow.request_auth_provider`` as ``descope``."""

    def __init__(self) -> None:
        self._auth = DescopeAuth()

    def get_name(self) -> str:
        return "descope"

    def get_auth(self) -> DescopeAuth:
        # MLflow asks only the provider MLFLOW_TRACKING_AUTH names: this process uses Descope.
        install_excepthook()
        return self._auth
