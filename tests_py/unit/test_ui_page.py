"""In-process: our script in MLflow's UI page, the shaping of MLflow's answers (no-store, MLflow's
bare "Permission denied" made readable), the 401 wording for people and for developers, the login
footer, ``next`` with MLflow's fragment, and the bounds of ``/auth/names``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server import ui_page
from mlflow_descope_auth.server.gate import PERSON_SESSION_ENDED, PERSON_SIGNED_OUT, Gate
from mlflow_descope_auth.server.response_shaping import denial_message, shaping_for
from mlflow_descope_auth.server.routes import MAX_NAME_LENGTH, MAX_NAMES, STATIC_FILES

from .inprocess import expired_session, make_routes, make_settings, unit_request

INDEX = (
    b'<!doctype html><html lang="en"><head><meta charset="utf-8"/><title>MLflow</title>'
    b'<script defer="defer" src="static-files/static/js/main.js"></script></head>'
    b'<body><div id="root"></div></body></html>'
)
HTML = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(INDEX)))]
BROWSER_FETCH = {"sec-fetch-mode": "cors", "sec-fetch-site": "same-origin"}


def tag(prefix: str = "") -> re.Pattern[bytes]:
    """The injected tags: one per ``ui_page.UI_SCRIPTS`` file, in that order."""
    return re.compile(
        b"".join(
            re.escape(f'<script src="{prefix}/auth/static/{name}?v='.encode())
            + rb'[0-9a-f]{12}" defer></script>'
            for name in ("mlflow-ui.js", "admin-page.js")
        )
    )


def test_the_script_goes_before_the_end_of_head() -> None:
    page = ui_page.inject(INDEX, "/mlflow")
    found = tag("/mlflow").search(page)
    assert found is not None and page[found.end() :].startswith(b"</head>")
    assert page.replace(found.group(0), b"") == INDEX


@pytest.mark.parametrize(
    ("document", "before"),
    [
        (b"<html><HEAD><title>x</title></HEAD ><body>y</body></html>", b"</HEAD >"),
        (b"<html><body class='a'>y</body></html>", b"<body class='a'>"),
        (b"<p>no head, no body</p>", b""),
    ],
)
def test_the_script_finds_its_place_in_any_page(document: bytes, before: bytes) -> None:
    page = ui_page.inject(document, "")
    found = tag().search(page)
    assert found is not None and page.replace(found.group(0), b"") == document
    assert page[found.end() :].startswith(before)


def test_every_injected_script_is_served() -> None:
    assert ui_page.UI_SCRIPTS == ("mlflow-ui.js", "admin-page.js")
    for name in ui_page.UI_SCRIPTS:
        locate, content_type = STATIC_FILES[name]
        assert locate().is_file() and content_type.startswith("text/javascript")


def test_only_the_ui_page_get_is_edited() -> None:
    assert ui_page.is_ui_page("GET", "/", "")
    assert ui_page.is_ui_page("GET", "/mlflow/", "/mlflow")
    assert not ui_page.is_ui_page("HEAD", "/", "")
    assert not ui_page.is_ui_page("GET", "/mlflow", "/mlflow")
    assert not ui_page.is_ui_page("GET", "/static-files/index.html", "")


def test_the_ui_page_is_sent_whole_with_its_length_and_never_cached() -> None:
    shaping = shaping_for("GET", "/", "", None)
    assert shaping.request_header_changes() == {
        "if-none-match": None,
        "if-modified-since": None,
        "if-range": None,
        "range": None,
    }
    headers = shaping.response_headers([*HTML, ("ETag", '"abc"'), ("Cache-Control", "no-cache")])
    assert ("Cache-Control", "no-store") in headers
    assert not {"etag", "cache-control"} & {k.lower() for k, v in headers if v != "no-store"}
    assert shaping.wants_body(200, headers)
    headers, body = shaping.finish(200, headers, INDEX)
    assert tag().search(body)
    assert [v for k, v in headers if k == "Content-Length"] == [str(len(body))]


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, [("Content-Type", "text/html"), ("Content-Encoding", "gzip")]),
        (200, [("Content-Type", "application/json")]),
        (304, [("Content-Type", "text/html")]),
        (404, [("Content-Type", "text/html")]),
    ],
)
def test_a_compressed_or_other_answer_for_the_ui_page_passes_untouched(
    status: int, headers: list[tuple[str, str]]
) -> None:
    assert not shaping_for("GET", "/", "", None).wants_body(status, headers)


def test_the_ui_build_stays_cacheable_and_everything_else_is_not() -> None:
    build = shaping_for("GET", "/static-files/static/js/main.js", "", None)
    cached = [("Cache-Control", "public, max-age=2419200")]
    assert build.response_headers(cached) == cached
    api = shaping_for(
        "GET", "/ajax-api/2.0/mlflow/experiments/search", "", "API/2.0/mlflow/experiments/search"
    )
    assert api.response_headers([("Content-Type", "application/json")]) == [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
    ]
    assert not api.request_header_changes()


def test_mlflows_bare_permission_denied_becomes_a_message_a_person_can_act_on() -> None:
    shaping = shaping_for("POST", "/api/2.0/mlflow/runs/update", "", "API/2.0/mlflow/runs/update")
    plain = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "17")]
    assert shaping.wants_body(403, plain)
    headers, body = shaping.finish(403, plain, b"Permission denied")
    assert json.loads(body) == {
        "error_code": "PERMISSION_DENIED",
        "message": "You do not have permission to do this: it needs EDIT access to this experiment. "
        "Ask an admin of this server to give you EDIT on it.",
    }
    assert ("Content-Type", "application/json") in headers and ("Content-Length", str(len(body))) in headers
    # Anything else MLflow says with a 403 is left as it is.
    other = b"the experiment is archived"
    assert shaping.finish(403, plain, other)[1] == other
    assert not shaping.wants_body(403, [("Content-Type", "application/json"), ("Content-Length", "40")])
    assert not shaping.wants_body(403, [("Content-Type", "text/plain")])  # streamed: not held back


@pytest.mark.parametrize(
    ("method", "template", "level", "what"),
    [
        ("GET", "API/2.0/mlflow/experiments/get", "READ", "this experiment"),
        ("POST", "API/2.0/mlflow/runs/log-batch", "EDIT", "this experiment"),
        ("POST", "API/2.0/mlflow/experiments/delete", "MANAGE", "this experiment"),
        ("PATCH", "API/2.0/mlflow/registered-models/update", "EDIT", "this registered model"),
        ("DELETE", "API/2.0/mlflow/model-versions/delete", "MANAGE", "this registered model"),
        ("POST", "API/2.0/mlflow/experiments/permissions/update", "MANAGE", "this experiment"),
        ("GET", "API/3.0/mlflow/gateway/endpoints/get", "READ", "this AI Gateway resource"),
    ],
)
def test_a_denial_names_the_level_and_the_resource(method: str, template: str, level: str, what: str) -> None:
    message = denial_message(method, template)
    assert f"needs {level} access to {what}" in message
    assert f"Ask an admin of this server to give you {level} on it." in message
    assert "DESCOPE_" not in message


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "API/3.0/mlflow/roles/list"),
        ("GET", "API/2.0/mlflow/users/get"),
        ("POST", "API/3.0/mlflow/users/permissions/grant"),
        ("POST", "API/3.0/mlflow/roles/assign"),
    ],
)
def test_a_denial_on_the_admin_routes_says_they_are_for_admins(method: str, template: str) -> None:
    # A reader refused the role list must not be told to ask for READ, which they already have.
    message = denial_message(method, template)
    assert "for admins of this server" in message
    assert "access to" not in message


def test_a_401_for_a_browser_speaks_to_the_person(
    client: DescopeClient, emulator: Emulator, tmp_path: Path
) -> None:
    gate = Gate(client, make_settings(tmp_path))
    search = "/ajax-api/2.0/mlflow/experiments/search"
    signed_out = gate.check(unit_request("GET", search, headers=BROWSER_FETCH))
    assert signed_out.response is not None
    assert json.loads(signed_out.response.body) == {
        "error_code": "UNAUTHENTICATED",
        "message": PERSON_SIGNED_OUT,
        "detail": "sign in with Descope: send 'Authorization: Bearer <session token>'",
    }
    ended = gate.check(
        unit_request("GET", search, headers={"cookie": f"DS={expired_session(emulator, 'reader')}"})
    )
    assert ended.response is not None
    assert json.loads(ended.response.body)["message"] == PERSON_SESSION_ENDED
    # An API client keeps the precise reason, Fetch Metadata or not.
    for headers in ({}, {"authorization": f"Bearer {expired_session(emulator, 'reader')}", **BROWSER_FETCH}):
        api = gate.check(unit_request("GET", search, headers=headers))
        assert api.response is not None
        message = json.loads(api.response.body)["message"]
        assert message not in (PERSON_SIGNED_OUT, PERSON_SESSION_ENDED)
        assert "Bearer" in message or "expired" in message


@pytest.mark.parametrize(
    ("scheme", "secure", "says"),
    [
        ("http", "auto", "plain HTTP"),
        ("https", "auto", "only over HTTPS"),
        ("http", "true", "only over HTTPS"),
    ],
)
def test_the_login_footer_says_how_the_cookies_travel(
    client: DescopeClient, tmp_path: Path, scheme: str, secure: str, says: str
) -> None:
    routes = make_routes(client, tmp_path, cookie_secure=secure)
    page = routes.dispatch(unit_request("GET", "/auth/login", scheme=scheme), None).body.decode()
    assert says in page
    assert "secure, HttpOnly" not in page


@pytest.mark.parametrize(
    ("next_path", "kept"),
    [
        ("/#/experiments/1/runs/abc", True),
        ("/mlflow/?x=1#/models", True),
        ("#//evil.com", False),
        ("//evil.com/#/experiments", False),
        ("/\\evil.com#/x", False),
    ],
)
def test_next_keeps_mlflows_fragment_and_no_other_host(
    client: DescopeClient, tmp_path: Path, next_path: str, kept: bool
) -> None:
    routes = make_routes(client, tmp_path)
    page = routes.dispatch(unit_request("GET", "/auth/login", query=f"next={quote(next_path)}"), None)
    expected = next_path if kept else "/"
    assert f'data-next="{expected}"' in page.body.decode()


def test_names_are_for_signed_in_users_and_bounded(
    client: DescopeClient, emulator: Emulator, tmp_path: Path
) -> None:
    routes = make_routes(client, tmp_path)
    assert routes.dispatch(unit_request("GET", "/auth/names", query="ids=U2x"), None).status == 401
    identity = client.validate_session(emulator.login("reader")["sessionJwt"])
    refusals = [
        "",
        "ids=",
        "ids=,,",
        "ids=" + ",".join(f"U{i}" for i in range(MAX_NAMES + 1)),
        "ids=" + "U" * (MAX_NAME_LENGTH + 1),
    ]
    for query in refusals:
        resp = routes.dispatch(unit_request("GET", "/auth/names", query=query), identity)
        assert resp.status == 400, query
        assert json.loads(resp.body)["error_code"] == "INVALID_PARAMETER_VALUE"
    assert routes.dispatch(unit_request("POST", "/auth/names", query="ids=U2x"), identity).status == 405
