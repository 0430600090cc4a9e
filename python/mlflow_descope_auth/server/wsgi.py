"""The gate as WSGI middleware, for ``mlflow server --gunicorn-opts ...`` / ``--waitress-opts ...``,
where MLflow runs its Flask app alone (no FastAPI routes)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mlflow_descope_auth.server import body_rules
from mlflow_descope_auth.server.gate import Gate
from mlflow_descope_auth.server.http import MAX_AUTH_BODY, Request, Response, too_large
from mlflow_descope_auth.server.response_shaping import Shaping, shaping_for
from mlflow_descope_auth.server.route_policy import RoutePolicy
from mlflow_descope_auth.server.routes import AuthRoutes

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_STATUS_TEXT = {
    200: "OK",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    503: "Service Unavailable",
}


def request_from_environ(environ: dict[str, Any]) -> Request:
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    return Request(
        method=environ.get("REQUEST_METHOD", "GET"),
        # The path Flask routes on. Not SCRIPT_NAME + PATH_INFO: gunicorn takes SCRIPT_NAME from a
        # request header (from trusted proxies), and the gate must judge exactly what Flask serves.
        path=environ.get("PATH_INFO", ""),
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        scheme=environ.get("wsgi.url_scheme", "http"),
    )


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The whole body, or None when it is over ``limit``. A chunked body (no Content-Length) is
    read to its end, as the WSGI server de-chunks it."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        body = environ["wsgi.input"].read(limit + 1)
        return None if len(body) > limit else body
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return None
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _respond(start_response: StartResponse, response: Response) -> list[bytes]:
    status = f"{response.status} {_STATUS_TEXT.get(response.status, 'Status')}"
    start_response(status, [*response.headers, ("Content-Length", str(len(response.body)))])
    return [response.body]


class DescopeWSGIMiddleware:
    def __init__(self, app: WSGIApp, gate: Gate, routes: AuthRoutes, policy: RoutePolicy) -> None:
        self.app = app
        self.gate = gate
        self.routes = routes
        self.policy = policy

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        req = request_from_environ(environ)
        verdict = self.gate.check_cached(req)
        if verdict is None:
            verdict = self.gate.check(req)
        if verdict.response is not None:
            return _respond(start_response, verdict.response)
        if self.routes.handles(req.path):
            body = _read_body(environ, MAX_AUTH_BODY)
            if body is None:
                return _respond(start_response, too_large())
            req.body = body
            response = self.routes.dispatch(req, verdict.identity)
            response.headers.extend(verdict.set_cookies)
            return _respond(start_response, response)
        environ = dict(environ)
        for name, value in verdict.header_changes.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        if verdict.set_cookies:
            cookies, plain_start = verdict.set_cookies, start_response

            def start_with_cookies(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                return plain_start(status, [*headers, *cookies], exc_info)

            start_response = start_with_cookies
        identity = verdict.identity
        if identity is not None:  # None only on public paths and server jobs' gateway calls
            refusal, target = self.policy.check(req.method, req.path, identity)
            if refusal is not None:
                return _respond(start_response, refusal)
            if target is not None and body_rules.needs_body(req.method, target):
                body = _read_body(environ, body_rules.MAX_JUDGED_BODY)
                if body is None:
                    return _respond(start_response, too_large())
                judged = body_rules.judge(
                    req.method, req.path, target, body, req.headers.get("content-type"), identity
                )
                if isinstance(judged, Response):
                    return _respond(start_response, judged)
                # MLflow reads exactly the body that was judged.
                environ["wsgi.input"] = io.BytesIO(judged)
                environ["CONTENT_LENGTH"] = str(len(judged))
                environ.pop("HTTP_TRANSFER_ENCODING", None)
            shaping = shaping_for(
                req.method,
                req.path,
                self.gate.prefix,
                target.template if target else None,
                sets_cookies=bool(verdict.set_cookies),
            )
            for name in shaping.request_header_changes():
                environ.pop("HTTP_" + name.upper().replace("-", "_"), None)
            return _shaped(self.app, environ, start_response, shaping)
        return self.app(environ, start_response)


def _shaped(
    app: WSGIApp, environ: dict[str, Any], start_response: StartResponse, shaping: Shaping
) -> Iterable[bytes]:
    """The app's response shaped (response_shaping). A body the shaping edits is held back until it
    is complete; any other response is the app's own iterable (file wrappers stay intact)."""
    started: list[bool] = []
    held: list[tuple[str, list[tuple[str, str]]]] = []
    chunks: list[bytes] = []

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append(True)
        headers = shaping.response_headers(list(headers))
        if exc_info is None and shaping.wants_body(_code(status), headers):
            held.append((status, headers))
            return chunks.append  # the legacy write() callable
        return start_response(status, headers, exc_info)

    result = app(environ, start)
    if started and not held:
        return result
    return _held_back(result, held, chunks, start_response, shaping)


def _held_back(
    result: Iterable[bytes],
    held: list[tuple[str, list[tuple[str, str]]]],
    chunks: list[bytes],
    start_response: StartResponse,
    shaping: Shaping,
) -> Iterator[bytes]:
    """Streams ``result`` unless its start was held back (the app may call start_response only once
    iterated); a held one is sent whole once complete."""
    try:
        for chunk in result:
            if held:
                chunks.append(chunk)
            else:
                yield chunk
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if held:
        status, headers = held[0]
        headers, body = shaping.finish(_code(status), headers, b"".join(chunks))
        start_response(status, headers)
        yield body


def _code(status: str) -> int:
    return int(status.split(" ", 1)[0])
