//! Test doubles and helpers: a store wrapper whose reads or writes can be made to fail on
//! demand, to prove that callers fail closed (503) and never half-apply an operation; the rule
//! for tests that need outside services; Redis key prefixes and PostgreSQL dumps of a test's
//! own.
//!
//! Writes can fail in two ways: *before* they reach the store (nothing changes: the store was
//! never asked), or *after commit* (the write is applied in full and then reported failed, as
//! when the connection drops on the way back). Either every write fails, or only the Nth one
//! from now, so a handler that writes more than once can be cut between its writes.
use crate::{
    CodeOutcome, CreateOutcome, EpochAdvanced, RotateOutcome, Store, StoreError, StoreResult,
    StoredKey, UserChange,
};
use async_trait::async_trait;
use latchkey_core::{
    AuthCode, NewRefreshToken, RefreshToken, Revocation, RevocationEvent, SecretHash, Session,
    SessionId, User, UserId,
};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// When an injected write failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailWhen {
    /// Before the write reaches the store: nothing changes.
    Before,
    /// After the store applied (committed) the write: everything changed, yet the caller is
    /// told it failed.
    AfterCommit,
}

/// A planned failure of the Nth write from now.
#[derive(Debug, Clone, Copy)]
struct NthWrite {
    remaining: usize,
    when: FailWhen,
}

pub struct FlakyStore {
    inner: Arc<dyn Store>,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
    fail_writes_after_commit: AtomicBool,
    nth_write: Mutex<Option<NthWrite>>,
    writes: AtomicUsize,
    /// While true, session creations wait (see [`FlakyStore::hold_session_creation`]).
    hold_creates: tokio::sync::watch::Sender<bool>,
    creates_waiting: AtomicUsize,
}

impl FlakyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_writes_after_commit: AtomicBool::new(false),
            nth_write: Mutex::new(None),
            writes: AtomicUsize::new(0),
            hold_creates: tokio::sync::watch::Sender::new(false),
            creates_waiting: AtomicUsize::new(0),
        }
    }

    /// While held, every `create_session` waits before it reaches the store: a login that has
    /// read the user and verified the password stops right before its write, so a test can
    /// land a ban or a password change exactly there, then release it.
    pub fn hold_session_creation(&self, hold: bool) {
        self.hold_creates.send_replace(hold);
    }

    /// Session creations waiting on the hold right now.
    pub fn session_creations_waiting(&self) -> usize {
        self.creates_waiting.load(Ordering::SeqCst)
    }

    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    /// Every write fails before it reaches the store.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Every write is applied, then reported as failed.
    pub fn fail_writes_after_commit(&self, fail: bool) {
        self.fail_writes_after_commit.store(fail, Ordering::SeqCst);
    }

    /// Only the `n`th write from now (1 = the next one) fails, `when` says how; the writes
    /// before and after it pass. Replaces any earlier plan.
    pub fn fail_nth_write(&self, n: usize, when: FailWhen) {
        assert!(n >= 1, "writes are counted from 1");
        *self.nth_write.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(NthWrite { remaining: n, when });
    }

    /// Whether a planned Nth-write failure is still to come.
    pub fn nth_write_pending(&self) -> bool {
        self.nth_write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Writes attempted through this wrapper so far (failed ones included).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn read(&self) -> StoreResult<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected read failure".into()));
        }
        Ok(())
    }

    /// How the write starting now is to fail, if at all.
    fn plan_write(&self) -> Option<FailWhen> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let nth = {
            let mut plan = self.nth_write.lock().unwrap_or_else(|p| p.into_inner());
            match plan.as_mut() {
                Some(p) if p.remaining <= 1 => plan.take().map(|p| p.when),
                Some(p) => {
                    p.remaining -= 1;
                    None
                }
                None => None,
            }
        };
        if self.fail_writes.load(Ordering::SeqCst) {
            Some(FailWhen::Before)
        } else if let Some(when) = nth {
            Some(when)
        } else if self.fail_writes_after_commit.load(Ordering::SeqCst) {
            Some(FailWhen::AfterCommit)
        } else {
            None
        }
    }

    /// Runs a write (a future not yet polled, so "before" never touches the store) with the
    /// planned failure.
    async fn write<T>(&self, write: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match self.plan_write() {
            None => write.await,
            Some(FailWhen::Before) => Err(StoreError::Unavailable(
                "injected write failure (nothing written)".into(),
            )),
            Some(FailWhen::AfterCommit) => {
                write.await?;
                Err(StoreError::Unavailable(
                    "injected write failure (after commit)".into(),
                ))
            }
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read()?;
        self.inner.ping().await
    }
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.write(self.inner.create_user(user)).await
    }
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read()?;
        self.inner.user_by_id(id).await
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        self.read()?;
        self.inner.user_by_username(username).await
    }
    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        self.write(self.inner.set_banned(id, banned_at)).await
    }
    async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<EpochAdvanced>> {
        self.write(
            self.inner
                .advance_user_epoch(user, change, keep, revocation),
        )
        .await
    }
    async fn create_session(
        &self,
        session: &Session,
        first: Option<&NewRefreshToken>,
    ) -> StoreResult<CreateOutcome> {
        let mut held = self.hold_creates.subscribe();
        if *held.borrow_and_update() {
            self.creates_waiting.fetch_add(1, Ordering::SeqCst);
            let released = held.wait_for(|hold| !*hold).await.map(|_| ());
            self.creates_waiting.fetch_sub(1, Ordering::SeqCst);
            released.map_err(|_| StoreError::Unavailable("test store dropped".into()))?;
        }
        self.write(self.inner.create_session(session, first)).await
    }
    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        self.read()?;
        self.inner.session(id).await
    }
    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        self.read()?;
        self.inner.session_by_secret(hash).await
    }
    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        self.read()?;
        self.inner.live_sessions_of_user(user, now).await
    }
    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write(self.inner.touch_session(id, now, idle_cutoff))
            .await
    }
    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        self.write(self.inner.revoke_session(id, revocation)).await
    }
    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>> {
        self.read()?;
        self.inner.revocations_after(after, limit, now).await
    }
    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        self.read()?;
        self.inner.refresh_token(hash).await
    }
    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        self.write(
            self.inner
                .rotate_refresh_token(presented, successor, sealed_successor, now),
        )
        .await
    }
    async fn insert_auth_code(&self, code: &AuthCode) -> StoreResult<()> {
        self.write(self.inner.insert_auth_code(code)).await
    }
    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<CodeOutcome> {
        self.write(self.inner.consume_auth_code(hash, now)).await
    }
    async fn record_code_session(
        &self,
        hash: &SecretHash,
        session: SessionId,
    ) -> StoreResult<bool> {
        self.write(self.inner.record_code_session(hash, session))
            .await
    }
    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        self.write(self.inner.insert_signing_key(key)).await
    }
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read()?;
        self.inner.signing_keys().await
    }
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        self.write(self.inner.delete_signing_key(kid)).await
    }
    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        self.read()?;
        self.inner.list_users(after, limit).await
    }
    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        self.read()?;
        self.inner.count_live_sessions(now).await
    }
    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        self.write(self.inner.purge_expired(now, limit)).await
    }
    // ---- Roles (docs/decisions/0011) ----
    async fn user_roles(&self, user: UserId) -> StoreResult<Option<crate::UserRoles>> {
        self.read()?;
        self.inner.user_roles(user).await
    }
    async fn set_user_roles(
        &self,
        user: UserId,
        roles: &[String],
        at: OffsetDateTime,
        access_ttl: time::Duration,
    ) -> StoreResult<Option<crate::RolesChanged>> {
        self.write(self.inner.set_user_roles(user, roles, at, access_ttl))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Tests that need outside services, and what they leave behind.

/// Whether tests that need outside services must run (`LATCHKEY_REQUIRE_SERVICES=1`, CI).
pub fn services_required() -> bool {
    std::env::var("LATCHKEY_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A test that cannot run here (no server, no binary) says so past the test harness's capture
/// and passes, unless [`services_required`], where it fails: the one place that rule lives for
/// the tests of the store and the server.
pub fn cannot_run(test: &str, why: &str) {
    use std::io::Write;
    assert!(
        !services_required(),
        "LATCHKEY_REQUIRE_SERVICES=1 but {test} cannot run: {why}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED ({test}): {why}");
}

/// The service URL in the environment variable `var`, or `None` after [`cannot_run`].
pub fn service_url(var: &str, test: &str, example: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        cannot_run(test, &format!("set {var}={example} to run"));
    }
    url
}

/// A Redis key and everything it holds, raw.
pub type RedisEntry = (Vec<u8>, Vec<Vec<u8>>);

/// A Redis key prefix of one test's own (`latchkey-test:{random}:`): every key under it is
/// deleted when the guard goes, from a thread of its own with a blocking connection, so it
/// also runs while a runtime shuts down or a test unwinds.
pub struct RedisPrefix {
    url: String,
    prefix: String,
}

impl RedisPrefix {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            prefix: format!("latchkey-test:{}:", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key under the prefix (SCAN, never KEYS: the server may be shared).
    pub fn keys(&self) -> redis::RedisResult<Vec<Vec<u8>>> {
        keys_under(&mut blocking_connection(&self.url)?, &self.prefix)
    }

    /// Every key under the prefix with everything it holds, raw: a string's value, a hash's
    /// fields and values, the members of a set, a list or a sorted set (with scores).
    pub fn dump(&self) -> redis::RedisResult<Vec<RedisEntry>> {
        let mut conn = blocking_connection(&self.url)?;
        let keys = keys_under(&mut conn, &self.prefix)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn)?;
            let values: Vec<Vec<u8>> = match kind.as_str() {
                "string" => vec![redis::cmd("GET").arg(&key).query(&mut conn)?],
                "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn)?,
                "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut conn)?,
                "list" => redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query(&mut conn)?,
                "zset" => redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(&mut conn)?,
                "none" => Vec::new(), // expired in between
                other => vec![format!("<unread Redis type {other}>").into_bytes()],
            };
            out.push((key, values));
        }
        Ok(out)
    }
}

fn blocking_connection(url: &str) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let conn = client.get_connection_with_timeout(std::time::Duration::from_secs(5))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(std::time::Duration::from_secs(5)))?;
    Ok(conn)
}

fn keys_under(conn: &mut redis::Connection, prefix: &str) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

fn delete_under(url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let mut conn = blocking_connection(url)?;
    let keys = keys_under(&mut conn, prefix)?;
    for chunk in keys.chunks(500) {
        redis::cmd("DEL").arg(chunk).query::<()>(&mut conn)?;
    }
    Ok(keys.len())
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let cleanup =
            std::thread::spawn(move || delete_under(&url, &prefix).map_err(|e| e.to_string()));
        let failure = match cleanup.join() {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(_) => "panicked".to_string(),
        };
        eprintln!(
            "warning: Redis test cleanup of {}* failed: {failure}",
            self.prefix
        );
    }
}

/// Every row of every table in a PostgreSQL schema, as JSON text per row (`bytea` columns as
/// `\x` hex): what the database holds, for scans of what is stored at rest.
pub async fn dump_postgres_schema(url: &str, schema: &str) -> Result<String, sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(&mut conn)
    .await?;
    let mut dump = String::new();
    for table in tables {
        // Names from the catalogue, quoted as identifiers.
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM {}.{} t",
            quote(schema),
            quote(&table)
        )))
        .fetch_all(&mut conn)
        .await?;
        for row in rows {
            dump.push_str(&table);
            dump.push_str(": ");
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    conn.close().await?;
    Ok(dump)
}
