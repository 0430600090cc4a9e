"""The session gate: every request passes here before MLflow, deny by default.

Credentials: ``Authorization: Bearer <session jwt>`` (API clients) or the ``DS``/``DSR`` cookies
(browsers). An expired ``DS`` with a valid ``DSR`` is refreshed once per host (single flight across
threads and worker processes sharing the state directory), the request goes on with the new session,
and the response sets the new cookies. Unauthenticated browser
page loads are redirected to the login page; everything else gets 401 JSON.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from mlflow_descope_auth._core import (
    DescopeAuthError,
    DescopeClient,
    DescopeUnreachableError,
    ExpiredTokenError,
    Identity,
    InvalidTokenError,
    RefreshFailedError,
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
from mlflow_descope_auth.server.settings import ServerSettings

_log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Admissions:
    """Sessions the gate let in shortly before they expire, remembered until a minute after.

    MLflow's authorization function checks the request's credential again, later in the same
    request; a busy worker can queue a request for seconds in between, and a session the gate
    accepted must not be refused there because its time ran out meanwhile (the browser would be
    told to sign in again although its refresh token is fine). Process-local, keyed by the token,
    so nothing a client sends can add to it.
    """

    WINDOW_SECONDS = 120  # only sessions this close to their expiry are remembered
    GRACE_SECONDS = 60
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admitted: dict[str, Identity] = {}

    def admit(self, token: str, identity: Identity) -> None:
        now = time.time()
        if identity.expires_at - now > self.WINDOW_SECONDS:
            return
        with self._lock:
            if len(self._admitted) >= self.MAX_ENTRIES:
                cutoff = now - self.GRACE_SECONDS
                self._admitted = {t: i for t, i in self._admitted.items() if i.expires_at > cutoff}
            self._admitted[token] = identity

    def identity(self, token: str) -> Identity | None:
        with self._lock:
            identity = self._admitted.get(token)
        if identity is None or identity.expires_at + self.GRACE_SECONDS < time.time():
            return None
        return identity


admissions = Admissions()


@dataclass
class Verdict:
    """What the gate decided: answer now (``response``), or pass on with these changes."""

    response: Response | None = None
    identity: Identity | None = None
    set_cookies: list[tuple[str, str]] = field(default_factory=list)
    # Header name (lower case) -> new value, or None to drop it.
    header_changes: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Renewal:
    """A refreshed session: what the gate needs to serve the request and set the new cookies."""

    identity: Identity
    session_token: str
    refresh_token: str | None
    cookie_max_age: int | None

    @classmethod
    def of(cls, result: SessionResult) -> Renewal:
        return cls(result.identity, result.session_token, result.refresh_token, result.cookie_max_age)


class RefreshCoordinator:
    """One refresh per refresh token across all workers on this host.

    The browser sends several requests at once, and with refresh-token rotation only the first
    refresh of a ``DSR`` succeeds at Descope. So the first worker to take the token's file lock
    refreshes and leaves the result for a short grace period; the others (threads or worker
    processes) wait on the lock and reuse that result instead of being logged out. Results are kept
    in memory and, for the other processes, in the state directory (mode 0600, deleted after the
    grace period). Replicas on other hosts share it when their state directory is on a shared
    filesystem (RELIABILITY.md).

    A refresh that failed because Descope is unreachable is shared too, for a few seconds: the
    requests queued behind it on the lock get the same answer at once instead of each waiting out
    its own timeout in turn.

    Signing out (``forget``) must end a refresh token everywhere at once, but another process's
    memory cannot be reached. So ``forget`` leaves a tombstone in the state directory, and every
    process looks for one before it uses a remembered result (its own or a shared one) or asks
    Descope: a signed-out token, or a remembered result that rotated into one, is refused.
    """

    GRACE_SECONDS = 30.0
    UNREACHABLE_SECONDS = 5.0
    # A tombstone outlives every result remembered for its token: those made before the sign-out
    # (at most GRACE_SECONDS old) and one that a refresh in flight at that moment stores after it.
    REVOKED_SECONDS = 4 * GRACE_SECONDS
    REVOKED_MESSAGE = "the refresh token was revoked when the user signed out; sign in again"

    def __init__(self, client: DescopeClient, state_dir: Path) -> None:
        self._client = client
        self._dir = state_dir / "refresh"
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._done: dict[str, tuple[float, Renewal | DescopeAuthError]] = {}
        # Tombstones this process wrote (the files are what the other processes see).
        self._revoked: dict[str, float] = {}
        self._sweep()  # results a previous run left behind

    @staticmethod
    def _key(refresh_token: str) -> str:
        return hashlib.sha256(refresh_token.encode()).hexdigest()

    def refresh(self, refresh_token: str) -> Renewal:
        key = self._key(refresh_token)
        self._refuse_if_revoked(key)  # before the cache and before Descope
        hit = self._recent(key)
        if hit is None:
            # 256 striped lock files, never deleted (deleting a lock file someone waits on would
            # let two processes hold "the" lock).
            with open(self._dir / f"stripe-{key[:2]}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    hit = self._recent(key) or self._shared(key)
                    if hit is None:
                        self._refuse_if_revoked(key)  # signed out while this request waited
                        hit = self._refresh_now(key, refresh_token)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        if isinstance(hit, DescopeAuthError):
            raise hit
        # A remembered result is handed out only while neither the token it renewed nor the one
        # it rotated into has been signed out since.
        self._refuse_if_revoked(key)
        if hit.refresh_token and hit.refresh_token != refresh_token:
            self._refuse_if_revoked(self._key(hit.refresh_token))
        return hit

    def forget(self, refresh_token: str) -> None:
        """Ends a refresh token here at sign-out: drops its remembered result from this process and
        from the shared store, and leaves a tombstone (mode 0600) that the other worker processes
        and replicas sharing the state directory check before they use a result of their own.
        The tombstone goes first, so no process hands out a result after this returns."""
        key = self._key(refresh_token)
        expires = time.time() + self.REVOKED_SECONDS
        with self._lock:
            now = time.time()
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._revoked[key] = expires
            self._done.pop(key, None)
        tomb = self._dir / f"{key}.revoked.json"
        temp = self._dir / f"{key}.revoked.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"expires": expires, "revoked": True}, f)
            os.replace(temp, tomb)  # atomic: a reader sees no tombstone or a whole one
        except OSError as exc:
            # This process still refuses the token; the others keep their results until they expire.
            _log.warning("Could not record a sign-out in %s: %s", self._dir, exc)
            temp.unlink(missing_ok=True)
        (self._dir / f"{key}.json").unlink(missing_ok=True)
        self._sweep()

    def _refuse_if_revoked(self, key: str) -> None:
        if self._is_revoked(key):
            with self._lock:
                self._done.pop(key, None)
            raise RefreshFailedError(self.REVOKED_MESSAGE)

    def _is_revoked(self, key: str) -> bool:
        now = time.time()
        with self._lock:
            if self._revoked.get(key, 0.0) > now:
                return True
        try:
            text = (self._dir / f"{key}.revoked.json").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return True  # unreadable: fail closed (a refresh token that works is one sign-in away)
        try:
            payload = json.loads(text)
            return bool(payload["expires"] > now)
        except (ValueError, KeyError, TypeError):
            return True  # written atomically by forget, so never half there: something else; closed

    def _refresh_now(self, key: str, refresh_token: str) -> Renewal | DescopeAuthError:
        outcome: Renewal | DescopeAuthError
        grace = self.GRACE_SECONDS
        try:
            outcome = Renewal.of(self._client.refresh_session(refresh_token))
        except DescopeUnreachableError as exc:
            # Remembered only briefly: Descope may be back for the next request.
            outcome, grace = exc, self.UNREACHABLE_SECONDS
        except DescopeAuthError as exc:
            outcome = exc  # remembered, so a bad DSR does not send every request to Descope
        expires = time.time() + grace
        with self._lock:
            now = time.time()
            self._done = {k: v for k, v in self._done.items() if v[0] > now}
            self._done[key] = (expires, outcome)
        payload: dict[str, object] | None = None
        if isinstance(outcome, Renewal):
            payload = {
                "expires": expires,
                "session": outcome.session_token,
                "refresh": outcome.refresh_token,
                "cookie_max_age": outcome.cookie_max_age,
            }
        elif isinstance(outcome, DescopeUnreachableError):
            payload = {"expires": expires, "unreachable": str(outcome)}
        if payload is not None:
            path = self._dir / f"{key}.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f)
        self._sweep()
        return outcome

    def _recent(self, key: str) -> Renewal | DescopeAuthError | None:
        with self._lock:
            entry = self._done.get(key)
        return entry[1] if entry is not None and entry[0] > time.time() else None

    def _shared(self, key: str) -> Renewal | DescopeUnreachableError | None:
        """Another worker's result for this refresh token, re-validated here (signature and all)."""
        try:
            payload = json.loads((self._dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(payload, dict) or payload.get("expires", 0) <= time.time():
            self._sweep()
            return None
        if isinstance(payload.get("unreachable"), str):
            return DescopeUnreachableError(payload["unreachable"])
        try:
            identity = self._client.validate_session(payload["session"])
        except (DescopeAuthError, KeyError, TypeError):
            return None
        refresh, max_age = payload.get("refresh"), payload.get("cookie_max_age")
        return Renewal(
            identity,
            payload["session"],
            refresh if isinstance(refresh, str) else None,
            max_age if isinstance(max_age, int) else None,
        )

    def _sweep(self) -> None:
        """Deletes results and tombstones past their time (``*.json``: both have ``expires``)."""
        now = time.time()
        for path in self._dir.glob("*.json"):
            try:
                if json.loads(path.read_text()).get("expires", 0) <= now:
                    path.unlink(missing_ok=True)
            except (OSError, ValueError, AttributeError):
                continue


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


def is_navigation(req: Request) -> bool:
    """A browser loading a page (not a script's fetch): gets a redirect to the login page."""
    if req.method != "GET":
        return False
    mode = req.headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in req.headers.get("accept", "")


class Gate:
    def __init__(self, client: DescopeClient, settings: ServerSettings) -> None:
        self.client = client
        self.settings = settings
        self.prefix = settings.static_prefix
        self.refresher = RefreshCoordinator(client, settings.state_dir)
        p = self.prefix
        self.public_paths = frozenset(
            {f"{p}/health", f"{p}/auth/health", f"{p}/auth/login", f"{p}/auth/session", f"{p}/auth/logout"}
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

    def deny(self, req: Request, message: str, *, reason: str = "required", clear: bool = False) -> Verdict:
        headers = clear_cookies(secure=self.secure_cookies(req), path=self.cookie_path) if clear else []
        if is_navigation(req):
            return Verdict(Response.redirect(self.login_url(req.full_path, reason), headers))
        headers.append(("WWW-Authenticate", 'Bearer realm="mlflow", error="invalid_token"'))
        return Verdict(error(401, "UNAUTHENTICATED", message, headers))

    def check(self, req: Request) -> Verdict:
        """The gate's decision. May call Descope (key fetch, refresh): run it off the event loop
        unless ``check_cached`` already answered."""
        strip = _client_descope_headers(req)
        if self.is_public(req.path):
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
        admissions.admit(token, identity)
        return Verdict(identity=identity, header_changes=_client_descope_headers(req))

    def _check_credentials(self, req: Request) -> Verdict:
        authorization = req.headers.get("authorization")
        if authorization is not None:
            token = _bearer(req)
            if not token:
                return self.deny(req, "this server expects 'Authorization: Bearer <Descope session token>'")
            try:
                identity = self.client.validate_session(token)
                admissions.admit(token, identity)
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
            return self.deny(req, "sign in with Descope: send 'Authorization: Bearer <session token>'")
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
                admissions.admit(session, identity)
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
                req, f"the session expired and cannot be renewed right now: {exc}", reason="unavailable"
            )
        except ExpiredTokenError:
            return self.deny(
                req, "the session and its refresh token expired; sign in again", reason="expired", clear=True
            )
        except DescopeAuthError as exc:
            detail = str(exc).replace("invalid session token", "the refresh token is invalid")
            return self.deny(req, f"the session could not be renewed: {detail}", reason="invalid", clear=True)
        try:
            result = self.refresher.refresh(refresh)
        except DescopeUnreachableError as exc:
            # The session ended and cannot be renewed now: the browser goes back to the login page
            # (which says Descope is unreachable), an API client gets 401. The cookies stay: the
            # refresh token is still good once Descope is back.
            _log.warning("Descope unreachable while renewing a session: %s", exc)
            return self.deny(
                req, f"the session expired and cannot be renewed right now: {exc}", reason="unavailable"
            )
        except DescopeAuthError as exc:
            return self.deny(req, f"the session could not be renewed: {exc}", reason="expired", clear=True)
        return self._refreshed(req, result, cookies)

    def _refreshed(self, req: Request, result: Renewal, cookies: dict[str, str]) -> Verdict:
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
        admissions.admit(result.session_token, result.identity)
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
