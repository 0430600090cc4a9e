"""Request bodies the server judges (or rewrites) before MLflow reads them.

- A resource named ``*`` is refused: MLflow stores grants by name for registered models, prompts,
  MCP servers, skills and scorers, and reads the grant resource ``*`` as "every resource", so the
  creator's ``MANAGE`` on a model named ``*`` would be ``MANAGE`` on every model (MLflow 3.18 refuses
  such model names itself; 3.17 does not).
- A run's attribution tags (``mlflow.user``, ``descope.*``) belong to the server: a client may not set
  or delete them, and ``runs/create`` (and the UI's ``runs/create-promptlab-run``) get the verified
  user's, and ``user_id``, whatever the client sent.

- MLflow's validator and its handler must read a request's parameters from the same place. In MLflow
  3.17 the validator reads raw ``snake_case`` keys (``run_id``, falling back to ``run_uuid``) while the
  handler's protobuf parser also takes the ``lowerCamelCase`` names, so ``{"run_uuid": <mine>,
  "runId": <yours>}`` was judged on one run and applied to the other; and on DELETE the validator
  reads the query string unless the body is JSON, while the handler reads the body regardless. So on
  MLflow's Flask API routes a body must be sent as JSON, and the camelCase names of identifiers
  (``runId``, ``experimentIds``, ``newName``, ...) are rewritten to their snake_case names (both at
  once is refused, as MLflow refuses it).
- A body nested too deeply to decode is a 400 (Flask's parser lets ``RecursionError`` through: a 500).

Bodies are decoded exactly as MLflow's handlers decode them (``_get_normalized_request_json``: JSON
whatever the content type, and a JSON string holding JSON decoded once more), and the body passed on
is the one judged, so MLflow cannot read anything else.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlflow_descope_auth._core import Identity
from mlflow_descope_auth.server.attribution import rewrite_create_run
from mlflow_descope_auth.server.http import Response, error
from mlflow_descope_auth.server.route_policy import Target

# Larger than any JSON request MLflow's own clients send (a log-batch at MLflow's limits is a few MB,
# an evaluation dataset's records can be more); a larger body is a 413, never passed on unjudged.
MAX_JUDGED_BODY = 64 * 1024 * 1024
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Flask API routes whose body is a file, not JSON.
_RAW_BODY = re.compile(r"API/2\.0/(mlflow-artifacts/.*|mlflow/upload-artifact)")
# lowerCamelCase names of identifiers, whose snake_case name MLflow's validators read.
_CAMEL_IDENTIFIER = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+")
_IDENTIFIER_SUFFIXES = ("_id", "_ids", "_uuid", "_name", "_names")

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


def needs_body(method: str, target: Target) -> bool:
    return method in WRITE_METHODS and (_is_flask_json(target) or _is_judged(target.template))


def _is_judged(template: str) -> bool:
    return (
        template in _CREATE_RUNS or template in _NAMING or template in _PATH_NAMING or template in _RUN_TAGS
    )


def _is_flask_json(target: Target) -> bool:
    """MLflow's Flask routes that read a JSON body (and GraphQL)."""
    return target.source == "flask" and (
        (target.template.startswith("API/") and not _RAW_BODY.fullmatch(target.template))
        or target.template == "/graphql"
    )


def is_json_content_type(content_type: str | None) -> bool:
    """Werkzeug's ``Request.is_json``: what MLflow's validators need to read a body at all."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
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


def judge(
    method: str, path: str, target: Target, body: bytes, content_type: str | None, identity: Identity
) -> Response | bytes:
    """A refusal, or the body to hand to MLflow (the same bytes unless rewritten)."""
    template = target.template
    flask_json = _is_flask_json(target)
    if flask_json and body and not is_json_content_type(content_type):
        return error(
            400, "INVALID_PARAMETER_VALUE", "send the request body as JSON (Content-Type: application/json)"
        )
    try:
        message = mlflow_json(body)
    except ValueError as exc:
        return error(400, "INVALID_PARAMETER_VALUE", str(exc))
    rewritten = False
    if flask_json and template.startswith("API/") and isinstance(message, dict):
        renamed = _snake_case_identifiers(message)
        if isinstance(renamed, Response):
            return renamed
        rewritten, message = renamed is not message, renamed
    if (template in _NAMING and _names_wildcard(message)) or (
        template in _PATH_NAMING and WILDCARD in path.split("/")
    ):
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            f"'{WILDCARD}' cannot be used as a name: MLflow's permissions read it as 'every resource'",
        )
    if template in _RUN_TAGS or (template in _CREATE_RUNS and template != CREATE_RUN):
        tag = _reserved_tag(message)
        if tag is not None:
            return error(
                400,
                "INVALID_PARAMETER_VALUE",
                f"the run tag '{tag}' is set by the server from the signed-in user and cannot be "
                "changed by a client",
            )
    if template == CREATE_RUN:
        return rewrite_create_run(message, identity, body)
    if template in _CREATE_RUNS and isinstance(message, dict):
        # The UI's promptlab run: MLflow hands its `tags` to the store as plain dicts (any tag is a
        # 500 there), so only the user is set; the reserved tags were refused above.
        return json.dumps({**message, "user_id": identity.username}).encode()
    return json.dumps(message).encode() if rewritten else body


def _snake_case_identifiers(message: dict[str, Any]) -> dict[str, Any] | Response:
    """``message`` with ``runId`` written ``run_id`` (and the like); the same object when nothing
    changed; a refusal when both spellings are present."""
    renames = {}
    for key in message:
        if _CAMEL_IDENTIFIER.fullmatch(key):
            snake = re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
            if snake.endswith(_IDENTIFIER_SUFFIXES):
                if snake in message:
                    return error(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        f"the request names both '{snake}' and '{key}': send one of them",
                    )
                renames[key] = snake
    if not renames:
        return message
    return {renames.get(k, k): v for k, v in message.items()}


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
