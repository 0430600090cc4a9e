"""What a signed-in user may attempt on each route MLflow serves, before MLflow's validators run.

MLflow's own authorization judges access to an *existing* resource well, but lets any signed-in user
create top-level resources through many routes (and more with every release), and trusts loopback
callers on its Assistant routes. So every route the served app registers (Flask ``url_map`` and
FastAPI routers, read from the live app at start-up) is put in one of these classes:

- ``READ`` / ``WRITE``: reads, and changes to an existing resource; MLflow's validator decides.
- ``CREATE``: creates a top-level resource (the creator gets ``MANAGE``): needs a baseline of
  ``EDIT`` from the user's Descope roles, then MLflow's validator decides.
- ``ADMIN``: admins only (Descope admin roles).
- ``REFUSED``: nobody, not even admins: it cannot work under Descope sign-in (password users,
  the admin switch; Descope roles decide who is admin).

A route no rule names is ``UNCLASSIFIED`` and treated like ``ADMIN``: a route a new MLflow release
adds is refused to non-admins until it is classified here (``tests_py/test_route_policy.py`` fails
on every unclassified route of the installed MLflow).
"""

from __future__ import annotations

import enum
import functools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth._core import Identity
from mlflow_descope_auth.server.http import Response, error

_log = logging.getLogger(__name__)


ANY_METHOD = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"
    CREATE = "create"
    ADMIN = "admin"
    REFUSED = "refused"
    UNCLASSIFIED = "unclassified"


# Every route of MLflow 3.17 and 3.18, one line each: methods, then the template normalised by
# `normalise` (static prefix removed, "/api/" and "/ajax-api/" as "API/", parameters as "{}").
# HEAD is judged as GET; OPTIONS, which only lists a route's methods, as a read.
_TABLE = """
[refused]
GET                      /signup    # MLflow's password sign-up page
POST                     API/2.0/mlflow/users/create
POST                     API/2.0/mlflow/users/create-ui
PATCH                    API/2.0/mlflow/users/update-admin    # Descope admin roles decide who is admin
PATCH                    API/2.0/mlflow/users/update-password
[admin]
DELETE                   API/2.0/mlflow/users/delete
GET,PUT                  API/3.0/mlflow/assistant/config
POST                     API/3.0/mlflow/assistant/message
GET                      API/3.0/mlflow/assistant/providers
GET                      API/3.0/mlflow/assistant/providers/{}/health
GET                      API/3.0/mlflow/assistant/providers/{}/models
PATCH                    API/3.0/mlflow/assistant/sessions/{}
POST                     API/3.0/mlflow/assistant/sessions/{}/permission
GET                      API/3.0/mlflow/assistant/sessions/{}/stream
POST                     API/3.0/mlflow/assistant/sessions/{}/tool-result
POST                     API/3.0/mlflow/assistant/skills/install
POST                     API/3.0/mlflow/demo/delete
POST                     API/3.0/mlflow/roles/assign
POST                     API/3.0/mlflow/roles/create
DELETE                   API/3.0/mlflow/roles/delete
POST                     API/3.0/mlflow/roles/permissions/add
DELETE                   API/3.0/mlflow/roles/permissions/remove
PATCH                    API/3.0/mlflow/roles/permissions/update
DELETE                   API/3.0/mlflow/roles/unassign
PATCH                    API/3.0/mlflow/roles/update
POST                     API/3.0/mlflow/workspaces
DELETE,PATCH             API/3.0/mlflow/workspaces/{}
[create]
POST                     API/2.0/mlflow/experiments/create
POST                     API/2.0/mlflow/registered-models/create    # registered models and prompts
POST                     API/2.0/mlflow/webhooks    # MLflow: admins only
POST                     API/3.0/jobs/    # MLflow lets any signed-in user submit a job
POST                     API/3.0/mlflow/datasets/create
POST                     API/3.0/mlflow/demo/generate    # creates an experiment and prompts
POST                     API/3.0/mlflow/gateway/budgets/create
POST                     API/3.0/mlflow/gateway/endpoints/create
POST                     API/3.0/mlflow/gateway/guardrails/create
POST                     API/3.0/mlflow/gateway/model-definitions/create
POST                     API/3.0/mlflow/gateway/secrets/create
POST                     API/3.0/mlflow/label-schemas/create
POST                     API/3.0/mlflow/mcp-servers
POST                     API/3.0/mlflow/mcp-servers/{}/versions    # creates the server if it does not exist
POST                     API/3.0/mlflow/review-queues/create
POST                     API/3.0/mlflow/review-queues/get-or-create-user
POST                     API/3.0/mlflow/skills    # MLflow 3.18
POST                     API/3.0/mlflow/skills/@{}/{}/versions    # 3.18; creates the skill
POST                     API/3.0/mlflow/skills/bulk-register    # MLflow 3.18
POST                     API/3.0/mlflow/skills/{}/versions    # 3.18; creates the skill
# Not creates, but calls MLflow lets any signed-in user make that spend or start work elsewhere:
POST                     API/2.0/mlflow/gateway-proxy    # calls the deployments server's models
[write]
POST                     API/3.0/mlflow/skills/@{}/{}/aliases
POST                     API/3.0/mlflow/skills/@{}/{}/tags
POST                     API/3.0/mlflow/skills/@{}/{}/versions/{}/tags
POST                     API/3.0/mlflow/skills/{}/aliases
POST                     API/3.0/mlflow/skills/{}/tags
POST                     API/3.0/mlflow/skills/{}/versions/{}/tags
POST                     /gateway/anthropic/v1/messages
POST                     /gateway/gemini/v1beta/models/{}:generateContent
POST                     /gateway/gemini/v1beta/models/{}:streamGenerateContent
POST                     /gateway/mlflow/v1/chat/completions
POST                     /gateway/openai/v1/chat/completions
POST                     /gateway/openai/v1/embeddings
POST                     /gateway/openai/v1/responses
POST                     /gateway/openai/v1/responses/compact
POST                     /gateway/proxy/{}/{}
POST                     /gateway/typesafe/v1/systemone
POST                     /gateway/{}/mlflow/invocations
POST                     /v1/traces
DELETE,PUT               API/2.0/mlflow-artifacts/artifacts/{}
POST                     API/2.0/mlflow-artifacts/mpu/abort/{}
POST                     API/2.0/mlflow-artifacts/mpu/complete/{}
POST                     API/2.0/mlflow-artifacts/mpu/create/{}
POST                     API/2.0/mlflow/artifacts/presigned-upload-url
POST                     API/2.0/mlflow/experiments/delete
POST                     API/2.0/mlflow/experiments/delete-experiment-tag
POST                     API/2.0/mlflow/experiments/restore
POST                     API/2.0/mlflow/experiments/set-experiment-tag
POST                     API/2.0/mlflow/experiments/update
POST                     API/2.0/mlflow/logged-models
DELETE,PATCH             API/2.0/mlflow/logged-models/{}
POST                     API/2.0/mlflow/logged-models/{}/params
PATCH                    API/2.0/mlflow/logged-models/{}/tags
DELETE                   API/2.0/mlflow/logged-models/{}/tags/{}
POST                     API/2.0/mlflow/model-versions/create
DELETE                   API/2.0/mlflow/model-versions/delete
DELETE                   API/2.0/mlflow/model-versions/delete-tag
POST                     API/2.0/mlflow/model-versions/set-tag
POST                     API/2.0/mlflow/model-versions/transition-stage
PATCH                    API/2.0/mlflow/model-versions/update
DELETE,POST              API/2.0/mlflow/registered-models/alias
DELETE                   API/2.0/mlflow/registered-models/delete
DELETE                   API/2.0/mlflow/registered-models/delete-tag
POST                     API/2.0/mlflow/registered-models/rename
POST                     API/2.0/mlflow/registered-models/set-tag
PATCH                    API/2.0/mlflow/registered-models/update
POST                     API/2.0/mlflow/runs/create
POST                     API/2.0/mlflow/runs/create-promptlab-run
POST                     API/2.0/mlflow/runs/delete
POST                     API/2.0/mlflow/runs/delete-tag
POST                     API/2.0/mlflow/runs/log-batch
POST                     API/2.0/mlflow/runs/log-inputs
POST                     API/2.0/mlflow/runs/log-metric
POST                     API/2.0/mlflow/runs/log-model
POST                     API/2.0/mlflow/runs/log-parameter
POST                     API/2.0/mlflow/runs/outputs
POST                     API/2.0/mlflow/runs/restore
POST                     API/2.0/mlflow/runs/set-tag
POST                     API/2.0/mlflow/runs/update
POST                     API/2.0/mlflow/traces
POST                     API/2.0/mlflow/traces/delete-traces
POST                     API/2.0/mlflow/traces/link-prompts
POST                     API/2.0/mlflow/traces/link-to-run
PATCH                    API/2.0/mlflow/traces/{}
DELETE,PATCH             API/2.0/mlflow/traces/{}/tags
POST                     API/2.0/mlflow/upload-artifact
DELETE,PATCH             API/2.0/mlflow/webhooks/{}
POST                     API/2.0/mlflow/webhooks/{}/test
PATCH                    API/3.0/jobs/cancel/{}
DELETE                   API/3.0/mlflow/datasets/{}
POST                     API/3.0/mlflow/datasets/{}/add-experiments
DELETE,POST              API/3.0/mlflow/datasets/{}/records
POST                     API/3.0/mlflow/datasets/{}/remove-experiments
PATCH                    API/3.0/mlflow/datasets/{}/tags
DELETE                   API/3.0/mlflow/datasets/{}/tags/{}
DELETE                   API/3.0/mlflow/gateway/budgets/delete
POST                     API/3.0/mlflow/gateway/budgets/update
POST                     API/3.0/mlflow/gateway/endpoints/bindings/create
DELETE                   API/3.0/mlflow/gateway/endpoints/bindings/delete
DELETE                   API/3.0/mlflow/gateway/endpoints/delete
DELETE                   API/3.0/mlflow/gateway/endpoints/delete-tag
POST                     API/3.0/mlflow/gateway/endpoints/models/attach
POST                     API/3.0/mlflow/gateway/endpoints/models/detach
POST                     API/3.0/mlflow/gateway/endpoints/set-tag
POST                     API/3.0/mlflow/gateway/endpoints/update
POST                     API/3.0/mlflow/gateway/guardrails/add-to-endpoint
DELETE                   API/3.0/mlflow/gateway/guardrails/delete
DELETE                   API/3.0/mlflow/gateway/guardrails/remove-from-endpoint
PATCH                    API/3.0/mlflow/gateway/guardrails/update-config
DELETE                   API/3.0/mlflow/gateway/model-definitions/delete
POST                     API/3.0/mlflow/gateway/model-definitions/update
DELETE                   API/3.0/mlflow/gateway/secrets/delete
POST                     API/3.0/mlflow/gateway/secrets/update
POST                     API/3.0/mlflow/genai/evaluate/invoke
POST                     API/3.0/mlflow/issues
POST                     API/3.0/mlflow/issues/invoke
POST                     API/3.0/mlflow/issues/schedule/state
PATCH                    API/3.0/mlflow/issues/{}
PATCH                    API/3.0/mlflow/jobs/cancel/{}
DELETE                   API/3.0/mlflow/label-schemas/delete
PATCH                    API/3.0/mlflow/label-schemas/update
DELETE,PATCH             API/3.0/mlflow/mcp-servers/{}
POST                     API/3.0/mlflow/mcp-servers/{}/aliases
DELETE                   API/3.0/mlflow/mcp-servers/{}/aliases/{}
POST                     API/3.0/mlflow/mcp-servers/{}/endpoints
DELETE,PATCH             API/3.0/mlflow/mcp-servers/{}/endpoints/{}
POST                     API/3.0/mlflow/mcp-servers/{}/tags
DELETE                   API/3.0/mlflow/mcp-servers/{}/tags/{}
DELETE,PATCH             API/3.0/mlflow/mcp-servers/{}/versions/{}
POST                     API/3.0/mlflow/mcp-servers/{}/versions/{}/tags
DELETE                   API/3.0/mlflow/mcp-servers/{}/versions/{}/tags/{}
POST                     API/3.0/mlflow/prompt-optimization/jobs
DELETE                   API/3.0/mlflow/prompt-optimization/jobs/{}
POST                     API/3.0/mlflow/prompt-optimization/jobs/{}/cancel
POST                     API/3.0/mlflow/review-queues/delete
POST                     API/3.0/mlflow/review-queues/items/add
POST                     API/3.0/mlflow/review-queues/items/remove
POST                     API/3.0/mlflow/review-queues/items/set-status
POST                     API/3.0/mlflow/review-queues/update
POST                     API/3.0/mlflow/scorer/invoke
DELETE                   API/3.0/mlflow/scorers/delete
PUT                      API/3.0/mlflow/scorers/online-config
POST                     API/3.0/mlflow/scorers/register
DELETE,PATCH             API/3.0/mlflow/skills/@{}/{}
DELETE                   API/3.0/mlflow/skills/@{}/{}/aliases/{}
DELETE                   API/3.0/mlflow/skills/@{}/{}/tags/{}
DELETE,PATCH             API/3.0/mlflow/skills/@{}/{}/versions/{}
DELETE                   API/3.0/mlflow/skills/@{}/{}/versions/{}/tags/{}
DELETE,PATCH             API/3.0/mlflow/skills/{}
DELETE                   API/3.0/mlflow/skills/{}/aliases/{}
DELETE                   API/3.0/mlflow/skills/{}/tags/{}
DELETE,PATCH             API/3.0/mlflow/skills/{}/versions/{}
DELETE                   API/3.0/mlflow/skills/{}/versions/{}/tags/{}
POST                     API/3.0/mlflow/traces
POST                     API/3.0/mlflow/traces/delete-traces
POST                     API/3.0/mlflow/traces/{}/assessments
DELETE,PATCH             API/3.0/mlflow/traces/{}/assessments/{}
DELETE,PATCH             API/3.0/mlflow/traces/{}/tags
POST                     API/3.0/mlflow/users/permissions/grant
POST                     API/3.0/mlflow/users/permissions/revoke
[read]
GET                      /
GET                      /build/{}
GET                      /gateway/mlflow/v1/models
GET                      /get-artifact
GET,POST                 /graphql
GET                      /health
GET                      /model-versions/get-artifact
GET                      /static-files/{}
GET                      /version
GET                      API/2.0/mlflow-artifacts/artifacts
GET                      API/2.0/mlflow-artifacts/artifacts/{}
GET                      API/2.0/mlflow-artifacts/presigned/{}
GET                      API/2.0/mlflow/artifacts/list
POST                     API/2.0/mlflow/artifacts/presigned-download-url
GET                      API/2.0/mlflow/experiments/get
GET                      API/2.0/mlflow/experiments/get-by-name
GET,POST                 API/2.0/mlflow/experiments/search
POST                     API/2.0/mlflow/experiments/search-datasets
GET                      API/2.0/mlflow/gateway-proxy
GET                      API/2.0/mlflow/get-online-trace-details
GET                      API/2.0/mlflow/get-trace-artifact
POST                     API/2.0/mlflow/logged-models/search
GET                      API/2.0/mlflow/logged-models/{}
GET                      API/2.0/mlflow/logged-models/{}/artifacts/directories
GET                      API/2.0/mlflow/logged-models/{}/artifacts/files
GET                      API/2.0/mlflow/metrics/get-history
GET                      API/2.0/mlflow/metrics/get-history-bulk
GET                      API/2.0/mlflow/metrics/get-history-bulk-interval
GET                      API/2.0/mlflow/model-versions/get
GET                      API/2.0/mlflow/model-versions/get-download-uri
GET                      API/2.0/mlflow/model-versions/search
GET                      API/2.0/mlflow/registered-models/alias
GET                      API/2.0/mlflow/registered-models/get
GET,POST                 API/2.0/mlflow/registered-models/get-latest-versions
GET                      API/2.0/mlflow/registered-models/search
GET                      API/2.0/mlflow/runs/get
POST                     API/2.0/mlflow/runs/search
GET                      API/2.0/mlflow/traces
GET                      API/2.0/mlflow/traces/{}/info
GET                      API/2.0/mlflow/unified-traces
GET                      API/2.0/mlflow/users/current
GET                      API/2.0/mlflow/users/get
GET                      API/2.0/mlflow/users/list
GET                      API/2.0/mlflow/webhooks    # MLflow: admins only
GET                      API/2.0/mlflow/webhooks/{}
POST                     API/2.0mlflow/experiments/search-datasets
POST                     API/3.0/jobs/search
GET                      API/3.0/jobs/{}
GET,POST                 API/3.0/mlflow/datasets/search
GET                      API/3.0/mlflow/datasets/{}
GET                      API/3.0/mlflow/datasets/{}/experiment-ids
GET                      API/3.0/mlflow/datasets/{}/records
GET                      API/3.0/mlflow/gateway/budgets/get
GET                      API/3.0/mlflow/gateway/budgets/list
GET                      API/3.0/mlflow/gateway/budgets/windows
GET                      API/3.0/mlflow/gateway/endpoints/bindings/list
GET                      API/3.0/mlflow/gateway/endpoints/get
GET                      API/3.0/mlflow/gateway/endpoints/list
GET                      API/3.0/mlflow/gateway/guardrails/get
GET                      API/3.0/mlflow/gateway/guardrails/list
GET                      API/3.0/mlflow/gateway/guardrails/list-for-endpoint
GET                      API/3.0/mlflow/gateway/model-definitions/get
GET                      API/3.0/mlflow/gateway/model-definitions/list
GET                      API/3.0/mlflow/gateway/provider-config
GET                      API/3.0/mlflow/gateway/secrets/config
GET                      API/3.0/mlflow/gateway/secrets/get
GET                      API/3.0/mlflow/gateway/secrets/list
GET                      API/3.0/mlflow/gateway/supported-models
GET                      API/3.0/mlflow/gateway/supported-providers
GET                      API/3.0/mlflow/get-trace-artifact
POST                     API/3.0/mlflow/issues/search
GET                      API/3.0/mlflow/issues/{}
GET                      API/3.0/mlflow/jobs/{}
GET                      API/3.0/mlflow/label-schemas/get
GET                      API/3.0/mlflow/label-schemas/get-by-name
GET                      API/3.0/mlflow/label-schemas/list
GET                      API/3.0/mlflow/mcp-servers
GET                      API/3.0/mlflow/mcp-servers/endpoints
GET                      API/3.0/mlflow/mcp-servers/{}
GET                      API/3.0/mlflow/mcp-servers/{}/aliases/{}
GET                      API/3.0/mlflow/mcp-servers/{}/endpoints
GET                      API/3.0/mlflow/mcp-servers/{}/endpoints/{}
GET                      API/3.0/mlflow/mcp-servers/{}/versions    # creates the server if it does not exist
GET                      API/3.0/mlflow/mcp-servers/{}/versions/{}
GET,POST                 API/3.0/mlflow/prompt-optimization/jobs/search
GET                      API/3.0/mlflow/prompt-optimization/jobs/{}
GET                      API/3.0/mlflow/review-queues/get
GET                      API/3.0/mlflow/review-queues/get-by-name
GET                      API/3.0/mlflow/review-queues/items/list
GET                      API/3.0/mlflow/review-queues/list
GET                      API/3.0/mlflow/roles/get
GET                      API/3.0/mlflow/roles/list
GET                      API/3.0/mlflow/roles/permissions/list
GET                      API/3.0/mlflow/roles/users/list
GET                      API/3.0/mlflow/scorers/get
GET                      API/3.0/mlflow/scorers/list
GET                      API/3.0/mlflow/scorers/online-configs
GET                      API/3.0/mlflow/scorers/versions
GET                      API/3.0/mlflow/server-info
GET                      API/3.0/mlflow/skills    # MLflow 3.18
GET                      API/3.0/mlflow/skills/@{}/{}
GET                      API/3.0/mlflow/skills/@{}/{}/aliases/{}
GET                      API/3.0/mlflow/skills/@{}/{}/versions
GET                      API/3.0/mlflow/skills/@{}/{}/versions/{}
GET                      API/3.0/mlflow/skills/{}
GET                      API/3.0/mlflow/skills/{}/aliases/{}
GET                      API/3.0/mlflow/skills/{}/versions
GET                      API/3.0/mlflow/skills/{}/versions/{}
GET                      API/3.0/mlflow/traces/batchGet
POST                     API/3.0/mlflow/traces/batchGetInfos
POST                     API/3.0/mlflow/traces/calculate-filter-correlation
GET                      API/3.0/mlflow/traces/get
POST                     API/3.0/mlflow/traces/metrics
POST                     API/3.0/mlflow/traces/search
GET                      API/3.0/mlflow/traces/{}
GET                      API/3.0/mlflow/traces/{}/assessments/{}
GET,POST                 API/3.0/mlflow/ui-telemetry
GET                      API/3.0/mlflow/users/current/permissions
GET                      API/3.0/mlflow/users/permissions/get
GET                      API/3.0/mlflow/users/permissions/list
GET                      API/3.0/mlflow/users/roles/list
GET                      API/3.0/mlflow/workspaces
GET                      API/3.0/mlflow/workspaces/{}
"""


def _parse(table: str) -> dict[tuple[str, str], Access]:
    classes: dict[tuple[str, str], Access] = {}
    current: Access | None = None
    for raw in table.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            current = Access(line.strip("[]"))
            continue
        methods, template = line.split()
        assert current is not None, "a route line before the first [class]"
        for method in methods.split(","):
            assert (method, template) not in classes, f"{method} {template} is classified twice"
            classes[(method, template)] = current
    return classes


CLASSES = _parse(_TABLE)

_FLASK_PARAM = re.compile(r"<(?:[^>:]+:)?[^>]+>")
_FASTAPI_PARAM = re.compile(r"\{[^}]+\}")
_API_PREFIX = re.compile(r"^/(?:ajax-)?api/")


def normalise(template: str, static_prefix: str = "") -> str:
    """A route template as the rules see it: ``/ajax-api/3.0/mlflow/mcp-servers/{name:path}`` ->
    ``API/3.0/mlflow/mcp-servers/{}``."""
    if static_prefix and template.startswith(static_prefix + "/"):
        template = template[len(static_prefix) :]
    template = _FASTAPI_PARAM.sub("{}", _FLASK_PARAM.sub("{}", template))
    return _API_PREFIX.sub("API/", template)


def classify(method: str, template: str, static_prefix: str = "") -> Access:
    if method == "OPTIONS":
        return Access.READ
    method = "GET" if method == "HEAD" else method
    return CLASSES.get((method, normalise(template, static_prefix)), Access.UNCLASSIFIED)


@dataclass(frozen=True)
class Target:
    """The route a request goes to: its normalised template and which app serves it."""

    template: str
    source: str  # "fastapi" | "flask"


@dataclass(frozen=True)
class Route:
    template: str
    methods: frozenset[str]
    source: str  # "fastapi" | "flask"


class RouteTable:
    """Resolves a request to the route the served app would dispatch it to, as that app does:
    MLflow's FastAPI routes first, in order (Starlette's own compiled patterns), then the Flask
    ``url_map`` mounted at ``/``."""

    def __init__(self, fastapi_routes: Iterable[Any], flask_app: Any, static_prefix: str = "") -> None:
        self.static_prefix = static_prefix
        self._fastapi = [
            (_literal_prefix(template), regex, route)
            for template, regex, route in _fastapi_entries(fastapi_routes)
        ]
        self._flask = mlflow_internals.flask_route_matcher(flask_app)

    @classmethod
    def for_app(cls, app: Any, flask_app: Any, static_prefix: str = "") -> RouteTable:
        """``app`` is what the server serves: MLflow's FastAPI app (uvicorn) or the Flask app."""
        routes = [] if app is flask_app else list(getattr(app, "routes", []))
        return cls(routes, flask_app, static_prefix)

    def resolve(self, method: str, path: str) -> Route | None:
        # Paths carry ids, so the cache holds only the most recent ones; the answer depends only on
        # the (immutable) route table.
        return _cached(self, method, path)

    def judge(self, method: str, path: str) -> tuple[Access, Target] | None:
        """The class of the route serving this request, and the route; None when no route serves
        it (MLflow would answer 404 or 405)."""
        route = self.resolve(method, path)
        if route is None:
            return None
        target = Target(normalise(route.template, self.static_prefix), route.source)
        return classify(method, route.template, self.static_prefix), target

    def _resolve_uncached(self, method: str, path: str) -> Route | None:
        from werkzeug.exceptions import HTTPException
        from werkzeug.routing import RequestRedirect

        lookup = "GET" if method == "HEAD" else method
        for prefix, regex, route in self._fastapi:
            # `match`, as Starlette does: its patterns end in "$", which also matches before a final
            # newline ("/v1/traces\n" is served by the /v1/traces route).
            if path.startswith(prefix) and regex.match(path) and lookup in route.methods:
                return route
        try:
            rule, _ = self._flask.match(path, method, return_rule=True)
        except RequestRedirect:
            return None  # Flask answers with a redirect and serves nothing
        except HTTPException:
            return None  # 404 / 405
        return Route(str(rule.rule), frozenset(rule.methods or ()), "flask")


@functools.lru_cache(maxsize=8192)
def _cached(table: RouteTable, method: str, path: str) -> Route | None:
    return table._resolve_uncached(method, path)


def _literal_prefix(template: str) -> str:
    return template.split("{", 1)[0]


def _fastapi_entries(routes: Iterable[Any]) -> Iterator[tuple[str, re.Pattern[str], Route]]:
    """MLflow's FastAPI routes in dispatch order, with their full templates; the Flask mount at ``/``
    is skipped (resolved by its url_map)."""
    from starlette.routing import Mount, compile_path

    for prefix, route in mlflow_internals.fastapi_routes(routes):
        if isinstance(route, Mount):
            if route.path == "":
                continue
            template = prefix + route.path + "/{path:path}"
            regex, _, _ = compile_path(template)
            yield template, regex, Route(template, ANY_METHOD, "fastapi")
        elif hasattr(route, "path"):
            template = prefix + route.path
            regex, _, _ = compile_path(template)
            methods = frozenset(getattr(route, "methods", None) or {"GET"})
            yield template, regex, Route(template, methods, "fastapi")


class RoutePolicy:
    """The decision for one request of a signed-in user, before MLflow sees it."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table

    def check(self, method: str, path: str, identity: Identity) -> tuple[Response | None, Target | None]:
        """(refusal or None, the route that will serve the request)."""
        judged = self.table.judge(method, path)
        if judged is None:
            if identity.is_admin:
                return None, None
            return error(404, "ENDPOINT_NOT_FOUND", f"no such endpoint: {method} {path}"), None
        access, target = judged
        template = target.template
        if access is Access.REFUSED:
            return error(403, "PERMISSION_DENIED", _REFUSED.get(template, _REFUSED_DEFAULT)), target
        if identity.is_admin or access in (Access.READ, Access.WRITE):
            return None, target
        if access is Access.CREATE:
            if LEVELS.index(identity.permission) >= LEVELS.index("EDIT"):
                return None, target
            level = "no" if identity.permission == "NO_PERMISSIONS" else identity.permission
            return error(
                403,
                "PERMISSION_DENIED",
                f"Your roles give you {level} access, and creating needs EDIT: "
                "ask an admin of this server for a role that gives EDIT.",
            ), target
        if access is Access.UNCLASSIFIED:
            _warn_unclassified(method, template)
        return error(403, "PERMISSION_DENIED", "only an admin of this server may do this"), target


LEVELS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
_REFUSED_DEFAULT = "this server signs users in with Descope; this MLflow function is not available"
_REFUSED = {
    "API/2.0/mlflow/users/update-admin": (
        "who is an MLflow admin is decided by Descope roles: change the user's roles in Descope"
    ),
    "API/2.0/mlflow/users/create": (
        "users sign in with Descope and appear here after their first sign-in; they cannot be created here"
    ),
    "API/2.0/mlflow/users/create-ui": (
        "users sign in with Descope and appear here after their first sign-in; they cannot be created here"
    ),
    "API/2.0/mlflow/users/update-password": (
        "users sign in with Descope: there are no MLflow passwords to change"
    ),
}


@functools.lru_cache(maxsize=256)
def _warn_unclassified(method: str, template: str) -> None:
    _log.warning(
        "MLflow route %s %s is not classified by mlflow-descope-auth: only admins may use it",
        method,
        template,
    )
