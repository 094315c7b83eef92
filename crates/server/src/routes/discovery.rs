//! RFC 8414 metadata, OpenID Connect Discovery 1.0 and the RFC 7517 key set.
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latchkey_tokens::Algorithm;
use serde_json::{Value, json};

/// Every grant `/oauth/token` implements (each client still uses only its `grant_types`).
const GRANT_TYPES: [&str; 4] = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "password",
];
const AUTH_METHODS: [&str; 3] = ["client_secret_basic", "client_secret_post", "none"];

/// The scopes any client may ask for: `openid` and `profile`, then every client's API scopes.
fn scopes(state: &AppState) -> Vec<&str> {
    let mut scopes: Vec<&str> = state
        .clients
        .values()
        .flat_map(|c| c.scopes.iter().map(String::as_str))
        .filter(|s| !matches!(*s, "openid" | "profile"))
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    ["openid", "profile"].into_iter().chain(scopes).collect()
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = &state.issuer;
    cached(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": GRANT_TYPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": scopes(&state),
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": [],
    }))
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3): exactly the
/// members API.md lists.
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    let issuer = &state.issuer;
    cached(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "userinfo_endpoint": format!("{issuer}/oauth/userinfo"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "end_session_endpoint": format!("{issuer}/oauth/logout"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "response_types_supported": ["code"],
        "grant_types_supported": GRANT_TYPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": id_token_algorithms(&state),
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes(&state),
        "claims_supported": CLAIMS,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "authorization_response_iss_parameter_supported": true,
        // Back-Channel Logout delivery is not built yet: no client is told, so say so.
        "backchannel_logout_supported": false,
        "backchannel_logout_session_supported": false,
    }))
}

/// The claims ID tokens and userinfo may carry.
const CLAIMS: [&str; 10] = [
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "sid",
    "at_hash",
    "preferred_username",
];

/// The configured `[id_token] algorithm` first (ID tokens are signed with it), then RS256,
/// which OIDC Discovery requires every provider to list.
fn id_token_algorithms(state: &AppState) -> Vec<&'static str> {
    let configured = state.config.id_token.algorithm;
    let mut algs = vec![configured.as_str()];
    if configured != Algorithm::RS256 {
        algs.push(Algorithm::RS256.as_str());
    }
    algs
}

/// A public document: short caching, like the JWKS.
fn cached(body: Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keyring().jwks()).into_response();
    // Short caching: verifiers refetch on an unknown kid anyway.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
