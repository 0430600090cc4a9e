"""Type stubs for the Rust extension module ``mlflow_descope_auth._core``.

Kept in step with ``src/py.rs``; ``python -m mypy.stubtest mlflow_descope_auth._core`` checks them.
"""

from collections.abc import Callable, Mapping
from typing import Any, Protocol, final, type_check_only

__version__: str
__all__ = [
    "ERROR_CODES",
    "SETTINGS",
    "AccessKeyExchangeError",
    "ClientSession",
    "ConfigurationError",
    "DescopeApiError",
    "DescopeAuthError",
    "DescopeClient",
    "DescopeUnreachableError",
    "ExpiredTokenError",
    "Identity",
    "InvalidTokenError",
    "RefreshCoordinator",
    "RefreshFailedError",
    "SessionResult",
    "Setting",
    "StoredLogin",
    "__version__",
    "check_setting",
    "delete_login",
    "load_login",
    "logout_login",
    "open_with_code",
    "save_login",
    "seal_with_code",
]

# Every exception carries `code`, a stable snake_case word for what went wrong (branch on it, never on
# the message, whose wording may change):
#   config_missing       a required setting is not set                        ConfigurationError
#   config_invalid       a setting (variable or DescopeClient keyword) is bad  ConfigurationError
#   token_malformed      not a well-formed JWT (shape, base64url, JSON)        InvalidTokenError
#   token_too_long       over the size limit, refused before parsing          InvalidTokenError
#   token_algorithm      an algorithm Descope does not sign with, or not the key's
#   token_unknown_key    signed by a key the project does not (or no longer) publish
#   token_signature      the signature does not match the project's key
#   token_expired        past `exp` plus the leeway                           ExpiredTokenError
#   token_not_yet_valid  `nbf` is in the future (check the clock)
#   token_issuer         issued for another project, or no `iss`
#   token_audience       `aud` missing or not one DESCOPE_AUDIENCE allows
#   token_kind           a refresh token where a session token belongs, or the reverse
#   token_claims         a claim the mapping needs is missing or unusable (sub, exp, username)
#   token_invalid        refused for another reason (e.g. no token at all)
#   descope_unreachable  network error, timeout, or a 5xx/429 from Descope    DescopeUnreachableError
#   refresh_failed       Descope refused to refresh the session, or the stored `login` is unusable
#                        (gone, unreadable): run `mlflow-descope-auth login` again  RefreshFailedError
#   access_key_rejected  Descope refused to exchange the access key           AccessKeyExchangeError
#   descope_api          Descope refused another request (e.g. the key fetch) DescopeApiError
#   refresh_store_unavailable  the server's shared refresh store failed        DescopeUnreachableError

ERROR_CODES: tuple[str, ...]
"""Every `code` the core's exceptions carry."""

class DescopeAuthError(Exception):
    """Base class of every error this package raises; `code` says which error, in a stable word."""

    code: str

class ConfigurationError(DescopeAuthError):
    """A setting is missing or invalid: `variable` names it (and `keyword` the DescopeClient argument)."""

    variable: str | None
    keyword: str | None

class InvalidTokenError(DescopeAuthError):
    """A token failed validation (shape, signature, issuer, claims)."""

class ExpiredTokenError(InvalidTokenError):
    """The session token is past its `exp` (plus leeway)."""

class DescopeUnreachableError(DescopeAuthError):
    """Descope could not be reached or answered with a server error."""

class DescopeApiError(DescopeAuthError):
    """Descope answered a request with an error."""

class RefreshFailedError(DescopeApiError):
    """Descope refused to refresh the session."""

class AccessKeyExchangeError(DescopeApiError):
    """Descope refused to exchange the access key."""

@final
class Setting:
    """One environment variable the package reads (a row of the core's settings table). Immutable."""

    @property
    def name(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def accepts(self) -> str: ...
    @property
    def minimum(self) -> float | None: ...
    @property
    def maximum(self) -> float | None: ...
    @property
    def choices(self) -> list[str]: ...
    @property
    def default(self) -> str | None: ...
    @property
    def default_shown(self) -> str: ...
    @property
    def required(self) -> bool: ...
    @property
    def keyword(self) -> str | None: ...
    @property
    def example(self) -> str: ...
    @property
    def help(self) -> str: ...

SETTINGS: tuple[Setting, ...]
"""Every environment variable the package reads, in the README's order."""

def check_setting(
    name: str, raw: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str | int | float | list[str] | list[tuple[str, str]] | None:
    """`raw` validated and normalised by the core (or the default when blank); raises
    ConfigurationError for a bad value, KeyError for a name not in the table."""

@final
class Identity:
    """Who a verified Descope session belongs to, and the MLflow permission it maps to. Immutable."""

    @property
    def user_id(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def roles(self) -> list[str]: ...
    @property
    def permissions(self) -> list[str]: ...
    @property
    def tenants(self) -> dict[str, dict[str, list[str]]]: ...
    @property
    def current_tenant(self) -> str | None: ...
    @property
    def expires_at(self) -> int: ...
    @property
    def issued_at(self) -> int | None: ...
    @property
    def is_admin(self) -> bool: ...
    @property
    def permission(self) -> str: ...
    @property
    def claims(self) -> dict[str, Any]: ...
    def has_role(self, role: str, tenant: str | None = None) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class SessionResult:
    """A session Descope issued: the identity plus the tokens to store (cookies, environment)."""

    @property
    def identity(self) -> Identity: ...
    @property
    def session_token(self) -> str: ...
    @property
    def refresh_token(self) -> str | None: ...
    @property
    def refreshed(self) -> bool: ...
    @property
    def cookie_max_age(self) -> int | None: ...

@final
class DescopeClient:
    """Validates Descope sessions and talks to Descope's API. Safe to share across threads."""

    def __new__(
        cls,
        project_id: str,
        *,
        base_url: str | None = None,
        leeway: float | None = None,
        audience: list[str] | None = None,
        admin_roles: list[str] | None = None,
        username_claim: str | None = None,
        default_permission: str | None = None,
        role_permissions: str | None = None,
        http_timeout: float | None = None,
        key_refetch_interval: float | None = None,
        key_ttl: float | None = None,
        token_cache_size: int | None = None,
    ) -> DescopeClient: ...
    @staticmethod
    def from_env(environ: Mapping[str, str] | None = None) -> DescopeClient: ...
    @property
    def project_id(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def keys_loaded(self) -> int: ...
    @property
    def key_fetch_count(self) -> int: ...
    @property
    def cached_sessions(self) -> int: ...
    @property
    def admitted_sessions(self) -> int: ...
    def settings(self) -> dict[str, Any]: ...
    def fetch_keys(self) -> int: ...
    def validate_session(self, session_token: str) -> Identity: ...
    def validate_admitted(self, session_token: str) -> Identity: ...
    def validate_cached(self, session_token: str) -> Identity | None: ...
    def validate_and_refresh_session(
        self, session_token: str | None = None, refresh_token: str | None = None
    ) -> SessionResult: ...
    def validate_refresh_token(self, refresh_token: str) -> int: ...
    def refresh_session(self, refresh_token: str) -> SessionResult: ...
    def exchange_access_key(self, access_key: str) -> SessionResult: ...
    def me(self, refresh_token: str) -> Any: ...
    def logout(self, refresh_token: str) -> None: ...

@final
class ClientSession:
    """The session a client script sends, renewed ahead of expiry, one renewal at a time. From an
    access key, a session and/or refresh token, or the ``login_file`` that ``mlflow-descope-auth
    login`` stored for ``tracking_uri`` (renewed under the file's lock, rotated tokens written back;
    RefreshFailedError, saying to sign in again, when the file is gone or cannot be renewed)."""

    def __new__(
        cls,
        client: DescopeClient,
        *,
        access_key: str | None = None,
        session_token: str | None = None,
        refresh_token: str | None = None,
        login_file: str | None = None,
        tracking_uri: str | None = None,
        refresh_margin: int = 60,
    ) -> ClientSession: ...
    def token(self) -> str: ...
    def token_and_identity(self) -> tuple[str, Identity]: ...
    def identity(self) -> Identity: ...
    def renew_after_rejection(self, rejected_token: str) -> str: ...

@type_check_only
class RefreshStore(Protocol):
    """Where the worker processes and replicas of one deployment meet for refreshes. Sees only a
    refresh token's digest (64 lowercase hex characters) and results sealed by the core."""

    def once(self, key: str, produce: Callable[[], tuple[bytes, float] | None], /) -> bytes | None: ...
    def revoke(self, key: str, ttl: float, /) -> None: ...
    def is_revoked(self, key: str, /) -> bool: ...  # raises when it cannot tell

@final
class RefreshCoordinator:
    """One refresh per refresh token across threads, workers and replicas (through ``store``; this
    process only without one), results sealed with a key derived from ``secret``."""

    def __new__(
        cls, client: DescopeClient, secret: str, store: RefreshStore | None = None
    ) -> RefreshCoordinator: ...
    def refresh(self, refresh_token: str) -> SessionResult: ...
    def revoke(self, refresh_token: str) -> None: ...
    def sign_out(self, refresh_token: str) -> None: ...

@final
class StoredLogin:
    """A session ``mlflow-descope-auth login`` stores for one tracking server. Its tokens go into the
    core and are never read back; ``renewable`` says whether it holds a refresh token."""

    def __new__(
        cls,
        *,
        tracking_uri: str,
        project_id: str,
        base_url: str,
        session_token: str,
        refresh_token: str | None,
        user: str,
    ) -> StoredLogin: ...
    @property
    def tracking_uri(self) -> str: ...
    @property
    def project_id(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def renewable(self) -> bool: ...
    def with_tracking_uri(self, tracking_uri: str) -> StoredLogin: ...

def load_login(path: str, tracking_uri: str) -> StoredLogin:
    """The login stored in ``path`` for ``tracking_uri``; RefreshFailedError (saying to run
    ``mlflow-descope-auth login`` again) when there is none or it is not this package's."""

def save_login(path: str, login: StoredLogin) -> None:
    """Writes ``login`` atomically (0600 in a 0700 directory), under the file's lock. OSError."""

def delete_login(path: str) -> bool:
    """Deletes the login under the file's lock; False when there was none. OSError."""

def logout_login(path: str, client: DescopeClient) -> None:
    """Ends the login's refresh token at Descope (nothing without one); the file stays."""

def seal_with_code(code: str, payload: bytes) -> bytes:
    """``payload`` sealed with a key derived from the one-time ``code`` (AES-256-GCM, versioned)."""

def open_with_code(code: str, blob: bytes) -> bytes:
    """What ``seal_with_code`` sealed; InvalidTokenError for another code or an altered blob."""
