// The login page's behaviour. The Descope web component runs the sign-in flow and hands its tokens to
// this script, which posts them to the server; the server validates them and sets HttpOnly cookies
// itself, so no token is ever stored where page scripts could read it.
(() => {
  const page = document.getElementById("login");
  const wc = document.getElementById("descope-wc");
  const loading = document.getElementById("loading");
  const LOAD_TIMEOUT_MS = 15000;

  const showError = (text) => {
    loading.hidden = true;
    document.getElementById("error-text").textContent = text;
    document.getElementById("error").hidden = false;
  };
  document.getElementById("retry").addEventListener("click", () => window.location.reload());

  // The component's script comes from Descope's CDN (or the emulator): a page that cannot load it
  // says so, instead of staying blank.
  const componentUrl = page.dataset.webComponentUrl;
  const script = document.createElement("script");
  script.src = componentUrl;
  script.onerror = () =>
    showError(`The Descope sign-in form could not be loaded from ${new URL(componentUrl, location.href).host}.`);
  document.head.appendChild(script);
  const timer = setTimeout(() => {
    if (!customElements.get("descope-wc")) showError("The Descope sign-in form did not load in time.");
  }, LOAD_TIMEOUT_MS);
  customElements.whenDefined("descope-wc").then(() => {
    clearTimeout(timer);
    loading.hidden = true;
  });

  wc.addEventListener("success", async (event) => {
    const detail = event.detail || {};
    let resp;
    try {
      resp = await fetch(page.dataset.sessionUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({
          sessionJwt: detail.sessionJwt,
          refreshJwt: detail.refreshJwt,
          // MLflow's UI routes live in the URL fragment, which never reaches the server but
          // survives its redirect to this page; MLflow's page puts it into `next` itself.
          next: page.dataset.next.includes("#") ? page.dataset.next : page.dataset.next + (location.hash || ""),
          // `mlflow-descope-auth login`: the server answers with a redirect to its loopback listener.
          cli: page.dataset.cliPort
            ? {cli: page.dataset.cliPort, state: page.dataset.cliState, challenge: page.dataset.cliChallenge}
            : undefined,
        }),
      });
    } catch (err) {
      showError("The MLflow server could not be reached.");
      return;
    }
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) {
      window.location.assign(body.redirect);
    } else if (resp.status === 503) {
      showError("Descope could not be reached to verify the sign-in. Please try again in a moment.");
    } else if (resp.status === 403) {
      showError(`Access was denied: ${body.message || "this sign-in was refused"}.`);
    } else {
      showError(`Sign-in was refused: ${body.message || `HTTP ${resp.status}`}.`);
    }
  });
  wc.addEventListener("error", (event) => {
    const detail = event.detail || {};
    showError(detail.errorDescription || "Descope could not complete the sign-in.");
  });
})();
