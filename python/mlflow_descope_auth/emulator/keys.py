"""Signing keys of the emulator and their public JWK form.

Keys are generated in memory at start and never written anywhere: tokens from one emulator run must not
verify against another run. The public JWKs carry exactly the members Descope publishes at
``/v2/keys/{project}`` (``alg, e, kid, kty, n, use`` for RSA; ``alg, crv, kid, kty, x, y, use`` for EC),
so a client that accepts Descope's key set accepts this one.
"""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Only algorithms Descope signs with; HMAC is absent on purpose (a shared secret cannot be published).
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, str, int]] = {
    "ES256": (ec.SECP256R1(), "P-256", 32),
    "ES384": (ec.SECP384R1(), "P-384", 48),
}
SUPPORTED_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "ES384")


def _unsupported(alg: str) -> str:
    return f"algorithm: {alg!r} is not supported; use one of {', '.join(SUPPORTED_ALGORITHMS)}"


def _b64url_uint(value: int, length: int | None = None) -> str:
    # RFC 7518: big-endian, no sign byte, no padding; EC coordinates keep their full field length.
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def new_kid() -> str:
    # Letters and digits only, like Descope's key ids, so a kid never needs escaping anywhere.
    return "SK2emu" + secrets.token_hex(12)


@dataclass(frozen=True)
class SigningKey:
    """One key pair; ``private_key`` signs, ``public_jwk()`` is what the key endpoint publishes."""

    kid: str
    alg: str
    private_key: PrivateKey

    @classmethod
    def generate(cls, alg: str = "RS256", kid: str | None = None) -> SigningKey:
        if alg == "RS256":
            private: PrivateKey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg in _EC_CURVES:
            private = ec.generate_private_key(_EC_CURVES[alg][0])
        else:
            raise ValueError(_unsupported(alg))
        return cls(kid=kid or new_kid(), alg=alg, private_key=private)

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        public = self.public_key
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            return {
                "alg": self.alg,
                "e": _b64url_uint(numbers.e),
                "kid": self.kid,
                "kty": "RSA",
                "n": _b64url_uint(numbers.n),
                "use": "sig",
            }
        _, crv, size = _EC_CURVES[self.alg]
        point = public.public_numbers()
        return {
            "alg": self.alg,
            "crv": crv,
            "kid": self.kid,
            "kty": "EC",
            "x": _b64url_uint(point.x, size),
            "y": _b64url_uint(point.y, size),
            "use": "sig",
        }


class KeyRing:
    """The current signing key plus the older keys still published; safe to use from any thread."""

    def __init__(self, algorithm: str = "RS256") -> None:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(_unsupported(algorithm))
        self.algorithm = algorithm
        self._lock = threading.Lock()
        self._published: list[SigningKey] = [SigningKey.generate(algorithm)]

    @property
    def current(self) -> SigningKey:
        with self._lock:
            return self._published[-1]

    def published(self) -> list[SigningKey]:
        with self._lock:
            return list(self._published)

    def jwks(self) -> list[dict[str, str]]:
        return [key.public_jwk() for key in self.published()]

    def find(self, kid: str) -> SigningKey | None:
        with self._lock:
            return next((key for key in self._published if key.kid == kid), None)

    def rotate(self, keep_old: bool = True) -> SigningKey:
        """Adds a new current key; ``keep_old=False`` also unpublishes every older key.

        Unpublishing is what makes tokens signed with the old keys fail everywhere: clients that refetch
        the key set no longer find their kid, and this emulator rejects refresh tokens signed with them.
        """
        fresh = SigningKey.generate(self.algorithm)
        with self._lock:
            self._published = [*self._published, fresh] if keep_old else [fresh]
        return fresh
