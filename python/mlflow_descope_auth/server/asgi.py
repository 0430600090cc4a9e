"""The gate as outermost ASGI middleware (``mlflow server``'s default, uvicorn). It runs before
MLflow's own middleware, so MLflow's FastAPI routes (traces, artifacts, jobs, gateway, MCP, ...) are
covered as well as the Flask app mounted under them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from mlflow_descope_auth.server import body_rules
from mlflow_descope_auth.server.gate import Gate, Verdict
from mlflow_descope_auth.server.http import MAX_AUTH_BODY, Request, Response, too_large
from mlflow_descope_auth.server.response_shaping import Shaping, shaping_for
from mlflow_descope_auth.server.route_policy import RoutePolicy
from mlflow_descope_auth.server.routes import AuthRoutes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_from_scope(scope: Scope) -> Request:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in headers:
            headers[name] += ("; " if name == "cookie" else ", ") + value
        else:
            headers[name] = value
    return Request(
        method=scope.get("method", "GET"),
        path=scope.get("path", "/"),
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        scheme=scope.get("scheme", "http"),
    )


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is over `limit`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_response(send: Send, response: Response) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _apply_header_changes(scope: Scope, changes: dict[str, str | None]) -> Scope:
    if not changes:
        return scope
    kept = [(k, v) for k, v in scope.get("headers", []) if k.decode("latin-1").lower() not in changes]
    added = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in changes.items() if v is not None]
    return {**scope, "headers": kept + added}


class DescopeASGIMiddleware:
    def __init__(self, app: ASGIApp, gate: Gate, routes: AuthRoutes, policy: RoutePolicy) -> None:
        self.app = app
        self.gate = gate
        self.routes = routes
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        req = request_from_scope(scope)
        verdict = self.gate.check_cached(req)
        if verdict is None:
            verdict = await anyio.to_thread.run_sync(self.gate.check, req)
        if scope["type"] == "websocket":
            # MLflow serves no websockets today; one that appears is for admins only, like any
            # route the policy has not classified.
            identity = verdict.identity
            if verdict.response is not None or identity is None or not identity.is_admin:
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(_apply_header_changes(scope, verdict.header_changes), receive, send)
            return
        if verdict.response is not None:
            await send_response(send, verdict.response)
            return
        if self.routes.handles(req.path):
            await self._auth_route(req, verdict, receive, send)
            return
        scope = _apply_header_changes(scope, verdict.header_changes)
        send = _with_cookies(send, verdict.set_cookies)
        identity = verdict.identity
        if identity is not None:  # None only on public paths and server jobs' gateway calls
            refusal, target = self.policy.check(req.method, req.path, identity)
            if refusal is not None:
                await send_response(send, refusal)
                return
            if target is not None and body_rules.needs_body(req.method, target):
                body = await read_body(receive, body_rules.MAX_JUDGED_BODY)
                if body is None:
                    await send_response(send, too_large())
                    return
                judged = body_rules.judge(
                    req.method, req.path, target, body, req.headers.get("content-type"), identity
                )
                if isinstance(judged, Response):
                    await send_response(send, judged)
                    return
                receive = _Replay(judged, receive)
                scope = _apply_header_changes(
                    scope, {"content-length": str(len(judged)), "transfer-encoding": None}
                )
            shaping = shaping_for(
                req.method,
                req.path,
                self.gate.prefix,
                target.template if target else None,
                sets_cookies=bool(verdict.set_cookies),
            )
            scope = _apply_header_changes(scope, shaping.request_header_changes())
            send = _shaped(send, shaping)
        await self.app(scope, receive, send)

    async def _auth_route(self, req: Request, verdict: Verdict, receive: Receive, send: Send) -> None:
        body = await read_body(receive, MAX_AUTH_BODY)
        if body is None:
            await send_response(send, too_large())
            return
        req.body = body
        response = await anyio.to_thread.run_sync(self.routes.dispatch, req, verdict.identity)
        response.headers.extend(verdict.set_cookies)
        await send_response(send, response)


class _Replay:
    """A receive channel that first yields the (rewritten) body, then whatever the client sends."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()


def _with_cookies(send: Send, cookies: list[tuple[str, str]]) -> Send:
    if not cookies:
        return send
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in cookies]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return wrapped


def _shaped(send: Send, shaping: Shaping) -> Send:
    """``send`` with MLflow's response shaped (response_shaping); a body the shaping edits is held
    back until it is complete, any other streams through."""
    held: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = shaping.response_headers(_decoded(message.get("headers", [])))
            if shaping.wants_body(status, headers):
                held.update(status=status, headers=headers, message=message)
                return
            await send({**message, "headers": _encoded(headers)})
        elif message["type"] == "http.response.body" and held:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers, body = shaping.finish(held["status"], held["headers"], b"".join(chunks))
            await send({**held["message"], "headers": _encoded(headers)})
            await send({"type": "http.response.body", "body": body})
        else:
            await send(message)

    return wrapped


def _decoded(headers: Any) -> list[tuple[str, str]]:
    return [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in headers]


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
