//! Who is calling, by cookie session or Bearer access token, with CSRF defence for
//! cookie-authenticated state changes.
use crate::auth::{bearer_token, verify_access_token};
use crate::config::origin_of;
use crate::cookie::csrf_token_for;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use latchkey_core::{RevokeReason, Secret, Session, SessionKind};
use subtle::ConstantTimeEq;

pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Cookie,
    Bearer,
}

/// An authenticated caller and the live session it came with.
pub struct Caller {
    pub session: Session,
    pub kind: AuthKind,
    /// Cookie mode: the presented secret (to derive the CSRF token from).
    pub cookie_secret: Option<Secret>,
}

/// A caller authenticated by the session cookie only (the cookie-mode endpoints).
pub struct CookieCaller(pub Caller);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // An explicit Bearer token wins; a browser cannot attach one cross-site.
        if let Some(token) = bearer_token(&parts.headers) {
            let bearer = verify_access_token(state, token).await?;
            return Ok(Caller {
                session: bearer.session,
                kind: AuthKind::Bearer,
                cookie_secret: None,
            });
        }
        Ok(CookieCaller::from_request_parts(parts, state).await?.0)
    }
}

impl FromRequestParts<AppState> for CookieCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        CookieCaller::authenticate(state, &parts.method, &parts.headers, &[]).await
    }
}

impl CookieCaller {
    /// The cookie session of a request, with the CSRF defence for unsafe methods; `Origin` may
    /// also be one of `extra_origins` (a public client's, for `POST /v1/session/token`).
    pub async fn authenticate(
        state: &AppState,
        method: &Method,
        headers: &HeaderMap,
        extra_origins: &[String],
    ) -> Result<Self, ApiError> {
        let secret = state
            .cookie
            .read(headers)
            .map_err(|_| ApiError::Unauthorized("the session cookie is invalid"))?
            .ok_or(ApiError::Unauthorized("authentication is required"))?;
        let session = authenticate_cookie(state, &secret).await?;
        if !is_safe(method) {
            check_origin_among(state, headers, extra_origins)?;
            check_csrf_token(state, headers, &session)?;
        }
        Ok(CookieCaller(Caller {
            session,
            kind: AuthKind::Cookie,
            cookie_secret: Some(secret),
        }))
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The live cookie session for a presented secret, enforcing idle and absolute timeouts and
/// recording activity at most every `touch_interval`.
pub async fn authenticate_cookie(state: &AppState, secret: &Secret) -> Result<Session, ApiError> {
    let unauthorized = ApiError::Unauthorized("the session has ended; log in again");
    let session =
        state
            .store
            .session_by_secret(&secret.hash())
            .await?
            .ok_or(ApiError::Unauthorized(
                "the session has ended; log in again",
            ))?;
    let now = state.clock.now();
    let idle_cutoff = now - state.config.session.idle_timeout.as_time();
    if session.kind != SessionKind::Cookie || !session.is_live(now) {
        return Err(unauthorized);
    }
    if session.last_seen_at <= idle_cutoff {
        // Record the end, so the session stays dead whatever any clock says later.
        if let Err(e) = state
            .revoke_session(session.id, RevokeReason::IdleTimeout)
            .await
        {
            tracing::warn!(error = %e, sid = %session.id, "could not record an idle timeout");
        }
        return Err(unauthorized);
    }
    // A banned user's session, or one born before the user's current epoch, is refused even
    // if its revocation was never written (invariant 7).
    if !state.admitted(&session).await? {
        return Err(unauthorized);
    }
    // The touch re-checks liveness in the same write, so a racing request can't revive it.
    if now - session.last_seen_at >= state.touch_interval
        && !state
            .store
            .touch_session(session.id, now, idle_cutoff)
            .await?
    {
        return Err(unauthorized);
    }
    Ok(session)
}

/// Logs CSRF refusals where an operator sees them by default, so "my login fails" has a visible
/// cause (a wrong `issuer` or `allowed_origins` looks exactly like an attack to the browser).
/// At most [`REFUSAL_LOGS_PER_MINUTE`] lines a minute per instance: a flood of forged requests
/// cannot fill the log. The origin is attacker-chosen text: logged with Debug escaping, bounded.
#[derive(Default)]
pub struct RefusalLog(std::sync::Mutex<(Option<std::time::Instant>, u32)>);

const REFUSAL_LOGS_PER_MINUTE: u32 = 30;

impl RefusalLog {
    fn log(&self, reason: &'static str, origin: Option<&str>) {
        let mut window = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if window
            .0
            .is_none_or(|start| now.duration_since(start).as_secs() >= 60)
        {
            *window = (Some(now), 0);
        }
        window.1 += 1;
        if window.1 > REFUSAL_LOGS_PER_MINUTE {
            return;
        }
        let origin: Option<String> = origin.map(|o| o.chars().take(200).collect());
        tracing::warn!(
            target: "latchkey::security",
            reason,
            origin = ?origin,
            allowed = "see allowed_origins / issuer",
            "request refused: csrf_failed"
        );
    }
}

/// Origin / Sec-Fetch-Site checks alone: for login, where there is no session yet.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    check_origin_among(state, headers, &[])
}

/// [`check_origin`], where `Origin` may also be one of `extra_origins`.
fn check_origin_among(
    state: &AppState,
    headers: &HeaderMap,
    extra_origins: &[String],
) -> Result<(), ApiError> {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        state
            .refusal_log
            .log("cross-site requests are refused", None);
        return Err(ApiError::CsrfFailed("cross-site requests are refused"));
    }
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        // `null` (sandboxed frames, some redirects) is never an allowed origin.
        let allowed = origin != "null"
            && origin_of(origin).as_deref() == Some(origin)
            && (state.allowed_origins.iter().any(|a| a == origin)
                || extra_origins.iter().any(|a| a == origin));
        if !allowed {
            state
                .refusal_log
                .log("the request's Origin is not allowed", Some(origin));
            return Err(ApiError::CsrfFailed("the request's Origin is not allowed"));
        }
    }
    Ok(())
}

/// Full CSRF defence for a cookie-authenticated state change: origin checks plus the
/// synchronizer token in `X-CSRF-Token`, compared in constant time against the stored hash.
pub fn check_csrf(
    state: &AppState,
    headers: &HeaderMap,
    session: &Session,
) -> Result<(), ApiError> {
    check_origin(state, headers)?;
    check_csrf_token(state, headers, session)
}

/// The synchronizer token alone, compared in constant time against the stored hash.
fn check_csrf_token(
    state: &AppState,
    headers: &HeaderMap,
    session: &Session,
) -> Result<(), ApiError> {
    let refuse = |reason: &'static str| {
        state.refusal_log.log(reason, None);
        ApiError::CsrfFailed(reason)
    };
    let presented = headers
        .get(CSRF_HEADER)
        .ok_or_else(|| refuse("the X-CSRF-Token header is required"))?;
    let presented = presented
        .to_str()
        .ok()
        .and_then(Secret::parse)
        .ok_or_else(|| refuse("the CSRF token is invalid"))?;
    let expected = session
        .csrf_hash
        .ok_or_else(|| refuse("the CSRF token is invalid"))?;
    if bool::from(presented.hash().as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(refuse("the CSRF token is invalid"))
    }
}

impl Caller {
    /// The CSRF token to hand back to a cookie caller.
    pub fn csrf_token(&self) -> Option<String> {
        self.cookie_secret
            .as_ref()
            .map(|s| csrf_token_for(s).to_text())
    }
}
