//! The Backend-for-Frontend proxy (docs/bff.md): cookie outside, bearer inside.
//!
//! `[[bff.routes]]` map a path prefix to an upstream URL and an audience. A request under a
//! prefix is authenticated by the session cookie (a store lookup on every request, CSRF token
//! for unsafe methods, exactly as cookie mode) and forwarded with `Authorization: Bearer
//! <access token for the session and the route's audience>`; the token is minted once per
//! (session, audience) and cached until shortly before it expires ([`cache`]). Paths are
//! checked before anything is forwarded ([`path`]); headers are cleaned both ways and bodies
//! stream through ([`proxy`]).
//!
//! The proxy is the router's fallback: Latchkey's own routes always match first, and
//! [`routes::validate`] refuses prefixes that overlap them.
pub mod cache;
pub mod demo;
pub mod path;
pub mod proxy;
pub mod routes;
pub mod sessions;

use crate::config::{BffConfig, Config, ConfigError};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

pub use cache::{BFF_CLIENT_ID, TokenCache};
pub use routes::{Route, RouteTable};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
pub type HttpClient = Client<Connector, proxy::ForwardBody>;

/// Checks `[bff]` (called by `Config::validate`).
pub fn validate(config: &BffConfig) -> Result<(), ConfigError> {
    routes::validate(config)
}

/// The proxy's part of the application state.
pub struct Bff {
    pub routes: RouteTable,
    pub cache: Arc<TokenCache>,
    sessions: sessions::SessionCache,
    client: HttpClient,
    timeout: Duration,
    /// `bff.max_body`, `bff.request_idle_timeout`, `bff.response_idle_timeout`.
    max_body: u64,
    request_idle: Duration,
    response_idle: Duration,
    strip_headers: Vec<HeaderName>,
    demo: bool,
    /// The issuer's scheme and authority: what the public sees, never the request's `Host`.
    forwarded_proto: HeaderValue,
    forwarded_host: HeaderValue,
}

impl Bff {
    pub fn new(config: &Config) -> Result<Self, String> {
        let routes = RouteTable::new(&config.bff).map_err(|e| e.to_string())?;
        let issuer: axum::http::Uri = config
            .issuer()
            .parse()
            .map_err(|e| format!("issuer: {e}"))?;
        let header = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("issuer: {e}"));
        Ok(Self {
            client: client(&config.bff, routes.needs_tls())?,
            cache: Arc::new(TokenCache::default()),
            sessions: sessions::SessionCache::new(config.bff.session_cache.0),
            timeout: config.bff.timeout.0,
            max_body: config.bff.max_body.0,
            request_idle: config.bff.request_idle_timeout.0,
            response_idle: config.bff.response_idle_timeout.0,
            strip_headers: config
                .bff
                .strip_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            demo: config.bff.demo,
            forwarded_proto: header(issuer.scheme_str().unwrap_or("http"))?,
            forwarded_host: header(issuer.authority().map_or("", |a| a.as_str()))?,
            routes,
        })
    }
}

/// One pooled HTTP/1.1 client for every upstream; `https://` upstreams are verified against
/// the system's CA certificates (loaded only when a route needs them).
fn client(config: &BffConfig, tls: bool) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout.0));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if tls {
        builder
            .with_provider_and_native_roots(provider)
            .map_err(|e| {
                format!("bff: an https:// upstream needs the system's CA certificates: {e}")
            })?
    } else {
        builder.with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("bff: TLS: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

/// The router's fallback: the demo page (when enabled), a BFF route, or 404.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    if state.bff.demo
        && let Some(response) = demo::serve(request.method(), path)
    {
        return response;
    }
    let Some((route, rest)) = state.bff.routes.find(path) else {
        return ApiError::NotFound.into_response();
    };
    // An absolute-form target (`GET http://host/api/x HTTP/1.1`) is for forward proxies;
    // an origin server's clients never send one. (HTTP/2 always carries an authority.)
    if request.version() <= Version::HTTP_11 && request.uri().scheme().is_some() {
        return ApiError::InvalidRequest("absolute-form request targets are not accepted".into())
            .into_response();
    }
    if let Err(why) = path::check_rest(rest) {
        return ApiError::InvalidRequest(why.into()).into_response();
    }
    let Some(uri) = route.upstream_uri(rest, request.uri().query()) else {
        return ApiError::InvalidRequest("the request target cannot be forwarded".into())
            .into_response();
    };
    let label = crate::metrics::RouteLabel(format!("bff:{}", route.prefix));
    let mut response = match proxy::forward(&state, route, uri, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(label);
    response
}
