"""What the gate changes in MLflow's answers, under uvicorn (ASGI) and gunicorn (WSGI): our script in
MLflow's UI page, ``Cache-Control: no-store`` on a signed-in person's content, MLflow's bare
"Permission denied" made into a message a person can act on, and 401s worded for whoever asked."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.gate import PERSON_SESSION_ENDED, PERSON_SIGNED_OUT

from .descope_server import DescopeServer, descope_server
from .unit.inprocess import expired_session

BROWSER_FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin", "Accept": "application/json"}
SCRIPT_TAG = re.compile(
    rb'<script src="/auth/static/mlflow-ui\.js\?v=[0-9a-f]{12}" defer></script>'
    rb'<script src="/auth/static/admin-page\.js\?v=[0-9a-f]{12}" defer></script></head>'
)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def server(
    request: pytest.FixtureRequest, emu: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DescopeServer]:
    workdir: Path = tmp_path_factory.mktemp(f"ui-page-{request.param}")
    args = (
        ("--workers", "1") if request.param == "uvicorn" else ("--gunicorn-opts", "--workers 1 --timeout 60")
    )
    with descope_server(emu, workdir, extra_args=args) as s:
        yield s


def test_the_ui_page_carries_our_script_is_never_cached_and_is_always_sent_whole(
    server: DescopeServer,
) -> None:
    page = server.api("GET", "/", "reader")
    assert page.status_code == 200, page.text
    assert SCRIPT_TAG.search(page.content), page.text
    assert int(page.headers["Content-Length"]) == len(page.content)
    assert page.headers["Cache-Control"] == "no-store"
    assert "ETag" not in page.headers and "Last-Modified" not in page.headers
    # A browser's revalidation or byte range still gets the whole page, with the script.
    again = server.api(
        "GET",
        "/",
        "reader",
        headers={"If-None-Match": '"anything"', "If-Modified-Since": page.headers["Date"]},
    )
    assert again.status_code == 200 and SCRIPT_TAG.search(again.content)
    ranged = server.api("GET", "/", "reader", headers={"Range": "bytes=0-10"})
    assert ranged.status_code == 200 and SCRIPT_TAG.search(ranged.content)


def test_the_script_is_served_without_a_session_and_the_ui_build_stays_cacheable(
    server: DescopeServer,
) -> None:
    script = requests.get(server.url + "/auth/static/mlflow-ui.js", timeout=30)
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert b"Sign out" in script.content
    page = server.api("GET", "/", "reader")
    main_js = re.search(rb'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', page.content)
    assert main_js is not None, page.text
    asset = server.api("GET", "/" + main_js.group(1).decode(), "reader")
    assert asset.status_code == 200
    assert "no-store" not in asset.headers.get("Cache-Control", "")
    assert "max-age" in asset.headers["Cache-Control"]


def test_a_ui_build_file_that_carries_a_renewed_session_is_not_cached(server: DescopeServer) -> None:
    # The session ended while the tab was open: the browser's next request may be for one of the
    # UI's build files, and the gate renews the session on it. A shared cache must not keep that
    # answer (public, for weeks) with someone's session cookies in it.
    page = server.api("GET", "/", "reader")
    main_js = re.search(rb'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', page.content)
    assert main_js is not None, page.text
    refresh = server.session("reader")["refreshJwt"]
    asset = requests.get(
        server.url + "/" + main_js.group(1).decode(),
        headers={"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-origin"},
        cookies={"DSR": refresh},
        timeout=60,
    )
    assert asset.status_code == 200
    assert "DS" in asset.cookies
    assert asset.headers["Cache-Control"] == "no-store"


def test_api_answers_for_a_signed_in_user_are_not_cached(server: DescopeServer) -> None:
    listed = server.api("GET", "/api/2.0/mlflow/experiments/search", "reader", params={"max_results": 5})
    assert listed.status_code == 200, listed.text
    assert listed.headers["Cache-Control"] == "no-store"
    ajax = server.api("GET", "/ajax-api/2.0/mlflow/experiments/search", "reader", params={"max_results": 5})
    assert ajax.headers["Cache-Control"] == "no-store"


def test_mlflows_permission_denied_says_what_to_ask_for(server: DescopeServer) -> None:
    name = f"admins-only-{uuid.uuid4().hex[:8]}"
    created = server.api("POST", "/api/2.0/mlflow/experiments/create", "admin", json={"name": name})
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    refused = server.api(
        "POST",
        "/api/2.0/mlflow/experiments/update",
        "reader",
        json={"experiment_id": experiment_id, "new_name": name + "-renamed"},
    )
    assert refused.status_code == 403, refused.text
    assert refused.headers["Content-Type"].startswith("application/json")
    assert refused.json() == {
        "error_code": "PERMISSION_DENIED",
        "message": "You do not have permission to do this: it needs EDIT access to this experiment. "
        "Ask an admin of this server to give you EDIT on it.",
    }
    assert int(refused.headers["Content-Length"]) == len(refused.content)
    deleted = server.api(
        "POST", "/api/2.0/mlflow/experiments/delete", "reader", json={"experiment_id": experiment_id}
    )
    assert deleted.status_code == 403
    assert "needs MANAGE access to this experiment" in deleted.json()["message"]


def test_a_401_speaks_to_a_person_in_a_browser_and_to_a_developer_elsewhere(
    server: DescopeServer, emu: Emulator
) -> None:
    path = server.url + "/ajax-api/2.0/mlflow/experiments/search"
    # A script in a signed-out browser tab (Fetch Metadata, no cookies).
    signed_out = requests.get(path, headers=BROWSER_FETCH, timeout=30)
    assert signed_out.status_code == 401
    assert signed_out.json() == {
        "error_code": "UNAUTHENTICATED",
        "message": PERSON_SIGNED_OUT,
        "detail": "sign in with Descope: send 'Authorization: Bearer <session token>'",
    }
    # The same tab once the session has ended for good.
    ended = requests.get(
        path, headers={**BROWSER_FETCH, "Cookie": f"DS={expired_session(emu, 'reader')}"}, timeout=30
    )
    assert ended.status_code == 401
    assert ended.json()["message"] == PERSON_SESSION_ENDED
    assert "expired" in ended.json()["detail"], ended.text
    # An API client: what to send, precisely.
    client = requests.get(path, timeout=30)
    assert client.status_code == 401
    assert client.json()["error_code"] == "UNAUTHENTICATED"
    assert "Authorization: Bearer" in client.json()["message"]
    expired_bearer = requests.get(
        path,
        headers={"Authorization": f"Bearer {expired_session(emu, 'reader')}", **BROWSER_FETCH},
        timeout=30,
    )
    assert expired_bearer.status_code == 401
    assert "expired" in expired_bearer.json()["message"]
    assert expired_bearer.json()["message"] != PERSON_SESSION_ENDED


def test_the_login_footer_tells_the_truth_about_plain_http(server: DescopeServer) -> None:
    page = requests.get(server.url + "/auth/login", timeout=30)
    assert "plain HTTP" in page.text
    assert "only over HTTPS" not in page.text


def test_names_of_users_seen_are_given_to_signed_in_users_only(server: DescopeServer, emu: Emulator) -> None:
    editor_id = emu.session_claims("editor")["sub"]
    # The editor's request through MLflow remembers the name the token carries.
    seen = server.api("GET", "/api/2.0/mlflow/experiments/search", "editor", params={"max_results": 1})
    assert seen.status_code == 200, seen.text
    names = server.api(
        "GET", "/auth/names", "reader", params={"ids": f"{editor_id},U2nobodyKnownHere000000000"}
    )
    assert names.status_code == 200, names.text
    assert names.json() == {editor_id: "Eddie Editor"}
    assert names.headers["Cache-Control"] == "no-store"
    anonymous = requests.get(server.url + "/auth/names", params={"ids": editor_id}, timeout=30)
    assert anonymous.status_code == 401


def test_a_name_shaped_like_a_user_id_is_not_given_as_a_name(server: DescopeServer, emu: Emulator) -> None:
    # MLflow's page replaces a user id with that user's name: a reader whose token's `name` is the
    # editor's id would be shown under the editor's name. The reader's email is shown instead.
    editor_id = emu.session_claims("editor")["sub"]
    claims = emu.session_claims("reader")
    claims["name"] = editor_id
    reader_id = claims["sub"]
    token = emu.sign(claims)
    seen = requests.get(
        server.url + "/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert seen.status_code == 200, seen.text
    names = server.api("GET", "/auth/names", "editor", params={"ids": reader_id})
    assert names.status_code == 200, names.text
    assert names.json() == {reader_id: claims["email"]}
