import test from "node:test";
import assert from "node:assert/strict";
import { LatchkeyClient, LatchkeyError } from "../../dist/index.js";
import { FakeServer, MemoryStore, json, sleep } from "./fakes.mjs";

const ISSUER = "https://id.example";

function make(server, extra = {}) {
  return new LatchkeyClient({
    issuer: ISSUER,
    clientId: "spa",
    fetch: server.fetch,
    coordinate: false,
    autoRefresh: false,
    ...extra,
  });
}
const refreshes = (server) => server.requests.filter((r) => r.form.grant_type === "refresh_token");

test("a fresh token is served from memory; a due one is refreshed with rotation", async () => {
  const server = new FakeServer();
  let now = 1_000_000;
  const c = make(server, { now: () => now, refreshMargin: 60 });
  const login = server.login();
  await c.acceptTokenResponse(login);
  assert.equal(await c.getAccessToken(), login.access_token);
  assert.equal(refreshes(server).length, 0);
  now += (900 - 59) * 1000; // inside the margin
  const next = await c.getAccessToken();
  assert.notEqual(next, login.access_token);
  const [r] = refreshes(server);
  assert.deepEqual(r.form, { grant_type: "refresh_token", refresh_token: login.refresh_token, client_id: "spa" });
  assert.equal(r.url, ISSUER + "/oauth/token");
  assert.equal(r.init.credentials, "omit", "the token endpoint never gets cookies");
  // The next refresh presents the rotated token.
  await c.refresh();
  assert.notEqual(refreshes(server)[1].form.refresh_token, login.refresh_token);
  assert.equal(server.reuse, 0);
});

test("a margin over half the lifetime refreshes at half the lifetime, not in a loop", async () => {
  const server = new FakeServer({ ttl: 100 });
  let now = 0;
  const c = make(server, { now: () => now, refreshMargin: 1000 });
  await c.acceptTokenResponse(server.login());
  now = 49_000;
  await c.getAccessToken();
  assert.equal(refreshes(server).length, 0);
  now = 50_000;
  await c.getAccessToken();
  await c.getAccessToken();
  assert.equal(refreshes(server).length, 1);
});

test("concurrent callers in one tab share a single refresh", async () => {
  const server = new FakeServer({ delayMs: 20 });
  const c = make(server);
  await c.acceptTokenResponse(server.login());
  await Promise.all([c.refresh(), c.refresh(), c.getAccessToken(), c.refresh()]);
  assert.equal(refreshes(server).length, 1);
  assert.equal(server.reuse, 0);
});

test("fetch adds the Bearer token and retries once after a 401 with a refreshed token", async () => {
  const server = new FakeServer();
  const c = make(server);
  const login = server.login();
  await c.acceptTokenResponse(login);
  // The resource server stops accepting this access token (say, a role changed).
  server.access.delete(login.access_token);
  const r = await c.fetch("https://api.example/api", { headers: { "X-Extra": "1" } });
  assert.equal(r.status, 200);
  const calls = server.requests.filter((q) => q.url.endsWith("/api"));
  assert.equal(calls.length, 2);
  assert.equal(new Headers(calls[0].init.headers).get("authorization"), "Bearer " + login.access_token);
  assert.equal(new Headers(calls[1].init.headers).get("x-extra"), "1");
  assert.notEqual(new Headers(calls[1].init.headers).get("authorization"), "Bearer " + login.access_token);
  assert.equal(refreshes(server).length, 1);

  // A 401 that a new token does not cure is returned after one retry, not looped on.
  const always401 = async (url, init) => (String(url).endsWith("/api") ? json(401, { error: "unauthorized" }) : server.fetch(url, init));
  const d = make({ fetch: always401 });
  await d.acceptTokenResponse(server.login());
  const before = server.requests.length;
  assert.equal((await d.fetch("https://api.example/api")).status, 401);
  assert.equal(server.requests.length - before, 1, "one refresh, then the 401 is given back");
});

test("invalid_grant on refresh forgets the tokens; the caller must log in again", async () => {
  const server = new FakeServer();
  const c = make(server);
  const changes = [];
  c.subscribe((a) => changes.push(a));
  const login = server.login();
  await c.acceptTokenResponse(login);
  server.families.get("f1").revoked = true;
  await assert.rejects(c.refresh(), (e) => e instanceof LatchkeyError && e.code === "invalid_grant");
  assert.equal(c.authenticated, false);
  await assert.rejects(c.getAccessToken(), (e) => e.code === "login_required");
  assert.deepEqual(changes, [true, false]);
});

test("logout revokes the refresh token at /oauth/revoke and forgets everything", async () => {
  const server = new FakeServer();
  const c = make(server);
  const login = server.login();
  await c.acceptTokenResponse(login);
  await c.logout();
  const r = server.requests.find((q) => q.url.endsWith("/oauth/revoke"));
  assert.deepEqual(r.form, { token: login.refresh_token, token_type_hint: "refresh_token", client_id: "spa" });
  assert.equal(r.init.credentials, "omit");
  assert.equal(c.authenticated, false);
  assert.equal(server.alive("f1"), false);
  await assert.rejects(c.getAccessToken(), (e) => e.code === "login_required");
  // Logging out again is a no-op, not an error.
  await c.logout();
});

test("the timer refreshes before expiry without being asked", async () => {
  const server = new FakeServer({ ttl: 2 });
  const c = make(server, { autoRefresh: true, refreshMargin: 1.8 });
  await c.acceptTokenResponse(server.login());
  await sleep(1_700);
  assert.equal(refreshes(server).length, 1, "refreshed at half the 2 s lifetime");
  c.dispose();
});

test("no token ever reaches the transient store or any storage the client is given", async () => {
  const server = new FakeServer();
  const store = new MemoryStore();
  const c = make(server, { transientStore: store, redirectUri: "https://app.example/cb" });
  await c.authorizeUrl();
  await c.acceptTokenResponse(server.login());
  await c.refresh();
  await c.logout();
  assert.deepEqual(
    store.writes.map(([k]) => k),
    ["latchkey.pending.spa"],
    "only the pending login (verifier, state, nonce)",
  );
  for (const [, v] of store.writes) assert.ok(!/rt-|at-/.test(v));
});
