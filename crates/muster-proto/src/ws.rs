//! The agent WebSocket protocol: JSON text frames, one message each,
//! tagged by `type`.
//!
//! The agent opens `GET /api/v1/agent/connect` with its token in the
//! `Authorization` header and sends `hello` first. The hub answers
//! `welcome`, then `assign`s tasks. The agent `accept`s (or `reject`s) each,
//! streams `output`, and reports `finished`, which it repeats after a
//! reconnect until the hub `ack`s it. Every message about a task carries the
//! lease epoch; the hub drops anything whose epoch is not the task's current
//! lease and tells the agent to `drop` that run.

use serde::{Deserialize, Serialize};

/// Bump when a change is not backward compatible.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame either side sends or accepts. An `assign` carries the prompt
/// (at most 1 MiB) and metadata (at most 64 KiB), and JSON escaping can make a
/// byte six (`\u0001`): this leaves room for the worst case.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRef {
    pub task: String,
    pub epoch: u64,
}

/// One runner's health on its agent's machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunnerDoctor {
    pub name: String,
    /// Whether the hub may hand this runner work.
    pub ok: bool,
    pub program: String,
    /// What `PROGRAM --version` printed, for the built-in runners.
    pub version: Option<String>,
    /// Why it is not usable; empty when `ok`.
    pub problems: Vec<String>,
    /// Environment variable names the runner passes on, and whether each is
    /// set. Names only: values are never read into the report.
    pub env: Vec<(String, bool)>,
}

/// What an agent's doctor found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DoctorReport {
    pub runners: Vec<RunnerDoctor>,
    pub workdir: String,
    pub workdir_writable: bool,
    /// `git --version`, if git is installed.
    pub git: Option<String>,
}

/// Agent → hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMsg {
    Hello {
        protocol: u32,
        version: String,
        capabilities: Vec<String>,
        runners: Vec<String>,
        slots: u32,
        /// Runs this agent still holds, for re-attaching after a reconnect.
        runs: Vec<RunRef>,
        draining: bool,
        /// The agent's doctor results; runners that failed are not dispatched to.
        #[serde(default)]
        doctor: Option<DoctorReport>,
        /// Channels whose posts this agent wants as they happen.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        channels: Vec<String>,
    },
    /// These messages arrived; the hub marks them delivered.
    MessageAck {
        ids: Vec<i64>,
    },
    Heartbeat {
        runs: Vec<RunRef>,
        draining: bool,
    },
    Accept {
        task: String,
        epoch: u64,
    },
    Reject {
        task: String,
        epoch: u64,
        reason: String,
    },
    Output {
        task: String,
        epoch: u64,
        stream: String,
        data: String,
    },
    /// A run's live status changed: `working` (output is arriving),
    /// `waiting` (the agent asked a person for input) or `quiet` (no output
    /// for the runner's quiet limit).
    Live {
        task: String,
        epoch: u64,
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The files a run in a worktree has changed so far (all of them, sorted).
    Files {
        task: String,
        epoch: u64,
        files: Vec<String>,
    },
    /// What a coding agent did since the last `steps` message, in order.
    Steps {
        task: String,
        epoch: u64,
        steps: Vec<StepMsg>,
    },
    Finished {
        task: String,
        epoch: u64,
        /// `succeeded`, `failed`, `timeout` or `cancelled`.
        outcome: String,
        exit_code: Option<i32>,
        reason: Option<String>,
        output_truncated: bool,
        /// `output` messages the agent sent for this run, counting any it had
        /// to drop while away from the hub: the hub compares it with what it
        /// stored and marks the attempt's output incomplete when some is missing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_chunks: Option<u64>,
        /// The coding agent's own account of the run, for runners that read one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<RunReport>,
        /// The run's worktree and what changed in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workspace: Option<Box<WorkspaceReport>>,
        /// The provider refused the run for a rate or usage limit: the task
        /// goes back to the queue without spending an attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<ProviderLimit>,
        /// What a generic runner's summary pattern found in its output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        /// How the task's checks went, when the agent succeeded and it has any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<CheckResult>,
    },
}

impl AgentMsg {
    /// The task a report is about; `None` for messages about the agent itself.
    pub fn task(&self) -> Option<&str> {
        match self {
            AgentMsg::Accept { task, .. }
            | AgentMsg::Reject { task, .. }
            | AgentMsg::Output { task, .. }
            | AgentMsg::Live { task, .. }
            | AgentMsg::Files { task, .. }
            | AgentMsg::Steps { task, .. }
            | AgentMsg::Finished { task, .. } => Some(task),
            AgentMsg::Hello { .. } | AgentMsg::MessageAck { .. } | AgentMsg::Heartbeat { .. } => None,
        }
    }
}

/// One check a task declared, to run after its agent succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckSpec {
    pub name: String,
    pub argv: Vec<String>,
}

/// How one check went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The end of what it printed.
    #[serde(default)]
    pub output: String,
}

/// Steps one `steps` message may carry.
pub const MAX_STEPS_PER_MESSAGE: usize = 1_000;

/// One thing a coding agent did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepMsg {
    /// `session`, `text`, `tool_use`, `tool_result`, `error`, `result` or `unreadable`.
    pub kind: String,
    /// The tool's name for tool steps; the model for `session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub summary: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    /// For a tool result: how long the tool took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A run's worktree and what changed in it, against its base.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceReport {
    pub repo: String,
    pub branch: String,
    pub base: String,
    #[serde(default)]
    pub head: Option<String>,
    /// (sha, subject), oldest first.
    #[serde(default)]
    pub commits: Vec<(String, String)>,
    /// (git status letter, path).
    #[serde(default)]
    pub files: Vec<(String, String)>,
    #[serde(default)]
    pub stat: String,
    #[serde(default)]
    pub diff: String,
    #[serde(default)]
    pub diff_truncated: bool,
    #[serde(default)]
    pub kept_at: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The ref holding what the run left uncommitted (`refs/muster/<task>/<epoch>`).
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// What one run may spend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBudget {
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

/// A provider's rate or usage limit, as a run reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimit {
    /// The agent's own words.
    pub message: String,
    /// When the limit resets, in milliseconds since the Unix epoch, if the message said.
    #[serde(default)]
    pub reset_at_ms: Option<u64>,
}

/// A coding agent's account of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub turns: Option<u32>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// The agent's final message.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub tool_uses: u64,
    #[serde(default)]
    pub tool_errors: u64,
}

/// The close reason a hub gives an agent's socket when another connection
/// for the same agent took its place: another process holds the agent's token.
pub const CLOSE_REPLACED: &str = "replaced by a newer connection";

/// Hub → agent.
// `Assign` is the common message and lives only until it is sent; boxing its
// fields would add an allocation to every one for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HubMsg {
    Welcome {
        agent: String,
        protocol: u32,
        heartbeat_ms: u64,
        lease_ttl_ms: u64,
        /// Output the hub keeps per attempt; the agent forwards no more.
        max_output_bytes: u64,
    },
    Assign {
        task: String,
        epoch: u64,
        runner: String,
        prompt: String,
        timeout_ms: u64,
        metadata: Option<serde_json::Value>,
        /// Run in a git worktree of this repository.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workspace: Option<crate::api::WorkspaceView>,
        /// Stop the run when it spends more than this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<RunBudget>,
        /// The token the run uses to act for its task (`MUSTER_TASK_TOKEN`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_token: Option<String>,
        /// Commands to run in the workspace once the agent has succeeded.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<CheckSpec>,
    },
    /// Kill this run and report `finished` with outcome `cancelled`.
    Cancel {
        task: String,
        epoch: u64,
    },
    /// How many questions the run asked and still waits for; while any,
    /// its silence is not a wedge. Sent on each change and on reconnect.
    Asking {
        task: String,
        epoch: u64,
        open: u32,
    },
    /// A message for this agent (its mailbox), or a post in a channel it follows.
    Message(Box<crate::api::MessageView>),
    /// The hub no longer recognises this run: kill it and do not report it.
    Drop {
        task: String,
        epoch: u64,
        reason: String,
    },
    /// An operator asked this agent to drain: finish its runs, take no new
    /// ones, and stop.
    Drain {
        reason: String,
    },
    /// The heartbeat interval or lease changed at runtime: heartbeat at the
    /// new interval from now on.
    Settings {
        heartbeat_ms: u64,
        lease_ttl_ms: u64,
    },
    /// The `finished` report for this run is durable; stop resending it.
    Ack {
        task: String,
        epoch: u64,
    },
    Error {
        message: String,
    },
}

impl HubMsg {
    /// The assignment of `task` under its current lease.
    pub fn assign(task: &muster_core::Task) -> HubMsg {
        HubMsg::Assign {
            task: task.id.to_string(),
            epoch: task.epoch.0,
            // A fallback, when the lease says so.
            runner: task.runner_in_use().to_string(),
            prompt: task.spec.prompt.clone(),
            timeout_ms: task.spec.timeout.as_millis() as u64,
            metadata: task.spec.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
            workspace: task.spec.workspace.as_ref().map(crate::api::WorkspaceView::from_workspace),
            budget: task.spec.budget.is_set().then_some(RunBudget {
                max_cost_usd: task.spec.budget.max_cost.map(muster_core::MicroUsd::usd),
                max_tokens: task.spec.budget.max_tokens,
            }),
            task_token: None,
            checks: task.spec.checks.iter().map(|c| CheckSpec { name: c.name.clone(), argv: c.argv.clone() }).collect(),
        }
    }
}

/// Parses the outcome fields of a `finished` report.
pub fn parse_outcome(
    outcome: &str,
    exit_code: Option<i32>,
    reason: Option<String>,
) -> Result<muster_core::RunOutcome, crate::FieldError> {
    muster_core::RunOutcome::reported(outcome, exit_code, reason).map_err(crate::FieldError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_possible_assignment_fits_in_a_frame() {
        use muster_core::task::MAX_PROMPT_BYTES;
        use muster_core::{Priority, RunnerName, Task, TaskId, TaskSpec};
        let metadata = format!("{{\"k\":\"{}\"}}", "\\u0001".repeat((crate::api::MAX_METADATA_BYTES - 10) / 6));
        assert!(metadata.len() <= crate::api::MAX_METADATA_BYTES);
        let spec = TaskSpec {
            prompt: "\u{1}".repeat(MAX_PROMPT_BYTES),
            runner: RunnerName::parse("shell").unwrap(),
            capabilities: vec![],
            priority: Priority::Normal,
            timeout: std::time::Duration::from_secs(1),
            max_attempts: 1,
            idempotency_key: Some("k".repeat(muster_core::task::MAX_IDEMPOTENCY_KEY_BYTES)),
            metadata: Some(metadata),
            workspace: None,
            fallback: Vec::new(),
            budget: muster_core::task::Budget::default(),
            shadow_of: None,
            requires_approval: false,
            depends_on: Vec::new(),
            on_dependency_failure: muster_core::task::DependencyPolicy::Fail,
            checks: Vec::new(),
        };
        let task = Task::new(TaskId::from_parts(0, 0), spec.validate().unwrap(), muster_core::Millis(0));
        let frame = crate::to_json(&HubMsg::assign(&task));
        assert!(frame.len() > 6 * MAX_PROMPT_BYTES, "the prompt escapes to six bytes a byte");
        assert!(frame.len() <= MAX_FRAME_BYTES, "{} bytes", frame.len());
    }

    #[test]
    fn frames_are_tagged_by_type() {
        let msg = AgentMsg::Accept { task: "t_x".into(), epoch: 3 };
        let json = crate::to_json(&msg);
        assert_eq!(json, r#"{"type":"accept","task":"t_x","epoch":3}"#);
        assert_eq!(serde_json::from_str::<AgentMsg>(&json).unwrap(), msg);
    }
}
