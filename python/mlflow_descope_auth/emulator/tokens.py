"""Issuing and checking the emulator's JWTs.

Session tokens (``drn: "DS"``) carry the claims Descope puts in a session JWT: ``sub`` (user id),
``iss`` (a URL ending in the project id), ``iat``, ``exp``, ``drn``, ``amr``, ``roles``,
``permissions`` and ``tenants``, plus ``email`` and ``name`` as a Descope JWT template adds them,
and a ``jti`` unique to the token: two sessions issued in the same second still differ.
Refresh tokens (``drn: "DSR"``) live longer and carry a ``jti`` the emulator records, so logout,
rotation and revocation can kill exactly one of them. Times come from the emulator's ``Clock``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from .clock import Clock
from .keys import KeyRing, SigningKey
from .users import User

# A refresh token the emulator issues is under 1 KB; anything far bigger is not one of ours.
MAX_TOKEN_BYTES = 8 * 1024

# Claims the emulator computes; login options' custom claims may not override them.
RESERVED_CLAIMS = frozenset(
    {"sub", "iss", "aud", "exp", "iat", "nbf", "jti", "drn", "amr", "roles", "permissions", "tenants", "dct"}
)


class TokenRejected(Exception):
    """A presented token is not acceptable; the message says why without quoting the token."""


class RefreshRegistry:
    """Which refresh tokens (by ``jti``) were issued and are still live; safe to use from any thread."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, tuple[str, float]] = {}  # jti -> (user id, exp)

    def register(self, jti: str, user_id: str, exp: float) -> None:
        with self._lock:
            if len(self._live) > 10_000:
                now = self._clock.now()
                self._live = {j: v for j, v in self._live.items() if v[1] > now}
            self._live[jti] = (user_id, exp)

    def is_live(self, jti: str) -> bool:
        with self._lock:
            return jti in self._live

    def revoke(self, jti: str) -> bool:
        with self._lock:
            return self._live.pop(jti, None) is not None

    def revoke_user(self, user_id: str) -> int:
        with self._lock:
            doomed = [j for j, (owner, _) in self._live.items() if owner == user_id]
            for jti in doomed:
                del self._live[jti]
            return len(doomed)


def _b64url_json(value: Mapping[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class TokenIssuer:
    """Signs session and refresh tokens with the key ring's current key."""

    def __init__(
        self,
        keys: KeyRing,
        project_id: str,
        *,
        issuer_base: str,
        session_ttl: int = 600,
        refresh_ttl: int = 30 * 24 * 3600,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.keys = keys
        self.project_id = project_id
        # The server sets this once it knows its port; ``iss`` is "{issuer_base}/{project_id}".
        self.issuer_base = issuer_base.rstrip("/")
        self.session_ttl = session_ttl
        self.refresh_ttl = refresh_ttl
        self.refresh_registry = RefreshRegistry(self.clock)

    @property
    def issuer(self) -> str:
        return f"{self.issuer_base}/{self.project_id}"

    @property
    def signing_key(self) -> SigningKey:
        """The key new tokens are signed with: ``.kid``, ``.alg`` and ``.private_key``."""
        return self.keys.current

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        headers: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """Signs arbitrary claims, e.g. adversarial ones in tests.

        The header gets ``kid`` (and ``alg``) of ``key`` (default: the current key). ``headers`` are
        merged over them; a ``None`` value removes a member (``{"kid": None}`` makes a token without a
        kid), ``{"alg": "none"}`` makes an unsigned token, and another ``alg`` signs with that
        algorithm if the key type allows it (e.g. RS384 with an RSA key).
        """
        signing = key or self.keys.current
        merged: dict[str, Any] = {"alg": signing.alg, "kid": signing.kid}
        merged.update(headers or {})
        merged = {k: v for k, v in merged.items() if v is not None}
        alg = str(merged.get("alg", signing.alg))
        if alg == "none":
            return f"{_b64url_json({'typ': 'JWT', **merged})}.{_b64url_json(claims)}."
        extra = {k: v for k, v in merged.items() if k != "alg"}
        if "alg" not in merged:
            # PyJWT always writes alg, so a header without one is built and signed by hand.
            algorithm = get_default_algorithms()[signing.alg]
            signing_input = f"{_b64url_json({'typ': 'JWT', **extra})}.{_b64url_json(claims)}"
            signature = algorithm.sign(signing_input.encode("ascii"), signing.private_key)
            return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode('ascii')}"
        return jwt.encode(dict(claims), signing.private_key, algorithm=alg, headers=extra)

    def session_claims(
        self,
        user: User,
        *,
        amr: Iterable[str] = ("pwd",),
        tenant: str | None = None,
        custom_claims: Mapping[str, Any] | None = None,
        now: int | None = None,
    ) -> dict[str, Any]:
        issued = int(self.clock.now()) if now is None else now
        claims: dict[str, Any] = {k: v for k, v in (custom_claims or {}).items() if k not in RESERVED_CLAIMS}
        claims.update(
            {
                "sub": user.user_id,
                "iss": self.issuer,
                "iat": issued,
                "exp": issued + self.session_ttl,
                "drn": "DS",
                "amr": list(amr),
                "roles": list(user.roles),
                "permissions": list(user.permissions),
                "tenants": user.tenant_claims(),
                "email": user.email,
                "name": user.name,
                "jti": "S2" + secrets.token_hex(16),
            }
        )
        if tenant:
            claims["dct"] = tenant
        return claims

    def issue_session(
        self,
        user: User,
        *,
        amr: Iterable[str] = ("pwd",),
        tenant: str | None = None,
        custom_claims: Mapping[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        claims = self.session_claims(user, amr=amr, tenant=tenant, custom_claims=custom_claims)
        return self.sign(claims), claims

    def issue_refresh(self, user: User, *, amr: Iterable[str] = ("pwd",)) -> tuple[str, dict[str, Any]]:
        issued = int(self.clock.now())
        claims: dict[str, Any] = {
            "sub": user.user_id,
            "iss": self.issuer,
            "iat": issued,
            "exp": issued + self.refresh_ttl,
            "drn": "DSR",
            "amr": list(amr),
            "jti": "R2" + secrets.token_hex(16),
        }
        token = self.sign(claims)
        self.refresh_registry.register(claims["jti"], user.user_id, claims["exp"])
        return token, claims

    def verify_refresh(self, token: str) -> dict[str, Any]:
        """The claims of a live refresh token this emulator issued, or ``TokenRejected``."""
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("the refresh token is empty or too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("the refresh token is not a JWT") from None
        kid, alg = header.get("kid"), header.get("alg")
        key = self.keys.find(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenRejected("the refresh token is signed with a key this project does not publish")
        if alg != key.alg:
            raise TokenRejected("the refresh token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.alg],
                # Times are checked below against the emulator's clock, not the system's.
                options={
                    "require": ["exp", "iat", "sub", "iss"],
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            # The class name is enough; PyJWT messages are not guaranteed to leave the token out.
            raise TokenRejected(f"the refresh token is invalid ({type(exc).__name__})") from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise TokenRejected("the refresh token's exp is not a number")
        if exp <= self.clock.now():
            raise TokenRejected("the refresh token has expired")
        if claims.get("drn") != "DSR":
            raise TokenRejected("the token is not a refresh token (drn is not DSR)")
        iss = claims.get("iss")
        if not isinstance(iss, str) or iss.rstrip("/").rsplit("/", 1)[-1] != self.project_id:
            raise TokenRejected("the refresh token was issued for another project")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not self.refresh_registry.is_live(jti):
            raise TokenRejected("the refresh token was revoked, rotated or never issued here")
        return claims
