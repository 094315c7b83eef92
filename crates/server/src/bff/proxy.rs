//! Forwarding one request: authenticate the cookie, check CSRF, attach the route's token,
//! clean the headers both ways, stream the bodies, and map upstream failures to 502/504.
use super::Bff;
use super::routes::Route;
use crate::caller::check_csrf;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, COOKIE, EXPECT, FORWARDED, HOST,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    VIA,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction; the names a
/// `Connection` header lists go too.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Request headers that carry Latchkey credentials, client-asserted identity or routing
/// facts only the proxy may state. `x-forwarded-*` and `x-latchkey-*` go by prefix.
///
/// Besides the standard ones, this strips the headers that common frameworks, servers and
/// auth proxies take on trust: a browser sending them could otherwise steer an upstream past
/// the proxy's checks (another path, another method, another client address, another user).
const STRIPPED: [HeaderName; 27] = [
    HOST,
    AUTHORIZATION,
    FORWARDED,
    EXPECT,
    VIA,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static(crate::caller::CSRF_HEADER),
    // Path and method rewrites (IIS, Symfony, Laravel, Express method-override, ...).
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    // Client addresses stated by CDNs and load balancers.
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("x-originating-ip"),
    // Identities asserted by auth proxies (Apache, oauth2-proxy, Authelia, ...).
    HeaderName::from_static("remote-user"),
    HeaderName::from_static("x-remote-user"),
    HeaderName::from_static("x-auth-request-user"),
    HeaderName::from_static("x-auth-request-email"),
    HeaderName::from_static("x-auth-request-preferred-username"),
    HeaderName::from_static("x-user"),
    HeaderName::from_static("x-email"),
];
const STRIPPED_PREFIXES: [&str; 2] = ["x-forwarded-", "x-latchkey-"];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Forwards `request` (already matched to `route` and checked) to `uri` on the upstream.
pub(super) async fn forward(
    state: &AppState,
    route: &Route,
    uri: Uri,
    request: Request,
) -> Result<Response, ApiError> {
    let bff: &Bff = &state.bff;
    if matches!(*request.method(), Method::CONNECT | Method::TRACE) {
        return Err(ApiError::MethodNotAllowed);
    }
    let secret = match state.cookie.read(request.headers()) {
        Ok(Some(secret)) => secret,
        Ok(None) if request.headers().contains_key(AUTHORIZATION) => {
            return Err(ApiError::Unauthorized(
                "BFF routes are opened by the session cookie; an Authorization header is not accepted",
            ));
        }
        Ok(None) => return Err(ApiError::Unauthorized("authentication is required")),
        Err(_) => return Err(ApiError::Unauthorized("the session cookie is invalid")),
    };
    // A store lookup on every request (unless `bff.session_cache` allows a short reuse): a
    // revoked or timed-out session stops here at once.
    let session = bff.sessions.authenticate(state, &secret).await?;
    if !is_safe(request.method()) {
        check_csrf(state, request.headers(), &session)?;
    }
    // A declared size over the limit is refused before anything is sent; an undeclared one
    // (chunked) is counted as it streams (`ForwardBody`).
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > bff.max_body) {
        return Err(ApiError::ProxyBodyTooLarge(bff.max_body));
    }
    let minted = bff
        .cache
        .get(
            state,
            &session,
            route.profile,
            &route.audience,
            &route.scope,
        )
        .await?;

    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let (parts, body) = request.into_parts();
    let inbound_version = parts.version;
    let mut headers = parts.headers;
    clean_request_headers(&mut headers, state.cookie.name, &bff.strip_headers);
    headers.insert(AUTHORIZATION, minted.header.clone());
    if let Some(ip) = peer
        && let Ok(value) = HeaderValue::from_str(&ip.to_string())
    {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, bff.forwarded_proto.clone());
    headers.insert(X_FORWARDED_HOST, bff.forwarded_host.clone());
    if let Ok(value) = HeaderValue::from_str(route.prefix.trim_end_matches('/')) {
        headers.insert(X_FORWARDED_PREFIX, value);
    }

    let (body_done, body_sent) = oneshot::channel();
    let outcome = Arc::new(BodyOutcome::default());
    let body = ForwardBody::new(
        body,
        body_done,
        bff.max_body,
        bff.request_idle,
        outcome.clone(),
    );
    let mut upstream = hyper::Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = headers;

    // The timeout runs from the end of the request body: a large upload is not "slow".
    let deadline = async {
        let _ = body_sent.await;
        tokio::time::sleep(bff.timeout).await;
    };
    let response = tokio::select! {
        response = bff.client.request(upstream) => match response {
            Ok(response) => response,
            // The browser's body broke the rules: say so, not "bad gateway".
            Err(_) if outcome.too_large.load(Ordering::SeqCst) => {
                return Err(ApiError::ProxyBodyTooLarge(bff.max_body));
            }
            Err(_) if outcome.stalled.load(Ordering::SeqCst) => {
                return Err(ApiError::RequestTimeout(
                    "the request body stalled past bff.request_idle_timeout",
                ));
            }
            Err(e) => return Err(upstream_error(route, &e)),
        },
        () = deadline => {
            tracing::warn!(upstream = %route.authority, prefix = %route.prefix, "BFF upstream timed out");
            return Err(ApiError::GatewayTimeout("the upstream did not answer in time"));
        }
    };

    let (mut parts, body) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ApiError::BadGateway(
            "the upstream switched protocols; the BFF proxies plain HTTP only",
        ));
    }
    clean_response_headers(&mut parts.headers, state.cookie.name, &minted.token);
    parts.version = inbound_version;
    let body = IdleBody {
        inner: body,
        idle: bff.response_idle,
        timer: None,
        prefix: route.prefix.clone(),
    };
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// 504 for a connect timeout, 502 for everything else (refused, reset, bad response, TLS).
fn upstream_error(route: &Route, error: &hyper_util::client::legacy::Error) -> ApiError {
    let mut chain = error.to_string();
    let mut timed_out = false;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
        }
        source = cause.source();
    }
    tracing::warn!(upstream = %route.authority, prefix = %route.prefix, error = %chain, "BFF upstream failed");
    if timed_out {
        ApiError::GatewayTimeout("the upstream could not be reached in time")
    } else {
        ApiError::BadGateway("the upstream could not be reached or gave no valid answer")
    }
}

/// Removes the hop-by-hop headers and those the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// What goes upstream: no hop-by-hop headers, no Latchkey credentials (the session cookie is
/// cut out of `Cookie`, other cookies stay), no client-supplied forwarding or identity
/// headers, none of the configured `bff.strip_headers`.
pub fn clean_request_headers(headers: &mut HeaderMap, cookie_name: &str, extra: &[HeaderName]) {
    remove_hop_by_hop(headers);
    for name in STRIPPED.iter().chain(extra) {
        headers.remove(name);
    }
    let prefixed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| STRIPPED_PREFIXES.iter().any(|p| n.as_str().starts_with(p)))
        .cloned()
        .collect();
    for name in prefixed {
        headers.remove(name);
    }
    if headers.contains_key(COOKIE) {
        let kept: Vec<String> = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty() && cookie_pair_name(pair) != cookie_name)
            .map(str::to_string)
            .collect();
        headers.remove(COOKIE);
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
        {
            headers.insert(COOKIE, value);
        }
    }
}

fn cookie_pair_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name).trim()
}

/// What goes back to the browser: no hop-by-hop headers, no `Set-Cookie` for Latchkey's
/// session cookie (an upstream cannot replace or clear it), no CORS headers (BFF routes are
/// same-origin only: an upstream's CORS policy must not open cookie-authenticated answers to
/// other origins), no header value that contains the token, and `Cache-Control: no-store` unless the upstream chose a policy (answers behind a
/// session are per user; Latchkey's own default).
pub fn clean_response_headers(headers: &mut HeaderMap, cookie_name: &str, token: &str) {
    remove_hop_by_hop(headers);
    let token = token.as_bytes();
    let old = std::mem::take(headers);
    let mut current: Option<HeaderName> = None;
    for (name, value) in old {
        if let Some(name) = name {
            current = Some(name);
        }
        let Some(name) = current.as_ref() else {
            continue;
        };
        if name.as_str().starts_with("access-control-") {
            continue;
        }
        if *name == SET_COOKIE
            && value.to_str().map_or(true, |v| {
                cookie_pair_name(v.split(';').next().unwrap_or("")) == cookie_name
            })
        {
            continue;
        }
        if !token.is_empty() && value.as_bytes().windows(token.len()).any(|w| w == token) {
            tracing::warn!(header = %name, "BFF upstream echoed the access token in a response header; dropped");
            continue;
        }
        headers.append(name.clone(), value);
    }
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// What became of the browser's body on its way upstream (read after a failed request).
#[derive(Default)]
pub struct BodyOutcome {
    /// It grew past `bff.max_body`.
    too_large: AtomicBool,
    /// It paused past `bff.request_idle_timeout`.
    stalled: AtomicBool,
}

/// The browser's request body on its way upstream, frame by frame (never collected), which
/// says when it has been sent completely: the response timeout starts then. It ends in an
/// error (so the upstream request is abandoned) once more than `limit` bytes came, or when
/// no piece arrived for `idle`.
pub struct ForwardBody {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
    limit: u64,
    sent: u64,
    idle: Duration,
    /// Started at the first poll, pushed back by every piece.
    timer: Option<Pin<Box<Sleep>>>,
    outcome: Arc<BodyOutcome>,
}

impl ForwardBody {
    fn new(
        inner: Body,
        done: oneshot::Sender<()>,
        limit: u64,
        idle: Duration,
        outcome: Arc<BodyOutcome>,
    ) -> Self {
        let mut body = Self {
            inner,
            done: Some(done),
            limit,
            sent: 0,
            idle,
            timer: None,
            outcome,
        };
        if hyper::body::Body::is_end_stream(&body.inner) {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }

    fn fail(&mut self, flag: fn(&BodyOutcome) -> &AtomicBool, why: &'static str) -> axum::Error {
        flag(&self.outcome).store(true, Ordering::SeqCst);
        self.finish();
        axum::Error::new(why)
    }
}

impl hyper::body::Body for ForwardBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let idle = this.idle;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    let error = this.fail(|o| &o.stalled, "the request body stalled");
                    return Poll::Ready(Some(Err(error)));
                }
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + idle);
                }
                if let Some(data) = frame.data_ref() {
                    this.sent = this.sent.saturating_add(data.len() as u64);
                    if this.sent > this.limit {
                        let error = this.fail(|o| &o.too_large, "the request body is too large");
                        return Poll::Ready(Some(Err(error)));
                    }
                }
            }
            Poll::Ready(_) => {}
        }
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || hyper::body::Body::is_end_stream(&this.inner)
        {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream's response body on its way to the browser, cut off (an error, so the
/// browser sees an incomplete response, never a truncated "complete" one) when no piece
/// arrived for `idle`.
struct IdleBody<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    prefix: String,
}

impl<B> hyper::body::Body for IdleBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let idle = this.idle;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    tracing::warn!(prefix = %this.prefix, "BFF upstream response body stalled; cut off");
                    return Poll::Ready(Some(Err(axum::Error::new(
                        "the upstream response body stalled",
                    ))));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(axum::Error::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn request_headers_lose_credentials_and_hop_by_hop() {
        let mut h = map(&[
            ("host", "evil.example"),
            ("cookie", "a=1; __Host-latchkey=secret; b=2"),
            ("cookie", "c=3"),
            ("authorization", "Bearer stolen"),
            ("x-csrf-token", "csrf"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-latchkey-user", "admin"),
            ("x-internal-role", "admin"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("true-client-ip", "127.0.0.1"),
            ("x-client-ip", "127.0.0.1"),
            ("cf-connecting-ip", "127.0.0.1"),
            ("remote-user", "admin"),
            ("x-remote-user", "admin"),
            ("x-auth-request-user", "admin"),
            ("x-user", "admin"),
            ("via", "1.1 trusted-proxy"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
        ]);
        clean_request_headers(
            &mut h,
            "__Host-latchkey",
            &[HeaderName::from_static("x-internal-role")],
        );
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "content-type", "cookie"]);
        assert_eq!(h.get("cookie").expect("cookie"), "a=1; b=2; c=3");

        let mut h = map(&[("cookie", "__Host-latchkey=secret")]);
        clean_request_headers(&mut h, "__Host-latchkey", &[]);
        assert!(h.get("cookie").is_none());
    }

    #[test]
    fn response_headers_lose_our_cookie_the_token_and_hop_by_hop() {
        let mut h = map(&[
            ("set-cookie", "__Host-latchkey=; Max-Age=0; Path=/"),
            ("set-cookie", "theirs=1; Path=/"),
            ("x-echo", "Bearer the.token.value"),
            ("x-other", "fine"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("access-control-allow-origin", "https://evil.example"),
            ("access-control-allow-credentials", "true"),
        ]);
        clean_response_headers(&mut h, "__Host-latchkey", "the.token.value");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["theirs=1; Path=/"]);
        assert!(h.get("x-echo").is_none());
        assert!(h.get("x-hop").is_none() && h.get("transfer-encoding").is_none());
        assert!(h.get("access-control-allow-origin").is_none());
        assert!(h.get("access-control-allow-credentials").is_none());
        assert_eq!(h.get("x-other").expect("kept"), "fine");
        assert_eq!(h.get("cache-control").expect("default"), "no-store");

        let mut h = map(&[("cache-control", "public, max-age=60")]);
        clean_response_headers(&mut h, "__Host-latchkey", "t");
        assert_eq!(h.get("cache-control").expect("kept"), "public, max-age=60");
    }
}
