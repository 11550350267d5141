//! The event log: filters, pages, and waiting for the next write.

use super::*;

pub async fn events_filter_by_task_agent_and_after(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let first = submit(s, 1, spec("first"), at(1)).await;
    let e = assign(s, &a, &first, at(2)).await;
    ok("start_task", s.start_task(&a, &first, e, at(3), LEASE).await);
    finish(s, &a, &first, e, &SUCCEEDED, at(4)).await;
    let second = submit(s, 2, spec("second"), at(5)).await;
    assign(s, &b, &second, at(6)).await;

    let all = events_after(s, 0).await;
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "event sequence numbers must increase");

    let of_first = all_events(s, EventFilter { task: Some(first.clone()), ..EventFilter::default() }).await;
    assert_eq!(kinds(&of_first), ["task.created", "task.assigned", "task.started", "task.succeeded"]);
    assert_eq!(
        of_first.iter().map(|e| e.at).collect::<Vec<_>>(),
        [at(1), at(2), at(3), at(4)],
        "events carry the injected time"
    );
    assert!(of_first.iter().all(|e| e.task.as_ref() == Some(&first)));
    let assigned = &of_first[1];
    assert_eq!(
        (assigned.agent.as_ref(), assigned.epoch, assigned.state.as_deref()),
        (Some(&a), Some(e), Some("assigned"))
    );

    let of_a = all_events(s, EventFilter { agent: Some(a.clone()), ..EventFilter::default() }).await;
    assert!(of_a.iter().all(|ev| ev.agent.as_ref() == Some(&a)), "filter by agent returned another agent's events");
    let a_kinds = kinds(&of_a);
    for kind in ["agent.registered", "agent.connected", "task.assigned", "task.started", "task.succeeded"] {
        assert!(a_kinds.contains(&kind), "agent a's events lack {kind}: {a_kinds:?}");
    }
    assert!(of_a.iter().all(|ev| ev.task.as_ref() != Some(&second)), "agent a's events include b's task");

    let after = all[2].seq;
    assert_eq!(events_after(s, after).await, all[3..], "filter by after");
    let later_first =
        all_events(s, EventFilter { after: of_first[1].seq, task: Some(first.clone()), ..EventFilter::default() })
            .await;
    assert_eq!(later_first, of_first[2..], "filter by task and after");
    let limited = ok("events", s.events(&EventFilter { limit: 2, ..EventFilter::default() }).await);
    assert_eq!(limited, all[..2], "events honours its limit");
}

pub async fn record_event_appends_what_it_is_given(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let mark = last_seq(s).await;
    let event = NewEvent {
        kind: "operator.note",
        task: Some(task.clone()),
        agent: Some(a.clone()),
        epoch: Some(Epoch(3)),
        state: Some("noted".to_owned()),
        detail: Some("looked at it".to_owned()),
    };
    ok("record_event", s.record_event(event, at(9)).await);
    let appended = events_after(s, mark).await;
    assert_eq!(appended.len(), 1);
    assert_eq!(
        appended[0],
        Event {
            seq: appended[0].seq,
            at: at(9),
            kind: "operator.note".to_owned(),
            task: Some(task),
            agent: Some(a),
            epoch: Some(Epoch(3)),
            state: Some("noted".to_owned()),
            detail: Some("looked at it".to_owned()),
        }
    );
    assert!(appended[0].seq > mark);
}

pub async fn subscribe_advances_after_a_write(store: Arc<dyn Store>) {
    let s = &*store;
    let mut rx = s.subscribe();
    let start = *rx.borrow_and_update();
    submit(s, 1, spec("work"), at(0)).await;
    let target = last_seq(s).await;
    assert!(target > start, "create_task appended no event");
    let seen = tokio::time::timeout(WATCH_BOUND, rx.wait_for(|seq| *seq >= target))
        .await
        .expect("subscribe() never reached the latest event after a write")
        .map(|seq| *seq)
        .expect("the store dropped its event watch");
    assert_eq!(seen, target, "the watch must hold the latest committed event, not one past it");

    ok("cancel_task", s.cancel_task(&task_id(1), at(1)).await);
    let target = last_seq(s).await;
    tokio::time::timeout(WATCH_BOUND, rx.wait_for(|seq| *seq >= target))
        .await
        .expect("subscribe() did not advance after a second write")
        .expect("the store dropped its event watch");
    // A receiver taken later starts from the latest committed event.
    let late = s.subscribe();
    let late_seen = *late.borrow();
    assert!(late_seen <= target, "a new receiver is ahead of the events: {late_seen} > {target}");
}

pub async fn events_filter_by_kind_and_read_backwards(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let first = submit(s, 1, spec("first"), at(1)).await;
    let e = assign(s, &a, &first, at(2)).await;
    ok("start_task", s.start_task(&a, &first, e, at(3), LEASE).await);
    finish(s, &a, &first, e, &SUCCEEDED, at(4)).await;
    let all = events_after(s, 0).await;
    let kind = |k: &str| EventFilter { kind: Some(k.to_owned()), ..EventFilter::default() };
    let succeeded = all_events(s, kind("task.succeeded")).await;
    assert_eq!(kinds(&succeeded), ["task.succeeded"]);
    let of_tasks = all_events(s, kind("task")).await;
    assert_eq!(
        kinds(&of_tasks),
        ["task.created", "task.assigned", "task.started", "task.succeeded"],
        "a family by its prefix"
    );
    assert!(all_events(s, kind("tas")).await.is_empty(), "a family is a whole dotted word");
    assert!(all_events(s, kind("TASK")).await.is_empty(), "kinds are matched as written");
    assert!(all_events(s, kind("task.%")).await.is_empty(), "a % in a kind is literal");

    let last = all.last().expect("events were written").seq;
    let back = ok("events", s.events(&EventFilter { before: Some(last), limit: 2, ..EventFilter::default() }).await);
    assert_eq!(back, all[all.len() - 3..all.len() - 1], "the newest two below `before`, oldest first");
    let back_tasks = ok(
        "events",
        s.events(&EventFilter {
            before: Some(last + 1),
            kind: Some("task".into()),
            limit: 3,
            ..EventFilter::default()
        })
        .await,
    );
    assert_eq!(kinds(&back_tasks), ["task.assigned", "task.started", "task.succeeded"]);
}
