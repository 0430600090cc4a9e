"""The emulator's HTTP routes (a Starlette app).

Descope API (the wire format of Descope and its official SDKs; ``P`` is the project id):

* ``GET  /v2/keys/{P}``                  -> ``{"keys": [JWK, ...]}``
* ``POST /v1/auth/refresh``              ``Authorization: Bearer P:<refresh jwt>`` (or ``Bearer P`` plus a
  ``DSR`` cookie), body ``{}`` (``dct``/``dcs`` accepted) -> JWTResponse; ``refreshJwt`` only when rotated
* ``POST /v1/auth/accesskey/exchange``   ``Bearer P:<access key>``, body ``{"loginOptions": {...}}``
  -> ``{"sessionJwt", "keyId", "expiration"}``
* ``POST /v1/auth/logout``               ``Bearer P:<refresh jwt>`` -> ``{}``; the token is revoked
* ``GET  /v1/auth/me``                   ``Bearer P:<refresh jwt>`` -> the user object

Sign-in, the stand-in for a completed Descope flow (faults apply to it, as route ``login``):

* ``POST   /emulator/login``                       ``{"loginId": "reader"}`` -> JWTResponse with both tokens

Control routes (the emulator's own; never affected by faults):

* ``GET    /emulator/users``                       -> ``{"users": [user object, ...]}``
* ``PATCH  /emulator/users/{loginId}``             ``{"roles", "permissions", "tenants"}`` (any subset)
* ``POST   /emulator/users/{loginId}/revoke``      revokes the user's refresh tokens -> ``{"revoked": n}``
* ``POST   /emulator/users/{loginId}/access-keys/revoke``  -> ``{"revoked": n}``
* ``POST   /emulator/keys/rotate``                 ``{"keepOld": true}`` -> ``{"kid", "keys"}``
* ``GET    /emulator/faults``, ``POST /emulator/faults``, ``DELETE /emulator/faults`` (see faults.py);
  body e.g. ``{"mode": "error", "status": 503, "routes": ["refresh"], "seconds": 10}``
* ``GET    /emulator/stats`` -> hits per route; ``POST /emulator/stats/reset`` (resets the traffic too)
* ``GET    /emulator/traffic`` -> requests in flight per route and how the finished ones ended
  (``{"inFlight": {"refresh": 1}, "ended": {"refresh": {"200": 1, "dropped": 1}}}``, see traffic.py)
* ``GET    /emulator/clock``, ``POST /emulator/clock`` ``{"offset": -700}`` -> ``{"offset", "now"}``: the
  emulator's now, in seconds from the system clock, for the times in tokens issued from then on (see
  clock.py); ``{"offset": 0}`` goes back to the system clock
* ``GET    /emulator/health``
* ``GET    /emulator/web-component.js``            the stand-in ``<descope-wc>`` flow component (pick a
  demo user); a login page loads it from here instead of Descope's CDN. Cross-origin requests are
  allowed (CORS), as Descope allows them from a project's approved domains: the login page runs on
  the MLflow server's origin.

Every error is a Descope-style JSON body with an ``errorCode``; bad input never causes a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import (
    BAD_REQUEST,
    INJECTED_FAULT,
    INTERNAL,
    INVALID_ARGUMENTS,
    INVALID_REQUEST,
    MISSING_ARGUMENTS,
    NOT_FOUND,
    ApiError,
    error_body,
)
from .faults import API_ROUTES, Fault, make_fault
from .state import EmulatorState, user_object
from .traffic import DROPPED, Traffic

log = logging.getLogger("mlflow_descope_auth.emulator")

MAX_BODY_BYTES = 64 * 1024
_FAULT_FIELDS = ("mode", "status", "delay", "seconds", "routes", "retryAfter")

Handler = Callable[[Request], Awaitable[Any]]


class _Dropped(Exception):
    """The request's sender disconnected before it was processed."""


WEB_COMPONENT = Path(__file__).with_name("static") / "web-component.js"


@cache
def _web_component_source() -> bytes:
    return WEB_COMPONENT.read_bytes()


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, BAD_REQUEST, "the request body is too large")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, BAD_REQUEST, "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, BAD_REQUEST, "the request body must be a JSON object")
    return value


async def _client_left_during(request: Request, seconds: float) -> bool:
    """Waits ``seconds``, as a stalled network would; True when the client disconnected meanwhile."""
    await request.body()  # all of it: the next message can only be the disconnect

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


def _field(body: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise ApiError(400, INVALID_ARGUMENTS, f"{name}: must be a {kind.__name__}")
    return value


def create_app(
    state: EmulatorState,
    *,
    on_outage: Callable[[Fault], None] | None = None,
    traffic: Traffic | None = None,
) -> Starlette:
    """The ASGI app; ``on_outage`` lets the server close its socket (outages need the real server)."""
    traffic = traffic if traffic is not None else Traffic()

    def bearer_secret(request: Request, *, cookie: bool = False) -> str:
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(400, MISSING_ARGUMENTS, "the Authorization header is missing")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(
                400, INVALID_REQUEST, "the Authorization header must be 'Bearer <project id>:<token>'"
            )
        project, _, rest = value.strip().partition(":")
        state.check_project(project)
        secret = rest.split(":", 1)[0]  # a management key may follow a second ':'
        if not secret and cookie:
            secret = request.cookies.get("DSR", "")
        if not secret:
            raise ApiError(
                400, MISSING_ARGUMENTS, "no token after the project id in the Authorization header"
            )
        return secret

    async def injected_fault(route: str, request: Request) -> Response | None:
        error, delay = state.faults.for_route(route)
        if delay is not None and await _client_left_during(request, delay.delay):
            # The stall was in the network, before Descope: a request whose sender is gone never
            # arrives, so it is not processed (a refresh token it carried stays unused).
            log.info("%s dropped unprocessed: the client disconnected during an injected delay", route)
            raise _Dropped
        if error is None:
            return None
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
        body = error_body(INJECTED_FAULT, f"injected fault: HTTP {error.status} on {route}")
        return JSONResponse(body, status_code=error.status, headers=headers)

    def endpoint(route: str | None, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                if route in API_ROUTES:
                    faulted = await injected_fault(route, request)
                    if faulted is not None:
                        return faulted
                result = await handler(request)
            except ApiError as exc:
                return JSONResponse(exc.body(), status_code=exc.status)
            return result if isinstance(result, Response) else JSONResponse(result)

        async def run(request: Request) -> Response:
            if route is not None:
                state.stats.hit(route)
            if route not in API_ROUTES:
                return await answer(request)
            traffic.started(route)
            outcome = "500"  # unless answered (the app's handler answers 500 to the unexpected)
            try:
                response = await answer(request)
                outcome = str(response.status_code)
                return response
            except _Dropped:
                outcome = DROPPED
                return Response(status_code=499)  # nobody is left to read it
            finally:
                traffic.ended(route, outcome)

        return run

    # -- Descope API ---------------------------------------------------------------------------------

    async def keys(request: Request) -> Any:
        return state.jwks(str(request.path_params["project_id"]))

    async def refresh(request: Request) -> Any:
        token = bearer_secret(request, cookie=True)
        body = await _json_body(request)
        return state.refresh(token, tenant=body.get("dct"))

    async def exchange(request: Request) -> Any:
        access_key = bearer_secret(request)
        body = await _json_body(request)
        options = _field(body, "loginOptions", dict, {})
        return state.exchange(access_key, options)

    async def logout(request: Request) -> Any:
        token = bearer_secret(request, cookie=True)
        await _json_body(request)
        state.logout(token)
        return {}

    async def me(request: Request) -> Any:
        return state.me(bearer_secret(request, cookie=True))

    # -- control -------------------------------------------------------------------------------------

    async def login(request: Request) -> Any:
        # The stand-in web component names its project like the real one does; a mismatch is the
        # "wrong DESCOPE_PROJECT_ID on the login page" mistake, reported as Descope would.
        project = request.headers.get("x-descope-project-id")
        if project is not None:
            state.check_project(project)
        body = await _json_body(request)
        login_id = _field(body, "loginId", str)
        if not login_id:
            raise ApiError(400, MISSING_ARGUMENTS, "loginId: required")
        return state.login(login_id)

    async def list_users(request: Request) -> Any:
        return {"users": [user_object(u) for u in state.users.all()]}

    async def patch_user(request: Request) -> Any:
        body = await _json_body(request)
        unknown = sorted(set(body) - {"roles", "permissions", "tenants"})
        if unknown:
            message = f"{unknown[0]}: unknown field; use roles, permissions, tenants"
            raise ApiError(400, INVALID_ARGUMENTS, message)
        user = state.update_user(
            str(request.path_params["login_id"]),
            roles=body.get("roles"),
            permissions=body.get("permissions"),
            tenants=body.get("tenants"),
        )
        return {"user": user_object(user)}

    async def revoke_user(request: Request) -> Any:
        return {"revoked": state.revoke_sessions(str(request.path_params["login_id"]))}

    async def revoke_user_keys(request: Request) -> Any:
        return {"revoked": state.revoke_access_keys(str(request.path_params["login_id"]))}

    async def rotate_keys(request: Request) -> Any:
        body = await _json_body(request)
        keep_old = _field(body, "keepOld", bool, True)
        key = state.rotate_keys(keep_old=keep_old)
        return {"kid": key.kid, "keys": state.keys.jwks()}

    async def get_faults(request: Request) -> Any:
        return {"faults": [f.describe() for f in state.faults.active()]}

    async def set_fault(request: Request) -> Any:
        body = await _json_body(request)
        unknown = sorted(set(body) - set(_FAULT_FIELDS))
        if unknown:
            message = f"{unknown[0]}: unknown field; use {', '.join(_FAULT_FIELDS)}"
            raise ApiError(400, INVALID_ARGUMENTS, message)
        try:
            fault = make_fault(
                str(_field(body, "mode", str, "")),
                status=body.get("status", 503),
                delay=body.get("delay", 0.0),
                seconds=body.get("seconds"),
                routes=_field(body, "routes", list),
                retry_after=body.get("retryAfter"),
            )
        except ValueError as exc:
            raise ApiError(400, INVALID_ARGUMENTS, str(exc)) from None
        if fault.mode == "outage":
            if on_outage is None:
                raise ApiError(409, INVALID_REQUEST, "mode: an outage needs the emulator's own server")
            if fault.seconds is None:
                # The control routes go down with the socket, so nothing could end this outage over HTTP.
                raise ApiError(400, MISSING_ARGUMENTS, "seconds: required for an outage set over HTTP")
            on_outage(fault)
            return JSONResponse({"fault": fault.describe()}, status_code=202)
        state.faults.set(fault)
        return {"fault": fault.describe()}

    async def clear_faults(request: Request) -> Any:
        state.faults.clear()
        return {"faults": []}

    async def stats(request: Request) -> Any:
        return state.stats.snapshot()

    async def reset_stats(request: Request) -> Any:
        state.stats.reset()
        traffic.reset()
        return state.stats.snapshot()

    async def get_traffic(request: Request) -> Any:
        return traffic.snapshot()

    def clock_state() -> dict[str, float]:
        return {"offset": state.issuer.clock.offset, "now": state.issuer.clock.now()}

    async def get_clock(request: Request) -> Any:
        return clock_state()

    async def set_clock(request: Request) -> Any:
        body = await _json_body(request)
        unknown = sorted(set(body) - {"offset"})
        if unknown or "offset" not in body:
            raise ApiError(400, INVALID_ARGUMENTS, "offset: required, and the only field")
        try:
            state.issuer.clock.set_offset(body["offset"])
        except ValueError as exc:
            raise ApiError(400, INVALID_ARGUMENTS, str(exc)) from None
        return clock_state()

    async def health(request: Request) -> Any:
        return {
            "status": "ok",
            "projectId": state.project_id,
            "issuer": state.issuer.issuer,
            "algorithm": state.keys.algorithm,
        }

    async def web_component(request: Request) -> Any:
        return Response(
            _web_component_source(),
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = NOT_FOUND if status == 404 else INVALID_REQUEST
        return JSONResponse(error_body(code, f"HTTP {status}: no such route or method"), status_code=status)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The exception text may quote request data, so only its type is logged.
        log.error("unexpected error on %s: %s", request.url.path, type(exc).__name__)
        return JSONResponse(error_body(INTERNAL, "unexpected emulator error"), status_code=500)

    routes = [
        Route("/v2/keys/{project_id}", endpoint("keys", keys), methods=["GET"]),
        Route("/v1/auth/refresh", endpoint("refresh", refresh), methods=["POST"]),
        Route("/v1/auth/accesskey/exchange", endpoint("exchange", exchange), methods=["POST"]),
        Route("/v1/auth/logout", endpoint("logout", logout), methods=["POST"]),
        Route("/v1/auth/me", endpoint("me", me), methods=["GET"]),
        Route("/emulator/login", endpoint("login", login), methods=["POST"]),
        Route("/emulator/users", endpoint(None, list_users), methods=["GET"]),
        Route("/emulator/users/{login_id}", endpoint(None, patch_user), methods=["PATCH"]),
        Route("/emulator/users/{login_id}/revoke", endpoint(None, revoke_user), methods=["POST"]),
        Route(
            "/emulator/users/{login_id}/access-keys/revoke",
            endpoint(None, revoke_user_keys),
            methods=["POST"],
        ),
        Route("/emulator/keys/rotate", endpoint(None, rotate_keys), methods=["POST"]),
        Route("/emulator/faults", endpoint(None, get_faults), methods=["GET"]),
        Route("/emulator/faults", endpoint(None, set_fault), methods=["POST"]),
        Route("/emulator/faults", endpoint(None, clear_faults), methods=["DELETE"]),
        Route("/emulator/stats", endpoint(None, stats), methods=["GET"]),
        Route("/emulator/stats/reset", endpoint(None, reset_stats), methods=["POST"]),
        Route("/emulator/traffic", endpoint(None, get_traffic), methods=["GET"]),
        Route("/emulator/clock", endpoint(None, get_clock), methods=["GET"]),
        Route("/emulator/clock", endpoint(None, set_clock), methods=["POST"]),
        Route("/emulator/health", endpoint(None, health), methods=["GET"]),
        Route("/emulator/web-component.js", endpoint(None, web_component), methods=["GET"]),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "x-descope-project-id"],
        max_age=600,
    )
    return Starlette(
        routes=routes,
        middleware=[cors],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
    )
