"""The ``/auth`` routes in-process: the login page, the session hand-off, sign-out, the current user,
the page's assets and health, answered by ``AuthRoutes.dispatch`` for requests built by hand."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import requests

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth._core import ConfigurationError
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.http import Response
from mlflow_descope_auth.server.routes import AuthRoutes
from mlflow_descope_auth.server.settings import ServerSettings

from .inprocess import expired_session, make_routes, response_cookies, unit_request


@pytest.fixture
def routes(client: DescopeClient, tmp_path: Path) -> AuthRoutes:
    return make_routes(client, tmp_path)


def payload(response: Response) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(response.body)
    return value


def header(response: Response, name: str) -> str:
    values = [v for k, v in response.headers if k.lower() == name.lower()]
    assert len(values) == 1, response.headers
    return values[0]


def refresh_status(emu: Emulator, refresh_jwt: str) -> int:
    auth = {"Authorization": f"Bearer {emu.project_id}:{refresh_jwt}"}
    return requests.post(f"{emu.base_url}/v1/auth/refresh", headers=auth, json={}, timeout=10).status_code


# -- the login page ----------------------------------------------------------------------------------


def test_the_login_page_embeds_the_flow_and_a_same_site_next(routes: AuthRoutes, emulator: Emulator) -> None:
    page = routes.dispatch(
        unit_request("GET", "/auth/login", query="next=/%23/experiments&message=expired"), None
    )
    assert page.status == 200
    assert header(page, "X-Frame-Options") == "DENY" and header(page, "Cache-Control") == "no-store"
    html = page.body.decode()
    assert f'project-id="{emulator.project_id}"' in html and 'flow-id="sign-up-or-in"' in html
    assert 'data-next="/#/experiments"' in html
    assert "Your session expired. Please sign in again." in html


@pytest.mark.parametrize("hostile", ["//evil.com", "https://evil.com", "/\\evil.com", "/auth/logout", "evil"])
def test_the_login_page_replaces_a_foreign_next_with_the_default(routes: AuthRoutes, hostile: str) -> None:
    page = routes.dispatch(unit_request("GET", "/auth/login", query=f"next={hostile}"), None)
    assert 'data-next="/"' in page.body.decode()


# -- POST /auth/session ------------------------------------------------------------------------------


def test_sign_in_sets_the_cookies_only_for_tokens_that_validate(
    routes: AuthRoutes, emulator: Emulator
) -> None:
    tokens = emulator.login("editor")
    body = {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"], "next": "/#/models"}
    resp = routes.dispatch(unit_request("POST", "/auth/session", body=body), None)
    assert resp.status == 200, resp.body
    assert payload(resp) == {"redirect": "/#/models", "user": emulator.user("editor").user_id}
    cookies = response_cookies(resp.headers)
    assert set(cookies) == {"DS", "DSR"}
    assert cookies["DS"].startswith(f"DS={tokens['sessionJwt']};")
    assert cookies["DSR"].startswith(f"DSR={tokens['refreshJwt']};")
    assert tokens["sessionJwt"].encode() not in resp.body


@pytest.mark.parametrize(
    ("case", "status", "origin", "raw"),
    [
        ("no Origin", 403, None, None),
        ("cross Origin", 403, "https://evil.example", None),
        ("not JSON", 400, "same", b"sessionJwt=x"),
        ("JSON array", 400, "same", b'["x"]'),
        ("too deep", 400, "same", b"[" * 10_000),
        ("non-string token", 400, "same", b'{"sessionJwt": 12345}'),
        ("missing token", 400, "same", b'{"refreshJwt": "x"}'),
        ("garbage session", 401, "same", b'{"sessionJwt": "garbage-not-a-jwt"}'),
    ],
)
def test_sign_in_refusals(
    routes: AuthRoutes, case: str, status: int, origin: str | None, raw: bytes | None, emulator: Emulator
) -> None:
    tokens = emulator.login("reader")
    req = unit_request("POST", "/auth/session", same_origin=origin == "same")
    if origin not in (None, "same"):
        req.headers["origin"] = origin
    req.body = raw if raw is not None else json.dumps({"sessionJwt": tokens["sessionJwt"]}).encode()
    resp = routes.dispatch(req, None)
    assert resp.status == status, (case, resp.body)
    assert payload(resp)["error_code"], case
    assert response_cookies(resp.headers) == {}, case


@pytest.mark.parametrize("swap", ["refresh as session", "session as refresh", "expired session"])
def test_sign_in_refuses_the_wrong_kind_of_token(routes: AuthRoutes, emulator: Emulator, swap: str) -> None:
    tokens = emulator.login("reader")
    body = {
        "refresh as session": {"sessionJwt": tokens["refreshJwt"]},
        "session as refresh": {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["sessionJwt"]},
        "expired session": {"sessionJwt": expired_session(emulator, "reader")},
    }[swap]
    resp = routes.dispatch(unit_request("POST", "/auth/session", body=body), None)
    assert resp.status == 401, resp.body
    assert payload(resp)["error_code"] == "UNAUTHENTICATED"
    assert response_cookies(resp.headers) == {}


@pytest.mark.parametrize(
    ("cookie_secure", "scheme", "secure"),
    [("true", "http", True), ("auto", "https", True), ("auto", "http", False), ("false", "https", False)],
)
def test_secure_flag_follows_descope_cookie_secure(
    client: DescopeClient, emulator: Emulator, tmp_path: Path, cookie_secure: str, scheme: str, secure: bool
) -> None:
    routes = make_routes(client, tmp_path, cookie_secure=cookie_secure)
    tokens = emulator.login("reader")
    body = {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"]}
    resp = routes.dispatch(unit_request("POST", "/auth/session", scheme=scheme, body=body), None)
    assert resp.status == 200, resp.body
    cookies = response_cookies(resp.headers)
    assert set(cookies) == {"DS", "DSR"}
    for value in cookies.values():
        assert ("; Secure" in value) is secure, value
        assert "; HttpOnly" in value and "; SameSite=Lax" in value and "; Path=/" in value, value

    # Clearing at logout carries the same attributes, or the browser would keep the Secure cookies.
    out = routes.dispatch(unit_request("GET", "/auth/logout", scheme=scheme), None)
    assert out.status == 302
    cleared = response_cookies(out.headers)
    assert set(cleared) == {"DS", "DSR"}
    for value in cleared.values():
        assert ("; Secure" in value) is secure and "Max-Age=0" in value, value


def test_cookie_secure_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESCOPE_PROJECT_ID", "P2test")
    monkeypatch.setenv("DESCOPE_COOKIE_SECURE", " TRUE ")
    assert ServerSettings.from_env().cookie_secure == "true"
    monkeypatch.delenv("DESCOPE_COOKIE_SECURE")
    assert ServerSettings.from_env().cookie_secure == "auto"
    monkeypatch.setenv("DESCOPE_COOKIE_SECURE", "yes")
    with pytest.raises(ConfigurationError) as info:
        ServerSettings.from_env()
    assert (info.value.code, info.value.variable) == ("config_invalid", "DESCOPE_COOKIE_SECURE")


def test_cookies_and_default_redirect_follow_the_static_prefix(
    client: DescopeClient, emulator: Emulator, tmp_path: Path
) -> None:
    routes = make_routes(client, tmp_path, prefix="/mlflow")
    tokens = emulator.login("reader")
    body = {"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"], "next": "//evil.com"}
    resp = routes.dispatch(unit_request("POST", "/mlflow/auth/session", body=body), None)
    assert resp.status == 200, resp.body
    assert json.loads(resp.body)["redirect"] == "/mlflow/"
    for value in response_cookies(resp.headers).values():
        assert "; Path=/mlflow/" in value, value


# -- sign-out ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sign_out_revokes_the_refresh_token_and_clears_the_cookies(
    routes: AuthRoutes, emulator: Emulator, method: str
) -> None:
    tokens = emulator.login("reader")
    jar = {
        "cookie": f"DS={tokens['sessionJwt']}; DSR={tokens['refreshJwt']}",
        "sec-fetch-site": "same-origin",
    }
    before = emulator.stats()["logout"]
    resp = routes.dispatch(unit_request(method, "/auth/logout", headers=jar), None)
    assert resp.status == 302
    assert header(resp, "Location") == "/auth/login?message=logged_out"
    assert set(response_cookies(resp.headers)) == {"DS", "DSR"}
    assert emulator.stats()["logout"] == before + 1
    assert refresh_status(emulator, tokens["refreshJwt"]) == 401


def test_a_foreign_page_cannot_sign_users_out(routes: AuthRoutes, emulator: Emulator) -> None:
    tokens = emulator.login("reader")
    jar = {"cookie": f"DS={tokens['sessionJwt']}; DSR={tokens['refreshJwt']}"}
    post = unit_request("POST", "/auth/logout", headers={**jar, "origin": "https://evil.example"})
    refused = routes.dispatch(post, None)
    assert refused.status == 403 and response_cookies(refused.headers) == {}
    # A GET a foreign page caused (link, redirect, embed) asks the user to confirm first.
    get = unit_request(
        "GET", "/auth/logout", headers={**jar, "sec-fetch-site": "cross-site"}, same_origin=False
    )
    confirm = routes.dispatch(get, None)
    assert confirm.status == 200 and response_cookies(confirm.headers) == {}
    assert b'action="/auth/logout"' in confirm.body
    assert refresh_status(emulator, tokens["refreshJwt"]) == 200, "the session still works"


def test_sign_out_with_no_session_just_clears(routes: AuthRoutes, emulator: Emulator) -> None:
    before = emulator.stats()["logout"]
    get = unit_request("GET", "/auth/logout", headers={"sec-fetch-site": "cross-site"}, same_origin=False)
    resp = routes.dispatch(get, None)
    assert resp.status == 302 and set(response_cookies(resp.headers)) == {"DS", "DSR"}
    assert emulator.stats()["logout"] == before


# -- the rest ----------------------------------------------------------------------------------------


def test_the_current_user_needs_an_identity(
    routes: AuthRoutes, client: DescopeClient, emulator: Emulator
) -> None:
    assert routes.dispatch(unit_request("GET", "/auth/user"), None).status == 401
    identity = client.validate_session(emulator.login("editor")["sessionJwt"])
    resp = routes.dispatch(unit_request("GET", "/auth/user"), identity)
    assert resp.status == 200
    assert payload(resp)["email"] == "editor@example.com" and payload(resp)["is_admin"] is False


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/auth/nope", 404, "ENDPOINT_NOT_FOUND"),
        ("DELETE", "/auth/login", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/auth/session", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/auth/static/login.js", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/auth/static/../templates/login.html", 404, "ENDPOINT_NOT_FOUND"),
        ("GET", "/auth/static/", 404, "ENDPOINT_NOT_FOUND"),
    ],
)
def test_unknown_routes_and_methods_are_refused(
    routes: AuthRoutes, method: str, path: str, status: int, code: str
) -> None:
    resp = routes.dispatch(unit_request(method, path), None)
    assert resp.status == status, resp.body
    assert payload(resp)["error_code"] == code


def test_the_login_script_is_served_and_head_has_no_body(routes: AuthRoutes) -> None:
    get = routes.dispatch(unit_request("GET", "/auth/static/login.js"), None)
    assert get.status == 200 and header(get, "Content-Type").startswith("text/javascript")
    assert b"descope" in get.body
    head = routes.dispatch(unit_request("HEAD", "/auth/static/login.js"), None)
    assert head.status == 200 and head.body == b""


def test_health_reports_whether_descope_answers(routes: AuthRoutes, tmp_path: Path) -> None:
    ok = routes.dispatch(unit_request("GET", "/auth/health"), None)
    assert ok.status == 200 and payload(ok)["descope_reachable"] is True
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down_client = DescopeClient("P2unreachable", base_url=f"http://127.0.0.1:{port}", http_timeout=1)
    down = make_routes(down_client, tmp_path / "down").dispatch(unit_request("GET", "/auth/health"), None)
    assert down.status == 503
    assert payload(down)["status"] == "unavailable" and payload(down)["descope_reachable"] is False
