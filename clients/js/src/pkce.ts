import { base64url, randomString } from "./util.js";

/** An RFC 7636 code verifier: 32 random bytes, base64url (43 characters of the unreserved set). */
export function createVerifier(): string {
  return randomString(32);
}

/** The S256 challenge of a verifier: base64url(SHA-256(ASCII(verifier))), with WebCrypto. */
export async function challengeS256(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

export interface Pkce {
  verifier: string;
  challenge: string;
  method: "S256";
}

export async function createPkce(): Promise<Pkce> {
  const verifier = createVerifier();
  return { verifier, challenge: await challengeS256(verifier), method: "S256" };
}
