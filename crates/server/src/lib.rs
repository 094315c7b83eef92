//! The Latchkey HTTP server: the API of docs/api.md on axum.
//!
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on a socket with
//! graceful shutdown. Errors of every handler go through [`error::ApiError`].
#![deny(clippy::unwrap_used)]

pub mod auth;
pub mod bff;
pub mod caller;
pub mod clients;
pub mod config;
pub mod cookie;
pub mod cors;
pub mod error;
pub mod extract;
pub mod feed;
pub mod issue;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod net;
pub mod password;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub mod state;

use crate::error::ApiError;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use latchkey_core::{Clock, ManualClock, SystemClock};
pub use state::AppState;

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let body_read_timeout = state.config.server.body_read_timeout.0;
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/metrics", get(metrics::render))
        .route("/readyz", get(routes::health::readyz))
        .route("/.well-known/oauth-authorization-server", get(routes::discovery::metadata))
        .route("/.well-known/jwks.json", get(routes::discovery::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(routes::discovery::openid_configuration),
        )
        .route("/v1/users", post(routes::accounts::sign_up))
        .route("/v1/me", get(routes::accounts::me))
        .route("/v1/password", post(routes::accounts::change_password))
        .route(
            "/v1/session",
            post(routes::session::login).get(routes::session::current).delete(routes::session::logout),
        )
        .route("/v1/sessions", get(routes::sessions::list))
        .route("/v1/sessions/revoke-others", post(routes::sessions::revoke_others))
        .route("/v1/sessions/{id}", delete(routes::sessions::revoke))
        .route("/v1/revocations", get(routes::feed::revocations))
        .route("/v1/authorize", get(routes::authorize::authorize))
        .route("/oauth/introspect", post(routes::oauth::introspect))
        .route("/admin/v1/keys/rotate", post(routes::admin::rotate_keys))
        .route("/admin/v1/users/{id}/ban", post(routes::admin::ban))
        .route("/admin/v1/users/{id}/unban", post(routes::admin::unban))
        .route("/admin/v1/users/{id}/sessions", delete(routes::admin::revoke_sessions))
        .route("/admin/v1/users/{id}", get(routes::admin::user))
        .route("/admin/v1/users/{id}/roles", put(routes::admin::set_roles))
        .merge(routes::pages::router())
        .route("/oauth/token", post(routes::oauth::token))
        .route("/oauth/authorize", get(routes::oauth_authorize::authorize))
        .route("/oauth/revoke", post(routes::oauth::revoke))
        .route(
            "/oauth/userinfo",
            get(routes::oidc::userinfo_get).post(routes::oidc::userinfo_post),
        )
        .route(
            "/oauth/logout",
            get(routes::oidc::logout_get).post(routes::oidc::logout_post),
        )
        .route("/v1/session/token", post(routes::session_token::mint))
        // Every route above, not the fallback: the BFF proxy streams bodies under its own limits.
        .route_layer(serve::body_timeout_layer(body_read_timeout))
        // The BFF proxy's routes (and the demo page), else 404; see src/bff.
        .fallback(bff::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors::browser_endpoints))
        .with_state(state)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        // Account data is per user: never cached unless a handler says otherwise (JWKS does).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| -> Response {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            // Path only: a query string could carry something a client should not have sent.
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        // First of all: a request id the client chose is kept only if it is harmless in logs.
        .layer(tower::util::MapRequestLayer::new(drop_unsafe_request_id))
}

/// Removes an `x-request-id` that is not 1-64 characters of `[A-Za-z0-9._-]` (or that comes
/// more than once), so that one is generated instead: the id is logged with every line of
/// its request, and a crafted one could otherwise forge log lines.
fn drop_unsafe_request_id(mut request: Request<axum::body::Body>) -> Request<axum::body::Body> {
    let mut values = request.headers().get_all("x-request-id").iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => is_safe_request_id(value.as_bytes()),
        _ => false,
    };
    if !keep {
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// 1-64 characters of `[A-Za-z0-9._-]`.
pub fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Opens the store the configuration names (`database`, and `redis` when set), migrating it.
pub async fn open_store(
    config: &Config,
) -> Result<std::sync::Arc<dyn latchkey_store::Store>, latchkey_store::StoreError> {
    let ca = config
        .redis_tls_ca_pem()
        .map_err(|e| latchkey_store::StoreError::Unavailable(format!("redis_tls_ca: {e}")))?;
    latchkey_store::open_with_redis_tls_ca(
        &config.database,
        config.redis.as_deref(),
        &config.redis_prefix,
        ca.as_deref(),
    )
    .await
}

/// RFC 3339 UTC text for JSON bodies.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Starts everything an instance runs beside its requests: following the revocation log,
/// reloading signing keys, and housekeeping.
pub fn spawn_background_tasks(state: &AppState) {
    feed::spawn_follower(state);
    keys::spawn_reloader(state);
    spawn_housekeeping(state);
}

/// Starts background housekeeping (throttle maps) for the lifetime of the runtime.
fn spawn_housekeeping(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            state.throttles.shrink();
            metrics::handle().run_upkeep();
            purge_expired(&state).await;
            // Sampled once a minute, never counted on the request path.
            if let Ok(live) = state.store.count_live_sessions(state.clock.now()).await {
                metrics::sessions_live(live);
            }
        }
    });
}

const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);
/// Records deleted per store call: small, so purging never holds the (SQLite) writer long.
const PURGE_BATCH: u32 = 500;

/// Deletes sessions past their end and feed events past their `exp`, in small batches with a
/// yield between them so requests keep flowing.
pub async fn purge_expired(state: &AppState) -> u64 {
    let mut total = 0;
    loop {
        match state
            .store
            .purge_expired(state.clock.now(), PURGE_BATCH)
            .await
        {
            Ok(n) => {
                total += n;
                if n < u64::from(PURGE_BATCH) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging expired records failed; will retry");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, "purged expired sessions and feed events");
    }
    total
}

/// Serves `state` on `listener` until SIGINT/SIGTERM, then drains in-flight requests.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    for warning in &state.warnings {
        tracing::warn!("{warning}");
    }
    if state.config.metrics_token.is_none() && !state.config.listen.ip().is_loopback() {
        tracing::warn!(
            "GET /metrics is open to anyone who can reach {}: set metrics_token, or block /metrics at the proxy",
            state.config.listen
        );
    }
    // Read the revocation log once before the first request: until then forward auth fails
    // closed (503), although /readyz already says ready. The follower retries if this fails.
    if let Err(e) = state.follower.poll_once(&state).await {
        tracing::warn!(error = %e, "cannot read the revocation log yet; will retry");
    }
    spawn_background_tasks(&state);
    // In-flight requests get `shutdown_grace` to finish; then the process stops anyway.
    serve::run(listener, app(state.clone()), &state, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
