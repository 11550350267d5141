//! The store's operations as plain functions over one connection.
//!
//! Each write function runs inside the writer's transaction: it loads what
//! it needs, asks `muster-core` whether the change is allowed, saves the
//! result and appends the event, or returns an error and is rolled back.

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
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use std::time::Duration;

// -- encoding helpers --------------------------------------------------------

fn join<T: AsRef<str>>(items: &[T]) -> String {
    items.iter().map(|i| i.as_ref()).collect::<Vec<_>>().join(" ")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> rusqlite::Error {
    let message = format!("corrupt {what} in the database: {e}");
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

fn split<T>(s: &str, parse: impl Fn(&str) -> Result<T, Invalid>) -> rusqlite::Result<Vec<T>> {
    s.split_whitespace().map(|p| parse(p).map_err(|e| corrupt("name list", e))).collect()
}

impl AsRef<str> for crate::records::Scope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

fn ms(v: Option<i64>) -> Option<Millis> {
    v.map(Millis)
}

/// The columns of one event row, borrowed.
#[derive(Default)]
struct EventRow<'a> {
    task: Option<&'a TaskId>,
    agent: Option<&'a AgentName>,
    epoch: Option<Epoch>,
    state: Option<&'a str>,
    detail: Option<&'a str>,
}

fn insert_event_row(c: &Connection, now: Millis, kind: &str, e: EventRow<'_>) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO events (at, kind, task_id, agent, epoch, state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        now.0,
        kind,
        e.task.map(|t| t.as_str()),
        e.agent.map(|a| a.as_str()),
        e.epoch.map(|e| e.0 as i64),
        e.state,
        e.detail
    ])?;
    Ok(())
}

/// An event about an agent, a token or the hub rather than a task.
fn agent_event(
    c: &Connection,
    now: Millis,
    kind: &str,
    agent: Option<&AgentName>,
    state: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    insert_event_row(c, now, kind, EventRow { agent, state, detail, ..EventRow::default() })
}

pub fn insert_event(c: &Connection, now: Millis, e: &NewEvent) -> Result<()> {
    let row = EventRow {
        task: e.task.as_ref(),
        agent: e.agent.as_ref(),
        epoch: e.epoch,
        state: e.state.as_deref(),
        detail: e.detail.as_deref(),
    };
    insert_event_row(c, now, e.kind, row)
}

/// Appends an event describing `task` as it is now.
fn task_event(c: &Connection, now: Millis, kind: &str, task: &Task, detail: Option<&str>) -> Result<()> {
    let row = EventRow {
        task: Some(&task.id),
        agent: task.agent.as_ref(),
        epoch: (task.epoch.0 > 0).then_some(task.epoch),
        state: Some(task.state.as_str()),
        detail,
    };
    insert_event_row(c, now, kind, row)
}

// -- lifecycle ----------------------------------------------------------------

pub fn hub_started(c: &Connection, now: Millis, grace: Duration) -> Result<()> {
    let names: Vec<String> = c
        .prepare("SELECT name FROM agents WHERE connected = 1")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    c.execute("UPDATE agents SET connected = 0 WHERE connected = 1", [])?;
    for name in names {
        let agent = AgentName::parse(&name).map_err(|e| corrupt("agent name", e))?;
        agent_event(c, now, "agent.disconnected", Some(&agent), Some("offline"), Some("hub restarted"))?;
    }
    let until = now.plus(grace).0;
    let extended = c.execute(
        "UPDATE tasks SET lease_expires_at = ? WHERE lease_expires_at IS NOT NULL AND lease_expires_at < ?",
        params![until, until],
    )?;
    agent_event(c, now, "hub.started", None, None, Some(&format!("{extended} leases extended")))?;
    Ok(())
}

// -- tokens -------------------------------------------------------------------

const TOKEN_COLS: &str = "id, name, scope, agent, hash, created_at, revoked_at, last_used_at";

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let id: String = r.get(0)?;
    let scope: String = r.get(2)?;
    let agent: Option<String> = r.get(3)?;
    Ok(TokenRecord {
        id: TokenId::parse(&id).map_err(|e| corrupt("token id", e))?,
        name: r.get(1)?,
        scope: Scope::parse(&scope).ok_or_else(|| corrupt("token scope", &scope))?,
        agent: agent.map(|a| AgentName::parse(&a)).transpose().map_err(|e| corrupt("agent name", e))?,
        hash: r.get(4)?,
        created_at: Millis(r.get(5)?),
        revoked_at: ms(r.get(6)?),
        last_used_at: ms(r.get(7)?),
    })
}

pub fn create_token(c: &Connection, t: &NewToken, now: Millis) -> Result<TokenRecord> {
    c.execute(
        "INSERT INTO tokens (id, name, scope, agent, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        params![t.id.as_str(), t.name, t.scope.as_str(), t.agent.as_ref().map(|a| a.as_str()), t.hash, now.0],
    )?;
    agent_event(c, now, "token.created", t.agent.as_ref(), None, Some(&format!("{} ({})", t.id, t.name)))?;
    token(c, &t.id)?.ok_or_else(|| StoreError::not_found("token", &t.id))
}

pub fn token(c: &Connection, id: &TokenId) -> Result<Option<TokenRecord>> {
    Ok(c.prepare_cached(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?"))?
        .query_row([id.as_str()], token_row)
        .optional()?)
}

pub fn list_tokens(c: &Connection) -> Result<Vec<TokenRecord>> {
    Ok(c.prepare(&format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_at, id"))?
        .query_map([], token_row)?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn revoke_token(c: &Connection, id: &TokenId, now: Millis) -> Result<TokenRecord> {
    let existing = token(c, id)?.ok_or_else(|| StoreError::not_found("token", id))?;
    if existing.revoked_at.is_some() {
        return Ok(existing);
    }
    c.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", params![now.0, id.as_str()])?;
    agent_event(c, now, "token.revoked", existing.agent.as_ref(), None, Some(&format!("{id} ({})", existing.name)))?;
    token(c, id)?.ok_or_else(|| StoreError::not_found("token", id))
}

pub fn touch_token(c: &Connection, id: &TokenId, now: Millis) -> Result<()> {
    c.prepare_cached("UPDATE tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")?
        .execute(params![now.0, id.as_str(), now.0 - 60_000])?;
    Ok(())
}

// -- agents -------------------------------------------------------------------

const AGENT_COLS: &str = "a.name, a.token_id, a.capabilities, a.announced_capabilities, a.runners, a.slots, \
     a.version, a.connected, a.session, a.paused, a.draining, a.last_seen_at, a.created_at, \
     (SELECT COUNT(*) FROM tasks t WHERE t.lease_agent = a.name), a.doctor";

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    let name: String = r.get(0)?;
    let token_id: String = r.get(1)?;
    let caps: String = r.get(2)?;
    let announced: String = r.get(3)?;
    let runners: String = r.get(4)?;
    let used: i64 = r.get(13)?;
    Ok(AgentRecord {
        name: AgentName::parse(&name).map_err(|e| corrupt("agent name", e))?,
        token_id: TokenId::parse(&token_id).map_err(|e| corrupt("token id", e))?,
        registered_capabilities: split(&caps, Capability::parse)?,
        announced_capabilities: split(&announced, Capability::parse)?,
        runners: split(&runners, RunnerName::parse)?,
        version: r.get(6)?,
        status: AgentStatus {
            connected: r.get(7)?,
            paused: r.get(9)?,
            draining: r.get(10)?,
            slots: r.get(5)?,
            used_slots: used as u32,
        },
        session: r.get::<_, i64>(8)? as u64,
        last_seen_at: ms(r.get(11)?),
        created_at: Millis(r.get(12)?),
        doctor: r.get(14)?,
    })
}

pub fn agent(c: &Connection, name: &AgentName) -> Result<Option<AgentRecord>> {
    Ok(c.prepare_cached(&format!("SELECT {AGENT_COLS} FROM agents a WHERE a.name = ?"))?
        .query_row([name.as_str()], agent_row)
        .optional()?)
}

fn load_agent(c: &Connection, name: &AgentName) -> Result<AgentRecord> {
    agent(c, name)?.ok_or_else(|| StoreError::not_found("agent", name))
}

pub fn list_agents(c: &Connection) -> Result<Vec<AgentRecord>> {
    Ok(c.prepare(&format!("SELECT {AGENT_COLS} FROM agents a ORDER BY a.name"))?
        .query_map([], agent_row)?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn register_agent(c: &Connection, a: &NewAgent, t: &NewToken, now: Millis) -> Result<AgentRecord> {
    if agent(c, &a.name)?.is_some() {
        return Err(StoreError::Conflict(format!("an agent named {:?} already exists", a.name.as_str())));
    }
    create_token(c, t, now)?;
    let mut caps = a.capabilities.clone();
    caps.sort();
    caps.dedup();
    c.execute(
        "INSERT INTO agents (name, token_id, capabilities, created_at) VALUES (?, ?, ?, ?)",
        params![a.name.as_str(), t.id.as_str(), join(&caps.iter().map(|c| c.as_str()).collect::<Vec<_>>()), now.0],
    )?;
    agent_event(c, now, "agent.registered", Some(&a.name), Some("offline"), None)?;
    load_agent(c, &a.name)
}

pub fn replace_agent_token(c: &Connection, name: &AgentName, t: &NewToken, now: Millis) -> Result<AgentRecord> {
    let before = load_agent(c, name)?;
    revoke_token(c, &before.token_id, now)?;
    create_token(c, t, now)?;
    c.execute("UPDATE agents SET token_id = ? WHERE name = ?", params![t.id.as_str(), name.as_str()])?;
    load_agent(c, name)
}

/// Removes an agent: refused while it holds leases, unless `force`, which
/// takes them back. Its token is revoked and its record and circuit
/// breaker deleted; its attempts, events and messages keep its name.
pub fn remove_agent(c: &Connection, name: &AgentName, force: bool, by: &str, now: Millis) -> Result<Vec<Task>> {
    let agent = load_agent(c, name)?;
    let leased: Vec<(String, i64)> = c
        .prepare_cached("SELECT id, lease_epoch FROM tasks WHERE lease_agent = ? ORDER BY id")?
        .query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if !leased.is_empty() && !force {
        let ids: Vec<&str> = leased.iter().map(|(id, _)| id.as_str()).collect();
        return Err(StoreError::Conflict(format!(
            "agent {name} holds {} ({}); let them end (muster agent drain {name}), or remove it with --force, \
             which queues them again",
            if ids.len() == 1 { "a run".to_owned() } else { format!("{} runs", ids.len()) },
            ids.join(", ")
        )));
    }
    let mut taken = Vec::with_capacity(leased.len());
    for (id, epoch) in leased {
        let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
        taken.push(take_back(c, &id, now, None, Some((name, Epoch(epoch as u64), Disowned::Removed)))?.0);
    }
    revoke_token(c, &agent.token_id, now)?;
    c.prepare_cached("DELETE FROM breakers WHERE scope = 'agent' AND name = ?")?.execute([name.as_str()])?;
    c.prepare_cached("DELETE FROM agents WHERE name = ?")?.execute([name.as_str()])?;
    let detail = match taken.len() {
        0 => format!("by {by}"),
        n => format!("by {by}; {n} of its tasks taken back"),
    };
    agent_event(c, now, "agent.removed", Some(name), None, Some(&detail))?;
    Ok(taken)
}

pub fn agent_connected(c: &Connection, name: &AgentName, hello: &Announce, now: Millis) -> Result<(AgentRecord, u64)> {
    let before = load_agent(c, name)?;
    let caps: Vec<&str> = hello.capabilities.iter().map(|c| c.as_str()).collect();
    let runners: Vec<&str> = hello.runners.iter().map(|r| r.as_str()).collect();
    c.prepare_cached(
        "UPDATE agents SET announced_capabilities = ?, runners = ?, slots = ?, version = ?, connected = 1, \
         session = session + 1, draining = 0, last_seen_at = ?, doctor = ? WHERE name = ?",
    )?
    .execute(params![
        join(&caps),
        join(&runners),
        hello.slots,
        hello.version,
        now.0,
        hello.doctor,
        name.as_str()
    ])?;
    let detail = if before.status.connected { "replaced an earlier connection" } else { "connected" };
    let state = load_agent(c, name)?.status.state();
    agent_event(c, now, "agent.connected", Some(name), Some(state.as_str()), Some(detail))?;
    if let Some(holds) = &hello.holds {
        let leased: Vec<(String, i64)> = c
            .prepare_cached("SELECT id, lease_epoch FROM tasks WHERE lease_agent = ?")?
            .query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, epoch) in leased {
            let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
            let epoch = Epoch(epoch as u64);
            if !holds.iter().any(|(t, e)| *t == id && *e == epoch) {
                take_back(c, &id, now, None, Some((name, epoch, Disowned::Reconnected)))?;
            }
        }
    }
    // Read again: taking tasks back frees its slots.
    let after = load_agent(c, name)?;
    let session = after.session;
    Ok((after, session))
}

pub fn agent_disconnected(c: &Connection, name: &AgentName, session: u64, reason: &str, now: Millis) -> Result<()> {
    let changed = c
        .prepare_cached(
            "UPDATE agents SET connected = 0, last_seen_at = ? WHERE name = ? AND session = ? AND connected = 1",
        )?
        .execute(params![now.0, name.as_str(), session as i64])?;
    if changed > 0 {
        agent_event(c, now, "agent.disconnected", Some(name), Some("offline"), Some(reason))?;
    }
    Ok(())
}

pub fn set_agent_flags(c: &Connection, name: &AgentName, flags: AgentFlags, now: Millis) -> Result<AgentRecord> {
    let before = load_agent(c, name)?;
    if let Some(p) = flags.paused {
        c.execute("UPDATE agents SET paused = ? WHERE name = ?", params![p, name.as_str()])?;
    }
    if let Some(d) = flags.draining {
        c.execute("UPDATE agents SET draining = ? WHERE name = ?", params![d, name.as_str()])?;
    }
    let after = load_agent(c, name)?;
    if after.status.state() != before.status.state() {
        let state = after.status.state().as_str();
        agent_event(c, now, "agent.state", Some(name), Some(state), None)?;
    }
    Ok(after)
}

pub fn heartbeat(
    c: &Connection,
    name: &AgentName,
    runs: &[(TaskId, Epoch)],
    now: Millis,
    ttl: Duration,
) -> Result<Heartbeat> {
    let seen = c
        .prepare_cached("UPDATE agents SET last_seen_at = ? WHERE name = ?")?
        .execute(params![now.0, name.as_str()])?;
    if seen == 0 {
        return Err(StoreError::not_found("agent", name));
    }
    let mut out = Heartbeat::default();
    for (id, epoch) in runs {
        let Some(mut task) = find_task(c, id)? else {
            out.stale.push((id.clone(), *epoch));
            continue;
        };
        match task.renew(name, *epoch, now, ttl) {
            Ok(()) => {
                let expires = task.lease.as_ref().map(|l| l.expires_at.0);
                c.prepare_cached("UPDATE tasks SET lease_expires_at = ? WHERE id = ?")?
                    .execute(params![expires, id.as_str()])?;
                out.renewed += 1;
            }
            Err(_) if adopt_lost_accept(c, name, &task, *epoch, now, ttl)? => out.renewed += 1,
            // The agent is waiting for the hub to acknowledge an outcome already
            // applied: nothing to renew, nothing to drop.
            Err(_) if attempt_finished_by(c, name, id, *epoch)? => continue,
            Err(_) => {
                out.stale.push((id.clone(), *epoch));
                continue;
            }
        }
        if task.cancel_requested {
            out.cancel.push((id.clone(), *epoch));
        }
    }
    Ok(out)
}

/// The holder reports on a task still recorded as assigned: its `accept`
/// was lost (the hub stopped before committing it, or the write failed).
/// The run is real, so it counts as started now rather than being run twice.
fn adopt_lost_accept(
    c: &Connection,
    agent: &AgentName,
    task: &Task,
    epoch: Epoch,
    now: Millis,
    ttl: Duration,
) -> Result<bool> {
    if task.state != TaskState::Assigned || !task.lease.as_ref().is_some_and(|l| l.is_held_by(agent, epoch)) {
        return Ok(false);
    }
    start_task(c, agent, &task.id, epoch, now, ttl)?;
    Ok(true)
}

/// Whether `agent`'s attempt under `epoch` has already ended.
fn attempt_finished_by(c: &Connection, agent: &AgentName, id: &TaskId, epoch: Epoch) -> Result<bool> {
    let finished: Option<(String, Option<i64>)> = c
        .prepare_cached("SELECT agent, finished_at FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(matches!(finished, Some((by, Some(_))) if by == agent.as_str()))
}

// -- tasks ----------------------------------------------------------------------

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

fn task_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let id: String = r.get(0)?;
    let runner: String = r.get(2)?;
    let caps: String = r.get(3)?;
    let priority: i64 = r.get(4)?;
    let state: String = r.get(9)?;
    let lease_agent: Option<String> = r.get(12)?;
    let lease_epoch: Option<i64> = r.get(13)?;
    let lease_expires: Option<i64> = r.get(14)?;
    let agent: Option<String> = r.get(19)?;
    let lease_runner: Option<String> = r.get(30)?;
    let lease = match (lease_agent, lease_epoch, lease_expires) {
        (Some(a), Some(e), Some(x)) => Some(Lease {
            agent: AgentName::parse(&a).map_err(|e| corrupt("lease agent", e))?,
            epoch: Epoch(e as u64),
            expires_at: Millis(x),
            runner: lease_runner.map(|r| RunnerName::parse(&r)).transpose().map_err(|e| corrupt("lease runner", e))?,
        }),
        _ => None,
    };
    Ok(Task {
        id: TaskId::parse(&id).map_err(|e| corrupt("task id", e))?,
        spec: TaskSpec {
            prompt: r.get(1)?,
            runner: RunnerName::parse(&runner).map_err(|e| corrupt("runner", e))?,
            capabilities: split(&caps, Capability::parse)?,
            priority: Priority::from_rank(priority).ok_or_else(|| corrupt("priority", priority))?,
            timeout: Duration::from_millis(r.get::<_, i64>(5)? as u64),
            max_attempts: r.get(6)?,
            idempotency_key: r.get(7)?,
            metadata: r.get(8)?,
            workspace: match r.get::<_, Option<String>>(25)? {
                Some(repo) => {
                    let keep: String = r.get(28)?;
                    Some(Workspace {
                        repo,
                        base: r.get(26)?,
                        auto_commit: r.get(27)?,
                        keep: Keep::parse(&keep).map_err(|e| corrupt("keep_worktree", e))?,
                    })
                }
                None => None,
            },
            fallback: split(&r.get::<_, Option<String>>(29)?.unwrap_or_default(), RunnerName::parse)?,
            budget: muster_core::task::Budget {
                max_cost: r.get::<_, Option<i64>>(31)?.map(MicroUsd::from_micros),
                max_tokens: r.get::<_, Option<i64>>(32)?.map(|v| v.max(0) as u64),
            },
            shadow_of: r
                .get::<_, Option<String>>(33)?
                .map(|s| TaskId::parse(&s))
                .transpose()
                .map_err(|e| corrupt("shadow_of", e))?,
            requires_approval: r.get(34)?,
            depends_on: split(&r.get::<_, Option<String>>(35)?.unwrap_or_default(), TaskId::parse)?,
            on_dependency_failure: {
                let p: String = r.get(36)?;
                DependencyPolicy::parse(&p).map_err(|e| corrupt("on_dependency_failure", e))?
            },
            checks: lines(&r.get::<_, String>(37)?)
                .iter()
                .map(|l| muster_core::Check::parse(l))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| corrupt("checks", e))?,
        },
        state: TaskState::parse(&state).map_err(|e| corrupt("task state", e))?,
        attempts: r.get(10)?,
        runs: r.get(38)?,
        epoch: Epoch(r.get::<_, i64>(11)? as u64),
        lease,
        ready_at: Millis(r.get(15)?),
        cancel_requested: r.get(16)?,
        exit_code: r.get(17)?,
        reason: r.get(18)?,
        agent: agent.map(|a| AgentName::parse(&a)).transpose().map_err(|e| corrupt("agent", e))?,
        created_at: Millis(r.get(20)?),
        updated_at: Millis(r.get(21)?),
        started_at: ms(r.get(22)?),
        finished_at: ms(r.get(23)?),
    })
}

pub fn find_task(c: &Connection, id: &TaskId) -> Result<Option<Task>> {
    Ok(c.prepare_cached(FIND_TASK)?.query_row([id.as_str()], task_row).optional()?)
}

fn load_task(c: &Connection, id: &TaskId) -> Result<Task> {
    find_task(c, id)?.ok_or_else(|| StoreError::not_found("task", id))
}

/// Writes back every field a transition may change.
fn save_task(c: &Connection, t: &Task) -> Result<()> {
    let lease = t.lease.as_ref();
    c.prepare_cached(
        "UPDATE tasks SET state = ?, attempts = ?, runs = ?, epoch = ?, lease_agent = ?, lease_epoch = ?, \
         lease_expires_at = ?, lease_runner = ?, ready_at = ?, cancel_requested = ?, exit_code = ?, reason = ?, \
         agent = ?, updated_at = ?, started_at = ?, finished_at = ? WHERE id = ?",
    )?
    .execute(params![
        t.state.as_str(),
        t.attempts,
        t.runs,
        t.epoch.0 as i64,
        lease.map(|l| l.agent.as_str()),
        lease.map(|l| l.epoch.0 as i64),
        lease.map(|l| l.expires_at.0),
        lease.and_then(|l| l.runner.as_ref()).map(|r| r.as_str()),
        t.ready_at.0,
        t.cancel_requested,
        t.exit_code,
        t.reason,
        t.agent.as_ref().map(|a| a.as_str()),
        t.updated_at.0,
        t.started_at.map(|m| m.0),
        t.finished_at.map(|m| m.0),
        t.id.as_str(),
    ])?;
    Ok(())
}

fn refused(r: muster_core::Refused) -> StoreError {
    StoreError::Refused(r)
}

pub fn create_task(c: &Connection, id: TaskId, spec: TaskSpec, now: Millis) -> Result<Created> {
    let spec = spec.validate().map_err(StoreError::Invalid)?;
    if let Some(key) = &spec.idempotency_key {
        let existing: Option<String> = c
            .prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(existing) = existing {
            let id = TaskId::parse(&existing).map_err(|e| corrupt("task id", e))?;
            return Ok(Created { task: load_task(c, &id)?, created: false });
        }
    }
    for dep in &spec.depends_on {
        if find_task(c, dep)?.is_none() {
            return Err(StoreError::Invalid(Invalid::new("depends_on", format!("no task {dep}"))));
        }
    }
    let task = Task::new(id, spec, now);
    let caps: Vec<&str> = task.spec.capabilities.iter().map(|c| c.as_str()).collect();
    c.prepare_cached(
        "INSERT INTO tasks (id, prompt, runner, capabilities, priority, timeout_ms, max_attempts, idempotency_key, \
         metadata, state, attempts, epoch, ready_at, cancel_requested, created_at, updated_at, repo, base_ref, \
         auto_commit, keep_worktree, fallback, max_cost_micro_usd, max_tokens, shadow_of, requires_approval, depends_on, \
         on_dependency_failure) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        task.id.as_str(),
        task.spec.prompt,
        task.spec.runner.as_str(),
        join(&caps),
        task.spec.priority.rank(),
        task.spec.timeout.as_millis() as i64,
        task.spec.max_attempts,
        task.spec.idempotency_key,
        task.spec.metadata,
        task.state.as_str(),
        task.ready_at.0,
        now.0,
        now.0,
        task.spec.workspace.as_ref().map(|w| w.repo.as_str()),
        task.spec.workspace.as_ref().and_then(|w| w.base.as_deref()),
        task.spec.workspace.as_ref().is_some_and(|w| w.auto_commit),
        task.spec.workspace.as_ref().map(|w| w.keep.as_str()),
        (!task.spec.fallback.is_empty()).then(|| task
            .spec
            .fallback
            .iter()
            .map(RunnerName::as_str)
            .collect::<Vec<_>>()
            .join(" ")),
        task.spec.budget.max_cost.map(MicroUsd::micros_i64),
        task.spec.budget.max_tokens.map(|v| v.min(i64::MAX as u64) as i64),
        task.spec.shadow_of.as_ref().map(|t| t.as_str()),
        task.spec.requires_approval,
        (!task.spec.depends_on.is_empty())
            .then(|| task.spec.depends_on.iter().map(TaskId::as_str).collect::<Vec<_>>().join(" ")),
        task.spec.on_dependency_failure.as_str(),
    ])?;
    if !task.spec.checks.is_empty() {
        let text: Vec<String> = task.spec.checks.iter().map(muster_core::Check::to_text).collect();
        c.prepare_cached("UPDATE tasks SET checks = ? WHERE id = ?")?
            .execute(params![text.join("\n"), task.id.as_str()])?;
    }
    let mut insert_cap = c.prepare_cached("INSERT INTO task_caps (task_id, cap) VALUES (?, ?)")?;
    for cap in &caps {
        insert_cap.execute(params![task.id.as_str(), cap])?;
    }
    task_event(c, now, "task.created", &task, Some(task.spec.priority.as_str()))?;
    let mut insert_dep = c.prepare_cached("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)")?;
    for dep in &task.spec.depends_on {
        insert_dep.execute(params![task.id.as_str(), dep.as_str()])?;
    }
    // Dependencies that have already ended decide at once.
    let task = if task.state == TaskState::Blocked { settle_blocked(c, task, now)? } else { task };
    Ok(Created { task, created: true })
}

/// Creates every task or none (the writer rolls a failed change back whole);
/// a refusal names the task's place in the batch.
pub fn create_tasks(c: &Connection, tasks: Vec<(TaskId, TaskSpec)>, now: Millis) -> Result<Vec<Created>> {
    let mut created = Vec::with_capacity(tasks.len());
    for (i, (id, spec)) in tasks.into_iter().enumerate() {
        match create_task(c, id, spec, now) {
            Ok(one) => created.push(one),
            Err(StoreError::Invalid(e)) => {
                return Err(StoreError::Invalid(Invalid::new(e.field, format!("task {i} of the batch: {}", e.reason))));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Whether a dependency in `state` lets its dependents go on: it succeeded,
/// or an operator decided it needs no run.
fn satisfies(state: TaskState) -> bool {
    matches!(state, TaskState::Succeeded | TaskState::Skipped)
}

/// A blocked task whose dependencies have all ended well is unblocked; one
/// with a dependency that ended badly fails or is skipped, by its policy.
/// Returns the task as it is now; its own dependents follow it.
fn settle_blocked(c: &Connection, mut task: Task, now: Millis) -> Result<Task> {
    let mut failed: Option<TaskId> = None;
    let mut waiting = false;
    for dep in &task.spec.depends_on {
        match find_task(c, dep)?.map(|d| d.state) {
            Some(state) if satisfies(state) => {}
            Some(state) if state.is_terminal() => {
                failed = Some(dep.clone());
                break;
            }
            // A dependency pruned by retention had ended long ago: only finished tasks are pruned.
            None => {}
            Some(_) => waiting = true,
        }
    }
    if let Some(dep) = failed {
        let ended = task.dependency_failed(&dep, now).map_err(refused)?;
        save_task(c, &task)?;
        let kind = if ended == TaskState::Skipped { "task.skipped" } else { "task.failed" };
        task_event(c, now, kind, &task, task.reason.as_deref())?;
        settle_dependents(c, &task, now)?;
    } else if !waiting {
        render_stage(c, &mut task)?;
        task.unblock(now).map_err(refused)?;
        save_task(c, &task)?;
        task_event(c, now, "task.unblocked", &task, Some("every dependency succeeded"))?;
    }
    Ok(task)
}

/// After `task` changed: decisions nobody waits for any more are withdrawn,
/// and the tasks that depend on it are settled.
fn settle(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    withdraw_decisions(c, task, now)?;
    release_conflicts(c, task, now)?;
    settle_dependents(c, task, now)
}

/// After `task` changed: when it has ended, the tasks blocked on it go on,
/// fail or are skipped, and so on down the chain.
fn settle_dependents(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    if !task.state.is_terminal() {
        return Ok(());
    }
    let dependents: Vec<String> = c
        .prepare_cached("SELECT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ? AND t.state = 'blocked'")?
        .query_map([task.id.as_str()], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in dependents {
        let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
        let dependent = load_task(c, &id)?;
        if dependent.state == TaskState::Blocked {
            settle_blocked(c, dependent, now)?;
        }
    }
    Ok(())
}

pub fn list_tasks(c: &Connection, f: &TaskFilter) -> Result<Page<Task>> {
    let limit = f.limit.clamp(1, 1000);
    let mut sql = format!("SELECT {TASK_COLS} FROM tasks WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(state) = f.state {
        sql.push_str(" AND state = ?");
        args.push(state.as_str().to_owned().into());
    }
    if let Some(agent) = &f.agent {
        sql.push_str(" AND agent = ?");
        args.push(agent.as_str().to_owned().into());
    }
    if let Some(priority) = f.priority {
        sql.push_str(" AND priority = ?");
        args.push(priority.rank().into());
    }
    if let Some(runner) = &f.runner {
        sql.push_str(" AND runner = ?");
        args.push(runner.as_str().to_owned().into());
    }
    if let Some(cap) = &f.capability {
        sql.push_str(" AND EXISTS (SELECT 1 FROM task_caps c WHERE c.task_id = tasks.id AND c.cap = ?)");
        args.push(cap.as_str().to_owned().into());
    }
    if let Some(text) = f.text.as_deref().filter(|t| !t.is_empty()) {
        sql.push_str(" AND (id LIKE ? ESCAPE '\\' OR prompt LIKE ? ESCAPE '\\' OR reason LIKE ? ESCAPE '\\')");
        let pattern = format!("%{}%", like_escaped(text));
        for _ in 0..3 {
            args.push(pattern.clone().into());
        }
    }
    if let Some(before) = f.before {
        sql.push_str(" AND seq < ?");
        args.push(before.into());
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(((limit + 1) as i64).into());
    let mut stmt = c.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut items = Vec::new();
    let mut seqs = Vec::new();
    while let Some(row) = rows.next()? {
        seqs.push(row.get::<_, i64>(24)?);
        items.push(task_row(row)?);
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        Some(seqs[limit - 1])
    } else {
        None
    };
    Ok(Page { items, next })
}

/// `text` for a LIKE pattern with `ESCAPE '\\'`: its own `%` and `_` taken literally.
fn like_escaped(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p
}

pub fn count_tasks(c: &Connection) -> Result<Vec<(TaskState, u64)>> {
    let mut counts: Vec<(TaskState, u64)> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
    let mut stmt = c.prepare("SELECT state, COUNT(*) FROM tasks GROUP BY state")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let state: String = row.get(0)?;
        let n: i64 = row.get(1)?;
        let state = TaskState::parse(&state).map_err(|e| corrupt("task state", e))?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = n as u64;
        }
    }
    Ok(counts)
}

pub fn count_tasks_by_priority(c: &Connection) -> Result<Vec<(TaskState, Priority, u64)>> {
    let mut stmt = c.prepare("SELECT state, priority, COUNT(*) FROM tasks GROUP BY state, priority")?;
    let rows = stmt.query_map([], |r| {
        let state: String = r.get(0)?;
        let priority: i64 = r.get(1)?;
        Ok((
            TaskState::parse(&state).map_err(|e| corrupt("task state", e))?,
            Priority::from_rank(priority).ok_or_else(|| corrupt("priority", priority))?,
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn outcomes_since(c: &Connection, since: Millis) -> Result<Vec<(Outcome, u64)>> {
    let mut stmt = c.prepare_cached(
        "SELECT outcome, COUNT(*) FROM attempts WHERE finished_at >= ? AND outcome IS NOT NULL \
         GROUP BY outcome ORDER BY outcome",
    )?;
    let rows = stmt.query_map([since.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.map(|row| {
        let (word, n) = row?;
        Ok((Outcome::parse(&word).map_err(|e| corrupt("attempt outcome", e))?, n))
    })
    .collect()
}

/// `(good, total)` attempts for a service level objective since `since`:
/// `dispatch` counts attempts started, good when they waited at most
/// `threshold_ms` in the queue; `run` counts runs ended (not cancelled), good
/// when they took at most `threshold_ms`.
pub fn slo_counts(c: &Connection, kind: crate::SloKind, since: Millis, threshold_ms: i64) -> Result<(u64, u64)> {
    let sql = match kind {
        crate::SloKind::Dispatch => {
            "SELECT COALESCE(SUM(waited_ms <= ?2), 0), COUNT(*) FROM attempts WHERE started_at >= ?1 AND waited_ms IS NOT NULL"
        }
        crate::SloKind::Run => {
            "SELECT COALESCE(SUM(finished_at - started_at <= ?2), 0), COUNT(*) FROM attempts \
             WHERE finished_at >= ?1 AND outcome IN ('succeeded', 'failed', 'timeout')"
        }
    };
    let (good, total): (i64, i64) =
        c.prepare_cached(sql)?.query_row(params![since.0, threshold_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((good as u64, total as u64))
}

pub fn cancel_task(c: &Connection, id: &TaskId, now: Millis) -> Result<(Task, Cancel)> {
    let mut task = load_task(c, id)?;
    let outcome = task.cancel(now).map_err(refused)?;
    save_task(c, &task)?;
    match &outcome {
        Cancel::Done { .. } => task_event(c, now, "task.cancelled", &task, None)?,
        Cancel::Requested { .. } => task_event(c, now, "task.cancel_requested", &task, None)?,
    }
    if task.state.is_terminal() {
        release_task_locks(c, &task, now)?;
    }
    settle(c, &task, now)?;
    Ok((task, outcome))
}

pub fn retry_task(c: &Connection, id: &TaskId, now: Millis) -> Result<Task> {
    let mut task = load_task(c, id)?;
    task.retry(now).map_err(refused)?;
    save_task(c, &task)?;
    task_event(c, now, "task.retried", &task, None)?;
    Ok(task)
}

pub fn operate_task(c: &Connection, id: &TaskId, op: &TaskOp, by: &str, now: Millis) -> Result<Task> {
    let mut task = load_task(c, id)?;
    let (kind, detail) = match op {
        TaskOp::Skip { reason } => {
            let reason = clip(reason.trim(), 500);
            if reason.is_empty() {
                return Err(StoreError::Invalid(Invalid::new("reason", "must say why the task is skipped")));
            }
            task.skip(&reason, now).map_err(refused)?;
            ("task.skipped", format!("{reason} (by {by})"))
        }
        TaskOp::Reset => {
            task.reset(now).map_err(refused)?;
            ("task.reset", format!("attempts cleared (by {by})"))
        }
        TaskOp::Approve => {
            task.approve(now).map_err(refused)?;
            ("task.approved", format!("by {by}"))
        }
        TaskOp::Reject { reason } => {
            let reason = clip(reason.trim(), 500);
            if reason.is_empty() {
                return Err(StoreError::Invalid(Invalid::new("reason", "must say why the task is rejected")));
            }
            task.reject(&reason, now).map_err(refused)?;
            ("task.rejected", format!("{reason} (by {by})"))
        }
        TaskOp::Move { priority } => {
            let was = task.reprioritise(*priority, now).map_err(refused)?;
            c.prepare_cached("UPDATE tasks SET priority = ? WHERE id = ?")?
                .execute(params![priority.rank(), id.as_str()])?;
            ("task.moved", format!("{} -> {} (by {by})", was.as_str(), priority.as_str()))
        }
    };
    save_task(c, &task)?;
    task_event(c, now, kind, &task, Some(&detail))?;
    settle(c, &task, now)?;
    // A reset task waits on its dependencies again, which may have ended.
    let task = if task.state == TaskState::Blocked { settle_blocked(c, task, now)? } else { task };
    Ok(task)
}

pub fn claim_tasks(
    c: &Connection,
    name: &AgentName,
    now: Millis,
    accept_within: Duration,
    policy: Policy,
) -> Result<Vec<Task>> {
    let agent = load_agent(c, name)?;
    if agent.status.free_slots() == 0 || agent.runners.is_empty() {
        return Ok(Vec::new());
    }
    // The core decides; this reads what it needs and writes what it chose.
    let mut agent_breaker = load_for_claim(c, BreakerScope::Agent, name.as_str())?;
    let agent_admits = agent_breaker.admits(now, policy);
    let free = Claim::slots(agent.status.free_slots(), agent_admits);
    if free == 0 {
        return Ok(Vec::new());
    }
    let offer = agent.offer();
    let disabled: Vec<Unavailable> = disabled_runners(c)?
        .into_iter()
        .filter(|d| d.in_force(now))
        .map(|d| Unavailable {
            why: match d.until {
                Some(_) => format!("{} is limited: {}", d.name, d.reason),
                None => format!("{} is disabled: {}", d.name, d.reason),
            },
            runner: d.name,
        })
        .collect();
    let mut runner_breakers = Vec::new();
    for b in breakers(c)?.iter().filter(|b| b.scope == BreakerScope::Runner) {
        let Ok(runner) = RunnerName::parse(&b.name) else { continue };
        runner_breakers.push((runner, load_for_claim(c, b.scope, &b.name)?.admits(now, policy)));
    }
    let mut claim = Claim::new(&offer.runners, disabled, &runner_breakers);
    let names = |rs: &[RunnerName]| rs.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
    let (usable, probing) = (names(claim.usable()), names(claim.probing()));
    let usable: Vec<&str> = usable.iter().map(String::as_str).collect();
    let caps: Vec<&str> = offer.capabilities.iter().map(|c| c.as_str()).collect();
    let mut candidates = queued_for(c, &usable, &caps, now, free)?;
    // A runner whose breaker has cooled lets one task through, as its probe.
    for runner in &probing {
        candidates.extend(queued_for(c, &[runner.as_str()], &caps, now, 1)?);
    }
    let fall_from: Vec<String> = claim.fall_from().map(|r| r.as_str().to_owned()).collect();
    let fall_from: Vec<&str> = fall_from.iter().map(String::as_str).collect();
    candidates.extend(queued_for_fallback(c, &fall_from, &usable, &caps, now, free)?);
    muster_core::dispatch::order(&mut candidates);
    let mut claimed = Vec::with_capacity(candidates.len());
    for mut task in candidates {
        if claimed.len() >= free as usize {
            break;
        }
        let Some(pick) = claim.pick(&task) else { continue };
        let req = muster_core::Requirements { runner: &pick.runner, capabilities: &task.spec.capabilities };
        if !offer.can_run(req) {
            // The query and the core must agree; never hand out a task the core refuses.
            tracing::error!(task_id = %task.id, agent = %name, "dispatch query returned a task the agent cannot run");
            continue;
        }
        task.assign(name, now, accept_within).map_err(refused)?;
        let fallback = pick.fallback.then(|| pick.runner.clone());
        if let Some(lease) = task.lease.as_mut() {
            lease.runner = fallback.clone();
        }
        save_task(c, &task)?;
        task_event(c, now, "task.assigned", &task, fallback.as_ref().map(|f| format!("runner {f}")).as_deref())?;
        if let Some(f) = &fallback {
            let why = claim.why(&task.spec.runner).unwrap_or("");
            task_event(c, now, "task.fallback", &task, Some(&format!("{why}; runs on {f}")))?;
        }
        if agent_admits == Admit::Probe {
            probe(c, &mut agent_breaker, &task, now)?;
        }
        if pick.probe {
            let mut runner_breaker = load_breaker(c, BreakerScope::Runner, task.spec.runner.as_str())?;
            probe(c, &mut runner_breaker, &task, now)?;
        }
        claimed.push(task);
    }
    Ok(claimed)
}

/// Claims for each agent in turn. With `savepoints`, each claim runs in its
/// own, so one that fails is undone alone and the others stand. Without,
/// a claim that fails before writing anything fails alone, and one that
/// fails after writing fails the whole pass, which the caller must undo.
pub fn claim_for_agents(
    c: &Connection,
    agents: &[AgentName],
    now: Millis,
    accept_within: Duration,
    policy: Policy,
    savepoints: bool,
) -> Result<Vec<Result<Vec<Task>>>> {
    let mut out = Vec::with_capacity(agents.len());
    for (k, agent) in agents.iter().enumerate() {
        // Once nothing is due, the agents left would each look for nothing.
        // (Callers ask before the first.)
        if k > 0 && next_ready(c)?.is_none_or(|ready| ready > now) {
            out.push(Ok(Vec::new()));
            continue;
        }
        if !savepoints {
            let before = c.total_changes();
            match claim_tasks(c, agent, now, accept_within, policy) {
                Err(e) if c.total_changes() != before => return Err(e),
                claimed => out.push(claimed),
            }
            continue;
        }
        super::run(c, "SAVEPOINT claim")?;
        let claimed = claim_tasks(c, agent, now, accept_within, policy);
        if claimed.is_err() {
            super::run(c, "ROLLBACK TO claim")?;
        }
        super::run(c, "RELEASE claim")?;
        out.push(claimed);
    }
    Ok(out)
}

/// Up to `limit` due tasks whose runner is `blocked` and that name a fallback in `usable`.
fn queued_for_fallback(
    c: &Connection,
    blocked: &[&str],
    usable: &[&str],
    caps: &[&str],
    now: Millis,
    limit: u32,
) -> Result<Vec<Task>> {
    if blocked.is_empty() || usable.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let placeholders = |n: usize| vec!["?"; n].join(", ");
    let names = vec!["instr(' ' || t.fallback || ' ', ' ' || ? || ' ') > 0"; usable.len()].join(" OR ");
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks t INDEXED BY tasks_queue WHERE state = 'queued' AND ready_at <= ? \
         AND attempts < max_attempts \
         AND t.fallback IS NOT NULL AND runner IN ({}) AND ({names}) \
         AND NOT EXISTS (SELECT 1 FROM task_caps c WHERE c.task_id = t.id AND c.cap NOT IN ({})) \
         ORDER BY priority, seq LIMIT ?",
        placeholders(blocked.len()),
        placeholders(caps.len()),
    );
    let mut args: Vec<rusqlite::types::Value> = vec![now.0.into()];
    args.extend(blocked.iter().map(|r| rusqlite::types::Value::from(r.to_string())));
    args.extend(usable.iter().map(|r| rusqlite::types::Value::from(r.to_string())));
    args.extend(caps.iter().map(|c| rusqlite::types::Value::from(c.to_string())));
    args.push(i64::from(limit).into());
    Ok(c.prepare_cached(&sql)?.query_map(params_from_iter(args), task_row)?.collect::<rusqlite::Result<_>>()?)
}

// -- runners out of service ------------------------------------------------------------

pub fn disabled_runners(c: &Connection) -> Result<Vec<DisabledRunner>> {
    let mut stmt = c.prepare_cached("SELECT name, reason, by, at, until FROM runners_disabled ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        let name: String = r.get(0)?;
        Ok(DisabledRunner {
            name: RunnerName::parse(&name).map_err(|e| corrupt("runner", e))?,
            reason: r.get(1)?,
            by: r.get(2)?,
            at: Millis(r.get(3)?),
            until: ms(r.get(4)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn runner_event(c: &Connection, now: Millis, kind: &str, detail: &str) -> Result<()> {
    let row = EventRow { task: None, agent: None, epoch: None, state: None, detail: Some(detail) };
    insert_event_row(c, now, kind, row)
}

pub fn disable_runner(c: &Connection, name: &RunnerName, reason: &str, by: &str, now: Millis) -> Result<()> {
    let reason = clip(reason.trim(), 500);
    if reason.is_empty() {
        return Err(StoreError::Invalid(Invalid::new("reason", "must say why the runner is disabled")));
    }
    c.prepare_cached(
        "INSERT INTO runners_disabled (name, reason, by, at, until) VALUES (?, ?, ?, ?, NULL) \
         ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, by = excluded.by, at = excluded.at, until = NULL",
    )?
    .execute(params![name.as_str(), reason, by, now.0])?;
    runner_event(c, now, "runner.disabled", &format!("{name}: {reason} (by {by})"))
}

/// Applies a run's report that its provider limited it: the task goes back to
/// the queue until `until` without spending an attempt, and its runner is out
/// of service until then (unless an operator already took it out for good).
#[allow(clippy::too_many_arguments)] // each is one fact of the report
pub fn limit_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    reason: &str,
    until: Millis,
    details: &RunDetails,
    now: Millis,
) -> Result<(Task, FinishResult)> {
    let (mut task, resent) = task_for_report(c, agent, id, epoch, Outcome::Limited, now)?;
    if resent {
        return Ok((task, FinishResult::Duplicate));
    }
    let reason = clip(reason.trim(), 500);
    let runner = task.runner_in_use().clone();
    let finished = task.limited(agent, epoch, &reason, until, now).map_err(refused)?;
    save_task(c, &task)?;
    end_attempt(c, &task, epoch, Outcome::Limited, now)?;
    // What the run used before it was stopped is still spent.
    save_details(c, id, epoch, details, now)?;
    // A limit says nothing about the agent or the runner working: no verdict.
    let mut agent_breaker = load_breaker(c, BreakerScope::Agent, agent.as_str())?;
    agent_breaker.probe_lost(&task.id);
    let mut runner_breaker = load_breaker(c, BreakerScope::Runner, runner.as_str())?;
    runner_breaker.probe_lost(&task.id);
    for b in [&agent_breaker, &runner_breaker] {
        if breaker_exists(c, b.scope, &b.name)? {
            save_breaker(c, b, now)?;
        }
    }
    let (kind, detail) = match finished {
        Finished::Cancelled => ("task.cancelled", format!("limited: {reason}")),
        _ => ("task.limited", format!("{reason}; back in the queue at {} ms, no attempt spent", until.0)),
    };
    task_event(c, now, kind, &task, Some(&detail))?;
    limit_runner(c, &runner, &reason, &format!("agent {agent}"), until, now)?;
    release_task_locks(c, &task, now)?;
    settle(c, &task, now)?;
    Ok((task, FinishResult::Applied(finished)))
}

/// Takes a runner out of service until `until`, with a `runner.limited`
/// event; an operator's disable (no `until`) is left as it is.
pub fn limit_runner(
    c: &Connection,
    runner: &RunnerName,
    reason: &str,
    by: &str,
    until: Millis,
    now: Millis,
) -> Result<()> {
    let limited = c
        .prepare_cached(
            "INSERT INTO runners_disabled (name, reason, by, at, until) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, by = excluded.by, at = excluded.at, \
             until = MAX(excluded.until, runners_disabled.until) WHERE runners_disabled.until IS NOT NULL",
        )?
        .execute(params![runner.as_str(), reason, by, now.0, until.0])?;
    if limited > 0 {
        runner_event(c, now, "runner.limited", &format!("{runner} until {} ms: {reason} ({by})", until.0))?;
    }
    Ok(())
}

pub fn enable_runner(c: &Connection, name: &RunnerName, by: &str, now: Millis) -> Result<()> {
    let gone = c.prepare_cached("DELETE FROM runners_disabled WHERE name = ?")?.execute([name.as_str()])?;
    if gone == 0 {
        return Err(StoreError::not_found("disabled runner", name));
    }
    runner_event(c, now, "runner.enabled", &format!("{name} (by {by})"))
}

/// Up to `limit` due tasks for these runners whose capabilities are all in `caps`, in dispatch order.
fn queued_for(c: &Connection, runners: &[&str], caps: &[&str], now: Millis, limit: u32) -> Result<Vec<Task>> {
    if runners.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let placeholders = |n: usize| vec!["?"; n].join(", ");
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks t INDEXED BY tasks_queue WHERE state = 'queued' AND ready_at <= ? \
         AND attempts < max_attempts \
         AND runner IN ({}) AND NOT EXISTS (SELECT 1 FROM task_caps c WHERE c.task_id = t.id AND c.cap NOT IN ({})) \
         ORDER BY priority, seq LIMIT ?",
        placeholders(runners.len()),
        placeholders(caps.len()),
    );
    let mut args: Vec<rusqlite::types::Value> = vec![now.0.into()];
    args.extend(runners.iter().map(|r| rusqlite::types::Value::from(r.to_string())));
    args.extend(caps.iter().map(|c| rusqlite::types::Value::from(c.to_string())));
    args.push(i64::from(limit).into());
    Ok(c.prepare_cached(&sql)?.query_map(params_from_iter(args), task_row)?.collect::<rusqlite::Result<_>>()?)
}

// -- circuit breakers ----------------------------------------------------------------

fn load_breaker(c: &Connection, scope: BreakerScope, name: &str) -> Result<Breaker> {
    let row = c
        .prepare_cached("SELECT state, failures, opened_at, probe_task FROM breakers WHERE scope = ? AND name = ?")?
        .query_row(params![scope.as_str(), name], |r| {
            let state: String = r.get(0)?;
            let probe: Option<String> = r.get(3)?;
            Ok(Breaker {
                scope,
                name: name.to_owned(),
                state: BreakerState::parse(&state).map_err(|e| corrupt("breaker state", e))?,
                failures: r.get(1)?,
                opened_at: ms(r.get(2)?),
                probe: probe.map(|p| TaskId::parse(&p)).transpose().map_err(|e| corrupt("probe task", e))?,
            })
        })
        .optional()?;
    Ok(row.unwrap_or_else(|| Breaker::new(scope, name)))
}

/// A breaker as the scheduler sees it: a probe whose task no longer holds a
/// lease under this breaker (it was released, cancelled, reclaimed, or handed
/// to another agent or runner since) is lost, and replaced.
fn load_for_claim(c: &Connection, scope: BreakerScope, name: &str) -> Result<Breaker> {
    let mut b = load_breaker(c, scope, name)?;
    if let Some(probe) = b.probe.clone() {
        let held: Option<(String, Option<String>, String)> = c
            .prepare_cached("SELECT state, lease_agent, COALESCE(lease_runner, runner) FROM tasks WHERE id = ?")?
            .query_row([probe.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let still = held.is_some_and(|(state, agent, runner)| {
            (state == "assigned" || state == "running")
                && match scope {
                    BreakerScope::Agent => agent.as_deref() == Some(name),
                    BreakerScope::Runner => runner == name,
                }
        });
        if !still {
            b.probe_lost(&probe);
        }
    }
    Ok(b)
}

fn save_breaker(c: &Connection, b: &Breaker, now: Millis) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO breakers (scope, name, state, failures, opened_at, probe_task, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, name) DO UPDATE SET state = excluded.state, \
         failures = excluded.failures, opened_at = excluded.opened_at, probe_task = excluded.probe_task, \
         updated_at = excluded.updated_at",
    )?
    .execute(params![
        b.scope.as_str(),
        b.name,
        b.state.as_str(),
        b.failures,
        b.opened_at.map(|m| m.0),
        b.probe.as_ref().map(|p| p.as_str()),
        now.0
    ])?;
    Ok(())
}

fn breaker_event(c: &Connection, now: Millis, b: &Breaker, change: Change, why: &str) -> Result<()> {
    let kind = match change {
        Change::Opened => "breaker.opened",
        Change::HalfOpened => "breaker.half_open",
        Change::Closed => "breaker.closed",
    };
    let detail = format!("{} {}: {why}", b.scope.as_str(), b.name);
    let agent = match b.scope {
        BreakerScope::Agent => AgentName::parse(&b.name).ok(),
        BreakerScope::Runner => None,
    };
    let row = EventRow {
        task: b.probe.as_ref(),
        agent: agent.as_ref(),
        epoch: None,
        state: Some(b.state.as_str()),
        detail: Some(&detail),
    };
    insert_event_row(c, now, kind, row)
}

fn probe(c: &Connection, b: &mut Breaker, task: &Task, now: Millis) -> Result<()> {
    if let Some(change) = b.start_probe(&task.id) {
        breaker_event(c, now, b, change, &format!("cooled down; {} goes through as the probe", task.id))?;
    }
    save_breaker(c, b, now)
}

/// Applies a run's verdict (`None`: no verdict, e.g. cancelled) to the
/// breakers of the agent that ran it and of its runner.
fn record_breakers(
    c: &Connection,
    task: &Task,
    agent: &AgentName,
    runner: &RunnerName,
    (agent_verdict, runner_verdict): (Option<bool>, Option<bool>),
    now: Millis,
    policy: Policy,
) -> Result<()> {
    for (scope, name, verdict) in
        [(BreakerScope::Agent, agent.as_str(), agent_verdict), (BreakerScope::Runner, runner.as_str(), runner_verdict)]
    {
        let mut b = load_breaker(c, scope, name)?;
        let before = b.clone();
        let change = match verdict {
            Some(ok) => b.record(&task.id, ok, now, policy),
            None => {
                b.probe_lost(&task.id);
                None
            }
        };
        if let Some(change) = change {
            let why = match change {
                Change::Opened if before.state == BreakerState::HalfOpen => {
                    format!("the probe {} failed; open for {} more", task.id, seconds(policy.cooldown))
                }
                Change::Opened => format!(
                    "{} failed attempts in a row (the last {}); one task goes through after {}",
                    b.failures,
                    task.id,
                    seconds(policy.cooldown)
                ),
                Change::Closed => format!("the probe {} succeeded", task.id),
                Change::HalfOpened => String::new(),
            };
            breaker_event(c, now, &b, change, &why)?;
        }
        // Rows are kept only for breakers that have something to say.
        if b != before && !(b.state == BreakerState::Closed && b.failures == 0 && !breaker_exists(c, scope, name)?) {
            save_breaker(c, &b, now)?;
        }
    }
    Ok(())
}

fn breaker_exists(c: &Connection, scope: BreakerScope, name: &str) -> Result<bool> {
    Ok(c.prepare_cached("SELECT 1 FROM breakers WHERE scope = ? AND name = ?")?
        .query_row(params![scope.as_str(), name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

pub fn breakers(c: &Connection) -> Result<Vec<Breaker>> {
    let keys: Vec<(String, String)> = c
        .prepare_cached("SELECT scope, name FROM breakers ORDER BY scope, name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    keys.iter()
        .map(|(scope, name)| {
            let scope = BreakerScope::parse(scope).map_err(|e| StoreError::Database(e.to_string()))?;
            load_breaker(c, scope, name)
        })
        .collect()
}

pub fn reset_breaker(c: &Connection, scope: BreakerScope, name: &str, by: &str, now: Millis) -> Result<Breaker> {
    if !breaker_exists(c, scope, name)? {
        return Err(StoreError::not_found("breaker", format!("{} {name}", scope.as_str())));
    }
    let mut b = load_breaker(c, scope, name)?;
    let was = b.state;
    b.reset();
    save_breaker(c, &b, now)?;
    breaker_event(c, now, &b, Change::Closed, &format!("reset by {by} (it was {})", was.as_str()))?;
    Ok(b)
}

pub fn start_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    now: Millis,
    ttl: Duration,
) -> Result<Task> {
    let mut task = load_task(c, id)?;
    let waited = (now.0 - task.ready_at.0).max(0);
    task.start(agent, epoch, now, ttl).map_err(refused)?;
    save_task(c, &task)?;
    let number: i64 = c
        .prepare_cached("SELECT COUNT(*) + 1 FROM attempts WHERE task_id = ?")?
        .query_row([id.as_str()], |r| r.get(0))?;
    c.prepare_cached(
        "INSERT INTO attempts (task_id, epoch, number, agent, started_at, waited_ms, runner) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        id.as_str(),
        epoch.0 as i64,
        number,
        agent.as_str(),
        now.0,
        waited,
        task.runner_in_use().as_str()
    ])?;
    task_event(c, now, "task.started", &task, Some(&format!("attempt {number}")))?;
    Ok(task)
}

pub fn release_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    reason: &str,
    now: Millis,
    retry_after: Duration,
) -> Result<Task> {
    let mut task = load_task(c, id)?;
    task.release(agent, epoch, reason, now, retry_after).map_err(refused)?;
    save_task(c, &task)?;
    task_event(c, now, "task.released", &task, Some(reason))?;
    Ok(task)
}

fn end_attempt(c: &Connection, task: &Task, epoch: Epoch, outcome: Outcome, now: Millis) -> Result<()> {
    c.prepare_cached(
        "UPDATE attempts SET finished_at = ?, outcome = ?, exit_code = ?, reason = ? \
         WHERE task_id = ? AND epoch = ? AND finished_at IS NULL",
    )?
    .execute(params![now.0, outcome.as_str(), task.exit_code, task.reason, task.id.as_str(), epoch.0 as i64])?;
    Ok(())
}

/// The task a run's end is reported for, with a lost accept adopted first
/// (a run that ended before its accept was recovered still counts once), and
/// whether `agent` already reported this epoch's end as `outcome`: a resend
/// is answered, not refused.
fn task_for_report(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    outcome: Outcome,
    now: Millis,
) -> Result<(Task, bool)> {
    let mut task = load_task(c, id)?;
    if adopt_lost_accept(c, agent, &task, epoch, now, Duration::ZERO)? {
        task = load_task(c, id)?;
    }
    let recorded: Option<(String, Option<String>)> = c
        .prepare_cached("SELECT agent, outcome FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let recorded = recorded.map(|(by, ended)| (by, ended.and_then(|o| Outcome::parse(&o).ok())));
    let resent = task.is_resend(agent, epoch, outcome, recorded.as_ref().map(|(by, o)| (by.as_str(), *o)));
    Ok((task, resent))
}

/// Keeps what an agent reported of a run beside its outcome.
fn save_details(c: &Connection, id: &TaskId, epoch: Epoch, details: &RunDetails, now: Millis) -> Result<()> {
    if let Some(report) = &details.report {
        save_report(c, id, epoch, report)?;
    }
    if let Some(w) = &details.workspace {
        save_workspace(c, id, epoch, w)?;
    }
    save_checks(c, id, epoch, details, now)?;
    // Output sent while the hub went down (or dropped by an agent away too
    // long) is lost; the attempt says so. Output cut at the cap is already marked.
    if let Some(sent) = details.output_chunks {
        let (stored, truncated): (i64, bool) = c
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM output WHERE task_id = ?1 AND epoch = ?2), \
                 COALESCE((SELECT output_truncated FROM attempts WHERE task_id = ?1 AND epoch = ?2), 0)",
            )?
            .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if !truncated && (stored as u64) < sent {
            c.prepare_cached("UPDATE attempts SET output_incomplete = 1 WHERE task_id = ? AND epoch = ?")?
                .execute(params![id.as_str(), epoch.0 as i64])?;
        }
    }
    if let Some(summary) = &details.summary {
        c.prepare_cached("UPDATE attempts SET summary = ? WHERE task_id = ? AND epoch = ?")?.execute(params![
            clip(summary, 2_000),
            id.as_str(),
            epoch.0 as i64
        ])?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // each is one fact of the report; a struct would only rename them
pub fn finish_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    outcome: &RunOutcome,
    details: &RunDetails,
    now: Millis,
    retry: Retry,
    policy: Policy,
) -> Result<(Task, FinishResult)> {
    let (mut task, resent) = task_for_report(c, agent, id, epoch, outcome.outcome(), now)?;
    if resent {
        return Ok((task, FinishResult::Duplicate));
    }
    let ran_with = task.runner_in_use().clone();
    let tied = has_ties(c, id)?;
    if tied && let Some(parked) = parked_by(c, &task, epoch)? {
        // A conflict's pause stops the run; a run that finished on its own
        // before the stop reached it keeps its result.
        let by_conflict = parked.raised_by.starts_with("conflict #");
        if !by_conflict || matches!(outcome, RunOutcome::Cancelled) {
            return park_task(c, task, agent, epoch, outcome, details, &parked, now);
        }
    }
    let finished = task.finish(agent, epoch, outcome, now, retry.after(task.attempts)).map_err(refused)?;
    save_task(c, &task)?;
    end_attempt(c, &task, epoch, outcome.outcome(), now)?;
    save_details(c, id, epoch, details, now)?;
    let verdict = match outcome {
        RunOutcome::Succeeded { .. } => Some(true),
        RunOutcome::Failed { .. } | RunOutcome::TimedOut => Some(false),
        RunOutcome::Cancelled => None,
    };
    record_breakers(c, &task, agent, &ran_with, (verdict, verdict), now, policy)?;
    let kind = match finished {
        Finished::Succeeded => "task.succeeded",
        Finished::RetryScheduled { .. } => "task.retry_scheduled",
        Finished::Failed => "task.failed",
        Finished::Cancelled => "task.cancelled",
    };
    let detail = match (finished, &task.reason) {
        (Finished::RetryScheduled { ready_at }, reason) => {
            Some(format!("{}; retry in {} ms", reason.as_deref().unwrap_or("failed"), ready_at.0 - now.0))
        }
        (_, reason) => reason.clone(),
    };
    task_event(c, now, kind, &task, detail.as_deref())?;
    if tied {
        release_task_locks(c, &task, now)?;
        settle(c, &task, now)?;
    }
    Ok((task, FinishResult::Applied(finished)))
}

pub fn reclaim_expired(c: &Connection, now: Millis, limit: usize, policy: Policy) -> Result<Vec<(Task, Reclaimed)>> {
    let ids: Vec<String> = c
        .prepare_cached(
            "SELECT id FROM tasks WHERE lease_expires_at IS NOT NULL AND lease_expires_at <= ? \
             ORDER BY lease_expires_at LIMIT ?",
        )?
        .query_map(params![now.0, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
        out.push(take_back(c, &id, now, Some(policy), None)?);
    }
    Ok(out)
}

/// Takes back one task, by the core's rules: its lease expired, or
/// (`disowned`) its holder connected again without it.
fn take_back(
    c: &Connection,
    id: &TaskId,
    now: Millis,
    policy: Option<Policy>,
    disowned: Option<(&AgentName, Epoch, Disowned)>,
) -> Result<(Task, Reclaimed)> {
    {
        let mut task = load_task(c, id)?;
        let epoch = task.epoch;
        let was_running = task.state == TaskState::Running;
        let holder = task.lease.as_ref().map(|l| l.agent.clone());
        let ran_with = task.runner_in_use().clone();
        let reclaimed = match disowned {
            Some((agent, epoch, why)) => task.disown(agent, epoch, why, now),
            None => task.reclaim(now),
        }
        .map_err(refused)?;
        save_task(c, &task)?;
        if was_running {
            end_attempt(c, &task, epoch, Outcome::LeaseExpired, now)?;
        }
        if let (Some(holder), Some(policy)) = (&holder, policy) {
            // A run that went silent counts against its agent and runner; an
            // assignment never accepted says nothing about either.
            // A lease that expired says the agent went away, not that the runner is broken.
            record_breakers(c, &task, holder, &ran_with, (was_running.then_some(false), None), now, policy)?;
        }
        let kind = match reclaimed {
            Reclaimed::Requeued => "task.reclaimed",
            Reclaimed::Failed => "task.failed",
            Reclaimed::Cancelled => "task.cancelled",
        };
        task_event(c, now, kind, &task, task.reason.as_deref())?;
        release_task_locks(c, &task, now)?;
        settle(c, &task, now)?;
        Ok((task, reclaimed))
    }
}

/// Named index: without it SQLite's planner walks every queued task through
/// `tasks_state` to find the minimum.
const NEXT_READY: &str = "SELECT MIN(ready_at) FROM tasks INDEXED BY tasks_ready WHERE state = 'queued'";

pub fn next_ready(c: &Connection) -> Result<Option<Millis>> {
    let ready: Option<i64> = c.prepare_cached(NEXT_READY)?.query_row([], |r| r.get(0))?;
    Ok(ready.map(Millis))
}

pub fn next_lease_expiry(c: &Connection) -> Result<Option<Millis>> {
    let lease: Option<i64> = c
        .prepare_cached("SELECT MIN(lease_expires_at) FROM tasks WHERE lease_expires_at IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    Ok(lease.map(Millis))
}

pub fn next_due(c: &Connection) -> Result<Option<Millis>> {
    Ok(match (next_lease_expiry(c)?, next_ready(c)?) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

fn save_report(c: &Connection, id: &TaskId, epoch: Epoch, r: &RunReport) -> Result<()> {
    let int = |n: u64| n.min(i64::MAX as u64) as i64;
    c.prepare_cached(
        "UPDATE attempts SET reported = 1, session_id = ?, model = ?, turns = ?, input_tokens = ?, \
         output_tokens = ?, cache_read_tokens = ?, cache_write_tokens = ?, cost_micro_usd = ?, result = ?, \
         tool_uses = ?, tool_errors = ? WHERE task_id = ? AND epoch = ?",
    )?
    .execute(params![
        r.session_id.as_deref().map(|s| clip(s, 200)),
        r.model.as_deref().map(|s| clip(s, 200)),
        r.turns,
        int(r.tokens.input),
        int(r.tokens.output),
        int(r.tokens.cache_read),
        int(r.tokens.cache_write),
        r.cost.map(MicroUsd::micros_i64),
        r.result.as_deref().map(|s| clip(s, MAX_RESULT_CHARS)),
        int(r.tool_uses),
        int(r.tool_errors),
        id.as_str(),
        epoch.0 as i64
    ])?;
    Ok(())
}

/// Bytes of a diff kept per attempt.
pub const MAX_DIFF_BYTES: usize = 1 << 20;
/// Commits and files listed per attempt.
const MAX_LISTED: usize = 1_000;

fn save_workspace(c: &Connection, id: &TaskId, epoch: Epoch, w: &WorkspaceRecord) -> Result<()> {
    let lines = |pairs: &[(String, String)]| {
        pairs.iter().take(MAX_LISTED).map(|(a, b)| format!("{a}\t{b}")).collect::<Vec<_>>().join("\n")
    };
    let mut diff = w.diff.as_str();
    let mut truncated = w.diff_truncated;
    if diff.len() > MAX_DIFF_BYTES {
        let mut cut = MAX_DIFF_BYTES;
        while !diff.is_char_boundary(cut) {
            cut -= 1;
        }
        diff = &diff[..cut];
        truncated = true;
    }
    c.prepare_cached(
        "UPDATE attempts SET ws_repo = ?, ws_branch = ?, ws_base = ?, ws_head = ?, ws_commits = ?, ws_files = ?, \
         ws_stat = ?, ws_diff = ?, ws_diff_truncated = ?, ws_kept_at = ?, ws_error = ?, ws_snapshot = ? \
         WHERE task_id = ? AND epoch = ?",
    )?
    .execute(params![
        clip(&w.repo, 4096),
        clip(&w.branch, 300),
        clip(&w.base, 300),
        w.head.as_deref().map(|h| clip(h, 300)),
        lines(&w.commits),
        lines(&w.files),
        clip(&w.stat, 64 << 10),
        diff,
        truncated,
        w.kept_at.as_deref().map(|k| clip(k, 4096)),
        w.error.as_deref().map(|e| clip(e, 2000)),
        w.snapshot.as_deref().map(|s| clip(s, 300)),
        id.as_str(),
        epoch.0 as i64
    ])?;
    Ok(())
}

fn pairs(text: Option<String>) -> Vec<(String, String)> {
    text.unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('\t') {
            Some((a, b)) => (a.to_owned(), b.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

/// Characters kept of an agent's final message.
const MAX_RESULT_CHARS: usize = 8_000;
/// Characters kept of the latest step, shown live.
const LATEST_STEP_CHARS: usize = 300;

/// `text` cut to at most `max` characters, on a character boundary.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

// -- steps ------------------------------------------------------------------------

pub fn append_steps(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    steps: Vec<NewStep>,
    now: Millis,
) -> Result<()> {
    let task = running_attempt(c, agent, id, epoch, now)?;
    let Some(last) = steps.last() else { return Ok(()) };
    let latest = clip(&last.line(), LATEST_STEP_CHARS);
    let stored: u64 = c
        .prepare_cached("SELECT steps FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| r.get::<_, i64>(0))? as u64;
    let mut insert = c.prepare_cached(
        "INSERT INTO steps (task_id, epoch, seq, at, kind, name, summary, is_error, duration_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let mut seq = stored;
    for step in &steps {
        seq += 1;
        if seq > MAX_STEPS {
            continue;
        }
        insert.execute(params![
            id.as_str(),
            epoch.0 as i64,
            seq as i64,
            now.0,
            step.kind.as_str(),
            step.name.as_deref().map(|n| clip(n, 200)),
            clip(&step.summary, MAX_STEP_SUMMARY),
            step.is_error,
            step.duration_ms.map(|d| d.min(i64::MAX as u64) as i64),
        ])?;
    }
    c.prepare_cached("UPDATE attempts SET steps = ?, latest_step = ? WHERE task_id = ? AND epoch = ?")?
        .execute(params![seq as i64, latest, id.as_str(), epoch.0 as i64])?;
    // Past the limit the latest step still shows, but the timeline is spared.
    if stored >= MAX_STEPS {
        return Ok(());
    }
    task_event(c, now, "task.step", &task, Some(&latest))
}

/// One attempt's diff, which `attempts` leaves out: (diff, truncated).
pub fn attempt_diff(c: &Connection, id: &TaskId, number: u32) -> Result<Option<(String, bool)>> {
    Ok(c.prepare_cached(
        "SELECT ws_diff, ws_diff_truncated FROM attempts WHERE task_id = ? AND number = ? AND ws_repo IS NOT NULL",
    )?
    .query_row(params![id.as_str(), number], |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?)))
    .optional()?)
}

pub fn set_live(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    status: muster_core::Live,
    detail: Option<&str>,
    now: Millis,
) -> Result<()> {
    let task = running_attempt(c, agent, id, epoch, now)?;
    let status = status.as_str();
    let detail = detail.map(|d| clip(d, 300));
    c.prepare_cached("UPDATE attempts SET live = ?, live_detail = ? WHERE task_id = ? AND epoch = ?")?
        .execute(params![status, detail, id.as_str(), epoch.0 as i64])?;
    let line = match &detail {
        Some(d) => format!("{status}: {d}"),
        None => status.to_owned(),
    };
    task_event(c, now, "task.live", &task, Some(&line))
}

/// Shadow runs and the tasks they shadow, both finished, newest first.
pub fn shadow_pairs(c: &Connection, limit: usize) -> Result<Vec<(TaskId, TaskId)>> {
    let mut stmt = c.prepare_cached(
        "SELECT p.id, s.id FROM tasks s JOIN tasks p ON p.id = s.shadow_of \
         WHERE s.finished_at IS NOT NULL AND p.finished_at IS NOT NULL \
         ORDER BY MAX(s.finished_at, p.finished_at) DESC LIMIT ?",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        let (p, s): (String, String) = (r.get(0)?, r.get(1)?);
        Ok((
            TaskId::parse(&p).map_err(|e| corrupt("task id", e))?,
            TaskId::parse(&s).map_err(|e| corrupt("task id", e))?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn costs(c: &Connection, by: CostGroup, since: Millis) -> Result<(Vec<CostRow>, CostRow)> {
    let key = match by {
        CostGroup::Task => "a.task_id",
        CostGroup::Agent => "a.agent",
        CostGroup::Runner => "COALESCE(a.runner, t.runner)",
        CostGroup::Day => "strftime('%Y-%m-%d', a.finished_at / 1000, 'unixepoch')",
    };
    let sql = format!(
        "SELECT {key}, COUNT(*), SUM(a.cost_micro_usd IS NOT NULL), SUM(a.input_tokens), SUM(a.output_tokens), \
         SUM(a.cache_read_tokens), SUM(a.cache_write_tokens), COALESCE(SUM(a.cost_micro_usd), 0) \
         FROM attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE a.reported = 1 AND a.finished_at >= ? GROUP BY 1 ORDER BY 8 DESC, 1 LIMIT ?"
    );
    let row = |r: &Row<'_>| {
        let n = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0).max(0) as u64);
        Ok(CostRow {
            key: r.get(0)?,
            attempts: n(1)?,
            priced: n(2)?,
            tokens: Tokens { input: n(3)?, output: n(4)?, cache_read: n(5)?, cache_write: n(6)? },
            cost: MicroUsd(n(7)?),
        })
    };
    let rows = c
        .prepare_cached(&sql)?
        .query_map(params![since.0, MAX_COST_ROWS as i64], row)?
        .collect::<rusqlite::Result<_>>()?;
    // The total over every row, not only those listed.
    let total = c
        .prepare_cached(
            "SELECT 'total', COUNT(*), SUM(cost_micro_usd IS NOT NULL), SUM(input_tokens), SUM(output_tokens), \
             SUM(cache_read_tokens), SUM(cache_write_tokens), COALESCE(SUM(cost_micro_usd), 0) \
             FROM attempts WHERE reported = 1 AND finished_at >= ?",
        )?
        .query_row([since.0], row)?;
    Ok((rows, total))
}

pub fn steps(c: &Connection, id: &TaskId, attempt: Option<u32>) -> Result<Vec<StepRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT a.number, s.seq, s.at, s.kind, s.name, s.summary, s.is_error, s.duration_ms FROM steps s \
         JOIN attempts a ON a.task_id = s.task_id AND a.epoch = s.epoch \
         WHERE s.task_id = ? AND (? IS NULL OR a.number = ?) ORDER BY a.number, s.seq",
    )?;
    let rows = stmt.query_map(params![id.as_str(), attempt, attempt], |r| {
        let kind: String = r.get(3)?;
        Ok(StepRecord {
            attempt: r.get(0)?,
            seq: r.get::<_, i64>(1)? as u64,
            at: Millis(r.get(2)?),
            step: NewStep {
                kind: StepKind::parse(&kind).ok_or_else(|| corrupt("step kind", &kind))?,
                name: r.get(4)?,
                summary: r.get(5)?,
                is_error: r.get(6)?,
                duration_ms: r.get::<_, Option<i64>>(7)?.map(|d| d as u64),
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// -- output ---------------------------------------------------------------------

/// Refuses unless `agent` holds the running lease under `epoch`; the task as it is.
fn running_attempt(c: &Connection, agent: &AgentName, id: &TaskId, epoch: Epoch, now: Millis) -> Result<Task> {
    let mut task = load_task(c, id)?;
    // Output from a run whose accept was lost: the run is real. Keep the
    // lease's current deadline; the agent's next heartbeat renews it.
    let deadline = task.lease.as_ref().map_or(Duration::ZERO, |l| l.expires_at.since(now));
    if adopt_lost_accept(c, agent, &task, epoch, now, deadline)? {
        task = load_task(c, id)?;
    }
    let held = task.lease.as_ref().is_some_and(|l| l.is_held_by(agent, epoch)) && task.state == TaskState::Running;
    if !held {
        return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
    }
    Ok(task)
}

pub fn mark_output_truncated(c: &Connection, agent: &AgentName, id: &TaskId, epoch: Epoch, now: Millis) -> Result<()> {
    running_attempt(c, agent, id, epoch, now)?;
    c.prepare_cached("UPDATE attempts SET output_truncated = 1 WHERE task_id = ? AND epoch = ?")?
        .execute(params![id.as_str(), epoch.0 as i64])?;
    Ok(())
}

pub fn append_output(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    chunks: &[OutputChunk],
    now: Millis,
    cap: u64,
) -> Result<AppendOutput> {
    running_attempt(c, agent, id, epoch, now)?;
    let (mut stored, mut truncated): (u64, bool) = c
        .prepare_cached("SELECT output_bytes, output_truncated FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
    let mut insert =
        c.prepare_cached("INSERT INTO output (task_id, epoch, stream, at, data, encoding) VALUES (?, ?, ?, ?, ?, ?)")?;
    for chunk in chunks {
        if truncated {
            break;
        }
        let room = cap.saturating_sub(stored) as usize;
        let take = chunk.data.len().min(room);
        if take > 0 {
            let (data, encoding) = encode(&chunk.data[..take]);
            insert.execute(params![id.as_str(), epoch.0 as i64, chunk.stream.as_str(), now.0, &data[..], encoding])?;
            stored += take as u64;
        }
        if take < chunk.data.len() {
            truncated = true;
        }
    }
    c.prepare_cached("UPDATE attempts SET output_bytes = ?, output_truncated = ? WHERE task_id = ? AND epoch = ?")?
        .execute(params![stored as i64, truncated, id.as_str(), epoch.0 as i64])?;
    Ok(AppendOutput { stored_bytes: stored, truncated })
}

/// Chunks at least this big are compressed at rest, when that makes them smaller.
const COMPRESS_FROM: usize = 512;
const RAW: i64 = 0;
const DEFLATE: i64 = 1;

/// Output as stored: deflated when that pays.
fn encode(data: &[u8]) -> (std::borrow::Cow<'_, [u8]>, i64) {
    use std::io::Write;
    if data.len() >= COMPRESS_FROM {
        let mut z = flate2::write::DeflateEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::fast());
        if z.write_all(data).is_ok()
            && let Ok(packed) = z.finish()
            && packed.len() < data.len()
        {
            return (std::borrow::Cow::Owned(packed), DEFLATE);
        }
    }
    (std::borrow::Cow::Borrowed(data), RAW)
}

fn decode(data: Vec<u8>, encoding: i64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    match encoding {
        RAW => Ok(data),
        DEFLATE => {
            let mut out = Vec::with_capacity(data.len() * 3);
            flate2::read::DeflateDecoder::new(&data[..]).read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        }
        other => Err(format!("unknown encoding {other}")),
    }
}

pub fn read_output(c: &Connection, id: &TaskId, f: &OutputFilter) -> Result<Vec<OutputRecord>> {
    let limit = f.limit.clamp(1, 10_000) as i64;
    let mut stmt = c.prepare_cached(
        "SELECT o.seq, a.number, o.stream, o.at, o.data, o.encoding FROM output o \
         JOIN attempts a ON a.task_id = o.task_id AND a.epoch = o.epoch \
         WHERE o.task_id = ? AND o.seq > ? AND (? IS NULL OR a.number = ?) ORDER BY o.seq LIMIT ?",
    )?;
    let rows = stmt.query_map(params![id.as_str(), f.after, f.attempt, f.attempt, limit], |r| {
        let stream: String = r.get(2)?;
        Ok(OutputRecord {
            seq: r.get(0)?,
            attempt: r.get(1)?,
            stream: Stream::parse(&stream).ok_or_else(|| corrupt("stream", &stream))?,
            at: Millis(r.get(3)?),
            data: decode(r.get(4)?, r.get(5)?).map_err(|e| corrupt("output", e))?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn attempts(c: &Connection, id: &TaskId) -> Result<Vec<AttemptRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT number, epoch, agent, started_at, finished_at, outcome, exit_code, reason, output_bytes, \
         output_truncated, output_pruned, steps, latest_step, reported, session_id, model, turns, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, cost_micro_usd, result, tool_uses, tool_errors, \
         ws_repo, ws_branch, ws_base, ws_head, ws_commits, ws_files, ws_stat, NULL, ws_diff_truncated, \
         ws_kept_at, ws_error, live, live_detail, ws_snapshot, runner, summary, output_incomplete FROM attempts \
         WHERE task_id = ? ORDER BY number",
    )?;
    let rows = stmt.query_map([id.as_str()], |r| {
        let agent: String = r.get(2)?;
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        let report = if r.get::<_, bool>(13)? {
            Some(RunReport {
                session_id: r.get(14)?,
                model: r.get(15)?,
                turns: r.get(16)?,
                tokens: Tokens { input: n(17)?, output: n(18)?, cache_read: n(19)?, cache_write: n(20)? },
                cost: r.get::<_, Option<i64>>(21)?.map(MicroUsd::from_micros),
                result: r.get(22)?,
                tool_uses: n(23)?,
                tool_errors: n(24)?,
            })
        } else {
            None
        };
        Ok(AttemptRecord {
            checks: Vec::new(),
            number: r.get(0)?,
            epoch: Epoch(r.get::<_, i64>(1)? as u64),
            agent: AgentName::parse(&agent).map_err(|e| corrupt("agent", e))?,
            started_at: Millis(r.get(3)?),
            finished_at: ms(r.get(4)?),
            outcome: r
                .get::<_, Option<String>>(5)?
                .map(|o| Outcome::parse(&o))
                .transpose()
                .map_err(|e| corrupt("attempt outcome", e))?,
            exit_code: r.get(6)?,
            reason: r.get(7)?,
            output_bytes: r.get::<_, i64>(8)? as u64,
            output_truncated: r.get(9)?,
            output_incomplete: r.get(41)?,
            output_pruned: r.get(10)?,
            steps: n(11)?,
            latest_step: r.get(12)?,
            live: r.get(36)?,
            live_detail: r.get(37)?,
            runner: r.get(39)?,
            summary: r.get(40)?,
            report,
            workspace: match r.get::<_, Option<String>>(25)? {
                Some(repo) => Some(WorkspaceRecord {
                    repo,
                    branch: r.get(26)?,
                    base: r.get(27)?,
                    head: r.get(28)?,
                    commits: pairs(r.get(29)?),
                    files: pairs(r.get(30)?),
                    stat: r.get::<_, Option<String>>(31)?.unwrap_or_default(),
                    diff: r.get::<_, Option<String>>(32)?.unwrap_or_default(),
                    diff_truncated: r.get(33)?,
                    kept_at: r.get(34)?,
                    error: r.get(35)?,
                    snapshot: r.get(38)?,
                }),
                None => None,
            },
        })
    })?;
    let mut out: Vec<AttemptRecord> = rows.collect::<rusqlite::Result<_>>()?;
    for a in &mut out {
        a.checks = checks_of(c, id, a.epoch)?;
    }
    Ok(out)
}

// -- integrity ----------------------------------------------------------------------------

/// The database's integrity check, then Muster's invariants:
/// - a task holds a lease exactly when it is assigned or running, and the
///   lease names a registered agent and the task's current epoch;
/// - a task has at most one open attempt, and only while running under it;
/// - no task used more attempts than it may;
/// - event numbers have no gaps.
///
/// With `repair`: a lease held by an unknown agent, or a running or assigned
/// task without one, is expired now and the task reclaimed by the usual rules
/// (requeued, or failed if it was its last attempt); a leftover lease on a
/// finished task is removed; a stray open attempt is closed.
pub fn check(c: &Connection, repair: bool, now: Millis) -> Result<crate::CheckReport> {
    let mut report = crate::CheckReport::default();
    let mut find = |kind: &str, detail: String| report.findings.push((kind.to_owned(), detail));
    let integrity: Vec<String> =
        c.prepare("PRAGMA integrity_check")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    if integrity != ["ok"] {
        find("integrity", integrity.join("; "));
    }

    let mut orphans: Vec<String> = Vec::new();
    let mut leftover: Vec<String> = Vec::new();
    let mut stmt = c.prepare(
        "SELECT t.id, t.state, t.lease_agent, t.lease_epoch, t.epoch, \
         (SELECT COUNT(*) FROM agents a WHERE a.name = t.lease_agent) \
         FROM tasks t WHERE t.state IN ('assigned', 'running') OR t.lease_agent IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    for row in rows {
        let (id, state, agent, lease_epoch, epoch, known) = row?;
        let leased_state = state == "assigned" || state == "running";
        match (&agent, leased_state) {
            (None, true) => {
                find("orphan", format!("{id} is {state} but holds no lease"));
                orphans.push(id);
            }
            (Some(a), false) => {
                find("lease", format!("{id} is {state} but still holds a lease for {a}"));
                leftover.push(id);
            }
            (Some(a), true) if known == 0 => {
                find("orphan", format!("{id} is {state} under a lease held by {a}, which is not a registered agent"));
                orphans.push(id);
            }
            (Some(a), true) if lease_epoch != Some(epoch) => {
                find(
                    "lease",
                    format!("{id}'s lease for {a} is under epoch {lease_epoch:?}, the task's epoch is {epoch}"),
                );
                orphans.push(id);
            }
            _ => {}
        }
    }
    drop(stmt);

    let mut stray: Vec<(String, i64)> = Vec::new();
    let mut stmt = c.prepare(
        "SELECT a.task_id, a.epoch, t.state, t.epoch FROM attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE a.finished_at IS NULL AND NOT (t.state = 'running' AND t.epoch = a.epoch)",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
    })? {
        let (id, epoch, state, current) = row?;
        find(
            "attempt",
            format!("{id} has an open attempt under epoch {epoch}, but the task is {state} under epoch {current}"),
        );
        stray.push((id, epoch));
    }
    drop(stmt);

    let over: Vec<(String, i64, i64)> = c
        .prepare("SELECT id, attempts, max_attempts FROM tasks WHERE attempts > max_attempts")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, attempts, max) in over {
        find("attempts", format!("{id} used {attempts} attempts of {max}"));
    }

    let (low, high, count): (Option<i64>, Option<i64>, i64) =
        c.query_row("SELECT MIN(seq), MAX(seq), COUNT(*) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if let (Some(low), Some(high)) = (low, high) {
        let missing = high - low + 1 - count;
        if missing > 0 {
            find("events", format!("{missing} events missing between {low} and {high}"));
        }
    }

    if repair {
        for id in &leftover {
            c.execute(
                "UPDATE tasks SET lease_agent = NULL, lease_epoch = NULL, lease_expires_at = NULL WHERE id = ?",
                [id],
            )?;
            report.repaired.push(format!("{id}: leftover lease removed"));
        }
        for id in &orphans {
            c.execute(
                "UPDATE tasks SET lease_expires_at = ?, lease_agent = COALESCE(lease_agent, 'repair'), \
                 lease_epoch = COALESCE(lease_epoch, epoch) WHERE id = ?",
                params![now.0, id],
            )?;
            let id = TaskId::parse(id).map_err(|e| corrupt("task id", e))?;
            // A repair says nothing about any agent or runner: no breaker moves.
            let (task, outcome) = take_back(c, &id, now, None, None)?;
            report.repaired.push(format!("{}: reclaimed ({outcome:?}), now {}", task.id, task.state.as_str()));
        }
        for (id, epoch) in &stray {
            c.execute(
                "UPDATE attempts SET finished_at = ?, outcome = 'lease_expired', reason = 'closed by repair' \
                 WHERE task_id = ? AND epoch = ? AND finished_at IS NULL",
                params![now.0, id, epoch],
            )?;
            report.repaired.push(format!("{id}: open attempt under epoch {epoch} closed"));
        }
        if !report.repaired.is_empty() {
            let detail = format!("{} findings, {} repairs", report.findings.len(), report.repaired.len());
            agent_event(c, now, "db.repaired", None, None, Some(&detail))?;
        }
    }
    Ok(report)
}

// -- retention and compaction -------------------------------------------------------

/// What one pruning change removed.
#[derive(Debug, Default)]
pub struct Pruned {
    pub tasks: u64,
    pub outputs: u64,
    pub output_bytes: u64,
    pub events: u64,
    /// A limit was reached: there may be more to prune.
    pub more: bool,
}

const FINISHED: &str = "state IN ('succeeded', 'failed', 'cancelled', 'skipped')";

fn cutoff(now: Millis, age: Option<Duration>) -> Option<i64> {
    age.map(|a| now.0.saturating_sub(a.as_millis().min(i64::MAX as u128) as i64))
}

fn ids(c: &Connection, sql: &str, from: i64, before: i64, limit: usize) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params![from, before, limit as i64], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Output bytes one pruning change removes at most, beside its task count.
const PRUNE_BYTES: u64 = 64 << 20;

/// Finished tasks before this instant have had their output pruned: later
/// passes start there instead of walking past them again.
const OUTPUT_PRUNED_BEFORE: &str = "compaction.output_pruned_before";

fn output_bytes_of(c: &Connection, task: &str) -> Result<u64> {
    let n: i64 = c
        .prepare_cached("SELECT COALESCE(SUM(length(data)), 0) FROM output WHERE task_id = ?")?
        .query_row([task], |r| r.get(0))?;
    Ok(n as u64)
}

/// Removes up to `limit` of each kind of expired record: finished tasks with
/// everything of theirs, the output of finished tasks, and the oldest events
/// (a prefix of the sequence, never the newest event).
pub fn prune_batch(c: &Connection, r: &crate::Retention, now: Millis, limit: usize) -> Result<Pruned> {
    let mut p = Pruned::default();
    if let Some(before) = cutoff(now, r.tasks) {
        let expired = ids(
            c,
            &format!(
                "SELECT id FROM tasks WHERE finished_at >= ?1 AND finished_at < ?2 AND {FINISHED} \
                 ORDER BY finished_at LIMIT ?3"
            ),
            i64::MIN,
            before,
            limit,
        )?;
        p.more |= expired.len() == limit;
        let mut bytes = 0;
        for id in &expired {
            if bytes >= PRUNE_BYTES {
                p.more = true;
                break;
            }
            bytes += output_bytes_of(c, id)?;
            for table in [
                "output",
                "steps",
                "attempts",
                "task_caps",
                "task_deps",
                "locks",
                "lock_waits",
                "task_files",
                "check_results",
                "decisions",
            ] {
                c.prepare_cached(&format!("DELETE FROM {table} WHERE task_id = ?"))?.execute([id])?;
            }
            // Only its own row: a follow-up it created that still lives keeps
            // its tree (root, depth, budget) until it is pruned itself.
            c.prepare_cached("DELETE FROM followups WHERE child = ?")?.execute([id])?;
            c.prepare_cached("DELETE FROM conflicts WHERE winner = ?1 OR loser = ?1")?.execute([id])?;
            c.prepare_cached("DELETE FROM task_deps WHERE dep_id = ?")?.execute([id])?;
            c.prepare_cached("DELETE FROM tasks WHERE id = ?")?.execute([id])?;
            p.tasks += 1;
        }
        p.output_bytes += bytes;
    }
    if let Some(before) = cutoff(now, r.output) {
        let from: i64 = c
            .query_row("SELECT value FROM settings WHERE key = ?", [OUTPUT_PRUNED_BEFORE], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN);
        let expired = ids(
            c,
            &format!(
                "SELECT t.id FROM tasks t WHERE t.finished_at >= ?1 AND t.finished_at < ?2 AND t.{FINISHED} \
                 AND EXISTS (SELECT 1 FROM output o WHERE o.task_id = t.id) ORDER BY t.finished_at LIMIT ?3"
            ),
            from,
            before,
            limit,
        )?;
        let mut more = expired.len() == limit;
        let mut bytes = 0;
        for id in &expired {
            if bytes >= PRUNE_BYTES {
                more = true;
                break;
            }
            bytes += output_bytes_of(c, id)?;
            c.prepare_cached("DELETE FROM output WHERE task_id = ?")?.execute([id])?;
            c.prepare_cached("UPDATE attempts SET output_pruned = 1 WHERE task_id = ? AND output_bytes > 0")?
                .execute([id])?;
            p.outputs += 1;
        }
        p.output_bytes += bytes;
        p.more |= more;
        if !more && before > from {
            put_setting(c, OUTPUT_PRUNED_BEFORE, &before.to_string(), now)?;
        }
    }
    if let Some(before) = cutoff(now, r.events) {
        // The oldest events, up to the first one that is not expired.
        let mut stmt = c.prepare_cached(
            "SELECT seq, at FROM events WHERE seq < (SELECT MAX(seq) FROM events) ORDER BY seq LIMIT ?",
        )?;
        let rows: Vec<(i64, i64)> =
            stmt.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let expired: Vec<i64> = rows.iter().take_while(|(_, at)| *at < before).map(|(seq, _)| *seq).collect();
        if let Some(last) = expired.last() {
            c.prepare_cached("DELETE FROM events WHERE seq <= ?")?.execute([last])?;
        }
        p.events = expired.len() as u64;
        p.more |= expired.len() == limit;
        // Messages are kept as long as the timeline, whether delivered or not.
        let gone = c
            .prepare_cached(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < ? ORDER BY id LIMIT ?)",
            )?
            .execute(params![before, limit as i64])?;
        p.more |= gone == limit;
    }
    Ok(p)
}

/// Whether the file gives free pages back on request (`auto_vacuum=INCREMENTAL`).
pub fn gives_space_back(c: &Connection) -> Result<bool> {
    Ok(c.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))? == 2)
}

/// Rewrites the whole file so that it gives free pages back from now on.
/// Returns how long every write waited for it.
pub fn rewrite_for_incremental_vacuum(c: &Connection) -> Result<Duration> {
    let began = std::time::Instant::now();
    c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    // The copy VACUUM builds goes to a temporary file, not memory: it is as
    // large as the database.
    c.pragma_update(None, "temp_store", "FILE")?;
    let vacuumed = c.execute_batch("VACUUM");
    c.pragma_update(None, "temp_store", "MEMORY")?;
    vacuumed?;
    Ok(began.elapsed())
}

/// Moves every live lease's expiry `by` later, rounded up to the millisecond:
/// however short the wait, a heartbeat may have waited through it.
pub fn extend_leases(c: &Connection, by: Duration) -> Result<()> {
    let ms = by.as_nanos().div_ceil(1_000_000).min(i64::MAX as u128) as i64;
    c.execute("UPDATE tasks SET lease_expires_at = lease_expires_at + ? WHERE lease_expires_at IS NOT NULL", [ms])?;
    Ok(())
}

/// Gives up to `pages` free pages back to the file system; returns how many it gave.
pub fn incremental_vacuum(c: &Connection, pages: u64) -> Result<u64> {
    let free = |c: &Connection| c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
    let before = free(c)?;
    // The pragma frees one page per step of its statement: run it to the end.
    let mut stmt = c.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    Ok(before.saturating_sub(free(c)?) as u64)
}

/// Tries a truncating checkpoint this many times, `CHECKPOINT_RETRY` apart.
const CHECKPOINT_TRIES: u32 = 20;
const CHECKPOINT_RETRY: Duration = Duration::from_millis(5);

/// Folds the write-ahead log into the file and truncates it, unless a
/// reader is in the way: then it gives up (the next checkpoint does it)
/// rather than hold up every write while the reader finishes. The
/// background checkpointer holds the log for a few milliseconds at a time,
/// so a busy log is tried again for up to a tenth of a second first.
pub fn checkpoint(c: &Connection) -> Result<()> {
    c.busy_timeout(Duration::ZERO)?;
    let mut result = Ok(0);
    for _ in 0..CHECKPOINT_TRIES {
        // The first column is 1 when the checkpoint could not finish.
        result = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        match result {
            Ok(1) => std::thread::sleep(CHECKPOINT_RETRY),
            _ => break,
        }
    }
    c.busy_timeout(Duration::from_secs(10))?;
    result?;
    Ok(())
}

const LAST_COMPACTION_AT: &str = "compaction.last_at";
const LAST_COMPACTION: &str = "compaction.last";

pub fn record_compaction(c: &Connection, report: &crate::CompactReport, now: Millis) -> Result<()> {
    let summary = report.summary();
    put_setting(c, LAST_COMPACTION_AT, &now.0.to_string(), now)?;
    put_setting(c, LAST_COMPACTION, &summary, now)?;
    agent_event(c, now, "db.compacted", None, None, Some(&summary))
}

/// Everything in `DbStats` that comes from queries; file sizes are the caller's.
pub fn db_stats(c: &Connection) -> Result<crate::DbStats> {
    let pragma = |name: &str| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
    let setting = |key: &str| -> Result<Option<String>> {
        Ok(c.query_row("SELECT value FROM settings WHERE key = ?", [key], |r| r.get(0)).optional()?)
    };
    let last_compaction = match (setting(LAST_COMPACTION_AT)?, setting(LAST_COMPACTION)?) {
        (Some(at), Some(summary)) => at.parse().ok().map(|at| crate::LastCompaction { at: Millis(at), summary }),
        _ => None,
    };
    Ok(crate::DbStats {
        backend: "sqlite",
        page_size: pragma("page_size")? as u64,
        pages: pragma("page_count")? as u64,
        free_pages: pragma("freelist_count")? as u64,
        auto_vacuum: match pragma("auto_vacuum")? {
            1 => "full",
            2 => "incremental",
            _ => "none",
        },
        tasks: count("SELECT COUNT(*) FROM tasks")? as u64,
        events: count("SELECT COUNT(*) FROM events")? as u64,
        output_bytes: count("SELECT COALESCE(SUM(output_bytes), 0) FROM attempts WHERE output_pruned = 0")? as u64,
        last_compaction,
        ..crate::DbStats::default()
    })
}

// -- alerts and settings --------------------------------------------------------------

const ALERT_COLS: &str = "rule, state, severity, detail, since, acknowledged_by, acknowledged_at, updated_at";

fn alert_row(r: &Row<'_>) -> rusqlite::Result<crate::AlertRecord> {
    use muster_core::alert::{AlertState, Rule, Severity};
    let rule: String = r.get(0)?;
    let state: String = r.get(1)?;
    let severity: String = r.get(2)?;
    Ok(crate::AlertRecord {
        rule: Rule::parse(&rule).map_err(|e| corrupt("alert rule", e))?,
        state: AlertState::parse(&state).map_err(|e| corrupt("alert state", e))?,
        severity: Severity::parse(&severity).map_err(|e| corrupt("alert severity", e))?,
        detail: r.get(3)?,
        since: ms(r.get(4)?),
        acknowledged_by: r.get(5)?,
        acknowledged_at: ms(r.get(6)?),
        updated_at: Millis(r.get(7)?),
    })
}

pub fn alerts(c: &Connection) -> Result<Vec<crate::AlertRecord>> {
    Ok(c.prepare(&format!("SELECT {ALERT_COLS} FROM alerts ORDER BY rule"))?
        .query_map([], alert_row)?
        .collect::<rusqlite::Result<_>>()?)
}

fn alert_event(c: &Connection, now: Millis, kind: &str, a: &crate::AlertRecord) -> Result<()> {
    let detail = format!(
        "{} ({}){}",
        a.rule.as_str(),
        a.severity.as_str(),
        a.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    );
    agent_event(c, now, kind, None, Some(a.state.as_str()), Some(&detail))
}

pub fn save_alert(c: &Connection, a: &crate::AlertRecord, event: Option<&str>, now: Millis) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO alerts (rule, state, severity, detail, since, acknowledged_by, acknowledged_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule) DO UPDATE SET state = excluded.state, \
         severity = excluded.severity, detail = excluded.detail, since = excluded.since, \
         acknowledged_by = excluded.acknowledged_by, acknowledged_at = excluded.acknowledged_at, \
         updated_at = excluded.updated_at",
    )?
    .execute(params![
        a.rule.as_str(),
        a.state.as_str(),
        a.severity.as_str(),
        a.detail,
        a.since.map(|m| m.0),
        a.acknowledged_by,
        a.acknowledged_at.map(|m| m.0),
        a.updated_at.0
    ])?;
    if let Some(kind) = event {
        alert_event(c, now, kind, a)?;
    }
    Ok(())
}

pub fn acknowledge_alert(
    c: &Connection,
    rule: muster_core::alert::Rule,
    by: &str,
    now: Millis,
) -> Result<crate::AlertRecord> {
    let found = c
        .prepare_cached(&format!("SELECT {ALERT_COLS} FROM alerts WHERE rule = ?"))?
        .query_row([rule.as_str()], alert_row)
        .optional()?;
    let state = found.as_ref().map_or(muster_core::alert::AlertState::Resolved, |a| a.state);
    let acknowledged = muster_core::alert::acknowledge(state).map_err(StoreError::Invalid)?;
    let mut alert = found.ok_or_else(|| StoreError::not_found("alert", rule.as_str()))?;
    alert.state = acknowledged;
    alert.acknowledged_by = Some(by.to_owned());
    alert.acknowledged_at = Some(now);
    alert.updated_at = now;
    save_alert(c, &alert, Some("alert.acknowledged"), now)?;
    Ok(alert)
}

pub fn settings(c: &Connection, prefix: &str) -> Result<Vec<(String, String)>> {
    let mut stmt =
        c.prepare_cached("SELECT key, value FROM settings WHERE substr(key, 1, length(?)) = ? ORDER BY key")?;
    let rows = stmt.query_map([prefix, prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Stores one setting, with no event: for the store's own bookkeeping.
fn put_setting(c: &Connection, key: &str, value: &str, now: Millis) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![key, value, now.0])?;
    Ok(())
}

pub fn put_settings(c: &Connection, pairs: &[(String, Option<String>)], by: &str, now: Millis) -> Result<()> {
    let mut remove = c.prepare_cached("DELETE FROM settings WHERE key = ?")?;
    for (k, v) in pairs {
        match v {
            Some(v) => put_setting(c, k, v, now)?,
            None => {
                remove.execute([k])?;
            }
        }
    }
    let detail: Vec<String> = pairs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("{k} reset"),
        })
        .collect();
    agent_event(c, now, "config.changed", None, None, Some(&format!("{} by {by}", detail.join(", "))))
}

pub fn count_quiet_running(c: &Connection, quiet_since: Millis) -> Result<u64> {
    let n: i64 = c.query_row(
        "SELECT COUNT(*) FROM tasks t WHERE t.state = 'running' AND t.started_at < ?1 \
         AND NOT EXISTS (SELECT 1 FROM output o WHERE o.task_id = t.id AND o.epoch = t.epoch AND o.at >= ?1)",
        [quiet_since.0],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

// -- events -----------------------------------------------------------------------

pub fn events(c: &Connection, f: &EventFilter) -> Result<Vec<Event>> {
    let limit = f.limit.clamp(1, 10_000) as i64;
    // Only the conditions asked for, so that SQLite can use the rowid range
    // and the task and agent indexes.
    let mut cond = String::from("seq > ?");
    let mut args: Vec<rusqlite::types::Value> = vec![f.after.into()];
    if let Some(before) = f.before {
        cond.push_str(" AND seq < ?");
        args.push(before.into());
    }
    if let Some(task) = &f.task {
        cond.push_str(" AND task_id = ?");
        args.push(task.as_str().to_owned().into());
    }
    if let Some(agent) = &f.agent {
        cond.push_str(" AND agent = ?");
        args.push(agent.as_str().to_owned().into());
    }
    if let Some(kind) = f.kind.as_deref().filter(|k| !k.is_empty()) {
        // A kind, or every kind under it: `task` takes `task.failed`. Exact
        // and case-sensitive, as kinds are.
        cond.push_str(" AND (kind = ? OR substr(kind, 1, ?) = ?)");
        args.push(kind.to_owned().into());
        args.push((kind.chars().count() as i64 + 1).into());
        args.push(format!("{kind}.").into());
    }
    args.push(limit.into());
    const COLS: &str = "seq, at, kind, task_id, agent, epoch, state, detail";
    // Reading backwards takes the newest below `before`, then puts them oldest first.
    let sql = if f.before.is_some() {
        format!("SELECT * FROM (SELECT {COLS} FROM events WHERE {cond} ORDER BY seq DESC LIMIT ?) ORDER BY seq")
    } else {
        format!("SELECT {COLS} FROM events WHERE {cond} ORDER BY seq LIMIT ?")
    };
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let task: Option<String> = r.get(3)?;
        let agent: Option<String> = r.get(4)?;
        Ok(Event {
            seq: r.get(0)?,
            at: Millis(r.get(1)?),
            kind: r.get(2)?,
            task: task.map(|t| TaskId::parse(&t)).transpose().map_err(|e| corrupt("task id", e))?,
            agent: agent.map(|a| AgentName::parse(&a)).transpose().map_err(|e| corrupt("agent", e))?,
            epoch: r.get::<_, Option<i64>>(5)?.map(|e| Epoch(e as u64)),
            state: r.get(6)?,
            detail: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// -- locks ---------------------------------------------------------------------------

fn lock_rows(c: &Connection, sql: &str, arg: Option<&str>) -> Result<Vec<LockRecord>> {
    let mut stmt = c.prepare_cached(sql)?;
    let map = |r: &Row<'_>| {
        let (task, mode): (String, String) = (r.get(1)?, r.get(2)?);
        Ok(LockRecord {
            name: r.get(0)?,
            task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))?,
            mode: LockMode::parse(&mode).ok_or_else(|| corrupt("lock mode", &mode))?,
            since: Millis(r.get(3)?),
        })
    };
    let rows = match arg {
        Some(a) => stmt.query_map([a], map)?.collect::<rusqlite::Result<Vec<_>>>()?,
        None => stmt.query_map([], map)?.collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

fn holders_of(c: &Connection, name: &str) -> Result<Vec<LockRecord>> {
    lock_rows(c, "SELECT name, task_id, mode, since FROM locks WHERE name = ? ORDER BY since", Some(name))
}

/// Holders that stand in the way of `task` taking `name` in `mode`.
fn blockers(holders: &[LockRecord], task: &TaskId, mode: LockMode) -> Vec<TaskId> {
    holders
        .iter()
        .filter(|h| h.task != *task && (mode == LockMode::Exclusive || h.mode == LockMode::Exclusive))
        .map(|h| h.task.clone())
        .collect()
}

fn lock_event(c: &Connection, now: Millis, kind: &str, task: Option<&Task>, detail: &str) -> Result<()> {
    match task {
        Some(t) => task_event(c, now, kind, t, Some(detail)),
        None => insert_event_row(
            c,
            now,
            kind,
            EventRow { task: None, agent: None, epoch: None, state: None, detail: Some(detail) },
        ),
    }
}

#[allow(clippy::too_many_arguments)] // each is one fact of the request
pub fn acquire_lock(
    c: &Connection,
    name: &str,
    id: &TaskId,
    epoch: Epoch,
    mode: LockMode,
    try_only: bool,
    now: Millis,
) -> Result<Acquire> {
    check_lock_name(name).map_err(StoreError::Invalid)?;
    let task = load_task(c, id)?;
    if !(task.state.is_leased() && task.lease.as_ref().is_some_and(|l| l.epoch == epoch)) {
        return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
    }
    let holders = holders_of(c, name)?;
    let blocking = blockers(&holders, id, mode);
    if blocking.is_empty() {
        c.prepare_cached("DELETE FROM lock_waits WHERE task_id = ? AND name = ?")?
            .execute(params![id.as_str(), name])?;
        let held = holders.iter().any(|h| h.task == *id);
        c.prepare_cached(
            "INSERT INTO locks (name, task_id, mode, since) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name, task_id) DO UPDATE SET mode = excluded.mode",
        )?
        .execute(params![name, id.as_str(), mode.as_str(), now.0])?;
        if !held {
            lock_event(c, now, "lock.acquired", Some(&task), &format!("{name} ({})", mode.as_str()))?;
        }
        return Ok(Acquire::Acquired);
    }
    if try_only {
        return Ok(Acquire::Busy { holders: blocking });
    }
    // Would this wait close a cycle? Follow who waits for whom, from the holders.
    if let Some(cycle) = cycle_through(c, id, name, &blocking)? {
        c.prepare_cached("DELETE FROM lock_waits WHERE task_id = ? AND name = ?")?
            .execute(params![id.as_str(), name])?;
        let text = cycle.iter().map(|(t, n)| format!("{t} waits for {n}")).collect::<Vec<_>>().join(", ");
        lock_event(c, now, "lock.deadlock", Some(&task), &format!("{text}: {id}'s acquire of {name} is refused"))?;
        return Ok(Acquire::Deadlock { cycle });
    }
    let new = c
        .prepare_cached(
            "INSERT INTO lock_waits (name, task_id, mode, since) VALUES (?, ?, ?, ?) \
             ON CONFLICT (task_id, name) DO NOTHING",
        )?
        .execute(params![name, id.as_str(), mode.as_str(), now.0])?;
    if new > 0 {
        let held_by = blocking.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
        lock_event(c, now, "lock.waiting", Some(&task), &format!("{name} ({}), held by {held_by}", mode.as_str()))?;
    }
    Ok(Acquire::Busy { holders: blocking })
}

/// The cycle `task` waiting for `name` (held by `blocking`) would close: the core's rule over the stored waits.
fn cycle_through(
    c: &Connection,
    task: &TaskId,
    name: &str,
    blocking: &[TaskId],
) -> Result<Option<Vec<(TaskId, String)>>> {
    let waits = lock_waits(c)?;
    let graph: Vec<Wait<'_>> =
        waits.iter().map(|w| Wait { task: &w.task, name: &w.name, holders: &w.holders }).collect();
    Ok(muster_core::locks::cycle_through(task, name, blocking, &graph))
}

pub fn release_lock(c: &Connection, name: &str, task: Option<&TaskId>, by: &str, now: Millis) -> Result<u64> {
    check_lock_name(name).map_err(StoreError::Invalid)?;
    let gone = match task {
        Some(t) => {
            let n = c
                .prepare_cached("DELETE FROM locks WHERE name = ? AND task_id = ?")?
                .execute(params![name, t.as_str()])?;
            let w = c
                .prepare_cached("DELETE FROM lock_waits WHERE name = ? AND task_id = ?")?
                .execute(params![name, t.as_str()])?;
            if n > 0 {
                let held = load_task(c, t)?;
                lock_event(c, now, "lock.released", Some(&held), name)?;
            }
            (n + w) as u64
        }
        None => {
            let holders = holders_of(c, name)?;
            if holders.is_empty() {
                return Err(StoreError::not_found("lock", name));
            }
            c.prepare_cached("DELETE FROM locks WHERE name = ?")?.execute([name])?;
            let tasks = holders.iter().map(|h| h.task.to_string()).collect::<Vec<_>>().join(", ");
            lock_event(c, now, "lock.forced", None, &format!("{name} taken from {tasks} (by {by})"))?;
            holders.len() as u64
        }
    };
    Ok(gone)
}

pub fn stop_waiting(c: &Connection, name: &str, task: &TaskId) -> Result<()> {
    c.prepare_cached("DELETE FROM lock_waits WHERE name = ? AND task_id = ?")?.execute(params![name, task.as_str()])?;
    Ok(())
}

pub fn release_all_locks(c: &Connection, by: &str, now: Millis) -> Result<u64> {
    let all = locks(c)?;
    let mut names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    names.dedup();
    for name in &names {
        release_lock(c, name, None, by, now)?;
    }
    Ok(all.len() as u64)
}

/// A run ended (or was taken back): whatever its task held or waited for is let go.
fn release_task_locks(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    let held = lock_rows(c, "SELECT name, task_id, mode, since FROM locks WHERE task_id = ?", Some(task.id.as_str()))?;
    c.prepare_cached("DELETE FROM locks WHERE task_id = ?")?.execute([task.id.as_str()])?;
    c.prepare_cached("DELETE FROM lock_waits WHERE task_id = ?")?.execute([task.id.as_str()])?;
    // The files it had changed belonged to that run's worktree, gone with it.
    c.prepare_cached("DELETE FROM task_files WHERE task_id = ?")?.execute([task.id.as_str()])?;
    if !held.is_empty() {
        let names = held.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ");
        lock_event(c, now, "lock.released", Some(task), &format!("{names} (the run ended)"))?;
    }
    Ok(())
}

pub fn locks(c: &Connection) -> Result<Vec<LockRecord>> {
    lock_rows(c, "SELECT name, task_id, mode, since FROM locks ORDER BY name, since", None)
}

pub fn lock_waits(c: &Connection) -> Result<Vec<LockWait>> {
    let mut stmt = c.prepare_cached("SELECT name, task_id, mode, since FROM lock_waits ORDER BY since")?;
    let rows: Vec<(String, String, String, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, task, mode, since) in rows {
        let task = TaskId::parse(&task).map_err(|e| corrupt("task id", e))?;
        let mode = LockMode::parse(&mode).ok_or_else(|| corrupt("lock mode", &mode))?;
        let holders = blockers(&holders_of(c, &name)?, &task, mode);
        out.push(LockWait { name, task, mode, since: Millis(since), holders });
    }
    Ok(out)
}

// -- decisions -----------------------------------------------------------------

const DECISION_COLS: &str = "id, task_id, question, options, default_option, deadline, answerers, raised_by, epoch, \
     park, state, answer, note, answered_by, created_at, closed_at";

fn decision_row(r: &Row<'_>) -> rusqlite::Result<DecisionRecord> {
    let task: String = r.get(1)?;
    let options: String = r.get(3)?;
    let answerers: String = r.get(6)?;
    let state: String = r.get(10)?;
    Ok(DecisionRecord {
        id: r.get(0)?,
        task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))?,
        question: r.get(2)?,
        options: lines(&options),
        default: r.get(4)?,
        deadline: ms(r.get(5)?),
        answerers: lines(&answerers),
        raised_by: r.get(7)?,
        epoch: r.get::<_, Option<i64>>(8)?.map(|e| Epoch(e as u64)),
        park: r.get(9)?,
        state: DecisionState::parse(&state).ok_or_else(|| corrupt("decision state", &state))?,
        answer: r.get(11)?,
        note: r.get(12)?,
        answered_by: r.get(13)?,
        created_at: Millis(r.get(14)?),
        closed_at: ms(r.get(15)?),
    })
}

/// Options and answerers are kept one per line (neither may hold a control character).
fn lines(s: &str) -> Vec<String> {
    s.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

pub fn decision(c: &Connection, id: i64) -> Result<Option<DecisionRecord>> {
    Ok(c.prepare_cached(&format!("SELECT {DECISION_COLS} FROM decisions WHERE id = ?"))?
        .query_row([id], decision_row)
        .optional()?)
}

fn load_decision(c: &Connection, id: i64) -> Result<DecisionRecord> {
    decision(c, id)?.ok_or_else(|| StoreError::not_found("decision", id))
}

/// Open decisions first (oldest first), then the most recently closed; at most `limit`.
pub fn decisions(c: &Connection, open_only: bool, task: Option<&TaskId>, limit: usize) -> Result<Vec<DecisionRecord>> {
    let mut sql = format!("SELECT {DECISION_COLS} FROM decisions WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if open_only {
        sql.push_str(" AND state = 'open'");
    }
    if let Some(t) = task {
        sql.push_str(" AND task_id = ?");
        args.push(t.as_str().to_owned().into());
    }
    sql.push_str(" ORDER BY state != 'open', CASE WHEN state = 'open' THEN id ELSE -id END LIMIT ?");
    args.push((limit.clamp(1, 1000) as i64).into());
    let rows =
        c.prepare_cached(&sql)?.query_map(params_from_iter(args), decision_row)?.collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub fn next_decision_deadline(c: &Connection) -> Result<Option<Millis>> {
    let next: Option<i64> = c
        .prepare_cached("SELECT min(deadline) FROM decisions WHERE state = 'open' AND deadline IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    Ok(next.map(Millis))
}

fn decision_event(
    c: &Connection,
    now: Millis,
    kind: &str,
    task: &Task,
    d: &DecisionRecord,
    detail: &str,
) -> Result<()> {
    task_event(c, now, kind, task, Some(&format!("#{}: {detail}", d.id)))
}

fn close_decision(
    c: &Connection,
    d: &mut DecisionRecord,
    state: DecisionState,
    answer: Option<String>,
    by: Option<&str>,
    note: Option<String>,
    now: Millis,
) -> Result<()> {
    d.state = state;
    d.answer = answer;
    d.answered_by = by.map(str::to_owned);
    d.note = note;
    d.closed_at = Some(now);
    c.prepare_cached(
        "UPDATE decisions SET state = ?, answer = ?, answered_by = ?, note = ?, closed_at = ? WHERE id = ? AND state = 'open'",
    )?
    .execute(params![d.state.as_str(), d.answer, d.answered_by, d.note, now.0, d.id])?;
    Ok(())
}

/// Runs at every change of a task's state, so it is one cached statement on
/// the `decisions_task` index.
fn open_decisions_of(c: &Connection, task: &TaskId) -> Result<Vec<DecisionRecord>> {
    let sql = format!("SELECT {DECISION_COLS} FROM decisions WHERE task_id = ? AND state = 'open' ORDER BY id");
    let rows = c.prepare_cached(&sql)?.query_map([task.as_str()], decision_row)?.collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Opens a decision. An operator's parks a queued task in `needs_decision`
/// at once; a run's leaves its task running (the run waits for the answer,
/// or stops and is parked when it ends, if it asked to).
pub fn open_decision(c: &Connection, new: NewDecision, now: Millis) -> Result<(DecisionRecord, Task)> {
    let new = new.validate().map_err(StoreError::Invalid)?;
    let mut task = load_task(c, &new.task)?;
    match new.epoch {
        Some(epoch) => {
            if !(task.state == TaskState::Running && task.lease.as_ref().is_some_and(|l| l.epoch == epoch)) {
                return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
            }
        }
        None => task.await_decision(now).map_err(refused)?,
    }
    let deadline = new.timeout.map(|t| now.plus(t));
    c.prepare_cached(
        "INSERT INTO decisions (task_id, question, options, default_option, deadline, answerers, raised_by, epoch, \
         park, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)",
    )?
    .execute(params![
        new.task.as_str(),
        new.question,
        new.options.join("\n"),
        new.default,
        deadline.map(|d| d.0),
        new.answerers.join("\n"),
        new.raised_by,
        new.epoch.map(|e| e.0 as i64),
        new.park,
        now.0,
    ])?;
    let d = load_decision(c, c.last_insert_rowid())?;
    let was = load_task(c, &new.task)?.state;
    if task.state != was {
        save_task(c, &task)?;
        task_event(c, now, "task.needs_decision", &task, Some(&format!("decision #{}", d.id)))?;
    }
    let default = d.default.as_deref().map(|o| format!(", default {o}")).unwrap_or_default();
    decision_event(
        c,
        now,
        "decision.opened",
        &task,
        &d,
        &format!("{} [{}{default}] (by {})", clip(&d.question, 200), d.options.join(" | "), d.raised_by),
    )?;
    Ok((d, task))
}

/// A task waiting in `needs_decision` with nothing left open goes back to the queue.
fn resume_if_decided(c: &Connection, task: Task, now: Millis) -> Result<Task> {
    let mut task = task;
    if task.state == TaskState::NeedsDecision
        && open_decisions_of(c, &task.id)?.is_empty()
        && !waits_for_winner(c, &task.id)?
    {
        task.resume(now).map_err(refused)?;
        save_task(c, &task)?;
        task_event(c, now, "task.resumed", &task, Some("every decision is answered"))?;
    }
    Ok(task)
}

/// A person answers. `by` must be among the decision's answerers, if it names any.
pub fn answer_decision(
    c: &Connection,
    id: i64,
    option: &str,
    note: Option<String>,
    by: &str,
    now: Millis,
) -> Result<(DecisionRecord, Task)> {
    let mut d = load_decision(c, id)?;
    if d.state != DecisionState::Open {
        return Err(StoreError::Conflict(format!(
            "decision #{id} is already {}{}",
            d.state.as_str(),
            d.answer.as_deref().map(|a| format!(": {a}")).unwrap_or_default()
        )));
    }
    if !d.options.iter().any(|o| o == option) {
        return Err(StoreError::Invalid(Invalid::new(
            "option",
            format!("{option:?} is not an option of decision #{id}; choose one of {}", d.options.join(", ")),
        )));
    }
    if !d.answerers.is_empty() && !d.answerers.iter().any(|a| a == by) {
        return Err(StoreError::Conflict(format!(
            "decision #{id} may be answered only by {}; {by} may not",
            d.answerers.join(", ")
        )));
    }
    let note = note.map(|n| clip(n.trim(), 2000)).filter(|n| !n.is_empty());
    close_decision(c, &mut d, DecisionState::Answered, Some(option.to_owned()), Some(by), note.clone(), now)?;
    let task = load_task(c, &d.task)?;
    let said = note.as_deref().map(|n| format!(": {}", clip(n, 200))).unwrap_or_default();
    decision_event(c, now, "decision.answered", &task, &d, &format!("{option} (by {by}){said}"))?;
    resolve_conflict(c, &d, now)?;
    let task = resume_if_decided(c, task, now)?;
    Ok((d, task))
}

/// Applies every deadline that has passed: the default where there is one,
/// otherwise the task fails with `decision_timeout`.
pub fn expire_decisions(c: &Connection, now: Millis, limit: usize) -> Result<Vec<(DecisionRecord, Task)>> {
    let due: Vec<DecisionRecord> = c
        .prepare_cached(&format!(
            "SELECT {DECISION_COLS} FROM decisions WHERE state = 'open' AND deadline IS NOT NULL AND deadline <= ? \
             ORDER BY deadline LIMIT ?"
        ))?
        .query_map(params![now.0, limit as i64], decision_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(due.len());
    for mut d in due {
        // An earlier one in this batch may have ended the task, withdrawing this one.
        if load_decision(c, d.id)?.state != DecisionState::Open {
            continue;
        }
        let waited = waited_text(now.since(d.created_at));
        let mut task = load_task(c, &d.task)?;
        match d.default.clone() {
            Some(default) => {
                close_decision(
                    c,
                    &mut d,
                    DecisionState::AutoResolved,
                    Some(default.clone()),
                    Some("timeout"),
                    None,
                    now,
                )?;
                decision_event(
                    c,
                    now,
                    "decision.auto_resolved",
                    &task,
                    &d,
                    &format!("{default} (the default: nobody answered in {waited})"),
                )?;
                task = resume_if_decided(c, task, now)?;
            }
            None => {
                close_decision(c, &mut d, DecisionState::TimedOut, None, Some("timeout"), None, now)?;
                decision_event(
                    c,
                    now,
                    "decision.timed_out",
                    &task,
                    &d,
                    &format!("nobody answered in {waited} and there is no default"),
                )?;
                let epoch = task.epoch;
                let was_running = task.state == TaskState::Running;
                if task.decision_timed_out(now).is_ok() {
                    save_task(c, &task)?;
                    if was_running {
                        end_attempt(c, &task, epoch, Outcome::DecisionTimeout, now)?;
                    }
                    let kind = if task.state == TaskState::Failed { "task.failed" } else { "task.cancelled" };
                    task_event(c, now, kind, &task, task.reason.as_deref())?;
                    release_task_locks(c, &task, now)?;
                    settle(c, &task, now)?;
                }
            }
        }
        out.push((d, task));
    }
    Ok(out)
}

/// `90s`, `5m`, `2h`, `3d`: how long a decision stayed open.
fn waited_text(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// Open decisions whose task no longer waits for them are withdrawn: the task
/// ended or was reset, or the run that asked (without parking) is over.
fn withdraw_decisions(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    if task.state == TaskState::NeedsDecision {
        return Ok(());
    }
    for mut d in open_decisions_of(c, &task.id)? {
        let asker_runs = task.state.is_leased() && d.epoch == Some(task.epoch);
        if asker_runs {
            continue;
        }
        close_decision(c, &mut d, DecisionState::Withdrawn, None, None, None, now)?;
        decision_event(c, now, "decision.withdrawn", task, &d, &format!("the task is {}", task.state.as_str()))?;
        c.prepare_cached(
            "UPDATE conflicts SET resolution = 'ended', resolved_at = ? WHERE decision_id = ? AND resolution IS NULL",
        )?
        .execute(params![now.0, d.id])?;
    }
    Ok(())
}

/// Whether any other record is tied to the task: a decision, a lock held or
/// waited for, a file its run changes, a conflict, a task that depends on
/// it. A run's end looks each of those up and settles it (`parked_by`,
/// `release_task_locks`, `settle`), about ten statements; most tasks have
/// none of them, and one statement says so. A new kind of record that a
/// run's end must settle belongs in this probe too.
fn has_ties(c: &Connection, id: &TaskId) -> Result<bool> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM decisions WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM locks WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM lock_waits WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM task_files WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM conflicts WHERE winner = ?1) \
             OR EXISTS (SELECT 1 FROM conflicts WHERE loser = ?1) \
             OR EXISTS (SELECT 1 FROM task_deps WHERE dep_id = ?1)",
    )?
    .query_row([id.as_str()], |r| r.get(0))?)
}

/// The decision that makes this run's end a park rather than a finish: one it
/// raised asking to stop, still open, or answered while it was stopping.
fn parked_by(c: &Connection, task: &Task, epoch: Epoch) -> Result<Option<DecisionRecord>> {
    // MIN rather than ORDER BY ... LIMIT 1: the same row without building a
    // sorter, which every finished run paid for though hardly any run parks.
    Ok(c.prepare_cached(&format!(
        "SELECT {DECISION_COLS} FROM decisions WHERE id = (SELECT MIN(id) FROM decisions WHERE task_id = ? \
         AND epoch = ? AND park = 1 AND state IN ('open', 'answered', 'auto_resolved'))"
    ))?
    .query_row(params![task.id.as_str(), epoch.0 as i64], decision_row)
    .optional()?)
}

/// The run stopped after asking: its task waits in `needs_decision` (or is
/// queued at once, if the answer came while it was stopping), without
/// spending the attempt.
#[allow(clippy::too_many_arguments)] // each is one fact of the report
fn park_task(
    c: &Connection,
    mut task: Task,
    agent: &AgentName,
    epoch: Epoch,
    outcome: &RunOutcome,
    details: &RunDetails,
    parked: &DecisionRecord,
    now: Millis,
) -> Result<(Task, FinishResult)> {
    let state = task.park(agent, epoch, now).map_err(refused)?;
    save_task(c, &task)?;
    end_attempt(c, &task, epoch, Outcome::Parked, now)?;
    // Questions the run asked and waited for have nobody waiting any more.
    for mut d in open_decisions_of(c, &task.id)?.into_iter().filter(|d| d.epoch == Some(epoch) && !d.park) {
        close_decision(c, &mut d, DecisionState::Withdrawn, None, None, None, now)?;
        decision_event(c, now, "decision.withdrawn", &task, &d, "the run that asked stopped")?;
    }
    save_details(c, &task.id, epoch, details, now)?;
    let ran = outcome.outcome().as_str();
    let finished = if state == TaskState::Cancelled {
        task_event(c, now, "task.cancelled", &task, Some("cancelled while waiting for a decision"))?;
        Finished::Cancelled
    } else {
        task_event(
            c,
            now,
            "task.needs_decision",
            &task,
            Some(&format!("decision #{}; the run stopped ({ran}), no attempt spent", parked.id)),
        )?;
        Finished::RetryScheduled { ready_at: now }
    };
    release_task_locks(c, &task, now)?;
    settle(c, &task, now)?;
    let task = resume_if_decided(c, task, now)?;
    Ok((task, FinishResult::Applied(finished)))
}

// -- pipelines -----------------------------------------------------------------

/// Creates a pipeline's tasks, in order, in one transaction: all or none.
pub fn create_pipeline(c: &Connection, p: NewPipeline, now: Millis) -> Result<PipelineRecord> {
    if p.stages.is_empty() {
        return Err(StoreError::Invalid(Invalid::new("stages", "a pipeline needs at least one stage")));
    }
    c.prepare_cached("INSERT INTO pipelines (name, source, created_by, created_at) VALUES (?, ?, ?, ?)")?
        .execute(params![p.name, p.source, p.created_by, now.0])?;
    let id = c.last_insert_rowid();
    for (position, stage) in p.stages.into_iter().enumerate() {
        let created = create_task(c, stage.task.clone(), stage.spec, now)?;
        if !created.created {
            return Err(StoreError::Conflict(format!("stage {} would reuse task {}", stage.name, created.task.id)));
        }
        c.prepare_cached(
            "INSERT INTO pipeline_stages (pipeline_id, position, name, task_id, templated) VALUES (?, ?, ?, ?, ?)",
        )?
        .execute(params![id, position as i64, stage.name, stage.task.as_str(), stage.templated])?;
        task_event(c, now, "task.staged", &created.task, Some(&format!("pipeline {id} stage {}", stage.name)))?;
    }
    insert_event_row(
        c,
        now,
        "pipeline.created",
        EventRow { detail: Some(&format!("{id} {} (by {})", p.name, p.created_by)), ..EventRow::default() },
    )?;
    load_pipeline(c, id)
}

fn load_pipeline(c: &Connection, id: i64) -> Result<PipelineRecord> {
    pipeline(c, id)?.ok_or_else(|| StoreError::not_found("pipeline", id))
}

pub fn pipeline(c: &Connection, id: i64) -> Result<Option<PipelineRecord>> {
    let head: Option<(String, String, i64)> = c
        .prepare_cached("SELECT name, created_by, created_at FROM pipelines WHERE id = ?")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((name, created_by, created_at)) = head else { return Ok(None) };
    let rows: Vec<(String, String)> = c
        .prepare_cached("SELECT name, task_id FROM pipeline_stages WHERE pipeline_id = ? ORDER BY position")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let stages = rows
        .into_iter()
        .map(|(name, task)| Ok(StageRecord { name, task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))? }))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(PipelineRecord { id, name, created_by, created_at: Millis(created_at), stages }))
}

/// The newest first.
pub fn pipelines(c: &Connection, limit: usize) -> Result<Vec<PipelineRecord>> {
    let ids: Vec<i64> = c
        .prepare_cached("SELECT id FROM pipelines ORDER BY id DESC LIMIT ?")?
        .query_map([limit.clamp(1, 1000) as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    ids.into_iter().map(|id| load_pipeline(c, id)).collect()
}

/// What `{{stages.NAME.result}}` stands for: the coding agent's final
/// message, else what the runner's summary pattern found, else the end of
/// the output of the stage's last attempt.
fn stage_result(c: &Connection, task: &TaskId) -> Result<String> {
    const TAIL: usize = 4000;
    let attempts = attempts(c, task)?;
    let Some(last) = attempts.last() else { return Ok(String::new()) };
    if let Some(result) = last.report.as_ref().and_then(|r| r.result.clone()) {
        return Ok(result);
    }
    if let Some(summary) = &last.summary {
        return Ok(summary.clone());
    }
    let filter = OutputFilter { attempt: Some(last.number), after: 0, limit: 10_000 };
    let mut out: Vec<u8> = Vec::new();
    for chunk in read_output(c, task, &filter)? {
        if chunk.stream == crate::Stream::Stdout {
            out.extend_from_slice(&chunk.data);
        }
    }
    let text = String::from_utf8_lossy(&out);
    let text = text.trim_end();
    let cut = text.len().saturating_sub(TAIL);
    let cut = (cut..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    Ok(text[cut..].to_owned())
}

/// A stage about to be queued: `{{stages.NAME.result}}` and
/// `{{stages.NAME.task}}` in its prompt become what those stages produced.
fn render_stage(c: &Connection, task: &mut Task) -> Result<()> {
    let row: Option<(i64, bool)> = c
        .prepare_cached("SELECT pipeline_id, templated FROM pipeline_stages WHERE task_id = ?")?
        .query_row([task.id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((pipeline_id, true)) = row else { return Ok(()) };
    let stages: Vec<(String, String)> = c
        .prepare_cached("SELECT name, task_id FROM pipeline_stages WHERE pipeline_id = ?")?
        .query_map([pipeline_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let rendered = muster_core::pipeline::render(&task.spec.prompt, |name, field| -> Result<Option<String>> {
        let Some((_, id)) = stages.iter().find(|(n, _)| n == name) else { return Ok(None) };
        let id = TaskId::parse(id).map_err(|e| corrupt("task id", e))?;
        Ok(match field {
            "result" => Some(stage_result(c, &id)?),
            "task" => Some(id.to_string()),
            _ => None,
        })
    })?;
    task.spec.prompt = clip(&rendered, muster_core::task::MAX_PROMPT_BYTES);
    c.prepare_cached("UPDATE tasks SET prompt = ? WHERE id = ?")?
        .execute(params![task.spec.prompt, task.id.as_str()])?;
    c.prepare_cached("UPDATE pipeline_stages SET templated = 0 WHERE task_id = ?")?.execute([task.id.as_str()])?;
    Ok(())
}

// -- conflicts -----------------------------------------------------------------

const CONFLICT_COLS: &str = "id, repo, files, winner, loser, decision_id, resolution, created_at, resolved_at";

fn conflict_row(r: &Row<'_>) -> rusqlite::Result<ConflictRecord> {
    let (files, winner, loser): (String, String, String) = (r.get(2)?, r.get(3)?, r.get(4)?);
    Ok(ConflictRecord {
        id: r.get(0)?,
        repo: r.get(1)?,
        files: lines(&files),
        winner: TaskId::parse(&winner).map_err(|e| corrupt("task id", e))?,
        loser: TaskId::parse(&loser).map_err(|e| corrupt("task id", e))?,
        decision: r.get(5)?,
        resolution: r.get(6)?,
        created_at: Millis(r.get(7)?),
        resolved_at: ms(r.get(8)?),
    })
}

/// Newest first; `open_only`: those not yet resolved.
pub fn conflicts(c: &Connection, open_only: bool, limit: usize) -> Result<Vec<ConflictRecord>> {
    let filter = if open_only { "WHERE resolution IS NULL" } else { "" };
    let rows = c
        .prepare(&format!("SELECT {CONFLICT_COLS} FROM conflicts {filter} ORDER BY id DESC LIMIT ?"))?
        .query_map([limit.clamp(1, 1000) as i64], conflict_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// A run says which files it has changed so far. Another active task on the
/// same repository changing any of them is a conflict: the lower-priority
/// task (else the newer) is paused and a person asked whether it waits for
/// the other to end or goes on.
pub fn report_files(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    files: &[String],
    now: Millis,
) -> Result<Vec<NewConflict>> {
    let task = running_attempt(c, agent, id, epoch, now)?;
    let Some(repo) = task.spec.workspace.as_ref().map(|w| w.repo.clone()) else {
        return Err(StoreError::Invalid(Invalid::new("files", "the task has no repository")));
    };
    c.prepare_cached("DELETE FROM task_files WHERE task_id = ?")?.execute([id.as_str()])?;
    for path in files.iter().take(2000) {
        if path.is_empty() || path.len() > 4096 || path.contains('\n') {
            continue;
        }
        c.prepare_cached("INSERT OR IGNORE INTO task_files (task_id, repo, path) VALUES (?, ?, ?)")?
            .execute(params![id.as_str(), repo, path])?;
    }
    // Other active tasks changing the same files, with the files.
    let rows: Vec<(String, String)> = c
        .prepare_cached(
            "SELECT o.task_id, o.path FROM task_files m JOIN task_files o ON o.repo = m.repo AND o.path = m.path \
             JOIN tasks t ON t.id = o.task_id \
             WHERE m.task_id = ?1 AND o.task_id != ?1 \
             AND t.state IN ('assigned', 'running') ORDER BY o.task_id, o.path",
        )?
        .query_map([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut by_task: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (other, path) in rows {
        by_task.entry(other).or_default().push(path);
    }
    let mut found = Vec::new();
    for (other, files) in by_task {
        let other = load_task(c, &TaskId::parse(&other).map_err(|e| corrupt("task id", e))?)?;
        let known: i64 = c
            .prepare_cached(
                "SELECT count(*) FROM conflicts WHERE (resolution IS NULL OR resolution = 'go-on') AND \
                 ((winner = ?1 AND loser = ?2) OR (winner = ?2 AND loser = ?1))",
            )?
            .query_row(params![id.as_str(), other.id.as_str()], |r| r.get(0))?;
        if known > 0 {
            continue;
        }
        let first = (task.spec.priority, task.created_at, task.id.as_str())
            <= (other.spec.priority, other.created_at, other.id.as_str());
        let (winner, loser) = if first { (task.clone(), other) } else { (other, task.clone()) };
        found.push(open_conflict(c, &repo, files, &winner, loser, now)?);
    }
    Ok(found)
}

fn open_conflict(
    c: &Connection,
    repo: &str,
    files: Vec<String>,
    winner: &Task,
    loser: Task,
    now: Millis,
) -> Result<NewConflict> {
    c.prepare_cached("INSERT INTO conflicts (repo, files, winner, loser, created_at) VALUES (?, ?, ?, ?, ?)")?
        .execute(params![repo, files.join("\n"), winner.id.as_str(), loser.id.as_str(), now.0])?;
    let id = c.last_insert_rowid();
    let shown: Vec<&str> = files.iter().take(5).map(String::as_str).collect();
    let more = if files.len() > 5 { format!(" and {} more", files.len() - 5) } else { String::new() };
    let question = format!(
        "Conflict #{id} on {repo}: {} ({}) and {} ({}) both change {}{more}. {} is paused: should it wait until {} has ended, or go on now?",
        loser.id,
        loser.spec.priority.as_str(),
        winner.id,
        winner.spec.priority.as_str(),
        shown.join(", "),
        loser.id,
        winner.id,
    );
    // A running loser is asked under its run, which is stopped and parked; a
    // queued one waits at once; one not yet queued is only recorded.
    let running = loser.state.is_leased().then(|| loser.lease.as_ref().map(|l| (l.agent.clone(), l.epoch))).flatten();
    let can_wait = running.is_some() || matches!(loser.state, TaskState::Queued | TaskState::NeedsDecision);
    let mut decision = None;
    if can_wait && (running.is_none() || loser.state == TaskState::Running) {
        let new = NewDecision {
            task: loser.id.clone(),
            question,
            options: vec!["wait".to_owned(), "go-on".to_owned()],
            default: None,
            timeout: None,
            answerers: Vec::new(),
            raised_by: format!("conflict #{id}"),
            epoch: running.as_ref().map(|(_, e)| *e),
            park: running.is_some(),
        };
        let (d, _) = open_decision(c, new, now)?;
        c.prepare_cached("UPDATE conflicts SET decision_id = ? WHERE id = ?")?.execute(params![d.id, id])?;
        decision = Some(d.id);
    }
    let loser = load_task(c, &loser.id)?;
    task_event(
        c,
        now,
        "conflict.detected",
        &loser,
        Some(&format!("#{id} on {repo} with {}: {}{more}", winner.id, shown.join(", "))),
    )?;
    let conflict = c
        .prepare_cached(&format!("SELECT {CONFLICT_COLS} FROM conflicts WHERE id = ?"))?
        .query_row([id], conflict_row)?;
    let stop = if decision.is_some() { running } else { None };
    Ok(NewConflict { conflict, stop })
}

/// A decision about a conflict was answered: the conflict is resolved so.
fn resolve_conflict(c: &Connection, decision: &DecisionRecord, now: Millis) -> Result<()> {
    c.prepare_cached(
        "UPDATE conflicts SET resolution = ?, resolved_at = ? WHERE decision_id = ? AND resolution IS NULL",
    )?
    .execute(params![decision.answer, now.0, decision.id])?;
    Ok(())
}

/// Whether `task` was told to wait for a conflicting task that has not ended.
fn waits_for_winner(c: &Connection, task: &TaskId) -> Result<bool> {
    let n: i64 = c
        .prepare_cached(
            "SELECT count(*) FROM conflicts k JOIN tasks w ON w.id = k.winner WHERE k.loser = ? \
             AND k.resolution = 'wait' AND w.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')",
        )?
        .query_row([task.as_str()], |r| r.get(0))?;
    Ok(n > 0)
}

/// `task` ended: tasks that waited for it go on, and its files are no longer active.
fn release_conflicts(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    if !task.state.is_terminal() {
        return Ok(());
    }
    c.prepare_cached("DELETE FROM task_files WHERE task_id = ?")?.execute([task.id.as_str()])?;
    let losers: Vec<String> = c
        .prepare_cached("SELECT loser FROM conflicts WHERE winner = ? AND resolution = 'wait'")?
        .query_map([task.id.as_str()], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for loser in losers {
        // Retention may have removed it; then there is nothing to resume.
        if let Some(loser) = find_task(c, &TaskId::parse(&loser).map_err(|e| corrupt("task id", e))?)? {
            resume_if_decided(c, loser, now)?;
        }
    }
    // A task paused behind this one, still undecided: the question is moot.
    let undecided: Vec<i64> = c
        .prepare_cached(
            "SELECT decision_id FROM conflicts WHERE winner = ? AND resolution IS NULL AND decision_id IS NOT NULL",
        )?
        .query_map([task.id.as_str()], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in undecided {
        let mut d = load_decision(c, id)?;
        if d.state == DecisionState::Open {
            close_decision(c, &mut d, DecisionState::Withdrawn, None, None, None, now)?;
            if let Some(loser) = find_task(c, &d.task)? {
                decision_event(c, now, "decision.withdrawn", &loser, &d, &format!("{} has ended", task.id))?;
                resume_if_decided(c, loser, now)?;
            }
        }
    }
    // Conflicts nobody decided end with either task: the pair may meet again.
    c.prepare_cached(
        "UPDATE conflicts SET resolution = 'ended', resolved_at = ? WHERE resolution IS NULL AND (winner = ?2 OR loser = ?2)",
    )?
    .execute(params![now.0, task.id.as_str()])?;
    Ok(())
}

// -- checks and regressions --------------------------------------------------------

fn checks_of(c: &Connection, id: &TaskId, epoch: Epoch) -> Result<Vec<CheckRecord>> {
    let rows = c
        .prepare_cached(
            "SELECT name, passed, exit_code, duration_ms, output FROM check_results \
             WHERE task_id = ? AND epoch = ? ORDER BY position",
        )?
        .query_map(params![id.as_str(), epoch.0 as i64], |r| {
            Ok(CheckRecord {
                name: r.get(0)?,
                passed: r.get(1)?,
                exit_code: r.get(2)?,
                duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
                output: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Records an attempt's check results; a check that passed for an earlier
/// task on the same repository and fails now is a regression, named with the
/// task and commit that broke it.
fn save_checks(c: &Connection, id: &TaskId, epoch: Epoch, details: &RunDetails, now: Millis) -> Result<()> {
    if details.checks.is_empty() {
        return Ok(());
    }
    let task = load_task(c, id)?;
    let repo = task.spec.workspace.as_ref().map(|w| w.repo.clone());
    let commit = details.workspace.as_ref().and_then(|w| w.head.clone());
    for (position, check) in details.checks.iter().take(muster_core::check::MAX_CHECKS).enumerate() {
        let name = clip(&check.name, 64);
        c.prepare_cached(
            "INSERT OR REPLACE INTO check_results (task_id, epoch, position, repo, commit_sha, name, passed, exit_code, \
             duration_ms, output, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            id.as_str(),
            epoch.0 as i64,
            position as i64,
            repo,
            commit,
            name,
            check.passed,
            check.exit_code,
            check.duration_ms.min(i64::MAX as u64) as i64,
            clip(&check.output, 4000),
            now.0,
        ])?;
        let Some(repo) = &repo else { continue };
        // A check that could not even start says nothing about the code.
        if check.passed || check.exit_code.is_none() {
            continue;
        }
        let good: Option<(String, Option<String>)> = c
            .prepare_cached(
                "SELECT task_id, commit_sha FROM check_results WHERE repo = ? AND name = ? AND passed = 1 \
                 AND task_id != ? ORDER BY at DESC LIMIT 1",
            )?
            .query_row(params![repo, name, id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((good_task, good_commit)) = good else { continue };
        let added = c
            .prepare_cached(
                "INSERT OR IGNORE INTO regressions (repo, name, task_id, commit_sha, passed_task_id, passed_commit_sha, at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![repo, name, id.as_str(), commit, good_task, good_commit, now.0])?;
        if added > 0 {
            let short = |c: &Option<String>| c.as_deref().map_or("-".to_owned(), |c| c.chars().take(12).collect());
            task_event(
                c,
                now,
                "regression.detected",
                &task,
                Some(&format!(
                    "{name} on {repo}: passed for {good_task} at {}, fails for {id} at {}",
                    short(&good_commit),
                    short(&commit)
                )),
            )?;
        }
    }
    Ok(())
}

/// Newest first.
pub fn regressions(c: &Connection, limit: usize) -> Result<Vec<RegressionRecord>> {
    let rows = c
        .prepare_cached(
            "SELECT id, repo, name, task_id, commit_sha, passed_task_id, passed_commit_sha, at FROM regressions \
             ORDER BY id DESC LIMIT ?",
        )?
        .query_map([limit.clamp(1, 1000) as i64], |r| {
            let (task, good): (String, String) = (r.get(3)?, r.get(5)?);
            Ok(RegressionRecord {
                id: r.get(0)?,
                repo: r.get(1)?,
                check: r.get(2)?,
                task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))?,
                commit: r.get(4)?,
                last_passed_task: TaskId::parse(&good).map_err(|e| corrupt("task id", e))?,
                last_passed_commit: r.get(6)?,
                at: Millis(r.get(7)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

// -- schedules -----------------------------------------------------------------

const SCHEDULE_COLS: &str =
    "id, name, cron, tz, template, missed, paused, next_at, last_at, last_task, created_by, created_at";

fn schedule_row(r: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    let last_task: Option<String> = r.get(9)?;
    Ok(ScheduleRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        cron: r.get(2)?,
        tz: r.get(3)?,
        template: r.get(4)?,
        missed: r.get(5)?,
        paused: r.get(6)?,
        next_at: ms(r.get(7)?),
        last_at: ms(r.get(8)?),
        last_task: last_task.map(|t| TaskId::parse(&t)).transpose().map_err(|e| corrupt("task id", e))?,
        created_by: r.get(10)?,
        created_at: Millis(r.get(11)?),
    })
}

pub fn schedules(c: &Connection) -> Result<Vec<ScheduleRecord>> {
    let rows = c
        .prepare_cached(&format!("SELECT {SCHEDULE_COLS} FROM schedules ORDER BY name"))?
        .query_map([], schedule_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// By id (all digits) or by name.
pub fn schedule(c: &Connection, key: &str) -> Result<Option<ScheduleRecord>> {
    let sql = if key.chars().all(|ch| ch.is_ascii_digit()) && !key.is_empty() {
        format!("SELECT {SCHEDULE_COLS} FROM schedules WHERE id = CAST(?1 AS INTEGER) OR name = ?1 ORDER BY id LIMIT 1")
    } else {
        format!("SELECT {SCHEDULE_COLS} FROM schedules WHERE name = ?1")
    };
    Ok(c.prepare_cached(&sql)?.query_row([key], schedule_row).optional()?)
}

fn load_schedule(c: &Connection, key: &str) -> Result<ScheduleRecord> {
    schedule(c, key)?.ok_or_else(|| StoreError::not_found("schedule", key))
}

fn schedule_event(c: &Connection, now: Millis, kind: &str, detail: &str) -> Result<()> {
    insert_event_row(c, now, kind, EventRow { detail: Some(detail), ..EventRow::default() })
}

pub fn add_schedule(c: &Connection, new: NewSchedule, now: Millis) -> Result<ScheduleRecord> {
    let name = new.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        || name.chars().all(|ch| ch.is_ascii_digit())
    {
        return Err(StoreError::Invalid(Invalid::new(
            "name",
            "a schedule name is 1 to 64 letters, digits, -, _ or ., and not only digits",
        )));
    }
    if schedule(c, name)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a schedule named {name} exists; delete it first or pick another name"
        )));
    }
    c.prepare_cached(
        "INSERT INTO schedules (name, cron, tz, template, missed, next_at, created_by, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        name,
        new.cron,
        new.tz,
        new.template,
        new.missed,
        new.next_at.map(|m| m.0),
        new.created_by,
        now.0
    ])?;
    let s = load_schedule(c, &c.last_insert_rowid().to_string())?;
    schedule_event(c, now, "schedule.added", &format!("{} `{}` {} (by {})", s.name, s.cron, s.tz, s.created_by))?;
    Ok(s)
}

/// Pauses it (no next time), or resumes it from `next_at`.
pub fn set_schedule_paused(
    c: &Connection,
    key: &str,
    paused: bool,
    next_at: Option<Millis>,
    by: &str,
    now: Millis,
) -> Result<ScheduleRecord> {
    let s = load_schedule(c, key)?;
    if s.paused == paused {
        return Err(StoreError::Conflict(format!(
            "schedule {} is already {}",
            s.name,
            if paused { "paused" } else { "running" }
        )));
    }
    c.prepare_cached("UPDATE schedules SET paused = ?, next_at = ? WHERE id = ?")?.execute(params![
        paused,
        if paused { None } else { next_at.map(|m| m.0) },
        s.id
    ])?;
    let kind = if paused { "schedule.paused" } else { "schedule.resumed" };
    schedule_event(c, now, kind, &format!("{} (by {by})", s.name))?;
    load_schedule(c, &s.id.to_string())
}

pub fn delete_schedule(c: &Connection, key: &str, by: &str, now: Millis) -> Result<ScheduleRecord> {
    let s = load_schedule(c, key)?;
    c.prepare_cached("DELETE FROM schedules WHERE id = ?")?.execute([s.id])?;
    schedule_event(c, now, "schedule.deleted", &format!("{} (by {by})", s.name))?;
    Ok(s)
}

/// Schedules due at `now`, not paused.
pub fn due_schedules(c: &Connection, now: Millis) -> Result<Vec<ScheduleRecord>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE paused = 0 AND next_at IS NOT NULL AND next_at <= ? ORDER BY next_at"
        ))?
        .query_map([now.0], schedule_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub fn next_schedule_at(c: &Connection) -> Result<Option<Millis>> {
    let next: Option<i64> =
        c.prepare_cached("SELECT min(next_at) FROM schedules WHERE paused = 0")?.query_row([], |r| r.get(0))?;
    Ok(next.map(Millis))
}

/// Fires a schedule: creates its task (if any) and moves it to its next
/// time, together; `None` when it was not due as the hub saw it (another
/// hub fired it, or it was paused or changed meanwhile).
pub fn fire_schedule(c: &Connection, f: Firing, now: Millis) -> Result<Option<Option<Task>>> {
    let current: Option<(Option<i64>, bool, String)> = c
        .prepare_cached("SELECT next_at, paused, name FROM schedules WHERE id = ?")?
        .query_row([f.schedule], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((Some(next), false, name)) = current else { return Ok(None) };
    if next != f.due.0 {
        return Ok(None);
    }
    let task = match f.task {
        Some((id, mut spec)) => {
            // The same firing never makes two tasks, whatever retries.
            spec.idempotency_key = Some(format!("schedule:{}:{}", f.schedule, f.due.0));
            let created = create_task(c, id, spec, now)?;
            Some(created.task)
        }
        None => None,
    };
    c.prepare_cached("UPDATE schedules SET next_at = ?, last_at = ?, last_task = coalesce(?, last_task) WHERE id = ?")?
        .execute(params![f.next_at.map(|m| m.0), now.0, task.as_ref().map(|t| t.id.as_str()), f.schedule])?;
    let what = match &task {
        Some(t) => format!("{name}: task {} ({})", t.id, f.note),
        None => format!("{name}: no task ({})", f.note),
    };
    schedule_event(c, now, "schedule.fired", &what)?;
    Ok(Some(task))
}

// -- messages ------------------------------------------------------------------

const MESSAGE_COLS: &str = "id, recipient, sender, body, thread, reply_to, created_at, delivered_at, read_at";

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let to: String = r.get(1)?;
    Ok(MessageRecord {
        id: r.get(0)?,
        to: Recipient::parse(&to).map_err(|e| corrupt("recipient", e))?,
        sender: r.get(2)?,
        body: r.get(3)?,
        thread: r.get(4)?,
        reply_to: r.get(5)?,
        created_at: Millis(r.get(6)?),
        delivered_at: ms(r.get(7)?),
        read_at: ms(r.get(8)?),
    })
}

fn load_message(c: &Connection, id: i64) -> Result<MessageRecord> {
    c.prepare_cached(&format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = ?"))?
        .query_row([id], message_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found("message", id))
}

pub fn create_channel(c: &Connection, name: &str, description: &str, by: &str, now: Millis) -> Result<ChannelRecord> {
    check_channel_name(name).map_err(|e| StoreError::Invalid(Invalid::new("name", e.reason)))?;
    if description.len() > 500 {
        return Err(StoreError::Invalid(Invalid::new("description", "at most 500 bytes")));
    }
    let added = c
        .prepare_cached(
            "INSERT OR IGNORE INTO channels (name, description, created_by, created_at) VALUES (?, ?, ?, ?)",
        )?
        .execute(params![name, description, by, now.0])?;
    if added == 0 {
        return Err(StoreError::Conflict(format!("channel {name} exists")));
    }
    insert_event_row(
        c,
        now,
        "channel.created",
        EventRow { detail: Some(&format!("{name} (by {by})")), ..EventRow::default() },
    )?;
    Ok(ChannelRecord {
        name: name.to_owned(),
        description: description.to_owned(),
        created_by: by.to_owned(),
        created_at: now,
        messages: 0,
    })
}

pub fn channels(c: &Connection) -> Result<Vec<ChannelRecord>> {
    let rows = c
        .prepare_cached(
            "SELECT c.name, c.description, c.created_by, c.created_at, \
             (SELECT count(*) FROM messages m WHERE m.recipient = 'channel:' || c.name) FROM channels c ORDER BY c.name",
        )?
        .query_map([], |r| {
            Ok(ChannelRecord {
                name: r.get(0)?,
                description: r.get(1)?,
                created_by: r.get(2)?,
                created_at: Millis(r.get(3)?),
                messages: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Stores a message; a reply joins its thread, which must be in the same mailbox or channel.
pub fn send_message(
    c: &Connection,
    to: &Recipient,
    sender: &str,
    body: &str,
    reply_to: Option<i64>,
    now: Millis,
) -> Result<MessageRecord> {
    if body.trim().is_empty() || body.len() > MAX_MESSAGE {
        return Err(StoreError::Invalid(Invalid::new("body", format!("must be 1 to {MAX_MESSAGE} bytes"))));
    }
    match to {
        Recipient::Agent(a) => {
            load_agent(c, a)?;
        }
        Recipient::Task(t) => {
            load_task(c, t)?;
        }
        Recipient::Channel(name) => {
            let known: i64 =
                c.prepare_cached("SELECT count(*) FROM channels WHERE name = ?")?.query_row([name], |r| r.get(0))?;
            if known == 0 {
                return Err(StoreError::not_found("channel", name));
            }
        }
    }
    let thread = match reply_to {
        Some(id) => {
            let parent = load_message(c, id)?;
            if let Recipient::Channel(ch) = &parent.to
                && parent.to != *to
            {
                return Err(StoreError::Invalid(Invalid::new(
                    "reply_to",
                    format!("message {id} is in channel {ch}; reply there"),
                )));
            }
            Some(parent.thread)
        }
        None => None,
    };
    let recipient = to.to_string();
    c.prepare_cached(
        "INSERT INTO messages (recipient, sender, body, thread, reply_to, created_at) VALUES (?, ?, ?, 0, ?, ?)",
    )?
    .execute(params![recipient, sender, body, reply_to, now.0])?;
    let id = c.last_insert_rowid();
    c.prepare_cached("UPDATE messages SET thread = ? WHERE id = ?")?.execute(params![thread.unwrap_or(id), id])?;
    let row = EventRow {
        task: match to {
            Recipient::Task(t) => Some(t),
            _ => None,
        },
        agent: match to {
            Recipient::Agent(a) => Some(a),
            _ => None,
        },
        detail: Some(&format!("#{id} to {recipient} from {sender}: {}", clip(body.lines().next().unwrap_or(""), 120))),
        ..EventRow::default()
    };
    insert_event_row(c, now, "message.sent", row)?;
    load_message(c, id)
}

/// A mailbox or channel, oldest first, after message `after`; `thread` keeps one thread.
pub fn messages(
    c: &Connection,
    to: &Recipient,
    thread: Option<i64>,
    after: i64,
    limit: usize,
) -> Result<Vec<MessageRecord>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE recipient = ?1 AND id > ?2 AND (?3 IS NULL OR thread = ?3) \
             ORDER BY id LIMIT ?4"
        ))?
        .query_map(params![to.to_string(), after, thread, limit.clamp(1, 1000) as i64], message_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// An agent's messages not yet delivered, oldest first.
pub fn undelivered(c: &Connection, agent: &AgentName) -> Result<Vec<MessageRecord>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE recipient = ? AND delivered_at IS NULL ORDER BY id LIMIT 1000"
        ))?
        .query_map([Recipient::Agent(agent.clone()).to_string()], message_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The agent's socket took these; returns how many were new.
pub fn mark_delivered(c: &Connection, agent: &AgentName, ids: &[i64], now: Millis) -> Result<u64> {
    let to = Recipient::Agent(agent.clone()).to_string();
    let mut n = 0;
    for id in ids.iter().take(1000) {
        let new = c
            .prepare_cached(
                "UPDATE messages SET delivered_at = ? WHERE id = ? AND recipient = ? AND delivered_at IS NULL",
            )?
            .execute(params![now.0, id, to])? as u64;
        if new > 0 {
            let row = EventRow { agent: Some(agent), detail: Some(&format!("#{id} to {to}")), ..EventRow::default() };
            insert_event_row(c, now, "message.delivered", row)?;
        }
        n += new;
    }
    Ok(n)
}

/// A run read these messages of its task's mailbox.
pub fn mark_read(c: &Connection, task: &TaskId, ids: &[i64], now: Millis) -> Result<()> {
    let to = Recipient::Task(task.clone()).to_string();
    for id in ids.iter().take(1000) {
        c.prepare_cached("UPDATE messages SET read_at = ? WHERE recipient = ? AND id = ? AND read_at IS NULL")?
            .execute(params![now.0, to, id])?;
    }
    Ok(())
}

// -- follow-up tasks -------------------------------------------------------------

/// Most tasks one task's runs may create, and how deep a chain of them may go.
pub const MAX_FOLLOWUPS: i64 = 20;
pub const MAX_FOLLOWUP_DEPTH: i64 = 5;

/// A run creates a task for later work; it must hold its task's lease, and
/// the limits keep a run from flooding the queue or recursing for ever.
pub fn create_followup(
    c: &Connection,
    parent: &TaskId,
    epoch: Epoch,
    id: TaskId,
    spec: TaskSpec,
    per_tree: u64,
    now: Millis,
) -> Result<crate::Followup> {
    let task = load_task(c, parent)?;
    if !(task.state.is_leased() && task.lease.as_ref().is_some_and(|l| l.epoch == epoch)) {
        return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
    }
    let made: i64 = c
        .prepare_cached("SELECT count(*) FROM followups WHERE parent = ?")?
        .query_row([parent.as_str()], |r| r.get(0))?;
    if made >= MAX_FOLLOWUPS {
        return Err(StoreError::Conflict(format!("{parent} has created {made} tasks, the most a task may")));
    }
    let (depth, root): (i64, String) = c
        .prepare_cached("SELECT depth, root FROM followups WHERE child = ?")?
        .query_row([parent.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_else(|| (0, parent.as_str().to_owned()));
    let depth = depth + 1;
    if depth > MAX_FOLLOWUP_DEPTH {
        return Err(StoreError::Conflict(format!(
            "{parent} is itself {} tasks deep in follow-ups; at most {MAX_FOLLOWUP_DEPTH}",
            depth - 1
        )));
    }
    // The single writer counts and inserts in one transaction: two runs of one tree never both see room.
    let held: i64 =
        c.prepare_cached("SELECT count(*) FROM followups WHERE root = ?")?.query_row([&root], |r| r.get(0))?;
    let root = TaskId::parse(&root).map_err(|e| StoreError::Database(format!("a follow-up's root: {e}")))?;
    if held as u64 >= per_tree {
        let detail = format!("{held} follow-up tasks in the tree of {root}, the most it may hold ({per_tree})");
        task_event(c, now, "task.followup_refused", &task, Some(&detail))?;
        return Ok(crate::Followup::OverBudget { root, held: held as u64 });
    }
    let created = create_task(c, id, spec, now)?;
    if created.created {
        c.prepare_cached("INSERT INTO followups (child, parent, depth, root) VALUES (?, ?, ?, ?)")?
            .execute(params![created.task.id.as_str(), parent.as_str(), depth, root.as_str()])?;
        task_event(c, now, "task.followup", &task, Some(&format!("created {}", created.task.id)))?;
    }
    Ok(crate::Followup::Created(Box::new(created)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_incremental_vacuum_step_gives_back_up_to_its_page_count() {
        let c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "auto_vacuum", "INCREMENTAL").unwrap();
        c.execute_batch("CREATE TABLE blobs (data BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) INSERT INTO blobs SELECT zeroblob(8000) FROM n; DELETE FROM blobs;").unwrap();
        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
        assert!(free > 500, "the delete freed pages: {free}");
        assert_eq!(incremental_vacuum(&c, 100).unwrap(), 100, "a step gives back as many pages as asked");
        assert_eq!(incremental_vacuum(&c, 100_000).unwrap() as i64, free - 100, "and no more than there are");
    }
}
