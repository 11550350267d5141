//! The store's operations as plain functions over one connection, one module
//! per feature.
//!
//! Each write function runs inside the writer's transaction: it loads what
//! it needs, asks `muster-core` whether the change is allowed, saves the
//! result and appends the event, or returns an error and is rolled back.
//! The modules share this one's imports and helpers (`use super::*`), and
//! their functions are reached as `ops::name` whichever module holds them.

use crate::sql::{Connection, OptionalExtension, Owned, Row, params, params_from_iter};
use crate::{Acquire, DecisionRecord, DecisionState, LockMode, LockRecord, LockWait, NewDecision, check_lock_name};
use crate::{
    AgentFlags, AgentRecord, Announce, AppendOutput, AttemptRecord, CostGroup, CostRow, Created, DisabledRunner, Event,
    EventFilter, FinishResult, Heartbeat, MAX_COST_ROWS, MAX_STEP_SUMMARY, MAX_STEPS, NewAgent, NewEvent, NewStep,
    NewToken, OutputChunk, OutputFilter, OutputRecord, Page, Result, RunDetails, RunReport, Scope, StepKind,
    StepRecord, StoreError, Stream, TaskFilter, TaskOp, TokenRecord, Tokens, WorkspaceRecord,
};
use crate::{ChannelRecord, MAX_MESSAGE, MessageRecord, Recipient, check_channel_name};
use crate::{CheckRecord, ConflictRecord, NewConflict, NewPipeline, PipelineRecord, RegressionRecord, StageRecord};
use crate::{Firing, NewSchedule, ScheduleRecord};
use muster_core::backoff::Retry;
use muster_core::breaker::{Admit, Breaker, Change, Policy, Scope as BreakerScope, State as BreakerState};
use muster_core::dispatch::{Claim, Unavailable};
use muster_core::locks::Wait;
use muster_core::task::{Cancel, DependencyPolicy, Disowned, Finished, Reclaimed};
use muster_core::{
    AgentName, AgentStatus, Capability, Epoch, Invalid, Keep, Lease, MicroUsd, Millis, Outcome, Priority, RunOutcome,
    RunnerName, Task, TaskId, TaskSpec, TaskState, TokenId, Workspace,
};
use std::time::Duration;

mod agents;
mod alerts;
mod attempts;
mod breakers;
mod checks;
mod claims;
mod conflicts;
mod decisions;
mod events;
mod followups;
mod hubs;
mod integrity;
mod leases;
mod locks;
mod messages;
mod output;
mod pipelines;
mod runners;
mod schedules;
mod steps;
mod tasks;
mod tokens;
mod upkeep;

pub use agents::*;
pub use alerts::*;
pub use attempts::*;
pub use breakers::*;
pub use checks::*;
pub use claims::*;
pub use conflicts::*;
pub use decisions::*;
pub use events::*;
pub use followups::*;
pub use hubs::*;
pub use integrity::*;
pub use leases::*;
pub use locks::*;
pub use messages::*;
pub use output::*;
pub use pipelines::*;
pub use runners::*;
pub use schedules::*;
pub use steps::*;
pub use tasks::*;
pub use tokens::*;
pub use upkeep::*;

// -- encoding helpers --------------------------------------------------------

/// An instant as events say it to people: `2026-12-07T18:00:00.000Z`.
fn when(at: Millis) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(at.0.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn join<T: AsRef<str>>(items: &[T]) -> String {
    items.iter().map(|i| i.as_ref()).collect::<Vec<_>>().join(" ")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("corrupt {what} in the database: {e}"))
}

fn split<T>(s: &str, parse: impl Fn(&str) -> Result<T, Invalid>) -> Result<Vec<T>> {
    s.split_whitespace().map(|p| parse(p).map_err(|e| corrupt("name list", e))).collect()
}

impl AsRef<str> for crate::records::Scope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// `n` placeholders for an `IN (...)` list. An empty list is a query that
/// returns nothing, which both databases accept (PostgreSQL refuses `IN ()`).
fn placeholders(n: usize) -> String {
    if n == 0 { "SELECT NULL WHERE 1 = 0".to_owned() } else { vec!["?"; n].join(", ") }
}

fn ms(v: Option<i64>) -> Option<Millis> {
    v.map(Millis)
}

/// A macro so that constant queries can be built from it with `concat!`.
macro_rules! task_cols {
    () => {
        "id, prompt, runner, capabilities, priority, timeout_ms, max_attempts, idempotency_key, \
         metadata, state, attempts, epoch, lease_agent, lease_epoch, lease_expires_at, ready_at, cancel_requested, \
         exit_code, reason, agent, created_at, updated_at, started_at, finished_at, seq, repo, base_ref, auto_commit, \
         keep_worktree, fallback, lease_runner, max_cost_micro_usd, max_tokens, shadow_of, requires_approval, \
         depends_on, on_dependency_failure, checks, runs"
    };
}
const TASK_COLS: &str = task_cols!();
/// Loading a task by id is the commonest read of a change: its text is a
/// constant rather than formatted again each time.
const FIND_TASK: &str = concat!("SELECT ", task_cols!(), " FROM tasks WHERE id = ?");
