//! The task state machine.
//!
//! ```text
//!            assign            start
//!   queued ─────────► assigned ─────► running ──► succeeded
//!     ▲  ▲               │               │   └──► failed (no attempts left) ──retry──► queued
//!     │  └─ reclaim ─────┘               │   └──► cancelled
//!     └──── retry after backoff / reclaim┘
//! ```
//!
//! Every transition is a method that either changes the task and says what
//! happened, or refuses and leaves the task exactly as it was.

use crate::{AgentName, Capability, Epoch, Invalid, Lease, Millis, RunnerName, TaskId};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Urgent,
    High,
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::Urgent, Priority::High, Priority::Normal, Priority::Low];

    pub fn parse(s: &str) -> Result<Priority, Invalid> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            Invalid::new("priority", format!("unknown priority {s:?}; expected urgent, high, normal or low"))
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Dispatch order: lower ranks go first.
    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Option<Priority> {
        Priority::ALL.get(usize::try_from(rank).ok()?).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for the tasks it depends on to succeed.
    Blocked,
    /// Waiting for a person to approve it before it may be queued.
    PendingApproval,
    /// Waiting for a person to answer a decision; it holds no agent slot.
    NeedsDecision,
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// An operator decided it needs no run: done, without a result.
    Skipped,
}

impl TaskState {
    pub const ALL: [TaskState; 10] = [
        TaskState::Blocked,
        TaskState::PendingApproval,
        TaskState::NeedsDecision,
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Skipped,
    ];

    pub fn parse(s: &str) -> Result<TaskState, Invalid> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Invalid::new(
                "state",
                format!(
                    "unknown state {s:?}; expected blocked, pending_approval, queued, assigned, running, succeeded, \
                     failed, cancelled or skipped"
                ),
            )
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Blocked => "blocked",
            TaskState::PendingApproval => "pending_approval",
            TaskState::NeedsDecision => "needs_decision",
            TaskState::Queued => "queued",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Skipped)
    }

    /// States in which the task holds a lease on some agent.
    pub fn is_leased(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

/// Limits on what a task may ask for.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_FALLBACKS: usize = 8;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// What the submitter asked for. Fixed once the task exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    pub prompt: String,
    pub runner: RunnerName,
    /// Sorted and without duplicates.
    pub capabilities: Vec<Capability>,
    pub priority: Priority,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    /// Free-form JSON text, opaque to the core.
    pub metadata: Option<String>,
    /// Run in a git worktree of this repository, on branch `muster/<task-id>`.
    pub workspace: Option<crate::Workspace>,
    /// Runners to use, in order, while `runner` is disabled or its circuit is open.
    pub fallback: Vec<RunnerName>,
    /// What one run may spend before it is stopped (reason `budget`).
    pub budget: Budget,
    /// A person must approve it before it is queued.
    pub requires_approval: bool,
    /// This task is a shadow run of that one: it never changes that task's
    /// outcome, and is compared with it.
    pub shadow_of: Option<TaskId>,
    /// Tasks that must succeed before this one is queued.
    pub depends_on: Vec<TaskId>,
    /// What becomes of it when one of them fails or is cancelled.
    pub on_dependency_failure: DependencyPolicy,
    /// Commands run in its workspace after the agent succeeds; one failing
    /// fails the attempt (`checks_failed`).
    pub checks: Vec<crate::Check>,
}

/// What a task does when a task it depends on fails or is cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DependencyPolicy {
    /// It fails too.
    #[default]
    Fail,
    /// It is skipped.
    Skip,
}

impl DependencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyPolicy::Fail => "fail",
            DependencyPolicy::Skip => "skip",
        }
    }

    pub fn parse(s: &str) -> Result<DependencyPolicy, Invalid> {
        match s {
            "fail" => Ok(DependencyPolicy::Fail),
            "skip" => Ok(DependencyPolicy::Skip),
            other => {
                Err(Invalid::new("on_dependency_failure", format!("unknown policy {other:?}; expected fail or skip")))
            }
        }
    }
}

/// Tasks one task may depend on, at most.
pub const MAX_DEPENDENCIES: usize = 100;

/// Ceilings on what one run of a task may spend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub max_cost: Option<crate::MicroUsd>,
    /// Input, output and cache tokens together.
    pub max_tokens: Option<u64>,
}

impl Budget {
    pub fn is_set(&self) -> bool {
        self.max_cost.is_some() || self.max_tokens.is_some()
    }
}

impl TaskSpec {
    /// A task with every optional field empty, at normal priority.
    pub fn new(prompt: impl Into<String>, runner: RunnerName, timeout: Duration, max_attempts: u32) -> TaskSpec {
        TaskSpec {
            prompt: prompt.into(),
            runner,
            capabilities: Vec::new(),
            priority: Priority::Normal,
            timeout,
            max_attempts,
            idempotency_key: None,
            metadata: None,
            workspace: None,
            fallback: Vec::new(),
            budget: Budget::default(),
            requires_approval: false,
            shadow_of: None,
            depends_on: Vec::new(),
            on_dependency_failure: DependencyPolicy::Fail,
            checks: Vec::new(),
        }
    }

    /// Checks the limits every task must respect; normalises capabilities.
    pub fn validate(mut self) -> Result<TaskSpec, Invalid> {
        if self.prompt.is_empty() {
            return Err(Invalid::new("prompt", "must not be empty"));
        }
        if self.prompt.len() > MAX_PROMPT_BYTES {
            return Err(Invalid::new(
                "prompt",
                format!("is {} bytes; the limit is {} bytes (1 MiB)", self.prompt.len(), MAX_PROMPT_BYTES),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Invalid::new("timeout", "must be greater than zero"));
        }
        if self.timeout > MAX_TIMEOUT {
            return Err(Invalid::new("timeout", "must be at most 7 days"));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(Invalid::new("max_attempts", format!("must be between 1 and {MAX_ATTEMPTS}")));
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(Invalid::new("capabilities", format!("at most {MAX_CAPABILITIES} are allowed")));
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
        {
            return Err(Invalid::new("idempotency_key", format!("must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes")));
        }
        if let Some(w) = &self.workspace {
            w.validate()?;
        }
        if self.budget.max_cost.is_some_and(crate::MicroUsd::is_zero) {
            return Err(Invalid::new("max_cost_usd", "must be more than 0"));
        }
        if self.budget.max_tokens == Some(0) {
            return Err(Invalid::new("max_tokens", "must be more than 0"));
        }
        crate::check::validate_all(&self.checks)?;
        if self.depends_on.len() > MAX_DEPENDENCIES {
            return Err(Invalid::new("depends_on", format!("at most {MAX_DEPENDENCIES} tasks")));
        }
        self.depends_on.sort();
        self.depends_on.dedup();
        if self.fallback.len() > MAX_FALLBACKS {
            return Err(Invalid::new("fallback", format!("at most {MAX_FALLBACKS} fallback runners are allowed")));
        }
        for (i, f) in self.fallback.iter().enumerate() {
            if *f == self.runner {
                return Err(Invalid::new("fallback", format!("{:?} is the task's own runner", f.as_str())));
            }
            if self.fallback[..i].contains(f) {
                return Err(Invalid::new("fallback", format!("{:?} is named twice", f.as_str())));
            }
        }
        self.capabilities.sort();
        self.capabilities.dedup();
        Ok(self)
    }
}

/// How a run ended, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The process exited 0.
    Succeeded { exit_code: i32 },
    /// The process exited non-zero, could not start, or was killed.
    Failed { exit_code: Option<i32>, reason: String },
    /// The run was killed because its timeout passed.
    TimedOut,
    /// The run was killed because the task was cancelled.
    Cancelled,
}

impl RunOutcome {
    /// What the agent reported, or why it is not a run's end: `outcome` is
    /// one of [`Outcome::REPORTED`]'s words.
    pub fn reported(outcome: &str, exit_code: Option<i32>, reason: Option<String>) -> Result<RunOutcome, Invalid> {
        Ok(match Outcome::parse(outcome).ok().filter(|o| Outcome::REPORTED.contains(o)) {
            Some(Outcome::Succeeded) => RunOutcome::Succeeded { exit_code: exit_code.unwrap_or(0) },
            Some(Outcome::Failed) => RunOutcome::Failed {
                exit_code,
                reason: reason.unwrap_or_else(|| match exit_code {
                    Some(code) => format!("exit code {code}"),
                    None => "failed".to_owned(),
                }),
            },
            Some(Outcome::Timeout) => RunOutcome::TimedOut,
            Some(Outcome::Cancelled) => RunOutcome::Cancelled,
            _ => {
                return Err(Invalid::new(
                    "outcome",
                    format!("unknown outcome {outcome:?}; expected succeeded, failed, timeout or cancelled"),
                ));
            }
        })
    }

    /// The word its attempt ends with.
    pub fn outcome(&self) -> Outcome {
        match self {
            RunOutcome::Succeeded { .. } => Outcome::Succeeded,
            RunOutcome::Failed { .. } => Outcome::Failed,
            RunOutcome::TimedOut => Outcome::Timeout,
            RunOutcome::Cancelled => Outcome::Cancelled,
        }
    }
}

/// How an attempt ended: the word the store keeps, the API shows and
/// metrics count. An agent reports only the first four; the hub decides
/// the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Succeeded,
    Failed,
    Timeout,
    Cancelled,
    /// The lease ran out (its agent went silent) or a repair closed it.
    LeaseExpired,
    /// The provider's rate or usage limit stopped it; the attempt is given back.
    Limited,
    /// A decision the run waited on was not answered in time.
    DecisionTimeout,
    /// Set aside while the run waits for a person or a lock.
    Parked,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::LeaseExpired,
        Outcome::Limited,
        Outcome::DecisionTimeout,
        Outcome::Parked,
    ];

    /// What an agent may report of a run.
    pub const REPORTED: [Outcome; 4] = [Outcome::Succeeded, Outcome::Failed, Outcome::Timeout, Outcome::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::LeaseExpired => "lease_expired",
            Outcome::Limited => "limited",
            Outcome::DecisionTimeout => "decision_timeout",
            Outcome::Parked => "parked",
        }
    }

    pub fn parse(s: &str) -> Result<Outcome, Invalid> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
            let words: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            Invalid::new("outcome", format!("unknown outcome {s:?}; expected one of {}", words.join(", ")))
        })
    }

    /// An attempt that ended so counts against the fleet's success rate:
    /// the run itself went wrong, rather than being stopped or set aside.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Timeout | Outcome::LeaseExpired)
    }

    /// `(succeeded, failed)` of counts by outcome, failures as
    /// [`Outcome::is_failure`] says.
    pub fn tally(counts: &[(Outcome, u64)]) -> (u64, u64) {
        let sum = |keep: &dyn Fn(Outcome) -> bool| counts.iter().filter(|(o, _)| keep(*o)).map(|(_, n)| n).sum();
        (sum(&|o| o == Outcome::Succeeded), sum(&|o| o.is_failure()))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a running attempt is doing, as its agent sees it; an attempt that
/// has ended is `Done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Printing output.
    Working,
    /// Waiting for a person: a decision, a permission, input.
    Waiting,
    /// No output for the runner's `quiet_after`.
    Quiet,
    /// The attempt has ended.
    Done,
}

impl Live {
    /// What an agent may report; `Done` is the store's to say.
    pub const REPORTED: [Live; 3] = [Live::Working, Live::Waiting, Live::Quiet];

    pub fn as_str(self) -> &'static str {
        match self {
            Live::Working => "working",
            Live::Waiting => "waiting",
            Live::Quiet => "quiet",
            Live::Done => "done",
        }
    }

    /// A status an agent reported, or why it is not one.
    pub fn reported(s: &str) -> Result<Live, Invalid> {
        Live::REPORTED.into_iter().find(|l| l.as_str() == s).ok_or_else(|| {
            Invalid::new("status", format!("unknown live status {s:?}; expected working, waiting or quiet"))
        })
    }
}

/// Why a transition was refused. The task is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The report's epoch is not the task's current lease.
    StaleEpoch { current: Epoch, got: Epoch },
    /// The task is not in a state that allows this.
    WrongState { state: TaskState, wanted: &'static str },
    /// No attempts are left.
    NoAttemptsLeft,
    /// A queued task whose backoff has not elapsed.
    NotReady { ready_at: Millis },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::StaleEpoch { current, got } if current == got => {
                write!(f, "the lease under epoch {got} has ended (the run finished or was reclaimed)")
            }
            Refused::StaleEpoch { current, got } => {
                write!(f, "stale epoch {got}: the task has since been handed out under epoch {current}")
            }
            Refused::WrongState { state, wanted } => write!(f, "task is {}; {wanted}", state.as_str()),
            Refused::NoAttemptsLeft => f.write_str("no attempts left"),
            Refused::NotReady { ready_at } => write!(f, "not ready before {}", ready_at.0),
        }
    }
}

/// What a finished run did to its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Succeeded,
    /// Failed with attempts left: queued again, not before `ready_at`.
    RetryScheduled {
        ready_at: Millis,
    },
    /// Failed with no attempts left: the task is dead-lettered.
    Failed,
    Cancelled,
}

/// Why a task is taken back from the agent that holds its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disowned {
    /// It connected again and did not list the task among its runs.
    Reconnected,
    /// An operator removed the agent (`agent remove --force`).
    Removed,
}

impl Disowned {
    /// The reason an assignment, and a run, are given.
    fn reasons(self) -> (&'static str, &'static str) {
        match self {
            Disowned::Reconnected => {
                ("its agent connected again without it", "its agent connected again without this run")
            }
            Disowned::Removed => ("its agent was removed", "its agent was removed during the run"),
        }
    }
}

/// What a reclaim of an expired lease did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaimed {
    /// Back in the queue.
    Requeued,
    /// The lease was the last attempt: failed with reason `lease_expired`.
    Failed,
    /// The task had a cancel pending: now cancelled.
    Cancelled,
}

impl Reclaimed {
    pub fn as_str(self) -> &'static str {
        match self {
            Reclaimed::Requeued => "requeued",
            Reclaimed::Failed => "failed",
            Reclaimed::Cancelled => "cancelled",
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The task is cancelled now. If it was leased, `notify` names the agent
    /// and epoch that must drop it.
    Done { notify: Option<(AgentName, Epoch)> },
    /// The task is running: the agent must kill it and report back.
    Requested { agent: AgentName, epoch: Epoch },
}

/// One task as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub state: TaskState,
    /// Attempts started so far, at most `spec.max_attempts`; a retry starts
    /// it again at 0, and a run that hands its attempt back takes one off.
    pub attempts: u32,
    /// Runs started in all, across retries: the number of its latest attempt.
    pub runs: u32,
    /// The epoch of the latest lease; grows with every hand-out.
    pub epoch: Epoch,
    /// Present exactly when the state is assigned or running.
    pub lease: Option<Lease>,
    /// A queued task is not handed out before this instant.
    pub ready_at: Millis,
    pub cancel_requested: bool,
    pub exit_code: Option<i32>,
    /// Why the latest attempt ended, or why the task is where it is.
    pub reason: Option<String>,
    /// The agent of the latest attempt.
    pub agent: Option<AgentName>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

impl Task {
    /// The runner the task runs on: the one its lease names (a fallback
    /// chosen at claim time) while it has one, else the one it asked for.
    pub fn runner_in_use(&self) -> &RunnerName {
        self.lease.as_ref().and_then(|l| l.runner.as_ref()).unwrap_or(&self.spec.runner)
    }

    pub fn new(id: TaskId, spec: TaskSpec, now: Millis) -> Task {
        Task {
            id,
            state: if !spec.depends_on.is_empty() {
                TaskState::Blocked
            } else if spec.requires_approval {
                TaskState::PendingApproval
            } else {
                TaskState::Queued
            },
            attempts: 0,
            runs: 0,
            epoch: Epoch(0),
            lease: None,
            ready_at: now,
            cancel_requested: false,
            exit_code: None,
            reason: None,
            agent: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            spec,
        }
    }

    pub fn attempts_left(&self) -> u32 {
        self.spec.max_attempts.saturating_sub(self.attempts)
    }

    /// Hands a queued task to `agent`, which must accept it before
    /// `now + accept_within`. Returns the new epoch.
    pub fn assign(&mut self, agent: &AgentName, now: Millis, accept_within: Duration) -> Result<Epoch, Refused> {
        if self.state != TaskState::Queued {
            return Err(Refused::WrongState { state: self.state, wanted: "only a queued task can be assigned" });
        }
        if self.attempts_left() == 0 {
            return Err(Refused::NoAttemptsLeft);
        }
        if self.ready_at > now {
            return Err(Refused::NotReady { ready_at: self.ready_at });
        }
        self.epoch = self.epoch.next();
        self.lease =
            Some(Lease { agent: agent.clone(), epoch: self.epoch, expires_at: now.plus(accept_within), runner: None });
        self.state = TaskState::Assigned;
        self.agent = Some(agent.clone());
        self.updated_at = now;
        Ok(self.epoch)
    }

    fn check_lease(&self, agent: &AgentName, epoch: Epoch) -> Result<(), Refused> {
        match &self.lease {
            Some(lease) if lease.is_held_by(agent, epoch) => Ok(()),
            _ => Err(Refused::StaleEpoch { current: self.epoch, got: epoch }),
        }
    }

    /// The agent accepted the assignment and started the run: one attempt
    /// is used and the lease now lives as long as the agent renews it.
    pub fn start(&mut self, agent: &AgentName, epoch: Epoch, now: Millis, lease_ttl: Duration) -> Result<(), Refused> {
        self.check_lease(agent, epoch)?;
        if self.state != TaskState::Assigned {
            return Err(Refused::WrongState { state: self.state, wanted: "only an assigned task can start" });
        }
        self.attempts += 1;
        self.runs += 1;
        self.state = TaskState::Running;
        self.started_at = Some(now);
        self.exit_code = None;
        self.reason = None;
        if let Some(lease) = &mut self.lease {
            lease.expires_at = now.plus(lease_ttl);
        }
        self.updated_at = now;
        Ok(())
    }

    /// The agent turned the assignment down: back to the queue, no attempt
    /// used, and not handed out again before `now + retry_after`, so an agent
    /// that keeps refusing cannot make the hub spin.
    pub fn release(
        &mut self,
        agent: &AgentName,
        epoch: Epoch,
        reason: &str,
        now: Millis,
        retry_after: Duration,
    ) -> Result<(), Refused> {
        self.check_lease(agent, epoch)?;
        if self.state != TaskState::Assigned {
            return Err(Refused::WrongState { state: self.state, wanted: "only an assigned task can be released" });
        }
        self.lease = None;
        self.state = TaskState::Queued;
        self.ready_at = now.plus(retry_after);
        self.reason = Some(format!("released: {reason}"));
        self.updated_at = now;
        Ok(())
    }

    /// Extends a running task's lease on the holder's heartbeat.
    pub fn renew(&mut self, agent: &AgentName, epoch: Epoch, now: Millis, lease_ttl: Duration) -> Result<(), Refused> {
        self.check_lease(agent, epoch)?;
        if self.state != TaskState::Running {
            return Err(Refused::WrongState { state: self.state, wanted: "only a running task's lease is renewed" });
        }
        if let Some(lease) = &mut self.lease {
            lease.expires_at = lease.expires_at.max(now.plus(lease_ttl));
        }
        Ok(())
    }

    /// Whether a report that the run under `epoch` ended as `outcome` is
    /// one already applied, sent again because its acknowledgement was lost:
    /// the lease is gone, and the attempt under that epoch was `agent`'s and
    /// ended the same way. A resend is answered, not refused. `recorded` is
    /// that attempt's agent and outcome, if there is one.
    pub fn is_resend(
        &self,
        agent: &AgentName,
        epoch: Epoch,
        outcome: Outcome,
        recorded: Option<(&str, Option<Outcome>)>,
    ) -> bool {
        let held = self.lease.as_ref().is_some_and(|l| l.is_held_by(agent, epoch));
        !held && recorded == Some((agent.as_str(), Some(outcome)))
    }

    /// Applies the outcome of the run held under `epoch`. `backoff` is the
    /// delay before a retry, used only if the task goes back to the queue.
    pub fn finish(
        &mut self,
        agent: &AgentName,
        epoch: Epoch,
        outcome: &RunOutcome,
        now: Millis,
        backoff: Duration,
    ) -> Result<Finished, Refused> {
        self.check_lease(agent, epoch)?;
        if self.state != TaskState::Running {
            return Err(Refused::WrongState { state: self.state, wanted: "only a running task can finish" });
        }
        self.lease = None;
        self.updated_at = now;
        let (exit_code, reason) = match outcome {
            RunOutcome::Succeeded { exit_code } => {
                self.exit_code = Some(*exit_code);
                self.reason = None;
                self.end(TaskState::Succeeded, now);
                return Ok(Finished::Succeeded);
            }
            RunOutcome::Cancelled | RunOutcome::TimedOut => (None, outcome.outcome().as_str().to_owned()),
            RunOutcome::Failed { exit_code, reason } => (*exit_code, reason.clone()),
        };
        self.exit_code = exit_code;
        self.reason = Some(reason);
        Ok(self.after_failed_attempt(now, backoff, matches!(outcome, RunOutcome::Cancelled)))
    }

    /// The run hit its provider's rate or usage limit: the task goes back to
    /// the queue until `until` and the attempt it used is given back, since
    /// the limit says nothing about the task. A cancel asked for meanwhile
    /// still ends it.
    pub fn limited(
        &mut self,
        agent: &AgentName,
        epoch: Epoch,
        reason: &str,
        until: Millis,
        now: Millis,
    ) -> Result<Finished, Refused> {
        self.check_lease(agent, epoch)?;
        if self.state != TaskState::Running {
            return Err(Refused::WrongState { state: self.state, wanted: "only a running task can be limited" });
        }
        self.lease = None;
        self.updated_at = now;
        self.exit_code = None;
        self.reason = Some(format!("limited: {reason}"));
        if self.cancel_requested {
            self.end(TaskState::Cancelled, now);
            return Ok(Finished::Cancelled);
        }
        self.attempts = self.attempts.saturating_sub(1);
        self.state = TaskState::Queued;
        self.ready_at = until.max(now);
        Ok(Finished::RetryScheduled { ready_at: self.ready_at })
    }

    fn after_failed_attempt(&mut self, now: Millis, backoff: Duration, cancelled: bool) -> Finished {
        if self.cancel_requested || cancelled {
            self.end(TaskState::Cancelled, now);
            Finished::Cancelled
        } else if self.attempts_left() > 0 {
            self.state = TaskState::Queued;
            self.ready_at = now.plus(backoff);
            Finished::RetryScheduled { ready_at: self.ready_at }
        } else {
            self.end(TaskState::Failed, now);
            Finished::Failed
        }
    }

    fn end(&mut self, state: TaskState, now: Millis) {
        debug_assert!(state.is_terminal());
        self.state = state;
        self.lease = None;
        self.finished_at = Some(now);
        self.updated_at = now;
    }

    /// Takes back a task whose lease expired: the holder stopped renewing it
    /// (its agent died, hung or lost the network) or never accepted it.
    pub fn reclaim(&mut self, now: Millis) -> Result<Reclaimed, Refused> {
        let Some(lease) = self.lease.as_ref().filter(|_| self.state.is_leased()) else {
            return Err(Refused::WrongState { state: self.state, wanted: "only a leased task can be reclaimed" });
        };
        if !lease.is_expired(now) {
            return Err(Refused::WrongState { state: self.state, wanted: "the lease has not expired" });
        }
        Ok(self.take_back(now, "not accepted in time", "lease_expired"))
    }

    /// The holder connected again and did not list this task among the runs
    /// it holds: the assignment never reached it (the hub stopped between
    /// committing and sending it), or the run died with the agent. Taken back
    /// at once, as an expired lease would be after `restart_grace`: an
    /// assignment is queued again without using an attempt; a run's attempt
    /// ends and the task retries if it has attempts left. The next
    /// assignment is under a new epoch, so the old one is fenced off.
    pub fn disown(
        &mut self,
        agent: &AgentName,
        epoch: Epoch,
        why: Disowned,
        now: Millis,
    ) -> Result<Reclaimed, Refused> {
        self.check_lease(agent, epoch)?;
        if !self.state.is_leased() {
            return Err(Refused::WrongState { state: self.state, wanted: "only a leased task can be disowned" });
        }
        let (unaccepted, lost) = why.reasons();
        Ok(self.take_back(now, unaccepted, lost))
    }

    /// Ends the lease: an assignment goes back to the queue, a run ends its attempt.
    fn take_back(&mut self, now: Millis, unaccepted: &str, lost: &str) -> Reclaimed {
        let was_running = self.state == TaskState::Running;
        self.lease = None;
        self.updated_at = now;
        if !was_running {
            self.state = TaskState::Queued;
            self.ready_at = now;
            self.reason = Some(unaccepted.to_owned());
            return Reclaimed::Requeued;
        }
        self.exit_code = None;
        self.reason = Some(lost.to_owned());
        match self.after_failed_attempt(now, Duration::ZERO, false) {
            Finished::Cancelled => Reclaimed::Cancelled,
            Finished::Failed => Reclaimed::Failed,
            Finished::RetryScheduled { .. } | Finished::Succeeded => Reclaimed::Requeued,
        }
    }

    /// Cancels the task: at once unless a run is under way.
    pub fn cancel(&mut self, now: Millis) -> Result<Cancel, Refused> {
        match self.state {
            TaskState::Queued | TaskState::PendingApproval | TaskState::Blocked | TaskState::NeedsDecision => {
                self.reason = Some("cancelled".to_owned());
                self.end(TaskState::Cancelled, now);
                Ok(Cancel::Done { notify: None })
            }
            TaskState::Assigned => {
                let notify = self.lease.as_ref().map(|l| (l.agent.clone(), l.epoch));
                self.reason = Some("cancelled".to_owned());
                self.end(TaskState::Cancelled, now);
                Ok(Cancel::Done { notify })
            }
            TaskState::Running => {
                let lease = self.lease.as_ref().expect("a running task holds a lease");
                let (agent, epoch) = (lease.agent.clone(), lease.epoch);
                self.cancel_requested = true;
                self.updated_at = now;
                Ok(Cancel::Requested { agent, epoch })
            }
            state => Err(Refused::WrongState { state, wanted: "a finished task cannot be cancelled" }),
        }
    }

    /// An operator decides the task needs no run (now or again): it ends
    /// `skipped`. Not while it is handed out: cancel it first.
    pub fn skip(&mut self, reason: &str, now: Millis) -> Result<(), Refused> {
        if self.state.is_leased() || self.state == TaskState::Skipped {
            return Err(Refused::WrongState {
                state: self.state,
                wanted: "only a queued or finished task can be skipped (cancel a running one first)",
            });
        }
        self.reason = Some(format!("skipped: {reason}"));
        self.cancel_requested = false;
        self.end(TaskState::Skipped, now);
        Ok(())
    }

    /// Back to the queue with a fresh budget of attempts, whatever it was;
    /// not while it is handed out.
    pub fn reset(&mut self, now: Millis) -> Result<(), Refused> {
        if self.state.is_leased() {
            return Err(Refused::WrongState {
                state: self.state,
                wanted: "a task that is handed out cannot be reset (cancel it first)",
            });
        }
        // A reset is a run again: it waits on its dependencies, and needs
        // its approval, again.
        self.state = if !self.spec.depends_on.is_empty() {
            TaskState::Blocked
        } else if self.spec.requires_approval {
            TaskState::PendingApproval
        } else {
            TaskState::Queued
        };
        self.attempts = 0;
        self.ready_at = now;
        self.cancel_requested = false;
        self.finished_at = None;
        self.exit_code = None;
        self.reason = Some("reset".to_owned());
        self.updated_at = now;
        Ok(())
    }

    /// A new priority, for a task not yet finished.
    pub fn reprioritise(&mut self, priority: Priority, now: Millis) -> Result<Priority, Refused> {
        if self.state.is_terminal() {
            return Err(Refused::WrongState { state: self.state, wanted: "a finished task's priority stays" });
        }
        let was = self.spec.priority;
        self.spec.priority = priority;
        self.updated_at = now;
        Ok(was)
    }

    /// Every task it depends on succeeded: on to approval, or the queue.
    pub fn unblock(&mut self, now: Millis) -> Result<(), Refused> {
        if self.state != TaskState::Blocked {
            return Err(Refused::WrongState { state: self.state, wanted: "only a blocked task is unblocked" });
        }
        self.state = if self.spec.requires_approval { TaskState::PendingApproval } else { TaskState::Queued };
        self.ready_at = now;
        self.updated_at = now;
        Ok(())
    }

    /// A task it depends on failed or was cancelled: it fails or is
    /// skipped, by its policy; returns the state it ended in.
    pub fn dependency_failed(&mut self, dependency: &TaskId, now: Millis) -> Result<TaskState, Refused> {
        if self.state != TaskState::Blocked {
            return Err(Refused::WrongState { state: self.state, wanted: "only a blocked task waits on dependencies" });
        }
        let (state, reason) = match self.spec.on_dependency_failure {
            DependencyPolicy::Fail => (TaskState::Failed, format!("dependency {dependency} did not succeed")),
            DependencyPolicy::Skip => (TaskState::Skipped, format!("skipped: dependency {dependency} did not succeed")),
        };
        self.reason = Some(reason);
        self.end(state, now);
        Ok(state)
    }

    /// A person approved it: it joins the queue.
    pub fn approve(&mut self, now: Millis) -> Result<(), Refused> {
        if self.state != TaskState::PendingApproval {
            return Err(Refused::WrongState { state: self.state, wanted: "only a task pending approval is approved" });
        }
        self.state = TaskState::Queued;
        self.ready_at = now;
        self.updated_at = now;
        Ok(())
    }

    /// A person rejected it: it ends `cancelled`, saying so.
    pub fn reject(&mut self, reason: &str, now: Millis) -> Result<(), Refused> {
        if self.state != TaskState::PendingApproval {
            return Err(Refused::WrongState { state: self.state, wanted: "only a task pending approval is rejected" });
        }
        self.reason = Some(format!("rejected: {reason}"));
        self.end(TaskState::Cancelled, now);
        Ok(())
    }

    /// A person is asked a decision about a queued task: it leaves the queue
    /// until the answer comes.
    pub fn await_decision(&mut self, now: Millis) -> Result<(), Refused> {
        if !matches!(self.state, TaskState::Queued | TaskState::NeedsDecision) {
            return Err(Refused::WrongState {
                state: self.state,
                wanted: "a decision is raised on a queued task (a running one asks from inside its run)",
            });
        }
        self.state = TaskState::NeedsDecision;
        self.reason = Some("needs_decision".to_owned());
        self.updated_at = now;
        Ok(())
    }

    /// The run stopped to wait for a person's answer: the task waits in
    /// `needs_decision` without an agent slot, and the attempt it used is
    /// given back, since asking is not failing. A cancel asked for
    /// meanwhile still ends it.
    pub fn park(&mut self, agent: &AgentName, epoch: Epoch, now: Millis) -> Result<TaskState, Refused> {
        self.check_lease(agent, epoch)?;
        if self.state != TaskState::Running {
            return Err(Refused::WrongState { state: self.state, wanted: "only a running task can be parked" });
        }
        self.lease = None;
        self.updated_at = now;
        self.exit_code = None;
        if self.cancel_requested {
            self.reason = Some("cancelled".to_owned());
            self.end(TaskState::Cancelled, now);
            return Ok(TaskState::Cancelled);
        }
        self.attempts = self.attempts.saturating_sub(1);
        self.state = TaskState::NeedsDecision;
        self.reason = Some("needs_decision".to_owned());
        Ok(TaskState::NeedsDecision)
    }

    /// Every decision it waited for is answered: back to the queue.
    pub fn resume(&mut self, now: Millis) -> Result<(), Refused> {
        if self.state != TaskState::NeedsDecision {
            return Err(Refused::WrongState { state: self.state, wanted: "only a task that needs a decision resumes" });
        }
        self.state = TaskState::Queued;
        self.ready_at = now;
        self.reason = Some("decided".to_owned());
        self.updated_at = now;
        Ok(())
    }

    /// Nobody answered in time and there is no default: the task fails,
    /// whatever it was doing; a run still under way is dropped (fenced by
    /// its epoch). No retry: asking again would wait again.
    pub fn decision_timed_out(&mut self, now: Millis) -> Result<TaskState, Refused> {
        if !matches!(self.state, TaskState::NeedsDecision | TaskState::Running | TaskState::Assigned) {
            return Err(Refused::WrongState {
                state: self.state,
                wanted: "only a task waiting for a decision or running fails for its timeout",
            });
        }
        self.exit_code = None;
        if self.cancel_requested {
            // Someone asked for it to stop first: it ends as they asked.
            self.cancel_requested = false;
            self.reason = Some("cancelled".to_owned());
            self.end(TaskState::Cancelled, now);
            return Ok(TaskState::Cancelled);
        }
        self.reason = Some("decision_timeout".to_owned());
        self.end(TaskState::Failed, now);
        Ok(TaskState::Failed)
    }

    /// Revives a dead-lettered task with a fresh budget of attempts.
    pub fn retry(&mut self, now: Millis) -> Result<(), Refused> {
        if self.state != TaskState::Failed {
            return Err(Refused::WrongState { state: self.state, wanted: "only a failed task can be retried" });
        }
        self.state = TaskState::Queued;
        self.attempts = 0;
        self.ready_at = now;
        self.cancel_requested = false;
        self.finished_at = None;
        self.exit_code = None;
        self.reason = Some("retried".to_owned());
        self.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod limited_tests {
    use super::*;

    #[test]
    fn a_limited_run_gives_its_attempt_back_and_waits_for_the_reset() {
        let spec = TaskSpec {
            prompt: "p".into(),
            runner: RunnerName::parse("claude").unwrap(),
            capabilities: vec![],
            priority: Priority::Normal,
            timeout: Duration::from_secs(60),
            max_attempts: 1,
            idempotency_key: None,
            metadata: None,
            workspace: None,
            fallback: vec![],
            budget: Budget::default(),
            shadow_of: None,
            requires_approval: false,
            depends_on: Vec::new(),
            on_dependency_failure: DependencyPolicy::Fail,
            checks: Vec::new(),
        };
        let agent = AgentName::parse("a").unwrap();
        let mut task = Task::new(TaskId::from_parts(0, 1), spec, Millis(0));
        task.assign(&agent, Millis(0), Duration::from_secs(10)).unwrap();
        let epoch = task.epoch;
        task.start(&agent, epoch, Millis(1), Duration::from_secs(30)).unwrap();
        assert_eq!(task.attempts, 1);
        let r = task.limited(&agent, epoch, "usage limit", Millis(60_000), Millis(2)).unwrap();
        assert_eq!(r, Finished::RetryScheduled { ready_at: Millis(60_000) });
        assert_eq!((task.state, task.attempts, task.lease.is_none()), (TaskState::Queued, 0, true));
        assert_eq!(task.reason.as_deref(), Some("limited: usage limit"));
        assert!(task.limited(&agent, epoch, "again", Millis(5), Millis(3)).is_err(), "a stale report is refused");
    }
}

#[cfg(test)]
mod operator_tests {
    use super::*;

    fn task() -> (Task, AgentName) {
        let spec = TaskSpec {
            prompt: "p".into(),
            runner: RunnerName::parse("shell").unwrap(),
            capabilities: vec![],
            priority: Priority::Normal,
            timeout: Duration::from_secs(60),
            max_attempts: 2,
            idempotency_key: None,
            metadata: None,
            workspace: None,
            fallback: vec![],
            budget: Budget::default(),
            shadow_of: None,
            requires_approval: false,
            depends_on: Vec::new(),
            on_dependency_failure: DependencyPolicy::Fail,
            checks: Vec::new(),
        };
        (Task::new(TaskId::from_parts(0, 1), spec, Millis(0)), AgentName::parse("a").unwrap())
    }

    #[test]
    fn an_agent_reports_working_waiting_or_quiet_and_nothing_else() {
        for live in Live::REPORTED {
            assert_eq!(Live::reported(live.as_str()), Ok(live));
        }
        for bad in ["done", "Working", "", "asleep"] {
            let e = Live::reported(bad).expect_err(bad);
            assert_eq!(
                e.to_string(),
                format!("status: unknown live status {bad:?}; expected working, waiting or quiet")
            );
        }
    }

    #[test]
    fn outcomes_read_back_as_written_and_agents_report_only_the_four_run_ends() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Ok(o));
            assert_eq!(o.to_string(), o.as_str());
        }
        assert_eq!(Outcome::parse("Failed").expect_err("case matters").field, "outcome");
        for o in Outcome::REPORTED {
            assert_eq!(RunOutcome::reported(o.as_str(), Some(3), Some("why".into())).map(|r| r.outcome()), Ok(o));
        }
        for o in Outcome::ALL.into_iter().filter(|o| !Outcome::REPORTED.contains(o)) {
            let e = RunOutcome::reported(o.as_str(), None, None).expect_err(o.as_str());
            assert_eq!(
                e.to_string(),
                format!("outcome: unknown outcome {:?}; expected succeeded, failed, timeout or cancelled", o.as_str())
            );
        }
        assert_eq!(
            RunOutcome::reported("failed", Some(2), None),
            Ok(RunOutcome::Failed { exit_code: Some(2), reason: "exit code 2".into() }),
            "a failure without a reason is named by its exit code"
        );
        assert_eq!(RunOutcome::reported("succeeded", None, None), Ok(RunOutcome::Succeeded { exit_code: 0 }));
        let counts = [
            (Outcome::Succeeded, 5),
            (Outcome::Failed, 2),
            (Outcome::Timeout, 1),
            (Outcome::LeaseExpired, 1),
            (Outcome::Cancelled, 7),
            (Outcome::Limited, 3),
            (Outcome::Parked, 4),
            (Outcome::DecisionTimeout, 6),
        ];
        assert_eq!(Outcome::tally(&counts), (5, 4), "cancelled, limited and set-aside runs are not failures");
    }

    #[test]
    fn a_report_is_a_resend_only_after_its_lease_ended_the_same_way_for_the_same_agent() {
        let (mut t, agent) = task();
        let other = AgentName::parse("b").unwrap();
        let epoch = t.assign(&agent, Millis(1), Duration::from_secs(10)).unwrap();
        t.start(&agent, epoch, Millis(2), Duration::from_secs(30)).unwrap();
        let ok = Outcome::Succeeded;
        assert!(!t.is_resend(&agent, epoch, ok, Some(("a", None))), "the lease is still held: a first report");
        t.finish(&agent, epoch, &RunOutcome::Succeeded { exit_code: 0 }, Millis(3), Duration::ZERO).unwrap();
        assert!(t.is_resend(&agent, epoch, ok, Some(("a", Some(ok)))));
        assert!(!t.is_resend(&agent, epoch, Outcome::Failed, Some(("a", Some(ok)))), "a different end is no resend");
        assert!(!t.is_resend(&other, epoch, ok, Some(("a", Some(ok)))), "nor another agent's report");
        assert!(!t.is_resend(&agent, epoch, ok, Some(("a", None))), "nor one for an attempt left open");
        assert!(!t.is_resend(&agent, epoch, ok, None), "nor one for an attempt never made");
    }

    #[test]
    fn a_task_runs_on_its_leases_fallback_while_it_has_one_and_on_its_own_runner_otherwise() {
        let (mut t, agent) = task();
        assert_eq!(t.runner_in_use().as_str(), "shell");
        t.assign(&agent, Millis(1), Duration::from_secs(5)).expect("assigned");
        assert_eq!(t.runner_in_use().as_str(), "shell", "a lease without a fallback");
        t.lease.as_mut().expect("a lease").runner = Some(RunnerName::parse("codex").unwrap());
        assert_eq!(t.runner_in_use().as_str(), "codex");
        t.lease = None;
        assert_eq!(t.runner_in_use().as_str(), "shell");
    }

    #[test]
    fn skip_reset_and_move_apply_only_where_they_make_sense() {
        let (mut t, agent) = task();
        assert_eq!(t.reprioritise(Priority::Urgent, Millis(1)), Ok(Priority::Normal));
        t.assign(&agent, Millis(2), Duration::from_secs(10)).unwrap();
        assert!(t.skip("no", Millis(3)).is_err(), "a handed-out task is not skipped");
        assert!(t.reset(Millis(3)).is_err(), "nor reset");
        let epoch = t.epoch;
        t.start(&agent, epoch, Millis(3), Duration::from_secs(30)).unwrap();
        t.finish(
            &agent,
            epoch,
            &RunOutcome::Failed { exit_code: Some(1), reason: "x".into() },
            Millis(4),
            Duration::ZERO,
        )
        .unwrap();
        t.reset(Millis(5)).unwrap();
        assert_eq!((t.state, t.attempts, t.finished_at), (TaskState::Queued, 0, None));
        t.skip("covered by another task", Millis(6)).unwrap();
        assert_eq!((t.state, t.reason.as_deref()), (TaskState::Skipped, Some("skipped: covered by another task")));
        assert!(t.state.is_terminal() && t.finished_at == Some(Millis(6)));
        assert!(t.reprioritise(Priority::Low, Millis(7)).is_err(), "a finished task keeps its priority");
        t.reset(Millis(8)).unwrap();
        assert_eq!(t.state, TaskState::Queued, "even a skipped task can be reset");
    }
}
