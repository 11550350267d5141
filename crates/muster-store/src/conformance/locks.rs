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

/// A request that stops waiting (it timed out, its caller went away) leaves
/// the wait-for graph, so it can close no cycle, and keeps what it holds; a
/// hub that starts forgets every wait, since no request is waiting any more.
pub async fn a_wait_given_up_leaves_the_graph_and_a_start_forgets_every_wait(store: Arc<dyn Store>) {
    use crate::{Acquire, LockMode};
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let one = submit(s, 1, spec("one"), at(0)).await;
    let e1 = start(s, &a, &one, at(0)).await;
    let two = submit(s, 2, spec("two"), at(0)).await;
    let e2 = start(s, &a, &two, at(0)).await;
    let three = submit(s, 3, spec("three"), at(0)).await;
    let e3 = start(s, &a, &three, at(0)).await;
    let x = LockMode::Exclusive;
    assert_eq!(ok("acquire", s.acquire_lock("lock:a", &one, e1, x, false, at(1)).await), Acquire::Acquired);
    assert_eq!(ok("acquire", s.acquire_lock("lock:b", &two, e2, x, false, at(1)).await), Acquire::Acquired);
    let busy = ok("acquire", s.acquire_lock("lock:b", &one, e1, x, false, at(2)).await);
    assert_eq!(busy, Acquire::Busy { holders: vec![two.clone()] });
    assert_eq!(ok("lock_waits", s.lock_waits().await).len(), 1);
    let held = ok("locks", s.locks().await);

    ok("stop_waiting", s.stop_waiting("lock:b", &one).await);
    assert_eq!(ok("lock_waits", s.lock_waits().await), [], "a wait given up leaves the wait-for graph");
    assert_eq!(ok("locks", s.locks().await), held, "giving up a wait releases nothing");
    // Without the wait, two waiting for one's lock closes no cycle.
    let busy = ok("acquire", s.acquire_lock("lock:a", &two, e2, x, false, at(3)).await);
    assert_eq!(busy, Acquire::Busy { holders: vec![one.clone()] }, "a given-up wait must not make a deadlock");

    // Stopping a wait there is not, or for a lock the task holds, changes nothing.
    let waits = ok("lock_waits", s.lock_waits().await);
    ok("stop_waiting", s.stop_waiting("lock:b", &one).await);
    ok("stop_waiting", s.stop_waiting("lock:a", &one).await);
    assert_eq!(ok("lock_waits", s.lock_waits().await), waits, "stop_waiting touched another task's wait");
    assert_eq!(ok("locks", s.locks().await), held, "stop_waiting released a lock its task holds");

    // At start, every wait is forgotten, and every lock is still held.
    let busy = ok("acquire", s.acquire_lock("lock:a", &three, e3, LockMode::Shared, false, at(4)).await);
    assert!(matches!(busy, Acquire::Busy { .. }), "{busy:?}");
    assert_eq!(ok("lock_waits", s.lock_waits().await).len(), 2);
    assert_eq!(ok("clear_lock_waits", s.clear_lock_waits().await), 2, "it says how many waits it forgot");
    assert_eq!(ok("lock_waits", s.lock_waits().await), []);
    assert_eq!(ok("locks", s.locks().await), held, "forgetting waits releases nothing");
    assert_eq!(ok("clear_lock_waits", s.clear_lock_waits().await), 0, "nothing is left to forget");
    // Two, no longer waiting, closes no cycle when one waits for it again.
    let busy = ok("acquire", s.acquire_lock("lock:b", &one, e1, x, false, at(5)).await);
    assert_eq!(busy, Acquire::Busy { holders: vec![two.clone()] });
}

/// An operator's force of every lock: each lock is taken from all its
/// holders with one `lock.forced` event, the runs go on, and the count is
/// of holders, as for one lock.
pub async fn release_all_locks_forces_every_lock_with_one_event_each(store: Arc<dyn Store>) {
    use crate::{Acquire, LockMode};
    let s = &*store;
    let a = online(s, "a", 4, at(0)).await;
    let mut runs = Vec::new();
    for n in 1..=4 {
        let id = submit(s, n, spec("run"), at(0)).await;
        let e = start(s, &a, &id, at(0)).await;
        runs.push((id, e));
    }
    let take = |i: usize, name: &'static str, mode: LockMode, when: i64| {
        let (id, e) = runs[i].clone();
        async move { ok("acquire_lock", s.acquire_lock(name, &id, e, mode, false, at(when)).await) }
    };
    assert_eq!(take(0, "repo:web", LockMode::Shared, 1).await, Acquire::Acquired);
    assert_eq!(take(1, "repo:web", LockMode::Shared, 2).await, Acquire::Acquired);
    assert_eq!(take(2, "deploy:prod", LockMode::Exclusive, 3).await, Acquire::Acquired);
    assert!(matches!(take(3, "deploy:prod", LockMode::Exclusive, 4).await, Acquire::Busy { .. }));

    let mark = last_seq(s).await;
    assert_eq!(ok("release_all_locks", s.release_all_locks("ops", at(5)).await), 3, "one for each holder");
    let events = assert_events(s, mark, &["lock.forced", "lock.forced"], "forcing every lock").await;
    let details: Vec<&str> = events.iter().filter_map(|e| e.detail.as_deref()).collect();
    let (one, two, three) = (&runs[0].0, &runs[1].0, &runs[2].0);
    assert_eq!(
        details,
        [format!("deploy:prod taken from {three} (by ops)"), format!("repo:web taken from {one}, {two} (by ops)")]
    );
    assert_eq!(ok("locks", s.locks().await), [], "every lock is free");
    for (id, _) in &runs {
        assert_eq!(get(s, id).await.state, TaskState::Running, "forcing a lock does not end the run holding it");
    }
    assert_eq!(take(3, "deploy:prod", LockMode::Exclusive, 6).await, Acquire::Acquired, "the waiter can take it now");

    ok("release_lock", s.release_lock("deploy:prod", Some(&runs[3].0), "run", at(7)).await);
    let mark = last_seq(s).await;
    assert_eq!(ok("release_all_locks", s.release_all_locks("ops", at(8)).await), 0, "no lock, nothing forced");
    assert_events(s, mark, &[], "forcing every lock when none is held").await;
}
