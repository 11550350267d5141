//! Named locks and deadlock refusal.

use super::*;

pub async fn locks_are_shared_or_exclusive_and_go_with_the_run(store: Arc<dyn Store>) {
    use crate::{Acquire, LockMode};
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let one = submit(s, 1, spec("one"), at(0)).await;
    let e1 = start(s, &a, &one, at(0)).await;
    let two = submit(s, 2, spec("two"), at(0)).await;
    let e2 = start(s, &a, &two, at(0)).await;
    let three = submit(s, 3, spec("three"), at(0)).await;
    let e3 = start(s, &a, &three, at(0)).await;
    let take = |t: &TaskId, e: Epoch, name: &'static str, mode: LockMode, try_only: bool| {
        let t = t.clone();
        async move { ok("acquire_lock", s.acquire_lock(name, &t, e, mode, try_only, at(1)).await) }
    };
    assert_eq!(take(&one, e1, "repo:web", LockMode::Shared, true).await, Acquire::Acquired);
    assert_eq!(take(&two, e2, "repo:web", LockMode::Shared, true).await, Acquire::Acquired, "shared with shared");
    assert_eq!(
        take(&three, e3, "repo:web", LockMode::Exclusive, true).await,
        Acquire::Busy { holders: vec![one.clone(), two.clone()] },
        "exclusive waits for every holder"
    );
    assert!(ok("lock_waits", s.lock_waits().await).is_empty(), "a try does not wait");
    assert_eq!(take(&three, e3, "branch:main", LockMode::Exclusive, false).await, Acquire::Acquired);
    assert!(matches!(take(&one, e1, "branch:main", LockMode::Shared, false).await, Acquire::Busy { .. }));
    let waits = ok("lock_waits", s.lock_waits().await);
    assert_eq!((waits.len(), &waits[0].holders), (1, &vec![three.clone()]), "one waits for three");
    let r = s.acquire_lock("has space", &one, e1, LockMode::Shared, true, at(1)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "name"), "{r:?}");
    let r = s.acquire_lock("x", &one, Epoch(e1.0 + 5), LockMode::Shared, true, at(1)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "a stale run takes nothing: {r:?}");

    // The run ends: its locks go, and so does its place in line.
    finish(s, &a, &three, e3, &SUCCEEDED, at(2)).await;
    let held: Vec<String> = ok("locks", s.locks().await).iter().map(|l| format!("{} {}", l.name, l.task)).collect();
    assert_eq!(held, [format!("repo:web {one}"), format!("repo:web {two}")]);
    assert_eq!(take(&one, e1, "branch:main", LockMode::Shared, false).await, Acquire::Acquired, "now free");
    assert!(ok("lock_waits", s.lock_waits().await).is_empty());

    // A run that goes silent loses its lease, and its locks with it.
    ok("reclaim_expired", s.reclaim_expired(at(31), 10).await);
    assert!(ok("locks", s.locks().await).is_empty(), "a crash leaves no lock behind");

    // An operator can force a lock.
    ok("cancel_task", s.cancel_task(&one, at(32)).await);
    ok("cancel_task", s.cancel_task(&two, at(32)).await);
    let four = submit(s, 4, spec("four"), at(32)).await;
    let e4 = start(s, &a, &four, at(32)).await;
    assert_eq!(take(&four, e4, "deploy:staging", LockMode::Exclusive, true).await, Acquire::Acquired);
    assert!(matches!(s.release_lock("nothing", None, "ops", at(33)).await, Err(StoreError::NotFound { .. })));
    let mark = last_seq(s).await;
    assert_eq!(ok("release_lock", s.release_lock("deploy:staging", None, "ops", at(33)).await), 1);
    let events = assert_events(s, mark, &["lock.forced"], "a forced unlock").await;
    assert_eq!(events[0].detail.as_deref(), Some(format!("deploy:staging taken from {four} (by ops)").as_str()));
}

pub async fn a_wait_that_closes_a_cycle_is_refused_as_a_deadlock(store: Arc<dyn Store>) {
    use crate::{Acquire, LockMode};
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let one = submit(s, 1, spec("one"), at(0)).await;
    let e1 = start(s, &a, &one, at(0)).await;
    let two = submit(s, 2, spec("two"), at(0)).await;
    let e2 = start(s, &a, &two, at(0)).await;
    let x = LockMode::Exclusive;
    assert_eq!(ok("acquire", s.acquire_lock("lock:a", &one, e1, x, false, at(1)).await), Acquire::Acquired);
    assert_eq!(ok("acquire", s.acquire_lock("lock:b", &two, e2, x, false, at(1)).await), Acquire::Acquired);
    assert!(matches!(ok("acquire", s.acquire_lock("lock:b", &one, e1, x, false, at(2)).await), Acquire::Busy { .. }));
    let mark = last_seq(s).await;
    let r = ok("acquire", s.acquire_lock("lock:a", &two, e2, x, false, at(3)).await);
    assert_eq!(
        r,
        Acquire::Deadlock { cycle: vec![(two.clone(), "lock:a".to_owned()), (one.clone(), "lock:b".to_owned())] },
        "the youngest waiter is refused, naming the cycle"
    );
    let events = assert_events(s, mark, &["lock.deadlock"], "a deadlock").await;
    assert!(
        events[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(&format!("{two} waits for lock:a, {one} waits for lock:b")))
    );
    let waits = ok("lock_waits", s.lock_waits().await);
    assert_eq!(waits.len(), 1, "only the older wait stands: {waits:?}");
    // The refused task gives up; the other goes on.
    finish(s, &a, &two, e2, &failed("deadlock"), at(4)).await;
    assert_eq!(ok("acquire", s.acquire_lock("lock:b", &one, e1, x, false, at(5)).await), Acquire::Acquired);
}
