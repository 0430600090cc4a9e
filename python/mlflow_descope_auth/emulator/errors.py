"""Descope-style error answers.

Descope answers errors with ``{"errorCode", "errorDescription", "errorMessage", "message"}``. The codes
``E011001``-``E011004`` (bad request, missing arguments, invalid request, invalid arguments) and
``E062803`` (invalid access key) are the ones Descope's own client SDKs name; the refresh-token and
fault codes below are the emulator's choice, not verified against Descope. Messages never quote a
token, access key or Authorization header: error bodies end up in logs and exception texts.
"""

from __future__ import annotations

from typing import Any

BAD_REQUEST = "E011001"
MISSING_ARGUMENTS = "E011002"
INVALID_REQUEST = "E011003"
INVALID_ARGUMENTS = "E011004"
INVALID_ACCESS_KEY = "E062803"
INVALID_REFRESH_TOKEN = "E061301"  # noqa: S105 - an error code, not a credential
NOT_FOUND = "E011404"
INJECTED_FAULT = "E019999"
INTERNAL = "E010000"

_DESCRIPTIONS = {
    BAD_REQUEST: "Bad request",
    MISSING_ARGUMENTS: "Missing arguments",
    INVALID_REQUEST: "Request is invalid",
    INVALID_ARGUMENTS: "Invalid arguments",
    INVALID_ACCESS_KEY: "Access key is invalid",
    INVALID_REFRESH_TOKEN: "Refresh token is invalid",
    NOT_FOUND: "Not found",
    INJECTED_FAULT: "Injected fault (Descope emulator)",
    INTERNAL: "Internal error",
}


class ApiError(Exception):
    """An error answer; ``message`` must be safe to show and log (no secrets)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {
        "errorCode": code,
        "errorDescription": _DESCRIPTIONS.get(code, "Error"),
        "errorMessage": message,
        "message": message,
    }
