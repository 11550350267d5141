//! Claims, reports and reclaims racing on many threads keep every invariant.

use super::*;

/// A small deterministic generator for the concurrent case's choices.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % sides
    }
}

/// Many agents claim, start and finish at once while leases expire and are
/// reclaimed under them, stale reports arrive, and first submissions of
/// the same idempotency key race each other. Afterwards: every task was
/// created once and ended; no attempt was accepted under a stale epoch; no
/// task held two leases (one open attempt at most, none at the end); and
/// every accepted completion is the one its attempt records.
pub async fn concurrent_claims_reports_and_reclaims_keep_every_invariant(store: Arc<dyn Store>) {
    use std::sync::atomic::{AtomicI64, Ordering};
    const AGENTS: usize = 6;
    const TASKS: u128 = 120;
    const KEYS: u128 = 10;
    let s = &*store;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(online(s, &format!("c{i}"), 3, at(0)).await);
    }

    // Plain tasks, and each key submitted four times at once.
    let mut submissions = Vec::new();
    for n in 0..TASKS {
        let st = store.clone();
        submissions.push(tokio::spawn(async move {
            (None, st.create_task(task_id(10_000 + n), with_attempts(spec("work"), 2), at(0)).await)
        }));
    }
    for k in 0..KEYS {
        for r in 0..4 {
            let st = store.clone();
            let mut keyed = with_attempts(spec("keyed"), 2);
            keyed.idempotency_key = Some(format!("key-{k}"));
            submissions.push(tokio::spawn(async move {
                (Some(k), st.create_task(task_id(20_000 + k * 10 + r), keyed, at(0)).await)
            }));
        }
    }
    let mut keyed: std::collections::BTreeMap<u128, Vec<crate::Created>> = std::collections::BTreeMap::new();
    let mut all = std::collections::BTreeSet::new();
    for sub in submissions {
        let (key, created) = sub.await.expect("a submission");
        let created = ok("create_task", created);
        all.insert(created.task.id.clone());
        match key {
            Some(k) => keyed.entry(k).or_default().push(created),
            None => assert!(created.created),
        }
    }
    for (k, answers) in &keyed {
        let ids: std::collections::BTreeSet<&TaskId> = answers.iter().map(|c| &c.task.id).collect();
        assert_eq!(ids.len(), 1, "key-{k} made {ids:?}");
        assert_eq!(answers.iter().filter(|c| c.created).count(), 1, "key-{k}: one submission created it");
    }
    assert_eq!(all.len() as u128, TASKS + KEYS);

    // The race: agents work while the clock jumps and the reaper reclaims.
    let clock = Arc::new(AtomicI64::new(0));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<(TaskId, Epoch)>::new()));
    let mut actors = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let (st, agent, clock, accepted) = (store.clone(), agent.clone(), clock.clone(), accepted.clone());
        actors.push(tokio::spawn(async move {
            let mut dice = Dice(i as u64 + 1);
            for _ in 0..40 {
                let now = at(clock.load(Ordering::SeqCst));
                for task in st.claim_tasks(&agent, now, ACCEPT).await.expect("claim_tasks") {
                    let (id, epoch) = (task.id.clone(), task.epoch);
                    if dice.roll(5) == 0 {
                        continue; // never accepted: its lease runs out
                    }
                    if st.start_task(&agent, &id, epoch, now, LEASE).await.is_err() {
                        continue; // reclaimed in between
                    }
                    if dice.roll(7) == 0 {
                        continue; // silent while running: reclaimed later
                    }
                    if epoch.0 > 1 {
                        let stale = st
                            .finish_task(
                                &agent,
                                &id,
                                Epoch(epoch.0 - 1),
                                &SUCCEEDED,
                                RunDetails::default(),
                                now,
                                Retry::fixed(BACKOFF),
                            )
                            .await;
                        let applied = matches!(stale, Ok((_, FinishResult::Applied(_))));
                        assert!(!applied, "a report under stale epoch {} of {id} was applied", epoch.0 - 1);
                    }
                    let outcome = if dice.roll(3) == 0 { failed("flaky") } else { SUCCEEDED };
                    match st
                        .finish_task(&agent, &id, epoch, &outcome, RunDetails::default(), now, Retry::fixed(BACKOFF))
                        .await
                    {
                        Ok((_, FinishResult::Applied(_))) => accepted.lock().expect("lock").push((id, epoch)),
                        Ok((_, FinishResult::Duplicate)) => panic!("{id}'s first finish under {epoch} was a duplicate"),
                        Err(StoreError::Refused(Refused::StaleEpoch { .. })) => {} // reclaimed while it ran
                        Err(e) => panic!("finish_task of {id}: {e:?}"),
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    {
        let (st, clock) = (store.clone(), clock.clone());
        actors.push(tokio::spawn(async move {
            let mut dice = Dice(99);
            for _ in 0..80 {
                let jump = dice.roll(20) as i64;
                let now = at(clock.fetch_add(jump, Ordering::SeqCst) + jump);
                st.reclaim_expired(now, 50).await.expect("reclaim_expired");
                tokio::task::yield_now().await;
            }
        }));
    }
    for actor in actors {
        actor.await.expect("an actor");
    }

    // Then everything left runs to its end.
    let mut now = clock.load(Ordering::SeqCst);
    for _ in 0..100 {
        now += 1_000;
        ok("reclaim_expired", s.reclaim_expired(at(now), 1_000).await);
        let mut busy = false;
        for agent in &agents {
            for task in ok("claim_tasks", s.claim_tasks(agent, at(now), ACCEPT).await) {
                busy = true;
                ok("start_task", s.start_task(agent, &task.id, task.epoch, at(now), LEASE).await);
                let (_, r) = finish(s, agent, &task.id, task.epoch, &SUCCEEDED, at(now)).await;
                assert!(matches!(r, FinishResult::Applied(_)));
                accepted.lock().expect("lock").push((task.id, task.epoch));
            }
        }
        let live = all_tasks(s, TaskFilter::default()).await.iter().filter(|t| !t.state.is_terminal()).count();
        if !busy && live == 0 {
            break;
        }
    }

    let tasks = all_tasks(s, TaskFilter::default()).await;
    assert_eq!(tasks.len() as u128, TASKS + KEYS, "nothing lost, nothing doubled");
    let accepted = accepted.lock().expect("lock").clone();
    let mut outcomes: std::collections::BTreeMap<Option<Outcome>, usize> = std::collections::BTreeMap::new();
    for t in &tasks {
        for a in attempts(s, &t.id).await {
            *outcomes.entry(a.outcome).or_default() += 1;
        }
    }
    // The race took every path: runs reclaimed under their agents, failures retried.
    for seen in [Outcome::Succeeded, Outcome::Failed, Outcome::LeaseExpired] {
        assert!(outcomes.get(&Some(seen)).is_some_and(|n| *n > 0), "no attempt ended {seen}: {outcomes:?}");
    }
    for t in &tasks {
        assert!(t.state.is_terminal() && t.lease.is_none(), "{} ended {:?} holding {:?}", t.id, t.state, t.lease);
        let tries = attempts(s, &t.id).await;
        let epochs: std::collections::BTreeSet<Epoch> = tries.iter().map(|a| a.epoch).collect();
        assert_eq!(epochs.len(), tries.len(), "{}: one attempt per lease", t.id);
        assert!(tries.iter().all(|a| a.outcome.is_some()), "{}: an attempt left open", t.id);
        assert!(t.attempts <= t.spec.max_attempts, "{}: {} attempts of {}", t.id, t.attempts, t.spec.max_attempts);
        let won = tries.iter().filter(|a| a.outcome.map(Outcome::as_str) == Some("succeeded")).count();
        assert_eq!(won, usize::from(t.state == TaskState::Succeeded), "{}: {won} successful attempts", t.id);
        for a in &tries {
            let reported = accepted.contains(&(t.id.clone(), a.epoch));
            let by_report = matches!(a.outcome.map(Outcome::as_str), Some("succeeded" | "failed"));
            assert_eq!(reported, by_report, "{} attempt under {}: ended {:?}", t.id, a.epoch, a.outcome);
        }
    }
}
