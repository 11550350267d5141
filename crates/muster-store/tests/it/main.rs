//! The store's one integration-test binary: the conformance suite run against
//! SQLite, and what only SQLite promises (durability, pragmas, group commit,
//! migrations).

#![allow(
    clippy::unwrap_used,
    reason = "a failed unwrap here is a failed test; allow-unwrap-in-tests misses helper functions"
)]

mod conformance;
mod sqlite;

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

pub fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("muster.db")
}
