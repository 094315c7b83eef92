//! Prometheus metrics: one process-wide recorder, an HTTP middleware for request counts and
//! latencies per route, a store wrapper for store latency and errors, and named counters for
//! the security-relevant events (logins, rotations, reuse, revocations, throttling).
use crate::auth::{bearer_token, secrets_equal};
use crate::error::ApiError;
use crate::state::AppState;
use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use latchkey_core::{
    NewRefreshToken, RefreshToken, Revocation, RevocationEvent, SecretHash, Session, SessionId,
    User, UserId,
};
use latchkey_store::{
    CreateOutcome, EpochAdvanced, RotateOutcome, Store, StoreResult, StoredKey, UserChange,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use time::OffsetDateTime;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: sub-millisecond to a few seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide recorder (installed on first use).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays empty.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be incomplete");
        }
        handle
    })
}

/// `GET /metrics`; with `metrics_token` configured, only for `Authorization: Bearer <it>`.
pub async fn render(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.config.metrics_token
        && !secrets_equal(expected.expose(), bearer_token(&headers).unwrap_or(""))
    {
        return ApiError::Unauthorized("the metrics token is missing or wrong").into_response();
    }
    let mut response = handle().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Counts and times every request by matched route (never the raw path: bounded labels).
pub async fn track(request: Request, next: Next) -> Response {
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    // The fallback (the BFF) has no matched path; it names its route on the response.
    let route = matched
        .or_else(|| {
            response
                .extensions()
                .get::<RouteLabel>()
                .map(|l| l.0.clone())
        })
        .unwrap_or_else(|| "unmatched".to_string());
    let status = response.status().as_u16().to_string();
    metrics::counter!("latchkey_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("latchkey_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label from a fixed set: a client inventing methods must not create
/// label values (every one would be kept, and rendered, for the life of the process).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A route label set on a response by handlers outside the router's own routes (a BFF
/// route's configured prefix): bounded by configuration, never a raw path.
#[derive(Clone)]
pub struct RouteLabel(pub String);

pub fn login(mode: &'static str, result: &'static str) {
    metrics::counter!("latchkey_logins_total", "mode" => mode, "result" => result).increment(1);
}

pub fn rotation() {
    metrics::counter!("latchkey_refresh_rotations_total").increment(1);
}

pub fn reuse_detected() {
    metrics::counter!("latchkey_refresh_reuse_detected_total").increment(1);
}

pub fn revoked(reason: &'static str, count: usize) {
    metrics::counter!("latchkey_revocations_total", "reason" => reason).increment(count as u64);
}

pub fn session_token_minted() {
    metrics::counter!("latchkey_session_tokens_total").increment(1);
}

pub fn rate_limited(throttle: &'static str) {
    metrics::counter!("latchkey_rate_limited_total", "throttle" => throttle).increment(1);
}

/// A connection closed at once because a cap was reached (`reason`: `max_connections` or
/// `max_connections_per_ip`).
pub fn connection_refused(reason: &'static str) {
    metrics::counter!("latchkey_connections_refused_total", "reason" => reason).increment(1);
}

/// A connection closed by a timeout (`reason`: `header_read`, `keep_alive_idle`).
pub fn connection_timed_out(reason: &'static str) {
    metrics::counter!("latchkey_connections_timed_out_total", "reason" => reason).increment(1);
}

/// Open client connections of this instance.
pub fn connections_open(count: usize) {
    metrics::gauge!("latchkey_connections_open").set(count as f64);
}

pub fn sessions_live(count: u64) {
    metrics::gauge!("latchkey_sessions_live").set(count as f64);
}

/// Store calls timed per operation, with errors counted (the error type is not a label value
/// that could carry data: just the operation).
pub struct TimedStore(pub Arc<dyn Store>);

async fn timed<T>(op: &'static str, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("latchkey_store_operation_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("latchkey_store_errors_total", "op" => op).increment(1);
    }
    result
}

#[async_trait]
impl Store for TimedStore {
    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.0.ping()).await
    }
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        timed("create_user", self.0.create_user(user)).await
    }
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        timed("user_by_id", self.0.user_by_id(id)).await
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        timed("user_by_username", self.0.user_by_username(username)).await
    }
    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        timed("set_banned", self.0.set_banned(id, banned_at)).await
    }
    async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<EpochAdvanced>> {
        timed(
            "advance_user_epoch",
            self.0.advance_user_epoch(user, change, keep, revocation),
        )
        .await
    }
    async fn create_session(
        &self,
        session: &Session,
        first: Option<&NewRefreshToken>,
    ) -> StoreResult<CreateOutcome> {
        timed("create_session", self.0.create_session(session, first)).await
    }
    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        timed("session", self.0.session(id)).await
    }
    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        timed("session_by_secret", self.0.session_by_secret(hash)).await
    }
    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        timed(
            "live_sessions_of_user",
            self.0.live_sessions_of_user(user, now),
        )
        .await
    }
    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool> {
        timed("touch_session", self.0.touch_session(id, now, idle_cutoff)).await
    }
    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        timed("revoke_session", self.0.revoke_session(id, revocation)).await
    }
    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>> {
        timed(
            "revocations_after",
            self.0.revocations_after(after, limit, now),
        )
        .await
    }
    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        timed("refresh_token", self.0.refresh_token(hash)).await
    }
    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        timed(
            "rotate_refresh_token",
            self.0
                .rotate_refresh_token(presented, successor, sealed_successor, now),
        )
        .await
    }
    async fn insert_auth_code(&self, code: &latchkey_core::AuthCode) -> StoreResult<()> {
        timed("insert_auth_code", self.0.insert_auth_code(code)).await
    }
    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: time::OffsetDateTime,
    ) -> StoreResult<latchkey_store::CodeOutcome> {
        timed("consume_auth_code", self.0.consume_auth_code(hash, now)).await
    }
    async fn record_code_session(
        &self,
        hash: &SecretHash,
        session: SessionId,
    ) -> StoreResult<bool> {
        timed(
            "record_code_session",
            self.0.record_code_session(hash, session),
        )
        .await
    }
    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        timed("insert_signing_key", self.0.insert_signing_key(key)).await
    }
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        timed("signing_keys", self.0.signing_keys()).await
    }
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        timed("delete_signing_key", self.0.delete_signing_key(kid)).await
    }
    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        timed("list_users", self.0.list_users(after, limit)).await
    }
    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        timed("count_live_sessions", self.0.count_live_sessions(now)).await
    }
    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        timed("purge_expired", self.0.purge_expired(now, limit)).await
    }
    // ---- Roles (docs/decisions/0011) ----
    async fn user_roles(&self, user: UserId) -> StoreResult<Option<latchkey_store::UserRoles>> {
        timed("user_roles", self.0.user_roles(user)).await
    }
    async fn set_user_roles(
        &self,
        user: UserId,
        roles: &[String],
        at: OffsetDateTime,
        access_ttl: time::Duration,
    ) -> StoreResult<Option<latchkey_store::RolesChanged>> {
        timed(
            "set_user_roles",
            self.0.set_user_roles(user, roles, at, access_ttl),
        )
        .await
    }
}
