"""Cheaper lookups under MLflow's permission checks, with the same answers.

Profiling a non-admin ``log-batch`` on ``--app-name descope`` (py-spy; see BENCHMARKS.md) showed
MLflow's auth layer, not this plugin, spending most of the request: its run validators load the
whole run (``get_run``: the run row, tags, params, latest metrics, inputs, model inputs and outputs,
several queries) only to read the run's experiment id, and every check loads the user again (the
admin flag, the grants; ~1 ms of ORM each). Three changes, none of which caches a grant or an admin
flag across requests, so a grant or revocation applies to the very next request on every worker and
replica:

- run id -> experiment id, the one fact the validators take from the run, is read with a single
  indexed query and kept in a bounded per-process map. A run never moves to another experiment, so
  the entry never goes stale; a run deleted for good keeps its entry, which only changes a "no
  permission" for a caller who may read the experiment into the handler's "run not found".
- the user's MLflow record is read once per request, lean (``mlflow_internals.user_and_roles``, by
  ``authz.provision``), and MLflow's ``store.get_user`` answers from that memo for the rest of the
  request (``flask.g``); a user write in the request drops it.
- MLflow's ``sender_is_admin`` answers from the request's verified identity (``authz.verified_admin``),
  whose admin flag ``authz.provision`` has just written to the auth DB.

All are installed by ``install()`` (from ``app.create_app``) and only where they hold: a SQL
tracking store, and workspaces off (with workspaces, MLflow's own lookups run unchanged). The run
lookup and the admin check replace MLflow functions, so they are installed only over the versions
of them that they were checked against (``mlflow_internals``); on any other they step aside.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mlflow_descope_auth import mlflow_internals

RUN_CACHE_SIZE = 100_000


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
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = mlflow_internals.tracking_store()
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


def install(verified_admin: Callable[[], bool | None]) -> set[str]:
    """Installs each where it holds; returns what is installed ("user_memo", "run_requirement",
    "admin_check")."""
    import mlflow.server.auth as mlflow_auth
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    if MLFLOW_ENABLE_WORKSPACES.get():  # type: ignore[no-untyped-call]
        return set()
    installed = {"user_memo"}
    mlflow_internals.memoize_users_per_request(mlflow_auth.store)
    if mlflow_internals.replace_run_requirement(fast_run_requirement):
        installed.add("run_requirement")
    if mlflow_internals.answer_admin_checks_from(verified_admin):
        installed.add("admin_check")
    return installed
