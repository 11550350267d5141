//! Agents: registration, sessions, flags, heartbeats, and what a restart or a reconnect gives back.

use super::*;

pub async fn register_agent_refuses_a_taken_name(store: Arc<dyn Store>) {
    let s = &*store;
    let a = name("build-01.eu");
    let new = NewAgent { name: a.clone(), capabilities: caps(&["lang:rust", "gpu", "gpu"]) };
    let record = ok("register_agent", s.register_agent(new, new_token(10, Scope::Agent, Some(&a)), at(0)).await);
    assert_eq!(
        record,
        AgentRecord {
            name: a.clone(),
            token_id: token_id(10),
            registered_capabilities: caps(&["gpu", "lang:rust"]),
            announced_capabilities: Vec::new(),
            runners: Vec::new(),
            version: None,
            status: AgentStatus::default(),
            session: 0,
            last_seen_at: None,
            created_at: at(0),
            doctor: None,
        },
        "register_agent must store sorted, deduplicated capabilities and start offline"
    );
    assert_eq!(record.status.state(), AgentState::Offline);
    assert_eq!(ok("agent", s.agent(&a).await), Some(record.clone()));
    assert_eq!(ok("list_agents", s.list_agents().await), std::slice::from_ref(&record));
    let token = ok("token", s.token(&token_id(10)).await).expect("register_agent stores the agent's token");
    assert_eq!((token.scope, token.agent), (Scope::Agent, Some(a.clone())));
    assert_events(s, 0, &["token.created", "agent.registered"], "register_agent").await;

    let before = snapshot(s).await;
    let again = NewAgent { name: a.clone(), capabilities: Vec::new() };
    match s.register_agent(again, new_token(11, Scope::Agent, Some(&a)), at(1)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("register_agent with a taken name: expected Conflict, got {other:?}"),
    }
    assert_unchanged(s, &before, "register_agent with a taken name (its token included)").await;
}

pub async fn replace_agent_token_revokes_the_old_token(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &["gpu"], at(0)).await;
    let old = get_agent(s, &a).await;

    let mark = last_seq(s).await;
    let replaced =
        ok("replace_agent_token", s.replace_agent_token(&a, new_token(20, Scope::Agent, Some(&a)), at(5)).await);
    assert_eq!(replaced, AgentRecord { token_id: token_id(20), ..old.clone() }, "only the token changes");
    assert_eq!(get_agent(s, &a).await, replaced);
    let revoked = ok("token", s.token(&old.token_id).await).expect("the old token is kept, revoked");
    assert_eq!(revoked.revoked_at, Some(at(5)), "the old token must be revoked");
    let fresh = ok("token", s.token(&token_id(20)).await).expect("the new token is stored");
    assert_eq!((fresh.revoked_at, fresh.created_at, fresh.agent), (None, at(5), Some(a.clone())));
    assert_events(s, mark, &["token.revoked", "token.created"], "replace_agent_token").await;

    let before = snapshot(s).await;
    let ghost = name("ghost");
    let r = s.replace_agent_token(&ghost, new_token(21, Scope::Agent, Some(&ghost)), at(6)).await;
    assert_eq!(not_found("replace_agent_token of an unknown agent", r), "agent");
    assert_unchanged(s, &before, "replace_agent_token of an unknown agent").await;
}

pub async fn removing_an_agent_revokes_its_token_and_keeps_its_history(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let done = submit(s, 1, spec("done"), at(0)).await;
    let e = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, e, &SUCCEEDED, at(1)).await;
    let running = submit(s, 2, spec("running"), at(2)).await;
    start(s, &a, &running, at(2)).await;
    let token = get_agent(s, &a).await.token_id;

    let before = snapshot(s).await;
    let refused = s.remove_agent(&a, false, "admin", at(3)).await;
    match refused {
        Err(StoreError::Conflict(why)) => {
            assert!(why.contains(running.as_str()) && why.contains("--force"), "{why}")
        }
        other => panic!("removing an agent with a run must be refused: {other:?}"),
    }
    assert_unchanged(s, &before, "a refused removal").await;

    let mark = last_seq(s).await;
    let taken = ok("remove_agent", s.remove_agent(&a, true, "admin", at(4)).await);
    let taken: Vec<(TaskId, TaskState)> = taken.into_iter().map(|t| (t.id, t.state)).collect();
    assert_eq!(taken, [(running.clone(), TaskState::Queued)]);
    assert_events(s, mark, &["task.reclaimed", "token.revoked", "agent.removed"], "a forced removal").await;
    assert!(ok("agent", s.agent(&a).await).is_none(), "the agent is gone");
    assert!(ok("list_agents", s.list_agents().await).is_empty());
    let revoked = ok("token", s.token(&token).await).expect("the token is kept, revoked");
    assert_eq!(revoked.revoked_at, Some(at(4)));
    let back = get(s, &running).await;
    assert_eq!((back.state, back.reason.as_deref()), (TaskState::Queued, Some("its agent was removed during the run")));
    // Its history stays, under its name.
    assert_eq!(attempts(s, &done).await[0].agent, a);
    let missing = s.remove_agent(&a, false, "admin", at(5)).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    // The name can be registered again, with a token of its own.
    let again = NewAgent { name: a.clone(), capabilities: Vec::new() };
    ok("register_agent", s.register_agent(again, new_token(99, Scope::Agent, Some(&a)), at(6)).await);
}

pub async fn agent_sessions_ignore_a_stale_disconnect(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &["gpu"], at(0)).await;
    let hello = Announce {
        capabilities: caps(&["lang:rust"]),
        runners: runners(&["shell", "claude"]),
        slots: 2,
        version: "1.2.3".to_owned(),
        doctor: Some(r#"{"runners":[]}"#.to_owned()),
        holds: None,
    };
    let mark = last_seq(s).await;
    let (record, first) = ok("agent_connected", s.agent_connected(&a, hello, at(1)).await);
    assert_eq!(first, 1, "the first connect opens session 1");
    assert_eq!(record.session, 1);
    assert_eq!(record.status, AgentStatus { connected: true, slots: 2, ..AgentStatus::default() });
    assert_eq!(record.status.state(), AgentState::Idle);
    assert_eq!(record.runners, runners(&["shell", "claude"]));
    assert_eq!(record.announced_capabilities, caps(&["lang:rust"]));
    assert_eq!(record.capabilities(), caps(&["gpu", "lang:rust"]));
    assert_eq!(record.version.as_deref(), Some("1.2.3"));
    assert_eq!(record.last_seen_at, Some(at(1)));
    assert_eq!(record.doctor.as_deref(), Some(r#"{"runners":[]}"#), "the doctor report is kept as given");
    assert_eq!(get_agent(s, &a).await, record);

    let second = connect(s, &a, &["shell"], &[], 2, at(2)).await;
    assert_eq!(second, 2, "a reconnect opens a new session");
    assert_events(s, mark, &["agent.connected", "agent.connected"], "two connects").await;

    // The first socket's late goodbye must not take the second one down.
    let before = snapshot(s).await;
    ok("agent_disconnected", s.agent_disconnected(&a, first, "old socket closed", at(3)).await);
    assert!(get_agent(s, &a).await.status.connected, "a disconnect naming an old session disconnected the agent");
    assert_unchanged(s, &before, "a disconnect naming an old session").await;

    let mark = last_seq(s).await;
    ok("agent_disconnected", s.agent_disconnected(&a, second, "socket closed", at(4)).await);
    let record = get_agent(s, &a).await;
    assert!(!record.status.connected, "a disconnect naming the current session must disconnect the agent");
    assert_eq!(record.status.state(), AgentState::Offline);
    let events = assert_events(s, mark, &["agent.disconnected"], "agent_disconnected").await;
    assert_eq!(events[0].agent.as_ref(), Some(&a));

    assert_eq!(connect(s, &a, &["shell"], &[], 2, at(5)).await, 3, "sessions keep counting");
    let hello = Announce { slots: 1, ..Announce::default() };
    assert_eq!(
        not_found("agent_connected of an unknown agent", s.agent_connected(&name("ghost"), hello, at(6)).await),
        "agent"
    );
}

pub async fn agent_flags_pause_and_drain(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let mark = last_seq(s).await;
    let paused = AgentFlags { paused: Some(true), draining: None };
    let record = ok("set_agent_flags", s.set_agent_flags(&a, paused, at(1)).await);
    assert!(record.status.paused);
    assert_eq!(record.status.state(), AgentState::Paused);
    let events = assert_events(s, mark, &["agent.state"], "pausing").await;
    assert_eq!(events[0].state.as_deref(), Some("paused"));

    let mark = last_seq(s).await;
    let flags = AgentFlags { paused: Some(false), draining: Some(true) };
    let record = ok("set_agent_flags", s.set_agent_flags(&a, flags, at(2)).await);
    assert_eq!((record.status.paused, record.status.draining), (false, true));
    assert_eq!(record.status.state(), AgentState::Draining);
    let events = assert_events(s, mark, &["agent.state"], "pause lifted, drain set").await;
    assert_eq!(events[0].state.as_deref(), Some("draining"));
    assert_eq!(get_agent(s, &a).await, record);

    let flags = AgentFlags { paused: None, draining: Some(false) };
    assert_eq!(ok("set_agent_flags", s.set_agent_flags(&a, flags, at(3)).await).status.state(), AgentState::Idle);
    let flags = AgentFlags { paused: Some(true), draining: None };
    assert_eq!(
        not_found("set_agent_flags of an unknown agent", s.set_agent_flags(&name("ghost"), flags, at(4)).await),
        "agent"
    );
}

pub async fn heartbeat_carries_pending_cancels_and_spares_unacknowledged_outcomes(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let cancelled = submit(s, 1, spec("to cancel"), at(0)).await;
    let ce = start(s, &a, &cancelled, at(0)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(1)).await);
    let done = submit(s, 2, spec("done"), at(0)).await;
    let de = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, de, &SUCCEEDED, at(2)).await;

    // The agent still lists the finished run: its report has not been acknowledged.
    let before = snapshot(s).await;
    let hb = ok("heartbeat", s.heartbeat(&a, &[(cancelled.clone(), ce), (done.clone(), de)], at(3), LEASE).await);
    assert_eq!(hb.cancel, vec![(cancelled.clone(), ce)], "a pending cancel is repeated with every heartbeat");
    assert_eq!(hb.stale, vec![], "an outcome awaiting its acknowledgement is not a stale run");
    assert_eq!(hb.renewed, 1);
    let after = snapshot(s).await;
    assert_eq!(after.events, before.events, "a heartbeat appends no events");
    assert_eq!(ok("task", s.task(&done).await).expect("the task").state, TaskState::Succeeded);
}

pub async fn heartbeat_renews_running_leases_and_reports_stale_runs(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let running = submit(s, 1, spec("running on a"), at(0)).await;
    let e = start(s, &a, &running, at(0)).await;
    let elsewhere = submit(s, 3, spec("running on b"), at(1)).await;
    let b_epoch = start(s, &b, &elsewhere, at(1)).await;
    let ghost = task_id(99);

    let reported =
        [(running.clone(), e), (ghost.clone(), Epoch(1)), (running.clone(), Epoch(7)), (elsewhere.clone(), b_epoch)];
    let hb = ok("heartbeat", s.heartbeat(&a, &reported, at(20), LEASE).await);
    assert_eq!(hb.renewed, 1, "only the running task held under its epoch is renewed: {hb:?}");
    assert_eq!(
        hb.stale,
        [(ghost, Epoch(1)), (running.clone(), Epoch(7)), (elsewhere.clone(), b_epoch)],
        "unknown tasks, stale epochs and other agents' runs are stale"
    );
    let lease = |t: Task| t.lease.expect("still leased").expires_at;
    assert_eq!(lease(get(s, &running).await), at(50), "the running lease is renewed to now + ttl");
    assert_eq!(lease(get(s, &elsewhere).await), at(31), "another agent's lease is untouched");
    assert_eq!(get_agent(s, &a).await.last_seen_at, Some(at(20)), "a heartbeat records when the agent was seen");

    // A heartbeat never shortens a lease.
    let hb = ok("heartbeat", s.heartbeat(&a, &[(running.clone(), e)], at(21), Duration::from_secs(1)).await);
    assert_eq!(hb.renewed, 1);
    assert_eq!(lease(get(s, &running).await), at(50), "a short ttl must not shorten the lease");

    assert_eq!(
        not_found("heartbeat of an unknown agent", s.heartbeat(&name("ghost"), &[], at(22), LEASE).await),
        "agent"
    );
}

pub async fn heartbeat_from_the_holder_starts_an_assignment_whose_accept_was_lost(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("accepted, but the accept was lost"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;

    // Another agent naming the assignment is stale and changes nothing.
    let before = snapshot(s).await;
    let hb = ok("heartbeat", s.heartbeat(&b, &[(task.clone(), e)], at(2), LEASE).await);
    assert_eq!((hb.renewed, hb.stale), (0, vec![(task.clone(), e)]));
    let after = snapshot(s).await;
    assert_eq!(
        (&after.tasks, &after.events),
        (&before.tasks, &before.events),
        "a stranger's heartbeat changed the task"
    );

    // The holder reports running it: the run is real, so it counts as started now.
    let mark = last_seq(s).await;
    let hb = ok("heartbeat", s.heartbeat(&a, &[(task.clone(), e)], at(3), LEASE).await);
    assert_eq!((hb.renewed, hb.stale), (1, Vec::new()), "the holder's assignment must be renewed, not stale");
    let started = get(s, &task).await;
    assert_eq!((started.state, started.attempts, started.epoch), (TaskState::Running, 1, e));
    assert_eq!(started.lease.as_ref().map(|l| l.expires_at), Some(at(3).plus(LEASE)));
    assert_eq!(started.started_at, Some(at(3)));
    assert_events(s, mark, &["task.started"], "a heartbeat that starts an assignment").await;
    let tried = attempts(s, &task).await;
    assert_eq!(tried.iter().map(|t| (t.number, t.epoch, t.started_at)).collect::<Vec<_>>(), [(1, e, at(3))]);
    let (_, result) = finish(s, &a, &task, e, &SUCCEEDED, at(4)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Succeeded), "the run started by heartbeat finishes as usual");
}

pub async fn hub_started_disconnects_agents_and_extends_leases(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let running = submit(s, 1, spec("running"), at(0)).await;
    let e = start(s, &a, &running, at(0)).await;
    let assigned = submit(s, 2, spec("assigned"), at(0)).await;
    assign(s, &a, &assigned, at(0)).await;
    let long = submit(s, 3, spec("long lease"), at(0)).await;
    let long_epoch = start(s, &b, &long, at(0)).await;
    ok("heartbeat", s.heartbeat(&b, &[(long.clone(), long_epoch)], at(1), Duration::from_secs(1_000)).await);

    let mark = last_seq(s).await;
    let grace = Duration::from_secs(60);
    ok("hub_started", s.hub_started(&the_hub(), at(5), grace).await);
    for agent in [&a, &b] {
        let record = get_agent(s, agent).await;
        assert!(!record.status.connected, "hub_started must mark {agent} disconnected");
        assert_eq!(record.session, 1, "hub_started must not change sessions");
    }
    let until = at(5).plus(grace);
    let lease = |t: Task| t.lease.expect("still leased").expires_at;
    assert_eq!(lease(get(s, &running).await), until, "a running lease is extended by the grace");
    assert_eq!(lease(get(s, &assigned).await), until, "an assignment is extended by the grace");
    assert_eq!(lease(get(s, &long).await), at(1_001), "a lease longer than the grace is not shortened");
    let mut appended: Vec<(String, Option<AgentName>)> =
        events_after(s, mark).await.into_iter().map(|e| (e.kind, e.agent)).collect();
    appended.sort();
    assert_eq!(
        appended,
        [
            ("agent.disconnected".to_owned(), Some(a.clone())),
            ("agent.disconnected".to_owned(), Some(b.clone())),
            ("hub.started".to_owned(), None)
        ]
    );

    assert!(
        ok("reclaim_expired", s.reclaim_expired(just_before(until), 10).await).is_empty(),
        "leases within the grace were reclaimed"
    );
    // The agent comes back within the grace and carries on.
    assert_eq!(connect(s, &a, &["shell"], &[], 3, at(10)).await, 2);
    // Renewed past the end of the grace, so only the unrenewed assignment expires there.
    let hb = ok("heartbeat", s.heartbeat(&a, &[(running.clone(), e)], at(11), Duration::from_secs(120)).await);
    assert_eq!((hb.renewed, hb.stale), (1, Vec::new()));
    let mut reclaimed: Vec<TaskId> =
        ok("reclaim_expired", s.reclaim_expired(until, 10).await).into_iter().map(|(t, _)| t.id).collect();
    reclaimed.sort();
    assert_eq!(reclaimed, [assigned], "only the assignment nobody renewed expires at the end of the grace");
}

/// On main an assignment committed just before a hub crash, and never
/// delivered, held one of its agent's slots until `restart_grace` after the
/// last restart. Now the agent's `hello` says what it holds, and the rest is
/// taken back in the same transaction that records the connection.
pub async fn a_reconnecting_agent_gives_back_at_once_what_it_does_not_hold(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let running = submit(s, 1, TaskSpec { max_attempts: 2, ..spec("running") }, at(0)).await;
    let e1 = start(s, &a, &running, at(0)).await;
    let lost = submit(s, 2, spec("assigned, never delivered"), at(1)).await;
    let e2 = assign(s, &a, &lost, at(1)).await;
    ok("hub_started", s.hub_started(&the_hub(), at(2), Duration::from_secs(600)).await);

    let hello = |holds: Vec<(TaskId, Epoch)>| Announce {
        runners: runners(&["shell"]),
        slots: 2,
        version: "1.0.0".to_owned(),
        holds: Some(holds),
        ..Announce::default()
    };
    let mark = last_seq(s).await;
    let (record, _) = ok("agent_connected", s.agent_connected(&a, hello(vec![(running.clone(), e1)]), at(3)).await);
    assert_events(s, mark, &["agent.connected", "task.reclaimed"], "a reconnect without the assignment").await;
    let back = get(s, &lost).await;
    assert_eq!((back.state, back.lease.as_ref(), back.ready_at, back.attempts), (TaskState::Queued, None, at(3), 0));
    assert_eq!(back.reason.as_deref(), Some("its agent connected again without it"));
    assert_eq!(get(s, &running).await.state, TaskState::Running, "what it holds goes on");
    assert_eq!(record.status.used_slots, 1, "the slot is free again");
    let again = assign(s, &a, &lost, at(4)).await;
    assert!(again > e2, "handed out again under a new epoch ({again} after {e2})");
    let refused = s.start_task(&a, &lost, e2, at(4), LEASE).await;
    assert!(matches!(refused, Err(StoreError::Refused(Refused::StaleEpoch { .. }))), "{refused:?}");

    // A run that died with its agent ends its attempt and retries.
    let mark = last_seq(s).await;
    ok("agent_connected", s.agent_connected(&a, hello(vec![(lost.clone(), again)]), at(5)).await);
    assert_events(s, mark, &["agent.connected", "task.reclaimed"], "a reconnect without the run").await;
    let retried = get(s, &running).await;
    assert_eq!((retried.state, retried.attempts), (TaskState::Queued, 1));
    assert_eq!(retried.reason.as_deref(), Some("its agent connected again without this run"));
    assert_eq!(attempts(s, &running).await[0].outcome.map(Outcome::as_str), Some("lease_expired"));
    assert_eq!(get(s, &lost).await.state, TaskState::Assigned, "the new assignment it holds stays");
    // Without a list (an older agent, a store client), nothing is taken back.
    ok("agent_connected", s.agent_connected(&a, Announce { holds: None, ..hello(Vec::new()) }, at(6)).await);
    assert_eq!(get(s, &lost).await.state, TaskState::Assigned);
}
