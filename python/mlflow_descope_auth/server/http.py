"""A framework-neutral request/response pair, so the session gate and the ``/auth`` pages are written
once and served both by the ASGI adapter (uvicorn) and the WSGI adapter (gunicorn, waitress)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from werkzeug.http import dump_cookie
from werkzeug.sansio.http import parse_cookie as _parse_cookie


def parse_cookies(header: str) -> dict[str, str]:
    """The cookies of a ``Cookie`` header (as the server hands it over: latin-1 text). Bytes that
    are not UTF-8 become U+FFFD instead of an exception (werkzeug's ``parse_cookie`` raises, which
    was a 500 for any request carrying such a cookie); a cookie mangled that way fails validation."""
    text = header.encode("latin-1", "replace").decode("utf-8", "replace")
    return dict(_parse_cookie(text))


@dataclass
class Request:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # lower-case names
    scheme: str
    body: bytes = b""

    @property
    def cookies(self) -> dict[str, str]:
        return parse_cookies(self.headers.get("cookie", ""))

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.query_string).items()}

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def is_https(self) -> bool:
        return self.scheme in ("https", "wss")

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string}" if self.query_string else self.path


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        base = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        return cls(status, json.dumps(payload).encode(), base + list(headers or []))

    @classmethod
    def html(cls, status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
        base = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "same-origin"),
        ]
        return cls(status, text.encode(), base + list(headers or []))

    @classmethod
    def redirect(cls, location: str, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(302, b"", [("Location", location), ("Cache-Control", "no-store"), *(headers or [])])


def error(
    status: int,
    code: str,
    message: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    detail: str | None = None,
) -> Response:
    """MLflow's error shape, so MLflow clients print the message. ``detail``: the precise reason
    beside a message written for a person (MLflow's page shows only ``message``)."""
    body = {"error_code": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return Response.json(status, body, headers)


# Request bodies the gate reads itself (both adapters): the /auth endpoints and CreateRun.
MAX_AUTH_BODY = 64 * 1024


def too_large() -> Response:
    return error(413, "INVALID_PARAMETER_VALUE", "request body too large")


SESSION_COOKIE = "DS"
REFRESH_COOKIE = "DSR"


def session_cookies(
    session_token: str,
    refresh_token: str | None,
    *,
    session_max_age: int,
    refresh_max_age: int | None,
    secure: bool,
    path: str,
) -> list[tuple[str, str]]:
    """``Set-Cookie`` headers for a session: HttpOnly (no script can read them), SameSite=Lax."""

    def cookie(name: str, value: str, max_age: int | None) -> tuple[str, str]:
        return (
            "Set-Cookie",
            dump_cookie(
                name, value, max_age=max_age, path=path, secure=secure, httponly=True, samesite="Lax"
            ),
        )

    headers = [cookie(SESSION_COOKIE, session_token, max(session_max_age, 0))]
    if refresh_token:
        headers.append(cookie(REFRESH_COOKIE, refresh_token, refresh_max_age))
    return headers


def clear_cookies(*, secure: bool, path: str) -> list[tuple[str, str]]:
    return [
        (
            "Set-Cookie",
            dump_cookie(
                name, "", max_age=0, expires=0, path=path, secure=secure, httponly=True, samesite="Lax"
            ),
        )
        for name in (SESSION_COOKIE, REFRESH_COOKIE)
    ]
