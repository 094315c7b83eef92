import {
  FetchLike,
  LatchkeyError,
  Tokens,
  base,
  defaultFetch,
  errorFrom,
  toTokens,
  withBearer,
} from "./util.js";

export interface SessionTokenClientOptions {
  /** Latchkey's issuer URL (the app is same-site with it and the user has its cookie session). */
  issuer: string;
  /** A public client listing this page's origin in `allowed_origins`. */
  clientId: string;
  /** Narrows the client's scopes. */
  scope?: string;
  /** Seconds before expiry at which a new access token is minted (at most half its lifetime). Default 60. */
  refreshMargin?: number;
  /**
   * The cookie session's CSRF token. Default: read from `GET /v1/session` (which a page can
   * read only when it is on the issuer's origin or that endpoint allows this origin by CORS);
   * give it here when the app got it another way, e.g. from the login response.
   */
  csrfToken?: string | (() => string | Promise<string>);
  fetch?: FetchLike;
  now?: () => number;
}

/**
 * Session-token mode for same-site apps: the Latchkey cookie session (HttpOnly, never readable
 * here) is the long-lived credential; `POST /v1/session/token` mints short-lived access tokens
 * kept in memory. No refresh token ever reaches the page, so there is nothing to coordinate
 * across tabs: each tab mints its own.
 */
export class SessionTokenClient {
  private readonly opts: SessionTokenClientOptions;
  private readonly fetchFn: FetchLike;
  private readonly now: () => number;
  private tokens: Tokens | null = null;
  private csrf: string | null = null;
  private inflight: Promise<Tokens> | null = null;

  constructor(options: SessionTokenClientOptions) {
    if (!options.issuer || !options.clientId) {
      throw new LatchkeyError("invalid_options", "issuer and clientId are required");
    }
    this.opts = options;
    this.fetchFn = options.fetch ?? defaultFetch();
    this.now = options.now ?? Date.now;
  }

  get authenticated(): boolean {
    return this.tokens !== null;
  }

  /** A valid access token, minted when none is held or the held one is due. */
  async getAccessToken(): Promise<string> {
    const t = this.tokens;
    if (t && this.now() < t.refreshAt) return t.accessToken;
    return (await this.mint()).accessToken;
  }

  /** Mints a new access token now (one request at a time per tab). */
  mint(): Promise<Tokens> {
    if (!this.inflight) {
      this.inflight = this.mintOnce().finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  /** `fetch` with `Authorization: Bearer`; after a 401 a new token is minted and the request sent once more. */
  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const token = await this.getAccessToken();
    const first = typeof Request !== "undefined" && input instanceof Request ? input.clone() : input;
    const response = await this.fetchFn(first, withBearer(init, token));
    if (response.status !== 401) return response;
    try {
      if (this.tokens && this.tokens.accessToken === token) await this.mint();
    } catch (e) {
      if (e instanceof LatchkeyError) return response;
      throw e;
    }
    return this.fetchFn(input, withBearer(init, await this.getAccessToken()));
  }

  /** Forgets the access token and CSRF token (the cookie session itself ends at Latchkey). */
  forget(): void {
    this.tokens = null;
    this.csrf = null;
  }

  private async csrfToken(): Promise<string> {
    const given = this.opts.csrfToken;
    if (typeof given === "string") return given;
    if (typeof given === "function") return await given();
    if (this.csrf) return this.csrf;
    const response = await this.fetchFn(base(this.opts.issuer) + "/v1/session", {
      credentials: "include",
      cache: "no-store",
    });
    if (response.status === 401) {
      throw new LatchkeyError("login_required", "no Latchkey session in this browser", 401);
    }
    if (!response.ok) throw await errorFrom(response);
    const body = await response.json();
    if (!body || typeof body.csrf_token !== "string") {
      throw new LatchkeyError("invalid_response", "GET /v1/session gave no csrf_token");
    }
    this.csrf = body.csrf_token;
    return body.csrf_token;
  }

  private async mintOnce(): Promise<Tokens> {
    for (let attempt = 0; ; attempt++) {
      const csrf = await this.csrfToken();
      const body: Record<string, string> = { client_id: this.opts.clientId };
      if (this.opts.scope) body.scope = this.opts.scope;
      const response = await this.fetchFn(base(this.opts.issuer) + "/v1/session/token", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
        credentials: "include",
        cache: "no-store",
      });
      if (response.ok) {
        const tokens = toTokens(await response.json(), this.now(), (this.opts.refreshMargin ?? 60) * 1000);
        delete tokens.refreshToken; // never expected in this mode; never kept
        this.tokens = tokens;
        return tokens;
      }
      const err = await errorFrom(response);
      this.tokens = null;
      // A new login changes the CSRF token: read it once more, then give up.
      if (err.code === "csrf_failed" && attempt === 0 && this.csrf) {
        this.csrf = null;
        continue;
      }
      if (response.status === 401) {
        this.csrf = null;
        throw new LatchkeyError("login_required", err.message, 401);
      }
      throw err;
    }
  }
}
