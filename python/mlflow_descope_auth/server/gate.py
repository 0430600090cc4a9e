"""The session gate: every request passes here before MLflow, deny by default.

Credentials: ``Authorization: Bearer <session jwt>`` (API clients) or the ``DS``/``DSR`` cookies
(browsers). An expired ``DS`` with a valid ``DSR`` is renewed by the core's ``RefreshCoordinator``
(once per refresh token across threads, workers and replicas, through the refresh store), the
request goes on with the new session, and the response sets the new cookies. Unauthenticated
browser page loads are redirected to the login page; everything else gets 401 JSON.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from mlflow_descope_auth._core import (
    DescopeAuthError,
    DescopeClient,
    DescopeUnreachableError,
    ExpiredTokenError,
    Identity,
    InvalidTokenError,
    RefreshCoordinator,
    SessionResult,
)
from mlflow_descope_auth.server.http import (
    REFRESH_COOKIE,
    SESSION_COOKIE,
    Request,
    Response,
    clear_cookies,
    error,
    session_cookies,
)
from mlflow_descope_auth.server.internal_credential import InternalCredential
from mlflow_descope_auth.server.settings import ServerSettings

_log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Verdict:
    """What the gate decided: answer now (``response``), or pass on with these changes."""

    response: Response | None = None
    identity: Identity | None = None
    set_cookies: list[tuple[str, str]] = field(default_factory=list)
    # Header name (lower case) -> new value, or None to drop it.
    header_changes: dict[str, str | None] = field(default_factory=dict)


def same_origin(req: Request) -> bool:
    """The request's Origin (or, lacking one, Referer) names this very host: the Host header, or the
    X-Forwarded-Host a reverse proxy sets when it rewrites Host. Trusting the latter is safe here: a
    cross-site page cannot make a browser send it (it is not a CORS-safelisted header)."""
    source = req.headers.get("origin") or req.headers.get("referer")
    if not source or source == "null":
        return False
    try:
        netloc = urlsplit(source).netloc.lower()
    except ValueError:
        return False
    forwarded = req.headers.get("x-forwarded-host", "").split(",")[0].strip().lower()
    return bool(netloc) and netloc in {req.host.lower(), forwarded}


def from_browser(req: Request) -> bool:
    """A browser's request rather than an API client's: no Authorization header, and Fetch Metadata
    (which browsers send and HTTP libraries do not) or our session cookies."""
    if "authorization" in req.headers:
        return False
    if "sec-fetch-mode" in req.headers or "sec-fetch-site" in req.headers:
        return True
    cookies = req.cookies
    return SESSION_COOKIE in cookies or REFRESH_COOKIE in cookies


# What a person reads when MLflow's page shows the 401 (its script normally goes to the login page
# first); API clients get the precise reason instead.
PERSON_SIGNED_OUT = "You are not signed in. Reload the page to sign in."
PERSON_SESSION_ENDED = "Your session has ended. Reload the page to sign in again."
PERSON_CANNOT_RENEW = "Your session has ended and cannot be renewed right now: try again in a moment."


def is_navigation(req: Request) -> bool:
    """A browser loading a page (not a script's fetch): gets a redirect to the login page."""
    if req.method != "GET":
        return False
    mode = req.headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in req.headers.get("accept", "")


class Gate:
    def __init__(
        self,
        client: DescopeClient,
        settings: ServerSettings,
        refresher: RefreshCoordinator | None = None,
        internal: InternalCredential | None = None,
    ) -> None:
        self.client = client
        self.internal = internal or InternalCredential(None, settings.static_prefix)
        self.settings = settings
        self.prefix = settings.static_prefix
        # Without a store the coordinator serves this process only, and its results never leave it:
        # a throwaway secret does.
        self.refresher = refresher or RefreshCoordinator(client, secrets.token_urlsafe(32))
        p = self.prefix
        self.public_paths = frozenset(
            {f"{p}/health", f"{p}/auth/health", f"{p}/auth/login", f"{p}/auth/session", f"{p}/auth/logout"}
            # The command line's code exchange: the PKCE verifier is its credential.
            | {f"{p}/auth/cli/token"}
        )
        self.public_prefixes = (f"{p}/auth/static/",)
        self.cookie_path = f"{p}/" if p else "/"

    def is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)

    def secure_cookies(self, req: Request) -> bool:
        mode = self.settings.cookie_secure
        return mode == "true" or (mode == "auto" and req.is_https)

    def login_url(self, next_path: str | None = None, message: str | None = None) -> str:
        query = []
        if next_path:
            query.append(f"next={quote(next_path, safe='/')}")
        if message:
            query.append(f"message={message}")
        return f"{self.prefix}/auth/login" + (f"?{'&'.join(query)}" if query else "")

    def deny(
        self,
        req: Request,
        message: str,
        *,
        reason: str = "required",
        clear: bool = False,
        person: str = PERSON_SESSION_ENDED,
    ) -> Verdict:
        """The login page for a page load; else 401 with ``message`` for an API client, or
        ``person`` for a browser's script (``message`` then goes in ``detail``)."""
        headers = clear_cookies(secure=self.secure_cookies(req), path=self.cookie_path) if clear else []
        if is_navigation(req):
            return Verdict(Response.redirect(self.login_url(req.full_path, reason), headers))
        headers.append(("WWW-Authenticate", 'Bearer realm="mlflow", error="invalid_token"'))
        if from_browser(req):
            return Verdict(error(401, "UNAUTHENTICATED", person, headers, detail=message))
        return Verdict(error(401, "UNAUTHENTICATED", message, headers))

    def check(self, req: Request) -> Verdict:
        """The gate's decision. May call Descope (key fetch, refresh): run it off the event loop
        unless ``check_cached`` already answered."""
        strip = _client_descope_headers(req)
        if self.is_public(req.path):
            return Verdict(header_changes=strip)
        if self.internal.username(req.method, req.path, req.headers.get("authorization")) is not None:
            # A server job's gateway call: MLflow's gateway check decides, as the job's user (authz).
            return Verdict(header_changes=strip)
        try:
            verdict = self._check_credentials(req)
        except DescopeUnreachableError as exc:
            _log.warning("Descope unreachable while checking a session: %s", exc)
            if is_navigation(req):
                # A person at a browser gets the login page saying so, with a way to try again.
                return Verdict(Response.redirect(self.login_url(req.full_path, "unavailable")))
            return Verdict(
                error(
                    503,
                    "TEMPORARILY_UNAVAILABLE",
                    f"cannot verify the session right now: {exc}",
                    [("Retry-After", "5")],
                )
            )
        verdict.header_changes = {**strip, **verdict.header_changes}
        return verdict

    def check_cached(self, req: Request) -> Verdict | None:
        """The common case without I/O: a Bearer token or a ``DS`` cookie seen before. None means
        "ask ``check``"."""
        if self.is_public(req.path):
            return None
        bearer = _bearer(req)
        token = bearer if bearer is not None else req.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        if bearer is None and req.method not in SAFE_METHODS:
            return None  # the origin check lives in `check`
        identity = self.client.validate_cached(token)
        if identity is None:
            return None
        return Verdict(identity=identity, header_changes=_client_descope_headers(req))

    def _check_credentials(self, req: Request) -> Verdict:
        authorization = req.headers.get("authorization")
        if authorization is not None:
            token = _bearer(req)
            if not token:
                return self.deny(req, "this server expects 'Authorization: Bearer <Descope session token>'")
            try:
                identity = self.client.validate_session(token)
                return Verdict(identity=identity)
            except ExpiredTokenError:
                return self.deny(req, "the Descope session expired; refresh it and retry", reason="expired")
            except DescopeUnreachableError:
                raise  # 503 in `check`: the token may be fine, the keys are out of reach
            except DescopeAuthError as exc:
                return self.deny(req, str(exc), reason="invalid")

        cookies = req.cookies
        session, refresh = cookies.get(SESSION_COOKIE), cookies.get(REFRESH_COOKIE)
        if not session and not refresh:
            return self.deny(
                req,
                "sign in with Descope: send 'Authorization: Bearer <session token>'",
                person=PERSON_SIGNED_OUT,
            )
        if req.method not in SAFE_METHODS and not same_origin(req):
            return Verdict(
                error(
                    403,
                    "PERMISSION_DENIED",
                    "cross-origin request with a session cookie refused (Origin does not match)",
                )
            )
        if session:
            try:
                identity = self.client.validate_session(session)
                return Verdict(identity=identity)
            except (ExpiredTokenError, InvalidTokenError) as exc:
                if not refresh:
                    return self.deny(req, str(exc), reason="expired", clear=True)
        assert refresh is not None
        # The refresh token is checked here first (signature, issuer, drn DSR, expiry): a forged or
        # stale one must not cost a call to Descope, nor hold a worker thread while Descope answers.
        try:
            self.client.validate_refresh_token(refresh)
        except DescopeUnreachableError as exc:
            # The signing keys are out of reach: as below, the cookies stay for when Descope is back.
            _log.warning("Descope unreachable while checking a refresh token: %s", exc)
            return self.deny(
                req,
                f"the session expired and cannot be renewed right now: {exc}",
                reason="unavailable",
                person=PERSON_CANNOT_RENEW,
            )
        except ExpiredTokenError:
            return self.deny(
                req, "the session and its refresh token expired; sign in again", reason="expired", clear=True
            )
        except DescopeAuthError as exc:
            return self.deny(req, f"the session could not be renewed: {exc}", reason="invalid", clear=True)
        try:
            result = self.refresher.refresh(refresh)
        except DescopeUnreachableError as exc:
            # The session ended and cannot be renewed now: the browser goes back to the login page
            # (which says Descope is unreachable), an API client gets 401. The cookies stay: the
            # refresh token is still good once Descope (or the refresh store) is back.
            _log.warning("Cannot renew a session right now: %s", exc)
            # What failed inside this deployment (its database, its hosts) is for the log only.
            detail = "try again in a moment" if exc.code == "refresh_store_unavailable" else str(exc)
            return self.deny(
                req,
                f"the session expired and cannot be renewed right now: {detail}",
                reason="unavailable",
                person=PERSON_CANNOT_RENEW,
            )
        except DescopeAuthError as exc:
            return self.deny(req, f"the session could not be renewed: {exc}", reason="expired", clear=True)
        return self._refreshed(req, result, cookies)

    def _refreshed(self, req: Request, result: SessionResult, cookies: dict[str, str]) -> Verdict:
        new_refresh = result.refresh_token if result.refresh_token != cookies.get(REFRESH_COOKIE) else None
        set_cookies = session_cookies(
            result.session_token,
            new_refresh,
            session_max_age=result.identity.expires_at - int(time.time()),
            refresh_max_age=result.cookie_max_age,
            secure=self.secure_cookies(req),
            path=self.cookie_path,
        )
        # MLflow's authorization function re-reads the credential from the request: hand it the new one.
        cookies = {**cookies, SESSION_COOKIE: result.session_token}
        if result.refresh_token:
            cookies[REFRESH_COOKIE] = result.refresh_token
        # Cookies that were not valid UTF-8 (parsed to U+FFFD) cannot go back into a header: dropped.
        cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items() if _latin1(k) and _latin1(v))
        return Verdict(
            identity=result.identity, set_cookies=set_cookies, header_changes={"cookie": cookie_header}
        )


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


# MLflow's own credentials beside the user's: its internal gateway token (X-MLflow-Authorization) and,
# in 3.18, the Assistant's delegation token, which MLflow honours *before* the authorization function
# and would let a request act as another user. This server issues neither.
_MLFLOW_CREDENTIAL_HEADERS = frozenset({"x-mlflow-authorization", "x-mlflow-assistant-delegation"})


def _client_descope_headers(req: Request) -> dict[str, str | None]:
    """``X-Descope-*`` headers and MLflow's own credential headers a client sent, marked for
    removal: only the verified token speaks."""
    return {h: None for h in req.headers if h.startswith("x-descope-") or h in _MLFLOW_CREDENTIAL_HEADERS}


def _bearer(req: Request) -> str | None:
    value = req.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else ""
