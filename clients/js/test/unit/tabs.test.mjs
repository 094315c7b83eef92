// Several tabs of one browser: clients sharing a LockManager and a BroadcastChannel hub whose
// messages arrive later than lock grants (the worst order), against a strict-rotation server.
import test from "node:test";
import assert from "node:assert/strict";
import { LatchkeyClient } from "../../dist/index.js";
import { FakeHub, FakeLocks, FakeServer, sleep } from "./fakes.mjs";

const ISSUER = "https://id.example";

function browser({ hubDelay = 30, serverDelay = 5, ttl = 900 } = {}) {
  const server = new FakeServer({ delayMs: serverDelay, ttl });
  const locks = new FakeLocks();
  const hub = new FakeHub(hubDelay);
  const tabs = [];
  const tab = (extra = {}) => {
    const c = new LatchkeyClient({
      issuer: ISSUER,
      clientId: "spa",
      fetch: server.fetch,
      locks,
      channel: hub.factory,
      autoRefresh: false,
      ...extra,
    });
    tabs.push(c);
    return c;
  };
  const close = () => tabs.forEach((t) => t.dispose());
  return { server, locks, hub, tab, tabs, close };
}
const refreshes = (server) => server.requests.filter((r) => r.form.grant_type === "refresh_token");

test("tabs sharing a family refreshing at the same moment never present a consumed token", async () => {
  const b = browser();
  try {
    const tabs = [b.tab(), b.tab(), b.tab(), b.tab()];
    assert.ok(tabs.every((t) => t.coordinated));
    await tabs[0].acceptTokenResponse(b.server.login());
    for (const t of tabs.slice(1)) assert.equal(await t.join(), true, "a new tab gets the tokens from another tab");
    for (let round = 0; round < 10; round++) {
      await Promise.all(tabs.map((t) => t.refresh()));
    }
    assert.equal(b.server.reuse, 0, "no reuse detected");
    assert.ok(b.server.alive("f1"), "the family survives");
    assert.ok(refreshes(b.server).length >= 10, "every round rotated at least once");
    await sleep(100); // let the last broadcasts land
    const tokens = await Promise.all(tabs.map((t) => t.getAccessToken()));
    assert.equal(new Set(tokens).size, 1, "every tab holds the newest token");
    assert.ok(b.server.accessValid(tokens[0]));
    for (const t of tabs) assert.equal((await t.fetch("https://api.example/api")).status, 200);
  } finally {
    b.close();
  }
});

test("control: the same refresh token in two uncoordinated tabs triggers reuse detection", async () => {
  const b = browser();
  try {
    const login = b.server.login();
    const one = b.tab({ coordinate: false });
    const two = b.tab({ coordinate: false });
    await one.acceptTokenResponse(login);
    await two.acceptTokenResponse(login);
    const results = await Promise.allSettled([one.refresh(), two.refresh()]);
    assert.equal(b.server.reuse, 1);
    assert.equal(b.server.alive("f1"), false);
    assert.ok(results.some((r) => r.status === "rejected" && r.reason.code === "invalid_grant"));
  } finally {
    b.close();
  }
});

test("timers of several tabs due at once rotate the family once", async () => {
  const b = browser({ ttl: 2 });
  try {
    const tabs = [0, 1, 2].map(() => b.tab({ autoRefresh: true, refreshMargin: 1.8 }));
    await tabs[0].acceptTokenResponse(b.server.login());
    await tabs[1].join();
    await tabs[2].join();
    await sleep(1_800);
    assert.equal(refreshes(b.server).length, 1);
    assert.equal(b.server.reuse, 0);
  } finally {
    b.close();
  }
});

test("a tab with no tokens asking for one adopts the family from another tab", async () => {
  const b = browser();
  try {
    const first = b.tab();
    await first.acceptTokenResponse(b.server.login());
    await first.refresh();
    const late = b.tab();
    assert.equal(late.authenticated, false);
    assert.equal(await late.getAccessToken(), await first.getAccessToken());
    assert.equal(refreshes(b.server).length, 1);
  } finally {
    b.close();
  }
});

test("logout in one tab forgets the tokens in every tab and revokes once", async () => {
  const b = browser({ hubDelay: 1 });
  try {
    const [x, y, z] = [b.tab(), b.tab(), b.tab()];
    await x.acceptTokenResponse(b.server.login());
    await y.join();
    await z.join();
    await y.logout();
    await sleep(20);
    assert.deepEqual([x, y, z].map((t) => t.authenticated), [false, false, false]);
    assert.equal(b.server.revoked.length, 1);
    assert.equal(b.server.alive("f1"), false);
    // A new login in one tab reaches the others again.
    await z.acceptTokenResponse(b.server.login());
    await sleep(20);
    assert.equal(await x.getAccessToken(), await z.getAccessToken());
  } finally {
    b.close();
  }
});

test("a family ended at the server (invalid_grant) is forgotten by every tab", async () => {
  const b = browser({ hubDelay: 1 });
  try {
    const [x, y] = [b.tab(), b.tab()];
    await x.acceptTokenResponse(b.server.login());
    await y.join();
    b.server.families.get("f1").revoked = true;
    await assert.rejects(y.refresh(), (e) => e.code === "invalid_grant");
    await sleep(20);
    assert.equal(x.authenticated, false);
  } finally {
    b.close();
  }
});

test("a tab that cannot get the newest tokens refuses to refresh instead of presenting stale ones", async () => {
  const b = browser({ hubDelay: 1 });
  try {
    const x = b.tab({ syncTimeout: 200 });
    await x.acceptTokenResponse(b.server.login());
    // Some other tab holds generation 99 and never answers (frozen, or its messages lost).
    let release;
    b.locks.request("latchkey:" + ISSUER + "|spa:gen:99", { mode: "shared" }, () => new Promise((r) => (release = r)));
    await assert.rejects(x.refresh(), (e) => e.code === "sync_timeout");
    assert.equal(refreshes(b.server).length, 0, "nothing presented");
    // A new tab joining then finds no tokens (and can log in itself) rather than failing.
    assert.equal(await b.tab({ syncTimeout: 100 }).join(), false);
    // Logging out still forgets (fail closed), and tells the tab with the newer tokens too.
    await x.logout();
    assert.equal(x.authenticated, false);
    assert.ok(b.hub.sent.some((m) => m.t === "logout" && m.gen === 99), "the logout names the newest generation");
    release();
  } finally {
    b.close();
  }
});

test("without Web Locks a tab keeps its own family and shares nothing", async () => {
  const b = browser();
  try {
    const x = b.tab({ locks: null });
    const y = b.tab({ locks: null });
    assert.equal(x.coordinated, false);
    await x.acceptTokenResponse(b.server.login());
    assert.equal(await y.join(), false);
    assert.equal(b.hub.sent.length, 0, "no token is broadcast");
  } finally {
    b.close();
  }
});
