"""The three client plugins with the real MLflow client against a real `mlflow server`.

A recording proxy sits between client and server so the test sees exactly what went over the wire.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jwt
import pytest
import requests
from mlflow import MlflowClient

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.client.auth import DescopeAuth
from mlflow_descope_auth.emulator import Emulator

from .servers import RecordingProxy

CLIENT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time, mlflow
    mlflow.set_experiment(os.environ.get("E2E_EXPERIMENT", "descope-e2e"))
    seconds = float(sys.argv[1])
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_text("hello", "notes/hello.txt")
        step, deadline = 0, time.monotonic() + seconds
        while True:
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            step += 1
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    print(run.info.run_id, step)
    """
)


def run_client(env: dict[str, str], seconds: float, tmp_path: Path) -> tuple[str, int]:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DESCOPE_", "MLFLOW_"))}
    full_env.update(env)
    out = subprocess.run(
        [sys.executable, str(script), str(seconds)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    run_id, steps = out.stdout.split()[-2:]
    return run_id, int(steps)


def descope_env(emu: Emulator, tracking_uri: str, **creds: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_AUTH": "descope",
        "DESCOPE_PROJECT_ID": emu.project_id,
        "DESCOPE_BASE_URI": emu.base_url,
        **creds,
    }


def test_a_script_logs_a_run_with_token_headers_and_tags(
    emulator: Emulator, proxy: RecordingProxy, tracking_server: str, tmp_path: Path
) -> None:
    env = descope_env(emulator, proxy.url, DESCOPE_ACCESS_KEY=emulator.access_key_for("editor"))
    run_id, _ = run_client(env, 0, tmp_path)

    assert len(proxy.requests) >= 5
    verifier = DescopeClient(emulator.project_id, base_url=emulator.base_url)
    paths = {r.path.split("?")[0] for r in proxy.requests}
    assert any("mlflow-artifacts/artifacts" in p for p in paths), paths
    for r in proxy.requests:
        auth = r.headers.get("Authorization", "")
        assert auth.startswith("Bearer "), f"{r.method} {r.path} carried no Bearer token"
        identity = verifier.validate_session(auth.removeprefix("Bearer "))
        assert identity.email == "editor@example.com"
        assert r.headers["X-Descope-User-ID"] == identity.user_id
        assert r.headers["X-Descope-Username"] == identity.username
        assert r.headers["X-Descope-Email"] == "editor@example.com"
        assert r.headers["X-Descope-Roles"] == "editor"
        assert r.headers["X-Descope-Tenants"] == "T2demo"
        assert r.headers["X-Descope-Permissions"] == ",".join(identity.permissions)

    run = MlflowClient(tracking_server).get_run(run_id)
    tags = run.data.tags
    assert tags["descope.email"] == "editor@example.com"
    assert tags["descope.user_id"] == identity.user_id
    assert tags["descope.username"] == identity.username
    assert tags["descope.name"] == "Eddie Editor"
    assert tags["descope.roles"] == "editor"
    assert tags["descope.tenants"] == "T2demo"
    assert tags["descope.permissions"] == ",".join(identity.permissions)
    assert run.data.params == {"alpha": "0.5"}


def test_a_long_loop_outlives_many_short_sessions(
    proxy: RecordingProxy, tracking_server: str, tmp_path: Path
) -> None:
    # Sessions live 4 s and refresh tokens rotate on every use; the script runs for 16 s.
    with Emulator(session_ttl=4, rotate_refresh_tokens=True) as emu:
        tokens = emu.login("reader")
        env = descope_env(
            emu,
            proxy.url,
            DESCOPE_SESSION_TOKEN=tokens["sessionJwt"],
            DESCOPE_REFRESH_TOKEN=tokens["refreshJwt"],
        )
        start = time.time()
        run_id, steps = run_client(env, 16, tmp_path)
        refreshes = emu.stats()["refresh"]
    history = MlflowClient(tracking_server).get_metric_history(run_id, "loss")
    assert len(history) == steps, "every logged metric arrived"
    assert refreshes >= 3, "the session was renewed as it ran out"
    sent = [r for r in proxy.requests if "Authorization" in r.headers]
    distinct = {r.headers["Authorization"] for r in sent}
    assert len(distinct) >= 4
    for token in distinct:
        claims = jwt.decode(token.removeprefix("Bearer "), options={"verify_signature": False})
        assert claims["exp"] > start


def test_a_401_renews_the_session_and_retries_once(
    emulator: Emulator, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The renewed session differs from the rejected one even within the same second (its jti).
    tokens = emulator.login("editor")
    for k, v in descope_env(
        emulator,
        proxy.url,
        DESCOPE_SESSION_TOKEN=tokens["sessionJwt"],
        DESCOPE_REFRESH_TOKEN=tokens["refreshJwt"],
    ).items():
        monkeypatch.setenv(k, v)
    proxy.reject_tokens.add(tokens["sessionJwt"])
    experiments = MlflowClient(proxy.url).search_experiments()
    assert any(e.name == "Default" for e in experiments)
    statuses = [r.headers["Authorization"].removeprefix("Bearer ") for r in proxy.requests]
    assert statuses[0] == tokens["sessionJwt"], "first try with the original session"
    assert statuses[1] != tokens["sessionJwt"], "the retry carries a renewed session"
    assert len(proxy.requests) == 2


def test_the_token_goes_only_to_allowed_hosts(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    monkeypatch.setenv("DESCOPE_PROJECT_ID", emulator.project_id)
    monkeypatch.setenv("DESCOPE_BASE_URI", emulator.base_url)
    monkeypatch.setenv("DESCOPE_ACCESS_KEY", emulator.access_key_for("reader"))
    monkeypatch.setenv("DESCOPE_ALLOWED_HOSTS", "gateway.example, models.example:8443")
    auth = DescopeAuth()

    def sent_token(url: str) -> bool:
        prepared = requests.Request("GET", url).prepare()
        return "Authorization" in auth(prepared).headers

    assert sent_token("http://tracking.example:5000/api/2.0/mlflow/experiments/search")
    assert sent_token("https://gateway.example/x")
    assert sent_token("https://models.example:8443/x")
    assert not sent_token("http://tracking.example:5001/x"), "other port"
    assert not sent_token("https://models.example/x"), "other port"
    assert not sent_token("https://bucket.s3.amazonaws.com/artifact?X-Amz-Signature=abc"), "presigned URL"
    assert not sent_token("http://tracking.example.evil.com:5000/x")


def test_a_server_that_is_not_the_tracking_server_gets_no_token(
    emulator: Emulator,
    proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for k, v in descope_env(
        emulator, "http://127.0.0.1:1", DESCOPE_ACCESS_KEY=emulator.access_key_for("reader")
    ).items():
        monkeypatch.setenv(k, v)
    MlflowClient(proxy.url).search_experiments()
    assert "Authorization" not in proxy.requests[0].headers
    assert "DESCOPE_ALLOWED_HOSTS" in caplog.text
    monkeypatch.setenv("DESCOPE_ALLOWED_HOSTS", proxy.url.removeprefix("http://"))
    MlflowClient(proxy.url).search_experiments()
    assert proxy.requests[-1].headers["Authorization"].startswith("Bearer ")


def test_nothing_is_added_when_descope_is_not_configured(proxy: RecordingProxy) -> None:
    MlflowClient(proxy.url).search_experiments()
    assert proxy.requests
    for r in proxy.requests:
        assert "Authorization" not in r.headers
        assert not any(h.lower().startswith("x-descope-") for h in r.headers)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "mlflow-descope-auth login"),
        ({"DESCOPE_PROJECT_ID": "P2x"}, "DESCOPE_ACCESS_KEY"),
        (
            {"DESCOPE_PROJECT_ID": "P2x", "DESCOPE_DEFAULT_PERMISSION": "GOD", "DESCOPE_ACCESS_KEY": "K"},
            "DESCOPE_DEFAULT_PERMISSION",
        ),
    ],
)
def test_misconfiguration_gives_one_clear_error(
    env: dict[str, str], variable: str, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "descope")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(Exception, match=variable) as info:
        MlflowClient(proxy.url).search_experiments()
    assert "Traceback" not in str(info.value)
    assert proxy.requests == [], "nothing was sent without a credential"
