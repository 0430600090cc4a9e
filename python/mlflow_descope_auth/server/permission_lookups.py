"""Cheaper lookups under MLflow's permission checks, with the same answers.

Profiling a non-admin ``log-batch`` on ``--app-name descope`` (py-spy; see BENCHMARKS.md) showed
MLflow's auth layer, not this plugin, spending most of the request: its run validators load the
whole run (``get_run``: the run row, tags, params, latest metrics, inputs, model inputs and outputs,
several queries) only to read the run's experiment id, and every check loads the user twice
(``get_user`` for the admin flag and again for the grants). Two changes, neither of which caches a
grant or an admin flag across requests, so a grant or revocation applies to the very next request on
every worker and replica:

- run id -> experiment id, the one fact the validators take from the run, is read with a single
  indexed query and kept in a bounded per-process map. A run never moves to another experiment, so
  the entry never goes stale; a run deleted for good keeps its entry, which only changes a "no
  permission" for a caller who may read the experiment into the handler's "run not found".
- ``store.get_user`` is memoized for the duration of one request (``flask.g``); any other store
  write during the request drops the memo.

Both are installed by ``install()`` (from ``app.create_app``) and only where they hold: a SQL
tracking store, and workspaces off (with workspaces, MLflow's own lookups run unchanged). The run
lookup replaces a private MLflow function, so it is also installed only over a version of it (and of
what it calls) that it was checked against: MLflow 3.17.2 and 3.18.0 have the same one. On any other
MLflow it steps aside, and tests_py/test_permission_lookups.py fails until the new source is checked.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import g, has_request_context

RUN_CACHE_SIZE = 100_000
_READ_PREFIXES = ("get_", "list_", "has_", "_")
# sha256 of the source of MLflow's `mlflow.server.auth._run_requirement`, `_fetch_or_none` and the SQL
# tracking store's `_get_run` (see `mlflow_run_lookup_digest`) that `fast_run_requirement` reproduces:
# MLflow 3.17.2 and 3.18.0.
KNOWN_RUN_LOOKUPS = frozenset({"d1964d14265b1849990b75c59d3a33d36930913cafe7bfce565713dc9a57f8e2"})


class RunExperiments:
    """A bounded LRU map run id -> experiment id, filled from the tracking store's SQL database."""

    def __init__(self, capacity: int = RUN_CACHE_SIZE) -> None:
        self._capacity = capacity
        self._map: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def experiment_of(self, run_id: str, store: Any) -> str | None:
        """The run's experiment id, or None when there is no such run."""
        with self._lock:
            hit = self._map.get(run_id)
            if hit is not None:
                self._map.move_to_end(run_id)
                return hit
        from mlflow.store.tracking.dbmodels.models import SqlRun

        with store.ManagedSessionMaker() as session:
            row = session.query(SqlRun.experiment_id).filter(SqlRun.run_uuid == run_id).one_or_none()
        if row is None:
            return None
        experiment_id = str(row[0])
        with self._lock:
            self._map[run_id] = experiment_id
            if len(self._map) > self._capacity:
                self._map.popitem(last=False)
        return experiment_id

    def __len__(self) -> int:
        return len(self._map)


run_experiments = RunExperiments()


def _sql_tracking_store() -> Any | None:
    from mlflow.server.handlers import _get_tracking_store
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = _get_tracking_store()
    return store if isinstance(store, SqlAlchemyStore) else None


def fast_run_requirement(original: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """MLflow's ``_run_requirement`` (run id, action) -> (anchor, requirements), with the run's
    experiment read by one query instead of ``get_run``. Anything unusual goes to ``original``."""
    from mlflow.server.auth.permissions import RESOURCE_TYPE_EXPERIMENT, RESOURCE_TYPE_RUN
    from mlflow.server.auth.requirements import Requirement

    @functools.wraps(original)
    def run_requirement(run_id: str, action: str) -> Any:
        store = _sql_tracking_store() if isinstance(run_id, str) and run_id else None
        if store is None:
            return original(run_id, action)
        experiment_id = run_experiments.experiment_of(run_id, store)
        if experiment_id is None:
            return None  # as MLflow: a missing run denies
        experiment = (RESOURCE_TYPE_EXPERIMENT, experiment_id)
        # The same requirements MLflow builds (tests_py/test_permission_lookups.py compares them).
        return experiment, [
            Requirement(RESOURCE_TYPE_EXPERIMENT, experiment_id, "read"),
            Requirement(RESOURCE_TYPE_RUN, "*", action, fallback_if_no_grant=(experiment,)),
        ]

    run_requirement.descope_fast = True  # type: ignore[attr-defined]
    return run_requirement


def mlflow_run_lookup_digest(run_requirement: Callable[[str, str], Any]) -> str | None:
    """What ``run_requirement`` (MLflow's ``_run_requirement``) does, as a digest of its source and of
    the two functions it reads a run with; None when a source cannot be read."""
    import mlflow.server.auth as mlflow_auth
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    functions: tuple[Any, ...] = (
        run_requirement,
        getattr(mlflow_auth, "_fetch_or_none", None),  # None (a TypeError below) when it is gone
        getattr(SqlAlchemyStore, "_get_run", None),
    )
    digest = hashlib.sha256()
    for function in functions:
        try:
            digest.update(textwrap.dedent(inspect.getsource(function)).encode())
        except (OSError, TypeError):
            return None
    return digest.hexdigest()


def memoize_users_per_request(store: Any) -> None:
    """``store.get_user`` answers from a per-request memo; any write through the store clears it."""
    if getattr(store.get_user, "descope_memo", False):
        return
    original_get_user = store.get_user

    def get_user(username: str) -> Any:
        if not has_request_context():
            return original_get_user(username)
        memo: dict[str, Any] = g.setdefault("_descope_users", {})
        if username not in memo:
            memo[username] = original_get_user(username)
        return memo[username]

    get_user.descope_memo = True  # type: ignore[attr-defined]
    store.get_user = get_user
    for name in dir(type(store)):
        # Methods of the store's class only (not ManagedSessionMaker and other instance attributes).
        if name.startswith(_READ_PREFIXES) or not inspect.isfunction(getattr(type(store), name, None)):
            continue
        setattr(store, name, _clearing_memo(getattr(store, name)))


def _clearing_memo(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        if has_request_context():
            g.pop("_descope_users", None)
        return method(*args, **kwargs)

    return write


def roles_named(store: Any, user_id: int, prefix: str) -> dict[str, int]:
    """The user's roles whose name starts with ``prefix``, name -> id: what
    ``store.list_user_roles`` answers (filtered), read on every request by ``authz.provision``. One
    prepared statement on the store's primary engine: a tenth of the CPU of an ORM query, which
    loads every role's grants besides (BENCHMARKS.md)."""
    if any(c in prefix for c in "%_\\"):
        raise ValueError(f"a LIKE wildcard in the role prefix {prefix!r}")
    with store.engine.connect() as conn:
        rows = conn.execute(_roles_statement(), {"user_id": user_id, "pattern": prefix + "%"}).all()
    return {str(name): int(role_id) for name, role_id in rows}


@functools.cache
def _roles_statement() -> Any:
    import sqlalchemy as sa
    from mlflow.server.auth.db.models import SqlRole, SqlUserRoleAssignment

    return (
        sa.select(SqlRole.name, SqlRole.id)
        .join(SqlUserRoleAssignment, SqlRole.id == SqlUserRoleAssignment.role_id)
        .where(
            SqlUserRoleAssignment.user_id == sa.bindparam("user_id"),
            SqlRole.name.like(sa.bindparam("pattern")),
        )
    )


def install() -> set[str]:
    """Installs each where it holds; returns what is installed ("run_requirement", "user_memo")."""
    import mlflow.server.auth as mlflow_auth
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    if MLFLOW_ENABLE_WORKSPACES.get():  # type: ignore[no-untyped-call]
        return set()
    installed = {"user_memo"}
    memoize_users_per_request(mlflow_auth.store)
    original = getattr(mlflow_auth, "_run_requirement", None)
    if getattr(original, "descope_fast", False):
        installed.add("run_requirement")
    elif original is not None and mlflow_run_lookup_digest(original) in KNOWN_RUN_LOOKUPS:
        mlflow_auth._run_requirement = fast_run_requirement(original)  # type: ignore[assignment]
        installed.add("run_requirement")
    return installed
