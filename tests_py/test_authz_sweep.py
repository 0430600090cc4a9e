"""The authorization sweep: no write route lets a READ or a NO_PERMISSIONS user change anything.

The routes are enumerated at test time from the installed MLflow, as the route sweep does
(``mlflow_routes``), so a write route a future MLflow adds is swept too. One real
``mlflow server --app-name descope`` runs with ``DESCOPE_DEFAULT_PERMISSION=NO_PERMISSIONS`` and the
demo role mapping (editor EDIT, reader READ); an emulator user with no role at all, ``nobody``, gets
NO_PERMISSIONS. The admin creates one of each kind of resource through MLflow's REST API. Then every
write route (POST, PUT, PATCH or DELETE, except the reviewed read-only POSTs of
``READ_ONLY_POSTS``) is requested over real HTTP as the reader and as ``nobody``, with its path
parameters and a JSON body naming the admin's resources, so that MLflow's validators have a real
resource to judge:

- no request succeeds (2xx), and none fails with a server error (5xx);
- afterwards every admin resource is still there, unchanged (the admin reads each one back);
- an answer other than 401/403 means the route was not exercised as an authorization question: the
  routes so answered must be exactly ``NOT_EXERCISED`` (each with its reason), so a route silently
  becoming unexercisable fails the test; everything is written to ``test-artifacts/authz-sweep.json``.

Creating a top-level resource needs a baseline of EDIT: the reader and ``nobody`` are refused, the
editor succeeds; and nobody, not even the editor, may create or rename a registered model or prompt
to the wildcard name ``*``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.emulator.users import User, demo_users

from .descope_server import DescopeServer, descope_server
from .mlflow_routes import Enumeration, Route, enumerate_routes

# One server, ~800 requests, on a slow shared machine: more than the default 300 s for the first test.
pytestmark = pytest.mark.timeout(600)

ADMIN, EDITOR, READER, NOBODY = "admin", "editor", "reader", "nobody"
SWEPT_USERS = (READER, NOBODY)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIED = frozenset({401, 403})
WORKERS = 8
# The serialized form of a minimal LLM judge (what `make_judge(...).model_dump()` gives): a scorer
# the server stores without running anything.
JUDGE_NAME = "admin-judge"
JUDGE = {
    "name": JUDGE_NAME,
    "aggregations": ["mean"],
    "description": None,
    "is_session_level_scorer": False,
    "serialization_version": 1,
    "instructions_judge_pydantic_data": {
        "instructions": "Is {{ outputs }} polite?",
        "model": "openai:/gpt-4o-mini",
        "feedback_value_type": {"title": "Result", "type": "boolean"},
    },
}

# POST routes that only read (search, list or get by POST): requested like the others, but not
# required to be refused; the resources' before/after comparison shows they changed nothing.
READ_ONLY_POSTS: dict[str, str] = {
    "POST /graphql": "MLflow's GraphQL: queries, and two 'mutations' that are searches (runs, datasets)",
    "POST API/2.0/mlflow/artifacts/presigned-download-url": "mints a download URL for a run's artifact",
    "POST API/2.0/mlflow/experiments/search": "search experiments",
    "POST API/2.0/mlflow/experiments/search-datasets": "lists the datasets logged to experiments",
    "POST API/2.0mlflow/experiments/search-datasets": "the same handler, under MLflow's typo'd path",
    "POST API/2.0/mlflow/logged-models/search": "search logged models",
    "POST API/2.0/mlflow/registered-models/get-latest-versions": "gets a model's latest versions",
    "POST API/2.0/mlflow/runs/search": "search runs",
    "POST API/3.0/jobs/search": "lists jobs",
    "POST API/3.0/mlflow/datasets/search": "search evaluation datasets",
    "POST API/3.0/mlflow/issues/search": "search issues",
    "POST API/3.0/mlflow/prompt-optimization/jobs/search": "search prompt optimization jobs",
    "POST API/3.0/mlflow/traces/batchGetInfos": "gets trace infos by id",
    "POST API/3.0/mlflow/traces/calculate-filter-correlation": "computes statistics over traces",
    "POST API/3.0/mlflow/traces/metrics": "queries aggregated trace metrics",
    "POST API/3.0/mlflow/traces/search": "search traces",
    "POST API/3.0/mlflow/ui-telemetry": "the UI's own usage events: stores no MLflow resource",
}

# Write routes the sweep cannot turn into an authorization question, and why. The test fails if a
# route is missing here or listed but exercised after all.
NOT_EXERCISED: dict[str, str] = {
    "POST /gateway/openai/v1/responses/compact": (
        "MLflow's gateway validator does not read this route's body for the endpoint name (`model`): it "
        "answers 400 'No endpoint name found' to every non-admin, before any handler runs"
    ),
}


# Resources no request of the sweep can name for real, and what the sweep names instead.
NOT_CREATED: dict[str, str] = {
    "Assistant session": "the Assistant runs Claude Code (absent offline): its routes name a made-up session",
    "workspace": "the server runs without --enable-workspaces: the workspace routes name 'default'",
}


def normalise(method: str, template: str) -> str:
    """`POST /ajax-api/2.0/mlflow/runs/create` -> `POST API/2.0/mlflow/runs/create`."""
    return f"{method} {re.sub(r'^/(?:ajax-)?api/', 'API/', template)}"


# -- the server and its users -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def enumeration() -> Enumeration:
    return enumerate_routes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    """The demo users and `nobody`, signed in with no role (so the default, NO_PERMISSIONS)."""
    nobody = User(login_id=NOBODY, email="nobody@example.com", name="No Body")
    with (
        Emulator(users=[*demo_users(), nobody]) as emu,
        descope_server(
            emu,
            tmp_path_factory.mktemp("authz-sweep"),
            DESCOPE_DEFAULT_PERMISSION="NO_PERMISSIONS",
            DESCOPE_ROLE_PERMISSIONS="editor=EDIT,reader=READ",
            # Lets the admin's webhook point at loopback (nothing listens there; it never fires).
            MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        ) as srv,
    ):
        yield srv


class Client:
    """Signed-in requests as each user: one session per user (renewed well before it expires), one
    pooled HTTP connection per thread; no redirects; a request is resent only when its connection
    turns out to be closed."""

    def __init__(self, server: DescopeServer) -> None:
        self.url = server.url
        self._server = server
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def token(self, user: str) -> str:
        with self._lock:
            token, signed_in = self._tokens.get(user, ("", 0.0))
            if time.monotonic() - signed_in > 240:  # the emulator's sessions last 600 s
                token = self._server.session(user)["sessionJwt"]
                self._tokens[user] = (token, time.monotonic())
            return token

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0))
            self._local.session = session
        return session

    def request(
        self,
        user: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        all_headers = {"Authorization": f"Bearer {self.token(user)}", **(headers or {})}

        def attempt() -> requests.Response:
            return self._session().request(
                method,
                self.url + path,
                json=body if data is None else None,
                data=data,
                params=params,
                headers=all_headers,
                allow_redirects=False,
                timeout=120,
            )

        try:
            return attempt()
        except requests.ConnectionError:  # a pooled connection the server closed (idle keep-alive)
            return attempt()

    def ok(self, user: str, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """The JSON answer of a request that must succeed."""
        resp = self.request(user, method, path, body, **kw)
        assert resp.status_code == 200, f"{user} {method} {path}: {resp.status_code} {resp.text[:400]}"
        return resp.json() if resp.content else {}


# -- the admin's resources --------------------------------------------------------------------------


@dataclass
class Resources:
    """One of each kind of resource, created by the admin."""

    experiment_id: str = ""
    run_id: str = ""
    artifact: str = "swept/admin.txt"
    model: str = ""
    prompt: str = ""
    logged_model_id: str = ""
    trace_id: str = ""
    assessment_id: str = ""
    dataset_id: str = ""
    dataset_record_id: str = ""
    scorer: str = JUDGE_NAME
    scorer_id: str = ""
    webhook_id: str = ""
    secret_id: str = ""
    model_definition_id: str = ""
    endpoint_id: str = ""
    endpoint_name: str = ""
    guardrail_id: str = ""
    budget_policy_id: str = ""
    mcp_server: str = ""
    mcp_version: str = "1.0.0"
    mcp_endpoint_id: str = ""
    issue_id: str = ""
    label_schema_id: str = ""
    review_queue_id: str = ""
    optimization_job_id: str = ""
    role_id: str = ""
    role_permission_id: str = ""
    skill: str = ""  # only where the installed MLflow has a skill registry
    skill_organization: str = ""
    usernames: dict[str, str] = field(default_factory=dict)  # login id -> MLflow username

    def skill_paths(self) -> list[str]:
        skills = "/api/3.0/mlflow/skills"
        return (
            [f"{skills}/{self.skill}", f"{skills}/@{self.skill_organization}/{self.skill}"]
            if self.skill
            else []
        )

    @property
    def artifact_path(self) -> str:
        """The run's artifact as the mlflow-artifacts routes address it."""
        return f"{self.experiment_id}/{self.run_id}/artifacts/{self.artifact}"


def has_route(enumeration: Enumeration, method: str, template: str) -> bool:
    return any(m == method and template in r.templates for (_, m), r in enumeration.routes.items())


def create_resources(client: Client, enumeration: Enumeration) -> Resources:
    """Everything through MLflow's REST API, as the admin; every step must succeed."""

    def admin(method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return client.ok(ADMIN, method, path, body, **kw)

    res, tag = Resources(), uuid.uuid4().hex[:8]
    for user in (ADMIN, EDITOR, READER, NOBODY):
        res.usernames[user] = client.ok(user, "GET", "/api/2.0/mlflow/users/current")["user"]["username"]

    # An experiment with a tag; a run in it with a tag, a metric, a param and an artifact.
    owner = [{"key": "owner", "value": "admin"}]
    exp = admin("POST", "/api/2.0/mlflow/experiments/create", {"name": f"admin-{tag}", "tags": owner})
    res.experiment_id = exp = exp["experiment_id"]
    run = admin(
        "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp, "run_name": "admin", "tags": owner}
    )
    res.run_id = run_id = run["run"]["info"]["run_id"]
    metric = {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0, "step": 0}
    admin("POST", "/api/2.0/mlflow/runs/log-metric", metric)
    admin("POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": run_id, "key": "p", "value": "1"})
    octets = {"Content-Type": "application/octet-stream"}
    admin("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{res.artifact_path}", data=b"admin", headers=octets)

    # A registered model and a prompt, each with a version, a version tag and an alias.
    res.model, res.prompt = f"admin-model-{tag}", f"admin-prompt-{tag}"
    is_prompt = {"key": "mlflow.prompt.is_prompt", "value": "true"}
    text = {"key": "mlflow.prompt.text", "value": "Hello {{name}}"}
    for name, tags, version in [
        (res.model, owner, {"source": f"runs:/{run_id}/model", "run_id": run_id}),
        (res.prompt, [is_prompt], {"source": "dummy-source", "tags": [is_prompt, text]}),
    ]:
        admin("POST", "/api/2.0/mlflow/registered-models/create", {"name": name, "tags": tags})
        admin("POST", "/api/2.0/mlflow/model-versions/create", {"name": name, **version})
        tag_body = {"name": name, "version": "1", "key": "t", "value": "admin"}
        admin("POST", "/api/2.0/mlflow/model-versions/set-tag", tag_body)
        alias = {"name": name, "alias": "champion", "version": "1"}
        admin("POST", "/api/2.0/mlflow/registered-models/alias", alias)

    logged = {"experiment_id": exp, "name": "admin", "source_run_id": run_id, "tags": owner}
    res.logged_model_id = admin("POST", "/api/2.0/mlflow/logged-models", logged)["model"]["info"]["model_id"]

    # A trace (v3) with a tag and an assessment.
    res.trace_id = "tr-" + uuid.uuid4().hex
    admin("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": trace_info(res.trace_id, exp)}})
    feedback = {
        "assessment_name": "admin",
        "trace_id": res.trace_id,
        "source": {"source_type": "HUMAN", "source_id": "admin"},
        "feedback": {"value": True},
    }
    created = admin("POST", f"/api/3.0/mlflow/traces/{res.trace_id}/assessments", {"assessment": feedback})
    res.assessment_id = created["assessment"]["assessment_id"]

    # An evaluation dataset with a record and a tag; a registered scorer (an LLM judge).
    dataset = {"name": f"admin-{tag}", "experiment_ids": [exp]}
    res.dataset_id = admin("POST", "/api/3.0/mlflow/datasets/create", dataset)["dataset"]["dataset_id"]
    datasets = f"/api/3.0/mlflow/datasets/{res.dataset_id}"
    records = [{"inputs": {"q": "admin"}, "expectations": {"a": "admin"}}]
    admin("POST", f"{datasets}/records", {"records": json.dumps(records)})
    admin("PATCH", f"{datasets}/tags", {"tags": json.dumps({"t": "admin"})})
    res.dataset_record_id = json.loads(admin("GET", f"{datasets}/records")["records"])[0]["dataset_record_id"]
    scorer = {"experiment_id": exp, "name": res.scorer, "serialized_scorer": json.dumps(JUDGE)}
    res.scorer_id = admin("POST", "/api/3.0/mlflow/scorers/register", scorer)["scorer_id"]

    # A webhook (admins only in MLflow), on an event the test never causes.
    webhook = {
        "name": f"admin-{tag}",
        "url": "https://127.0.0.1:9/hook",
        "events": [{"entity": "MODEL_VERSION_ALIAS", "action": "DELETED"}],
    }
    res.webhook_id = admin("POST", "/api/2.0/mlflow/webhooks", webhook)["webhook"]["webhook_id"]

    # The AI gateway: a secret, a model definition using it, an endpoint serving that with a tag, a
    # binding and a guardrail; a budget policy.
    gateway = "/api/3.0/mlflow/gateway"
    secret = {"secret_name": f"admin-{tag}", "secret_value": {"api_key": "sk-admin"}, "provider": "openai"}
    res.secret_id = admin("POST", f"{gateway}/secrets/create", secret)["secret"]["secret_id"]
    definition = {"name": f"admin-{tag}", "secret_id": res.secret_id, "provider": "openai", "model_name": "m"}
    created = admin("POST", f"{gateway}/model-definitions/create", definition)
    res.model_definition_id = created["model_definition"]["model_definition_id"]
    res.endpoint_name = f"admin-{tag}"
    config = {"model_definition_id": res.model_definition_id, "linkage_type": "PRIMARY", "weight": 1.0}
    endpoint = {"name": res.endpoint_name, "model_configs": [config]}
    res.endpoint_id = admin("POST", f"{gateway}/endpoints/create", endpoint)["endpoint"]["endpoint_id"]
    endpoint_tag = {"endpoint_id": res.endpoint_id, "key": "t", "value": "admin"}
    admin("POST", f"{gateway}/endpoints/set-tag", endpoint_tag)
    binding = {"endpoint_id": res.endpoint_id, "resource_type": "scorer", "resource_id": res.scorer_id}
    admin("POST", f"{gateway}/endpoints/bindings/create", binding)
    guardrail = {
        "name": f"admin-{tag}",
        "scorer_id": res.scorer_id,
        "scorer_version": 1,
        "stage": "BEFORE",
        "action": "VALIDATION",
    }
    res.guardrail_id = admin("POST", f"{gateway}/guardrails/create", guardrail)["guardrail"]["guardrail_id"]
    attach = {"endpoint_id": res.endpoint_id, "guardrail_id": res.guardrail_id, "execution_order": 1}
    admin("POST", f"{gateway}/guardrails/add-to-endpoint", attach)
    budget = {
        "budget_unit": "USD",
        "budget_amount": 10,
        "duration": {"unit": "DAYS", "value": 1},
        "target_scope": "GLOBAL",
        "budget_action": "ALERT",
    }
    created = admin("POST", f"{gateway}/budgets/create", budget)
    res.budget_policy_id = created["budget_policy"]["budget_policy_id"]

    # An MCP server with a version, an alias, tags and an access endpoint.
    res.mcp_server = f"com.example/admin-{tag}"
    mcp = f"/api/3.0/mlflow/mcp-servers/{res.mcp_server}"
    admin("POST", "/api/3.0/mlflow/mcp-servers", {"name": res.mcp_server, "description": "admin"})
    admin("POST", f"{mcp}/versions", {"server_json": {"name": res.mcp_server, "version": res.mcp_version}})
    admin("POST", f"{mcp}/aliases", {"alias": "prod", "version": res.mcp_version})
    admin("POST", f"{mcp}/tags", {"key": "t", "value": "admin"})
    admin("POST", f"{mcp}/versions/{res.mcp_version}/tags", {"key": "t", "value": "admin"})
    access = {"server_version": res.mcp_version, "url": "https://mcp.example.com/mcp"}
    res.mcp_endpoint_id = admin("POST", f"{mcp}/endpoints", access)["id"]

    # In the experiment: an issue, a label schema, a review queue holding the trace, a prompt
    # optimization job (it fails at once, offline: the state is left out of the comparison).
    issue = {
        "experiment_id": exp,
        "name": "admin",
        "description": "admin",
        "status": "pending",
        "severity": "low",
    }
    res.issue_id = admin("POST", "/api/3.0/mlflow/issues", issue)["issue"]["issue_id"]
    schema = {
        "experiment_id": exp,
        "name": "admin",
        "type": "FEEDBACK",
        "input": {"text": {"max_length": 10}},
        "instruction": "admin",
    }
    created = admin("POST", "/api/3.0/mlflow/label-schemas/create", schema)
    res.label_schema_id = created["label_schema"]["schema_id"]
    queue = {"experiment_id": exp, "name": "admin", "queue_type": "CUSTOM"}
    created = admin("POST", "/api/3.0/mlflow/review-queues/create", queue)
    res.review_queue_id = created["review_queue"]["queue_id"]
    items = {"queue_id": res.review_queue_id, "item_type": "TRACE", "item_ids": [res.trace_id]}
    admin("POST", "/api/3.0/mlflow/review-queues/items/add", items)
    job = {
        "experiment_id": exp,
        "source_prompt_uri": f"prompts:/{res.prompt}/1",
        "config": {
            "optimizer_type": "OPTIMIZER_TYPE_METAPROMPT",
            "dataset_id": res.dataset_id,
            "scorers": [res.scorer],
        },
    }
    res.optimization_job_id = admin("POST", "/api/3.0/mlflow/prompt-optimization/jobs", job)["job"]["job_id"]

    # An RBAC role with a permission.
    role = {"name": f"admin-{tag}", "workspace": "default"}
    res.role_id = str(admin("POST", "/api/3.0/mlflow/roles/create", role)["role"]["id"])
    grant = {
        "role_id": res.role_id,
        "resource_type": "experiment",
        "resource_pattern": exp,
        "permission": "READ",
    }
    created = admin("POST", "/api/3.0/mlflow/roles/permissions/add", grant)
    res.role_permission_id = str(created["role_permission"]["id"])

    # A skill without and one with an organization, each with a version (from a remote source: it
    # is recorded, not fetched), an alias and tags (MLflow >= 3.18).
    if has_route(enumeration, "POST", "/api/3.0/mlflow/skills"):
        res.skill, res.skill_organization = f"admin-{tag}", "admin-org"
        version = {"source": "https://github.com/example/skills.git", "source_type": "git", "ref": "main"}
        for path in res.skill_paths():
            organization = res.skill_organization if "/@" in path else ""
            admin("POST", "/api/3.0/mlflow/skills", {"name": res.skill, "organization": organization})
            admin("POST", f"{path}/versions", version)
            admin("POST", f"{path}/aliases", {"alias": "prod", "version": 1})
            admin("POST", f"{path}/tags", {"key": "t", "value": "admin"})
            admin("POST", f"{path}/versions/1/tags", {"key": "t", "value": "admin"})
    return res


def trace_info(trace_id: str, experiment_id: str) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "trace_location": {
            "type": "MLFLOW_EXPERIMENT",
            "mlflow_experiment": {"experiment_id": experiment_id},
        },
        "request_time": "2024-01-01T00:00:00Z",
        "execution_duration": "1s",
        "state": "OK",
        "tags": {"t": "admin"},
    }


# -- reading them back ------------------------------------------------------------------------------


def snapshot(client: Client, res: Resources) -> dict[str, Any]:
    """Everything the admin can read about its resources (and about users, roles and grants)."""
    exp, run, trace, mcp = res.experiment_id, res.run_id, res.trace_id, res.mcp_server
    gets: dict[str, tuple[str, dict[str, str]]] = {
        "experiment": ("/api/2.0/mlflow/experiments/get", {"experiment_id": exp}),
        "experiments": ("/api/2.0/mlflow/experiments/search", {"max_results": "1000", "view_type": "ALL"}),
        "run": ("/api/2.0/mlflow/runs/get", {"run_id": run}),
        "run artifacts": ("/api/2.0/mlflow/artifacts/list", {"run_id": run, "path": "swept"}),
        "registered models": ("/api/2.0/mlflow/registered-models/search", {"max_results": "1000"}),
        "logged model": (f"/api/2.0/mlflow/logged-models/{res.logged_model_id}", {}),
        "trace": (f"/api/3.0/mlflow/traces/{trace}", {}),
        "assessment": (f"/api/3.0/mlflow/traces/{trace}/assessments/{res.assessment_id}", {}),
        "dataset": (f"/api/3.0/mlflow/datasets/{res.dataset_id}", {}),
        "dataset records": (f"/api/3.0/mlflow/datasets/{res.dataset_id}/records", {}),
        "dataset experiments": (f"/api/3.0/mlflow/datasets/{res.dataset_id}/experiment-ids", {}),
        "scorers": ("/api/3.0/mlflow/scorers/list", {"experiment_id": exp}),
        "scorer versions": ("/api/3.0/mlflow/scorers/versions", {"experiment_id": exp, "name": res.scorer}),
        "webhooks": ("/api/2.0/mlflow/webhooks", {}),
        "gateway secrets": ("/api/3.0/mlflow/gateway/secrets/list", {}),
        "gateway model definitions": ("/api/3.0/mlflow/gateway/model-definitions/list", {}),
        "gateway endpoints": ("/api/3.0/mlflow/gateway/endpoints/list", {}),
        "gateway bindings": (
            "/api/3.0/mlflow/gateway/endpoints/bindings/list",
            {"endpoint_id": res.endpoint_id},
        ),
        "gateway guardrails": ("/api/3.0/mlflow/gateway/guardrails/list", {}),
        "gateway budgets": ("/api/3.0/mlflow/gateway/budgets/list", {}),
        "mcp servers": ("/api/3.0/mlflow/mcp-servers", {}),
        "mcp versions": (f"/api/3.0/mlflow/mcp-servers/{mcp}/versions", {}),
        "mcp endpoints": (f"/api/3.0/mlflow/mcp-servers/{mcp}/endpoints", {}),
        "issue": (f"/api/3.0/mlflow/issues/{res.issue_id}", {}),
        "label schemas": ("/api/3.0/mlflow/label-schemas/list", {"experiment_id": exp}),
        "review queues": ("/api/3.0/mlflow/review-queues/list", {"experiment_id": exp}),
        "review queue items": ("/api/3.0/mlflow/review-queues/items/list", {"queue_id": res.review_queue_id}),
        "optimization job": (f"/api/3.0/mlflow/prompt-optimization/jobs/{res.optimization_job_id}", {}),
        "users": ("/api/2.0/mlflow/users/list", {}),
        "roles": ("/api/3.0/mlflow/roles/list", {"workspace": "default"}),
        "role permissions": ("/api/3.0/mlflow/roles/permissions/list", {"role_id": res.role_id}),
    }
    for name in (res.model, res.prompt):
        gets[f"registered model {name}"] = ("/api/2.0/mlflow/registered-models/get", {"name": name})
        version = {"name": name, "version": "1"}
        gets[f"model version {name}/1"] = ("/api/2.0/mlflow/model-versions/get", version)
    for user, username in res.usernames.items():
        gets[f"permissions of {user}"] = ("/api/3.0/mlflow/users/permissions/list", {"username": username})
        gets[f"roles of {user}"] = ("/api/3.0/mlflow/users/roles/list", {"username": username})
    for path in res.skill_paths():
        gets[path] = (path, {})
        gets[f"{path}/versions"] = (f"{path}/versions", {})
    state = {label: client.ok(ADMIN, "GET", path, params=params) for label, (path, params) in gets.items()}
    # The optimization job runs (and fails: it has no credentials) in the background, whenever.
    state["optimization job"]["job"].pop("state", None)
    return state


# -- the requests -----------------------------------------------------------------------------------


@dataclass
class Probe:
    key: str  # normalise(method, template)
    template: str
    variant: str  # "model" / "prompt" for the registry routes, which serve both
    user: str
    method: str
    path: str
    body: Any = None
    params: dict[str, str] | None = None
    data: bytes | None = None
    headers: dict[str, str] | None = None
    late: bool = False  # destructive: sent after everything else


@dataclass
class Answer:
    probe: Probe
    status: int
    text: str


_PARAM = re.compile(r"<(?:\w+(?:\([^>]*\))?:)?(\w+)>|\{(\w+)(?::\w+)?\}")


def path_values(res: Resources, template: str) -> dict[str, str]:
    """What each path parameter of `template` names among the admin's resources."""
    values = {
        "experiment_id": res.experiment_id,
        "run_id": res.run_id,
        "artifact_path": res.artifact_path,
        "model_id": res.logged_model_id,
        "tag_key": "t",
        "key": "t",
        "request_id": res.trace_id,
        "trace_id": res.trace_id,
        "assessment_id": res.assessment_id,
        "webhook_id": res.webhook_id,
        "dataset_id": res.dataset_id,
        "issue_id": res.issue_id,
        "job_id": res.optimization_job_id,  # also a job of the jobs API
        "workspace_name": "default",
        "endpoint_name": res.endpoint_name,
        "path": "v1/chat/completions",
        # No Assistant session can be created offline (it runs Claude Code): a made-up id.
        "session_id": "swept-session",
    }
    if "/mcp-servers/" in template:
        values |= {
            "name": res.mcp_server,
            "version": res.mcp_version,
            "alias": "prod",
            "endpoint_id": res.mcp_endpoint_id,
        }
    if "/skills/" in template:
        values |= {"name": res.skill, "organization": res.skill_organization, "version": "1", "alias": "prod"}
    return values


def fill(template: str, values: dict[str, str]) -> str:
    """The concrete path; KeyError names a parameter with no value."""
    return _PARAM.sub(lambda m: values[m.group(1) or m.group(2)], template)


DROP = object()  # in a route's body: leave this common field out


def common_body(res: Resources, registry_name: str) -> dict[str, Any]:
    """Every common field name, naming the admin's resources."""
    return {
        "experiment_id": res.experiment_id,
        "experiment_ids": [res.experiment_id],
        "run_id": res.run_id,
        "run_uuid": res.run_id,
        "name": registry_name,
        "version": "1",
        "key": "t",
        "value": "swept",
        "alias": "champion",
        "description": "swept",
        "trace_id": res.trace_id,
        "request_id": res.trace_id,
        "trace_ids": [res.trace_id],
        "request_ids": [res.trace_id],
        "model_id": res.logged_model_id,
        "source_run_id": res.run_id,
        "dataset_id": res.dataset_id,
        "secret_id": res.secret_id,
        "model_definition_id": res.model_definition_id,
        "endpoint_id": res.endpoint_id,
        "scorer_id": res.scorer_id,
        "scorer_name": res.scorer,
        "guardrail_id": res.guardrail_id,
        "budget_policy_id": res.budget_policy_id,
        "webhook_id": res.webhook_id,
        "issue_id": res.issue_id,
        "schema_id": res.label_schema_id,
        "queue_id": res.review_queue_id,
        "job_id": res.optimization_job_id,
        "role_id": res.role_id,
        "role_permission_id": res.role_permission_id,
        "username": res.usernames[READER],
        "workspace": "default",
    }


def route_bodies(res: Resources, variant: str) -> dict[str, dict[str, Any]]:
    """Per-route fields (merged over `common_body`) so that the request reaches the authorization
    decision: MLflow's validators read these before they judge."""
    exp, run, trace, new = res.experiment_id, res.run_id, res.trace_id, f"swept-{uuid.uuid4().hex[:8]}"
    registry_name = res.prompt if variant == "prompt" else res.model
    prompt_tags = [{"key": "mlflow.prompt.is_prompt", "value": "true"}] if variant == "prompt" else []
    grant = {"resource_type": "experiment", "resource_id": exp, "permission": "MANAGE"}
    chat = {"model": res.endpoint_name, "messages": [{"role": "user", "content": "hi"}]}
    return {
        # the read-only POSTs
        "POST /graphql": {
            "query": f'{{ mlflowGetExperiment(input: {{experimentId: "{exp}"}}) {{ experiment {{ name }} }}}}'
        },
        "POST API/2.0/mlflow/experiments/search": {"max_results": 100},
        "POST API/2.0/mlflow/artifacts/presigned-download-url": {"path": res.artifact},
        "POST API/2.0/mlflow/logged-models/search": {"max_results": 100},
        "POST API/2.0/mlflow/runs/search": {"max_results": 100},
        "POST API/3.0/jobs/search": {},
        "POST API/3.0/mlflow/traces/search": {
            "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}]
        },
        "POST API/3.0/mlflow/traces/metrics": {
            "view_type": "TRACES",
            "metric_name": "trace_count",
            "aggregations": [{"aggregation_type": "COUNT"}],
        },
        "POST API/3.0/mlflow/traces/calculate-filter-correlation": {
            "filter_string1": "status = 'OK'",
            "filter_string2": "status = 'OK'",
        },
        "POST API/3.0/mlflow/ui-telemetry": {"records": []},
        # experiments, runs and their artifacts
        "POST API/2.0/mlflow/experiments/create": {"name": new},
        "POST API/2.0/mlflow/experiments/update": {"new_name": new},
        "POST API/2.0/mlflow/runs/create": {"run_name": new},
        "POST API/2.0/mlflow/runs/update": {"status": "FINISHED", "run_name": new},
        "POST API/2.0/mlflow/runs/log-metric": {"value": 2.0, "timestamp": 0, "step": 1},
        "POST API/2.0/mlflow/runs/log-batch": {
            "metrics": [{"key": "m", "value": 2.0, "timestamp": 0, "step": 1}],
            "params": [{"key": "swept", "value": "1"}],
            "tags": [{"key": "t", "value": "swept"}],
        },
        "POST API/2.0/mlflow/runs/log-inputs": {
            "datasets": [{"dataset": {"name": new, "digest": "d", "source_type": "local", "source": "{}"}}]
        },
        "POST API/2.0/mlflow/runs/log-model": {
            "model_json": json.dumps({"artifact_path": "m", "flavors": {}})
        },
        "POST API/2.0/mlflow/runs/outputs": {"models": [{"model_id": res.logged_model_id, "step": 0}]},
        "POST API/2.0/mlflow/runs/create-promptlab-run": {
            "prompt_template": "hi",
            "prompt_parameters": [{"key": "a", "value": "b"}],
            "model_route": res.endpoint_name,
            "model_input": "hi",
        },
        "POST API/2.0/mlflow/artifacts/presigned-upload-url": {"path": res.artifact, "model_id": DROP},
        "POST API/2.0/mlflow-artifacts/mpu/create/<path:artifact_path>": {
            "path": res.artifact,
            "num_parts": 1,
        },
        "POST API/2.0/mlflow-artifacts/mpu/complete/<path:artifact_path>": {
            "path": res.artifact,
            "upload_id": "swept",
            "parts": [],
        },
        "POST API/2.0/mlflow-artifacts/mpu/abort/<path:artifact_path>": {
            "path": res.artifact,
            "upload_id": "swept",
        },
        # registered models and prompts
        "POST API/2.0/mlflow/registered-models/create": {"name": new, "tags": prompt_tags},
        "POST API/2.0/mlflow/registered-models/rename": {"name": registry_name, "new_name": new},
        "POST API/2.0/mlflow/model-versions/create": {
            "source": "dummy-source" if variant == "prompt" else f"runs:/{run}/model",
            "tags": [*prompt_tags, {"key": "mlflow.prompt.text", "value": "x"}] if prompt_tags else [],
        },
        "POST API/2.0/mlflow/model-versions/transition-stage": {
            "stage": "Archived",
            "archive_existing_versions": False,
        },
        # logged models
        "POST API/2.0/mlflow/logged-models": {"name": new},
        "PATCH API/2.0/mlflow/logged-models/<model_id>": {"status": "LOGGED_MODEL_READY"},
        "PATCH API/2.0/mlflow/logged-models/<model_id>/tags": {"tags": [{"key": "t", "value": "swept"}]},
        "POST API/2.0/mlflow/logged-models/<model_id>/params": {"params": [{"key": "swept", "value": "1"}]},
        # traces and assessments
        "POST API/2.0/mlflow/traces": {"timestamp_ms": 0, "request_metadata": [], "tags": []},
        "PATCH API/2.0/mlflow/traces/<request_id>": {"timestamp_ms": 1, "status": "OK"},
        "POST API/3.0/mlflow/traces": {"trace": {"trace_info": trace_info("tr-" + uuid.uuid4().hex, exp)}},
        "POST API/2.0/mlflow/traces/link-prompts": {
            "prompt_versions": [{"name": res.prompt, "version": "1"}]
        },
        "POST API/3.0/mlflow/traces/<trace_id>/assessments": {
            "assessment": {
                "assessment_name": "swept",
                "trace_id": trace,
                "source": {"source_type": "HUMAN", "source_id": "swept"},
                "feedback": {"value": False},
            }
        },
        "PATCH API/3.0/mlflow/traces/<trace_id>/assessments/<assessment_id>": {
            "assessment": {
                "assessment_id": res.assessment_id,
                "trace_id": trace,
                "feedback": {"value": False},
            },
            "update_mask": "feedback",
        },
        # evaluation datasets and scorers
        "POST API/3.0/mlflow/datasets/create": {"name": new},
        "POST API/3.0/mlflow/datasets/<dataset_id>/records": {
            "records": json.dumps([{"inputs": {"q": "swept"}}])
        },
        "DELETE API/3.0/mlflow/datasets/<dataset_id>/records": {
            "dataset_record_ids": [res.dataset_record_id]
        },
        "PATCH API/3.0/mlflow/datasets/<dataset_id>/tags": {"tags": json.dumps({"t": "swept"})},
        "POST API/3.0/mlflow/scorers/register": {"name": res.scorer, "serialized_scorer": json.dumps(JUDGE)},
        "DELETE API/3.0/mlflow/scorers/delete": {"name": res.scorer, "version": 1},
        "PUT API/3.0/mlflow/scorers/online-config": {"name": res.scorer, "sample_rate": 1.0},
        "POST API/3.0/mlflow/scorer/invoke": {"trace_ids": [trace], "serialized_scorer": json.dumps(JUDGE)},
        "POST API/3.0/mlflow/genai/evaluate/invoke": {"scorers": [json.dumps(JUDGE)]},
        # webhooks
        "POST API/2.0/mlflow/webhooks": {
            "name": new,
            "url": "https://127.0.0.1:9/swept",
            "events": [{"entity": "MODEL_VERSION_ALIAS", "action": "DELETED"}],
        },
        "PATCH API/2.0/mlflow/webhooks/<webhook_id>": {"name": new, "status": "DISABLED"},
        "POST API/2.0/mlflow/webhooks/<webhook_id>/test": {
            "event": {"entity": "MODEL_VERSION_ALIAS", "action": "DELETED"}
        },
        # the AI gateway
        "POST API/3.0/mlflow/gateway/secrets/create": {
            "secret_name": new,
            "secret_value": {"api_key": "sk"},
            "provider": "openai",
        },
        "POST API/3.0/mlflow/gateway/secrets/update": {"secret_value": {"api_key": "sk-swept"}},
        "POST API/3.0/mlflow/gateway/model-definitions/create": {
            "name": new,
            "provider": "openai",
            "model_name": "m",
        },
        "POST API/3.0/mlflow/gateway/model-definitions/update": {"name": new, "model_name": "swept"},
        "POST API/3.0/mlflow/gateway/endpoints/create": {
            "name": new,
            "model_configs": [
                {"model_definition_id": res.model_definition_id, "linkage_type": "PRIMARY", "weight": 1.0}
            ],
        },
        "POST API/3.0/mlflow/gateway/endpoints/update": {"name": new},
        "POST API/3.0/mlflow/gateway/endpoints/models/attach": {
            "model_config": {
                "model_definition_id": res.model_definition_id,
                "linkage_type": "FALLBACK",
                "weight": 1.0,
                "fallback_order": 1,
            }
        },
        "POST API/3.0/mlflow/gateway/endpoints/bindings/create": {
            "resource_type": "scorer",
            "resource_id": res.scorer_id,
        },
        "DELETE API/3.0/mlflow/gateway/endpoints/bindings/delete": {
            "resource_type": "scorer",
            "resource_id": res.scorer_id,
        },
        "POST API/3.0/mlflow/gateway/guardrails/create": {
            "name": new,
            "scorer_version": 1,
            "stage": "BEFORE",
            "action": "VALIDATION",
        },
        "PATCH API/3.0/mlflow/gateway/guardrails/update-config": {"execution_order": 2},
        "POST API/3.0/mlflow/gateway/guardrails/add-to-endpoint": {"execution_order": 2},
        "POST API/3.0/mlflow/gateway/budgets/create": {
            "budget_unit": "USD",
            "budget_amount": 1,
            "duration": {"unit": "DAYS", "value": 1},
            "target_scope": "GLOBAL",
            "budget_action": "ALERT",
        },
        "POST API/3.0/mlflow/gateway/budgets/update": {"budget_amount": 1},
        "POST API/2.0/mlflow/gateway-proxy": {
            "gateway_path": f"gateway/{res.endpoint_name}/mlflow/invocations",
            "json_data": chat,
        },
        "POST /gateway/{endpoint_name}/mlflow/invocations": chat,
        "POST /gateway/mlflow/v1/chat/completions": chat,
        "POST /gateway/openai/v1/chat/completions": chat,
        "POST /gateway/openai/v1/embeddings": {"model": res.endpoint_name, "input": "hi"},
        "POST /gateway/openai/v1/responses": {"model": res.endpoint_name, "input": "hi"},
        "POST /gateway/openai/v1/responses/compact": {"model": res.endpoint_name, "input": "hi"},
        "POST /gateway/anthropic/v1/messages": {**chat, "max_tokens": 1},
        "POST /gateway/gemini/v1beta/models/{endpoint_name}:generateContent": {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}]
        },
        "POST /gateway/gemini/v1beta/models/{endpoint_name}:streamGenerateContent": {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}]
        },
        "POST /gateway/proxy/{endpoint_name}/{path:path}": chat,
        "POST /gateway/typesafe/v1/systemone": chat,
        # MCP servers
        "POST API/3.0/mlflow/mcp-servers": {"name": f"com.example/{new}"},
        "PATCH API/3.0/mlflow/mcp-servers/{name:path}": {"description": "swept"},
        "POST API/3.0/mlflow/mcp-servers/{name:path}/versions": {
            "server_json": {"name": res.mcp_server, "version": "9.0.0"}
        },
        "PATCH API/3.0/mlflow/mcp-servers/{name:path}/versions/{version:path}": {"status": "active"},
        "POST API/3.0/mlflow/mcp-servers/{name:path}/aliases": {"alias": "swept", "version": res.mcp_version},
        "POST API/3.0/mlflow/mcp-servers/{name:path}/tags": {"key": "t", "value": "swept"},
        "POST API/3.0/mlflow/mcp-servers/{name:path}/versions/{version:path}/tags": {
            "key": "t",
            "value": "swept",
        },
        "POST API/3.0/mlflow/mcp-servers/{name:path}/endpoints": {
            "server_version": res.mcp_version,
            "url": "https://swept.example.com/mcp",
        },
        "PATCH API/3.0/mlflow/mcp-servers/{name:path}/endpoints/{endpoint_id}": {
            "url": "https://swept.example.com/mcp"
        },
        # issues, label schemas, review queues, prompt optimization, jobs
        "POST API/3.0/mlflow/issues": {"name": new, "status": "pending", "severity": "low"},
        "PATCH API/3.0/mlflow/issues/<issue_id>": {"name": new, "status": "resolved"},
        "POST API/3.0/mlflow/issues/invoke": {"trace_ids": [trace]},
        "POST API/3.0/mlflow/label-schemas/create": {
            "name": new,
            "type": "FEEDBACK",
            "input": {"text": {"max_length": 5}},
        },
        "PATCH API/3.0/mlflow/label-schemas/update": {"name": new},
        "POST API/3.0/mlflow/review-queues/create": {"name": new, "queue_type": "CUSTOM"},
        "POST API/3.0/mlflow/review-queues/update": {"name": new},
        "POST API/3.0/mlflow/review-queues/get-or-create-user": {"user": res.usernames[READER]},
        "POST API/3.0/mlflow/review-queues/items/add": {"item_type": "TRACE", "item_ids": [trace]},
        "POST API/3.0/mlflow/review-queues/items/remove": {"item_ids": [trace]},
        "POST API/3.0/mlflow/review-queues/items/set-status": {"item_id": trace, "status": "COMPLETED"},
        "POST API/3.0/mlflow/prompt-optimization/jobs": {
            "source_prompt_uri": f"prompts:/{res.prompt}/1",
            "config": {
                "optimizer_type": "OPTIMIZER_TYPE_METAPROMPT",
                "dataset_id": res.dataset_id,
                "scorers": [res.scorer],
            },
        },
        "POST API/3.0/jobs/": {
            "job_name": "optimize_prompts",
            "params": {
                "run_id": run,
                "experiment_id": exp,
                "prompt_uri": f"prompts:/{res.prompt}/1",
                "dataset_id": res.dataset_id,
                "optimizer_type": "metaprompt",
                "optimizer_config": None,
                "scorer_names": [res.scorer],
            },
        },
        # users, roles and grants: what a READ user would most like to change
        "POST API/2.0/mlflow/users/create": {"username": new, "password": "swept-password-1"},
        "POST API/2.0/mlflow/users/create-ui": {"username": new, "password": "swept-password-1"},
        "PATCH API/2.0/mlflow/users/update-admin": {"is_admin": True},
        "PATCH API/2.0/mlflow/users/update-password": {
            "username": res.usernames[ADMIN],
            "password": "swept-password-1",
        },
        "DELETE API/2.0/mlflow/users/delete": {"username": res.usernames[EDITOR]},
        "POST API/3.0/mlflow/users/permissions/grant": grant,
        "POST API/3.0/mlflow/users/permissions/revoke": {**grant, "username": res.usernames[ADMIN]},
        "POST API/3.0/mlflow/roles/create": {"name": new},
        "PATCH API/3.0/mlflow/roles/update": {"name": new},
        "POST API/3.0/mlflow/roles/permissions/add": {
            "resource_type": "experiment",
            "resource_pattern": "*",
            "permission": "MANAGE",
        },
        "PATCH API/3.0/mlflow/roles/permissions/update": {"permission": "MANAGE"},
        "POST API/3.0/mlflow/workspaces": {"name": new},
        "PATCH API/3.0/mlflow/workspaces/<workspace_name>": {"description": "swept"},
        # demo data, the Assistant
        "POST API/3.0/mlflow/demo/generate": {"features": ["prompts"]},
        "POST API/3.0/mlflow/assistant/message": {"message": "hi", "session_id": "swept-session"},
        "PUT API/3.0/mlflow/assistant/config": {"providers": {}},
        "PATCH API/3.0/mlflow/assistant/sessions/{session_id}": {"status": "cancelled"},
        "POST API/3.0/mlflow/assistant/sessions/{session_id}/permission": {
            "request_id": "swept",
            "decision": "allow",
        },
        "POST API/3.0/mlflow/assistant/sessions/{session_id}/tool-result": {
            "request_id": "swept",
            "content": "swept",
        },
        "POST API/3.0/mlflow/assistant/skills/install": {"skills": ["swept"]},
        # skills (MLflow >= 3.18)
        "POST API/3.0/mlflow/skills": {"name": new},
        "PATCH API/3.0/mlflow/skills/{name}": {"description": "swept"},
        "PATCH API/3.0/mlflow/skills/@{organization}/{name}": {"description": "swept"},
        "POST API/3.0/mlflow/skills/{name}/aliases": {"alias": "swept", "version": 1},
        "POST API/3.0/mlflow/skills/@{organization}/{name}/aliases": {"alias": "swept", "version": 1},
        "POST API/3.0/mlflow/skills/{name}/tags": {"key": "t", "value": "swept"},
        "POST API/3.0/mlflow/skills/@{organization}/{name}/tags": {"key": "t", "value": "swept"},
        "POST API/3.0/mlflow/skills/{name}/versions/{version}/tags": {"key": "t", "value": "swept"},
        "POST API/3.0/mlflow/skills/@{organization}/{name}/versions/{version}/tags": {
            "key": "t",
            "value": "swept",
        },
        "PATCH API/3.0/mlflow/skills/{name}/versions/{version}": {"status": "deprecated"},
        "PATCH API/3.0/mlflow/skills/@{organization}/{name}/versions/{version}": {"status": "deprecated"},
        "POST API/3.0/mlflow/skills/{name}/versions": {
            "source_type": "git",
            "source": "https://example.com/x.git",
        },
        "POST API/3.0/mlflow/skills/@{organization}/{name}/versions": {
            "source_type": "git",
            "source": "https://example.com/x.git",
        },
        "POST API/3.0/mlflow/skills/bulk-register": {
            "skills": [{"name": new, "source": "https://example.com/x.git", "digest": "0" * 64}]
        },
    }


REGISTRY = re.compile(r"/mlflow/(registered-models|model-versions)/")
DESTRUCTIVE = re.compile(r"^DELETE |delete|remove|detach|unassign|revoke|rename|cancel")


def write_routes(enumeration: Enumeration) -> dict[str, list[tuple[str, Route]]]:
    """normalised key -> [(template, route)] for every write route (websockets are not writes)."""
    out: dict[str, list[tuple[str, Route]]] = {}
    for (_, method), route in sorted(enumeration.routes.items()):
        if method in WRITE_METHODS:
            for template in sorted(route.templates):
                out.setdefault(normalise(method, template), []).append((template, route))
    return out


def probes(res: Resources, routes: dict[str, list[tuple[str, Route]]]) -> tuple[list[Probe], dict[str, str]]:
    """The requests of the sweep, and the routes none could be built for (key -> why)."""
    out: list[Probe] = []
    unbuildable: dict[str, str] = {}
    for key, entries in routes.items():
        method = key.split(" ", 1)[0]
        for template, route in entries:
            try:
                path = fill(template, path_values(res, template))
            except KeyError as exc:
                unbuildable[key] = f"no value for the path parameter {exc.args[0]!r}"
                continue
            flask = bool(route.sources & {"flask", "auth"})
            variants = ("model", "prompt") if REGISTRY.search(template) else ("",)
            for variant, user in [(v, u) for v in variants for u in SWEPT_USERS]:
                base = common_body(res, res.prompt if variant == "prompt" else res.model) if flask else {}
                merged = {**base, **route_bodies(res, variant).get(key, {})}  # fresh names for each
                probe = Probe(key, template, variant, user, method, path, late=bool(DESTRUCTIVE.search(key)))
                if "/mlflow-artifacts/artifacts/" in template:  # raw bytes in, nothing else
                    probe.data = b"swept" if method == "PUT" else b""
                    probe.headers = {"Content-Type": "text/plain"}
                elif template.endswith("/mlflow/upload-artifact"):
                    probe.data, probe.params = b"swept", {"run_uuid": res.run_id, "path": res.artifact}
                    probe.headers = {"Content-Type": "text/plain"}
                elif template == "/v1/traces":  # OTLP: the experiment travels in a header
                    probe.data = b""
                    probe.headers = {
                        "Content-Type": "application/x-protobuf",
                        "X-Mlflow-Experiment-Id": res.experiment_id,
                    }
                else:
                    probe.body = {k: v for k, v in merged.items() if v is not DROP}
                out.append(probe)
    return out, unbuildable


def send(client: Client, probe: Probe) -> Answer:
    try:
        resp = client.request(
            probe.user,
            probe.method,
            probe.path,
            probe.body,
            params=probe.params,
            data=probe.data,
            headers=probe.headers,
        )
    except requests.RequestException as exc:
        return Answer(probe, 0, f"no answer: {exc!r}")
    return Answer(probe, resp.status_code, resp.text)


def run_sweep(client: Client, all_probes: list[Probe]) -> list[Answer]:
    """Everything in parallel, the destructive requests last (on today's code some succeed, and must
    not take the resources the other requests name away from them)."""
    answers: list[Answer] = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for late in (False, True):
            batch = [p for p in all_probes if p.late == late]
            answers.extend(pool.map(lambda p: send(client, p), batch))
    return answers


@dataclass
class Sweep:
    resources: Resources
    enumerated: int  # (path, method) pairs MLflow serves
    write_templates: int  # (method, template) pairs of the write routes, /api/ and /ajax-api/ apart
    write_keys: list[str]  # the same, normalised: /api/ and /ajax-api/ together
    answers: list[Answer]
    unbuildable: dict[str, str]
    before: dict[str, Any]
    after: dict[str, Any]
    seconds: float

    def swept(self) -> list[Answer]:
        """The answers to write routes (not to the read-only POSTs)."""
        return [a for a in self.answers if a.probe.key not in READ_ONLY_POSTS]

    def successes(self) -> list[Answer]:
        return [a for a in self.swept() if 200 <= a.status < 300]

    def server_errors(self) -> list[Answer]:
        return [a for a in self.answers if a.status >= 500 or a.status == 0]

    def not_exercised(self) -> dict[str, str]:
        """Write routes with an answer that is not a refusal (or no request at all) -> what happened."""
        out = dict(self.unbuildable)
        for a in self.swept():
            if a.status not in DENIED and a.probe.key not in out:
                out[a.probe.key] = describe(a)
        return out

    def exercised(self) -> list[str]:
        missed = self.not_exercised()
        return [k for k in self.write_keys if k not in READ_ONLY_POSTS and k not in missed]


def describe(answer: Answer) -> str:
    p = answer.probe
    variant = f" [{p.variant}]" if p.variant else ""
    text = " ".join(answer.text[:200].split())
    return f"{p.method} {p.path}{variant} as {p.user}: {answer.status} {text}"


@pytest.fixture(scope="module")
def client(server: DescopeServer) -> Client:
    return Client(server)


@pytest.fixture(scope="module")
def resources(client: Client, enumeration: Enumeration) -> Resources:
    return create_resources(client, enumeration)


@pytest.fixture(scope="module")
def sweep(
    client: Client, resources: Resources, enumeration: Enumeration, request: pytest.FixtureRequest
) -> Sweep:
    routes = write_routes(enumeration)
    all_probes, unbuildable = probes(resources, routes)
    before = snapshot(client, resources)
    started = time.monotonic()
    answers = run_sweep(client, all_probes)
    seconds = time.monotonic() - started
    after = snapshot(client, resources)
    templates = sum(len(entries) for entries in routes.values())
    result = Sweep(
        resources,
        len(enumeration.routes),
        templates,
        sorted(routes),
        answers,
        unbuildable,
        before,
        after,
        seconds,
    )
    write_artifact(result, Path(request.config.rootpath, "test-artifacts", "authz-sweep.json"))
    return result


def write_artifact(result: Sweep, path: Path) -> None:
    missed = result.not_exercised()
    report = {
        "counts": {
            "routes_enumerated": result.enumerated,
            "write_route_templates": result.write_templates,
            "write_routes": len(result.write_keys),
            "read_only_posts": len([k for k in result.write_keys if k in READ_ONLY_POSTS]),
            "requests": len(result.answers),
            "exercised": len(result.exercised()),
            "not_exercised": len(missed),
            "successes": len(result.successes()),
            "server_errors": len(result.server_errors()),
            "sweep_seconds": round(result.seconds, 1),
        },
        "successes": sorted(describe(a) for a in result.successes()),
        "server_errors": sorted(describe(a) for a in result.server_errors()),
        "not_exercised": {
            key: {
                "expected": NOT_EXERCISED.get(key),
                "answers": sorted(describe(a) for a in result.answers if a.probe.key == key) or [got],
            }
            for key, got in sorted(missed.items())
        },
        "not_created": NOT_CREATED,
        "read_only_posts": sorted(describe(a) for a in result.answers if a.probe.key in READ_ONLY_POSTS),
        "changed_resources": sorted(k for k in result.before if result.before[k] != result.after.get(k)),
    }
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"authorization sweep: {json.dumps(report['counts'])}; not exercised:")
    for key, got in sorted(missed.items()):
        print(f"  {key}: {NOT_EXERCISED.get(key, 'NOT EXPECTED')} (got {got})")


# -- the tests --------------------------------------------------------------------------------------


def test_no_write_route_succeeds_for_a_read_or_no_permissions_user(sweep: Sweep) -> None:
    successes = sorted(describe(a) for a in sweep.successes())
    assert not successes, f"{len(successes)} write requests succeeded:\n" + "\n".join(successes)


def test_no_request_of_the_sweep_fails_with_a_server_error(sweep: Sweep) -> None:
    errors = sorted(describe(a) for a in sweep.server_errors())
    assert not errors, f"{len(errors)} requests failed with a server error:\n" + "\n".join(errors)


def test_the_admin_resources_survive_the_sweep_unchanged(sweep: Sweep) -> None:
    changed = {
        label: {"before": sweep.before[label], "after": sweep.after.get(label)}
        for label in sweep.before
        if sweep.before[label] != sweep.after.get(label)
    }
    assert not changed, "changed by the sweep:\n" + json.dumps(changed, indent=1)[:6000]


def test_every_write_route_is_exercised_or_listed(sweep: Sweep, enumeration: Enumeration) -> None:
    write_keys = set(sweep.write_keys)
    # The reviewed lists name real routes of the installed MLflow (or of another supported one).
    assert set(READ_ONLY_POSTS) <= write_keys, sorted(set(READ_ONLY_POSTS) - write_keys)
    assert not set(READ_ONLY_POSTS) & set(NOT_EXERCISED)
    # Every write route was requested, as both users, with every variant.
    requested = {(a.probe.key, a.probe.user) for a in sweep.answers}
    buildable = write_keys - set(sweep.unbuildable)
    assert requested == {(k, u) for k in buildable for u in SWEPT_USERS}
    missed = sweep.not_exercised()
    expected = {k: why for k, why in NOT_EXERCISED.items() if k in write_keys}
    unexpected = {k: v for k, v in missed.items() if k not in expected}
    now_exercised = sorted(set(expected) - set(missed))
    assert not unexpected and not now_exercised, (
        "write routes not exercised as an authorization question (answered neither 401 nor 403):\n"
        + "\n".join(f"  {k}: {v}" for k, v in sorted(unexpected.items()))
        + "\nlisted in NOT_EXERCISED but exercised after all:\n"
        + "\n".join(f"  {k}" for k in now_exercised)
    )
    exercised = sweep.exercised()
    assert len(exercised) == len(write_keys) - len(READ_ONLY_POSTS) - len(expected)
    assert len(exercised) >= 150, f"only {len(exercised)} write routes refused: the sweep is broken"


# Top-level creates (normalised key -> the body, given a fresh name): EDIT creates, READ does not.
TOP_LEVEL_CREATES: dict[str, Callable[[Resources, str], dict[str, Any]]] = {
    "POST API/2.0/mlflow/experiments/create": lambda res, name: {"name": name},
    "POST API/2.0/mlflow/registered-models/create": lambda res, name: {"name": name},
    "POST API/2.0/mlflow/registered-models/create [prompt]": lambda res, name: {
        "name": name,
        "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}],
    },
    "POST API/3.0/mlflow/gateway/secrets/create": lambda res, name: {
        "secret_name": name,
        "secret_value": {"api_key": "sk-editor"},
        "provider": "openai",
    },
    "POST API/3.0/mlflow/gateway/model-definitions/create": lambda res, name: {
        "name": name,
        "secret_id": res.secret_id,
        "provider": "openai",
        "model_name": "m",
    },
    "POST API/3.0/mlflow/gateway/endpoints/create": lambda res, name: {
        "name": name,
        "model_configs": [
            {"model_definition_id": res.model_definition_id, "linkage_type": "PRIMARY", "weight": 1}
        ],
    },
    "POST API/3.0/mlflow/mcp-servers": lambda res, name: {"name": f"com.example/{name}"},
    # Creates the server along with its first version.
    "POST API/3.0/mlflow/mcp-servers/{name:path}/versions": lambda res, name: {
        "server_json": {"name": f"com.example/{name}", "version": "1.0.0"}
    },
    # Creates the demo experiment and its prompts.
    "POST API/3.0/mlflow/demo/generate": lambda res, name: {"features": ["prompts"]},
    "POST API/3.0/mlflow/skills": lambda res, name: {"name": name},  # MLflow >= 3.18
}


def test_only_a_baseline_of_edit_creates_top_level_resources(
    client: Client, resources: Resources, enumeration: Enumeration
) -> None:
    routes = write_routes(enumeration)
    outcomes: list[str] = []
    checked: set[str] = set()
    for label, make_body in TOP_LEVEL_CREATES.items():
        key = label.split(" [")[0]
        for template, _ in routes.get(key, []):
            checked.add(label)
            for user, allowed in ((READER, False), (NOBODY, False), (EDITOR, True)):
                name = f"{user}-{uuid.uuid4().hex[:8]}"
                path = fill(template, {"name": f"com.example/{name}"})
                resp = client.request(user, "POST", path, make_body(resources, name))
                if (resp.status_code == 200) != allowed or (not allowed and resp.status_code != 403):
                    want = "200" if allowed else "403"
                    outcomes.append(
                        f"{user} POST {path}: {resp.status_code}, expected {want}: {resp.text[:200]}"
                    )
    # Every create route of MLflow 3.17 was found; the skill registry's where MLflow has one.
    assert set(TOP_LEVEL_CREATES) - checked <= {"POST API/3.0/mlflow/skills"}, (
        set(TOP_LEVEL_CREATES) - checked
    )
    assert not outcomes, "\n".join(outcomes)


def test_nobody_creates_or_renames_a_registered_model_or_prompt_named_like_the_wildcard(
    client: Client,
) -> None:
    """A model named `*` would make its creator's MANAGE grant a grant on every model."""
    prompt = [{"key": "mlflow.prompt.is_prompt", "value": "true"}]
    refused: list[tuple[str, requests.Response]] = []
    for tags in ([], prompt):
        created = client.request(
            EDITOR, "POST", "/api/2.0/mlflow/registered-models/create", {"name": "*", "tags": tags}
        )
        refused.append(("create '*'", created))
        own = f"editor-{uuid.uuid4().hex[:8]}"
        client.ok(EDITOR, "POST", "/api/2.0/mlflow/registered-models/create", {"name": own, "tags": tags})
        renamed = client.request(
            EDITOR, "POST", "/api/2.0/mlflow/registered-models/rename", {"name": own, "new_name": "*"}
        )
        refused.append((f"rename {own} to '*'", renamed))
    wrong = [
        f"{what}: {r.status_code} {r.text[:200]}" for what, r in refused if not 400 <= r.status_code < 500
    ]
    assert not wrong, "\n".join(wrong)
    lookup = client.request(ADMIN, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": "*"})
    assert lookup.status_code == 404, lookup.text
