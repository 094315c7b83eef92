import test from "node:test";
import assert from "node:assert/strict";
import { SessionTokenClient } from "../../dist/index.js";
import { json } from "./fakes.mjs";

const ISSUER = "https://id.example";

/** A Latchkey with a cookie session whose CSRF token is `csrf` (changeable: a new login). */
function fakeIssuer() {
  const s = { csrf: "C1", loggedIn: true, requests: [], n: 0 };
  s.fetch = async (url, init = {}) => {
    url = String(url);
    s.requests.push({ url, init });
    if (url === ISSUER + "/v1/session") {
      return s.loggedIn ? json(200, { session: { id: "s1" }, csrf_token: s.csrf }) : json(401, { error: "unauthorized" });
    }
    if (url === ISSUER + "/v1/session/token") {
      if (!s.loggedIn) return json(401, { error: "unauthorized" });
      if (new Headers(init.headers).get("x-csrf-token") !== s.csrf) return json(403, { error: "csrf_failed" });
      return json(200, { access_token: "AT" + ++s.n, token_type: "Bearer", expires_in: 900, scope: "read" });
    }
    if (url.endsWith("/api")) {
      const ok = new Headers(init.headers).get("authorization") === "Bearer AT" + s.n;
      return ok ? json(200, {}) : json(401, { error: "unauthorized" });
    }
    return json(404, {});
  };
  return s;
}

test("mints an access token with the cookie and the CSRF token read from GET /v1/session", async () => {
  const s = fakeIssuer();
  const c = new SessionTokenClient({ issuer: ISSUER, clientId: "spa", scope: "read", fetch: s.fetch });
  assert.equal(await c.getAccessToken(), "AT1");
  assert.equal(await c.getAccessToken(), "AT1", "kept in memory until due");
  const [get, post] = s.requests;
  assert.equal(get.init.credentials, "include");
  assert.equal(post.init.method, "POST");
  assert.equal(post.init.credentials, "include");
  assert.equal(new Headers(post.init.headers).get("x-csrf-token"), "C1");
  assert.deepEqual(JSON.parse(post.init.body), { client_id: "spa", scope: "read" });
  assert.equal(s.requests.length, 2);
});

test("a changed CSRF token (a new login) is read again once; no session is login_required", async () => {
  const s = fakeIssuer();
  let now = 0;
  const c = new SessionTokenClient({ issuer: ISSUER, clientId: "spa", fetch: s.fetch, now: () => now });
  await c.getAccessToken();
  s.csrf = "C2";
  now = 15 * 60 * 1000; // due
  assert.equal(await c.getAccessToken(), "AT2");
  s.loggedIn = false;
  now *= 2;
  await assert.rejects(c.getAccessToken(), (e) => e.code === "login_required");
  assert.equal(c.authenticated, false);
});

test("a given CSRF token is used as is; fetch retries once after a 401 with a new token", async () => {
  const s = fakeIssuer();
  const c = new SessionTokenClient({ issuer: ISSUER, clientId: "spa", fetch: s.fetch, csrfToken: () => "C1" });
  await c.getAccessToken();
  assert.ok(!s.requests.some((r) => r.url.endsWith("/v1/session")), "GET /v1/session not needed");
  s.n++; // the resource server now wants a newer token
  const r = await c.fetch("https://api.example/api");
  assert.equal(r.status, 200);
  assert.equal(s.requests.filter((q) => q.url.endsWith("/api")).length, 2);
  // Concurrent callers share one mint.
  c.forget();
  const before = s.requests.length;
  await Promise.all([c.getAccessToken(), c.getAccessToken(), c.getAccessToken()]);
  assert.equal(s.requests.length - before, 1);
});
