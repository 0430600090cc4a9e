// MLflow's admin page (user menu -> Manage) under Descope sign-in. Loaded into MLflow's own page.
//
// - "Create User" is hidden: users come from Descope and appear after their first sign-in (the
//   server refuses the call too), and so is the admin switch (Descope roles decide who is admin).
// - The user list gets a column "From Descope": what each user's Descope roles give them. A user
//   whose roles map to the default permission holds no MLflow role or grant, and MLflow's own
//   columns would show nothing for someone who can read everything. The server adds it to the user
//   list it returns to admins (`descope_access`); this script only shows it.
// - A user's page says the same above MLflow's "Roles" and "Permissions".
// - The Roles tab says that these are MLflow's roles, not Descope's; a descope-baseline-* role's
//   page has no "Edit role" (the server refuses such edits) and says why.
//
// MLflow renders the page with React: the script re-applies its changes whenever the page changes
// (each change is marked, so applying twice changes nothing).
(() => {
  "use strict";
  if (window.__mlflowDescopeAdminPage) return;
  window.__mlflowDescopeAdminPage = true;

  const MARK = "data-descope-admin";
  const USERS_LIST = "ajax-api/2.0/mlflow/users/list";
  const ROLES_NOTE =
    "These are MLflow roles: named sets of permissions kept in MLflow's database, which you " +
    "assign to users here. They are not Descope roles. Descope roles decide who is an admin and " +
    "the access every user has everywhere (the descope-baseline-* roles, assigned automatically " +
    "at each user's sign-in and not editable here). Use these roles, or a user's 'Edit access', " +
    "to give people more on specific experiments, models or prompts.";

  const BASELINE_PREFIX = "descope-baseline-";
  const BASELINE_PAGE = "data-descope-baseline-role"; // on <html> while such a role's page shows
  const BASELINE_NOTE =
    "Managed by mlflow-descope-auth: each user holds the role their Descope roles map to. " +
    "It cannot be edited or assigned here.";

  let accessByUser = null; // username -> descope_access, from the last user list read
  let stale = true; // read the list again: a new admin view (grants or sign-ins since)
  let loading = null;

  // Hidden by a style sheet, not per element: React may replace the element at any render. The
  // selectors outrank the design system's own `display: ... !important` class rules, whichever
  // sheet comes last. The "Admin status" section of "Edit access" is the switch's grandparent.
  const STYLE =
    'html body [data-component-id="admin.users.create_button"],' +
    'html body div:has(> div > [data-component-id="admin.edit_access_modal.is_admin"])' +
    "{display:none !important}" +
    `html[${BASELINE_PAGE}] body [data-component-id="admin.role.edit_button"]{display:none !important}`;

  const byComponent = (id) => document.querySelectorAll(`[data-component-id="${id}"]`);
  const onAdminPage = () => location.hash.startsWith("#/admin");

  function loadAccess() {
    if (loading) return loading;
    loading = fetch(new URL(USERS_LIST, document.baseURI), { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : { users: [] }))
      .then((body) => {
        const found = new Map();
        for (const user of body.users || []) {
          if (user && user.descope_access) found.set(user.username, user.descope_access);
        }
        accessByUser = found;
        schedule();
      })
      .catch(() => {
        if (accessByUser === null) accessByUser = new Map();
      })
      .finally(() => {
        loading = null;
      });
    return loading;
  }

  function note(text, id) {
    const box = document.createElement("div");
    box.setAttribute(MARK, id);
    box.setAttribute("role", "note");
    box.textContent = text;
    box.style.cssText =
      "margin:8px 0 12px;padding:8px 12px;border:1px solid #c3d3e8;border-radius:4px;" +
      "background:#f2f7fd;color:#11171c;font-size:13px;line-height:1.45;";
    return box;
  }

  // Puts `node` just above the part of the page holding `below`, under the part holding `above`:
  // a block of its own between the page's header (or buttons) and its tabs (or table).
  function placeBetween(above, below, node) {
    let child = below;
    while (child.parentElement && !child.parentElement.contains(above)) child = child.parentElement;
    if (child.parentElement) child.parentElement.insertBefore(node, child);
  }

  function userTable() {
    const header = byComponent("admin.users.admin_header")[0];
    if (!header) return;
    const headerCell = header.closest('[role="columnheader"]') || header;
    const headerRow = headerCell.closest('[role="row"]');
    if (!headerRow) return;
    if (!headerRow.querySelector(`[${MARK}="header"]`)) {
      const cell = headerCell.cloneNode(false);
      cell.setAttribute(MARK, "header");
      cell.removeAttribute("data-component-id");
      cell.textContent = "From Descope";
      cell.style.flex = "2";
      headerRow.appendChild(cell);
    }
    const table = headerRow.parentElement;
    for (const link of table.querySelectorAll('[role="row"] a[href^="#/admin/users/"]')) {
      const row = link.closest('[role="row"]');
      const username = decodeURIComponent(link.getAttribute("href").slice("#/admin/users/".length));
      const access = accessByUser && accessByUser.get(username);
      const text = access ? access.summary : "";
      let cell = row.querySelector(`[${MARK}="access"]`);
      if (!cell) {
        const model = link.closest('[role="cell"]');
        cell = model ? model.cloneNode(false) : document.createElement("div");
        cell.setAttribute(MARK, "access");
        cell.style.flex = "2";
        cell.style.whiteSpace = "normal";
        row.appendChild(cell);
      }
      if (cell.textContent !== text) cell.textContent = text;
    }
  }

  function userDetail() {
    const match = location.hash.match(/^#\/admin\/users\/([^/?]+)/);
    const tabs = byComponent("admin.user_detail.tabs")[0];
    const edit = byComponent("admin.user_detail.edit_access_button")[0];
    if (!match || !tabs || !edit) return;
    const access = accessByUser && accessByUser.get(decodeURIComponent(match[1]));
    const existing = document.querySelector(`[${MARK}="user-access"]`);
    let text = "";
    if (access && access.level === "ADMIN") {
      text = `From Descope: ${access.summary}. Admins are not limited by the roles and permissions below.`;
    } else if (access) {
      text =
        `From Descope: ${access.summary}, that is on every experiment, registered model and prompt. ` +
        "The roles and permissions below are granted here in MLflow and add to it.";
    }
    if (existing && existing.textContent === text) return;
    if (existing) existing.remove();
    if (text) placeBetween(edit, tabs, note(text, "user-access"));
  }

  function rolesTab() {
    const header = byComponent("admin.roles.name_header")[0];
    const create = byComponent("admin.roles.create_button")[0];
    if (!header || !create || document.querySelector(`[${MARK}="roles-note"]`)) return;
    placeBetween(create, header, note(ROLES_NOTE, "roles-note"));
  }

  // A descope-baseline-* role's own page: no "Edit role" (the server refuses the edit), and why.
  let baselineRoles = new Map(); // role id -> whether it is a descope-baseline-* role
  function rolePage() {
    document.documentElement.removeAttribute(BASELINE_PAGE);
    const match = location.hash.match(/^#\/admin\/roles\/(\d+)/);
    const edit = byComponent("admin.role.edit_button")[0];
    if (!match || !edit) return;
    const id = match[1];
    if (!baselineRoles.has(id)) {
      baselineRoles.set(id, false);
      fetch(new URL(`ajax-api/3.0/mlflow/roles/get?role_id=${id}`, document.baseURI), {
        credentials: "same-origin",
      })
        .then((response) => (response.ok ? response.json() : {}))
        .then((body) => {
          const name = (body.role && body.role.name) || "";
          baselineRoles.set(id, name.startsWith(BASELINE_PREFIX));
          schedule();
        })
        .catch(() => {});
      return;
    }
    const existing = document.querySelector(`[${MARK}="baseline-note"]`);
    if (!baselineRoles.get(id)) {
      if (existing) existing.remove();
      return;
    }
    document.documentElement.setAttribute(BASELINE_PAGE, "");
    const tabs = byComponent("admin.role_detail.tabs")[0];
    if (!existing && tabs) placeBetween(edit, tabs, note(BASELINE_NOTE, "baseline-note"));
  }

  function apply() {
    if (!onAdminPage()) return;
    if (!document.querySelector(`style[${MARK}]`)) {
      const style = document.createElement("style");
      style.setAttribute(MARK, "style");
      style.textContent = STYLE;
      document.head.appendChild(style);
    }
    if (stale) {
      stale = false;
      loadAccess();
    }
    userTable();
    userDetail();
    rolesTab();
    rolePage();
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      apply();
    });
  }

  window.addEventListener("hashchange", () => {
    stale = true;
    schedule();
  });
  const start = () => {
    new MutationObserver(schedule).observe(document.body, { childList: true, subtree: true });
    schedule();
  };
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
