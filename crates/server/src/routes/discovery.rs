//! RFC 8414 metadata and the RFC 7517 key set.
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub async fn metadata(State(state): State<AppState>) -> Json<Value> {
    let issuer = &state.issuer;
    let mut scopes: Vec<&str> = state
        .clients
        .values()
        .flat_map(|c| c.scopes.iter().map(String::as_str))
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "scopes_supported": scopes,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": [],
    }))
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
