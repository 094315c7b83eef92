//! What the SQL backends share: error mapping, the time and id encodings, and row decoding.
//! SQLite and PostgreSQL use the same column layout (times as epoch nanoseconds, ids as text,
//! hashes as bytes), so one decoder serves both.
use crate::{StoreError, StoreResult};
use latchkey_core::{RevokeReason, SecretHash, Session, SessionId, SessionKind, User, UserId};
use sqlx::{ColumnIndex, Decode, FromRow, Row, Type};
use time::OffsetDateTime;

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `Conflict(what)` for a unique violation, `Unavailable` for anything else.
pub(crate) fn conflict_or_unavailable(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(what)
        } else {
            unavailable(e)
        }
    }
}

pub(crate) fn to_nanos(t: OffsetDateTime) -> i64 {
    // i64 nanoseconds cover 1677..2262; timestamps outside are clamped, never wrapped.
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn from_nanos(n: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {n}: {e}")))
}

pub(crate) fn opt_from_nanos(n: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    n.map(from_nanos).transpose()
}

pub(crate) fn parse_uuid(text: &str) -> StoreResult<uuid::Uuid> {
    uuid::Uuid::try_parse(text).map_err(|e| StoreError::Corrupt(format!("id {text:?}: {e}")))
}

/// Epochs are `u64` in Rust and signed 64-bit integers in SQL (never negative in practice).
pub(crate) fn epoch_to_sql(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

pub(crate) fn epoch_from_sql(n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("session epoch {n}")))
}

pub(crate) fn hash_from(bytes: Option<Vec<u8>>) -> StoreResult<Option<SecretHash>> {
    bytes
        .map(|b| {
            SecretHash::from_slice(&b).ok_or_else(|| StoreError::Corrupt("hash length".into()))
        })
        .transpose()
}

/// A row of either SQL backend whose columns decode to the types Latchkey stores.
pub(crate) trait SqlRow: Row
where
    for<'n> &'n str: ColumnIndex<Self>,
{
    /// The value of `column` (sqlx's own `get` panics on a bad column; this fails instead).
    fn read<'r, T>(&'r self, column: &str) -> StoreResult<T>
    where
        T: Decode<'r, Self::Database> + Type<Self::Database>,
    {
        self.try_get(column).map_err(unavailable)
    }
}

impl<R: Row> SqlRow for R where for<'n> &'n str: ColumnIndex<R> {}

pub(crate) fn decode_user<'r, R>(row: &'r R) -> StoreResult<User>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(User {
        id: UserId(parse_uuid(&row.read::<String>("id")?)?),
        username: row.read("username")?,
        password_hash: row.read("password_hash")?,
        created_at: from_nanos(row.read("created_at")?)?,
        banned_at: opt_from_nanos(row.read("banned_at")?)?,
        session_epoch: epoch_from_sql(row.read("session_epoch")?)?,
    })
}

/// Decodes session columns, optionally prefixed (`s_id`, …) when joined with other tables.
pub(crate) fn decode_session<'r, R>(row: &'r R, prefix: &str) -> StoreResult<Session>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let col = |name: &str| format!("{prefix}{name}");
    let text = |name: &str| row.read::<Option<String>>(&col(name));
    let time = |name: &str| row.read::<i64>(&col(name)).and_then(from_nanos);
    let kind: String = row.read(&col("kind"))?;
    Ok(Session {
        id: SessionId(parse_uuid(&row.read::<String>(&col("id"))?)?),
        user_id: UserId(parse_uuid(&row.read::<String>(&col("user_id"))?)?),
        kind: SessionKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("session kind {kind:?}")))?,
        client_id: text("client_id")?,
        scope: text("scope")?,
        secret_hash: hash_from(row.read(&col("secret_hash"))?)?,
        csrf_hash: hash_from(row.read(&col("csrf_hash"))?)?,
        created_at: time("created_at")?,
        last_seen_at: time("last_seen_at")?,
        expires_at: time("expires_at")?,
        revoked_at: opt_from_nanos(row.read(&col("revoked_at"))?)?,
        revoke_reason: text("revoke_reason")?
            .map(|r| {
                RevokeReason::parse(&r)
                    .ok_or_else(|| StoreError::Corrupt(format!("revoke reason {r:?}")))
            })
            .transpose()?,
        user_agent: text("user_agent")?,
        ip: text("ip")?,
        epoch: epoch_from_sql(row.read(&col("epoch"))?)?,
        parent_id: text("parent_id")?
            .map(|p| parse_uuid(&p).map(SessionId))
            .transpose()?,
    })
}

/// `query_as` target for a whole `users` row.
pub(crate) struct UserRow(pub User);

impl<'r, R> FromRow<'r, R> for UserRow
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        decode_user(row)
            .map(UserRow)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
}

/// `query_as` target for a whole `sessions` row.
pub(crate) struct SessionRow(pub Session);

impl<'r, R> FromRow<'r, R> for SessionRow
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        decode_session(row, "")
            .map(SessionRow)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
}

/// Decodes an `auth_codes` row.
pub(crate) fn decode_auth_code<'r, R>(row: &'r R) -> StoreResult<latchkey_core::AuthCode>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let hash: Vec<u8> = row.read("hash")?;
    Ok(latchkey_core::AuthCode {
        hash: SecretHash::from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("code hash length".into()))?,
        client_id: row.read("client_id")?,
        redirect_uri: row.read("redirect_uri")?,
        code_challenge: row.read("code_challenge")?,
        user_id: UserId(parse_uuid(&row.read::<String>("user_id")?)?),
        session_id: SessionId(parse_uuid(&row.read::<String>("session_id")?)?),
        nonce: row.read("nonce")?,
        auth_time: from_nanos(row.read("auth_time")?)?,
        scope: row.read("scope")?,
        created_at: from_nanos(row.read("created_at")?)?,
        expires_at: from_nanos(row.read("expires_at")?)?,
        consumed_at: opt_from_nanos(row.read("consumed_at")?)?,
        issued_session: row
            .read::<Option<String>>("issued_session")?
            .map(|p| parse_uuid(&p).map(SessionId))
            .transpose()?,
    })
}
