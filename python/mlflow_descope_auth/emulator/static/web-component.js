// Offline stand-in for Descope's flow web component (@descope/web-component), served by the emulator.
//
// Same element name (<descope-wc>), attributes (project-id, flow-id, base-url, theme) and events as the
// real component: "ready" once it has rendered, "success" with the flow's JWTResponse as `detail`
// ({sessionJwt, refreshJwt, user, firstSeen, ...}) and "error" with {errorCode, errorDescription}.
// Instead of running a Descope flow it lists the emulator's users and signs in the one picked, so a
// page written for the real component works unchanged against the emulator.
(() => {
  if (customElements.get("descope-wc")) return;
  const scriptOrigin = document.currentScript ? new URL(document.currentScript.src).origin : "";

  const STYLE = `
    :host { display: block; font-family: inherit; }
    .caption { color: #5f7281; font-size: 12px; margin: 0 0 12px; }
    .users { display: flex; flex-direction: column; gap: 8px; }
    button { display: flex; justify-content: space-between; align-items: center; width: 100%;
             padding: 10px 14px; border: 1px solid #d1d9e1; border-radius: 4px; background: #fff;
             font: inherit; font-size: 14px; cursor: pointer; color: #11171c; }
    button:hover, button:focus-visible { border-color: #2272b4; background: #f0f8ff; outline: none; }
    button:disabled { opacity: .6; cursor: wait; }
    .roles { color: #5f7281; font-size: 12px; }
    .status { color: #5f7281; font-size: 14px; }`;

  const escape = (text) =>
    String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);

  class DescopeWcStandIn extends HTMLElement {
    connectedCallback() {
      if (!this.shadowRoot) this.attachShadow({mode: "open"});
      this.load();
    }

    get baseUrl() {
      return (this.getAttribute("base-url") || scriptOrigin).replace(/\/+$/, "");
    }

    emit(name, detail) {
      this.dispatchEvent(new CustomEvent(name, {detail, bubbles: true, composed: true}));
    }

    fail(errorCode, errorDescription) {
      this.shadowRoot.innerHTML = `<style>${STYLE}</style><p class="status" part="error">${escape(errorDescription)}</p>`;
      this.emit("error", {errorCode, errorDescription, errorMessage: errorDescription});
    }

    async load() {
      const flow = escape(this.getAttribute("flow-id") || "sign-up-or-in");
      this.shadowRoot.innerHTML = `<style>${STYLE}</style><p class="status">Loading the sign-in flow…</p>`;
      let users;
      try {
        const resp = await fetch(`${this.baseUrl}/emulator/users`, {headers: this.projectHeaders()});
        if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
        users = (await resp.json()).users || [];
      } catch (err) {
        this.fail("E_EMULATOR_UNREACHABLE", `The Descope emulator at ${this.baseUrl} could not be reached.`);
        return;
      }
      const buttons = users.map((u) => {
        const roles = (u.roleNames || []).join(", ") || "no roles";
        const login = u.loginIds[0];
        return `<button type="button" data-login-id="${escape(login)}">
                  <span>Sign in as <strong>${escape(u.name || login)}</strong></span>
                  <span class="roles">${escape(roles)}</span></button>`;
      });
      this.shadowRoot.innerHTML = `<style>${STYLE}</style>
        <p class="caption">Descope emulator · flow <code>${flow}</code> · choose a demo user</p>
        <div class="users" part="users">${buttons.join("")}</div>`;
      for (const button of this.shadowRoot.querySelectorAll("button")) {
        button.addEventListener("click", () => this.signIn(button.dataset.loginId));
      }
      this.emit("ready", {});
    }

    projectHeaders() {
      const project = this.getAttribute("project-id") || "";
      return project ? {"x-descope-project-id": project} : {};
    }

    async signIn(loginId) {
      for (const b of this.shadowRoot.querySelectorAll("button")) b.disabled = true;
      let resp;
      try {
        resp = await fetch(`${this.baseUrl}/emulator/login`, {
          method: "POST",
          headers: {"Content-Type": "application/json", ...this.projectHeaders()},
          body: JSON.stringify({loginId}),
        });
      } catch (err) {
        this.fail("E_EMULATOR_UNREACHABLE", `The Descope emulator at ${this.baseUrl} could not be reached.`);
        return;
      }
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        this.fail(body.errorCode || `E_HTTP_${resp.status}`, body.errorDescription || `Sign-in failed (HTTP ${resp.status}).`);
        return;
      }
      this.emit("success", body);
    }
  }

  customElements.define("descope-wc", DescopeWcStandIn);
})();
