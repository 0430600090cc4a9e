"""One-time set-up shared by all workers: MLflow's auth config, the Flask secret key, the auth DB.

MLflow runs this plugin's factory in every worker and has no pre-fork hook for custom apps, and its
auth-DB migration is not safe to run concurrently, so everything here is idempotent and runs under a
file lock (the workers of one host) and, on PostgreSQL or MySQL, a database lock (replicas on
several hosts starting at once on a fresh auth DB).
"""

from __future__ import annotations

import configparser
import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth.server.settings import ServerSettings

# The user MLflow's auth layer insists on creating. No Descope identity may map to it (authz refuses
# that username), and nobody can log in as it: this plugin never checks passwords.
BOOTSTRAP_ADMIN = "descope-bootstrap-admin"
AUTHORIZATION_FUNCTION = "mlflow_descope_auth.server.authz:authorize"
# The database lock's name: a PostgreSQL advisory lock key (any 64-bit number no one else uses) and
# a MySQL named lock.
_PG_LOCK_KEY = 0x6D6C666C6F776473  # "mlflowds"
_MYSQL_LOCK_NAME = "mlflow_descope_auth_bootstrap"
_MYSQL_LOCK_TIMEOUT = 600


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / "bootstrap.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def database_lock(db_uri: str) -> Iterator[None]:
    """Held by one process at a time across every host using the auth DB; released when the
    connection ends, so a replica that dies while holding it does not block the others."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    dialect = sqlalchemy.engine.make_url(db_uri).get_backend_name()
    if dialect not in ("postgresql", "mysql", "mariadb"):
        yield  # SQLite lives on one host: the file lock covers it
        return
    engine = sqlalchemy.create_engine(db_uri, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                _execute(conn, "SELECT pg_advisory_lock(:key)", key=_PG_LOCK_KEY)
            else:
                _execute(
                    conn,
                    "SELECT GET_LOCK(:name, :timeout)",
                    name=_MYSQL_LOCK_NAME,
                    timeout=_MYSQL_LOCK_TIMEOUT,
                )
            conn.commit()
            try:
                yield
            finally:
                if dialect == "postgresql":
                    _execute(conn, "SELECT pg_advisory_unlock(:key)", key=_PG_LOCK_KEY)
                else:
                    _execute(conn, "SELECT RELEASE_LOCK(:name)", name=_MYSQL_LOCK_NAME)
                conn.commit()
    finally:
        engine.dispose()


def _execute(conn: Any, statement: str, **params: Any) -> None:
    import sqlalchemy

    conn.execute(sqlalchemy.text(statement), params)


def _write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_auth_config(settings: ServerSettings, default_permission: str) -> Path:
    """MLflow's auth config with our authorization function; values from the user's own config
    (``MLFLOW_AUTH_CONFIG_PATH``) are kept where they do not conflict."""
    config = configparser.ConfigParser()
    user_config = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if user_config and Path(user_config).resolve() != (settings.state_dir / "auth.ini").resolve():
        config.read(user_config)
    if not config.has_section("mlflow"):
        config.add_section("mlflow")
    section = config["mlflow"]
    section["authorization_function"] = AUTHORIZATION_FUNCTION
    section["admin_username"] = BOOTSTRAP_ADMIN
    section["default_permission"] = default_permission
    if "DESCOPE_AUTH_DB_URI" in os.environ or "database_uri" not in section:
        section["database_uri"] = settings.auth_db_uri
    section.pop("admin_password", None)
    path = settings.state_dir / "auth.ini"
    lines = [f"{k} = {v}" for k, v in section.items()]
    _write_atomically(path, "[mlflow]\n" + "\n".join(lines) + "\n")
    return path


def flask_secret_key(settings: ServerSettings) -> str:
    """MLFLOW_FLASK_SERVER_SECRET_KEY, or a random key kept in the state dir so all workers (and
    restarts) share it."""
    if key := os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        return key
    path = settings.state_dir / "flask_secret_key"
    if not path.exists():
        _write_atomically(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


def prepare(settings: ServerSettings, default_permission: str) -> None:
    """Sets the environment MLflow's auth module reads at import, and migrates the auth DB once."""
    with state_lock(settings.state_dir):
        config_path = write_auth_config(settings, default_permission)
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(config_path)
        os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = flask_secret_key(settings)
        # Imported only now: mlflow.server.auth reads MLFLOW_AUTH_CONFIG_PATH at import.
        from mlflow.server.auth import auth_config, store

        with database_lock(auth_config.database_uri):
            store.init_db(auth_config.database_uri)  # type: ignore[no-untyped-call]
            if not store.has_user(BOOTSTRAP_ADMIN, use_primary=True):
                store.create_user(BOOTSTRAP_ADMIN, secrets.token_urlsafe(32), is_admin=True)
            from mlflow_descope_auth.server import authz

            if not authz.baseline_roles_exist():
                authz.forget_legacy_baseline_grants()
            authz.ensure_baseline_roles()
    # Tells create_app the admin exists, so it only connects instead of migrating again.
    mlflow_internals.mark_auth_admin_bootstrapped()
