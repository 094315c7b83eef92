//! Facts about the connection: the peer address and user agent, bounded for storage.
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use std::convert::Infallible;
use std::net::SocketAddr;

const MAX_USER_AGENT: usize = 256;

/// The direct peer's IP (proxies are not trusted for this; see docs/operations.md).
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        // Absent only when the router runs without a socket (in-process tests).
        let ip = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT)
                    .collect()
            });
        Ok(Self { ip, user_agent })
    }
}
