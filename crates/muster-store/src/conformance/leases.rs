//! Leases: start, release, finish, retries, duplicates and stale epochs, and the reclaim of expired leases.

use super::*;

pub async fn start_with_a_stale_epoch_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;
    assert_eq!(e, Epoch(1), "the first hand-out is epoch 1");

    let before = snapshot(s).await;
    let r = refusal("start_task with a newer epoch", s.start_task(&a, &task, Epoch(2), at(2), LEASE).await);
    assert_stale("start_task with a newer epoch", r, e, Epoch(2));
    let r = refusal("start_task by another agent", s.start_task(&b, &task, e, at(2), LEASE).await);
    assert_stale("start_task by another agent", r, e, e);
    assert_unchanged(s, &before, "a refused start_task").await;

    let mark = last_seq(s).await;
    let started = ok("start_task", s.start_task(&a, &task, e, at(3), LEASE).await);
    assert_eq!((started.state, started.attempts, started.started_at), (TaskState::Running, 1, Some(at(3))));
    assert_eq!(started.lease.as_ref().map(|l| l.expires_at), Some(at(3).plus(LEASE)));
    assert_eq!(get(s, &task).await, started);
    assert_events(s, mark, &["task.started"], "start_task").await;
    assert_eq!(
        attempts(s, &task).await,
        [AttemptRecord {
            checks: Vec::new(),
            number: 1,
            epoch: e,
            agent: a.clone(),
            started_at: at(3),
            finished_at: None,
            outcome: None,
            exit_code: None,
            reason: None,
            output_bytes: 0,
            output_truncated: false,
            output_incomplete: false,
            output_pruned: false,
            report: None,
            steps: 0,
            latest_step: None,
            live: None,
            live_detail: None,
            workspace: None,
            runner: Some("shell".into()),
            summary: None,
        }]
    );

    let r = refusal("start_task of a running task", s.start_task(&a, &task, e, at(4), LEASE).await);
    assert_wrong_state("start_task of a running task", r, TaskState::Running);
    assert_eq!(
        not_found("start_task of an unknown task", s.start_task(&a, &task_id(9), e, at(4), LEASE).await),
        "task"
    );
}

pub async fn release_returns_an_assignment_to_the_queue(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;

    let before = snapshot(s).await;
    let r =
        refusal("release_task with a stale epoch", s.release_task(&a, &task, Epoch(5), "busy", at(2), RELEASE).await);
    assert_stale("release_task with a stale epoch", r, e, Epoch(5));
    assert_unchanged(s, &before, "a refused release_task").await;

    let mark = last_seq(s).await;
    let released = ok("release_task", s.release_task(&a, &task, e, "busy", at(2), RELEASE).await);
    assert_eq!((released.state, released.attempts, released.ready_at), (TaskState::Queued, 0, at(3)));
    assert_eq!(released.lease, None);
    assert_eq!(released.reason.as_deref(), Some("released: busy"));
    assert_eq!(get(s, &task).await, released);
    assert_eq!(attempts(s, &task).await, [], "a released assignment used no attempt");
    assert_events(s, mark, &["task.released"], "release_task").await;

    let e2 = start(s, &a, &task, at(3)).await;
    assert_eq!(e2, Epoch(2));
    let r = refusal("release_task of a running task", s.release_task(&a, &task, e2, "busy", at(4), RELEASE).await);
    assert_wrong_state("release_task of a running task", r, TaskState::Running);
}

pub async fn finish_success_ends_the_task(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let (done, result) = finish(s, &a, &task, e, &SUCCEEDED, at(2)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Succeeded));
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!((done.exit_code, done.reason.as_deref()), (Some(0), None));
    assert_eq!((done.finished_at, done.lease.as_ref()), (Some(at(2)), None));
    assert_eq!(get(s, &task).await, done);
    let events = assert_events(s, mark, &["task.succeeded"], "a successful finish").await;
    assert_eq!(events[0].state.as_deref(), Some("succeeded"));
    assert_eq!(events[0].agent.as_ref(), Some(&a));
    let attempt = &attempts(s, &task).await[0];
    assert_eq!(
        (attempt.finished_at, attempt.outcome.map(Outcome::as_str), attempt.exit_code),
        (Some(at(2)), Some("succeeded"), Some(0))
    );
    assert_eq!(get_agent(s, &a).await.status.used_slots, 0, "a finished task frees its slot");
}

pub async fn finish_failure_with_attempts_left_schedules_a_retry(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, with_attempts(spec("flaky"), 3), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let boom = RunOutcome::Failed { exit_code: Some(2), reason: "boom".to_owned() };
    let (queued, result) = finish(s, &a, &task, e, &boom, at(1)).await;
    let ready_at = at(1).plus(BACKOFF);
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at }));
    assert!(ready_at > at(1), "a retry must wait for its backoff");
    assert_eq!((queued.state, queued.attempts, queued.ready_at), (TaskState::Queued, 1, ready_at));
    assert_eq!((queued.exit_code, queued.reason.as_deref()), (Some(2), Some("boom")));
    assert_eq!((queued.lease.as_ref(), queued.finished_at), (None, None));
    assert_eq!(get(s, &task).await, queued);
    let events = assert_events(s, mark, &["task.retry_scheduled"], "a failure with attempts left").await;
    assert_eq!(events[0].state.as_deref(), Some("queued"));
    let attempt = &attempts(s, &task).await[0];
    assert_eq!(
        (attempt.outcome.map(Outcome::as_str), attempt.exit_code, attempt.reason.as_deref()),
        (Some("failed"), Some(2), Some("boom"))
    );

    // A timeout is a failure too.
    let e2 = start(s, &a, &task, ready_at).await;
    let (_, result) = finish(s, &a, &task, e2, &RunOutcome::TimedOut, at(20)).await;
    let ready_at = at(20).plus(BACKOFF);
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at }));
    let tried = attempts(s, &task).await;
    assert_eq!(
        tried.iter().map(|t| (t.number, t.epoch, t.outcome.map(Outcome::as_str))).collect::<Vec<_>>(),
        [(1, e, Some("failed")), (2, e2, Some("timeout"))]
    );
}

pub async fn finish_failure_without_attempts_dead_letters_then_retry_revives(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, with_attempts(spec("doomed"), 1), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let (dead, result) = finish(s, &a, &task, e, &failed("broken"), at(1)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Failed));
    assert_eq!((dead.state, dead.attempts, dead.finished_at), (TaskState::Failed, 1, Some(at(1))));
    assert_eq!(get(s, &task).await, dead);
    assert_events(s, mark, &["task.failed"], "a failure with no attempts left").await;
    assert_eq!(claim(s, &a, at(100)).await, [], "a dead-lettered task is never claimed");

    let mark = last_seq(s).await;
    let revived = ok("retry_task", s.retry_task(&task, at(200)).await);
    assert_eq!((revived.state, revived.attempts, revived.ready_at), (TaskState::Queued, 0, at(200)));
    assert_eq!((revived.finished_at, revived.exit_code), (None, None));
    assert_eq!(revived.reason.as_deref(), Some("retried"));
    assert_eq!(get(s, &task).await, revived);
    assert_events(s, mark, &["task.retried"], "retry_task").await;

    assert_eq!(revived.runs, 1, "a retry keeps the count of runs");
    let e2 = start(s, &a, &task, at(201)).await;
    assert_eq!(e2, Epoch(2));
    let numbers: Vec<u32> = attempts(s, &task).await.iter().map(|t| t.number).collect();
    assert_eq!(numbers, [1, 2], "attempts are numbered over the task's whole life");
    let again = get(s, &task).await;
    assert_eq!((again.attempts, again.runs), (1, 2), "one of the new budget; the second run, as numbered");
}

pub async fn duplicate_finish_is_answered_and_changes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let done = submit(s, 1, spec("ok"), at(0)).await;
    let e = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, e, &SUCCEEDED, at(1)).await;

    let before = snapshot(s).await;
    let (task, result) = finish(s, &a, &done, e, &SUCCEEDED, at(2)).await;
    assert_eq!(result, FinishResult::Duplicate, "a resent outcome must be answered as a duplicate");
    assert_eq!(task, get(s, &done).await);
    assert_unchanged(s, &before, "a duplicate finish").await;

    // A resent failure stays a duplicate after the task moved on to another agent.
    let flaky = submit(s, 2, spec("flaky"), at(2)).await;
    let e1 = start(s, &a, &flaky, at(2)).await;
    let boom = failed("boom");
    finish(s, &a, &flaky, e1, &boom, at(3)).await;
    let b = online(s, "b", 1, at(3)).await;
    let e2 = start(s, &b, &flaky, at(3).plus(BACKOFF)).await;
    assert_eq!(e2, Epoch(2));

    let before = snapshot(s).await;
    let (_, result) = finish(s, &a, &flaky, e1, &boom, at(20)).await;
    assert_eq!(result, FinishResult::Duplicate, "a resent failure for an old epoch must be a duplicate");
    assert_unchanged(s, &before, "a duplicate finish of an old epoch").await;

    // A different outcome for an epoch already settled is not a duplicate.
    refusal(
        "finish_task with a conflicting outcome",
        s.finish_task(&a, &flaky, e1, &SUCCEEDED, RunDetails::default(), at(21), Retry::fixed(BACKOFF)).await,
    );
    refusal(
        "finish_task by another agent",
        s.finish_task(&b, &done, e, &SUCCEEDED, RunDetails::default(), at(21), Retry::fixed(BACKOFF)).await,
    );
    assert_unchanged(s, &before, "a conflicting finish").await;
}

pub async fn finish_with_a_stale_epoch_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let before = snapshot(s).await;
    for (what, agent, epoch) in [
        ("finish_task with a newer epoch", &a, Epoch(2)),
        ("finish_task with an older epoch", &a, Epoch(0)),
        ("finish_task by another agent", &b, e),
    ] {
        let r = refusal(
            what,
            s.finish_task(agent, &task, epoch, &SUCCEEDED, RunDetails::default(), at(1), Retry::fixed(BACKOFF)).await,
        );
        assert_stale(what, r, e, epoch);
    }
    assert_unchanged(s, &before, "a finish with a stale epoch").await;

    let assigned = submit(s, 2, spec("not started"), at(1)).await;
    let e2 = assign(s, &a, &assigned, at(1)).await;
    let r = refusal(
        "finish_task of an assigned task by a non-holder",
        s.finish_task(&b, &assigned, e2, &SUCCEEDED, RunDetails::default(), at(2), Retry::fixed(BACKOFF)).await,
    );
    assert_stale("finish_task of an assigned task by a non-holder", r, e2, e2);
    // The holder finishing a task still recorded as assigned: its accept was
    // lost, and the run counts once: started, then finished.
    let mark = last_seq(s).await;
    let (done, result) = ok(
        "finish_task",
        s.finish_task(&a, &assigned, e2, &SUCCEEDED, RunDetails::default(), at(2), Retry::fixed(BACKOFF)).await,
    );
    assert_eq!(result, FinishResult::Applied(Finished::Succeeded));
    assert_eq!((done.state, done.attempts), (TaskState::Succeeded, 1));
    assert_events(s, mark, &["task.started", "task.succeeded"], "a finish adopting a lost accept").await;
    assert_eq!(attempts(s, &assigned).await.len(), 1);
    assert_eq!(
        not_found(
            "finish_task of an unknown task",
            s.finish_task(&a, &task_id(9), e, &SUCCEEDED, RunDetails::default(), at(2), Retry::fixed(BACKOFF)).await
        ),
        "task"
    );
}

pub async fn reclaim_requeues_an_expired_running_task(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let expires = at(0).plus(LEASE);

    let before = snapshot(s).await;
    assert!(
        ok("reclaim_expired", s.reclaim_expired(just_before(expires), 10).await).is_empty(),
        "a live lease was reclaimed"
    );
    assert_unchanged(s, &before, "reclaim before any lease expired").await;

    let mark = last_seq(s).await;
    let reclaimed = ok("reclaim_expired", s.reclaim_expired(expires, 10).await);
    assert_eq!(reclaimed.len(), 1);
    let (requeued, how) = &reclaimed[0];
    assert_eq!(*how, Reclaimed::Requeued);
    assert_eq!(
        (&requeued.id, requeued.state, requeued.attempts),
        (&task, TaskState::Queued, 1),
        "an expired run uses its attempt"
    );
    assert_eq!((requeued.lease.as_ref(), requeued.ready_at), (None, expires));
    assert_eq!(requeued.reason.as_deref(), Some("lease_expired"));
    assert_eq!(get(s, &task).await, *requeued);
    assert_events(s, mark, &["task.reclaimed"], "reclaiming an expired run").await;
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.outcome.map(Outcome::as_str), attempt.finished_at), (Some("lease_expired"), Some(expires)));

    // The superseded holder's late report is refused.
    let before = snapshot(s).await;
    refusal(
        "finish_task after the lease expired",
        s.finish_task(&a, &task, e, &SUCCEEDED, RunDetails::default(), at(31), Retry::fixed(BACKOFF)).await,
    );
    assert_unchanged(s, &before, "a finish after reclaim").await;
}

pub async fn reclaim_requeues_an_unaccepted_assignment_without_using_an_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, with_attempts(spec("work"), 1), at(0)).await;
    let e = assign(s, &a, &task, at(0)).await;
    let deadline = at(0).plus(ACCEPT);
    assert!(ok("reclaim_expired", s.reclaim_expired(just_before(deadline), 10).await).is_empty());

    let mark = last_seq(s).await;
    let reclaimed = ok("reclaim_expired", s.reclaim_expired(deadline, 10).await);
    assert_eq!(reclaimed.iter().map(|(t, how)| (&t.id, *how)).collect::<Vec<_>>(), [(&task, Reclaimed::Requeued)]);
    let requeued = get(s, &task).await;
    assert_eq!(
        (requeued.state, requeued.attempts, requeued.lease.as_ref()),
        (TaskState::Queued, 0, None),
        "an unaccepted assignment uses no attempt"
    );
    assert_eq!(attempts(s, &task).await, []);
    assert_events(s, mark, &["task.reclaimed"], "reclaiming an unaccepted assignment").await;

    let before = snapshot(s).await;
    let r = refusal("start_task after the assignment expired", s.start_task(&a, &task, e, at(11), LEASE).await);
    assert_stale("start_task after the assignment expired", r, e, e);
    assert_unchanged(s, &before, "a start after reclaim").await;
    assert_eq!(start(s, &a, &task, at(12)).await, Epoch(2), "the only attempt is still there to use");
}

pub async fn reclaim_fails_or_cancels_when_nothing_is_left(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let last = submit(s, 1, with_attempts(spec("last chance"), 1), at(0)).await;
    start(s, &a, &last, at(0)).await;
    let doomed = submit(s, 2, spec("cancel pending"), at(0)).await;
    start(s, &a, &doomed, at(0)).await;
    ok("cancel_task", s.cancel_task(&doomed, at(1)).await);

    let mark = last_seq(s).await;
    let mut reclaimed: Vec<(TaskId, TaskState, Reclaimed)> = ok("reclaim_expired", s.reclaim_expired(at(30), 10).await)
        .into_iter()
        .map(|(t, how)| (t.id, t.state, how))
        .collect();
    reclaimed.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        reclaimed,
        [
            (last.clone(), TaskState::Failed, Reclaimed::Failed),
            (doomed.clone(), TaskState::Cancelled, Reclaimed::Cancelled)
        ]
    );
    let mut appended: Vec<(String, Option<TaskId>)> =
        events_after(s, mark).await.into_iter().map(|e| (e.kind, e.task)).collect();
    appended.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        appended,
        [("task.failed".to_owned(), Some(last.clone())), ("task.cancelled".to_owned(), Some(doomed.clone()))]
    );
    assert_eq!(get(s, &last).await.finished_at, Some(at(30)));
}

pub async fn reclaim_honours_its_limit(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = submit(s, n, spec("work"), at(n as i64)).await;
        start(s, &a, &id, at(n as i64)).await;
        ids.push(id);
    }
    let first = ok("reclaim_expired", s.reclaim_expired(at(40), 2).await);
    assert_eq!(first.len(), 2, "reclaim_expired must take at most `limit` tasks");
    let second = ok("reclaim_expired", s.reclaim_expired(at(40), 2).await);
    assert_eq!(second.len(), 1);
    assert!(ok("reclaim_expired", s.reclaim_expired(at(40), 2).await).is_empty());
    let mut all: Vec<TaskId> = first.into_iter().chain(second).map(|(t, _)| t.id).collect();
    all.sort();
    assert_eq!(all, ids);
}

pub async fn next_due_is_the_earliest_backoff_or_lease(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let running = submit(s, 1, spec("running"), at(0)).await;
    start(s, &a, &running, at(0)).await;
    assert_eq!(ok("next_due", s.next_due().await), Some(at(0).plus(LEASE)), "a lease expiry is due");

    let flaky = submit(s, 2, spec("flaky"), at(1)).await;
    let e = start(s, &a, &flaky, at(1)).await;
    finish(s, &a, &flaky, e, &failed("x"), at(2)).await;
    assert_eq!(ok("next_due", s.next_due().await), Some(at(2).plus(BACKOFF)), "the end of a backoff is due");

    ok("cancel_task", s.cancel_task(&flaky, at(3)).await);
    assert_eq!(ok("next_due", s.next_due().await), Some(at(0).plus(LEASE)), "a finished task is never due");
}

/// The reclaimer sleeps until `next_lease_expiry`: it is the earliest lease
/// of any assigned or running task, follows renewals, still names a lease
/// that has expired but not been taken back, and is `None` once no task holds one.
pub async fn next_lease_expiry_is_the_earliest_lease_held_expired_or_not(store: Arc<dyn Store>) {
    let s = &*store;
    let next = || async { ok("next_lease_expiry", s.next_lease_expiry().await) };
    assert_eq!(next().await, None, "no task, no lease");
    let a = online(s, "a", 2, at(0)).await;
    let one = submit(s, 1, spec("one"), at(0)).await;
    assert_eq!(next().await, None, "a queued task holds no lease");

    let e1 = assign(s, &a, &one, at(1)).await;
    assert_eq!(next().await, Some(at(1).plus(ACCEPT)), "an assignment's lease is the time to accept it");
    let two = submit(s, 2, spec("two"), at(2)).await;
    let e2 = start(s, &a, &two, at(2)).await;
    assert_eq!(next().await, Some(at(1).plus(ACCEPT)), "the earlier of an assignment and a run");
    ok("start_task", s.start_task(&a, &one, e1, at(3), LEASE).await);
    assert_eq!(next().await, Some(at(2).plus(LEASE)), "an accepted assignment's lease runs from its start");

    ok("heartbeat", s.heartbeat(&a, &[(one.clone(), e1), (two.clone(), e2)], at(10), LEASE).await);
    assert_eq!(next().await, Some(at(10).plus(LEASE)), "a heartbeat moves every lease it renews");
    ok("heartbeat", s.heartbeat(&a, &[(two.clone(), e2)], at(20), LEASE).await);
    assert_eq!(next().await, Some(at(10).plus(LEASE)), "the lease not renewed is now the earliest");
    assert_eq!(ok("reclaim_expired", s.reclaim_expired(at(39), 10).await), [], "nothing has expired yet");
    assert_eq!(next().await, Some(at(40)), "an expired lease is still named until it is taken back");
    let reclaimed = ok("reclaim_expired", s.reclaim_expired(at(45), 10).await);
    assert_eq!(reclaimed.iter().map(|(t, _)| &t.id).collect::<Vec<_>>(), [&one]);
    assert_eq!(next().await, Some(at(20).plus(LEASE)), "a lease taken back is gone");
    finish(s, &a, &two, e2, &SUCCEEDED, at(46)).await;
    assert_eq!(next().await, None, "no task holds a lease");
}
