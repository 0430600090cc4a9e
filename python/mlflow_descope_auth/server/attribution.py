"""Server-side attribution: a run created through the server names the verified user, whatever the
client sent (``user_id``, ``mlflow.user`` and the ``descope.*`` tags of the client plugin)."""

from __future__ import annotations

import json
from typing import Any

from mlflow_descope_auth._core import Identity
from mlflow_descope_auth.client.identity_fields import identity_fields


def rewrite_create_run(message: Any, identity: Identity, body: bytes) -> bytes:
    """The CreateRun body with the verified identity. ``message`` is the body as MLflow decodes it
    (``body_rules.mlflow_json``); anything but a JSON object is passed on unchanged (``body``) for
    MLflow to reject."""
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
    message = {k: v for k, v in message.items() if k != "userId"}  # the proto's JSON name of user_id
    message["tags"] = kept + [{"key": k, "value": v} for k, v in verified.items()]
    message["user_id"] = identity.username
    return json.dumps(message).encode()
