//! The OAuth 2.0 endpoints: token (password and refresh_token grants, with Refresh Token
//! Rotation and reuse detection) and revocation (RFC 7009).
use crate::auth::verify_own_token;
use crate::clients::{self, Presented};
use crate::config::ClientConfig;
use crate::error::{ApiError, ApiResult};
use crate::extract::OAuthBody;
use crate::login::{LoginRefused, check_credentials};
use crate::net::ClientInfo;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::{
    NewRefreshToken, Presentation, RevokeReason, Secret, Session, SessionId, SessionKind,
    judge_presentation, open_successor, seal_successor,
};
use latchkey_store::{CreateOutcome, RotateOutcome};
use serde::Deserialize;
use time::Duration;

/// Every parameter either grant may carry; RFC 6749 says unknown ones are ignored.
#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
}

pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: ClientInfo,
    OAuthBody(req): OAuthBody<TokenRequest>,
) -> ApiResult<Response> {
    state.throttles.token_per_ip.check(&peer.throttle_key)?;
    let grant_type = req
        .grant_type
        .as_deref()
        .ok_or_else(|| ApiError::InvalidRequest("grant_type is required".into()))?;
    if !matches!(
        grant_type,
        "password" | "refresh_token" | "client_credentials" | "authorization_code"
    ) {
        return Err(ApiError::UnsupportedGrantType);
    }
    let client = clients::authenticate(
        &state,
        Presented {
            headers: &headers,
            client_id: req.client_id.as_deref(),
            client_secret: req.client_secret.as_deref(),
        },
    )?;
    if !client.allows_grant(grant_type) {
        return Err(ApiError::UnauthorizedClient(format!(
            "this client may not use the {grant_type} grant (see its grant_types)"
        )));
    }
    match grant_type {
        "password" => password_grant(&state, &client, &peer, req).await,
        "client_credentials" => client_credentials_grant(&state, &client, req),
        "authorization_code" => code_grant(&state, &client, &peer, &req).await,
        _ => refresh_grant(&state, &client, req).await,
    }
}

/// RFC 6749 §4.4: a confidential client's token for itself. The scope is the client's API
/// scopes (narrowed by `scope`); the OIDC scopes name a user and are refused. No refresh token.
fn client_credentials_grant(
    state: &AppState,
    client: &ClientConfig,
    req: TokenRequest,
) -> ApiResult<Response> {
    if client.kind != crate::config::ClientKind::Confidential {
        return Err(ApiError::UnauthorizedClient(
            "the client_credentials grant needs a confidential client".into(),
        ));
    }
    if let Some(oidc) = req
        .scope
        .as_deref()
        .and_then(|s| s.split(' ').find(|s| matches!(*s, "openid" | "profile")))
    {
        return Err(ApiError::InvalidScope(format!(
            "scope {oidc:?} names a user; a client_credentials token has none"
        )));
    }
    // The OIDC scopes name a user: never granted here, even to a client that lists them.
    let api_scopes: Vec<String> = client
        .scopes
        .iter()
        .filter(|s| !matches!(s.as_str(), "openid" | "profile"))
        .cloned()
        .collect();
    let scope = clients::grant_scope(&api_scopes, req.scope.as_deref())?;
    let minted = crate::issue::client_access_token(state, &client.id, &client.audience, &scope)?;
    tracing::info!(client_id = %client.id, jti = %minted.claims.jti, "client_credentials token issued");
    Ok(minted.into_response(scope, None))
}

async fn code_grant(
    state: &AppState,
    client: &ClientConfig,
    peer: &ClientInfo,
    req: &TokenRequest,
) -> ApiResult<Response> {
    let code = crate::routes::oauth_code::CodeRequest {
        code: req.code.as_deref(),
        redirect_uri: req.redirect_uri.as_deref(),
        code_verifier: req.code_verifier.as_deref(),
    };
    crate::routes::oauth_code::code_grant(state, client, peer, code).await
}

async fn password_grant(
    state: &AppState,
    client: &ClientConfig,
    peer: &ClientInfo,
    req: TokenRequest,
) -> ApiResult<Response> {
    let (Some(username), Some(password)) = (req.username.as_deref(), req.password.as_deref())
    else {
        return Err(ApiError::InvalidRequest(
            "username and password are required".into(),
        ));
    };
    let scope = clients::grant_scope(&client.scopes, req.scope.as_deref())?;
    let user = match check_credentials(state, "token", peer, username, password).await? {
        Ok(user) => user,
        Err(LoginRefused::BadCredentials) => {
            return Err(ApiError::InvalidGrant(
                "the username or password is incorrect".into(),
            ));
        }
        Err(LoginRefused::Banned) => {
            return Err(ApiError::InvalidGrant("this account is banned".into()));
        }
    };

    let now = state.clock.now();
    let session = Session {
        id: SessionId::new(),
        user_id: user.id,
        kind: SessionKind::Token,
        client_id: Some(client.id.clone()),
        scope: Some(scope.clone()),
        secret_hash: None,
        csrf_hash: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + state.policy.refresh_ttl,
        revoked_at: None,
        revoke_reason: None,
        user_agent: peer.user_agent.clone(),
        ip: Some(peer.ip.clone()),
        // The epoch read with the user, before the password was verified: if a ban, password
        // change or "revoke all" lands meanwhile, the store refuses to create the session.
        epoch: user.session_epoch,
        parent_id: None,
    };
    let refresh = Secret::generate();
    let first = NewRefreshToken {
        hash: refresh.hash(),
        session_id: session.id,
        client_id: client.id.clone(),
        issued_at: now,
    };
    match state.store.create_session(&session, Some(&first)).await? {
        CreateOutcome::Created => {}
        CreateOutcome::UserChanged => {
            tracing::info!(
                target: "latchkey::security",
                user_id = %user.id, client_id = %client.id,
                "login refused: the account was banned, its password changed or its sessions revoked during the login"
            );
            return Err(ApiError::InvalidGrant(
                "the account changed during the login (banned, password changed or sessions revoked); log in again".into(),
            ));
        }
    }
    tracing::info!(user_id = %user.id, sid = %session.id, client_id = %client.id, "login");
    issue(state, client, &session, scope, &refresh).await
}

async fn refresh_grant(
    state: &AppState,
    client: &ClientConfig,
    req: TokenRequest,
) -> ApiResult<Response> {
    let presented_text = req
        .refresh_token
        .as_deref()
        .ok_or_else(|| ApiError::InvalidRequest("refresh_token is required".into()))?;
    let invalid = || ApiError::InvalidGrant("the refresh token is invalid".into());
    let presented = Secret::parse(presented_text).ok_or_else(invalid)?;
    let presented_hash = presented.hash();

    // Two passes at most: a lost race re-reads the token, which is then consumed.
    for _ in 0..2 {
        let (token, session) = state
            .store
            .refresh_token(&presented_hash)
            .await?
            .ok_or_else(invalid)?;
        let now = state.clock.now();
        let family_scope = session.scope.clone().unwrap_or_default();
        let allowed: Vec<String> = family_scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let verdict = judge_presentation(&token, &session, &client.id, now, &state.policy);
        // A banned user's family, or one born before the user's current epoch (a password
        // change or "revoke all" since), is not refreshed even if its revocation was never
        // written. Reuse is still judged first: a reused token revokes its family regardless.
        if matches!(verdict, Presentation::Rotate | Presentation::Replay { .. })
            && !state.admitted(&session).await?
        {
            return Err(ApiError::InvalidGrant(
                "the session has ended: the account was banned, its password changed or its sessions revoked".into(),
            ));
        }
        // Standard login: the cookie session that approved it must still be alive (it may
        // have idled out without ever being presented again).
        if matches!(verdict, Presentation::Rotate | Presentation::Replay { .. })
            && !crate::routes::oauth_code::parent_alive(state, &session).await?
        {
            return Err(ApiError::InvalidGrant(
                "the login session at Latchkey has ended".into(),
            ));
        }
        match verdict {
            Presentation::Refuse(reason) => {
                return Err(ApiError::InvalidGrant(reason.description().into()));
            }
            Presentation::Rotate => {
                // A refresh may narrow the scope of the new access token, never widen it.
                let scope = clients::grant_scope(&allowed, req.scope.as_deref())?;
                state
                    .throttles
                    .refresh_per_session
                    .check(&session.id.to_string())?;
                let successor = Secret::generate();
                let sealed = (state.policy.reuse_interval > Duration::ZERO)
                    .then(|| seal_successor(&presented, &successor));
                let new = NewRefreshToken {
                    hash: successor.hash(),
                    session_id: session.id,
                    client_id: client.id.clone(),
                    issued_at: now,
                };
                match state
                    .store
                    .rotate_refresh_token(&presented_hash, &new, sealed.as_deref(), now)
                    .await?
                {
                    RotateOutcome::Rotated => {
                        crate::metrics::rotation();
                        return issue(state, client, &session, scope, &successor).await;
                    }
                    RotateOutcome::NotRotated => continue,
                }
            }
            Presentation::Replay { sealed_successor } => {
                let scope = clients::grant_scope(&allowed, req.scope.as_deref())?;
                let successor = open_successor(&presented, &sealed_successor)
                    .map_err(|_| ApiError::Internal("sealed successor did not open".into()))?;
                tracing::info!(sid = %session.id, "refresh token repeated inside the grace window");
                return issue(state, client, &session, scope, &successor).await;
            }
            Presentation::Reuse => {
                // Durable before we answer; if the write fails the request fails (503) and
                // the reused token is still refused.
                state
                    .revoke_session(session.id, RevokeReason::ReuseDetected)
                    .await?;
                crate::metrics::reuse_detected();
                tracing::warn!(
                    target: "latchkey::security",
                    sid = %session.id, user_id = %session.user_id, client_id = %client.id,
                    "refresh token reuse detected; session revoked"
                );
                return Err(ApiError::InvalidGrant(
                    "refresh token reuse detected: this token was already used, so the session has been revoked".into(),
                ));
            }
        }
    }
    // The token was consumed between our read and our write twice in a row: treat as reuse
    // on the next presentation; this one simply fails.
    Err(ApiError::InvalidGrant(
        "the refresh token was already used".into(),
    ))
}

/// Signs an access token for the session and answers with the pair.
async fn issue(
    state: &AppState,
    client: &ClientConfig,
    session: &Session,
    scope: String,
    refresh: &Secret,
) -> ApiResult<Response> {
    let minted =
        crate::issue::access_token(state, session, &client.id, &client.audience, &scope).await?;
    Ok(minted.into_response(scope, Some(refresh.to_text())))
}

#[derive(Deserialize)]
pub struct RevokeRequest {
    token: Option<String>,
    #[allow(dead_code)] // a hint only: both kinds are tried (RFC 7009 §2.1)
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 7009: 200 for any well-formed request from an authenticated client, whether or not the
/// token was known. Revoking either kind of token ends its whole session, unless it belongs to
/// another client.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: ClientInfo,
    OAuthBody(req): OAuthBody<RevokeRequest>,
) -> ApiResult<Response> {
    state.throttles.token_per_ip.check(&peer.throttle_key)?;
    let client = clients::authenticate(
        &state,
        Presented {
            headers: &headers,
            client_id: req.client_id.as_deref(),
            client_secret: req.client_secret.as_deref(),
        },
    )?;
    let token = req
        .token
        .as_deref()
        .ok_or_else(|| ApiError::InvalidRequest("token is required".into()))?;
    if let Some(sid) = session_of_token(&state, token, &client).await?
        && state.revoke_session(sid, RevokeReason::Logout).await?
    {
        tracing::info!(sid = %sid, client_id = %client.id, "session revoked through /oauth/revoke");
    }
    let mut response = ().into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The session a refresh or access token belongs to, if it was issued to `client`.
async fn session_of_token(
    state: &AppState,
    token: &str,
    client: &ClientConfig,
) -> ApiResult<Option<SessionId>> {
    if let Some(secret) = Secret::parse(token) {
        return Ok(state
            .store
            .refresh_token(&secret.hash())
            .await?
            .filter(|(t, _)| t.client_id == client.id)
            .map(|(t, _)| t.session_id));
    }
    Ok(verify_own_token(state, token)
        .ok()
        .filter(|claims| claims.client_id == client.id)
        .and_then(|claims| SessionId::parse(&claims.sid)))
}

#[derive(Deserialize)]
pub struct IntrospectRequest {
    token: Option<String>,
    #[allow(dead_code)] // a hint only: both kinds are tried
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 7662. The caller is a confidential client or holds the admin token. Anything that is
/// not an active token of a live session is exactly `{"active":false}`.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: ClientInfo,
    OAuthBody(req): OAuthBody<IntrospectRequest>,
) -> ApiResult<Response> {
    state.throttles.token_per_ip.check(&peer.throttle_key)?;
    authenticate_introspector(&state, &headers, &peer, &req)?;
    let token = req
        .token
        .as_deref()
        .ok_or_else(|| ApiError::InvalidRequest("token is required".into()))?;
    let body = introspection(&state, token)
        .await?
        .unwrap_or_else(|| serde_json::json!({"active": false}));
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn authenticate_introspector(
    state: &AppState,
    headers: &HeaderMap,
    peer: &ClientInfo,
    req: &IntrospectRequest,
) -> ApiResult<()> {
    if let Some(presented) = crate::auth::bearer_token(headers) {
        // The admin throttle applies here too: this is an admin-token check like any other.
        let ok = match &state.config.admin_token {
            Some(expected) => {
                state
                    .admin_gate
                    .check(expected.expose(), &peer.throttle_key, presented)?
            }
            None => false,
        };
        return if ok {
            Ok(())
        } else {
            Err(ApiError::InvalidClient(
                "introspection needs a confidential client or the admin token".into(),
            ))
        };
    }
    let client = clients::authenticate(
        state,
        Presented {
            headers,
            client_id: req.client_id.as_deref(),
            client_secret: req.client_secret.as_deref(),
        },
    )?;
    if client.kind != crate::config::ClientKind::Confidential {
        return Err(ApiError::InvalidClient(
            "introspection needs a confidential client or the admin token".into(),
        ));
    }
    Ok(())
}

/// The RFC 7662 body for an active token, or None.
async fn introspection(state: &AppState, token: &str) -> ApiResult<Option<serde_json::Value>> {
    let now = state.clock.now();
    if let Some(secret) = Secret::parse(token) {
        let Some((t, session)) = state.store.refresh_token(&secret.hash()).await? else {
            return Ok(None);
        };
        if t.consumed_at.is_some() || !session.is_live(now) || !state.admitted(&session).await? {
            return Ok(None);
        }
        return Ok(Some(serde_json::json!({
            "active": true,
            "token_type": "refresh_token",
            "sub": session.user_id.to_string(),
            "sid": session.id.to_string(),
            "client_id": t.client_id,
            "scope": session.scope.unwrap_or_default(),
            "iat": t.issued_at.unix_timestamp(),
            "exp": session.expires_at.unix_timestamp(),
            "iss": state.issuer,
        })));
    }
    let Ok(claims) = verify_own_token(state, token) else {
        return Ok(None);
    };
    // A client_credentials token has no session to check: active while unexpired (and while
    // its client is configured for the grant). Its `sub` is the client id.
    if crate::auth::is_client_token(state, &claims) {
        return Ok(Some(serde_json::json!({
            "active": true,
            "token_type": "Bearer",
            "sub": claims.sub,
            "sid": claims.sid,
            "client_id": claims.client_id,
            "scope": claims.scope,
            "iat": claims.iat,
            "exp": claims.exp,
            "aud": claims.aud,
            "iss": claims.iss,
            "jti": claims.jti,
        })));
    }
    let Some(sid) = SessionId::parse(&claims.sid) else {
        return Ok(None);
    };
    match state.store.session(sid).await? {
        Some(session) if session.is_live(now) && state.admitted(&session).await? => {
            Ok(Some(serde_json::json!({
                "active": true,
                "token_type": "Bearer",
                "sub": claims.sub,
                "sid": claims.sid,
                "client_id": claims.client_id,
                "scope": claims.scope,
                "iat": claims.iat,
                "exp": claims.exp,
                "aud": claims.aud,
                "iss": claims.iss,
                "jti": claims.jti,
            })))
        }
        _ => Ok(None),
    }
}
