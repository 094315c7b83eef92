//! `POST /v1/session/token`: a same-site browser app that already has the Latchkey cookie
//! session gets a short-lived access token for a public client's audience. No refresh token
//! ever reaches the browser: the app asks again (the cookie is the long-lived credential), and
//! revoking the cookie session puts its `sid` on the revocation feed, which ends these tokens
//! at every verifier that follows it.
use crate::caller::CookieCaller;
use crate::clients;
use crate::config::ClientKind;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::net::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionTokenRequest {
    client_id: String,
    /// Narrows the client's scopes, as `scope` does at the token endpoint.
    #[serde(default)]
    scope: Option<String>,
}

pub async fn mint(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: ClientInfo,
    JsonBody(body): JsonBody<SessionTokenRequest>,
) -> ApiResult<Response> {
    state.throttles.token_per_ip.check(&peer.throttle_key)?;
    // The client first: its origins decide whether this request's Origin passes the CSRF check.
    let client = state
        .clients
        .get(&body.client_id)
        .ok_or_else(|| ApiError::InvalidClient("unknown client".into()))?;
    if client.kind != ClientKind::Public {
        return Err(ApiError::UnauthorizedClient(
            "only a public client's tokens are handed to a browser".into(),
        ));
    }
    let CookieCaller(caller) =
        CookieCaller::authenticate(&state, &Method::POST, &headers, &client.allowed_origins)
            .await?;
    let scope = clients::grant_scope(&client.scopes, body.scope.as_deref())?;
    let minted = crate::issue::access_token(
        &state,
        &caller.session,
        &client.id,
        &client.audience,
        &scope,
    )
    .await?;
    tracing::debug!(sid = %caller.session.id, client_id = %client.id, "session token minted");
    crate::metrics::session_token_minted();
    Ok(minted.into_response(scope, None))
}
