//! The store's one integration-test binary: the conformance suite run against
//! SQLite and PostgreSQL, and what only SQLite promises (durability, pragmas, group commit,
//! migrations).

#![allow(
    clippy::unwrap_used,
    reason = "a failed unwrap here is a failed test; allow-unwrap-in-tests misses helper functions"
)]

mod conformance;
mod postgres;
mod sqlite;

use muster_store::postgres::{PgStore, ScratchDb};
use muster_store::sqlite::SqliteStore;
use muster_store::{Limits, Store};
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;

/// A fresh store in its own temporary directory, which must outlive it.
pub async fn fresh_sqlite() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SqliteStore::open(&db_path(&dir), Limits::default()).expect("open a fresh SQLite store");
    (Arc::new(store), dir)
}

/// A fresh store on a scratch PostgreSQL database, dropped with the guard.
pub async fn fresh_postgres() -> (Arc<dyn Store>, PgGuard) {
    let (store, db) = tokio::task::spawn_blocking(|| {
        let db = ScratchDb::create().expect("create a scratch PostgreSQL database");
        let store = PgStore::open(db.url(), Limits::default()).expect("open a fresh PostgreSQL store");
        (store, db)
    })
    .await
    .unwrap();
    let store = Arc::new(store);
    (store.clone(), PgGuard { store, db: Some(db) })
}

/// Closes the store's sessions, then drops its database.
pub struct PgGuard {
    store: Arc<PgStore>,
    db: Option<ScratchDb>,
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        let (store, db) = (self.store.clone(), self.db.take());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(Store::close(&*store));
            drop(db);
        })
        .join()
        .unwrap();
    }
}

pub fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("muster.db")
}
