"""The cheaper lookups under MLflow's permission checks (server/permission_lookups.py) answer exactly
as MLflow does, and never keep a grant: a revocation, made through the API or directly in the auth
database by another process, is enforced on the very next request on every worker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from mlflow_descope_auth.server import permission_lookups
from mlflow_descope_auth.server.permission_lookups import RunExperiments, fast_run_requirement

from .descope_server import DescopeServer
from .test_server_permissions import create_experiment, reader_username


def test_the_fast_run_requirement_answers_like_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.server.auth as mlflow_auth
    import mlflow.server.handlers as handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))  # type: ignore[no-untyped-call]
    monkeypatch.setattr(handlers, "_tracking_store", store)
    exp = store.create_experiment("e")  # type: ignore[no-untyped-call]
    run = store.create_run(exp, user_id="u", start_time=0, tags=[], run_name="r")  # type: ignore[no-untyped-call]
    original = mlflow_auth._run_requirement
    original = getattr(original, "__wrapped__", original)
    fast = fast_run_requirement(original)
    for action in ("read", "update", "delete"):
        assert fast(run.info.run_id, action) == original(run.info.run_id, action)
    assert fast(run.info.run_id, "read") is not None
    missing = "0" * 32
    assert fast(missing, "read") is None
    assert original(missing, "read") is None


def test_install_steps_aside_over_a_run_lookup_it_does_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.server.auth as mlflow_auth
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    original = mlflow_auth._run_requirement
    original = getattr(original, "__wrapped__", original)
    monkeypatch.setattr(mlflow_auth, "store", SqlAlchemyStore())  # the memo wraps this one, not MLflow's
    monkeypatch.setattr(mlflow_auth, "sender_is_admin", mlflow_auth.sender_is_admin)  # put back after

    def other_run_requirement(run_id: str, action: str) -> Any:
        return None

    monkeypatch.setattr(mlflow_auth, "_run_requirement", other_run_requirement)
    assert permission_lookups.install(lambda: None) == {"user_memo", "admin_check"}
    assert mlflow_auth._run_requirement is other_run_requirement
    assert mlflow_auth.store.get_user.descope_memo  # type: ignore[attr-defined]

    monkeypatch.setattr(mlflow_auth, "_run_requirement", original)
    assert permission_lookups.install(lambda: None) == {"user_memo", "run_requirement", "admin_check"}
    assert mlflow_auth._run_requirement.descope_fast  # type: ignore[attr-defined]
    assert mlflow_auth._run_requirement.__wrapped__ is original  # type: ignore[attr-defined]
    assert permission_lookups.install(lambda: None) == {"user_memo", "run_requirement", "admin_check"}
    assert mlflow_auth._run_requirement.__wrapped__ is original  # type: ignore[attr-defined]


def test_the_run_map_stays_bounded(tmp_path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))  # type: ignore[no-untyped-call]
    exp = store.create_experiment("e")  # type: ignore[no-untyped-call]
    new_run = store.create_run  # untyped in MLflow
    runs = [new_run(exp, "u", 0, [], f"r{i}").info.run_id for i in range(5)]  # type: ignore[no-untyped-call]
    lookups = RunExperiments(capacity=3)
    assert [lookups.experiment_of(r, store) for r in runs] == [exp] * 5
    assert len(lookups) == 3


def _log_batch(server: DescopeServer, run_id: str, step: int) -> int:
    # A new connection per request, so the requests spread over both worker processes.
    body: dict[str, Any] = {
        "run_id": run_id,
        "metrics": [{"key": "m", "value": 1.0, "timestamp": step, "step": step}],
    }
    resp = requests.post(
        server.url + "/api/2.0/mlflow/runs/log-batch",
        json=body,
        headers={**server.bearer("reader"), "Connection": "close"},
        timeout=60,
    )
    return resp.status_code


def _statuses(server: DescopeServer, run_id: str, n: int = 12) -> set[int]:
    return {_log_batch(server, run_id, time.time_ns() + i) for i in range(n)}


def test_a_revocation_applies_to_the_next_request_on_every_worker(descope: DescopeServer) -> None:
    exp = create_experiment(descope, "editor")
    run = descope.api("POST", "/api/2.0/mlflow/runs/create", "editor", json={"experiment_id": exp})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    grant = {"username": reader_username(descope), "resource_type": "experiment", "resource_id": exp}

    def api_grant(action: str) -> None:
        body = {**grant, "permission": "EDIT"} if action == "grant" else grant
        resp = descope.api("POST", f"/api/3.0/mlflow/users/permissions/{action}", "admin", json=body)
        assert resp.status_code == 200, resp.text

    assert _statuses(descope, run_id) == {403}, "a reader may not log to another's run"
    api_grant("grant")
    assert _statuses(descope, run_id) == {200}, "every worker now knows the run and the grant"
    api_grant("revoke")
    assert _statuses(descope, run_id) == {403}, "revoked through the API: refused on every worker"

    api_grant("grant")
    assert _statuses(descope, run_id) == {200}
    # Revoked behind the server's back: another process writes the auth database directly.
    script = (
        "import sys\n"
        "from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore\n"
        "s = SqlAlchemyStore(); s.init_db(sys.argv[1])\n"
        "s.revoke_user_resource_permission(sys.argv[2], 'experiment', sys.argv[3])\n"
    )
    db = f"sqlite:///{descope.workdir / 'auth.db'}"
    subprocess.run([sys.executable, "-c", script, db, grant["username"], exp], check=True, timeout=120)
    assert _statuses(descope, run_id) == {403}, "revoked in the database: refused on every worker"
