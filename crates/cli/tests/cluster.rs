//! Several `latchkey serve` processes behaving as one, and the store failing under load.
//!
//! Real processes on real servers:
//! - two instances on one PostgreSQL database (and on PostgreSQL + Redis): a login made on one
//!   is valid on the other, a refresh race spread over both has one winner, a revocation made
//!   on one is refused by the other at once, and both publish the same JWKS;
//! - a throwaway PostgreSQL and a throwaway Redis, started by the test on free ports and killed
//!   with SIGKILL in the middle of a load: every request during the outage is a 503, nothing
//!   acknowledged is lost, nothing is revoked by the outage, and service resumes unaided.
//!
//! The multi-instance tests need `LATCHKEY_TEST_POSTGRES_URL` (and `LATCHKEY_TEST_REDIS_URL`);
//! each run makes its own database (and Redis key prefix) and removes it afterwards. The fault
//! tests need `initdb`/`pg_ctl` (Debian: /usr/lib/postgresql/*/bin) and `redis-server`. Without
//! them a test prints `SKIPPED (…)` and passes, unless `LATCHKEY_REQUIRE_SERVICES=1` (CI).
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
const CLIENT: &str = "app";
const PASSWORD: &str = "cluster-test-password";
const POSTGRES_VAR: &str = "LATCHKEY_TEST_POSTGRES_URL";
const REDIS_VAR: &str = "LATCHKEY_TEST_REDIS_URL";
/// Refresh races in the multi-instance tests, and presentations of one token in each.
const ROUNDS: usize = 10;
const RACERS: usize = 20;

// ---------------------------------------------------------------------------------------------
// Skipping.

fn services_required() -> bool {
    std::env::var("LATCHKEY_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Says why a test cannot run here, past the harness's capture; fails instead in CI.
fn skip(test: &str, why: &str) {
    assert!(
        !services_required(),
        "LATCHKEY_REQUIRE_SERVICES=1 but {test} cannot run: {why}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED ({test}): {why}");
}

fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|u| !u.is_empty())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// `latchkey serve` processes.

/// The configuration every instance of a test shares; only `listen` differs.
fn config(port: u16, issuer: &str, database: &str, redis: Option<(&str, &str)>) -> String {
    let redis = match redis {
        Some((url, prefix)) => format!("redis = \"{url}\"\nredis_prefix = \"{prefix}\"\n"),
        None => String::new(),
    };
    format!(
        r#"listen = "127.0.0.1:{port}"
issuer = "{issuer}"
database = "{database}"
{redis}
[password]
argon2_memory_kib = 64
argon2_iterations = 1

[rate_limit]
login_per_account = "off"
login_per_ip = "off"
token_per_ip = "off"

[keys]
publish_delay = "0s"

[[clients]]
id = "{CLIENT}"
kind = "public"
audience = "api"
scopes = ["read"]
grant_types = ["password", "refresh_token"]
"#
    )
}

/// A running `latchkey serve`, killed when dropped.
struct Server {
    name: String,
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, name: &str, port: u16, config: &str) -> Self {
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create log"));
        // The test runner's LATCHKEY_* switches are not configuration.
        for (key, _) in std::env::vars() {
            if key.starts_with("LATCHKEY_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().expect("spawn latchkey serve");
        Self {
            name: name.to_string(),
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for `/readyz` to say 200; panics with the log if the process exits or hangs.
    async fn wait_ready(&mut self, http: &Http) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "instance {} exited during start-up ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = http.get(&self.url, "/readyz").await
                && r.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "instance {} never became ready:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Still the process the test started (never restarted, never crashed).
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "instance {} exited ({status}):\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// No panic and no 500 cause in the log.
    fn assert_log_clean(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !text.contains("panicked"),
            "instance {} panicked:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: Value,
    /// `name=value` of the first Set-Cookie.
    cookie: Option<String>,
}

impl Reply {
    fn text(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field:?} in {} {}", self.status, self.body))
            .to_string()
    }

    fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        self
    }
}

#[derive(Clone)]
struct Http(reqwest::Client);

fn transport(e: reqwest::Error) -> String {
    let mut text = format!("transport: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

impl Http {
    fn new() -> Self {
        Self(
            reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        )
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, String> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .find(|c| !c.is_empty());
        let text = response.text().await.map_err(transport)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply {
            status,
            body,
            cookie,
        })
    }

    async fn get(&self, base: &str, path: &str) -> Result<Reply, String> {
        self.send(self.0.get(format!("{base}{path}"))).await
    }

    fn sign_up_request(&self, base: &str, user: &str) -> reqwest::RequestBuilder {
        self.0
            .post(format!("{base}/v1/users"))
            .json(&json!({"username": user, "password": PASSWORD}))
    }

    fn token_login_request(&self, base: &str, user: &str) -> reqwest::RequestBuilder {
        self.0.post(format!("{base}/oauth/token")).form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", PASSWORD),
            ("client_id", CLIENT),
        ])
    }

    fn refresh_request(&self, base: &str, refresh_token: &str) -> reqwest::RequestBuilder {
        self.0.post(format!("{base}/oauth/token")).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT),
        ])
    }

    fn revoke_request(&self, base: &str, token: &str) -> reqwest::RequestBuilder {
        self.0
            .post(format!("{base}/oauth/revoke"))
            .form(&[("token", token), ("client_id", CLIENT)])
    }

    fn me_request(&self, base: &str, access_token: &str) -> reqwest::RequestBuilder {
        self.0
            .get(format!("{base}/v1/me"))
            .bearer_auth(access_token)
    }

    fn authorize_request(&self, base: &str, access_token: &str) -> reqwest::RequestBuilder {
        self.0
            .get(format!("{base}/v1/authorize"))
            .bearer_auth(access_token)
    }

    fn cookie_login_request(&self, base: &str, user: &str) -> reqwest::RequestBuilder {
        self.0
            .post(format!("{base}/v1/session"))
            .json(&json!({"username": user, "password": PASSWORD}))
    }

    fn session_request(&self, base: &str, cookie: &str) -> reqwest::RequestBuilder {
        self.0
            .get(format!("{base}/v1/session"))
            .header("cookie", cookie)
    }

    fn logout_request(&self, base: &str, cookie: &str, csrf: &str) -> reqwest::RequestBuilder {
        self.0
            .delete(format!("{base}/v1/session"))
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
    }

    /// Sends a request the test cannot go on without a transport for.
    async fn must(&self, request: reqwest::RequestBuilder) -> Reply {
        self.send(request)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    async fn sign_up(&self, base: &str, user: &str) {
        self.must(self.sign_up_request(base, user))
            .await
            .expect(201, "sign-up");
    }

    /// `(access token, refresh token)` of a password grant.
    async fn token_login(&self, base: &str, user: &str) -> (String, String) {
        let r = self
            .must(self.token_login_request(base, user))
            .await
            .expect(200, "password grant");
        (r.text("access_token"), r.text("refresh_token"))
    }

    /// `(cookie, csrf token, session id)` of a cookie login.
    async fn cookie_login(&self, base: &str, user: &str) -> (String, String, String) {
        let r = self
            .must(self.cookie_login_request(base, user))
            .await
            .expect(200, "cookie login");
        let cookie = r.cookie.clone().expect("Set-Cookie on login");
        let sid = r.body["session"]["id"]
            .as_str()
            .expect("session.id")
            .to_string();
        (cookie, r.text("csrf_token"), sid)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared PostgreSQL and Redis: a database and a key prefix of the test's own.

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &head[..path_start])
}

/// A database created for one test and dropped (with `FORCE`) when the guard goes.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create(admin_url: &str) -> Self {
        use sqlx::Connection;
        let name = unique("latchkey_test_");
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {POSTGRES_VAR}: {e}"));
        // A generated plain identifier: nothing to escape.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        Self {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own on a thread of its own: the test's may be unwinding.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop test database {}: {dropped:?}",
                self.name
            );
        }
    }
}

/// Every key under a Redis prefix of the test's own, deleted when the guard goes.
struct TestPrefix {
    url: String,
    prefix: String,
}

impl TestPrefix {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            prefix: format!("{}:", unique("latchkey-test-")),
        }
    }

    fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.url.as_str()).expect("Redis URL");
        let mut conn = client.get_connection().expect("connect to Redis");
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let deleted = (|| -> redis::RedisResult<()> {
            let keys = self.keys();
            let mut conn = redis::Client::open(self.url.as_str())?.get_connection()?;
            for chunk in keys.chunks(500) {
                redis::cmd("DEL").arg(chunk).query::<i64>(&mut conn)?;
            }
            Ok(())
        })();
        if let Err(e) = deleted {
            eprintln!("warning: could not delete Redis keys {}*: {e}", self.prefix);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Two instances, one store.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_behave_as_one() {
    let Some(pg) = env_url(POSTGRES_VAR) else {
        return skip(
            "two_instances_on_postgres",
            &format!("set {POSTGRES_VAR}=postgres://postgres@127.0.0.1:5432/test to run"),
        );
    };
    let db = TestDatabase::create(&pg).await;
    two_instances_behave_as_one(&db.url, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_and_redis_behave_as_one() {
    let (Some(pg), Some(redis)) = (env_url(POSTGRES_VAR), env_url(REDIS_VAR)) else {
        return skip(
            "two_instances_on_postgres_and_redis",
            &format!(
                "set {POSTGRES_VAR}=postgres://postgres@127.0.0.1:5432/test and \
                 {REDIS_VAR}=redis://127.0.0.1:6379 to run"
            ),
        );
    };
    let db = TestDatabase::create(&pg).await;
    let prefix = TestPrefix::new(&redis);
    two_instances_behave_as_one(&db.url, Some((&redis, &prefix.prefix))).await;
    // Sessions and families really lived in Redis, under the test's prefix only: every
    // session the scenario made (4 cross-instance logins, the race rounds, 3 revocations).
    const LOGINS: usize = 4 + ROUNDS + 3;
    let keys = prefix.keys();
    let sessions = keys
        .iter()
        .filter(|k| {
            k.strip_prefix(prefix.prefix.as_str())
                .is_some_and(|rest| rest.starts_with("s:") && !rest.ends_with(":rt"))
        })
        .count();
    assert!(
        sessions >= LOGINS,
        "expected the sessions in Redis under {}, found {sessions} ({} keys)",
        prefix.prefix,
        keys.len()
    );
}

async fn two_instances_behave_as_one(database: &str, redis: Option<(&str, &str)>) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let http = Http::new();
    let (port_a, port_b) = (free_port(), free_port());
    // One public URL for the cluster, as behind a load balancer: both instances use it.
    let issuer = format!("http://127.0.0.1:{port_a}");
    // Both start at once on a fresh database: migrations and the first signing key race.
    let mut a = Server::start(
        dir.path(),
        "a",
        port_a,
        &config(port_a, &issuer, database, redis),
    );
    let mut b = Server::start(
        dir.path(),
        "b",
        port_b,
        &config(port_b, &issuer, database, redis),
    );
    a.wait_ready(&http).await;
    b.wait_ready(&http).await;
    let (a_url, b_url) = (a.url.clone(), b.url.clone());

    // One key set, published by both.
    let jwks_a = http
        .get(&a_url, "/.well-known/jwks.json")
        .await
        .expect("JWKS of A");
    let jwks_b = http
        .get(&b_url, "/.well-known/jwks.json")
        .await
        .expect("JWKS of B");
    assert_eq!(jwks_a.status, 200);
    assert!(
        jwks_a.body["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty()),
        "JWKS of A: {}",
        jwks_a.body
    );
    assert_eq!(
        jwks_a.body, jwks_b.body,
        "the instances publish different JWKS"
    );

    // A login on either instance is valid on the other.
    let user = unique("u");
    http.sign_up(&a_url, &user).await;
    for (login_on, check_on) in [(&a_url, &b_url), (&b_url, &a_url)] {
        let (access, _) = http.token_login(login_on, &user).await;
        let me = http.must(http.me_request(check_on, &access)).await;
        assert_eq!(
            me.status, 200,
            "token from {login_on} on {check_on}: {}",
            me.body
        );
        assert_eq!(me.body["username"], user.as_str());
        let authorized = http.must(http.authorize_request(check_on, &access)).await;
        assert_eq!(authorized.status, 200, "forward auth on {check_on}");
        let (cookie, _, sid) = http.cookie_login(login_on, &user).await;
        let session = http.must(http.session_request(check_on, &cookie)).await;
        assert_eq!(
            session.status, 200,
            "cookie from {login_on} on {check_on}: {}",
            session.body
        );
        assert_eq!(session.body["session"]["id"], sid.as_str());
    }

    // A refresh race spread over both instances: one winner, every other presentation is
    // reuse, and the family is dead on both.
    for round in 0..ROUNDS {
        let (_, refresh) = http.token_login(&a_url, &user).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let (http, barrier, refresh) = (http.clone(), barrier.clone(), refresh.clone());
                let base = if i % 2 == 0 {
                    a_url.clone()
                } else {
                    b_url.clone()
                };
                tokio::spawn(async move {
                    let request = http.refresh_request(&base, &refresh);
                    barrier.wait().await;
                    (base, http.send(request).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            let (base, reply) = racer.await.expect("racer");
            let reply = reply.unwrap_or_else(|e| panic!("round {round}: {e}"));
            match reply.status {
                200 => winners.push((base, reply)),
                400 => assert_eq!(reply.body["error"], "invalid_grant", "round {round}"),
                other => panic!("round {round}: a racer got {other}: {}", reply.body),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} of {RACERS} presentations rotated the same token",
            winners.len()
        );
        let (won_on, reply) = &winners[0];
        let other = if *won_on == a_url { &b_url } else { &a_url };
        let successor = reply.text("refresh_token");
        let access = reply.text("access_token");
        // The losers were reuse: the whole family is revoked, on both instances.
        http.must(http.refresh_request(other, &successor))
            .await
            .expect(
                400,
                "the winner's successor after reuse, on the other instance",
            );
        http.must(http.me_request(other, &access)).await.expect(
            401,
            "the winner's access token after reuse, on the other instance",
        );
    }

    // A revocation on A is refused on B at once: by the store at once, by B's forward auth
    // (its copy of the revocation feed) within a second.
    for revoke_with in ["refresh_token", "access_token"] {
        let (access, refresh) = http.token_login(&a_url, &user).await;
        http.must(http.me_request(&b_url, &access))
            .await
            .expect(200, "before revocation");
        http.must(http.authorize_request(&b_url, &access))
            .await
            .expect(200, "forward auth before revocation");
        let token = if revoke_with == "refresh_token" {
            &refresh
        } else {
            &access
        };
        http.must(http.revoke_request(&a_url, token))
            .await
            .expect(200, "revoke on A");
        let revoked_at = Instant::now();
        http.must(http.me_request(&b_url, &access)).await.expect(
            401,
            &format!("B's /v1/me after revoking the {revoke_with} on A"),
        );
        http.must(http.refresh_request(&b_url, &refresh))
            .await
            .expect(
                400,
                &format!("refresh on B after revoking the {revoke_with} on A"),
            );
        loop {
            let r = http.must(http.authorize_request(&b_url, &access)).await;
            if r.status == 401 {
                break;
            }
            assert_eq!(r.status, 200, "forward auth on B: {}", r.body);
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "B's forward auth still accepted the access token 1 s after A revoked it"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "revocation ({revoke_with}) on A seen by B's forward auth after {:?}",
            revoked_at.elapsed()
        );
    }
    // A cookie logout on A ends the session on B at once, for the API and for forward auth.
    let (cookie, csrf, _) = http.cookie_login(&a_url, &user).await;
    http.must(http.session_request(&b_url, &cookie))
        .await
        .expect(200, "cookie on B");
    http.must(http.logout_request(&a_url, &cookie, &csrf))
        .await
        .expect(204, "logout on A");
    http.must(http.session_request(&b_url, &cookie))
        .await
        .expect(401, "cookie on B after logout on A");
    let forward = http
        .must(
            http.0
                .get(format!("{b_url}/v1/authorize"))
                .header("cookie", &cookie),
        )
        .await;
    assert_eq!(
        forward.status, 401,
        "B's forward auth with the cookie after logout on A"
    );

    // Still one key set.
    let jwks_a = http
        .get(&a_url, "/.well-known/jwks.json")
        .await
        .expect("JWKS of A");
    let jwks_b = http
        .get(&b_url, "/.well-known/jwks.json")
        .await
        .expect("JWKS of B");
    assert_eq!(
        jwks_a.body, jwks_b.body,
        "the instances publish different JWKS"
    );
    a.assert_running();
    b.assert_running();
    a.assert_log_clean();
    b.assert_log_clean();
    eprintln!(
        "two instances ({}) took {:?}",
        if redis.is_some() {
            "postgres+redis"
        } else {
            "postgres"
        },
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Throwaway PostgreSQL and Redis servers.

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The newest Debian PostgreSQL with `initdb` and `pg_ctl`.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether the process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn sigkill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "processes {pids:?} survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A PostgreSQL cluster in a temporary directory, on a free port, owned by `postgres` when the
/// test runs as root (PostgreSQL refuses to run as root).
struct ThrowawayPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl ThrowawayPostgres {
    fn create(bin: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(unique("latchkey-pg-"));
        std::fs::create_dir(&dir).expect("create the PostgreSQL directory");
        let pg = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres: is_root(),
        };
        if pg.as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(&pg.dir)
                .status()
                .expect("chown");
            assert!(chown.success(), "chown postgres {}", pg.dir.display());
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
        );
    }

    fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c shared_buffers=16MB -c max_connections=60",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL to the postmaster and every backend: a crash, not a shutdown.
    fn kill(&self) {
        let pid = self.postmaster_pid().expect("postmaster.pid");
        let mut pids = children_of(pid);
        pids.insert(0, pid);
        sigkill(&pids);
        // Anything forked in between.
        sigkill(&children_of(pid));
        wait_gone(&pids);
    }

    /// Starts the cluster again on the same port; it runs crash recovery first.
    fn restart(&self) {
        // Every process of the cluster is gone, but one left as a zombie (nobody reaps it in
        // some containers) would pass PostgreSQL's "is the old postmaster alive" test.
        if self.postmaster_pid().is_some_and(|p| !alive(p)) {
            let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
            let _ = std::fs::remove_file(self.dir.join(format!(".s.PGSQL.{}.lock", self.port)));
            let _ = std::fs::remove_file(self.dir.join(format!(".s.PGSQL.{}", self.port)));
        }
        self.start();
    }
}

/// Whether the process is stopped (by SIGSTOP: state `T`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T")
    })
}

fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(name)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// A throwaway cluster hung, not dead: SIGSTOP to its postmaster and every process forked from
/// it (read from the postmaster this test started, never by name), so its sockets stay open and
/// nothing answers. SIGCONT to the same PIDs when dropped, so a failing test leaves nothing
/// stopped (the cluster's own guard then kills it).
struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    fn freeze(pg: &ThrowawayPostgres) -> Self {
        let postmaster = pg.postmaster_pid().expect("postmaster.pid");
        // The postmaster first, so it forks nothing new; then its children, twice, in case one
        // was forked in between.
        let mut frozen = Self {
            pids: vec![postmaster],
        };
        signal("-STOP", &frozen.pids);
        for _ in 0..2 {
            let children: Vec<u32> = children_of(postmaster)
                .into_iter()
                .filter(|p| !frozen.pids.contains(p))
                .collect();
            signal("-STOP", &children);
            frozen.pids.extend(children);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !frozen
            .pids
            .iter()
            .filter(|&&p| alive(p))
            .all(|&p| stopped(p))
        {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL processes {:?} did not stop",
                frozen.pids
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.pids);
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid().filter(|&p| alive(p)) {
            let mut pids = children_of(pid);
            pids.insert(0, pid);
            sigkill(&pids);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` child process in a temporary directory, on a free port.
struct ThrowawayRedis {
    dir: tempfile::TempDir,
    port: u16,
    /// AOF with `appendfsync always`, or nothing on disk at all.
    persistent: bool,
    child: Option<Child>,
}

impl ThrowawayRedis {
    fn start_new(persistent: bool) -> Self {
        let mut redis = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            persistent,
            child: None,
        };
        redis.start();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(["--daemonize", "no"]);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.pong() {
            assert!(
                Instant::now() < deadline,
                "redis-server never answered:\n{}",
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Answers PING, with the data set loaded.
    fn pong(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Load with a journal: every request, when it started and ended, and what it got.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    TokenLogin,
    CookieLogin,
    Refresh,
    Me,
    CookieCheck,
    Revoke,
    Logout,
    Ready,
}

struct Record {
    op: Op,
    started: Instant,
    ended: Instant,
    outcome: Result<u16, String>,
}

/// A login the server acknowledged.
#[derive(Clone, Debug)]
enum Login {
    Token { access: String, refresh: String },
    Cookie { cookie: String },
}

#[derive(Default)]
struct ActorReport {
    violations: Vec<String>,
    logins: Vec<Login>,
    revoked: Vec<Login>,
    /// Long-lived sessions made before the outage, in their last acknowledged state.
    survivors: Vec<Login>,
    /// Rotations in flight at the kill that committed although their answer was a 503.
    unanswered_rotations: usize,
}

#[derive(Clone)]
struct Load {
    http: Http,
    base: String,
    journal: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
    /// When every process of the store was gone.
    dead_at: Arc<Mutex<Option<Instant>>>,
}

impl Load {
    async fn call(
        &self,
        op: Op,
        request: reqwest::RequestBuilder,
    ) -> (Instant, Result<Reply, String>) {
        let started = Instant::now();
        let reply = self.http.send(request).await;
        let record = Record {
            op,
            started,
            ended: Instant::now(),
            outcome: reply.as_ref().map(|r| r.status).map_err(Clone::clone),
        };
        self.journal.lock().expect("journal").push(record);
        (started, reply)
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    /// Whether a request that started at `t` may have reached the store before it died.
    fn in_flight_at_kill(&self, t: Instant) -> bool {
        self.dead_at.lock().expect("dead_at").is_some_and(|d| t < d)
    }

    async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Anything but the expected success or a 503 is a violation (a 500, a transport error, a
/// refusal of something that should work).
fn check(
    report: &mut ActorReport,
    what: &str,
    reply: &Result<Reply, String>,
    ok: u16,
) -> Option<Reply> {
    match reply {
        Ok(r) if r.status == ok => Some(r.clone()),
        Ok(r) if r.status == 503 => None,
        Ok(r) => {
            report
                .violations
                .push(format!("{what}: HTTP {} {}", r.status, r.body));
            None
        }
        Err(e) => {
            report.violations.push(format!("{what}: {e}"));
            None
        }
    }
}

/// Rotates one family for the whole run, always with the last acknowledged refresh token, and
/// checks its access token; the outage must never revoke the family.
async fn rotator(load: Load, user: String) -> ActorReport {
    let mut report = ActorReport::default();
    let (mut access, mut refresh) = load.http.token_login(&load.base, &user).await;
    // The start of the first refresh that got a 503 with this token, if any.
    let mut failed_at: Option<Instant> = None;
    let mut i = 0u64;
    while load.running() {
        i += 1;
        let (started, reply) = load
            .call(Op::Refresh, load.http.refresh_request(&load.base, &refresh))
            .await;
        match reply {
            Ok(r) if r.status == 200 => {
                access = r.text("access_token");
                refresh = r.text("refresh_token");
                failed_at = None;
            }
            Ok(r) if r.status == 503 => {
                // The first one counts: a request in flight at the kill may have rotated.
                failed_at = failed_at.or(Some(started));
            }
            Ok(r)
                if r.status == 400
                    && failed_at.is_some_and(|t| load.in_flight_at_kill(t))
                    && r.body["error_description"]
                        .as_str()
                        .is_some_and(|d| d.contains("reuse")) =>
            {
                // The 503 was for a request in flight when the store died: its rotation may
                // have committed with the answer lost. Not the outage revoking anything.
                report.unanswered_rotations += 1;
                (access, refresh) = load.http.token_login(&load.base, &user).await;
                failed_at = None;
            }
            other => {
                check(
                    &mut report,
                    "refresh with the last acknowledged token",
                    &other,
                    200,
                );
                break;
            }
        }
        if matches!(i % 3, 0) {
            let (_, me) = load
                .call(Op::Me, load.http.me_request(&load.base, &access))
                .await;
            check(&mut report, "/v1/me of a live family", &me, 200);
        }
        load.pause().await;
    }
    report.survivors.push(Login::Token { access, refresh });
    report
}

/// Checks one cookie session for the whole run; the outage must never end it.
async fn cookie_checker(load: Load, user: String) -> ActorReport {
    let mut report = ActorReport::default();
    let (cookie, _, _) = load.http.cookie_login(&load.base, &user).await;
    while load.running() {
        let (_, reply) = load
            .call(
                Op::CookieCheck,
                load.http.session_request(&load.base, &cookie),
            )
            .await;
        check(
            &mut report,
            "GET /v1/session of a live cookie session",
            &reply,
            200,
        );
        load.pause().await;
    }
    report.survivors.push(Login::Cookie { cookie });
    report
}

/// Logs in over and over (both kinds), keeping every acknowledged login.
async fn login_maker(load: Load, user: String) -> ActorReport {
    let mut report = ActorReport::default();
    let mut i = 0u64;
    while load.running() {
        i += 1;
        if matches!(i % 2, 0) {
            let (_, reply) = load
                .call(
                    Op::TokenLogin,
                    load.http.token_login_request(&load.base, &user),
                )
                .await;
            if let Some(r) = check(&mut report, "password grant", &reply, 200) {
                report.logins.push(Login::Token {
                    access: r.text("access_token"),
                    refresh: r.text("refresh_token"),
                });
            }
        } else {
            let (_, reply) = load
                .call(
                    Op::CookieLogin,
                    load.http.cookie_login_request(&load.base, &user),
                )
                .await;
            if let Some(r) = check(&mut report, "cookie login", &reply, 200) {
                match r.cookie {
                    Some(cookie) => report.logins.push(Login::Cookie { cookie }),
                    None => report
                        .violations
                        .push("cookie login without Set-Cookie".into()),
                }
            }
        }
        load.pause().await;
    }
    report
}

/// Logs in and revokes at once (both kinds), keeping every acknowledged revocation.
async fn revoker(load: Load, user: String) -> ActorReport {
    let mut report = ActorReport::default();
    let mut i = 0u64;
    while load.running() {
        i += 1;
        if matches!(i % 2, 0) {
            let (_, reply) = load
                .call(
                    Op::TokenLogin,
                    load.http.token_login_request(&load.base, &user),
                )
                .await;
            if let Some(r) = check(&mut report, "password grant", &reply, 200) {
                let (access, refresh) = (r.text("access_token"), r.text("refresh_token"));
                let (_, reply) = load
                    .call(Op::Revoke, load.http.revoke_request(&load.base, &refresh))
                    .await;
                if check(&mut report, "POST /oauth/revoke", &reply, 200).is_some() {
                    report.revoked.push(Login::Token { access, refresh });
                }
            }
        } else {
            let (_, reply) = load
                .call(
                    Op::CookieLogin,
                    load.http.cookie_login_request(&load.base, &user),
                )
                .await;
            if let Some(r) = check(&mut report, "cookie login", &reply, 200) {
                let cookie = r.cookie.clone().unwrap_or_default();
                let csrf = r.text("csrf_token");
                let (_, reply) = load
                    .call(
                        Op::Logout,
                        load.http.logout_request(&load.base, &cookie, &csrf),
                    )
                    .await;
                if check(&mut report, "DELETE /v1/session", &reply, 204).is_some() {
                    report.revoked.push(Login::Cookie { cookie });
                }
            }
        }
        load.pause().await;
    }
    report
}

/// Asks `/readyz` every 100 ms.
async fn readiness(load: Load) -> ActorReport {
    let mut report = ActorReport::default();
    while load.running() {
        let (_, reply) = load
            .call(Op::Ready, load.http.0.get(format!("{}/readyz", load.base)))
            .await;
        check(&mut report, "/readyz", &reply, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report
}

/// A store that the test can kill with SIGKILL and start again.
trait Killable {
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Killable for ThrowawayPostgres {
    fn kill(&mut self) {
        ThrowawayPostgres::kill(self);
    }
    fn restart(&mut self) {
        ThrowawayPostgres::restart(self);
    }
}

impl Killable for ThrowawayRedis {
    fn kill(&mut self) {
        ThrowawayRedis::kill(self);
    }
    fn restart(&mut self) {
        self.start();
    }
}

/// How long the store stays dead. While PostgreSQL is down a request waits up to 2 s for a
/// connection before its 503 (Redis refuses at once), so 5 s lets each load actor see at
/// least two whole requests answered inside the outage.
const OUTAGE: Duration = Duration::from_secs(5);

/// Runs the load against `server`, kills `store` mid-load for [`OUTAGE`], restarts it, and checks
/// everything the server acknowledged and answered.
async fn outage_under_load(label: &str, server: &mut Server, store: &mut dyn Killable) {
    let http = Http::new();
    let base = server.url.clone();
    let load = Load {
        http: http.clone(),
        base: base.clone(),
        journal: Arc::new(Mutex::new(Vec::new())),
        stop: Arc::new(AtomicBool::new(false)),
        dead_at: Arc::new(Mutex::new(None)),
    };
    let mut actors = Vec::new();
    for i in 0..10 {
        let user = unique(&format!("{label}-{i}-"));
        http.sign_up(&base, &user).await;
        let load = load.clone();
        actors.push(match i {
            0..=3 => tokio::spawn(rotator(load, user)),
            4..=5 => tokio::spawn(cookie_checker(load, user)),
            6..=7 => tokio::spawn(login_maker(load, user)),
            _ => tokio::spawn(revoker(load, user)),
        });
    }
    actors.push(tokio::spawn(readiness(load.clone())));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kill_at = Instant::now();
    tokio::task::block_in_place(|| store.kill());
    let dead_at = Instant::now();
    *load.dead_at.lock().expect("dead_at") = Some(dead_at);
    tokio::time::sleep(OUTAGE).await;
    let restart_at = Instant::now();
    tokio::task::block_in_place(|| store.restart());
    let restarted = Instant::now();
    // Service must come back by itself; then some more load.
    let recovered = loop {
        if let Ok(r) = http.get(&base, "/readyz").await
            && r.status == 200
        {
            break Instant::now();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "{label}: /readyz did not say 200 within 30 s of the store's restart:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop.store(true, Ordering::SeqCst);
    let mut report = ActorReport::default();
    for actor in actors {
        let r = actor.await.expect("actor");
        report.violations.extend(r.violations);
        report.logins.extend(r.logins);
        report.revoked.extend(r.revoked);
        report.survivors.extend(r.survivors);
        report.unanswered_rotations += r.unanswered_rotations;
    }
    server.assert_running();

    // The journal: no 500, no transport error; every request made wholly inside the outage
    // (sent after the store was gone, answered before its restart began) was a 503. A
    // request in flight at the kill, or still waiting when the store came back, may succeed.
    let journal = std::mem::take(&mut *load.journal.lock().expect("journal"));
    let mut during = 0;
    let mut ready_during = 0;
    let mut latest_in_outage = Duration::ZERO;
    for r in &journal {
        if let Ok(status) = r.outcome
            && status >= 500
            && status != 503
        {
            report.violations.push(format!("{:?}: HTTP {status}", r.op));
        }
        if r.started >= dead_at && r.ended <= restart_at {
            latest_in_outage = latest_in_outage.max(r.ended - r.started);
            if r.op == Op::Ready {
                ready_during += 1;
                // A load balancer's probe gives up after a second or two.
                if r.ended - r.started > Duration::from_millis(1500) {
                    report.violations.push(format!(
                        "/readyz took {:?} to answer during the outage",
                        r.ended - r.started
                    ));
                }
            } else {
                during += 1;
            }
            if r.outcome != Ok(503) {
                report.violations.push(format!(
                    "{:?} made during the outage ({:?} after the kill) got {:?}, not 503",
                    r.op,
                    r.started - dead_at,
                    r.outcome
                ));
            }
        }
    }
    let count = |op: Op, ok: bool| {
        journal
            .iter()
            .filter(|r| r.op == op && (r.outcome == Ok(503)) != ok)
            .count()
    };
    let after = |op: Op| {
        journal
            .iter()
            .filter(|r| r.op == op && r.started >= recovered && matches!(r.outcome, Ok(200 | 204)))
            .count()
    };
    eprintln!(
        "{label}: {} requests; the store was gone {:?} after SIGKILL; during the outage \
         {during} requests and {ready_during} readiness checks, all 503, the slowest \
         {latest_in_outage:?}; /readyz 200 again {:?} after the restart began ({:?} to \
         restart); refreshes ok/503 {}/{}, logins ok/503 {}/{}, \
         revocations ok/503 {}/{}, after recovery {} refreshes and {} cookie checks succeeded",
        journal.len(),
        dead_at - kill_at,
        recovered - restart_at,
        restarted - restart_at,
        count(Op::Refresh, true),
        count(Op::Refresh, false),
        count(Op::TokenLogin, true) + count(Op::CookieLogin, true),
        count(Op::TokenLogin, false) + count(Op::CookieLogin, false),
        count(Op::Revoke, true) + count(Op::Logout, true),
        count(Op::Revoke, false) + count(Op::Logout, false),
        after(Op::Refresh),
        after(Op::CookieCheck),
    );
    if during < 8 || ready_during < 2 {
        report.violations.push(format!(
            "the outage was not exercised: {during} requests and {ready_during} readiness \
             checks were made and answered while the store was down"
        ));
    }
    if after(Op::Refresh) == 0 || after(Op::CookieCheck) == 0 || after(Op::Ready) == 0 {
        report
            .violations
            .push("service did not resume after the store came back".into());
    }

    // What was acknowledged survived; what was revoked stayed revoked; what was live before
    // the outage is live after it.
    for login in report.logins.iter().chain(&report.survivors) {
        match login {
            Login::Token { access, refresh } => {
                let me = http.must(http.me_request(&base, access)).await;
                if me.status != 200 {
                    report.violations.push(format!(
                        "an acknowledged token login is gone: /v1/me {} {}",
                        me.status, me.body
                    ));
                }
                let rotated = http.must(http.refresh_request(&base, refresh)).await;
                if rotated.status != 200 {
                    report.violations.push(format!(
                        "the last acknowledged refresh token of a family no longer rotates: {} {}",
                        rotated.status, rotated.body
                    ));
                }
            }
            Login::Cookie { cookie } => {
                let s = http.must(http.session_request(&base, cookie)).await;
                if s.status != 200 {
                    report.violations.push(format!(
                        "an acknowledged cookie login is gone: {} {}",
                        s.status, s.body
                    ));
                }
            }
        }
    }
    for revoked in &report.revoked {
        match revoked {
            Login::Token { access, refresh } => {
                let me = http.must(http.me_request(&base, access)).await;
                let rotated = http.must(http.refresh_request(&base, refresh)).await;
                if me.status != 401 || rotated.status != 400 {
                    report.violations.push(format!(
                        "an acknowledged revocation was lost: /v1/me {}, refresh {}",
                        me.status, rotated.status
                    ));
                }
            }
            Login::Cookie { cookie } => {
                let s = http.must(http.session_request(&base, cookie)).await;
                if s.status != 401 {
                    report.violations.push(format!(
                        "an acknowledged logout was lost: GET /v1/session {}",
                        s.status
                    ));
                }
            }
        }
    }
    eprintln!(
        "{label}: checked {} acknowledged logins, {} long-lived sessions and {} acknowledged \
         revocations after recovery; {} rotation(s) in flight at the kill had committed with \
         their answer lost (the client's retry was reuse)",
        report.logins.len(),
        report.survivors.len(),
        report.revoked.len(),
        report.unanswered_rotations
    );
    assert!(
        report.logins.len() >= 10 && report.revoked.len() >= 4 && report.survivors.len() == 6,
        "{label}: too little load to judge: {} logins, {} revocations, {} long-lived sessions",
        report.logins.len(),
        report.revoked.len(),
        report.survivors.len()
    );
    server.assert_log_clean();
    let violations = report.violations.len();
    report.violations.truncate(20);
    assert!(
        report.violations.is_empty(),
        "{label}: {violations} violations (the first 20):\n{}\nserver log:\n{}",
        report.violations.join("\n"),
        server.log_tail()
    );
}

// ---------------------------------------------------------------------------------------------
// Fault tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_mid_load() {
    let Some(bin) = postgres_bin_dir() else {
        return skip(
            "postgres_killed_mid_load",
            "no /usr/lib/postgresql/*/bin/initdb and pg_ctl (apt-get install postgresql)",
        );
    };
    if is_root() && !on_path("runuser") {
        return skip(
            "postgres_killed_mid_load",
            "running as root without runuser",
        );
    }
    let mut pg = tokio::task::block_in_place(|| ThrowawayPostgres::create(bin));
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut server = Server::start(
        dir.path(),
        "pg",
        port,
        &config(port, &issuer, &pg.url(), None),
    );
    server.wait_ready(&Http::new()).await;
    outage_under_load("postgres", &mut server, &mut pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load() {
    if !on_path("redis-server") {
        return skip(
            "redis_killed_mid_load",
            "no redis-server (apt-get install redis-server)",
        );
    }
    let mut redis = tokio::task::block_in_place(|| ThrowawayRedis::start_new(true));
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let database = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let config = config(port, &issuer, &database, Some((&redis.url(), "latchkey:")));
    let mut server = Server::start(dir.path(), "redis", port, &config);
    server.wait_ready(&Http::new()).await;
    outage_under_load("redis", &mut server, &mut redis).await;
}

/// A hung PostgreSQL (every process of a throwaway cluster stopped with SIGSTOP: connections stay
/// open, nothing answers, so its own `statement_timeout` cannot fire) fails requests closed in
/// bounded time: `/readyz`, the password and refresh grants and `/v1/me` answer 503
/// `unavailable` within 10 s, never hang. That includes a request whose query was already
/// running when the server hung (held on a table lock, so it is certainly mid-statement): only
/// the store's client-side call deadline ends that one. After SIGCONT service resumes without
/// a restart, and the hang consumed or revoked nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hung_by_sigstop_fails_closed_in_bounded_time() {
    const TEST: &str = "postgres_hung_by_sigstop";
    let Some(bin) = postgres_bin_dir() else {
        return skip(
            TEST,
            "no /usr/lib/postgresql/*/bin/initdb and pg_ctl (apt-get install postgresql)",
        );
    };
    if is_root() && !on_path("runuser") {
        return skip(TEST, "running as root without runuser");
    }
    let pg = tokio::task::block_in_place(|| ThrowawayPostgres::create(bin));
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut server = Server::start(
        dir.path(),
        "hung",
        port,
        &config(port, &issuer, &pg.url(), None),
    );
    let http = Http::new();
    server.wait_ready(&http).await;
    let base = server.url.clone();
    let user = unique("hung-");
    http.sign_up(&base, &user).await;
    let (access, refresh) = http.token_login(&base, &user).await;
    let (spare_access, spare_refresh) = http.token_login(&base, &user).await;
    // Concurrent requests, so the pool holds several open connections when the server hangs.
    let mut warm = Vec::new();
    for _ in 0..6 {
        let (http, base, access) = (http.clone(), base.clone(), access.clone());
        warm.push(tokio::spawn(async move {
            http.must(http.me_request(&base, &access))
                .await
                .expect(200, "/v1/me before the hang");
        }));
    }
    for w in warm {
        w.await.expect("warm-up");
    }

    // A password grant whose user lookup is mid-statement, waiting for a lock the test holds.
    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("connect to the throwaway PostgreSQL");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("BEGIN");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("LOCK TABLE users");
    let in_flight = {
        let (http, request) = (http.clone(), http.token_login_request(&base, &user));
        let started = Instant::now();
        tokio::spawn(async move { (http.send(request).await, started.elapsed()) })
    };
    let waiting = Instant::now();
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND application_name = 'latchkey'",
        )
        .fetch_one(&mut locker)
        .await
        .expect("pg_stat_activity");
        if blocked > 0 {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(3),
            "the password grant never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let frozen = tokio::task::block_in_place(|| Frozen::freeze(&pg));
    let bound = Duration::from_secs(10);
    // Two rounds: the first meets the pooled connections, the second a pool whose connections
    // are all stuck (new ones cannot be opened either).
    for round in 1..=2 {
        let requests = [
            ("/readyz", http.0.get(format!("{base}/readyz"))),
            ("password grant", http.token_login_request(&base, &user)),
            ("refresh grant", http.refresh_request(&base, &spare_refresh)),
            ("/v1/me", http.me_request(&base, &spare_access)),
        ];
        let mut answers = Vec::new();
        for (what, request) in requests {
            let http = http.clone();
            answers.push(tokio::spawn(async move {
                let started = Instant::now();
                let reply = http.send(request).await;
                (what, reply, started.elapsed())
            }));
        }
        for answer in answers {
            let (what, reply, took) = answer.await.expect("request task");
            let reply = reply.unwrap_or_else(|e| panic!("{what} while hung: {e}"));
            assert_eq!(
                (reply.status, reply.body["error"].as_str()),
                (503, Some("unavailable")),
                "{what} while PostgreSQL is hung (round {round}): {}",
                reply.body
            );
            assert!(
                took < bound,
                "{what} took {took:?} while PostgreSQL is hung"
            );
            if what == "/readyz" {
                assert!(
                    took < Duration::from_secs(3),
                    "/readyz took {took:?} while PostgreSQL is hung: a probe gives up sooner"
                );
            }
            let _ = writeln!(
                std::io::stderr(),
                "{TEST}: round {round}: {what} answered 503 after {took:?}"
            );
        }
    }
    let (reply, took) = in_flight.await.expect("request task");
    let reply = reply.unwrap_or_else(|e| panic!("in-flight password grant: {e}"));
    assert_eq!(
        (reply.status, reply.body["error"].as_str()),
        (503, Some("unavailable")),
        "a password grant mid-statement when PostgreSQL hung: {}",
        reply.body
    );
    assert!(
        took < bound,
        "a password grant mid-statement when PostgreSQL hung took {took:?}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "{TEST}: the grant that was mid-statement answered 503 after {took:?}"
    );
    server.assert_running();

    drop(frozen); // SIGCONT
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("ROLLBACK");
    let _ = locker.close().await;
    let resumed = Instant::now();
    while http.get(&base, "/readyz").await.map(|r| r.status) != Ok(200) {
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "/readyz not 200 within 30 s of SIGCONT:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{TEST}: ready again {:?} after SIGCONT",
        resumed.elapsed()
    );
    // Nothing was consumed or revoked by the hang: both families still rotate.
    http.must(http.me_request(&base, &access))
        .await
        .expect(200, "/v1/me after the hang");
    http.must(http.refresh_request(&base, &refresh))
        .await
        .expect(200, "refresh after the hang");
    http.must(http.refresh_request(&base, &spare_refresh))
        .await
        .expect(200, "refresh of the token presented during the hang");
    http.token_login(&base, &user).await;
    server.assert_running();
    server.assert_log_clean();
}

/// What a Redis that keeps nothing on disk costs when it restarts: every session and refresh
/// family is gone (refused, never a 500), and so are the feed's events; the feed's cursor
/// still only grows, and a running instance still refuses what it saw revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_without_persistence_forgets_sessions_but_fails_closed() {
    if !on_path("redis-server") {
        return skip(
            "redis_without_persistence",
            "no redis-server (apt-get install redis-server)",
        );
    }
    let mut redis = tokio::task::block_in_place(|| ThrowawayRedis::start_new(false));
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let database = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let config = config(port, &issuer, &database, Some((&redis.url(), "latchkey:")));
    let mut server = Server::start(dir.path(), "volatile", port, &config);
    let http = Http::new();
    server.wait_ready(&http).await;
    let base = server.url.clone();

    let user = unique("volatile-");
    http.sign_up(&base, &user).await;
    let (access, refresh) = http.token_login(&base, &user).await;
    let (cookie, _, _) = http.cookie_login(&base, &user).await;
    let (revoked_access, revoked_refresh) = http.token_login(&base, &user).await;
    http.must(http.revoke_request(&base, &revoked_refresh))
        .await
        .expect(200, "revoke");
    let feed = http.get(&base, "/v1/revocations").await.expect("feed");
    let cursor_before = feed.body["cursor"].as_i64().expect("cursor");
    assert_eq!(
        feed.body["revoked"].as_array().map(Vec::len),
        Some(1),
        "{}",
        feed.body
    );

    tokio::task::block_in_place(|| {
        redis.kill();
        redis.start();
    });
    // Back without a restart of latchkey.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(&base, "/readyz").await.map(|r| r.status) != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "never ready again:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything in Redis is gone: refused, never accepted, never a 500.
    http.must(http.me_request(&base, &access))
        .await
        .expect(401, "/v1/me after the loss");
    http.must(http.refresh_request(&base, &refresh))
        .await
        .expect(400, "refresh after the loss");
    http.must(http.session_request(&base, &cookie))
        .await
        .expect(401, "cookie after the loss");
    // The feed lost its event, but this instance's copy still refuses the revoked token.
    let feed = http.get(&base, "/v1/revocations").await.expect("feed");
    assert_eq!(
        feed.body["revoked"].as_array().map(Vec::len),
        Some(0),
        "{}",
        feed.body
    );
    http.must(http.authorize_request(&base, &revoked_access))
        .await
        .expect(401, "forward auth of a token revoked before the loss");
    // New revocations get cursors above every one handed out before.
    let (_, refresh) = http.token_login(&base, &user).await;
    http.must(http.revoke_request(&base, &refresh))
        .await
        .expect(200, "revoke");
    let feed = http
        .get(&base, &format!("/v1/revocations?after={cursor_before}"))
        .await
        .expect("feed");
    assert_eq!(
        feed.body["revoked"].as_array().map(Vec::len),
        Some(1),
        "a revocation after the loss got a cursor at or below {cursor_before}: {}",
        feed.body
    );
    server.assert_running();
    server.assert_log_clean();
}

#[test]
fn database_urls_are_rewritten() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
