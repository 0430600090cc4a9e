"""The browser journey, in real headless Chromium against a real `mlflow server --app-name descope`:
the login page, the emulator's stand-in `<descope-wc>`, the MLflow UI, refusals, sign-out, failures.

Screenshots of every step go to test-artifacts/browser/ (not committed).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from mlflow_descope_auth.emulator import Emulator

from .browser import screenshot
from .descope_server import DescopeServer, descope_server
from .servers import RecordingProxy
from .unit.inprocess import expired_session

UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture(scope="module")
def server(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    with descope_server(emu, tmp_path_factory.mktemp("browser"), extra_args=("--workers", "1")) as s:
        yield s


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    yield ctx
    ctx.close()


def sign_in(page: Page, base: str, who: str, start: str = "/") -> None:
    page.goto(base + start)
    expect(page).to_have_url(lambda_url_contains("/auth/login"))
    page.get_by_role("button", name=f"Sign in as {who}").click()
    page.wait_for_url(lambda url: "/auth/" not in url)


def lambda_url_contains(fragment: str) -> re.Pattern[str]:
    return re.compile(f".*{re.escape(fragment)}.*")


def experiment_exists(server: DescopeServer, name: str) -> bool:
    resp = server.api(
        "GET", "/api/2.0/mlflow/experiments/get-by-name", "admin", params={"experiment_name": name}
    )
    if resp.status_code == 404:
        return False
    assert resp.status_code == 200, resp.text
    return True


def test_reader_signs_in_sees_experiments_is_refused_a_create_and_signs_out(
    server: DescopeServer, context: BrowserContext
) -> None:
    visible = f"visible-to-readers-{uuid.uuid4().hex[:8]}"
    created = server.api("POST", "/api/2.0/mlflow/experiments/create", "admin", json={"name": visible})
    assert created.status_code == 200, created.text
    page = context.new_page()

    page.goto(server.url + "/")
    expect(page).to_have_url(lambda_url_contains("/auth/login"))
    expect(page.locator("#message")).to_have_text("Please sign in to continue.")
    expect(page.get_by_role("button", name="Sign in as Rita Reader")).to_be_visible()
    screenshot(page, "01-login-page")

    page.get_by_role("button", name="Sign in as Rita Reader").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    assert page.url.rstrip("/") == server.url
    page.goto(server.url + "/#/experiments")
    expect(page.get_by_role("link", name=visible)).to_be_visible()
    screenshot(page, "02-reader-experiments")

    cookies = {c["name"]: c for c in context.cookies()}
    assert set(cookies) >= {"DS", "DSR"}
    for name in ("DS", "DSR"):
        assert cookies[name]["httpOnly"] is True, cookies[name]
        assert cookies[name]["sameSite"] == "Lax", cookies[name]
    # Page scripts cannot read them.
    assert "DS=" not in page.evaluate("document.cookie")

    refused = f"reader-may-not-create-{uuid.uuid4().hex[:8]}"
    page.get_by_role("button", name="Create", exact=True).click()
    dialog = page.get_by_role("dialog").filter(has_text="Create Experiment")
    dialog.get_by_role("textbox").first.fill(refused)
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_text("creating needs EDIT")).to_be_visible()
    screenshot(page, "03-reader-create-refused")
    assert not experiment_exists(server, refused)

    page.goto(server.url + "/auth/logout")
    expect(page).to_have_url(lambda_url_contains("/auth/login"))
    expect(page.locator("#message")).to_have_text("You have signed out.")
    screenshot(page, "04-signed-out")
    assert not {"DS", "DSR"} & {c["name"] for c in context.cookies()}
    # The session is really over: the UI sends the browser back to the login page.
    page.goto(server.url + "/#/experiments")
    expect(page).to_have_url(lambda_url_contains("/auth/login"))


def test_admin_creates_an_experiment_in_the_ui(server: DescopeServer, context: BrowserContext) -> None:
    name = f"made-in-the-ui-{uuid.uuid4().hex[:8]}"
    page = context.new_page()
    sign_in(page, server.url, "Ada Admin", start="/#/experiments")
    # The fragment survived the trip through the login page.
    expect(page).to_have_url(lambda_url_contains("#/experiments"))
    page.get_by_role("button", name="Create", exact=True).click()
    dialog = page.get_by_role("dialog").filter(has_text="Create Experiment")
    dialog.get_by_role("textbox").first.fill(name)
    dialog.get_by_role("button", name="Create").click()
    # MLflow opens the new experiment (which may show guidance popovers, also dialogs).
    expect(dialog).to_be_hidden()
    page.goto(server.url + "/#/experiments")
    # The name can be a link twice for a moment (the list's row, and the experiment page's own links
    # while the UI switches views): any of them shown is the experiment listed.
    expect(page.get_by_role("link", name=name).first).to_be_visible()
    screenshot(page, "05-admin-created-experiment")
    assert experiment_exists(server, name)


def test_an_expired_session_lands_on_the_login_page_saying_so(
    server: DescopeServer, emu: Emulator, context: BrowserContext
) -> None:
    context.add_cookies([{"name": "DS", "value": expired_session(emu, "reader"), "url": server.url}])
    page = context.new_page()
    page.goto(server.url + "/#/experiments")
    expect(page.locator("#message")).to_have_text("Your session expired. Please sign in again.")
    screenshot(page, "06-session-expired")
    # Signing in again goes back to where the user was.
    page.get_by_role("button", name="Sign in as Rita Reader").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    expect(page).to_have_url(lambda_url_contains("#/experiments"))


def test_descope_unreachable_shows_an_error_and_try_again_recovers(
    server: DescopeServer, emu: Emulator, context: BrowserContext
) -> None:
    page = context.new_page()
    emu.set_fault("outage", seconds=60)
    try:
        page.goto(server.url + "/auth/login")
        error = page.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("could not be loaded")
        screenshot(page, "07-descope-unreachable")
    finally:
        emu.clear_faults()
    page.get_by_role("button", name="Try again").click()
    page.get_by_role("button", name="Sign in as Rita Reader").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    assert page.url.rstrip("/") == server.url


def test_a_failed_sign_in_flow_is_explained_on_the_page(
    server: DescopeServer, emu: Emulator, context: BrowserContext
) -> None:
    # Descope fails the flow itself: the component's error event reaches the page.
    page = context.new_page()
    page.goto(server.url + "/auth/login")
    expect(page.get_by_role("button", name="Sign in as Rita Reader")).to_be_visible()
    emu.set_fault("error", status=503, routes=["login"])
    try:
        page.get_by_role("button", name="Sign in as Rita Reader").click()
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error-text")).to_contain_text("Injected fault")
        screenshot(page, "08-sign-in-failed")
    finally:
        emu.clear_faults()
    assert "/auth/login" in page.url


def test_login_works_under_a_static_prefix_behind_a_reverse_proxy(
    emu: Emulator, browser: Browser, tmp_path: Path
) -> None:
    with descope_server(emu, tmp_path, extra_args=("--workers", "1", "--static-prefix", "/mlflow")) as s:
        proxy = RecordingProxy(s.url).start()
        try:
            ctx = browser.new_context()
            ctx.set_default_timeout(UI_TIMEOUT_MS)
            page = ctx.new_page()
            page.goto(proxy.url + "/mlflow/")
            expect(page).to_have_url(lambda_url_contains("/mlflow/auth/login"))
            page.get_by_role("button", name="Sign in as Eddie Editor").click()
            page.wait_for_url(lambda url: "/auth/" not in url)
            assert page.url.startswith(proxy.url + "/mlflow/")
            expect(page.get_by_text("Experiments").first).to_be_visible()
            # Our script works under the prefix: the account button shows the person's name.
            expect(page.get_by_role("button", name="Account menu for Eddie Editor")).to_be_visible()
            screenshot(page, "09-static-prefix-behind-proxy")
            cookie_paths = {c["name"]: c["path"] for c in ctx.cookies()}
            assert cookie_paths == {"DS": "/mlflow/", "DSR": "/mlflow/"}
            page.goto(proxy.url + "/mlflow/auth/logout")
            expect(page.locator("#message")).to_have_text("You have signed out.")
            ctx.close()
        finally:
            proxy.stop()
    # Everything went through the proxy under the prefix, the login page's own assets included.
    paths = [r.path for r in proxy.requests]
    assert "/mlflow/auth/static/login.js" in paths
    # MLflow's page asked for our script under the prefix too.
    assert any(p.startswith("/mlflow/auth/static/mlflow-ui.js") for p in paths), paths
    assert all(p.startswith("/mlflow/") for p in paths), [p for p in paths if not p.startswith("/mlflow/")]
