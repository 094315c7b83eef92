//! OpenID Connect endpoints beside the authorization flow: UserInfo (OIDC Core §5.3) and
//! RP-Initiated Logout 1.0.
//!
//! - `GET|POST /oauth/userinfo`: an RFC 6750 protected resource. It accepts an unexpired access
//!   token Latchkey issued with the `openid` scope whose token session is live, from any
//!   configured client (`account_api` does not matter here), but never one minted for a cookie
//!   session (BFF, `POST /v1/session/token`) nor a `client_credentials` token (no user).
//! - `GET|POST /oauth/logout`: ends the Latchkey cookie session (the single sign-on session).
//!   A logout is done at once only when it cannot have been forged cross-site: a valid
//!   `id_token_hint` for the cookie's user, or the confirmation form (CSRF token) posted from
//!   Latchkey's own page. Anything else shows that confirmation page. A redirect goes only to a
//!   `post_logout_redirect_uri` registered for the client, compared exactly.
use crate::auth::{OWN_LEEWAY_SECS, bearer_token, is_client_token, user_token_session};
use crate::caller::{authenticate_cookie, check_origin};
use crate::config::{ClientConfig, origin_of};
use crate::cookie::csrf_token_for;
use crate::error::{ApiError, ApiResult};
use crate::extract::{OAuthBody, Query};
use crate::routes::pages::CONTENT_SECURITY_POLICY;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::{RevokeReason, Secret, Session, SessionId, SessionKind};
use latchkey_tokens::{IdTokenClaims, IdTokenValidation, MAX_TOKEN_LEN, VerifyError};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

// ---------------------------------------------------------------------------------------------
// UserInfo

/// `POST /oauth/userinfo` may carry the token in the form body instead (RFC 6750 §2.2).
#[derive(Deserialize)]
pub struct UserinfoForm {
    access_token: Option<String>,
}

/// `GET /oauth/userinfo` with `Authorization: Bearer`.
pub async fn userinfo_get(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token =
        bearer_token(&headers).ok_or(ApiError::Unauthorized("authentication is required"))?;
    userinfo(&state, token).await
}

/// `POST /oauth/userinfo`: Bearer header or `access_token` form field, never both (RFC 6750 §2).
pub async fn userinfo_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(form): OAuthBody<UserinfoForm>,
) -> ApiResult<Response> {
    let token = match (bearer_token(&headers), form.access_token.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "send the access token once: in the Authorization header or in the body".into(),
            ));
        }
        (Some(token), None) | (None, Some(token)) => token,
        (None, None) => return Err(ApiError::Unauthorized("authentication is required")),
    };
    userinfo(&state, token).await
}

async fn userinfo(state: &AppState, token: &str) -> ApiResult<Response> {
    let claims = crate::auth::verify_own_token(state, token)
        .map_err(|_| ApiError::InvalidToken("the access token is invalid or expired"))?;
    if !state.clients.contains_key(&claims.client_id) {
        // Includes the BFF's reserved client id: its tokens are for upstream APIs only.
        return Err(ApiError::InvalidToken(
            "this access token is not accepted here",
        ));
    }
    if is_client_token(state, &claims) {
        return Err(ApiError::InvalidToken(
            "a client_credentials token names no user",
        ));
    }
    let has_scope = |wanted: &str| claims.scope.split(' ').any(|s| s == wanted);
    let (openid, profile) = (has_scope("openid"), has_scope("profile"));
    let bearer = user_token_session(state, claims)
        .await
        .map_err(|e| match e {
            ApiError::Unauthorized(why) => ApiError::InvalidToken(why),
            other => other,
        })?;
    if !openid {
        return Err(ApiError::InsufficientScope {
            scope: "openid",
            description: "userinfo needs an access token with the openid scope",
        });
    }
    let mut body = json!({ "sub": bearer.claims.sub });
    if profile {
        let user = state
            .store
            .user_by_id(bearer.session.user_id)
            .await?
            .ok_or(ApiError::InvalidToken("the user no longer exists"))?;
        body["preferred_username"] = json!(user.username);
    }
    // API.md: userinfo returns the user's roles, as they are now.
    let roles = state
        .store
        .user_roles(bearer.session.user_id)
        .await?
        .map(|r| r.roles)
        .unwrap_or_default();
    body["roles"] = json!(roles);
    Ok(Json(body).into_response())
}

// ---------------------------------------------------------------------------------------------
// RP-Initiated Logout

/// Longest `client_id` (the config allows 128 characters).
const MAX_CLIENT_ID: usize = 128;
/// Longest `post_logout_redirect_uri` (registered ones are at most 2000 characters).
const MAX_REDIRECT_URI: usize = 2000;
/// Longest `state`, `logout_hint` and `ui_locales`.
const MAX_STATE: usize = 1024;
/// Longest confirmation CSRF token (a secret's text is 43 characters).
const MAX_CSRF: usize = 128;

/// The parameters of RP-Initiated Logout 1.0 §2 (query or form), plus `csrf_token` from
/// Latchkey's own confirmation form. Unknown parameters are ignored; empty ones are absent.
#[derive(Deserialize, Default)]
pub struct LogoutParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    logout_hint: Option<String>,
    ui_locales: Option<String>,
    csrf_token: Option<String>,
}

impl LogoutParams {
    /// Bounds every parameter and drops empty ones.
    fn checked(mut self) -> ApiResult<Self> {
        let fields: [(&str, &mut Option<String>, usize); 7] = [
            ("id_token_hint", &mut self.id_token_hint, MAX_TOKEN_LEN),
            ("client_id", &mut self.client_id, MAX_CLIENT_ID),
            (
                "post_logout_redirect_uri",
                &mut self.post_logout_redirect_uri,
                MAX_REDIRECT_URI,
            ),
            ("state", &mut self.state, MAX_STATE),
            ("logout_hint", &mut self.logout_hint, MAX_STATE),
            ("ui_locales", &mut self.ui_locales, MAX_STATE),
            ("csrf_token", &mut self.csrf_token, MAX_CSRF),
        ];
        for (name, value, max) in fields {
            if value.as_deref().is_some_and(str::is_empty) {
                *value = None;
            }
            if value.as_deref().is_some_and(|v| v.len() > max) {
                return Err(ApiError::InvalidRequest(format!(
                    "{name} is longer than {max} bytes"
                )));
            }
        }
        Ok(self)
    }
}

/// `GET /oauth/logout`. A GET never confirms: a `csrf_token` in the query is ignored.
pub async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(mut params): Query<LogoutParams>,
) -> ApiResult<Response> {
    params.csrf_token = None;
    logout(&state, &headers, params.checked()?).await
}

/// `POST /oauth/logout`: the same parameters as a form (an RP may post them), or Latchkey's
/// confirmation form with its `csrf_token`.
pub async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(params): OAuthBody<LogoutParams>,
) -> ApiResult<Response> {
    logout(&state, &headers, params.checked()?).await
}

async fn logout(
    state: &AppState,
    headers: &HeaderMap,
    params: LogoutParams,
) -> ApiResult<Response> {
    let named = match params.client_id.as_deref() {
        Some(id) => Some(
            state
                .clients
                .get(id)
                .ok_or_else(|| ApiError::InvalidRequest("unknown client_id".into()))?,
        ),
        None => None,
    };
    let hint = match params.id_token_hint.as_deref() {
        Some(token) => Some(verify_hint(state, token, params.client_id.as_deref())?),
        None => None,
    };
    // The client is the one named, or the hint's audience (the same one when both are given).
    let client: Option<&ClientConfig> = match (named, &hint) {
        (Some(client), _) => Some(client),
        (None, Some(hint)) => state.clients.get(&hint.aud),
        (None, None) => None,
    };
    // Only a URI registered for that client, compared exactly; anything else is never used.
    let redirect = params.post_logout_redirect_uri.as_deref().and_then(|uri| {
        client
            .filter(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri))
            .map(|_| uri)
    });
    let refused_redirect = params.post_logout_redirect_uri.is_some() && redirect.is_none();
    if refused_redirect {
        tracing::info!(
            target: "latchkey::security",
            client_id = client.map(|c| c.id.as_str()),
            "logout: post_logout_redirect_uri is not registered for the client; not redirecting"
        );
    }

    // The browser's session, if its cookie is valid; a bad or dead cookie is simply cleared.
    let cookie_sent = !matches!(state.cookie.read(headers), Ok(None));
    let cookie = cookie_session(state, headers).await?;
    // The session the hint's `sid` names: a live cookie session of the hint's user.
    let hinted = match &hint {
        Some(hint) => hinted_session(state, hint).await?,
        None => None,
    };
    let hint_is_for_cookie_user = match (&cookie, &hint) {
        (Some((session, _)), Some(hint)) => session.user_id.to_string() == hint.sub,
        _ => false,
    };
    let confirmed = match (&params.csrf_token, &cookie) {
        (Some(presented), Some((session, _))) => {
            check_origin(state, headers)?;
            check_confirmation(presented, session)?;
            true
        }
        _ => false,
    };
    if let Some((_, secret)) = &cookie
        && !hint_is_for_cookie_user
        && !confirmed
    {
        // Could be forged cross-site (a link, an image): ask the user first.
        return Ok(confirmation_page(&params, client, redirect, secret));
    }

    let mut ended: Vec<SessionId> = Vec::new();
    for id in cookie
        .iter()
        .map(|(session, _)| session.id)
        .chain(hinted.map(|s| s.id))
    {
        if !ended.contains(&id) {
            state.revoke_session(id, RevokeReason::Logout).await?;
            ended.push(id);
        }
    }
    if !ended.is_empty() {
        let sids: Vec<String> = ended.iter().map(ToString::to_string).collect();
        tracing::info!(
            sids = ?sids,
            client_id = client.map(|c| c.id.as_str()),
            "rp-initiated logout"
        );
    }

    let mut response = match redirect {
        Some(uri) => redirect_to(uri, params.state.as_deref())?,
        None => logged_out_page(refused_redirect),
    };
    if cookie_sent {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, state.cookie.clear());
    }
    Ok(response)
}

/// Verifies an `id_token_hint`: signed by one of our keys (any that may still verify, so
/// retired ones stop working), our `iss`, expired accepted, `aud` a configured client (and
/// `client_id`'s, when given).
fn verify_hint(state: &AppState, token: &str, client_id: Option<&str>) -> ApiResult<IdTokenClaims> {
    let validation = IdTokenValidation {
        issuer: state.issuer.clone(),
        client_id: client_id.map(str::to_string),
        nonce: None,
        access_token: None,
        leeway_secs: OWN_LEEWAY_SECS,
        now: state.clock.now().unix_timestamp(),
        allow_expired: true,
    };
    let claims = state
        .keyring()
        .verify_id_token(token, &validation)
        .map_err(|e| {
            ApiError::InvalidRequest(match e {
                VerifyError::WrongAudience | VerifyError::MissingClaim("azp") => {
                    "id_token_hint was not issued to client_id".into()
                }
                other => format!("id_token_hint is not valid: {other}"),
            })
        })?;
    if !state.clients.contains_key(&claims.aud) {
        return Err(ApiError::InvalidRequest(
            "id_token_hint was issued to a client that is not configured".into(),
        ));
    }
    Ok(claims)
}

/// The live cookie session of the request and its secret, or None (no cookie, a malformed
/// one, or a session that has ended). A store failure is an error (503), never "logged out".
async fn cookie_session(
    state: &AppState,
    headers: &HeaderMap,
) -> ApiResult<Option<(Session, Secret)>> {
    let Ok(Some(secret)) = state.cookie.read(headers) else {
        return Ok(None);
    };
    match authenticate_cookie(state, &secret).await {
        Ok(session) => Ok(Some((session, secret))),
        Err(ApiError::Unauthorized(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// The cookie session a hint's `sid` names, if it is live and the hint's user's.
async fn hinted_session(state: &AppState, hint: &IdTokenClaims) -> ApiResult<Option<Session>> {
    let Some(sid) = SessionId::parse(&hint.sid) else {
        return Ok(None);
    };
    let now = state.clock.now();
    Ok(state.store.session(sid).await?.filter(|s| {
        s.kind == SessionKind::Cookie && s.is_live(now) && s.user_id.to_string() == hint.sub
    }))
}

/// The confirmation form's CSRF token, compared in constant time against the session's hash.
fn check_confirmation(presented: &str, session: &Session) -> ApiResult<()> {
    let matches = match (Secret::parse(presented), session.csrf_hash) {
        (Some(presented), Some(expected)) => {
            bool::from(presented.hash().as_bytes().ct_eq(expected.as_bytes()))
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(ApiError::CsrfFailed("the CSRF token is invalid"))
    }
}

/// 302 to a registered URI, with `state` appended when sent.
fn redirect_to(uri: &str, state: Option<&str>) -> ApiResult<Response> {
    // A registered URI has no spaces or controls, but may have non-ASCII text: percent-encode
    // it (as a browser would), so the header is always valid.
    let mut location = String::with_capacity(uri.len());
    for c in uri.chars() {
        if c.is_ascii() {
            location.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                location.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if let Some(value) = state {
        let pair = serde_urlencoded::to_string([("state", value)])
            .map_err(|e| ApiError::Internal(format!("encoding state: {e}")))?;
        location.push(if uri.contains('?') { '&' } else { '?' });
        location.push_str(&pair);
    }
    let location = HeaderValue::from_str(&location)
        .map_err(|_| ApiError::Internal("post_logout_redirect_uri is not a header value".into()))?;
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

fn logged_out_page(refused_redirect: bool) -> Response {
    let note = if refused_redirect {
        "\n<p>The address the app asked to return to is not registered for it, so you stay here.</p>"
    } else {
        ""
    };
    let body = format!(
        "{HEAD}<title>Logged out</title>\n</head>\n<body>\n<main>\n<h1>You are logged out</h1>\n\
         <p>Your Latchkey session has ended.</p>{note}\n</main>\n</body>\n</html>\n"
    );
    html_page(body, CONTENT_SECURITY_POLICY)
}

/// "Log out?" with a POST form back to `/oauth/logout` that carries the session's CSRF token
/// and the request's parameters.
fn confirmation_page(
    params: &LogoutParams,
    client: Option<&ClientConfig>,
    redirect: Option<&str>,
    secret: &Secret,
) -> Response {
    let mut hidden = String::new();
    let csrf = csrf_token_for(secret).to_text();
    for (name, value) in [
        ("csrf_token", Some(csrf.as_str())),
        ("id_token_hint", params.id_token_hint.as_deref()),
        ("client_id", params.client_id.as_deref()),
        (
            "post_logout_redirect_uri",
            params.post_logout_redirect_uri.as_deref(),
        ),
        ("state", params.state.as_deref()),
    ] {
        if let Some(value) = value {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape_html(value)
            ));
        }
    }
    let asked_by = client
        .map(|c| {
            format!(
                "<p>{} asks you to log out.</p>\n",
                escape_html(c.display_name())
            )
        })
        .unwrap_or_default();
    let body = format!(
        "{HEAD}<title>Log out?</title>\n</head>\n<body>\n<main>\n<h1>Log out of Latchkey?</h1>\n\
         {asked_by}<form method=\"post\" action=\"/oauth/logout\">\n{hidden}\
         <button type=\"submit\">Log out</button>\n</form>\n<p><a href=\"/account\">Stay logged in</a></p>\n\
         </main>\n</body>\n</html>\n"
    );
    // Browsers apply `form-action` to the redirect that follows the form post too.
    let csp = match redirect.and_then(form_action_source) {
        Some(source) => CONTENT_SECURITY_POLICY.replace(
            "form-action 'self'",
            &format!("form-action 'self' {source}"),
        ),
        None => CONTENT_SECURITY_POLICY.to_string(),
    };
    html_page(body, &csp)
}

/// The CSP source that allows a redirect to `uri`: its origin, or its private-use scheme.
fn form_action_source(uri: &str) -> Option<String> {
    if let Some(origin) = origin_of(uri) {
        return Some(origin);
    }
    let (scheme, _) = uri.split_once(':')?;
    scheme
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c))
        .then(|| format!("{scheme}:"))
}

const HEAD: &str = "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
     <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
     <link rel=\"stylesheet\" href=\"/assets/latchkey.css\">\n";

/// An HTML page with the headers of the hosted pages (strict CSP, no framing, no caching).
fn html_page(body: String, csp: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(csp).unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Text for an HTML attribute or element.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn form_action_sources() {
        assert_eq!(
            form_action_source("https://App.example.com/bye?x=1").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            form_action_source("com.example.app:/logout").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(form_action_source("bad scheme:/x"), None);
    }

    #[test]
    fn redirects_are_always_valid_headers() {
        let r = redirect_to("https://app.example.com/zürich", Some("a b&c")).expect("redirect");
        assert_eq!(
            r.headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some("https://app.example.com/z%C3%BCrich?state=a+b%26c")
        );
    }
}
