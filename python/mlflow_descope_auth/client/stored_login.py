"""Where ``mlflow-descope-auth login`` stores a session: one file per tracking server.

``<config dir>/sessions/<id>.json`` (the config dir is click's ``get_app_dir``: ``~/.config/
mlflow-descope-auth`` on Linux, honouring ``XDG_CONFIG_HOME``; the platform's own place elsewhere),
directories 0700 and files 0600. ``<id>`` is derived from the normalised tracking URI, which the
file also names. The core reads, writes (atomically, under the file's lock) and renews the file;
its tokens never come back into Python. They are stored as Descope issued them: anyone who can read
the user's files can use them, exactly as with a browser's cookies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from mlflow_descope_auth._core import DescopeAuthError, StoredLogin, delete_login, load_login, save_login

__all__ = ["StoredLogin", "config_dir", "delete", "exists", "load", "normalize_uri", "save", "session_path"]

APP_NAME = "mlflow-descope-auth"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def config_dir() -> Path:
    return Path(click.get_app_dir(APP_NAME))


def normalize_uri(uri: str) -> str:
    """``HTTPS://Host:443/prefix/`` -> ``https://host/prefix``: one key per server, however spelled.
    Raises ValueError for anything but an http(s) URL with a host."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{uri!r} is not an http(s) URL of an MLflow server")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def session_path(tracking_uri: str) -> Path:
    key = hashlib.sha256(normalize_uri(tracking_uri).encode()).hexdigest()[:32]
    return config_dir() / "sessions" / f"{key}.json"


def _private_config_dir() -> None:
    path = config_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # made earlier with a looser umask, or by hand (the core sees to sessions/)


def load(tracking_uri: str) -> StoredLogin | None:
    """The login stored for this server, or None (none, or a file this package did not write)."""
    try:
        uri = normalize_uri(tracking_uri)
        return load_login(str(session_path(uri)), uri)
    except (ValueError, DescopeAuthError):
        return None


def exists(tracking_uri: str) -> bool:
    try:
        return session_path(tracking_uri).is_file()
    except ValueError:
        return False


def save(login: StoredLogin) -> Path:
    uri = normalize_uri(login.tracking_uri)
    if uri != login.tracking_uri:
        login = login.with_tracking_uri(uri)
    _private_config_dir()
    path = session_path(uri)
    save_login(str(path), login)
    return path


def delete(tracking_uri: str) -> bool:
    return delete_login(str(session_path(tracking_uri)))
