//! The accept loop: HTTP/1.1 connections served by hyper, with the `[server]` limits.
//!
//! `axum::serve` bounds nothing: a client could hold a connection open by sending its header
//! one byte a second, by sending nothing at all, or by announcing a body it never sends, and
//! could open as many connections as the process has file descriptors. Here:
//! - a connection over `server.max_connections`, or over `server.max_connections_per_ip` for
//!   its address (per /64 for IPv6; `trusted_proxies` exempt), is closed at once;
//! - a request's header block must be complete within `server.header_read_timeout` of its
//!   first byte (of the connection's start for its first request), else the connection is
//!   closed;
//! - a connection with no request in progress is closed after `server.keep_alive_idle`;
//! - a request body must arrive within `server.body_read_timeout` of its headers, else 408
//!   ([`body_timeout_layer`], on the API routes only: the BFF proxy streams bodies itself);
//! - header blocks over [`MAX_HEAD_BYTES`] are refused by hyper with 431.
//!
//! hyper's own `header_read_timeout` is not used: it starts as soon as a connection is idle,
//! so it would also cut every idle keep-alive connection after the (short) header timeout,
//! which must instead outlive the load balancer's idle timeout (docs/operations.md).
use crate::metrics;
use crate::net::{TrustedProxies, throttle_key};
use crate::state::AppState;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest request head (request line and headers) hyper buffers; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` with the limits of `state.config.server` until `shutdown`
/// completes; then stops accepting, lets in-flight requests finish (idle connections close at
/// once) and returns when every connection is closed or `shutdown_grace` has passed.
pub async fn run(
    listener: TcpListener,
    router: Router,
    state: &AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let settings = Arc::new(Settings::new(state));
    let caps = Arc::new(Caps::new(state));
    let grace = state.config.shutdown_grace.0;
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our own deadlines replace hyper's header timeout (see the module documentation).
    http.max_buf_size(MAX_HEAD_BYTES).header_read_timeout(None);
    let http = Arc::new(http);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match caps.acquire(peer) {
            Ok(slot) => slot,
            Err(reason) => {
                metrics::connection_refused(reason);
                if caps.should_warn(Instant::now()) {
                    let hint = if reason == "max_connections_per_ip" {
                        " (a reverse proxy belongs in trusted_proxies)"
                    } else {
                        ""
                    };
                    tracing::warn!(
                        %peer,
                        "connection refused: server.{reason} reached{hint}; further refusals are counted in latchkey_connections_refused_total, not logged, for 10 s"
                    );
                }
                drop(stream);
                continue;
            }
        };
        tracing::trace!(%peer, "connection accepted");
        let connection = Connection {
            stream,
            peer,
            router: router.clone(),
            http: http.clone(),
            settings: settings.clone(),
            stop: stop_rx.clone(),
            _open: open_rx.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.serve());
    }
    drop(listener);
    drop(open_rx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, open_tx.closed()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time; stopping"
        );
    }
    Ok(())
}

struct Settings {
    header_read_timeout: Duration,
    keep_alive_idle: Duration,
}

impl Settings {
    fn new(state: &AppState) -> Self {
        let s = &state.config.server;
        Self {
            header_read_timeout: s.header_read_timeout.0,
            keep_alive_idle: s.keep_alive_idle.0,
        }
    }
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    settings: Arc<Settings>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Held while the connection is open: `run` waits for every copy to be dropped.
    _open: tokio::sync::watch::Receiver<()>,
    _slot: Slot,
}

impl Connection {
    async fn serve(mut self) {
        let activity = Arc::new(Activity::new(Instant::now()));
        let io = TokioIo::new(Watched {
            inner: self.stream,
            activity: activity.clone(),
        });
        let (router, peer, requests) = (self.router, self.peer, activity.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = requests.begin();
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = match router.oneshot(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
        let connection = self.http.serve_connection(io, service);
        tokio::pin!(connection);
        let mut stopping = false;
        loop {
            // The next deadline, recomputed whenever the connection's state changes.
            let deadline = match activity.due(&self.settings) {
                Some((reason, at)) if Instant::now() >= at => {
                    metrics::connection_timed_out(reason);
                    tracing::debug!(peer = %self.peer, reason, "connection closed: timeout");
                    // Dropping the connection closes the socket.
                    break;
                }
                due => due.map(|(_, at)| at),
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, peer = %self.peer, "connection ended with an error");
                    }
                    break;
                }
                () = sleep_until_some(deadline) => {}
                () = activity.changed.notified() => {}
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    // Idle connections close now; a request in progress finishes first.
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, for its deadlines.
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when a change may move the deadline (a request ends, a head begins).
    changed: tokio::sync::Notify,
}

struct ActivityState {
    accepted: Instant,
    in_flight: usize,
    requests: u64,
    idle_since: Instant,
    /// The first byte read while no request was in progress: a request head has begun.
    head_started: Option<Instant>,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(ActivityState {
                accepted: now,
                in_flight: 0,
                requests: 0,
                idle_since: now,
                head_started: None,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bytes_read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// A request head has been read; the request is in progress until the returned guard
    /// (kept by the response body) is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = self.lock();
        s.in_flight += 1;
        s.requests += 1;
        s.head_started = None;
        InFlight(self.clone())
    }

    /// Why and when the connection is to be closed next; none while a request is in
    /// progress.
    fn due(&self, settings: &Settings) -> Option<(&'static str, Instant)> {
        let s = self.lock();
        if s.in_flight > 0 {
            return None;
        }
        Some(if s.requests == 0 {
            // The first request's head is due within the timeout of the connection's start.
            ("header_read", s.accepted + settings.header_read_timeout)
        } else if let Some(started) = s.head_started {
            ("header_read", started + settings.header_read_timeout)
        } else {
            ("keep_alive_idle", s.idle_since + settings.keep_alive_idle)
        })
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.idle_since = Instant::now();
        s.head_started = None;
        drop(s);
        self.0.changed.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// The socket, noting when bytes arrive.
    struct Watched {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in progress until it is done.
    struct Tracked {
        #[pin]
        inner: Body,
        _in_flight: InFlight,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections, over all and per client address.
struct Caps {
    max: usize,
    max_per_ip: usize,
    trusted: TrustedProxies,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<String, usize>>,
    /// When a refusal was last logged: at most one warning per [`WARN_EVERY`].
    last_warning: Mutex<Option<Instant>>,
}

const WARN_EVERY: Duration = Duration::from_secs(10);

/// One open connection's place under the caps, given back when dropped.
struct Slot {
    caps: Arc<Caps>,
    key: Option<String>,
}

impl Caps {
    fn new(state: &AppState) -> Self {
        Self {
            max: state.config.server.max_connections,
            max_per_ip: state.config.server.max_connections_per_ip,
            trusted: state.trusted_proxies.clone(),
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            last_warning: Mutex::new(None),
        }
    }

    fn should_warn(&self, now: Instant) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now < t + WARN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn acquire(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, &'static str> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err("max_connections");
        }
        let mut slot = Slot {
            caps: self.clone(),
            key: None,
        };
        if self.max_per_ip > 0 && !self.trusted.contains(peer.ip()) {
            let key = throttle_key(peer.ip());
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(key.clone()).or_insert(0);
            if *count >= self.max_per_ip {
                drop(per_ip);
                drop(slot); // gives the global place back
                return Err("max_connections_per_ip");
            }
            *count += 1;
            slot.key = Some(key);
        }
        metrics::connections_open(self.open.load(Ordering::SeqCst));
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut per_ip = self.caps.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_ip.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&key);
                }
            }
        }
        let open = self
            .caps
            .open
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        metrics::connections_open(open);
    }
}

/// The body-read deadline of `server.body_read_timeout` for the routes it is layered on: a
/// body still incomplete then fails to read, which the body extractors answer with 408.
pub fn body_timeout_layer(
    timeout: Duration,
) -> tower::util::MapRequestLayer<impl Fn(Request) -> Request + Clone> {
    tower::util::MapRequestLayer::new(move |request: Request| {
        let deadline = Instant::now() + timeout;
        request.map(|body| {
            Body::new(Deadline {
                inner: body,
                deadline,
                sleep: None,
            })
        })
    })
}

/// The error a request body fails with when its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// Whether `error` (or its cause, at any depth) is a [`BodyTimedOut`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}

pin_project_lite::pin_project! {
    struct Deadline {
        #[pin]
        inner: Body,
        deadline: Instant,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BoxError::from))),
            Poll::Pending => {
                let deadline = *this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
