"""Server-side attribution: a run created through the server names the verified user, whatever the
client sent (``user_id``, ``mlflow.user`` and the ``descope.*`` tags of the client plugin)."""

from __future__ import annotations

import json

from mlflow_descope_auth._core import Identity
from mlflow_descope_auth.client.identity_fields import identity_fields

CREATE_RUN_SUFFIX = "/mlflow/runs/create"


def is_create_run(method: str, path: str) -> bool:
    return method == "POST" and path.endswith(CREATE_RUN_SUFFIX)


def rewrite_create_run(body: bytes, identity: Identity) -> bytes:
    """The CreateRun JSON body with the verified identity; anything that is not a JSON object is
    returned unchanged for MLflow to reject."""
    try:
        message = json.loads(body or b"{}")
    except ValueError:
        return body
    if not isinstance(message, dict):
        return body
    verified = {"mlflow.user": identity.username}
    verified.update({f"descope.{k}": v for k, v in identity_fields(identity).items()})
    tags = message.get("tags")
    kept = [
        t
        for t in (tags if isinstance(tags, list) else [])
        if not (
            isinstance(t, dict)
            and (t.get("key") == "mlflow.user" or str(t.get("key", "")).startswith("descope."))
        )
    ]
    message["tags"] = kept + [{"key": k, "value": v} for k, v in verified.items()]
    message["user_id"] = identity.username
    return json.dumps(message).encode()
