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

/// Changes in flight together are committed together, each under its own
/// savepoint: one that fails (a token id taken twice) is answered with its
/// error and leaves nothing, and every other is committed and answered.
#[tokio::test]
async fn changes_committed_together_fail_alone() {
    let (a, b, db) = tokio::task::spawn_blocking(open_two).await.unwrap();
    let token = |n: u64| muster_store::NewToken {
        id: muster_core::TokenId::parse(&format!("tk_{n:012}")).expect("a token id"),
        name: format!("t{n}"),
        scope: muster_store::Scope::Admin,
        agent: None,
        hash: format!("{n:064x}"),
    };
    // 200 at once through two hubs; every tenth takes an id already taken.
    let mut pending = Vec::new();
    for k in 0..200u64 {
        let store = if k % 2 == 0 { a.clone() } else { b.clone() };
        let n = if k % 10 == 9 { k - 1 } else { k };
        pending.push(tokio::spawn(async move { (n, store.create_token(token(n), Millis(1)).await) }));
    }
    let mut ok = std::collections::BTreeSet::new();
    let mut refused = 0;
    for p in pending {
        match p.await.expect("the change's task") {
            (n, Ok(t)) => assert!(ok.insert(n) && t.name == format!("t{n}"), "each id answered once"),
            (_, Err(_)) => refused += 1,
        }
    }
    assert_eq!(refused, 20, "each id taken twice is refused once");
    let stored = a.list_tokens().await.expect("tokens");
    assert_eq!(stored.len(), ok.len(), "what was answered is what is stored");
    a.close().await;
    b.close().await;
    drop(db);
}
