"""Signing in the command line (``mlflow-descope-auth login``) through this server's login page.

The CLI listens on a loopback port and opens ``/auth/login?cli=<port>&state=<s>&challenge=<c>``,
where ``c`` is the PKCE S256 challenge of a verifier only the CLI knows. After the person signs in,
the page's POST to ``/auth/session`` carries those three values; the server answers with a redirect
to ``http://127.0.0.1:<port>/callback?code=<code>&state=<s>``, and the CLI trades code and verifier
for the tokens at ``POST /auth/cli/token``. No token is ever in a URL: the code is worth nothing
without the verifier, is good once, and for ``CODE_TTL_SECONDS``.

Codes live in the auth DB (table ``descope_auth_cli_codes``), which every worker and replica shares.
A row holds the SHA-256 of the code, the challenge and the tokens sealed by the core with a key
derived from the code itself (``seal_with_code``: HKDF-SHA256, AES-256-GCM): whoever reads the table
(or a backup) cannot redeem or decrypt anything. Single use across processes comes from the
database: of all requests that ``DELETE`` a code's row, exactly one sees a row deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from mlflow_descope_auth._core import InvalidTokenError, open_with_code, seal_with_code

_log = logging.getLogger(__name__)

CODE_TTL_SECONDS = 60.0
TABLE = "descope_auth_cli_codes"
# The CLI binds an unprivileged port; anything else is not a port the CLI could have chosen.
MIN_PORT, MAX_PORT = 1024, 65535
_STATE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest, unpadded
_CODE = re.compile(r"[A-Za-z0-9_-]{43}")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 section 4.1


class CliLoginError(ValueError):
    """A request the CLI sign-in cannot honour; the message is safe to show."""


class CliCodesUnavailable(RuntimeError):
    """The auth DB cannot save or spend a code right now."""


@dataclass(frozen=True)
class CliRequest:
    """What the CLI asked for: where its loopback listener is, its state and PKCE challenge."""

    port: int
    state: str
    challenge: str

    @classmethod
    def parse(cls, fields: dict[str, Any]) -> CliRequest:
        port, state, challenge = fields.get("cli"), fields.get("state"), fields.get("challenge")
        # Digits only: "evil.example:80", "-1" or " 80" is not a loopback port of the CLI.
        if not isinstance(port, str) or not port.isascii() or not port.isdigit() or len(port) > 5:
            raise CliLoginError("cli must be the port number of the command line's loopback listener")
        number = int(port)
        if not MIN_PORT <= number <= MAX_PORT:
            raise CliLoginError(f"cli must be a port between {MIN_PORT} and {MAX_PORT}")
        if not isinstance(state, str) or not _STATE.fullmatch(state):
            raise CliLoginError("state must be 16 to 128 URL-safe characters")
        if not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
            raise CliLoginError("challenge must be a PKCE S256 challenge (43 URL-safe characters)")
        return cls(number, state, challenge)

    def as_fields(self) -> dict[str, str]:
        return {"cli": str(self.port), "state": self.state, "challenge": self.challenge}


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(SHA-256(verifier)), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode("ascii")).hexdigest()


class CliCodes:
    """One-time codes in the auth DB (a SQLAlchemy URL)."""

    def __init__(self, db_uri: str) -> None:
        self._db_uri = db_uri
        self._mutex = threading.Lock()
        self._engine: Any = None
        self._engine_pid = 0
        self._table: Any = None

    def _ready(self) -> tuple[Any, Any]:
        import sqlalchemy as sa

        with self._mutex:
            # A pool must not cross a fork: the child opens its own connections.
            if self._engine is None or self._engine_pid != os.getpid():
                self._engine = sa.create_engine(self._db_uri, pool_pre_ping=True, hide_parameters=True)
                self._engine_pid = os.getpid()
                metadata = sa.MetaData()
                table = sa.Table(
                    TABLE,
                    metadata,
                    sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("challenge", sa.String(43), nullable=False),
                    sa.Column("sealed", sa.LargeBinary, nullable=False),
                    sa.Column("expires", sa.Float, nullable=False),
                )
                try:
                    metadata.create_all(self._engine, checkfirst=True)
                except sa.exc.SQLAlchemyError:
                    # Another worker created it between the check and the CREATE.
                    if not sa.inspect(self._engine).has_table(TABLE):
                        raise
                self._table = table
            return self._engine, self._table

    def issue(self, request: CliRequest, tokens: dict[str, Any]) -> str:
        """Saves ``tokens`` under a new code bound to the request's challenge; returns the code."""
        code = secrets.token_urlsafe(32)
        sealed = seal_with_code(code, json.dumps(tokens).encode())
        from sqlalchemy.exc import SQLAlchemyError

        now = time.time()
        try:
            engine, table = self._ready()
            with engine.begin() as conn:
                conn.execute(table.delete().where(table.c.expires < now))
                conn.execute(
                    table.insert().values(
                        key=_digest(code),
                        challenge=request.challenge,
                        sealed=sealed,
                        expires=now + CODE_TTL_SECONDS,
                    )
                )
        except SQLAlchemyError as exc:
            _log.warning("Could not save a command-line sign-in code: %s", type(exc).__name__)
            raise CliCodesUnavailable("the sign-in for the command line cannot be saved right now") from exc
        return code

    def redeem(self, code: object, verifier: object) -> dict[str, Any]:
        """The tokens saved under ``code``, once. The code is spent by any attempt, a wrong verifier
        included: a code that leaked cannot be tried twice."""
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise CliLoginError("code is not a sign-in code")
        if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
            raise CliLoginError("verifier must be a PKCE code verifier (43 to 128 characters)")
        from sqlalchemy.exc import SQLAlchemyError

        key = _digest(code)
        try:
            engine, table = self._ready()
            with engine.begin() as conn:
                row = conn.execute(
                    table.select().where(table.c.key == key, table.c.expires >= time.time())
                ).first()
                spent = conn.execute(table.delete().where(table.c.key == key)).rowcount
        except SQLAlchemyError as exc:
            _log.warning("Could not read a command-line sign-in code: %s", type(exc).__name__)
            raise CliCodesUnavailable("sign-in codes cannot be read right now; try again") from exc
        if row is None or spent != 1:
            raise CliLoginError("this sign-in code is unknown, expired or already used; sign in again")
        if not secrets.compare_digest(pkce_challenge(verifier), row.challenge):
            raise CliLoginError("the verifier does not match this sign-in; sign in again")
        try:
            tokens: dict[str, Any] = json.loads(open_with_code(code, bytes(row.sealed)))
        except InvalidTokenError as exc:  # only if the row was tampered with
            raise CliLoginError("this sign-in code cannot be read; sign in again") from exc
        return tokens


def loopback_redirect(request: CliRequest, code: str) -> str:
    # Always 127.0.0.1: the CLI listens there, and no request can make the browser go anywhere else.
    return f"http://127.0.0.1:{request.port}/callback?code={code}&state={request.state}"
