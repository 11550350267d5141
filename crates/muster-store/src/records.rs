//! Records the store reads and writes, beside the core's `Task`.

use muster_core::{
    AgentName, AgentStatus, Capability, Epoch, MicroUsd, Millis, Outcome, RunnerName, TaskId, TaskState, TokenId,
};
use std::time::Duration;

/// An alert's current state.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub rule: muster_core::alert::Rule,
    pub state: muster_core::alert::AlertState,
    pub severity: muster_core::alert::Severity,
    /// Why it fired, as last evaluated.
    pub detail: Option<String>,
    /// When it last started firing.
    pub since: Option<Millis>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<Millis>,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Agent,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "agent" => Some(Scope::Agent),
            _ => None,
        }
    }
}

/// A token to store: only the SHA-256 of its secret, never the secret.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: TokenId,
    pub name: String,
    pub scope: Scope,
    pub agent: Option<AgentName>,
    /// Lowercase hex SHA-256 of the whole token string.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub name: String,
    pub scope: Scope,
    pub agent: Option<AgentName>,
    pub hash: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: AgentName,
    pub capabilities: Vec<Capability>,
}

/// What an agent says about itself when it connects.
#[derive(Debug, Clone, Default)]
pub struct Announce {
    pub capabilities: Vec<Capability>,
    pub runners: Vec<RunnerName>,
    pub slots: u32,
    pub version: String,
    /// The agent's doctor report as the hub received it (JSON), if it sent one.
    pub doctor: Option<String>,
    /// The runs the agent says it holds, when it said (its `hello`). Every
    /// other task leased to it is taken back at once (`Task::disown`).
    pub holds: Option<Vec<(muster_core::TaskId, muster_core::Epoch)>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AgentFlags {
    pub paused: Option<bool>,
    pub draining: Option<bool>,
}

/// A hub process on the database, as it introduces itself at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubInfo {
    /// New at every start (`h_…`).
    pub id: String,
    /// Stable across restarts (`host:port` unless set): a hub that starts
    /// under the name of one that is still listed replaces it.
    pub name: String,
    /// Where agents and clients reach it.
    pub url: String,
    pub version: String,
    /// How long it may go without a beat before the others count it gone.
    pub ttl: Duration,
    /// No other hub can be on this database (SQLite: the hub locks the
    /// file): every other hub listed is an earlier run, over now.
    pub exclusive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRecord {
    pub id: String,
    pub name: String,
    pub url: String,
    pub version: String,
    pub ttl: Duration,
    pub started_at: Millis,
    pub seen_at: Millis,
    pub stopped_at: Option<Millis>,
    /// Agents whose socket it holds.
    pub agents: Vec<AgentName>,
}

impl HubRecord {
    /// Beating, and not stopped, as of `now`.
    pub fn alive(&self, now: Millis) -> bool {
        self.stopped_at.is_none() && self.seen_at.plus(self.ttl) >= now
    }
}

/// Work that one hub at a time does for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Duty {
    /// Takes back expired leases, and the agents of hubs that stopped beating.
    Reaper,
    /// Fires schedules.
    Schedules,
    /// Applies decision deadlines.
    Deadlines,
    /// Evaluates alert rules.
    Alerts,
    /// Retention and compaction.
    Upkeep,
}

impl Duty {
    pub const ALL: [Duty; 5] = [Duty::Reaper, Duty::Schedules, Duty::Deadlines, Duty::Alerts, Duty::Upkeep];

    pub fn as_str(self) -> &'static str {
        match self {
            Duty::Reaper => "reaper",
            Duty::Schedules => "schedules",
            Duty::Deadlines => "deadlines",
            Duty::Alerts => "alerts",
            Duty::Upkeep => "upkeep",
        }
    }

    pub fn parse(s: &str) -> Option<Duty> {
        Duty::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A duty's lease as the database holds it. `epoch` grows by one at each
/// change of hands: a hub acts for the duty only while the row still names
/// it with the epoch it took (checked in the transaction that acts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub duty: Duty,
    pub hub: String,
    pub epoch: u64,
    pub taken_at: Millis,
    pub expires_at: Millis,
}

/// Whom a hub leaves a message for, to pass on to agents it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTo {
    /// The hub holding this agent's socket.
    Agent(AgentName),
    /// Every other live hub.
    Hubs,
    /// The hub with this id, if it is live and not this one.
    Hub(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub name: AgentName,
    pub token_id: TokenId,
    /// Registered with `agent add --cap`.
    pub registered_capabilities: Vec<Capability>,
    /// Announced by the agent at its latest connect.
    pub announced_capabilities: Vec<Capability>,
    pub runners: Vec<RunnerName>,
    pub version: Option<String>,
    pub status: AgentStatus,
    pub session: u64,
    pub last_seen_at: Option<Millis>,
    pub created_at: Millis,
    /// The doctor report from its latest connect (JSON).
    pub doctor: Option<String>,
}

impl AgentRecord {
    /// Capabilities used for routing: what was registered plus what the agent announced.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut all: Vec<Capability> =
            self.registered_capabilities.iter().chain(&self.announced_capabilities).cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    pub fn offer(&self) -> muster_core::Offer {
        muster_core::Offer { runners: self.runners.clone(), capabilities: self.capabilities() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Runs the agent reported that the hub does not know under that epoch.
    pub stale: Vec<(TaskId, Epoch)>,
    /// Leases renewed.
    pub renewed: usize,
    /// Renewed runs whose task has a cancel pending: the agent must stop them.
    pub cancel: Vec<(TaskId, Epoch)>,
}

#[derive(Debug, Clone)]
pub struct Created {
    pub task: Task,
    /// False when an existing task with the same idempotency key was returned.
    pub created: bool,
}

use muster_core::Task;

/// What became of a run's follow-up task.
#[derive(Debug, Clone)]
pub enum Followup {
    Created(Box<Created>),
    /// The tree of `root` already holds `held` follow-ups, its whole budget.
    OverBudget {
        root: muster_core::TaskId,
        held: u64,
    },
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub agent: Option<AgentName>,
    pub priority: Option<muster_core::Priority>,
    pub runner: Option<RunnerName>,
    /// Tasks that require this capability.
    pub capability: Option<Capability>,
    /// Tasks whose id, prompt or reason contains this, ignoring ASCII case.
    pub text: Option<String>,
    pub limit: usize,
    /// Cursor from a previous page: only tasks created before this one.
    pub before: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutput {
    pub stored_bytes: u64,
    /// True once the attempt's output reached the cap.
    pub truncated: bool,
}

#[derive(Debug, Clone, Default)]
pub struct OutputFilter {
    /// Attempt number (1-based over the task's whole life); `None` for all.
    pub attempt: Option<u32>,
    /// Only chunks after this sequence number.
    pub after: i64,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub seq: i64,
    pub attempt: u32,
    pub stream: Stream,
    pub at: Millis,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1-based, counting every attempt the task ever made.
    pub number: u32,
    pub epoch: Epoch,
    pub agent: AgentName,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    /// How it ended; `None` while running.
    pub outcome: Option<Outcome>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub output_bytes: u64,
    pub output_truncated: bool,
    /// Fewer output chunks reached the store than the agent sent.
    pub output_incomplete: bool,
    /// Retention removed this attempt's output; `output_bytes` says how much there was.
    pub output_pruned: bool,
    /// What the coding agent reported of its run, when the runner reads one.
    pub report: Option<RunReport>,
    /// Steps the agent reported (stored up to `MAX_STEPS`, counted beyond).
    pub steps: u64,
    /// The latest step, for "what is it doing now".
    pub latest_step: Option<String>,
    /// The live status the agent last reported (`working`, `waiting`,
    /// `quiet`), and what it said of it; `None` until it reports one.
    pub live: Option<String>,
    pub live_detail: Option<String>,
    pub workspace: Option<WorkspaceRecord>,
    /// The runner the attempt ran with: the task's own, or a fallback.
    pub runner: Option<String>,
    /// What a generic runner's summary pattern found in its output.
    pub summary: Option<String>,
    /// The task's checks on this attempt, in the order declared.
    pub checks: Vec<CheckRecord>,
}

/// A runner an operator took out of service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledRunner {
    pub name: muster_core::RunnerName,
    pub reason: String,
    pub by: String,
    pub at: Millis,
    /// Back in service at this time by itself (a provider's limit); `None`
    /// until an operator enables it.
    pub until: Option<Millis>,
}

impl DisabledRunner {
    pub fn in_force(&self, now: Millis) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

/// What an agent reports of a run beyond its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunDetails {
    /// The coding agent's own account: tokens, cost, turns.
    pub report: Option<RunReport>,
    /// The run's git worktree and what changed in it.
    pub workspace: Option<WorkspaceRecord>,
    /// What a generic runner's summary pattern found in its output.
    pub summary: Option<String>,
    /// The task's checks, run after the agent succeeded.
    pub checks: Vec<CheckRecord>,
    /// `output` messages the agent says it sent for the run; fewer stored
    /// marks the attempt's output incomplete.
    pub output_chunks: Option<u64>,
}

/// A run's git worktree and what changed in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceRecord {
    /// The repository, as the agent resolved it.
    pub repo: String,
    pub branch: String,
    /// The commit the worktree started from.
    pub base: String,
    /// The branch's commit when the run ended.
    pub head: Option<String>,
    /// Commits made on the branch: (sha, subject), oldest first.
    pub commits: Vec<(String, String)>,
    /// Files changed against the base: (git status letter, path).
    pub files: Vec<(String, String)>,
    /// `git diff --stat` against the base.
    pub stat: String,
    /// The diff against the base, up to the cap.
    pub diff: String,
    pub diff_truncated: bool,
    /// Where the worktree was kept, when the policy kept it.
    pub kept_at: Option<String>,
    /// What went wrong preparing or inspecting the worktree.
    pub error: Option<String>,
    /// The ref holding what the run left uncommitted.
    pub snapshot: Option<String>,
}

/// Tokens a run used, as the agent reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    /// Input read from the provider's prompt cache.
    pub cache_read: u64,
    /// Input written to the provider's prompt cache.
    pub cache_write: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output).saturating_add(self.cache_read).saturating_add(self.cache_write)
    }
}

/// A coding agent's account of one run: who it was, what it used, how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub turns: Option<u32>,
    pub tokens: Tokens,
    /// Cost as the agent reported it.
    pub cost: Option<MicroUsd>,
    /// The agent's final message or result, clipped.
    pub result: Option<String>,
    pub tool_uses: u64,
    pub tool_errors: u64,
}

/// What an operator does to one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOp {
    /// It needs no run: it ends `skipped`.
    Skip { reason: String },
    /// Back to the queue with a fresh budget of attempts.
    Reset,
    /// A new priority.
    Move { priority: muster_core::Priority },
    /// A person approves a task pending approval: it is queued.
    Approve,
    /// A person rejects it: it ends `cancelled`.
    Reject { reason: String },
}

/// What costs are summed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGroup {
    Task,
    Agent,
    Runner,
    /// The UTC day the attempt ended.
    Day,
}

impl CostGroup {
    pub const ALL: [CostGroup; 4] = [CostGroup::Task, CostGroup::Agent, CostGroup::Runner, CostGroup::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            CostGroup::Task => "task",
            CostGroup::Agent => "agent",
            CostGroup::Runner => "runner",
            CostGroup::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<CostGroup> {
        CostGroup::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// Tokens and cost of the attempts that share a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostRow {
    pub key: String,
    /// Attempts whose agent reported what it used.
    pub attempts: u64,
    /// Of those, the ones that reported a cost.
    pub priced: u64,
    pub tokens: Tokens,
    pub cost: MicroUsd,
}

/// Rows `costs` returns at most (the costliest first).
pub const MAX_COST_ROWS: usize = 1_000;

/// Steps stored per attempt; more are counted, not kept.
pub const MAX_STEPS: u64 = 5_000;
/// Characters kept of a step's summary.
pub const MAX_STEP_SUMMARY: usize = 1_000;

/// What kind of thing a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// The agent's session began (summary: session id; name: model).
    Session,
    /// The agent said something.
    Text,
    /// The agent called a tool (name: the tool; summary: what it was asked).
    ToolUse,
    /// A tool answered (name: the tool; duration: how long it took).
    ToolResult,
    /// The agent reported an error.
    Error,
    /// A model request failed and the agent tries again (name: the status,
    /// such as `401`, or else the failure's words).
    Retry,
    /// The agent's final report.
    Result,
    /// A line of the stream could not be read.
    Unreadable,
}

impl StepKind {
    pub const ALL: [StepKind; 8] = [
        StepKind::Session,
        StepKind::Text,
        StepKind::ToolUse,
        StepKind::ToolResult,
        StepKind::Error,
        StepKind::Retry,
        StepKind::Result,
        StepKind::Unreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Session => "session",
            StepKind::Text => "text",
            StepKind::ToolUse => "tool_use",
            StepKind::ToolResult => "tool_result",
            StepKind::Error => "error",
            StepKind::Retry => "retry",
            StepKind::Result => "result",
            StepKind::Unreadable => "unreadable",
        }
    }

    pub fn parse(s: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A step as an agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    pub kind: StepKind,
    pub name: Option<String>,
    pub summary: String,
    pub is_error: bool,
    pub duration_ms: Option<u64>,
}

impl NewStep {
    /// One line for the timeline and "latest step".
    pub fn line(&self) -> String {
        match (&self.name, self.summary.is_empty()) {
            (Some(name), false) => format!("{}: {name}: {}", self.kind.as_str(), self.summary),
            (Some(name), true) => format!("{}: {name}", self.kind.as_str()),
            (None, _) => format!("{}: {}", self.kind.as_str(), self.summary),
        }
    }
}

/// A stored step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub attempt: u32,
    /// 1-based within the attempt.
    pub seq: u64,
    pub at: Millis,
    pub step: NewStep,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub at: Millis,
    pub kind: String,
    pub task: Option<TaskId>,
    pub agent: Option<AgentName>,
    pub epoch: Option<Epoch>,
    pub state: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub kind: &'static str,
    pub task: Option<TaskId>,
    pub agent: Option<AgentName>,
    pub epoch: Option<Epoch>,
    pub state: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub after: i64,
    /// Only events before this sequence number; with it, the page is the
    /// newest `limit` events below it (still oldest first), so a timeline
    /// can be read backwards.
    pub before: Option<i64>,
    pub task: Option<TaskId>,
    pub agent: Option<AgentName>,
    /// An event kind (`task.failed`) or a family of them (`task`, `lock`).
    pub kind: Option<String>,
    pub limit: usize,
}

/// How long finished work is kept. `None` keeps it forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Finished tasks (succeeded, failed, cancelled) with their attempts and output.
    pub tasks: Option<std::time::Duration>,
    /// Output of finished tasks; the tasks and their attempts stay.
    pub output: Option<std::time::Duration>,
    /// Events on the timeline. The newest event is always kept, so event
    /// numbers never go back.
    pub events: Option<std::time::Duration>,
}

/// What a compaction removed and gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub tasks_pruned: u64,
    /// Finished tasks whose output was removed.
    pub outputs_pruned: u64,
    pub output_bytes_pruned: u64,
    pub events_pruned: u64,
    /// Database bytes (file and write-ahead log) before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The file was rewritten once so that later compactions can return
    /// space page by page.
    pub rewritten: bool,
    /// The file cannot give space back until it is rewritten (a compaction
    /// asked for with `rewrite`); freed pages are reused meanwhile.
    pub needs_rewrite: bool,
}

impl CompactReport {
    /// One line for logs and the timeline.
    pub fn summary(&self) -> String {
        format!(
            "pruned {} tasks, output of {} tasks ({} bytes), {} events; {} -> {} bytes{}",
            self.tasks_pruned,
            self.outputs_pruned,
            self.output_bytes_pruned,
            self.events_pruned,
            self.bytes_before,
            self.bytes_after,
            if self.rewritten {
                " (file rewritten)"
            } else if self.needs_rewrite {
                " (space is reused but not given back until muster compact rewrites the file once)"
            } else {
                ""
            }
        )
    }
}

/// The database's size and shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbStats {
    /// `sqlite`.
    pub backend: &'static str,
    /// The database file, where there is one.
    pub path: Option<std::path::PathBuf>,
    /// The database file's bytes.
    pub bytes: u64,
    /// The write-ahead log's bytes.
    pub wal_bytes: u64,
    pub page_size: u64,
    pub pages: u64,
    /// Pages that hold nothing and can be given back by a compaction.
    pub free_pages: u64,
    /// `none`, `full` or `incremental`: how free pages are given back.
    pub auto_vacuum: &'static str,
    pub tasks: u64,
    pub events: u64,
    /// Output bytes kept, over every attempt.
    pub output_bytes: u64,
    pub last_compaction: Option<LastCompaction>,
}

impl DbStats {
    /// Share of the file's pages that are free.
    pub fn free_ratio(&self) -> f64 {
        if self.pages == 0 { 0.0 } else { self.free_pages as f64 / self.pages as f64 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCompaction {
    pub at: Millis,
    pub summary: String,
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Exclusive,
    Shared,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        }
    }

    pub fn parse(s: &str) -> Option<LockMode> {
        match s {
            "exclusive" => Some(LockMode::Exclusive),
            "shared" => Some(LockMode::Shared),
            _ => None,
        }
    }
}

/// One holder of a named lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    pub name: String,
    pub task: TaskId,
    pub mode: LockMode,
    pub since: Millis,
}

/// A task waiting for a lock, and the tasks it waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockWait {
    pub name: String,
    pub task: TaskId,
    pub mode: LockMode,
    pub since: Millis,
    pub holders: Vec<TaskId>,
}

/// What an acquire came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    Acquired,
    /// Held by others in a way that excludes this request; the task now
    /// waits (unless it asked to try only), and the holders are named.
    Busy {
        holders: Vec<TaskId>,
    },
    /// Waiting would close a cycle of tasks waiting on each other: the
    /// request is refused and the cycle named, in order.
    Deadlock {
        cycle: Vec<(TaskId, String)>,
    },
}

/// Longest lock name, in bytes.
pub const MAX_LOCK_NAME: usize = 200;

/// A lock name: 1 to 200 printable characters, no spaces.
pub fn check_lock_name(name: &str) -> std::result::Result<(), muster_core::Invalid> {
    if name.is_empty() || name.len() > MAX_LOCK_NAME || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(muster_core::Invalid::new(
            "name",
            format!("a lock name is 1 to {MAX_LOCK_NAME} characters without spaces, e.g. repo:web/src/api.rs"),
        ));
    }
    Ok(())
}

/// Where a decision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionState {
    Open,
    /// A person chose an option.
    Answered,
    /// Nobody answered in time; the default option applied.
    AutoResolved,
    /// Nobody answered in time and there was no default: its task failed.
    TimedOut,
    /// Its task ended (or was reset) while it was open.
    Withdrawn,
}

impl DecisionState {
    pub const ALL: [DecisionState; 5] = [
        DecisionState::Open,
        DecisionState::Answered,
        DecisionState::AutoResolved,
        DecisionState::TimedOut,
        DecisionState::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionState::Open => "open",
            DecisionState::Answered => "answered",
            DecisionState::AutoResolved => "auto_resolved",
            DecisionState::TimedOut => "timed_out",
            DecisionState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<DecisionState> {
        DecisionState::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A question a person answers by choosing one of its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    pub id: i64,
    /// The task it blocks.
    pub task: TaskId,
    pub question: String,
    pub options: Vec<String>,
    /// Applied when nobody answers by the deadline; without one the task fails.
    pub default: Option<String>,
    pub deadline: Option<Millis>,
    /// Token names that may answer; empty: any admin token.
    pub answerers: Vec<String>,
    /// Who asked: a token name, or the task's own run.
    pub raised_by: String,
    /// Raised by the run under this epoch (`None`: by an operator).
    pub epoch: Option<Epoch>,
    /// The run stops after asking and its task waits without a slot.
    pub park: bool,
    pub state: DecisionState,
    pub answer: Option<String>,
    pub note: Option<String>,
    pub answered_by: Option<String>,
    pub created_at: Millis,
    pub closed_at: Option<Millis>,
}

/// A decision to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDecision {
    pub task: TaskId,
    pub question: String,
    pub options: Vec<String>,
    pub default: Option<String>,
    pub timeout: Option<std::time::Duration>,
    pub answerers: Vec<String>,
    pub raised_by: String,
    /// The asking run's epoch; `None` when an operator raises it on a queued task.
    pub epoch: Option<Epoch>,
    pub park: bool,
}

/// Limits on what a decision may say.
pub const MAX_QUESTION: usize = 4000;
pub const MAX_OPTIONS: usize = 20;
pub const MAX_OPTION: usize = 200;
pub const MAX_DECISION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 86400);

impl NewDecision {
    /// Checks it whole, naming the field at fault.
    pub fn validate(mut self) -> std::result::Result<NewDecision, muster_core::Invalid> {
        use muster_core::Invalid;
        self.question = self.question.trim().to_owned();
        if self.question.is_empty() || self.question.len() > MAX_QUESTION {
            return Err(Invalid::new("question", format!("must be 1 to {MAX_QUESTION} bytes")));
        }
        if self.options.is_empty() {
            self.options = vec!["yes".to_owned(), "no".to_owned()];
        }
        if self.options.len() < 2 || self.options.len() > MAX_OPTIONS {
            return Err(Invalid::new("options", format!("give 2 to {MAX_OPTIONS} options")));
        }
        for o in &mut self.options {
            *o = o.trim().to_owned();
            if o.is_empty() || o.len() > MAX_OPTION || o.chars().any(char::is_control) {
                return Err(Invalid::new("options", format!("an option is 1 to {MAX_OPTION} printable characters")));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.options.iter().find(|o| !seen.insert(o.as_str())) {
            return Err(Invalid::new("options", format!("{dup:?} is given twice")));
        }
        if let Some(d) = &self.default
            && !self.options.contains(d)
        {
            return Err(Invalid::new(
                "default",
                format!("{d:?} is not one of the options ({})", self.options.join(", ")),
            ));
        }
        if let Some(t) = self.timeout
            && (t.is_zero() || t > MAX_DECISION_TIMEOUT)
        {
            return Err(Invalid::new("timeout", "must be more than 0 and at most 30d"));
        }
        for a in &self.answerers {
            if a.is_empty() || a.len() > 64 || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Invalid::new("answerers", format!("{a:?} is not a token name")));
            }
        }
        if self.default.is_some() && self.timeout.is_none() {
            return Err(Invalid::new("default", "a default applies at the timeout: give a timeout too"));
        }
        Ok(self)
    }
}

/// A pipeline to create: its stages' tasks, in order, each depending only on
/// tasks before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPipeline {
    pub name: String,
    /// The file as it was given, kept for `pipeline show`.
    pub source: String,
    pub created_by: String,
    pub stages: Vec<NewStage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStage {
    pub name: String,
    pub task: TaskId,
    pub spec: muster_core::TaskSpec,
    /// Its prompt still names earlier stages' results (`{{stages.NAME.result}}`):
    /// it is filled in when the stage becomes ready.
    pub templated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRecord {
    pub id: i64,
    pub name: String,
    pub created_by: String,
    pub created_at: Millis,
    /// In the file's order.
    pub stages: Vec<StageRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRecord {
    pub name: String,
    pub task: TaskId,
}

/// Two active tasks on one repository changing the same files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRecord {
    pub id: i64,
    pub repo: String,
    /// The files both change, sorted.
    pub files: Vec<String>,
    /// The task that goes on (the higher priority, else the older).
    pub winner: TaskId,
    /// The task paused while a person decides.
    pub loser: TaskId,
    /// The decision asking about it, when the paused task could wait for one.
    pub decision: Option<i64>,
    /// `open` until the decision is answered, then what was chosen (`wait`, `go-on`).
    pub resolution: Option<String>,
    pub created_at: Millis,
    pub resolved_at: Option<Millis>,
}

/// A conflict found by a files report, and what the hub must do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConflict {
    pub conflict: ConflictRecord,
    /// The paused task's run, to be stopped (it is parked when it ends).
    pub stop: Option<(AgentName, Epoch)>,
}

/// How one of a task's checks went on one attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckRecord {
    pub name: String,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The end of what it printed (redacted by the agent).
    pub output: String,
}

/// A check that passed for an earlier task on a repository and fails now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegressionRecord {
    pub id: i64,
    pub repo: String,
    pub check: String,
    /// The task, and its commit, that broke it.
    pub task: TaskId,
    pub commit: Option<String>,
    /// The latest task, and commit, for which it passed.
    pub last_passed_task: TaskId,
    pub last_passed_commit: Option<String>,
    pub at: Millis,
}

/// A cron schedule that creates tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub id: i64,
    pub name: String,
    /// Five fields (minute hour day month weekday), or six with seconds first.
    pub cron: String,
    /// An IANA time zone, `UTC` by default.
    pub tz: String,
    /// The task to create, as the task API's JSON (opaque to the store).
    pub template: String,
    /// `skip` or `run_once`: what becomes of runs missed while the hub was down.
    pub missed: String,
    pub paused: bool,
    /// When it fires next; `None` while paused or when the pattern has no future time.
    pub next_at: Option<Millis>,
    pub last_at: Option<Millis>,
    pub last_task: Option<TaskId>,
    pub created_by: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub tz: String,
    pub template: String,
    pub missed: String,
    pub next_at: Option<Millis>,
    pub created_by: String,
}

/// One firing: the next time, and the task to create (none when missed runs are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub schedule: i64,
    /// The `next_at` the hub saw: another hub that fired it first wins.
    pub due: Millis,
    pub next_at: Option<Millis>,
    pub task: Option<(TaskId, muster_core::TaskSpec)>,
    /// What the timeline says about it (`on time`, `3 runs missed while the hub was down; ran once`).
    pub note: String,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// An agent's mailbox: delivered over its socket when it is connected.
    Agent(AgentName),
    /// A task's mailbox: its runs read it with `muster ctl msg read`.
    Task(TaskId),
    /// A named channel, with history.
    Channel(String),
}

impl Recipient {
    /// `agent:NAME`, `task:ID` or `channel:NAME`.
    pub fn parse(s: &str) -> std::result::Result<Recipient, muster_core::Invalid> {
        let bad = || muster_core::Invalid::new("to", format!("{s:?}: expected agent:NAME, task:ID or channel:NAME"));
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        Ok(match kind {
            "agent" => Recipient::Agent(AgentName::parse(name).map_err(|_| bad())?),
            "task" => Recipient::Task(TaskId::parse(name).map_err(|_| bad())?),
            "channel" => {
                check_channel_name(name).map_err(|e| muster_core::Invalid::new("to", e.reason))?;
                Recipient::Channel(name.to_owned())
            }
            _ => return Err(bad()),
        })
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Agent(a) => write!(f, "agent:{a}"),
            Recipient::Task(t) => write!(f, "task:{t}"),
            Recipient::Channel(c) => write!(f, "channel:{c}"),
        }
    }
}

/// A channel name: 1 to 64 lowercase letters, digits, `-`, `_` or `.`.
pub fn check_channel_name(name: &str) -> std::result::Result<(), muster_core::Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(muster_core::Invalid::new("channel", format!("{name:?}: 1 to 64 lowercase letters, digits, -, _ or .")))
    }
}

/// Longest message body, in bytes.
pub const MAX_MESSAGE: usize = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: i64,
    pub to: Recipient,
    pub sender: String,
    pub body: String,
    /// The first message of its thread (itself, when it starts one).
    pub thread: i64,
    pub reply_to: Option<i64>,
    pub created_at: Millis,
    /// For an agent's mailbox: when its socket took it.
    pub delivered_at: Option<Millis>,
    /// For a task's mailbox: when a run read it.
    pub read_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: Millis,
    pub messages: u64,
}
