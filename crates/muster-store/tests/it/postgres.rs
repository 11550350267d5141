//! What only PostgreSQL promises: several stores (hubs) on one database.

use muster_core::Millis;
use muster_store::postgres::{PgStore, ScratchDb};
use muster_store::{Limits, NewEvent, Store};
use std::sync::Arc;
use std::time::Duration;

fn open_two() -> (Arc<PgStore>, Arc<PgStore>, ScratchDb) {
    let db = ScratchDb::create().expect("a scratch PostgreSQL database");
    let a = PgStore::open(db.url(), Limits::default()).expect("hub a's store");
    let b = PgStore::open(db.url(), Limits::default()).expect("hub b's store");
    (Arc::new(a), Arc::new(b), db)
}

/// A change committed through one store moves every other store's
/// `subscribe()` on, so each hub hears of the others' work at once.
#[tokio::test]
async fn a_commit_on_one_hub_reaches_every_hubs_watchers() {
    let (a, b, db) = tokio::task::spawn_blocking(open_two).await.unwrap();
    let mut watching = b.subscribe();
    let before = *watching.borrow_and_update();
    let event = NewEvent { kind: "test.ping", detail: Some("from a".into()), ..Default::default() };
    a.record_event(event, Millis(1)).await.expect("a commits");
    tokio::time::timeout(Duration::from_secs(10), watching.changed())
        .await
        .expect("b hears of a's commit")
        .expect("b's store is open");
    assert!(*watching.borrow() > before, "b's latest event moved on");
    a.close().await;
    b.close().await;
    drop(db);
}
