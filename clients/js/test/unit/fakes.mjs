// Test doubles: a Latchkey token endpoint with strict rotation and reuse detection, a Web Locks
// LockManager, a BroadcastChannel hub that delivers late, and a transient store that records.

export function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** A token endpoint that behaves like Latchkey in strict mode (refresh.reuse_interval = 0s). */
export class FakeServer {
  constructor({ ttl = 900, delayMs = 5 } = {}) {
    this.ttl = ttl;
    this.delayMs = delayMs;
    this.n = 0;
    this.families = new Map(); // family id -> { current, consumed:Set, revoked }
    this.byToken = new Map(); // refresh token -> family id
    this.access = new Map(); // access token -> family id
    this.requests = [];
    this.reuse = 0;
    this.revoked = [];
  }
  issue(fam) {
    const f = this.families.get(fam);
    const refresh = `rt-${fam}-${++this.n}`;
    const access = `at-${fam}-${this.n}`;
    if (f.current) f.consumed.add(f.current);
    f.current = refresh;
    this.byToken.set(refresh, fam);
    this.access.set(access, fam);
    return { access_token: access, token_type: "Bearer", expires_in: this.ttl, refresh_token: refresh, scope: "read" };
  }
  login() {
    const fam = `f${this.families.size + 1}`;
    this.families.set(fam, { current: null, consumed: new Set(), revoked: false });
    return this.issue(fam);
  }
  alive(fam) {
    return !this.families.get(fam).revoked;
  }
  /** Whether an access token's family is alive (what a resource server would check). */
  accessValid(token) {
    const fam = this.access.get(token);
    return fam !== undefined && this.alive(fam);
  }
  fetch = async (input, init = {}) => {
    const url = String(input);
    const form = new URLSearchParams(init.body ?? "");
    this.requests.push({ url, form: Object.fromEntries(form), init });
    await new Promise((r) => setTimeout(r, this.delayMs));
    if (url.endsWith("/oauth/token") && form.get("grant_type") === "refresh_token") {
      const token = form.get("refresh_token");
      const fam = this.byToken.get(token);
      if (fam === undefined) return json(400, { error: "invalid_grant", error_description: "unknown" });
      const f = this.families.get(fam);
      if (f.revoked) return json(400, { error: "invalid_grant", error_description: "revoked" });
      if (f.current !== token) {
        f.revoked = true;
        this.reuse++;
        return json(400, { error: "invalid_grant", error_description: "refresh token reuse detected" });
      }
      return json(200, this.issue(fam), { "cache-control": "no-store" });
    }
    if (url.endsWith("/oauth/revoke")) {
      const fam = this.byToken.get(form.get("token")) ?? this.access.get(form.get("token"));
      if (fam !== undefined) this.families.get(fam).revoked = true;
      this.revoked.push(form.get("token"));
      return new Response(null, { status: 200 });
    }
    if (url.endsWith("/api")) {
      const auth = new Headers(init.headers).get("authorization") ?? "";
      const ok = this.accessValid(auth.replace(/^Bearer /, ""));
      return ok ? json(200, { ok: true }) : json(401, { error: "unauthorized" });
    }
    return json(404, { error: "not_found" });
  };
}

/** An in-process Web Locks LockManager (exclusive and shared, FIFO). */
export class FakeLocks {
  constructor() {
    this.held = []; // {name, mode}
    this.queue = []; // {name, mode, grant}
  }
  grantable(name, mode) {
    const holders = this.held.filter((l) => l.name === name);
    const earlier = this.queue.filter((q) => q.name === name);
    if (mode === "shared") return holders.every((l) => l.mode === "shared") && earlier.length === 0;
    return holders.length === 0 && earlier.length === 0;
  }
  request(name, options, callback) {
    const mode = options?.mode ?? "exclusive";
    return new Promise((resolve, reject) => {
      const run = () => {
        const lock = { name, mode };
        this.held.push(lock);
        Promise.resolve()
          .then(() => callback(lock))
          .then(resolve, reject)
          .finally(() => {
            this.held.splice(this.held.indexOf(lock), 1);
            this.pump();
          });
      };
      if (this.grantable(name, mode)) run();
      else this.queue.push({ name, mode, run });
    });
  }
  pump() {
    for (let i = 0; i < this.queue.length; ) {
      const q = this.queue[i];
      const holders = this.held.filter((l) => l.name === q.name);
      const before = this.queue.slice(0, i).some((x) => x.name === q.name);
      const ok = !before && (q.mode === "shared" ? holders.every((l) => l.mode === "shared") : holders.length === 0);
      if (ok) {
        this.queue.splice(i, 1);
        q.run();
      } else i++;
    }
  }
  async query() {
    return {
      held: this.held.map((l) => ({ name: l.name, mode: l.mode })),
      pending: this.queue.map((q) => ({ name: q.name, mode: q.mode })),
    };
  }
}

/** BroadcastChannels of one "browser": messages reach the other channels of the name after `delayMs` (structured clone). */
export class FakeHub {
  constructor(delayMs = 0) {
    this.delayMs = delayMs;
    this.channels = new Set();
    this.sent = [];
  }
  factory = (name) => {
    const hub = this;
    const ch = {
      name,
      onmessage: null,
      closed: false,
      postMessage(data) {
        hub.sent.push(data);
        for (const other of hub.channels) {
          if (other === ch || other.name !== name) continue;
          const copy = structuredClone(data);
          setTimeout(() => {
            if (!other.closed && other.onmessage) other.onmessage({ data: copy });
          }, hub.delayMs);
        }
      },
      close() {
        ch.closed = true;
        hub.channels.delete(ch);
      },
    };
    this.channels.add(ch);
    return ch;
  };
}

export class MemoryStore {
  constructor() {
    this.map = new Map();
    this.writes = [];
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.writes.push([k, v]);
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
