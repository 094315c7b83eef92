/** An error from Latchkey or from this client: `code` is the OAuth / Latchkey error code. */
export class LatchkeyError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  constructor(code: string, description?: string, status?: number) {
    super(description ? `${code}: ${description}` : code);
    this.name = "LatchkeyError";
    this.code = code;
    this.status = status;
  }
}

/** What `/oauth/token` and `/v1/session/token` answer. */
export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
  scope?: string;
  refresh_token?: string;
  id_token?: string;
}

/** Tokens as this client keeps them (in memory only). `expiresAt` is epoch milliseconds. */
export interface Tokens {
  accessToken: string;
  expiresAt: number;
  /** epoch ms when a refresh is due: `refreshMargin` before expiry, never before half the lifetime */
  refreshAt: number;
  scope: string;
  refreshToken?: string;
  idToken?: string;
}

export type FetchLike = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function decodeBase64url(text: string): string {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/** `n` random bytes from the platform CSPRNG, base64url: 32 bytes = 256 bits, 43 characters. */
export function randomString(n = 32): string {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

/** The issuer without a trailing slash, for building endpoint URLs. */
export function base(issuer: string): string {
  return issuer.replace(/\/+$/, "");
}

/** Checks a token response and turns it into [`Tokens`], expiry counted from `now`. */
export function toTokens(body: unknown, now: number, marginMs = 60_000): Tokens {
  const r = body as Partial<TokenResponse> | null;
  if (
    !r ||
    typeof r.access_token !== "string" ||
    typeof r.token_type !== "string" ||
    r.token_type.toLowerCase() !== "bearer" ||
    typeof r.expires_in !== "number"
  ) {
    throw new LatchkeyError("invalid_response", "not a Bearer token response");
  }
  const lifetime = Math.max(0, r.expires_in * 1000);
  const t: Tokens = {
    accessToken: r.access_token,
    expiresAt: now + lifetime,
    refreshAt: now + Math.max(lifetime - marginMs, lifetime / 2),
    scope: typeof r.scope === "string" ? r.scope : "",
  };
  if (typeof r.refresh_token === "string") t.refreshToken = r.refresh_token;
  if (typeof r.id_token === "string") t.idToken = r.id_token;
  return t;
}

/** Reads an error body (`{"error","error_description"}`) into a [`LatchkeyError`]. */
export async function errorFrom(response: Response): Promise<LatchkeyError> {
  let code = "http_" + response.status;
  let description: string | undefined;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") code = body.error;
    if (body && typeof body.error_description === "string") description = body.error_description;
  } catch {
    // not JSON: keep the status
  }
  return new LatchkeyError(code, description, response.status);
}

/** POSTs a form to an OAuth endpoint (a CORS "simple" request: no preflight). */
export function postForm(
  fetchFn: FetchLike,
  url: string,
  fields: Record<string, string>,
): Promise<Response> {
  return fetchFn(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
    credentials: "omit",
    cache: "no-store",
  });
}

/** `init.headers` plus `Authorization: Bearer <token>`. */
export function withBearer(init: RequestInit | undefined, token: string): RequestInit {
  const headers = new Headers(init && init.headers);
  headers.set("Authorization", "Bearer " + token);
  return { ...init, headers };
}

/** The platform's fetch, bound (an unbound `window.fetch` throws "Illegal invocation"). */
export function defaultFetch(): FetchLike {
  return (input, init) => fetch(input, init);
}
