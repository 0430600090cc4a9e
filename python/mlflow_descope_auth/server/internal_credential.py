"""The one credential this server issues itself: for MLflow's server-side jobs calling its AI Gateway.

MLflow's jobs (LLM-judge scorers invoked from the UI, ``mlflow.genai.evaluate`` runs started from
the UI) run in subprocesses of ``mlflow server`` and call the server's own ``/gateway/...`` routes
for their judge models, as the user who started the job: ``Authorization: Basic <user>:<token>``,
with MLflow's internal gateway token (``mlflow_internals.INTERNAL_GATEWAY_CREDENTIAL_VARIABLE``).
MLflow creates that token only for its own ``basic-auth`` app; this plugin creates it the same way:

- per ``mlflow server`` start, random, in the ``mlflow server`` process before any worker or job
  runner exists (``issue_for_server_start``), passed to both in their environment only: never on
  disk, never in a response, never shared with another replica or a later start;
- accepted only on ``POST <prefix>/gateway/...`` (what the jobs call), as exactly the user the job
  names, who must already be a user of this server (signed in with Descope before) and not one of
  the reserved names; MLflow's own gateway permission check (USE on the endpoint) then applies to
  that user, as it does for the user's own calls.

MLflow 3.18's Assistant delegation key, which would let a request act as any user on any route, is
not issued: the Assistant is not supported under this plugin (``issue_for_server_start`` removes an
inherited key, and the gate drops the delegation header from every request).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping, MutableMapping

from mlflow_descope_auth import mlflow_internals

# A token shorter than this was not made by `issue_for_server_start` (64 hex digits): refused.
_MIN_TOKEN_LENGTH = 32


def issue_for_server_start(environ: MutableMapping[str, str]) -> None:
    """Run in the ``mlflow server`` process, before it starts the workers and the job runner (both
    inherit ``environ``): a fresh token (MLflow runs jobs unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION
    is false, and only then is it used), never an Assistant delegation key. A value inherited from
    the shell is replaced or removed, so only this start's own token is ever accepted."""
    environ.pop(mlflow_internals.ASSISTANT_DELEGATION_KEY, None)
    environ[mlflow_internals.INTERNAL_GATEWAY_CREDENTIAL_VARIABLE] = secrets.token_hex(32)


class InternalCredential:
    """Checks a request's ``Authorization`` against this server start's internal gateway token."""

    def __init__(self, token: str | None, static_prefix: str) -> None:
        self._token = token if token and len(token) >= _MIN_TOKEN_LENGTH else None
        self._gateway = f"{static_prefix}/gateway/"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], static_prefix: str) -> InternalCredential:
        return cls(environ.get(mlflow_internals.INTERNAL_GATEWAY_CREDENTIAL_VARIABLE), static_prefix)

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def username(self, method: str, path: str, authorization: str | None) -> str | None:
        """The user a job's gateway call acts as, or None when this is not one (another route or
        method, another scheme, a wrong token, no username): the caller then treats the request
        like any other, which without a Descope session means 401."""
        if self._token is None or authorization is None:
            return None
        if method.upper() != "POST" or not path.startswith(self._gateway):
            return None
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        # Compared as bytes: compare_digest refuses non-ASCII str.
        if not sep or not secrets.compare_digest(password.encode(), self._token.encode()):
            return None
        return username or None
