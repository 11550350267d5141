//! Write statistics, the integrity check and compaction.

use super::*;

pub async fn write_stats_count_committed_batches(store: Arc<dyn Store>) {
    let s = &*store;
    let before = s.maintenance().write_stats();
    submit(s, 1, spec("one"), at(0)).await;
    submit(s, 2, spec("two"), at(0)).await;
    let after = s.maintenance().write_stats();
    assert!(after.batch_size.count > before.batch_size.count, "{before:?} -> {after:?}");
    assert_eq!(after.commit_seconds.count, after.batch_size.count, "one commit per batch");
    assert!(after.batch_size.sum >= before.batch_size.sum + 2.0, "every change is counted in some batch");
    assert_eq!(after.failed_batches, 0);
}

pub async fn check_finds_nothing_wrong_with_a_store_used_normally(store: Arc<dyn Store>) {
    let s = &*store;
    tell_a_short_story(s).await;
    let report = ok("check", s.check(false, at(100)).await);
    assert_eq!(report, crate::CheckReport::default(), "a healthy store has no findings");
    let before = snapshot(s).await;
    let report = ok("check", s.check(true, at(100)).await);
    assert_eq!(report.repaired, Vec::<String>::new());
    assert_unchanged(s, &before, "a repair with nothing to repair").await;
}

const DAY: Duration = Duration::from_secs(86_400);

pub(super) fn days(n: i64) -> Millis {
    at(n * 86_400)
}

/// Runs `id` on `agent` to `outcome`, printing `out` first; starts at `start`, ends a second later.
async fn run_to(s: &dyn Store, agent: &AgentName, id: &TaskId, out: &[u8], outcome: &RunOutcome, start: Millis) {
    let e = assign(s, agent, id, start).await;
    ok("start_task", s.start_task(agent, id, e, start, LEASE).await);
    if !out.is_empty() {
        ok("append_output", s.append_output(agent, id, e, vec![stdout(out)], start).await);
    }
    finish(s, agent, id, e, outcome, start.plus(Duration::from_secs(1))).await;
}

async fn compact(s: &dyn Store, retention: crate::Retention, now: Millis) -> crate::CompactReport {
    let mark = last_seq(s).await;
    let report = ok("compact", s.maintenance().compact(retention, true, now).await);
    let events = events_after(s, mark).await;
    assert_eq!(kinds(&events).last(), Some(&"db.compacted"), "a compaction ends with its event");
    assert_eq!(events.last().and_then(|e| e.detail.clone()), Some(report.summary()), "the event says what it did");
    report
}

pub async fn compaction_prunes_finished_tasks_past_their_age(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, days(0)).await;
    let old_ok = submit(s, 1, spec("old success"), days(0)).await;
    let e = start(s, &a, &old_ok, days(1)).await;
    ok("append_steps", s.append_steps(&a, &old_ok, e, vec![tool_use("Bash", "ls")], days(1)).await);
    ok("append_output", s.append_output(&a, &old_ok, e, vec![stdout(b"hello")], days(1)).await);
    finish(s, &a, &old_ok, e, &SUCCEEDED, days(1).plus(Duration::from_secs(1))).await;
    let old_failed = submit(s, 2, with_attempts(spec("old failure"), 1), days(1)).await;
    run_to(s, &a, &old_failed, b"boom", &failed("broke"), days(2)).await;
    let old_cancelled = submit(s, 3, spec("old cancel"), days(2)).await;
    ok("cancel_task", s.cancel_task(&old_cancelled, days(2)).await);
    let recent = submit(s, 4, spec("recent"), days(9)).await;
    run_to(s, &a, &recent, b"fresh", &SUCCEEDED, days(9)).await;
    let queued = submit(s, 5, with_caps(spec("old but queued"), &["gpu"]), days(0)).await;
    let running = submit(s, 6, spec("old and running"), days(0)).await;
    let e = start(s, &a, &running, days(10)).await;
    ok("heartbeat", s.heartbeat(&a, &[(running.clone(), e)], days(10), LEASE).await);

    let kept_before = (get(s, &recent).await, attempts(s, &recent).await, output(s, &recent, None, 0).await);
    let report = compact(s, crate::Retention { tasks: Some(DAY * 5), ..Default::default() }, days(10)).await;
    assert_eq!(report.tasks_pruned, 3, "three finished tasks are older than five days: {report:?}");
    assert_eq!(report.output_bytes_pruned, 9, "their output went with them: {report:?}");
    assert_eq!((report.outputs_pruned, report.events_pruned), (0, 0), "{report:?}");
    for id in [&old_ok, &old_failed, &old_cancelled] {
        assert_eq!(ok("task", s.task(id).await), None, "{id} is past its retention");
        assert!(attempts(s, id).await.is_empty(), "{id}'s attempts go with it");
        assert!(output(s, id, None, 0).await.is_empty(), "{id}'s output goes with it");
        assert!(steps(s, id, None).await.is_empty(), "{id}'s steps go with it");
    }
    let kept_after = (get(s, &recent).await, attempts(s, &recent).await, output(s, &recent, None, 0).await);
    assert_eq!(kept_after, kept_before, "a task finished within the retention is untouched");
    assert_eq!(get(s, &queued).await.state, TaskState::Queued, "a queued task is never pruned, however old");
    assert_eq!(get(s, &running).await.state, TaskState::Running, "a running task is never pruned");
    let counts = ok("count_tasks", s.count_tasks().await);
    assert_eq!((count(&counts, TaskState::Succeeded), count(&counts, TaskState::Failed)), (1, 0));
    let report = ok("check", s.check(false, days(10)).await);
    assert_eq!(report, crate::CheckReport::default(), "pruning leaves every invariant whole");

    let again = compact(s, crate::Retention { tasks: Some(DAY * 5), ..Default::default() }, days(10)).await;
    assert_eq!(again.tasks_pruned, 0, "a second compaction finds nothing more");
}

pub async fn compaction_prunes_output_but_keeps_the_task(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, days(0)).await;
    let old = submit(s, 1, spec("old"), days(0)).await;
    run_to(s, &a, &old, b"0123456789", &SUCCEEDED, days(1)).await;
    let recent = submit(s, 2, spec("recent"), days(6)).await;
    run_to(s, &a, &recent, b"keep me", &SUCCEEDED, days(6)).await;
    let quiet = submit(s, 3, spec("printed nothing"), days(0)).await;
    run_to(s, &a, &quiet, b"", &SUCCEEDED, days(1)).await;

    let task_before = get(s, &old).await;
    let report = compact(s, crate::Retention { output: Some(DAY * 3), ..Default::default() }, days(7)).await;
    assert_eq!((report.tasks_pruned, report.outputs_pruned, report.output_bytes_pruned), (0, 1, 10), "{report:?}");
    assert_eq!(get(s, &old).await, task_before, "the task itself stays");
    assert!(output(s, &old, None, 0).await.is_empty(), "its output is gone");
    let attempt = &attempts(s, &old).await[0];
    assert!(attempt.output_pruned, "the attempt says its output was pruned");
    assert_eq!(attempt.output_bytes, 10, "and how much there was");
    assert_eq!(output(s, &recent, None, 0).await.len(), 1, "recent output stays");
    assert!(!attempts(s, &recent).await[0].output_pruned);
    assert!(!attempts(s, &quiet).await[0].output_pruned, "an attempt with no output has nothing pruned");

    // Later, the output that was recent expires too, and only it is pruned.
    let later = compact(s, crate::Retention { output: Some(DAY * 3), ..Default::default() }, days(10)).await;
    assert_eq!((later.outputs_pruned, later.output_bytes_pruned), (1, 7), "{later:?}");
    assert!(attempts(s, &recent).await[0].output_pruned);
}

pub async fn compaction_prunes_old_events_but_never_the_newest(store: Arc<dyn Store>) {
    let s = &*store;
    for (i, day) in [0, 1, 2, 8, 9].into_iter().enumerate() {
        let event = NewEvent { kind: "test.note", detail: Some(format!("note {i}")), ..NewEvent::default() };
        ok("record_event", s.record_event(event, days(day)).await);
    }
    let seq_before = *s.subscribe().borrow();
    let report = compact(s, crate::Retention { events: Some(DAY * 5), ..Default::default() }, days(10)).await;
    assert_eq!(report.events_pruned, 3, "three events are older than five days: {report:?}");
    let left = events_after(s, 0).await;
    let details: Vec<&str> = left.iter().filter_map(|e| e.detail.as_deref()).take(2).collect();
    assert_eq!(details, ["note 3", "note 4"], "the newest events stay, in order");
    assert!(*s.subscribe().borrow() > seq_before, "event numbers never go back");
    assert_eq!(ok("check", s.check(false, days(10)).await), crate::CheckReport::default(), "no gap is reported");

    // Everything expired: the newest event still stays, so numbering carries on.
    let report = compact(s, crate::Retention { events: Some(DAY), ..Default::default() }, days(400)).await;
    assert!(report.events_pruned >= 2, "{report:?}");
    let left = events_after(s, 0).await;
    assert_eq!(kinds(&left), ["db.compacted", "db.compacted"], "only the newest events are left");
    let next = NewEvent { kind: "test.note", ..NewEvent::default() };
    ok("record_event", s.record_event(next, days(400)).await);
    let after = events_after(s, 0).await;
    assert!(after.windows(2).all(|w| w[1].seq == w[0].seq + 1), "numbers stay contiguous: {after:?}");
}

pub async fn compaction_without_retention_prunes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    tell_a_short_story(s).await;
    let before = snapshot(s).await;
    let report = compact(s, crate::Retention::default(), days(1000)).await;
    assert_eq!(
        (report.tasks_pruned, report.outputs_pruned, report.events_pruned),
        (0, 0, 0),
        "nothing expires without a retention: {report:?}"
    );
    let mut after = snapshot(s).await;
    let compacted = after.events.pop().expect("the compaction's event");
    assert_eq!(compacted.kind, "db.compacted");
    assert!(after == before, "a compaction with no retention changes nothing but the timeline");
}

pub async fn db_stats_count_rows_and_remember_the_last_compaction(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, days(0)).await;
    let first = submit(s, 1, spec("one"), days(0)).await;
    run_to(s, &a, &first, b"12345", &SUCCEEDED, days(0)).await;
    submit(s, 2, spec("two"), days(0)).await;
    let stats = ok("db_stats", s.maintenance().db_stats().await);
    assert_eq!((stats.tasks, stats.output_bytes), (2, 5), "{stats:?}");
    assert_eq!(stats.events as usize, events_after(s, 0).await.len());
    assert!(stats.pages > 0 && stats.free_pages <= stats.pages, "{stats:?}");
    assert!((0.0..=1.0).contains(&stats.free_ratio()));
    assert_eq!(stats.last_compaction, None, "never compacted");

    let report = compact(s, crate::Retention { tasks: Some(DAY), ..Default::default() }, days(3)).await;
    let stats = ok("db_stats", s.maintenance().db_stats().await);
    assert_eq!((stats.tasks, stats.output_bytes), (1, 0), "{stats:?}");
    let last = stats.last_compaction.expect("the compaction is remembered");
    assert_eq!((last.at, last.summary), (days(3), report.summary()));
}
