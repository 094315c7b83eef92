//! Test doubles and helpers: a store wrapper whose reads or writes can be made to fail on
//! demand, to prove that callers fail closed (503) and never half-apply an operation; the rule
//! for tests that need outside services; Redis key prefixes and PostgreSQL dumps of a test's
//! own.
use crate::{RotateOutcome, Store, StoreError, StoreResult, StoredKey};
use async_trait::async_trait;
use latchkey_core::{
    NewRefreshToken, RefreshToken, Revocation, RevocationEvent, SecretHash, Session, SessionId,
    User, UserId,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;

pub struct FlakyStore {
    inner: Arc<dyn Store>,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
}

impl FlakyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
        }
    }

    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    fn read(&self) -> StoreResult<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected read failure".into()));
        }
        Ok(())
    }

    fn write(&self) -> StoreResult<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected write failure".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read()?;
        self.inner.ping().await
    }
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.write()?;
        self.inner.create_user(user).await
    }
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read()?;
        self.inner.user_by_id(id).await
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        self.read()?;
        self.inner.user_by_username(username).await
    }
    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> StoreResult<bool> {
        self.write()?;
        self.inner.set_password_hash(id, password_hash).await
    }
    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        self.write()?;
        self.inner.set_banned(id, banned_at).await
    }
    async fn create_session(
        &self,
        session: &Session,
        first: Option<&NewRefreshToken>,
    ) -> StoreResult<()> {
        self.write()?;
        self.inner.create_session(session, first).await
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
        self.write()?;
        self.inner.touch_session(id, now, idle_cutoff).await
    }
    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        self.write()?;
        self.inner.revoke_session(id, revocation).await
    }
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Vec<SessionId>> {
        self.write()?;
        self.inner
            .revoke_user_sessions(user, keep, revocation)
            .await
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
        self.write()?;
        self.inner
            .rotate_refresh_token(presented, successor, sealed_successor, now)
            .await
    }
    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        self.write()?;
        self.inner.insert_signing_key(key).await
    }
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read()?;
        self.inner.signing_keys().await
    }
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        self.write()?;
        self.inner.delete_signing_key(kid).await
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
        self.write()?;
        self.inner.purge_expired(now, limit).await
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
