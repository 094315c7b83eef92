// Compiled with `tsc --noEmit` by `npm test`: the published .d.ts files describe the API an app uses.
import {
  LatchkeyClient,
  LatchkeyError,
  SessionTokenClient,
  isCallback,
  type LatchkeyClientOptions,
  type Tokens,
} from "../../dist/index.js";

const options: LatchkeyClientOptions = {
  issuer: "https://id.example",
  clientId: "spa",
  redirectUri: "https://app.example/callback",
  scope: "openid read",
  refreshMargin: 60,
};

export async function app(): Promise<number> {
  const auth = new LatchkeyClient(options);
  const off: () => void = auth.subscribe((authenticated: boolean) => void authenticated);
  if (isCallback(location.href)) await auth.handleCallback();
  else if (!(await auth.join())) await auth.login({ prompt: "none" });
  const token: string = await auth.getAccessToken();
  const response: Response = await auth.fetch("/api", { method: "POST", body: token });
  await auth.logout();
  off();
  const session = new SessionTokenClient({ issuer: options.issuer, clientId: "spa", csrfToken: () => "x" });
  await session.fetch("/api");
  try {
    await session.getAccessToken();
  } catch (e) {
    if (e instanceof LatchkeyError) return e.status ?? 0;
  }
  const expires: number | null = auth.expiresAt;
  const t: Pick<Tokens, "accessToken"> = { accessToken: token };
  return response.status + (expires ?? 0) + t.accessToken.length;
}
