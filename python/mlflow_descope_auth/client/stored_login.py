"""Sessions that ``mlflow-descope-auth login`` stores, one file per tracking server.

``<config dir>/sessions/<id>.json`` (the config dir is click's ``get_app_dir``: ``~/.config/
mlflow-descope-auth`` on Linux, honouring ``XDG_CONFIG_HOME``; the platform's own place elsewhere),
directories 0700 and files 0600, written atomically. ``<id>`` is derived from the normalised tracking
URI, which the file also names. The tokens are stored as Descope issued them: anyone who can read the
user's files can use them, exactly as with a browser's cookies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

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


@dataclass(frozen=True)
class StoredLogin:
    tracking_uri: str
    project_id: str
    base_url: str
    session_token: str
    refresh_token: str | None
    user: str

    def __repr__(self) -> str:
        return f"StoredLogin({self.tracking_uri!r}, user={self.user!r}, <tokens hidden>)"


def session_path(tracking_uri: str) -> Path:
    key = hashlib.sha256(normalize_uri(tracking_uri).encode()).hexdigest()[:32]
    return config_dir() / "sessions" / f"{key}.json"


def _private_dir() -> Path:
    path = config_dir() / "sessions"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for d in (config_dir(), path):
        d.chmod(0o700)  # made earlier with a looser umask, or by hand
    return path


def load(tracking_uri: str) -> StoredLogin | None:
    """The login stored for this server, or None (none, or a file this package did not write)."""
    try:
        path = session_path(tracking_uri)
        data = json.loads(path.read_text())
        login = StoredLogin(**data)
    except (OSError, ValueError, TypeError):
        return None
    return login if login.tracking_uri == normalize_uri(tracking_uri) else None


def exists(tracking_uri: str) -> bool:
    try:
        return session_path(tracking_uri).is_file()
    except ValueError:
        return False


def save(login: StoredLogin) -> Path:
    login = replace(login, tracking_uri=normalize_uri(login.tracking_uri))
    directory = _private_dir()
    path = session_path(login.tracking_uri)
    temp = directory / f".{path.name}.{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(login), f)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def delete(tracking_uri: str) -> bool:
    path = session_path(tracking_uri)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def locked(tracking_uri: str) -> Iterator[None]:
    """Held while a process renews the stored session: two notebooks must not both spend one
    (rotating) refresh token; the second finds the first one's result in the file."""
    directory = _private_dir()
    fd = os.open(directory / f"{session_path(tracking_uri).stem}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
