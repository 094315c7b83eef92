// The BFF demo SPA. It never sees an access token: calls to /api/ carry the HttpOnly session
// cookie, and Latchkey adds the Bearer token on the way to the upstream. The only secret this
// script holds is the CSRF token, in a variable (never in storage or the DOM).
"use strict";
(function () {
  let csrfToken = null;
  const $ = (id) => document.getElementById(id);

  function show(signedIn, username) {
    $("login-section").hidden = signedIn;
    $("app-section").hidden = !signedIn;
    $("whoami").textContent = username || "";
  }

  function say(text) {
    $("message").textContent = text;
  }

  async function loadSession() {
    const r = await fetch("/v1/session", { credentials: "same-origin" });
    if (r.status !== 200) {
      csrfToken = null;
      show(false);
      return;
    }
    const body = await r.json();
    csrfToken = body.csrf_token;
    show(true, body.session.user.username);
  }

  function credentials() {
    return JSON.stringify({ username: $("username").value, password: $("password").value });
  }

  async function login(event) {
    if (event) event.preventDefault();
    say("");
    const r = await fetch("/v1/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: credentials(),
    });
    $("password").value = "";
    if (r.status !== 200) {
      say("Login failed.");
      return;
    }
    const body = await r.json();
    csrfToken = body.csrf_token;
    show(true, body.session.user.username);
  }

  async function signUp() {
    say("");
    const r = await fetch("/v1/users", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: credentials(),
    });
    if (r.status !== 201) {
      const body = await r.json().catch(() => ({}));
      say("Sign-up failed: " + (body.error_description || r.status));
      return;
    }
    await login();
  }

  async function logout() {
    await fetch("/v1/session", {
      method: "DELETE",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken || "" },
    });
    csrfToken = null;
    $("result").textContent = "";
    $("status").textContent = "";
    show(false);
  }

  async function call(method, path, payload) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET" && method !== "HEAD") {
      // Unsafe methods need the CSRF token, exactly as Latchkey's own cookie endpoints.
      init.headers["X-CSRF-Token"] = csrfToken || "";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const r = await fetch(path, init);
    const text = await r.text();
    let shown = text;
    try {
      shown = JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      // not JSON: show as is
    }
    $("status").textContent = "(" + r.status + ")";
    $("result").textContent = shown;
    if (r.status === 401) {
      say("The session has ended; log in again.");
      show(false);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("signup-button").addEventListener("click", () => signUp().catch((e) => say(String(e))));
    $("logout").addEventListener("click", logout);
    $("get-button").addEventListener("click", () => call("GET", "/api/hello?from=spa"));
    $("post-button").addEventListener("click", () =>
      call("POST", "/api/echo", { message: $("echo-message").value }));
    loadSession().catch((e) => say(String(e)));
  });
})();
