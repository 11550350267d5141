//! Tasks: creation, validation, listing and counts, dependencies, follow-ups, and what operators do to one.

use super::*;

pub async fn create_task_stores_the_validated_spec(store: Arc<dyn Store>) {
    let s = &*store;
    let mut asked = with_caps(with_priority(spec("build it"), Priority::High), &["lang:rust", "gpu", "gpu"]);
    asked.timeout = Duration::from_secs(90);
    asked.max_attempts = 5;
    asked.metadata = Some(r#"{"ticket":42}"#.to_owned());
    let expected = Task::new(task_id(1), asked.clone().validate().expect("the spec is valid"), at(3));
    assert_eq!(expected.spec.capabilities, caps(&["gpu", "lang:rust"]));

    let created = ok("create_task", s.create_task(task_id(1), asked, at(3)).await);
    assert!(created.created);
    assert_eq!(created.task, expected, "create_task must store the validated spec as a new queued task");
    assert_eq!(get(s, &task_id(1)).await, expected);
    let events = assert_events(s, 0, &["task.created"], "create_task").await;
    assert_eq!(events[0].task.as_ref(), Some(&task_id(1)));
    assert_eq!(events[0].agent, None);
    assert_eq!(events[0].state.as_deref(), Some("queued"));
    assert_eq!(events[0].at, at(3));
    assert_eq!(ok("task", s.task(&task_id(2)).await), None);
}

pub async fn idempotency_key_returns_the_same_task(store: Arc<dyn Store>) {
    let s = &*store;
    let keyed = |prompt: &str| TaskSpec { idempotency_key: Some("deploy-42".to_owned()), ..spec(prompt) };
    let first = ok("create_task", s.create_task(task_id(1), keyed("deploy"), at(0)).await);
    assert!(first.created);

    let before = snapshot(s).await;
    let again = ok("create_task with a used key", s.create_task(task_id(2), keyed("deploy, again"), at(5)).await);
    assert!(!again.created, "a used idempotency key must return created = false");
    assert_eq!(again.task, first.task, "a used idempotency key must return the original task, unchanged");
    assert_unchanged(s, &before, "create_task with a used idempotency key").await;
    assert_eq!(ok("task", s.task(&task_id(2)).await), None);

    // The key still answers after the task has moved on.
    ok("cancel_task", s.cancel_task(&task_id(1), at(6)).await);
    let later = ok("create_task with a used key", s.create_task(task_id(3), keyed("deploy"), at(7)).await);
    assert!(!later.created);
    assert_eq!((later.task.id, later.task.state), (task_id(1), TaskState::Cancelled));

    let other = TaskSpec { idempotency_key: Some("deploy-43".to_owned()), ..spec("deploy") };
    assert!(ok("create_task with a new key", s.create_task(task_id(4), other, at(8)).await).created);
    assert_eq!(count(&ok("count_tasks", s.count_tasks().await), TaskState::Queued), 1);
}

pub async fn invalid_spec_is_refused_naming_the_field(store: Arc<dyn Store>) {
    let s = &*store;
    let names: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let too_many: Vec<&str> = names.iter().map(String::as_str).collect();
    let cases: [(&str, TaskSpec, &str); 6] = [
        ("an empty prompt", spec(""), "prompt"),
        ("a prompt over 1 MiB", spec(&"x".repeat(MAX_PROMPT_BYTES + 1)), "prompt"),
        ("a zero timeout", TaskSpec { timeout: Duration::ZERO, ..spec("p") }, "timeout"),
        ("zero attempts", with_attempts(spec("p"), 0), "max_attempts"),
        ("an empty idempotency key", TaskSpec { idempotency_key: Some(String::new()), ..spec("p") }, "idempotency_key"),
        ("too many capabilities", with_caps(spec("p"), &too_many), "capabilities"),
    ];
    for (i, (what, bad, field)) in cases.into_iter().enumerate() {
        let id = task_id(i as u128);
        let before = snapshot(s).await;
        let err = invalid(&format!("create_task with {what}"), s.create_task(id.clone(), bad, at(0)).await);
        assert_eq!(err.field, field, "create_task with {what} must name the field");
        assert_unchanged(s, &before, &format!("create_task with {what}")).await;
        assert_eq!(ok("task", s.task(&id).await), None);
    }
    // The limit itself is allowed.
    submit(s, 100, spec(&"x".repeat(MAX_PROMPT_BYTES)), at(1)).await;
}

/// Follow-ups count against the tree of the task no run created: a
/// grandchild's follow-up is the root's too, a second root has its own
/// budget, and a refusal writes nothing but its event.
pub async fn follow_ups_are_budgeted_per_task_tree(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 4, at(0)).await;
    let root = submit(s, 1, spec("root"), at(0)).await;
    let e = start(s, &a, &root, at(0)).await;
    let made = |f: Followup| match f {
        Followup::Created(c) => c.task.id,
        Followup::OverBudget { root, held } => panic!("refused: {root} holds {held}"),
    };
    let child = made(ok("create_followup", s.create_followup(&root, e, task_id(2), spec("child"), 3, at(1)).await));
    let ce = start(s, &a, &child, at(1)).await;
    made(ok("create_followup", s.create_followup(&child, ce, task_id(3), spec("grandchild"), 3, at(2)).await));
    made(ok("create_followup", s.create_followup(&root, e, task_id(4), spec("second child"), 3, at(2)).await));

    let before = snapshot(s).await;
    let mark = last_seq(s).await;
    match ok("create_followup", s.create_followup(&child, ce, task_id(5), spec("one too many"), 3, at(3)).await) {
        Followup::OverBudget { root: r, held } => assert_eq!((r, held), (root.clone(), 3)),
        Followup::Created(c) => panic!("the fourth follow-up of a tree of 3 was created: {}", c.task.id),
    }
    let events = assert_events(s, mark, &["task.followup_refused"], "a follow-up over the tree's budget").await;
    assert_eq!(events[0].task.as_ref(), Some(&child), "the refusal is on the asking task's timeline");
    assert!(events[0].detail.as_deref().is_some_and(|d| d.contains(root.as_str())), "{:?}", events[0].detail);
    assert!(ok("task", s.task(&task_id(5)).await).is_none(), "nothing was created");
    assert_eq!(snapshot(s).await.tasks, before.tasks, "a refusal changes no task");

    // Another tree has a budget of its own; a larger budget makes room in this one.
    let b = online(s, "b", 8, at(4)).await;
    assert_eq!(claim(s, &b, at(4)).await.len(), 2, "the grandchild and the second child");
    let other = submit(s, 10, spec("other root"), at(4)).await;
    let oe = start(s, &a, &other, at(4)).await;
    made(ok("create_followup", s.create_followup(&other, oe, task_id(11), spec("its child"), 3, at(5)).await));
    made(ok("create_followup", s.create_followup(&child, ce, task_id(6), spec("room again"), 4, at(5)).await));
}

pub async fn retry_of_a_task_that_has_not_failed_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let succeeded = submit(s, 1, spec("ok"), at(0)).await;
    let e = start(s, &a, &succeeded, at(0)).await;
    finish(s, &a, &succeeded, e, &SUCCEEDED, at(1)).await;
    let running = submit(s, 2, spec("running"), at(1)).await;
    start(s, &a, &running, at(1)).await;
    let cancelled = submit(s, 3, spec("cancelled"), at(2)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(2)).await);
    let queued = submit(s, 4, spec("queued"), at(3)).await;

    let before = snapshot(s).await;
    for (id, state) in [
        (&queued, TaskState::Queued),
        (&running, TaskState::Running),
        (&succeeded, TaskState::Succeeded),
        (&cancelled, TaskState::Cancelled),
    ] {
        let what = format!("retry_task of a {} task", state.as_str());
        assert_wrong_state(&what, refusal(&what, s.retry_task(id, at(4)).await), state);
    }
    assert_unchanged(s, &before, "a refused retry_task").await;
    assert_eq!(not_found("retry_task of an unknown task", s.retry_task(&task_id(9), at(4)).await), "task");
}

pub async fn cancel_queued_is_immediate(store: Arc<dyn Store>) {
    let s = &*store;
    let task = submit(s, 1, spec("never mind"), at(0)).await;
    let mark = last_seq(s).await;
    let (cancelled, outcome) = ok("cancel_task", s.cancel_task(&task, at(1)).await);
    assert_eq!(outcome, Cancel::Done { notify: None });
    assert_eq!((cancelled.state, cancelled.finished_at), (TaskState::Cancelled, Some(at(1))));
    assert_eq!(get(s, &task).await, cancelled);
    assert_events(s, mark, &["task.cancelled"], "cancelling a queued task").await;

    let a = online(s, "a", 1, at(2)).await;
    assert_eq!(claim(s, &a, at(3)).await, [], "a cancelled task is never claimed");
    let before = snapshot(s).await;
    let r = refusal("cancel_task of a cancelled task", s.cancel_task(&task, at(4)).await);
    assert_wrong_state("cancel_task of a cancelled task", r, TaskState::Cancelled);
    assert_unchanged(s, &before, "a refused cancel").await;
    assert_eq!(not_found("cancel_task of an unknown task", s.cancel_task(&task_id(9), at(4)).await), "task");
}

pub async fn cancel_assigned_notifies_the_holder(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;

    let mark = last_seq(s).await;
    let (cancelled, outcome) = ok("cancel_task", s.cancel_task(&task, at(2)).await);
    assert_eq!(outcome, Cancel::Done { notify: Some((a.clone(), e)) });
    assert_eq!((cancelled.state, cancelled.lease.as_ref()), (TaskState::Cancelled, None));
    assert_events(s, mark, &["task.cancelled"], "cancelling an assigned task").await;
    assert_eq!(get_agent(s, &a).await.status.used_slots, 0, "a cancelled assignment frees its slot");

    let before = snapshot(s).await;
    let r = refusal("start_task of a cancelled assignment", s.start_task(&a, &task, e, at(3), LEASE).await);
    assert_stale("start_task of a cancelled assignment", r, e, e);
    assert_unchanged(s, &before, "a start after cancel").await;
}

pub async fn cancel_running_is_requested_then_finished(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let task = submit(s, 1, spec("long"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let (running, outcome) = ok("cancel_task", s.cancel_task(&task, at(1)).await);
    assert_eq!(outcome, Cancel::Requested { agent: a.clone(), epoch: e });
    assert_eq!((running.state, running.cancel_requested), (TaskState::Running, true));
    assert!(running.lease.is_some(), "a running task keeps its lease until the agent reports back");
    assert_eq!(get(s, &task).await, running);
    assert_events(s, mark, &["task.cancel_requested"], "cancelling a running task").await;
    let hb = ok("heartbeat", s.heartbeat(&a, &[(task.clone(), e)], at(2), LEASE).await);
    assert_eq!(hb.renewed, 1, "a run being cancelled is still renewed");

    let mark = last_seq(s).await;
    let (cancelled, result) = finish(s, &a, &task, e, &RunOutcome::Cancelled, at(3)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Cancelled));
    assert_eq!((cancelled.state, cancelled.finished_at), (TaskState::Cancelled, Some(at(3))));
    assert_events(s, mark, &["task.cancelled"], "finishing a cancelled run").await;
    assert_eq!(attempts(s, &task).await[0].outcome.map(Outcome::as_str), Some("cancelled"));

    // With a cancel pending, a failure is not retried.
    let other = submit(s, 2, spec("also long"), at(4)).await;
    let e2 = start(s, &a, &other, at(4)).await;
    ok("cancel_task", s.cancel_task(&other, at(5)).await);
    let (ended, result) = finish(s, &a, &other, e2, &failed("killed"), at(6)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Cancelled));
    assert_eq!(ended.state, TaskState::Cancelled);
}

pub async fn list_tasks_pages_newest_first_and_filters(store: Arc<dyn Store>) {
    let s = &*store;
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(submit(s, n, spec("work"), at(n as i64)).await);
    }
    let page = |filter: TaskFilter| async move { ok("list_tasks", s.list_tasks(&filter).await) };
    let ids_of = |tasks: &[Task]| tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();

    let p1 = page(TaskFilter { limit: 2, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&p1.items), [ids[4].clone(), ids[3].clone()], "newest first");
    let p2 = page(TaskFilter { limit: 2, before: p1.next, ..TaskFilter::default() }).await;
    assert!(p1.next.is_some(), "a full page must say where the next begins");
    assert_eq!(ids_of(&p2.items), [ids[2].clone(), ids[1].clone()]);
    let p3 = page(TaskFilter { limit: 2, before: p2.next, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&p3.items), [ids[0].clone()]);
    assert_eq!(p3.next, None, "the last page has no next");
    let exact = page(TaskFilter { limit: 5, ..TaskFilter::default() }).await;
    assert_eq!((exact.items.len(), exact.next), (5, None), "a page holding exactly the rest is the last");

    ok("cancel_task", s.cancel_task(&ids[1], at(6)).await);
    ok("cancel_task", s.cancel_task(&ids[3], at(6)).await);
    let cancelled = page(TaskFilter { state: Some(TaskState::Cancelled), limit: 10, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&cancelled.items), [ids[3].clone(), ids[1].clone()], "filter by state");
    let q1 = page(TaskFilter { state: Some(TaskState::Queued), limit: 2, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&q1.items), [ids[4].clone(), ids[2].clone()]);
    let q2 =
        page(TaskFilter { state: Some(TaskState::Queued), limit: 2, before: q1.next, ..TaskFilter::default() }).await;
    assert_eq!((ids_of(&q2.items), q2.next), (vec![ids[0].clone()], None), "pages of a filtered list");

    let a = online(s, "a", 1, at(7)).await;
    let claimed = claim(s, &a, at(8)).await;
    assert_eq!(claimed, [ids[0].clone()], "the oldest queued task goes first");
    let of_a = page(TaskFilter { agent: Some(a), limit: 10, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&of_a.items), [ids[0].clone()], "filter by agent");
}

pub async fn list_tasks_filters_by_priority_runner_capability_and_text(store: Arc<dyn Store>) {
    let s = &*store;
    let mut claude = spec("Fix the 100% CPU loop in the PARSER");
    claude.runner = runners(&["claude"]).remove(0);
    let urgent = submit(s, 1, with_priority(claude, Priority::Urgent), at(1)).await;
    let gpu = submit(s, 2, with_caps(spec("train the model_a"), &["gpu", "linux"]), at(2)).await;
    let plain = submit(s, 3, spec("write docs for modelxa"), at(3)).await;
    let ids = |filter: TaskFilter| async move {
        let page = ok("list_tasks", s.list_tasks(&TaskFilter { limit: 10, ..filter }).await);
        page.items.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(TaskFilter { priority: Some(Priority::Urgent), ..TaskFilter::default() }).await,
        vec![urgent.clone()]
    );
    assert_eq!(
        ids(TaskFilter { priority: Some(Priority::Normal), ..TaskFilter::default() }).await,
        vec![plain.clone(), gpu.clone()]
    );
    assert_eq!(
        ids(TaskFilter { runner: Some(runners(&["claude"]).remove(0)), ..TaskFilter::default() }).await,
        vec![urgent.clone()]
    );
    let gpu_cap = caps(&["gpu"]).remove(0);
    assert_eq!(ids(TaskFilter { capability: Some(gpu_cap), ..TaskFilter::default() }).await, vec![gpu.clone()]);
    let text = |t: &str| TaskFilter { text: Some(t.to_owned()), ..TaskFilter::default() };
    assert_eq!(ids(text("parser")).await, vec![urgent.clone()], "text ignores case");
    assert_eq!(ids(text("100%")).await, vec![urgent.clone()], "a % in the text is literal");
    assert_eq!(ids(text("0% C")).await, vec![urgent.clone()]);
    assert!(ids(text("1%0")).await.is_empty(), "a % in the text is not a wildcard");
    assert_eq!(ids(text("model_a")).await, vec![gpu.clone()], "an _ is not a wildcard: modelxa does not match");
    assert_eq!(ids(text("modelxa")).await, vec![plain.clone()]);
    assert_eq!(ids(text(plain.as_str())).await, vec![plain.clone()], "text finds an id");
    let both = TaskFilter {
        priority: Some(Priority::Normal),
        text: Some("docs".into()),
        state: Some(TaskState::Queued),
        ..TaskFilter::default()
    };
    assert_eq!(ids(both).await, vec![plain.clone()], "filters combine");
}

pub async fn count_tasks_by_priority_splits_each_state(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    submit(s, 1, with_priority(spec("u"), Priority::Urgent), at(0)).await;
    submit(s, 2, with_priority(spec("u"), Priority::Urgent), at(0)).await;
    submit(s, 3, with_priority(spec("l"), Priority::Low), at(0)).await;
    let running = submit(s, 4, spec("n"), at(1)).await;
    // The claim takes urgent work first; make the normal task the running one.
    for id in [task_id(1), task_id(2), task_id(3)] {
        ok("cancel_task", s.cancel_task(&id, at(1)).await);
    }
    start(s, &a, &running, at(2)).await;
    let mut counts = ok("count_tasks_by_priority", s.count_tasks_by_priority().await);
    counts.sort_by_key(|(st, p, _)| (st.as_str(), p.rank()));
    assert_eq!(
        counts,
        [
            (TaskState::Cancelled, Priority::Urgent, 2),
            (TaskState::Cancelled, Priority::Low, 1),
            (TaskState::Running, Priority::Normal, 1)
        ]
    );
}

pub async fn count_tasks_counts_every_state(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let succeeded = submit(s, 1, spec("ok"), at(0)).await;
    let e = start(s, &a, &succeeded, at(0)).await;
    finish(s, &a, &succeeded, e, &SUCCEEDED, at(1)).await;
    let dead = submit(s, 2, with_attempts(spec("dead"), 1), at(1)).await;
    let e = start(s, &a, &dead, at(1)).await;
    finish(s, &a, &dead, e, &failed("x"), at(2)).await;
    let running = submit(s, 3, spec("running"), at(2)).await;
    start(s, &a, &running, at(2)).await;
    let assigned = submit(s, 4, spec("assigned"), at(3)).await;
    assign(s, &a, &assigned, at(3)).await;
    let cancelled = submit(s, 5, spec("cancelled"), at(4)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(4)).await);
    submit(s, 6, spec("queued"), at(5)).await;
    submit(s, 7, spec("queued"), at(5)).await;
    submit(s, 9, TaskSpec { requires_approval: true, ..spec("gated") }, at(5)).await;
    submit(s, 10, TaskSpec { depends_on: vec![running.clone()], ..spec("blocked") }, at(5)).await;
    let asked = submit(s, 11, spec("asked"), at(5)).await;
    ok("open_decision", s.open_decision(question(&asked, None, false), at(5)).await);
    let skipped = submit(s, 8, spec("skipped"), at(5)).await;
    ok(
        "operate_task",
        s.operate_task(&skipped, crate::TaskOp::Skip { reason: "not needed".into() }, "ops", at(5)).await,
    );

    let counts = ok("count_tasks", s.count_tasks().await);
    let got: Vec<(TaskState, u64)> = TaskState::ALL.iter().map(|st| (*st, count(&counts, *st))).collect();
    assert_eq!(
        got,
        [
            (TaskState::Blocked, 1),
            (TaskState::PendingApproval, 1),
            (TaskState::NeedsDecision, 1),
            (TaskState::Queued, 2),
            (TaskState::Assigned, 1),
            (TaskState::Running, 1),
            (TaskState::Succeeded, 1),
            (TaskState::Failed, 1),
            (TaskState::Cancelled, 1),
            (TaskState::Skipped, 1),
        ]
    );
}

pub async fn operators_skip_reset_and_move_tasks_with_who_on_the_timeline(store: Arc<dyn Store>) {
    use crate::TaskOp;
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let first = submit(s, 1, spec("first"), at(0)).await;
    let second = submit(s, 2, spec("second"), at(0)).await;

    let mark = last_seq(s).await;
    let moved =
        ok("operate_task", s.operate_task(&second, TaskOp::Move { priority: Priority::Urgent }, "ops", at(1)).await);
    assert_eq!(moved.spec.priority, Priority::Urgent);
    let events = assert_events(s, mark, &["task.moved"], "a move").await;
    assert_eq!(events[0].detail.as_deref(), Some("normal -> urgent (by ops)"));
    assert_eq!(get(s, &second).await.spec.priority, Priority::Urgent, "the new priority is stored");
    assert_eq!(claim(s, &a, at(2)).await, std::slice::from_ref(&second), "and it goes out first");

    let before = snapshot(s).await;
    let r = s.operate_task(&first, TaskOp::Skip { reason: " ".into() }, "ops", at(3)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "reason"), "{r:?}");
    let r = s.operate_task(&second, TaskOp::Reset, "ops", at(3)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "a handed-out task is not reset: {r:?}");
    assert_unchanged(s, &before, "refused operations").await;

    let mark = last_seq(s).await;
    let skipped =
        ok("operate_task", s.operate_task(&first, TaskOp::Skip { reason: "done by hand".into() }, "ops", at(4)).await);
    assert_eq!((skipped.state, skipped.reason.as_deref()), (TaskState::Skipped, Some("skipped: done by hand")));
    let reset = ok("operate_task", s.operate_task(&first, TaskOp::Reset, "lead", at(5)).await);
    assert_eq!((reset.state, reset.attempts), (TaskState::Queued, 0));
    let events = assert_events(s, mark, &["task.skipped", "task.reset"], "skip and reset").await;
    assert_eq!(events[0].detail.as_deref(), Some("done by hand (by ops)"));
    assert_eq!(events[1].detail.as_deref(), Some("attempts cleared (by lead)"));
    let counts = ok("count_tasks", s.count_tasks().await);
    assert_eq!(count(&counts, TaskState::Skipped), 0);
}

pub async fn a_task_pending_approval_waits_for_a_person_who_is_named_on_the_timeline(store: Arc<dyn Store>) {
    use crate::TaskOp;
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let gated = TaskSpec { requires_approval: true, ..spec("deploy to staging") };
    let approved = submit(s, 1, gated.clone(), at(0)).await;
    let rejected = submit(s, 2, gated, at(0)).await;
    assert_eq!(get(s, &approved).await.state, TaskState::PendingApproval);
    assert!(claim(s, &a, at(1)).await.is_empty(), "nothing pending approval is handed out");

    let before = snapshot(s).await;
    let r = s.operate_task(&rejected, TaskOp::Reject { reason: "".into() }, "lead", at(2)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "reason"), "{r:?}");
    assert_unchanged(s, &before, "a reject without a reason").await;

    let mark = last_seq(s).await;
    ok("operate_task", s.operate_task(&approved, TaskOp::Approve, "lead", at(3)).await);
    ok(
        "operate_task",
        s.operate_task(&rejected, TaskOp::Reject { reason: "not this week".into() }, "lead", at(3)).await,
    );
    let events = assert_events(s, mark, &["task.approved", "task.rejected"], "approvals").await;
    assert_eq!(events[0].detail.as_deref(), Some("by lead"));
    assert_eq!(events[1].detail.as_deref(), Some("not this week (by lead)"));
    let r = s.operate_task(&approved, TaskOp::Approve, "lead", at(4)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "approving twice is refused: {r:?}");
    let gone = get(s, &rejected).await;
    assert_eq!((gone.state, gone.reason.as_deref()), (TaskState::Cancelled, Some("rejected: not this week")));
    assert_eq!(claim(s, &a, at(5)).await, std::slice::from_ref(&approved), "approved: it goes out");
}

pub async fn dependencies_unblock_on_success_and_a_failure_fails_or_skips_down_the_chain(store: Arc<dyn Store>) {
    use muster_core::task::DependencyPolicy;
    let s = &*store;
    let a = online(s, "a", 4, at(0)).await;
    let first = submit(s, 1, with_attempts(spec("first"), 1), at(0)).await;
    let after = |deps: &[&TaskId], policy: DependencyPolicy, prompt: &str| TaskSpec {
        depends_on: deps.iter().map(|d| (*d).clone()).collect(),
        on_dependency_failure: policy,
        checks: Vec::new(),
        ..spec(prompt)
    };
    let second = submit(s, 2, after(&[&first], DependencyPolicy::Fail, "second"), at(0)).await;
    let third = submit(s, 3, after(&[&second], DependencyPolicy::Skip, "third"), at(0)).await;
    let other = submit(s, 4, spec("other"), at(0)).await;
    let waits_on_other = submit(s, 5, after(&[&other], DependencyPolicy::Fail, "after other"), at(0)).await;
    assert_eq!(get(s, &second).await.state, TaskState::Blocked);
    let r = s.create_task(task_id(6), after(&[&task_id(99)], DependencyPolicy::Fail, "x"), at(0)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "depends_on"), "{r:?}");

    // Only tasks with nothing to wait for go out.
    let mut out = claim(s, &a, at(1)).await;
    out.sort();
    assert_eq!(out, [first.clone(), other.clone()]);

    // `other` succeeds: its dependent is queued.
    let e = ok("task", s.task(&other).await).expect("other").epoch;
    ok("start_task", s.start_task(&a, &other, e, at(2), LEASE).await);
    let mark = last_seq(s).await;
    finish(s, &a, &other, e, &SUCCEEDED, at(3)).await;
    assert_events(s, mark, &["task.succeeded", "task.unblocked"], "a dependency succeeding").await;
    assert_eq!(get(s, &waits_on_other).await.state, TaskState::Queued);

    // `first` fails: `second` fails with it, and `third`, set to skip, is skipped.
    let e = ok("task", s.task(&first).await).expect("first").epoch;
    ok("start_task", s.start_task(&a, &first, e, at(4), LEASE).await);
    finish(s, &a, &first, e, &failed("broke"), at(5)).await;
    let second_now = get(s, &second).await;
    assert_eq!(second_now.state, TaskState::Failed);
    assert_eq!(second_now.reason, Some(format!("dependency {first} did not succeed")));
    let third_now = get(s, &third).await;
    assert_eq!(
        (third_now.state, third_now.reason),
        (TaskState::Skipped, Some(format!("skipped: dependency {second} did not succeed")))
    );

    // A task whose dependencies already ended well starts queued.
    let late = submit(s, 7, after(&[&other], DependencyPolicy::Fail, "late"), at(6)).await;
    assert_eq!(get(s, &late).await.state, TaskState::Queued);
}

/// A batch is one change: every task or none, answered in the batch's order,
/// with an idempotency key answering inside the batch as it does across them.
pub async fn create_tasks_creates_the_whole_batch_or_none_naming_the_refused_place(store: Arc<dyn Store>) {
    let s = &*store;
    let keyed = |key: &str, prompt: &str| TaskSpec { idempotency_key: Some(key.to_owned()), ..spec(prompt) };
    let existing = submit(s, 1, keyed("nightly", "existing"), at(0)).await;

    let mark = last_seq(s).await;
    let batch = vec![
        (task_id(2), with_priority(spec("first"), Priority::High)),
        (task_id(3), TaskSpec { depends_on: vec![task_id(2)], ..spec("after the first") }),
        (task_id(4), keyed("nightly", "a resend")),
        (task_id(5), keyed("weekly", "new key")),
        (task_id(6), keyed("weekly", "the same key twice in one batch")),
    ];
    let created = ok("create_tasks", s.create_tasks(batch, at(1)).await);
    let summary: Vec<(TaskId, bool)> = created.iter().map(|c| (c.task.id.clone(), c.created)).collect();
    assert_eq!(
        summary,
        [(task_id(2), true), (task_id(3), true), (existing.clone(), false), (task_id(5), true), (task_id(5), false)],
        "create_tasks answers each task in the batch's order; a used key answers with its task"
    );
    assert_eq!(created[0].task, get(s, &task_id(2)).await, "the answer is the stored task");
    assert_eq!((created[0].task.state, created[0].task.spec.priority), (TaskState::Queued, Priority::High));
    assert_eq!(created[1].task.state, TaskState::Blocked, "a task may depend on one earlier in its batch");
    assert_eq!(created[2].task, get(s, &existing).await, "a used key returns the original task, unchanged");
    for id in [task_id(4), task_id(6)] {
        assert_eq!(ok("task", s.task(&id).await), None, "a task answered by its key is not created: {id}");
    }
    let events = assert_events(s, mark, &["task.created", "task.created", "task.created"], "create_tasks").await;
    let on: Vec<Option<&TaskId>> = events.iter().map(|e| e.task.as_ref()).collect();
    assert_eq!(on, [Some(&task_id(2)), Some(&task_id(3)), Some(&task_id(5))]);

    // One refusal refuses the whole batch, naming the field and the task's place.
    let refused_batches = [
        (
            "an invalid spec second",
            vec![(task_id(10), spec("fine")), (task_id(11), with_attempts(spec("no attempts"), 0))],
            "max_attempts",
            "task 1 ",
        ),
        (
            "an unknown dependency third",
            vec![
                (task_id(12), spec("fine")),
                (task_id(13), keyed("monthly", "fine too")),
                (task_id(14), TaskSpec { depends_on: vec![task_id(99)], ..spec("waits on nothing") }),
            ],
            "depends_on",
            "task 2 ",
        ),
    ];
    for (what, batch, field, place) in refused_batches {
        let ids: Vec<TaskId> = batch.iter().map(|(id, _)| id.clone()).collect();
        let before = snapshot(s).await;
        let err = invalid(&format!("create_tasks with {what}"), s.create_tasks(batch, at(2)).await);
        assert_eq!(err.field, field, "create_tasks with {what} must name the field");
        assert!(err.reason.contains(place), "create_tasks with {what} must name the task's place: {err:?}");
        assert_unchanged(s, &before, &format!("create_tasks with {what}")).await;
        for id in &ids {
            assert_eq!(ok("task", s.task(id).await), None, "a refused batch created {id}");
        }
    }
    // The key of a refused batch was never used.
    let fresh = ok("create_tasks", s.create_tasks(vec![(task_id(20), keyed("monthly", "now"))], at(3)).await);
    assert!(fresh[0].created, "a key from a refused batch must still be free");
}

/// `next_ready` is when the queue's head is (or was) due: tasks that wait
/// for something else (a dependency, a person) and tasks handed out or
/// ended do not count; a backoff or a release puts a task's time ahead.
pub async fn next_ready_is_when_the_earliest_queued_task_is_or_was_due(store: Arc<dyn Store>) {
    let s = &*store;
    let next = || async { ok("next_ready", s.next_ready().await) };
    assert_eq!(next().await, None, "nothing queued, nothing ready");
    let a = online(s, "a", 2, at(0)).await;
    let one = submit(s, 1, spec("one"), at(1)).await;
    let two = submit(s, 2, spec("two"), at(2)).await;
    submit(s, 3, TaskSpec { depends_on: vec![one.clone()], ..spec("after one") }, at(2)).await;
    submit(s, 4, TaskSpec { requires_approval: true, ..spec("gated") }, at(2)).await;
    assert_eq!(next().await, Some(at(1)), "the oldest queued task, though its time has passed");

    assert_eq!(claim(s, &a, at(3)).await, [one.clone(), two.clone()]);
    assert_eq!(next().await, None, "assigned tasks are not queued; blocked and gated ones are not ready");

    // A released assignment is ready again after the release's pause.
    let e1 = get(s, &one).await.epoch;
    ok("release_task", s.release_task(&a, &one, e1, "busy", at(4), RELEASE).await);
    assert_eq!(next().await, Some(at(4).plus(RELEASE)), "a released task is ready after its pause");
    // A failure with attempts left is ready after its backoff.
    let e2 = get(s, &two).await.epoch;
    ok("start_task", s.start_task(&a, &two, e2, at(5), LEASE).await);
    finish(s, &a, &two, e2, &failed("flaky"), at(6)).await;
    assert_eq!(next().await, Some(at(4).plus(RELEASE)), "the earlier of a release and a backoff");
    ok("cancel_task", s.cancel_task(&one, at(7)).await);
    assert_eq!(next().await, Some(at(6).plus(BACKOFF)), "the backoff, once the released task is gone");
    ok("cancel_task", s.cancel_task(&two, at(8)).await);
    assert_eq!(next().await, None, "ended tasks are never ready");
}
