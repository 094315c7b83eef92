import { createPkce } from "./pkce.js";
import { LatchkeyError, base, decodeBase64url, randomString } from "./util.js";

/**
 * Where the transient login state (PKCE verifier, state, nonce) waits across the redirect.
 * Never a token: see README "Security notes". `sessionStorage` by default.
 */
export interface TransientStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** What is kept between `authorizeUrl` and `handleCallback`. */
export interface PendingLogin {
  state: string;
  nonce: string;
  verifier: string;
  redirectUri: string;
  /** epoch ms: a pending login older than 10 minutes is refused */
  createdAt: number;
}

export interface AuthorizeOptions {
  /** Space-separated scopes; default: the client's `scope` option. */
  scope?: string;
  prompt?: "none" | "login" | "consent";
  maxAge?: number;
  loginHint?: string;
}

/** The fields of an authorization response (RFC 6749 §4.1.2, RFC 9207 `iss`). */
export interface CallbackParams {
  code: string | null;
  state: string | null;
  iss: string | null;
  error: string | null;
  errorDescription: string | null;
}

export const PENDING_TTL_MS = 10 * 60 * 1000;

export function pendingKey(clientId: string): string {
  return "latchkey.pending." + clientId;
}

/**
 * Builds the `/oauth/authorize` URL with a fresh S256 PKCE pair, `state` and `nonce`;
 * returns the URL and the pending login to keep until the callback.
 */
export async function buildAuthorizeUrl(
  issuer: string,
  clientId: string,
  redirectUri: string,
  scope: string,
  options: AuthorizeOptions = {},
  authorizationEndpoint?: string,
  now: number = Date.now(),
): Promise<{ url: string; pending: PendingLogin }> {
  const pkce = await createPkce();
  const pending: PendingLogin = {
    state: randomString(32),
    nonce: randomString(32),
    verifier: pkce.verifier,
    redirectUri,
    createdAt: now,
  };
  const url = new URL(authorizationEndpoint || base(issuer) + "/oauth/authorize");
  const p = url.searchParams;
  p.set("response_type", "code");
  p.set("client_id", clientId);
  p.set("redirect_uri", redirectUri);
  p.set("scope", options.scope ?? scope);
  p.set("state", pending.state);
  p.set("nonce", pending.nonce);
  p.set("code_challenge", pkce.challenge);
  p.set("code_challenge_method", "S256");
  if (options.prompt) p.set("prompt", options.prompt);
  if (options.maxAge !== undefined) p.set("max_age", String(options.maxAge));
  if (options.loginHint) p.set("login_hint", options.loginHint);
  return { url: url.toString(), pending };
}

/** Reads the authorization response from the redirect URL's query (or fragment). */
export function parseCallback(href: string): CallbackParams {
  const url = new URL(href);
  let p = url.searchParams;
  if (!p.has("code") && !p.has("error") && url.hash.length > 1) {
    p = new URLSearchParams(url.hash.slice(1));
  }
  return {
    code: p.get("code"),
    state: p.get("state"),
    iss: p.get("iss"),
    error: p.get("error"),
    errorDescription: p.get("error_description"),
  };
}

/** Whether a URL looks like an authorization response (has `code` or `error` and `state`). */
export function isCallback(href: string): boolean {
  const c = parseCallback(href);
  return c.state !== null && (c.code !== null || c.error !== null);
}

/** Equal strings, compared without an early exit. */
export function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Checks an authorization response against the pending login: `state` must match, `iss` must be
 * present and equal the issuer (RFC 9207: mix-up defence), no `error`, a `code`. Returns the code.
 */
export function checkCallback(
  params: CallbackParams,
  pending: PendingLogin | null,
  issuer: string,
  now: number = Date.now(),
): string {
  if (!pending) throw new LatchkeyError("invalid_state", "no login is pending in this tab");
  if (now - pending.createdAt > PENDING_TTL_MS) {
    throw new LatchkeyError("invalid_state", "the pending login is too old");
  }
  if (params.state === null || !sameText(params.state, pending.state)) {
    throw new LatchkeyError("invalid_state", "state does not match the pending login");
  }
  // RFC 9207 §2.4: Latchkey always sends iss, so its absence is refused too.
  if (params.iss === null || params.iss !== issuer) {
    throw new LatchkeyError("invalid_issuer", "the response's iss is not this client's issuer");
  }
  if (params.error !== null) {
    throw new LatchkeyError(params.error, params.errorDescription ?? undefined);
  }
  if (!params.code) throw new LatchkeyError("invalid_request", "the response has no code");
  return params.code;
}

/** The payload of a JWT, not verified (see `checkIdToken`). */
export function jwtPayload(jwt: string): Record<string, unknown> {
  const parts = jwt.split(".");
  if (parts.length !== 3) throw new LatchkeyError("invalid_token", "not a JWT");
  try {
    const payload = JSON.parse(decodeBase64url(parts[1]));
    if (payload && typeof payload === "object") return payload as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new LatchkeyError("invalid_token", "the JWT payload is not a JSON object");
}

/**
 * Claim checks of an ID token received directly from the token endpoint over TLS (OIDC Core
 * 3.1.3.7 lets the TLS server check stand in for the signature there): `iss`, `aud`, `nonce`.
 */
export function checkIdToken(idToken: string, issuer: string, clientId: string, nonce: string): void {
  const c = jwtPayload(idToken);
  const aud = Array.isArray(c.aud) ? c.aud : [c.aud];
  if (c.iss !== issuer) throw new LatchkeyError("invalid_id_token", "iss is not the issuer");
  if (!aud.includes(clientId)) throw new LatchkeyError("invalid_id_token", "aud is not this client");
  if (typeof c.nonce !== "string" || !sameText(c.nonce, nonce)) {
    throw new LatchkeyError("invalid_id_token", "nonce does not match the login");
  }
}
