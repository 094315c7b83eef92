//! Redis backend for many instances: sessions, refresh-token families and the revocation feed
//! live in Redis; users, signing keys and user listing stay in the SQL store it wraps.
//!
//! Every multi-key step is one Lua script, so Redis runs it atomically: session creation
//! with its first refresh token, touch, revocation with its feed events, rotation (the
//! one-time-use guard: of any number of concurrent calls, exactly one sees the token
//! unconsumed), and purge. A revocation ends the session's children (`parent_id`) in the same
//! script. Authorization codes are short-lived and few: they stay in the SQL store (one
//! conditional UPDATE consumes each), like users and keys (docs/decisions/0010).
//!
//! # Key layout (`{p}` is the configured prefix, `redis_prefix`, default `latchkey:`)
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `{p}s:{sid}` | hash | the session's fields | session end + margin |
//! | `{p}s:{sid}:rt` | set | hex hashes of the family's refresh tokens (for purge) | same |
//! | `{p}s:{sid}:ch` | set | sids of the session's children (token sessions it approved) | longest child |
//! | `{p}sec:{hex}` | string | sid of the cookie session whose secret hashes to `hex` | same |
//! | `{p}u:{user_id}` | set | sids of the user's sessions | longest of them |
//! | `{p}ue:{user_id}` | string | the user's session epoch, as far as Redis knows | longest session, at least `TTL_MARGIN` |
//! | `{p}rt:{hex}` | hash | refresh token: `session_id`, `client_id`, `issued_at`, `consumed_at`, `successor_hash`, `sealed_successor` | the session's remaining TTL |
//! | `{p}sessions:by-exp` | zset | sids scored by `expires_at` (ms), for purge | longest session |
//! | `{p}feed` | zset | feed events `"{cursor} {sid} {exp}"`, or `"{cursor} {sid} s{iat_before} {exp}"` for a role removal (docs/decisions/0011), scored by cursor | last event's `exp` + margin |
//! | `{p}feed:by-exp` | zset | the same members scored by `exp` (ms), for pruning | same |
//! | `{p}feed:seq` | string | the last cursor handed out | none (see below) |
//!
//! Times are integer Unix epoch nanoseconds in decimal. Lua numbers are doubles, too coarse
//! for nanoseconds, so the scripts compare times as decimal strings, exactly.
//!
//! TTLs make Redis clean up after itself even if nobody calls [`Store::purge_expired`]: a
//! session and everything of its family expire `TTL_MARGIN` after its absolute end (counted
//! from its creation or from now, whichever is later); the feed zsets expire with their last
//! event; each revocation also prunes events whose `exp` lies more than `TTL_MARGIN` before
//! it; each session creation drops index entries of sessions Redis has already expired.
//!
//! The cursor counter never expires. When it is missing (a new prefix, or a Redis that lost
//! its data) it starts from the server clock in microseconds, so a Redis restarted without
//! persistence still never hands out a cursor below one a follower has already seen.
//!
//! # Session epochs (DESIGN invariant 7, docs/decisions/0008)
//!
//! Users live in SQL, and their session epoch with them: the SQL row is the authority, read
//! with the password hash in one row by every login. Redis keeps a mirror of it (`ue:`), so
//! that session creation and rotation can check it inside their scripts. An epoch advance
//! (ban, unban, password change, "revoke all") commits in SQL first, then runs one script
//! that raises the mirror to the new epoch, re-stamps the session to keep and revokes the
//! user's older sessions. A login that read the old epoch either created its session before
//! that script (which then revokes it) or runs its creation script after it (and is refused
//! there). The mirror only ever rises: a creation carrying a newer epoch than the mirror (its
//! login read SQL after an advance whose Redis step failed) raises it too. If the Redis step
//! fails, the SQL change stands and the caller gets an error; the server refuses sessions the
//! SQL row no longer admits at every use, and a retry completes the revocations.
//!
//! The scripts derive some key names from stored ids, so this backend runs on a single Redis
//! (or a Sentinel-managed primary), not on Redis Cluster.
use crate::{
    CodeOutcome, CreateOutcome, EpochAdvanced, RotateOutcome, Store, StoreError, StoreResult,
    StoredKey, UserChange,
};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{FromRedisValue, Script, ScriptInvocation, Value};
use async_trait::async_trait;
use latchkey_core::{
    AuthCode, NewRefreshToken, RefreshToken, Revocation, RevocationEvent, RevokeReason, SecretHash,
    Session, SessionId, SessionKind, User, UserId,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How long records outlive the end that makes them useless: covers clock skew between
/// instances and keeps a revoked family known for reuse detection until its end.
const TTL_MARGIN: time::Duration = time::Duration::hours(1);
/// No key lives longer than this, whatever its end says.
const MAX_TTL_MS: i64 = 10 * 366 * 24 * 60 * 60 * 1000;
/// A dead or hung Redis must turn into 503s quickly: fail closed, never wait long.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection attempts per failed connection (the next command starts a new round).
const CONNECT_RETRIES: usize = 1;

/// Helpers shared by the scripts (a macro, so that `concat!` can paste it in front of each).
macro_rules! lua_prelude {
    () => {
        r#"
-- Exact comparison of canonical decimal integers (Lua numbers are doubles).
local function cmp(a, b)
  if a == b then return 0 end
  local na, nb = a:byte(1) == 45, b:byte(1) == 45
  if na ~= nb then
    if na then return -1 end
    return 1
  end
  local r = 0
  if #a ~= #b then
    if #a < #b then r = -1 else r = 1 end
  else
    for i = 1, #a do
      local x, y = a:byte(i), b:byte(i)
      if x ~= y then
        if x < y then r = -1 else r = 1 end
        break
      end
    end
  end
  if na then return -r end
  return r
end
-- Byte-wise order, whatever the server's locale.
local function bytes_lt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- An integer as an exact decimal string (never scientific notation).
local function fmt(n) return string.format('%.0f', n) end
-- Raises a key's TTL to `ttl` ms (never lowers it).
local function extend_ttl(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, fmt(ttl)) end
end
"#
    };
}

/// KEYS: 1 session, 2 its token set, 3 user's session set, 4 sessions by expiry, 5 the
/// user's epoch mirror, [secret index], [first refresh token].
/// ARGV: 1 ttl ms, 2 sid, 3 expiry score, 4 has secret, 5 has token, 6 token hash hex,
/// 7 the epoch the login read, 8 number n of session field args, 9..8+n session fields, then
/// the token's fields.
const CREATE_SESSION: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'session' end
-- The login read the user before an epoch advance whose Redis step has run: refused.
local mirror = redis.call('GET', KEYS[5])
if mirror and cmp(ARGV[7], mirror) < 0 then return 'stale' end
local next_key = 6
local sec, tok
if ARGV[4] == '1' then sec = KEYS[next_key]; next_key = next_key + 1 end
if ARGV[5] == '1' then tok = KEYS[next_key] end
if sec and redis.call('EXISTS', sec) == 1 then return 'secret' end
if tok and redis.call('EXISTS', tok) == 1 then return 'token' end
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[8])
local session, token = {}, {}
for i = 9, 8 + n do session[#session + 1] = ARGV[i] end
for i = 9 + n, #ARGV do token[#token + 1] = ARGV[i] end
local session_prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[2])
-- A child (standard login) only while its parent is an unrevoked, unexpired session of the
-- same user: checked and linked in this script, so a revocation of the parent either came
-- first (refused here) or comes after and finds the child in the parent's set.
local named = {}
for i = 1, #session, 2 do named[session[i]] = session[i + 1] end
local children_key
if named['parent_id'] then
  local pkey = session_prefix .. named['parent_id']
  local p = redis.call('HMGET', pkey, 'user_id', 'revoked_at', 'expires_at')
  if not p[1] or p[2] or p[1] ~= named['user_id'] then return 'stale' end
  if cmp(named['created_at'], p[3]) >= 0 then return 'stale' end
  children_key = pkey .. ':ch'
end
-- Index entries whose session Redis has already expired (the oldest few; cheap).
for _, old in ipairs(redis.call('ZRANGE', KEYS[4], 0, 2)) do
  if redis.call('EXISTS', session_prefix .. old) == 0 then redis.call('ZREM', KEYS[4], old) end
end
redis.call('HSET', KEYS[1], unpack(session))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
extend_ttl(KEYS[3], ttl)
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
extend_ttl(KEYS[4], ttl)
-- The epoch only rises: a newer one than the mirror's comes from SQL, the authority.
if not mirror or cmp(ARGV[7], mirror) > 0 then redis.call('SET', KEYS[5], ARGV[7], 'KEEPTTL') end
extend_ttl(KEYS[5], ttl)
if children_key then
  redis.call('SADD', children_key, ARGV[2])
  extend_ttl(children_key, ttl)
end
if sec then redis.call('SET', sec, ARGV[2], 'PX', ARGV[1]) end
if tok then
  redis.call('HSET', tok, unpack(token))
  redis.call('PEXPIRE', tok, ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 'ok'
"#
);

/// KEYS: 1 secret index. ARGV: 1 prefix. The session's fields, or nil.
const SESSION_BY_SECRET: &str = r#"
local sid = redis.call('GET', KEYS[1])
if not sid then return false end
return redis.call('HGETALL', ARGV[1] .. 's:' .. sid)
"#;

/// KEYS: 1 user's session set. ARGV: 1 prefix. Every session's fields; drops members whose
/// session Redis has expired.
const USER_SESSIONS: &str = r#"
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. 's:' .. sid)
  if #h == 0 then redis.call('SREM', KEYS[1], sid) else out[#out + 1] = h end
end
return out
"#;

/// KEYS: 1 session. ARGV: 1 now, 2 idle cutoff. 1 if alive (and touched), else 0.
const TOUCH: &str = concat!(
    lua_prelude!(),
    r#"
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'last_seen_at', 'revoked_at')
if not f[1] or not f[2] or f[3] then return 0 end
if cmp(ARGV[1], f[1]) >= 0 then return 0 end
if cmp(f[2], ARGV[2]) <= 0 then return 0 end
if cmp(ARGV[1], f[2]) > 0 then redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1]) end
return 1
"#
);

/// Shared by both revocation scripts. KEYS 2..4 are the feed, the feed by expiry and the
/// cursor counter; `r` holds at, reason, cap (= at + access TTL), margin ms, prune bound.
macro_rules! lua_revoke {
    () => {
        r#"
local function prune(r)
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. r.prune_before, 'LIMIT', 0, 64)
  if #old > 0 then
    redis.call('ZREM', KEYS[2], unpack(old))
    redis.call('ZREM', KEYS[3], unpack(old))
  end
end
local function revoke(skey, sid, r)
  local f = redis.call('HMGET', skey, 'expires_at', 'revoked_at')
  if not f[1] or f[2] then return false end
  redis.call('HSET', skey, 'revoked_at', r.at, 'revoke_reason', r.reason)
  local exp = f[1]
  if cmp(r.cap, exp) < 0 then exp = r.cap end
  if cmp(exp, r.at) > 0 then
    if redis.call('EXISTS', KEYS[4]) == 0 then
      local t = redis.call('TIME')
      redis.call('SET', KEYS[4], t[1] .. string.format('%06d', tonumber(t[2])))
    end
    local cursor = fmt(redis.call('INCR', KEYS[4]))
    local member = cursor .. ' ' .. sid .. ' ' .. exp
    redis.call('ZADD', KEYS[2], cursor, member)
    redis.call('ZADD', KEYS[3], fmt(math.floor(tonumber(exp) / 1e6)), member)
    local ttl = math.min((tonumber(exp) - tonumber(r.at)) / 1e6 + r.margin, r.max_ttl)
    extend_ttl(KEYS[2], ttl)
    extend_ttl(KEYS[3], ttl)
  end
  return true
end
"#
    };
}

/// KEYS: 1 session, 2 feed, 3 feed by expiry, 4 cursor counter.
/// ARGV: 1 sid, 2 at, 3 reason, 4 cap, 5 margin ms, 6 prune bound (ms), 7 max TTL ms.
/// Revokes the session and then its unrevoked children, in sid order.
const REVOKE_SESSION: &str = concat!(
    lua_prelude!(),
    lua_revoke!(),
    r#"
local r = { at = ARGV[2], reason = ARGV[3], cap = ARGV[4], margin = tonumber(ARGV[5]),
            prune_before = ARGV[6], max_ttl = tonumber(ARGV[7]) }
prune(r)
if not revoke(KEYS[1], ARGV[1], r) then return 0 end
local session_prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
local children = redis.call('SMEMBERS', KEYS[1] .. ':ch')
table.sort(children, bytes_lt)
for _, child in ipairs(children) do revoke(session_prefix .. child, child, r) end
return 1
"#
);

/// KEYS: 1 user's session set, 2 feed, 3 feed by expiry, 4 cursor counter, 5 the user's
/// epoch mirror. ARGV: 1 prefix, 2 sid to keep (or ''), 3 at, 4 reason, 5 cap, 6 margin ms,
/// 7 prune bound (ms), 8 max TTL ms, 9 the new epoch (from SQL).
/// `{kept (0/1), epoch, revoked sids in order}`.
const ADVANCE_EPOCH: &str = concat!(
    lua_prelude!(),
    lua_revoke!(),
    r#"
local r = { at = ARGV[3], reason = ARGV[4], cap = ARGV[5], margin = tonumber(ARGV[6]),
            prune_before = ARGV[7], max_ttl = tonumber(ARGV[8]) }
prune(r)
local epoch = ARGV[9]
local mirror = redis.call('GET', KEYS[5])
if mirror and cmp(mirror, epoch) > 0 then epoch = mirror end
redis.call('SET', KEYS[5], epoch, 'KEEPTTL')
extend_ttl(KEYS[5], math.max(redis.call('PTTL', KEYS[1]), r.margin))
local previous = fmt(tonumber(epoch) - 1)
local sids = redis.call('SMEMBERS', KEYS[1])
table.sort(sids, bytes_lt)
local kept, revoked = 0, {}
for _, sid in ipairs(sids) do
  local skey = ARGV[1] .. 's:' .. sid
  local f = redis.call('HMGET', skey, 'expires_at', 'revoked_at', 'epoch')
  local born = f[3] or '0'
  if not f[1] then
    redis.call('SREM', KEYS[1], sid)
  elseif sid == ARGV[2] and not f[2] and cmp(born, previous) >= 0 then
    -- The caller's own session, live at the old epoch: it carries on at the new one.
    redis.call('HSET', skey, 'epoch', epoch)
    kept = 1
  elseif cmp(born, epoch) < 0 and revoke(skey, sid, r) then
    revoked[#revoked + 1] = sid
  end
end
return { kept, epoch, revoked }
"#
);

/// KEYS: 1 feed. ARGV: 1 after (cursor), 2 limit, 3 now. Members with a cursor above
/// `after` and `exp` after `now`, oldest first.
const REVOCATIONS_AFTER: &str = concat!(
    lua_prelude!(),
    r#"
local out, limit, offset = {}, tonumber(ARGV[2]), 0
if limit <= 0 then return out end
while true do
  local batch = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', offset, 256)
  if #batch == 0 then return out end
  for _, m in ipairs(batch) do
    if cmp(string.match(m, '(%S+)$'), ARGV[3]) > 0 then
      out[#out + 1] = m
      if #out >= limit then return out end
    end
  end
  offset = offset + #batch
end
"#
);

/// KEYS: 1 refresh token. ARGV: 1 prefix. `{token fields, session fields, successor
/// consumed (0/1)}`, or nil.
const REFRESH_TOKEN: &str = r#"
local t = redis.call('HGETALL', KEYS[1])
if #t == 0 then return false end
local sid = redis.call('HGET', KEYS[1], 'session_id')
local succ = redis.call('HGET', KEYS[1], 'successor_hash')
local s = {}
if sid then s = redis.call('HGETALL', ARGV[1] .. 's:' .. sid) end
local succ_consumed = 0
if succ and redis.call('HEXISTS', ARGV[1] .. 'rt:' .. succ, 'consumed_at') == 1 then
  succ_consumed = 1
end
return { t, s, succ_consumed }
"#;

/// KEYS: 1 presented token, 2 successor token, 3 successor's session, 4 its token set.
/// ARGV: 1 prefix, 2 now, 3 successor hash hex, 4 has sealed successor, 5 sealed successor,
/// 6 successor session id, 7 client id, 8 issued at, 9 margin ms, 10 max TTL ms.
/// 1 rotated, 0 not rotated, -1 the successor's hash exists.
const ROTATE: &str = concat!(
    lua_prelude!(),
    r#"
local t = redis.call('HMGET', KEYS[1], 'session_id', 'consumed_at')
if not t[1] or t[2] then return 0 end
local skey = ARGV[1] .. 's:' .. t[1]
local s = redis.call('HMGET', skey, 'expires_at', 'revoked_at', 'user_id', 'epoch')
if not s[1] or s[2] then return 0 end
if cmp(ARGV[2], s[1]) >= 0 then return 0 end
-- A session born before its user's current epoch is not refreshed (invariant 7).
if s[3] then
  local mirror = redis.call('GET', ARGV[1] .. 'ue:' .. s[3])
  if mirror and cmp(s[4] or '0', mirror) < 0 then return 0 end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'consumed_at', ARGV[2], 'successor_hash', ARGV[3],
    'sealed_successor', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'consumed_at', ARGV[2], 'successor_hash', ARGV[3])
end
redis.call('HSET', KEYS[2], 'session_id', ARGV[6], 'client_id', ARGV[7], 'issued_at', ARGV[8])
-- The successor lives exactly as long as its family.
local ttl = redis.call('PTTL', skey)
if ttl <= 0 then
  ttl = math.min((tonumber(s[1]) - tonumber(ARGV[2])) / 1e6 + tonumber(ARGV[9]),
    tonumber(ARGV[10]))
end
redis.call('PEXPIRE', KEYS[2], fmt(ttl))
redis.call('SADD', KEYS[4], ARGV[3])
extend_ttl(KEYS[4], ttl)
local ls = redis.call('HGET', KEYS[3], 'last_seen_at')
if ls and cmp(ARGV[2], ls) > 0 then redis.call('HSET', KEYS[3], 'last_seen_at', ARGV[2]) end
return 1
"#
);

/// KEYS: 1 sessions by expiry, 2 feed, 3 feed by expiry.
/// ARGV: 1 prefix, 2 now, 3 now in ms (floor), 4 limit. How many records it deleted.
const PURGE: &str = concat!(
    lua_prelude!(),
    r#"
local prefix, now, budget = ARGV[1], ARGV[2], tonumber(ARGV[4])
local removed = 0
if budget <= 0 then return 0 end
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, budget)) do
  local skey = prefix .. 's:' .. sid
  local f = redis.call('HMGET', skey, 'expires_at', 'user_id', 'secret_hash')
  -- A session Redis already expired counts too: its index entry is the record left.
  if not f[1] or cmp(f[1], now) <= 0 then
    if f[2] then redis.call('SREM', prefix .. 'u:' .. f[2], sid) end
    if f[3] then redis.call('DEL', prefix .. 'sec:' .. f[3]) end
    local rtset = skey .. ':rt'
    for _, h in ipairs(redis.call('SMEMBERS', rtset)) do
      redis.call('DEL', prefix .. 'rt:' .. h)
    end
    redis.call('DEL', skey, rtset)
    redis.call('ZREM', KEYS[1], sid)
    removed = removed + 1
  end
end
local left = budget - removed
if left > 0 then
  -- Scores are exp in ms computed in doubles: look one ms further, then compare exactly.
  local bound = fmt(tonumber(ARGV[3]) + 1)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', bound, 'LIMIT', 0, left)) do
    if cmp(string.match(m, '(%S+)$'), now) <= 0 then
      redis.call('ZREM', KEYS[2], m)
      redis.call('ZREM', KEYS[3], m)
      removed = removed + 1
    end
  end
end
return removed
"#
);

/// Role removal (docs/decisions/0011). KEYS: 1 user's session set, 2 feed, 3 feed by expiry,
/// 4 cursor counter. ARGV: 1 prefix, 2 at, 3 cap (= at + access TTL), 4 iat_before, 5 margin
/// ms, 6 max TTL ms. Appends `"{cursor} {sid} s{iat_before} {exp}"` for every live session of
/// the user (revoking none); returns their sids in order.
const STALE_SESSIONS: &str = concat!(
    lua_prelude!(),
    r#"
local sids = redis.call('SMEMBERS', KEYS[1])
table.sort(sids, bytes_lt)
local out = {}
for _, sid in ipairs(sids) do
  local f = redis.call('HMGET', ARGV[1] .. 's:' .. sid, 'expires_at', 'revoked_at')
  if f[1] and not f[2] and cmp(f[1], ARGV[2]) > 0 then
    local exp = f[1]
    if cmp(ARGV[3], exp) < 0 then exp = ARGV[3] end
    if redis.call('EXISTS', KEYS[4]) == 0 then
      local t = redis.call('TIME')
      redis.call('SET', KEYS[4], t[1] .. string.format('%06d', tonumber(t[2])))
    end
    local cursor = fmt(redis.call('INCR', KEYS[4]))
    local member = cursor .. ' ' .. sid .. ' s' .. ARGV[4] .. ' ' .. exp
    redis.call('ZADD', KEYS[2], cursor, member)
    redis.call('ZADD', KEYS[3], fmt(math.floor(tonumber(exp) / 1e6)), member)
    local ttl = math.min((tonumber(exp) - tonumber(ARGV[2])) / 1e6 + tonumber(ARGV[5]),
      tonumber(ARGV[6]))
    extend_ttl(KEYS[2], ttl)
    extend_ttl(KEYS[3], ttl)
    out[#out + 1] = sid
  end
end
return out
"#
);

struct Scripts {
    create_session: Script,
    session_by_secret: Script,
    user_sessions: Script,
    touch: Script,
    revoke_session: Script,
    advance_epoch: Script,
    revocations_after: Script,
    refresh_token: Script,
    rotate: Script,
    purge: Script,
    stale_sessions: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create_session: Script::new(CREATE_SESSION),
            session_by_secret: Script::new(SESSION_BY_SECRET),
            user_sessions: Script::new(USER_SESSIONS),
            touch: Script::new(TOUCH),
            revoke_session: Script::new(REVOKE_SESSION),
            advance_epoch: Script::new(ADVANCE_EPOCH),
            revocations_after: Script::new(REVOCATIONS_AFTER),
            refresh_token: Script::new(REFRESH_TOKEN),
            rotate: Script::new(ROTATE),
            purge: Script::new(PURGE),
            stale_sessions: Script::new(STALE_SESSIONS),
        }
    }
}

/// Sessions, refresh families and the revocation feed in Redis; everything else in `sql`.
pub struct RedisStore {
    sql: Arc<dyn Store>,
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis at `redis_url` (`redis://…`, or `rediss://…` for TLS, checked against
    /// the system's CA certificates) and keeps every key under `prefix`. Users and signing
    /// keys go to `sql`. Fails with `Unavailable` if Redis cannot be reached now; once built,
    /// the store reconnects by itself and answers `Unavailable` (fail closed) while Redis is
    /// away.
    pub async fn new(sql: Arc<dyn Store>, redis_url: &str, prefix: &str) -> StoreResult<Self> {
        Self::with_tls_ca(sql, redis_url, prefix, None).await
    }

    /// [`RedisStore::new`]; for `rediss://`, `tls_ca` (PEM, one or more certificates) when
    /// given is the only trusted CA, instead of the system's.
    pub async fn with_tls_ca(
        sql: Arc<dyn Store>,
        redis_url: &str,
        prefix: &str,
        tls_ca: Option<&[u8]>,
    ) -> StoreResult<Self> {
        let bad_url = |e: ::redis::RedisError| {
            StoreError::Unavailable(format!(
                "bad Redis URL {:?}: {e}",
                crate::redact_url(redis_url)
            ))
        };
        let client = if redis_url.starts_with("rediss://") {
            // The redis crate builds its rustls config from the process default provider;
            // another part of the process may have installed it already (the same one).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            match tls_ca {
                Some(ca) => ::redis::Client::build_with_tls(
                    redis_url,
                    ::redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.to_vec()),
                    },
                )
                .map_err(bad_url)?,
                None => ::redis::Client::open(redis_url).map_err(bad_url)?,
            }
        } else if tls_ca.is_some() {
            return Err(StoreError::Unavailable(
                "a Redis TLS CA is set but the Redis URL is not rediss://".into(),
            ));
        } else {
            ::redis::Client::open(redis_url).map_err(bad_url)?
        };
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "connecting to Redis at {}: {e}",
                    crate::redact_url(redis_url)
                ))
            })?;
        let store = Self {
            sql,
            conn,
            prefix: prefix.to_string(),
            scripts: Scripts::new(),
        };
        store.redis_ping().await?;
        Ok(store)
    }

    /// The prefix every key of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn session_key(&self, id: SessionId) -> String {
        format!("{}s:{}", self.prefix, id)
    }

    fn token_set_key(&self, id: SessionId) -> String {
        format!("{}s:{}:rt", self.prefix, id)
    }

    fn secret_key(&self, hash: &SecretHash) -> String {
        format!("{}sec:{}", self.prefix, hex(hash.as_bytes()))
    }

    fn user_key(&self, id: UserId) -> String {
        format!("{}u:{}", self.prefix, id)
    }

    fn epoch_key(&self, id: UserId) -> String {
        format!("{}ue:{}", self.prefix, id)
    }

    fn token_key(&self, hash: &SecretHash) -> String {
        format!("{}rt:{}", self.prefix, hex(hash.as_bytes()))
    }

    fn by_exp_key(&self) -> String {
        format!("{}sessions:by-exp", self.prefix)
    }

    fn feed_key(&self) -> String {
        format!("{}feed", self.prefix)
    }

    fn feed_by_exp_key(&self) -> String {
        format!("{}feed:by-exp", self.prefix)
    }

    fn feed_seq_key(&self) -> String {
        format!("{}feed:seq", self.prefix)
    }

    async fn redis_ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        ::redis::cmd("PING")
            .query_async::<Value>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn invoke<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> StoreResult<T> {
        let mut conn = self.conn.clone();
        let value: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        ::redis::from_redis_value(value)
            .map_err(|e| StoreError::Corrupt(format!("Redis reply: {e}")))
    }

    fn revocation_args(&self, revocation: &Revocation) -> [String; 5] {
        let at = to_nanos(revocation.at);
        let nanos = |d: time::Duration| i64::try_from(d.whole_nanoseconds()).unwrap_or(i64::MAX);
        let cap = at.saturating_add(nanos(revocation.access_ttl));
        let prune_before = at.saturating_sub(nanos(TTL_MARGIN)).div_euclid(1_000_000);
        [
            at.to_string(),
            revocation.reason.as_str().to_string(),
            cap.to_string(),
            TTL_MARGIN.whole_milliseconds().to_string(),
            prune_before.to_string(),
        ]
    }
}

fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}

fn to_nanos(t: OffsetDateTime) -> i64 {
    // i64 nanoseconds cover 1677..2262; timestamps outside are clamped, never wrapped.
    let n = t.unix_timestamp_nanos();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

fn to_millis_floor(t: OffsetDateTime) -> i64 {
    to_nanos(t).div_euclid(1_000_000)
}

fn from_nanos(text: &str) -> StoreResult<OffsetDateTime> {
    let n: i64 = text
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {n}: {e}")))
}

/// Milliseconds a record must live: until `end` (seen from `start` or from now, whichever
/// leaves longer) plus the margin, within sane bounds.
fn ttl_millis(start: OffsetDateTime, end: OffsetDateTime) -> i64 {
    let lifetime = (end - start).max(end - OffsetDateTime::now_utc());
    let ms = (lifetime.max(time::Duration::ZERO) + TTL_MARGIN).whole_milliseconds();
    i64::try_from(ms).unwrap_or(MAX_TTL_MS).min(MAX_TTL_MS)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| match pair {
            [high, low] => Some(digit(*high)? << 4 | digit(*low)?),
            _ => None,
        })
        .collect()
}

/// A hash's fields, from the flat `[field, value, …]` list HGETALL gives a script.
struct Fields(HashMap<String, Vec<u8>>);

impl Fields {
    fn from_flat(flat: Vec<Vec<u8>>) -> StoreResult<Self> {
        let mut map = HashMap::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let Some(name) = items.next() {
            let value = items
                .next()
                .ok_or_else(|| StoreError::Corrupt("odd field list".into()))?;
            let name = String::from_utf8(name)
                .map_err(|_| StoreError::Corrupt("field name is not UTF-8".into()))?;
            map.insert(name, value);
        }
        Ok(Self(map))
    }

    fn opt_str(&self, name: &str) -> StoreResult<Option<String>> {
        self.0
            .get(name)
            .map(|v| {
                String::from_utf8(v.clone())
                    .map_err(|_| StoreError::Corrupt(format!("field {name} is not UTF-8")))
            })
            .transpose()
    }

    fn str(&self, name: &str) -> StoreResult<String> {
        self.opt_str(name)?
            .ok_or_else(|| StoreError::Corrupt(format!("field {name} missing")))
    }

    fn opt_time(&self, name: &str) -> StoreResult<Option<OffsetDateTime>> {
        self.opt_str(name)?.as_deref().map(from_nanos).transpose()
    }

    fn time(&self, name: &str) -> StoreResult<OffsetDateTime> {
        from_nanos(&self.str(name)?)
    }

    fn opt_hash(&self, name: &str) -> StoreResult<Option<SecretHash>> {
        self.opt_str(name)?
            .map(|text| {
                unhex(&text)
                    .and_then(|b| SecretHash::from_slice(&b))
                    .ok_or_else(|| StoreError::Corrupt(format!("field {name} is not a hash")))
            })
            .transpose()
    }

    fn uuid(&self, name: &str) -> StoreResult<uuid::Uuid> {
        let text = self.str(name)?;
        uuid::Uuid::try_parse(&text).map_err(|e| StoreError::Corrupt(format!("id {text:?}: {e}")))
    }
}

/// Field/value arguments for HSET; absent options are absent fields.
fn session_fields(s: &Session) -> Vec<Vec<u8>> {
    let mut out: Vec<(&str, Vec<u8>)> = vec![
        ("id", s.id.to_string().into_bytes()),
        ("user_id", s.user_id.to_string().into_bytes()),
        ("kind", s.kind.as_str().as_bytes().to_vec()),
        (
            "created_at",
            to_nanos(s.created_at).to_string().into_bytes(),
        ),
        (
            "last_seen_at",
            to_nanos(s.last_seen_at).to_string().into_bytes(),
        ),
        (
            "expires_at",
            to_nanos(s.expires_at).to_string().into_bytes(),
        ),
    ];
    let optional = [
        ("client_id", s.client_id.clone()),
        ("scope", s.scope.clone()),
        ("secret_hash", s.secret_hash.map(|h| hex(h.as_bytes()))),
        ("csrf_hash", s.csrf_hash.map(|h| hex(h.as_bytes()))),
        ("revoked_at", s.revoked_at.map(|t| to_nanos(t).to_string())),
        (
            "revoke_reason",
            s.revoke_reason.map(|r| r.as_str().to_string()),
        ),
        ("user_agent", s.user_agent.clone()),
        ("ip", s.ip.clone()),
        ("epoch", Some(s.epoch.to_string())),
        ("parent_id", s.parent_id.map(|p| p.to_string())),
    ];
    out.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v.into_bytes()))),
    );
    out.into_iter()
        .flat_map(|(name, value)| [name.as_bytes().to_vec(), value])
        .collect()
}

fn decode_session(f: &Fields) -> StoreResult<Session> {
    let kind = f.str("kind")?;
    Ok(Session {
        id: SessionId(f.uuid("id")?),
        user_id: UserId(f.uuid("user_id")?),
        kind: SessionKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("session kind {kind:?}")))?,
        client_id: f.opt_str("client_id")?,
        scope: f.opt_str("scope")?,
        secret_hash: f.opt_hash("secret_hash")?,
        csrf_hash: f.opt_hash("csrf_hash")?,
        created_at: f.time("created_at")?,
        last_seen_at: f.time("last_seen_at")?,
        expires_at: f.time("expires_at")?,
        revoked_at: f.opt_time("revoked_at")?,
        revoke_reason: f
            .opt_str("revoke_reason")?
            .map(|r| {
                RevokeReason::parse(&r)
                    .ok_or_else(|| StoreError::Corrupt(format!("revoke reason {r:?}")))
            })
            .transpose()?,
        user_agent: f.opt_str("user_agent")?,
        ip: f.opt_str("ip")?,
        // Sessions written before epochs existed carry none: epoch 0, as in SQL.
        epoch: f
            .opt_str("epoch")?
            .map(|e| {
                e.parse()
                    .map_err(|_| StoreError::Corrupt(format!("session epoch {e:?}")))
            })
            .transpose()?
            .unwrap_or(0),
        parent_id: f
            .opt_str("parent_id")?
            .map(|p| {
                uuid::Uuid::try_parse(&p)
                    .map(SessionId)
                    .map_err(|_| StoreError::Corrupt(format!("parent session {p:?}")))
            })
            .transpose()?,
    })
}

/// A session from a flat field list; `None` when the list is empty (no such session).
fn session_from_flat(flat: Vec<Vec<u8>>) -> StoreResult<Option<Session>> {
    if flat.is_empty() {
        return Ok(None);
    }
    decode_session(&Fields::from_flat(flat)?).map(Some)
}

fn token_fields(t: &NewRefreshToken) -> Vec<Vec<u8>> {
    [
        ("session_id", t.session_id.to_string()),
        ("client_id", t.client_id.clone()),
        ("issued_at", to_nanos(t.issued_at).to_string()),
    ]
    .into_iter()
    .flat_map(|(name, value)| [name.as_bytes().to_vec(), value.into_bytes()])
    .collect()
}

fn parse_event(member: &[u8]) -> StoreResult<RevocationEvent> {
    let corrupt = || StoreError::Corrupt("feed event".into());
    let text = std::str::from_utf8(member).map_err(|_| corrupt())?;
    let parts: Vec<&str> = text.split(' ').collect();
    let (cursor, sid, iat_before, exp) = match parts[..] {
        [cursor, sid, exp] => (cursor, sid, None, exp),
        // A role removal (docs/decisions/0011): only tokens issued before `iat_before` are stale.
        [cursor, sid, stale, exp] => (
            cursor,
            sid,
            Some(from_nanos(stale.strip_prefix('s').ok_or_else(corrupt)?)?),
            exp,
        ),
        _ => return Err(corrupt()),
    };
    Ok(RevocationEvent {
        cursor: cursor.parse().map_err(|_| corrupt())?,
        sid: SessionId::parse(sid).ok_or_else(corrupt)?,
        exp: from_nanos(exp)?,
        iat_before,
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        self.redis_ping().await?;
        self.sql.ping().await
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.sql.create_user(user).await
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        self.sql.user_by_id(id).await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        self.sql.user_by_username(username).await
    }

    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        self.sql.set_banned(id, banned_at).await
    }

    async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<EpochAdvanced>> {
        // SQL first: the user's change and the new epoch are the authority (logins read them
        // there). Then Redis: the mirror, the survivor, the revocations. See the module docs.
        let Some(sql) = self
            .sql
            .advance_user_epoch(user, change, None, revocation)
            .await?
        else {
            return Ok(None);
        };
        let [at, reason, cap, margin, prune_before] = self.revocation_args(revocation);
        let mut inv = self.scripts.advance_epoch.prepare_invoke();
        inv.key(self.user_key(user))
            .key(self.feed_key())
            .key(self.feed_by_exp_key())
            .key(self.feed_seq_key())
            .key(self.epoch_key(user))
            .arg(&self.prefix)
            .arg(keep.map_or_else(String::new, |k| k.to_string()))
            .arg(at)
            .arg(reason)
            .arg(cap)
            .arg(margin)
            .arg(prune_before)
            .arg(MAX_TTL_MS)
            .arg(sql.epoch.to_string());
        let (kept, epoch, sids): (i64, String, Vec<String>) = self.invoke(&inv).await?;
        let mut revoked = sids
            .iter()
            .map(|sid| {
                SessionId::parse(sid)
                    .ok_or_else(|| StoreError::Corrupt(format!("session id {sid:?}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        revoked.sort();
        Ok(Some(EpochAdvanced {
            epoch: epoch
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("session epoch {epoch:?}")))?,
            kept: kept == 1,
            revoked,
        }))
    }

    async fn create_session(
        &self,
        session: &Session,
        first_refresh_token: Option<&NewRefreshToken>,
    ) -> StoreResult<CreateOutcome> {
        // The SQL row answers for the user's existence and the ban flag; Redis answers for the
        // epoch, atomically with the write, from its mirror (an advance that commits in SQL
        // after this read either finds the session in Redis and revokes it, or has raised
        // the mirror before the script runs).
        let admitted = self
            .sql
            .user_by_id(session.user_id)
            .await?
            .is_some_and(|u| !u.is_banned() && u.session_epoch == session.epoch);
        if !admitted {
            return Ok(CreateOutcome::UserChanged);
        }
        let fields = session_fields(session);
        let mut inv = self.scripts.create_session.prepare_invoke();
        inv.key(self.session_key(session.id))
            .key(self.token_set_key(session.id))
            .key(self.user_key(session.user_id))
            .key(self.by_exp_key())
            .key(self.epoch_key(session.user_id));
        if let Some(hash) = &session.secret_hash {
            inv.key(self.secret_key(hash));
        }
        if let Some(t) = first_refresh_token {
            inv.key(self.token_key(&t.hash));
        }
        inv.arg(ttl_millis(session.created_at, session.expires_at))
            .arg(session.id.to_string())
            .arg(to_millis_floor(session.expires_at))
            .arg(if session.secret_hash.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(if first_refresh_token.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(first_refresh_token.map_or_else(String::new, |t| hex(t.hash.as_bytes())))
            .arg(session.epoch.to_string())
            .arg(fields.len());
        for field in &fields {
            inv.arg(field.as_slice());
        }
        if let Some(t) = first_refresh_token {
            for field in token_fields(t) {
                inv.arg(field);
            }
        }
        let outcome: String = self.invoke(&inv).await?;
        match outcome.as_str() {
            "ok" => Ok(CreateOutcome::Created),
            "stale" => Ok(CreateOutcome::UserChanged),
            "session" => Err(StoreError::Conflict("session id exists")),
            "secret" => Err(StoreError::Conflict("session secret exists")),
            "token" => Err(StoreError::Conflict("refresh token exists")),
            other => Err(StoreError::Corrupt(format!(
                "create_session script said {other:?}"
            ))),
        }
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let mut conn = self.conn.clone();
        let flat: Value = ::redis::cmd("HGETALL")
            .arg(self.session_key(id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let fields: HashMap<String, Vec<u8>> = ::redis::from_redis_value(flat)
            .map_err(|e| StoreError::Corrupt(format!("Redis reply: {e}")))?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode_session(&Fields(fields)).map(Some)
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        let mut inv = self.scripts.session_by_secret.prepare_invoke();
        inv.key(self.secret_key(hash)).arg(&self.prefix);
        let flat: Option<Vec<Vec<u8>>> = self.invoke(&inv).await?;
        let Some(session) = flat.map(session_from_flat).transpose()?.flatten() else {
            return Ok(None);
        };
        // The index and the session expire together; never hand out a session whose own
        // record names another secret.
        Ok((session.secret_hash.as_ref() == Some(hash)).then_some(session))
    }

    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        let mut inv = self.scripts.user_sessions.prepare_invoke();
        inv.key(self.user_key(user)).arg(&self.prefix);
        let all: Vec<Vec<Vec<u8>>> = self.invoke(&inv).await?;
        let mut sessions = Vec::with_capacity(all.len());
        for flat in all {
            match session_from_flat(flat)? {
                Some(s) if s.user_id == user && s.is_live(now) => sessions.push(s),
                _ => {}
            }
        }
        sessions.sort_by_key(|s| (s.created_at, s.id));
        Ok(sessions)
    }

    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut inv = self.scripts.touch.prepare_invoke();
        inv.key(self.session_key(id))
            .arg(to_nanos(now).to_string())
            .arg(to_nanos(idle_cutoff).to_string());
        let alive: i64 = self.invoke(&inv).await?;
        Ok(alive == 1)
    }

    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        let [at, reason, cap, margin, prune_before] = self.revocation_args(revocation);
        let mut inv = self.scripts.revoke_session.prepare_invoke();
        inv.key(self.session_key(id))
            .key(self.feed_key())
            .key(self.feed_by_exp_key())
            .key(self.feed_seq_key())
            .arg(id.to_string())
            .arg(at)
            .arg(reason)
            .arg(cap)
            .arg(margin)
            .arg(prune_before)
            .arg(MAX_TTL_MS);
        let revoked: i64 = self.invoke(&inv).await?;
        Ok(revoked == 1)
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>> {
        let mut inv = self.scripts.revocations_after.prepare_invoke();
        inv.key(self.feed_key())
            .arg(after.to_string())
            .arg(limit)
            .arg(to_nanos(now).to_string());
        let members: Vec<Vec<u8>> = self.invoke(&inv).await?;
        members.iter().map(|m| parse_event(m)).collect()
    }

    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        let mut inv = self.scripts.refresh_token.prepare_invoke();
        inv.key(self.token_key(hash)).arg(&self.prefix);
        let reply: Option<(Vec<Vec<u8>>, Vec<Vec<u8>>, i64)> = self.invoke(&inv).await?;
        let Some((token, session, successor_consumed)) = reply else {
            return Ok(None);
        };
        let Some(session) = session_from_flat(session)? else {
            // Redis expires a family's keys one by one at its end: a token can outlive its
            // session by a moment. Such a token is as good as unknown.
            tracing::debug!("refresh token whose session has expired in Redis");
            return Ok(None);
        };
        let t = Fields::from_flat(token)?;
        let token = RefreshToken {
            hash: *hash,
            session_id: SessionId(t.uuid("session_id")?),
            client_id: t.str("client_id")?,
            issued_at: t.time("issued_at")?,
            consumed_at: t.opt_time("consumed_at")?,
            sealed_successor: t.0.get("sealed_successor").cloned(),
            successor_consumed: successor_consumed == 1,
        };
        Ok(Some((token, session)))
    }

    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        let mut inv = self.scripts.rotate.prepare_invoke();
        inv.key(self.token_key(presented))
            .key(self.token_key(&successor.hash))
            .key(self.session_key(successor.session_id))
            .key(self.token_set_key(successor.session_id))
            .arg(&self.prefix)
            .arg(to_nanos(now).to_string())
            .arg(hex(successor.hash.as_bytes()))
            .arg(if sealed_successor.is_some() { "1" } else { "0" })
            .arg(sealed_successor.unwrap_or_default())
            .arg(successor.session_id.to_string())
            .arg(&successor.client_id)
            .arg(to_nanos(successor.issued_at).to_string())
            .arg(TTL_MARGIN.whole_milliseconds().to_string())
            .arg(MAX_TTL_MS);
        let outcome: i64 = self.invoke(&inv).await?;
        match outcome {
            1 => Ok(RotateOutcome::Rotated),
            0 => Ok(RotateOutcome::NotRotated),
            -1 => Err(StoreError::Conflict("refresh token exists")),
            other => Err(StoreError::Corrupt(format!("rotate script said {other}"))),
        }
    }

    async fn insert_auth_code(&self, code: &AuthCode) -> StoreResult<()> {
        self.sql.insert_auth_code(code).await
    }

    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<CodeOutcome> {
        self.sql.consume_auth_code(hash, now).await
    }

    async fn record_code_session(
        &self,
        hash: &SecretHash,
        session: SessionId,
    ) -> StoreResult<bool> {
        self.sql.record_code_session(hash, session).await
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        self.sql.insert_signing_key(key).await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.sql.signing_keys().await
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        self.sql.delete_signing_key(kid).await
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        self.sql.list_users(after, limit).await
    }

    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        // The expiry index: sessions before their end (revoked ones included until then).
        let now_ms = now.unix_timestamp_nanos() / 1_000_000;
        let mut conn = self.conn.clone();
        ::redis::cmd("ZCOUNT")
            .arg(self.by_exp_key())
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .query_async::<u64>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let mut inv = self.scripts.purge.prepare_invoke();
        inv.key(self.by_exp_key())
            .key(self.feed_key())
            .key(self.feed_by_exp_key())
            .arg(&self.prefix)
            .arg(to_nanos(now).to_string())
            .arg(to_millis_floor(now))
            .arg(limit);
        let removed: i64 = self.invoke(&inv).await?;
        let removed = u64::try_from(removed).unwrap_or(0);
        // Sessions and feed events live only in Redis; authorization codes live in SQL.
        let budget = u64::from(limit).saturating_sub(removed);
        let codes = if budget > 0 {
            self.sql
                .purge_expired(now, u32::try_from(budget).unwrap_or(u32::MAX))
                .await?
        } else {
            0
        };
        Ok(removed + codes)
    }

    // ---- Roles (docs/decisions/0011) ----
    async fn user_roles(&self, user: UserId) -> StoreResult<Option<crate::UserRoles>> {
        self.sql.user_roles(user).await
    }

    async fn set_user_roles(
        &self,
        user: UserId,
        roles: &[String],
        at: OffsetDateTime,
        access_ttl: time::Duration,
    ) -> StoreResult<Option<crate::RolesChanged>> {
        // SQL first (the roles are the authority: tokens are minted from them), then the feed
        // entries in Redis, where the sessions are. If the Redis step fails the caller gets an
        // error and a retry of the same call re-appends the entries of the last removal while
        // tokens minted before it may still be live.
        let Some(mut changed) = self.sql.set_user_roles(user, roles, at, access_ttl).await? else {
            return Ok(None);
        };
        let removed_at = if latchkey_core::removes_any(&changed.previous, roles) {
            Some(at)
        } else {
            self.sql
                .user_roles(user)
                .await?
                .and_then(|r| r.removed_at)
                .filter(|removed| *removed + access_ttl > at)
        };
        let Some(removed_at) = removed_at else {
            return Ok(Some(changed));
        };
        let nanos = |d: time::Duration| i64::try_from(d.whole_nanoseconds()).unwrap_or(i64::MAX);
        let at_nanos = to_nanos(at);
        let mut inv = self.scripts.stale_sessions.prepare_invoke();
        inv.key(self.user_key(user))
            .key(self.feed_key())
            .key(self.feed_by_exp_key())
            .key(self.feed_seq_key())
            .arg(&self.prefix)
            .arg(at_nanos.to_string())
            .arg(at_nanos.saturating_add(nanos(access_ttl)).to_string())
            .arg(to_nanos(latchkey_core::stale_before(removed_at)).to_string())
            .arg(TTL_MARGIN.whole_milliseconds().to_string())
            .arg(MAX_TTL_MS);
        let sids: Vec<String> = self.invoke(&inv).await?;
        changed.stale = sids
            .iter()
            .map(|sid| {
                SessionId::parse(sid)
                    .ok_or_else(|| StoreError::Corrupt(format!("session id {sid:?}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        changed.stale.sort();
        Ok(Some(changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+f"), None);
    }

    #[test]
    fn feed_members_parse() {
        let sid = SessionId::new();
        let member = format!("1796000000000001 {sid} -5");
        let event = parse_event(member.as_bytes()).expect("parses");
        assert_eq!(event.cursor, 1_796_000_000_000_001);
        assert_eq!(event.sid, sid);
        assert!(parse_event(b"1 2").is_err());
        assert_eq!(event.iat_before, None);
        let stale = format!("7 {sid} s11000000000 20000000000");
        let event = parse_event(stale.as_bytes()).expect("parses");
        assert_eq!(event.iat_before.map(|t| t.unix_timestamp()), Some(11));
        assert_eq!(event.exp.unix_timestamp(), 20);
        assert!(parse_event(format!("7 {sid} 11000000000 20000000000").as_bytes()).is_err());
    }

    #[test]
    fn ttls_cover_the_session_plus_margin() {
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let ttl = ttl_millis(now, now + day);
        let expected = (day + TTL_MARGIN).whole_milliseconds();
        assert!((expected - 1_000..=expected + 1_000).contains(&i128::from(ttl)));
        // Created already over (a stale clock): its whole lifetime, plus the margin.
        let stale = ttl_millis(now - time::Duration::days(8), now - day);
        assert_eq!(
            i128::from(stale),
            (time::Duration::days(7) + TTL_MARGIN).whole_milliseconds()
        );
        // Ends before it starts: only the margin.
        let over = ttl_millis(now, now - day);
        assert_eq!(i128::from(over), TTL_MARGIN.whole_milliseconds());
    }
}
