//! Signing keys live in the store (the only secret kept as such). The first start generates
//! one; every instance signs with the newest key of the configured algorithm.
use crate::state::StartError;
use latchkey_store::{Store, StoreError, StoredKey};
use latchkey_tokens::{Algorithm, KeyRing, SigningKey};
use time::OffsetDateTime;

pub async fn load_or_create(
    store: &dyn Store,
    algorithm: Algorithm,
    now: OffsetDateTime,
) -> Result<KeyRing, StartError> {
    let mut keys = load(store).await?;
    if !keys.iter().any(|k| k.algorithm() == algorithm) {
        let key = SigningKey::generate(algorithm, now)?;
        match store.insert_signing_key(&to_stored(&key)).await {
            // Another instance generated one at the same moment: use the stored set.
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(kid = key.kid(), algorithm = %algorithm, "generated signing key");
        keys = load(store).await?;
    }
    let signing_kid = keys
        .iter()
        .rev()
        .find(|k| k.algorithm() == algorithm)
        .map(|k| k.kid().to_string())
        .ok_or_else(|| StartError::Other("no signing key of the configured algorithm".into()))?;
    Ok(KeyRing::new(keys, &signing_kid)?)
}

async fn load(store: &dyn Store) -> Result<Vec<SigningKey>, StartError> {
    store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| {
            let algorithm: Algorithm = k.algorithm.parse().map_err(|_| {
                StartError::Other(format!(
                    "stored key {} has unknown algorithm {:?}",
                    k.kid, k.algorithm
                ))
            })?;
            Ok(SigningKey::from_stored(
                k.kid,
                algorithm,
                &k.private_der,
                k.created_at,
            )?)
        })
        .collect()
}

fn to_stored(key: &SigningKey) -> StoredKey {
    StoredKey {
        kid: key.kid().to_string(),
        algorithm: key.algorithm().to_string(),
        private_der: key.private_pkcs8_der().to_vec(),
        created_at: key.created_at(),
    }
}
