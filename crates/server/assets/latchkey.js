// Latchkey's account pages. Cookie mode: the browser holds only the HttpOnly session cookie;
// this script keeps the CSRF token in memory (never in storage) and sends it on every change.
"use strict";

let csrfToken = null;

function show(text, ok) {
  const el = document.getElementById("message");
  el.textContent = text;
  el.className = ok ? "ok" : "";
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrfToken && method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  if (response.status !== 204) {
    try { data = await response.json(); } catch (_) { data = null; }
  }
  return { status: response.status, data };
}

function errorText(result) {
  return (result.data && result.data.error_description) || `request failed (${result.status})`;
}

// Where to go after login: `return_to` only when it is a path on this origin (one leading
// "/", no "//", no backslash, no scheme, no control or space characters), else the account
// page. The server refuses other values too (/login answers 400); this is the same rule.
function returnPath(params) {
  const raw = params.get("return_to");
  if (raw === null || raw.length > 4096) return null;
  if (!raw.startsWith("/") || raw.startsWith("//") || raw.includes("\\")) return null;
  if (/[\u0000-\u0020\u007f]/.test(raw)) return null;
  let url;
  try { url = new URL(raw, location.origin); } catch (_) { return null; }
  if (url.origin !== location.origin) return null;
  // The absolute URL: a normalised path such as "//host" can never be read as another host.
  return url.href;
}

async function loginPage() {
  const params = new URLSearchParams(location.search);
  const back = returnPath(params);
  const hint = params.get("login_hint");
  if (hint && hint.length <= 256) document.getElementById("username").value = hint;
  // The handler goes on first: a submit before it is attached would be the browser's own
  // (a GET with the password in the URL).
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await api("POST", "/v1/session", {
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    });
    if (result.status === 200) { location.assign(back || "/account"); } else { show(errorText(result)); }
  });
  // Sent here by /oauth/authorize: always log in (prompt=login asks for a fresh login).
  if (back) return;
  const current = await api("GET", "/v1/session");
  if (current.status === 200) location.replace("/account");
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  return td;
}

async function loadSessions() {
  const result = await api("GET", "/v1/sessions");
  if (result.status !== 200) { show(errorText(result)); return; }
  const body = document.getElementById("sessions");
  body.replaceChildren();
  for (const s of result.data) {
    const tr = document.createElement("tr");
    tr.dataset.sessionId = s.id;
    if (s.current) tr.className = "current";
    tr.append(cell(s.kind + (s.current ? " (this one)" : "")), cell(s.created_at), cell(s.last_seen_at),
      cell(s.user_agent), cell(s.ip));
    const actions = document.createElement("td");
    if (!s.current) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "revoke";
      button.textContent = "Revoke";
      button.addEventListener("click", async () => {
        const r = await api("DELETE", `/v1/sessions/${encodeURIComponent(s.id)}`);
        if (r.status === 204) { show("Session revoked.", true); loadSessions(); } else { show(errorText(r)); }
      });
      actions.append(button);
    }
    tr.append(actions);
    body.append(tr);
  }
}

async function accountPage() {
  const current = await api("GET", "/v1/session");
  if (current.status !== 200) { location.replace("/login"); return; }
  csrfToken = current.data.csrf_token;
  document.getElementById("whoami").textContent = current.data.session.user.username;
  await loadSessions();

  document.getElementById("revoke-others").addEventListener("click", async () => {
    const r = await api("POST", "/v1/sessions/revoke-others");
    if (r.status === 204) { show("Other devices logged out.", true); loadSessions(); } else { show(errorText(r)); }
  });
  document.getElementById("password-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const r = await api("POST", "/v1/password", {
      current_password: document.getElementById("current-password").value,
      new_password: document.getElementById("new-password").value,
    });
    if (r.status === 204) {
      show("Password changed. Other sessions were logged out.", true);
      document.getElementById("password-form").reset();
      loadSessions();
    } else { show(errorText(r)); }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    const r = await api("DELETE", "/v1/session");
    if (r.status === 204) { location.replace("/login"); } else { show(errorText(r)); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "login") loginPage();
  if (page === "account") accountPage();
});
