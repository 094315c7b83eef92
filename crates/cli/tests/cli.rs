//! The `latchkey` binary as an operator runs it: every command in a temporary directory with
//! its own SQLite database, checking exit codes, human and JSON output, and one-line errors.
use latchkey_core::{RevokeReason, Secret, Session, SessionId, SessionKind, UserId};
use latchkey_store::Store;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
/// Cheap Argon2 so tests do not spend their time hashing.
const CHEAP: &str = "[password]\nargon2_memory_kib = 64\nargon2_iterations = 1\n";
const PASSWORD: &str = "tr0ub4dor-and-3-horses";
const NEW_PASSWORD: &str = "correct-horse-battery-staple";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Exit `code` with exactly one line on stderr, `latchkey: error: …` containing `needle`,
    /// and nothing on stdout.
    fn fails(self, code: i32, needle: &str) -> Self {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with("latchkey: warning:"))
            .collect();
        assert_eq!(
            self.code, code,
            "exit code; stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        assert_eq!(
            lines.len(),
            1,
            "one line of error expected, got: {:?}",
            self.stderr
        );
        assert!(
            lines[0].starts_with("latchkey: error: "),
            "error line: {:?}",
            lines[0]
        );
        assert!(
            lines[0].contains(needle),
            "error line {:?} should mention {needle:?}",
            lines[0]
        );
        for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(
                !self.stderr.contains(bad),
                "panic text in {:?}",
                self.stderr
            );
        }
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout on failure: {:?}",
            self.stdout
        );
        self
    }
}

/// A working directory with a latchkey.toml and a database of its own.
struct Env {
    dir: tempfile::TempDir,
    /// Everything every command printed, to check no password ever appears.
    printed: std::cell::RefCell<String>,
}

impl Env {
    fn new() -> Self {
        Self::with_config("")
    }

    fn with_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("latchkey.toml"),
            format!("database = \"sqlite://latchkey.db\"\n{extra}\n{CHEAP}"),
        )
        .expect("write config");
        Self {
            dir,
            printed: Default::default(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn db_url(&self) -> String {
        format!("sqlite://{}", self.path().join("latchkey.db").display())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.path());
        // The test runner's own LATCHKEY_* variables (CI switches) are not configuration.
        for (key, _) in std::env::vars() {
            if key.starts_with("LATCHKEY_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        // Even with backtraces asked for, no failure may print one.
        cmd.env("RUST_BACKTRACE", "1");
        cmd
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Out {
        let mut cmd = self.command(args);
        cmd.envs(envs.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run latchkey");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        let output = child.wait_with_output().expect("wait for latchkey");
        let out = Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let mut printed = self.printed.borrow_mut();
        printed.push_str(&out.stdout);
        printed.push_str(&out.stderr);
        out
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None, &[])
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        self.run_with(args, Some(stdin), &[])
    }

    /// Adds a user with [`PASSWORD`]; returns its id.
    fn add_user(&self, name: &str) -> String {
        let out = self
            .run_stdin(
                &["user", "add", name, "--password-stdin", "--json"],
                &format!("{PASSWORD}\n"),
            )
            .ok();
        out.json()["id"].as_str().expect("id").to_string()
    }

    fn assert_no_password_printed(&self) {
        let printed = self.printed.borrow();
        for secret in [PASSWORD, NEW_PASSWORD] {
            assert!(
                !printed.contains(secret),
                "a password was printed:\n{printed}"
            );
        }
    }

    fn store<T>(&self, f: impl AsyncFnOnce(Arc<dyn Store>) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = self.db_url();
        rt.block_on(async move {
            let store = latchkey_store::connect(&url).await.expect("open store");
            f(store).await
        })
    }

    /// A live cookie session of `user_id`, made directly in the store (as a login would).
    fn add_session(&self, user_id: &str) -> String {
        let user_id = UserId::parse(user_id).expect("user id");
        self.store(async move |store| {
            let now = OffsetDateTime::now_utc();
            let secret = Secret::generate();
            let epoch = store
                .user_by_id(user_id)
                .await
                .expect("read user")
                .expect("user exists")
                .session_epoch;
            let session = Session {
                id: SessionId::new(),
                user_id,
                kind: SessionKind::Cookie,
                client_id: None,
                scope: None,
                secret_hash: Some(secret.hash()),
                csrf_hash: Some(Secret::generate().hash()),
                created_at: now,
                last_seen_at: now,
                expires_at: now + time::Duration::days(1),
                revoked_at: None,
                revoke_reason: None,
                user_agent: Some("cli-test/1.0".into()),
                ip: Some("192.0.2.7".into()),
                epoch,
                parent_id: None,
            };
            assert_eq!(
                store
                    .create_session(&session, None)
                    .await
                    .expect("create session"),
                latchkey_store::CreateOutcome::Created
            );
            session.id.to_string()
        })
    }

    fn session(&self, sid: &str) -> Session {
        let sid = SessionId::parse(sid).expect("sid");
        self.store(async move |store| store.session(sid).await.expect("read").expect("exists"))
    }
}

fn uuid_like(text: &str) -> bool {
    UserId::parse(text).is_some()
}

#[test]
fn help_explains_commands_and_exit_codes() {
    let env = Env::new();
    let out = env.run(&["--help"]).ok();
    for needle in [
        "serve",
        "migrate",
        "config",
        "user",
        "session",
        "keys",
        "Exit codes",
        "3  not found",
        "4  conflict",
        "--json",
    ] {
        assert!(out.stdout.contains(needle), "--help lacks {needle:?}");
    }
    for path in [
        &["serve"][..],
        &["migrate"],
        &["config", "check"],
        &["user"],
        &["user", "add"],
        &["user", "list"],
        &["user", "show"],
        &["user", "ban"],
        &["user", "unban"],
        &["user", "set-password"],
        &["user", "roles"],
        &["session", "list"],
        &["session", "revoke"],
        &["keys", "list"],
        &["keys", "rotate"],
    ] {
        let mut args = path.to_vec();
        args.push("--help");
        let out = env.run(&args).ok();
        assert!(
            out.stdout.contains("Usage: latchkey"),
            "{path:?} --help: {}",
            out.stdout
        );
        assert!(out.stdout.contains("--config"), "{path:?} --help");
        if path == ["serve"] {
            // serve has its own: no users or sessions to look up, a port that may be taken.
            assert!(out.stdout.contains("Exit codes: 0 stopped"), "serve --help");
            assert!(out.stdout.contains("port in use"), "serve --help");
            assert!(!out.stdout.contains("no such user"), "serve --help");
        } else if path != ["user"] {
            assert!(out.stdout.contains("Exit codes: 0 ok"), "{path:?} --help");
        }
    }
    let add = env.run(&["user", "add", "--help"]).ok();
    assert!(add.stdout.contains("--password-stdin"));
    let version = env.run(&["--version"]).ok();
    assert!(version.stdout.starts_with("latchkey "));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let env = Env::new();
    // Bare `latchkey` shows the help (exit 2).
    let bare = env.run(&[]);
    assert_eq!(bare.code, 2);
    assert!(bare.stderr.contains("Usage: latchkey"));
    for (args, needle) in [
        (&["frobnicate"][..], "frobnicate"),
        (
            &["user"],
            "commands: add, list, show, ban, unban, set-password, roles",
        ),
        (&["user", "add"], "<USERNAME>"),
        (&["user", "lst"], "'list'"),
        (&["user", "list", "--limit", "0"], "--limit"),
        (&["user", "list", "--limit", "many"], "--limit"),
        (&["user", "show"], "<USER>"),
        (&["user", "add", "bob", "--password", "x"], "--password"),
        (&["session", "list"], "--user"),
        (&["session", "revoke"], "<SID|--user <USER>>"),
        (
            &["session", "revoke", "x", "--user", "y"],
            "cannot be used with",
        ),
        (&["keys", "list", "--bogus"], "--bogus"),
        (&["config", "check", "extra"], "extra"),
        (&["--config"], "--config"),
    ] {
        env.run(args).fails(2, needle);
    }
    // Malformed values found after parsing are usage errors too.
    env.run(&["session", "revoke", "not-a-session"])
        .fails(2, "is not a session id");
    env.run(&["user", "show", "two words"])
        .fails(2, "neither a user id nor a valid username");
    env.run(&["user", "add", "two words", "--password-stdin"])
        .fails(2, "invalid username");
    env.run(&["--config", "missing.toml", "user", "list"])
        .fails(2, "missing.toml does not exist");
}

#[test]
fn migrate_says_what_it_did() {
    let env = Env::new();
    let first = env.run(&["migrate"]).ok();
    assert!(
        first.stdout.contains("created the database latchkey.db"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("applied "), "{}", first.stdout);
    assert!(first.stdout.contains("0001  initial"), "{}", first.stdout);
    assert!(env.path().join("latchkey.db").exists());
    let again = env.run(&["migrate"]).ok();
    assert!(
        again.stdout.contains("is up to date") && again.stdout.contains("nothing to do"),
        "{}",
        again.stdout
    );
    let json = env.run(&["migrate", "--json"]).ok().json();
    assert_eq!(json["created"], false);
    assert_eq!(json["applied"], Value::Array(vec![]));
    assert!(json["version"].as_i64().expect("version") >= 2);

    let fresh = Env::new();
    let json = fresh.run(&["migrate", "--json"]).ok().json();
    assert_eq!(json["created"], true);
    assert!(json["applied"].as_array().expect("applied").len() >= 2);
    assert_eq!(json["applied"][0]["version"], 1);
}

#[test]
fn users_are_added_listed_and_shown() {
    let env = Env::new();
    let empty = env.run(&["user", "list"]).ok();
    assert!(empty.stdout.contains("no users yet"), "{}", empty.stdout);
    assert_eq!(
        env.run(&["user", "list", "--json"]).ok().json()["users"],
        Value::Array(vec![])
    );

    // Human output names the new id.
    let out = env
        .run_stdin(
            &["user", "add", "Alice", "--password-stdin"],
            &format!("{PASSWORD}\n"),
        )
        .ok();
    let line = out.stdout.trim();
    assert!(line.starts_with("created user alice with id "), "{line}");
    let alice = line.rsplit(' ').next().expect("id").to_string();
    assert!(uuid_like(&alice), "{alice}");
    // JSON output; a CRLF line end is not part of the password.
    let bob = env
        .run_stdin(
            &["user", "add", "bob", "--password-stdin", "--json"],
            &format!("{PASSWORD}\r\n"),
        )
        .ok()
        .json();
    assert_eq!(bob["username"], "bob");
    assert_eq!(bob["banned"], false);
    let bob_id = bob["id"].as_str().expect("id").to_string();

    // Taken, whatever the case: conflict.
    env.run_stdin(
        &["user", "add", "ALICE", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .fails(4, "username \"alice\" is taken");
    // Policy like sign-up; no password given; no terminal to prompt on.
    env.run_stdin(&["user", "add", "carol", "--password-stdin"], "short\n")
        .fails(
            2,
            "password rejected: password must be at least 8 characters",
        );
    env.run_stdin(&["user", "add", "carol", "--password-stdin"], "")
        .fails(2, "no password on standard input");
    env.run(&["user", "add", "carol"])
        .fails(2, "--password-stdin");
    env.run_stdin(
        &["user", "add", "carol", "--password-stdin"],
        "two\nlines-of-password\n",
    )
    .fails(2, "single line");

    let list = env.run(&["user", "list"]).ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    assert!(lines[0].starts_with("ID ") && lines[0].contains("USERNAME"));
    // Columns line up: USERNAME starts at the same place on every line.
    let col = lines[0].find("USERNAME").expect("header");
    assert_eq!(&lines[1][col..col + 5], "alice");
    assert_eq!(&lines[2][col..col + 3], "bob");

    let json = env.run(&["user", "list", "--json"]).ok().json();
    let users = json["users"].as_array().expect("users");
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["id"], alice.as_str());
    assert_eq!(json["next_after"], Value::Null);
    let page = env
        .run(&["user", "list", "--limit", "1", "--json"])
        .ok()
        .json();
    assert_eq!(page["users"].as_array().expect("users").len(), 1);
    assert_eq!(page["next_after"], "alice");
    let next = env
        .run(&["user", "list", "--after", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(next["users"][0]["username"], "bob");

    // By username (any case) or by id.
    let shown = env.run(&["user", "show", "ALICE"]).ok();
    assert!(shown.stdout.contains(&alice), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("banned         no"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("live sessions  0"),
        "{}",
        shown.stdout
    );
    let by_id = env.run(&["user", "show", &bob_id, "--json"]).ok().json();
    assert_eq!(by_id["username"], "bob");
    assert_eq!(by_id["live_sessions"], 0);

    env.run(&["user", "show", "nobody"])
        .fails(3, "no such user: \"nobody\"");
    env.run(&["user", "show", "01900000-0000-7000-8000-000000000000"])
        .fails(3, "no such user");
    env.run(&["user", "ban", "nobody"]).fails(3, "no such user");
    env.run(&["user", "unban", "nobody"])
        .fails(3, "no such user");
    env.run_stdin(
        &["user", "set-password", "nobody", "--password-stdin"],
        &format!("{NEW_PASSWORD}\n"),
    )
    .fails(3, "no such user");
    env.run(&["session", "list", "--user", "nobody"])
        .fails(3, "no such user");
    env.run(&["session", "revoke", "--user", "nobody"])
        .fails(3, "no such user");
    env.assert_no_password_printed();
}

#[test]
fn user_roles_are_shown_set_added_and_removed() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let session = env.add_session(&alice);

    let shown = env.run(&["user", "roles", "alice"]).ok();
    assert_eq!(shown.stdout.trim(), "(none)");
    let shown = env.run(&["user", "show", "alice"]).ok();
    assert!(
        shown.stdout.contains("roles          (none)"),
        "{}",
        shown.stdout
    );

    // Granting: no session is marked stale.
    let set = env
        .run(&["user", "roles", "alice", "--set", "reader,admin", "--json"])
        .ok()
        .json();
    assert_eq!(set["roles"], serde_json::json!(["admin", "reader"]));
    assert_eq!(set["previous"], serde_json::json!([]));
    assert_eq!(set["stale_sessions"], serde_json::json!([]));
    let added = env
        .run(&["user", "roles", "ALICE", "--add", "billing:read", "--json"])
        .ok()
        .json();
    assert_eq!(
        added["roles"],
        serde_json::json!(["admin", "billing:read", "reader"])
    );

    // Removing: the live session gets a "stale before" feed entry; nobody is logged out.
    let removed = env
        .run(&["user", "roles", &alice, "--remove", "admin", "--json"])
        .ok()
        .json();
    assert_eq!(
        removed["roles"],
        serde_json::json!(["billing:read", "reader"])
    );
    assert_eq!(
        removed["stale_sessions"],
        serde_json::json!([session.as_str()])
    );
    let text = env
        .run(&["user", "roles", "alice", "--remove", "reader"])
        .ok();
    assert!(text.stdout.contains("billing:read"), "{}", text.stdout);
    assert!(
        text.stdout.contains("stale in 1 session"),
        "{}",
        text.stdout
    );
    let feed = env.store(async |store| {
        store
            .revocations_after(0, 100, OffsetDateTime::now_utc())
            .await
            .expect("feed")
    });
    assert_eq!(feed.len(), 2);
    assert!(
        feed.iter()
            .all(|e| e.iat_before.is_some() && e.sid.to_string() == session)
    );
    let shown = env.run(&["user", "show", "alice", "--json"]).ok().json();
    assert_eq!(shown["roles"], serde_json::json!(["billing:read"]));
    assert_eq!(shown["live_sessions"], 1, "not logged out");

    // Clearing, bad names, unknown users, conflicting flags.
    let cleared = env
        .run(&["user", "roles", "alice", "--set", "", "--json"])
        .ok()
        .json();
    assert_eq!(cleared["roles"], serde_json::json!([]));
    env.run(&["user", "roles", "alice", "--add", "two words"])
        .fails(2, "invalid role name");
    env.run(&["user", "roles", "alice", "--set", "ok,bad/name"])
        .fails(2, "invalid role name");
    env.run(&["user", "roles", "nobody", "--add", "admin"])
        .fails(3, "no such user");
    let conflicting = env.run(&["user", "roles", "alice", "--set", "a", "--add", "b"]);
    assert_eq!(conflicting.code, 2, "{}", conflicting.stderr);
}

#[test]
fn ban_revokes_every_session_and_unban_lifts_it() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let bob = env.add_user("bob");
    let s1 = env.add_session(&alice);
    let s2 = env.add_session(&alice);
    let other = env.add_session(&bob);

    let list = env.run(&["session", "list", "--user", "alice"]).ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    assert!(lines[0].starts_with("SID") && lines[0].contains("USER AGENT"));
    assert!(list.stdout.contains(&s1) && list.stdout.contains(&s2));
    assert!(list.stdout.contains("cli-test/1.0") && list.stdout.contains("192.0.2.7"));
    let json = env
        .run(&["session", "list", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(json["user"]["id"], alice.as_str());
    assert_eq!(json["sessions"].as_array().expect("sessions").len(), 2);
    assert_eq!(json["sessions"][0]["kind"], "cookie");
    assert_eq!(
        env.run(&["user", "show", "alice", "--json"]).ok().json()["live_sessions"],
        2
    );

    let out = env.run(&["user", "ban", "alice"]).ok();
    assert!(
        out.stdout.contains("banned user alice") && out.stdout.contains("revoked 2 sessions"),
        "{}",
        out.stdout
    );
    for sid in [&s1, &s2] {
        let session = env.session(sid);
        assert!(session.is_revoked(), "{sid} still live");
        assert_eq!(session.revoke_reason, Some(RevokeReason::Banned));
    }
    assert!(!env.session(&other).is_revoked(), "bob's session untouched");
    let none = env.run(&["session", "list", "--user", "alice"]).ok();
    assert_eq!(none.stdout.trim(), "alice has no live sessions");
    let shown = env.run(&["user", "show", "alice", "--json"]).ok().json();
    assert_eq!(shown["banned"], true);
    assert!(shown["banned_at"].is_string());
    let listed = env.run(&["user", "list"]).ok();
    assert!(
        listed
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| !l.ends_with(" -")),
        "ban time shown: {}",
        listed.stdout
    );

    // Banning again is harmless; JSON lists what it revoked.
    let again = env.run(&["user", "ban", &alice, "--json"]).ok().json();
    assert_eq!(again["banned"], true);
    assert_eq!(again["revoked_sessions"], Value::Array(vec![]));

    let unban = env.run(&["user", "unban", "alice"]).ok();
    assert!(
        unban.stdout.starts_with("unbanned user alice"),
        "{}",
        unban.stdout
    );
    let json = env.run(&["user", "unban", "alice", "--json"]).ok().json();
    assert_eq!(json["banned"], false);
    assert_eq!(json["was_banned"], false);
    assert_eq!(
        env.run(&["user", "show", "alice", "--json"]).ok().json()["banned"],
        false
    );
    // The ban's revocations stay.
    assert!(env.session(&s1).is_revoked());
    env.assert_no_password_printed();
}

#[test]
fn set_password_changes_the_hash_and_revokes_sessions() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let s1 = env.add_session(&alice);
    let id = UserId::parse(&alice).expect("id");
    let before = env.store(async move |s| s.user_by_id(id).await.expect("read").expect("user"));

    env.run_stdin(
        &["user", "set-password", "alice", "--password-stdin"],
        "tiny\n",
    )
    .fails(2, "password rejected");
    assert!(
        !env.session(&s1).is_revoked(),
        "a refused change revokes nothing"
    );

    let out = env
        .run_stdin(
            &["user", "set-password", "alice", "--password-stdin"],
            &format!("{NEW_PASSWORD}\n"),
        )
        .ok();
    assert!(
        out.stdout.contains("set a new password for alice")
            && out.stdout.contains("revoked 1 session"),
        "{}",
        out.stdout
    );
    let session = env.session(&s1);
    assert_eq!(session.revoke_reason, Some(RevokeReason::PasswordChanged));
    let after = env.store(async move |s| s.user_by_id(id).await.expect("read").expect("user"));
    assert_ne!(before.password_hash, after.password_hash);
    // The new hash verifies the new password, not the old one.
    let passwords =
        latchkey_server::password::Passwords::new(&latchkey_server::config::PasswordConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..Default::default()
        })
        .expect("params");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    assert!(
        rt.block_on(passwords.verify(NEW_PASSWORD, Some(&after.password_hash)))
            .expect("verify")
    );
    assert!(
        !rt.block_on(passwords.verify(PASSWORD, Some(&after.password_hash)))
            .expect("verify")
    );

    let json = env
        .run_stdin(
            &["user", "set-password", &alice, "--password-stdin", "--json"],
            &format!("{NEW_PASSWORD}\n"),
        )
        .ok()
        .json();
    assert_eq!(json["id"], alice.as_str());
    assert_eq!(json["revoked_sessions"], Value::Array(vec![]));
    env.assert_no_password_printed();
}

#[test]
fn sessions_are_revoked_one_by_one_or_all() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let s1 = env.add_session(&alice);
    let s2 = env.add_session(&alice);
    let s3 = env.add_session(&alice);

    let out = env.run(&["session", "revoke", &s1]).ok();
    assert_eq!(out.stdout.trim(), format!("revoked session {s1}"));
    assert_eq!(env.session(&s1).revoke_reason, Some(RevokeReason::Admin));
    assert!(!env.session(&s2).is_revoked());
    let again = env.run(&["session", "revoke", &s1]).ok();
    assert!(again.stdout.contains("already revoked"), "{}", again.stdout);
    let json = env.run(&["session", "revoke", &s2, "--json"]).ok().json();
    assert_eq!(json["revoked"], true);
    assert_eq!(json["user_id"], alice.as_str());
    env.run(&["session", "revoke", "6f1c2d3e-0000-4000-8000-000000000000"])
        .fails(3, "no such session");

    let json = env
        .run(&["session", "revoke", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(
        json["revoked_sessions"],
        Value::Array(vec![s3.clone().into()])
    );
    assert!(env.session(&s3).is_revoked());
    let out = env.run(&["session", "revoke", "--user", "alice"]).ok();
    assert_eq!(out.stdout.trim(), "revoked 0 sessions of alice");
    let json = env
        .run(&["session", "list", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(json["sessions"], Value::Array(vec![]));
}

const ONE_ALGORITHM: &str = "[id_token]\nalgorithm = \"EdDSA\"";

#[test]
fn keys_rotate_then_list_shows_both() {
    // One algorithm for access and ID tokens here: one key per rotation (the ID-token key of
    // another algorithm is covered by the server's key tests).
    let env = Env::with_config(ONE_ALGORITHM);
    let empty = env.run(&["keys", "list"]).ok();
    assert!(
        empty.stdout.contains("no signing keys yet"),
        "{}",
        empty.stdout
    );
    assert_eq!(
        env.run(&["keys", "list", "--json"]).ok().json()["keys"],
        Value::Array(vec![])
    );

    // The first rotation on an empty store also creates the first key, as `serve` would.
    let out = env.run(&["keys", "rotate"]).ok();
    assert!(
        out.stdout.contains("the store had no signing key"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("published now; it signs from"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("(in 2m)"),
        "publish_delay default: {}",
        out.stdout
    );

    let list = env.run(&["keys", "list"]).ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    assert!(lines[0].starts_with("KID") && lines[0].contains("STATUS"));
    assert!(
        lines[1].contains("EdDSA") && lines[1].ends_with("active"),
        "{}",
        list.stdout
    );
    assert!(lines[2].contains("pending (signs in"), "{}", list.stdout);

    let json = env.run(&["keys", "list", "--json"]).ok().json();
    assert_eq!(json["algorithm"], "EdDSA");
    let keys = json["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["status"], "active");
    assert_eq!(keys[1]["status"], "pending");

    // With a key in place, a rotation adds exactly one.
    let rotated = env.run(&["keys", "rotate", "--json"]).ok().json();
    assert_eq!(rotated["first_key_created"], Value::Null);
    assert_eq!(rotated["algorithm"], "EdDSA");
    let json = env.run(&["keys", "list", "--json"]).ok().json();
    let keys = json["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[2]["kid"], rotated["kid"]);
    assert!(keys[2]["activates_at"].is_string());

    // No publish delay: the new key signs at once and the previous one retires.
    let now = Env::with_config(&format!("{ONE_ALGORITHM}\n[keys]\npublish_delay = \"0s\""));
    now.run(&["keys", "rotate"]).ok();
    let keys = now.run(&["keys", "list", "--json"]).ok().json();
    let statuses: Vec<&str> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["retiring", "active"]);
}

#[test]
fn config_check_shows_where_values_come_from() {
    let env = Env::with_config("admin_token = \"an-admin-token-of-some-length\"");
    let out = env
        .run_with(
            &["config", "check"],
            None,
            &[("LATCHKEY_REFRESH__REUSE_INTERVAL", "5s")],
        )
        .ok();
    assert!(
        out.stdout.starts_with("configuration is valid"),
        "{}",
        out.stdout
    );
    let row = |key: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no row for {key}: {}", out.stdout))
            .to_string()
    };
    assert!(row("password.argon2_memory_kib").contains("file latchkey.toml"));
    assert!(row("listen").ends_with("default"));
    assert!(row("issuer").contains("default (from listen)"));
    assert!(
        row("refresh.reuse_interval").ends_with("env LATCHKEY_REFRESH__REUSE_INTERVAL"),
        "{}",
        row("refresh.reuse_interval")
    );
    assert!(row("admin_token").contains("<redacted>"));
    assert!(!out.stdout.contains("an-admin-token-of-some-length"));

    let json = env
        .run_with(
            &["config", "check", "--json"],
            None,
            &[
                ("LATCHKEY_LOG__LEVEL", "debug"),
                ("LATCHKEY_NOT_A_KEY", "1"),
            ],
        )
        .ok();
    assert!(
        json.stderr
            .contains("latchkey: warning: environment variable LATCHKEY_NOT_A_KEY"),
        "{}",
        json.stderr
    );
    let json = json.json();
    assert_eq!(json["valid"], true);
    assert!(
        json["file"]
            .as_str()
            .expect("file")
            .ends_with("latchkey.toml")
    );
    assert_eq!(json["config"]["log"]["level"], "debug");
    assert_eq!(json["config"]["admin_token"], "<redacted>");
    assert_eq!(json["sources"]["log.level"]["source"], "env");
    assert_eq!(
        json["sources"]["log.level"]["variable"],
        "LATCHKEY_LOG__LEVEL"
    );
    assert_eq!(
        json["sources"]["password.argon2_iterations"]["source"],
        "file"
    );
    assert_eq!(json["sources"]["listen"]["source"], "default");
    assert_eq!(json["warnings"].as_array().expect("warnings").len(), 1);

    // Invalid: one line naming the key and where it was set; runtime failure.
    let bad = Env::with_config("listen = 5");
    bad.run(&["config", "check"])
        .fails(1, "configuration key `listen`");
    bad.run(&["user", "list"])
        .fails(1, "configuration key `listen`");
    // With --json, scripts still get a document on stdout (and exit 1).
    let out = bad.run(&["config", "check", "--json"]);
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    let doc = out.json();
    assert_eq!(doc["valid"], false);
    assert!(
        doc["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("configuration key `listen`")),
        "{doc}"
    );
    Env::new()
        .run_with(
            &["config", "check"],
            None,
            &[("LATCHKEY_REFRESH__TTL", "forever")],
        )
        .fails(1, "LATCHKEY_REFRESH__TTL");
}

/// `config check` says secrets are redacted: connection-URL passwords and every token and
/// client secret stay hidden in the table and in `--json`.
#[test]
fn config_check_never_prints_secrets() {
    let env = Env::new();
    std::fs::write(
        env.path().join("latchkey.toml"),
        format!(
            "database = \"postgres://latchkey:db-password-123@127.0.0.1:1/x?password=query-password-123\"\n\
             redis = \"redis://:redis-password-123@127.0.0.1:1\"\n\
             admin_token = \"admin-token-0123456789\"\n\
             feed_token = \"feed-token-0123456789\"\n\
             [[clients]]\nid = \"c\"\nkind = \"confidential\"\nsecret = \"client-secret-0123456789\"\naudience = \"api\"\n\
             {CHEAP}"
        ),
    )
    .expect("write config");
    let secrets = [
        "db-password-123",
        "query-password-123",
        "redis-password-123",
        "admin-token-0123456789",
        "feed-token-0123456789",
        "client-secret-0123456789",
    ];
    let table = env.run(&["config", "check"]).ok();
    let json = env.run(&["config", "check", "--json"]).ok();
    for out in [&table, &json] {
        for secret in secrets {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "{secret} printed: {}",
                out.stdout
            );
        }
    }
    assert!(
        table
            .stdout
            .contains("postgres://latchkey:***@127.0.0.1:1/x"),
        "{}",
        table.stdout
    );
    let json = json.json();
    assert_eq!(json["config"]["redis"], "redis://:***@127.0.0.1:1");
    assert_eq!(json["config"]["clients"][0]["secret"], "<redacted>");
}

#[test]
fn a_port_in_use_is_reported_before_the_store_is_touched() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    env.run_with(&["serve"], None, &[("LATCHKEY_LISTEN", &addr)])
        .fails(1, &format!("cannot listen on `listen` = {addr}"));
    assert!(
        !env.path().join("latchkey.db").exists(),
        "no store (and no signing key) was created for a server that could not start"
    );
}

#[test]
fn an_unreachable_store_is_one_line_and_exit_1() {
    let env = Env::new();
    std::fs::write(
        env.path().join("latchkey.toml"),
        format!("database = \"sqlite:///nonexistent-dir/x.db\"\n{CHEAP}"),
    )
    .expect("write config");
    let sid = "6f1c2d3e-0000-4000-8000-000000000000";
    for args in [
        &["migrate"][..],
        &["serve"],
        &["user", "list"],
        &["user", "show", "alice"],
        &["user", "ban", "alice"],
        &["user", "unban", "alice"],
        &["session", "list", "--user", "alice"],
        &["session", "revoke", sid],
        &["session", "revoke", "--user", "alice"],
        &["keys", "list"],
        &["keys", "rotate"],
    ] {
        // Any free port: `serve` binds before it opens the store.
        env.run_with(args, None, &[("LATCHKEY_LISTEN", "127.0.0.1:0")])
            .fails(1, "cannot open the database /nonexistent-dir/x.db");
    }
    for args in [
        &["user", "add", "alice", "--password-stdin"][..],
        &["user", "set-password", "alice", "--password-stdin"],
    ] {
        env.run_stdin(args, &format!("{PASSWORD}\n"))
            .fails(1, "cannot open the database");
    }
    // Not a database at all.
    let junk = Env::new();
    std::fs::write(junk.path().join("latchkey.db"), vec![b'x'; 4096]).expect("write");
    junk.run(&["user", "list"])
        .fails(1, "is not a SQLite database");
    env.assert_no_password_printed();
}

#[test]
fn a_locked_database_is_named_not_a_hang_or_a_trace() {
    let env = Env::new();
    env.add_user("alice");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = env.db_url();
    // Another process holding the write lock, as a stuck writer or a long backup would.
    let mut holder = rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .expect("lock");
        conn
    });
    let started = Instant::now();
    env.run_stdin(
        &["user", "add", "bob", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .fails(
        1,
        "database is locked: another process holds latchkey.db; stop it or retry",
    );
    env.run(&["user", "ban", "alice"])
        .fails(1, "database is locked");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up in bounded time"
    );
    // Reading still works beside the writer (WAL).
    env.run(&["user", "show", "alice"]).ok();
    rt.block_on(async {
        sqlx::query("ROLLBACK")
            .execute(&mut holder)
            .await
            .expect("unlock");
    });
    drop(holder);
    env.run(&["user", "ban", "alice"]).ok();
    env.assert_no_password_printed();
}

/// Kills the server if a test fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A minimal HTTP/1.1 exchange; returns the status code.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: cli-e2e\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn serve_runs_beside_the_commands_and_stops_on_sigterm() {
    let env = Env::new();
    env.add_user("alice");
    let port = free_port();
    let log: PathBuf = env.path().join("server.log");
    let mut cmd = env.command(&["serve"]);
    cmd.env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut server = Server(cmd.spawn().expect("start serve"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/healthz", None) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "server never became healthy: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "server exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let login = format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#);
    assert_eq!(http(port, "POST", "/v1/session", Some(&login)), Some(200));

    // The command line sees and ends the server's session while it runs.
    let json = env
        .run(&["session", "list", "--user", "alice", "--json"])
        .ok()
        .json();
    let sessions = json["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["ip"], "127.0.0.1");
    assert_eq!(sessions[0]["user_agent"], "cli-e2e");
    let ban = env.run(&["user", "ban", "alice"]).ok();
    assert!(ban.stdout.contains("revoked 1 session"), "{}", ban.stdout);
    assert_eq!(http(port, "POST", "/v1/session", Some(&login)), Some(403));
    env.run(&["user", "unban", "alice"]).ok();
    assert_eq!(http(port, "POST", "/v1/session", Some(&login)), Some(200));

    // SIGTERM: a clean stop, exit 0.
    let pid = server.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "exit {exit}: {log_text}");
    assert!(log_text.contains("latchkey is serving"), "{log_text}");
    assert!(!log_text.contains(PASSWORD), "password in the server log");

    // A port already taken: one line, exit 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let busy = env.run_with(
        &["serve"],
        None,
        &[("LATCHKEY_LISTEN", &format!("127.0.0.1:{port}"))],
    );
    let errors: Vec<&str> = busy
        .stderr
        .lines()
        .filter(|l| l.starts_with("latchkey: error:"))
        .collect();
    assert_eq!(busy.code, 1, "{}", busy.stderr);
    assert_eq!(errors.len(), 1, "{}", busy.stderr);
    assert!(
        errors[0].contains("cannot listen on `listen`"),
        "{}",
        busy.stderr
    );
    env.assert_no_password_printed();
}
