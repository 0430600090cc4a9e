"""MLflow's page with our script in it, in real headless Chromium against a real `mlflow server
--app-name descope`: a session that ends with the tab open, a part of MLflow that cannot load any
more, "Sign out" in MLflow's account menu, Back after signing out, and people's names for their ids.

Screenshots of every step go to test-artifacts/browser/ (not committed).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from mlflow_descope_auth.emulator import Emulator

from .browser import UI_TIMEOUT_MS, screenshot
from .descope_server import DescopeServer, descope_server
from .unit.inprocess import expired_session

LOGIN_PAGE = re.compile(r".*/auth/login.*")


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture(scope="module")
def server(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    with descope_server(emu, tmp_path_factory.mktemp("session-end"), extra_args=("--workers", "1")) as s:
        yield s


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    yield ctx
    ctx.close()


def sign_in(page: Page, base: str, who: str, start: str = "/") -> None:
    page.goto(base + start)
    expect(page).to_have_url(LOGIN_PAGE)
    page.get_by_role("button", name=f"Sign in as {who}").click()
    page.wait_for_url(lambda url: "/auth/" not in url)


def experiment_with_run(server: DescopeServer, login_id: str) -> tuple[str, str, str, str]:
    """(experiment id, experiment name, run id, run name), created by `login_id` over the API."""
    name = f"session-end-{uuid.uuid4().hex[:8]}"
    created = server.api("POST", "/api/2.0/mlflow/experiments/create", login_id, json={"name": name})
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    run_name = f"run-{uuid.uuid4().hex[:6]}"
    run = server.api(
        "POST",
        "/api/2.0/mlflow/runs/create",
        login_id,
        json={"experiment_id": experiment_id, "run_name": run_name, "start_time": 1_700_000_000_000},
    )
    assert run.status_code == 200, run.text
    return experiment_id, name, run.json()["run"]["info"]["run_id"], run_name


def end_session(context: BrowserContext, emu: Emulator, server: DescopeServer, login_id: str) -> None:
    """The session ends for good with the tab open: signed out at Descope (the refresh token cannot
    renew anything) and the session token past its expiry."""
    emu.revoke_sessions(login_id)
    context.add_cookies(
        [
            {
                "name": "DS",
                "value": expired_session(emu, login_id),
                "domain": "127.0.0.1",
                "path": "/",
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )


def test_a_session_that_ends_with_the_tab_open_goes_to_login_and_back_to_the_same_view(
    server: DescopeServer, emu: Emulator, context: BrowserContext
) -> None:
    experiment_id, _, run_id, run_name = experiment_with_run(server, "admin")
    run_page = f"/#/experiments/{experiment_id}/runs/{run_id}"
    page = context.new_page()
    sign_in(page, server.url, "Rita Reader", start=run_page)
    expect(page.get_by_role("heading", name=run_name)).to_be_visible()
    expect(page.get_by_title(emu.session_claims("admin")["sub"]).first).to_have_text("Ada Admin")
    screenshot(page, "ui-01-run-open")

    end_session(context, emu, server, "reader")
    page.get_by_role("tab", name="Artifacts").click()
    expect(page).to_have_url(LOGIN_PAGE)
    expect(page.locator("#message")).to_have_text("Your session expired. Please sign in again.")
    # The view the person went to, fragment and all.
    next_path = parse_qs(urlsplit(page.url).query)["next"][0]
    assert next_path.startswith(run_page + "/"), next_path
    screenshot(page, "ui-02-session-ended-login-says-expired")

    page.get_by_role("button", name="Sign in as Rita Reader").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    assert "/#" + urlsplit(page.url).fragment == next_path
    expect(page.get_by_role("heading", name=run_name)).to_be_visible()
    expect(page.get_by_text("No Artifacts Recorded")).to_be_visible()
    screenshot(page, "ui-03-signed-in-again-same-view")


def test_a_part_of_mlflow_that_cannot_load_after_the_session_ended_goes_to_login(
    server: DescopeServer, emu: Emulator, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, server.url, "Rita Reader", start="/#/experiments")
    expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
    # Only MLflow's own files can tell: its API calls fail without an answer (no 401 to go by).
    page.route("**/ajax-api/**", lambda route: route.abort())
    page.route("**/api/**", lambda route: route.abort())
    refused_files: list[str] = []
    page.on(
        "response",
        lambda r: refused_files.append(r.url) if "/static-files/" in r.url and r.status == 401 else None,
    )
    context.clear_cookies()
    page.evaluate("location.hash = '#/models'")  # the model registry: not loaded until opened
    expect(page).to_have_url(LOGIN_PAGE)
    expect(page.locator("#message")).to_have_text("Your session expired. Please sign in again.")
    assert any(u.endswith(".chunk.js") for u in refused_files), refused_files
    assert parse_qs(urlsplit(page.url).query)["next"][0] == "/#/models"
    screenshot(page, "ui-04-file-failed-to-load-login")


def test_sign_out_from_mlflows_account_menu_and_back_shows_no_mlflow(
    server: DescopeServer, context: BrowserContext
) -> None:
    _, experiment_name, _, _ = experiment_with_run(server, "admin")
    page = context.new_page()
    sign_in(page, server.url, "Rita Reader", start="/#/experiments")
    expect(page.get_by_role("link", name=experiment_name)).to_be_visible()
    page.get_by_role("button", name=re.compile("^Account menu for")).click()
    sign_out = page.get_by_role("menuitem", name="Sign out")
    expect(sign_out).to_be_visible()
    screenshot(page, "ui-05-account-menu-sign-out")

    sign_out.click()
    expect(page.locator("#message")).to_have_text("You have signed out.")
    assert not {"DS", "DSR"} & {c["name"] for c in context.cookies()}
    screenshot(page, "ui-06-signed-out-from-the-menu")

    page.go_back()
    expect(page).to_have_url(LOGIN_PAGE)
    expect(page.locator("#message")).to_have_text("Please sign in to continue.")
    expect(page.get_by_role("link", name=experiment_name)).to_have_count(0)
    screenshot(page, "ui-07-back-after-sign-out")


def test_people_appear_by_name_where_mlflow_shows_their_user_ids(
    server: DescopeServer, emu: Emulator, context: BrowserContext
) -> None:
    editor_id = emu.session_claims("editor")["sub"]
    reader_id = emu.session_claims("reader")["sub"]
    experiment_id, _, run_id, run_name = experiment_with_run(server, "editor")
    page = context.new_page()
    sign_in(page, server.url, "Rita Reader", start=f"/#/experiments/{experiment_id}/runs/{run_id}")
    expect(page.get_by_role("heading", name=run_name)).to_be_visible()
    created_by = page.get_by_title(editor_id)
    expect(created_by.first).to_have_text("Eddie Editor")
    # The account button: its text, its avatar's letter and its label.
    account = page.get_by_role("button", name="Account menu for Rita Reader")
    expect(account).to_contain_text("Rita Reader")
    expect(account.locator("abbr")).to_have_attribute("title", f"Rita Reader ({reader_id})")
    expect(account.locator("abbr")).to_have_text("R")
    # Only the tag that records the user id still shows it (a name there would misstate the tag).
    # MLflow shows a tag as <key>, ": " and <value>.
    expect(page.get_by_text(f": {editor_id}", exact=True)).to_have_count(1)
    expect(page.get_by_text(editor_id, exact=False)).to_have_count(1)
    expect(page.get_by_text(": Eddie Editor", exact=True)).to_have_count(2)  # descope.username, .name
    screenshot(page, "ui-08-names-on-the-run-page")

    # API clients still see the ids.
    run = server.api("GET", "/api/2.0/mlflow/runs/get", "reader", params={"run_id": run_id})
    assert run.json()["run"]["info"]["user_id"] == editor_id
