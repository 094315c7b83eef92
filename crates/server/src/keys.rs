//! Signing keys live in the store (the only secret kept as such).
//!
//! Lifecycle of a key: created and published in the JWKS at once; signs only from its
//! `activates_at` (`keys.publish_delay` after a rotation), so verifiers that cache the JWKS
//! see it before any token made with it; superseded when a newer key activates; deleted once
//! every token it signed has expired. Every instance reloads the key set periodically, so a
//! rotation made anywhere reaches all of them.
//!
//! Two algorithms may be in use: the access-token one (`[access_token] algorithm`) and the
//! ID-token one (`[id_token] algorithm`, RS256 by default). Each has its own current key,
//! generated, rotated and retired by the same rules; both are in the JWKS.
use crate::state::{AppState, StartError};
use latchkey_store::{Store, StoreError, StoredKey};
use latchkey_tokens::{Algorithm, KeyRing, SigningKey};
use time::{Duration, OffsetDateTime};

/// How often each instance reloads the key set (and rotates or retires keys when due).
pub const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Extra time a superseded key stays published beyond the access-token lifetime, to cover
/// instance reload lag and verifier clock skew.
const RETIRE_MARGIN: Duration = Duration::minutes(2);

/// The algorithms keys are kept for: the access-token one first, then the ID-token one if it
/// differs.
pub fn algorithms_in_use(access: Algorithm, id_token: Algorithm) -> Vec<Algorithm> {
    if access == id_token {
        vec![access]
    } else {
        vec![access, id_token]
    }
}

/// Loads the key set, generating the first key (active at once) of each algorithm in use
/// (access tokens, ID tokens) that has none.
pub async fn load_or_create(
    store: &dyn Store,
    algorithm: Algorithm,
    id_token_algorithm: Algorithm,
    now: OffsetDateTime,
) -> Result<KeyRing, StartError> {
    let mut stored = store.signing_keys().await?;
    for alg in algorithms_in_use(algorithm, id_token_algorithm) {
        stored = create_first_key(store, alg, stored, now).await?;
    }
    ring_from(&stored, algorithm, id_token_algorithm, now)
}

/// Generates the first key of `algorithm` when `stored` has none; returns the stored set.
async fn create_first_key(
    store: &dyn Store,
    algorithm: Algorithm,
    mut stored: Vec<StoredKey>,
    now: OffsetDateTime,
) -> Result<Vec<StoredKey>, StartError> {
    if !stored.iter().any(|k| k.algorithm == algorithm.as_str()) {
        // Instances started together on a fresh store all get here. Each proposes its key
        // under the same stored id (derived from what they all read), so the store's unique
        // id lets one insert win and the others adopt that key. With random ids each instance
        // would store and sign with a key of its own that the others would neither publish
        // nor accept until their next reload (crates/cli/tests/cluster.rs found this).
        // That id is only the claim: the key is published and signs under its RFC 7638
        // thumbprint ([`published_kid`]), so two installs never share a `kid`.
        let generated = SigningKey::generate(algorithm, now)?;
        let key = SigningKey::from_stored(
            format!("{FIRST_KEY_PREFIX}{}", first_kid(algorithm, &stored, now)),
            algorithm,
            generated.private_pkcs8_der(),
            now,
        )?;
        match store.insert_signing_key(&to_stored(&key, now)).await {
            Ok(()) => {
                tracing::info!(kid = key.kid(), algorithm = %algorithm, "generated signing key");
            }
            // Another instance generated it at the same moment: use the stored set.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        stored = store.signing_keys().await?;
    }
    Ok(stored)
}

/// The `kid` every instance proposes for the first key of `algorithm`: the same for all that
/// read the same key set in the same minute (the minute keeps a store that is wiped and set
/// up again from reusing a `kid` that verifiers may have cached with the old key).
fn first_kid(algorithm: Algorithm, stored: &[StoredKey], now: OffsetDateTime) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut kids: Vec<&str> = stored.iter().map(|k| k.kid.as_str()).collect();
    kids.sort_unstable();
    let mut hash = Sha256::new();
    hash.update(b"latchkey first signing key\0");
    hash.update(algorithm.as_str().as_bytes());
    hash.update(now.unix_timestamp().div_euclid(60).to_be_bytes());
    for kid in kids {
        hash.update(b"\0");
        hash.update(kid.as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.finalize()[..16])
}

/// Stored id prefix of a first key (see [`load_or_create`]): such a key is published and
/// signs under its thumbprint instead of its stored id.
pub const FIRST_KEY_PREFIX: &str = "first.";

/// A stored key, parsed, under the `kid` it is published and signs with: the stored id, or
/// for a first key its RFC 7638 thumbprint. Keys stored before (any other id) keep their id,
/// so tokens they signed keep verifying.
pub fn load_stored(k: &StoredKey) -> Result<SigningKey, StartError> {
    let alg: Algorithm = k.algorithm.parse().map_err(|_| {
        StartError::Other(format!(
            "stored key {} has unknown algorithm {:?}",
            k.kid, k.algorithm
        ))
    })?;
    let key = SigningKey::from_stored(k.kid.clone(), alg, &k.private_der, k.created_at)?;
    if !k.kid.starts_with(FIRST_KEY_PREFIX) {
        return Ok(key);
    }
    let thumbprint = key.public_jwk().thumbprint();
    Ok(SigningKey::from_stored(
        thumbprint,
        alg,
        &k.private_der,
        k.created_at,
    )?)
}

/// The `kid` a stored key is published and signs under (see [`load_stored`]).
pub fn published_kid(k: &StoredKey) -> Result<String, StartError> {
    Ok(load_stored(k)?.kid().to_string())
}

/// The ring of every stored key, signing access tokens with the newest active key of
/// `algorithm` and ID tokens with the newest active key of `id_token_algorithm`.
fn ring_from(
    stored: &[StoredKey],
    algorithm: Algorithm,
    id_token_algorithm: Algorithm,
    now: OffsetDateTime,
) -> Result<KeyRing, StartError> {
    let current = |alg: Algorithm| {
        signing_key(stored, alg, now)
            .ok_or_else(|| StartError::Other(format!("no active {alg} signing key")))
            .and_then(published_kid)
    };
    let signing_kid = current(algorithm)?;
    let id_kid = current(id_token_algorithm)?;
    let keys = stored
        .iter()
        .map(load_stored)
        .collect::<Result<Vec<_>, StartError>>()?;
    Ok(KeyRing::with_signers(keys, &signing_kid, &[&id_kid])?)
}

/// Newest key of `algorithm` that is active at `now`; if none is active yet (only pending
/// keys), the oldest of them, so a fresh deployment can always sign.
pub fn signing_key(
    stored: &[StoredKey],
    algorithm: Algorithm,
    now: OffsetDateTime,
) -> Option<&StoredKey> {
    let mut of_alg: Vec<&StoredKey> = stored
        .iter()
        .filter(|k| k.algorithm == algorithm.as_str())
        .collect();
    of_alg.sort_by_key(|k| (k.activates_at, k.created_at));
    of_alg
        .iter()
        .rev()
        .find(|k| k.activates_at <= now)
        .or_else(|| of_alg.first())
        .copied()
}

fn to_stored(key: &SigningKey, activates_at: OffsetDateTime) -> StoredKey {
    StoredKey {
        kid: key.kid().to_string(),
        algorithm: key.algorithm().to_string(),
        private_der: key.private_pkcs8_der().to_vec(),
        created_at: key.created_at(),
        activates_at,
    }
}

/// Creates a new key of each algorithm in use: published now, signing after
/// `keys.publish_delay`. Returns the kid of the new access-token key.
pub async fn rotate(state: &AppState) -> Result<String, StartError> {
    let id_alg = state.config.id_token.algorithm;
    let access_alg = state.config.access_token.algorithm;
    if id_alg != access_alg {
        insert_new_key(state, id_alg).await?;
    }
    let kid = insert_new_key(state, access_alg).await?;
    reload(state).await?;
    Ok(kid)
}

/// Stores a new key of `algorithm`, published now and signing after `keys.publish_delay`.
async fn insert_new_key(state: &AppState, algorithm: Algorithm) -> Result<String, StartError> {
    let now = state.clock.now();
    let key = SigningKey::generate(algorithm, now)?;
    let activates_at = now + state.config.keys.publish_delay.as_time();
    state
        .store
        .insert_signing_key(&to_stored(&key, activates_at))
        .await?;
    tracing::warn!(target: "latchkey::security", kid = key.kid(), %algorithm, %activates_at, "signing key rotated");
    Ok(key.kid().to_string())
}

/// Reloads the key set from the store, rotating when `keys.rotate_every` has passed since the
/// newest key was created, and deleting keys whose tokens have all expired.
pub async fn reload(state: &AppState) -> Result<(), StartError> {
    let now = state.clock.now();
    let algorithm = state.config.access_token.algorithm;
    let id_algorithm = state.config.id_token.algorithm;
    let in_use = algorithms_in_use(algorithm, id_algorithm);
    let mut stored = state.store.signing_keys().await?;
    // An algorithm newly configured (e.g. the ID-token key of an older install) gets its key.
    for &alg in &in_use {
        stored = create_first_key(state.store.as_ref(), alg, stored, now).await?;
    }
    let rotate_every = state.config.keys.rotate_every.as_time();
    let mut rotated = false;
    for &alg in &in_use {
        let newest = stored
            .iter()
            .filter(|k| k.algorithm == alg.as_str())
            .map(|k| k.created_at)
            .max();
        if rotate_every > Duration::ZERO
            && newest.is_some_and(|created| now - created >= rotate_every)
        {
            insert_new_key(state, alg).await?;
            rotated = true;
        }
    }
    if rotated {
        stored = state.store.signing_keys().await?;
    }
    // Keys may have signed ID tokens too: they stay until those have expired as well.
    let longest = state
        .policy
        .access_ttl
        .max(state.config.id_token.ttl.as_time());
    for kid in retired(&stored, &in_use, now, longest) {
        if state.store.delete_signing_key(&kid).await? {
            tracing::info!(kid = %kid, "retired signing key removed from the JWKS");
        }
    }
    let stored = state.store.signing_keys().await?;
    state.set_keyring(ring_from(&stored, algorithm, id_algorithm, now)?);
    Ok(())
}

/// Keys that no token still alive can have been signed with: superseded more than the
/// longest token lifetime ago, by a newer key of their own algorithm if it is in use, else
/// by the current key of the first algorithm in use (the access-token one). The current key
/// of each algorithm in use is never retired.
fn retired(
    stored: &[StoredKey],
    in_use: &[Algorithm],
    now: OffsetDateTime,
    longest_ttl: Duration,
) -> Vec<String> {
    let currents: Vec<(Algorithm, &StoredKey)> = in_use
        .iter()
        .filter_map(|&alg| signing_key(stored, alg, now).map(|k| (alg, k)))
        .collect();
    let Some(&(_, fallback)) = currents.first() else {
        return Vec::new();
    };
    stored
        .iter()
        .filter(|k| currents.iter().all(|(_, c)| c.kid != k.kid))
        .filter(|k| {
            let current = currents
                .iter()
                .find(|(alg, _)| alg.as_str() == k.algorithm)
                .map_or(fallback, |(_, c)| *c);
            k.activates_at < current.activates_at
                && now - current.activates_at > longest_ttl + RETIRE_MARGIN
        })
        .map(|k| k.kid.clone())
        .collect()
}

/// Reloads keys every [`RELOAD_INTERVAL`] for the life of the runtime.
pub fn spawn_reloader(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = reload(&state).await {
                tracing::warn!(error = %e, "reloading signing keys failed; keeping the current set");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, alg: &str, activates_in_min: i64) -> StoredKey {
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid");
        StoredKey {
            kid: kid.into(),
            algorithm: alg.into(),
            private_der: Vec::new(),
            created_at: t0,
            activates_at: t0 + Duration::minutes(activates_in_min),
        }
    }

    fn at(min: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid") + Duration::minutes(min)
    }

    #[test]
    fn a_pending_key_does_not_sign_until_it_activates() {
        let keys = vec![key("old", "EdDSA", 0), key("new", "EdDSA", 5)];
        assert_eq!(
            signing_key(&keys, Algorithm::EdDSA, at(4)).map(|k| k.kid.as_str()),
            Some("old")
        );
        assert_eq!(
            signing_key(&keys, Algorithm::EdDSA, at(5)).map(|k| k.kid.as_str()),
            Some("new")
        );
        // Only a pending key: it signs rather than nothing.
        assert_eq!(
            signing_key(&keys[1..], Algorithm::EdDSA, at(0)).map(|k| k.kid.as_str()),
            Some("new")
        );
        assert!(signing_key(&keys, Algorithm::ES256, at(9)).is_none());
    }

    #[test]
    fn instances_reading_the_same_keys_propose_the_same_first_kid() {
        let keys = vec![key("old", "ES256", 0)];
        let kid = first_kid(Algorithm::EdDSA, &keys, at(0));
        assert_eq!(kid, first_kid(Algorithm::EdDSA, &keys, at(0)));
        assert_eq!(kid.len(), 22);
        assert_ne!(kid, first_kid(Algorithm::ES256, &keys, at(0)));
        assert_ne!(kid, first_kid(Algorithm::EdDSA, &[], at(0)));
        assert_ne!(kid, first_kid(Algorithm::EdDSA, &keys, at(1)));
    }

    #[test]
    fn a_superseded_key_retires_after_the_longest_token_lifetime() {
        let keys = vec![key("old", "EdDSA", 0), key("new", "EdDSA", 5)];
        let ttl = Duration::minutes(15);
        let ed = [Algorithm::EdDSA];
        assert!(
            retired(&keys, &ed, at(4), ttl).is_empty(),
            "old still signs"
        );
        assert!(
            retired(&keys, &ed, at(5 + 15), ttl).is_empty(),
            "tokens of old may live"
        );
        assert_eq!(
            retired(&keys, &ed, at(5 + 15 + 3), ttl),
            vec!["old".to_string()]
        );
    }

    #[test]
    fn the_id_token_key_retires_only_by_its_own_successor() {
        let both = [Algorithm::EdDSA, Algorithm::RS256];
        let ttl = Duration::minutes(15);
        // The access key rotated long ago; the RS256 key is still the ID-token signer.
        let keys = vec![
            key("rsa", "RS256", 0),
            key("ed-old", "EdDSA", 0),
            key("ed-new", "EdDSA", 5),
        ];
        assert_eq!(
            retired(&keys, &both, at(60), ttl),
            vec!["ed-old".to_string()]
        );
        // Superseded by a newer RS256 key: retired after the longest lifetime.
        let keys = vec![
            key("rsa", "RS256", 0),
            key("rsa-new", "RS256", 5),
            key("ed", "EdDSA", 0),
        ];
        assert!(retired(&keys, &both, at(5 + 15), ttl).is_empty());
        assert_eq!(
            retired(&keys, &both, at(5 + 15 + 3), ttl),
            vec!["rsa".to_string()]
        );
        // RS256 no longer in use: its key goes once the access key has superseded it.
        let keys = vec![key("rsa", "RS256", 0), key("ed", "EdDSA", 5)];
        assert_eq!(
            retired(&keys, &[Algorithm::EdDSA], at(5 + 15 + 3), ttl),
            vec!["rsa".to_string()]
        );
    }
}
