export { LatchkeyClient } from "./client.js";
export type { LatchkeyClientOptions, LockManagerLike, ChannelLike } from "./client.js";
export { SessionTokenClient } from "./session.js";
export type { SessionTokenClientOptions } from "./session.js";
export {
  buildAuthorizeUrl,
  parseCallback,
  checkCallback,
  checkIdToken,
  isCallback,
  jwtPayload,
} from "./authorize.js";
export type { AuthorizeOptions, CallbackParams, PendingLogin, TransientStore } from "./authorize.js";
export { createPkce, createVerifier, challengeS256 } from "./pkce.js";
export type { Pkce } from "./pkce.js";
export { LatchkeyError } from "./util.js";
export type { TokenResponse, Tokens, FetchLike } from "./util.js";
