"""People's names for their MLflow usernames (Descope user ids), for MLflow's UI to show.

The username stays the key everywhere (MLflow's records, permissions, API answers); the name is only
remembered from verified sessions (the token's ``name`` claim, else ``email``) and looked up by the
UI's script through ``/auth/names``. A table in the auth database, so every worker and replica knows
a name as soon as any of them saw it; a newer token's name wins over an older one's.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from mlflow_descope_auth._core import Identity

_log = logging.getLogger(__name__)

# Columns sized as MLflow's own username column.
MAX_LENGTH = 255

# What MLflow's page (static/mlflow-ui.js) takes for a Descope user id and replaces with that user's
# name: a "name" of this shape would be shown as the name of the user whose id it is.
_LOOKS_LIKE_USER_ID = re.compile(r"U[0-9A-Za-z]{15,63}")

_CREATE = """CREATE TABLE IF NOT EXISTS descope_auth_display_names (
    username varchar(255) PRIMARY KEY,
    display_name varchar(255) NOT NULL,
    issued_at bigint NOT NULL
)"""
# Both SQLite (3.24+) and PostgreSQL speak this upsert.
_UPSERT = """INSERT INTO descope_auth_display_names (username, display_name, issued_at)
    VALUES (:username, :display_name, :issued_at)
    ON CONFLICT (username) DO UPDATE SET display_name = excluded.display_name, issued_at = excluded.issued_at
    WHERE descope_auth_display_names.issued_at <= excluded.issued_at"""
_LOOKUP = "SELECT username, display_name FROM descope_auth_display_names WHERE username IN :usernames"

# What this process last wrote (or found) per user: a request whose token says the same writes
# nothing. Bounded; cleared when full.
_MEMO_SIZE = 10_000
_memo: dict[str, str] = {}
_lock = threading.Lock()
_created: set[str] = set()  # engines (by URL) whose table this process has made sure of


def display_name(identity: Identity) -> str | None:
    """The token's ``name``, else its ``email``; None when neither says more than the username.
    Text shaped like a user id is not a name (``_LOOKS_LIKE_USER_ID``)."""
    for candidate in (identity.name, identity.email):
        text = (candidate or "").strip()
        if text and text != identity.username and not _LOOKS_LIKE_USER_ID.fullmatch(text):
            return text[:MAX_LENGTH]
    return None


def remember(identity: Identity, engine: Any = None) -> None:
    """Stores the session's name for its username, unless this process already did. ``engine``:
    the auth store's (MLflow's) unless given."""
    name = display_name(identity)
    if name is None or _memo.get(identity.username) == name:
        return
    import sqlalchemy as sa

    engine = engine or _engine()
    _ensure_table(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(_UPSERT),
            {
                "username": identity.username,
                "display_name": name,
                "issued_at": identity.issued_at or 0,
            },
        )
    with _lock:
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[identity.username] = name


def remember_quietly(identity: Identity) -> None:
    """``remember``, best effort: a name is a courtesy, never a reason to fail a request."""
    try:
        remember(identity)
    except Exception as exc:  # the DB driver's errors are not one hierarchy
        _log.warning("Could not store the display name of %s: %s", identity.username, type(exc).__name__)


def lookup(usernames: list[str], engine: Any = None) -> dict[str, str]:
    """The known names of these usernames (unknown ones are left out)."""
    if not usernames:
        return {}
    import sqlalchemy as sa

    engine = engine or _engine()
    _ensure_table(engine)
    statement = sa.text(_LOOKUP).bindparams(sa.bindparam("usernames", expanding=True))
    with engine.connect() as conn:
        rows = conn.execute(statement, {"usernames": usernames}).all()
    return {str(username): str(name) for username, name in rows}


def _engine() -> Any:
    from mlflow.server.auth import store

    return store.engine


def _ensure_table(engine: Any) -> None:
    """Creates the table once per process. Concurrent creators (workers, replicas) may collide on
    PostgreSQL's catalog even with IF NOT EXISTS: the loser's retry finds the table."""
    key = str(engine.url)
    if key in _created:
        return
    import sqlalchemy as sa

    for attempt in range(2):
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(_CREATE))
            break
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt:
                raise
    _created.add(key)


def forget_memo() -> None:
    """Forgets what this process wrote (as a fresh worker would know nothing)."""
    with _lock:
        _memo.clear()
