//! End to end in a real browser: Debian's Chromium, driven through chromedriver (WebDriver),
//! against a real server on 127.0.0.1 with SQLite. The pages `/login` and `/account` in cookie
//! mode: log in, list and revoke sessions, change the password, log out; the session cookie is
//! HttpOnly and nothing secret sits where page script could read it.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install chromium
//! chromium-driver`). Without them the test says SKIPPED and passes, unless
//! `LATCHKEY_REQUIRE_BROWSER=1` (CI), where it fails.
use crate::harness::*;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use latchkey_server::{AppState, app};
use serde_json::{Value, json};
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const COOKIE: &str = "__Host-latchkey";
/// How long any one expected change may take to show.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
const NEW_PASSWORD: &str = "a different horse, battery and staple";

/// A chromedriver process of this test; on drop (also when the test panics) it is asked to
/// quit its sessions (which closes Chromium), then killed if it has not exited.
pub(crate) struct Chromedriver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Chromedriver {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, port) = Self::spawn(&dir);
        Self { child, port, dir }
    }

    fn spawn(dir: &tempfile::TempDir) -> (Child, u16) {
        // chromedriver cannot pick its own port: take a free one and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        (child, port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until chromedriver answers, then opens a session (retried: the first attempts can
    /// race its start).
    pub(crate) async fn connect(&mut self) -> Client {
        let profile = self.dir.path().join("profile");
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let status = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let deadline = Instant::now() + WAIT;
        let mut last_error = String::from("chromedriver never answered");
        let mut respawns = 0;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                // Most likely the port was taken between our probe and its bind: another one.
                assert!(
                    respawns < 2,
                    "chromedriver exited early ({exit}); its log:\n{}",
                    self.log_tail()
                );
                respawns += 1;
                (self.child, self.port) = Self::spawn(&self.dir);
            }
            let ready = status
                .get(format!("{}/status", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                match ClientBuilder::rustls()
                    .expect("rustls connector")
                    .capabilities(capabilities.clone())
                    .connect(&self.url())
                    .await
                {
                    Ok(client) => return client,
                    Err(e) => last_error = format!("new session: {e}"),
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no WebDriver session within {WAIT:?}: {last_error}; chromedriver log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("chromedriver log (tail):\n{}", self.log_tail());
        }
        // `GET /shutdown` makes chromedriver end its sessions (closing Chromium) and exit.
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
            let _ = stream.write_all(
                b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server on a real socket, its issuer its real address (so the allowed origin is what
/// the browser sends), over a fresh SQLite file.
struct Server {
    base: String,
    _dir: tempfile::TempDir,
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("browser.db").display());
    let store = Arc::new(
        latchkey_store::SqliteStore::connect(&url)
            .await
            .expect("SQLite"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = test_config();
    config.issuer = Some(base.clone());
    let state = AppState::new(config, store, Arc::new(latchkey_core::SystemClock))
        .await
        .expect("state");
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    Server { base, _dir: dir }
}

/// Polls `probe` until it gives a value, for at most [`WAIT`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn run(browser: &Client, script: &str) -> Value {
    browser
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
}

async fn path(browser: &Client) -> String {
    browser
        .current_url()
        .await
        .expect("current URL")
        .path()
        .to_string()
}

async fn wait_for_path(browser: &Client, want: &str) {
    eventually(&format!("the browser to be on {want}"), || async {
        (path(browser).await == want).then_some(())
    })
    .await;
}

/// `(session id, is current)` of each row of the sessions table.
async fn session_rows(browser: &Client) -> Vec<(String, bool)> {
    let rows = run(
        browser,
        "return Array.from(document.querySelectorAll('#sessions tr'))
           .map(tr => [tr.dataset.sessionId || '', tr.classList.contains('current')]);",
    )
    .await;
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_str().expect("id").to_string(),
                r[1].as_bool().expect("flag"),
            )
        })
        .collect()
}

async fn wait_for_rows(browser: &Client, n: usize) -> Vec<(String, bool)> {
    eventually(&format!("{n} rows in #sessions"), || async {
        let rows = session_rows(browser).await;
        (rows.len() == n).then_some(rows)
    })
    .await
}

async fn wait_for_message(browser: &Client, want: &str) {
    eventually(&format!("the message {want:?}"), || async {
        let text = browser
            .find(Locator::Id("message"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (text == want).then_some(())
    })
    .await;
}

pub(crate) async fn fill(browser: &Client, id: &str, text: &str) {
    let field = browser.find(Locator::Id(id)).await.expect(id);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

pub(crate) async fn click(browser: &Client, locator: Locator<'_>) {
    browser
        .find(locator)
        .await
        .unwrap_or_else(|e| panic!("{locator:?}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {locator:?}: {e}"));
}

/// Sets the session cookie in the browser (for the current page's site), as the server would.
async fn put_cookie(browser: &Client, value: &str) {
    let mut cookie = fantoccini::cookies::Cookie::parse(format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax"
    ))
    .expect("cookie");
    // fantoccini sends an absent domain as null, which chromedriver refuses.
    cookie.set_domain("127.0.0.1");
    browser.add_cookie(cookie).await.expect("add the cookie");
    let stored = browser
        .get_named_cookie(COOKIE)
        .await
        .expect("cookie stored");
    assert_eq!(stored.value(), value);
}

/// A cookie session made outside the browser ("another device"): `(sid, Cookie header)`.
async fn cookie_login(http: &reqwest::Client, base: &str, password: &str) -> (String, String) {
    let r = http
        .post(format!("{base}/v1/session"))
        .header("user-agent", "other-device/1.0")
        .json(&json!({"username": "browser-user", "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 200);
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("Set-Cookie")
        .to_string();
    let pair = set_cookie
        .split(';')
        .next()
        .expect("cookie pair")
        .to_string();
    assert!(pair.starts_with(&format!("{COOKIE}=")), "{set_cookie}");
    let body: Value = r.json().await.expect("JSON");
    let sid = body["session"]["id"].as_str().expect("sid").to_string();
    (sid, pair)
}

async fn session_status(http: &reqwest::Client, base: &str, cookie: &str) -> u16 {
    http.get(format!("{base}/v1/session"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET /v1/session")
        .status()
        .as_u16()
}

/// Whether the browser test can run here; `false` means skip.
pub(crate) fn browser_available() -> bool {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if present {
        return true;
    }
    assert!(
        std::env::var("LATCHKEY_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "LATCHKEY_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing \
         (apt-get install chromium chromium-driver)"
    );
    eprintln!(
        "SKIPPED: browser test needs chromium and chromium-driver \
         (apt-get install chromium chromium-driver)"
    );
    false
}

/// The pages' own promises, checked without a browser: a strict CSP on every page, and no
/// inline script in the HTML (the CSP would block it anyway).
async fn check_pages_over_http(http: &reqwest::Client, base: &str) {
    for page in ["/login", "/account"] {
        let r = http
            .get(format!("{base}{page}"))
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), 200, "{page}");
        let csp = r
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{page} has no Content-Security-Policy"))
            .to_string();
        assert_eq!(
            csp,
            latchkey_server::routes::pages::CONTENT_SECURITY_POLICY,
            "{page}"
        );
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-"), "{csp}");
        let html = r.text().await.expect("HTML").to_ascii_lowercase();
        let mut scripts = 0;
        for (at, _) in html.match_indices("<script") {
            scripts += 1;
            let tag_end = at + html[at..].find('>').expect("end of <script> tag");
            let tag = &html[at..=tag_end];
            assert!(tag.contains(" src="), "{page}: inline script {tag}");
            let close = tag_end + html[tag_end..].find("</script>").expect("</script>");
            assert!(
                html[tag_end + 1..close].trim().is_empty(),
                "{page}: a <script src> with inline content"
            );
        }
        assert!(scripts > 0, "{page} loads no script");
        // No inline event handlers or javascript: URLs either.
        for bad in [
            " onclick=",
            " onload=",
            " onsubmit=",
            " onerror=",
            "javascript:",
        ] {
            assert!(!html.contains(bad), "{page} contains {bad}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_sessions_password_and_logout() {
    if !browser_available() {
        return;
    }
    let started = Instant::now();
    let server = start_server().await;
    let base = server.base.as_str();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    check_pages_over_http(&http, base).await;

    // The user, and a session of theirs on "another device".
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "browser-user", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);
    let (other_sid, other_cookie) = cookie_login(&http, base, PASSWORD).await;
    assert_eq!(session_status(&http, base, &other_cookie).await, 200);

    let mut driver = Chromedriver::start();
    let browser = driver.connect().await;

    // Log in through the page.
    browser
        .goto(&format!("{base}/login"))
        .await
        .expect("open /login");
    assert_eq!(
        run(
            &browser,
            "return Array.from(document.scripts).filter(s => !s.src || s.text.trim()).length;"
        )
        .await,
        json!(0),
        "inline script in /login"
    );
    // The browser enforces the CSP: an injected inline script does not run.
    assert_eq!(
        run(
            &browser,
            "const s = document.createElement('script');
             s.textContent = 'window.__latchkeyInline = 1;';
             document.head.appendChild(s);
             return window.__latchkeyInline === undefined;"
        )
        .await,
        json!(true),
        "an inline script ran despite the CSP"
    );
    fill(&browser, "username", "browser-user").await;
    fill(&browser, "password", PASSWORD).await;
    click(&browser, Locator::Id("login-button")).await;
    wait_for_path(&browser, "/account").await;

    // Chromium stored the cookie: __Host- prefixed, Secure (http://127.0.0.1 is a secure
    // context), HttpOnly, SameSite=Lax.
    let cookie = browser
        .get_named_cookie(COOKIE)
        .await
        .unwrap_or_else(|e| panic!("the browser has no {COOKIE} cookie: {e}"));
    assert_eq!(cookie.secure(), Some(true), "{cookie:?}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(cookie.path(), Some("/"), "{cookie:?}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax"),
        "{cookie:?}"
    );
    let browser_cookie = format!("{COOKIE}={}", cookie.value());
    assert_eq!(session_status(&http, base, &browser_cookie).await, 200);

    // Both sessions listed; the browser's is the current one.
    let rows = wait_for_rows(&browser, 2).await;
    assert_eq!(
        rows.iter().filter(|(_, current)| *current).count(),
        1,
        "{rows:?}"
    );
    let (own_sid, _) = rows.iter().find(|(_, current)| *current).expect("current");
    let own_sid = own_sid.clone();
    let (listed_other, _) = rows.iter().find(|(_, current)| !current).expect("other");
    assert_eq!(listed_other, &other_sid, "{rows:?}");
    assert_eq!(
        browser
            .find(Locator::Id("whoami"))
            .await
            .expect("whoami")
            .text()
            .await
            .expect("text"),
        "browser-user"
    );

    // Revoke the other device from the page: refused at once, gone from the table.
    click(&browser, Locator::Css("#sessions tr:not(.current) .revoke")).await;
    wait_for_message(&browser, "Session revoked.").await;
    let rows = wait_for_rows(&browser, 1).await;
    assert_eq!(rows, vec![(own_sid.clone(), true)]);
    assert_eq!(session_status(&http, base, &other_cookie).await, 401);

    // Change the password: the page says so, other sessions end, this one stays.
    let (third_sid, third_cookie) = cookie_login(&http, base, PASSWORD).await;
    browser.refresh().await.expect("reload /account");
    let rows = wait_for_rows(&browser, 2).await;
    assert!(rows.iter().any(|(id, _)| id == &third_sid), "{rows:?}");
    fill(&browser, "current-password", PASSWORD).await;
    fill(&browser, "new-password", NEW_PASSWORD).await;
    click(&browser, Locator::Id("password-button")).await;
    wait_for_message(
        &browser,
        "Password changed. Other sessions were logged out.",
    )
    .await;
    let rows = wait_for_rows(&browser, 1).await;
    assert_eq!(rows, vec![(own_sid.clone(), true)]);
    assert_eq!(session_status(&http, base, &third_cookie).await, 401);
    assert_eq!(session_status(&http, base, &browser_cookie).await, 200);

    // Nothing secret is readable by script: the cookie is HttpOnly, no storage is used...
    let visible = run(&browser, "return document.cookie;").await;
    assert!(
        !visible.as_str().expect("string").contains("latchkey"),
        "document.cookie shows the session: {visible}"
    );
    assert_eq!(
        run(
            &browser,
            "return [localStorage.length, sessionStorage.length];"
        )
        .await,
        json!([0, 0]),
        "something was stored where page script can read it"
    );
    // ... yet the page's own requests carry the session.
    let me = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/me', {credentials: 'same-origin'})
               .then(r => r.json().then(body => done({status: r.status, body})))
               .catch(e => done({status: 0, body: String(e)}));",
            vec![],
        )
        .await
        .expect("fetch /v1/me");
    assert_eq!(me["status"], 200, "{me}");
    assert_eq!(me["body"]["username"], "browser-user", "{me}");
    assert_eq!(me["body"]["session_id"], own_sid.as_str(), "{me}");

    // Log out: back on /login, the cookie gone from the browser and dead on the server.
    click(&browser, Locator::Id("logout")).await;
    wait_for_path(&browser, "/login").await;
    assert!(
        browser.get_named_cookie(COOKIE).await.is_err(),
        "the cookie survived logout"
    );
    assert_eq!(session_status(&http, base, &browser_cookie).await, 401);
    // Even put back into the browser, the old cookie opens nothing: /account sends it to /login.
    put_cookie(&browser, cookie.value()).await;
    browser
        .goto(&format!("{base}/account"))
        .await
        .expect("open /account");
    wait_for_path(&browser, "/login").await;

    // The password change took: the old one is refused, the new one logs in; and that new
    // session, put into the browser the same way, does open /account (so the refusal above
    // was the server's, not a cookie the browser failed to send).
    let r = http
        .post(format!("{base}/v1/session"))
        .json(&json!({"username": "browser-user", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 401);
    let (fresh_sid, fresh_cookie) = cookie_login(&http, base, NEW_PASSWORD).await;
    let fresh_value = fresh_cookie
        .strip_prefix(&format!("{COOKIE}="))
        .expect("cookie value");
    put_cookie(&browser, fresh_value).await;
    browser
        .goto(&format!("{base}/account"))
        .await
        .expect("open /account");
    assert_eq!(wait_for_rows(&browser, 1).await, vec![(fresh_sid, true)]);
    assert_eq!(path(&browser).await, "/account");

    browser.close().await.expect("close the browser");
    drop(driver);
    eprintln!("browser test took {:?}", started.elapsed());
}
