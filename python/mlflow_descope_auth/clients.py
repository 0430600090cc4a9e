"""Process-wide objects built from the environment: the Descope client and the client session.

Both are created on first use, never at import, and again in a forked child (gunicorn preloads and
forks; a client's HTTP connections must not be shared across processes). A change to the relevant
environment variables builds new ones, so a script or test that changes them gets what it set.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from mlflow_descope_auth._core import (
    SETTINGS,
    ClientSession,
    ConfigurationError,
    DescopeClient,
    load_login,
)

# Every variable a DescopeClient is built from (the settings with a DescopeClient keyword, which is
# what the core's configuration reads); a change to any of them means a new client.
CLIENT_VARIABLES = tuple(s.name for s in SETTINGS if s.keyword is not None)
CREDENTIAL_VARIABLES = ("DESCOPE_ACCESS_KEY", "DESCOPE_SESSION_TOKEN", "DESCOPE_REFRESH_TOKEN")
# Checked on every MLflow request, so kept short: the credentials and where they are valid.
_SESSION_KEY_VARIABLES = ("DESCOPE_PROJECT_ID", "DESCOPE_BASE_URI", *CREDENTIAL_VARIABLES)

# The per-request path re-reads the environment at most this often (reading it costs ~1 µs a variable).
_ENV_RECHECK_SECONDS = 1.0


_lock = threading.Lock()
_session_checked_until = 0.0
_configured: tuple[int, float, bool] | None = None
_client: tuple[int, tuple[str | None, ...], DescopeClient] | None = None
_session: tuple[int, tuple[str | None, ...], ClientSession] | None = None


def _snapshot(names: tuple[str, ...], environ: Mapping[str, str]) -> tuple[str | None, ...]:
    return tuple(environ.get(n) for n in names)


def get_descope_client(environ: Mapping[str, str] | None = None) -> DescopeClient:
    """The process's Descope client, configured from ``DESCOPE_*`` environment variables.

    Raises ``ConfigurationError`` (naming the variable) when the configuration is incomplete.
    """
    global _client
    env = os.environ if environ is None else environ
    key = _snapshot(CLIENT_VARIABLES, env)
    cached = _client
    if cached is not None and cached[0] == os.getpid() and cached[1] == key:
        return cached[2]
    with _lock:
        cached = _client
        if cached is not None and cached[0] == os.getpid() and cached[1] == key:
            return cached[2]
        client = DescopeClient.from_env(env)
        _client = (os.getpid(), key, client)
        return client


def current_tracking_uri(environ: Mapping[str, str] | None = None) -> str:
    """What ``mlflow.get_tracking_uri()`` answers (its two common cases read directly: it costs a few
    µs, and the client plugins ask on every request)."""
    from mlflow_descope_auth.mlflow_internals import tracking_uri_set_in_process

    env = os.environ if environ is None else environ
    found = tracking_uri_set_in_process() or env.get("MLFLOW_TRACKING_URI")
    if found:
        return found
    from mlflow.tracking import get_tracking_uri

    return str(get_tracking_uri())


def _stored_login_uri(env: Mapping[str, str]) -> str | None:
    """The tracking URI whose `mlflow-descope-auth login` session applies: none when the environment
    holds a credential (it wins), or when nothing is stored for the tracking server."""
    if any(env.get(n) for n in CREDENTIAL_VARIABLES):
        return None
    from mlflow_descope_auth.client import stored_login

    uri = current_tracking_uri(env)
    return uri if stored_login.exists(uri) else None


def descope_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when a project and a client credential are set, or `mlflow-descope-auth login` stored a
    session for the tracking server: the client plugins act only then."""
    global _configured
    if environ is None:
        cached = _configured
        if cached is not None and cached[0] == os.getpid() and time.monotonic() < cached[1]:
            return cached[2]
    env = os.environ if environ is None else environ
    result = (bool(env.get("DESCOPE_PROJECT_ID")) and any(env.get(n) for n in CREDENTIAL_VARIABLES)) or (
        _stored_login_uri(env) is not None
    )
    if environ is None:
        _configured = (os.getpid(), time.monotonic() + _ENV_RECHECK_SECONDS, result)
    return result


def get_client_session(environ: Mapping[str, str] | None = None) -> ClientSession:
    """The session client scripts send, from ``DESCOPE_ACCESS_KEY`` (preferred: it never runs out)
    or ``DESCOPE_SESSION_TOKEN`` with an optional ``DESCOPE_REFRESH_TOKEN``; without any of them,
    the one `mlflow-descope-auth login` stored for the tracking server."""
    global _session, _session_checked_until
    cached = _session
    fresh = time.monotonic() < _session_checked_until
    if environ is None and cached is not None and cached[0] == os.getpid() and fresh:
        return cached[2]
    env = os.environ if environ is None else environ
    stored_uri = _stored_login_uri(env)
    key = (*_snapshot(_SESSION_KEY_VARIABLES, env), stored_uri)
    if cached is not None and cached[0] == os.getpid() and cached[1] == key:
        if environ is None:
            _session_checked_until = time.monotonic() + _ENV_RECHECK_SECONDS
        return cached[2]
    session: ClientSession
    if stored_uri is not None:
        session, _ = stored_client_session(stored_uri, env)
    elif not any(env.get(n) for n in CREDENTIAL_VARIABLES):
        err = ConfigurationError(
            "configuration error in DESCOPE_ACCESS_KEY: no credential for the MLflow server "
            f"{current_tracking_uri(env)}; run `mlflow-descope-auth login`, or set DESCOPE_ACCESS_KEY "
            "(or DESCOPE_SESSION_TOKEN and DESCOPE_REFRESH_TOKEN)"
        )
        err.code, err.variable, err.keyword = "config_missing", "DESCOPE_ACCESS_KEY", None
        raise err
    else:
        client = get_descope_client(env)
        session = ClientSession(
            client,
            access_key=env.get("DESCOPE_ACCESS_KEY") or None,
            session_token=env.get("DESCOPE_SESSION_TOKEN") or None,
            refresh_token=env.get("DESCOPE_REFRESH_TOKEN") or None,
        )
    with _lock:
        cached = _session
        if cached is not None and cached[0] == os.getpid() and cached[1] == key:
            return cached[2]
        _session = (os.getpid(), key, session)
        if environ is None:
            _session_checked_until = time.monotonic() + _ENV_RECHECK_SECONDS
        return session


def stored_client_session(tracking_uri: str, env: Mapping[str, str]) -> tuple[ClientSession, DescopeClient]:
    """The core's session over the login file stored for ``tracking_uri``, with the stored login's
    project and Descope URL unless this environment names a project; RefreshFailedError (saying to
    sign in again) when there is no usable login."""
    from mlflow_descope_auth.client import stored_login

    uri = stored_login.normalize_uri(tracking_uri)
    path = str(stored_login.session_path(uri))
    login = load_login(path, uri)
    if not env.get("DESCOPE_PROJECT_ID"):
        env = {**env, "DESCOPE_PROJECT_ID": login.project_id, "DESCOPE_BASE_URI": login.base_url}
    client = get_descope_client(env)
    return ClientSession(client, login_file=path, tracking_uri=uri), client


def reset() -> None:
    """Forget the cached client and session (the next use builds them from the environment)."""
    global _client, _session, _configured
    with _lock:
        _client = None
        _session = None
        _configured = None
