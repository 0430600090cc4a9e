"""The session a client sends when it has no ``DESCOPE_*`` credential but ``mlflow-descope-auth
login`` stored one for the tracking server: validated and refreshed by the core's ``DescopeClient``,
renewed ahead of expiry under a file lock, and the renewed tokens written back for the next process."""

from __future__ import annotations

import dataclasses
import threading
import time

from mlflow_descope_auth._core import (
    DescopeAuthError,
    DescopeClient,
    Identity,
    InvalidTokenError,
    RefreshFailedError,
)
from mlflow_descope_auth.client import stored_login

# As the core's ClientSession: renew this long before expiry, at most a quarter of the lifetime.
RENEW_MARGIN_SECONDS = 60


def _renew_at(identity: Identity) -> float:
    lifetime = identity.expires_at - (identity.issued_at or identity.expires_at - 600)
    return identity.expires_at - max(1, min(RENEW_MARGIN_SECONDS, lifetime // 4))


def sign_in_again(tracking_uri: str, why: str) -> RefreshFailedError:
    err = RefreshFailedError(
        f"the session `mlflow-descope-auth login` stored for {tracking_uri} {why}; "
        f"run `mlflow-descope-auth login --tracking-uri {tracking_uri}` again"
    )
    err.code = "refresh_failed"
    return err


class StoredSession:
    """Same interface as the core's ``ClientSession``."""

    def __init__(self, tracking_uri: str, client: DescopeClient) -> None:
        self.tracking_uri = stored_login.normalize_uri(tracking_uri)
        self.client = client
        self._lock = threading.Lock()
        self._current: tuple[str, Identity, float] | None = None

    def token(self) -> str:
        return self.token_and_identity()[0]

    def identity(self) -> Identity:
        return self.token_and_identity()[1]

    def token_and_identity(self) -> tuple[str, Identity]:
        current = self._current
        if current is not None and time.time() < current[2]:
            return current[0], current[1]
        return self._renew(None)

    def renew_after_rejection(self, rejected_token: str) -> str:
        return self._renew(rejected_token)[0]

    def _renew(self, rejected: str | None) -> tuple[str, Identity]:
        with self._lock:
            current = self._current
            if current is not None and (
                (rejected is not None and current[0] != rejected)
                or (rejected is None and time.time() < current[2])
            ):
                return current[0], current[1]  # another thread renewed meanwhile
            with stored_login.locked(self.tracking_uri):
                login = stored_login.load(self.tracking_uri)
                if login is None:
                    raise sign_in_again(self.tracking_uri, "is gone (signed out)")
                if login.session_token != rejected:
                    # Another process may have renewed it already.
                    try:
                        identity = self.client.validate_session(login.session_token)
                    except InvalidTokenError:
                        pass  # expired (or from a rotated key): the refresh token decides
                    else:
                        if time.time() < _renew_at(identity):
                            return self._install(login.session_token, identity)
                if not login.refresh_token:
                    raise sign_in_again(self.tracking_uri, "expired and has no refresh token")
                try:
                    result = self.client.refresh_session(login.refresh_token)
                except RefreshFailedError as exc:
                    raise sign_in_again(self.tracking_uri, f"cannot be renewed ({exc})") from None
                except DescopeAuthError:
                    raise  # Descope out of reach: the stored session stays for a retry
                stored_login.save(
                    dataclasses.replace(
                        login,
                        session_token=result.session_token,
                        refresh_token=result.refresh_token or login.refresh_token,
                    )
                )
                return self._install(result.session_token, result.identity)

    def _install(self, token: str, identity: Identity) -> tuple[str, Identity]:
        self._current = (token, identity, _renew_at(identity))
        return token, identity

    def __repr__(self) -> str:
        return f"StoredSession({self.tracking_uri!r}, <credentials hidden>)"
