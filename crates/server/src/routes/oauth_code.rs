//! The authorization code grant of `/oauth/token` (OAuth 2.1 §4.1.3, PKCE RFC 7636, OIDC
//! Core §3.1.3): redeems a code from `/oauth/authorize` for a new token session that is a child
//! of the cookie session that approved it, plus an ID token when the scope has `openid`.
use crate::config::ClientConfig;
use crate::error::{ApiError, ApiResult};
use crate::net::ClientInfo;
use crate::state::AppState;
use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::{
    AuthCode, NewRefreshToken, RevokeReason, Secret, Session, SessionId, SessionKind,
};
use latchkey_store::{CodeOutcome, CreateOutcome};
use latchkey_tokens::{IdTokenClaims, at_hash};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What the token request carried for this grant.
pub struct CodeRequest<'a> {
    pub code: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
}

pub async fn code_grant(
    state: &AppState,
    client: &ClientConfig,
    peer: &ClientInfo,
    req: CodeRequest<'_>,
) -> ApiResult<Response> {
    let Some(code_text) = req.code else {
        return Err(ApiError::InvalidRequest("code is required".into()));
    };
    if req.code_verifier.is_some_and(|v| !is_verifier(v)) {
        return Err(ApiError::InvalidRequest(
            "code_verifier must be 43 to 128 unreserved characters (RFC 7636 §4.1)".into(),
        ));
    }
    let invalid = || ApiError::InvalidGrant("the authorization code is invalid or expired".into());
    let code = Secret::parse(code_text).ok_or_else(invalid)?;
    let hash = code.hash();
    let now = state.clock.now();
    let record = match state.store.consume_auth_code(&hash, now).await? {
        CodeOutcome::Consumed(record) => record,
        CodeOutcome::Invalid => return Err(invalid()),
        CodeOutcome::Replayed { issued_session } => {
            if let Some(sid) = issued_session {
                state
                    .revoke_session(sid, RevokeReason::ReuseDetected)
                    .await?;
            }
            tracing::warn!(
                target: "latchkey::security",
                client_id = %client.id, revoked = ?issued_session,
                "authorization code presented again; the session it issued is revoked"
            );
            return Err(ApiError::InvalidGrant(
                "the authorization code was already used; the session it issued has been revoked"
                    .into(),
            ));
        }
    };
    check_binding(client, &record, req.redirect_uri, req.code_verifier)?;

    // The approving cookie session: the child never outlives it, and is born at the user's
    // current epoch (the store re-checks both when it writes).
    let parent = state
        .store
        .session(record.session_id)
        .await?
        .filter(|p| p.is_live(now) && p.kind == SessionKind::Cookie)
        .ok_or_else(|| ApiError::InvalidGrant("the login session has ended".into()))?;
    let user = state
        .store
        .user_by_id(record.user_id)
        .await?
        .filter(|u| u.admits(&parent))
        .ok_or_else(|| ApiError::InvalidGrant("the login session has ended".into()))?;
    let session = Session {
        id: SessionId::new(),
        user_id: user.id,
        kind: SessionKind::Token,
        client_id: Some(client.id.clone()),
        scope: Some(record.scope.clone()),
        secret_hash: None,
        csrf_hash: None,
        created_at: now,
        last_seen_at: now,
        expires_at: (now + state.policy.refresh_ttl).min(parent.expires_at),
        revoked_at: None,
        revoke_reason: None,
        user_agent: peer.user_agent.clone(),
        ip: Some(peer.ip.clone()),
        epoch: user.session_epoch,
        parent_id: Some(parent.id),
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
            return Err(ApiError::InvalidGrant(
                "the login session or the account changed meanwhile; log in again".into(),
            ));
        }
    }
    if !state.store.record_code_session(&hash, session.id).await? {
        // Replayed between the consume and now: the replay could not name this session, so
        // it is ended here.
        state
            .revoke_session(session.id, RevokeReason::ReuseDetected)
            .await?;
        return Err(ApiError::InvalidGrant(
            "the authorization code was already used; the session it issued has been revoked"
                .into(),
        ));
    }
    tracing::info!(
        user_id = %user.id, sid = %session.id, parent = %parent.id, client_id = %client.id,
        "login (authorization code)"
    );

    let scope = record.scope.clone();
    let minted =
        crate::issue::access_token(state, &session, &client.id, &client.audience, &scope).await?;
    let id_token = if scope.split(' ').any(|s| s == "openid") {
        let alg = state.config.id_token.algorithm;
        let claims = IdTokenClaims {
            iss: state.issuer.clone(),
            sub: user.id.to_string(),
            aud: client.id.clone(),
            exp: (now + state.config.id_token.ttl.as_time()).unix_timestamp(),
            iat: now.unix_timestamp(),
            auth_time: record.auth_time.unix_timestamp(),
            nonce: record.nonce.clone(),
            sid: parent.id.to_string(),
            at_hash: Some(at_hash(&minted.token, alg)),
            azp: None,
        };
        Some(
            state
                .keyring()
                .sign_id_token(&claims, alg)
                .map_err(|e| ApiError::Internal(format!("signing the ID token: {e}")))?,
        )
    } else {
        None
    };
    let mut response = Json(CodeTokenResponse {
        expires_in: minted.claims.exp - minted.claims.iat,
        access_token: minted.token,
        token_type: "Bearer",
        refresh_token: refresh.to_text(),
        scope,
        id_token,
    })
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[derive(Serialize)]
struct CodeTokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: String,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// The code is bound to its client, its redirect URI and its PKCE challenge: any mismatch is
/// `invalid_grant` (the code is spent either way).
fn check_binding(
    client: &ClientConfig,
    record: &AuthCode,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> ApiResult<()> {
    let mismatch = |what: &str| ApiError::InvalidGrant(format!("the authorization code {what}"));
    if record.client_id != client.id {
        return Err(mismatch("was issued to another client"));
    }
    match redirect_uri {
        Some(uri) if uri == record.redirect_uri => {}
        // Omitted at the authorization request too: only possible with a single registered URI.
        None if client.redirect_uris.len() == 1
            && client.redirect_uris[0] == record.redirect_uri => {}
        _ => return Err(mismatch("was issued for another redirect_uri")),
    }
    match (&record.code_challenge, verifier) {
        (None, None) => Ok(()),
        (Some(challenge), Some(verifier)) => {
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                Ok(())
            } else {
                Err(mismatch("does not match the code_verifier"))
            }
        }
        (Some(_), None) => Err(mismatch("needs its code_verifier")),
        // A verifier for a code issued without a challenge: a downgrade attempt (RFC 9700).
        (None, Some(_)) => Err(mismatch("was issued without PKCE")),
    }
}

/// Whether the cookie session a token session was issued under (if any) is still alive. A
/// parent found past its idle timeout is revoked now (which ends its children, this one too):
/// the single sign-on session idles out for every app it signed in, even if it is never
/// presented again. Token sessions without a parent are unaffected.
pub async fn parent_alive(state: &AppState, session: &Session) -> ApiResult<bool> {
    let Some(parent_id) = session.parent_id else {
        return Ok(true);
    };
    let now = state.clock.now();
    let Some(parent) = state.store.session(parent_id).await? else {
        return Ok(false);
    };
    if !parent.is_live(now) {
        return Ok(false);
    }
    if parent.last_seen_at <= now - state.config.session.idle_timeout.as_time() {
        state
            .revoke_session(parent.id, RevokeReason::IdleTimeout)
            .await?;
        return Ok(false);
    }
    Ok(true)
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}
