//! The conformance suite against every backend available without outside services.
use latchkey_store::conformance::TestStore;
use latchkey_store::testing::{cannot_run, service_url};
use std::sync::Arc;

mod memory {
    use super::*;
    latchkey_store::store_conformance_tests!(async {
        TestStore::new(Arc::new(latchkey_store::MemoryStore::new()))
    });
}

mod sqlite {
    use super::*;

    async fn fresh() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
        let store = latchkey_store::SqliteStore::connect(&url)
            .await
            .expect("open SQLite");
        TestStore {
            store: Arc::new(store),
            guard: Box::new(dir),
        }
    }

    latchkey_store::store_conformance_tests!(fresh());

    /// Several processes started at once on a fresh file (each its own connections and
    /// runtime, as separate processes would be) all open and migrate it.
    #[test]
    fn concurrent_first_starts_on_one_fresh_file_all_succeed() {
        for round in 0..8 {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
            let start = Arc::new(std::sync::Barrier::new(4));
            let starters: Vec<_> = (0..4)
                .map(|_| {
                    let (url, start) = (url.clone(), start.clone());
                    std::thread::spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        start.wait();
                        runtime.block_on(async {
                            latchkey_store::SqliteStore::connect(&url)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        })
                    })
                })
                .collect();
            for starter in starters {
                let result = starter.join().expect("thread");
                assert!(result.is_ok(), "round {round}: {result:?}");
            }
        }
    }
}

/// Needs a PostgreSQL server: `LATCHKEY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test`.
/// Each test gets a schema of its own, dropped afterwards. Without the variable every test says
/// it was skipped and passes, unless `LATCHKEY_REQUIRE_SERVICES=1` (CI), where it fails.
mod postgres {
    use super::*;
    use latchkey_store::postgres::TestSchema;

    const URL_VAR: &str = "LATCHKEY_TEST_POSTGRES_URL";

    /// A store in a fresh schema, or `None` when no server is configured.
    async fn fresh() -> Option<TestStore> {
        let url = service_url(
            URL_VAR,
            "postgres",
            "postgres://postgres@127.0.0.1:5432/test",
        )?;
        let (store, schema) = TestSchema::create(&url).await.unwrap_or_else(|e| {
            panic!(
                "open PostgreSQL at {}: {e}",
                latchkey_store::redact_url(&url)
            )
        });
        Some(TestStore {
            store: Arc::new(store),
            guard: Box::new(schema),
        })
    }

    // Without a server, `return` ends the test right there (it is expanded into the test's body).
    latchkey_store::store_conformance_tests!(match fresh().await {
        Some(store) => std::future::ready(store),
        None => return,
    });

    /// The race at five times the suite's rounds: 50 000 concurrent presentations over 1 000
    /// rounds, one winner each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rotation_race_has_one_winner_over_1000_rounds() {
        let Some(test_store) = fresh().await else {
            return;
        };
        latchkey_store::conformance::rotation_race(test_store.store.clone(), 1000).await;
        drop(test_store);
    }
}

/// Needs a Redis server: `LATCHKEY_TEST_REDIS_URL=redis://127.0.0.1:6379`. Sessions, refresh
/// families and the feed go to Redis, under a key prefix of each test's own
/// (`latchkey-test:{random}:`), deleted afterwards; users and keys go to an in-memory SQL
/// stand-in. Without the variable every test says it was skipped and passes, unless
/// `LATCHKEY_REQUIRE_SERVICES=1` (CI), where it fails.
mod redis_backend {
    use super::*;
    use latchkey_store::{MemoryStore, RedisStore, Store, StoreError};
    use std::io::Write;
    use std::time::{Duration, Instant};

    const URL_VAR: &str = "LATCHKEY_TEST_REDIS_URL";

    fn redis_url() -> Option<String> {
        service_url(URL_VAR, "redis", "redis://127.0.0.1:6379")
    }

    fn blocking_connection(url: &str) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    /// Every key under `prefix` (SCAN, never KEYS: the server may be shared).
    fn keys_under(conn: &mut redis::Connection, prefix: &str) -> redis::RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query(conn)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    fn unique_prefix() -> String {
        format!("latchkey-test:{}:", uuid::Uuid::new_v4().simple())
    }

    /// A store on a fresh prefix, or `None` when no server is configured.
    async fn fresh() -> Option<(TestStore, Arc<RedisStore>)> {
        let url = redis_url()?;
        // The guard exists before the first key does.
        let guard = latchkey_store::testing::RedisPrefix::new(&url);
        let store = RedisStore::new(Arc::new(MemoryStore::new()), &url, guard.prefix())
            .await
            .unwrap_or_else(|e| panic!("open Redis at {}: {e}", latchkey_store::redact_url(&url)));
        let store = Arc::new(store);
        let test_store = TestStore {
            store: store.clone(),
            guard: Box::new(guard),
        };
        Some((test_store, store))
    }

    // Without a server, `return` ends the test right there (it is expanded into the test's body).
    latchkey_store::store_conformance_tests!(match fresh().await {
        Some((store, _)) => std::future::ready(store),
        None => return,
    });

    /// The race at five times the suite's rounds: 50 000 concurrent presentations over 1 000
    /// rounds, one winner each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rotation_race_has_one_winner_over_1000_rounds() {
        let Some((test_store, _)) = fresh().await else {
            return;
        };
        latchkey_store::conformance::rotation_race(test_store.store.clone(), 1000).await;
        drop(test_store);
    }

    /// Every key a session, a refresh family and a revocation leave behind carries a TTL,
    /// except the cursor counter (which must never go backwards); the guard removes them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_key_expires_and_the_guard_removes_them() {
        use latchkey_core::{
            NewRefreshToken, Revocation, RevokeReason, Secret, Session, SessionId, SessionKind,
            UserId,
        };
        let Some((test_store, store)) = fresh().await else {
            return;
        };
        let now = time::OffsetDateTime::now_utc();
        let user = UserId::new();
        store
            .create_user(&latchkey_core::User {
                id: user,
                username: format!("u{}", user.0.simple()),
                password_hash: "x".into(),
                created_at: now,
                banned_at: None,
                session_epoch: 0,
            })
            .await
            .expect("create user");
        let cookie = Session {
            id: SessionId::new(),
            user_id: user,
            kind: SessionKind::Cookie,
            client_id: None,
            scope: None,
            secret_hash: Some(Secret::generate().hash()),
            csrf_hash: Some(Secret::generate().hash()),
            created_at: now,
            last_seen_at: now,
            expires_at: now + time::Duration::days(7),
            revoked_at: None,
            revoke_reason: None,
            user_agent: None,
            ip: None,
            epoch: 0,
            parent_id: None,
        };
        let family = Session {
            id: SessionId::new(),
            kind: SessionKind::Token,
            client_id: Some("spa".into()),
            secret_hash: None,
            csrf_hash: None,
            ..cookie.clone()
        };
        let token = |at| NewRefreshToken {
            hash: Secret::generate().hash(),
            session_id: family.id,
            client_id: "spa".into(),
            issued_at: at,
        };
        let first = token(now);
        assert_eq!(
            store.create_session(&cookie, None).await.expect("create"),
            latchkey_store::CreateOutcome::Created
        );
        assert_eq!(
            store
                .create_session(&family, Some(&first))
                .await
                .expect("create"),
            latchkey_store::CreateOutcome::Created
        );
        let second = token(now);
        store
            .rotate_refresh_token(&first.hash, &second, Some(&[1, 2, 3]), now)
            .await
            .expect("rotate");
        let revocation = Revocation {
            reason: RevokeReason::Logout,
            at: now,
            access_ttl: time::Duration::minutes(15),
        };
        assert!(
            store
                .revoke_session(cookie.id, &revocation)
                .await
                .expect("revoke")
        );

        let prefix = store.prefix().to_string();
        let url = redis_url().expect("configured");
        let mut conn = blocking_connection(&url).expect("connect");
        let keys = keys_under(&mut conn, &prefix).expect("scan");
        let week = 7 * 24 * 3600 * 1000;
        let mut kinds: Vec<String> = Vec::new();
        for key in &keys {
            let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).expect("pttl");
            let kind = key[prefix.len()..]
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            if key == &format!("{prefix}feed:seq") {
                assert_eq!(ttl, -1, "the cursor counter never expires");
                kinds.push("feed:seq".into());
                continue;
            }
            assert!(ttl > 0, "{key} has no TTL ({ttl})");
            // Sessions and families: about a week plus the margin; the feed: minutes.
            assert!(ttl <= week + 2 * 3600 * 1000, "{key}: TTL {ttl} ms");
            kinds.push(kind);
        }
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds,
            ["feed", "feed:seq", "rt", "s", "sec", "sessions", "u", "ue"],
            "{keys:?}"
        );
        let feed_ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}feed"))
            .query(&mut conn)
            .expect("pttl");
        assert!(feed_ttl <= (15 + 60) * 60 * 1000, "feed TTL {feed_ttl} ms");

        drop(test_store);
        let left = keys_under(&mut conn, &prefix).expect("scan");
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// An epoch advance cut between its SQL step and its Redis step (the SQL commit stands, the
    /// script never ran) leaves the user banned with the new epoch in SQL. A login that read the
    /// old epoch is still refused (creation checks the SQL row first), and retrying the advance
    /// completes it: the old session is revoked and no longer rotates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_advance_cut_after_its_sql_step_is_completed_by_a_retry() {
        use latchkey_core::{
            NewRefreshToken, Revocation, RevokeReason, Secret, Session, SessionId, SessionKind,
            User, UserId,
        };
        use latchkey_store::testing::{FailWhen, FlakyStore};
        use latchkey_store::{CreateOutcome, RotateOutcome, UserChange};
        let Some(url) = redis_url() else {
            return;
        };
        let guard = latchkey_store::testing::RedisPrefix::new(&url);
        let sql = Arc::new(FlakyStore::new(Arc::new(MemoryStore::new())));
        let store = RedisStore::new(sql.clone(), &url, guard.prefix())
            .await
            .expect("connect");
        let now = time::OffsetDateTime::now_utc();
        let user = User {
            id: UserId::new(),
            username: "cut".into(),
            password_hash: "x".into(),
            created_at: now,
            banned_at: None,
            session_epoch: 0,
        };
        store.create_user(&user).await.expect("create user");
        let session = |epoch| Session {
            id: SessionId::new(),
            user_id: user.id,
            kind: SessionKind::Token,
            client_id: Some("spa".into()),
            scope: None,
            secret_hash: None,
            csrf_hash: None,
            created_at: now,
            last_seen_at: now,
            expires_at: now + time::Duration::days(1),
            revoked_at: None,
            revoke_reason: None,
            user_agent: None,
            ip: None,
            epoch,
            parent_id: None,
        };
        let token = |s: &Session| NewRefreshToken {
            hash: Secret::generate().hash(),
            session_id: s.id,
            client_id: "spa".into(),
            issued_at: now,
        };
        let old = session(0);
        let first = token(&old);
        assert_eq!(
            store
                .create_session(&old, Some(&first))
                .await
                .expect("create"),
            CreateOutcome::Created
        );
        let ban = Revocation {
            reason: RevokeReason::Banned,
            at: now,
            access_ttl: time::Duration::minutes(15),
        };
        sql.fail_nth_write(1, FailWhen::AfterCommit);
        assert!(matches!(
            store
                .advance_user_epoch(user.id, UserChange::Ban(now), None, &ban)
                .await,
            Err(StoreError::Unavailable(_))
        ));
        let in_sql = store
            .user_by_id(user.id)
            .await
            .expect("get")
            .expect("exists");
        assert!(in_sql.is_banned());
        assert_eq!(in_sql.session_epoch, 1);
        // The gap: Redis has not revoked it yet (the server refuses it at every use, reading
        // the SQL row); a login that read the old epoch gets nothing.
        assert!(
            store
                .session(old.id)
                .await
                .expect("get")
                .expect("exists")
                .is_live(now)
        );
        assert_eq!(
            store
                .create_session(&session(0), None)
                .await
                .expect("create"),
            CreateOutcome::UserChanged
        );
        let done = store
            .advance_user_epoch(user.id, UserChange::Ban(now), None, &ban)
            .await
            .expect("retry")
            .expect("exists");
        assert_eq!(done.epoch, 2);
        assert_eq!(done.revoked, vec![old.id]);
        assert!(
            !store
                .session(old.id)
                .await
                .expect("get")
                .expect("exists")
                .is_live(now)
        );
        let next = token(&old);
        assert_eq!(
            store
                .rotate_refresh_token(&first.hash, &next, None, now)
                .await
                .expect("rotate"),
            RotateOutcome::NotRotated
        );
    }

    /// A `redis-server` of the test's own, on a free loopback port, killed when dropped.
    struct OwnRedis {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl OwnRedis {
        fn start(port: Option<u16>) -> Option<Self> {
            let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())?;
            let port = match port {
                Some(port) => port,
                None => std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("free port")
                    .port(),
            };
            let dir = tempfile::tempdir().expect("temp dir");
            let child = std::process::Command::new(binary)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--logfile", ""])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start redis-server");
            let server = Self {
                child,
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while blocking_connection(&server.url())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_err()
            {
                assert!(Instant::now() < deadline, "own redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(server)
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Fail closed, heal by itself: while Redis is down every call answers `Unavailable`
    /// within seconds; once it is back the same store works again without a restart. A
    /// Redis that came back empty (no persistence) still never hands out a feed cursor
    /// below one already served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_outage_fails_closed_and_heals() {
        use latchkey_core::{Revocation, RevokeReason, Session, SessionId, SessionKind, UserId};
        if redis_url().is_none() {
            return;
        }
        let Some(server) = OwnRedis::start(None) else {
            return cannot_run(
                "redis outage",
                "needs the redis-server binary (apt-get install redis-server)",
            );
        };
        let url = server.url();
        let store = RedisStore::new(Arc::new(MemoryStore::new()), &url, &unique_prefix())
            .await
            .expect("connect");
        let now = time::OffsetDateTime::now_utc();
        let user = UserId::new();
        store
            .create_user(&latchkey_core::User {
                id: user,
                username: format!("u{}", user.0.simple()),
                password_hash: "x".into(),
                created_at: now,
                banned_at: None,
                session_epoch: 0,
            })
            .await
            .expect("create user");
        let session = || Session {
            id: SessionId::new(),
            user_id: user,
            kind: SessionKind::Token,
            client_id: Some("spa".into()),
            scope: None,
            secret_hash: None,
            csrf_hash: None,
            created_at: now,
            last_seen_at: now,
            expires_at: now + time::Duration::days(1),
            revoked_at: None,
            revoke_reason: None,
            user_agent: None,
            ip: None,
            epoch: 0,
            parent_id: None,
        };
        let revocation = Revocation {
            reason: RevokeReason::Admin,
            at: now,
            access_ttl: time::Duration::minutes(15),
        };
        let before = session();
        assert_eq!(
            store.create_session(&before, None).await.expect("create"),
            latchkey_store::CreateOutcome::Created
        );
        assert!(
            store
                .revoke_session(before.id, &revocation)
                .await
                .expect("revoke")
        );
        let first_cursor = store.revocations_after(0, 10, now).await.expect("feed")[0].cursor;

        // Hung (SIGSTOP): the response timeout turns the wait into `Unavailable`.
        let signal = |name: &str, pid: u32| {
            let status = std::process::Command::new("kill")
                .args([name, &pid.to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill {name} {pid}");
        };
        let pid = server.child.id();
        signal("-STOP", pid);
        let started = Instant::now();
        let result = store.session(before.id).await;
        let hung_for = started.elapsed();
        signal("-CONT", pid);
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(hung_for < Duration::from_secs(5), "took {hung_for:?}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while store.session(before.id).await.is_err() {
            assert!(Instant::now() < deadline, "the store did not recover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = writeln!(
            std::io::stderr(),
            "hung Redis answered Unavailable after {hung_for:?}"
        );

        // Gone: connection refused, at once.
        let port = server.port;
        drop(server);
        for _ in 0..3 {
            let started = Instant::now();
            let result = store.session(before.id).await;
            let down_for = started.elapsed();
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "{result:?}"
            );
            assert!(down_for < Duration::from_secs(5), "took {down_for:?}");
            let _ = writeln!(
                std::io::stderr(),
                "stopped Redis answered Unavailable after {down_for:?}"
            );
        }
        assert!(matches!(
            store.touch_session(before.id, now, now).await,
            Err(StoreError::Unavailable(_))
        ));

        let _server = OwnRedis::start(Some(port)).expect("restart redis-server");
        let restarted = Instant::now();
        while store.ping().await.is_err() {
            assert!(
                restarted.elapsed() < Duration::from_secs(15),
                "the store did not reconnect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = writeln!(
            std::io::stderr(),
            "reconnected {:?} after Redis came back",
            restarted.elapsed()
        );
        // The data went with the server: nothing is authenticated from thin air.
        assert_eq!(store.session(before.id).await.expect("get"), None);
        let after = session();
        assert_eq!(
            store.create_session(&after, None).await.expect("create"),
            latchkey_store::CreateOutcome::Created
        );
        assert!(
            store
                .revoke_session(after.id, &revocation)
                .await
                .expect("revoke")
        );
        let events = store.revocations_after(0, 10, now).await.expect("feed");
        assert_eq!(events.len(), 1);
        assert!(
            events[0].cursor > first_cursor,
            "cursor went back: {} after {first_cursor}",
            events[0].cursor
        );
    }

    /// `rediss://`: a `redis-server` of the test's own speaking TLS only, with a self-signed
    /// certificate made by `openssl` in the test's temporary directory. Trusting that
    /// certificate as the CA, the store connects and works; with the system's CAs (which do
    /// not know it), it is refused: the certificate is checked, not just encrypted to.
    #[tokio::test]
    async fn rediss_connects_with_tls_and_checks_the_certificate() {
        use latchkey_core::{Session, SessionId, SessionKind, UserId};
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let openssl = ["/usr/bin/openssl", "/usr/local/bin/openssl"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let (Some(binary), Some(openssl)) = (binary, openssl) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (rediss): needs the redis-server and openssl binaries"
            );
            return;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name);
        let (ca_cert, cert, key) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
        // A throwaway CA, and a server certificate for 127.0.0.1 signed by it.
        std::fs::write(
            path("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write extensions");
        let openssl_ok = |args: &[&str]| {
            std::process::Command::new(openssl)
                .args(args)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(openssl_ok(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=latchkey test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]));
        assert!(openssl_ok(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ]));
        assert!(openssl_ok(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_cert)
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        // Stopped by its PID (the child handle) when the test ends, however it ends.
        struct Stop(std::process::Child);
        impl Drop for Stop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _server = Stop(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "TLS redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("rediss://127.0.0.1:{port}");
        let ca = std::fs::read(&ca_cert).expect("read CA");
        let sql = Arc::new(MemoryStore::new());
        let now = time::OffsetDateTime::now_utc();
        let user = UserId::new();
        sql.create_user(&latchkey_core::User {
            id: user,
            username: format!("u{}", user.0.simple()),
            password_hash: "x".into(),
            created_at: now,
            banned_at: None,
            session_epoch: 0,
        })
        .await
        .expect("create user");
        let store = RedisStore::with_tls_ca(sql, &url, &unique_prefix(), Some(&ca))
            .await
            .expect("rediss:// with the server's CA connects");
        let session = Session {
            id: SessionId::new(),
            user_id: user,
            kind: SessionKind::Cookie,
            client_id: None,
            scope: None,
            secret_hash: Some(latchkey_core::Secret::generate().hash()),
            csrf_hash: None,
            created_at: now,
            last_seen_at: now,
            expires_at: now + time::Duration::hours(1),
            revoked_at: None,
            revoke_reason: None,
            user_agent: None,
            ip: None,
            epoch: 0,
            parent_id: None,
        };
        assert_eq!(
            store
                .create_session(&session, None)
                .await
                .expect("write over TLS"),
            latchkey_store::CreateOutcome::Created
        );
        assert!(store.session(session.id).await.expect("read").is_some());

        let untrusted = RedisStore::new(Arc::new(MemoryStore::new()), &url, &unique_prefix()).await;
        assert!(
            matches!(untrusted, Err(StoreError::Unavailable(_))),
            "a certificate no system CA signed must be refused: {untrusted:?}"
        );
        // Plain redis:// to a TLS-only port does not work either.
        let plain = RedisStore::new(
            Arc::new(MemoryStore::new()),
            &format!("redis://127.0.0.1:{port}"),
            &unique_prefix(),
        )
        .await;
        assert!(plain.is_err());
    }

    /// A Redis that is not there fails closed, quickly: `Unavailable`, never a hang.
    #[tokio::test]
    async fn unreachable_redis_is_unavailable_quickly() {
        let started = Instant::now();
        let result = RedisStore::new(
            Arc::new(MemoryStore::new()),
            "redis://127.0.0.1:1",
            &unique_prefix(),
        )
        .await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}
