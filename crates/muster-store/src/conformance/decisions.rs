//! Decisions that hold a task or park a run until a person answers.

use super::*;

pub(super) fn question(task: &TaskId, epoch: Option<Epoch>, park: bool) -> crate::NewDecision {
    crate::NewDecision {
        task: task.clone(),
        question: "Ship the migration tonight?".to_owned(),
        options: vec!["ship".to_owned(), "wait".to_owned()],
        default: None,
        timeout: None,
        answerers: Vec::new(),
        raised_by: "admin".to_owned(),
        epoch,
        park,
    }
}

pub async fn an_operators_decision_holds_a_queued_task_until_a_person_answers(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let id = submit(s, 1, spec("migrate"), at(0)).await;
    let mark = last_seq(s).await;
    let (d, task) = ok("open_decision", s.open_decision(question(&id, None, false), at(1)).await);
    assert_eq!((task.state, d.state), (TaskState::NeedsDecision, DecisionState::Open));
    assert_events(s, mark, &["task.needs_decision", "decision.opened"], "opening").await;
    let a = online(s, "a", 1, at(1)).await;
    assert!(
        ok("claim", s.claim_tasks(&a, at(2), ACCEPT).await).is_empty(),
        "a task waiting for a person is not handed out"
    );

    for (bad, field) in [
        (crate::NewDecision { question: " ".into(), ..question(&id, None, false) }, "question"),
        (crate::NewDecision { options: vec!["a".into(), "a".into()], ..question(&id, None, false) }, "options"),
        (crate::NewDecision { options: vec!["only".into()], ..question(&id, None, false) }, "options"),
        (
            crate::NewDecision { default: Some("maybe".into()), timeout: Some(LEASE), ..question(&id, None, false) },
            "default",
        ),
        (crate::NewDecision { default: Some("ship".into()), ..question(&id, None, false) }, "default"),
    ] {
        let r = s.open_decision(bad, at(2)).await;
        assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == field), "{field}: {r:?}");
    }
    let restricted = crate::NewDecision { answerers: vec!["lead".into()], ..question(&id, None, false) };
    let (second, _) = ok("open_decision", s.open_decision(restricted, at(2)).await);

    let r = s.answer_decision(d.id, "maybe", None, "admin", at(3)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "option"), "{r:?}");
    let (answered, task) = ok("answer", s.answer_decision(d.id, "ship", Some("go".into()), "admin", at(3)).await);
    assert_eq!(
        (answered.state, answered.answer.as_deref(), answered.answered_by.as_deref()),
        (DecisionState::Answered, Some("ship"), Some("admin"))
    );
    assert_eq!(task.state, TaskState::NeedsDecision, "another decision is still open");
    assert!(
        matches!(s.answer_decision(d.id, "wait", None, "admin", at(3)).await, Err(StoreError::Conflict(_))),
        "answered once"
    );
    let r = s.answer_decision(second.id, "ship", None, "admin", at(4)).await;
    assert!(matches!(r, Err(StoreError::Conflict(ref m)) if m.contains("only by lead")), "{r:?}");
    let mark = last_seq(s).await;
    let (_, task) = ok("answer", s.answer_decision(second.id, "wait", None, "lead", at(4)).await);
    assert_eq!(task.state, TaskState::Queued, "nothing left open: back in the queue");
    let events = assert_events(s, mark, &["decision.answered", "task.resumed"], "answering").await;
    assert_eq!(events[0].detail.as_deref(), Some(format!("#{}: wait (by lead)", second.id).as_str()));
    let open = ok("decisions", s.decisions(true, None, 100).await);
    assert!(open.is_empty(), "{open:?}");
    assert_eq!(ok("decisions", s.decisions(false, Some(&id), 100).await).len(), 2);

    // A running task is asked from inside its run, not by an operator.
    let e = start(s, &a, &id, at(5)).await;
    assert!(matches!(s.open_decision(question(&id, None, false), at(5)).await, Err(StoreError::Refused(_))));
    // A run that asks and waits: its task stays running; when the run ends the question is withdrawn.
    let (d, task) = ok("open_decision", s.open_decision(question(&id, Some(e), false), at(5)).await);
    assert_eq!(task.state, TaskState::Running);
    let stale = s.open_decision(question(&id, Some(Epoch(e.0 + 1)), false), at(5)).await;
    assert!(matches!(stale, Err(StoreError::Refused(_))), "{stale:?}");
    finish(s, &a, &id, e, &SUCCEEDED, at(6)).await;
    let d = ok("decision", s.decision(d.id).await).expect("the decision");
    assert_eq!(d.state, DecisionState::Withdrawn, "nobody waits for it any more");
}

pub async fn a_run_that_asks_and_stops_gives_its_slot_and_attempt_back_until_the_answer(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let id = submit(s, 1, spec("refactor"), at(0)).await;
    let e = start(s, &a, &id, at(1)).await;
    let (d, _) = ok("open_decision", s.open_decision(question(&id, Some(e), true), at(2)).await);
    let mark = last_seq(s).await;
    let (task, _) = finish(s, &a, &id, e, &SUCCEEDED, at(3)).await;
    assert_eq!((task.state, task.attempts), (TaskState::NeedsDecision, 0), "parked, the attempt given back");
    assert_events(s, mark, &["task.needs_decision"], "parking").await;
    assert_eq!(attempts(s, &id).await[0].outcome.map(Outcome::as_str), Some("parked"));
    assert_eq!(get_agent(s, &a).await.status.free_slots(), 1, "the slot is free while a person thinks");
    let (_, task) = ok("answer", s.answer_decision(d.id, "wait", None, "admin", at(4)).await);
    assert_eq!(task.state, TaskState::Queued);
    let e2 = start(s, &a, &id, at(5)).await;
    assert!(e2 > e);

    // Answered before the run got round to stopping: queued again at once.
    let (d, _) = ok("open_decision", s.open_decision(question(&id, Some(e2), true), at(6)).await);
    ok("answer", s.answer_decision(d.id, "ship", None, "admin", at(7)).await);
    assert_eq!(get(s, &id).await.state, TaskState::Running, "the run is still stopping");
    let (task, _) = finish(s, &a, &id, e2, &SUCCEEDED, at(8)).await;
    assert_eq!(task.state, TaskState::Queued);
    assert_eq!(ok("decision", s.decision(d.id).await).map(|d| d.state), Some(DecisionState::Answered));

    // Cancelled while it waits: the decision is withdrawn.
    let e3 = start(s, &a, &id, at(9)).await;
    let (d, _) = ok("open_decision", s.open_decision(question(&id, Some(e3), true), at(9)).await);
    finish(s, &a, &id, e3, &SUCCEEDED, at(10)).await;
    ok("cancel_task", s.cancel_task(&id, at(11)).await);
    assert_eq!(ok("decision", s.decision(d.id).await).map(|d| d.state), Some(DecisionState::Withdrawn));
}

pub async fn an_unanswered_decision_takes_its_default_or_fails_the_task(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let defaulted = submit(s, 1, spec("one"), at(0)).await;
    let timeout = Some(Duration::from_secs(60));
    let with_default =
        crate::NewDecision { default: Some("wait".into()), timeout, ..question(&defaulted, None, false) };
    let (d1, _) = ok("open_decision", s.open_decision(with_default, at(0)).await);
    let running = submit(s, 2, spec("two"), at(0)).await;
    let e = start(s, &a, &running, at(0)).await;
    let (d2, _) = ok(
        "open_decision",
        s.open_decision(crate::NewDecision { timeout, ..question(&running, Some(e), false) }, at(1)).await,
    );
    ok("acquire_lock", s.acquire_lock("deploy:staging", &running, e, crate::LockMode::Exclusive, true, at(1)).await);
    assert_eq!(ok("next", s.next_decision_deadline().await), Some(at(60)));
    assert!(ok("expire", s.expire_decisions(at(59), 10).await).is_empty(), "not yet");

    let expired = ok("expire", s.expire_decisions(at(61), 10).await);
    assert_eq!(expired.len(), 2);
    let d = ok("decision", s.decision(d1.id).await).expect("d1");
    assert_eq!((d.state, d.answer.as_deref()), (DecisionState::AutoResolved, Some("wait")));
    assert_eq!(get(s, &defaulted).await.state, TaskState::Queued, "the default applies and the task goes on");
    let d = ok("decision", s.decision(d2.id).await).expect("d2");
    assert_eq!(d.state, DecisionState::TimedOut);
    let task = get(s, &running).await;
    assert_eq!((task.state, task.reason.as_deref()), (TaskState::Failed, Some("decision_timeout")));
    assert!(task.lease.is_none());
    assert!(ok("locks", s.locks().await).is_empty(), "its locks go with it");
    let r = s.finish_task(&a, &running, e, &SUCCEEDED, RunDetails::default(), at(62), Retry::fixed(BACKOFF)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "the run's late report is stale: {r:?}");
    assert_eq!(ok("next", s.next_decision_deadline().await), None);
}
