"""MLflow's own admin page (user menu -> Manage) under Descope: the REST calls it makes, against a real
`mlflow server --app-name descope`, and the page itself in real Chromium (screenshots in
test-artifacts/browser/admin-page-*.png)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.bootstrap import BOOTSTRAP_ADMIN

from .browser import screenshot
from .descope_server import DescopeServer, descope_server

GRANT = "/api/3.0/mlflow/users/permissions/grant"
ROLE_GRANT = "/api/3.0/mlflow/roles/permissions/add"
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DescopeServer]:
    with (
        Emulator() as emu,
        descope_server(emu, tmp_path_factory.mktemp("admin-page"), extra_args=("--workers", "1")) as s,
    ):
        for login_id in ("admin", "editor", "reader"):  # each signs in once: MLflow knows them
            assert s.api("GET", "/auth/user", login_id).status_code == 200
        yield s


def username(server: DescopeServer, login_id: str) -> str:
    return str(server.api("GET", "/auth/user", login_id).json()["username"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def users_in_the_auth_db(server: DescopeServer) -> set[str]:
    with sqlite3.connect(server.workdir / "auth.db") as db:
        return {row[0] for row in db.execute("SELECT username FROM users")}


def listed(server: DescopeServer, login_id: str, prefix: str = "/api") -> dict[str, dict[str, Any]]:
    resp = server.api("GET", f"{prefix}/2.0/mlflow/users/list", login_id)
    assert resp.status_code == 200, resp.text
    return {u["username"]: u for u in resp.json()["users"]}


def role_id(server: DescopeServer, name: str) -> int:
    roles = server.api("GET", "/api/3.0/mlflow/roles/list", "admin")
    assert roles.status_code == 200, roles.text
    return int(next(r["id"] for r in roles.json()["roles"] if r["name"] == name))


def experiment(server: DescopeServer) -> str:
    resp = server.api("POST", "/api/2.0/mlflow/experiments/create", "admin", json={"name": unique("exp")})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["experiment_id"])


def set_tag(server: DescopeServer, login_id: str, experiment_id: str) -> int:
    body = {"experiment_id": experiment_id, "key": "k", "value": "v"}
    resp = server.api("POST", "/api/2.0/mlflow/experiments/set-experiment-tag", login_id, json=body)
    return resp.status_code


# -- the REST calls ----------------------------------------------------------------------------------


def test_creating_a_user_is_refused_saying_users_come_from_descope(server: DescopeServer) -> None:
    for path in ("/api/2.0/mlflow/users/create", "/ajax-api/2.0/mlflow/users/create"):
        name = unique("pw-user")
        resp = server.api("POST", path, "admin", json={"username": name, "password": "x" * 16})
        assert resp.status_code == 403, resp.text
        assert resp.json()["error_code"] == "PERMISSION_DENIED"
        assert "sign in with Descope" in resp.json()["message"]
        assert "after their first sign-in" in resp.json()["message"]
        assert name not in users_in_the_auth_db(server)


def test_the_user_list_leaves_out_the_bootstrap_admin(server: DescopeServer) -> None:
    assert BOOTSTRAP_ADMIN in users_in_the_auth_db(server)  # it exists: MLflow requires it
    for login_id, prefix in (("admin", "/api"), ("admin", "/ajax-api"), ("reader", "/api")):
        users = listed(server, login_id, prefix)
        assert BOOTSTRAP_ADMIN not in users
        assert {username(server, who) for who in ("admin", "editor", "reader")} <= set(users)


def test_the_user_list_shows_admins_what_descope_roles_give_each_user(server: DescopeServer) -> None:
    users = listed(server, "admin")
    admin = users[username(server, "admin")]["descope_access"]
    editor = users[username(server, "editor")]["descope_access"]
    reader = users[username(server, "reader")]["descope_access"]
    assert admin["level"] == "ADMIN"
    assert admin["summary"] == "Admin: everything (Descope role 'admin' or 'mlflow-admin')"
    assert editor == {
        "level": "EDIT",
        "roles": ["editor"],
        "default": False,
        "summary": "EDIT everywhere (Descope role 'editor')",
    }
    # The demo's default permission is READ: a reader holds no MLflow role or grant at all.
    assert users[username(server, "reader")]["roles"] == []
    assert reader == {
        "level": "READ",
        "roles": ["reader"],
        "default": True,
        "summary": "READ everywhere (Descope role 'reader', or the default for everyone)",
    }


def test_non_admins_see_no_one_elses_descope_access(server: DescopeServer) -> None:
    for login_id in ("reader", "editor"):
        users = listed(server, login_id)
        assert users, "MLflow lets workspace members list the users"
        assert all("descope_access" not in u for u in users.values())


def test_the_bootstrap_admin_cannot_be_viewed_or_changed(server: DescopeServer) -> None:
    own_role = server.api(
        "POST", "/api/3.0/mlflow/roles/create", "admin", json={"name": unique("team"), "workspace": "default"}
    )
    assert own_role.status_code == 200, own_role.text
    exp = experiment(server)
    calls = [
        ("GET", f"/api/2.0/mlflow/users/get?username={BOOTSTRAP_ADMIN}", None),
        ("GET", f"/ajax-api/3.0/mlflow/users/roles/list?username={BOOTSTRAP_ADMIN}", None),
        ("GET", f"/api/3.0/mlflow/users/permissions/list?username={BOOTSTRAP_ADMIN}", None),
        ("DELETE", "/api/2.0/mlflow/users/delete", {"username": BOOTSTRAP_ADMIN}),
        (
            "POST",
            GRANT,
            {
                "username": BOOTSTRAP_ADMIN,
                "resource_type": "experiment",
                "resource_id": exp,
                "permission": "READ",
            },
        ),
        (
            "POST",
            "/api/3.0/mlflow/roles/assign",
            {"username": BOOTSTRAP_ADMIN, "role_id": own_role.json()["role"]["id"]},
        ),
    ]
    for method, path, body in calls:
        resp = server.api(method, path, "admin", json=body)
        assert resp.status_code == 403, f"{method} {path}: {resp.status_code} {resp.text}"
        assert resp.json()["error_code"] == "PERMISSION_DENIED"
        assert "internal account" in resp.json()["message"]
    assert BOOTSTRAP_ADMIN in users_in_the_auth_db(server)
    with sqlite3.connect(server.workdir / "auth.db") as db:
        assigned = db.execute(
            "SELECT COUNT(*) FROM user_role_assignments a JOIN users u ON u.id = a.user_id "
            "WHERE u.username = ?",
            (BOOTSTRAP_ADMIN,),
        ).fetchone()[0]
    assert assigned == 0


def test_the_descope_baseline_roles_cannot_be_changed_here(server: DescopeServer) -> None:
    edit_role = role_id(server, "descope-baseline-EDIT")
    grants = server.api("GET", f"/api/3.0/mlflow/roles/permissions/list?role_id={edit_role}", "admin")
    assert grants.status_code == 200, grants.text
    grant_id = grants.json()["role_permissions"][0]["id"]
    reader, editor = username(server, "reader"), username(server, "editor")
    calls = [
        ("POST", "/api/3.0/mlflow/roles/assign", {"username": reader, "role_id": edit_role}),
        ("DELETE", "/ajax-api/3.0/mlflow/roles/unassign", {"username": editor, "role_id": edit_role}),
        ("PATCH", "/api/3.0/mlflow/roles/update", {"role_id": edit_role, "description": "mine now"}),
        ("DELETE", "/api/3.0/mlflow/roles/delete", {"role_id": edit_role}),
        (
            "POST",
            "/api/3.0/mlflow/roles/permissions/add",
            {
                "role_id": edit_role,
                "resource_type": "experiment",
                "resource_pattern": "1",
                "permission": "MANAGE",
            },
        ),
        ("DELETE", "/api/3.0/mlflow/roles/permissions/remove", {"role_permission_id": grant_id}),
        (
            "PATCH",
            "/api/3.0/mlflow/roles/permissions/update",
            {"role_permission_id": grant_id, "permission": "MANAGE"},
        ),
    ]
    for method, path, body in calls:
        resp = server.api(method, path, "admin", json=body)
        assert resp.status_code == 403, f"{method} {path}: {resp.status_code} {resp.text}"
        assert "Descope" in resp.json()["message"]
    after = server.api("GET", f"/api/3.0/mlflow/roles/permissions/list?role_id={edit_role}", "admin").json()
    assert after == grants.json()
    users = listed(server, "admin")
    assert users[editor]["descope_access"]["level"] == "EDIT"
    assert users[reader]["descope_access"]["level"] == "READ"


def test_an_admin_grants_edit_on_one_experiment_and_uses_roles_of_their_own(server: DescopeServer) -> None:
    """What the README's "Granting access: MLflow's admin page" does, through the page's calls. The
    reader is left as it was (the browser tests show it without roles)."""
    reader = username(server, "reader")
    granted, other, via_role = experiment(server), experiment(server), experiment(server)
    assert set_tag(server, "reader", granted) == 403
    grant = {"username": reader, "resource_type": "experiment", "resource_id": granted}
    ok = server.api(
        "POST", GRANT.replace("/api/", "/ajax-api/"), "admin", json={**grant, "permission": "EDIT"}
    )
    assert ok.status_code == 200, ok.text
    team = server.api(
        "POST", "/api/3.0/mlflow/roles/create", "admin", json={"name": unique("team"), "workspace": "default"}
    )
    assert team.status_code == 200, team.text
    team_id = team.json()["role"]["id"]
    assignment = {"username": reader, "role_id": team_id}
    try:
        assert set_tag(server, "reader", granted) == 200
        assert set_tag(server, "reader", other) == 403

        add = {"role_id": team_id, "resource_type": "experiment", "resource_pattern": via_role}
        added = server.api("POST", ROLE_GRANT, "admin", json={**add, "permission": "EDIT"})
        assert added.status_code == 200, added.text
        assert server.api("POST", "/api/3.0/mlflow/roles/assign", "admin", json=assignment).status_code == 200
        assert set_tag(server, "reader", via_role) == 200
        assert listed(server, "admin")[reader]["descope_access"]["level"] == "READ"  # still from Descope
    finally:
        server.api("DELETE", "/api/3.0/mlflow/roles/unassign", "admin", json=assignment)
        server.api("POST", GRANT.replace("grant", "revoke"), "admin", json=grant)
    assert set_tag(server, "reader", granted) == 403
    assert set_tag(server, "reader", via_role) == 403


def test_a_non_admin_cannot_use_the_admin_apis(server: DescopeServer) -> None:
    """(MLflow lets a member of a workspace read that workspace's roles, roles/get, and anyone read
    their own roles and permissions: not judged here.)"""
    team = server.api(
        "POST", "/api/3.0/mlflow/roles/create", "admin", json={"name": unique("team"), "workspace": "default"}
    )
    team_id = team.json()["role"]["id"]
    exp = experiment(server)
    for login_id, other_id in (("reader", "editor"), ("editor", "reader")):
        me, other = username(server, login_id), username(server, other_id)
        calls = [
            ("GET", "/api/3.0/mlflow/roles/list", None),
            ("GET", f"/api/3.0/mlflow/users/roles/list?username={other}", None),
            ("GET", f"/ajax-api/3.0/mlflow/users/permissions/list?username={other}", None),
            ("POST", "/api/3.0/mlflow/roles/create", {"name": unique("mine"), "workspace": "default"}),
            ("POST", "/api/3.0/mlflow/roles/assign", {"username": me, "role_id": team_id}),
            ("DELETE", "/api/2.0/mlflow/users/delete", {"username": other}),
            ("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": me, "is_admin": True}),
            (
                "POST",
                GRANT,
                {"username": me, "resource_type": "experiment", "resource_id": exp, "permission": "EDIT"},
            ),
        ]
        for method, path, body in calls:
            resp = server.api(method, path, login_id, json=body)
            assert resp.status_code == 403, f"{login_id} {method} {path}: {resp.status_code} {resp.text}"
    assert set_tag(server, "reader", exp) == 403
    users = listed(server, "admin")
    assert users[username(server, "editor")]["is_admin"] is False
    assert users[username(server, "reader")]["is_admin"] is False


# -- the page, in Chromium ---------------------------------------------------------------------------


@pytest.fixture
def admin_page(server: DescopeServer, browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    page = ctx.new_page()
    page.goto(server.url + "/")
    page.get_by_role("button", name="Sign in as Ada Admin").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    yield page
    ctx.close()


def row_of(page: Page, who: str) -> Any:
    """The users list's row of user id ``who``: found by its link, whose text MLflow's page turns
    into the person's name once the server knows it."""
    return page.get_by_role("row").filter(has=page.locator(f'a[href="#/admin/users/{who}"]'))


def test_the_admin_page_shows_descope_users_as_they_are(server: DescopeServer, admin_page: Page) -> None:
    page = admin_page
    reader, editor = username(server, "reader"), username(server, "editor")
    page.goto(server.url + "/#/admin")
    expect(row_of(page, reader)).to_contain_text(
        "READ everywhere (Descope role 'reader', or the default for everyone)"
    )
    expect(row_of(page, editor)).to_contain_text("EDIT everywhere (Descope role 'editor')")
    expect(page.get_by_role("columnheader", name="From Descope")).to_be_visible()
    expect(page.get_by_role("button", name="Delete")).to_be_visible()
    expect(page.get_by_role("button", name="Create User")).to_be_hidden()
    expect(page.get_by_text(BOOTSTRAP_ADMIN)).to_have_count(0)
    screenshot(page, "admin-page-users")

    page.get_by_role("tab", name="Roles").click()
    expect(page.get_by_role("note")).to_contain_text("These are MLflow roles")
    expect(page.get_by_role("link", name="descope-baseline-EDIT")).to_be_visible()
    screenshot(page, "admin-page-roles")

    page.goto(server.url + f"/#/admin/roles/{role_id(server, 'descope-baseline-EDIT')}")
    expect(page.get_by_role("note")).to_contain_text("Managed by mlflow-descope-auth")
    expect(page.get_by_role("button", name="Edit role")).to_be_hidden()
    screenshot(page, "admin-page-baseline-role")

    page.goto(server.url + f"/#/admin/users/{reader}")
    expect(page.get_by_role("note")).to_contain_text(
        "From Descope: READ everywhere (Descope role 'reader', or the default for everyone)"
    )
    expect(page.get_by_text("No roles", exact=True)).to_be_visible()  # MLflow's own, now explained
    screenshot(page, "admin-page-reader")


def test_an_admin_grants_edit_on_an_experiment_with_edit_access(
    server: DescopeServer, admin_page: Page
) -> None:
    page = admin_page
    reader = username(server, "reader")
    name = unique("granted")
    created = server.api("POST", "/api/2.0/mlflow/experiments/create", "admin", json={"name": name})
    exp = str(created.json()["experiment_id"])
    assert set_tag(server, "reader", exp) == 403

    page.goto(server.url + f"/#/admin/users/{reader}")
    page.get_by_role("button", name="Edit access").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Direct permissions", exact=True)).to_be_visible()
    expect(dialog.get_by_text("Admin status", exact=True)).to_be_hidden()  # Descope roles decide who is admin
    dialog.get_by_role("combobox", name="Experiment").click()
    page.get_by_role("option", name=name).click()  # "<name> (<id>)"; the list closes itself
    dialog.locator('[data-component-id="admin.direct_permission.permission_level"]').click()
    page.get_by_role("option", name="EDIT", exact=True).click()
    dialog.get_by_role("button", name="Add", exact=True).click()
    screenshot(page, "admin-page-edit-access")
    dialog.get_by_role("button", name="Review changes").click()
    expect(dialog).to_contain_text(f"experiment:{exp} → EDIT")
    dialog.get_by_role("button", name="Apply changes").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("tab", name="Permissions").click()
    expect(page.get_by_role("row").filter(has_text="EDIT")).to_contain_text(exp)
    screenshot(page, "admin-page-granted")
    assert set_tag(server, "reader", exp) == 200
    revoke = {"username": reader, "resource_type": "experiment", "resource_id": exp}
    assert server.api("POST", GRANT.replace("grant", "revoke"), "admin", json=revoke).status_code == 200
