"""The ``/auth`` endpoints: login page, session hand-off, logout, current user, health."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth._core import DescopeAuthError, DescopeClient, DescopeUnreachableError, Identity
from mlflow_descope_auth.server.cli_login import (
    CliCodes,
    CliCodesUnavailable,
    CliLoginError,
    CliRequest,
    loopback_redirect,
)
from mlflow_descope_auth.server.gate import Gate, same_origin
from mlflow_descope_auth.server.http import (
    REFRESH_COOKIE,
    SESSION_COOKIE,
    Request,
    Response,
    clear_cookies,
    error,
    session_cookies,
)
from mlflow_descope_auth.server.settings import is_local_path
from mlflow_descope_auth.server.ui_page import UI_SCRIPTS

_log = logging.getLogger(__name__)

# ?message=<key> on the login page: (notice style, text). Unknown keys show nothing.
MESSAGES = {
    "expired": ("info", "Your session expired. Please sign in again."),
    "invalid": ("warning", "Your session is no longer valid. Please sign in again."),
    "required": ("info", "Please sign in to continue."),
    "denied": ("error", "Access was denied. Sign in with an account that may use this server."),
    "unavailable": (
        "warning",
        "Descope could not be reached to check your session. Please try again in a moment.",
    ),
    "logged_out": ("success", "You have signed out."),
}

STATIC_DIR = Path(__file__).with_name("static")


# The login page's own assets and the scripts for MLflow's page: public (the login page is shown
# before sign-in, and MLflow's page needs its script to find out that the session has ended), so an
# explicit list.
STATIC_FILES: dict[str, tuple[Callable[[], Path], str]] = {
    "login.js": (lambda: STATIC_DIR / "login.js", "text/javascript; charset=utf-8"),
    "mlflow.ico": (mlflow_internals.mlflow_favicon, "image/x-icon"),
    **{
        name: ((lambda name=name: STATIC_DIR / name), "text/javascript; charset=utf-8")  # type: ignore[misc]
        for name in UI_SCRIPTS
    },
}

# /auth/names: how many usernames one request may ask about, and how long each may be.
MAX_NAMES = 100
MAX_NAME_LENGTH = 255


def provision_quietly(identity: Identity) -> None:
    """Puts a user who signs in (or asks who they are) into MLflow's user store at once, so an admin
    can grant them permissions before their first MLflow request. Best effort: if the auth DB is
    down, the first MLflow request provisions them instead."""
    from mlflow_descope_auth.server import display_names
    from mlflow_descope_auth.server.authz import provision

    try:
        provision(identity)
    except Exception as exc:  # the DB driver's errors are not one hierarchy; never fail a sign-in on them
        _log.warning("Could not add %s to the user store yet: %s", identity.username, type(exc).__name__)
    display_names.remember_quietly(identity)


class AuthRoutes:
    HEALTH_CACHE_SECONDS = 5.0

    def __init__(self, gate: Gate, client: DescopeClient, cli_codes: CliCodes | None = None) -> None:
        self.gate = gate
        self.client = client
        self._cli_codes = cli_codes
        self.prefix = gate.prefix
        self._health: tuple[float, bool, str] | None = None
        self._health_lock = threading.Lock()
        self._static_cache: dict[str, bytes] = {}

    @cached_property
    def cli_codes(self) -> CliCodes:
        """The command line's one-time sign-in codes, in the auth DB every worker shares."""
        if self._cli_codes is None:
            from mlflow.server.auth import auth_config

            self._cli_codes = CliCodes(auth_config.database_uri)
        return self._cli_codes

    @cached_property
    def _templates(self) -> Environment:
        return Environment(
            loader=FileSystemLoader(Path(__file__).with_name("templates")),
            autoescape=select_autoescape(["html"]),
        )

    def handles(self, path: str) -> bool:
        return path.startswith(f"{self.prefix}/auth/")

    def dispatch(self, req: Request, identity: Identity | None) -> Response:
        name = req.path[len(self.prefix) + len("/auth/") :]
        if name.startswith("static/"):
            return self.static(name[len("static/") :], req.method)
        routes = {
            ("login", "GET"): lambda: self.login(req),
            ("session", "POST"): lambda: self.session(req),
            ("logout", "GET"): lambda: self.logout(req),
            ("logout", "POST"): lambda: self.logout(req),
            ("user", "GET"): lambda: self.user(identity),
            ("cli/token", "POST"): lambda: self.cli_token(req),
            ("names", "GET"): lambda: self.names(req, identity),
            ("health", "GET"): self.health,
        }
        handler = routes.get((name, req.method))
        if handler is None:
            known = {n for n, _ in routes}
            if name in known:
                return error(405, "METHOD_NOT_ALLOWED", f"{req.method} is not allowed on /auth/{name}")
            return error(404, "ENDPOINT_NOT_FOUND", f"no such endpoint: /auth/{name}")
        return handler()

    def safe_next(self, candidate: str | None) -> str:
        default = self.gate.settings.redirect_url
        if candidate and is_local_path(candidate) and not candidate.startswith(f"{self.prefix}/auth/"):
            return candidate
        return default if default.startswith(self.prefix or "/") else f"{self.prefix}{default}"

    def login(self, req: Request) -> Response:
        query = req.query
        message = MESSAGES.get(query.get("message", ""))
        cli = None
        fields = {k: v[0] for k, v in parse_qs(req.query_string, keep_blank_values=True).items()}
        if "cli" in fields:  # `mlflow-descope-auth login` sent the browser here
            try:
                cli = CliRequest.parse(fields).as_fields()
            except CliLoginError as exc:
                return error(400, "INVALID_PARAMETER_VALUE", f"{exc}: run `mlflow-descope-auth login` again")
        page = self._templates.get_template("login.html").render(
            project_id=self.client.project_id,
            flow_id=self.gate.settings.flow_id,
            base_url=self.client.base_url,
            web_component_url=self.gate.settings.web_component_url,
            session_url=f"{self.prefix}/auth/session",
            static_url=f"{self.prefix}/auth/static",
            next_path=self.safe_next(query.get("next")),
            message={"kind": message[0], "text": message[1]} if message else None,
            cli=cli,
            secure_cookies=self.gate.secure_cookies(req),
        )
        return Response.html(200, page)

    def static(self, name: str, method: str) -> Response:
        entry = STATIC_FILES.get(name)
        if entry is None:
            return error(404, "ENDPOINT_NOT_FOUND", f"no such endpoint: /auth/static/{name}")
        if method not in ("GET", "HEAD"):
            return error(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on /auth/static/{name}")
        locate, content_type = entry
        body = self._static_cache.get(name)
        if body is None:
            try:
                body = self._static_cache.setdefault(name, locate().read_bytes())
            except OSError:  # e.g. an MLflow install without its UI build
                return error(404, "ENDPOINT_NOT_FOUND", f"no such endpoint: /auth/static/{name}")
        headers = [("Content-Type", content_type), ("Cache-Control", "public, max-age=3600")]
        return Response(200, b"" if method == "HEAD" else body, headers)

    def session(self, req: Request) -> Response:
        """The login page posts the web component's tokens here; cookies are set only after they
        validate. Same-origin only: a cross-site page must not log a browser into another account."""
        if not same_origin(req):
            return error(403, "PERMISSION_DENIED", "sign-in must come from this server's own login page")
        try:
            body = json.loads(req.body or b"{}")
        except RecursionError:  # e.g. "[" * 10_000: nested deeper than the parser goes
            return error(400, "INVALID_PARAMETER_VALUE", "the body must be JSON, and not nested this deeply")
        except ValueError:  # not JSON, not UTF-8, an integer with too many digits
            return error(400, "INVALID_PARAMETER_VALUE", "the body must be JSON")
        if not isinstance(body, dict):
            return error(400, "INVALID_PARAMETER_VALUE", "the body must be a JSON object")
        session_token, refresh_token = body.get("sessionJwt"), body.get("refreshJwt")
        if not isinstance(session_token, str) or (
            refresh_token is not None and not isinstance(refresh_token, str)
        ):
            return error(
                400, "INVALID_PARAMETER_VALUE", "sessionJwt (and refreshJwt, if sent) must be strings"
            )
        cli = None
        if body.get("cli") is not None:
            try:
                cli = CliRequest.parse(body["cli"] if isinstance(body["cli"], dict) else {})
            except CliLoginError as exc:
                return error(400, "INVALID_PARAMETER_VALUE", str(exc))
        try:
            identity = self.client.validate_session(session_token)
            refresh_exp = self.client.validate_refresh_token(refresh_token) if refresh_token else None
        except DescopeUnreachableError as exc:
            return error(503, "TEMPORARILY_UNAVAILABLE", f"cannot verify the session right now: {exc}")
        except DescopeAuthError as exc:
            return error(401, "UNAUTHENTICATED", str(exc))
        provision_quietly(identity)  # before the cookie lifetimes: it may take a moment
        now = int(time.time())
        cookies = session_cookies(
            session_token,
            refresh_token,
            session_max_age=identity.expires_at - now,
            refresh_max_age=(refresh_exp - now) if refresh_exp else None,
            secure=self.gate.secure_cookies(req),
            path=self.gate.cookie_path,
        )
        _log.info("Signed in %s", identity.username)
        next_path = self.safe_next(body.get("next") if isinstance(body.get("next"), str) else None)
        if cli is not None:
            tokens = {
                "sessionJwt": session_token,
                "refreshJwt": refresh_token,
                "projectId": self.client.project_id,
                "baseUrl": self.client.base_url,
            }
            try:
                next_path = loopback_redirect(cli, self.cli_codes.issue(cli, tokens))
            except CliCodesUnavailable as exc:
                return error(503, "TEMPORARILY_UNAVAILABLE", f"{exc}; try again in a moment")
        return Response.json(200, {"redirect": next_path, "user": identity.username}, cookies)

    def cli_token(self, req: Request) -> Response:
        """The command line trades its one-time code and PKCE verifier for the session it started.
        No cookie or Origin counts here: the verifier, which never left the CLI, is the proof."""
        try:
            body = json.loads(req.body or b"{}")
        except (RecursionError, ValueError):
            return error(400, "INVALID_PARAMETER_VALUE", "the body must be a JSON object")
        if not isinstance(body, dict):
            return error(400, "INVALID_PARAMETER_VALUE", "the body must be a JSON object")
        try:
            tokens = self.cli_codes.redeem(body.get("code"), body.get("verifier"))
        except CliLoginError as exc:
            return error(400, "INVALID_PARAMETER_VALUE", str(exc))
        except CliCodesUnavailable as exc:
            return error(503, "TEMPORARILY_UNAVAILABLE", str(exc))
        return Response.json(200, tokens)

    def logout(self, req: Request) -> Response:
        """Signs out: revokes the refresh token at Descope, ends it in every worker's refresh cache
        and clears the cookies. A POST must come from this site (a foreign page must not sign users
        out with a form). So must a GET, which the browser also sends when a foreign page links to,
        redirects to or embeds this URL (SameSite=Lax cookies go along on a top-level navigation,
        and to any port of the same host): a GET that is not plainly the user's own (this site's
        "Sign out" link, or a typed URL or bookmark) gets a page asking to confirm, which POSTs,
        unless the request holds no live session (then there is nothing a foreign page could end)."""
        if req.method == "POST" and not same_origin(req):
            return error(403, "PERMISSION_DENIED", "sign-out must come from this server's own pages")
        cookies = req.cookies
        refresh = cookies.get(REFRESH_COOKIE) or None
        genuine = refresh is not None and self._refresh_token_is_genuine(refresh)
        if (
            req.method == "GET"
            and not self._own_sign_out_get(req)
            and (genuine or self._session_is_live(cookies.get(SESSION_COOKIE)))
        ):
            return self._confirm_logout()
        if refresh is not None and genuine:
            # The core revokes the token (and the one it rotated into) in every worker and replica
            # before Descope's logout, so none renews the session from a remembered result.
            try:
                self.gate.refresher.sign_out(refresh)
            except DescopeAuthError as exc:
                # The cookies go regardless; the user is signed out of this server.
                _log.warning("Signing out did not complete everywhere: %s", exc)
        headers = clear_cookies(secure=self.gate.secure_cookies(req), path=self.gate.cookie_path)
        return Response.redirect(self.gate.login_url(message="logged_out"), headers)

    @staticmethod
    def _own_sign_out_get(req: Request) -> bool:
        """A GET /auth/logout the user asked for: from this origin's own pages, or typed / a bookmark
        (Sec-Fetch-Site ``none``). Browsers without Fetch Metadata are judged by Origin or Referer."""
        site = req.headers.get("sec-fetch-site")
        if site is not None:
            return site.strip().lower() in ("same-origin", "none")
        return same_origin(req)

    def _refresh_token_is_genuine(self, refresh: str) -> bool:
        """Checked here first, so a forged cookie costs no call to Descope and leaves no tombstone.
        When the keys are out of reach it cannot be told: treated as genuine (the revocation is what
        matters, and Descope itself refuses a forged one)."""
        try:
            self.client.validate_refresh_token(refresh)
        except DescopeUnreachableError:
            return True
        except DescopeAuthError:
            return False  # forged, expired or not a refresh token: Descope would not revoke it
        return True

    def _session_is_live(self, session: str | None) -> bool:
        if not session:
            return False
        try:
            self.client.validate_session(session)
        except DescopeUnreachableError:
            return True  # cannot tell: ask
        except DescopeAuthError:
            return False  # expired or not a session: nothing to end
        return True

    def _confirm_logout(self) -> Response:
        """The "Sign out of MLflow?" page: nothing is cleared and Descope is not asked until the user
        presses the button (a same-origin POST). Not cached, and never framed (Response.html)."""
        page = self._templates.get_template("logout.html").render(
            logout_url=f"{self.prefix}/auth/logout",
            cancel_url=self.safe_next(None),
            static_url=f"{self.prefix}/auth/static",
        )
        return Response.html(200, page)

    def user(self, identity: Identity | None) -> Response:
        if identity is None:  # the gate lets no one here without a session; belt and braces
            return error(401, "UNAUTHENTICATED", "sign in with Descope")
        provision_quietly(identity)
        return Response.json(200, identity.to_dict())

    def names(self, req: Request, identity: Identity | None) -> Response:
        """``?ids=a,b``: the names of these usernames, for MLflow's page to show beside them
        (display_names). Signed-in users only; usernames without a known name are left out."""
        if identity is None:  # the gate lets no one here without a session; belt and braces
            return error(401, "UNAUTHENTICATED", "sign in with Descope")
        ids = [i for i in req.query.get("ids", "").split(",") if i]
        if not ids:
            return error(400, "INVALID_PARAMETER_VALUE", "ids: give one or more usernames, comma-separated")
        if len(ids) > MAX_NAMES:
            return error(400, "INVALID_PARAMETER_VALUE", f"ids: at most {MAX_NAMES} usernames per request")
        if any(len(i) > MAX_NAME_LENGTH for i in ids):
            return error(
                400, "INVALID_PARAMETER_VALUE", f"ids: a username is at most {MAX_NAME_LENGTH} characters"
            )
        from mlflow_descope_auth.server import display_names

        try:
            names = display_names.lookup(sorted(set(ids)))
        except Exception as exc:  # the DB driver's errors are not one hierarchy
            _log.warning("Could not look up display names: %s", type(exc).__name__)
            return error(503, "TEMPORARILY_UNAVAILABLE", "names cannot be looked up right now")
        return Response.json(200, names)

    def health(self) -> Response:
        ok, detail = self._descope_status()
        payload = {
            "status": "ok" if ok else "unavailable",
            "keys_loaded": self.client.keys_loaded,
            "descope_reachable": ok,
            "detail": detail,
        }
        return Response.json(200 if ok else 503, payload)

    def _descope_status(self) -> tuple[bool, str]:
        # Asks Descope at most every few seconds, however often a load balancer polls.
        with self._health_lock:
            now = time.monotonic()
            if self._health is not None and now - self._health[0] < self.HEALTH_CACHE_SECONDS:
                return self._health[1], self._health[2]
            try:
                count = self.client.fetch_keys()
                result = (True, f"{count} signing keys")
            except DescopeAuthError as exc:
                result = (False, str(exc))
            self._health = (now, *result)
            return result
