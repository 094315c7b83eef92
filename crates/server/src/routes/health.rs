use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use std::time::Duration;

/// 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// A store that has not answered within this is not ready: a load balancer's probe must get
/// its 503 before its own timeout, not a hang while a pool retries a dead server.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// 200 when the store answers, else 503 `unavailable`.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    tokio::time::timeout(READY_TIMEOUT, state.store.ping())
        .await
        .map_err(|_| ApiError::Unavailable("the store did not answer within 1 s".into()))??;
    Ok("ready")
}
