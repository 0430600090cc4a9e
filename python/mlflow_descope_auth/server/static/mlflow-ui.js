// Runs in MLflow's own page (the server adds it to MLflow's index.html: ui_page.py). It
// - takes the person to the login page when their session has ended, and back to the same view after
//   signing in: a 401 from this server, or one of MLflow's own script or style files failing to load
//   (they need the session too), makes it ask the server whether the session still holds;
// - adds "Sign out" to MLflow's account menu (MLflow shows its own only for its password login);
// - shows people's names where MLflow shows their Descope user ids (the ids stay in the data).
(() => {
  const prefix = new URL(document.currentScript.src, location.href).pathname.replace(/\/auth\/static\/[^/]*$/, "");
  const authUrl = (name) => `${prefix}/auth/${name}`;
  const realFetch = window.fetch.bind(window);

  const fromThisServer = (url) => {
    try {
      const target = new URL(url, location.href);
      return target.origin === location.origin && target.pathname.startsWith(`${prefix}/`);
    } catch {
      return false;
    }
  };

  // --- The end of the session -------------------------------------------------------------------

  // One trip to the login page per ended session: a page that comes back and still cannot get in
  // (cookies blocked, say) shows MLflow's error instead of bouncing between the two.
  const SENT_KEY = "mlflow-descope-auth:sent-to-login";
  const RESEND_AFTER_MS = 30000;
  let leaving = false;
  let checking = null;

  const goToLogin = () => {
    if (leaving) return;
    const last = Number(sessionStorage.getItem(SENT_KEY) || 0);
    if (Date.now() - last < RESEND_AFTER_MS) return;
    sessionStorage.setItem(SENT_KEY, String(Date.now()));
    leaving = true;
    // The view lives in the fragment (#/experiments/1), which the server never sees: it goes into
    // `next` here, so signing in returns to it.
    const next = location.pathname + location.search + location.hash;
    location.assign(`${authUrl("login")}?next=${encodeURIComponent(next)}&message=expired`);
  };

  // Whether the session still holds, from the server (which renews it when it can): a failed
  // request alone does not say so, since MLflow answers 401 for other reasons too.
  const checkSession = () => {
    checking ||= realFetch(authUrl("user"), {credentials: "same-origin", cache: "no-store"})
      .then((resp) => {
        if (resp.status === 401) goToLogin();
      })
      .catch(() => {})
      .finally(() => {
        checking = null;
      });
    return checking;
  };

  window.fetch = async function fetch(input, init) {
    const resp = await realFetch(input, init);
    if (resp.status === 401 && fromThisServer(resp.url)) checkSession();
    return resp;
  };

  const realOpen = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function open(...args) {
    this.addEventListener("loadend", () => {
      if (this.status === 401 && fromThisServer(this.responseURL)) checkSession();
    });
    return realOpen.apply(this, args);
  };

  // MLflow loads parts of itself on demand; after the session ends they get 401, and MLflow shows
  // its crash page. Load errors do not bubble: caught on the way down.
  window.addEventListener(
    "error",
    (event) => {
      const element = event.target;
      if (element instanceof HTMLScriptElement && fromThisServer(element.src)) checkSession();
      else if (element instanceof HTMLLinkElement && fromThisServer(element.href)) checkSession();
    },
    true,
  );
  window.addEventListener("unhandledrejection", (event) => {
    if (event.reason && event.reason.name === "ChunkLoadError") checkSession();
  });
  // Back to a page kept in the browser's memory (e.g. after signing out): ask before showing it.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) checkSession();
  });

  // --- "Sign out" in MLflow's account menu ------------------------------------------------------

  // A form POST, as the server's own sign-out page sends: same-origin, so the server accepts it.
  const signOut = () => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = authUrl("logout");
    form.hidden = true;
    document.body.appendChild(form);
    form.submit();
  };

  const addSignOut = () => {
    for (const trigger of document.querySelectorAll('button[aria-haspopup="menu"][aria-expanded="true"]')) {
      if (!(trigger.getAttribute("aria-label") || "").startsWith("Account menu")) continue;
      const menu = document.getElementById(trigger.getAttribute("aria-controls") || "");
      if (!menu || menu.querySelector("[data-descope-sign-out]")) continue;
      const items = menu.querySelectorAll('[role="menuitem"]');
      if (!items.length) continue;
      const last = items[items.length - 1];
      // MLflow's own item as the model: its look, none of its behaviour (handlers are not cloned).
      const item = last.cloneNode(true);
      item.removeAttribute("id");
      item.removeAttribute("data-highlighted");
      item.setAttribute("data-descope-sign-out", "");
      item.setAttribute("tabindex", "-1");
      item.textContent = "Sign out";
      item.addEventListener("mouseenter", () => item.setAttribute("data-highlighted", ""));
      item.addEventListener("mouseleave", () => item.removeAttribute("data-highlighted"));
      item.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        signOut();
      });
      item.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          signOut();
        }
      });
      const separator = document.createElement("div");
      separator.setAttribute("role", "separator");
      separator.style.cssText = "height:1px;margin:4px 0;background:rgba(0,0,0,0.1)";
      last.after(separator, item);
    }
  };

  // --- Names for user ids -----------------------------------------------------------------------

  // Descope user ids ("U2..."): the usernames this server gives MLflow by default.
  const USER_ID = /^U[0-9A-Za-z]{15,63}$/;
  const BATCH = 50;
  const SKIP = new Set(["SCRIPT", "STYLE", "TEXTAREA", "INPUT", "CODE", "PRE"]);
  const names = new Map(); // id -> name, or null when the server knows none
  const waiting = new Map(); // id -> text nodes to fill in once its name is known
  const asking = new Set();
  let lookupTimer = null;

  const userIdIn = (node) => {
    const text = node.nodeValue;
    if (!text || text.length > 80) return null;
    const id = text.trim();
    if (!USER_ID.test(id)) return null;
    const parent = node.parentElement;
    if (!parent || SKIP.has(parent.tagName) || parent.closest("[contenteditable]")) return null;
    if (isUserIdTag(parent, id)) return null;
    return id;
  };

  // The run tag that records the user id keeps showing the id: a name under "descope.user_id"
  // would misstate what the tag holds. The nearest element holding more than the id (and MLflow's
  // ": " between key and value) names the tag.
  const USER_ID_TAG = /^\s*descope\.user_id\s*:?\s*$/;
  const isUserIdTag = (element, id) => {
    let holder = element;
    while (holder && /^[\s:]*$/.test(holder.textContent.replace(id, ""))) holder = holder.parentElement;
    return Boolean(holder) && USER_ID_TAG.test(holder.textContent.replace(id, ""));
  };

  // MLflow's avatar: the id's first letter in an <abbr title="id">; and the account button's label.
  const ACCOUNT_LABEL = "Account menu for ";
  const userIdOf = (element) => {
    if (element.tagName === "ABBR" && USER_ID.test(element.title)) return element.title;
    const label = element.getAttribute("aria-label") || "";
    if (label.startsWith(ACCOUNT_LABEL) && USER_ID.test(label.slice(ACCOUNT_LABEL.length))) {
      return label.slice(ACCOUNT_LABEL.length);
    }
    return null;
  };

  const showName = (node, id) => {
    const name = names.get(id);
    if (!name) return;
    if (node.nodeType === Node.ELEMENT_NODE) {
      if (node.tagName === "ABBR") {
        node.textContent = name.charAt(0).toUpperCase();
        node.title = `${name} (${id})`;
      } else {
        node.setAttribute("aria-label", ACCOUNT_LABEL + name);
      }
      return;
    }
    // A function, so a "$&" in a name is text, not a replacement pattern.
    node.nodeValue = node.nodeValue.replace(id, () => name);
    const parent = node.parentElement;
    if (parent && !parent.hasAttribute("title")) parent.setAttribute("title", id);
  };

  const lookUp = async () => {
    lookupTimer = null;
    const ids = [...waiting.keys()].filter((id) => !asking.has(id)).slice(0, BATCH);
    if (!ids.length) return;
    ids.forEach((id) => asking.add(id));
    let found = {};
    try {
      const resp = await realFetch(`${authUrl("names")}?ids=${ids.map(encodeURIComponent).join(",")}`, {
        credentials: "same-origin",
      });
      if (resp.ok) found = await resp.json();
    } catch {
      // Names are a courtesy: the ids stay.
    }
    for (const id of ids) {
      asking.delete(id);
      names.set(id, typeof found[id] === "string" ? found[id] : null);
      for (const node of waiting.get(id) || []) {
        const still = node.nodeType === Node.ELEMENT_NODE ? userIdOf(node) : userIdIn(node);
        if (node.isConnected && still === id) showName(node, id);
      }
      waiting.delete(id);
    }
    if (waiting.size) scheduleLookUp();
  };

  const scheduleLookUp = () => {
    lookupTimer ||= setTimeout(lookUp, 50);
  };

  const visit = (node) => {
    const id = node.nodeType === Node.ELEMENT_NODE ? userIdOf(node) : userIdIn(node);
    if (!id) return;
    if (names.has(id)) {
      showName(node, id);
      return;
    }
    if (!waiting.has(id)) waiting.set(id, new Set());
    waiting.get(id).add(node);
    scheduleLookUp();
  };

  const visitTree = (root) => {
    if (root.nodeType === Node.TEXT_NODE) {
      visit(root);
    } else if (root.nodeType === Node.ELEMENT_NODE) {
      const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) visit(walker.currentNode);
      if (root.matches("abbr[title], [aria-label]")) visit(root);
      root.querySelectorAll(`abbr[title], [aria-label^="${ACCOUNT_LABEL}"]`).forEach(visit);
    }
  };

  const observer = new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "characterData") visit(record.target);
      else record.addedNodes.forEach(visitTree);
    }
    addSignOut();
  });
  visitTree(document.body);
  addSignOut();
  observer.observe(document.body, {childList: true, subtree: true, characterData: true});
})();
