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
