"""The login page over plain HTTP: its messages, its public assets, and the cases a browser test does
not reach cheaply (Descope unreachable for a page load, a proxy that rewrites Host)."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
import requests

from mlflow_descope_auth._core import DescopeClient
from mlflow_descope_auth.server.gate import same_origin
from mlflow_descope_auth.server.http import Request

from .descope_server import DescopeServer
from .servers import free_port
from .unit.inprocess import make_routes, unit_request


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("expired", "Your session expired. Please sign in again."),
        ("invalid", "Your session is no longer valid. Please sign in again."),
        ("required", "Please sign in to continue."),
        ("denied", "Access was denied."),
        ("unavailable", "Descope could not be reached to check your session."),
        ("logged_out", "You have signed out."),
    ],
)
def test_login_page_messages(descope: DescopeServer, key: str, text: str) -> None:
    resp = requests.get(f"{descope.url}/auth/login", params={"message": key}, timeout=10)
    assert resp.status_code == 200
    assert text in html.unescape(resp.text)


def test_unknown_message_keys_show_nothing_and_are_not_echoed(descope: DescopeServer) -> None:
    resp = requests.get(f"{descope.url}/auth/login", params={"message": "<script>x</script>"}, timeout=10)
    assert resp.status_code == 200
    assert 'id="message"' not in resp.text and "<script>x" not in resp.text


def test_login_page_is_not_frameable_and_not_cached(descope: DescopeServer) -> None:
    resp = requests.get(f"{descope.url}/auth/login", timeout=10)
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


def test_login_page_embeds_the_flow_component_configuration(descope: DescopeServer) -> None:
    page = requests.get(f"{descope.url}/auth/login", timeout=10).text
    emu = descope.emulator
    assert f'project-id="{emu.project_id}"' in page
    assert 'flow-id="sign-up-or-in"' in page
    assert f'base-url="{emu.base_url}"' in page
    assert f'data-web-component-url="{emu.base_url}/emulator/web-component.js"' in page


@pytest.mark.parametrize(
    ("name", "content_type", "marker"),
    [("login.js", "text/javascript", b'addEventListener("success"'), ("mlflow.ico", "image/x-icon", b"")],
)
def test_login_page_assets_are_public(
    descope: DescopeServer, name: str, content_type: str, marker: bytes
) -> None:
    resp = requests.get(f"{descope.url}/auth/static/{name}", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith(content_type)
    assert len(resp.content) > 100 and marker in resp.content


@pytest.mark.parametrize("name", ["nope.js", "../templates/login.html", "%2e%2e/gate.py", ""])
def test_only_the_listed_assets_are_served(descope: DescopeServer, name: str) -> None:
    resp = requests.get(f"{descope.url}/auth/static/{name}", timeout=10)
    # 404 from the asset list, or the gate's 401 when the client normalised the path out of /auth/static/.
    assert resp.status_code in (401, 404)
    assert b"<descope-wc" not in resp.content and b"import" not in resp.content


def test_asset_write_methods_are_refused(descope: DescopeServer) -> None:
    resp = requests.post(f"{descope.url}/auth/static/login.js", timeout=10)
    assert resp.status_code in (403, 405)


def test_page_load_while_descope_is_unreachable_goes_to_the_login_page_saying_so(tmp_path: Path) -> None:
    unreachable = DescopeClient("P2unreachable", base_url=f"http://127.0.0.1:{free_port()}", http_timeout=1)
    gate = make_routes(unreachable, tmp_path).gate
    # Well-formed enough to need the project's keys, which cannot be fetched.
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1In0.c2ln"
    headers = {"cookie": f"DS={token}", "sec-fetch-mode": "navigate", "accept": "text/html"}
    page = gate.check(unit_request("GET", "/experiments", headers=headers))
    assert page.response is not None
    assert page.response.status == 302
    location = dict(page.response.headers)["Location"]
    assert location == "/auth/login?next=/experiments&message=unavailable"

    api = gate.check(
        unit_request("GET", "/api/2.0/mlflow/experiments/search", headers={"cookie": f"DS={token}"})
    )
    assert api.response is not None and api.response.status == 503
    assert token not in api.response.body.decode()


def _request(headers: dict[str, str]) -> Request:
    return Request(
        method="POST", path="/auth/session", query_string="", headers=headers, scheme="https", body=b""
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"host": "mlflow.example", "origin": "https://mlflow.example"}, True),
        # A proxy that rewrites Host names the public one in X-Forwarded-Host.
        (
            {
                "host": "10.0.0.5:5000",
                "x-forwarded-host": "mlflow.example",
                "origin": "https://mlflow.example",
            },
            True,
        ),
        ({"host": "10.0.0.5:5000", "x-forwarded-host": "a.example, b", "origin": "https://a.example"}, True),
        ({"host": "10.0.0.5:5000", "origin": "https://mlflow.example"}, False),
        (
            {"host": "mlflow.example", "x-forwarded-host": "evil.example", "origin": "https://other.example"},
            False,
        ),
        ({"host": "mlflow.example"}, False),
        ({"host": "", "x-forwarded-host": "", "origin": "https://"}, False),
    ],
)
def test_same_origin_behind_a_proxy(headers: dict[str, str], expected: bool) -> None:
    assert same_origin(_request(headers)) is expected
