//! The store conformance suite: written once, run unchanged against every backend.
//!
//! A backend's test file invokes [`store_conformance_tests!`](crate::store_conformance_tests)
//! with an async expression that yields a fresh, isolated [`TestStore`]; every case below
//! becomes one `#[tokio::test]`.
use crate::{
    CodeOutcome, CreateOutcome, EpochAdvanced, RotateOutcome, Store, StoreError, StoredKey,
    UserChange,
};
use latchkey_core::{
    AuthCode, NewRefreshToken, Revocation, RevokeReason, Secret, SecretHash, Session, SessionId,
    SessionKind, User, UserId,
};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// A store for one test, with whatever keeps it alive (a temp dir, a schema to drop).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

impl TestStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            guard: Box::new(()),
        }
    }
}

/// Concurrent presentations per race round, and rounds per run.
pub const RACE_TASKS: usize = 50;
pub const RACE_ROUNDS: usize = 200;
/// Concurrent logins per round of a login-versus-epoch race, and rounds per run.
pub const LOGIN_RACE_TASKS: usize = 32;
pub const LOGIN_RACE_ROUNDS: usize = 12;

#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::__store_conformance_cases!($make;
            user_roundtrip, username_is_unique, password_and_ban_updates, updates_to_unknown_users_report_false,
            session_roundtrip_both_kinds, session_ids_are_unique_and_creation_is_atomic, live_sessions_exclude_revoked_and_expired,
            revoke_session_is_once_only, revoke_user_sessions_keeps_the_current_one, touch_never_moves_backwards,
            touch_refuses_idle_revoked_and_expired_sessions,
            concurrent_touches_never_resurrect,
            rotation_records_activity,
            refresh_token_lookup, rotation_consumes_exactly_once, rotation_keeps_the_sealed_successor,
            rotation_refused_on_dead_family, rotation_race_has_one_winner, signing_keys_roundtrip,
            revocations_feed_the_log, feed_follower_misses_nothing_under_concurrent_revocations,
            users_are_listed_in_pages,
            live_sessions_are_counted, purge_removes_only_what_can_no_longer_matter,
            epoch_advance_restamps_only_a_current_survivor, stale_sessions_are_neither_created_nor_rotated,
            logins_racing_a_ban_never_outlive_it, logins_racing_a_password_change_never_outlive_it,
            logins_racing_revoke_all_never_outlive_it, logins_racing_revoke_others_never_outlive_it,
            auth_codes_are_consumed_once, auth_code_replay_finds_the_issued_session,
            auth_code_race_has_one_winner, revoking_a_parent_revokes_its_children,
            children_need_a_live_parent_of_the_same_user,
            roles_roundtrip, role_removal_marks_live_sessions_stale_without_revoking
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let test_store: $crate::conformance::TestStore = $make.await;
                $crate::conformance::$case(test_store.store.clone()).await;
                drop(test_store);
            }
        )*
    };
}

/// A revocation with the default 15-minute access-token lifetime.
fn rev(reason: RevokeReason, at: OffsetDateTime) -> Revocation {
    Revocation {
        reason,
        at,
        access_ttl: Duration::minutes(15),
    }
}

fn t0() -> OffsetDateTime {
    // Whole microseconds: every backend keeps at least that precision.
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid timestamp")
}

fn user(name: &str) -> User {
    User {
        id: UserId::new(),
        username: name.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".to_string(),
        created_at: t0(),
        banned_at: None,
        session_epoch: 0,
    }
}

fn token_session(user: UserId, created: OffsetDateTime, ttl: Duration) -> Session {
    Session {
        id: SessionId::new(),
        user_id: user,
        kind: SessionKind::Token,
        client_id: Some("spa".into()),
        scope: Some("read write".into()),
        secret_hash: None,
        csrf_hash: None,
        created_at: created,
        last_seen_at: created,
        expires_at: created + ttl,
        revoked_at: None,
        revoke_reason: None,
        user_agent: Some("conformance/1.0".into()),
        ip: Some("127.0.0.1".into()),
        epoch: 0,
        parent_id: None,
    }
}

fn cookie_session(user: UserId, created: OffsetDateTime) -> (Session, Secret) {
    let secret = Secret::generate();
    let session = Session {
        kind: SessionKind::Cookie,
        client_id: None,
        scope: None,
        secret_hash: Some(secret.hash()),
        csrf_hash: Some(Secret::generate().hash()),
        ..token_session(user, created, Duration::days(7))
    };
    (session, secret)
}

fn new_token(session: &Session, at: OffsetDateTime) -> (NewRefreshToken, Secret) {
    let secret = Secret::generate();
    let token = NewRefreshToken {
        hash: secret.hash(),
        session_id: session.id,
        client_id: "spa".into(),
        issued_at: at,
    };
    (token, secret)
}

/// Advances the user's epoch keeping nothing: "revoke all".
async fn revoke_all(store: &dyn Store, user: UserId, reason: RevokeReason) -> EpochAdvanced {
    store
        .advance_user_epoch(user, UserChange::SessionsOnly, None, &rev(reason, t0()))
        .await
        .expect("advance")
        .expect("user exists")
}

/// A user with a live token session and its first refresh token.
async fn family(store: &dyn Store) -> (User, Session, SecretHash) {
    let u = user(&format!("u{}", UserId::new().0.simple()));
    store.create_user(&u).await.expect("create user");
    let s = token_session(u.id, t0(), Duration::days(7));
    let (first, _) = new_token(&s, t0());
    assert_eq!(
        store
            .create_session(&s, Some(&first))
            .await
            .expect("create session"),
        CreateOutcome::Created
    );
    (u, s, first.hash)
}

pub async fn user_roundtrip(store: Arc<dyn Store>) {
    let u = User {
        session_epoch: 7,
        ..user("alice")
    };
    store.create_user(&u).await.expect("create");
    assert_eq!(
        store.user_by_id(u.id).await.expect("by id"),
        Some(u.clone())
    );
    assert_eq!(
        store.user_by_username("alice").await.expect("by name"),
        Some(u)
    );
    assert_eq!(store.user_by_username("bob").await.expect("by name"), None);
    assert_eq!(store.user_by_id(UserId::new()).await.expect("by id"), None);
}

pub async fn username_is_unique(store: Arc<dyn Store>) {
    store.create_user(&user("alice")).await.expect("create");
    let err = store
        .create_user(&user("alice"))
        .await
        .expect_err("duplicate must fail");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

pub async fn password_and_ban_updates(store: Arc<dyn Store>) {
    let u = user("carol");
    store.create_user(&u).await.expect("create");
    let advanced = store
        .advance_user_epoch(
            u.id,
            UserChange::Password("new-hash"),
            None,
            &rev(RevokeReason::PasswordChanged, t0()),
        )
        .await
        .expect("set")
        .expect("exists");
    assert_eq!(advanced.epoch, u.session_epoch + 1);
    assert!(store.set_banned(u.id, Some(t0())).await.expect("ban"));
    let got = store.user_by_id(u.id).await.expect("get").expect("exists");
    assert_eq!(got.password_hash, "new-hash");
    assert_eq!(got.banned_at, Some(t0()));
    assert_eq!(got.session_epoch, u.session_epoch + 1);
    assert!(store.set_banned(u.id, None).await.expect("unban"));
    assert_eq!(
        store
            .user_by_id(u.id)
            .await
            .expect("get")
            .expect("exists")
            .banned_at,
        None
    );
}

pub async fn updates_to_unknown_users_report_false(store: Arc<dyn Store>) {
    for change in [
        UserChange::SessionsOnly,
        UserChange::Password("x"),
        UserChange::Ban(t0()),
        UserChange::Unban,
    ] {
        assert_eq!(
            store
                .advance_user_epoch(UserId::new(), change, None, &rev(RevokeReason::Admin, t0()))
                .await
                .expect("advance"),
            None
        );
    }
    assert!(
        !store
            .set_banned(UserId::new(), Some(t0()))
            .await
            .expect("ban")
    );
}

pub async fn session_roundtrip_both_kinds(store: Arc<dyn Store>) {
    let (u, s, _) = family(store.as_ref()).await;
    assert_eq!(store.session(s.id).await.expect("get"), Some(s.clone()));
    let (c, secret) = cookie_session(u.id, t0());
    assert_eq!(
        store
            .create_session(&c, None)
            .await
            .expect("create cookie session"),
        CreateOutcome::Created
    );
    assert_eq!(store.session(c.id).await.expect("get"), Some(c.clone()));
    assert_eq!(
        store
            .session_by_secret(&secret.hash())
            .await
            .expect("by secret"),
        Some(c)
    );
    assert_eq!(
        store
            .session_by_secret(&Secret::generate().hash())
            .await
            .expect("by secret"),
        None
    );
    assert_eq!(store.session(SessionId::new()).await.expect("get"), None);
}

pub async fn session_ids_are_unique_and_creation_is_atomic(store: Arc<dyn Store>) {
    let (u, s, first_hash) = family(store.as_ref()).await;
    let (t, _) = new_token(&s, t0());
    assert!(matches!(
        store.create_session(&s, Some(&t)).await,
        Err(StoreError::Conflict(_))
    ));
    // A fresh session whose first token collides must leave no session behind.
    let s2 = token_session(u.id, t0(), Duration::days(7));
    let colliding = NewRefreshToken {
        hash: first_hash,
        session_id: s2.id,
        client_id: "spa".into(),
        issued_at: t0(),
    };
    assert!(store.create_session(&s2, Some(&colliding)).await.is_err());
    assert_eq!(
        store.session(s2.id).await.expect("get"),
        None,
        "half-written session left behind"
    );
}

pub async fn live_sessions_exclude_revoked_and_expired(store: Arc<dyn Store>) {
    let (u, a, _) = family(store.as_ref()).await;
    let b = token_session(u.id, t0() + Duration::seconds(1), Duration::days(7));
    let short = token_session(u.id, t0() + Duration::seconds(2), Duration::hours(1));
    let revoked = token_session(u.id, t0() + Duration::seconds(3), Duration::days(7));
    for s in [&b, &short, &revoked] {
        assert_eq!(
            store.create_session(s, None).await.expect("create"),
            CreateOutcome::Created
        );
    }
    store
        .revoke_session(revoked.id, &rev(RevokeReason::Logout, t0()))
        .await
        .expect("revoke");
    let other = family(store.as_ref()).await.1;
    let now = t0() + Duration::hours(2);
    let live: Vec<SessionId> = store
        .live_sessions_of_user(u.id, now)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![a.id, b.id]);
    assert!(!live.contains(&other.id));
}

pub async fn revoke_session_is_once_only(store: Arc<dyn Store>) {
    let (_, s, _) = family(store.as_ref()).await;
    let at = t0() + Duration::seconds(5);
    assert!(
        store
            .revoke_session(s.id, &rev(RevokeReason::ReuseDetected, at))
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_session(s.id, &rev(RevokeReason::Logout, at))
            .await
            .expect("revoke again")
    );
    assert!(
        !store
            .revoke_session(SessionId::new(), &rev(RevokeReason::Logout, at))
            .await
            .expect("unknown")
    );
    let got = store.session(s.id).await.expect("get").expect("exists");
    assert_eq!(got.revoked_at, Some(at));
    assert_eq!(
        got.revoke_reason,
        Some(RevokeReason::ReuseDetected),
        "first reason must stick"
    );
}

pub async fn revoke_user_sessions_keeps_the_current_one(store: Arc<dyn Store>) {
    let (u, keep, _) = family(store.as_ref()).await;
    let (c, _) = cookie_session(u.id, t0());
    assert_eq!(
        store.create_session(&c, None).await.expect("create"),
        CreateOutcome::Created
    );
    let t = token_session(u.id, t0(), Duration::days(7));
    assert_eq!(
        store.create_session(&t, None).await.expect("create"),
        CreateOutcome::Created
    );
    let (_, bystander, _) = family(store.as_ref()).await;
    let mut expected = vec![c.id, t.id];
    expected.sort();
    let advanced = store
        .advance_user_epoch(
            u.id,
            UserChange::SessionsOnly,
            Some(keep.id),
            &rev(RevokeReason::PasswordChanged, t0()),
        )
        .await
        .expect("revoke")
        .expect("exists");
    assert_eq!(advanced.revoked, expected);
    assert!(advanced.kept);
    assert!(
        store
            .session(keep.id)
            .await
            .expect("get")
            .expect("exists")
            .is_live(t0())
    );
    assert!(
        store
            .session(bystander.id)
            .await
            .expect("get")
            .expect("exists")
            .is_live(t0())
    );
    let all = revoke_all(store.as_ref(), u.id, RevokeReason::Banned).await;
    assert_eq!(all.revoked, vec![keep.id]);
    assert!(!all.kept);
}

pub async fn touch_never_moves_backwards(store: Arc<dyn Store>) {
    let (_, s, _) = family(store.as_ref()).await;
    let long_ago = t0() - Duration::days(1);
    assert!(
        store
            .touch_session(s.id, t0() + Duration::minutes(5), long_ago)
            .await
            .expect("touch")
    );
    assert!(
        store
            .touch_session(s.id, t0() + Duration::minutes(1), long_ago)
            .await
            .expect("touch")
    );
    let got = store.session(s.id).await.expect("get").expect("exists");
    assert_eq!(got.last_seen_at, t0() + Duration::minutes(5));
}

pub async fn touch_refuses_idle_revoked_and_expired_sessions(store: Arc<dyn Store>) {
    let (u, s, _) = family(store.as_ref()).await;
    // Last seen at t0; with an idle cutoff at or after t0 the session is idle-expired.
    assert!(
        !store
            .touch_session(s.id, t0() + Duration::hours(2), t0())
            .await
            .expect("touch")
    );
    assert_eq!(
        store
            .session(s.id)
            .await
            .expect("get")
            .expect("exists")
            .last_seen_at,
        t0(),
        "resurrected"
    );
    assert!(
        store
            .touch_session(s.id, t0() + Duration::hours(2), t0() - Duration::seconds(1))
            .await
            .expect("touch")
    );
    // Past its absolute end.
    assert!(
        !store
            .touch_session(s.id, s.expires_at, t0())
            .await
            .expect("touch")
    );
    // Revoked, or unknown.
    let (c, _) = cookie_session(u.id, t0());
    assert_eq!(
        store.create_session(&c, None).await.expect("create"),
        CreateOutcome::Created
    );
    store
        .revoke_session(c.id, &rev(RevokeReason::Logout, t0()))
        .await
        .expect("revoke");
    assert!(
        !store
            .touch_session(c.id, t0(), t0() - Duration::days(1))
            .await
            .expect("touch")
    );
    assert!(
        !store
            .touch_session(SessionId::new(), t0(), t0() - Duration::days(1))
            .await
            .expect("touch")
    );
}

/// Requests racing an idle timeout: a session that was idle-expired at the write never comes
/// back, whatever the interleaving.
pub async fn concurrent_touches_never_resurrect(store: Arc<dyn Store>) {
    let (_, s, _) = family(store.as_ref()).await;
    let idle = Duration::minutes(30);
    let late = t0() + idle + Duration::seconds(1);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let now = late + Duration::milliseconds(i);
                store
                    .touch_session(s.id, now, now - idle)
                    .await
                    .expect("touch")
            })
        })
        .collect();
    for t in tasks {
        assert!(
            !t.await.expect("task"),
            "an idle-expired session was touched alive"
        );
    }
    assert_eq!(
        store
            .session(s.id)
            .await
            .expect("get")
            .expect("exists")
            .last_seen_at,
        t0()
    );
}

pub async fn rotation_records_activity(store: Arc<dyn Store>) {
    let (_, s, first) = family(store.as_ref()).await;
    let at = t0() + Duration::hours(3);
    let (next, _) = new_token(&s, at);
    store
        .rotate_refresh_token(&first, &next, None, at)
        .await
        .expect("rotate");
    assert_eq!(
        store
            .session(s.id)
            .await
            .expect("get")
            .expect("exists")
            .last_seen_at,
        at
    );
}

pub async fn refresh_token_lookup(store: Arc<dyn Store>) {
    let (_, s, first) = family(store.as_ref()).await;
    let (token, session) = store
        .refresh_token(&first)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(session, s);
    assert_eq!(token.hash, first);
    assert_eq!(token.session_id, s.id);
    assert_eq!(token.client_id, "spa");
    assert_eq!(token.issued_at, t0());
    assert_eq!(token.consumed_at, None);
    assert!(!token.successor_consumed);
    assert_eq!(
        store
            .refresh_token(&Secret::generate().hash())
            .await
            .expect("get"),
        None
    );
}

pub async fn rotation_consumes_exactly_once(store: Arc<dyn Store>) {
    let (_, s, first) = family(store.as_ref()).await;
    let at = t0() + Duration::minutes(1);
    let (second, _) = new_token(&s, at);
    assert_eq!(
        store
            .rotate_refresh_token(&first, &second, None, at)
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    let (third, _) = new_token(&s, at);
    assert_eq!(
        store
            .rotate_refresh_token(&first, &third, None, at)
            .await
            .expect("rotate"),
        RotateOutcome::NotRotated
    );
    assert_eq!(
        store.refresh_token(&third.hash).await.expect("get"),
        None,
        "a loser's successor was written"
    );
    let (consumed, _) = store
        .refresh_token(&first)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(consumed.consumed_at, Some(at));
    assert!(!consumed.successor_consumed);
    let (current, _) = store
        .refresh_token(&second.hash)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(current.consumed_at, None);
    // Once the successor rotates, the first token is no longer the immediate predecessor.
    let (fourth, _) = new_token(&s, at);
    assert_eq!(
        store
            .rotate_refresh_token(&second.hash, &fourth, None, at)
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    let (consumed, _) = store
        .refresh_token(&first)
        .await
        .expect("get")
        .expect("exists");
    assert!(consumed.successor_consumed);
    assert_eq!(
        store
            .rotate_refresh_token(&Secret::generate().hash(), &new_token(&s, at).0, None, at)
            .await
            .expect("rotate"),
        RotateOutcome::NotRotated,
        "unknown token"
    );
}

pub async fn rotation_keeps_the_sealed_successor(store: Arc<dyn Store>) {
    let (_, s, first) = family(store.as_ref()).await;
    let (second, _) = new_token(&s, t0());
    let sealed = vec![9u8; 60];
    store
        .rotate_refresh_token(&first, &second, Some(&sealed), t0())
        .await
        .expect("rotate");
    let (consumed, _) = store
        .refresh_token(&first)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(consumed.sealed_successor, Some(sealed));
    let (current, _) = store
        .refresh_token(&second.hash)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(current.sealed_successor, None);
}

pub async fn rotation_refused_on_dead_family(store: Arc<dyn Store>) {
    // Revoked family.
    let (_, s, first) = family(store.as_ref()).await;
    store
        .revoke_session(s.id, &rev(RevokeReason::Logout, t0()))
        .await
        .expect("revoke");
    let (next, _) = new_token(&s, t0());
    assert_eq!(
        store
            .rotate_refresh_token(&first, &next, None, t0())
            .await
            .expect("rotate"),
        RotateOutcome::NotRotated
    );
    assert_eq!(store.refresh_token(&next.hash).await.expect("get"), None);
    assert_eq!(
        store
            .refresh_token(&first)
            .await
            .expect("get")
            .expect("exists")
            .0
            .consumed_at,
        None
    );
    // Family past its absolute lifetime.
    let (_, s, first) = family(store.as_ref()).await;
    let late = s.expires_at;
    let (next, _) = new_token(&s, late);
    assert_eq!(
        store
            .rotate_refresh_token(&first, &next, None, late)
            .await
            .expect("rotate"),
        RotateOutcome::NotRotated
    );
    assert_eq!(store.refresh_token(&next.hash).await.expect("get"), None);
}

pub async fn rotation_race_has_one_winner(store: Arc<dyn Store>) {
    rotation_race(store, RACE_ROUNDS).await;
}

/// `RACE_TASKS` tasks present the same token at once, `rounds` times; exactly one wins each
/// round, only the winner's successor exists, and revoking the family afterwards stops it.
pub async fn rotation_race(store: Arc<dyn Store>, rounds: usize) {
    let (_, s, mut current) = family(store.as_ref()).await;
    for round in 0..rounds {
        let barrier = Arc::new(tokio::sync::Barrier::new(RACE_TASKS));
        let mut tasks = Vec::with_capacity(RACE_TASKS);
        for _ in 0..RACE_TASKS {
            let store = store.clone();
            let barrier = barrier.clone();
            let session = s.clone();
            tasks.push(tokio::spawn(async move {
                let (next, _) = new_token(&session, t0());
                barrier.wait().await;
                let outcome = store
                    .rotate_refresh_token(&current, &next, None, t0())
                    .await;
                (
                    outcome.expect("rotate must not fail under contention"),
                    next.hash,
                )
            }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for task in tasks {
            let (outcome, hash) = task.await.expect("task panicked");
            match outcome {
                RotateOutcome::Rotated => winners.push(hash),
                RotateOutcome::NotRotated => losers.push(hash),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        for loser in &losers {
            assert_eq!(
                store.refresh_token(loser).await.expect("get"),
                None,
                "round {round}: second successor"
            );
        }
        current = winners[0];
    }
    // Reuse afterwards revokes the family: the newest token stops rotating too.
    assert!(
        store
            .revoke_session(s.id, &rev(RevokeReason::ReuseDetected, t0()))
            .await
            .expect("revoke")
    );
    let (next, _) = new_token(&s, t0());
    assert_eq!(
        store
            .rotate_refresh_token(&current, &next, None, t0())
            .await
            .expect("rotate"),
        RotateOutcome::NotRotated
    );
}

pub async fn signing_keys_roundtrip(store: Arc<dyn Store>) {
    let older = StoredKey {
        kid: "k1".into(),
        algorithm: "EdDSA".into(),
        private_der: vec![1, 2, 3],
        created_at: t0(),
        activates_at: t0(),
    };
    let newer = StoredKey {
        kid: "k2".into(),
        algorithm: "ES256".into(),
        private_der: vec![4, 5],
        created_at: t0() + Duration::days(1),
        activates_at: t0() + Duration::days(1) + Duration::minutes(5),
    };
    store.insert_signing_key(&newer).await.expect("insert");
    store.insert_signing_key(&older).await.expect("insert");
    assert_eq!(
        store.signing_keys().await.expect("list"),
        vec![older.clone(), newer.clone()]
    );
    assert!(matches!(
        store.insert_signing_key(&older).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.delete_signing_key("k1").await.expect("delete"));
    assert!(!store.delete_signing_key("k1").await.expect("delete again"));
    assert_eq!(store.signing_keys().await.expect("list"), vec![newer]);
}

pub async fn revocations_feed_the_log(store: Arc<dyn Store>) {
    let (u, a, _) = family(store.as_ref()).await;
    let b = token_session(u.id, t0(), Duration::days(7));
    // Ends 5 minutes after the revocation: its tokens cannot outlive that.
    let short = token_session(
        u.id,
        t0() - Duration::hours(1),
        Duration::hours(1) + Duration::minutes(5),
    );
    // Already past its end: nothing can be live, so no event.
    let over = token_session(u.id, t0() - Duration::days(8), Duration::days(7));
    for s in [&b, &short, &over] {
        assert_eq!(
            store.create_session(s, None).await.expect("create"),
            CreateOutcome::Created
        );
    }
    assert!(
        store
            .revoke_session(a.id, &rev(RevokeReason::Logout, t0()))
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_session(a.id, &rev(RevokeReason::Logout, t0()))
            .await
            .expect("again")
    );
    let rest = revoke_all(store.as_ref(), u.id, RevokeReason::Banned).await;
    assert_eq!(rest.revoked.len(), 3);

    let events = store.revocations_after(0, 100, t0()).await.expect("feed");
    let by_sid = |sid: SessionId| events.iter().find(|e| e.sid == sid).copied();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(by_sid(a.id).expect("a").exp, t0() + Duration::minutes(15));
    assert_eq!(by_sid(b.id).expect("b").exp, t0() + Duration::minutes(15));
    assert_eq!(
        by_sid(short.id).expect("short").exp,
        t0() + Duration::minutes(5)
    );
    assert!(by_sid(over.id).is_none());
    assert!(
        events.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "cursors must grow: {events:?}"
    );
    assert_eq!(events[0].sid, a.id, "oldest first");

    // Paging by cursor and limit; events past their exp are not served.
    let first = store.revocations_after(0, 1, t0()).await.expect("feed");
    assert_eq!(first, vec![events[0]]);
    let next = store
        .revocations_after(first[0].cursor, 100, t0())
        .await
        .expect("feed");
    assert_eq!(next, events[1..].to_vec());
    let later = store
        .revocations_after(0, 100, t0() + Duration::minutes(10))
        .await
        .expect("feed");
    assert_eq!(
        later.iter().map(|e| e.sid).collect::<Vec<_>>(),
        events
            .iter()
            .filter(|e| e.sid != short.id)
            .map(|e| e.sid)
            .collect::<Vec<_>>()
    );
    assert!(
        store
            .revocations_after(events[2].cursor, 100, t0())
            .await
            .expect("feed")
            .is_empty()
    );
}

/// A follower polling while many revocations commit concurrently must end up with every
/// event: no cursor may become visible after a larger one was already served.
pub async fn feed_follower_misses_nothing_under_concurrent_revocations(store: Arc<dyn Store>) {
    let (u, _, _) = family(store.as_ref()).await;
    let mut sessions = Vec::new();
    for _ in 0..40 {
        let s = token_session(u.id, t0(), Duration::days(7));
        assert_eq!(
            store.create_session(&s, None).await.expect("create"),
            CreateOutcome::Created
        );
        sessions.push(s.id);
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                for e in store
                    .revocations_after(cursor, 7, t0())
                    .await
                    .expect("feed")
                {
                    assert!(e.cursor > cursor);
                    cursor = e.cursor;
                    seen.push(e.sid);
                }
                if finished
                    && store
                        .revocations_after(cursor, 1, t0())
                        .await
                        .expect("feed")
                        .is_empty()
                {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let revokers: Vec<_> = sessions
        .iter()
        .map(|&sid| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .revoke_session(sid, &rev(RevokeReason::Admin, t0()))
                    .await
                    .expect("revoke")
            })
        })
        .collect();
    for r in revokers {
        assert!(r.await.expect("task"));
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = follower.await.expect("follower");
    seen.sort();
    sessions.sort();
    assert_eq!(seen, sessions, "the follower missed or duplicated events");
}

pub async fn live_sessions_are_counted(store: Arc<dyn Store>) {
    let (u, _, _) = family(store.as_ref()).await;
    let over = token_session(u.id, t0() - Duration::days(8), Duration::days(7));
    assert_eq!(
        store.create_session(&over, None).await.expect("create"),
        CreateOutcome::Created
    );
    assert_eq!(store.count_live_sessions(t0()).await.expect("count"), 1);
    let (c, _) = cookie_session(u.id, t0());
    assert_eq!(
        store.create_session(&c, None).await.expect("create"),
        CreateOutcome::Created
    );
    assert_eq!(store.count_live_sessions(t0()).await.expect("count"), 2);
    assert_eq!(
        store
            .count_live_sessions(t0() + Duration::days(8))
            .await
            .expect("count"),
        0
    );
}

pub async fn users_are_listed_in_pages(store: Arc<dyn Store>) {
    for name in ["carol", "alice", "bob", "dave"] {
        store.create_user(&user(name)).await.expect("create");
    }
    let names = |users: Vec<User>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_users(None, 2).await.expect("list")),
        ["alice", "bob"]
    );
    assert_eq!(
        names(store.list_users(Some("bob"), 10).await.expect("list")),
        ["carol", "dave"]
    );
    assert!(
        store
            .list_users(Some("dave"), 10)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn purge_removes_only_what_can_no_longer_matter(store: Arc<dyn Store>) {
    let (u, live, live_token) = family(store.as_ref()).await;
    let dead = token_session(u.id, t0() - Duration::days(8), Duration::days(7));
    let (dead_token, _) = new_token(&dead, t0() - Duration::days(8));
    assert_eq!(
        store
            .create_session(&dead, Some(&dead_token))
            .await
            .expect("create"),
        CreateOutcome::Created
    );
    let revoked = token_session(u.id, t0(), Duration::days(7));
    assert_eq!(
        store.create_session(&revoked, None).await.expect("create"),
        CreateOutcome::Created
    );
    store
        .revoke_session(revoked.id, &rev(RevokeReason::Logout, t0()))
        .await
        .expect("revoke");
    // Nothing is due yet but the long-dead session.
    assert_eq!(store.purge_expired(t0(), 100).await.expect("purge"), 1);
    assert_eq!(store.session(dead.id).await.expect("get"), None);
    assert_eq!(
        store.refresh_token(&dead_token.hash).await.expect("get"),
        None
    );
    assert!(store.session(live.id).await.expect("get").is_some());
    assert!(
        store
            .refresh_token(&live_token)
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        store.session(revoked.id).await.expect("get").is_some(),
        "revoked but not over: kept for reuse detection"
    );
    assert_eq!(
        store
            .revocations_after(0, 10, t0())
            .await
            .expect("feed")
            .len(),
        1
    );
    // After the feed event's exp, the event goes; after the sessions end, they go, in batches.
    let much_later = t0() + Duration::days(8);
    assert_eq!(store.purge_expired(much_later, 1).await.expect("purge"), 1);
    let mut total = 1;
    loop {
        let n = store.purge_expired(much_later, 1).await.expect("purge");
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 3, "two sessions and one feed event");
    assert_eq!(store.session(live.id).await.expect("get"), None);
}

/// A token session of `user` born at `epoch`, with its first refresh token, created.
async fn session_at(store: &dyn Store, user: UserId, epoch: u64) -> (Session, SecretHash) {
    let s = Session {
        epoch,
        ..token_session(user, t0(), Duration::days(7))
    };
    let (first, _) = new_token(&s, t0());
    assert_eq!(
        store
            .create_session(&s, Some(&first))
            .await
            .expect("create"),
        CreateOutcome::Created
    );
    (s, first.hash)
}

/// Live, and its refresh token still rotates.
async fn assert_usable(store: &dyn Store, s: &Session, token: &SecretHash, what: &str) {
    let got = store.session(s.id).await.expect("get").expect("exists");
    assert!(got.is_live(t0()), "{what}: not live: {got:?}");
    let (next, _) = new_token(s, t0());
    assert_eq!(
        store
            .rotate_refresh_token(token, &next, None, t0())
            .await
            .expect("rotate"),
        RotateOutcome::Rotated,
        "{what}: does not rotate"
    );
}

/// Not live, and its refresh token no longer rotates.
async fn assert_unusable(store: &dyn Store, s: &Session, token: &SecretHash, what: &str) {
    let got = store.session(s.id).await.expect("get").expect("exists");
    assert!(!got.is_live(t0()), "{what}: still live: {got:?}");
    let (next, _) = new_token(s, t0());
    assert_eq!(
        store
            .rotate_refresh_token(token, &next, None, t0())
            .await
            .expect("rotate"),
        RotateOutcome::NotRotated,
        "{what}: still rotates"
    );
}

/// "Revoke others" and the password change keep the caller's session by re-stamping it with
/// the new epoch, but only if it was current: a session already revoked, or born before the
/// user's epoch, is never brought back by naming it as the one to keep.
pub async fn epoch_advance_restamps_only_a_current_survivor(store: Arc<dyn Store>) {
    let u = user(&format!("u{}", UserId::new().0.simple()));
    store.create_user(&u).await.expect("create user");
    let (mine, mine_token) = session_at(store.as_ref(), u.id, 0).await;
    let (other, other_token) = session_at(store.as_ref(), u.id, 0).await;
    let first = store
        .advance_user_epoch(
            u.id,
            UserChange::SessionsOnly,
            Some(mine.id),
            &rev(RevokeReason::UserRevoked, t0()),
        )
        .await
        .expect("advance")
        .expect("exists");
    assert_eq!(first.epoch, 1);
    assert!(first.kept);
    assert_eq!(first.revoked, vec![other.id]);
    let restamped = store.session(mine.id).await.expect("get").expect("exists");
    assert_eq!(restamped.epoch, 1);
    assert_usable(store.as_ref(), &mine, &mine_token, "the kept session").await;
    assert_unusable(store.as_ref(), &other, &other_token, "the other session").await;
    // Naming the revoked one as "keep" revives nothing.
    let second = store
        .advance_user_epoch(
            u.id,
            UserChange::SessionsOnly,
            Some(other.id),
            &rev(RevokeReason::UserRevoked, t0()),
        )
        .await
        .expect("advance")
        .expect("exists");
    assert!(!second.kept);
    assert_eq!(second.revoked, vec![mine.id], "the old survivor goes too");
    assert!(
        !store
            .session(other.id)
            .await
            .expect("get")
            .expect("exists")
            .is_live(t0())
    );
    // Another user's session is nobody's to keep here.
    let stranger = user(&format!("u{}", UserId::new().0.simple()));
    store.create_user(&stranger).await.expect("create user");
    let (theirs, theirs_token) = session_at(store.as_ref(), stranger.id, 0).await;
    let third = store
        .advance_user_epoch(
            u.id,
            UserChange::SessionsOnly,
            Some(theirs.id),
            &rev(RevokeReason::UserRevoked, t0()),
        )
        .await
        .expect("advance")
        .expect("exists");
    assert!(!third.kept);
    let untouched = store
        .session(theirs.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(untouched.epoch, 0);
    assert_usable(
        store.as_ref(),
        &theirs,
        &theirs_token,
        "a stranger's session",
    )
    .await;
}

/// A session carrying an epoch the user has left is refused at creation, and a session of
/// an older epoch that somehow survived unrevoked does not rotate.
pub async fn stale_sessions_are_neither_created_nor_rotated(store: Arc<dyn Store>) {
    let u = user(&format!("u{}", UserId::new().0.simple()));
    store.create_user(&u).await.expect("create user");
    let advanced = revoke_all(store.as_ref(), u.id, RevokeReason::Admin).await;
    assert_eq!(advanced.epoch, 1);
    for epoch in [0, 2] {
        let s = Session {
            epoch,
            ..token_session(u.id, t0(), Duration::days(7))
        };
        let (first, _) = new_token(&s, t0());
        assert_eq!(
            store
                .create_session(&s, Some(&first))
                .await
                .expect("create"),
            CreateOutcome::UserChanged,
            "epoch {epoch}"
        );
        assert_eq!(store.session(s.id).await.expect("get"), None);
        assert_eq!(store.refresh_token(&first.hash).await.expect("get"), None);
    }
    // Unknown users get nothing.
    let nobody = token_session(UserId::new(), t0(), Duration::days(7));
    assert_eq!(
        store.create_session(&nobody, None).await.expect("create"),
        CreateOutcome::UserChanged
    );
    // Banned (the operation: epoch and flag) and then unbanned: old sessions stay dead.
    let (s, token) = session_at(store.as_ref(), u.id, 1).await;
    let banned = store
        .advance_user_epoch(
            u.id,
            UserChange::Ban(t0()),
            None,
            &rev(RevokeReason::Banned, t0()),
        )
        .await
        .expect("ban")
        .expect("exists");
    assert_eq!(banned.revoked, vec![s.id]);
    let at_ban = Session {
        epoch: banned.epoch,
        ..token_session(u.id, t0(), Duration::days(7))
    };
    assert_eq!(
        store.create_session(&at_ban, None).await.expect("create"),
        CreateOutcome::UserChanged,
        "a banned user gets no session"
    );
    let unbanned = store
        .advance_user_epoch(
            u.id,
            UserChange::Unban,
            None,
            &rev(RevokeReason::Admin, t0()),
        )
        .await
        .expect("unban")
        .expect("exists");
    assert_unusable(store.as_ref(), &s, &token, "a session from before the ban").await;
    let got = store.user_by_id(u.id).await.expect("get").expect("exists");
    assert_eq!(got.banned_at, None);
    assert_eq!(got.session_epoch, unbanned.epoch);
    let (fresh, fresh_token) = session_at(store.as_ref(), u.id, unbanned.epoch).await;
    assert_usable(
        store.as_ref(),
        &fresh,
        &fresh_token,
        "a login after the unban",
    )
    .await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Ban,
    PasswordChange,
    /// The admin's "revoke all".
    RevokeAll,
    /// The user's "revoke all others": keeps the session it is made from.
    RevokeOthers,
}

pub async fn logins_racing_a_ban_never_outlive_it(store: Arc<dyn Store>) {
    login_race(store, Event::Ban).await;
}

pub async fn logins_racing_a_password_change_never_outlive_it(store: Arc<dyn Store>) {
    login_race(store, Event::PasswordChange).await;
}

pub async fn logins_racing_revoke_all_never_outlive_it(store: Arc<dyn Store>) {
    login_race(store, Event::RevokeAll).await;
}

pub async fn logins_racing_revoke_others_never_outlive_it(store: Arc<dyn Store>) {
    login_race(store, Event::RevokeOthers).await;
}

/// A little while, different for each caller: the time Argon2 takes, give or take.
fn jitter() -> std::time::Duration {
    let random = SessionId::new().0.as_u128();
    std::time::Duration::from_micros(u64::try_from(random % 3000).unwrap_or(0))
}

/// DESIGN invariant 7 under real concurrency. Each round, [`LOGIN_RACE_TASKS`] logins run as
/// the server's do: read the user (its epoch), "verify the password" (the old hash and no ban
/// pass), then create a session with the epoch they read, while the event lands. A third of
/// them create before the event, a third read before it but create after it, and a third race
/// it freely (a random pause, like Argon2's). Afterwards, every session born from a login that
/// read the user before the event (its epoch is older than the new one) is unusable: its
/// creation was refused or the event revoked it, and it does not rotate. Logins that read the
/// user after the event behave as the new state says.
async fn login_race(store: Arc<dyn Store>, event: Event) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const NEW_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
    let (mut refused, mut revoked) = (0, 0);
    for round in 0..LOGIN_RACE_ROUNDS {
        let u = user(&format!("race{}", UserId::new().0.simple()));
        store.create_user(&u).await.expect("create user");
        let current = match event {
            Event::PasswordChange | Event::RevokeOthers => {
                Some(session_at(store.as_ref(), u.id, u.session_epoch).await)
            }
            Event::Ban | Event::RevokeAll => None,
        };
        // Early logins that have created their session; late ones that have read the user.
        let (early_done, late_read) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (happened, _) = tokio::sync::watch::channel(false);
        let mut logins = Vec::with_capacity(LOGIN_RACE_TASKS);
        for i in 0..LOGIN_RACE_TASKS {
            let (store, early_done, late_read) =
                (store.clone(), early_done.clone(), late_read.clone());
            let mut event_seen = happened.subscribe();
            let (id, old_hash) = (u.id, u.password_hash.clone());
            logins.push(tokio::spawn(async move {
                let seen = store.user_by_id(id).await.expect("read").expect("exists");
                match i % 3 {
                    0 => {}
                    1 => {
                        late_read.fetch_add(1, Ordering::SeqCst);
                        event_seen.wait_for(|done| *done).await.expect("event");
                    }
                    _ => tokio::time::sleep(jitter()).await,
                }
                let verified = !seen.is_banned() && seen.password_hash == old_hash;
                let created = if verified {
                    let s = Session {
                        epoch: seen.session_epoch,
                        ..token_session(id, t0(), Duration::days(7))
                    };
                    let (first, _) = new_token(&s, t0());
                    let outcome = store
                        .create_session(&s, Some(&first))
                        .await
                        .expect("create");
                    Some((s, first.hash, outcome))
                } else {
                    None // refused before any write, as the server does
                };
                if i % 3 == 0 {
                    early_done.fetch_add(1, Ordering::SeqCst);
                }
                created
            }));
        }
        let third = |k: usize| (0..LOGIN_RACE_TASKS).filter(|i| i % 3 == k).count();
        while early_done.load(Ordering::SeqCst) < third(0)
            || late_read.load(Ordering::SeqCst) < third(1)
        {
            tokio::task::yield_now().await;
        }
        let (change, reason) = match event {
            Event::Ban => (UserChange::Ban(t0()), RevokeReason::Banned),
            Event::PasswordChange => (
                UserChange::Password(NEW_HASH),
                RevokeReason::PasswordChanged,
            ),
            Event::RevokeAll => (UserChange::SessionsOnly, RevokeReason::Admin),
            Event::RevokeOthers => (UserChange::SessionsOnly, RevokeReason::UserRevoked),
        };
        let keep = current.as_ref().map(|(s, _)| s.id);
        let advanced = store
            .advance_user_epoch(u.id, change, keep, &rev(reason, t0()))
            .await
            .expect("advance")
            .expect("exists");
        happened.send_replace(true);
        for task in logins {
            let Some((s, token, outcome)) = task.await.expect("login task") else {
                continue;
            };
            let read_before = s.epoch < advanced.epoch;
            let what = format!("{event:?} round {round}, session {}", s.id);
            match (outcome, read_before) {
                (CreateOutcome::UserChanged, true) => {
                    refused += 1;
                    assert_eq!(store.session(s.id).await.expect("get"), None, "{what}");
                    assert_eq!(
                        store.refresh_token(&token).await.expect("get"),
                        None,
                        "{what}"
                    );
                }
                (CreateOutcome::Created, true) => {
                    revoked += 1;
                    assert_unusable(store.as_ref(), &s, &token, &what).await;
                }
                (CreateOutcome::Created, false) => {
                    assert_usable(store.as_ref(), &s, &token, &what).await;
                }
                (CreateOutcome::UserChanged, false) => {
                    panic!("{what}: a login that read the user after the event was refused")
                }
            }
        }
        if let Some((s, token)) = &current {
            assert!(
                advanced.kept,
                "{event:?} round {round}: the caller's session"
            );
            assert_usable(store.as_ref(), s, token, "the caller's session").await;
        }
        // Late stragglers with the old epoch get nothing.
        let late = Session {
            epoch: u.session_epoch,
            ..token_session(u.id, t0(), Duration::days(7))
        };
        assert_eq!(
            store.create_session(&late, None).await.expect("create"),
            CreateOutcome::UserChanged
        );
    }
    // Both ways were taken: logins refused at creation, and logins created before the event
    // and ended by it.
    assert!(
        refused > 0 && revoked > 0,
        "{event:?}: {refused} refused at creation, {revoked} revoked: no race happened"
    );
}

fn auth_code(user: UserId, session: SessionId, created: OffsetDateTime) -> (AuthCode, Secret) {
    let secret = Secret::generate();
    let code = AuthCode {
        hash: secret.hash(),
        client_id: "web".into(),
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        user_id: user,
        session_id: session,
        nonce: Some("n-0S6_WzA2Mj".into()),
        auth_time: created - Duration::minutes(3),
        scope: "openid profile read".into(),
        created_at: created,
        expires_at: created + Duration::seconds(60),
        consumed_at: None,
        issued_session: None,
    };
    (code, secret)
}

/// A user with a live cookie session (the parent of standard-login token sessions).
async fn signed_in(store: &dyn Store) -> (User, Session) {
    let u = user(&format!("u{}", UserId::new().0.simple()));
    store.create_user(&u).await.expect("create user");
    let (c, _) = cookie_session(u.id, t0());
    assert_eq!(
        store.create_session(&c, None).await.expect("create cookie"),
        CreateOutcome::Created
    );
    (u, c)
}

fn child_of(parent: &Session, created: OffsetDateTime) -> Session {
    Session {
        parent_id: Some(parent.id),
        client_id: Some("web".into()),
        ..token_session(parent.user_id, created, Duration::days(1))
    }
}

pub async fn auth_codes_are_consumed_once(store: Arc<dyn Store>) {
    let (u, c) = signed_in(store.as_ref()).await;
    let (code, _) = auth_code(u.id, c.id, t0());
    store.insert_auth_code(&code).await.expect("insert");
    let err = store
        .insert_auth_code(&code)
        .await
        .expect_err("same hash twice");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let now = t0() + Duration::seconds(5);
    match store
        .consume_auth_code(&code.hash, now)
        .await
        .expect("consume")
    {
        CodeOutcome::Consumed(got) => assert_eq!(
            *got,
            AuthCode {
                consumed_at: Some(now),
                ..code.clone()
            }
        ),
        other => panic!("first use must consume: {other:?}"),
    }
    assert_eq!(
        store
            .consume_auth_code(&code.hash, now)
            .await
            .expect("again"),
        CodeOutcome::Replayed {
            issued_session: None
        }
    );
    // Unknown and expired codes: nothing to consume, nothing changed.
    assert_eq!(
        store
            .consume_auth_code(&Secret::generate().hash(), now)
            .await
            .expect("unknown"),
        CodeOutcome::Invalid
    );
    let (late, _) = auth_code(u.id, c.id, t0());
    store.insert_auth_code(&late).await.expect("insert");
    assert_eq!(
        store
            .consume_auth_code(&late.hash, t0() + Duration::seconds(60))
            .await
            .expect("expired"),
        CodeOutcome::Invalid
    );
    assert_eq!(
        store
            .consume_auth_code(&late.hash, t0() + Duration::seconds(61))
            .await
            .expect("still expired"),
        CodeOutcome::Invalid
    );
    // Purge drops codes only once their retention has passed.
    let before = t0() + Duration::seconds(60) + latchkey_core::AUTH_CODE_RETENTION;
    store
        .purge_expired(before - Duration::seconds(1), 100)
        .await
        .expect("purge");
    assert!(matches!(
        store
            .consume_auth_code(&code.hash, now)
            .await
            .expect("kept"),
        CodeOutcome::Replayed { .. }
    ));
    store.purge_expired(before, 100).await.expect("purge");
    assert_eq!(
        store
            .consume_auth_code(&code.hash, now)
            .await
            .expect("gone"),
        CodeOutcome::Invalid
    );
}

pub async fn auth_code_replay_finds_the_issued_session(store: Arc<dyn Store>) {
    let (u, c) = signed_in(store.as_ref()).await;
    let now = t0() + Duration::seconds(1);
    // Recorded before the replay: the replay names the session.
    let (code, _) = auth_code(u.id, c.id, t0());
    store.insert_auth_code(&code).await.expect("insert");
    assert!(matches!(
        store
            .consume_auth_code(&code.hash, now)
            .await
            .expect("consume"),
        CodeOutcome::Consumed(_)
    ));
    let issued = SessionId::new();
    assert!(
        store
            .record_code_session(&code.hash, issued)
            .await
            .expect("record")
    );
    assert_eq!(
        store
            .consume_auth_code(&code.hash, now)
            .await
            .expect("replay"),
        CodeOutcome::Replayed {
            issued_session: Some(issued)
        }
    );
    // A replay between the consume and the record: the record reports it.
    let (raced, _) = auth_code(u.id, c.id, t0());
    store.insert_auth_code(&raced).await.expect("insert");
    assert!(matches!(
        store
            .consume_auth_code(&raced.hash, now)
            .await
            .expect("consume"),
        CodeOutcome::Consumed(_)
    ));
    assert_eq!(
        store
            .consume_auth_code(&raced.hash, now)
            .await
            .expect("replay"),
        CodeOutcome::Replayed {
            issued_session: None
        }
    );
    assert!(
        !store
            .record_code_session(&raced.hash, SessionId::new())
            .await
            .expect("record after replay")
    );
    // An unconsumed or unknown code records nothing.
    let (fresh, _) = auth_code(u.id, c.id, t0());
    store.insert_auth_code(&fresh).await.expect("insert");
    assert!(
        !store
            .record_code_session(&fresh.hash, SessionId::new())
            .await
            .expect("record unconsumed")
    );
    assert!(matches!(
        store
            .consume_auth_code(&fresh.hash, now)
            .await
            .expect("consume"),
        CodeOutcome::Consumed(_)
    ));
    // The session offered before the code was consumed was not kept: a replay names none.
    assert_eq!(
        store
            .consume_auth_code(&fresh.hash, now)
            .await
            .expect("replay"),
        CodeOutcome::Replayed {
            issued_session: None
        }
    );
    assert!(
        !store
            .record_code_session(&Secret::generate().hash(), SessionId::new())
            .await
            .expect("record unknown")
    );
}

pub async fn auth_code_race_has_one_winner(store: Arc<dyn Store>) {
    let (u, c) = signed_in(store.as_ref()).await;
    for _ in 0..20 {
        let (code, _) = auth_code(u.id, c.id, t0());
        store.insert_auth_code(&code).await.expect("insert");
        let tasks: Vec<_> = (0..RACE_TASKS)
            .map(|_| {
                let store = store.clone();
                let hash = code.hash;
                tokio::spawn(async move {
                    store
                        .consume_auth_code(&hash, t0() + Duration::seconds(1))
                        .await
                        .expect("consume")
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("task") {
                CodeOutcome::Consumed(_) => winners += 1,
                CodeOutcome::Replayed { .. } => {}
                CodeOutcome::Invalid => panic!("a known live code is never invalid"),
            }
        }
        assert_eq!(winners, 1, "exactly one exchange consumes a code");
    }
}

pub async fn revoking_a_parent_revokes_its_children(store: Arc<dyn Store>) {
    let (u, parent) = signed_in(store.as_ref()).await;
    let a = child_of(&parent, t0());
    let (first, first_secret) = new_token(&a, t0());
    assert_eq!(
        store
            .create_session(&a, Some(&first))
            .await
            .expect("child a"),
        CreateOutcome::Created
    );
    let b = child_of(&parent, t0());
    assert_eq!(
        store.create_session(&b, None).await.expect("child b"),
        CreateOutcome::Created
    );
    let got = store.session(a.id).await.expect("get").expect("exists");
    assert_eq!(got.parent_id, Some(parent.id));
    let (_, via_token) = store
        .refresh_token(&first_secret.hash())
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(via_token.parent_id, Some(parent.id));
    // Another cookie session of the same user and a child of it stay alive.
    let (other, _) = cookie_session(u.id, t0());
    assert_eq!(
        store.create_session(&other, None).await.expect("other"),
        CreateOutcome::Created
    );
    let other_child = child_of(&other, t0());
    assert_eq!(
        store
            .create_session(&other_child, None)
            .await
            .expect("other child"),
        CreateOutcome::Created
    );
    let cursor = store
        .revocations_after(0, 1000, t0())
        .await
        .expect("feed")
        .last()
        .map_or(0, |e| e.cursor);
    let at = t0() + Duration::seconds(10);
    assert!(
        store
            .revoke_session(parent.id, &rev(RevokeReason::Logout, at))
            .await
            .expect("revoke parent")
    );
    for id in [parent.id, a.id, b.id] {
        let s = store.session(id).await.expect("get").expect("exists");
        assert_eq!(s.revoked_at, Some(at), "{id} revoked with its parent");
        assert_eq!(s.revoke_reason, Some(RevokeReason::Logout));
    }
    for id in [other.id, other_child.id] {
        let s = store.session(id).await.expect("get").expect("exists");
        assert!(s.revoked_at.is_none(), "{id} is not a child of the parent");
    }
    let mut fed: Vec<SessionId> = store
        .revocations_after(cursor, 1000, at)
        .await
        .expect("feed")
        .into_iter()
        .map(|e| e.sid)
        .collect();
    fed.sort();
    let mut expected = vec![parent.id, a.id, b.id];
    expected.sort();
    assert_eq!(fed, expected, "one feed event per session ended");
    // The child's refresh token no longer rotates.
    let (next, _) = new_token(&a, at);
    assert_eq!(
        store
            .rotate_refresh_token(&first_secret.hash(), &next, None, at)
            .await
            .expect("rotate"),
        RotateOutcome::NotRotated
    );
    // Revoking a child alone leaves its parent alone.
    assert!(
        store
            .revoke_session(other_child.id, &rev(RevokeReason::Logout, at))
            .await
            .expect("revoke child")
    );
    let s = store.session(other.id).await.expect("get").expect("exists");
    assert!(s.revoked_at.is_none());
}

pub async fn children_need_a_live_parent_of_the_same_user(store: Arc<dyn Store>) {
    let (_, parent) = signed_in(store.as_ref()).await;
    let (stranger, strangers) = signed_in(store.as_ref()).await;
    // A parent of another user.
    let foreign = Session {
        user_id: stranger.id,
        ..child_of(&parent, t0())
    };
    assert_eq!(
        store.create_session(&foreign, None).await.expect("create"),
        CreateOutcome::UserChanged
    );
    // An unknown parent.
    let orphan = Session {
        parent_id: Some(SessionId::new()),
        ..child_of(&strangers, t0())
    };
    assert_eq!(
        store.create_session(&orphan, None).await.expect("create"),
        CreateOutcome::UserChanged
    );
    // A parent past its absolute end.
    let late = child_of(&parent, parent.expires_at);
    assert_eq!(
        store.create_session(&late, None).await.expect("create"),
        CreateOutcome::UserChanged
    );
    // A revoked parent: nothing written.
    store
        .revoke_session(parent.id, &rev(RevokeReason::Logout, t0()))
        .await
        .expect("revoke");
    let after = child_of(&parent, t0() + Duration::seconds(1));
    assert_eq!(
        store.create_session(&after, None).await.expect("create"),
        CreateOutcome::UserChanged
    );
    assert_eq!(store.session(after.id).await.expect("get"), None);
    for s in [&foreign, &orphan, &late] {
        assert_eq!(store.session(s.id).await.expect("get"), None);
    }
}

// ---- Roles (docs/decisions/0011) ----

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| r.to_string()).collect()
}

pub async fn roles_roundtrip(store: Arc<dyn Store>) {
    let (u, _, _) = family(store.as_ref()).await;
    let none = store.user_roles(u.id).await.expect("roles").expect("user");
    assert_eq!(none, crate::UserRoles::default(), "a new user has no roles");
    assert_eq!(store.user_roles(UserId::new()).await.expect("roles"), None);
    let ttl = Duration::minutes(15);
    assert_eq!(
        store
            .set_user_roles(UserId::new(), &names(&["a"]), t0(), ttl)
            .await
            .expect("set"),
        None,
        "unknown user"
    );

    // Granting needs no feed entry: older tokens simply lack the role.
    let granted = store
        .set_user_roles(u.id, &names(&["admin", "billing:read"]), t0(), ttl)
        .await
        .expect("set")
        .expect("user");
    assert_eq!(granted.previous, Vec::<String>::new());
    assert_eq!(granted.roles, names(&["admin", "billing:read"]));
    assert!(granted.stale.is_empty());
    let read = store.user_roles(u.id).await.expect("roles").expect("user");
    assert_eq!(read.roles, names(&["admin", "billing:read"]));
    assert_eq!(read.removed_at, None);
    assert!(
        store
            .revocations_after(0, 100, t0())
            .await
            .expect("feed")
            .is_empty()
    );
    // The user record itself is unchanged by roles.
    assert_eq!(store.user_by_id(u.id).await.expect("user"), Some(u.clone()));

    // Clearing all roles is a removal.
    let at = t0() + Duration::seconds(5);
    let cleared = store
        .set_user_roles(u.id, &[], at, ttl)
        .await
        .expect("set")
        .expect("user");
    assert_eq!(cleared.previous, names(&["admin", "billing:read"]));
    let read = store.user_roles(u.id).await.expect("roles").expect("user");
    assert!(read.roles.is_empty());
    assert_eq!(read.removed_at, Some(at));
}

pub async fn role_removal_marks_live_sessions_stale_without_revoking(store: Arc<dyn Store>) {
    let (u, a, a_token) = family(store.as_ref()).await;
    let other = user(&format!("o{}", UserId::new().0.simple()));
    store.create_user(&other).await.expect("other user");
    let theirs = token_session(other.id, t0(), Duration::days(7));
    // Ends 5 minutes after the change: its tokens cannot outlive that.
    let short = token_session(
        u.id,
        t0() - Duration::hours(1),
        Duration::hours(1) + Duration::minutes(5),
    );
    let revoked = token_session(u.id, t0(), Duration::days(7));
    let over = token_session(u.id, t0() - Duration::days(8), Duration::days(7));
    let (cookie, _) = cookie_session(u.id, t0());
    for s in [&theirs, &short, &revoked, &over, &cookie] {
        assert_eq!(
            store.create_session(s, None).await.expect("create"),
            CreateOutcome::Created
        );
    }
    assert!(
        store
            .revoke_session(revoked.id, &rev(RevokeReason::Logout, t0()))
            .await
            .expect("revoke")
    );
    let ttl = Duration::minutes(15);
    store
        .set_user_roles(u.id, &names(&["a", "b"]), t0(), ttl)
        .await
        .expect("grant")
        .expect("user");
    store
        .set_user_roles(other.id, &names(&["a", "b"]), t0(), ttl)
        .await
        .expect("grant")
        .expect("user");
    let before = store.revocations_after(0, 100, t0()).await.expect("feed");
    assert_eq!(before.len(), 1, "only the logout: {before:?}");
    let after_logout = before[0].cursor;

    // Removing "b" while adding "c": a removal.
    let at = t0() + Duration::milliseconds(300);
    let changed = store
        .set_user_roles(u.id, &names(&["a", "c"]), at, ttl)
        .await
        .expect("set")
        .expect("user");
    assert_eq!(changed.previous, names(&["a", "b"]));
    let mut live = vec![a.id, short.id, cookie.id];
    live.sort();
    assert_eq!(changed.stale, live);

    let events = store
        .revocations_after(after_logout, 100, at)
        .await
        .expect("feed");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let whole_second = t0() + Duration::seconds(1);
    for e in &events {
        assert!(live.contains(&e.sid), "{e:?}");
        assert_eq!(e.iat_before, Some(whole_second), "{e:?}");
        let expected = if e.sid == short.id {
            t0() + Duration::minutes(5)
        } else {
            at + ttl
        };
        assert_eq!(e.exp, expected, "{e:?}");
    }
    let roles = store.user_roles(u.id).await.expect("roles").expect("user");
    assert_eq!(roles.roles, names(&["a", "c"]));
    assert_eq!(roles.removed_at, Some(at));
    assert_eq!(
        store
            .user_roles(other.id)
            .await
            .expect("roles")
            .expect("user")
            .roles,
        names(&["a", "b"]),
        "another user's roles are untouched"
    );

    // Nobody is logged out: the sessions are live and the family still rotates.
    for s in [&a, &short, &cookie] {
        let read = store.session(s.id).await.expect("session").expect("exists");
        assert!(read.is_live(at), "{read:?}");
    }
    assert_usable(store.as_ref(), &a, &a_token, "after a role removal").await;

    // Granting afterwards adds no entry and keeps the last removal.
    let later = at + Duration::seconds(3);
    let granted = store
        .set_user_roles(u.id, &names(&["a", "c", "d"]), later, ttl)
        .await
        .expect("set")
        .expect("user");
    assert!(granted.stale.is_empty() || granted.stale == changed.stale);
    let roles = store.user_roles(u.id).await.expect("roles").expect("user");
    assert_eq!(roles.removed_at, Some(at));

    // A revocation afterwards is a full one (no iat_before), after the stale entries.
    assert!(
        store
            .revoke_session(a.id, &rev(RevokeReason::Logout, later))
            .await
            .expect("revoke")
    );
    let tail = store
        .revocations_after(events[2].cursor, 100, later)
        .await
        .expect("feed");
    let full = tail
        .iter()
        .find(|e| e.iat_before.is_none())
        .expect("full revocation");
    assert_eq!(full.sid, a.id);

    // Past their exp, the stale entries are neither served nor kept.
    let gone = later + ttl + Duration::seconds(1);
    assert!(
        store
            .revocations_after(after_logout, 100, gone)
            .await
            .expect("feed")
            .iter()
            .all(|e| e.iat_before.is_none())
    );
}
