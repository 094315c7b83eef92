import {
  AuthorizeOptions,
  PendingLogin,
  TransientStore,
  buildAuthorizeUrl,
  checkCallback,
  checkIdToken,
  parseCallback,
  pendingKey,
} from "./authorize.js";
import {
  FetchLike,
  LatchkeyError,
  Tokens,
  base,
  defaultFetch,
  errorFrom,
  postForm,
  toTokens,
  withBearer,
} from "./util.js";

/** The part of the Web Locks API (`navigator.locks`) this client uses. */
export interface LockManagerLike {
  request(
    name: string,
    options: { mode?: "exclusive" | "shared" },
    callback: (lock: unknown) => unknown,
  ): Promise<unknown>;
  query(): Promise<{ held?: Array<{ name?: string }>; pending?: Array<{ name?: string }> }>;
}

/** The part of `BroadcastChannel` this client uses. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  close(): void;
}

export interface LatchkeyClientOptions {
  /** The issuer exactly as Latchkey's `issuer` (compared with the callback's `iss`). */
  issuer: string;
  clientId: string;
  /** One of the client's `redirect_uris` (needed for the authorization code flow). */
  redirectUri?: string;
  /** Default scope of `login()`; default `"openid"`. */
  scope?: string;
  /** Seconds before expiry at which the access token is refreshed (at most half its lifetime). Default 60. */
  refreshMargin?: number;
  /** Refresh on a timer before expiry (default true); otherwise only when a token is asked for. */
  autoRefresh?: boolean;
  /** Share one refresh family with the other tabs of this browser (default true; needs Web Locks and BroadcastChannel). */
  coordinate?: boolean;
  /** How long a tab waits for another tab to hand over the newest tokens (ms, default 3000). */
  syncTimeout?: number;
  /** Override the endpoints (default: issuer + `/oauth/authorize`, `/oauth/token`, `/oauth/revoke`). */
  endpoints?: { authorization?: string; token?: string; revocation?: string };
  fetch?: FetchLike;
  /** Where the PKCE verifier, state and nonce wait during the redirect; default `sessionStorage`. */
  transientStore?: TransientStore | null;
  /** Default `navigator.locks`; `null` disables cross-tab locking. */
  locks?: LockManagerLike | null;
  /** Default `name => new BroadcastChannel(name)`; `null` disables cross-tab sharing. */
  channel?: ((name: string) => ChannelLike) | null;
  /** Clock (epoch ms), for tests. */
  now?: () => number;
}

/** Messages between the tabs that share a family. Tokens travel only in memory. */
type Message =
  | { t: "tokens"; gen: number; tokens: Tokens }
  | { t: "want"; gen: number }
  | { t: "logout"; gen: number };

type Listener = (authenticated: boolean) => void;

const MAX_DELAY = 2_147_483_647;

function isTokens(x: unknown): x is Tokens {
  const t = x as Tokens | null;
  return (
    !!t &&
    typeof t.accessToken === "string" &&
    typeof t.expiresAt === "number" &&
    typeof t.refreshAt === "number" &&
    (t.refreshToken === undefined || typeof t.refreshToken === "string")
  );
}

/**
 * Token mode for browser apps: authorization code + PKCE login, tokens kept in this object's
 * memory only, refreshed before expiry, one refresh per family at a time across all tabs (Web
 * Locks), the rotated pair handed to the other tabs over BroadcastChannel inside the lock.
 *
 * Each held token set has a generation number; every tab holding generation `g` also holds a
 * shared Web Lock named `<key>:gen:<g>`, so `navigator.locks.query()` tells a tab inside the
 * refresh lock whether some tab has newer tokens than it has; it then waits for those tokens
 * instead of presenting its own (consumed) refresh token.
 */
export class LatchkeyClient {
  readonly issuer: string;
  readonly clientId: string;
  private readonly opts: LatchkeyClientOptions;
  private readonly fetchFn: FetchLike;
  private readonly now: () => number;
  private readonly key: string;
  private readonly locks: LockManagerLike | null;
  private readonly channel: ChannelLike | null;
  private tokens: Tokens | null = null;
  private gen = 0;
  private genRelease: (() => void) | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private waiters: Array<() => void> = [];
  private listeners = new Set<Listener>();
  private disposed = false;

  constructor(options: LatchkeyClientOptions) {
    if (!options.issuer || !options.clientId) {
      throw new LatchkeyError("invalid_options", "issuer and clientId are required");
    }
    this.opts = options;
    this.issuer = options.issuer;
    this.clientId = options.clientId;
    this.fetchFn = options.fetch ?? defaultFetch();
    this.now = options.now ?? Date.now;
    this.key = "latchkey:" + base(options.issuer) + "|" + options.clientId;
    const nav = typeof navigator !== "undefined" ? (navigator as { locks?: LockManagerLike }) : undefined;
    const locks = options.locks === undefined ? nav?.locks ?? null : options.locks;
    const makeChannel =
      options.channel === undefined
        ? typeof BroadcastChannel !== "undefined"
          ? (name: string) => new BroadcastChannel(name) as unknown as ChannelLike
          : null
        : options.channel;
    // Sharing a family needs both: without the lock two tabs could present the same token.
    if (options.coordinate !== false && locks && makeChannel) {
      this.locks = locks;
      this.channel = makeChannel(this.key);
      this.channel.onmessage = (e) => this.onMessage(e.data);
    } else {
      this.locks = null;
      this.channel = null;
    }
  }

  /** Whether this tab shares its family with the other tabs (Web Locks + BroadcastChannel). */
  get coordinated(): boolean {
    return this.channel !== null;
  }

  /** Whether tokens are held (they may still need a refresh). */
  get authenticated(): boolean {
    return this.tokens !== null;
  }

  /** When the current access token expires (epoch ms), or null. */
  get expiresAt(): number | null {
    return this.tokens ? this.tokens.expiresAt : null;
  }

  get scope(): string | null {
    return this.tokens ? this.tokens.scope : null;
  }

  /** Calls `listener(authenticated)` whenever tokens arrive or are forgotten; returns the unsubscribe. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ---- login ---------------------------------------------------------------------------------

  /**
   * Builds the authorization URL and keeps the pending login (verifier, state, nonce: no token)
   * in the transient store for the callback.
   */
  async authorizeUrl(options: AuthorizeOptions = {}): Promise<string> {
    if (!this.opts.redirectUri) throw new LatchkeyError("invalid_options", "redirectUri is required to log in");
    const store = this.transientStore();
    const { url, pending } = await buildAuthorizeUrl(
      this.issuer,
      this.clientId,
      this.opts.redirectUri,
      this.opts.scope ?? "openid",
      options,
      this.opts.endpoints?.authorization,
      this.now(),
    );
    const scope = options.scope ?? this.opts.scope ?? "openid";
    store.setItem(pendingKey(this.clientId), JSON.stringify({ ...pending, scope }));
    return url;
  }

  /** Starts the login: goes to Latchkey's authorization endpoint. */
  async login(options: AuthorizeOptions = {}): Promise<void> {
    const url = await this.authorizeUrl(options);
    window.location.assign(url);
  }

  /**
   * On the redirect URI: checks `state` and `iss`, exchanges the code with the PKCE verifier at
   * the token endpoint (CORS), checks the ID token's nonce, and keeps the tokens in memory. The
   * pending login is removed first, whatever the outcome (a callback is usable once).
   */
  async handleCallback(href: string = window.location.href): Promise<void> {
    const store = this.transientStore();
    const k = pendingKey(this.clientId);
    const raw = store.getItem(k);
    store.removeItem(k);
    let pending: (PendingLogin & { scope?: string }) | null = null;
    try {
      pending = raw ? JSON.parse(raw) : null;
    } catch {
      pending = null;
    }
    const code = checkCallback(parseCallback(href), pending, this.issuer, this.now());
    const p = pending as PendingLogin & { scope?: string };
    const response = await postForm(this.fetchFn, this.tokenEndpoint(), {
      grant_type: "authorization_code",
      code,
      redirect_uri: p.redirectUri,
      client_id: this.clientId,
      code_verifier: p.verifier,
    });
    if (!response.ok) throw await errorFrom(response);
    const tokens = toTokens(await response.json(), this.now(), this.margin());
    const wantedOpenid = (p.scope ?? "").split(" ").includes("openid");
    if (tokens.idToken) checkIdToken(tokens.idToken, this.issuer, this.clientId, p.nonce);
    else if (wantedOpenid) throw new LatchkeyError("invalid_response", "openid was asked for and no id_token came");
    await this.install(tokens);
  }

  /**
   * Keeps tokens from a token response obtained some other way (a custom grant, or the
   * password grant of a first-party tool or a test). Other tabs receive them.
   */
  async acceptTokenResponse(body: unknown): Promise<void> {
    await this.install(toTokens(body, this.now(), this.margin()));
  }

  /**
   * Waits for tokens from another tab of this browser, if one holds them. True when it got
   * some; false when no tab has any, or the tab that has them does not answer in time.
   */
  async join(): Promise<boolean> {
    if (!this.coordinated) return this.tokens !== null;
    try {
      await this.serial(() => this.sync());
    } catch (e) {
      if (!(e instanceof LatchkeyError && e.code === "sync_timeout")) throw e;
    }
    return this.tokens !== null;
  }

  // ---- tokens --------------------------------------------------------------------------------

  /** A valid access token, refreshed first when it is due. Throws `login_required` without tokens. */
  async getAccessToken(): Promise<string> {
    const t = this.tokens;
    if (t && this.now() < t.refreshAt) return t.accessToken;
    const fresh = await this.refreshWhen((cur) => this.now() >= cur.refreshAt);
    return fresh.accessToken;
  }

  /**
   * Refreshes now, unless another tab (or call) replaced the access token since this call
   * began, in which case that newer token is used and no second rotation happens.
   */
  async refresh(): Promise<void> {
    const before = this.tokens ? this.tokens.accessToken : null;
    await this.refreshWhen((cur) => before === null || cur.accessToken === before);
  }

  /**
   * `fetch` with `Authorization: Bearer`; after a 401 the token is refreshed (unless someone
   * already did) and the request is sent once more. A `Request` body is cloned for the retry;
   * a stream in `init.body` cannot be sent twice.
   */
  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const token = await this.getAccessToken();
    const first = typeof Request !== "undefined" && input instanceof Request ? input.clone() : input;
    const response = await this.fetchFn(first, withBearer(init, token));
    if (response.status !== 401) return response;
    try {
      await this.refreshWhen((cur) => cur.accessToken === token);
    } catch (e) {
      if (e instanceof LatchkeyError) return response;
      throw e;
    }
    const again = await this.getAccessToken();
    return this.fetchFn(input, withBearer(init, again));
  }

  /**
   * Logs out: forgets the tokens in every tab that shares them, then revokes the refresh token
   * at `/oauth/revoke` (which ends the whole token session at Latchkey).
   */
  async logout(): Promise<void> {
    let held: Tokens | null = null;
    await this.serial(() =>
      this.locked(async () => {
        let newest = this.gen;
        if (this.coordinated) {
          // Best effort: get the newest tokens to revoke; forget in any case (fail closed).
          newest = Math.max(newest, await this.maxGen());
          await this.sync().catch(() => undefined);
        }
        held = this.tokens;
        this.forgetAll(newest);
      }),
    );
    const t = held as Tokens | null;
    if (!t) return;
    const token = t.refreshToken ?? t.accessToken;
    const response = await postForm(this.fetchFn, this.revocationEndpoint(), {
      token,
      token_type_hint: t.refreshToken ? "refresh_token" : "access_token",
      client_id: this.clientId,
    });
    if (!response.ok) throw await errorFrom(response);
  }

  /** Forgets the tokens in this tab only (no request, the other tabs keep theirs). */
  forget(): void {
    this.forgetLocal();
  }

  /** Stops timers and listeners; forgets the tokens. */
  dispose(): void {
    this.disposed = true;
    this.forgetLocal();
    if (this.channel) this.channel.close();
    this.listeners.clear();
  }

  // ---- internals -----------------------------------------------------------------------------

  private margin(): number {
    return (this.opts.refreshMargin ?? 60) * 1000;
  }

  private tokenEndpoint(): string {
    return this.opts.endpoints?.token ?? base(this.issuer) + "/oauth/token";
  }

  private revocationEndpoint(): string {
    return this.opts.endpoints?.revocation ?? base(this.issuer) + "/oauth/revoke";
  }

  private transientStore(): TransientStore {
    const s =
      this.opts.transientStore === undefined
        ? typeof sessionStorage !== "undefined"
          ? sessionStorage
          : null
        : this.opts.transientStore;
    if (!s) throw new LatchkeyError("invalid_options", "no transient store for the pending login");
    return s;
  }

  /** Runs `f` after every earlier refresh/logout of this tab has finished. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Runs `f` holding the family's exclusive lock across tabs (or directly without coordination). */
  private locked<T>(f: () => Promise<T>): Promise<T> {
    if (!this.locks || !this.channel) return f();
    return this.locks.request(this.key + ":refresh", { mode: "exclusive" }, () => f()) as Promise<T>;
  }

  /** The highest generation some tab of this browser holds (0: none). */
  private async maxGen(): Promise<number> {
    if (!this.locks) return this.gen;
    const prefix = this.key + ":gen:";
    const state = await this.locks.query();
    let max = 0;
    for (const l of [...(state.held ?? []), ...(state.pending ?? [])]) {
      if (l.name && l.name.startsWith(prefix)) {
        const g = Number(l.name.slice(prefix.length));
        if (Number.isSafeInteger(g) && g > max) max = g;
      }
    }
    return max;
  }

  /**
   * Inside the lock: if another tab holds a newer generation, ask for it and wait until it
   * arrives. Never returns with a token set older than the newest one a tab holds (it throws
   * `sync_timeout` instead), so a consumed refresh token is never presented.
   */
  private async sync(): Promise<number> {
    const max = await this.maxGen();
    if (max <= this.gen) return max;
    const got = new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new LatchkeyError("sync_timeout", "another tab holds newer tokens and did not hand them over"));
      }, this.opts.syncTimeout ?? 3000);
      const check = () => {
        if (this.gen >= max) {
          clearTimeout(timeout);
          this.waiters = this.waiters.filter((w) => w !== check);
          resolve();
        }
      };
      this.waiters.push(check);
    });
    this.post({ t: "want", gen: max });
    await got;
    return max;
  }

  private refreshWhen(needs: (current: Tokens) => boolean): Promise<Tokens> {
    return this.serial(() =>
      this.locked(async () => {
        const max = this.coordinated ? await this.sync() : this.gen;
        const cur = this.tokens;
        if (!cur) throw new LatchkeyError("login_required", "no tokens: log in first");
        if (!needs(cur)) return cur;
        if (!cur.refreshToken) throw new LatchkeyError("login_required", "no refresh token");
        const response = await postForm(this.fetchFn, this.tokenEndpoint(), {
          grant_type: "refresh_token",
          refresh_token: cur.refreshToken,
          client_id: this.clientId,
        });
        if (!response.ok) {
          const err = await errorFrom(response);
          // The family is gone (expired, revoked, reuse): every tab forgets it.
          if (err.code === "invalid_grant") this.forgetAll();
          throw err;
        }
        const next = toTokens(await response.json(), this.now(), this.margin());
        if (!next.refreshToken) next.refreshToken = cur.refreshToken;
        if (!next.idToken && cur.idToken) next.idToken = cur.idToken;
        await this.adopt(Math.max(this.gen, max) + 1, next, true);
        return next;
      }),
    );
  }

  /** New tokens from a login: a generation above every tab's, then shared. */
  private install(tokens: Tokens): Promise<void> {
    return this.serial(() =>
      this.locked(async () => {
        const max = await this.maxGen();
        await this.adopt(Math.max(this.gen, max) + 1, tokens, true);
      }),
    );
  }

  /** Takes `tokens` as generation `gen` (holding its lock before anyone can see it), then tells the others. */
  private async adopt(gen: number, tokens: Tokens, broadcast: boolean): Promise<void> {
    if (this.disposed || gen <= this.gen) return;
    this.tokens = tokens;
    this.gen = gen;
    await this.holdGen(gen);
    if (broadcast) this.post({ t: "tokens", gen, tokens });
    this.schedule();
    for (const w of [...this.waiters]) w();
    this.emit();
  }

  /** Holds the shared lock of generation `gen` (released when this tab moves on or forgets). */
  private async holdGen(gen: number): Promise<void> {
    if (!this.locks || !this.channel) return;
    const release = await new Promise<() => void>((granted) => {
      this.locks!.request(this.key + ":gen:" + gen, { mode: "shared" }, () =>
        new Promise<void>((done) => granted(done)),
      ).catch(() => granted(() => undefined));
    });
    if (this.gen !== gen || !this.tokens) {
      release();
      return;
    }
    const previous = this.genRelease;
    this.genRelease = release;
    if (previous) previous();
  }

  private onMessage(data: unknown): void {
    const m = data as Message | null;
    if (!m || typeof m !== "object" || typeof m.gen !== "number") return;
    if (m.t === "tokens" && isTokens(m.tokens)) {
      if (m.gen > this.gen) void this.adopt(m.gen, m.tokens, false);
    } else if (m.t === "want") {
      if (this.tokens && this.gen >= m.gen) this.post({ t: "tokens", gen: this.gen, tokens: this.tokens });
    } else if (m.t === "logout") {
      if (m.gen >= this.gen && this.tokens) this.forgetLocal();
    }
  }

  private post(m: Message): void {
    if (this.channel) this.channel.postMessage(m);
  }

  /** Forgets here and tells every tab holding generation `gen` or older to forget too. */
  private forgetAll(gen: number = this.gen): void {
    this.forgetLocal();
    this.post({ t: "logout", gen: Math.max(gen, this.gen) });
  }

  private forgetLocal(): void {
    const had = this.tokens !== null;
    this.tokens = null;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const release = this.genRelease;
    this.genRelease = null;
    if (release) release();
    if (had) this.emit();
  }

  private schedule(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const t = this.tokens;
    if (!t || this.opts.autoRefresh === false || this.disposed) return;
    // A little jitter: the tabs' timers would otherwise all queue for the lock at once.
    const delay = Math.min(MAX_DELAY, Math.max(0, t.refreshAt - this.now() + Math.random() * 500));
    const timer = setTimeout(() => {
      this.timer = null;
      this.getAccessToken().catch(() => undefined);
    }, delay);
    const n = timer as unknown as { unref?: () => void };
    if (typeof n.unref === "function") n.unref();
    this.timer = timer;
  }

  private emit(): void {
    const authenticated = this.tokens !== null;
    for (const l of [...this.listeners]) {
      try {
        l(authenticated);
      } catch {
        // a listener's failure is its own
      }
    }
  }
}
