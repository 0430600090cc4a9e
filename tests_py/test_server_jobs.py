"""MLflow's server-side jobs under the plugin: a real `mlflow server --app-name descope` with job
execution on, a real scorer job (an LLM judge invoked from the UI's endpoint) that calls the server's
own AI Gateway as the user who started it, and the gateway's upstream model.

The model is a small OpenAI-compatible HTTP server on loopback (`LLMUpstream`): no model provider is
reachable offline, and what the test checks is the job's call into the server, not the model. The
gateway sends it what it would send a provider (MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS and
MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES let it call a plain-HTTP loopback upstream).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from mlflow_descope_auth.emulator import Emulator

from .descope_server import DescopeServer, server_env
from .servers import mlflow_server

JOB_DEADLINE = 300.0  # seconds a job may take to finish on a loaded machine


class LLMUpstream:
    """An OpenAI-compatible chat model that answers every judge prompt with a passing verdict and
    records what reached it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
                verdict = json.dumps({"result": "yes", "rationale": "the answer is polite"})
                answer = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": "judge-model",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": verdict},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[LLMUpstream]:
    model = LLMUpstream()
    yield model
    model.stop()


# MLflow's two job engines: Huey (its default) and the executor engine (opt-in).
ENGINES: dict[str, dict[str, str]] = {
    "huey": {},
    "executor": {"MLFLOW_SERVER_JOB_EXECUTION_ENGINE": "executor"},
}


@pytest.fixture(scope="module", params=list(ENGINES))
def jobs_server(
    request: pytest.FixtureRequest, server_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DescopeServer]:
    workdir = tmp_path_factory.mktemp(f"descope-jobs-{request.param}")
    env = server_env(
        server_emulator,
        workdir,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true",
        MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS="true",
        MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES="http,https",
        **ENGINES[request.param],
    )
    with mlflow_server(workdir, extra_args=("--app-name", "descope", "--workers", "2"), env=env) as url:
        yield DescopeServer(url, server_emulator, workdir)


def _ok(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text}"
    body: dict[str, Any] = resp.json()
    return body


@pytest.fixture(scope="module")
def judge_endpoint(jobs_server: DescopeServer, upstream: LLMUpstream) -> str:
    """A gateway endpoint `judge` on the loopback model, created by the admin as in MLflow's UI."""
    api = jobs_server.api
    secret = _ok(
        api(
            "POST",
            "/api/3.0/mlflow/gateway/secrets/create",
            "admin",
            json={
                "secret_name": "judge-key",
                "secret_value": {"api_key": "sk-offline"},
                "provider": "openai",
                "auth_config": {"api_base": f"{upstream.url}/v1"},
            },
        )
    )["secret"]
    model = _ok(
        api(
            "POST",
            "/api/3.0/mlflow/gateway/model-definitions/create",
            "admin",
            json={
                "name": "judge-model",
                "secret_id": secret["secret_id"],
                "provider": "openai",
                "model_name": "judge-model",
            },
        )
    )["model_definition"]
    _ok(
        api(
            "POST",
            "/api/3.0/mlflow/gateway/endpoints/create",
            "admin",
            json={
                "name": "judge",
                "model_configs": [
                    {
                        "model_definition_id": model["model_definition_id"],
                        "linkage_type": "PRIMARY",
                        "weight": 1,
                    }
                ],
            },
        )
    )
    return "judge"


def _experiment_with_trace(server: DescopeServer, login_id: str, name: str) -> tuple[str, str]:
    """An experiment `login_id` creates, with one trace logged by MLflow's own client (with the
    user's session token); (experiment id, trace id)."""
    experiment_id = _ok(
        server.api("POST", "/api/2.0/mlflow/experiments/create", login_id, json={"name": name})
    )["experiment_id"]
    script = (
        "import mlflow\n"
        f"mlflow.set_experiment(experiment_id={experiment_id!r})\n"
        "with mlflow.start_span(name='answer') as span:\n"
        "    span.set_inputs({'question': 'How do I reset my password?'})\n"
        "    span.set_outputs({'answer': 'Please open Settings, then Security.'})\n"
        "mlflow.flush_trace_async_logging()\n"
        "print(mlflow.get_last_active_trace_id())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DESCOPE_"))}
    env.update(
        {
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_TRACKING_TOKEN": server.session(login_id)["sessionJwt"],
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return experiment_id, done.stdout.strip().splitlines()[-1]


def _serialized_judge(endpoint: str) -> str:
    from mlflow.genai.judges import make_judge

    judge = make_judge(
        name="polite",
        instructions="Is this answer polite? {{ outputs }} Answer yes or no.",
        model=f"gateway:/{endpoint}",
    )
    return json.dumps(judge.model_dump())


def _invoke_judge(
    server: DescopeServer, login_id: str, experiment_id: str, trace_id: str, endpoint: str
) -> str:
    """Starts the scorer job as MLflow's UI does; its job id."""
    jobs = _ok(
        server.api(
            "POST",
            "/ajax-api/3.0/mlflow/scorer/invoke",
            login_id,
            json={
                "experiment_id": experiment_id,
                "serialized_scorer": _serialized_judge(endpoint),
                "trace_ids": [trace_id],
                "log_assessments": True,
            },
        )
    )["jobs"]
    assert len(jobs) == 1, jobs
    return str(jobs[0]["job_id"])


def _finished_job(server: DescopeServer, login_id: str, job_id: str) -> dict[str, Any]:
    """The job once it has finished, however it finished."""
    deadline = time.monotonic() + JOB_DEADLINE
    while True:
        job = _ok(server.api("GET", f"/ajax-api/3.0/jobs/{job_id}", login_id))
        if job["status"] not in ("PENDING", "RUNNING"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {JOB_DEADLINE}s"
        time.sleep(1)


def _gateway_calls(upstream: LLMUpstream) -> int:
    return sum(1 for call in upstream.calls if call["path"].endswith("/chat/completions"))


def test_a_scorer_job_calls_the_gateway_as_the_user_who_started_it(
    jobs_server: DescopeServer, judge_endpoint: str, upstream: LLMUpstream
) -> None:
    experiment_id, trace_id = _experiment_with_trace(jobs_server, "editor", "jobs-editor")
    before = _gateway_calls(upstream)
    job = _finished_job(
        jobs_server, "editor", _invoke_judge(jobs_server, "editor", experiment_id, trace_id, judge_endpoint)
    )
    assert job["status"] == "SUCCEEDED", job
    result = job["result"][trace_id]
    assert result["failures"] == [], result
    assert [a["feedback"]["value"] for a in result["assessments"]] == ["yes"], result
    # The judge's call went through this server's gateway to the model, without the job's
    # credential: the gateway sends the provider its own key.
    assert _gateway_calls(upstream) == before + 1
    sent = {k.lower(): v for k, v in upstream.calls[-1]["headers"].items()}
    assert sent["authorization"] == "Bearer sk-offline"
    assert "x-mlflow-authorization" not in sent
    # The job records the user, never the token.
    assert job["params"]["username"] == _username(jobs_server, "editor")
    assert "MLFLOW_TRACKING_PASSWORD" not in json.dumps(job)
    # The assessment is on the trace, for the user to see.
    trace = _ok(jobs_server.api("GET", f"/api/3.0/mlflow/traces/{trace_id}", "editor"))
    names = [a["assessment_name"] for a in trace["trace"]["trace_info"].get("assessments", [])]
    assert names == ["polite"], trace


def test_a_job_started_by_a_user_without_use_on_the_endpoint_is_refused_by_the_gateway(
    jobs_server: DescopeServer, judge_endpoint: str, upstream: LLMUpstream
) -> None:
    """The job acts as the user who started it, not as someone more powerful: the reader (READ on
    gateway endpoints from the Descope role) may score traces of an experiment an admin shared
    with EDIT, but the gateway refuses the judge's call on the reader's behalf."""
    experiment_id, trace_id = _experiment_with_trace(jobs_server, "admin", "jobs-shared")
    _ok(
        jobs_server.api(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            "admin",
            json={
                "username": _username(jobs_server, "reader"),
                "resource_type": "experiment",
                "resource_id": experiment_id,
                "permission": "EDIT",
            },
        )
    )
    before = _gateway_calls(upstream)
    job = _finished_job(
        jobs_server, "reader", _invoke_judge(jobs_server, "reader", experiment_id, trace_id, judge_endpoint)
    )
    assert job["status"] == "SUCCEEDED", job  # the job ran; the judge's call was refused
    failures = job["result"][trace_id]["failures"]
    assert [f["error_code"] for f in failures] == ["SCORER_ERROR"], failures
    assert "Permission denied" in failures[0]["error_message"], failures
    # What MLflow logs for a judge that could not run: the error, and no verdict.
    assert [a["feedback"].get("value") for a in job["result"][trace_id]["assessments"]] == [None]
    assert _gateway_calls(upstream) == before


def _username(server: DescopeServer, login_id: str) -> str:
    return str(_ok(server.api("GET", "/auth/user", login_id))["username"])


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(b"editor:not-the-server-token").decode(),
        "Basic " + base64.b64encode(b"editor:").decode(),
        "Bearer mlflow-gateway-auth",
    ],
)
def test_an_outside_caller_cannot_use_the_gateway_as_a_job(
    jobs_server: DescopeServer, judge_endpoint: str, upstream: LLMUpstream, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    before = _gateway_calls(upstream)
    resp = requests.post(
        jobs_server.url + "/gateway/mlflow/v1/chat/completions",
        headers=headers,
        json={"model": judge_endpoint, "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert resp.status_code == 401, resp.text
    assert resp.json()["error_code"] == "UNAUTHENTICATED"
    assert _gateway_calls(upstream) == before


@pytest.mark.parametrize("jobs_server", ["executor"], indirect=True)
def test_an_evaluation_started_from_the_ui_runs_as_its_user(
    jobs_server: DescopeServer, judge_endpoint: str, upstream: LLMUpstream
) -> None:
    """`mlflow.genai.evaluate` as a job (the UI's "run evaluation"): on the executor engine it
    reads and writes the run through the store and calls only the gateway, as the user. (On Huey it
    calls the tracking API over HTTP, which MLflow's internal token does not cover, under its own
    basic-auth either: README, "Server-side jobs".)"""
    experiment_id, trace_id = _experiment_with_trace(jobs_server, "editor", "jobs-evaluate")
    before = _gateway_calls(upstream)
    started = _ok(
        jobs_server.api(
            "POST",
            "/ajax-api/3.0/mlflow/genai/evaluate/invoke",
            "editor",
            json={
                "experiment_id": experiment_id,
                "trace_ids": [trace_id],
                "serialized_scorers": [_serialized_judge(judge_endpoint)],
            },
        )
    )
    job = _finished_job(jobs_server, "editor", started["job_id"])
    assert job["status"] == "SUCCEEDED", job
    assert job["creator"] == _username(jobs_server, "editor")
    assert _gateway_calls(upstream) == before + 1
    run = _ok(jobs_server.api("GET", f"/api/2.0/mlflow/runs/get?run_id={started['run_id']}", "editor"))
    assert run["run"]["info"]["status"] == "FINISHED", run
    trace = _ok(jobs_server.api("GET", f"/api/3.0/mlflow/traces/{trace_id}", "editor"))
    verdicts = [
        a["feedback"]["value"]
        for a in trace["trace"]["trace_info"].get("assessments", [])
        if a["assessment_name"] == "polite"
    ]
    assert verdicts == ["yes"], trace
