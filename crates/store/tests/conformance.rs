//! The conformance suite against every backend available without outside services.
use latchkey_store::conformance::TestStore;
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
}
