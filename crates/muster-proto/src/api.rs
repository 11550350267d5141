//! JSON bodies of the REST API under `/api/v1`.
//!
//! Field names here are the public contract; the CLI's `--json` output uses
//! the same shapes.

use crate::{FieldError, human_duration, parse_duration, seconds, timestamp};
use muster_core::{Capability, Priority, RunnerName, Task, TaskSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `POST /api/v1/tasks`
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmit {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::words::maybe_priority)]
    pub priority: Option<String>,
    /// Seconds as a number, or a duration string such as `"10m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Run in a git worktree of this repository: a name the agent maps to
    /// a path, or a path under the agent's repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The ref the worktree starts from (default: the repository's HEAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Commit what the agent leaves uncommitted, on the task's branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_commit: Option<bool>,
    /// `on_failure` (default), `always` or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_worktree: Option<String>,
    /// Runners to use, in order, while `runner` is disabled or its circuit is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// A run that spends more (US dollars) is stopped, reason `budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// A run that uses more tokens (input, output and cache together) is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Also run it on these runners, as shadows compared with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<String>,
    /// A person must approve it (`muster approve`) before it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_approval: Option<bool>,
    /// Tasks that must succeed (or be skipped) before it is queued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// `fail` (default) or `skip`: what becomes of it when a dependency fails or is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dependency_failure: Option<String>,
    /// Commands run in its workspace after the agent succeeds (`NAME=COMMAND`
    /// or `COMMAND`, split like a shell's words, run without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
}

/// A task's workspace, as the API shows it and an assignment carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceView {
    pub repo: String,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub auto_commit: bool,
    pub keep_worktree: String,
}

impl WorkspaceView {
    pub fn from_workspace(w: &muster_core::Workspace) -> WorkspaceView {
        WorkspaceView {
            repo: w.repo.clone(),
            base: w.base.clone(),
            auto_commit: w.auto_commit,
            keep_worktree: w.keep.as_str().to_owned(),
        }
    }

    pub fn to_workspace(&self) -> Result<muster_core::Workspace, FieldError> {
        let w = muster_core::Workspace {
            repo: self.repo.clone(),
            base: self.base.clone(),
            auto_commit: self.auto_commit,
            keep: muster_core::Keep::parse(&self.keep_worktree)?,
        };
        w.validate()?;
        Ok(w)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(f64),
    Text(String),
}

impl DurationValue {
    pub fn to_duration(&self, field: &'static str) -> Result<Duration, FieldError> {
        match self {
            DurationValue::Seconds(s) => seconds(field, *s),
            DurationValue::Text(t) => parse_duration(field, t),
        }
    }
}

/// What the hub fills in when a submission leaves a field out.
#[derive(Debug, Clone)]
pub struct TaskDefaults {
    pub runner: Option<RunnerName>,
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// Most bytes of `metadata` once serialized.
pub const MAX_METADATA_BYTES: usize = 64 << 10;

impl TaskSubmit {
    /// Turns a submission into a validated spec, naming the first bad field.
    pub fn into_spec(self, defaults: &TaskDefaults) -> Result<TaskSpec, FieldError> {
        let runner = match self.runner.as_deref() {
            Some(r) => RunnerName::parse(r)?,
            None => defaults.runner.clone().ok_or_else(|| FieldError {
                field: "runner".into(),
                reason: "is required (this hub has no default runner)".into(),
            })?,
        };
        let capabilities = self.capabilities.iter().map(|c| Capability::parse(c)).collect::<Result<Vec<_>, _>>()?;
        let priority = match self.priority.as_deref() {
            Some(p) => Priority::parse(p)?,
            None => Priority::Normal,
        };
        let timeout = match &self.timeout {
            Some(t) => t.to_duration("timeout")?,
            None => defaults.timeout,
        };
        let metadata = match &self.metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(v @ serde_json::Value::Object(_)) => {
                let text = serde_json::to_string(v).expect("a JSON value serializes");
                if text.len() > MAX_METADATA_BYTES {
                    return Err(FieldError {
                        field: "metadata".into(),
                        reason: format!("is {} bytes; the limit is {MAX_METADATA_BYTES}", text.len()),
                    });
                }
                Some(text)
            }
            Some(_) => {
                return Err(FieldError { field: "metadata".into(), reason: "must be a JSON object".into() });
            }
        };
        let workspace = match self.repo {
            Some(repo) => Some(muster_core::Workspace {
                repo,
                base: self.base,
                auto_commit: self.auto_commit.unwrap_or(false),
                keep: match self.keep_worktree.as_deref() {
                    Some(k) => muster_core::Keep::parse(k)?,
                    None => muster_core::Keep::default(),
                },
            }),
            None if self.base.is_some() || self.auto_commit.is_some() || self.keep_worktree.is_some() => {
                let field = if self.base.is_some() {
                    "base"
                } else if self.auto_commit.is_some() {
                    "auto_commit"
                } else {
                    "keep_worktree"
                };
                return Err(FieldError {
                    field: field.into(),
                    reason: "needs `repo`: it applies to a worktree".into(),
                });
            }
            None => None,
        };
        let fallback = self.fallback.iter().map(|r| RunnerName::parse(r)).collect::<Result<Vec<_>, _>>()?;
        let max_cost = match self.max_cost_usd.map(|c| (c, muster_core::MicroUsd::from_usd(c))) {
            None => None,
            Some((_, Some(m))) if !m.is_zero() => Some(m),
            Some((c, _)) => {
                return Err(FieldError {
                    field: "max_cost_usd".into(),
                    reason: format!("must be a number of dollars above 0, got {c}"),
                });
            }
        };
        let budget = muster_core::task::Budget { max_cost, max_tokens: self.max_tokens };
        let spec = TaskSpec {
            prompt: self.prompt,
            runner,
            capabilities,
            priority,
            timeout,
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            idempotency_key: self.idempotency_key,
            metadata,
            workspace,
            fallback,
            budget,
            shadow_of: None,
            requires_approval: self.requires_approval.unwrap_or(false),
            depends_on: self
                .depends_on
                .iter()
                .map(|d| {
                    muster_core::TaskId::parse(d).map_err(|mut e| {
                        e.field = "depends_on";
                        e
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            on_dependency_failure: match self.on_dependency_failure.as_deref() {
                Some(p) => muster_core::task::DependencyPolicy::parse(p)?,
                None => muster_core::task::DependencyPolicy::default(),
            },
            checks: self.checks.iter().map(|c| muster_core::Check::parse(c)).collect::<Result<Vec<_>, _>>()?,
        };
        Ok(spec.validate()?)
    }
}

/// `DELETE /api/v1/agents/{name}`: the agent removed, and the tasks it
/// held, taken back: each `queued` again, or `failed` or `cancelled` when it
/// had no attempt left or a cancel was pending.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentRemoved {
    pub name: String,
    pub tasks: Vec<TakenBack>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TakenBack {
    pub task: String,
    #[schema(schema_with = crate::words::task_state)]
    pub state: String,
}

/// A task as the API and `--json` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: String,
    #[schema(schema_with = crate::words::task_state)]
    pub state: String,
    #[schema(schema_with = crate::words::priority)]
    pub priority: String,
    pub runner: String,
    pub capabilities: Vec<String>,
    /// Attempts used from the current budget (a retry starts a new one).
    pub attempts: u32,
    pub max_attempts: u32,
    /// Runs started in all, across retries: the number of the latest attempt.
    #[serde(default)]
    pub runs: u32,
    /// The agent of the latest attempt.
    pub agent: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub epoch: u64,
    pub cancel_requested: bool,
    pub timeout: String,
    pub timeout_ms: u64,
    pub idempotency_key: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// The git worktree the task runs in, if any.
    #[serde(default)]
    pub workspace: Option<WorkspaceView>,
    /// Runners used, in order, while its own is disabled or its circuit open.
    #[serde(default)]
    pub fallback: Vec<String>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The task this one shadows.
    #[serde(default)]
    pub shadow_of: Option<String>,
    /// A person approves it before it is queued.
    #[serde(default)]
    pub requires_approval: bool,
    /// Tasks it waits on (while `blocked`).
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub on_dependency_failure: String,
    /// Its checks, as `NAME=COMMAND`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    pub prompt: String,
    pub created_at: String,
    pub updated_at: String,
    pub ready_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub lease_expires_at: Option<String>,
}

impl TaskView {
    pub fn from_task(t: &Task) -> TaskView {
        TaskView {
            id: t.id.to_string(),
            state: t.state.as_str().to_owned(),
            priority: t.spec.priority.as_str().to_owned(),
            runner: t.spec.runner.to_string(),
            capabilities: t.spec.capabilities.iter().map(|c| c.to_string()).collect(),
            attempts: t.attempts,
            runs: t.runs,
            max_attempts: t.spec.max_attempts,
            agent: t.agent.as_ref().map(|a| a.to_string()),
            exit_code: t.exit_code,
            reason: t.reason.clone(),
            epoch: t.epoch.0,
            cancel_requested: t.cancel_requested,
            timeout: human_duration(t.spec.timeout),
            timeout_ms: t.spec.timeout.as_millis() as u64,
            idempotency_key: t.spec.idempotency_key.clone(),
            metadata: t.spec.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
            workspace: t.spec.workspace.as_ref().map(WorkspaceView::from_workspace),
            fallback: t.spec.fallback.iter().map(|r| r.to_string()).collect(),
            max_cost_usd: t.spec.budget.max_cost.map(muster_core::MicroUsd::usd),
            max_tokens: t.spec.budget.max_tokens,
            shadow_of: t.spec.shadow_of.as_ref().map(|s| s.to_string()),
            requires_approval: t.spec.requires_approval,
            depends_on: t.spec.depends_on.iter().map(|d| d.to_string()).collect(),
            on_dependency_failure: t.spec.on_dependency_failure.as_str().to_owned(),
            checks: t.spec.checks.iter().map(muster_core::Check::to_text).collect(),
            prompt: t.spec.prompt.clone(),
            created_at: timestamp(t.created_at),
            updated_at: timestamp(t.updated_at),
            ready_at: timestamp(t.ready_at),
            started_at: t.started_at.map(timestamp),
            finished_at: t.finished_at.map(timestamp),
            lease_expires_at: t.lease.as_ref().map(|l| timestamp(l.expires_at)),
        }
    }
}

/// `POST /api/v1/tasks` answer: 201 with `created: true`, or 200 with the
/// existing task for a repeated idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskCreated {
    pub created: bool,
    pub task: TaskView,
}

/// `POST /api/v1/tasks/batch`: many tasks in one durable change.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBatch {
    pub tasks: Vec<TaskSubmit>,
}

/// What a batch created, in the order submitted.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskBatchCreated {
    pub tasks: Vec<TaskCreated>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `?before=` for the next page.
    pub next: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub number: u32,
    pub epoch: u64,
    pub agent: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[schema(schema_with = crate::words::maybe_outcome)]
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub output_bytes: u64,
    pub output_truncated: bool,
    /// Some of what the run printed never reached the hub (it stopped while
    /// the output was on its way): the transcript may have gaps.
    #[serde(default)]
    pub output_incomplete: bool,
    /// Retention removed this attempt's output.
    #[serde(default)]
    pub output_pruned: bool,
    /// Steps the coding agent reported.
    #[serde(default)]
    pub steps: u64,
    /// The latest of them, live while the attempt runs.
    #[serde(default)]
    pub latest_step: Option<String>,
    /// `working`, `waiting`, `quiet` while the attempt runs; `done` after.
    #[serde(default)]
    #[schema(schema_with = crate::words::maybe_live)]
    pub live: Option<String>,
    /// What the agent said of its status (`no output for 2m`).
    #[serde(default)]
    pub live_detail: Option<String>,
    /// The coding agent's own report of the run: tokens, cost, turns.
    #[serde(default)]
    pub report: Option<crate::ws::RunReport>,
    /// The run's worktree and what changed (the diff itself: `/tasks/{id}/diff`).
    #[serde(default)]
    pub workspace: Option<WorkspaceSummary>,
    /// The runner it ran with: the task's own, or a fallback.
    #[serde(default)]
    pub runner: Option<String>,
    /// What a generic runner's summary pattern found in its output.
    #[serde(default)]
    pub summary: Option<String>,
    /// How the task's checks went on this attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::ws::CheckResult>,
}

/// One runner, from `GET /api/v1/runners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunnerView {
    pub name: String,
    /// `available`, `disabled`, `limited`, `circuit open`, `half-open` or `no agent`.
    pub status: String,
    /// Connected agents that offer it and whose doctor passed it.
    pub agents: Vec<String>,
    pub disabled_reason: Option<String>,
    pub disabled_by: Option<String>,
    pub disabled_at: Option<String>,
    /// For a runner its provider limited: when it is back in service by itself.
    #[serde(default)]
    pub until: Option<String>,
    /// Its circuit breaker, when it has seen a failure.
    pub breaker: Option<String>,
}

/// `POST /api/v1/runners/{name}/disable`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerDisable {
    pub reason: String,
}

/// A run's worktree without its diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceSummary {
    pub repo: String,
    pub branch: String,
    pub base: String,
    pub head: Option<String>,
    pub commits: Vec<CommitView>,
    pub files: Vec<FileView>,
    pub stat: String,
    pub kept_at: Option<String>,
    pub error: Option<String>,
    /// The ref holding what the run left uncommitted; the diff is against it.
    #[serde(default)]
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommitView {
    pub sha: String,
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileView {
    /// git's status letter: A, M, D, R, ...
    pub status: String,
    pub path: String,
}

/// `GET /api/v1/tasks/{id}/diff`: one attempt's change.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiffView {
    pub attempt: u32,
    #[serde(flatten)]
    pub workspace: WorkspaceSummary,
    pub diff: String,
    pub diff_truncated: bool,
}

/// `GET /api/v1/tasks/{id}/steps`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepsPage {
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    pub attempt: u32,
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub step: crate::ws::StepMsg,
}

/// `GET /api/v1/tasks/{id}`: the task with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    pub attempts_detail: Vec<AttemptView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputView {
    pub seq: i64,
    pub attempt: u32,
    pub stream: String,
    pub at: String,
    /// The bytes as UTF-8, with invalid sequences replaced.
    pub data: String,
}

/// `GET /api/v1/tasks/{id}/logs`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogsPage {
    pub chunks: Vec<OutputView>,
    /// Pass as `?after=` to continue.
    pub next_after: i64,
    /// The task has finished: no more output will come.
    pub done: bool,
    pub state: String,
    /// The output asked for was removed by retention (`retention.output`).
    #[serde(default)]
    pub pruned: bool,
}

/// `POST /api/v1/agents`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentAdd {
    pub name: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// The answer to `POST /api/v1/agents`: the only time the token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentCreated {
    pub name: String,
    pub token: String,
    pub token_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentView {
    pub name: String,
    #[schema(schema_with = crate::words::agent_state)]
    pub state: String,
    pub connected: bool,
    pub capabilities: Vec<String>,
    pub runners: Vec<String>,
    pub slots: u32,
    pub used_slots: u32,
    pub paused: bool,
    pub draining: bool,
    pub version: Option<String>,
    /// Runners its doctor failed, each with why: `claude: claude is not on PATH`.
    #[serde(default)]
    pub unavailable: Vec<String>,
    pub token_id: String,
    pub last_seen_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub agent: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub task: Option<String>,
    pub agent: Option<String>,
    pub epoch: Option<u64>,
    pub state: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `?after=` to continue.
    pub next_after: i64,
}

/// The health level and why.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthView {
    /// `HEALTHY`, `DEGRADED` or `UNHEALTHY`.
    pub level: String,
    pub reasons: Vec<String>,
    /// The window judged, in seconds.
    pub window_secs: u64,
    pub succeeded: u64,
    /// Attempts that failed, timed out or lost their lease.
    pub failed: u64,
}

/// A backup file, from `POST` or `GET /api/v1/admin/backups`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupView {
    pub file: String,
    pub path: String,
    pub bytes: u64,
    pub created_at: String,
    /// Tasks in the copy; known for a backup just made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u64>,
}

/// Every runtime setting, from `GET/PUT /api/v1/config`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigView {
    pub settings: Vec<SettingView>,
}

/// One runtime setting.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettingView {
    /// `heartbeat_interval`, `retention.tasks`, `alerts.stuck_tasks.threshold`, ...
    pub key: String,
    /// The value in force: durations as text (`10s`, `off`), counts and
    /// thresholds as numbers, switches as booleans.
    pub value: serde_json::Value,
    /// What flags, the environment, `muster.toml` or the default gave at start.
    pub startup: serde_json::Value,
    /// Set through the API: kept across restarts, and wins over the startup
    /// value until reset (`null` in a `PUT`).
    pub runtime: bool,
    pub description: String,
}

/// The database's size and care, from `GET /api/v1/admin/db`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DbView {
    pub backend: String,
    pub path: Option<String>,
    /// The database file and its write-ahead log, in bytes.
    pub bytes: u64,
    pub wal_bytes: u64,
    pub page_size: u64,
    pub pages: u64,
    pub free_pages: u64,
    /// Share of pages that are free: what a compaction would give back.
    pub free_ratio: f64,
    /// `incremental` once the file gives space back step by step.
    pub auto_vacuum: String,
    pub tasks: u64,
    pub events: u64,
    pub output_bytes: u64,
    pub last_backup: Option<BackupView>,
    pub last_compaction: Option<CompactionView>,
    /// The retention in force (`off` keeps forever) and the compaction schedule.
    pub retention: RetentionView,
    pub compact_interval: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetentionView {
    pub tasks: String,
    pub output: String,
    pub events: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompactionView {
    pub at: String,
    pub summary: String,
}

/// What `POST /api/v1/admin/compact` did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompactView {
    pub tasks_pruned: u64,
    pub outputs_pruned: u64,
    pub output_bytes_pruned: u64,
    pub events_pruned: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The file was rewritten once so that later compactions give space back step by step.
    pub rewritten: bool,
    /// The file reuses freed space but gives none back until an operator's
    /// `muster compact` rewrites it once.
    #[serde(default)]
    pub needs_rewrite: bool,
    pub took_ms: u64,
    pub summary: String,
}

/// One alert rule and its state, from `GET /api/v1/alerts`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertView {
    pub rule: String,
    /// `resolved`, `firing` or `acknowledged`.
    pub state: String,
    pub severity: String,
    pub enabled: bool,
    pub threshold: f64,
    pub detail: Option<String>,
    pub since: Option<String>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<String>,
}

/// A rule's settings, in `GET/PUT /api/v1/config/alerts`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleConfigView {
    pub enabled: bool,
    pub severity: String,
    pub threshold: f64,
    /// What the threshold means.
    pub threshold_meaning: String,
}

/// A change to one rule's settings: only the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfigPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FindingView {
    /// `integrity`, `orphan`, `lease`, `attempt`, `attempts` or `events`.
    pub kind: String,
    pub detail: String,
}

/// `POST /api/v1/admin/check`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckView {
    pub findings: Vec<FindingView>,
    /// What `?repair=true` changed.
    pub repaired: Vec<String>,
    /// What a check after the repair still finds.
    pub remaining: Vec<FindingView>,
}

/// One point of the metrics window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsPoint {
    pub at: String,
    pub queued: u64,
    pub running: u64,
    /// Runs that ended in this interval, per second.
    pub throughput: f64,
    pub succeeded: u64,
    pub failed: u64,
    /// Share of runs ended in this interval that failed (0 to 1); `None` without runs.
    pub failure_rate: Option<f64>,
    /// Queue wait (due to started) percentiles of runs started in this interval, seconds.
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    /// Used slots over the slots of connected agents (0 to 1); `None` without agents.
    pub utilization: Option<f64>,
    /// What the runs that reported their end in this interval cost, in US
    /// dollars (a run sent back to the queue by a provider limit is not counted).
    #[serde(default)]
    pub cost_usd: f64,
}

/// `GET /api/v1/metrics`: the last hour for people.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsWindow {
    pub interval_secs: f64,
    /// Oldest first; at most 360.
    pub points: Vec<MetricsPoint>,
    /// How the queue moved over the last five minutes, in tasks per minute.
    pub queue_trend_per_min: f64,
    /// `rising`, `falling` or `flat`.
    pub queue_trend: String,
}

/// One problem `muster diagnose` found, and what to do about it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiagnosedProblem {
    /// `readiness`, `health`, `alert`, `agent`, `queue`, `dispatch`, `database`, `backup`.
    pub area: String,
    pub what: String,
    pub next_step: String,
}

/// `GET /api/v1/admin/diagnose`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiagnoseView {
    pub health: HealthView,
    pub ready: bool,
    pub agents_online: u64,
    pub agents_registered: u64,
    pub queued: u64,
    pub running: u64,
    pub last_backup_age_secs: Option<u64>,
    pub problems: Vec<DiagnosedProblem>,
    /// Worth knowing, but nothing is wrong: `diagnose` still exits 0.
    #[serde(default)]
    pub notes: Vec<DiagnosedProblem>,
    /// The newest warning and error lines of the hub's log, oldest first.
    pub recent_log: Vec<String>,
}

/// A shadow policy: run a share of the tasks that match on another runner too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowPolicy {
    /// The runner the shadows run on.
    pub runner: String,
    /// The share of matching tasks shadowed, 0 to 100.
    pub percent: f64,
    /// `cap=NAME`, `runner=NAME` or `priority=LEVEL`; a task must match every one.
    #[serde(default)]
    pub filters: Vec<String>,
}

/// `GET /api/v1/shadow/report`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowReport {
    /// Finished pairs compared (the most recent, up to the limit).
    pub pairs: u64,
    /// Pairs whose outcomes agree (both succeeded or both did not).
    pub outcome_matches: u64,
    /// Pairs whose output agrees after normalising whitespace, times and ids.
    pub output_matches: u64,
    /// Both succeeded and their output agrees.
    pub match_rate: f64,
    /// Mean of shadow minus task run time, in milliseconds.
    pub mean_duration_delta_ms: f64,
    /// Mean of shadow minus task cost, in US dollars, over pairs that both reported one.
    pub mean_cost_delta_usd: Option<f64>,
    pub by_runner: Vec<ShadowRunnerRow>,
    pub mismatches: Vec<ShadowMismatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowRunnerRow {
    /// `claude -> codex`
    pub runners: String,
    pub pairs: u64,
    pub match_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowMismatch {
    pub task: String,
    pub shadow: String,
    pub task_runner: String,
    pub shadow_runner: String,
    pub task_state: String,
    pub shadow_state: String,
    /// What differs: outcome, output, or both.
    pub why: String,
}

/// `POST /api/v1/tasks/{id}/skip`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSkip {
    pub reason: String,
}

/// `POST /api/v1/ctl/locks`: take a lock for the run's task.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    pub name: String,
    /// `exclusive` (default) or `shared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// How long to wait for it (`30s`); absent or 0: try once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<DurationValue>,
}

/// `POST /api/v1/ctl/locks/release`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockName {
    pub name: String,
}

/// `POST /api/v1/locks/unlock`: an operator forces one lock free by name,
/// or every lock with `all: true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockForce {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// What `POST /api/v1/locks/unlock` released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unlocked {
    /// How many holds and waits it ended.
    pub released: u64,
}

/// A lock a run now holds (`POST /api/v1/ctl/locks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LockTaken {
    pub name: String,
    /// exclusive or shared.
    pub mode: String,
}

/// A lock held, or waited for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LockView {
    pub name: String,
    pub task: String,
    pub mode: String,
    pub since: String,
    /// For a wait: the tasks it waits on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<String>,
}

/// `GET /api/v1/locks`: who holds what, and who waits for whom.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocksView {
    pub held: Vec<LockView>,
    pub waiting: Vec<LockView>,
}

/// `POST /api/v1/ctl/note`, with a run's task token.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CtlNote {
    pub text: String,
}

/// `POST /api/v1/tasks/{id}/reject`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskReject {
    pub reason: String,
}

/// `POST /api/v1/tasks/{id}/move`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskMove {
    /// urgent, high, normal or low.
    #[schema(schema_with = crate::words::priority)]
    pub priority: String,
}

/// One circuit breaker, from `GET /api/v1/breakers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BreakerView {
    /// `agent` or `runner`.
    pub scope: String,
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failed attempts in a row (closed), or that opened it.
    pub failures: u32,
    pub opened_at: Option<String>,
    /// When an open breaker lets one task through.
    pub half_opens_at: Option<String>,
    /// The task let through while half-open.
    pub probe: Option<String>,
}

/// `GET /api/v1/costs`: tokens and cost summed by task, agent, runner or day.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostsView {
    /// `task`, `agent`, `runner` or `day` (UTC).
    pub by: String,
    /// Attempts that ended at or after this instant.
    pub since: String,
    /// Costliest first.
    pub rows: Vec<CostRowView>,
    /// All the rows together.
    pub total: CostRowView,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostRowView {
    pub key: String,
    /// Attempts whose agent reported what it used.
    pub attempts: u64,
    /// Of those, how many reported a cost (Codex reports none).
    pub priced_attempts: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// One service level objective and how it is doing, from `GET /api/v1/slo`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SloView {
    pub name: String,
    /// `dispatch` (queue wait) or `run` (run time).
    pub kind: String,
    pub threshold_secs: f64,
    /// Share of events that must be good, e.g. 0.995.
    pub target: f64,
    pub window_secs: u64,
    pub good: u64,
    pub total: u64,
    pub sli: Option<f64>,
    /// Share of the error budget left over the window (1 untouched, below 0 overspent).
    pub budget_remaining: f64,
    /// How fast the budget burned over the last hour (1 = just sustainable).
    pub burn_rate_1h: f64,
    /// `ok`, `burning` (burn rate above 1) or `exhausted`.
    pub status: String,
}

/// `GET /api/v1/version`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: String,
    pub api: String,
    pub agent_protocol: u32,
}

/// One of the hub's background workers (`GET /api/v1/admin/workers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerView {
    /// `dispatch`, `handout`, `alerts`, `backups`, `compaction` or `window`.
    pub name: String,
    pub purpose: String,
    /// `waiting` for its next pass, `working` on one, or `stopped`.
    pub state: String,
    /// Passes made since the hub started.
    pub passes: u64,
    /// Passes that failed since the hub started.
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pass_at: Option<String>,
    /// Why the latest pass failed; cleared by the next that succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
    /// When the passes failing now began to fail; absent while it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// How many passes in a row have failed.
    #[serde(default)]
    pub failing_passes: u64,
}

/// A hub on the database (`GET /api/v1/admin/hubs`, and in `/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubView {
    /// New at every start (`h_…`).
    pub id: String,
    /// Stable across restarts (`host:port` unless set).
    pub name: String,
    pub url: String,
    pub version: String,
    pub started_at: String,
    pub last_beat_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Beating and not stopped.
    pub alive: bool,
    /// The hub that answered.
    pub this: bool,
    /// Duties it leads: `reaper`, `schedules`, `deadlines`, `alerts`, `upkeep`.
    pub leads: Vec<String>,
    /// Agents whose sockets it holds.
    pub agents: Vec<String>,
}

/// `GET /api/v1/status`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusView {
    pub version: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub draining: bool,
    pub tasks: BTreeMap<String, u64>,
    pub agents: BTreeMap<String, u64>,
    pub connected_agents: u64,
    pub last_event: i64,
    pub health: HealthView,
    /// An operator paused all dispatch.
    #[serde(default)]
    pub dispatch_paused: bool,
    /// The background workers and how they are doing.
    #[serde(default)]
    pub workers: Vec<WorkerView>,
    /// The hubs on the database, this one first.
    #[serde(default)]
    pub hubs: Vec<HubView>,
}

/// An RFC 9457 problem body, with `field` naming what was wrong.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TaskDefaults {
        TaskDefaults { runner: None, timeout: Duration::from_secs(60), max_attempts: 3 }
    }

    fn submit(json: &str) -> Result<TaskSpec, FieldError> {
        crate::from_json::<TaskSubmit>(json.as_bytes())?.into_spec(&defaults())
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"prompt":"x"}"#, "runner"),
            (r#"{"prompt":"x","runner":"Shell"}"#, "runner"),
            (r#"{"prompt":"x","runner":"shell","priority":"asap"}"#, "priority"),
            (r#"{"prompt":"x","runner":"shell","timeout":0}"#, "timeout"),
            (r#"{"prompt":"x","runner":"shell","timeout":-3}"#, "timeout"),
            (r#"{"prompt":"x","runner":"shell","timeout":"later"}"#, "timeout"),
            (r#"{"prompt":"","runner":"shell"}"#, "prompt"),
            (r#"{"prompt":"x","runner":"shell","max_attempts":0}"#, "max_attempts"),
            (r#"{"prompt":"x","runner":"shell","capabilities":["a b"]}"#, "capabilities"),
            (r#"{"prompt":"x","runner":"shell","metadata":[1]}"#, "metadata"),
            (r#"{"prompt":"x","runner":"shell","max_attempts":-1}"#, "max_attempts"),
        ];
        for (json, field) in cases {
            let err = submit(json).expect_err(json);
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn a_full_submission_parses() {
        let spec = submit(
            r#"{"prompt":"echo hi","runner":"shell","capabilities":["gpu","gpu"],"priority":"high",
                "timeout":"2m","max_attempts":5,"idempotency_key":"k1","metadata":{"ticket":7}}"#,
        )
        .unwrap();
        assert_eq!(spec.priority, Priority::High);
        assert_eq!(spec.timeout, Duration::from_secs(120));
        assert_eq!(spec.capabilities.len(), 1);
        assert_eq!(spec.metadata.as_deref(), Some(r#"{"ticket":7}"#));
    }
}

/// `POST /api/v1/decisions`: an operator asks a person about a queued task.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionAdd {
    pub task: String,
    pub question: String,
    /// Two to twenty; absent: `yes` and `no`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Applied at the timeout; without one the task fails (`decision_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationValue>,
    /// Token names that may answer; absent: any admin token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answerers: Vec<String>,
}

/// `POST /api/v1/ctl/decisions`: a run asks a person.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CtlAsk {
    pub question: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationValue>,
    /// The run stops after asking; the task waits without a slot and runs
    /// again with the answer.
    #[serde(default)]
    pub park: bool,
    /// A coding agent's permission prompt: answered `allow` or `deny`, only
    /// by the tokens `approval.approvers` names.
    #[serde(default)]
    pub permission: bool,
}

/// `POST /api/v1/decisions/{id}/answer`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionAnswer {
    pub option: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A decision as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionView {
    pub id: i64,
    pub task: String,
    pub question: String,
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answerers: Vec<String>,
    pub raised_by: String,
    pub park: bool,
    /// `open`, `answered`, `auto_resolved`, `timed_out` or `withdrawn`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
}

/// `POST /api/v1/pipelines`: a pipeline file to check and run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineRun {
    /// The YAML file's text.
    pub source: String,
    /// Values for `{{vars.NAME}}`, over the file's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

/// One stage of a pipeline and where its task stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageView {
    pub name: String,
    pub task: String,
    #[schema(schema_with = crate::words::task_state)]
    pub state: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// A pipeline: `state` is `succeeded` when every stage did, `failed` when
/// one ended otherwise, `running` while one runs, else `waiting`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineView {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub created_by: String,
    pub created_at: String,
    pub stages: Vec<StageView>,
}

/// `GET /api/v1/conflicts`: two active tasks changing the same files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConflictView {
    pub id: i64,
    pub repo: String,
    pub files: Vec<String>,
    /// The task that goes on.
    pub winner: String,
    /// The task paused while a person decides.
    pub loser: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<i64>,
    /// Absent while open; then `wait` or `go-on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

/// `GET /api/v1/regressions`: a check that passed for an earlier task on a
/// repository and fails now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegressionView {
    pub id: i64,
    pub repo: String,
    pub check: String,
    /// The task, and its commit, that broke it.
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub last_passed_task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_passed_commit: Option<String>,
    pub at: String,
}

/// `POST /api/v1/schedules`: a cron schedule that creates tasks.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleAdd {
    pub name: String,
    /// `MIN HOUR DOM MON DOW`, or with seconds first; `@hourly`, `@daily`, … too.
    pub cron: String,
    /// An IANA time zone (`Europe/Paris`); default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// `skip` (default) or `run_once`: runs missed while the hub was down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<String>,
    /// The task each firing creates.
    pub task: TaskSubmit,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: i64,
    pub name: String,
    pub cron: String,
    pub tz: String,
    pub missed: String,
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<String>,
    pub task: TaskSubmit,
    pub created_by: String,
    pub created_at: String,
}

/// `POST /api/v1/messages` (and `/ctl/messages` from a run).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageSend {
    /// `agent:NAME`, `task:ID` or `channel:NAME`.
    pub to: String,
    pub body: String,
    /// A message this answers: the reply joins its thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: i64,
    pub to: String,
    pub sender: String,
    pub body: String,
    pub thread: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

/// `POST /api/v1/channels`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelAdd {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
    pub messages: u64,
}

/// `POST /api/v1/ui/session`: sign the dashboard in with an admin token.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionStart {
    pub token: String,
}

/// Who a dashboard session is signed in as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The admin token's name.
    pub name: String,
}

/// `PUT /api/v1/admin/log-level`: a tracing filter such as `info` or
/// `muster_hub=debug,info`; the answer is the level now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    pub level: String,
}
