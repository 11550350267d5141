//! Claims: priority, capability, runner and slot fit, the dispatcher in the batch, breakers, disabled and limited runners, fallbacks.

use super::*;

pub async fn claim_honours_priority_then_age(store: Arc<dyn Store>) {
    let s = &*store;
    let low = submit(s, 1, with_priority(spec("low"), Priority::Low), at(1)).await;
    let normal_old = submit(s, 2, spec("normal, older"), at(2)).await;
    let urgent = submit(s, 3, with_priority(spec("urgent"), Priority::Urgent), at(3)).await;
    let normal_new = submit(s, 4, spec("normal, newer"), at(4)).await;
    let high = submit(s, 5, with_priority(spec("high"), Priority::High), at(5)).await;

    let a = online(s, "a", 2, at(6)).await;
    assert_eq!(claim(s, &a, at(10)).await, [urgent, high], "two slots take the two most urgent tasks");
    let b = online(s, "b", 3, at(6)).await;
    assert_eq!(claim(s, &b, at(10)).await, [normal_old, normal_new, low], "equal priority goes oldest first");
}

pub async fn claim_routes_by_capability(store: Arc<dyn Store>) {
    let s = &*store;
    let gpu = submit(s, 1, with_caps(spec("needs gpu"), &["gpu"]), at(1)).await;
    let rust = submit(s, 2, with_caps(spec("needs rust"), &["lang:rust"]), at(2)).await;
    let both = submit(s, 3, with_caps(spec("needs both"), &["gpu", "lang:rust"]), at(3)).await;

    let plain = online(s, "plain", 5, at(4)).await;
    let before = snapshot(s).await;
    assert_eq!(claim(s, &plain, at(5)).await, [], "an agent lacking every capability gets nothing");
    assert_unchanged(s, &before, "a claim that matches nothing").await;

    let registered = register(s, "gpu-box", &["gpu"], at(4)).await;
    connect(s, &registered, &["shell"], &[], 5, at(4)).await;
    assert_eq!(claim(s, &registered, at(5)).await, [gpu], "registered capabilities route; every one is needed");

    let announcer = register(s, "rusty", &[], at(4)).await;
    connect(s, &announcer, &["shell"], &["lang:rust"], 5, at(4)).await;
    assert_eq!(claim(s, &announcer, at(5)).await, [rust], "announced capabilities route too");

    let mixed = register(s, "mixed", &["gpu"], at(4)).await;
    connect(s, &mixed, &["shell"], &["lang:rust"], 5, at(4)).await;
    assert_eq!(claim(s, &mixed, at(5)).await, [both], "registered and announced capabilities combine");
}

pub async fn claim_matches_the_runner(store: Arc<dyn Store>) {
    let s = &*store;
    let task = submit(s, 1, TaskSpec { runner: runners(&["claude"]).remove(0), ..spec("for claude") }, at(0)).await;
    let shell = online(s, "shell-only", 2, at(0)).await;
    assert_eq!(claim(s, &shell, at(1)).await, [], "an agent without the task's runner gets nothing");
    let none = register(s, "no-runners", &[], at(0)).await;
    connect(s, &none, &[], &[], 2, at(0)).await;
    assert_eq!(claim(s, &none, at(1)).await, [], "an agent with no runners gets nothing");
    let claude = register(s, "claude-box", &[], at(0)).await;
    connect(s, &claude, &["shell", "claude"], &[], 2, at(0)).await;
    assert_eq!(claim(s, &claude, at(1)).await, [task]);
}

pub async fn claim_fills_only_free_slots(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(submit(s, n, spec("work"), at(n as i64)).await);
    }
    assert_eq!(claim(s, &a, at(10)).await, ids[..2]);
    let status = get_agent(s, &a).await.status;
    assert_eq!((status.used_slots, status.free_slots()), (2, 0), "assigned tasks use slots");
    assert_eq!(claim(s, &a, at(11)).await, [], "a full agent gets nothing");

    let e = ok("start_task", s.start_task(&a, &ids[0], Epoch(1), at(12), LEASE).await).epoch;
    assert_eq!(claim(s, &a, at(12)).await, [], "running tasks use slots");
    finish(s, &a, &ids[0], e, &SUCCEEDED, at(13)).await;
    assert_eq!(claim(s, &a, at(14)).await, ids[2..3], "a finished task frees its slot");

    // Slots minus leased tasks: two are held, so four slots leave two free.
    connect(s, &a, &["shell"], &[], 4, at(15)).await;
    assert_eq!(get_agent(s, &a).await.status.used_slots, 2);
    assert_eq!(claim(s, &a, at(16)).await, ids[3..], "only queued tasks are left to fill free slots");
}

pub async fn claim_skips_agents_that_take_no_work(store: Arc<dyn Store>) {
    let s = &*store;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let offline = register(s, "offline", &[], at(0)).await;
    assert_eq!(claim(s, &offline, at(1)).await, [], "a registered agent that never connected gets nothing");

    let gone = online(s, "gone", 2, at(0)).await;
    ok("agent_disconnected", s.agent_disconnected(&gone, 1, "bye", at(1)).await);
    assert_eq!(claim(s, &gone, at(2)).await, [], "a disconnected agent gets nothing");

    let paused = online(s, "paused", 2, at(0)).await;
    ok("pause", s.set_agent_flags(&paused, AgentFlags { paused: Some(true), draining: None }, at(1)).await);
    assert_eq!(claim(s, &paused, at(2)).await, [], "a paused agent gets nothing");

    let draining = online(s, "draining", 2, at(0)).await;
    ok("drain", s.set_agent_flags(&draining, AgentFlags { paused: None, draining: Some(true) }, at(1)).await);
    assert_eq!(claim(s, &draining, at(2)).await, [], "a draining agent gets nothing");

    assert_eq!(get(s, &task).await.state, TaskState::Queued);
    ok("unpause", s.set_agent_flags(&paused, AgentFlags { paused: Some(false), draining: None }, at(3)).await);
    assert_eq!(claim(s, &paused, at(4)).await, [task], "an unpaused agent takes work again");
    assert_eq!(
        not_found("claim_tasks for an unknown agent", s.claim_tasks(&name("ghost"), at(5), ACCEPT).await),
        "agent"
    );
}

pub async fn claim_waits_for_ready_at(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("flaky"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let (_, result) = finish(s, &a, &task, e, &failed("flaky"), at(1)).await;
    let ready_at = at(1).plus(BACKOFF);
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at }));

    let before = snapshot(s).await;
    assert_eq!(claim(s, &a, just_before(ready_at)).await, [], "a task in backoff must not be claimed");
    assert_unchanged(s, &before, "a claim before ready_at").await;
    let claimed = ok("claim_tasks", s.claim_tasks(&a, ready_at, ACCEPT).await);
    assert_eq!(claimed.len(), 1, "a task is claimable once ready_at has come");
    assert_eq!((&claimed[0].id, claimed[0].epoch), (&task, Epoch(2)), "every hand-out raises the epoch");
}

/// A clock the case moves by hand.
struct Hand(std::sync::atomic::AtomicI64);

impl muster_core::time::Clock for Hand {
    fn now(&self) -> Millis {
        Millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// The hub's side of the in-batch claims: the roster it publishes, the
/// clock it lends, and what it was handed.
struct Recorder {
    roster: tokio::sync::watch::Sender<Option<crate::Roster>>,
    clock: Arc<Hand>,
    handouts: Arc<crate::Handouts>,
    missed: usize,
}

impl Recorder {
    /// What was handed out since the last look, already sent when the
    /// change that made it returned.
    fn take(&mut self) -> Vec<(AgentName, Vec<TaskId>)> {
        let mut handed = Vec::new();
        for h in self.handouts.take() {
            match h {
                crate::Handout::Claimed(claims) => {
                    for (agent, tasks) in claims {
                        for task in &tasks {
                            assert_eq!(task.state, TaskState::Assigned, "{} was handed out unassigned", task.id);
                        }
                        handed.push((agent, tasks.into_iter().map(|t| t.id).collect()));
                    }
                }
                crate::Handout::Missed => self.missed += 1,
            }
        }
        handed
    }

    fn set_now(&self, now: Millis) {
        self.clock.0.store(now.0, std::sync::atomic::Ordering::SeqCst);
    }
}

pub async fn a_dispatcher_claims_in_the_batch_that_made_the_work_claimable(s: Arc<dyn Store>) {
    let a = online(&*s, "agent-a", 2, T0).await;
    let roster = crate::Roster { agents: vec![name("agent-ghost"), a.clone()], accept_within: ACCEPT };
    let (roster_tx, roster_rx) = tokio::sync::watch::channel(Some(roster.clone()));
    let handouts = Arc::new(crate::Handouts::default());
    let clock = Arc::new(Hand(std::sync::atomic::AtomicI64::new(T0.0)));
    s.claim_in_batches(crate::BatchClaims { roster: roster_rx, clock: clock.clone(), handouts: handouts.clone() });
    let mut rec = Recorder { roster: roster_tx, clock, handouts, missed: 0 };

    // Handed over before the creation returns: the claim rode in its batch.
    // An agent the store does not know is skipped; the others are served.
    let t1 = submit(&*s, 1, spec("one"), T0).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t1.clone()])], "the creation of {t1} was not claimed with it");
    // The skipped agent's claim failed: the hub hears that it missed.
    assert!(rec.missed > 0, "a failed claim went unreported");
    let held = get(&*s, &t1).await;
    assert_eq!(held.state, TaskState::Assigned, "{t1} after its creation's claim");
    assert_eq!(held.lease.as_ref().map(|l| (&l.agent, l.expires_at)), Some((&a, T0.plus(ACCEPT))), "lease of {t1}");

    // Nothing goes out while the roster is empty (dispatch paused).
    rec.roster.send_replace(None);
    let t2 = submit(&*s, 2, spec("two"), at(1)).await;
    assert!(rec.take().is_empty(), "a paused dispatcher was handed work");
    assert_eq!(get(&*s, &t2).await.state, TaskState::Queued, "{t2} while paused");

    // Any later change claims what waits, oldest first, into free slots only.
    rec.roster.send_replace(Some(roster));
    rec.set_now(at(2));
    let t3 = submit(&*s, 3, spec("three"), at(2)).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t2.clone()])], "one slot was free and {t2} is the oldest");
    assert_eq!(get(&*s, &t3).await.state, TaskState::Queued, "{t3} with every slot taken");

    // A slot freed by a finish is filled in the finish's own batch.
    let epoch = ok("start_task", s.start_task(&a, &t1, held.epoch, at(3), LEASE).await).epoch;
    assert!(rec.take().is_empty(), "a start frees no slot, yet work was handed out");
    rec.set_now(at(4));
    finish(&*s, &a, &t1, epoch, &RunOutcome::Succeeded { exit_code: 0 }, at(4)).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t3.clone()])], "the slot {t1} freed was not filled with {t3}");

    // A retry in backoff waits for its time, by the hub's clock;
    // then any change hands it out.
    let epoch = get(&*s, &t2).await.epoch;
    ok("start_task", s.start_task(&a, &t2, epoch, at(5), LEASE).await);
    rec.set_now(at(6));
    finish(&*s, &a, &t2, epoch, &failed("flaky"), at(6)).await;
    assert!(rec.take().is_empty(), "a task in backoff was handed out at once");
    assert_eq!(get(&*s, &t2).await.state, TaskState::Queued, "{t2} in backoff");
    let ready_at = at(6).plus(BACKOFF);
    rec.set_now(ready_at);
    submit(&*s, 4, spec("four"), ready_at).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t2.clone()])], "{t2} once its backoff ended");
}

const BREAKER: muster_core::breaker::Policy =
    muster_core::breaker::Policy { failures: 2, cooldown: Duration::from_secs(60) };

fn breaker_of(all: &[muster_core::breaker::Breaker], scope: &str, name: &str) -> muster_core::breaker::Breaker {
    all.iter()
        .find(|b| b.scope.as_str() == scope && b.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {scope} breaker {name} in {all:?}"))
}

pub async fn breakers_open_on_failures_let_one_probe_through_after_the_cooldown_and_close_on_its_success(
    store: Arc<dyn Store>,
) {
    use muster_core::breaker::State;
    let s = &*store;
    s.set_breaker_policy(BREAKER);
    let a = online(s, "a", 3, at(0)).await;
    for n in 1..=2 {
        let id = submit(s, n, with_attempts(spec("breaks"), 1), at(0)).await;
        let e = start(s, &a, &id, at(1)).await;
        let mark = last_seq(s).await;
        finish(s, &a, &id, e, &failed("boom"), at(2)).await;
        if n == 2 {
            let events = events_after(s, mark).await;
            let opened: Vec<&Event> = events.iter().filter(|e| e.kind == "breaker.opened").collect();
            assert_eq!(opened.len(), 2, "the agent's and the runner's breakers open: {events:?}");
            assert!(
                opened.iter().any(|e| e.detail.as_deref().is_some_and(|d| d.starts_with("runner shell: 2 failed")))
            );
        }
    }
    let all = ok("breakers", s.breakers().await);
    assert_eq!(
        (breaker_of(&all, "agent", "a").state, breaker_of(&all, "runner", "shell").state),
        (State::Open, State::Open)
    );

    for n in 3..=5 {
        submit(s, n, spec("waits"), at(3)).await;
    }
    let b = online(s, "b", 3, at(3)).await;
    assert!(claim(s, &a, at(10)).await.is_empty(), "an open agent gets nothing");
    assert!(claim(s, &b, at(10)).await.is_empty(), "an open runner is handed to no one");

    // Cooled down: one task goes through as the probe, however many slots are free.
    let mark = last_seq(s).await;
    let probe = claim(s, &b, at(62)).await;
    assert_eq!(probe.len(), 1, "one probe");
    let events = events_after(s, mark).await;
    assert!(events.iter().any(|e| e.kind == "breaker.half_open" && e.task.as_ref() == Some(&probe[0])), "{events:?}");
    assert!(claim(s, &b, at(63)).await.is_empty(), "nothing more while the probe runs");
    let e = ok("task", s.task(&probe[0]).await).expect("the probe").epoch;
    ok("start_task", s.start_task(&b, &probe[0], e, at(63), LEASE).await);
    let mark = last_seq(s).await;
    finish(s, &b, &probe[0], e, &SUCCEEDED, at(64)).await;
    assert!(events_after(s, mark).await.iter().any(|e| e.kind == "breaker.closed"));
    assert_eq!(breaker_of(&ok("breakers", s.breakers().await), "runner", "shell").state, State::Closed);
    assert_eq!(claim(s, &b, at(65)).await.len(), 2, "closed again: the rest go out");
    assert_eq!(breaker_of(&ok("breakers", s.breakers().await), "agent", "a").state, State::Open, "a is still open");
}

pub async fn a_lost_probe_is_replaced_and_an_operator_can_reset_a_breaker(store: Arc<dyn Store>) {
    use muster_core::breaker::{Scope as BreakerScope, State};
    let s = &*store;
    s.set_breaker_policy(BREAKER);
    let a = online(s, "a", 1, at(0)).await;
    for n in 1..=2 {
        let id = submit(s, n, with_attempts(spec("breaks"), 1), at(0)).await;
        let e = start(s, &a, &id, at(1)).await;
        finish(s, &a, &id, e, &failed("boom"), at(2)).await;
    }
    let waiting = submit(s, 3, spec("probe"), at(3)).await;
    submit(s, 4, spec("next"), at(3)).await;
    let probe = claim(s, &a, at(70)).await;
    assert_eq!(probe, std::slice::from_ref(&waiting));
    // The agent turns the probe down: it goes back to the queue, and the next claim sends a probe again.
    let e = ok("task", s.task(&waiting).await).expect("the probe").epoch;
    ok("release_task", s.release_task(&a, &waiting, e, "no slot", at(71), RELEASE).await);
    let all = ok("breakers", s.breakers().await);
    assert_eq!(breaker_of(&all, "agent", "a").state, State::HalfOpen);
    let again = claim(s, &a, at(72)).await;
    assert_eq!(again, std::slice::from_ref(&waiting), "a released probe is replaced (here by the same task)");
    // Cancelled: ended without a verdict, so the next task goes as the probe.
    ok("cancel_task", s.cancel_task(&waiting, at(73)).await);
    let next = claim(s, &a, at(74)).await;
    assert_eq!(next, [task_id(4)], "a probe whose task ended without a verdict is replaced");

    let r = s.reset_breaker(BreakerScope::Runner, "nope", "ops", at(72)).await;
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
    let mark = last_seq(s).await;
    let reset = ok("reset_breaker", s.reset_breaker(BreakerScope::Agent, "a", "ops", at(72)).await);
    assert_eq!((reset.state, reset.failures), (State::Closed, 0));
    let events = assert_events(s, mark, &["breaker.closed"], "reset_breaker").await;
    assert_eq!(events[0].detail.as_deref(), Some("agent a: reset by ops (it was half_open)"));
    assert_eq!(events[0].agent.as_ref(), Some(&a));
}

pub async fn a_disabled_runner_gets_no_work_and_tasks_with_fallbacks_use_them(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &[], at(0)).await;
    connect(s, &a, &["claude", "codex"], &[], 4, at(0)).await;
    let claude = runners(&["claude"]).remove(0);
    let codex = runners(&["codex"]).remove(0);
    let with_fallback =
        submit(s, 1, TaskSpec { runner: claude.clone(), fallback: vec![codex.clone()], ..spec("either") }, at(0)).await;
    let only_claude = submit(s, 2, TaskSpec { runner: claude.clone(), ..spec("claude only") }, at(0)).await;

    let r = s.disable_runner(&claude, "  ", "ops", at(1)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "reason"), "{r:?}");
    let mark = last_seq(s).await;
    ok("disable_runner", s.disable_runner(&claude, "quota exhausted until 18:00", "ops", at(1)).await);
    let events = assert_events(s, mark, &["runner.disabled"], "disable_runner").await;
    assert_eq!(events[0].detail.as_deref(), Some("claude: quota exhausted until 18:00 (by ops)"));
    let off = ok("disabled_runners", s.disabled_runners().await);
    assert_eq!((off.len(), off[0].reason.as_str(), off[0].by.as_str()), (1, "quota exhausted until 18:00", "ops"));

    let mark = last_seq(s).await;
    assert_eq!(
        claim(s, &a, at(2)).await,
        std::slice::from_ref(&with_fallback),
        "only the task with a fallback goes out"
    );
    let events = assert_events(s, mark, &["task.assigned", "task.fallback"], "a claim on a fallback").await;
    assert_eq!(events[1].detail.as_deref(), Some("claude is disabled: quota exhausted until 18:00; runs on codex"));
    let task = get(s, &with_fallback).await;
    assert_eq!(task.lease.as_ref().and_then(|l| l.runner.clone()), Some(codex.clone()), "the lease says which runner");
    let e = task.epoch;
    ok("start_task", s.start_task(&a, &with_fallback, e, at(3), LEASE).await);
    assert_eq!(attempts(s, &with_fallback).await[0].runner.as_deref(), Some("codex"), "the attempt records it too");
    assert_eq!(get(s, &only_claude).await.state, TaskState::Queued);

    let mark = last_seq(s).await;
    ok("enable_runner", s.enable_runner(&claude, "ops", at(4)).await);
    assert_events(s, mark, &["runner.enabled"], "enable_runner").await;
    assert_eq!(claim(s, &a, at(5)).await, std::slice::from_ref(&only_claude), "back in service");
    assert!(matches!(s.enable_runner(&claude, "ops", at(6)).await, Err(StoreError::NotFound { .. })));
    assert!(ok("disabled_runners", s.disabled_runners().await).is_empty());

    let bad = TaskSpec { runner: claude.clone(), fallback: vec![claude.clone()], ..spec("self") };
    assert_eq!(bad.validate().map_err(|e| e.field), Err("fallback"), "a task cannot fall back on its own runner");
}

pub async fn a_provider_limit_requeues_without_an_attempt_and_pauses_the_runner_until_the_reset(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &[], at(0)).await;
    connect(s, &a, &["claude", "codex"], &[], 4, at(0)).await;
    let claude = runners(&["claude"]).remove(0);
    let limited = submit(s, 1, with_attempts(TaskSpec { runner: claude.clone(), ..spec("limited") }, 1), at(0)).await;
    let e = assign(s, &a, &limited, at(1)).await;
    ok("start_task", s.start_task(&a, &limited, e, at(1), LEASE).await);
    let other = submit(s, 2, TaskSpec { runner: claude.clone(), ..spec("waits for the reset") }, at(1)).await;

    let mark = last_seq(s).await;
    let (task, result) = ok(
        "limit_task",
        s.limit_task(&a, &limited, e, "usage limit reached", at(600), RunDetails::default(), at(2)).await,
    );
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at: at(600) }));
    assert_eq!((task.state, task.attempts, task.ready_at), (TaskState::Queued, 0, at(600)), "no attempt spent");
    let events = assert_events(s, mark, &["task.limited", "runner.limited"], "limit_task").await;
    assert_eq!(
        events[0].detail.as_deref(),
        Some("usage limit reached; back in the queue at 2023-11-14T22:23:20.000Z, no attempt spent"),
        "the time is one people read"
    );
    assert!(events[1].detail.as_deref().is_some_and(|d| d.starts_with("claude until 2023-11-14T22:23:20.000Z")));
    assert_eq!(attempts(s, &limited).await[0].outcome.map(Outcome::as_str), Some("limited"));
    let (_, again) = ok(
        "limit_task",
        s.limit_task(&a, &limited, e, "usage limit reached", at(600), RunDetails::default(), at(3)).await,
    );
    assert_eq!(again, FinishResult::Duplicate, "a resend is answered, not applied twice");

    assert!(claim(s, &a, at(10)).await.is_empty(), "the runner rests until the reset");
    assert_eq!(claim(s, &a, at(601)).await.len(), 2, "dispatch resumes by itself after the reset: {other}");
    let off = ok("disabled_runners", s.disabled_runners().await);
    assert!(off.iter().all(|d| !d.in_force(at(601))), "{off:?}");

    // An operator's disable replaces an expired limit and holds until someone enables the runner.
    ok("disable_runner", s.disable_runner(&claude, "maintenance", "ops", at(602)).await);
    let off = ok("disabled_runners", s.disabled_runners().await);
    assert_eq!(off[0].until, None);
}

pub async fn tasks_fall_back_while_their_runner_waits_for_a_probe_and_a_lost_agent_does_not_open_its_runner(
    store: Arc<dyn Store>,
) {
    use muster_core::breaker::State;
    let s = &*store;
    s.set_breaker_policy(muster_core::breaker::Policy { failures: 1, cooldown: Duration::from_secs(60) });
    let claude = runners(&["claude"]).remove(0);
    let codex = runners(&["codex"]).remove(0);
    let a = register(s, "a", &[], at(0)).await;
    connect(s, &a, &["claude"], &[], 2, at(0)).await;
    let b = register(s, "b", &[], at(0)).await;
    connect(s, &b, &["codex"], &[], 2, at(0)).await;

    // An agent that goes silent costs its lease, and opens its own breaker only.
    let lost = submit(s, 1, TaskSpec { runner: claude.clone(), ..spec("lost") }, at(0)).await;
    let e = assign(s, &a, &lost, at(0)).await;
    ok("start_task", s.start_task(&a, &lost, e, at(0), LEASE).await);
    ok("reclaim_expired", s.reclaim_expired(at(31), 10).await);
    let all = ok("breakers", s.breakers().await);
    assert_eq!(breaker_of(&all, "agent", "a").state, State::Open);
    assert!(all.iter().all(|b| b.scope.as_str() != "runner" || b.state == State::Closed), "{all:?}");

    // A failed run opens the runner's breaker; after the cooldown, while it
    // waits for a probe, a task with a fallback still goes to it.
    let c = register(s, "c", &[], at(31)).await;
    connect(s, &c, &["claude"], &[], 2, at(31)).await;
    ok("cancel_task", s.cancel_task(&lost, at(31)).await);
    let broken = submit(s, 2, with_attempts(TaskSpec { runner: claude.clone(), ..spec("broken") }, 1), at(31)).await;
    let e = assign(s, &c, &broken, at(31)).await;
    ok("start_task", s.start_task(&c, &broken, e, at(31), LEASE).await);
    finish(s, &c, &broken, e, &failed("boom"), at(32)).await;
    let either =
        submit(s, 3, TaskSpec { runner: claude.clone(), fallback: vec![codex.clone()], ..spec("either") }, at(33))
            .await;
    assert_eq!(claim(s, &b, at(40)).await, std::slice::from_ref(&either), "open: it falls back");
    let second =
        submit(s, 4, TaskSpec { runner: claude.clone(), fallback: vec![codex.clone()], ..spec("second") }, at(41))
            .await;
    assert_eq!(
        claim(s, &b, at(100)).await,
        std::slice::from_ref(&second),
        "cooled, waiting for a probe: it still falls back"
    );
}

/// A dispatch pass claims for each agent in turn, first served first, in
/// one change; an agent whose claim fails fails alone, and the answers come
/// in the order the agents were given.
pub async fn claim_for_agents_serves_each_agent_in_turn_and_one_failure_fails_alone(store: Arc<dyn Store>) {
    let s = &*store;
    let low = submit(s, 1, with_priority(spec("low"), Priority::Low), at(0)).await;
    let normal = submit(s, 2, spec("normal"), at(1)).await;
    let high = submit(s, 3, with_priority(spec("high"), Priority::High), at(2)).await;
    let urgent = submit(s, 4, with_priority(spec("urgent"), Priority::Urgent), at(3)).await;
    let a = online(s, "a", 1, at(4)).await;
    let b = online(s, "b", 2, at(4)).await;
    let c = online(s, "c", 2, at(4)).await;
    let ids = |r: &Result<Vec<Task>>| -> Vec<TaskId> {
        match r {
            Ok(tasks) => tasks.iter().map(|t| t.id.clone()).collect(),
            Err(e) => panic!("claim_for_agents: a known agent's claim failed: {e:?}"),
        }
    };

    let mark = last_seq(s).await;
    let agents = [a.clone(), name("ghost"), b.clone(), c.clone()];
    let answers = ok("claim_for_agents", s.claim_for_agents(&agents, at(10), ACCEPT).await);
    assert_eq!(answers.len(), 4, "one answer per agent: {answers:?}");
    assert_eq!(ids(&answers[0]), std::slice::from_ref(&urgent), "the first agent is served first");
    match &answers[1] {
        Err(StoreError::NotFound { what: "agent", .. }) => {}
        other => panic!("claim_for_agents for an unknown agent: expected NotFound agent, got {other:?}"),
    }
    assert_eq!(ids(&answers[2]), [high.clone(), normal.clone()], "a failed claim undoes and stops nothing");
    assert_eq!(ids(&answers[3]), std::slice::from_ref(&low));
    for (agent, answer) in [(&a, &answers[0]), (&b, &answers[2]), (&c, &answers[3])] {
        for task in answer.as_ref().expect("checked above") {
            let lease = task.lease.as_ref().expect("a claimed task holds a lease");
            assert_eq!((task.state, &lease.agent, lease.expires_at), (TaskState::Assigned, agent, at(10).plus(ACCEPT)));
            assert_eq!(get(s, &task.id).await, *task, "the answer is the stored task");
        }
    }
    let events = assert_events(s, mark, &["task.assigned"; 4], "a dispatch pass").await;
    let who: Vec<(Option<&TaskId>, Option<&AgentName>)> =
        events.iter().map(|e| (e.task.as_ref(), e.agent.as_ref())).collect();
    assert_eq!(
        who,
        [(Some(&urgent), Some(&a)), (Some(&high), Some(&b)), (Some(&normal), Some(&b)), (Some(&low), Some(&c))]
    );

    // Nothing queued, or nothing due yet: every answer is empty and nothing is written.
    let before = snapshot(s).await;
    let answers = ok("claim_for_agents", s.claim_for_agents(&[c.clone(), b.clone()], at(11), ACCEPT).await);
    assert!(answers.iter().all(|r| matches!(r, Ok(t) if t.is_empty())), "nothing is queued: {answers:?}");
    assert_unchanged(s, &before, "a dispatch pass with nothing queued").await;
    let e = get(s, &normal).await.epoch;
    ok("release_task", s.release_task(&b, &normal, e, "not now", at(12), Duration::from_secs(60)).await);
    let before = snapshot(s).await;
    let answers = ok("claim_for_agents", s.claim_for_agents(&[c.clone(), b.clone()], at(13), ACCEPT).await);
    assert!(answers.iter().all(|r| matches!(r, Ok(t) if t.is_empty())), "nothing is due: {answers:?}");
    assert_unchanged(s, &before, "a dispatch pass with nothing due").await;
    // Once the pause ends, the task goes to whichever free agent is asked first.
    let answers = ok("claim_for_agents", s.claim_for_agents(&[c.clone(), b.clone()], at(72), ACCEPT).await);
    assert_eq!((ids(&answers[0]), ids(&answers[1])), (vec![normal], vec![]));
}

/// A limit (a daily budget, a provider's reset) rests a runner until a time
/// and then lifts by itself; a longer limit takes over, naming who set it;
/// an operator's disable is left for the operator to lift.
pub async fn limit_runner_rests_a_runner_until_its_time_and_leaves_an_operators_disable_alone(store: Arc<dyn Store>) {
    use crate::DisabledRunner;
    let s = &*store;
    let claude = runners(&["claude"]).remove(0);
    let codex = runners(&["codex"]).remove(0);
    let a = register(s, "a", &[], at(0)).await;
    connect(s, &a, &["claude", "codex"], &[], 4, at(0)).await;
    let task = submit(s, 1, TaskSpec { runner: claude.clone(), ..spec("for claude") }, at(0)).await;

    let mark = last_seq(s).await;
    ok("limit_runner", s.limit_runner(&claude, "daily budget reached", "budget", at(100), at(1)).await);
    let events = assert_events(s, mark, &["runner.limited"], "limit_runner").await;
    assert_eq!(
        events[0].detail.as_deref(),
        Some("claude until 2023-11-14T22:15:00.000Z: daily budget reached (budget)"),
        "{events:?}"
    );
    let limited = DisabledRunner {
        name: claude.clone(),
        reason: "daily budget reached".into(),
        by: "budget".into(),
        at: at(1),
        until: Some(at(100)),
    };
    assert_eq!(
        ok("disabled_runners", s.disabled_runners().await),
        std::slice::from_ref(&limited),
        "who limited it is kept"
    );
    assert!(claim(s, &a, at(2)).await.is_empty(), "a limited runner gets no work");

    // A longer limit takes over, with who set it.
    let mark = last_seq(s).await;
    ok("limit_runner", s.limit_runner(&claude, "usage limit", "agent a", at(200), at(4)).await);
    assert_events(s, mark, &["runner.limited"], "a longer limit").await;
    let longer = DisabledRunner {
        reason: "usage limit".into(),
        by: "agent a".into(),
        at: at(4),
        until: Some(at(200)),
        ..limited
    };
    assert_eq!(ok("disabled_runners", s.disabled_runners().await), [longer], "a longer limit extends it");
    assert!(claim(s, &a, just_before(at(200))).await.is_empty(), "the runner rests until the limit's end");
    assert_eq!(claim(s, &a, at(200)).await, [task], "the limit lifts by itself");

    // An operator's disable holds: a limit neither shortens nor records it.
    ok("disable_runner", s.disable_runner(&codex, "maintenance", "ops", at(201)).await);
    let mark = last_seq(s).await;
    ok("limit_runner", s.limit_runner(&codex, "daily budget reached", "budget", at(300), at(202)).await);
    assert_events(s, mark, &[], "a limit on a disabled runner").await;
    let off = ok("disabled_runners", s.disabled_runners().await);
    let disabled = off.iter().find(|d| d.name == codex).expect("codex is still disabled");
    assert_eq!(
        (disabled.reason.as_str(), disabled.by.as_str(), disabled.until),
        ("maintenance", "ops", None),
        "a limit must leave an operator's disable as it is"
    );
}

/// A short provider limit during a budget's rest once replaced who had
/// limited the runner while keeping the budget's end: the budget no longer
/// saw its own rest, so raising the budget left the runner resting.
pub async fn a_shorter_limit_leaves_the_longer_limit_and_who_set_it(store: Arc<dyn Store>) {
    let s = &*store;
    let claude = runners(&["claude"]).remove(0);
    ok("limit_runner", s.limit_runner(&claude, "daily budget reached", "budget", at(100), at(1)).await);
    let before = ok("disabled_runners", s.disabled_runners().await);
    let mark = last_seq(s).await;
    ok("limit_runner", s.limit_runner(&claude, "usage limit", "agent a", at(50), at(2)).await);
    assert_eq!(
        ok("disabled_runners", s.disabled_runners().await),
        before,
        "a shorter limit must change nothing: the longer one is in force"
    );
    assert_events(s, mark, &[], "a limit shorter than the one in force").await;
}
