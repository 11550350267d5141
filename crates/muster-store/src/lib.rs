//! Muster's persistence.
//!
//! The hub holds one `Arc<dyn Store>` and knows nothing of SQL. Every
//! operation that changes state is one atomic unit that applies a rule from
//! `muster-core` and appends what happened to the events table; when the
//! future resolves `Ok`, the change is durable on disk.
//!
//! `sqlite` is the embedded backend. `conformance` is the story every
//! backend must tell the same way; a new backend runs it unchanged.

pub mod conformance;
mod engine;
mod location;
pub mod migrate;
mod ops;
pub mod postgres;
mod records;
pub mod sql;
pub mod sqlite;

pub use engine::Engine;
pub use location::Location;
pub use records::*;

use async_trait::async_trait;
use muster_core::backoff::Retry;
use muster_core::task::{Cancel, Finished, Reclaimed};
use muster_core::{AgentName, Epoch, Millis, Outcome, RunOutcome, Task, TaskId, TaskSpec, TokenId};
use std::time::Duration;
use tokio::sync::watch;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What went wrong, named after what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    /// A rule of the core refused the change; nothing was written.
    #[error("{0}")]
    Refused(muster_core::Refused),
    #[error("{0}")]
    Invalid(muster_core::Invalid),
    #[error("database error: {0}")]
    Database(String),
    /// The change collided with concurrent ones (another hub's, on a shared
    /// database) more times than it was retried; nothing was written.
    #[error("the change collided with concurrent changes and was not applied; try again: {0}")]
    Contended(String),
    /// The store is shutting down and takes no more writes.
    #[error("the store is closed")]
    Closed,
    /// The disk has no room for the change; nothing was written. The text
    /// names where the database is.
    #[error("{0}")]
    NoSpace(String),
}

impl StoreError {
    pub fn not_found(what: &'static str, id: impl ToString) -> StoreError {
        StoreError::NotFound { what, id: id.to_string() }
    }
}

/// Settings every backend honours.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Output kept per attempt; what comes after is dropped and the attempt
    /// marked truncated.
    pub max_output_bytes_per_attempt: u64,
    /// Most changes committed in one transaction.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_output_bytes_per_attempt: 4 << 20, max_batch: 512 }
    }
}

/// Whom the store claims for at the end of each batch of changes: the
/// agents connected to the hub, in order, and how long each has to accept.
/// The hub publishes it as it changes; `None` hands nothing out (no agent,
/// dispatch paused, the hub draining). See [`Store::claim_in_batches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    pub agents: Vec<AgentName>,
    pub accept_within: Duration,
}

/// What the store's claims at the end of a batch came to, once committed.
#[derive(Debug)]
pub enum Handout {
    /// Tasks now leased to each agent: the hub sends them out.
    Claimed(Vec<(AgentName, Vec<Task>)>),
    /// A pass failed, or its batch did not commit: what it would have
    /// handed out is still queued, for the hub's dispatch to claim itself.
    Missed,
}

/// Handouts committed and not yet sent. The store's writer pushes a batch's
/// handout before it answers the batch's changes, so a hub that takes what
/// is queued before it sends an agent anything else (a cancel that followed
/// the claim, say) keeps every message in commit order.
#[derive(Default)]
pub struct Handouts {
    queue: std::sync::Mutex<std::collections::VecDeque<Handout>>,
    ready: tokio::sync::Notify,
}

impl Handouts {
    pub fn push(&self, handout: Handout) {
        self.queue.lock().expect("handouts lock poisoned").push_back(handout);
        self.ready.notify_one();
    }

    /// Everything queued, oldest first.
    pub fn take(&self) -> Vec<Handout> {
        self.queue.lock().expect("handouts lock poisoned").drain(..).collect()
    }

    /// Returns once something was pushed since the last call returned.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }
}

/// The in-batch dispatch, as data: the roster comes in, handouts go out.
pub struct BatchClaims {
    pub roster: watch::Receiver<Option<Roster>>,
    /// The hub's clock: nothing is handed out before its time.
    pub clock: std::sync::Arc<dyn muster_core::time::Clock>,
    pub handouts: std::sync::Arc<Handouts>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // -- lifecycle --------------------------------------------------------

    /// Called once when a hub starts on this store: every agent is marked
    /// disconnected (none can be connected to a hub that just started) and
    /// every live lease is extended to `now + grace`, so agents that were
    /// running tasks have time to reconnect and re-attach to them.
    /// `hub` is the hub starting on this store: an earlier run under its
    /// name is over, and only agents whose socket a live hub holds stay
    /// connected. Agents connected through this store from now on are
    /// counted as `hub`'s.
    async fn hub_started(&self, hub: &HubInfo, now: Millis, grace: Duration) -> Result<()>;

    /// The hub (by id) is alive. `true` when it had been counted gone: its
    /// agents were disconnected meanwhile, and it must drop their sockets.
    async fn hub_beat(&self, id: &str, now: Millis) -> Result<bool>;
    /// The hub stops on purpose; the duties it led are free at once.
    async fn hub_stopped(&self, id: &str, now: Millis) -> Result<()>;
    /// Hubs running, and those stopped in the last day, with their agents.
    async fn hubs(&self, now: Millis) -> Result<Vec<HubRecord>>;
    /// Counts gone the hubs whose beats stopped (`hub.lost`): their duties
    /// are freed and their agents disconnected. Fenced by `Duty::Reaper`.
    async fn reap_hubs(&self, now: Millis) -> Result<Vec<HubRecord>>;
    /// Leaves `body` for another hub to pass on (see [`RelayTo`]); returns
    /// how many hubs it was left for: none when no other hub holds the agent.
    async fn relay(&self, to: RelayTo, body: String, now: Millis) -> Result<usize>;
    /// Takes the messages other hubs left for this one, oldest first.
    async fn take_relays(&self) -> Result<Vec<String>>;
    /// Takes or renews a duty for hub `hub`; `None` while another holds it.
    async fn take_duty(&self, duty: Duty, hub: &str, ttl: Duration, now: Millis) -> Result<Option<Fence>>;
    /// Who leads each duty.
    async fn duties(&self) -> Result<Vec<Fence>>;
    /// The duties this hub holds, as it last took them: from now on
    /// `reclaim_expired` and `reap_hubs` (`Reaper`), `fire_schedule`
    /// (`Schedules`), `expire_decisions` (`Deadlines`) and `save_alert`
    /// (`Alerts`) are refused
    /// (`Conflict`) unless the database, in the transaction that would act,
    /// still names this hub with the same epoch. `None` (the default) does
    /// not fence.
    fn hold_duties(&self, held: Option<Vec<Fence>>);

    /// Finishes the batch in flight and stops taking writes.
    async fn close(&self);

    /// Checks that the database answers a query.
    async fn ping(&self) -> Result<()>;

    /// Commits a change that touches nothing else (a row of its own), to
    /// learn whether a commit reaches the disk now.
    async fn probe_write(&self, now: Millis) -> Result<()>;

    /// Runs the database's own integrity check and Muster's invariants; with
    /// `repair`, fixes what can be fixed (in one change) and says what it did.
    async fn check(&self, repair: bool, now: Millis) -> Result<CheckReport>;

    /// The backend's upkeep: backups, compaction, its own statistics.
    fn maintenance(&self) -> &dyn Maintenance;

    // -- tokens -----------------------------------------------------------

    async fn create_token(&self, token: NewToken, now: Millis) -> Result<TokenRecord>;
    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>>;
    /// Starts a dashboard session for `token` until `expires`; `key` is the
    /// hash of its cookie (the cookie itself is never stored). Sessions that
    /// have ended are dropped.
    async fn start_session(&self, key: String, token: TokenId, expires: Millis, now: Millis) -> Result<()>;
    /// The token a live session stands for, and when it ends.
    async fn session(&self, key: String, now: Millis) -> Result<Option<(TokenId, Millis)>>;
    /// Moves a session's end.
    async fn renew_session(&self, key: String, expires: Millis) -> Result<()>;
    /// Ends a session (sign-out).
    async fn end_session(&self, key: String) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn revoke_token(&self, id: &TokenId, now: Millis) -> Result<TokenRecord>;
    /// Records that a token was used, at most once a minute per token.
    async fn touch_token(&self, id: &TokenId, now: Millis) -> Result<()>;

    // -- agents -----------------------------------------------------------

    /// Registers an agent with its token in one step. `Conflict` if the name is taken.
    async fn register_agent(&self, agent: NewAgent, token: NewToken, now: Millis) -> Result<AgentRecord>;
    /// Revokes the agent's current token and gives it `token` instead.
    async fn replace_agent_token(&self, name: &AgentName, token: NewToken, now: Millis) -> Result<AgentRecord>;
    /// Removes an agent: revokes its token and deletes its record, keeping
    /// what its runs left (attempts, events, messages under its name).
    /// Refused (`Conflict`) while it holds leases, unless `force`, which
    /// takes them back (queued again, or failed or cancelled when that is
    /// what their rules say); returns those tasks as they became.
    async fn remove_agent(&self, name: &AgentName, force: bool, by: &str, now: Millis) -> Result<Vec<Task>>;
    async fn agent(&self, name: &AgentName) -> Result<Option<AgentRecord>>;
    async fn list_agents(&self) -> Result<Vec<AgentRecord>>;
    /// A socket for this agent is up. Returns the new session number; a later
    /// disconnect counts only if it names this session.
    async fn agent_connected(&self, name: &AgentName, hello: Announce, now: Millis) -> Result<(AgentRecord, u64)>;
    async fn agent_disconnected(&self, name: &AgentName, session: u64, reason: &str, now: Millis) -> Result<()>;
    /// Sets the agent's own draining flag or an operator's pause.
    async fn set_agent_flags(&self, name: &AgentName, flags: AgentFlags, now: Millis) -> Result<AgentRecord>;
    /// Renews the leases the agent reports holding. Runs the hub does not
    /// know under that epoch come back as stale: the agent must stop them.
    async fn heartbeat(
        &self,
        name: &AgentName,
        runs: &[(TaskId, Epoch)],
        now: Millis,
        lease_ttl: Duration,
    ) -> Result<Heartbeat>;

    // -- tasks ------------------------------------------------------------

    /// Creates a task, or returns the existing one with the same idempotency key.
    async fn create_task(&self, id: TaskId, spec: TaskSpec, now: Millis) -> Result<Created>;
    /// Creates many tasks in one change, all or none: one that is refused
    /// refuses the batch, naming its place in it.
    async fn create_tasks(&self, tasks: Vec<(TaskId, TaskSpec)>, now: Millis) -> Result<Vec<Created>>;
    async fn task(&self, id: &TaskId) -> Result<Option<Task>>;
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Page<Task>>;
    async fn count_tasks(&self) -> Result<Vec<(muster_core::TaskState, u64)>>;
    /// Tasks by state and priority, for metrics; combinations with no task are left out.
    async fn count_tasks_by_priority(&self) -> Result<Vec<(muster_core::TaskState, muster_core::Priority, u64)>>;
    /// Attempts that ended at or after `since`, by outcome (`succeeded`,
    /// `failed`, `timeout`, `cancelled`, `lease_expired`).
    async fn outcomes_since(&self, since: Millis) -> Result<Vec<(Outcome, u64)>>;
    async fn cancel_task(&self, id: &TaskId, now: Millis) -> Result<(Task, Cancel)>;
    async fn retry_task(&self, id: &TaskId, now: Millis) -> Result<Task>;
    /// Skips, resets or reprioritises one task on an operator's word, with an
    /// event naming who (`task.skipped`, `task.reset`, `task.moved`).
    async fn operate_task(&self, id: &TaskId, op: TaskOp, by: &str, now: Millis) -> Result<Task>;

    /// Hands as many due, matching tasks to the agent as it has free slots,
    /// highest priority and oldest first.
    async fn claim_tasks(&self, agent: &AgentName, now: Millis, accept_within: Duration) -> Result<Vec<Task>>;
    /// `claim_tasks` for each agent in turn, all in one change: a dispatch
    /// pass costs one write however many agents are connected. Each agent's
    /// claim stands or falls alone; the answers come in `agents`' order.
    async fn claim_for_agents(
        &self,
        agents: &[AgentName],
        now: Millis,
        accept_within: Duration,
    ) -> Result<Vec<Result<Vec<Task>>>>;
    async fn start_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        now: Millis,
        lease_ttl: Duration,
    ) -> Result<Task>;
    /// The agent turned an assignment down; the task is not handed out again
    /// before `now + retry_after`.
    async fn release_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        reason: &str,
        now: Millis,
        retry_after: Duration,
    ) -> Result<Task>;
    /// Applies a run's outcome. A second report of an outcome already applied
    /// for the same epoch is `Duplicate`, not an error, so agents can resend
    /// until acknowledged. Like `heartbeat` and `append_output`, a report from
    /// the holder of a task still recorded as assigned (its accept was lost)
    /// first starts it. The agent's `details` of the run are kept on the attempt.
    #[allow(clippy::too_many_arguments)] // each is one fact of the report
    async fn finish_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        outcome: &RunOutcome,
        details: RunDetails,
        now: Millis,
        retry: Retry,
    ) -> Result<(Task, FinishResult)>;
    /// Takes back up to `limit` tasks whose leases expired.
    async fn reclaim_expired(&self, now: Millis, limit: usize) -> Result<Vec<(Task, Reclaimed)>>;
    /// The next instant something becomes due on its own: a backoff ending
    /// or a lease expiring.
    async fn next_due(&self) -> Result<Option<Millis>>;
    /// When the earliest lease expires (or expired); `None` when no task holds one.
    async fn next_lease_expiry(&self) -> Result<Option<Millis>>;
    /// When the earliest queued task is (or was) ready to be handed out;
    /// `None` when nothing is queued.
    async fn next_ready(&self) -> Result<Option<Millis>>;

    // -- output -------------------------------------------------------------

    async fn append_output(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        chunks: Vec<OutputChunk>,
        now: Millis,
    ) -> Result<AppendOutput>;
    /// Marks the running attempt's output as truncated: the agent dropped
    /// output past its own cap. Refused like `append_output` for a stale epoch.
    async fn mark_output_truncated(&self, agent: &AgentName, id: &TaskId, epoch: Epoch, now: Millis) -> Result<()>;
    async fn read_output(&self, id: &TaskId, filter: &OutputFilter) -> Result<Vec<OutputRecord>>;
    /// Every attempt of a task; a worktree's diff is left out (see `attempt_diff`).
    async fn attempts(&self, id: &TaskId) -> Result<Vec<AttemptRecord>>;
    /// Takes a runner out of service: nothing more is dispatched to it (tasks
    /// with fallbacks use them), with a `runner.disabled` event. Disabling a
    /// disabled runner replaces its reason.
    async fn disable_runner(&self, name: &muster_core::RunnerName, reason: &str, by: &str, now: Millis) -> Result<()>;
    /// A run's provider limited it (rate or usage limit): the task goes back
    /// to the queue until `until` without spending an attempt (`task.limited`),
    /// and its runner is out of service until then (`runner.limited`), unless
    /// an operator disabled it already. A resend is `Duplicate`.
    #[allow(clippy::too_many_arguments)] // each is one fact of the report
    async fn limit_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        reason: &str,
        until: Millis,
        details: RunDetails,
        now: Millis,
    ) -> Result<(Task, FinishResult)>;
    /// Takes a runner out of service until `until` (a provider's limit, a
    /// daily budget), with a `runner.limited` event; an operator's disable,
    /// and a limit that lasts longer (with who set it), are left as they are.
    async fn limit_runner(
        &self,
        name: &muster_core::RunnerName,
        reason: &str,
        by: &str,
        until: Millis,
        now: Millis,
    ) -> Result<()>;
    /// Puts a disabled or limited runner back in service, with a `runner.enabled` event.
    async fn enable_runner(&self, name: &muster_core::RunnerName, by: &str, now: Millis) -> Result<()>;
    async fn disabled_runners(&self) -> Result<Vec<DisabledRunner>>;
    /// Takes lock `name` for `task` (which must be leased under `epoch`), or
    /// says who holds it: then the task is recorded as waiting, unless `try_only`;
    /// a wait that would close a cycle is refused as a deadlock instead (with a
    /// `lock.deadlock` event). Taking a lock already held only changes its mode.
    #[allow(clippy::too_many_arguments)] // each is one fact of the request
    async fn acquire_lock(
        &self,
        name: &str,
        task: &TaskId,
        epoch: Epoch,
        mode: LockMode,
        try_only: bool,
        now: Millis,
    ) -> Result<Acquire>;
    /// Gives up a lock, or a wait for one; `task` None is an operator's force,
    /// for every holder, with `by` on the timeline.
    async fn release_lock(&self, name: &str, task: Option<&TaskId>, by: &str, now: Millis) -> Result<u64>;
    /// Forgets every lock wait: at start, no request is waiting any more.
    async fn clear_lock_waits(&self) -> Result<u64>;
    /// The task no longer waits for `name` (its wait timed out, or its caller
    /// went away): it leaves the wait-for graph; a lock it holds stays held.
    async fn stop_waiting(&self, name: &str, task: &TaskId) -> Result<()>;
    /// An operator's force: every lock, with one `lock.forced` event each.
    async fn release_all_locks(&self, by: &str, now: Millis) -> Result<u64>;
    async fn locks(&self) -> Result<Vec<LockRecord>>;
    /// Tasks waiting for locks, each with the tasks it waits on: the wait-for graph.
    async fn lock_waits(&self) -> Result<Vec<LockWait>>;
    /// Opens a decision on a task: an operator's (no epoch) moves a queued
    /// task to `needs_decision`; a run's (its epoch) leaves it running.
    async fn open_decision(&self, new: NewDecision, now: Millis) -> Result<(DecisionRecord, Task)>;
    /// A person chooses `option`; the task resumes when nothing else is open.
    async fn answer_decision(
        &self,
        id: i64,
        option: &str,
        note: Option<String>,
        by: &str,
        now: Millis,
    ) -> Result<(DecisionRecord, Task)>;
    /// Applies passed deadlines: the default, or the task fails with `decision_timeout`.
    async fn expire_decisions(&self, now: Millis, limit: usize) -> Result<Vec<(DecisionRecord, Task)>>;
    async fn decision(&self, id: i64) -> Result<Option<DecisionRecord>>;
    /// Open ones first (oldest first), then the latest closed.
    async fn decisions(&self, open_only: bool, task: Option<&TaskId>, limit: usize) -> Result<Vec<DecisionRecord>>;
    async fn next_decision_deadline(&self) -> Result<Option<Millis>>;
    /// Creates every stage's task in one transaction, or none.
    async fn create_pipeline(&self, p: NewPipeline, now: Millis) -> Result<PipelineRecord>;
    async fn pipeline(&self, id: i64) -> Result<Option<PipelineRecord>>;
    /// The newest first.
    async fn pipelines(&self, limit: usize) -> Result<Vec<PipelineRecord>>;
    /// A run's changed files so far; returns the conflicts this finds.
    async fn report_files(
        &self,
        agent: &AgentName,
        task: &TaskId,
        epoch: Epoch,
        files: Vec<String>,
        now: Millis,
    ) -> Result<Vec<NewConflict>>;
    /// Newest first; `open_only`: not yet resolved.
    async fn conflicts(&self, open_only: bool, limit: usize) -> Result<Vec<ConflictRecord>>;
    /// Checks that passed for an earlier task on a repository and fail now; newest first.
    async fn regressions(&self, limit: usize) -> Result<Vec<RegressionRecord>>;
    async fn add_schedule(&self, new: NewSchedule, now: Millis) -> Result<ScheduleRecord>;
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>>;
    /// By id or by name.
    async fn schedule(&self, key: &str) -> Result<Option<ScheduleRecord>>;
    async fn set_schedule_paused(
        &self,
        key: &str,
        paused: bool,
        next_at: Option<Millis>,
        by: &str,
        now: Millis,
    ) -> Result<ScheduleRecord>;
    async fn delete_schedule(&self, key: &str, by: &str, now: Millis) -> Result<ScheduleRecord>;
    async fn due_schedules(&self, now: Millis) -> Result<Vec<ScheduleRecord>>;
    async fn next_schedule_at(&self) -> Result<Option<Millis>>;
    /// Creates the firing's task and moves the schedule on, together; `None`
    /// when it was no longer due as `f.due` says.
    async fn fire_schedule(&self, f: Firing, now: Millis) -> Result<Option<Option<Task>>>;
    async fn create_channel(&self, name: &str, description: &str, by: &str, now: Millis) -> Result<ChannelRecord>;
    async fn channels(&self) -> Result<Vec<ChannelRecord>>;
    /// Stores a message for an agent, a task or a channel (`reply_to` joins its thread).
    async fn send_message(
        &self,
        to: &Recipient,
        sender: &str,
        body: &str,
        reply_to: Option<i64>,
        now: Millis,
    ) -> Result<MessageRecord>;
    async fn messages(
        &self,
        to: &Recipient,
        thread: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>>;
    async fn undelivered(&self, agent: &AgentName) -> Result<Vec<MessageRecord>>;
    async fn mark_delivered(&self, agent: &AgentName, ids: Vec<i64>, now: Millis) -> Result<u64>;
    /// A run read these messages of its task's mailbox.
    async fn mark_read(&self, task: &TaskId, ids: Vec<i64>, now: Millis) -> Result<()>;
    /// A run creates a follow-up task, within limits: 20 per task, 5 deep,
    /// and `per_tree` in the tree of its root task (the task no run
    /// created), counted in the same transaction as the insert. Over the
    /// tree's budget nothing is created and `task.followup_refused` is
    /// recorded on the parent's timeline.
    async fn create_followup(
        &self,
        parent: &TaskId,
        epoch: Epoch,
        id: TaskId,
        spec: TaskSpec,
        per_tree: u64,
        now: Millis,
    ) -> Result<Followup>;
    /// When circuit breakers open and how long they stay open; applied to
    /// every finish, reclaim and claim from now on.
    fn set_breaker_policy(&self, policy: muster_core::breaker::Policy);
    /// Claims for the roster's agents at the end of every batch of changes,
    /// inside that batch's transaction, each pass starting with the next
    /// agent, and sends what was claimed once the batch commits: a task
    /// created, or a slot freed, goes out with the commit that made it
    /// possible instead of waiting for a claim of its own in the batch after.
    /// The store reads the roster and writes handouts; it never calls the hub.
    fn claim_in_batches(&self, claims: BatchClaims);
    /// Every breaker that has seen a failure or been reset, agents first.
    async fn breakers(&self) -> Result<Vec<muster_core::breaker::Breaker>>;
    /// Closes a breaker on an operator's word, with a `breaker.closed` event.
    async fn reset_breaker(
        &self,
        scope: muster_core::breaker::Scope,
        name: &str,
        by: &str,
        now: Millis,
    ) -> Result<muster_core::breaker::Breaker>;
    /// The diff of attempt `number` (1-based) and whether it was cut, when it ran in a worktree.
    async fn attempt_diff(&self, id: &TaskId, number: u32) -> Result<Option<(String, bool)>>;
    /// Records what a coding agent did during the running attempt, with one
    /// `task.step` event naming the latest. Refused like `append_output`.
    /// Past `MAX_STEPS` an attempt's steps are counted, not stored.
    async fn append_steps(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        steps: Vec<NewStep>,
        now: Millis,
    ) -> Result<()>;
    /// Records the running attempt's live status (`working`, `waiting`,
    /// `quiet`) with a `task.live` event. Refused like `append_output`.
    async fn set_live(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        status: muster_core::Live,
        detail: Option<&str>,
        now: Millis,
    ) -> Result<()>;
    /// Finished shadow runs and the finished tasks they shadow, as
    /// (task, shadow), the most recently finished first.
    async fn shadow_pairs(&self, limit: usize) -> Result<Vec<(TaskId, TaskId)>>;
    /// Tokens and cost of attempts that ended at or after `since`, summed by
    /// `by`, costliest first (at most `MAX_COST_ROWS`).
    /// The total, over every attempt and not only the rows listed, comes second.
    async fn costs(&self, by: CostGroup, since: Millis) -> Result<(Vec<CostRow>, CostRow)>;
    /// A task's steps in order, for one attempt (1-based number) or all.
    async fn steps(&self, id: &TaskId, attempt: Option<u32>) -> Result<Vec<StepRecord>>;

    // -- alerts and settings -----------------------------------------------------

    async fn alerts(&self) -> Result<Vec<AlertRecord>>;
    /// Stores an alert's new state; `event` (`alert.firing`, `alert.resolved`)
    /// goes on the timeline with it. Fenced by `Duty::Alerts`.
    async fn save_alert(&self, alert: AlertRecord, event: Option<&'static str>, now: Millis) -> Result<()>;
    /// A person takes a firing alert on. `Invalid` (field `state`) unless it is firing.
    async fn acknowledge_alert(&self, rule: muster_core::alert::Rule, by: &str, now: Millis) -> Result<AlertRecord>;
    /// Settings whose key starts with `prefix`, by key.
    async fn settings(&self, prefix: &str) -> Result<Vec<(String, String)>>;
    /// The value stored under `key`, storing `value` first when there is
    /// none (no event: for values hubs share, such as the task-token key on
    /// PostgreSQL). Every caller gets the first value stored.
    async fn setting_or_insert(&self, key: &str, value: String, now: Millis) -> Result<String>;
    /// Stores settings in one change, with a `config.changed` event naming
    /// the keys. A `None` value removes the key.
    async fn put_settings(&self, pairs: Vec<(String, Option<String>)>, by: &str, now: Millis) -> Result<()>;
    /// `(good, total)` events for a service level objective since `since`.
    async fn slo_counts(&self, kind: SloKind, since: Millis, threshold: Duration) -> Result<(u64, u64)>;
    /// Running tasks that started before `quiet_since` and printed nothing since.
    async fn count_quiet_running(&self, quiet_since: Millis) -> Result<u64>;

    // -- events -------------------------------------------------------------

    async fn record_event(&self, event: NewEvent, now: Millis) -> Result<()>;
    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>>;
    /// The sequence number of the latest committed event, updated after each commit.
    fn subscribe(&self) -> watch::Receiver<i64>;
}

/// What a backend does to keep itself in shape, each in its own way (a
/// file copy and an incremental vacuum for SQLite): not domain operations,
/// so not on [`Store`]. Reached through [`Store::maintenance`].
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Writes a consistent copy of the whole database to `dest` (which must
    /// not exist) while the store keeps running, then verifies the copy.
    async fn backup(&self, dest: &std::path::Path) -> Result<BackupInfo>;

    /// Prunes finished work older than `retention` allows (in small batches,
    /// so other changes keep committing), gives the freed space back to the
    /// file system, and records a `db.compacted` event with what it did.
    /// With `rewrite`, a database that cannot give space back step by step
    /// is rewritten once so that it can (every write waits meanwhile, and
    /// live leases are extended by that wait).
    async fn compact(&self, retention: Retention, rewrite: bool, now: Millis) -> Result<CompactReport>;

    /// The database's size, free space and row counts, and the last compaction.
    async fn db_stats(&self) -> Result<DbStats>;

    /// How the writer has been doing since the store opened.
    fn write_stats(&self) -> WriteStats;
}

/// What a service level objective measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SloKind {
    /// Attempts started within a time of becoming due.
    Dispatch,
    /// Runs (not cancelled) that ended within a time of starting.
    Run,
}

impl SloKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SloKind::Dispatch => "dispatch",
            SloKind::Run => "run",
        }
    }

    pub fn parse(s: &str) -> Option<SloKind> {
        match s {
            "dispatch" => Some(SloKind::Dispatch),
            "run" => Some(SloKind::Run),
            _ => None,
        }
    }
}

/// What `check` found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Each problem found: `(kind, detail)`.
    pub findings: Vec<(String, String)>,
    /// What a repair changed.
    pub repaired: Vec<String>,
}

/// A verified backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub path: std::path::PathBuf,
    pub bytes: u64,
    /// Tasks in the copy.
    pub tasks: u64,
}

/// The writer's statistics, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteStats {
    /// Seconds each commit (the fsync) took.
    pub commit_seconds: muster_metrics::HistogramSnapshot,
    /// Changes per committed batch.
    pub batch_size: muster_metrics::HistogramSnapshot,
    /// Batches whose commit failed.
    pub failed_batches: u64,
    /// Batches applied a second time, each change in a savepoint of its
    /// own, because one of their changes failed after writing.
    pub redone_batches: u64,
    /// Why the latest commit failed, when it did (no commit has succeeded since).
    pub failing: Option<String>,
}

/// What `finish_task` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishResult {
    Applied(Finished),
    /// The same outcome was already applied for this epoch.
    Duplicate,
}
