//! CORS for browser apps (API.md "Browser apps"): only the endpoints an in-memory-token SPA
//! calls, only from the exact origins its client lists in `[[clients]] allowed_origins`.
//!
//! - `/oauth/token`, `/oauth/revoke`, `/oauth/userinfo`: any client's listed origin, never
//!   with credentials (these endpoints must not see cookies).
//! - `/v1/session/token`: a public client's listed origin, with credentials (it is
//!   authenticated by the session cookie; CSRF token and origin are checked by the handler).
//! - `GET /v1/session`: the same origins, with credentials, reading only: an app that may mint
//!   tokens for the user with `/v1/session/token` needs the session's CSRF token to do so. Login
//!   and logout on that path stay same-origin (their preflight allows only GET).
//!
//! An origin that is not listed gets no CORS header anywhere (its preflight is a 403 with the
//! standard body), so the browser keeps the response from the page. Which client an origin may
//! act for is checked again by the handlers ([`origin_allowed_for`]): CORS only decides what a
//! browser may read, not what the server accepts.
use crate::config::{ClientConfig, ClientKind};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// The endpoints that answer cross-origin requests, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// Token, revocation, userinfo: credentials (cookies) never allowed.
    OAuth { methods: &'static str },
    /// `/v1/session/token`: the session cookie is the credential.
    SessionToken,
    /// `GET /v1/session` for the apps that may use `/v1/session/token`.
    SessionRead,
}

impl Endpoint {
    fn with_credentials(self) -> bool {
        matches!(self, Endpoint::SessionToken | Endpoint::SessionRead)
    }
}

fn endpoint(path: &str) -> Option<Endpoint> {
    match path {
        "/oauth/token" | "/oauth/revoke" => Some(Endpoint::OAuth { methods: "POST" }),
        "/oauth/userinfo" => Some(Endpoint::OAuth {
            methods: "GET, POST",
        }),
        "/v1/session/token" => Some(Endpoint::SessionToken),
        "/v1/session" => Some(Endpoint::SessionRead),
        _ => None,
    }
}

/// Whether `origin` is listed by `client` (exact comparison, as the browser sends it).
pub fn origin_allowed_for(client: &ClientConfig, origin: &str) -> bool {
    client.allowed_origins.iter().any(|o| o == origin)
}

/// The `Origin` header as text, if present and readable.
pub fn request_origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

fn listed(state: &AppState, endpoint: Endpoint, origin: &str) -> bool {
    state.clients.values().any(|c| {
        origin_allowed_for(c, origin)
            && (!endpoint.with_credentials() || c.kind == ClientKind::Public)
    })
}

/// The middleware: answers preflights of the browser endpoints and adds the CORS headers to
/// their responses for listed origins. Every other path passes through untouched.
pub async fn browser_endpoints(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(endpoint) = endpoint(request.uri().path()) else {
        return next.run(request).await;
    };
    // Only reading the session is shared; anything else on that path stays same-origin.
    if endpoint == Endpoint::SessionRead
        && !matches!(*request.method(), Method::GET | Method::OPTIONS)
    {
        return next.run(request).await;
    }
    let origin = request_origin(request.headers())
        .filter(|o| *o != "null" && listed(&state, endpoint, o))
        .map(str::to_owned);
    let is_preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if is_preflight {
        match &origin {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => {
                ApiError::Forbidden("this origin is not in any client's allowed_origins".into())
                    .into_response()
            }
        }
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    // Responses differ by Origin: caches must key on it, listed or not.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else {
        return response;
    };
    let Ok(origin) = HeaderValue::from_str(&origin) else {
        return response;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    let (methods, allow_headers) = match endpoint {
        Endpoint::OAuth { methods } => (methods, "Authorization, Content-Type"),
        Endpoint::SessionToken | Endpoint::SessionRead => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            if endpoint == Endpoint::SessionRead {
                ("GET", "Content-Type")
            } else {
                ("POST", "Content-Type, X-CSRF-Token")
            }
        }
    };
    if is_preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(allow_headers),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
        );
    } else {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, WWW-Authenticate"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_browser_endpoints_take_part() {
        assert_eq!(
            endpoint("/oauth/token"),
            Some(Endpoint::OAuth { methods: "POST" })
        );
        assert_eq!(endpoint("/v1/session/token"), Some(Endpoint::SessionToken));
        assert_eq!(endpoint("/v1/session"), Some(Endpoint::SessionRead));
        for path in [
            "/oauth/introspect",
            "/v1/sessions",
            "/oauth/token/",
            "/admin/v1/keys/rotate",
        ] {
            assert_eq!(endpoint(path), None, "{path}");
        }
    }
}
