"""Request bodies the server judges (or rewrites) before MLflow reads them.

- A resource named ``*`` is refused: MLflow stores grants by name for registered models, prompts,
  MCP servers, skills and scorers, and reads the grant resource ``*`` as "every resource", so the
  creator's ``MANAGE`` on a model named ``*`` would be ``MANAGE`` on every model (MLflow 3.18 refuses
  such model names itself; 3.17 does not).
- A run's attribution tags (``mlflow.user``, ``descope.*``) belong to the server: a client may not set
  or delete them, and ``runs/create`` (and the UI's ``runs/create-promptlab-run``) get the verified
  user's, and ``user_id``, whatever the client sent.

Bodies are decoded exactly as MLflow's handlers decode them (``_get_normalized_request_json``: JSON
whatever the content type, and a JSON string holding JSON decoded once more), and the body passed on
is the one judged, so MLflow cannot read anything else.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow_descope_auth._core import Identity
from mlflow_descope_auth.server.attribution import rewrite_create_run
from mlflow_descope_auth.server.http import Response, error

# Large enough for MLflow's biggest JSON request (a log-batch at MLflow's own limits is a few MB).
MAX_JUDGED_BODY = 8 * 1024 * 1024

RESERVED_TAG = "mlflow.user"
RESERVED_TAG_PREFIX = "descope."
WILDCARD = "*"
_NAME_FIELDS = ("name", "new_name", "newName")

CREATE_RUN = "API/2.0/mlflow/runs/create"
# Routes that create a run: both carry `user_id` and `tags`, rewritten from the verified identity.
_CREATE_RUNS = frozenset({CREATE_RUN, "API/2.0/mlflow/runs/create-promptlab-run"})
# Routes whose body may name a new resource (or rename one): no name may be the wildcard.
_NAMING = frozenset(
    {
        "API/2.0/mlflow/registered-models/create",
        "API/2.0/mlflow/registered-models/rename",
        "API/3.0/mlflow/mcp-servers",
        "API/3.0/mlflow/mcp-servers/{}",
        "API/3.0/mlflow/scorers/register",
        "API/3.0/mlflow/skills",
        "API/3.0/mlflow/skills/bulk-register",
        "API/3.0/mlflow/skills/{}",
        "API/3.0/mlflow/skills/@{}/{}",
    }
)
# Routes that create a resource named in the path (MCP server or skill versions create the parent).
_PATH_NAMING = frozenset(
    {
        "API/3.0/mlflow/mcp-servers/{}/versions",
        "API/3.0/mlflow/skills/{}/versions",
        "API/3.0/mlflow/skills/@{}/{}/versions",
    }
)
# Routes that set or delete run tags.
_RUN_TAGS = frozenset(
    {"API/2.0/mlflow/runs/set-tag", "API/2.0/mlflow/runs/delete-tag", "API/2.0/mlflow/runs/log-batch"}
)


def needs_body(method: str, template: str) -> bool:
    return method in ("POST", "PUT", "PATCH") and (
        template in _CREATE_RUNS or template in _NAMING or template in _PATH_NAMING or template in _RUN_TAGS
    )


def mlflow_json(body: bytes) -> Any:
    """The body as MLflow's handlers see it; raises ValueError where MLflow would fail too."""
    try:
        value = json.loads(body) if body else None
    except ValueError:
        value = None  # Flask's get_json(silent=True): MLflow then sees no body
    except RecursionError as exc:  # Flask lets this one through: a 500 in MLflow
        raise ValueError("the request body is nested too deeply") from exc
    if isinstance(value, str):
        try:
            value = json.loads(value)  # MLflow decodes legacy double-encoded bodies once more
        except (ValueError, RecursionError) as exc:
            raise ValueError("the request body is not valid JSON") from exc
    return {} if value is None else value


def judge(method: str, path: str, template: str, body: bytes, identity: Identity) -> Response | bytes:
    """A refusal, or the body to hand to MLflow (the same bytes unless rewritten)."""
    try:
        message = mlflow_json(body)
    except ValueError as exc:
        return error(400, "INVALID_PARAMETER_VALUE", str(exc))
    if (template in _NAMING and _names_wildcard(message)) or (
        template in _PATH_NAMING and WILDCARD in path.split("/")
    ):
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            f"'{WILDCARD}' cannot be used as a name: MLflow's permissions read it as 'every resource'",
        )
    if template in _RUN_TAGS:
        tag = _reserved_tag(message)
        if tag is not None:
            return error(
                400,
                "INVALID_PARAMETER_VALUE",
                f"the run tag '{tag}' is set by the server from the signed-in user and cannot be "
                "changed by a client",
            )
    if template in _CREATE_RUNS:
        return rewrite_create_run(message, identity, body)
    return body


def _names_wildcard(value: Any) -> bool:
    """Any object, at any depth (bulk registrations), naming the wildcard."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(item.get(f) == WILDCARD for f in _NAME_FIELDS):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def is_reserved_tag(key: object) -> bool:
    return isinstance(key, str) and (key == RESERVED_TAG or key.startswith(RESERVED_TAG_PREFIX))


def _reserved_tag(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    keys = [message.get("key")]
    tags = message.get("tags")
    if isinstance(tags, list):
        keys += [t.get("key") for t in tags if isinstance(t, dict)]
    return next((k for k in keys if is_reserved_tag(k)), None)
