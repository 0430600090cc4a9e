"""What the gate changes in MLflow's answer to a signed-in person's request, in both adapters:

- ``Cache-Control: no-store`` on everything but the UI's build files (hashed, the same for everyone):
  after sign-out, Back must not show a person's experiments from the browser's cache; on those too
  when the answer carries renewed session cookies (a shared cache would hand them to others);
- our scripts in MLflow's UI page (``ui_page``);
- MLflow's bare "Permission denied" (plain text, 403) becomes its JSON error shape with a message
  saying what access is missing and whom to ask; the error code stays ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow_descope_auth.server import ui_page

# MLflow's own refusal, as its validators answer (Flask: text/html; FastAPI: text/plain).
_MLFLOW_DENIAL = b"Permission denied"
# Longer bodies are not MLflow's bare refusal: not held back to look at.
_MAX_DENIAL_BODY = 256

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Shaping:
    prefix: str
    no_store: bool
    ui_page: bool
    denial: str | None  # the message for MLflow's bare "Permission denied"

    def request_header_changes(self) -> dict[str, str | None]:
        """Request headers to drop before MLflow: the UI page is always answered in full."""
        return {h: None for h in ui_page.CONDITIONAL_HEADERS} if self.ui_page else {}

    def response_headers(self, headers: Headers) -> Headers:
        if not self.no_store:
            return headers
        kept = [(k, v) for k, v in headers if k.lower() not in ("cache-control", "expires", "pragma")]
        if self.ui_page:  # validators of a file we edit would validate the unedited file
            kept = [(k, v) for k, v in kept if k.lower() not in ("etag", "last-modified")]
        return [*kept, ("Cache-Control", "no-store")]

    def wants_body(self, status: int, headers: Headers) -> bool:
        """Whether the adapter must hold the body back and hand it to ``finish``."""
        if self.ui_page and status == 200:
            return ui_page.is_plain_html(headers)
        if self.denial is not None and status == 403:
            length = _header(headers, "content-length")
            small = length is not None and length.isdigit() and int(length) <= _MAX_DENIAL_BODY
            return small and "json" not in (_header(headers, "content-type") or "")
        return False

    def finish(self, status: int, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        """The headers (Content-Length set right) and body to send instead of MLflow's."""
        if self.ui_page and status == 200:
            body = ui_page.inject(body, self.prefix)
        elif self.denial is not None and body.strip() == _MLFLOW_DENIAL:
            body = json.dumps({"error_code": "PERMISSION_DENIED", "message": self.denial}).encode()
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            headers.append(("Content-Type", "application/json"))
        kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return [*kept, ("Content-Length", str(len(body)))], body


def shaping_for(
    method: str, path: str, prefix: str, template: str | None, *, sets_cookies: bool = False
) -> Shaping:
    """How to shape MLflow's answer to a signed-in user's request; ``template`` is the normalised
    route (``route_policy.normalise``), None when no route was matched. ``sets_cookies``: the answer
    carries the session the gate just renewed, which no cache may keep, whatever the file."""
    build_file = path.startswith(f"{prefix}/static-files/")
    return Shaping(
        prefix=prefix,
        no_store=sets_cookies or not build_file,
        ui_page=ui_page.is_ui_page(method, path, prefix),
        denial=None if build_file else denial_message(method, template or path),
    )


def denial_message(method: str, template: str) -> str:
    """A refusal a person can act on: the access level the request needs, and on what."""
    route = template.lower()
    if "/mlflow/users/" in route or "/mlflow/roles/" in route:
        # MLflow's own account and role routes: no grant on a resource opens them to a non-admin.
        return (
            "You do not have permission to do this: managing users, roles and their access is for "
            "admins of this server. Ask one of them to do it for you."
        )
    if "permission" in route:
        level = "MANAGE"
    elif method in ("GET", "HEAD"):
        level = "READ"
    elif method == "DELETE" or "delete" in route:
        level = "MANAGE"
    else:
        level = "EDIT"
    return (
        f"You do not have permission to do this: it needs {level} access to {_resource(route)}. "
        f"Ask an admin of this server to give you {level} on it."
    )


_EXPERIMENT_WORDS = ("experiment", "run", "metric", "trace", "logged-model", "artifact", "scorer")


def _resource(route: str) -> str:
    if "registered-model" in route or "model-version" in route:
        return "this registered model"
    if "prompt" in route:
        return "this prompt"
    if "gateway" in route:
        return "this AI Gateway resource"
    if any(word in route for word in _EXPERIMENT_WORDS):
        return "this experiment"
    return "this resource"


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
