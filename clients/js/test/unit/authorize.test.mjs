import test from "node:test";
import assert from "node:assert/strict";
import {
  LatchkeyClient,
  LatchkeyError,
  challengeS256,
  checkCallback,
  isCallback,
  parseCallback,
} from "../../dist/index.js";
import { MemoryStore, json } from "./fakes.mjs";

const ISSUER = "https://id.example";
const REDIRECT = "https://app.example/callback";

function b64url(obj) {
  return Buffer.from(JSON.stringify(obj)).toString("base64url");
}
function idToken(claims) {
  return `${b64url({ alg: "RS256", typ: "JWT" })}.${b64url(claims)}.c2ln`;
}

function client(fetchImpl, store = new MemoryStore(), extra = {}) {
  return {
    store,
    c: new LatchkeyClient({
      issuer: ISSUER,
      clientId: "spa",
      redirectUri: REDIRECT,
      scope: "openid read",
      fetch: fetchImpl,
      transientStore: store,
      coordinate: false,
      autoRefresh: false,
      ...extra,
    }),
  };
}

async function pendingLogin(c, store) {
  const url = new URL(await c.authorizeUrl());
  const pending = JSON.parse(store.getItem("latchkey.pending.spa"));
  return { url, pending };
}

test("the authorization URL carries PKCE S256, state, nonce and the client's parameters", async () => {
  const { c, store } = client(async () => assert.fail("no request while building the URL"));
  const { url, pending } = await pendingLogin(c, store);
  assert.equal(url.origin + url.pathname, ISSUER + "/oauth/authorize");
  const p = url.searchParams;
  assert.equal(p.get("response_type"), "code");
  assert.equal(p.get("client_id"), "spa");
  assert.equal(p.get("redirect_uri"), REDIRECT);
  assert.equal(p.get("scope"), "openid read");
  assert.equal(p.get("code_challenge_method"), "S256");
  assert.equal(p.get("state"), pending.state);
  assert.equal(p.get("nonce"), pending.nonce);
  assert.equal(p.get("code_challenge"), await challengeS256(pending.verifier));
  assert.ok(!url.toString().includes(pending.verifier), "the verifier never leaves the tab");
  assert.match(pending.state, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(pending.state, pending.nonce);
  // prompt, max_age, login_hint; a second login gets fresh values.
  const again = new URL(await c.authorizeUrl({ prompt: "none", maxAge: 0, loginHint: "alice", scope: "openid" }));
  assert.equal(again.searchParams.get("prompt"), "none");
  assert.equal(again.searchParams.get("max_age"), "0");
  assert.equal(again.searchParams.get("login_hint"), "alice");
  assert.equal(again.searchParams.get("scope"), "openid");
  assert.notEqual(again.searchParams.get("state"), pending.state);
});

test("callback parsing reads the query, or the fragment", () => {
  const q = parseCallback(`${REDIRECT}?code=c1&state=s1&iss=${encodeURIComponent(ISSUER)}`);
  assert.deepEqual(q, { code: "c1", state: "s1", iss: ISSUER, error: null, errorDescription: null });
  const f = parseCallback(`${REDIRECT}#error=access_denied&error_description=no&state=s2`);
  assert.equal(f.error, "access_denied");
  assert.equal(f.errorDescription, "no");
  assert.equal(f.state, "s2");
  assert.ok(isCallback(`${REDIRECT}?code=x&state=y`));
  assert.ok(!isCallback(`${REDIRECT}?page=2`));
});

test("a callback is refused on a wrong or missing state or iss, an error, or an old login", () => {
  const pending = { state: "S", nonce: "N", verifier: "V", redirectUri: REDIRECT, createdAt: 1_000 };
  const ok = { code: "C", state: "S", iss: ISSUER, error: null, errorDescription: null };
  assert.equal(checkCallback(ok, pending, ISSUER, 2_000), "C");
  const refuse = (params, code, p = pending, now = 2_000) =>
    assert.throws(() => checkCallback({ ...ok, ...params }, p, ISSUER, now), (e) => e instanceof LatchkeyError && e.code === code);
  refuse({ state: "T" }, "invalid_state");
  refuse({ state: null }, "invalid_state");
  refuse({}, "invalid_state", null);
  refuse({}, "invalid_state", pending, 1_000 + 10 * 60 * 1000 + 1);
  refuse({ iss: null }, "invalid_issuer");
  refuse({ iss: "https://evil.example" }, "invalid_issuer");
  refuse({ iss: ISSUER + "/" }, "invalid_issuer");
  refuse({ code: null, error: "access_denied", errorDescription: "denied" }, "access_denied");
  refuse({ code: null }, "invalid_request");
  // The state is checked before the error: a forged error response is not believed either.
  refuse({ state: "T", error: "login_required" }, "invalid_state");
});

test("handleCallback exchanges the code with the verifier, checks the nonce, keeps tokens in memory only", async () => {
  const seen = [];
  let nonce;
  const fetchImpl = async (url, init) => {
    seen.push({ url: String(url), init, form: Object.fromEntries(new URLSearchParams(init.body)) });
    return json(200, {
      access_token: "AT1",
      token_type: "Bearer",
      expires_in: 900,
      refresh_token: "RT1",
      scope: "openid read",
      id_token: idToken({ iss: ISSUER, aud: "spa", nonce, sub: "u1" }),
    });
  };
  const { c, store } = client(fetchImpl);
  const { pending } = await pendingLogin(c, store);
  nonce = pending.nonce;
  await c.handleCallback(`${REDIRECT}?code=CODE&state=${pending.state}&iss=${encodeURIComponent(ISSUER)}`);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].url, ISSUER + "/oauth/token");
  assert.equal(seen[0].init.method, "POST");
  assert.equal(seen[0].init.credentials, "omit");
  assert.deepEqual(seen[0].form, {
    grant_type: "authorization_code",
    code: "CODE",
    redirect_uri: REDIRECT,
    client_id: "spa",
    code_verifier: pending.verifier,
  });
  assert.equal(await c.getAccessToken(), "AT1");
  assert.equal(store.getItem("latchkey.pending.spa"), null, "the pending login is used once");
  for (const [, v] of store.writes) {
    assert.ok(!v.includes("AT1") && !v.includes("RT1"), "no token is written to the transient store");
  }
  // The same callback again (reload, back button): refused, no request.
  await assert.rejects(
    c.handleCallback(`${REDIRECT}?code=CODE&state=${pending.state}&iss=${encodeURIComponent(ISSUER)}`),
    (e) => e.code === "invalid_state",
  );
  assert.equal(seen.length, 1);
});

test("handleCallback refuses an ID token with another nonce or audience, or a missing one", async () => {
  for (const claims of [
    (n) => ({ iss: ISSUER, aud: "spa", nonce: n + "x" }),
    (n) => ({ iss: ISSUER, aud: "other", nonce: n }),
    (n) => ({ iss: "https://evil.example", aud: "spa", nonce: n }),
    () => null,
  ]) {
    let nonce;
    const fetchImpl = async () => {
      const c = claims(nonce);
      const body = { access_token: "AT", token_type: "Bearer", expires_in: 900, refresh_token: "RT" };
      if (c) body.id_token = idToken(c);
      return json(200, body);
    };
    const { c, store } = client(fetchImpl);
    const { pending } = await pendingLogin(c, store);
    nonce = pending.nonce;
    await assert.rejects(
      c.handleCallback(`${REDIRECT}?code=C&state=${pending.state}&iss=${encodeURIComponent(ISSUER)}`),
      (e) => e.code === "invalid_id_token" || e.code === "invalid_response",
    );
    assert.equal(c.authenticated, false);
  }
});

test("a token endpoint error is reported with its OAuth code", async () => {
  const { c, store } = client(async () => json(400, { error: "invalid_grant", error_description: "code used" }));
  const { pending } = await pendingLogin(c, store);
  await assert.rejects(
    c.handleCallback(`${REDIRECT}?code=C&state=${pending.state}&iss=${encodeURIComponent(ISSUER)}`),
    (e) => e.code === "invalid_grant" && e.status === 400,
  );
});
