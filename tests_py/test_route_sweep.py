"""Every route MLflow serves, every way of not being signed in: the gate answers, never MLflow.

The routes are enumerated at test time from the installed MLflow (the Flask url_map, the FastAPI
routers and the user/role routes ``mlflow.server.auth`` adds), so a route a future MLflow adds is swept
too. Each is requested, over real HTTP, from the real ``mlflow server --app-name descope`` under uvicorn
(ASGI) and under gunicorn (WSGI) with no credential, a malformed Bearer token, an expired but correctly
signed token, and an expired ``DS`` cookie: only the gate's public paths may answer anything but 401 (or,
for a browser page load, a redirect to the login page).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from urllib.parse import quote

import mlflow
import pytest
import requests
from packaging.version import Version
from requests.adapters import HTTPAdapter

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.gate import Gate
from mlflow_descope_auth.server.settings import ServerSettings

from .descope_server import DescopeServer, descope_server
from .mlflow_routes import WEBSOCKET, Enumeration, Route, enumerate_routes

# What the gate lets through without a session (see the README and gate.py).
PUBLIC_PATHS = frozenset(
    {"/health", "/auth/health", "/auth/login", "/auth/session", "/auth/logout", "/auth/cli/token"}
)
PUBLIC_PREFIXES = ("/auth/static/",)
# The only one of them that is an MLflow route: everything else public is served by the gate itself.
MLFLOW_PUBLIC_ROUTES = frozenset({"/health"})

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WORKERS = 8


# -- enumeration ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enumeration() -> Enumeration:
    return enumerate_routes()


# -- the sweep ------------------------------------------------------------------------------------


@dataclass
class Probe:
    case: str
    route: Route
    headers: dict[str, str]
    expect: str  # "public" | "deny" | "deny-clear" | "login"


@dataclass
class Outcome:
    probe: Probe
    status: int
    headers: dict[str, str]  # lower-case names; Set-Cookie values joined with "\n"
    body: bytes
    problem: str | None = None


def expired_token(emu: Emulator, login_id: str = "admin") -> str:
    now = int(time.time())
    return emu.sign({**emu.session_claims(login_id), "exp": now - 60, "iat": now - 700})


def probes(server: DescopeServer, routes: list[Route], cases: tuple[str, ...]) -> list[Probe]:
    expired = expired_token(server.emulator)
    out: list[Probe] = []
    for route in routes:
        public = route.path in PUBLIC_PATHS or route.path.startswith(PUBLIC_PREFIXES)
        writes = route.method not in SAFE_METHODS
        case_headers: dict[str, tuple[dict[str, str], str]] = {
            "none": ({}, "deny"),
            "garbage-bearer": ({"Authorization": "Bearer not-a-token"}, "deny"),
            "expired-bearer": ({"Authorization": f"Bearer {expired}"}, "deny"),
            # Same-origin, so that a write reaches the session check instead of the CSRF refusal (403).
            "expired-cookie": (
                {"Cookie": f"DS={expired}", **({"Origin": server.url} if writes else {})},
                "deny-clear",
            ),
            "navigation": ({"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}, "login"),
        }
        for case in cases:
            if case == "navigation" and route.method != "GET":
                continue
            headers, expect = case_headers[case]
            out.append(Probe(case, route, headers, "public" if public else expect))
    return out


class Sender:
    """One pooled `requests.Session` per worker thread: no cookie jar, no redirects, no urllib3 retries."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0))
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, probe: Probe) -> Outcome:
        route = probe.route
        headers = dict(probe.headers)
        method, body = route.method, None
        if method == WEBSOCKET:  # an opening handshake; the gate must refuse it before any upgrade
            method = "GET"
            headers |= {
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            }
        elif method in ("POST", "PUT", "PATCH"):
            body = b"{}"
            headers["Content-Type"] = "application/json"
        last: Exception | None = None
        for _ in range(2):  # a pooled connection the server closed after a refusal is not an answer
            try:
                resp = self.session().request(
                    method,
                    self.base_url + route.path,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=30,
                )
            except requests.ConnectionError as exc:
                last = exc
                continue
            except requests.RequestException as exc:  # a timeout: something past the gate is working
                return Outcome(probe, 0, {}, f"no answer: {exc!r}".encode())
            got = {k.lower(): v for k, v in resp.headers.items()}
            cookies = resp.raw.headers.getlist("Set-Cookie") if resp.raw is not None else []
            got["set-cookie"] = "\n".join(cookies)
            return Outcome(probe, resp.status_code, got, resp.content)
        return Outcome(probe, 0, {}, f"no answer: {last!r}".encode())

    def close(self) -> None:
        for session in self._sessions:
            session.close()


def judge(outcome: Outcome) -> str | None:
    """What is wrong with this answer, or None."""
    probe, status = outcome.probe, outcome.status
    if status == 0:
        return "no HTTP answer"
    if probe.expect == "public":
        return None if status == 200 else f"public route answered {status}, expected 200"
    if probe.route.method == WEBSOCKET:
        return None if status in (401, 403) else f"websocket handshake answered {status}, expected 401/403"
    if probe.expect == "login":
        expected = f"/auth/login?next={quote(probe.route.path, safe='/')}&message=required"
        location = outcome.headers.get("location")
        if status != 302 or location != expected:
            return f"answered {status} (Location {location!r}), expected 302 to {expected}"
        return None
    if status != 401:
        return f"answered {status}, expected 401"
    try:
        payload = json.loads(outcome.body)
    except ValueError:
        return "401 without a JSON body"
    if not isinstance(payload, dict) or payload.get("error_code") != "UNAUTHENTICATED":
        return f"401 body is not the gate's: {payload!r}"
    if not outcome.headers.get("www-authenticate", "").startswith("Bearer "):
        return f"401 without 'WWW-Authenticate: Bearer ...': {outcome.headers.get('www-authenticate')!r}"
    if probe.expect == "deny-clear":
        cleared = {
            name
            for line in outcome.headers["set-cookie"].split("\n")
            for name in ("DS", "DSR")
            if line.startswith(f"{name}=;") and "Max-Age=0" in line
        }
        if cleared != {"DS", "DSR"}:
            return f"expired cookie refused without clearing DS and DSR: {outcome.headers['set-cookie']!r}"
    return None


def sweep(server: DescopeServer, routes: list[Route], cases: tuple[str, ...]) -> list[Outcome]:
    sender = Sender(server.url)
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            outcomes = list(pool.map(sender.send, probes(server, routes, cases)))
    finally:
        sender.close()
    for outcome in outcomes:
        outcome.problem = judge(outcome)
    return outcomes


def report(outcomes: list[Outcome], artifact: Path) -> str:
    """All failures, grouped by route, written to `artifact` and returned (empty when all passed)."""
    lines = []
    for o in outcomes:
        if o.problem is not None:
            r = o.probe.route
            body = o.body[:160].decode("utf-8", "replace").replace("\n", " ")
            sources = "+".join(sorted(r.sources))
            lines.append(f"{r.method:7} {r.path} [{o.probe.case}; {sources}]: {o.problem}; body {body!r}")
    lines.sort()
    artifact.write_text("\n".join(lines) + "\n" if lines else "", encoding="utf-8")
    return "\n".join(lines)


def assert_swept(
    outcomes: list[Outcome], routes: list[Route], cases: tuple[str, ...], artifact: Path
) -> None:
    exercised: dict[str, set[tuple[str, str]]] = {case: set() for case in cases}
    for o in outcomes:
        exercised[o.probe.case].add(o.probe.route.key)
    every = {r.key for r in routes}
    gets = {r.key for r in routes if r.method == "GET"}
    for case in cases:  # every enumerated route was requested, each once per case
        assert exercised[case] == (gets if case == "navigation" else every), case
    navigations = len(gets) if "navigation" in cases else 0
    assert len(outcomes) == len(routes) * (len(cases) - ("navigation" in cases)) + navigations
    failures = report(outcomes, artifact)
    count = failures.count("\n") + 1 if failures else 0
    assert not failures, (
        f"{count} of {len(outcomes)} requests were not refused by the gate (also in {artifact}):\n{failures}"
    )


ALL_CASES = ("none", "garbage-bearer", "expired-bearer", "expired-cookie", "navigation")


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.rootpath, "test-artifacts")
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def wsgi_server(
    server_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DescopeServer]:
    """The same server run by gunicorn: MLflow's Flask app alone, behind the WSGI gate."""
    with descope_server(
        server_emulator,
        tmp_path_factory.mktemp("descope-gunicorn"),
        extra_args=("--gunicorn-opts", "--workers 2 --timeout 60 --graceful-timeout 5"),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def waitress_server(
    server_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DescopeServer]:
    """The same app served by waitress, MLflow's third server, behind the WSGI gate, started as a
    person would: `mlflow server --app-name descope --waitress-opts ...`."""
    with descope_server(
        server_emulator,
        tmp_path_factory.mktemp("descope-waitress"),
        extra_args=("--waitress-opts", "--threads=8"),
    ) as server:
        yield server


# -- tests ----------------------------------------------------------------------------------------


# Sample routes of later MLflow releases than 3.17, by the release that added them.
ROUTES_SINCE: dict[str, list[tuple[str, str]]] = {
    # The Skill Registry (FastAPI-native): `{name}` and `@{organization}/{name}` forms, both prefixes.
    "3.18": [
        ("/api/3.0/mlflow/skills", "GET"),
        ("/ajax-api/3.0/mlflow/skills", "POST"),
        ("/api/3.0/mlflow/skills/bulk-register", "POST"),
        ("/api/3.0/mlflow/skills/1/versions/1", "PATCH"),
        ("/ajax-api/3.0/mlflow/skills/@1/1/versions/1/tags/x/y", "DELETE"),
        ("/api/3.0/mlflow/skills/@1/1/aliases/1", "GET"),
    ],
}


def test_enumeration_covers_all_of_mlflow(enumeration: Enumeration) -> None:
    routes = enumeration.routes
    assert len(routes) > 400, f"only {len(routes)} (path, method) pairs: the enumeration is broken"
    assert len(enumeration.flask) > 350
    assert len(enumeration.fastapi) > 60, "the FastAPI routers were not walked"
    auth_only = [r for r in routes.values() if r.sources == {"auth"}]
    assert len(auth_only) >= 40, "the user/role routes of mlflow.server.auth are missing"
    # Sample routes of each kind, so a walk that silently stops early cannot pass.
    for key in [
        ("/api/2.0/mlflow/experiments/search", "POST"),
        ("/ajax-api/2.0/mlflow/runs/create", "POST"),
        ("/api/2.0/mlflow-artifacts/artifacts/x/y", "GET"),
        ("/api/2.0/mlflow-artifacts/artifacts/x/y", "PUT"),
        ("/api/2.0/mlflow-artifacts/artifacts/x/y", "DELETE"),
        ("/v1/traces", "POST"),
        ("/gateway/proxy/1/x/y", "POST"),
        ("/api/3.0/mlflow/mcp-servers/x/y/versions/x/y/tags/x/y", "DELETE"),
        ("/api/2.0/mlflow/users/create", "POST"),
        ("/api/3.0/mlflow/roles/delete", "DELETE"),
        ("/signup", "GET"),
        ("/static-files/x/y", "GET"),
        ("/", "GET"),
        ("/health", "GET"),
    ]:
        assert key in routes, key
    for route in routes.values():
        assert route.path.startswith("/") and not set("<>{}") & set(route.path), route.templates
    fastapi_only = [r for r in routes.values() if r.sources == {"fastapi"}]
    assert len(fastapi_only) > 60
    # Routes a later MLflow added are there exactly from that version on: the MLflow 3.18 leg of
    # scripts/test.sh sweeps them, and on 3.17 nothing of theirs is made up.
    installed = Version(mlflow.__version__)
    for since, keys in ROUTES_SINCE.items():
        for key in keys:
            assert (key in routes) == (installed >= Version(since)), (key, mlflow.__version__)


def test_uvicorn_refuses_every_route_without_a_valid_session(
    descope: DescopeServer, enumeration: Enumeration, artifacts: Path
) -> None:
    routes = list(enumeration.routes.values())
    outcomes = sweep(descope, routes, ALL_CASES)
    assert_swept(outcomes, routes, ALL_CASES, artifacts / "route_sweep_uvicorn.txt")


def test_gunicorn_refuses_every_flask_route_without_a_valid_session(
    wsgi_server: DescopeServer, enumeration: Enumeration, artifacts: Path
) -> None:
    routes = enumeration.select("flask", "auth")
    assert len(routes) > 400
    outcomes = sweep(wsgi_server, routes, ALL_CASES)
    assert_swept(outcomes, routes, ALL_CASES, artifacts / "route_sweep_gunicorn.txt")


def test_waitress_refuses_every_flask_route_without_a_valid_session(
    waitress_server: DescopeServer, enumeration: Enumeration, artifacts: Path
) -> None:
    routes = enumeration.select("flask", "auth")
    cases = ("none", "expired-bearer", "expired-cookie")
    outcomes = sweep(waitress_server, routes, cases)
    assert_swept(outcomes, routes, cases, artifacts / "route_sweep_waitress.txt")
    admin = waitress_server.api("GET", "/api/2.0/mlflow/experiments/search?max_results=1", "admin")
    assert admin.status_code == 200, admin.text
    reader = waitress_server.api("POST", "/api/2.0/mlflow/experiments/create", "reader", json={"name": "w"})
    assert reader.status_code == 403


@pytest.mark.parametrize("server_name", ["uvicorn", "gunicorn"])
def test_public_routes_answer_without_a_session(
    server_name: str, descope: DescopeServer, wsgi_server: DescopeServer
) -> None:
    server = descope if server_name == "uvicorn" else wsgi_server
    health = requests.get(server.url + "/health", timeout=30)
    assert health.status_code == 200, health.text
    auth_health = requests.get(server.url + "/auth/health", timeout=30)
    assert auth_health.status_code == 200, auth_health.text
    assert auth_health.headers["Content-Type"].startswith("application/json")
    assert auth_health.json()["status"] == "ok"
    login = requests.get(server.url + "/auth/login", timeout=30)
    assert login.status_code == 200, login.text
    assert login.headers["Content-Type"].startswith("text/html")
    assert "descope-wc" in login.text
    # The login endpoint is reachable but refuses a cross-site or token-less post.
    session = requests.post(server.url + "/auth/session", json={}, timeout=30)
    assert session.status_code in (400, 401, 403), session.text


@pytest.mark.parametrize("server_name", ["uvicorn", "gunicorn"])
def test_valid_session_passes_the_gate(
    server_name: str, descope: DescopeServer, wsgi_server: DescopeServer
) -> None:
    """The sweep is not passing because everything is refused: a real session gets through."""
    server = descope if server_name == "uvicorn" else wsgi_server
    admin = server.bearer("admin")
    search = requests.get(
        server.url + "/api/2.0/mlflow/experiments/search?max_results=1", headers=admin, timeout=60
    )
    assert search.status_code == 200, search.text
    assert "experiments" in search.json()
    # The same session as a browser's DS cookie.
    cookie = {"Cookie": f"DS={server.session('admin')['sessionJwt']}"}
    by_cookie = requests.get(
        server.url + "/ajax-api/2.0/mlflow/experiments/search?max_results=1", headers=cookie, timeout=60
    )
    assert by_cookie.status_code == 200, by_cookie.text
    # The UI, as a browser loads it.
    page = requests.get(
        server.url + "/", headers={**cookie, "Sec-Fetch-Mode": "navigate"}, timeout=60, allow_redirects=False
    )
    assert page.status_code == 200, page.text[:300]
    passed: list[tuple[str, int]] = []
    for path in [
        "/api/2.0/mlflow-artifacts/artifacts/",  # FastAPI-native under uvicorn, Flask under gunicorn
        "/api/2.0/mlflow-artifacts/artifacts/x/y",
        "/ajax-api/3.0/jobs/1",  # FastAPI-native (404 under gunicorn: no such route, past the gate)
        "/ajax-api/3.0/mlflow/skills",  # FastAPI-native from MLflow 3.18 (404 before, and under gunicorn)
        "/ajax-api/2.0/mlflow/users/current",
    ]:
        resp = requests.get(server.url + path, headers=admin, timeout=60)
        passed.append((path, resp.status_code))
    assert all(status not in (401, 403) and status < 500 for _, status in passed), passed
    current = requests.get(server.url + "/ajax-api/2.0/mlflow/users/current", headers=admin, timeout=60)
    assert current.status_code == 200, current.text
    assert current.json()["user"]["is_admin"] is True, current.text
    # The server runs the MLflow the routes were enumerated from (the 3.18 leg runs both in its venv).
    version = requests.get(server.url + "/version", headers=admin, timeout=60)
    assert (version.status_code, version.text) == (200, mlflow.__version__)


def test_gate_public_set_holds_no_mlflow_route(
    enumeration: Enumeration, server_emulator: Emulator, tmp_path: Path
) -> None:
    client = DescopeClient(server_emulator.project_id, base_url=server_emulator.base_url, http_timeout=5)
    settings = ServerSettings(
        flow_id="sign-up-or-in",
        redirect_url="/",
        web_component_url="http://127.0.0.1/unused.js",
        cookie_secure="auto",
        auth_db_uri=f"sqlite:///{tmp_path / 'unused.db'}",
        state_dir=tmp_path / "state",
        static_prefix="",
    )
    gate = Gate(client, settings)
    assert gate.public_paths == PUBLIC_PATHS
    assert tuple(gate.public_prefixes) == PUBLIC_PREFIXES
    public = sorted({r.path for r in enumeration.routes.values() if gate.is_public(r.path)})
    assert public == sorted(MLFLOW_PUBLIC_ROUTES), "MLflow routes the gate would let through unauthenticated"
    # An MLflow route under /auth/ would be shadowed by the gate's own endpoints.
    templates = {t for r in enumeration.routes.values() for t in r.templates}
    assert not [t for t in templates if t.startswith("/auth/") or t == "/auth"]


# Requests whose path, as the gate reads it, may differ from the path MLflow routes on. Each must get an
# answer from the gate itself (401, or a 404 from its own /auth/ endpoints), or be the public /health.
TRICKS: list[tuple[str, dict[str, str], frozenset[str]]] = [
    ("//api/2.0/mlflow/experiments/search", {}, frozenset({"gate-401"})),
    ("/%61pi/2.0/mlflow/experiments/search", {}, frozenset({"gate-401"})),
    ("/HEALTH", {}, frozenset({"gate-401"})),
    ("/health/", {}, frozenset({"gate-401"})),
    ("/health;/api/2.0/mlflow/experiments/search", {}, frozenset({"gate-401"})),
    ("/health/../api/2.0/mlflow/experiments/search", {}, frozenset({"gate-401"})),
    ("/health%2f..%2fapi/2.0/mlflow/experiments/search", {}, frozenset({"gate-401"})),
    ("http://127.0.0.1/api/2.0/mlflow/experiments/search", {}, frozenset({"gate-401"})),
    ("/auth/static/../../api/2.0/mlflow/experiments/search", {}, frozenset({"gate-404"})),
    ("/auth/static/%2e%2e/%2e%2e/api/2.0/mlflow/experiments/search", {}, frozenset({"gate-404"})),
    ("/health?next=/api/2.0/mlflow/experiments/search", {}, frozenset({"health"})),
    # gunicorn takes SCRIPT_NAME from a request header sent from forwarded_allow_ips (default
    # 127.0.0.1) and strips it from PATH_INFO, the path Flask routes on.
    ("/health", {"SCRIPT_NAME": "/health"}, frozenset({"gate-401", "health"})),
    ("/health", {"SCRIPT_NAME": "/heal"}, frozenset({"gate-401", "health"})),
    # Either way the gate answers: it judges the path Flask routes on (PATH_INFO, here the API path:
    # 401), uvicorn ignores the header (the /auth/static path: 404).
    (
        "/auth/static/api/2.0/mlflow/experiments/search",
        {"SCRIPT_NAME": "/auth/static"},
        frozenset({"gate-404", "gate-401"}),
    ),
]


def raw_get(url: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A GET with `target` sent byte for byte (requests/urllib3 would normalize it)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def answer_kind(status: int, headers: dict[str, str], body: bytes) -> str:
    if status == 200 and body == b"OK":
        return "health"
    try:
        payload = json.loads(body)
    except ValueError:
        return f"{status} (not JSON)"
    code = payload.get("error_code") if isinstance(payload, dict) else None
    if (
        status == 401
        and code == "UNAUTHENTICATED"
        and headers.get("www-authenticate", "").startswith("Bearer ")
    ):
        return "gate-401"
    if (
        status == 404
        and code == "ENDPOINT_NOT_FOUND"
        and payload["message"].startswith("no such endpoint: /auth/")
    ):
        return "gate-404"
    return f"{status} {code} (WWW-Authenticate {headers.get('www-authenticate')!r}), not from the gate"


@pytest.mark.parametrize("server_name", ["uvicorn", "gunicorn"])
def test_path_tricks_do_not_get_past_the_gate(
    server_name: str, descope: DescopeServer, wsgi_server: DescopeServer
) -> None:
    server = descope if server_name == "uvicorn" else wsgi_server
    failures = []
    for target, headers, allowed in TRICKS:
        status, got, body = raw_get(server.url, target, headers)
        kind = answer_kind(status, got, body)
        if kind not in allowed:
            failures.append(f"GET {target} {headers or ''}: {kind}; body {body[:160]!r}")
    assert not failures, f"{server_name}: requests that reached MLflow without the gate:\n" + "\n".join(
        failures
    )
