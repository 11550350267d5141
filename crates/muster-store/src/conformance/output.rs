//! Output and steps of a run, their caps, and reports from a stale epoch.

use super::*;

pub async fn append_output_stops_at_the_cap(store: Arc<dyn Store>) {
    let s = &*store;
    let cap = Limits::default().max_output_bytes_per_attempt;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("chatty"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let first = vec![stdout(b"hello\n"), OutputChunk { stream: Stream::Stderr, data: b"warn\n".to_vec() }];
    let appended = ok("append_output", s.append_output(&a, &task, e, first, at(1)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: 11, truncated: false });

    let big = (cap as usize) / 4 * 3;
    let appended = ok("append_output", s.append_output(&a, &task, e, vec![stdout(&vec![b'x'; big])], at(2)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: 11 + big as u64, truncated: false });
    // This chunk crosses the cap: what fits is kept, the rest dropped.
    let appended = ok("append_output", s.append_output(&a, &task, e, vec![stdout(&vec![b'y'; big])], at(3)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: cap, truncated: true }, "output past the cap is truncated");
    let appended = ok("append_output", s.append_output(&a, &task, e, vec![stdout(b"more")], at(4)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: cap, truncated: true }, "nothing is kept once truncated");

    let stored = output(s, &task, None, 0).await;
    assert_eq!(
        stored.iter().map(|o| o.data.len() as u64).sum::<u64>(),
        cap,
        "read_output must return exactly the capped bytes"
    );
    assert!(stored.iter().all(|o| !o.data.starts_with(b"more")), "output after truncation was kept");
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.output_bytes, attempt.output_truncated), (cap, true));

    // The cap is per attempt: the next one starts empty.
    finish(s, &a, &task, e, &failed("too chatty"), at(5)).await;
    let e2 = start(s, &a, &task, at(5).plus(BACKOFF)).await;
    let appended = ok("append_output", s.append_output(&a, &task, e2, vec![stdout(b"again")], at(11)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: 5, truncated: false });
}

pub(super) fn tool_use(name: &str, summary: &str) -> NewStep {
    NewStep {
        kind: StepKind::ToolUse,
        name: Some(name.into()),
        summary: summary.into(),
        is_error: false,
        duration_ms: None,
    }
}

pub(super) async fn steps(s: &dyn Store, id: &TaskId, attempt: Option<u32>) -> Vec<(u32, u64, NewStep)> {
    ok("steps", s.steps(id, attempt).await).into_iter().map(|r| (r.attempt, r.seq, r.step)).collect()
}

pub async fn steps_are_kept_in_order_up_to_the_limit_with_the_latest_live(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("agentic"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let session = NewStep {
        kind: StepKind::Session,
        name: Some("model-x".into()),
        summary: "sess-1".into(),
        is_error: false,
        duration_ms: None,
    };
    let result = NewStep {
        kind: StepKind::ToolResult,
        name: Some("Bash".into()),
        summary: "no such file".into(),
        is_error: true,
        duration_ms: Some(40),
    };
    let mark = last_seq(s).await;
    ok("append_steps", s.append_steps(&a, &task, e, vec![session.clone(), tool_use("Bash", "ls")], at(1)).await);
    ok("append_steps", s.append_steps(&a, &task, e, vec![result.clone()], at(2)).await);
    ok("append_steps", s.append_steps(&a, &task, e, Vec::new(), at(2)).await);
    let events = assert_events(s, mark, &["task.step", "task.step"], "append_steps").await;
    assert_eq!(events[0].detail.as_deref(), Some("tool_use: Bash: ls"), "an event names the batch's latest step");
    assert_eq!(events[1].detail.as_deref(), Some("tool_result: Bash: no such file"));
    assert_eq!(
        steps(s, &task, None).await,
        [(1, 1, session), (1, 2, tool_use("Bash", "ls")), (1, 3, result)],
        "steps come back in order, numbered within the attempt"
    );
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.steps, attempt.latest_step.as_deref()), (3, Some("tool_result: Bash: no such file")));

    // Past the limit steps are counted, not kept; the latest still shows.
    let flood: Vec<NewStep> = (0..MAX_STEPS).map(|i| tool_use("Read", &format!("file {i}"))).collect();
    ok("append_steps", s.append_steps(&a, &task, e, flood, at(3)).await);
    let attempt = &attempts(s, &task).await[0];
    assert_eq!(attempt.steps, MAX_STEPS + 3);
    assert_eq!(attempt.latest_step.as_deref(), Some(format!("tool_use: Read: file {}", MAX_STEPS - 1).as_str()));
    let kept = steps(s, &task, Some(1)).await;
    assert_eq!(kept.len() as u64, MAX_STEPS, "no more than MAX_STEPS steps are stored");
    assert_eq!(kept.last().map(|k| k.1), Some(MAX_STEPS));

    // A long summary is clipped, not refused.
    finish(s, &a, &task, e, &failed("again"), at(4)).await;
    let e2 = start(s, &a, &task, at(4).plus(BACKOFF)).await;
    let long = tool_use("Write", &"z".repeat(crate::MAX_STEP_SUMMARY * 3));
    ok("append_steps", s.append_steps(&a, &task, e2, vec![long], at(10)).await);
    let second = steps(s, &task, Some(2)).await;
    assert_eq!(second.len(), 1, "each attempt has its own steps");
    assert_eq!((second[0].0, second[0].1), (2, 1), "numbering starts again for the next attempt");
    assert!(second[0].2.summary.chars().count() <= crate::MAX_STEP_SUMMARY + 1, "a summary is clipped");
}

pub async fn append_steps_and_set_live_with_a_stale_epoch_are_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("agentic"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let before = snapshot(s).await;
    let r = refusal(
        "append_steps by another agent",
        s.append_steps(&b, &task, e, vec![tool_use("Bash", "x")], at(1)).await,
    );
    assert_stale("append_steps by another agent", r, e, e);
    let newer = Epoch(e.0 + 1);
    let r = refusal(
        "append_steps with a newer epoch",
        s.append_steps(&a, &task, newer, vec![tool_use("Bash", "x")], at(1)).await,
    );
    assert_stale("append_steps with a newer epoch", r, e, newer);
    assert_unchanged(s, &before, "a refused append_steps").await;
    assert!(steps(s, &task, None).await.is_empty());
    let r = refusal("set_live by another agent", s.set_live(&b, &task, e, Live::Quiet, None, at(1)).await);
    assert_stale("set_live by another agent", r, e, e);
    assert_unchanged(s, &before, "a refused set_live").await;

    let mark = last_seq(s).await;
    ok("set_live", s.set_live(&a, &task, e, Live::Quiet, Some("no output for 1m"), at(1)).await);
    let events = assert_events(s, mark, &["task.live"], "set_live").await;
    assert_eq!(events[0].detail.as_deref(), Some("quiet: no output for 1m"));
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.live.as_deref(), attempt.live_detail.as_deref()), (Some("quiet"), Some("no output for 1m")));
    ok("set_live", s.set_live(&a, &task, e, Live::Working, None, at(2)).await);
    assert_eq!(attempts(s, &task).await[0].live_detail, None, "a new status replaces the old detail");

    finish(s, &a, &task, e, &SUCCEEDED, at(2)).await;
    refusal("append_steps after finish", s.append_steps(&a, &task, e, vec![tool_use("Bash", "late")], at(3)).await);
    refusal("set_live after finish", s.set_live(&a, &task, e, Live::Quiet, None, at(3)).await);
    assert!(steps(s, &task, None).await.is_empty());
}

pub(super) fn details(report: RunReport) -> RunDetails {
    RunDetails { report: Some(report), ..RunDetails::default() }
}

/// On main a run whose output was lost on its way (the hub died while it
/// was sent) succeeded with no sign of the gap.
pub async fn an_attempt_missing_output_its_agent_sent_says_its_output_is_incomplete(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let whole = submit(s, 1, spec("whole"), at(0)).await;
    let gap = submit(s, 2, spec("gap"), at(0)).await;
    let claimed = claim(s, &a, at(0)).await;
    assert_eq!(claimed, [whole.clone(), gap.clone()]);
    let mut epochs = Vec::new();
    for id in [&whole, &gap] {
        let e = get(s, id).await.epoch;
        ok("start_task", s.start_task(&a, id, e, at(0), LEASE).await);
        epochs.push(e);
    }
    let (e1, e2) = (epochs[0], epochs[1]);
    for (id, e) in [(&whole, e1), (&gap, e2)] {
        for line in [b"one\n".as_slice(), b"two\n"] {
            ok("append_output", s.append_output(&a, id, e, vec![stdout(line)], at(1)).await);
        }
    }
    let sent = |n: u64| RunDetails { output_chunks: Some(n), ..RunDetails::default() };
    ok("finish_task", s.finish_task(&a, &whole, e1, &SUCCEEDED, sent(2), at(2), Retry::fixed(BACKOFF)).await);
    ok("finish_task", s.finish_task(&a, &gap, e2, &SUCCEEDED, sent(3), at(2), Retry::fixed(BACKOFF)).await);
    assert!(!attempts(s, &whole).await[0].output_incomplete, "all it sent is there");
    let lost = &attempts(s, &gap).await[0];
    assert!(lost.output_incomplete && lost.outcome.map(Outcome::as_str) == Some("succeeded"), "{lost:?}");
}

pub async fn mark_output_truncated_flags_only_the_holders_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("chatty"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let before = snapshot(s).await;
    let r = refusal("mark_output_truncated by another agent", s.mark_output_truncated(&b, &task, e, at(1)).await);
    assert_stale("mark_output_truncated by another agent", r, e, e);
    let r = refusal(
        "mark_output_truncated with a newer epoch",
        s.mark_output_truncated(&a, &task, Epoch(e.0 + 1), at(1)).await,
    );
    assert_stale("mark_output_truncated with a newer epoch", r, e, Epoch(e.0 + 1));
    assert_unchanged(s, &before, "a refused mark_output_truncated").await;
    assert!(!attempts(s, &task).await[0].output_truncated);

    ok("append_output", s.append_output(&a, &task, e, vec![stdout(b"kept")], at(1)).await);
    ok("mark_output_truncated", s.mark_output_truncated(&a, &task, e, at(1)).await);
    finish(s, &a, &task, e, &SUCCEEDED, at(2)).await;
    let attempt = &attempts(s, &task).await[0];
    assert!(attempt.output_truncated, "the holder's attempt is marked truncated");
    assert_eq!(attempt.output_bytes, 4, "the mark keeps what the hub stored");
    assert_eq!(output(s, &task, None, 0).await.len(), 1);
}

pub async fn append_output_with_a_stale_epoch_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    ok("append_output", s.append_output(&a, &task, e, vec![stdout(b"kept")], at(1)).await);
    let assigned = submit(s, 2, spec("not started"), at(1)).await;
    let assigned_epoch = assign(s, &a, &assigned, at(1)).await;

    let before = snapshot(s).await;
    let r = refusal(
        "append_output with a newer epoch",
        s.append_output(&a, &task, Epoch(2), vec![stdout(b"x")], at(2)).await,
    );
    assert_stale("append_output with a newer epoch", r, e, Epoch(2));
    let r = refusal("append_output by another agent", s.append_output(&b, &task, e, vec![stdout(b"x")], at(2)).await);
    assert_stale("append_output by another agent", r, e, e);
    refusal(
        "append_output by a non-holder before start",
        s.append_output(&b, &assigned, assigned_epoch, vec![stdout(b"x")], at(2)).await,
    );
    assert_unchanged(s, &before, "a refused append_output").await;

    // Output from the holder of a task still recorded as assigned means its
    // accept was lost: the run is real, so the task starts, keeping its lease deadline.
    let mark = last_seq(s).await;
    let deadline = ok("task", s.task(&assigned).await).expect("the task").lease.expect("a lease").expires_at;
    ok("append_output", s.append_output(&a, &assigned, assigned_epoch, vec![stdout(b"x")], at(2)).await);
    assert_events(s, mark, &["task.started"], "output adopting a lost accept").await;
    let adopted = ok("task", s.task(&assigned).await).expect("the task");
    assert_eq!((adopted.state, adopted.attempts), (TaskState::Running, 1));
    assert_eq!(adopted.lease.expect("a lease").expires_at, deadline);

    finish(s, &a, &task, e, &SUCCEEDED, at(3)).await;
    let before = snapshot(s).await;
    refusal("append_output after finish", s.append_output(&a, &task, e, vec![stdout(b"late")], at(4)).await);
    assert_unchanged(s, &before, "append_output after finish").await;
    let all: Vec<Vec<u8>> = output(s, &task, None, 0).await.into_iter().map(|o| o.data).collect();
    assert_eq!(all, [b"kept".to_vec()]);
    assert_eq!(
        not_found(
            "append_output to an unknown task",
            s.append_output(&a, &task_id(9), e, vec![stdout(b"x")], at(5)).await
        ),
        "task"
    );
}

pub async fn read_output_filters_by_attempt_and_after(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e1 = start(s, &a, &task, at(0)).await;
    ok("append_output", s.append_output(&a, &task, e1, vec![stdout(b"one")], at(1)).await);
    finish(s, &a, &task, e1, &failed("once"), at(2)).await;
    let e2 = start(s, &a, &task, at(2).plus(BACKOFF)).await;
    let chunks = vec![stdout(b"two-a"), OutputChunk { stream: Stream::Stderr, data: b"two-b".to_vec() }];
    ok("append_output", s.append_output(&a, &task, e2, chunks, at(8)).await);
    ok("append_output", s.append_output(&a, &task, e2, vec![stdout(b"two-c")], at(9)).await);

    let all = output(s, &task, None, 0).await;
    let summary: Vec<(u32, Stream, Millis, &[u8])> =
        all.iter().map(|o| (o.attempt, o.stream, o.at, o.data.as_slice())).collect();
    assert_eq!(
        summary,
        [
            (1, Stream::Stdout, at(1), &b"one"[..]),
            (2, Stream::Stdout, at(8), &b"two-a"[..]),
            (2, Stream::Stderr, at(8), &b"two-b"[..]),
            (2, Stream::Stdout, at(9), &b"two-c"[..]),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "output must come in sequence order");
    assert_eq!(output(s, &task, Some(2), 0).await, all[1..], "filter by attempt");
    assert_eq!(output(s, &task, Some(1), 0).await, all[..1]);
    assert_eq!(output(s, &task, None, all[1].seq).await, all[2..], "filter by after");
    assert_eq!(output(s, &task, Some(2), all[2].seq).await, all[3..], "filter by attempt and after");
    assert_eq!(output(s, &task, Some(3), 0).await, [], "an attempt that never ran has no output");
    let limited = ok("read_output", s.read_output(&task, &OutputFilter { attempt: None, after: 0, limit: 2 }).await);
    assert_eq!(limited, all[..2], "read_output honours its limit");
}
