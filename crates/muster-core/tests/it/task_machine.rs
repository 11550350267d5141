//! The task state machine under random event sequences.
//!
//! One task and three agents. Each agent remembers the epoch of the last
//! assignment it was given and keeps reporting under it even after it has
//! been superseded, the way a partitioned or slow agent would. Events are
//! hub decisions (assign, reclaim, cancel, retry), agent reports (start,
//! renew, release, finish) under the believed, the current or a wrong
//! epoch, and the clock moving forward. After every step the task's
//! invariants are checked, the result is compared with a small reference
//! model of the rules, and every report that does not come from the lease
//! holder is probed to be refused as stale.

use muster_core::task::{Cancel, Disowned, Finished, Reclaimed};
use muster_core::{
    AgentName, Epoch, Lease, Millis, Priority, Refused, RunOutcome, RunnerName, Task, TaskId, TaskSpec, TaskState,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::collections::HashSet;
use std::time::Duration;

/// How long a released task waits before it can be handed out again.
const RELEASE_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

const AGENTS: usize = 3;
const START: Millis = Millis(1_700_000_000_000);

/// Which epoch an agent's report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochPick {
    /// The epoch of the agent's own latest assignment: right for the holder,
    /// stale for everyone else.
    Believed,
    /// The task's current epoch, whoever sends it.
    Current,
    /// An older epoch than the current one.
    Behind(u64),
    /// An epoch the hub has not handed out yet.
    Ahead(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Advance { ms: u64 },
    Assign { agent: usize, accept_within_ms: u64 },
    Start { agent: usize, epoch: EpochPick, ttl_ms: u64 },
    Renew { agent: usize, epoch: EpochPick, ttl_ms: u64 },
    Release { agent: usize, epoch: EpochPick },
    Finish { agent: usize, epoch: EpochPick, outcome: RunOutcome, backoff_ms: u64 },
    Reclaim,
    Disown { agent: usize, epoch: EpochPick },
    Cancel,
    Retry,
    Skip,
    Reset,
    Approve,
    Reject,
    Unblock,
    DependencyFailed,
    AwaitDecision,
    Park { agent: usize, epoch: EpochPick },
    Resume,
    DecisionTimedOut,
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::Advance { .. } => "advance",
            Event::Assign { .. } => "assign",
            Event::Start { .. } => "start",
            Event::Renew { .. } => "renew",
            Event::Release { .. } => "release",
            Event::Finish { .. } => "finish",
            Event::Reclaim => "reclaim",
            Event::Disown { .. } => "disown",
            Event::Cancel => "cancel",
            Event::Retry => "retry",
            Event::Skip => "skip",
            Event::Reset => "reset",
            Event::Approve => "approve",
            Event::Reject => "reject",
            Event::Unblock => "unblock",
            Event::DependencyFailed => "dependency failed",
            Event::AwaitDecision => "await decision",
            Event::Park { .. } => "park",
            Event::Resume => "resume",
            Event::DecisionTimedOut => "decision timed out",
        }
    }

    /// The sender and epoch of an agent's report; `None` for hub decisions.
    fn report(&self) -> Option<(usize, EpochPick)> {
        match *self {
            Event::Start { agent, epoch, .. }
            | Event::Renew { agent, epoch, .. }
            | Event::Release { agent, epoch }
            | Event::Park { agent, epoch }
            | Event::Disown { agent, epoch }
            | Event::Finish { agent, epoch, .. } => Some((agent, epoch)),
            _ => None,
        }
    }
}

fn epoch_pick() -> impl Strategy<Value = EpochPick> {
    prop_oneof![
        6 => Just(EpochPick::Believed),
        2 => Just(EpochPick::Current),
        1 => (1u64..=3).prop_map(EpochPick::Behind),
        1 => (1u64..=2).prop_map(EpochPick::Ahead),
    ]
}

fn run_outcome() -> impl Strategy<Value = RunOutcome> {
    prop_oneof![
        1 => (0i32..=1).prop_map(|exit_code| RunOutcome::Succeeded { exit_code }),
        3 => (proptest::option::of(1i32..=255), "[a-z ]{0,12}")
            .prop_map(|(exit_code, reason)| RunOutcome::Failed { exit_code, reason }),
        1 => Just(RunOutcome::TimedOut),
        1 => Just(RunOutcome::Cancelled),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let agent = 0..AGENTS;
    prop_oneof![
        6 => (0u64..=4_000).prop_map(|ms| Event::Advance { ms }),
        6 => (agent.clone(), 1u64..=3_000)
            .prop_map(|(agent, accept_within_ms)| Event::Assign { agent, accept_within_ms }),
        6 => (agent.clone(), epoch_pick(), 1u64..=5_000)
            .prop_map(|(agent, epoch, ttl_ms)| Event::Start { agent, epoch, ttl_ms }),
        4 => (agent.clone(), epoch_pick(), 1u64..=5_000)
            .prop_map(|(agent, epoch, ttl_ms)| Event::Renew { agent, epoch, ttl_ms }),
        2 => (agent.clone(), epoch_pick()).prop_map(|(agent, epoch)| Event::Release { agent, epoch }),
        6 => (agent, epoch_pick(), run_outcome(), 0u64..=5_000).prop_map(|(agent, epoch, outcome, backoff_ms)| {
            Event::Finish { agent, epoch, outcome, backoff_ms }
        }),
        3 => Just(Event::Reclaim),
        1 => (0..AGENTS, epoch_pick()).prop_map(|(agent, epoch)| Event::Disown { agent, epoch }),
        1 => Just(Event::Cancel),
        2 => Just(Event::Retry),
        1 => Just(Event::Skip),
        1 => Just(Event::Reset),
        3 => Just(Event::Approve),
        1 => Just(Event::Reject),
        3 => Just(Event::Unblock),
        1 => Just(Event::DependencyFailed),
        2 => Just(Event::AwaitDecision),
        2 => (0..AGENTS, epoch_pick()).prop_map(|(agent, epoch)| Event::Park { agent, epoch }),
        3 => Just(Event::Resume),
        1 => Just(Event::DecisionTimedOut),
    ]
}

/// A task's life: how many attempts it may use and what happens to it.
/// How many attempts, whether it needs approval first or waits on another
/// task (or both), and what happens.
fn scenario() -> impl Strategy<Value = (u32, (bool, bool), Vec<Event>)> {
    (1u32..=4, (proptest::bool::weighted(0.25), proptest::bool::weighted(0.2)), vec(event(), 1..80))
}

fn spec(max_attempts: u32) -> TaskSpec {
    TaskSpec {
        prompt: "make the flaky test deterministic".to_owned(),
        runner: RunnerName::parse("shell").expect("valid runner name"),
        capabilities: Vec::new(),
        priority: Priority::Normal,
        timeout: Duration::from_secs(600),
        max_attempts,
        idempotency_key: None,
        metadata: None,
        workspace: None,
        fallback: Vec::new(),
        budget: muster_core::task::Budget::default(),
        shadow_of: None,
        requires_approval: false,
        depends_on: Vec::new(),
        on_dependency_failure: muster_core::task::DependencyPolicy::Fail,
        checks: Vec::new(),
    }
    .validate()
    .expect("valid task spec")
}

/// What a step did, as returned by the transition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Advanced,
    Assigned(Epoch),
    Started,
    Renewed,
    Released,
    Finished(Finished),
    Reclaimed(Reclaimed),
    Cancel(Cancel),
    Retried,
    Skipped,
    Reset,
    Approved,
    Rejected,
    Unblocked,
    Ended(TaskState),
    Parked(TaskState),
    Awaiting,
    Resumed,
}

/// One task, the clock, and what each agent believes it holds.
#[derive(Debug, Clone)]
struct World {
    task: Task,
    now: Millis,
    agents: Vec<AgentName>,
    believed: Vec<Option<Epoch>>,
}

impl World {
    fn new(max_attempts: u32, (approval, blocked): (bool, bool)) -> World {
        let agents = (0..AGENTS).map(|i| AgentName::parse(&format!("agent-{i}")).expect("valid agent name")).collect();
        World {
            task: Task::new(
                TaskId::from_parts(START.0, 42),
                TaskSpec {
                    requires_approval: approval,
                    depends_on: if blocked { vec![TaskId::from_parts(START.0, 7)] } else { Vec::new() },
                    ..spec(max_attempts)
                },
                START,
            ),
            now: START,
            agents,
            believed: vec![None; AGENTS],
        }
    }

    fn epoch_of(&self, agent: usize, pick: EpochPick) -> Epoch {
        let current = self.task.epoch;
        match pick {
            EpochPick::Believed => self.believed[agent].unwrap_or_default(),
            EpochPick::Current => current,
            EpochPick::Behind(n) => Epoch(current.0.saturating_sub(n)),
            EpochPick::Ahead(n) => Epoch(current.0 + n),
        }
    }

    /// Whether a report from `agent` under `epoch` speaks for the current lease.
    fn holds(&self, agent: usize, epoch: Epoch) -> bool {
        self.task.lease.as_ref().is_some_and(|l| l.agent == self.agents[agent] && l.epoch == epoch)
    }

    fn apply(&mut self, event: &Event) -> Result<Effect, Refused> {
        let now = self.now;
        let ms = Duration::from_millis;
        match event {
            Event::Advance { ms } => {
                self.now = Millis(self.now.0 + i64::try_from(*ms).expect("small step"));
                Ok(Effect::Advanced)
            }
            Event::Assign { agent, accept_within_ms } => {
                let epoch = self.task.assign(&self.agents[*agent], now, ms(*accept_within_ms))?;
                self.believed[*agent] = Some(epoch);
                Ok(Effect::Assigned(epoch))
            }
            Event::Start { agent, epoch, ttl_ms } => {
                let epoch = self.epoch_of(*agent, *epoch);
                self.task.start(&self.agents[*agent], epoch, now, ms(*ttl_ms)).map(|()| Effect::Started)
            }
            Event::Renew { agent, epoch, ttl_ms } => {
                let epoch = self.epoch_of(*agent, *epoch);
                self.task.renew(&self.agents[*agent], epoch, now, ms(*ttl_ms)).map(|()| Effect::Renewed)
            }
            Event::Release { agent, epoch } => {
                let epoch = self.epoch_of(*agent, *epoch);
                self.task.release(&self.agents[*agent], epoch, "busy", now, RELEASE_DELAY).map(|()| Effect::Released)
            }
            Event::Finish { agent, epoch, outcome, backoff_ms } => {
                let epoch = self.epoch_of(*agent, *epoch);
                self.task.finish(&self.agents[*agent], epoch, outcome, now, ms(*backoff_ms)).map(Effect::Finished)
            }
            Event::Reclaim => self.task.reclaim(now).map(Effect::Reclaimed),
            Event::Disown { agent, epoch } => {
                let epoch = self.epoch_of(*agent, *epoch);
                self.task.disown(&self.agents[*agent], epoch, Disowned::Reconnected, now).map(Effect::Reclaimed)
            }
            Event::Cancel => self.task.cancel(now).map(Effect::Cancel),
            Event::Retry => self.task.retry(now).map(|()| Effect::Retried),
            Event::Skip => self.task.skip("by an operator", now).map(|()| Effect::Skipped),
            Event::Reset => self.task.reset(now).map(|()| Effect::Reset),
            Event::Approve => self.task.approve(now).map(|()| Effect::Approved),
            Event::Reject => self.task.reject("not now", now).map(|()| Effect::Rejected),
            Event::Unblock => self.task.unblock(now).map(|()| Effect::Unblocked),
            Event::DependencyFailed => {
                self.task.dependency_failed(&TaskId::from_parts(START.0, 7), now).map(Effect::Ended)
            }
            Event::AwaitDecision => self.task.await_decision(now).map(|()| Effect::Awaiting),
            Event::Park { agent, epoch } => {
                let epoch = self.epoch_of(*agent, *epoch);
                self.task.park(&self.agents[*agent], epoch, now).map(Effect::Parked)
            }
            Event::Resume => self.task.resume(now).map(|()| Effect::Resumed),
            Event::DecisionTimedOut => self.task.decision_timed_out(now).map(Effect::Ended),
        }
    }
}

/// A result reduced to what the rules decide: the state reached, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Reached(TaskState),
    Stale { current: Epoch, got: Epoch },
    WrongState(TaskState),
    NoAttemptsLeft,
    NotReady(Millis),
}

impl Verdict {
    fn of(result: &Result<Effect, Refused>, after: &Task) -> Verdict {
        match result {
            Ok(_) => Verdict::Reached(after.state),
            Err(Refused::StaleEpoch { current, got }) => Verdict::Stale { current: *current, got: *got },
            Err(Refused::WrongState { state, .. }) => Verdict::WrongState(*state),
            Err(Refused::NoAttemptsLeft) => Verdict::NoAttemptsLeft,
            Err(Refused::NotReady { ready_at }) => Verdict::NotReady(*ready_at),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Verdict::Reached(_) => "ok",
            Verdict::Stale { .. } => "Stale",
            Verdict::WrongState(_) => "WrongState",
            Verdict::NoAttemptsLeft => "NoAttemptsLeft",
            Verdict::NotReady(_) => "NotReady",
        }
    }
}

/// The reference model: what the rules say `event` must do to `w`.
fn expected(w: &World, event: &Event) -> Verdict {
    let t = &w.task;
    let state = t.state;
    if let Some((agent, pick)) = event.report() {
        let epoch = w.epoch_of(agent, pick);
        if !w.holds(agent, epoch) {
            return Verdict::Stale { current: t.epoch, got: epoch };
        }
    }
    let after_failure = || {
        if t.cancel_requested {
            TaskState::Cancelled
        } else if t.attempts < t.spec.max_attempts {
            TaskState::Queued
        } else {
            TaskState::Failed
        }
    };
    match event {
        Event::Advance { .. } => Verdict::Reached(state),
        Event::Assign { .. } => match state {
            TaskState::Queued if t.attempts >= t.spec.max_attempts => Verdict::NoAttemptsLeft,
            TaskState::Queued if t.ready_at > w.now => Verdict::NotReady(t.ready_at),
            TaskState::Queued => Verdict::Reached(TaskState::Assigned),
            _ => Verdict::WrongState(state),
        },
        Event::Start { .. } if state == TaskState::Assigned => Verdict::Reached(TaskState::Running),
        Event::Renew { .. } if state == TaskState::Running => Verdict::Reached(TaskState::Running),
        Event::Release { .. } if state == TaskState::Assigned => Verdict::Reached(TaskState::Queued),
        Event::Finish { outcome, .. } if state == TaskState::Running => Verdict::Reached(match outcome {
            RunOutcome::Succeeded { .. } => TaskState::Succeeded,
            RunOutcome::Cancelled => TaskState::Cancelled,
            RunOutcome::Failed { .. } | RunOutcome::TimedOut => after_failure(),
        }),
        Event::Start { .. } | Event::Renew { .. } | Event::Release { .. } | Event::Finish { .. } => {
            Verdict::WrongState(state)
        }
        // It held the lease (checked above): taken back at once, expired or not.
        Event::Disown { .. } => Verdict::Reached(match state {
            TaskState::Running => after_failure(),
            _ => TaskState::Queued,
        }),
        Event::Reclaim => match &t.lease {
            Some(lease) if lease.expires_at <= w.now => Verdict::Reached(match state {
                TaskState::Running => after_failure(),
                _ => TaskState::Queued,
            }),
            _ => Verdict::WrongState(state),
        },
        Event::Cancel => match state {
            TaskState::Blocked
            | TaskState::PendingApproval
            | TaskState::NeedsDecision
            | TaskState::Queued
            | TaskState::Assigned => Verdict::Reached(TaskState::Cancelled),
            TaskState::Running => Verdict::Reached(TaskState::Running),
            _ => Verdict::WrongState(state),
        },
        Event::Retry if state == TaskState::Failed => Verdict::Reached(TaskState::Queued),
        Event::Retry => Verdict::WrongState(state),
        Event::Skip if state.is_leased() || state == TaskState::Skipped => Verdict::WrongState(state),
        Event::Skip => Verdict::Reached(TaskState::Skipped),
        Event::Reset if state.is_leased() => Verdict::WrongState(state),
        Event::Reset if !t.spec.depends_on.is_empty() => Verdict::Reached(TaskState::Blocked),
        Event::Reset if t.spec.requires_approval => Verdict::Reached(TaskState::PendingApproval),
        Event::Reset => Verdict::Reached(TaskState::Queued),
        Event::Approve if state == TaskState::PendingApproval => Verdict::Reached(TaskState::Queued),
        Event::Reject if state == TaskState::PendingApproval => Verdict::Reached(TaskState::Cancelled),
        Event::Approve | Event::Reject => Verdict::WrongState(state),
        Event::Unblock if state == TaskState::Blocked && t.spec.requires_approval => {
            Verdict::Reached(TaskState::PendingApproval)
        }
        Event::Unblock if state == TaskState::Blocked => Verdict::Reached(TaskState::Queued),
        Event::DependencyFailed if state == TaskState::Blocked => Verdict::Reached(TaskState::Failed),
        Event::Unblock | Event::DependencyFailed => Verdict::WrongState(state),
        Event::AwaitDecision if matches!(state, TaskState::Queued | TaskState::NeedsDecision) => {
            Verdict::Reached(TaskState::NeedsDecision)
        }
        Event::Park { .. } if state == TaskState::Running && t.cancel_requested => {
            Verdict::Reached(TaskState::Cancelled)
        }
        Event::Park { .. } if state == TaskState::Running => Verdict::Reached(TaskState::NeedsDecision),
        Event::Resume if state == TaskState::NeedsDecision => Verdict::Reached(TaskState::Queued),
        Event::DecisionTimedOut if state == TaskState::Running && t.cancel_requested => {
            Verdict::Reached(TaskState::Cancelled)
        }
        Event::DecisionTimedOut
            if matches!(state, TaskState::NeedsDecision | TaskState::Running | TaskState::Assigned) =>
        {
            Verdict::Reached(TaskState::Failed)
        }
        Event::AwaitDecision | Event::Park { .. } | Event::Resume | Event::DecisionTimedOut => {
            Verdict::WrongState(state)
        }
    }
}

/// State changes the diagram in `task.rs` allows, whatever caused them.
fn allowed(from: TaskState, to: TaskState) -> bool {
    use TaskState::*;
    from == to
        || matches!(
            (from, to),
            (Queued, Assigned | Cancelled)
                | (Assigned, Running | Queued | Cancelled)
                | (Running, Succeeded | Failed | Cancelled | Queued)
                | (Failed, Queued)
                | (PendingApproval, Queued | Cancelled | Skipped)
                | (Blocked, PendingApproval | Queued | Cancelled | Skipped | Failed)
                | (Queued | Succeeded | Failed | Cancelled, Skipped)
                | (Succeeded | Cancelled | Skipped, Queued)
                | (Succeeded | Failed | Cancelled | Skipped | Queued, PendingApproval)
                | (Succeeded | Failed | Cancelled | Skipped | Queued | PendingApproval, Blocked)
                | (Queued | Running, NeedsDecision)
                | (NeedsDecision, Queued | Cancelled | Failed | Skipped | Blocked | PendingApproval)
                | (Assigned, Failed)
        )
}

/// What must hold of the world between any two steps.
fn check_invariants(w: &World) -> Result<(), TestCaseError> {
    let t = &w.task;
    prop_assert_eq!(t.lease.is_some(), t.state.is_leased(), "lease present exactly when assigned or running: {:?}", t);
    if let Some(lease) = &t.lease {
        prop_assert_eq!(lease.epoch, t.epoch, "the lease carries the task's epoch");
        prop_assert_eq!(Some(&lease.agent), t.agent.as_ref(), "the lease holder is the task's agent");
    }
    let live: Vec<usize> = (0..AGENTS).filter(|&i| w.believed[i].is_some_and(|e| w.holds(i, e))).collect();
    prop_assert_eq!(live.len(), usize::from(t.lease.is_some()), "agents that hold a live lease: {:?}", live);
    for believed in w.believed.iter().flatten() {
        prop_assert!(*believed <= t.epoch, "an agent believes in epoch {} beyond the task's {}", believed, t.epoch);
    }
    prop_assert!(t.attempts <= t.spec.max_attempts, "attempts {} > max {}", t.attempts, t.spec.max_attempts);
    if t.state == TaskState::Queued {
        prop_assert!(t.attempts_left() > 0, "a queued task with no attempts left can never run: {:?}", t);
    }
    if t.state == TaskState::Running {
        prop_assert!(t.attempts >= 1, "a running task has used an attempt");
    }
    if t.cancel_requested {
        prop_assert!(
            matches!(t.state, TaskState::Running | TaskState::Succeeded | TaskState::Cancelled),
            "a pending cancel outlived its run: {:?}",
            t.state
        );
    }
    prop_assert_eq!(t.finished_at.is_some(), t.state.is_terminal(), "finished_at set exactly when terminal: {:?}", t);
    prop_assert!(t.updated_at <= w.now, "updated_at in the future");
    Ok(())
}

/// What must hold of one step: `before` --`event`--> `after` with `result`.
fn check_step(
    before: &World,
    event: &Event,
    result: &Result<Effect, Refused>,
    after: &World,
) -> Result<(), TestCaseError> {
    let (b, a) = (&before.task, &after.task);

    if result.is_err() {
        prop_assert_eq!(a, b, "a refused {} changed the task", event.kind());
    }

    let assigned = matches!(result, Ok(Effect::Assigned(_)));
    prop_assert!(a.epoch >= b.epoch, "epoch went back from {} to {}", b.epoch, a.epoch);
    let want_epoch = if assigned { b.epoch.next() } else { b.epoch };
    prop_assert_eq!(a.epoch, want_epoch, "the epoch grows by one on assign and only then");

    // Only an operator (skip, reset) moves a finished task, and retry a failed one.
    let operator = matches!(result, Ok(Effect::Skipped | Effect::Reset));
    if b.state.is_terminal() && !operator && !matches!(result, Ok(Effect::Retried)) {
        prop_assert_eq!(a, b, "{} changed a {} task", event.kind(), b.state.as_str());
    }
    if b.state == TaskState::Failed && a.state == TaskState::Queued {
        prop_assert!(
            matches!(result, Ok(Effect::Retried | Effect::Reset)),
            "a failed task left failed through {}",
            event.kind()
        );
        prop_assert_eq!(a.attempts, 0);
    }
    prop_assert!(allowed(b.state, a.state), "{} took the task from {:?} to {:?}", event.kind(), b.state, a.state);

    if a.state == TaskState::Succeeded && b.state != TaskState::Succeeded {
        let Event::Finish { agent, epoch, outcome: RunOutcome::Succeeded { .. }, .. } = event else {
            return Err(TestCaseError::fail(format!("succeeded through {event:?}")));
        };
        let epoch = before.epoch_of(*agent, *epoch);
        prop_assert!(before.holds(*agent, epoch), "succeeded on a report from a non-holder");
    }

    if let Some((agent, pick)) = event.report() {
        let epoch = before.epoch_of(agent, pick);
        if !before.holds(agent, epoch) {
            prop_assert_eq!(result, &Err(Refused::StaleEpoch { current: b.epoch, got: epoch }));
            prop_assert_eq!(a, b);
        }
    }

    prop_assert_eq!(Verdict::of(result, a), expected(before, event), "{:?} on {:?}", event, b);
    check_effect(before, event, result, a)
}

/// The fields each successful transition must set, beyond the state.
fn check_effect(
    before: &World,
    event: &Event,
    result: &Result<Effect, Refused>,
    a: &Task,
) -> Result<(), TestCaseError> {
    let (b, now) = (&before.task, before.now);
    let Ok(effect) = result else { return Ok(()) };
    let holder = b.lease.as_ref().map(|l| (l.agent.clone(), l.epoch));
    match (event, effect) {
        (Event::Advance { .. }, Effect::Advanced) => prop_assert_eq!(a, b),
        (Event::Assign { agent, accept_within_ms }, Effect::Assigned(epoch)) => {
            prop_assert_eq!(*epoch, b.epoch.next());
            let lease = Lease {
                agent: before.agents[*agent].clone(),
                epoch: *epoch,
                expires_at: now.plus(Duration::from_millis(*accept_within_ms)),
                runner: None,
            };
            prop_assert_eq!(a.lease.as_ref(), Some(&lease));
            prop_assert_eq!(a.attempts, b.attempts, "assigning uses no attempt");
        }
        (Event::Start { ttl_ms, .. }, Effect::Started) => {
            prop_assert_eq!(a.attempts, b.attempts + 1, "starting uses one attempt");
            prop_assert_eq!(a.started_at, Some(now));
            let lease = a.lease.as_ref().map(|l| (l.agent.clone(), l.epoch, l.expires_at));
            let (agent, epoch) = holder.expect("start needs a holder");
            prop_assert_eq!(lease, Some((agent, epoch, now.plus(Duration::from_millis(*ttl_ms)))));
        }
        (Event::Renew { ttl_ms, .. }, Effect::Renewed) => {
            let old = b.lease.as_ref().expect("renew needs a lease").expires_at;
            let want = old.max(now.plus(Duration::from_millis(*ttl_ms)));
            prop_assert_eq!(a.lease.as_ref().map(|l| l.expires_at), Some(want), "renewing never shortens the lease");
            let mut unchanged = a.clone();
            unchanged.lease.clone_from(&b.lease);
            prop_assert_eq!(&unchanged, b, "renewing changes nothing but the expiry");
        }
        (Event::Release { .. }, Effect::Released) => {
            prop_assert_eq!(a.ready_at, now.plus(RELEASE_DELAY), "a released task waits before it is handed out again");
            prop_assert_eq!(a.attempts, b.attempts, "releasing uses no attempt");
        }
        (Event::Finish { outcome, backoff_ms, .. }, Effect::Finished(finished)) => {
            let want = match a.state {
                TaskState::Succeeded => Finished::Succeeded,
                TaskState::Queued => {
                    Finished::RetryScheduled { ready_at: now.plus(Duration::from_millis(*backoff_ms)) }
                }
                TaskState::Failed => Finished::Failed,
                TaskState::Cancelled => Finished::Cancelled,
                other => {
                    return Err(TestCaseError::fail(format!("finish left the task {other:?}")));
                }
            };
            prop_assert_eq!(*finished, want);
            if let Finished::RetryScheduled { ready_at } = finished {
                prop_assert_eq!(a.ready_at, *ready_at);
            }
            if let RunOutcome::Succeeded { exit_code } = outcome {
                prop_assert_eq!(a.exit_code, Some(*exit_code));
            }
            prop_assert_eq!(a.attempts, b.attempts, "finishing uses no attempt");
        }
        (Event::Reclaim | Event::Disown { .. }, Effect::Reclaimed(reclaimed)) => {
            let want = match a.state {
                TaskState::Queued => Reclaimed::Requeued,
                TaskState::Failed => Reclaimed::Failed,
                TaskState::Cancelled => Reclaimed::Cancelled,
                other => {
                    return Err(TestCaseError::fail(format!("reclaim left the task {other:?}")));
                }
            };
            prop_assert_eq!(*reclaimed, want);
            if a.state == TaskState::Queued {
                prop_assert_eq!(a.ready_at, now, "a reclaimed task is ready at once");
            }
        }
        (Event::Cancel, Effect::Cancel(cancel)) => {
            let want = match b.state {
                TaskState::Running => {
                    let (agent, epoch) = holder.expect("a running task has a holder");
                    Cancel::Requested { agent, epoch }
                }
                _ => Cancel::Done { notify: holder },
            };
            prop_assert_eq!(cancel, &want);
            prop_assert!(a.state == TaskState::Cancelled || a.cancel_requested);
        }
        (Event::Retry, Effect::Retried) | (Event::Reset, Effect::Reset) => {
            prop_assert_eq!(a.attempts, 0);
            prop_assert_eq!(a.ready_at, now);
            prop_assert!(!a.cancel_requested);
        }
        (Event::Approve, Effect::Approved) | (Event::Unblock, Effect::Unblocked) => prop_assert_eq!(a.ready_at, now),
        (Event::DependencyFailed, Effect::Ended(state)) => {
            prop_assert_eq!(*state, a.state);
            prop_assert_eq!(a.finished_at, Some(now));
        }
        (Event::Reject, Effect::Rejected) => prop_assert_eq!(a.reason.as_deref(), Some("rejected: not now")),
        (Event::Skip, Effect::Skipped) => {
            prop_assert_eq!(a.finished_at, Some(now));
            prop_assert!(a.lease.is_none());
        }
        (Event::AwaitDecision, Effect::Awaiting) => prop_assert_eq!(a.attempts, b.attempts),
        (Event::Park { .. }, Effect::Parked(state)) => {
            prop_assert_eq!(*state, a.state);
            prop_assert!(a.lease.is_none());
            if a.state == TaskState::NeedsDecision {
                prop_assert_eq!(a.attempts + 1, b.attempts, "asking gives the attempt back");
            }
        }
        (Event::Resume, Effect::Resumed) => prop_assert_eq!(a.ready_at, now),
        (Event::DecisionTimedOut, Effect::Ended(state)) => {
            prop_assert_eq!(*state, a.state);
            let want = if a.state == TaskState::Failed { "decision_timeout" } else { "cancelled" };
            prop_assert_eq!(a.reason.as_deref(), Some(want));
            prop_assert!(!a.cancel_requested);
            prop_assert_eq!(a.finished_at, Some(now));
            prop_assert!(a.lease.is_none());
        }
        (event, effect) => {
            return Err(TestCaseError::fail(format!("{event:?} answered {effect:?}")));
        }
    }
    Ok(())
}

/// Fencing, probed exhaustively: every report from every agent under every
/// nearby epoch is refused as stale, and changes nothing, unless it comes
/// from the lease holder under the lease's epoch.
fn check_fencing(w: &World) -> Result<(), TestCaseError> {
    let t = &w.task;
    let mut epochs: Vec<Epoch> = vec![Epoch(0), Epoch(t.epoch.0.saturating_sub(1)), t.epoch, t.epoch.next()];
    epochs.extend(w.believed.iter().flatten());
    let (now, ttl) = (w.now, Duration::from_secs(1));
    for (i, agent) in w.agents.iter().enumerate() {
        for &epoch in &epochs {
            if w.holds(i, epoch) {
                continue;
            }
            let refusal = Refused::StaleEpoch { current: t.epoch, got: epoch };
            let stale = Err(refusal.clone());
            let mut probe = t.clone();
            prop_assert_eq!(probe.start(agent, epoch, now, ttl), stale.clone(), "start from {} @{}", agent, epoch);
            prop_assert_eq!(probe.renew(agent, epoch, now, ttl), stale.clone(), "renew from {} @{}", agent, epoch);
            prop_assert_eq!(
                probe.release(agent, epoch, "probe", now, RELEASE_DELAY),
                stale.clone(),
                "release from {} @{}",
                agent,
                epoch
            );
            for outcome in [
                RunOutcome::Succeeded { exit_code: 0 },
                RunOutcome::Failed { exit_code: Some(1), reason: "probe".to_owned() },
                RunOutcome::TimedOut,
                RunOutcome::Cancelled,
            ] {
                let finished = probe.finish(agent, epoch, &outcome, now, ttl);
                prop_assert_eq!(finished, Err(refusal.clone()), "finish {:?} from {} @{}", outcome, agent, epoch);
            }
            prop_assert_eq!(&probe, t, "a stale report changed the task");
        }
    }
    Ok(())
}

/// What a set of runs exercised, so the properties cannot pass vacuously.
#[derive(Debug, Default)]
struct Coverage {
    states: HashSet<TaskState>,
    verdicts: HashSet<(&'static str, &'static str)>,
}

fn run(
    max_attempts: u32,
    approval: (bool, bool),
    events: &[Event],
    coverage: &mut Coverage,
) -> Result<(), TestCaseError> {
    let mut world = World::new(max_attempts, approval);
    check_invariants(&world)?;
    for event in events {
        let before = world.clone();
        let result = world.apply(event);
        coverage.states.insert(world.task.state);
        coverage.verdicts.insert((event.kind(), Verdict::of(&result, &world.task).name()));
        check_invariants(&world)?;
        check_step(&before, event, &result, &world)?;
        check_fencing(&world)?;
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_event_sequences_keep_every_task_invariant((max_attempts, approval, events) in scenario()) {
        run(max_attempts, approval, &events, &mut Coverage::default())?;
    }

    /// The race fencing exists for: an agent starts a run, goes silent
    /// until its lease expires and is reclaimed, the task goes to another
    /// agent, and then the first agent comes back and keeps reporting under
    /// its old epoch alongside the new holder.
    #[test]
    fn a_holder_whose_lease_was_reclaimed_stays_fenced_after_reassignment(
        max_attempts in 1u32..=3,
        late in 0usize..AGENTS,
        tail in vec(event(), 1..40),
    ) {
        let mut events = vec![
            Event::Assign { agent: late, accept_within_ms: 1_000 },
            Event::Start { agent: late, epoch: EpochPick::Believed, ttl_ms: 1_000 },
            Event::Advance { ms: 1_000 },
            Event::Reclaim,
            Event::Assign { agent: (late + 1) % AGENTS, accept_within_ms: 1_000 },
        ];
        events.extend(tail);
        run(max_attempts, (false, false), &events, &mut Coverage::default())?;
    }
}

#[test]
fn random_runs_reach_every_state_and_every_kind_of_refusal() {
    let mut runner = TestRunner::deterministic();
    let mut coverage = Coverage::default();
    for _ in 0..256 {
        let (max_attempts, approval, events) = scenario().new_tree(&mut runner).expect("a scenario").current();
        if let Err(err) = run(max_attempts, approval, &events, &mut coverage) {
            panic!("{err}");
        }
    }
    for state in TaskState::ALL {
        assert!(coverage.states.contains(&state), "no run reached {state:?}");
    }
    for kind in ["assign", "start", "renew", "release", "finish", "reclaim", "disown", "cancel", "retry"] {
        assert!(coverage.verdicts.contains(&(kind, "ok")), "no {kind} succeeded: {:?}", coverage.verdicts);
    }
    for (kind, refusal) in [
        ("start", "Stale"),
        ("renew", "Stale"),
        ("release", "Stale"),
        ("finish", "Stale"),
        ("disown", "Stale"),
        ("start", "WrongState"),
        ("renew", "WrongState"),
        ("finish", "WrongState"),
        ("assign", "WrongState"),
        ("assign", "NotReady"),
        ("reclaim", "WrongState"),
        ("cancel", "WrongState"),
        ("retry", "WrongState"),
    ] {
        assert!(
            coverage.verdicts.contains(&(kind, refusal)),
            "no {kind} was refused with {refusal}: {:?}",
            coverage.verdicts
        );
    }
}
