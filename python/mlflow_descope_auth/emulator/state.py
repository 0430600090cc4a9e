"""What the emulated Descope project knows and does, independent of HTTP.

The HTTP routes and the in-process shortcuts (``Emulator.login()`` and friends) both call into
``EmulatorState``, so a test that skips HTTP gets byte-for-byte the answers a client would.
Log lines name the operation and the user id only; tokens and keys are never logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from .errors import (
    INVALID_ACCESS_KEY,
    INVALID_ARGUMENTS,
    INVALID_REFRESH_TOKEN,
    INVALID_REQUEST,
    NOT_FOUND,
    ApiError,
)
from .faults import FaultBoard
from .keys import KeyRing, SigningKey
from .tokens import TokenIssuer, TokenRejected
from .users import User, UserDirectory, access_key_id

log = logging.getLogger("mlflow_descope_auth.emulator")

STAT_ROUTES: tuple[str, ...] = ("keys", "refresh", "exchange", "logout", "me", "login")


class RouteStats:
    """Requests that reached each route, faulted or not; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits = dict.fromkeys(STAT_ROUTES, 0)

    def hit(self, route: str) -> None:
        with self._lock:
            self._hits[route] = self._hits.get(route, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._hits)

    def reset(self) -> None:
        with self._lock:
            self._hits = dict.fromkeys(STAT_ROUTES, 0)


def user_object(user: User) -> dict[str, Any]:
    """A user the way ``GET /v1/auth/me`` and JWT responses show it."""
    return {
        "userId": user.user_id,
        "loginIds": [user.login_id],
        "externalIds": [user.login_id],
        "name": user.name,
        "givenName": "",
        "middleName": "",
        "familyName": "",
        "email": user.email,
        "verifiedEmail": bool(user.email),
        "phone": "",
        "verifiedPhone": False,
        "picture": "",
        "roleNames": list(user.roles),
        "userTenants": [
            {"tenantId": tid, "roleNames": list(acc["roles"]), "tenantName": user.tenant_names.get(tid, tid)}
            for tid, acc in user.tenants.items()
        ],
        "status": "enabled",
        "test": False,
        "customAttributes": {},
        "createdTime": user.created_time,
        "TOTP": False,
        "SAML": False,
        "OAuth": {},
        "webauthn": False,
        "password": False,
        "ssoAppIds": [],
    }


class EmulatorState:
    def __init__(
        self,
        *,
        project_id: str,
        keys: KeyRing,
        users: UserDirectory,
        issuer: TokenIssuer,
        rotate_refresh_tokens: bool = False,
    ) -> None:
        self.project_id = project_id
        self.keys = keys
        self.users = users
        self.issuer = issuer
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.faults = FaultBoard()
        self.stats = RouteStats()

    # -- Descope API ---------------------------------------------------------------------------------

    def check_project(self, project_id: str) -> None:
        # The presented id is not echoed: a client that forgot the "project:" prefix sends its token here.
        if project_id != self.project_id:
            raise ApiError(400, INVALID_REQUEST, "the project id does not match this project")

    def jwks(self, project_id: str) -> dict[str, Any]:
        self.check_project(project_id)
        return {"keys": self.keys.jwks()}

    def login(self, login_id: str, *, amr: tuple[str, ...] = ("pwd",)) -> dict[str, Any]:
        """What a completed sign-in flow returns: a session and a refresh token for the user."""
        user = self.users.find(login_id)
        if user is None:
            raise ApiError(404, NOT_FOUND, "no user with that login id")
        session, session_claims = self.issuer.issue_session(user, amr=amr)
        refresh, refresh_claims = self.issuer.issue_refresh(user, amr=amr)
        log.info("login user=%s", user.user_id)
        return self._jwt_response(user, session, session_claims, refresh_claims, refresh)

    def refresh(self, refresh_token: str, *, tenant: str | None = None) -> dict[str, Any]:
        claims = self._verify_refresh(refresh_token, "refresh")
        user = self._owner(claims, "refresh")
        # dct/dcs in a refresh body are hints; only a tenant the user belongs to is ever put in a token.
        tenant = tenant if isinstance(tenant, str) and tenant in user.tenants else None
        amr = tuple(a for a in claims.get("amr", ["pwd"]) if isinstance(a, str)) or ("pwd",)
        new_refresh: str | None = None
        refresh_claims = claims
        if self.rotate_refresh_tokens:
            # Consuming the old jti first means two racing refreshes cannot both succeed.
            if not self.issuer.refresh_registry.revoke(claims["jti"]):
                raise ApiError(401, INVALID_REFRESH_TOKEN, "the refresh token was already used")
            new_refresh, refresh_claims = self.issuer.issue_refresh(user, amr=amr)
        session, session_claims = self.issuer.issue_session(user, amr=amr, tenant=tenant)
        log.info("refresh user=%s rotated=%s", user.user_id, new_refresh is not None)
        return self._jwt_response(user, session, session_claims, refresh_claims, new_refresh)

    def exchange(self, access_key: str, login_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        options = login_options or {}
        user = self.users.by_access_key(access_key) if access_key else None
        if user is None:
            log.info("exchange rejected: unknown or revoked access key")
            raise ApiError(401, INVALID_ACCESS_KEY, "the access key is unknown, expired or revoked")
        custom = options.get("customClaims")
        if custom is not None and not isinstance(custom, Mapping):
            raise ApiError(400, INVALID_ARGUMENTS, "loginOptions.customClaims: must be an object")
        tenant = options.get("selectedTenant")
        self._check_tenant(user, tenant, "loginOptions.selectedTenant")
        session, claims = self.issuer.issue_session(
            user, amr=("accesskey",), tenant=tenant, custom_claims=custom
        )
        log.info("exchange user=%s", user.user_id)
        return {"sessionJwt": session, "keyId": access_key_id(access_key), "expiration": claims["exp"]}

    def logout(self, refresh_token: str) -> None:
        claims = self._verify_refresh(refresh_token, "logout")
        self.issuer.refresh_registry.revoke(claims["jti"])
        log.info("logout user=%s", claims.get("sub"))

    def me(self, refresh_token: str) -> dict[str, Any]:
        user = self._owner(self._verify_refresh(refresh_token, "me"), "me")
        log.info("me user=%s", user.user_id)
        return user_object(user)

    # -- control -------------------------------------------------------------------------------------

    def update_user(
        self,
        login_id: str,
        *,
        roles: list[str] | None = None,
        permissions: list[str] | None = None,
        tenants: Mapping[str, Any] | None = None,
    ) -> User:
        try:
            user = self.users.update(login_id, roles=roles, permissions=permissions, tenants=tenants)
        except KeyError:
            raise ApiError(404, NOT_FOUND, "no user with that login id") from None
        except ValueError as exc:
            raise ApiError(400, INVALID_ARGUMENTS, str(exc)) from None
        log.info("user updated user=%s", user.user_id)
        return user

    def revoke_sessions(self, login_id: str) -> int:
        user = self.users.get(login_id)
        if user is None:
            raise ApiError(404, NOT_FOUND, "no user with that login id")
        count = self.issuer.refresh_registry.revoke_user(user.user_id)
        log.info("sessions revoked user=%s count=%d", user.user_id, count)
        return count

    def revoke_access_keys(self, login_id: str) -> int:
        try:
            return self.users.revoke_access_keys(login_id)
        except KeyError:
            raise ApiError(404, NOT_FOUND, "no user with that login id") from None

    def rotate_keys(self, keep_old: bool = True) -> SigningKey:
        key = self.keys.rotate(keep_old=keep_old)
        log.info("signing key rotated kid=%s keep_old=%s", key.kid, keep_old)
        return key

    # -- helpers -------------------------------------------------------------------------------------

    def _verify_refresh(self, token: str, operation: str) -> dict[str, Any]:
        try:
            return self.issuer.verify_refresh(token)
        except TokenRejected as exc:
            log.info("%s rejected: %s", operation, exc)
            raise ApiError(401, INVALID_REFRESH_TOKEN, str(exc)) from None

    def _owner(self, claims: Mapping[str, Any], operation: str) -> User:
        user = self.users.by_user_id(str(claims.get("sub", "")))
        if user is None:
            log.info("%s rejected: the token's user no longer exists", operation)
            raise ApiError(401, INVALID_REFRESH_TOKEN, "the refresh token's user does not exist")
        return user

    @staticmethod
    def _check_tenant(user: User, tenant: Any, field: str) -> None:
        if tenant is None:
            return
        if not isinstance(tenant, str) or tenant not in user.tenants:
            raise ApiError(400, INVALID_ARGUMENTS, f"{field}: the user is not a member of that tenant")

    def _jwt_response(
        self,
        user: User,
        session: str,
        session_claims: Mapping[str, Any],
        refresh_claims: Mapping[str, Any],
        refresh: str | None,
    ) -> dict[str, Any]:
        # Descope's JWTResponse. refreshJwt is left out when the old refresh token stays valid, as
        # Descope does without rotation; clients (the Python SDK included) then keep the one they sent.
        expires = int(refresh_claims["exp"])
        body: dict[str, Any] = {"sessionJwt": session}
        if refresh is not None:
            body["refreshJwt"] = refresh
        body.update(
            {
                "cookieDomain": "",
                "cookiePath": "/",
                "cookieMaxAge": max(0, expires - int(self.issuer.clock.now())),
                "cookieExpiration": expires,
                "sessionExpiration": int(session_claims["exp"]),
                "user": user_object(user),
                "firstSeen": False,
            }
        )
        return body
