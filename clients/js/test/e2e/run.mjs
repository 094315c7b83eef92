// End to end in headless Chromium against a real Latchkey server.
//
// Starts `latchkey serve` (built with `cargo build -p latchkey` unless LATCHKEY_BIN names a
// binary) with a temporary SQLite config in strict rotation mode (refresh.reuse_interval = "0s"),
// and a static server on another port (a second origin, listed in the client's allowed_origins)
// that serves dist/ and a test page, plus /api/me, a resource server that asks Latchkey's
// forward-auth endpoint whether a Bearer token is good. Every process started here is stopped by
// its PID, also on failure.
//
// Needs /usr/bin/chromium (or LATCHKEY_CHROMIUM). Without it: a SKIPPED line and success, unless
// LATCHKEY_REQUIRE_BROWSER=1, where it fails.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const PKG = resolve(HERE, "../..");
const REPO = resolve(PKG, "../..");
const CHROMIUM = process.env.LATCHKEY_CHROMIUM || "/usr/bin/chromium";
const REQUIRE = process.env.LATCHKEY_REQUIRE_BROWSER === "1";
const PASSWORD = "correct horse battery staple";

if (!existsSync(CHROMIUM)) {
  if (REQUIRE) {
    console.error(`e2e: FAILED: no Chromium at ${CHROMIUM} and LATCHKEY_REQUIRE_BROWSER=1`);
    process.exit(1);
  }
  console.log(`SKIPPED: @latchkey/client browser e2e test: no Chromium at ${CHROMIUM} (apt-get install chromium; LATCHKEY_REQUIRE_BROWSER=1 makes this a failure)`);
  process.exit(0);
}

const { chromium } = await import("playwright-core");

/** Children started here, stopped by PID at the end, also when the process dies early. */
const children = new Set();
function stopChildren() {
  for (const child of children) {
    try {
      process.kill(child.pid, "SIGTERM");
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.on("exit", stopChildren);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

function freePort() {
  return new Promise((ok, fail) => {
    const s = netServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function latchkeyBinary() {
  if (process.env.LATCHKEY_BIN) return process.env.LATCHKEY_BIN;
  const r = spawnSync("cargo", ["build", "-p", "latchkey", "--message-format=json-render-diagnostics"], {
    cwd: REPO,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error("cargo build -p latchkey failed");
  let exe = null;
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const m = JSON.parse(line);
    if (m.reason === "compiler-artifact" && m.executable && m.target?.name === "latchkey") exe = m.executable;
  }
  if (!exe) throw new Error("cargo did not report the latchkey binary");
  return exe;
}

async function waitReady(url, child, log) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`latchkey exited (${child.exitCode}):\n${log()}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`latchkey not ready at ${url}:\n${log()}`);
}

const MIME = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".map": "application/json" };

let dir, issuer, appOrigin, appServer, browser, latchkeyLog = "";
// The same pages from an origin that no client lists: the browser must keep Latchkey's answers from it.
let strangerOrigin, strangerServer;
let staleSeen = null;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "latchkey-js-e2e-"));
  const [lkPort, appPort, strangerPort] = [await freePort(), await freePort(), await freePort()];
  strangerOrigin = `http://127.0.0.1:${strangerPort}`;
  issuer = `http://127.0.0.1:${lkPort}`;
  appOrigin = `http://127.0.0.1:${appPort}`;
  const config = join(dir, "latchkey.toml");
  writeFileSync(
    config,
    `listen = "127.0.0.1:${lkPort}"
issuer = "${issuer}"
database = "sqlite://${join(dir, "latchkey.db")}"
signup = true

[access_token]
ttl = "20s"

[refresh]
reuse_interval = "0s"

[rate_limit]
token_per_ip = "100000/min"
login_per_ip = "1000/min"
login_per_account = "1000/min"

[password]
argon2_memory_kib = 64
argon2_iterations = 1

[[clients]]
id = "spa"
kind = "public"
audience = "api"
scopes = ["read", "write"]
grant_types = ["password", "refresh_token"]
allowed_origins = ["${appOrigin}"]
`,
  );
  const bin = latchkeyBinary();
  const child = spawn(bin, ["serve", "--config", config], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.stdout.on("data", (d) => (latchkeyLog += d));
  child.stderr.on("data", (d) => (latchkeyLog += d));
  await waitReady(issuer + "/readyz", child, () => latchkeyLog);

  for (const user of ["alice", "bob", "carol", "dave"]) {
    const r = await fetch(issuer + "/v1/users", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: user, password: PASSWORD }),
    });
    assert.equal(r.status, 201, await r.text());
  }

  // The app's origin: the built client, the test page, and a resource server.
  appServer = createServer(async (req, res) => {
    const url = new URL(req.url, appOrigin);
    if (url.pathname === "/api/stale") {
      // Refuses the first token it sees (as after a role change), accepts any later valid one.
      const auth = req.headers.authorization ?? "";
      const first = staleSeen === null;
      if (first) staleSeen = auth;
      const r = await fetch(issuer + "/v1/authorize?aud=api", { headers: { authorization: auth } });
      const ok = !first && auth !== staleSeen && r.status === 200;
      res.writeHead(ok ? 200 : 401, { "content-type": "application/json" }).end("{}");
      return;
    }
    if (url.pathname === "/api/me") {
      const r = await fetch(issuer + "/v1/authorize?aud=api", {
        headers: req.headers.authorization ? { authorization: req.headers.authorization } : {},
      });
      res.writeHead(r.status === 200 ? 200 : 401, { "content-type": "application/json" });
      res.end(JSON.stringify({ user: r.headers.get("x-latchkey-username"), sid: r.headers.get("x-latchkey-session") }));
      return;
    }
    const file = url.pathname === "/" ? join(HERE, "page.html") : normalize(join(PKG, url.pathname));
    if (!(file === join(HERE, "page.html") || file.startsWith(join(PKG, "dist") + "/")) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    res.end(readFileSync(file));
  });
  await new Promise((ok) => appServer.listen(appPort, "127.0.0.1", ok));
  strangerServer = createServer((req, res) => appServer.emit("request", req, res));
  await new Promise((ok) => strangerServer.listen(strangerPort, "127.0.0.1", ok));

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    if (appServer) await new Promise((ok) => appServer.close(ok));
    if (strangerServer) await new Promise((ok) => strangerServer.close(ok));
    stopChildren();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

async function appPage(context, origin = appOrigin) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(origin + "/");
  await page.waitForFunction(() => window.ready === true);
  return page;
}

/** Runs `f` in every page at the same instant (a shared deadline on the common clock). */
function atOnce(pages, f, arg) {
  const at = Date.now() + 300;
  return Promise.all(
    pages.map((p) =>
      p.evaluate(
        async ({ at, src, arg }) => {
          await new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())));
          return (0, eval)(src)(arg);
        },
        { at, src: f.toString(), arg },
      ),
    ),
  );
}

/** Every token the pages saw must be absent from every storage a script can read. */
async function assertNothingStored(pages) {
  for (const page of pages) {
    const seen = await page.evaluate(() => window.seen);
    assert.ok(seen.length > 0, "the page did receive tokens");
    const dump = await page.evaluate(() => window.storageDump());
    assert.deepEqual(dump.localStorage, {}, "localStorage is untouched");
    assert.deepEqual(dump.indexedDB, [], "no IndexedDB database");
    assert.deepEqual(dump.caches, [], "no Cache Storage");
    const text = JSON.stringify(dump);
    for (const token of seen) assert.ok(!text.includes(token), "a token is in script-readable storage");
  }
}

test("token mode cross-origin: password grant, refresh and revocation through CORS; fetch adds Bearer", async () => {
  const context = await browser.newContext();
  try {
    const page = await appPage(context);
    const result = await page.evaluate(
      async ({ issuer }) => {
        const client = window.makeClient({ issuer, clientId: "spa", redirectUri: location.origin + "/callback" });
        await client.acceptTokenResponse(await window.passwordLogin(issuer, "alice", "correct horse battery staple"));
        const first = await (await client.fetch("/api/me")).json();
        const before = await client.getAccessToken();
        await client.refresh();
        let afterRefresh = await client.getAccessToken();
        const second = await (await client.fetch("/api/me")).json();
        // A 401 from the API: one refresh through CORS, then the request once more.
        const presentedBefore = window.presented.length;
        const stale = (await client.fetch("/api/stale")).status;
        const retryRefreshed = window.presented.length === presentedBefore + 1;
        // The pending PKCE login sits in sessionStorage: no token there (checked below).
        afterRefresh = await client.getAccessToken();
        const url = await client.authorizeUrl();
        await client.logout();
        const revokedStatus = (await fetch("/api/me", { headers: { authorization: "Bearer " + afterRefresh } })).status;
        let error = null;
        try {
          await client.getAccessToken();
        } catch (e) {
          error = e.code;
        }
        return { first, second, stale, retryRefreshed, changed: before !== afterRefresh, presented: window.presented, url, revokedStatus, error };
      },
      { issuer },
    );
    assert.equal(result.first.user, "alice");
    assert.equal(result.second.user, "alice");
    assert.equal(result.second.sid, result.first.sid, "the same token session after rotation");
    assert.ok(result.changed, "the refresh gave a new access token");
    assert.equal(result.stale, 200, "fetch retried after the 401 with a refreshed token");
    assert.ok(result.retryRefreshed, "the 401 caused exactly one refresh");
    assert.equal(result.presented.length, 2);
    assert.equal(new Set(result.presented).size, 2);
    assert.ok(result.url.startsWith(issuer + "/oauth/authorize?"));
    assert.equal(result.revokedStatus, 401, "logout revoked the session at Latchkey");
    assert.equal(result.error, "login_required");
    const dump = await page.evaluate(() => window.storageDump());
    assert.deepEqual(Object.keys(dump.sessionStorage), ["latchkey.pending.spa"]);
    await assertNothingStored([page]);

    // Control: from an origin no client lists, the browser keeps the token response from the page.
    const stranger = await appPage(context, strangerOrigin);
    const refused = await stranger.evaluate(
      (issuer) => window.passwordLogin(issuer, "alice", "correct horse battery staple").then(() => "ok", (e) => e.name),
      issuer,
    );
    assert.equal(refused, "TypeError", "CORS blocks an unlisted origin");
  } finally {
    await context.close();
  }
});

test("two tabs refreshing at the same moment in strict mode never trigger reuse detection", async () => {
  const context = await browser.newContext();
  try {
    const [a, b] = [await appPage(context), await appPage(context)];
    const opts = { issuer, clientId: "spa", refreshMargin: 15 }; // 20 s tokens: timers due after 10 s
    await a.evaluate(async (o) => {
      const c = window.makeClient(o);
      await c.acceptTokenResponse(await window.passwordLogin(o.issuer, "bob", "correct horse battery staple"));
    }, opts);
    const joined = await b.evaluate(async (o) => {
      const c = window.makeClient(o);
      return { coordinated: c.coordinated, joined: await c.join() };
    }, opts);
    assert.deepEqual(joined, { coordinated: true, joined: true }, "the second tab gets the family from the first");

    // Forced: both tabs call refresh() at the same instant, several times.
    for (let round = 0; round < 5; round++) {
      const results = await atOnce([a, b], () =>
        window.client.refresh().then(
          () => "ok",
          (e) => e.code,
        ),
      );
      assert.deepEqual(results, ["ok", "ok"], `round ${round}`);
    }
    // And the timers: both tabs' refreshes fall due at the same time.
    const before = (await a.evaluate(() => window.presented.length)) + (await b.evaluate(() => window.presented.length));
    await new Promise((r) => setTimeout(r, 12_500));
    const presented = [...(await a.evaluate(() => window.presented)), ...(await b.evaluate(() => window.presented))];
    assert.ok(presented.length > before, "the timer refreshed before expiry");
    assert.ok(presented.length >= 6, `every forced round rotated: ${presented.length}`);
    assert.equal(new Set(presented).size, presented.length, "no refresh token was presented twice");

    // The family survives: both tabs keep working, with the same newest token, then once more.
    const me = await atOnce([a, b], async () => {
      const r = await window.client.fetch("/api/me");
      return { status: r.status, user: (await r.json()).user, token: await window.client.getAccessToken() };
    });
    assert.deepEqual(me.map((m) => [m.status, m.user]), [[200, "bob"], [200, "bob"]]);
    assert.equal(me[0].token, me[1].token);
    assert.equal(await b.evaluate(() => window.client.refresh().then(() => "ok", (e) => e.code)), "ok");
    assert.equal(await a.evaluate(async () => (await window.client.fetch("/api/me")).status), 200);
    await assertNothingStored([a, b]);
  } finally {
    await context.close();
  }
});

test("control: the same refresh token in two uncoordinated tabs is reuse, and the family dies", async () => {
  const context = await browser.newContext();
  try {
    const [a, b] = [await appPage(context), await appPage(context)];
    const body = await a.evaluate((issuer) => window.passwordLogin(issuer, "carol", "correct horse battery staple"), issuer);
    for (const p of [a, b]) {
      await p.evaluate(
        async ({ issuer, body }) => {
          const c = window.makeClient({ issuer, clientId: "spa", coordinate: false });
          await c.acceptTokenResponse(body);
        },
        { issuer, body },
      );
    }
    const results = await atOnce([a, b], () =>
      window.client.refresh().then(
        () => "ok",
        (e) => e.message,
      ),
    );
    assert.ok(results.some((r) => /reuse/i.test(r)), `reuse detected: ${results}`);
    const status = await fetch(issuer + "/v1/authorize", { headers: { authorization: "Bearer " + body.access_token } });
    assert.equal(status.status, 401, "the whole family was revoked");
  } finally {
    await context.close();
  }
});

test("session-token mode from the second origin: cookie session at the issuer, access token in memory", async () => {
  const context = await browser.newContext();
  try {
    // Log in on the issuer's own origin (POST /v1/session), as its /login page does.
    const issuerPage = await context.newPage();
    await issuerPage.goto(issuer + "/healthz");
    const login = await issuerPage.evaluate(async () => {
      const r = await fetch("/v1/session", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "dave", password: "correct horse battery staple" }),
      });
      return { status: r.status, body: await r.json() };
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const csrf = login.body.csrf_token;

    const page = await appPage(context);
    // Default CSRF source, GET /v1/session: readable cross-origin only if Latchkey allows it by CORS.
    const viaGet = await page.evaluate(async (issuer) => {
      const c = new window.L.SessionTokenClient({ issuer, clientId: "spa", fetch: window.recordingFetch });
      try {
        await c.getAccessToken();
        return "ok";
      } catch (e) {
        return String(e.code || e.message);
      }
    }, issuer);
    console.log(`# session mode, CSRF token from GET /v1/session across origins: ${viaGet}`);

    const result = await page.evaluate(
      async ({ issuer, csrf }) => {
        const c = (window.sessionClient = new window.L.SessionTokenClient({
          issuer,
          clientId: "spa",
          csrfToken: csrf,
          fetch: window.recordingFetch,
        }));
        const token = await c.getAccessToken();
        const r = await c.fetch("/api/me");
        return { token, status: r.status, user: (await r.json()).user, cookie: document.cookie };
      },
      { issuer, csrf },
    );
    assert.equal(result.status, 200);
    assert.equal(result.user, "dave");
    assert.ok(!result.cookie.includes("latchkey"), "the session cookie is HttpOnly");
    const claims = JSON.parse(Buffer.from(result.token.split(".")[1], "base64url").toString());
    assert.equal(claims.client_id, "spa");
    assert.equal(claims.aud, "api");

    // A wrong CSRF token is refused by Latchkey (403 csrf_failed) even from the allowed origin.
    const forged = await page.evaluate(async (issuer) => {
      const c = new window.L.SessionTokenClient({ issuer, clientId: "spa", csrfToken: "A".repeat(43) });
      return c.getAccessToken().then(() => "ok", (e) => e.code);
    }, issuer);
    assert.equal(forged, "csrf_failed");

    // Ending the cookie session at the issuer: no new token, and the old one is refused.
    const del = await issuerPage.evaluate(async (csrf) => (await fetch("/v1/session", { method: "DELETE", headers: { "x-csrf-token": csrf } })).status, csrf);
    assert.equal(del, 204);
    const afterLogout = await page.evaluate(async () => {
      const old = (await fetch("/api/me", { headers: { authorization: "Bearer " + (await window.sessionClient.getAccessToken()) } })).status;
      window.sessionClient.forget();
      const again = await window.sessionClient.getAccessToken().then(() => "ok", (e) => e.code);
      return { old, again };
    });
    assert.deepEqual(afterLogout, { old: 401, again: "login_required" });
    await assertNothingStored([page]);
  } finally {
    await context.close();
  }
});
