//! /metrics in Prometheus text format (checked with a real parser), and the logs of a full
//! flow scanned for every secret the flow handled.
use crate::harness::*;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

fn counter(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_and_count_what_matters() {
    let mut config = test_config();
    config.rate_limit.login_per_account = latchkey_server::config::Rate {
        per: Some((2, std::time::Duration::from_secs(60))),
    };
    let app = TestApp::with_config(config).await;
    let t = app.login("metrics-user").await;
    let next = app.rotate(&t.refresh).await;
    app.refresh(&t.refresh).await; // reuse
    app.password_grant("metrics-user", "wrong password", "spa")
        .await;
    app.password_grant("metrics-user", "wrong password", "spa")
        .await;
    app.password_grant("metrics-user", "wrong password", "spa")
        .await; // throttled: only failures count
    drop(next);

    let r = app.get("/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = r.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition format");
    assert!(
        counter(
            &scrape,
            "latchkey_http_requests_total",
            &[
                ("route", "/oauth/token"),
                ("method", "POST"),
                ("status", "200")
            ]
        ) >= 2.0
    );
    assert!(
        counter(
            &scrape,
            "latchkey_logins_total",
            &[("mode", "token"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(
        counter(
            &scrape,
            "latchkey_logins_total",
            &[("mode", "token"), ("result", "failed")]
        ) >= 1.0
    );
    assert!(counter(&scrape, "latchkey_refresh_rotations_total", &[]) >= 1.0);
    assert!(counter(&scrape, "latchkey_refresh_reuse_detected_total", &[]) >= 1.0);
    assert!(
        counter(
            &scrape,
            "latchkey_revocations_total",
            &[("reason", "reuse_detected")]
        ) >= 1.0
    );
    assert!(
        counter(
            &scrape,
            "latchkey_rate_limited_total",
            &[("throttle", "login_per_account")]
        ) >= 1.0
    );
    let histograms: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| matches!(s.value, prometheus_parse::Value::Histogram(_)))
        .map(|s| s.metric.as_str())
        .collect();
    assert!(
        histograms.contains(&"latchkey_http_request_duration_seconds"),
        "{histograms:?}"
    );
    assert!(
        histograms.contains(&"latchkey_store_operation_duration_seconds"),
        "{histograms:?}"
    );
    // Routes are labelled by pattern, never by raw path (bounded cardinality, no ids).
    assert!(!text.contains(&t.refresh) && !text.contains("metrics-user"));
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything logged so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Every test of this binary logs at TRACE into one buffer through a global subscriber. (A
/// thread-local one misses events whose callsites other test threads cached as disabled.)
pub fn captured_logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        captured
    })
}

/// Every endpoint that handles a secret, at TRACE level, then a scan of everything logged by
/// every test in this binary so far.
#[tokio::test]
async fn no_secret_is_ever_logged() {
    let captured = captured_logs().clone();

    let admin = "admin-token-for-the-log-scan-0001";
    let mut config = test_config();
    config.admin_token = Some(latchkey_server::config::Redacted(admin.into()));
    config.refresh.reuse_interval = latchkey_server::config::Ttl(std::time::Duration::from_secs(5));
    let app = TestApp::with_config(config).await;
    let mut secrets: Vec<String> = vec![PASSWORD.into(), BACKEND_SECRET.into(), admin.into()];

    let user = app.sign_up("logscan").await;
    let t1 = app.login_again("logscan").await;
    let t2 = app.rotate(&t1.refresh).await;
    let replay = app.rotate(&t1.refresh).await; // grace window
    let t3 = app.rotate(&t2.refresh).await;
    app.refresh(&t1.refresh).await; // reuse
    let b = app.browser_login("logscan").await;
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await;
    app.with_cookie_only(&b, "POST", "/v1/sessions/revoke-others", None)
        .await; // CSRF refusal
    app.call(
        "GET",
        "/v1/session",
        &[("cookie", &format!("{}x", b.cookie))],
        None,
    )
    .await; // bad cookie
    let t4 = app.login_again("logscan").await;
    app.post_form(
        "/oauth/introspect",
        &[
            ("token", &t4.access),
            ("client_id", "backend"),
            ("client_secret", BACKEND_SECRET),
        ],
    )
    .await;
    app.post_form(
        "/oauth/introspect",
        &[
            ("token", &t4.refresh),
            ("client_id", "backend"),
            ("client_secret", "wrong-backend-secret-xx"),
        ],
    )
    .await;
    app.get(
        "/v1/authorize",
        &[("authorization", &format!("Bearer {}", t4.access))],
    )
    .await;
    app.get(
        "/v1/me",
        &[("authorization", &format!("Bearer {}", t4.access))],
    )
    .await;
    app.password_grant("logscan", "a wrong password guess", "spa")
        .await;
    let new_password = "the new password for logscan";
    app.as_browser(
        &b,
        "POST",
        "/v1/password",
        Some(&json!({"current_password": PASSWORD, "new_password": new_password})),
    )
    .await;
    app.post_form(
        "/oauth/revoke",
        &[("token", &t4.refresh), ("client_id", "spa")],
    )
    .await;
    app.call(
        "POST",
        &format!("/admin/v1/users/{}/ban", user["id"].as_str().expect("id")),
        &[("authorization", &format!("Bearer {admin}"))],
        None,
    )
    .await;
    app.call(
        "POST",
        "/admin/v1/keys/rotate",
        &[("authorization", "Bearer wrong-admin-guess-0123")],
        None,
    )
    .await;
    secrets.extend([
        "a wrong password guess".into(),
        new_password.into(),
        "wrong-backend-secret-xx".into(),
        "wrong-admin-guess-0123".into(),
    ]);
    for pair in [&t1, &t2, &replay, &t3, &t4] {
        secrets.push(pair.access.clone());
        secrets.push(pair.refresh.clone());
        // The signature alone would be enough to recognise a token.
        secrets.push(
            pair.access
                .rsplit('.')
                .next()
                .expect("signature")
                .to_string(),
        );
    }
    let cookie_secret = b.cookie.split_once('=').expect("pair").1.to_string();
    secrets.extend([cookie_secret, b.csrf.clone()]);

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logs.contains("refresh token reuse detected"),
        "the scan saw no logs at all?\n{logs}"
    );
    assert!(logs.lines().count() > 20);
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret was logged: {}…",
            &secret[..secret.len().min(8)]
        );
    }
}

fn count_where(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn made_up_methods_share_one_metric_label() {
    let app = TestApp::new().await;
    let before = count_where(
        &latchkey_server::metrics::handle().render(),
        "latchkey_http_requests_total{",
        "method=\"other\"",
    );
    for i in 0..200 {
        for path in ["/healthz", "/no-such-path"] {
            let request = axum::http::Request::builder()
                .method(format!("MADEUP{i}").as_str())
                .uri(path)
                .body(axum::body::Body::empty())
                .expect("request");
            let r = app.send(request).await;
            assert!(r.status.is_client_error(), "{}", r.status);
        }
    }
    let text = latchkey_server::metrics::handle().render();
    assert!(!text.contains("MADEUP"), "a made-up method became a label");
    let after = count_where(&text, "latchkey_http_requests_total{", "method=\"other\"");
    assert!(after >= before + 400.0, "{before} -> {after}");
    // The standard methods keep their own labels.
    assert!(text.contains("method=\"GET\""));
}

#[tokio::test]
async fn with_a_metrics_token_metrics_need_it() {
    let token = "metrics-token-0123456789";
    let mut config = test_config();
    config.metrics_token = Some(latchkey_server::config::Redacted(token.into()));
    let app = TestApp::with_config(config).await;
    app.get("/metrics", &[])
        .await
        .assert_error(401, "unauthorized");
    app.get(
        "/metrics",
        &[("authorization", "Bearer metrics-token-012345678")],
    )
    .await
    .assert_error(401, "unauthorized");
    app.get("/metrics", &[("authorization", &format!("Basic {token}"))])
        .await
        .assert_error(401, "unauthorized");
    let r = app
        .get("/metrics", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("latchkey_http_requests_total"));
    // Without a token configured, /metrics is open (API.md).
    let open = TestApp::new().await;
    assert_eq!(open.get("/metrics", &[]).await.status, 200);
}

fn is_generated_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

/// A request id chosen by the client is kept only when it is 1-64 of `[A-Za-z0-9._-]`;
/// anything else is replaced by a generated one and never reaches the log. (CR, LF and other
/// control bytes cannot reach a header at all: hyper and `HeaderValue` refuse them. What a
/// header can carry, and what forged a log line in text format, is spaces, braces, quotes,
/// tabs, `=` and non-ASCII bytes.)
#[tokio::test]
async fn crafted_request_ids_never_reach_the_log() {
    let captured = captured_logs().clone();
    let app = TestApp::new().await;
    let kept = "client-req.42_Zq";
    let r = app.get("/healthz", &[("x-request-id", kept)]).await;
    assert_eq!(r.header("x-request-id"), Some(kept));

    let forged = "x}: WARN latchkey::security: user banned user_id=forged-0001 {";
    let crafted: Vec<Vec<u8>> = vec![
        forged.as_bytes().to_vec(),
        b"tab\there-forged-0002".to_vec(),
        b"quote\"forged-0003".to_vec(),
        "a".repeat(65).into_bytes(),
        b"\\x1b[31mforged-0004\\n".to_vec(),
        b"utf8-\xc3\xa9-forged-0005".to_vec(),
        b"".to_vec(),
    ];
    for id in &crafted {
        let request = axum::http::Request::builder()
            .uri("/healthz")
            .header(
                "x-request-id",
                axum::http::HeaderValue::from_bytes(id).expect("a value a header can carry"),
            )
            .body(axum::body::Body::empty())
            .expect("request");
        let r = app.send(request).await;
        let given = r.header("x-request-id").expect("an id");
        assert!(is_generated_id(given), "{given:?} for {id:?}");
    }
    // Two ids: neither is believed.
    let request = axum::http::Request::builder()
        .uri("/healthz")
        .header("x-request-id", "one-id")
        .header("x-request-id", "other-id")
        .body(axum::body::Body::empty())
        .expect("request");
    let r = app.send(request).await;
    assert!(is_generated_id(r.header("x-request-id").expect("id")));

    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains(&format!("request_id={kept}")),
        "the scan saw no request spans"
    );
    for marker in [
        "forged-000",
        "user banned user_id=forged",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        assert!(
            !logs.contains(marker),
            "a crafted request id was logged: {marker}"
        );
    }
}

/// The same over a real socket, through hyper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_request_id_over_a_socket_is_replaced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    captured_logs();
    let server = crate::socket::start(test_config()).await;
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nhost: latchkey\r\nconnection: close\r\nx-request-id: x}: WARN latchkey::security: user banned socket-forged {\r\n\r\n",
        )
        .await
        .expect("write");
    let mut seen = String::new();
    stream.read_to_string(&mut seen).await.expect("read");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let id = seen
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id");
    assert!(is_generated_id(id.trim()), "{id:?}");
    let logs = String::from_utf8_lossy(&captured_logs().0.lock().expect("lock")).into_owned();
    assert!(!logs.contains("socket-forged"));
}
